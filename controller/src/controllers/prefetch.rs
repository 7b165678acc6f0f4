//! Images before old pods when a rollout has no surge room.
//!
//! With `strategy: Recreate`, or RollingUpdate with `maxSurge: 0`, old pods
//! are stopped before any new pod exists, so the new pods' image pulls would
//! start only after the old pods went: a site on a slow link would serve
//! with fewer pods (none, for Recreate) while bytes crawl in. Instead, the
//! Deployment controller first asks the nodes that run the old pods (where
//! the new ones most likely land: their resources are about to be freed)
//! to fetch the new template's images, and stops old pods only once every
//! such node reports holding them, or once `progressDeadlineSeconds` passed
//! since the wait began (then it proceeds, and says so in a Warning event).
//!
//! Flow: [`decide`] (pure: the Deployment's `ImagesPrefetched` condition,
//! what is missing, the deadline and `now`) tells the controller to wait or
//! go on. While the condition is `False` with reason [`PREFETCHING`], the
//! agents' desired state ([`wanted_images`], read by `agents::desired_for`)
//! lists the template's images for every node running one of the
//! Deployment's old pods; agents pull them (or an operator pushes them with
//! `outpostctl image push`) and report them in their image list, which is
//! what [`missing`] reads. Nodes whose agent speaks protocol 3 cannot be
//! asked and are not waited for (`NodeRecord::protocol`, noted at each
//! session's hello).

use crate::api::apps::{condition, Deployment, WorkloadCondition};
use crate::api::meta::ConditionStatus;
use crate::api::{ns_name, Pod, Time};
use crate::cache::Cache;
use crate::scheduler::arch::normalize;
use std::collections::BTreeSet;
use std::time::Duration;

/// The Deployment condition that tracks the wait.
pub const IMAGES_PREFETCHED: &str = "ImagesPrefetched";
/// `False` while nodes of old pods fetch the new images.
pub const PREFETCHING: &str = "Prefetching";
/// `True` once every node of an old pod holds them.
pub const IMAGES_PRESENT: &str = "ImagesPresent";
/// `False` when the wait gave up at the deadline (also the event reason).
pub const PREFETCH_DEADLINE_EXCEEDED: &str = "PrefetchDeadlineExceeded";

/// The wait's bound when the Deployment has no progress deadline
/// (`progressDeadlineSeconds` "never"): Kubernetes' default deadline.
pub const DEFAULT_BOUND: Duration = Duration::from_secs(600);

/// Most (node, image) pairs a condition message names.
const MESSAGE_PAIRS: usize = 8;

/// What the rollout does about images this step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to fetch (any more): stop old pods as the strategy says.
    Go,
    /// Keep the old pods; look again at `until` (or when a node reports).
    Wait { since: Time, until: Time },
    /// The deadline passed with images still missing: stop old pods now.
    GiveUp { since: Time },
    /// Gave up before, in this rollout: go on without waiting again.
    GaveUpBefore,
}

/// Decides from the `ImagesPrefetched` condition as it stands, the
/// `(node, image)` pairs still missing and the deadline.
pub fn decide(
    current: Option<&WorkloadCondition>,
    missing: &[(String, String)],
    deadline: Option<Duration>,
    now: Time,
) -> Decision {
    let bound = deadline.unwrap_or(DEFAULT_BOUND);
    match current {
        Some(c) if c.status == ConditionStatus::False && c.reason == PREFETCH_DEADLINE_EXCEEDED => {
            Decision::GaveUpBefore
        }
        _ if missing.is_empty() => Decision::Go,
        Some(c) if c.status == ConditionStatus::False && c.reason == PREFETCHING => {
            let since = c.last_transition_time.unwrap_or(now);
            let until = since.plus(bound);
            if now >= until {
                Decision::GiveUp { since }
            } else {
                Decision::Wait { since, until }
            }
        }
        _ => Decision::Wait {
            since: now,
            until: now.plus(bound),
        },
    }
}

/// The images of `images` that `nodes` do not report holding, as
/// `(node, image)` pairs in order. Nodes that cannot be asked are left out:
/// unknown to the cache, or whose agent speaks a protocol older than
/// wanted images ([`outpost_proto::version::NODE_DESIRED`]); their new pods
/// pull where they land, as before.
pub fn missing<'a>(
    cache: &Cache,
    nodes: impl IntoIterator<Item = &'a str>,
    images: &[&str],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for node in nodes {
        let Some(rec) = cache.node(node) else {
            continue;
        };
        if !outpost_proto::version::has(rec.protocol, outpost_proto::version::NODE_DESIRED) {
            continue;
        }
        for image in images {
            let want = normalize(image);
            let held = rec
                .images
                .iter()
                .any(|i| i.names.iter().any(|n| normalize(n) == want));
            if !held {
                out.push((node.to_string(), (*image).to_string()));
            }
        }
    }
    out
}

/// Which nodes lack which images, bounded: `n1: web:2, n2: web:2`.
pub fn missing_list(missing: &[(String, String)]) -> String {
    let mut parts: Vec<String> = missing
        .iter()
        .take(MESSAGE_PAIRS)
        .map(|(n, i)| format!("{n}: {i}"))
        .collect();
    if missing.len() > MESSAGE_PAIRS {
        parts.push(format!("and {} more", missing.len() - MESSAGE_PAIRS));
    }
    parts.join(", ")
}

/// The condition message while waiting.
pub fn waiting_message(missing: &[(String, String)]) -> String {
    format!(
        "Old pods keep running while their nodes fetch the new images ({})",
        missing_list(missing)
    )
}

