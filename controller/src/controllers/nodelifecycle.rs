//! Node lifecycle, the part endpoints need: the pods of a node that is not
//! Ready are marked not ready, as Kubernetes' `MarkPodsNotReady` does, so
//! the endpoints controller moves them to `notReadyAddresses` and traffic
//! stops going to a node nobody hears from.
//!
//! Flow in: a node name, queued when its record changes Ready state and
//! when a pod on a node that is not Ready changes; the cache (the
//! `NodeRecord`'s [`is_ready`](crate::registry::NodeRecord::is_ready),
//! the pods bound to it) and `now`.
//!
//! Flow out: for a node that is not Ready, an update of every pod on it
//! whose `Ready` or `ContainersReady` condition is not yet False for this
//! reason, setting both False with reason `NodeNotReady`, and one Warning
//! event per node. Nothing when the node is Ready: the agent's next report
//! restores readiness (this controller never sets it True).
//!
//! Not here yet (the next step, and its seam): evicting the pods of an
//! unreachable node once their `node.kubernetes.io/unreachable`
//! toleration runs out (default 60 s, DESIGN.md), so their ReplicaSets
//! replace them elsewhere; a pod pinned to its site stays. That decision
//! belongs in this module, keyed the same way, with a re-check at the
//! earliest toleration expiry.

use super::{Controller, Outcome, Write};
use crate::api::machinery::object_ref;
use crate::api::meta::ConditionStatus;
use crate::api::pod::{CONTAINERS_READY, POD_READY};
use crate::api::{Kind, Object, Pod, Time};
use crate::cache::{Cache, Cached, Change};
use outpost_proto::EventType;

/// Reason set on the pods' conditions (Kubernetes' event reason).
pub const NODE_NOT_READY: &str = "NodeNotReady";

/// The node lifecycle controller (see the module doc). Stateless.
#[derive(Debug, Default)]
pub struct NodeLifecycleController;

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

impl Controller for NodeLifecycleController {
    fn name(&self) -> &'static str {
        "node-lifecycle"
    }

    fn keys_for(&self, change: &Change, cache: &Cache, out: &mut Vec<String>) {
        match change.kind {
            Kind::Node => {
                let ready =
                    |c: &Option<Cached>| c.as_ref().and_then(|c| c.as_node()).map(|n| n.is_ready());
                if ready(&change.old) != ready(&change.new) {
                    out.push(change.key.clone());
                }
            }
            Kind::Pod => {
                let Some(p) = change.new.as_ref().and_then(|c| c.as_pod()) else {
                    return;
                };
                let Some(node) = p.node() else { return };
                if cache.node(node).is_some_and(|n| !n.is_ready()) && needs_marking(p) {
                    out.push(node.to_string());
                }
            }
            _ => {}
        }
    }

    fn all_keys(&self, cache: &Cache) -> Vec<String> {
        cache
            .nodes()
            .filter(|n| !n.is_ready())
            .map(|n| n.name.clone())
            .collect()
    }

    fn reconcile(&mut self, key: &str, cache: &Cache, now: Time) -> Outcome {
        let Some(node) = cache.node(key) else {
            return Outcome::none();
        };
        if node.is_ready() {
            return Outcome::none();
        }
        let message = format!("node {key} is not ready");
        let mut writes = Vec::new();
        for p in cache.pods_on(key).filter(|p| needs_marking(p)) {
            let mut copy = (**p).clone();
            for kind in [POD_READY, CONTAINERS_READY] {
                copy.status.set_condition(
                    kind,
                    ConditionStatus::False,
                    NODE_NOT_READY,
                    &message,
                    now,
                );
            }
            writes.push(Write::Update(Object::Pod(copy)));
        }
        if !writes.is_empty() {
            let n = writes.len();
            writes.push(Write::event(
                EventType::Warning,
                NODE_NOT_READY,
                object_ref(Kind::Node, "", key),
                format!(
                    "Node is not ready: marked {n} pod{} not ready",
                    if n == 1 { "" } else { "s" }
                ),
            ));
        }
        Outcome::writes(writes)
    }
}

#[cfg(test)]
mod tests;
