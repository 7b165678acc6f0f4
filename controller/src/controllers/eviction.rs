//! The eviction check: whether a pod may be taken away now without
//! breaking its PodDisruptionBudget, with Kubernetes' eviction API
//! semantics. This is the one seam every voluntary disruption goes
//! through: the operator API's `Evict` (and so `outpostctl drain`) calls
//! it, and the cluster autoscaler calls it before it removes a node.
//!
//! [`check`] is pure: given the cache, the pod and `now`, it returns the
//! refusal, or the [`Eviction`] to commit: the pod's graceful deletion
//! and, when a budget allowed it, the budget with the pod recorded in
//! `disruptedPods` and `disruptionsAllowed` one lower, written in **one**
//! transaction guarded by the revisions both were read at
//! ([`Eviction::txn`]). Of two concurrent evictions spending the last
//! allowed disruption, one commits and the other's guard fails; checked
//! again, it sees `disruptionsAllowed: 0` and is refused. So however
//! evictions interleave, the healthy pods never drop below the budget
//! because of them.
//!
//! Rules, in Kubernetes' order:
//! 1. A pod that is Succeeded, Failed, Pending or already being deleted
//!    is deleted without looking at any budget (it is not keeping anything
//!    available).
//! 2. No budget selects the pod: it is deleted.
//! 3. More than one budget selects it: refused
//!    ([`EvictionError::MultipleBudgets`]); the eviction API does not
//!    support that.
//! 4. The budget's status is for an older generation: refused for now
//!    (the disruption controller has not caught up).
//! 5. The pod is not Ready: under `unhealthyPodEvictionPolicy:
//!    AlwaysAllow`, or under the default `IfHealthyBudget` while the
//!    budget is met (`currentHealthy >= desiredHealthy > 0`), it is
//!    deleted without spending a disruption.
//! 6. `disruptionsAllowed` is 0: refused for now,
//!    "Cannot evict pod as it would violate the pod's disruption budget."
//!    (the API answers `TooManyRequests`, Kubernetes' 429, and callers
//!    retry). Otherwise one disruption is spent.

use crate::api::machinery::{self, Deletion};
use crate::api::pod::PodPhase;
use crate::api::policy::{PodDisruptionBudget, UnhealthyPodEvictionPolicy};
use crate::api::{ns_name, Object, Pod, Resource, Time};
use crate::cache::Cache;
use crate::store::{Compare, Op, Txn};

/// Most entries `disruptedPods` may hold (Kubernetes' `MaxDisruptedPodSize`):
/// past it, evictions the disruption controller has not confirmed are
/// piling up and further ones are refused.
pub const MAX_DISRUPTED_PODS: usize = 2000;

/// Kubernetes' message for an eviction the budget does not allow (now).
pub const BUDGET_REFUSAL: &str =
    "Cannot evict pod as it would violate the pod's disruption budget.";

/// Why a pod may not be evicted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvictionError {
    #[error("pods {name:?} not found")]
    NotFound { namespace: String, name: String },
    /// Refused for now; retrying later may succeed (Kubernetes' 429).
    /// `cause` says which budget and why (Kubernetes' `DisruptionBudget`
    /// status cause).
    #[error("{BUDGET_REFUSAL}")]
    Budget { budget: String, cause: String },
    #[error(
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not \
         support. (budgets: {}; change their selectors so that at most one selects the pod)",
        .0.join(", ")
    )]
    MultipleBudgets(Vec<String>),
    #[error(
        "PodDisruptionBudget {0}: DisruptedPods map too big - too many evictions not confirmed by \
         PDB controller"
    )]
    TooManyDisrupted(String),
}

impl EvictionError {
    /// Whether the same eviction may be allowed later without anyone
    /// changing anything (the budget recovers as pods become Ready).
    pub fn is_retryable(&self) -> bool {
        matches!(self, EvictionError::Budget { .. })
    }
}

/// Why an eviction was allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    /// Succeeded, Failed or Pending: nothing is kept available by it.
    NotRunning(PodPhase),
    /// Already being deleted.
    AlreadyDeleting,
    /// No budget selects the pod.
    NoBudget,
    /// Not Ready, and the budget's policy lets unhealthy pods go.
    Unhealthy { budget: String },
    /// The budget had a disruption to spend.
    Budget { budget: String },
}

/// An allowed eviction, to be committed with [`Eviction::txn`].
#[derive(Debug, Clone, PartialEq)]
pub struct Eviction {
    pub allowed: Allowed,
    /// The pod as read (its `resourceVersion` guards the write).
    pub pod: Pod,
    /// How the pod goes: marked deleting (its node stops it), removed
    /// now (not bound), or nothing (already deleting).
    pub deletion: Deletion,
    /// The budget as read, and as it is to be written when the eviction
    /// spends one of its disruptions.
    pub budget: Option<(PodDisruptionBudget, Option<PodDisruptionBudget>)>,
}

