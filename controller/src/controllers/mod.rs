//! Controllers: small reconcile loops in the style of kube-runtime.
//!
//! Each controller is pure. The control loop ([`plane`]) tells it which of
//! its keys a cache [`Change`] concerns
//! ([`Controller::keys_for`]); for each key taken off its de-duplicating
//! work queue it calls [`Controller::reconcile`] with the cache and `now`,
//! and gets back [`Write`]s and an optional re-check time. The loop commits
//! the writes (each guarded by the revision the decision was made from), so
//! a decision made from a stale view fails instead of clobbering, and the
//! key is retried with per-key back-off. Because every write goes through
//! the store and back through the watch, the next decision about a key
//! always sees the previous one's effect.
//!
//! The same controllers run in the real controller and in the in-memory
//! cluster on a virtual clock; only the loop around them differs.

pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod eviction;
pub mod gc;
pub mod nodelifecycle;
pub mod plane;
pub mod prefetch;
pub mod queue;
pub mod replicas;
pub mod replicaset;
pub mod servicelb;
pub mod sites;
pub mod status;
#[cfg(test)]
pub(crate) mod testing;

use crate::api::{Kind, Object, Time};
use crate::cache::{Cache, Change};
use outpost_proto::EventType;
use std::time::Duration;

/// A write a controller (or the scheduler) wants made.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Creates the object (uid, timestamps and a `generateName` suffix are
    /// filled in); fails if the name is taken.
    Create(Object),
    /// Replaces the object; fails unless it is still at the
    /// `resourceVersion` it carries.
    Update(Object),
    /// Deletes the object with the API's semantics (a pod still bound to a
    /// node is only marked; its node stops it first). Skipped when the
    /// object is gone or is no longer the one with `uid`.
    Delete {
        kind: Kind,
        namespace: String,
        name: String,
        uid: String,
    },
    /// Removes the object's key at once, if it is still at `revision` (a
    /// pod whose node confirmed it stopped).
    Purge {
        kind: Kind,
        namespace: String,
        name: String,
        revision: u64,
    },
    /// Records an event.
    Event {
        kind: EventType,
        reason: String,
        /// `pod/NAME`, `deployment/NS/NAME` (see `machinery::object_ref`).
        object: String,
        message: String,
    },
}

impl Write {
    pub fn event(
        kind: EventType,
        reason: &str,
        object: impl Into<String>,
        message: impl Into<String>,
    ) -> Write {
        Write::Event {
            kind,
            reason: reason.to_string(),
            object: object.into(),
            message: message.into(),
        }
    }

    /// Deletes `obj` (by its identity).
    pub fn delete(obj: &Object) -> Write {
        let m = obj.meta();
        Write::Delete {
            kind: obj.kind(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            uid: m.uid.clone(),
        }
    }
}

/// What one reconcile decided.
#[derive(Debug, Default)]
pub struct Outcome {
    pub writes: Vec<Write>,
    /// Reconcile this key again after this long even if nothing changes
    /// (minReadySeconds, progress deadlines, back-offs of its own).
    pub requeue_after: Option<Duration>,
}

impl Outcome {
    pub fn none() -> Outcome {
        Outcome::default()
    }

    pub fn writes(writes: Vec<Write>) -> Outcome {
        Outcome {
            writes,
            requeue_after: None,
        }
    }
}

/// Tunables of the standard controllers; the defaults are Kubernetes'.
/// (What a workload wants — replicas, surge, deadlines — is in its spec.)
#[derive(Debug, Clone, Default)]
pub struct ControllersConfig {
    pub replicaset: replicaset::ReplicaSetConfig,
    pub node_lifecycle: nodelifecycle::NodeLifecycleConfig,
}

/// Every workload controller, in the order the control loop runs them:
/// Deployments, ReplicaSets, the garbage collector, Endpoints, the service
/// load balancer, node lifecycle, disruption budgets.
pub fn standard(cfg: &ControllersConfig) -> Vec<Box<dyn Controller>> {
    vec![
        Box::new(deployment::DeploymentController),
        Box::new(replicaset::ReplicaSetController::new(
            cfg.replicaset.clone(),
        )),
        Box::new(gc::GarbageCollector),
        Box::new(endpoints::EndpointsController),
        Box::new(servicelb::ServiceLbController),
        Box::new(nodelifecycle::NodeLifecycleController::new(
            cfg.node_lifecycle.clone(),
        )),
        Box::new(disruption::DisruptionController),
    ]
}

/// A reconcile loop.
pub trait Controller: Send {
    fn name(&self) -> &'static str;

    /// The keys of this controller a change concerns (a pod change concerns
    /// its ReplicaSet, a Service change its Endpoints, ...).
    fn keys_for(&self, change: &Change, cache: &Cache, out: &mut Vec<String>);

    /// Every key this controller has (after a relist, and at start).
    fn all_keys(&self, cache: &Cache) -> Vec<String>;

    /// Decides about one key, from the cache and `now` only.
    fn reconcile(&mut self, key: &str, cache: &Cache, now: Time) -> Outcome;
}
