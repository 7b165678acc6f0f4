//! Node lifecycle: what happens to pods when their node stops being Ready,
//! and to sites when all their nodes do.
//!
//! Flow in: a node name, queued when its record changes Ready state or
//! taints and when a pod on it changes; a site key (`site:NAME`), queued
//! when a node of the site changes Ready state; the cache (the
//! `NodeRecord`s, the pods bound to each) and `now`.
//!
//! Flow out, for a node:
//! - not Ready: every pod on it whose `Ready` or `ContainersReady` is not
//!   yet False gets both False with reason `NodeNotReady` (Kubernetes'
//!   `MarkPodsNotReady`), so Endpoints stop sending traffic there; one
//!   Warning event per node;
//! - tainted NoExecute (`node.kubernetes.io/unreachable` while its lease
//!   is expired, `node.kubernetes.io/not-ready` while its agent says it is
//!   not ready): each pod is evicted when its toleration runs out (at once
//!   without one; `tolerationSeconds` after the taint appeared; never with
//!   a toleration without seconds), as Kubernetes' taint manager does, and
//!   a re-check is asked for at the earliest such moment. Pods stored
//!   before default tolerations existed get the controller's defaults.
//!   Eviction here is not deletion: the pod gets `DisruptionTarget=True`
//!   (reason `DeletionByTaintManager`), phase Unknown when the node is
//!   unreachable, and a Warning event. Its owner stops counting it and
//!   creates a replacement; the pod stays bound to its node, which keeps
//!   running it. Kubernetes deletes it, so a pod whose replacement cannot
//!   run anywhere (pinned to its site) is killed when the node reconnects;
//!   here it is not;
//! - Ready again: an evicted pod the node reports again (a report after
//!   the eviction, or any phase but Unknown) gets `DisruptionTarget=False`
//!   (reason `NodeReturned`): it counts as a replica again, and its owner
//!   keeps one copy by its deletion order (controllers/replicaset.rs), so
//!   a pod whose replacement never ran is simply kept; a pod still marked
//!   not ready although its node's last report says it is ready (the
//!   report was stored before the node's lease was renewed, and marked
//!   over) gets `Ready` and `ContainersReady` back from that report, in
//!   the same write.
//!
//! For a site: `SitePartitioned` (Warning) when every node of a site of
//! two or more turned NotReady within the partition window of each other
//! ([`sites`]), `SiteReconnected` when one of them is Ready
//! again. A site already partitioned when this controller starts is not
//! announced again.

use super::sites::{self, NodeReadiness, SiteState};
use super::{Controller, Outcome, Write};
use crate::api::admission::DefaultTolerations;
use crate::api::machinery::object_ref;
use crate::api::meta::ConditionStatus;
use crate::api::pod::{
    PodPhase, Taint, TaintEffect, CONTAINERS_READY, DELETION_BY_TAINT_MANAGER, DISRUPTION_TARGET,
    POD_READY,
};
use crate::api::{ns_name, Kind, Object, Pod, Time};
use crate::cache::{Cache, Cached, Change};
use crate::registry::{NodeRecord, UNREACHABLE_TAINT};
use outpost_proto::names::SITE_LABEL;
use outpost_proto::EventType;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Reason set on the pods' conditions (Kubernetes' event reason).
pub const NODE_NOT_READY: &str = "NodeNotReady";

/// Tunables of the node lifecycle controller.
#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// Tolerations assumed for pods that carry none for the two taints.
    pub default_tolerations: DefaultTolerations,
    /// See [`sites::DEFAULT_PARTITION_WINDOW`].
    pub partition_window: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            default_tolerations: DefaultTolerations::default(),
            partition_window: sites::DEFAULT_PARTITION_WINDOW,
        }
    }
}

/// The node lifecycle controller (see the module doc). Its only state is
/// which sites it has announced as partitioned, so an event is raised once
/// per partition.
#[derive(Debug, Default)]
pub struct NodeLifecycleController {
    cfg: NodeLifecycleConfig,
    /// Sites seen, and whether they were partitioned when last looked at.
    partitioned: HashMap<String, bool>,
    /// The first `now` this controller saw: partitions that began before
    /// it were announced by its predecessor.
    started: Option<Time>,
}

