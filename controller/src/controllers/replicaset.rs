//! The ReplicaSet controller: keeps `spec.replicas` active pods of a
//! ReplicaSet's template, as Kubernetes' `ReplicaSetController` does.
//!
//! Flow in: a ReplicaSet `ns/name` key, the cache (the ReplicaSet, the pods
//! whose controller owner reference names it, orphan pods its selector
//! matches, PriorityClasses) and `now`.
//!
//! Flow out, per reconcile:
//! - owner-reference updates first: orphans that match the selector are
//!   adopted and owned pods that no longer match are released (Kubernetes'
//!   `ClaimPods`); a reconcile that claims decides nothing else, the next
//!   one counts the claimed pods;
//! - deletes of owned pods that finished for good (Failed: `Evicted`, an
//!   `ExecFormatError` on a node of the wrong architecture; or Succeeded):
//!   they are no replicas and are replaced;
//! - creates of the missing pods from `spec.template`, each admitted
//!   through [`admit_pod`], at most `burst_replicas` per reconcile and
//!   never more pods starting on a node (bound, not yet Running) than run
//!   or wait for a node, plus one: Kubernetes' slow start (batches of 1,
//!   2, 4, ...), judged by pods that start rather than by create calls
//!   that succeed, so a template whose pods fail on their node (wrong
//!   architecture, a bad command) keeps about one pod in flight instead
//!   of churning the store, while pods no node can take yet are all
//!   created (Pending, for the scheduler and the autoscaler to see);
//! - deletes of the surplus, chosen as Kubernetes' `ActivePodsWithRanks`
//!   orders them ([`deletion_order`]);
//! - the status (`replicas`, `fullyLabeledReplicas`, `readyReplicas`,
//!   `availableReplicas`, `observedGeneration`, a `ReplicaFailure`
//!   condition while pods cannot be admitted), written only when it
//!   changed;
//! - a re-check at the moment the next ready pod becomes available
//!   (`minReadySeconds`), or after a back-off when pods could not be
//!   admitted.
//!
//! Every decision is made from the cache as of this step; the control
//! loop commits the writes and the next step sees their effect, so no
//! Kubernetes-style expectations are needed.

use super::replicas::{self, controlled_pods, is_active};
use super::{Controller, Outcome, Write};
use crate::api::apps::{set_condition, ReplicaSet};
use crate::api::machinery::object_ref;
use crate::api::meta::ConditionStatus;
use crate::api::pod::PodPhase;
use crate::api::{Kind, Object, ObjectMeta, OwnerReference, Pod, Time};
use crate::cache::{Cache, Change};
use outpost_proto::names::SITE_LABEL;
use outpost_proto::EventType;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Condition type set while the ReplicaSet's pods cannot be created.
pub const REPLICA_FAILURE: &str = "ReplicaFailure";
/// Reason of [`REPLICA_FAILURE`] (and of its event) when creates fail.
pub const FAILED_CREATE: &str = "FailedCreate";
/// Annotation with a pod's deletion cost: lower goes first on scale-down
/// (Kubernetes' name).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// Events name at most this many pods; the rest are counted.
const NAMES_IN_EVENT: usize = 10;

/// Tunables of the ReplicaSet controller.
#[derive(Debug, Clone)]
pub struct ReplicaSetConfig {
    /// Most pods one reconcile creates or deletes for one ReplicaSet
    /// (Kubernetes' `BurstReplicas`, 500).
    pub burst_replicas: usize,
    /// First re-check after pods could not be admitted; doubles with each
    /// further failure (Kubernetes' default controller rate limiter: 5 ms).
    pub failed_create_backoff: Duration,
    /// Longest of those delays (Kubernetes: 1000 s).
    pub failed_create_backoff_max: Duration,
    /// The not-ready and unreachable tolerations every pod gets.
    pub default_tolerations: crate::api::admission::DefaultTolerations,
}

impl Default for ReplicaSetConfig {
    fn default() -> Self {
        ReplicaSetConfig {
            burst_replicas: 500,
            failed_create_backoff: Duration::from_millis(5),
            failed_create_backoff_max: Duration::from_secs(1000),
            default_tolerations: Default::default(),
        }
    }
}

/// Why a pod a controller wants to create is refused: what the API's pod
/// admission found, each problem with its field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct AdmissionError(pub Vec<String>);

