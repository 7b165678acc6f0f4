//! `v1 Pod` in Kubernetes' shape, with everything the scheduler reads, and
//! its conversion to the runtime form the agent receives
//! ([`outpost_proto::pod::PodSpec`], which carries only what runs).

use super::meta::{ConditionStatus, IntOrString, ObjectMeta, Time};
use super::resources::ResourceList;
use super::selector::LabelSelector;
use outpost_proto::pod as wire;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

/// A pod template (`spec.template` of ReplicaSets and Deployments).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

impl From<RestartPolicy> for wire::RestartPolicy {
    fn from(p: RestartPolicy) -> wire::RestartPolicy {
        match p {
            RestartPolicy::Always => wire::RestartPolicy::Always,
            RestartPolicy::OnFailure => wire::RestartPolicy::OnFailure,
            RestartPolicy::Never => wire::RestartPolicy::Never,
        }
    }
}

fn default_grace() -> i64 {
    30
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub containers: Vec<Container>,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default = "default_grace")]
    pub termination_grace_period_seconds: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// The node the pod is bound to; empty until the scheduler (or the
    /// operator) binds it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Resolved from `priorityClassName` (or the global default class) when
    /// the pod is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub priority_class_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemption_policy: Option<PreemptionPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreemptionPolicy {
    #[default]
    PreemptLowerPriority,
    Never,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(
    Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, Hash, PartialOrd, Ord,
)]
pub enum Protocol {
    #[default]
    TCP,
    UDP,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::TCP => "TCP",
            Protocol::UDP => "UDP",
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub requests: ResourceList,
    #[serde(default, skip_serializing_if = "ResourceList::is_empty")]
    pub limits: ResourceList,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExecAction {
    pub command: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    #[serde(default)]
    pub path: String,
    /// A number, or the name of one of the container's ports (resolved at
    /// apply time, so the stored form is always the number).
    pub port: u16,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TcpSocketAction {
    pub port: u16,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    pub initial_delay_seconds: u32,
    pub period_seconds: u32,
    pub timeout_seconds: u32,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Probe {
    fn to_wire(&self) -> Option<wire::Probe> {
        let action = if let Some(e) = &self.exec {
            wire::ProbeAction::Exec {
                command: e.command.clone(),
            }
        } else if let Some(h) = &self.http_get {
            wire::ProbeAction::Http {
                path: h.path.clone(),
                port: h.port,
            }
        } else {
            wire::ProbeAction::Tcp {
                port: self.tcp_socket.as_ref()?.port,
            }
        };
        Some(wire::Probe {
            action,
            initial_delay_secs: self.initial_delay_seconds,
            period_secs: self.period_seconds,
            timeout_secs: self.timeout_seconds,
            success_threshold: self.success_threshold,
            failure_threshold: self.failure_threshold,
        })
    }

    /// The probe of a wire form (the inverse of the conversion to it).
    pub fn from_wire(p: &wire::Probe) -> Probe {
        let (exec, http_get, tcp_socket) = match &p.action {
            wire::ProbeAction::Exec { command } => (
                Some(ExecAction {
                    command: command.clone(),
                }),
                None,
                None,
            ),
            wire::ProbeAction::Http { path, port } => (
                None,
                Some(HttpGetAction {
                    path: path.clone(),
                    port: *port,
                }),
                None,
            ),
            wire::ProbeAction::Tcp { port } => (None, None, Some(TcpSocketAction { port: *port })),
        };
        Probe {
            exec,
            http_get,
            tcp_socket,
            initial_delay_seconds: p.initial_delay_secs,
            period_seconds: p.period_secs,
            timeout_seconds: p.timeout_secs,
            success_threshold: p.success_threshold,
            failure_threshold: p.failure_threshold,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    #[serde(default)]
    pub resources: ResourceRequirements,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HostPathVolumeSource {
    pub path: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirVolumeSource {}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathVolumeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolumeSource>,
}

// ---- scheduling fields ----

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeSelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorRequirement {
    pub key: String,
    pub operator: NodeSelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl NodeSelectorRequirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        let int = |s: &str| s.parse::<i64>().ok();
        match self.operator {
            NodeSelectorOperator::In => v.is_some_and(|v| self.values.contains(v)),
            NodeSelectorOperator::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            NodeSelectorOperator::Exists => v.is_some(),
            NodeSelectorOperator::DoesNotExist => v.is_none(),
            NodeSelectorOperator::Gt | NodeSelectorOperator::Lt => {
                let (Some(have), Some(want)) = (
                    v.and_then(|v| int(v)),
                    self.values.first().and_then(|w| int(w)),
                ) else {
                    return false;
                };
                if self.operator == NodeSelectorOperator::Gt {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

/// Requirements ANDed; a term with none matches nothing (Kubernetes).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorTerm {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<NodeSelectorRequirement>,
}

impl NodeSelectorTerm {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.match_expressions.is_empty()
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

/// Terms ORed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

impl NodeSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.node_selector_terms.iter().any(|t| t.matches(labels))
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PreferredSchedulingTerm {
    pub weight: i32,
    pub preference: NodeSelectorTerm,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeAffinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_during_scheduling_ignored_during_execution: Vec<PreferredSchedulingTerm>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodAffinityTerm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// Namespaces the selector applies to; empty: the pod's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    pub topology_key: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WeightedPodAffinityTerm {
    pub weight: i32,
    pub pod_affinity_term: PodAffinityTerm,
}

/// Used for both `podAffinity` and `podAntiAffinity`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodAffinity {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_during_scheduling_ignored_during_execution: Vec<PodAffinityTerm>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_during_scheduling_ignored_during_execution: Vec<WeightedPodAffinityTerm>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_affinity: Option<PodAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_anti_affinity: Option<PodAffinity>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum TolerationOperator {
    #[default]
    Equal,
    Exists,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl TaintEffect {
    pub fn name(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

impl From<outpost_proto::TaintEffect> for TaintEffect {
    fn from(e: outpost_proto::TaintEffect) -> TaintEffect {
        match e {
            outpost_proto::TaintEffect::NoSchedule => TaintEffect::NoSchedule,
            outpost_proto::TaintEffect::PreferNoSchedule => TaintEffect::PreferNoSchedule,
            outpost_proto::TaintEffect::NoExecute => TaintEffect::NoExecute,
        }
    }
}

/// A node taint as the scheduler sees it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    pub effect: TaintEffect,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    /// Empty with `Exists`: tolerates every taint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(default)]
    pub operator: TolerationOperator,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// None: every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

impl Toleration {
    /// Kubernetes' `Toleration.ToleratesTaint`.
    pub fn tolerates(&self, t: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != t.effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != t.key {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => true,
            TolerationOperator::Equal => self.value == t.value,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum UnsatisfiableConstraintAction {
    #[default]
    DoNotSchedule,
    ScheduleAnyway,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct TopologySpreadConstraint {
    pub max_skew: i32,
    pub topology_key: String,
    pub when_unsatisfiable: UnsatisfiableConstraintAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
}

// ---- status ----

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl PodPhase {
    pub fn name(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
            PodPhase::Unknown => "Unknown",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, PodPhase::Succeeded | PodPhase::Failed)
    }
}

/// Pod condition types Outpost sets.
pub const POD_SCHEDULED: &str = "PodScheduled";
/// Condition of a pod its node's lifecycle controller evicted from a node
/// that is unreachable or not ready (Kubernetes' `DisruptionTarget`, set
/// by its taint manager). While True the pod is not a replica: its owner
/// replaces it. It stays bound, and the node keeps running it until the
/// node is back; the condition is dropped when the node reports the pod
/// again, and the owner then keeps one copy (controllers/replicaset.rs).
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";
/// Reason of [`DISRUPTION_TARGET`] for such an eviction (Kubernetes').
pub const DELETION_BY_TAINT_MANAGER: &str = "DeletionByTaintManager";
pub const POD_READY: &str = "Ready";
pub const CONTAINERS_READY: &str = "ContainersReady";
pub const POD_INITIALIZED: &str = "Initialized";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: ConditionStatus,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateWaiting {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateRunning {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateTerminated {
    pub exit_code: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

/// Exactly one of the three is set, as in Kubernetes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<ContainerStateWaiting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<ContainerStateRunning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<ContainerStateTerminated>,
}

impl ContainerState {
    fn from_wire(s: &wire::ContainerState) -> ContainerState {
        let t = |ms: u64| (ms > 0).then_some(Time(ms));
        match s {
            wire::ContainerState::Waiting { reason, message } => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: reason.clone(),
                    message: message.clone(),
                }),
                ..ContainerState::default()
            },
            wire::ContainerState::Running { started_ms } => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: t(*started_ms),
                }),
                ..ContainerState::default()
            },
            wire::ContainerState::Terminated {
                exit_code,
                reason,
                message,
                started_ms,
                finished_ms,
            } => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *exit_code,
                    reason: reason.clone(),
                    message: message.clone(),
                    started_at: t(*started_ms),
                    finished_at: t(*finished_ms),
                }),
                ..ContainerState::default()
            },
        }
    }

    /// The waiting or terminated reason, `Running`, or empty.
    pub fn reason(&self) -> &str {
        if let Some(w) = &self.waiting {
            return &w.reason;
        }
        if let Some(t) = &self.terminated {
            return &t.reason;
        }
        if self.running.is_some() {
            return "Running";
        }
        ""
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    pub image: String,
    /// `docker://ID`, empty until created.
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
    #[serde(default)]
    pub state: ContainerState,
    #[serde(default)]
    pub last_state: ContainerState,
    pub ready: bool,
    pub restart_count: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default)]
    pub phase: PodPhase,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PodCondition>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
    #[serde(default, rename = "podIP", skip_serializing_if = "String::is_empty")]
    pub pod_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
    /// Node chosen by preemption while the pod waits for its victims to go.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nominated_node_name: String,
    /// Outpost: the pod generation the node runs (the agent's report).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub observed_generation: u64,
    /// Outpost: when the node last reported on the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_time: Option<Time>,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

impl PodStatus {
    pub fn condition(&self, kind: &str) -> Option<&PodCondition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// Sets a condition, keeping its transition time when the status did not
    /// change. Returns whether anything changed.
    pub fn set_condition(
        &mut self,
        kind: &str,
        status: ConditionStatus,
        reason: &str,
        message: &str,
        now: Time,
    ) -> bool {
        match self.conditions.iter_mut().find(|c| c.kind == kind) {
            Some(c) => {
                if c.status == status && c.reason == reason && c.message == message {
                    return false;
                }
                if c.status != status {
                    c.last_transition_time = Some(now);
                }
                c.status = status;
                c.reason = reason.to_string();
                c.message = message.to_string();
                true
            }
            None => {
                self.conditions.push(PodCondition {
                    kind: kind.to_string(),
                    status,
                    reason: reason.to_string(),
                    message: message.to_string(),
                    last_transition_time: Some(now),
                });
                true
            }
        }
    }

    /// Since when the node lifecycle controller has counted the pod gone
    /// from a node that is unreachable or not ready (see
    /// [`DISRUPTION_TARGET`]); `None` while it is not.
    pub fn evicted_since(&self) -> Option<Time> {
        self.condition(DISRUPTION_TARGET)
            .filter(|c| c.status == ConditionStatus::True && c.reason == DELETION_BY_TAINT_MANAGER)
            .map(|c| c.last_transition_time.unwrap_or_default())
    }

    /// The pod's Ready condition is True.
    pub fn is_ready(&self) -> bool {
        self.condition(POD_READY)
            .is_some_and(|c| c.status == ConditionStatus::True)
    }

    /// Since when the pod has been Ready, if it is.
    pub fn ready_since(&self) -> Option<Time> {
        self.condition(POD_READY)
            .filter(|c| c.status == ConditionStatus::True)
            .and_then(|c| c.last_transition_time)
    }

    pub fn restarts(&self) -> u32 {
        self.container_statuses
            .iter()
            .fold(0u32, |a, c| a.saturating_add(c.restart_count))
    }

    /// Folds an agent's report into this status: container states, phase,
    /// IP, readiness (with transition times kept), leaving the controller's
    /// own conditions (PodScheduled) alone. Usage is not kept here: it
    /// changes every measurement and lives in memory only.
    pub fn apply_report(&mut self, r: &wire::PodStatus, host_ip: &str, now: Time) {
        self.phase = match r.phase {
            wire::PodPhase::Pending | wire::PodPhase::Pulling => PodPhase::Pending,
            wire::PodPhase::Running => PodPhase::Running,
            wire::PodPhase::Succeeded => PodPhase::Succeeded,
            wire::PodPhase::Failed => PodPhase::Failed,
            wire::PodPhase::Unknown => PodPhase::Unknown,
        };
        self.reason = r.reason.clone();
        if self.reason.is_empty() && r.phase == wire::PodPhase::Pulling {
            self.reason = "Pulling".into();
        }
        self.message = r.message.clone();
        self.start_time = (r.started_ms > 0).then_some(Time(r.started_ms));
        self.host_ip = host_ip.to_string();
        self.pod_ip = r.pod_ip.clone();
        self.observed_generation = r.generation;
        self.container_statuses = r
            .containers
            .iter()
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone(),
                container_id: if c.container_id.is_empty() {
                    String::new()
                } else {
                    format!("docker://{}", c.container_id)
                },
                state: ContainerState::from_wire(&c.state),
                last_state: c
                    .last_state
                    .as_ref()
                    .map(ContainerState::from_wire)
                    .unwrap_or_default(),
                ready: c.ready,
                restart_count: c.restart_count,
            })
            .collect();
        let all_ready = r.ready && r.phase == wire::PodPhase::Running;
        let (reason, message) = if all_ready {
            ("", "")
        } else {
            ("ContainersNotReady", "not every container is ready")
        };
        self.set_condition(
            CONTAINERS_READY,
            ConditionStatus::from_bool(all_ready),
            reason,
            message,
            now,
        );
        self.set_condition(
            POD_READY,
            ConditionStatus::from_bool(all_ready),
            reason,
            message,
            now,
        );
    }
}

impl Pod {
    /// The pod's node, if bound.
    pub fn node(&self) -> Option<&str> {
        (!self.spec.node_name.is_empty()).then_some(self.spec.node_name.as_str())
    }

    /// Priority (0 when unset), as the scheduler and eviction compare it.
    pub fn priority(&self) -> i32 {
        self.spec.priority.unwrap_or(0)
    }

    /// Sum of the containers' requests (what the scheduler fits).
    pub fn requests(&self) -> outpost_proto::Resources {
        self.spec.requests()
    }

    /// Finished for good: Succeeded or Failed. Such a pod holds no
    /// resources on its node and does not count as a replica.
    pub fn is_terminal(&self) -> bool {
        self.status.phase.is_terminal()
    }

    /// The runtime form the node's agent receives.
    pub fn to_wire(&self) -> wire::PodSpec {
        let s = &self.spec;
        let mut w = wire::PodSpec::new(
            self.metadata.name.clone(),
            s.containers.iter().map(Container::to_wire).collect(),
        );
        if !self.metadata.namespace.is_empty() {
            w.namespace = self.metadata.namespace.clone();
        }
        w.labels = self.metadata.labels.clone();
        w.node_name = self.node().map(str::to_string);
        w.restart_policy = s.restart_policy.into();
        w.termination_grace_secs = u64::try_from(s.termination_grace_period_seconds).unwrap_or(0);
        w.priority = self.priority();
        w.volumes = s
            .volumes
            .iter()
            .map(|v| wire::Volume {
                name: v.name.clone(),
                source: match &v.host_path {
                    Some(h) => wire::VolumeSource::HostPath {
                        path: h.path.clone(),
                    },
                    None => wire::VolumeSource::EmptyDir,
                },
            })
            .collect();
        w
    }
}

impl PodSpec {
    pub fn requests(&self) -> outpost_proto::Resources {
        self.containers.iter().fold(Default::default(), |acc, c| {
            super::resources::add(&acc, &c.resources.requests.0)
        })
    }

    /// Host ports the pod publishes: (port, protocol).
    pub fn host_ports(&self) -> impl Iterator<Item = (u16, Protocol)> + '_ {
        self.containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .filter_map(|p| p.host_port.map(|h| (h, p.protocol)))
    }

    /// Images of all containers.
    pub fn images(&self) -> impl Iterator<Item = &str> {
        self.containers.iter().map(|c| c.image.as_str())
    }
}

impl Container {
    fn to_wire(&self) -> wire::ContainerSpec {
        let mut c = wire::ContainerSpec::new(self.name.clone(), self.image.clone());
        c.command = self.command.clone();
        c.args = self.args.clone();
        c.env = self
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        c.ports = self
            .ports
            .iter()
            .map(|p| wire::PortSpec {
                name: p.name.clone(),
                container_port: p.container_port,
                host_port: p.host_port,
                protocol: match p.protocol {
                    Protocol::TCP => wire::Protocol::Tcp,
                    Protocol::UDP => wire::Protocol::Udp,
                },
            })
            .collect();
        c.resources = wire::ResourceSpec {
            requests: self.resources.requests.0,
            limits: self.resources.limits.0,
        };
        c.liveness = self.liveness_probe.as_ref().and_then(Probe::to_wire);
        c.readiness = self.readiness_probe.as_ref().and_then(Probe::to_wire);
        c.volume_mounts = self
            .volume_mounts
            .iter()
            .map(|m| wire::VolumeMount {
                name: m.name.clone(),
                mount_path: m.mount_path.clone(),
                read_only: m.read_only,
            })
            .collect();
        c
    }

    /// The container port a Service's `targetPort` names (number or name).
    pub fn resolve_port(&self, target: &IntOrString) -> Option<(u16, Protocol)> {
        match target {
            IntOrString::Int(n) => {
                let n = u16::try_from(*n).ok()?;
                Some((
                    n,
                    self.ports
                        .iter()
                        .find(|p| p.container_port == n)
                        .map_or(Protocol::TCP, |p| p.protocol),
                ))
            }
            IntOrString::String(name) => self
                .ports
                .iter()
                .find(|p| &p.name == name)
                .map(|p| (p.container_port, p.protocol)),
        }
    }
}

impl Pod {
    /// The Kubernetes-shaped pod of a runtime spec: used to migrate pods
    /// stored by the first controller, which kept only the runtime form.
    pub fn from_wire(w: &wire::PodSpec) -> Pod {
        let containers = w
            .containers
            .iter()
            .map(|c| Container {
                name: c.name.clone(),
                image: c.image.clone(),
                command: c.command.clone(),
                args: c.args.clone(),
                env: c
                    .env
                    .iter()
                    .map(|(k, v)| EnvVar {
                        name: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                ports: c
                    .ports
                    .iter()
                    .map(|p| ContainerPort {
                        name: p.name.clone(),
                        container_port: p.container_port,
                        host_port: p.host_port,
                        protocol: match p.protocol {
                            wire::Protocol::Tcp => Protocol::TCP,
                            wire::Protocol::Udp => Protocol::UDP,
                        },
                    })
                    .collect(),
                resources: ResourceRequirements {
                    requests: ResourceList(c.resources.requests),
                    limits: ResourceList(c.resources.limits),
                },
                liveness_probe: c.liveness.as_ref().map(Probe::from_wire),
                readiness_probe: c.readiness.as_ref().map(Probe::from_wire),
                volume_mounts: c
                    .volume_mounts
                    .iter()
                    .map(|m| VolumeMount {
                        name: m.name.clone(),
                        mount_path: m.mount_path.clone(),
                        read_only: m.read_only,
                    })
                    .collect(),
            })
            .collect();
        let mut meta = ObjectMeta::named(
            if w.namespace.is_empty() {
                super::meta::DEFAULT_NAMESPACE
            } else {
                &w.namespace
            },
            &w.name,
        );
        meta.labels = w.labels.clone();
        Pod {
            metadata: meta,
            spec: PodSpec {
                containers,
                restart_policy: match w.restart_policy {
                    wire::RestartPolicy::Always => RestartPolicy::Always,
                    wire::RestartPolicy::OnFailure => RestartPolicy::OnFailure,
                    wire::RestartPolicy::Never => RestartPolicy::Never,
                },
                termination_grace_period_seconds: i64::try_from(w.termination_grace_secs)
                    .unwrap_or(i64::MAX),
                volumes: w
                    .volumes
                    .iter()
                    .map(|v| Volume {
                        name: v.name.clone(),
                        host_path: match &v.source {
                            wire::VolumeSource::HostPath { path } => {
                                Some(HostPathVolumeSource { path: path.clone() })
                            }
                            wire::VolumeSource::EmptyDir => None,
                        },
                        empty_dir: match &v.source {
                            wire::VolumeSource::HostPath { .. } => None,
                            wire::VolumeSource::EmptyDir => Some(EmptyDirVolumeSource {}),
                        },
                    })
                    .collect(),
                node_name: w.node_name.clone().unwrap_or_default(),
                priority: (w.priority != 0).then_some(w.priority),
                ..PodSpec::default()
            },
            status: PodStatus::default(),
        }
    }
}

/// A pod record of the first store layout, as JSON.
#[derive(Deserialize)]
struct OldPodRecord {
    spec: wire::PodSpec,
    generation: u64,
    created_ms: u64,
    deleting: bool,
}

/// Turns a first-layout pod record into a Pod object (uid assigned, the
/// deletion request kept, so a pod being deleted still goes).
pub fn migrate_record(bytes: &[u8]) -> Result<Pod, String> {
    let old: OldPodRecord = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mut pod = Pod::from_wire(&old.spec);
    pod.metadata.uid = super::new_uid();
    pod.metadata.generation = i64::try_from(old.generation).unwrap_or(1);
    pod.metadata.creation_timestamp = Some(Time(old.created_ms));
    if old.deleting {
        pod.metadata.deletion_timestamp = Some(Time(old.created_ms));
    }
    Ok(pod)
}