/// Event reasons.
pub const TAINT_MANAGER_EVICTION: &str = "TaintManagerEviction";
pub const SITE_PARTITIONED: &str = "SitePartitioned";
pub const SITE_RECONNECTED: &str = "SiteReconnected";
/// Reason of `DisruptionTarget=False` once the node reports the pod again.
pub const NODE_RETURNED: &str = "NodeReturned";

const SITE_PREFIX: &str = "site:";

fn site_of(n: &NodeRecord) -> Option<&str> {
    n.label(SITE_LABEL)
}

fn api_effect(e: outpost_proto::TaintEffect) -> TaintEffect {
    match e {
        outpost_proto::TaintEffect::NoSchedule => TaintEffect::NoSchedule,
        outpost_proto::TaintEffect::NoExecute => TaintEffect::NoExecute,
        outpost_proto::TaintEffect::PreferNoSchedule => TaintEffect::PreferNoSchedule,
    }
}

/// When the pod must leave a node with these NoExecute taints (`None`:
/// never), as Kubernetes' taint manager decides: an untolerated taint
/// evicts at once; otherwise the earliest of, per taint, the time it
/// appeared plus the shortest `tolerationSeconds` of the tolerations that
/// match it (a taint tolerated only without seconds never evicts).
pub fn eviction_time(
    pod: &Pod,
    taints: &[outpost_proto::Taint],
    defaults: &DefaultTolerations,
) -> Option<Time> {
    let mut at: Option<Time> = None;
    for t in taints
        .iter()
        .filter(|t| t.effect == outpost_proto::TaintEffect::NoExecute)
    {
        let taint = Taint {
            key: t.key.clone(),
            value: String::new(),
            effect: api_effect(t.effect),
        };
        let matching: Vec<Option<i64>> = pod
            .spec
            .tolerations
            .iter()
            .filter(|tol| tol.tolerates(&taint))
            .map(|tol| tol.toleration_seconds)
            .collect();
        let seconds = if matching.is_empty() {
            // A pod stored before default tolerations were added.
            match defaults.taints().iter().find(|(k, _)| *k == t.key) {
                Some((_, s)) => Some(*s),
                None => Some(0),
            }
        } else {
            matching.into_iter().flatten().min()
        };
        if let Some(s) = seconds {
            let due = Time(t.since_ms).plus(Duration::from_secs(u64::try_from(s).unwrap_or(0)));
            at = Some(at.map_or(due, |a| a.min(due)));
        }
    }
    at
}

/// Whether the pod still needs marking on a node that is not Ready: it has
/// reported readiness (a pod that never did is not ready anyway) and one
/// of its two conditions is not yet False with [`NODE_NOT_READY`].
fn needs_marking(p: &Pod) -> bool {
    if p.is_terminal() {
        return false;
    }
    [POD_READY, CONTAINERS_READY].iter().any(|kind| {
        p.status
            .condition(kind)
            .is_some_and(|c| c.status != ConditionStatus::False || c.reason != NODE_NOT_READY)
    })
}

/// Whether an evicted pod on a Ready node has been reported since.
fn reported_again(p: &Pod, since: Time) -> bool {
    p.status.phase != PodPhase::Unknown || p.status.last_report_time.is_some_and(|t| t > since)
}

/// Whether a pod on a Ready node still carries this controller's
/// not-ready mark although what its node last reported of it is ready
/// (Running, every container ready): the report reached the store while
/// the node was still NotReady (a reconnecting agent's full report can
/// come before its first heartbeat renews the lease) and was marked over.
/// The agent sends only changes, so it will not say it again; the
/// kubelet's status manager would re-post it. The mark is lifted from the
/// report the store holds.
fn marked_over_report(p: &Pod) -> bool {
    p.status.phase == PodPhase::Running
        && !p.status.container_statuses.is_empty()
        && p.status.container_statuses.iter().all(|c| c.ready)
        && [POD_READY, CONTAINERS_READY].iter().any(|kind| {
            p.status
                .condition(kind)
                .is_some_and(|c| c.status == ConditionStatus::False && c.reason == NODE_NOT_READY)
        })
}

/// Whether a pod is something the taint manager decides about.
fn evictable(p: &Pod) -> bool {
    !p.is_terminal() && !p.metadata.is_deleting() && p.status.evicted_since().is_none()
}