impl Eviction {
    /// The one transaction that carries the eviction out, guarded by the
    /// revisions of the pod and of its budget as they were read; `None`
    /// when there is nothing to write (the pod is already being deleted).
    pub fn txn(&self) -> Option<Txn> {
        let pod_key = self.pod.key();
        let mut compare = vec![Compare::mod_revision(
            pod_key.clone(),
            self.pod.metadata.revision(),
        )];
        let mut ops = match &self.deletion {
            Deletion::AlreadyDeleting => return None,
            Deletion::Now => vec![Op::delete(pod_key)],
            Deletion::Graceful(obj) => vec![Op::put(pod_key, obj.to_stored())],
        };
        if let Some((read, write)) = &self.budget {
            compare.push(Compare::mod_revision(read.key(), read.metadata.revision()));
            if let Some(w) = write {
                ops.push(Op::put(
                    w.key(),
                    Object::PodDisruptionBudget(w.clone()).to_stored(),
                ));
            }
        }
        Some(Txn::guarded(compare, ops))
    }
}

/// How a pod that is evicted is deleted: gracefully when bound (with
/// `grace_seconds` when given, else its own termination grace period).
fn deletion_of(pod: &Pod, grace_seconds: Option<i64>, now: Time) -> Deletion {
    machinery::deletion_with_grace(&Object::Pod(pod.clone()), now, grace_seconds)
}

/// Decides the eviction of pod `namespace/name` (see the module doc).
pub fn check(
    cache: &Cache,
    namespace: &str,
    name: &str,
    grace_seconds: Option<i64>,
    now: Time,
) -> Result<Eviction, EvictionError> {
    let Some(pod) = cache.pod(&ns_name(namespace, name)) else {
        return Err(EvictionError::NotFound {
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    };
    let pod: &Pod = pod;
    let allowed_without = |allowed: Allowed, budget: Option<&PodDisruptionBudget>| Eviction {
        allowed,
        pod: pod.clone(),
        deletion: deletion_of(pod, grace_seconds, now),
        budget: budget.map(|b| (b.clone(), None)),
    };
    if pod.metadata.is_deleting() {
        return Ok(allowed_without(Allowed::AlreadyDeleting, None));
    }
    let phase = pod.status.phase;
    if matches!(
        phase,
        PodPhase::Succeeded | PodPhase::Failed | PodPhase::Pending
    ) {
        return Ok(allowed_without(Allowed::NotRunning(phase), None));
    }
    let budgets = cache.pdbs_selecting(namespace, &pod.metadata.labels);
    let pdb: &PodDisruptionBudget = match budgets.as_slice() {
        [] => return Ok(allowed_without(Allowed::NoBudget, None)),
        [one] => one,
        many => {
            return Err(EvictionError::MultipleBudgets(
                many.iter().map(|b| b.metadata.name.clone()).collect(),
            ))
        }
    };
    let bname = pdb.metadata.name.clone();
    let st = &pdb.status;
    if st.observed_generation < pdb.metadata.generation {
        return Err(EvictionError::Budget {
            budget: bname.clone(),
            cause: format!("The disruption budget {bname} is still being processed by the server."),
        });
    }
    if !pod.status.is_ready() {
        let lets_go = match pdb.unhealthy_policy() {
            UnhealthyPodEvictionPolicy::AlwaysAllow => true,
            UnhealthyPodEvictionPolicy::IfHealthyBudget => {
                st.desired_healthy > 0 && st.current_healthy >= st.desired_healthy
            }
        };
        if lets_go {
            return Ok(allowed_without(
                Allowed::Unhealthy { budget: bname },
                Some(pdb),
            ));
        }
    }
    if st.disrupted_pods.len() > MAX_DISRUPTED_PODS {
        return Err(EvictionError::TooManyDisrupted(bname));
    }
    if st.disruptions_allowed <= 0 {
        return Err(EvictionError::Budget {
            cause: format!(
                "The disruption budget {bname} needs {} healthy pods and has {} currently",
                st.desired_healthy, st.current_healthy
            ),
            budget: bname,
        });
    }
    let mut spent = pdb.clone();
    spent.status.disruptions_allowed -= 1;
    if spent.status.disruptions_allowed == 0 {
        spent.status.update_disruption_allowed(now);
    }
    // A pod evicted before and not deleted after all (its entry expired)
    // gets a fresh entry.
    spent
        .status
        .disrupted_pods
        .insert(pod.metadata.name.clone(), now);
    Ok(Eviction {
        allowed: Allowed::Budget { budget: bname },
        pod: pod.clone(),
        deletion: deletion_of(pod, grace_seconds, now),
        budget: Some((pdb.clone(), Some(spent))),
    })
}

#[cfg(test)]
mod tests;
