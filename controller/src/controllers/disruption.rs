//! The disruption controller: keeps every PodDisruptionBudget's status
//! right, as Kubernetes' disruption controller does, so that the eviction
//! check ([`super::eviction`]) can decide from the status alone.
//!
//! Flow in: a budget's `namespace/name`, queued when the budget changes,
//! when a pod it selects (before or after the change) changes in what
//! counts (readiness, deletion, labels, phase, controller), when a
//! ReplicaSet or Deployment whose template it selects changes its replica
//! count, and again when an entry of `disruptedPods` expires.
//!
//! Flow out: the budget's status, written only when it differs:
//! - `expectedPods` and `desiredHealthy` as Kubernetes'
//!   `getExpectedPodCount`: with an integer `minAvailable`, the count of
//!   selected pods and `minAvailable`; with a percentage, or with
//!   `maxUnavailable`, the sum of the replica counts of the pods'
//!   controllers (a Deployment's `spec.replicas` for pods of its
//!   ReplicaSets, else the ReplicaSet's), each controller once, and the
//!   percentage (rounded up) or `expected - maxUnavailable`. Pods without a
//!   controller are left out of that sum with an `UnmanagedPods` warning;
//!   a controller that cannot be found makes the status fail safe
//!   (`disruptionsAllowed: 0`, `DisruptionAllowed=False` with reason
//!   `SyncFailed`), so nothing is evicted on a guess.
//! - `currentHealthy`: selected pods that are Ready, not being deleted and
//!   not in `disruptedPods`.
//! - `disruptedPods`: the evictions the controller has not seen carried
//!   out yet; an entry goes once its pod is deleting or gone, and after
//!   [`DELETION_TIMEOUT`] (Kubernetes' 2 minutes) with a `NotDeleted`
//!   warning, when the pod was evidently not deleted after all.
//! - `disruptionsAllowed = max(0, currentHealthy - desiredHealthy)` (0
//!   when no pods are expected), `observedGeneration`, and the
//!   `DisruptionAllowed` condition (`SufficientPods` / `InsufficientPods`).

use super::{Controller, Outcome, Write};
use crate::api::meta::ConditionStatus;
use crate::api::policy::{PodDisruptionBudget, PodDisruptionBudgetStatus, SYNC_FAILED};
use crate::api::{machinery::object_ref, ns_name, Kind, Object, Pod, Time};
use crate::cache::{Cache, Cached, Change};
use outpost_proto::EventType;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long an eviction recorded in `disruptedPods` keeps its pod out of
/// `currentHealthy` without the controller seeing the pod deleted
/// (Kubernetes' `DeletionTimeout`, 2 minutes).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// The disruption controller (see the module doc). Stateless.
#[derive(Debug, Default)]
pub struct DisruptionController;

/// The pods a budget selects: none without a selector, every pod of the
/// namespace with an empty one.
pub fn pods_of<'a>(pdb: &'a PodDisruptionBudget, cache: &'a Cache) -> Vec<&'a Arc<Pod>> {
    match &pdb.spec.selector {
        None => Vec::new(),
        Some(s) => cache.pods_matching(&pdb.metadata.namespace, s),
    }
}

/// Whether a pod counts toward `currentHealthy`: Ready, not being deleted,
/// and not evicted within the last [`DELETION_TIMEOUT`].
pub fn is_healthy(pod: &Pod, disrupted: &BTreeMap<String, Time>, now: Time) -> bool {
    if pod.metadata.is_deleting() {
        return false;
    }
    if let Some(t) = disrupted.get(&pod.metadata.name) {
        if t.plus(DELETION_TIMEOUT) > now {
            return false;
        }
    }
    pod.status.is_ready()
}

/// `expectedPods`, `desiredHealthy`, and the selected pods left out for
/// having no controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub expected: i32,
    pub desired_healthy: i32,
    pub unmanaged: Vec<String>,
}

fn clamp(n: i64) -> i32 {
    i32::try_from(n.clamp(0, i64::from(i32::MAX))).unwrap_or(i32::MAX)
}

