//! What counts as a replica, shared by the ReplicaSet and Deployment
//! controllers so both count the same pods the same way.
//!
//! Flow in: pods from the cache and `now`. Flow out: whether a pod is
//! active (a replica: not finished, not being deleted), ready, available
//! (ready for `minReadySeconds`, from its Ready condition's
//! `lastTransitionTime`, as Kubernetes' `IsPodAvailable`), the counts over
//! a set of pods, and when the next ready pod becomes available (so a
//! controller can look again at that moment instead of polling).

use crate::api::{Pod, ReplicaSet, Time};
use crate::cache::{Cache, Change};
use std::sync::Arc;
use std::time::Duration;

/// A replica: neither finished (Succeeded, Failed) nor being deleted, as
/// Kubernetes' `FilterActivePods`, nor evicted from a node that is
/// unreachable or not ready (`DisruptionTarget`; Kubernetes deletes such
/// pods, Outpost leaves them on their node until it is back, so the owner
/// must not count them).
pub fn is_active(p: &Pod) -> bool {
    !p.is_terminal() && !p.metadata.is_deleting() && p.status.evicted_since().is_none()
}

/// When a pod that is Ready becomes available (`None`: not Ready). With
/// no `minReadySeconds` a Ready pod is available at once; a Ready pod
/// without a transition time counts from the start of time.
pub fn available_at(p: &Pod, min_ready: Duration) -> Option<Time> {
    if !p.status.is_ready() {
        return None;
    }
    if min_ready.is_zero() {
        return Some(Time(0));
    }
    Some(p.status.ready_since().unwrap_or_default().plus(min_ready))
}

/// Ready for at least `min_ready` at `now`.
pub fn is_available(p: &Pod, min_ready: Duration, now: Time) -> bool {
    available_at(p, min_ready).is_some_and(|t| t <= now)
}

/// `minReadySeconds` as a duration (negative: none).
pub fn min_ready(seconds: i32) -> Duration {
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// Counts over a set of pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub active: i32,
    pub ready: i32,
    pub available: i32,
    /// The earliest moment a ready, not yet available pod becomes
    /// available.
    pub next_available: Option<Time>,
}

/// Counts the active pods among `pods`.
pub fn count<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    min_ready: Duration,
    now: Time,
) -> Counts {
    let mut c = Counts::default();
    for p in pods.into_iter().filter(|p| is_active(p)) {
        c.active += 1;
        if let Some(at) = available_at(p, min_ready) {
            c.ready += 1;
            if at <= now {
                c.available += 1;
            } else {
                c.next_available = Some(c.next_available.map_or(at, |n| n.min(at)));
            }
        }
    }
    c
}

/// Pods whose controller is `rs` (by uid), terminal and deleting ones
/// included.
pub fn controlled_pods<'a>(cache: &'a Cache, rs: &ReplicaSet) -> Vec<&'a Arc<Pod>> {
    cache
        .pods_owned_by(&rs.metadata.uid)
        .filter(|p| {
            p.metadata
                .controller_ref()
                .is_some_and(|r| r.uid == rs.metadata.uid)
        })
        .collect()
}

/// The part of a pod the workload controllers decide on: a pod change that
/// leaves it alone (messages, container ids, report times) concerns none
/// of them.
type ReplicaView<'a> = (
    crate::api::pod::PodPhase,
    bool,
    bool,
    Option<Time>,
    Option<Time>,
    &'a String,
    &'a std::collections::BTreeMap<String, String>,
    &'a Vec<crate::api::OwnerReference>,
);

fn replica_view(p: &Pod) -> ReplicaView<'_> {
    (
        p.status.phase,
        p.status.is_ready(),
        p.status.evicted_since().is_some(),
        p.status.ready_since(),
        p.metadata.deletion_timestamp,
        &p.spec.node_name,
        &p.metadata.labels,
        &p.metadata.owner_references,
    )
}

/// Whether a pod change matters to a workload controller: the pod came,
/// went, or changed in what `replica_view` looks at.
pub fn replica_changed(change: &Change) -> bool {
    let pod = |c: &Option<crate::cache::Cached>| c.as_ref().and_then(|c| c.as_pod().cloned());
    match (pod(&change.old), pod(&change.new)) {
        (Some(a), Some(b)) => replica_view(&a) != replica_view(&b),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::meta::ConditionStatus;
    use crate::api::pod::{PodPhase, POD_READY};

    fn pod(phase: PodPhase, ready_at: Option<u64>, deleting: bool) -> Pod {
        let mut p = Pod::default();
        p.status.phase = phase;
        if let Some(t) = ready_at {
            p.status
                .set_condition(POD_READY, ConditionStatus::True, "", "", Time(t));
        }
        if deleting {
            p.metadata.deletion_timestamp = Some(Time(1));
        }
        p
    }

    #[test]
    fn counts_active_ready_and_available() {
        let pods = [
            pod(PodPhase::Running, Some(1_000), false),
            pod(PodPhase::Running, Some(5_000), false),
            pod(PodPhase::Running, None, false),
            pod(PodPhase::Pending, None, false),
            pod(PodPhase::Failed, None, false),
            pod(PodPhase::Running, Some(1_000), true),
        ];
        let c = count(&pods, Duration::from_secs(2), Time(4_000));
        assert_eq!(
            c,
            Counts {
                active: 4,
                ready: 2,
                available: 1,
                next_available: Some(Time(7_000)),
            }
        );
        // At exactly minReadySeconds the pod is available.
        assert!(is_available(&pods[1], Duration::from_secs(2), Time(7_000)));
        assert!(!is_available(&pods[1], Duration::from_secs(2), Time(6_999)));
        assert!(is_available(&pods[1], Duration::ZERO, Time(0)));
        assert_eq!(min_ready(-1), Duration::ZERO);
    }
}