impl NodeLifecycleController {
    pub fn new(cfg: NodeLifecycleConfig) -> NodeLifecycleController {
        NodeLifecycleController {
            cfg,
            ..Default::default()
        }
    }

    fn reconcile_node(&self, key: &str, cache: &Cache, now: Time) -> Outcome {
        let Some(node) = cache.node(key) else {
            return Outcome::none();
        };
        let mut writes = Vec::new();
        let mut requeue: Option<Time> = None;
        if node.is_ready() {
            for p in cache.pods_on(key) {
                let returned = p
                    .status
                    .evicted_since()
                    .is_some_and(|since| reported_again(p, since));
                let restore = marked_over_report(p);
                if !returned && !restore {
                    continue;
                }
                // One write: an owner never sees the pod counted again
                // while it still reads not ready (it would go first on
                // scale-down, ahead of the replacement).
                let mut copy = (**p).clone();
                if restore {
                    for kind in [CONTAINERS_READY, POD_READY] {
                        copy.status
                            .set_condition(kind, ConditionStatus::True, "", "", now);
                    }
                }
                if returned {
                    copy.status.set_condition(
                        DISRUPTION_TARGET,
                        ConditionStatus::False,
                        NODE_RETURNED,
                        &format!("node {key} reported the pod again"),
                        now,
                    );
                }
                writes.push(Write::Update(Object::Pod(copy)));
            }
            return Outcome::writes(writes);
        }
        let taints = node.taints();
        let unreachable = taints.iter().any(|t| t.key == UNREACHABLE_TAINT);
        let message = format!("node {key} is not ready");
        let mut marked = 0;
        let mut evicted = Vec::new();
        for p in cache.pods_on(key) {
            let mut copy: Option<Pod> = None;
            if needs_marking(p) {
                let c = copy.get_or_insert_with(|| (**p).clone());
                for kind in [POD_READY, CONTAINERS_READY] {
                    c.status.set_condition(
                        kind,
                        ConditionStatus::False,
                        NODE_NOT_READY,
                        &message,
                        now,
                    );
                }
                marked += 1;
            }
            if evictable(p) {
                match eviction_time(p, &taints, &self.cfg.default_tolerations) {
                    Some(at) if at <= now => {
                        let c = copy.get_or_insert_with(|| (**p).clone());
                        let why = taints
                            .iter()
                            .filter(|t| t.effect == outpost_proto::TaintEffect::NoExecute)
                            .map(|t| format!("{}:NoExecute", t.key))
                            .collect::<Vec<_>>()
                            .join(", ");
                        c.status.set_condition(
                            DISRUPTION_TARGET,
                            ConditionStatus::True,
                            DELETION_BY_TAINT_MANAGER,
                            &format!(
                                "node {key} is tainted {why} beyond the pod's toleration: \
                                 its owner replaces it; the node keeps it until it is back"
                            ),
                            now,
                        );
                        if unreachable {
                            c.status.phase = PodPhase::Unknown;
                            c.status.reason = "NodeLost".into();
                            c.status.message =
                                format!("node {key} which was running the pod is unresponsive");
                        }
                        evicted.push(ns_name(&p.metadata.namespace, &p.metadata.name));
                    }
                    Some(at) => requeue = Some(requeue.map_or(at, |r| r.min(at))),
                    None => {}
                }
            }
            if let Some(c) = copy {
                writes.push(Write::Update(Object::Pod(c)));
            }
        }
        if marked > 0 {
            writes.push(Write::event(
                EventType::Warning,
                NODE_NOT_READY,
                object_ref(Kind::Node, "", key),
                format!(
                    "Node is not ready: marked {marked} pod{} not ready",
                    if marked == 1 { "" } else { "s" }
                ),
            ));
        }
        if !evicted.is_empty() {
            let n = evicted.len();
            writes.push(Write::event(
                EventType::Warning,
                TAINT_MANAGER_EVICTION,
                object_ref(Kind::Node, "", key),
                format!(
                    "Evicted {n} pod{} past {} toleration{}: {}; their owners replace them, \
                     and the node keeps them until it is back",
                    if n == 1 { "" } else { "s" },
                    if n == 1 { "its" } else { "their" },
                    if n == 1 { "" } else { "s" },
                    super::replicaset::name_list(evicted.iter().map(String::as_str)),
                ),
            ));
        }
        Outcome {
            writes,
            requeue_after: requeue.map(|at| at.since(now)),
        }
    }

