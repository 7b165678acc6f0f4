//! Pods on the wire: what the controller asks an agent to run.
//!
//! A pod is one or more containers placed together on one node, sharing a
//! network namespace, as in Kubernetes. These are the validated internal
//! forms; operators write Kubernetes YAML, which the controller's manifest
//! module turns into them (reporting every unsupported field by name).
//!
//! Pods live in namespaces. On a node a pod is known by its key
//! ([`PodSpec::key`], [`pod_key`]): the bare name in the `default`
//! namespace, `NAMESPACE.NAME` elsewhere. Both parts are DNS-1123 labels,
//! which never contain a dot, so keys never collide. Everything that names
//! a pod between agent and controller after the spec itself (statuses,
//! events, logs requests, removals) carries the key.

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

#[derive(
    Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, Hash, PartialOrd, Ord,
)]
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

impl ContainerSpec {
    /// A container running `image` as it is: no command or args override,
    /// no env, ports, resources, probes or mounts.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: image.into(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            ports: Vec::new(),
            resources: ResourceSpec::default(),
            liveness: None,
            readiness: None,
            volume_mounts: Vec::new(),
        }
    }
}

/// Kubernetes' `terminationGracePeriodSeconds` default.
pub const DEFAULT_TERMINATION_GRACE_SECS: u64 = 30;

/// The namespace of a pod that names none, as in Kubernetes.
pub const DEFAULT_NAMESPACE: &str = "default";

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_string()
}

/// A pod's node-unique key: `name` in the [`DEFAULT_NAMESPACE`] (or an
/// empty namespace), else `namespace.name`.
pub fn pod_key(namespace: &str, name: &str) -> String {
    if namespace.is_empty() || namespace == DEFAULT_NAMESPACE {
        name.to_string()
    } else {
        format!("{namespace}.{name}")
    }
}

/// A pod as the controller wants it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    pub name: String,
    /// A DNS-1123 label. Files written before namespaces existed have none:
    /// they read back as [`DEFAULT_NAMESPACE`].
    #[serde(default = "default_namespace")]
    pub namespace: String,
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
    /// An unbound pod of `containers` in the [`DEFAULT_NAMESPACE`] with
    /// Kubernetes' defaults: no labels, restart Always, 30 s termination
    /// grace, priority 0, no volumes.
    pub fn new(name: impl Into<String>, containers: Vec<ContainerSpec>) -> PodSpec {
        PodSpec {
            name: name.into(),
            namespace: default_namespace(),
            labels: BTreeMap::new(),
            node_name: None,
            containers,
            restart_policy: RestartPolicy::Always,
            termination_grace_secs: DEFAULT_TERMINATION_GRACE_SECS,
            volumes: Vec::new(),
            priority: 0,
        }
    }

    /// The pod's node-unique key (see [`pod_key`]): what the agent files
    /// it under (desired set, container labels and names, volumes) and what
    /// statuses, events and logs requests carry.
    pub fn key(&self) -> String {
        pod_key(&self.namespace, &self.name)
    }

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

/// Bounds on pod objects from a peer or a manifest.
pub mod pod_limits {
    pub const MAX_NAME: usize = 63;
    pub const MAX_TEXT: usize = 4096;
    pub const MAX_ARGS: usize = 256;
    pub const MAX_ENV: usize = 256;
    pub const MAX_PORTS: usize = 64;
    pub const MAX_VOLUMES: usize = 32;
    pub const MAX_LABELS: usize = 64;
    /// Longest status or event message kept.
    pub const MAX_MESSAGE: usize = 1024;
}

fn check_len(problems: &mut Vec<String>, what: &str, s: &str, max: usize) {
    if s.len() > max {
        problems.push(format!(
            "{what} is {} bytes, at most {max} allowed",
            s.len()
        ));
    }
}

/// A DNS-1123 label (pod, container, volume names): lower-case
/// alphanumerics and '-', starting and ending alphanumeric, at most 63.
pub fn validate_dns_label(what: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= pod_limits::MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {:?} is not a valid name: use at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit",
            s.chars().take(80).collect::<String>()
        ))
    }
}

/// A pod key from a peer (status, event, logs request, removal): `NAME` or
/// `NAMESPACE.NAME`, each part a DNS-1123 label.
pub fn validate_pod_key(what: &str, key: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.splitn(3, '.').collect();
    let ok = match parts.as_slice() {
        [name] => validate_dns_label(what, name).is_ok(),
        [namespace, name] => {
            validate_dns_label(what, namespace).is_ok() && validate_dns_label(what, name).is_ok()
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {:?} is not a valid pod key: use NAME or NAMESPACE.NAME, each at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit",
            key.chars().take(140).collect::<String>()
        ))
    }
}

