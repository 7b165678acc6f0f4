//! `scheduling.k8s.io/v1 PriorityClass`: a name for a pod priority. A pod's
//! `priorityClassName` resolves to `spec.priority` when the pod is created;
//! a class with `globalDefault: true` applies to pods that name none.

use super::meta::ObjectMeta;
use super::pod::PreemptionPolicy;
use serde::{Deserialize, Serialize};

/// Highest priority a user-defined class may have (Kubernetes reserves the
/// values above for system classes).
pub const HIGHEST_USER_PRIORITY: i32 = 1_000_000_000;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PriorityClass {
    pub metadata: ObjectMeta,
    pub value: i32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub global_default: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemption_policy: Option<PreemptionPolicy>,
}