/// Admission of the pods controllers create: the one call site through
/// which every such pod passes before it is written, as pods an operator
/// creates pass the API's (`api::admission::admit_new_pod`: the priority
/// from the pod's class, or from the global default class).
pub fn admit_pod(
    pod: &mut Pod,
    cache: &Cache,
    defaults: &crate::api::admission::DefaultTolerations,
) -> Result<(), AdmissionError> {
    crate::api::admission::admit_new_pod(pod, cache, defaults)
        .map_err(|ps| AdmissionError(ps.iter().map(ToString::to_string).collect()))
}

/// The controller owner reference a ReplicaSet puts on its pods.
pub fn controller_ref(rs: &ReplicaSet) -> OwnerReference {
    OwnerReference {
        api_version: Kind::ReplicaSet.api_version().to_string(),
        kind: Kind::ReplicaSet.name().to_string(),
        name: rs.metadata.name.clone(),
        uid: rs.metadata.uid.clone(),
        controller: true,
        block_owner_deletion: true,
    }
}

/// A new pod of `rs`'s template (before admission): `generateName:
/// RSNAME-`, the template's labels and annotations, the ReplicaSet's
/// namespace and a controller owner reference to it.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let t = &rs.spec.template;
    Pod {
        metadata: ObjectMeta {
            generate_name: format!("{}-", rs.metadata.name),
            namespace: rs.metadata.namespace.clone(),
            labels: t.metadata.labels.clone(),
            annotations: t.metadata.annotations.clone(),
            finalizers: t.metadata.finalizers.clone(),
            owner_references: vec![controller_ref(rs)],
            ..ObjectMeta::default()
        },
        spec: t.spec.clone(),
        status: Default::default(),
    }
}

/// Deletes a pod by its identity.
pub(crate) fn delete_pod(p: &Pod) -> Write {
    Write::Delete {
        kind: Kind::Pod,
        namespace: p.metadata.namespace.clone(),
        name: p.metadata.name.clone(),
        uid: p.metadata.uid.clone(),
    }
}

/// `a, b, c and 4 more`.
pub(crate) fn name_list<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    let n = names.len();
    let mut s: Vec<&str> = names.take(NAMES_IN_EVENT).collect();
    s.sort_unstable();
    let mut out = s.join(", ");
    if n > NAMES_IN_EVENT {
        out.push_str(&format!(" and {} more", n - NAMES_IN_EVENT));
    }
    out
}

fn phase_ordinal(p: PodPhase) -> u8 {
    match p {
        PodPhase::Unknown => 1,
        PodPhase::Running => 2,
        _ => 0,
    }
}

/// `None` first, then the later time first.
fn empty_or_newer_first(a: Option<Time>, b: Option<Time>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x),
    }
}

