//! Pods on the wire: what the controller asks an agent to run.
//!
//! A pod is one or more containers placed together on one node, sharing a
//! network namespace, as in Kubernetes. These are the validated internal
//! forms; operators write Kubernetes YAML, which the controller's manifest
//! module turns into them (reporting every unsupported field by name).

use crate::node::Resources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most containers in one pod; keeps a desired-state message bounded.
pub const MAX_CONTAINERS: usize = 16;

/// What to do when a container exits.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::Always => "Always",
            RestartPolicy::OnFailure => "OnFailure",
            RestartPolicy::Never => "Never",
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// A container port, optionally published on the node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub name: String,
    pub container_port: u16,
    pub host_port: Option<u16>,
    pub protocol: Protocol,
}

/// How a probe checks a container.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    Exec { command: Vec<String> },
    Http { path: String, port: u16 },
    Tcp { port: u16 },
}

/// Liveness or readiness probe, with Kubernetes' defaults.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub action: ProbeAction,
    pub initial_delay_secs: u32,
    pub period_secs: u32,
    pub timeout_secs: u32,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// Requests and limits; zero means "not set".
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResourceSpec {
    pub requests: Resources,
    pub limits: Resources,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    pub read_only: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    HostPath { path: String },
    EmptyDir,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub source: VolumeSource,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint when not empty.
    pub command: Vec<String>,
    /// Replaces the image's cmd when not empty.
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub ports: Vec<PortSpec>,
    pub resources: ResourceSpec,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
    pub volume_mounts: Vec<VolumeMount>,
}

/// A pod as the controller wants it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Bound node, when the operator chose one (`spec.nodeName`).
    pub node_name: Option<String>,
    pub containers: Vec<ContainerSpec>,
    pub restart_policy: RestartPolicy,
    pub termination_grace_secs: u64,
    pub volumes: Vec<Volume>,
    pub priority: i32,
}

impl PodSpec {
    /// Sum of the containers' requests (what the scheduler fits).
    pub fn requests(&self) -> Resources {
        self.containers
            .iter()
            .fold(Resources::default(), |mut acc, c| {
                let r = c.resources.requests;
                acc.cpu_millis = acc.cpu_millis.saturating_add(r.cpu_millis);
                acc.memory_bytes = acc.memory_bytes.saturating_add(r.memory_bytes);
                acc.pids = acc.pids.saturating_add(r.pids);
                acc.ephemeral_storage_bytes = acc
                    .ephemeral_storage_bytes
                    .saturating_add(r.ephemeral_storage_bytes);
                acc.gpus = acc.gpus.saturating_add(r.gpus);
                acc
            })
    }
}