/// Whether a Deployment is waiting for images (its nodes are asked for
/// them).
pub fn is_prefetching(d: &Deployment) -> bool {
    condition(&d.status.conditions, IMAGES_PREFETCHED)
        .is_some_and(|c| c.status == ConditionStatus::False && c.reason == PREFETCHING)
}

/// The images `node` is asked to fetch: the templates of the Deployments
/// waiting for images that have an old pod (of another template) there.
/// At most [`outpost_proto::MAX_WANTED_IMAGES`], in a stable order.
pub fn wanted_images(cache: &Cache, node: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    for p in cache.pods_on(node) {
        if let Some(d) = waiting_owner(cache, p) {
            for image in d.spec.template.spec.images() {
                if !p.spec.containers.iter().any(|c| c.image == image) {
                    out.insert(image.to_string());
                }
            }
        }
    }
    out.into_iter()
        .take(outpost_proto::MAX_WANTED_IMAGES)
        .collect()
}

/// Keys of the Deployments waiting for images that have an old pod on
/// `node` (its image list changed: they may go on).
pub fn waiting_on(cache: &Cache, node: &str) -> Vec<String> {
    let mut out: Vec<String> = cache
        .pods_on(node)
        .filter_map(|p| waiting_owner(cache, p))
        .map(|d| ns_name(&d.metadata.namespace, &d.metadata.name))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Nodes whose wanted images a change of a Deployment may change (it
/// started or stopped waiting, or its template changed while waiting): the
/// nodes of its pods. Empty for any other change.
pub fn touched_nodes(
    cache: &Cache,
    old: Option<&Deployment>,
    new: Option<&Deployment>,
    out: &mut BTreeSet<String>,
) {
    let waiting = |d: Option<&Deployment>| d.is_some_and(is_prefetching);
    if !waiting(old) && !waiting(new) {
        return;
    }
    let same_template = match (old, new) {
        (Some(a), Some(b)) => a.spec.template == b.spec.template,
        _ => false,
    };
    if waiting(old) == waiting(new) && same_template {
        return;
    }
    let Some(d) = new.or(old) else { return };
    for rs in cache.replicasets_owned_by(&d.metadata.uid) {
        for p in crate::controllers::replicas::controlled_pods(cache, rs) {
            if let Some(n) = p.node() {
                out.insert(n.to_string());
            }
        }
    }
}

/// The Deployment that owns `p` (through its ReplicaSet), if it is waiting
/// for images and `p` is one of its old pods.
fn waiting_owner<'a>(cache: &'a Cache, p: &Pod) -> Option<&'a Deployment> {
    let ns = &p.metadata.namespace;
    let rs_ref = p.metadata.controller_ref()?;
    let rs = cache.replicaset(&ns_name(ns, &rs_ref.name))?;
    let d_ref = rs.metadata.controller_ref()?;
    let d = cache.deployment(&ns_name(ns, &d_ref.name))?;
    if d.metadata.uid != d_ref.uid || !is_prefetching(d) {
        return None;
    }
    let old =
        !crate::controllers::deployment::equal_ignore_hash(&rs.spec.template, &d.spec.template);
    old.then_some(d.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(reason: &str, status: ConditionStatus, since_ms: u64) -> WorkloadCondition {
        WorkloadCondition {
            kind: IMAGES_PREFETCHED.into(),
            status,
            reason: reason.into(),
            message: String::new(),
            last_update_time: Some(Time(since_ms)),
            last_transition_time: Some(Time(since_ms)),
        }
    }

    #[test]
    fn decisions() {
        let gone = [("n1".to_string(), "web:2".to_string())];
        let ten = Some(Duration::from_secs(10));
        let waiting = cond(PREFETCHING, ConditionStatus::False, 1_000);
        let gave_up = cond(PREFETCH_DEADLINE_EXCEEDED, ConditionStatus::False, 1_000);
        let present = cond(IMAGES_PRESENT, ConditionStatus::True, 1_000);
        for (current, missing, deadline, now, want, why) in [
            (None, &[][..], ten, 5_000, Decision::Go, "nothing missing"),
            (
                None,
                &gone[..],
                ten,
                5_000,
                Decision::Wait {
                    since: Time(5_000),
                    until: Time(15_000),
                },
                "starts waiting",
            ),
            (
                Some(&present),
                &gone[..],
                ten,
                5_000,
                Decision::Wait {
                    since: Time(5_000),
                    until: Time(15_000),
                },
                "present before, missing again: waits anew",
            ),
            (
                Some(&waiting),
                &gone[..],
                ten,
                10_999,
                Decision::Wait {
                    since: Time(1_000),
                    until: Time(11_000),
                },
                "still within the deadline",
            ),
            (
                Some(&waiting),
                &gone[..],
                ten,
                11_000,
                Decision::GiveUp { since: Time(1_000) },
                "at the deadline",
            ),
            (Some(&waiting), &[][..], ten, 3_000, Decision::Go, "fetched"),
            (
                Some(&gave_up),
                &gone[..],
                ten,
                99_000,
                Decision::GaveUpBefore,
                "does not wait twice",
            ),
            (
                Some(&waiting),
                &gone[..],
                None,
                600_999,
                Decision::Wait {
                    since: Time(1_000),
                    until: Time(601_000),
                },
                "no deadline: bounded by Kubernetes' default",
            ),
        ] {
            assert_eq!(decide(current, missing, deadline, Time(now)), want, "{why}");
        }
    }

    #[test]
    fn the_message_is_bounded() {
        let missing: Vec<(String, String)> = (0..20)
            .map(|i| (format!("node-{i}"), "web:2".to_string()))
            .collect();
        let m = waiting_message(&missing);
        assert!(
            m.contains("node-0: web:2") && m.contains("and 12 more"),
            "{m}"
        );
        assert!(!m.contains("node-8:"), "{m}");
    }
}
