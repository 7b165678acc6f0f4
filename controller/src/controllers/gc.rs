//! The garbage collector: deletes dependents whose owners are gone, as
//! Kubernetes' garbage collector does for background deletion.
//!
//! Flow in: a dependent's key `Kind/ns/name` (`Kind/name` when
//! cluster-scoped), queued when an object with owner references appears
//! or its references change, and for every dependent of an owner that was
//! deleted (through the cache's owner index); the cache.
//!
//! Flow out: for an object none of whose owners exists any more (no object
//! of the reference's kind, in the dependent's namespace or cluster-wide,
//! with that name *and* uid), a [`Write::Delete`] (a pod still bound to a
//! node is deleted gracefully); for an object some of whose owners exist,
//! an update dropping only the references to the missing ones. An owner of
//! a kind this cluster does not know is taken to exist: the collector
//! never deletes what it cannot check.
//!
//! Orphaning is the API's business: a delete with `propagationPolicy:
//! Orphan` strips the owner references first, so orphans never reach the
//! collector.

use super::{Controller, Outcome, Write};
use crate::api::{ns_name, split_ns_name, Kind, ObjectMeta, OwnerReference};
use crate::cache::{Cache, Cached, Change};

/// The garbage collector (see the module doc). Stateless.
#[derive(Debug, Default)]
pub struct GarbageCollector;

/// `Kind/ns/name`.
fn key_of(kind: Kind, cache_key: &str) -> String {
    format!("{}/{cache_key}", kind.name())
}

/// The kind an owner reference names: same kind name, same API group
/// (any version).
fn owner_kind(r: &OwnerReference) -> Option<Kind> {
    let group = |v: &str| v.rsplit_once('/').map_or("", |(g, _)| g).to_string();
    Kind::ALL
        .into_iter()
        .find(|k| k.name() == r.kind && group(k.api_version()) == group(&r.api_version))
}

/// Whether the owner `r` of an object in `namespace` exists.
fn owner_exists(r: &OwnerReference, namespace: &str, cache: &Cache) -> bool {
    let Some(kind) = owner_kind(r) else {
        return true;
    };
    if kind == Kind::Node {
        return cache
            .node(&r.name)
            .is_some_and(|n| n.uid.is_empty() || n.uid == r.uid);
    }
    let key = if kind.namespaced() {
        ns_name(namespace, &r.name)
    } else {
        r.name.clone()
    };
    cached_meta(cache, kind, &key).is_some_and(|m| m.uid == r.uid)
}

/// The metadata of a cached object, without cloning it (none for nodes).
fn cached_meta<'a>(cache: &'a Cache, kind: Kind, key: &str) -> Option<&'a ObjectMeta> {
    match kind {
        Kind::Pod => cache.pod(key).map(|o| &o.metadata),
        Kind::ReplicaSet => cache.replicaset(key).map(|o| &o.metadata),
        Kind::Deployment => cache.deployment(key).map(|o| &o.metadata),
        Kind::Service => cache.service(key).map(|o| &o.metadata),
        Kind::Endpoints => cache.endpoints(key).map(|o| &o.metadata),
        Kind::PriorityClass => cache.priority_class(key).map(|o| &o.metadata),
        Kind::PodDisruptionBudget => cache.pdb(key).map(|o| &o.metadata),
        Kind::Node => None,
    }
}

/// The uid an owner that changed had (nodes keep theirs in the record).
fn uid_of(c: &Cached) -> Option<&str> {
    match c {
        Cached::Node(n) => Some(n.uid.as_str()),
        other => other.meta().map(|m| m.uid.as_str()),
    }
}

impl Controller for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbage-collector"
    }

    fn keys_for(&self, change: &Change, cache: &Cache, out: &mut Vec<String>) {
        // A dependent that appeared, or whose references changed.
        if let Some(new) = change.new.as_ref().and_then(|c| c.meta()) {
            let old = change.old.as_ref().and_then(|c| c.meta());
            if !new.owner_references.is_empty()
                && old.map(|m| &m.owner_references) != Some(&new.owner_references)
            {
                out.push(key_of(change.kind, &change.key));
            }
        }
        // An owner that went, or was replaced by a namesake: its
        // dependents.
        let old_uid = change.old.as_ref().and_then(uid_of);
        let new_uid = change.new.as_ref().and_then(uid_of);
        if let Some(uid) = old_uid.filter(|u| !u.is_empty() && Some(*u) != new_uid) {
            for kind in Kind::ALL {
                for k in cache.owned_by(kind, uid) {
                    out.push(key_of(kind, k));
                }
            }
        }
    }

    fn all_keys(&self, cache: &Cache) -> Vec<String> {
        let mut out = Vec::new();
        for kind in Kind::ALL {
            if kind == Kind::Node {
                continue;
            }
            for k in cache.keys(kind) {
                if cached_meta(cache, kind, &k).is_some_and(|m| !m.owner_references.is_empty()) {
                    out.push(key_of(kind, &k));
                }
            }
        }
        out
    }

    fn reconcile(&mut self, key: &str, cache: &Cache, _now: crate::api::Time) -> Outcome {
        let Some((kind, cache_key)) = key
            .split_once('/')
            .and_then(|(k, rest)| Some((Kind::ALL.into_iter().find(|x| x.name() == k)?, rest)))
        else {
            return Outcome::none();
        };
        let Some(meta) = cached_meta(cache, kind, cache_key) else {
            return Outcome::none();
        };
        if meta.owner_references.is_empty() || meta.is_deleting() {
            return Outcome::none();
        }
        let namespace = split_ns_name(cache_key).0;
        let (alive, dangling): (Vec<&OwnerReference>, Vec<&OwnerReference>) = meta
            .owner_references
            .iter()
            .partition(|r| owner_exists(r, namespace, cache));
        if dangling.is_empty() {
            return Outcome::none();
        }
        if alive.is_empty() {
            return Outcome::writes(vec![Write::Delete {
                kind,
                namespace: meta.namespace.clone(),
                name: meta.name.clone(),
                uid: meta.uid.clone(),
            }]);
        }
        let kept: Vec<OwnerReference> = alive.into_iter().cloned().collect();
        let Some(mut copy) = cache.object(kind, cache_key) else {
            return Outcome::none();
        };
        copy.meta_mut().owner_references = kept;
        Outcome::writes(vec![Write::Update(copy)])
    }
}

#[cfg(test)]
mod tests;
