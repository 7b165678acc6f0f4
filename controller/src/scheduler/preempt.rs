//! Preemption, after Kubernetes' DefaultPreemption: for a pod that fits
//! nowhere, find nodes where removing pods of strictly lower priority would
//! let it fit, and pick the one that hurts least.
//!
//! For each node whose rejection removing pods could undo (resources,
//! ports, anti-affinity, spread; never taints, selectors or readiness), all
//! lower-priority pods are lifted off the snapshot and the filters run
//! again. If the pod fits, victims are reprieved one by one, highest
//! priority first, as long as the pod still fits; the rest are the
//! victims. Nodes are compared by: the lowest highest-victim priority, then
//! the smallest sum of victim priorities, then the fewest victims, then the
//! latest start time of the victims. The snapshot is restored exactly after
//! every what-if.

use super::arch::Learned;
use super::filter::{filter, Ctx, Cycle, Plan, Reject};
use super::snapshot::Snapshot;
use crate::api::{Pod, Time};
use std::sync::Arc;

/// Kubernetes evaluates at least this many candidate nodes
/// (`minCandidateNodesAbsolute`) ...
const MIN_CANDIDATES: usize = 100;
/// ... or this share of the nodes (`minCandidateNodesPercentage`).
const CANDIDATE_PERCENT: usize = 10;

/// A victim: key, priority, start time.
#[derive(Debug, Clone)]
pub struct Victim {
    pub key: Arc<str>,
    pub pod: Arc<Pod>,
    pub priority: i32,
    pub start: Time,
}

/// The chosen node and whom to evict there.
#[derive(Debug, Clone)]
pub struct Choice {
    pub slot: usize,
    pub victims: Vec<Victim>,
}

fn start_of(p: &Pod) -> Time {
    p.status
        .start_time
        .or(p.metadata.creation_timestamp)
        .unwrap_or_default()
}

fn fits_now(
    snap: &Snapshot,
    pod: &Pod,
    key: &str,
    plan: &Plan,
    learned: &Learned,
    slot: usize,
) -> bool {
    let cycle = Cycle::prepare(snap, pod, plan, learned);
    let cx = Ctx {
        snap,
        pod,
        key,
        plan,
        cycle: &cycle,
    };
    let node = snap.node(slot).expect("candidate node");
    filter(&cx, slot, node).is_ok()
}

/// Victims on one node, or `None` when evicting every lower-priority pod
/// there would still not make room.
fn victims_on(
    snap: &mut Snapshot,
    pod: &Pod,
    key: &str,
    plan: &Plan,
    learned: &Learned,
    slot: usize,
) -> Option<Vec<Victim>> {
    let prio = pod.priority();
    let node = snap.node(slot)?;
    let mut lower: Vec<Victim> = node
        .pods
        .iter()
        .filter_map(|k| {
            let c = snap.counted(k)?;
            let p = &c.pod;
            (p.priority() < prio && !p.metadata.is_deleting()).then(|| Victim {
                key: k.clone(),
                pod: p.clone(),
                priority: p.priority(),
                start: start_of(p),
            })
        })
        .collect();
    if lower.is_empty() {
        return None;
    }
    for v in &lower {
        snap.lift(&v.key);
    }
    if !fits_now(snap, pod, key, plan, learned, slot) {
        for v in &lower {
            snap.restore(&v.key);
        }
        return None;
    }
    // Reprieve the most important first (older first among equals).
    lower.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.start.cmp(&b.start)));
    let mut victims = Vec::new();
    for v in lower {
        snap.restore(&v.key);
        if fits_now(snap, pod, key, plan, learned, slot) {
            continue;
        }
        snap.lift(&v.key);
        victims.push(v);
    }
    for v in &victims {
        snap.restore(&v.key);
    }
    Some(victims)
}

/// Orders candidates: smaller is better.
fn rank(v: &[Victim]) -> (i32, i64, usize, std::cmp::Reverse<Time>) {
    let highest = v.iter().map(|v| v.priority).max().unwrap_or(i32::MIN);
    let sum = v.iter().map(|v| i64::from(v.priority)).sum();
    let earliest = v.iter().map(|v| v.start).min().unwrap_or_default();
    (highest, sum, v.len(), std::cmp::Reverse(earliest))
}

/// Finds where `pod` can preempt, given each node's rejection.
pub fn find(
    snap: &mut Snapshot,
    pod: &Pod,
    key: &str,
    plan: &Plan,
    learned: &Learned,
    rejected: &[(usize, Reject)],
) -> Option<Choice> {
    let want = (snap.live * CANDIDATE_PERCENT / 100).max(MIN_CANDIDATES);
    let mut best: Option<Choice> = None;
    let mut found = 0;
    for (slot, why) in rejected {
        if !why.resolvable() {
            continue;
        }
        let Some(victims) = victims_on(snap, pod, key, plan, learned, *slot) else {
            continue;
        };
        if victims.is_empty() {
            continue;
        }
        found += 1;
        if best
            .as_ref()
            .is_none_or(|b| rank(&victims) < rank(&b.victims))
        {
            best = Some(Choice {
                slot: *slot,
                victims,
            });
        }
        if found >= want {
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(priority: i32, start: u64) -> Victim {
        Victim {
            key: Arc::from("x"),
            pod: Arc::new(Pod::default()),
            priority,
            start: Time(start),
        }
    }

    #[test]
    fn candidates_rank_like_kubernetes() {
        // (victims, better than the next row)
        let rows: Vec<Vec<Victim>> = vec![
            vec![v(1, 5), v(1, 5)],          // highest 1
            vec![v(2, 5)],                   // highest 2, sum 2
            vec![v(2, 5), v(1, 5)],          // highest 2, sum 3
            vec![v(2, 5), v(1, 5), v(0, 9)], // same sum, more victims
        ];
        for w in rows.windows(2) {
            assert!(
                rank(&w[0]) < rank(&w[1]),
                "{:?} < {:?}",
                rank(&w[0]),
                rank(&w[1])
            );
        }
        // Same otherwise: the later start time wins.
        assert!(rank(&[v(1, 9)]) < rank(&[v(1, 3)]));
    }
}