    fn reconcile_site(&mut self, site: &str, cache: &Cache, now: Time) -> Outcome {
        let nodes = cache
            .nodes()
            .filter(|n| site_of(n) == Some(site))
            .map(|n| NodeReadiness {
                site: site.to_string(),
                ready: n.is_ready(),
                since_ms: n.ready.as_ref().map_or(0, |c| c.last_transition_ms),
            });
        let status = sites::site_statuses(nodes, self.cfg.partition_window)
            .into_iter()
            .next();
        let started = *self.started.get_or_insert(now);
        let Some(status) = status else {
            self.partitioned.remove(site);
            return Outcome::none();
        };
        let now_partitioned = status.state == SiteState::Partitioned;
        let was = self.partitioned.insert(site.to_string(), now_partitioned);
        let object = format!("site/{site}");
        let w = match (was, now_partitioned) {
            // First sight of a site partitioned before this controller ran:
            // its predecessor announced it.
            (None, true) if status.since_ms < started.0 => return Outcome::none(),
            (None | Some(false), true) => Write::event(
                EventType::Warning,
                SITE_PARTITIONED,
                object,
                format!(
                    "all {} nodes of site {site} turned NotReady within {}s of each other: \
                     the site's link is down, not its boxes; its pods are replaced elsewhere \
                     after their tolerations and keep running there until it is back",
                    status.nodes,
                    self.cfg.partition_window.as_secs()
                ),
            ),
            (Some(true), false) => Write::event(
                EventType::Normal,
                SITE_RECONNECTED,
                object,
                format!(
                    "site {site} is reachable again: {} of {} nodes Ready",
                    status.ready, status.nodes
                ),
            ),
            _ => return Outcome::none(),
        };
        Outcome::writes(vec![w])
    }
}

impl Controller for NodeLifecycleController {
    fn name(&self) -> &'static str {
        "node-lifecycle"
    }

    fn keys_for(&self, change: &Change, cache: &Cache, out: &mut Vec<String>) {
        match change.kind {
            Kind::Node => {
                let node = |c: &Option<Cached>| c.as_ref().and_then(|c| c.as_node()).cloned();
                let (old, new) = (node(&change.old), node(&change.new));
                let ready = |n: &Option<Arc<NodeRecord>>| n.as_ref().map(|n| n.is_ready());
                let taints = |n: &Option<Arc<NodeRecord>>| n.as_ref().map(|n| n.taints());
                if ready(&old) != ready(&new) || taints(&old) != taints(&new) {
                    out.push(change.key.clone());
                }
                if ready(&old) != ready(&new) {
                    for n in [&old, &new].into_iter().flatten() {
                        if let Some(site) = site_of(n) {
                            let key = format!("{SITE_PREFIX}{site}");
                            if !out.contains(&key) {
                                out.push(key);
                            }
                        }
                    }
                }
            }
            Kind::Pod => {
                let Some(p) = change.new.as_ref().and_then(|c| c.as_pod()) else {
                    return;
                };
                let Some(node) = p.node() else { return };
                let Some(n) = cache.node(node) else { return };
                let wants = if n.is_ready() {
                    p.status
                        .evicted_since()
                        .is_some_and(|since| reported_again(p, since))
                        || marked_over_report(p)
                } else {
                    needs_marking(p) || evictable(p)
                };
                if wants {
                    out.push(node.to_string());
                }
            }
            _ => {}
        }
    }

    fn all_keys(&self, cache: &Cache) -> Vec<String> {
        let mut keys: Vec<String> = cache.nodes().map(|n| n.name.clone()).collect();
        let mut sites: Vec<String> = cache
            .nodes()
            .filter_map(|n| site_of(n))
            .map(|s| format!("{SITE_PREFIX}{s}"))
            .collect();
        sites.sort();
        sites.dedup();
        keys.extend(sites);
        keys
    }

    fn reconcile(&mut self, key: &str, cache: &Cache, now: Time) -> Outcome {
        match key.strip_prefix(SITE_PREFIX) {
            Some(site) => self.reconcile_site(site, cache, now),
            None => self.reconcile_node(key, cache, now),
        }
    }
}

#[cfg(test)]
mod tests;