impl PodSpec {
    /// Checks every bound and name; returns all problems at once. The
    /// controller runs it on apply and the agent on every pod it receives.
    pub fn validate(&self) -> Result<(), String> {
        use pod_limits::*;
        let mut p = Vec::new();
        if let Err(e) = validate_dns_label("pod name", &self.name) {
            p.push(e);
        }
        if let Err(e) = validate_dns_label("namespace", &self.namespace) {
            p.push(e);
        }
        if self.labels.len() > MAX_LABELS {
            p.push(format!(
                "{} labels; at most {MAX_LABELS}",
                self.labels.len()
            ));
        }
        for (k, v) in &self.labels {
            check_len(&mut p, "label key", k, 317);
            check_len(&mut p, "label value", v, 63);
        }
        if let Some(n) = &self.node_name {
            if let Err(e) = crate::names::validate_node_name(n) {
                p.push(format!("nodeName: {e}"));
            }
        }
        if self.containers.is_empty() {
            p.push("a pod needs at least one container".into());
        }
        if self.containers.len() > MAX_CONTAINERS {
            p.push(format!(
                "{} containers; at most {MAX_CONTAINERS}",
                self.containers.len()
            ));
        }
        if self.volumes.len() > MAX_VOLUMES {
            p.push(format!(
                "{} volumes; at most {MAX_VOLUMES}",
                self.volumes.len()
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for v in &self.volumes {
            if let Err(e) = validate_dns_label("volume name", &v.name) {
                p.push(e);
            }
            if !names.insert(v.name.as_str()) {
                p.push(format!("volume {:?} is declared twice", v.name));
            }
            if let VolumeSource::HostPath { path } = &v.source {
                check_len(&mut p, "hostPath", path, MAX_TEXT);
                if !path.starts_with('/') {
                    p.push(format!(
                        "volume {}: hostPath {path:?} must be absolute",
                        v.name
                    ));
                }
            }
        }
        let mut cnames = std::collections::BTreeSet::new();
        let mut host_ports = std::collections::BTreeSet::new();
        for c in &self.containers {
            if let Err(e) = validate_dns_label("container name", &c.name) {
                p.push(e);
            }
            if !cnames.insert(c.name.as_str()) {
                p.push(format!("container {:?} is declared twice", c.name));
            }
            if c.image.is_empty() {
                p.push(format!("container {}: image is empty", c.name));
            }
            check_len(&mut p, "image", &c.image, 512);
            if c.command.len() + c.args.len() > MAX_ARGS {
                p.push(format!(
                    "container {}: more than {MAX_ARGS} command and args",
                    c.name
                ));
            }
            for s in c.command.iter().chain(&c.args) {
                check_len(&mut p, "argument", s, MAX_TEXT);
            }
            if c.env.len() > MAX_ENV {
                p.push(format!(
                    "container {}: more than {MAX_ENV} env entries",
                    c.name
                ));
            }
            for (k, v) in &c.env {
                if k.is_empty() || k.contains('=') || k.contains('\0') {
                    p.push(format!("container {}: env name {k:?} is invalid", c.name));
                }
                check_len(&mut p, "env value", v, MAX_TEXT);
            }
            if c.ports.len() > MAX_PORTS {
                p.push(format!("container {}: more than {MAX_PORTS} ports", c.name));
            }
            for port in &c.ports {
                if port.container_port == 0 {
                    p.push(format!("container {}: containerPort 0", c.name));
                }
                if let Some(h) = port.host_port {
                    if h == 0 || !host_ports.insert((h, port.protocol == Protocol::Tcp)) {
                        p.push(format!(
                            "container {}: hostPort {h} is invalid or used twice",
                            c.name
                        ));
                    }
                }
            }
            for m in &c.volume_mounts {
                if !names.contains(m.name.as_str()) {
                    p.push(format!(
                        "container {}: volumeMount {:?} names no volume of the pod",
                        c.name, m.name
                    ));
                }
                if !m.mount_path.starts_with('/') {
                    p.push(format!(
                        "container {}: mountPath {:?} must be absolute",
                        c.name, m.mount_path
                    ));
                }
                check_len(&mut p, "mountPath", &m.mount_path, MAX_TEXT);
            }
            if c.volume_mounts.len() > MAX_VOLUMES {
                p.push(format!(
                    "container {}: more than {MAX_VOLUMES} mounts",
                    c.name
                ));
            }
            for probe in [&c.liveness, &c.readiness].into_iter().flatten() {
                match &probe.action {
                    ProbeAction::Exec { command } => {
                        if command.is_empty() || command.len() > MAX_ARGS {
                            p.push(format!(
                                "container {}: exec probe command is empty or too long",
                                c.name
                            ));
                        }
                        for s in command {
                            check_len(&mut p, "probe argument", s, MAX_TEXT);
                        }
                    }
                    ProbeAction::Http { path, port } => {
                        check_len(&mut p, "probe path", path, MAX_TEXT);
                        if *port == 0 || !path.starts_with('/') {
                            p.push(format!(
                                "container {}: http probe needs a port and an absolute path",
                                c.name
                            ));
                        }
                    }
                    ProbeAction::Tcp { port } => {
                        if *port == 0 {
                            p.push(format!("container {}: tcp probe needs a port", c.name));
                        }
                    }
                }
                if probe.period_secs == 0
                    || probe.timeout_secs == 0
                    || probe.failure_threshold == 0
                    || probe.success_threshold == 0
                {
                    p.push(format!(
                        "container {}: probe period, timeout and thresholds must be at least 1",
                        c.name
                    ));
                }
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p.join("; "))
        }
    }
}

/// A pod as sent to its node: the spec and its generation (bumped by the
/// controller whenever the spec changes; the agent replaces the containers
/// of a pod whose generation changed and leaves the others alone).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DesiredPod {
    pub generation: u64,
    pub spec: PodSpec,
}

/// Pod lifecycle phase as the operator sees it. `Pulling` is Outpost's own:
/// on weak links an image pull is worth naming.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodPhase {
    #[default]
    Pending,
    Pulling,
    Running,
    Succeeded,
    Failed,
    /// The node's agent has not reported on the pod (node unreachable).
    Unknown,
}

impl PodPhase {
    pub fn name(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Pulling => "Pulling",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
            PodPhase::Unknown => "Unknown",
        }
    }
}