fn deletion_cost(p: &Pod) -> i32 {
    p.metadata
        .annotations
        .get(POD_DELETION_COST)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn max_restarts(p: &Pod) -> u32 {
    p.status
        .container_statuses
        .iter()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

/// Where a pod stands among its related pods (those of every ReplicaSet
/// of its Deployment): how many of them run in its site, and on its node.
pub type Rank = (usize, usize);

/// Which of two active pods goes first on scale-down (`Less`: `a`), as
/// Kubernetes' `ActivePodsWithRanks`: unscheduled before scheduled;
/// Pending before Unknown before Running; not ready before ready; lower
/// `pod-deletion-cost` first; then by [`Rank`]: more related pods in the
/// same site first, then more on the same node (Kubernetes ranks by node
/// only); among Ready pods, the one that started later first (Kubernetes:
/// ready for less time; a pod whose node was cut off was marked not ready
/// and is Ready again only since its node came back, but it has run all
/// along), then ready for less time; more container restarts first; newer
/// first; then by name, so the order is total.
///
/// This is the rule that decides which copy survives when a partitioned
/// site comes back and a ReplicaSet has its evicted pods and their
/// replacements at once: a Ready copy beats a not-ready one; among Ready
/// copies the one whose removal leaves the workload spread most evenly
/// over sites and nodes goes first (the spread scores are where the
/// scheduler's scores of two copies of one template differ); ties keep
/// the longest-running. The replacements went to the other sites, which
/// now hold more than their share, so they go, and nothing that ran
/// through the partition restarts.
pub fn deletion_order(a: &Pod, rank_a: Rank, b: &Pod, rank_b: Rank) -> Ordering {
    a.node()
        .is_some()
        .cmp(&b.node().is_some())
        .then(phase_ordinal(a.status.phase).cmp(&phase_ordinal(b.status.phase)))
        .then(a.status.is_ready().cmp(&b.status.is_ready()))
        .then(deletion_cost(a).cmp(&deletion_cost(b)))
        .then(rank_b.cmp(&rank_a))
        .then_with(|| {
            if a.status.is_ready() && b.status.is_ready() {
                empty_or_newer_first(a.status.start_time, b.status.start_time).then_with(|| {
                    empty_or_newer_first(a.status.ready_since(), b.status.ready_since())
                })
            } else {
                Ordering::Equal
            }
        })
        .then(max_restarts(b).cmp(&max_restarts(a)))
        .then_with(|| {
            empty_or_newer_first(a.metadata.creation_timestamp, b.metadata.creation_timestamp)
        })
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// The pods related to `rs`: those of every ReplicaSet of its controller
/// (the Deployment's), or its own when it has none (Kubernetes'
/// `getIndirectlyRelatedPods`); active ones only.
fn related<'a>(rs: &ReplicaSet, own: &[&'a Arc<Pod>], cache: &'a Cache) -> Vec<&'a Arc<Pod>> {
    match rs.metadata.controller_ref() {
        Some(owner) => cache
            .replicasets_owned_by(&owner.uid)
            .into_iter()
            .filter(|sibling| {
                sibling
                    .metadata
                    .controller_ref()
                    .is_some_and(|r| r.uid == owner.uid)
            })
            .flat_map(|sibling| controlled_pods(cache, sibling))
            .filter(|p| is_active(p))
            .collect(),
        None => own.to_vec(),
    }
}

/// The `n` active pods to delete first, one at a time: each pick lowers
/// the counts of its site and node before the next is ranked, so a
/// surplus is taken evenly from the sites and nodes that hold too many.
fn victims<'a>(
    rs: &ReplicaSet,
    active: &[&'a Arc<Pod>],
    cache: &'a Cache,
    n: usize,
) -> Vec<&'a Arc<Pod>> {
    if n >= active.len() {
        return active.to_vec();
    }
    let mut site_of: HashMap<&str, String> = HashMap::new();
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    let mut per_site: HashMap<String, usize> = HashMap::new();
    let mut site = |node: &'a str| -> String {
        site_of
            .entry(node)
            .or_insert_with(|| {
                cache
                    .node(node)
                    .and_then(|r| r.label(SITE_LABEL).map(str::to_string))
                    .unwrap_or_default()
            })
            .clone()
    };
    for p in related(rs, active, cache) {
        let node = p.spec.node_name.as_str();
        *per_node.entry(node).or_default() += 1;
        *per_site.entry(site(node)).or_default() += 1;
    }
    let mut left: Vec<(&'a Arc<Pod>, String)> = active
        .iter()
        .map(|p| (*p, site(p.spec.node_name.as_str())))
        .collect();
    let rank =
        |p: &Pod, s: &str, per_site: &HashMap<String, usize>, per_node: &HashMap<&str, usize>| {
            if p.spec.node_name.is_empty() {
                return (0, 0);
            }
            (
                per_site.get(s).copied().unwrap_or(0),
                per_node
                    .get(p.spec.node_name.as_str())
                    .copied()
                    .unwrap_or(0),
            )
        };
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let Some(i) = (0..left.len()).min_by(|&i, &j| {
            let (a, sa) = &left[i];
            let (b, sb) = &left[j];
            deletion_order(
                a,
                rank(a, sa, &per_site, &per_node),
                b,
                rank(b, sb, &per_site, &per_node),
            )
        }) else {
            break;
        };
        let (p, s) = left.swap_remove(i);
        if !p.spec.node_name.is_empty() {
            if let Some(c) = per_node.get_mut(p.spec.node_name.as_str()) {
                *c = c.saturating_sub(1);
            }
            if let Some(c) = per_site.get_mut(&s) {
                *c = c.saturating_sub(1);
            }
        }
        out.push(p);
    }
    out
}

