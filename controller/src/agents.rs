//! The agents' side of the object model: what each node is told to run,
//! and what it says about its pods.
//!
//! Down: a node's desired pods are the cache's pods bound to it, sent as
//! changes since the revision the agent acknowledged (the revision at which
//! each pod's runnable part last changed, so status writes never resend a
//! pod), or whole when the agent has nothing. A pod being deleted is sent as
//! a removal, with its deletion's grace period (`deletionGracePeriodSeconds`:
//! a drain's `--grace-period`), until its node confirms it gone. Agents
//! speaking protocol 3 get the same without grace periods
//! ([`NodeDesired::to_pods_desired`]). Every message also carries the
//! images the node is asked to fetch ahead of a rollout
//! (`controllers::prefetch`).
//!
//! Up: statuses go to the control loop's inbox (latest per pod, written in
//! batches), usage stays in memory for `top` (it changes every measurement
//! and is never written).

use crate::api::{self, Time};
use crate::cache::Cache;
use crate::controllers::status::{Entry, Report, StatusInbox};
use outpost_proto::pod::{DesiredPod, Usage};
use outpost_proto::{NodeDesired, PodStatusUpdate, Removal};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// The `namespace/name` cache key of the pod an agent names by its wire
/// key (`name` in the default namespace, `namespace.name` elsewhere).
pub fn pod_key(wire_key: &str) -> String {
    match wire_key.split_once('.') {
        Some((ns, name)) => format!("{ns}/{name}"),
        None => format!("{}/{wire_key}", api::DEFAULT_NAMESPACE),
    }
}

/// The wire key of a cached pod.
pub fn wire_key(pod: &api::Pod) -> String {
    pod.to_wire().key()
}

/// What `node` must be told, given the revision it acknowledged:
/// everything when it has nothing (0), a revision this store never
/// reached (restored from a backup), or a revision from before this node
/// was created (the box acknowledged it as an earlier node of the same
/// name, deleted since: its pods must not outlive that node), else only
/// what changed since.
pub fn desired_for(cache: &Cache, node: &str, acked: u64) -> NodeDesired {
    let full = acked == 0
        || acked > cache.revision()
        || cache
            .node_created(node)
            .is_some_and(|created| acked < created);
    let mut pods = Vec::new();
    let mut removed = Vec::new();
    for p in cache.pods_on(node) {
        let key = crate::api::ns_name(&p.metadata.namespace, &p.metadata.name);
        let changed = cache.desired_revision(&key).is_none_or(|r| r > acked);
        if !full && !changed {
            continue;
        }
        if p.metadata.is_deleting() {
            if !full {
                removed.push(Removal {
                    key: wire_key(p),
                    grace_period_seconds: p
                        .metadata
                        .deletion_grace_period_seconds
                        .map(removal_grace),
                });
            }
        } else {
            pods.push(DesiredPod {
                generation: u64::try_from(p.metadata.generation).unwrap_or(1),
                spec: p.to_wire(),
            });
        }
    }
    NodeDesired {
        generation: cache.revision(),
        full,
        pods,
        removed,
        images: crate::controllers::prefetch::wanted_images(cache, node),
    }
}

/// A deletion's grace period as a removal carries it: never negative, at
/// most [`outpost_proto::MAX_REMOVAL_GRACE_SECS`].
fn removal_grace(seconds: i64) -> u32 {
    u32::try_from(seconds.max(0))
        .unwrap_or(u32::MAX)
        .min(outpost_proto::MAX_REMOVAL_GRACE_SECS)
}

/// Per-node wake-ups for the sessions and the live usage figures.
#[derive(Debug, Default)]
pub struct Agents {
    wakers: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    pod_usage: Mutex<HashMap<String, Usage>>,
    node_usage: Mutex<HashMap<String, Usage>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Agents {
    /// The notifier `node`'s session waits on for desired-state changes.
    pub fn waker(&self, node: &str) -> Arc<tokio::sync::Notify> {
        lock(&self.wakers)
            .entry(node.to_string())
            .or_default()
            .clone()
    }

    /// Wakes the sessions of `nodes`.
    pub fn wake<'a>(&self, nodes: impl IntoIterator<Item = &'a String>) {
        let w = lock(&self.wakers);
        for n in nodes {
            if let Some(n) = w.get(n) {
                n.notify_one();
            }
        }
    }

    /// Takes a status update from `node`'s agent: validated, then the
    /// latest per pod into the inbox. Pods not bound to `node` are dropped
    /// later (a node speaks only for its own pods).
    pub fn statuses(
        &self,
        node: &str,
        update: PodStatusUpdate,
        cache: &RwLock<Cache>,
        inbox: &Mutex<StatusInbox>,
        now: Time,
    ) -> Result<(), String> {
        update.validate()?;
        lock(&self.node_usage).insert(node.to_string(), update.node_usage);
        let entry = |report| Entry {
            node: node.to_string(),
            report,
            at: now,
        };
        let mut entries: Vec<(String, Entry)> = Vec::new();
        let mut reported = std::collections::HashSet::new();
        {
            // Usage is kept only for pods bound to this node, so a node
            // naming pods that are not its own cannot grow the map.
            let cache = cache.read().unwrap_or_else(|p| p.into_inner());
            let mut usage = lock(&self.pod_usage);
            for s in update.pods {
                let key = pod_key(&s.name);
                if cache.pod(&key).is_some_and(|p| p.node() == Some(node)) {
                    usage.insert(key.clone(), s.usage);
                }
                reported.insert(key.clone());
                entries.push((key, entry(Report::Status(Box::new(s)))));
            }
            for g in update.gone {
                let key = pod_key(&g);
                usage.remove(&key);
                entries.push((key, entry(Report::Gone)));
            }
        }
        if update.full {
            // Pods bound here that the agent does not have.
            let cache = cache.read().unwrap_or_else(|p| p.into_inner());
            for p in cache.pods_on(node) {
                let key = crate::api::ns_name(&p.metadata.namespace, &p.metadata.name);
                if !reported.contains(&key) {
                    entries.push((key, entry(Report::Gone)));
                }
            }
        }
        let mut inbox = lock(inbox);
        for (k, e) in entries {
            inbox.put(k, e);
        }
        Ok(())
    }

    pub fn pod_usage(&self) -> Vec<(String, Usage)> {
        let mut v: Vec<(String, Usage)> = lock(&self.pod_usage)
            .iter()
            .map(|(k, u)| (k.clone(), *u))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn node_usage(&self, node: &str) -> Option<Usage> {
        lock(&self.node_usage).get(node).copied()
    }

    pub fn node_usages(&self) -> Vec<(String, Usage)> {
        let mut v: Vec<(String, Usage)> = lock(&self.node_usage)
            .iter()
            .map(|(k, u)| (k.clone(), *u))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Forgets a deleted node's figures and those of its pods.
    pub fn forget_node(&self, node: &str, cache: &Cache) {
        lock(&self.node_usage).remove(node);
        let gone: Vec<String> = cache
            .pods_on(node)
            .map(|p| crate::api::ns_name(&p.metadata.namespace, &p.metadata.name))
            .collect();
        let mut usage = lock(&self.pod_usage);
        for k in gone {
            usage.remove(&k);
        }
    }
}