/// The sum of the replica counts of the pods' controllers, as Kubernetes'
/// `getExpectedScale`.
fn expected_scale(pods: &[&Arc<Pod>], cache: &Cache) -> Result<(i64, Vec<String>), String> {
    let mut scales: BTreeMap<String, i64> = BTreeMap::new();
    let mut unmanaged = Vec::new();
    for p in pods {
        let Some(r) = p.metadata.controller_ref() else {
            unmanaged.push(p.metadata.name.clone());
            continue;
        };
        let ns = &p.metadata.namespace;
        let found = match r.kind.as_str() {
            "ReplicaSet" => cache
                .replicaset(&ns_name(ns, &r.name))
                .filter(|rs| rs.metadata.uid == r.uid)
                .map(|rs| {
                    // A Deployment's ReplicaSet counts as the Deployment.
                    let deployment = rs.metadata.controller_ref().and_then(|d| {
                        (d.kind == "Deployment")
                            .then(|| cache.deployment(&ns_name(ns, &d.name)))
                            .flatten()
                            .filter(|dep| dep.metadata.uid == d.uid)
                    });
                    match deployment {
                        Some(d) => (d.metadata.uid.clone(), i64::from(d.spec.replicas)),
                        None => (rs.metadata.uid.clone(), i64::from(rs.spec.replicas)),
                    }
                }),
            "Deployment" => cache
                .deployment(&ns_name(ns, &r.name))
                .filter(|d| d.metadata.uid == r.uid)
                .map(|d| (d.metadata.uid.clone(), i64::from(d.spec.replicas))),
            _ => None,
        };
        match found {
            Some((uid, scale)) => {
                scales.insert(uid, scale);
            }
            None => {
                return Err(format!(
                    "found no controllers for pod {:?}",
                    p.metadata.name
                ))
            }
        }
    }
    Ok((scales.values().sum(), unmanaged))
}

/// Kubernetes' `getExpectedPodCount`.
pub fn expected(
    pdb: &PodDisruptionBudget,
    pods: &[&Arc<Pod>],
    cache: &Cache,
) -> Result<Expected, String> {
    let spec = &pdb.spec;
    if let Some(max) = &spec.max_unavailable {
        let (expected, unmanaged) = expected_scale(pods, cache)?;
        let max = max.scaled(expected, true)?;
        return Ok(Expected {
            expected: clamp(expected),
            desired_healthy: clamp(expected - max),
            unmanaged,
        });
    }
    match &spec.min_available {
        Some(crate::api::meta::IntOrString::Int(n)) => Ok(Expected {
            expected: clamp(i64::try_from(pods.len()).unwrap_or(i64::MAX)),
            desired_healthy: clamp(*n),
            unmanaged: Vec::new(),
        }),
        Some(min) => {
            let (expected, unmanaged) = expected_scale(pods, cache)?;
            Ok(Expected {
                expected: clamp(expected),
                desired_healthy: clamp(min.scaled(expected, true)?),
                unmanaged,
            })
        }
        // Validation refuses this; such a budget protects nothing.
        None => Ok(Expected {
            expected: 0,
            desired_healthy: 0,
            unmanaged: Vec::new(),
        }),
    }
}

/// The `disruptedPods` entries that still hold, the earliest time one of
/// them expires, and the pods whose entry expired without their deletion.
fn disrupted_pods(
    pdb: &PodDisruptionBudget,
    pods: &[&Arc<Pod>],
    now: Time,
) -> (BTreeMap<String, Time>, Option<Time>, Vec<String>) {
    let mut kept = BTreeMap::new();
    let mut recheck: Option<Time> = None;
    let mut expired = Vec::new();
    for p in pods {
        if p.metadata.is_deleting() {
            continue;
        }
        let Some(at) = pdb.status.disrupted_pods.get(&p.metadata.name) else {
            continue;
        };
        let due = at.plus(DELETION_TIMEOUT);
        if due <= now {
            expired.push(p.metadata.name.clone());
        } else {
            recheck = Some(recheck.map_or(due, |r| r.min(due)));
            kept.insert(p.metadata.name.clone(), *at);
        }
    }
    (kept, recheck, expired)
}