/// Claims pods as Kubernetes' `ClaimPods` does: owned pods that still
/// match (or are being deleted) stay, owned pods that no longer match are
/// released, active orphans that match are adopted (when the pod names
/// no other controller). Returns the pods it keeps or adopts and pushes
/// the owner-reference updates.
fn claim<'a>(rs: &'a ReplicaSet, cache: &'a Cache, writes: &mut Vec<Write>) -> Vec<&'a Arc<Pod>> {
    let sel = &rs.spec.selector;
    let uid = &rs.metadata.uid;
    let mut owned = Vec::new();
    for p in controlled_pods(cache, rs) {
        if sel.matches(&p.metadata.labels) || p.metadata.is_deleting() {
            owned.push(p);
        } else {
            let mut copy = (**p).clone();
            copy.metadata.owner_references.retain(|r| &r.uid != uid);
            writes.push(Write::Update(Object::Pod(copy)));
        }
    }
    if !sel.is_empty() {
        for p in cache.pods_matching(&rs.metadata.namespace, sel) {
            if p.metadata.controller_ref().is_none() && is_active(p) {
                let mut copy = (**p).clone();
                copy.metadata.owner_references.retain(|r| &r.uid != uid);
                copy.metadata.owner_references.push(controller_ref(rs));
                writes.push(Write::Update(Object::Pod(copy)));
                owned.push(p);
            }
        }
    }
    owned
}

/// The ReplicaSet controller (see the module doc).
#[derive(Debug, Default)]
pub struct ReplicaSetController {
    cfg: ReplicaSetConfig,
    /// Consecutive reconciles whose pods could not be admitted, per
    /// ReplicaSet (for the back-off; forgotten on success).
    failures: HashMap<String, u32>,
}

impl ReplicaSetController {
    pub fn new(cfg: ReplicaSetConfig) -> ReplicaSetController {
        ReplicaSetController {
            cfg,
            failures: HashMap::new(),
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        self.cfg
            .failed_create_backoff
            .saturating_mul(1u32 << failures.saturating_sub(1).min(30))
            .min(self.cfg.failed_create_backoff_max)
    }
}

/// Keys of the ReplicaSets a pod concerns: its controller (if a
/// ReplicaSet, and still the one with that uid), or, for an orphan, every
/// ReplicaSet in its namespace whose selector matches it.
fn owners_of(p: &Pod, cache: &Cache, out: &mut Vec<String>) {
    match p.metadata.controller_ref() {
        Some(r) if r.kind == Kind::ReplicaSet.name() => {
            let key = crate::api::ns_name(&p.metadata.namespace, &r.name);
            if cache
                .replicaset(&key)
                .is_some_and(|rs| rs.metadata.uid == r.uid)
            {
                out.push(key);
            }
        }
        Some(_) => {}
        None if !is_active(p) => {}
        None => {
            for rs in cache.replicasets_selecting(&p.metadata.namespace, &p.metadata.labels) {
                out.push(crate::api::ns_name(
                    &rs.metadata.namespace,
                    &rs.metadata.name,
                ));
            }
        }
    }
}

impl Controller for ReplicaSetController {
    fn name(&self) -> &'static str {
        "replicaset"
    }