/// cpu and memory in use. Memory is the working set: cgroup v2
/// `memory.current` minus `inactive_file`, as the kubelet counts it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// A container's state, as in Kubernetes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Not running yet or between restarts: `ContainerCreating`,
    /// `ImagePullBackOff`, `ErrImagePull`, `CrashLoopBackOff`, ...
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_ms: u64,
    },
    /// Exited: `Completed`, `Error`, `OOMKilled`, ...
    Terminated {
        exit_code: i64,
        reason: String,
        message: String,
        started_ms: u64,
        finished_ms: u64,
    },
}

impl ContainerState {
    /// The short word `get pods` shows: the waiting or terminated reason, or
    /// `Running`.
    pub fn reason(&self) -> &str {
        match self {
            ContainerState::Waiting { reason, .. } | ContainerState::Terminated { reason, .. } => {
                reason
            }
            ContainerState::Running { .. } => "Running",
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub name: String,
    pub image: String,
    /// Docker container id (empty until created).
    pub container_id: String,
    pub state: ContainerState,
    /// How the previous run ended, after a restart.
    pub last_state: Option<ContainerState>,
    pub ready: bool,
    pub restart_count: u32,
    pub usage: Usage,
}

/// What the agent reports about one pod.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PodStatus {
    /// The pod's key ([`PodSpec::key`]), not its bare name.
    pub name: String,
    /// The pod generation these containers run.
    pub generation: u64,
    pub phase: PodPhase,
    /// Pod-level reason (`Evicted`, `UnexpectedAdmissionError`, ...).
    pub reason: String,
    pub message: String,
    /// All containers ready.
    pub ready: bool,
    pub started_ms: u64,
    /// The pod's address on its Docker network (that of the container
    /// holding its network namespace) while that container runs; empty
    /// when unknown.
    pub pod_ip: String,
    pub containers: Vec<ContainerStatus>,
    pub usage: Usage,
}

impl PodStatus {
    /// Restarts summed over the containers.
    pub fn restarts(&self) -> u32 {
        self.containers
            .iter()
            .fold(0u32, |a, c| a.saturating_add(c.restart_count))
    }