/// The status `pdb` should have now, the time to look again (an entry of
/// `disruptedPods` expiring), and the events to record with it.
pub fn desired_status(
    pdb: &PodDisruptionBudget,
    cache: &Cache,
    now: Time,
) -> (PodDisruptionBudgetStatus, Option<Time>, Vec<Write>) {
    let pods = pods_of(pdb, cache);
    let mut status = pdb.status.clone();
    let m = &pdb.metadata;
    let me = object_ref(Kind::PodDisruptionBudget, &m.namespace, &m.name);
    let mut events = Vec::new();
    let counts = match expected(pdb, &pods, cache) {
        Ok(c) => c,
        Err(e) => {
            // Fail safe: nothing is evicted on a guess. The generation is
            // not marked observed, as Kubernetes' failSafe leaves it.
            status.disruptions_allowed = 0;
            status.set_disruption_allowed(ConditionStatus::False, SYNC_FAILED, &e, now);
            events.push(Write::event(
                EventType::Warning,
                "CalculateExpectedPodCountFailed",
                me,
                format!("Failed to calculate the number of expected pods: {e}"),
            ));
            return (status, None, events);
        }
    };
    if !counts.unmanaged.is_empty() {
        events.push(Write::event(
            EventType::Warning,
            "UnmanagedPods",
            me.clone(),
            format!(
                "Pods selected by this PodDisruptionBudget (selector: {}) were found to be unmanaged \
                 ({}). As a result, the status of the PDB cannot be calculated correctly, which may \
                 result in undefined behavior. To account for these pods please set \
                 \".spec.minAvailable\" field of the PDB to an integer value.",
                pdb.spec
                    .selector
                    .as_ref()
                    .map(|s| s.to_query())
                    .unwrap_or_default(),
                counts.unmanaged.join(", ")
            ),
        ));
    }
    let (disrupted, recheck, expired) = disrupted_pods(pdb, &pods, now);
    for name in expired {
        events.push(Write::event(
            EventType::Warning,
            "NotDeleted",
            object_ref(Kind::Pod, &m.namespace, &name),
            format!(
                "Pod was expected by PDB {}/{} to be deleted but it wasn't",
                m.namespace, m.name
            ),
        ));
    }
    let healthy = pods
        .iter()
        .filter(|p| is_healthy(p, &disrupted, now))
        .count();
    let healthy = clamp(i64::try_from(healthy).unwrap_or(i64::MAX));
    let allowed = if counts.expected <= 0 {
        0
    } else {
        (healthy - counts.desired_healthy).max(0)
    };
    status.observed_generation = m.generation;
    status.disrupted_pods = disrupted;
    status.current_healthy = healthy;
    status.desired_healthy = counts.desired_healthy;
    status.expected_pods = counts.expected;
    status.disruptions_allowed = allowed;
    status.update_disruption_allowed(now);
    (status, recheck, events)
}

/// The part of a pod a budget's status depends on.
fn pod_view(p: &Pod) -> impl PartialEq + use<'_> {
    (
        p.status.is_ready(),
        p.metadata.is_deleting(),
        &p.metadata.labels,
        p.status.phase,
        p.metadata.uid.as_str(),
        p.metadata.controller_ref().map(|r| r.uid.as_str()),
    )
}

fn budgets_selecting(
    cache: &Cache,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    out: &mut Vec<String>,
) {
    for b in cache.pdbs_selecting(namespace, labels) {
        out.push(ns_name(&b.metadata.namespace, &b.metadata.name));
    }
}

/// Replica count and template labels of a workload that changed.
fn workload_view(c: &Cached) -> Option<(i32, &str, &BTreeMap<String, String>)> {
    match c {
        Cached::ReplicaSet(rs) => Some((
            rs.spec.replicas,
            rs.metadata.namespace.as_str(),
            &rs.spec.template.metadata.labels,
        )),
        Cached::Deployment(d) => Some((
            d.spec.replicas,
            d.metadata.namespace.as_str(),
            &d.spec.template.metadata.labels,
        )),
        _ => None,
    }
}

impl Controller for DisruptionController {
    fn name(&self) -> &'static str {
        "disruption"
    }

    fn keys_for(&self, change: &Change, cache: &Cache, out: &mut Vec<String>) {
        match change.kind {
            Kind::PodDisruptionBudget => out.push(change.key.clone()),
            Kind::Pod => {
                let pod = |c: &Option<Cached>| c.as_ref().and_then(|c| c.as_pod().cloned());
                let (old, new) = (pod(&change.old), pod(&change.new));
                if let (Some(a), Some(b)) = (&old, &new) {
                    if pod_view(a) == pod_view(b) {
                        return;
                    }
                }
                for p in old.iter().chain(&new) {
                    budgets_selecting(cache, &p.metadata.namespace, &p.metadata.labels, out);
                }
            }
            Kind::ReplicaSet | Kind::Deployment => {
                let (old, new) = (
                    change.old.as_ref().and_then(workload_view),
                    change.new.as_ref().and_then(workload_view),
                );
                if old.map(|o| o.0) == new.map(|n| n.0) {
                    return;
                }
                for (_, ns, labels) in old.into_iter().chain(new) {
                    budgets_selecting(cache, ns, labels, out);
                }
            }
            _ => return,
        }
        out.sort_unstable();
        out.dedup();
    }

    fn all_keys(&self, cache: &Cache) -> Vec<String> {
        cache.keys(Kind::PodDisruptionBudget)
    }

    fn reconcile(&mut self, key: &str, cache: &Cache, now: Time) -> Outcome {
        let Some(pdb) = cache.pdb(key) else {
            return Outcome::none();
        };
        let (status, recheck, events) = desired_status(pdb, cache, now);
        let requeue_after = recheck.map(|t| t.since(now));
        if status == pdb.status {
            return Outcome {
                writes: Vec::new(),
                requeue_after,
            };
        }
        let mut copy = (**pdb).clone();
        copy.status = status;
        let mut writes = vec![Write::Update(Object::PodDisruptionBudget(copy))];
        writes.extend(events);
        Outcome {
            writes,
            requeue_after,
        }
    }
}

#[cfg(test)]
mod tests;
