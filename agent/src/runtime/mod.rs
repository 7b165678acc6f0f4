//! Pods on the box's Docker engine.
//!
//! Data flow: the session (or, offline, the local state file) publishes the
//! desired pods on a watch channel as a [`DesiredSet`]; the reconciler
//! (`reconcile`) turns them into containers through the engine (`docker`),
//! restarts them per policy with back-off (not a container whose binary is
//! for another architecture: `exec_format`), runs their probes (`health`),
//! defends the node under pressure (`eviction`: admission, reclaim, one
//! eviction per cycle), and publishes a [`Snapshot`] of pod statuses plus
//! [`AgentEvent`]s for the session to send up. `transfer` streams logs out
//! and image tarballs in; `pause` provides the tiny image whose container
//! holds each pod's network namespace; `images` lists the images the
//! engine holds for the node report.
//!
//! Pods are known by their key (`PodSpec::key`) everywhere here: desired
//! set, container labels and names, volumes, statuses, events, eviction and
//! image bookkeeping. Only the host name is the pod's bare name.
//!
//! Ownership: every container the agent creates carries [`LABEL_MANAGED`]
//! and [`LABEL_NODE`] = this node; the agent never stops, removes or
//! otherwise touches a container without both.

use outpost_proto::pod::{DesiredPod, PodStatus, Usage};
use outpost_proto::AgentEvent;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub mod docker;
pub mod eviction;
pub mod exec_format;
pub mod health;
pub mod images;
pub mod pause;
pub mod reconcile;
pub mod transfer;

/// `"true"` on every container Outpost created.
pub const LABEL_MANAGED: &str = "dev.outpost.managed";
/// Node name of the agent that created the container.
pub const LABEL_NODE: &str = "dev.outpost.node";
/// Pod key ([`outpost_proto::pod::PodSpec::key`]: the name, or
/// `NAMESPACE.NAME` outside the default namespace).
pub const LABEL_POD: &str = "dev.outpost.pod";
/// Pod generation the container was created for.
pub const LABEL_GENERATION: &str = "dev.outpost.generation";
/// Container name within the pod; [`PAUSE_CONTAINER`] for the pod's
/// network-namespace holder.
pub const LABEL_CONTAINER: &str = "dev.outpost.container";
/// Run number of this container (0 for the first run, +1 per restart).
pub const LABEL_RUN: &str = "dev.outpost.run";
/// [`LABEL_CONTAINER`] value of the pause container.
pub const PAUSE_CONTAINER: &str = "POD";

/// The pods this node should run, with the generation of the set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredSet {
    pub generation: u64,
    /// By pod key: pods of one name in two namespaces are two pods.
    pub pods: BTreeMap<String, DesiredPod>,
    /// Grace periods (seconds) the controller gave the removal of pods no
    /// longer in `pods` (a drain's `--grace-period`), by pod key; a removed
    /// pod not here stops with its own grace period. Kept in memory only:
    /// after an agent restart a pod still stopping gets its own again.
    pub removal_grace: BTreeMap<String, u64>,
    /// Images the controller asks this node to fetch ahead of pods that
    /// will need them (a rollout without surge room waits for them before
    /// stopping the old pods). Pulled like a pod's, kept from image GC.
    pub images: Vec<String>,
}

/// What the reconciler last saw: one status per pod (by key) it knows about.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub pods: BTreeMap<String, PodStatus>,
    pub node_usage: Usage,
}

/// Reconciler settings (flags in `config`).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// What pods see of Services: resolver settings and service
    /// environment variables; `None` with `--no-service-routing`.
    pub services: Option<PodServices>,
    /// This node's name (from its certificate).
    pub node: String,
    /// Agent data directory; emptyDir volumes live under
    /// `pods/POD_KEY/volumes/`.
    pub data_dir: PathBuf,
    /// How often the reconciler syncs when nothing wakes it.
    pub sync_interval: Duration,
    /// First restart back-off (kubelet: 10 s), doubling per crash.
    pub restart_backoff: Duration,
    /// Longest restart back-off (kubelet: 5 min).
    pub max_restart_backoff: Duration,
    /// Where the cgroup file system is mounted (`/sys/fs/cgroup`). When a
    /// container's cgroup files are not found there, its usage comes from
    /// the engine's stats API instead.
    pub cgroup_root: PathBuf,
    /// The Docker network pod sandboxes join (`--pod-network`); `None`:
    /// the engine's default bridge. Pod IPs are addresses on it.
    pub pod_network: Option<String>,
}

/// The usual cgroup mount point.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Sent up as events; a bounded channel, dropped when full.
pub type EventSender = tokio::sync::mpsc::Sender<AgentEvent>;

/// The Service view pods are created with (see [`crate::dns`] and
/// [`crate::service_env`]).
#[derive(Debug, Clone)]
pub struct PodServices {
    /// The Services as the controller last sent them.
    pub table: tokio::sync::watch::Receiver<std::sync::Arc<crate::services::ServiceTable>>,
    /// Where pods reach the agent's resolver, once known.
    pub resolver: tokio::sync::watch::Receiver<Option<std::net::Ipv4Addr>>,
    /// The route a new sandbox gets before the pod's containers start,
    /// when the agent is not the pod network's gateway.
    pub sandbox_route: tokio::sync::watch::Receiver<Option<crate::podnet::SandboxRoute>>,
    /// The node's own search domains, appended to a pod's cluster list.
    pub host_search: Vec<String>,
}

impl PodServices {
    /// Resolver settings for a pod of `namespace`, once the resolver's
    /// address is known.
    pub fn dns(&self, namespace: &str) -> Option<crate::dns::PodDnsConfig> {
        let ip = (*self.resolver.borrow())?;
        let table = self.table.borrow();
        Some(crate::dns::pod_dns_config(
            namespace,
            ip.into(),
            table.cluster_domain(),
            &self.host_search,
        ))
    }

    /// `NAME=value` service variables for a container of a pod in
    /// `namespace`, the names in `own` (the container's own env) left out
    /// since those win, as in Kubernetes.
    pub fn env(&self, namespace: &str, own: &[String]) -> Vec<String> {
        let table = self.table.borrow();
        crate::service_env::service_env(&table, namespace)
            .into_iter()
            .filter(|(k, _)| !own.iter().any(|o| o.split('=').next() == Some(k.as_str())))
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}