    /// Checks bounds on a status from a peer.
    pub fn validate(&self) -> Result<(), String> {
        use pod_limits::*;
        let mut p = Vec::new();
        validate_pod_key("pod", &self.name).unwrap_or_else(|e| p.push(e));
        if !self.pod_ip.is_empty() && self.pod_ip.parse::<std::net::IpAddr>().is_err() {
            p.push(format!(
                "podIP {:?} is not an IP address",
                self.pod_ip.chars().take(64).collect::<String>()
            ));
        }
        check_len(&mut p, "reason", &self.reason, 128);
        check_len(&mut p, "message", &self.message, MAX_MESSAGE);
        if self.containers.len() > MAX_CONTAINERS {
            p.push(format!(
                "{} containers; at most {MAX_CONTAINERS}",
                self.containers.len()
            ));
        }
        for c in &self.containers {
            check_len(&mut p, "container name", &c.name, MAX_NAME);
            check_len(&mut p, "image", &c.image, 512);
            check_len(&mut p, "container id", &c.container_id, 128);
            for s in std::iter::once(&c.state).chain(c.last_state.as_ref()) {
                match s {
                    ContainerState::Waiting { reason, message }
                    | ContainerState::Terminated {
                        reason, message, ..
                    } => {
                        check_len(&mut p, "reason", reason, 128);
                        check_len(&mut p, "message", message, MAX_MESSAGE);
                    }
                    ContainerState::Running { .. } => {}
                }
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p.join("; "))
        }
    }
}

/// The operator's view of one pod: what was asked and what the node says.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub spec: PodSpec,
    pub generation: u64,
    pub created_ms: u64,
    /// Deleted by the operator; waiting for the node to stop it.
    pub deleting: bool,
    /// Latest status from the node, if it reported one.
    pub status: Option<PodStatus>,
    /// When the node last reported on the pod (0: never).
    pub status_ms: u64,
    /// Whether the pod's node is Ready (false: the status may be stale).
    pub node_ready: bool,
}

/// Truncates `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(namespace: &str, name: &str) -> PodSpec {
        PodSpec {
            namespace: namespace.into(),
            ..PodSpec::new(name, vec![ContainerSpec::new("main", "img:1")])
        }
    }

    #[test]
    fn keys() {
        assert_eq!(PodSpec::new("web", vec![]).namespace, DEFAULT_NAMESPACE);
        for (namespace, name, key) in [
            ("default", "web", "web"),
            ("", "web", "web"),
            ("team-a", "web", "team-a.web"),
            ("default-x", "web", "default-x.web"),
        ] {
            assert_eq!(spec(namespace, name).key(), key);
            assert_eq!(pod_key(namespace, name), key);
            assert!(validate_pod_key("pod", key).is_ok(), "{key}");
        }
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a.b.c",
            "A",
            "a_b",
            "-a.b",
            &"x".repeat(64),
        ] {
            let e = validate_pod_key("pod", bad).unwrap_err();
            assert!(e.contains("NAMESPACE.NAME"), "{bad}: {e}");
        }
        assert!(validate_pod_key("pod", &format!("{0}.{0}", "x".repeat(63))).is_ok());
    }

    #[test]
    fn namespace_is_validated() {
        assert!(spec("team-a", "web").validate().is_ok());
        for bad in ["", "Team", "a.b", "-a"] {
            let e = spec(bad, "web").validate().unwrap_err();
            assert!(e.contains("namespace"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn specs_without_a_namespace_read_as_default() {
        let mut v = serde_json::to_value(spec("default", "web")).unwrap();
        v.as_object_mut().unwrap().remove("namespace");
        let back: PodSpec = serde_json::from_value(v).unwrap();
        assert_eq!(back.namespace, DEFAULT_NAMESPACE);
        assert_eq!(back.key(), "web");
    }

    fn status(name: &str, pod_ip: &str) -> PodStatus {
        PodStatus {
            name: name.into(),
            generation: 1,
            phase: PodPhase::Running,
            reason: String::new(),
            message: String::new(),
            ready: true,
            started_ms: 1,
            pod_ip: pod_ip.into(),
            containers: vec![],
            usage: Usage::default(),
        }
    }

    #[test]
    fn statuses_carry_keys_and_ips() {
        for (name, ip) in [
            ("web", ""),
            ("team-a.web", "172.17.0.3"),
            ("web", "fd00::3"),
        ] {
            assert!(status(name, ip).validate().is_ok(), "{name} {ip}");
        }
        for (name, ip, want) in [
            ("web", "172.17.0", "podIP"),
            ("web", "host", "podIP"),
            ("a.b.c", "", "pod key"),
            ("Web", "", "pod key"),
        ] {
            let e = status(name, ip).validate().unwrap_err();
            assert!(e.contains(want), "{name} {ip}: {e}");
        }
    }
}