    fn keys_for(&self, change: &Change, cache: &Cache, out: &mut Vec<String>) {
        match change.kind {
            Kind::ReplicaSet => out.push(change.key.clone()),
            Kind::Pod if replicas::replica_changed(change) => {
                for c in [&change.old, &change.new].into_iter().flatten() {
                    if let Some(p) = c.as_pod() {
                        owners_of(p, cache, out);
                    }
                }
                out.sort_unstable();
                out.dedup();
            }
            // A class appearing may let refused pods in.
            Kind::PriorityClass => {
                for rs in cache.replicasets() {
                    if crate::api::apps::condition(&rs.status.conditions, REPLICA_FAILURE)
                        .is_some_and(|c| c.is_true())
                    {
                        out.push(crate::api::ns_name(
                            &rs.metadata.namespace,
                            &rs.metadata.name,
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    fn all_keys(&self, cache: &Cache) -> Vec<String> {
        cache.keys(Kind::ReplicaSet)
    }

    fn reconcile(&mut self, key: &str, cache: &Cache, now: Time) -> Outcome {
        let Some(rs) = cache.replicaset(key) else {
            // Gone: the garbage collector deletes its pods.
            self.failures.remove(key);
            return Outcome::none();
        };
        let mut writes = Vec::new();
        let owned = claim(rs, cache, &mut writes);
        if !writes.is_empty() {
            return Outcome::writes(writes);
        }
        let me = object_ref(Kind::ReplicaSet, &rs.metadata.namespace, &rs.metadata.name);
        let burst = self.cfg.burst_replicas.max(1);

        // Pods finished for good are no replicas: delete them (they are
        // replaced below, since they are not active).
        let finished: Vec<&Arc<Pod>> = owned
            .iter()
            .filter(|p| p.is_terminal() && !p.metadata.is_deleting())
            .take(burst)
            .copied()
            .collect();
        if !finished.is_empty() {
            writes.extend(finished.iter().map(|p| delete_pod(p)));
            let why: Vec<String> = finished
                .iter()
                .map(|p| {
                    let reason = if p.status.reason.is_empty() {
                        p.status.phase.name()
                    } else {
                        &p.status.reason
                    };
                    format!("{} ({reason})", p.metadata.name)
                })
                .collect();
            writes.push(Write::event(
                EventType::Normal,
                "SuccessfulDelete",
                me.clone(),
                format!(
                    "Deleted finished pods: {}",
                    name_list(why.iter().map(String::as_str))
                ),
            ));
        }

        let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| is_active(p)).copied().collect();
        let want = usize::try_from(rs.spec.replicas).unwrap_or(0);
        let mut refused: Option<AdmissionError> = None;
        if active.len() < want {
            // Slow start: no more pods starting on a node than run or wait
            // for one, plus one.
            let starting = active
                .iter()
                .filter(|p| p.node().is_some() && p.status.phase != PodPhase::Running)
                .count();
            let room = (active.len() - starting + 1).saturating_sub(starting);
            let n = (want - active.len()).min(burst).min(room);
            let mut pod = pod_from_template(rs);
            match admit_pod(&mut pod, cache, &self.cfg.default_tolerations) {
                Ok(()) if n == 0 => {}
                Ok(()) => {
                    for _ in 0..n {
                        writes.push(Write::Create(Object::Pod(pod.clone())));
                    }
                    writes.push(Write::event(
                        EventType::Normal,
                        "SuccessfulCreate",
                        me.clone(),
                        format!(
                            "Created {n} pod{} {}*",
                            if n == 1 { "" } else { "s" },
                            pod.metadata.generate_name
                        ),
                    ));
                }
                Err(e) => refused = Some(e),
            }
        } else if active.len() > want {
            let gone = victims(rs, &active, cache, (active.len() - want).min(burst));
            writes.extend(gone.iter().map(|p| delete_pod(p)));
            writes.push(Write::event(
                EventType::Normal,
                "SuccessfulDelete",
                me.clone(),
                format!(
                    "Deleted pods: {}",
                    name_list(gone.iter().map(|p| p.metadata.name.as_str()))
                ),
            ));
        }

        // Status, from the pods as found (the writes above show next step).
        let mr = replicas::min_ready(rs.spec.min_ready_seconds);
        let counts = replicas::count(owned.iter().map(|p| p.as_ref()), mr, now);
        let template_labels = &rs.spec.template.metadata.labels;
        let fully_labeled = active
            .iter()
            .filter(|p| {
                template_labels
                    .iter()
                    .all(|(k, v)| p.metadata.labels.get(k) == Some(v))
            })
            .count();
        let mut status = rs.status.clone();
        status.replicas = counts.active;
        status.fully_labeled_replicas = i32::try_from(fully_labeled).unwrap_or(i32::MAX);
        status.ready_replicas = counts.ready;
        status.available_replicas = counts.available;
        status.observed_generation = rs.metadata.generation;
        let mut requeue = counts.next_available.map(|t| t.since(now));
        match &refused {
            Some(e) => {
                let message = format!("Error creating pods: {e}");
                let already = crate::api::apps::condition(&status.conditions, REPLICA_FAILURE)
                    .is_some_and(|c| c.is_true() && c.message == message);
                if !already {
                    writes.push(Write::event(
                        EventType::Warning,
                        FAILED_CREATE,
                        me.clone(),
                        message.clone(),
                    ));
                }
                set_condition(
                    &mut status.conditions,
                    REPLICA_FAILURE,
                    ConditionStatus::True,
                    FAILED_CREATE,
                    &message,
                    now,
                );
                let n = self.failures.entry(key.to_string()).or_insert(0);
                *n = n.saturating_add(1);
                let n = *n;
                let delay = self.backoff(n);
                requeue = Some(requeue.map_or(delay, |r| r.min(delay)));
            }
            None => {
                status.conditions.retain(|c| c.kind != REPLICA_FAILURE);
                self.failures.remove(key);
            }
        }
        if status != rs.status {
            let mut copy = (**rs).clone();
            copy.status = status;
            writes.push(Write::Update(Object::ReplicaSet(copy)));
        }
        Outcome {
            writes,
            requeue_after: requeue,
        }
    }
}

#[cfg(test)]
mod tests;
