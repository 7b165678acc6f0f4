//! `policy/v1 PodDisruptionBudget`: how many of a set of pods must stay
//! healthy while an operator (or the cluster autoscaler) takes nodes away.
//!
//! The spec says it with exactly one of `minAvailable` and
//! `maxUnavailable`, each a count or a percentage; the disruption
//! controller ([`crate::controllers::disruption`]) keeps the status
//! (how many pods are healthy, how many must be, how many evictions are
//! allowed right now) and the eviction check
//! ([`crate::controllers::eviction`]) spends `disruptionsAllowed` one pod
//! at a time, recording each evicted pod in `disruptedPods` until the
//! controller sees it go. Field names and JSON shape are Kubernetes'.

use super::meta::{ConditionStatus, IntOrString, ObjectMeta, Time};
use super::selector::LabelSelector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The one condition a budget has.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";
/// `DisruptionAllowed=True`: at least one eviction is allowed.
pub const SUFFICIENT_PODS: &str = "SufficientPods";
/// `DisruptionAllowed=False`: no eviction is allowed.
pub const INSUFFICIENT_PODS: &str = "InsufficientPods";
/// `DisruptionAllowed=False`: the status could not be computed (a pod's
/// controller is unknown); nothing may be evicted until it can.
pub const SYNC_FAILED: &str = "SyncFailed";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudget {
    pub metadata: ObjectMeta,
    pub spec: PodDisruptionBudgetSpec,
    #[serde(default)]
    pub status: PodDisruptionBudgetStatus,
}

/// Which pods may be evicted while they are not Ready.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnhealthyPodEvictionPolicy {
    /// Kubernetes' default: a running pod that is not Ready may be evicted
    /// only while the budget is met (`currentHealthy >= desiredHealthy`).
    #[default]
    IfHealthyBudget,
    /// A running pod that is not Ready may always be evicted.
    AlwaysAllow,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
    /// `None` selects no pods; an empty selector selects every pod of the
    /// namespace (policy/v1's rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_pod_eviction_policy: Option<UnhealthyPodEvictionPolicy>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetStatus {
    /// The generation the status was computed for; evictions are refused
    /// while it trails `metadata.generation`.
    #[serde(default)]
    pub observed_generation: i64,
    /// Pods evicted whose deletion the controller has not seen yet, with
    /// the time of the eviction; dropped when the pod is seen deleting or
    /// gone, or after [`crate::controllers::disruption::DELETION_TIMEOUT`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub disrupted_pods: BTreeMap<String, Time>,
    #[serde(default)]
    pub disruptions_allowed: i32,
    #[serde(default)]
    pub current_healthy: i32,
    #[serde(default)]
    pub desired_healthy: i32,
    #[serde(default)]
    pub expected_pods: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<BudgetCondition>,
}

/// `metav1.Condition`, the shape policy/v1 uses.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BudgetCondition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: ConditionStatus,
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

impl PodDisruptionBudgetStatus {
    /// Sets `DisruptionAllowed` as apimachinery's `SetStatusCondition`
    /// does: the transition time moves only when the status changes.
    pub fn set_disruption_allowed(
        &mut self,
        status: ConditionStatus,
        reason: &str,
        message: &str,
        now: Time,
    ) {
        let generation = self.observed_generation;
        match self
            .conditions
            .iter_mut()
            .find(|c| c.kind == DISRUPTION_ALLOWED)
        {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = Some(now);
                }
                c.status = status;
                c.reason = reason.to_string();
                c.message = message.to_string();
                c.observed_generation = generation;
            }
            None => self.conditions.push(BudgetCondition {
                kind: DISRUPTION_ALLOWED.to_string(),
                status,
                observed_generation: generation,
                last_transition_time: Some(now),
                reason: reason.to_string(),
                message: message.to_string(),
            }),
        }
    }

    /// The condition as `disruptionsAllowed` says: True with
    /// SufficientPods above 0, else False with InsufficientPods.
    pub fn update_disruption_allowed(&mut self, now: Time) {
        if self.disruptions_allowed > 0 {
            self.set_disruption_allowed(ConditionStatus::True, SUFFICIENT_PODS, "", now);
        } else {
            self.set_disruption_allowed(ConditionStatus::False, INSUFFICIENT_PODS, "", now);
        }
    }

    pub fn condition(&self) -> Option<&BudgetCondition> {
        self.conditions
            .iter()
            .find(|c| c.kind == DISRUPTION_ALLOWED)
    }
}

impl PodDisruptionBudget {
    /// Whether the budget covers a pod with these labels (in its
    /// namespace; the caller checks the namespace).
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.spec
            .selector
            .as_ref()
            .is_some_and(|s| s.matches(labels))
    }

    pub fn unhealthy_policy(&self) -> UnhealthyPodEvictionPolicy {
        self.spec.unhealthy_pod_eviction_policy.unwrap_or_default()
    }
}
