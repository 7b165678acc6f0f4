//! The one top-level message enum and the payloads it carries.
//!
//! Conversations (each on its own bidirectional QUIC stream):
//! - enrolment, on a connection without a client certificate:
//!   `EnrolRequest` -> `EnrolResponse` | `Error`;
//! - agent session, on a connection with a node certificate:
//!   `Hello` -> `Welcome` | `Error`, then `Report`/`Heartbeat`/`RenewRequest`
//!   up and `RenewResponse`/`Error` down for the life of the connection;
//! - operator call, on a connection with an admin certificate:
//!   `Request` -> `Response` | `Error`.

use crate::node::{Event, EventType, NodeReport, NodeView, PlainEvent, TokenInfo};
use crate::pod::{
    pod_limits, validate_dns_label, validate_pod_key, DesiredPod, PodSpec, PodStatus, PodView,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every frame carries one of these. Add variants only at the end.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Message {
    EnrolRequest(EnrolRequest),
    EnrolResponse(EnrolResponse),
    Hello(Hello),
    Welcome(Welcome),
    Heartbeat(Heartbeat),
    Report(Box<NodeReport>),
    RenewRequest(RenewRequest),
    RenewResponse(RenewResponse),
    Request(AdminRequest),
    Response(AdminResponse),
    Error(ErrorMsg),
    /// Agent: the desired-pods generation it has applied (sent after the
    /// welcome as the resume point, then after every change it applied).
    PodsAck(PodsAck),
    /// Controller: desired pods for this node, whole or changed since the
    /// agent's acknowledged generation.
    PodsDesired(Box<PodsDesired>),
    /// Agent: pod statuses that changed (all of them when `full`).
    PodStatuses(Box<PodStatusUpdate>),
    /// Agent: events about its pods (evictions, restarts, pulls).
    AgentEvents(Vec<AgentEvent>),
    /// Controller, on a stream it opens to the agent: send a pod's logs.
    LogsRequest(LogsRequest),
    /// A chunk of a byte stream (log output, image tarball).
    Data(Vec<u8>),
    /// Controller, on a stream it opens to the agent: an image tarball of
    /// `size` bytes follows as `Data` frames.
    ImageLoad(ImageLoad),
    /// Progress of a long transfer (image push), and its end.
    Progress(Progress),
    /// Controller, protocol 4 on: the node's desired state, whole or
    /// changed since the agent's acknowledged generation (in place of
    /// `PodsDesired`, which older agents get).
    NodeDesired(Box<NodeDesired>),
    /// Controller: Service routes, whole or changed (see [`crate::route`]).
    Routes(Box<crate::route::RoutesUpdate>),
    /// Agent: first message of its relay connection.
    RelayHello(crate::route::RelayHello),
    /// Agent: carry a connection to a Service endpoint on another node.
    RelayOpen(crate::route::RelayOpen),
    /// Controller, to the endpoint's agent: connect to your pod.
    RelayConnect(crate::route::RelayConnect),
    /// Either side: the relay (or relay connection) is up; raw bytes follow.
    RelayReady,
    /// Agent, protocol 5 on: events with when they happened (in place of
    /// `AgentEvents`, which older controllers get).
    AgentEventsAt(Box<AgentEventBatch>),
}

impl Message {
    /// Short name for logs and errors ("expected Welcome, got Heartbeat").
    pub fn kind(&self) -> &'static str {
        match self {
            Message::EnrolRequest(_) => "EnrolRequest",
            Message::EnrolResponse(_) => "EnrolResponse",
            Message::Hello(_) => "Hello",
            Message::Welcome(_) => "Welcome",
            Message::Heartbeat(_) => "Heartbeat",
            Message::Report(_) => "Report",
            Message::RenewRequest(_) => "RenewRequest",
            Message::RenewResponse(_) => "RenewResponse",
            Message::Request(_) => "Request",
            Message::Response(_) => "Response",
            Message::Error(_) => "Error",
            Message::PodsAck(_) => "PodsAck",
            Message::PodsDesired(_) => "PodsDesired",
            Message::PodStatuses(_) => "PodStatuses",
            Message::AgentEvents(_) => "AgentEvents",
            Message::LogsRequest(_) => "LogsRequest",
            Message::Data(_) => "Data",
            Message::ImageLoad(_) => "ImageLoad",
            Message::Progress(_) => "Progress",
            Message::NodeDesired(_) => "NodeDesired",
            Message::Routes(_) => "Routes",
            Message::RelayHello(_) => "RelayHello",
            Message::RelayOpen(_) => "RelayOpen",
            Message::RelayConnect(_) => "RelayConnect",
            Message::RelayReady => "RelayReady",
            Message::AgentEventsAt(_) => "AgentEventsAt",
        }
    }
}

/// Bootstrap: a token and a CSR buy a node certificate. The private key never
/// leaves the agent.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EnrolRequest {
    pub token: String,
    /// Node name the agent asks for.
    pub node: String,
    /// DER-encoded PKCS#10 request; only its public key is used.
    pub csr_der: Vec<u8>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct EnrolResponse {
    pub node: String,
    /// DER node certificate.
    pub cert_der: Vec<u8>,
    /// DER cluster CA certificate (the one the agent pinned by hash).
    pub ca_der: Vec<u8>,
    /// Labels the node was registered with (the token's win over the agent's).
    pub labels: BTreeMap<String, String>,
}

/// First message of an agent session.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Hello {
    pub protocol_version: u32,
    /// The node this agent speaks for; must match its certificate.
    pub node: String,
    pub agent_version: String,
}

/// The controller accepted the session.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Welcome {
    pub controller_version: String,
    /// How often the agent must heartbeat.
    pub heartbeat_interval_ms: u64,
    /// Controller wall clock, so agents can report skew.
    pub server_time_ms: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub seq: u64,
}

/// A fresh key's CSR, sent over the live session; the identity comes from the
/// connection's certificate, never from the CSR.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RenewRequest {
    pub csr_der: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RenewResponse {
    pub cert_der: Vec<u8>,
}

/// Operator calls (admin certificate required).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum AdminRequest {
    ListNodes,
    GetNode {
        name: String,
    },
    ListEvents {
        /// Only events about this object (`node/NAME`), if set.
        object: Option<String>,
        limit: u32,
    },
    CreateToken {
        ttl_secs: u64,
        uses: Option<u32>,
        labels: BTreeMap<String, String>,
        description: String,
    },
    ListTokens,
    RevokeToken {
        id: String,
    },
    DeleteNode {
        name: String,
    },
    /// Creates or updates a pod (by name).
    ApplyPod {
        pod: Box<PodSpec>,
    },
    DeletePod {
        name: String,
    },
    ListPods {
        /// Only pods bound to this node, if set.
        node: Option<String>,
    },
    GetPod {
        name: String,
    },
    /// Streams a container's log: `Response(Data)` frames until the stream
    /// ends (with `follow`, until the container stops or the caller hangs up).
    Logs(LogsRequest),
    /// Pushes a `docker save` tarball of `size` bytes to a node or to every
    /// connected node of a site; the tarball follows as `Data` frames and
    /// `Response(Progress)` frames come back.
    PushImage {
        node: Option<String>,
        site: Option<String>,
        size: u64,
        /// File name, for messages.
        name: String,
    },
    /// cpu and memory in use per node, for `top nodes`.
    NodeUsage,
    /// Creates or updates the objects of Kubernetes manifests. Every
    /// document is validated first; if any is refused, nothing changes and
    /// the error lists every problem.
    Apply(ApplyRequest),
    /// One object.
    Get(ObjectRef),
    /// Objects of a kind, paged.
    List(ListRequest),
    /// Deletes an object; its dependents are garbage-collected unless
    /// orphaned.
    Delete(DeleteRequest),
    /// Streams changes to objects of a kind: `Response(WatchEvent)` frames
    /// until the caller hangs up.
    Watch(WatchRequest),
    /// Sets `spec.replicas` of a Deployment or ReplicaSet.
    Scale(ScaleRequest),
    /// Marks a node (un)schedulable.
    Cordon {
        node: String,
        unschedulable: bool,
    },
    /// cpu and memory in use per pod (`namespace/name`), for `top pods`.
    PodUsage,
    /// Evicts a pod through the disruption check (policy/v1 Eviction):
    /// answered `Done`, or `Error` with [`ErrorCode::TooManyRequests`] when
    /// a PodDisruptionBudget refuses it for now (retry later).
    Evict(EvictRequest),
    /// `Delete` with Kubernetes' `deleteOptions.gracePeriodSeconds`: a pod
    /// bound to a node is stopped with this grace period in place of its
    /// own (`delete --grace-period`, `--now`). Sent only when a grace period
    /// is asked for, so plain deletes still reach older controllers.
    DeleteWithGrace {
        request: DeleteRequest,
        grace_period_seconds: u32,
    },
    /// Signs a named operator certificate for the CSR's key (the key never
    /// leaves the caller, the CA key never leaves the controller), records
    /// it, and answers `AdminIssued`. Full admins only.
    CreateAdmin(AdminCertRequest),
    /// Every recorded operator certificate: `Admins`.
    ListAdmins,
    /// Refuses every active certificate of the name from now on (its open
    /// connections are closed): `Done`.
    RevokeAdmin {
        name: String,
    },
    /// A new certificate for an existing name and role; the old one is
    /// revoked in the same write: `AdminIssued`.
    RenewAdmin(AdminRenewRequest),
    /// A new server certificate from the same CA (same names plus
    /// `extra_sans`), saved and used for every new handshake at once:
    /// `Done`. Agents pin the CA, so none needs re-enrolling.
    RenewServerCert {
        extra_sans: Vec<String>,
        /// Lifetime of the new certificate; `None`: ten years, as `init`.
        valid_for_secs: Option<u64>,
    },
    /// `ListEvents` answered with whole events (`EventSeries`: count and
    /// first time of each series). `ListEvents` keeps the layout older
    /// `outpostctl`s decode.
    ListEventSeries {
        object: Option<String>,
        limit: u32,
    },
}

/// What an operator certificate may do.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AdminRole {
    /// Everything.
    Admin,
    /// Reads only (get, describe, list, watch, logs, top, events): for
    /// dashboards and on-call.
    ReadOnly,
}

impl AdminRole {
    /// `admin` or `read-only`, as the CLI spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Admin => "admin",
            AdminRole::ReadOnly => "read-only",
        }
    }

    pub fn parse(s: &str) -> Option<AdminRole> {
        match s {
            "admin" => Some(AdminRole::Admin),
            "read-only" | "readonly" | "view" => Some(AdminRole::ReadOnly),
            _ => None,
        }
    }
}

impl std::fmt::Display for AdminRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `outpostctl admin create`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AdminCertRequest {
    /// A DNS label: lower-case letters, digits and '-'.
    pub name: String,
    pub role: AdminRole,
    pub valid_for_secs: u64,
    /// PKCS#10 request for the caller's new key; only the key is used.
    pub csr_der: Vec<u8>,
}

/// `outpostctl admin renew`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AdminRenewRequest {
    /// `None`: the caller's own certificate.
    pub name: Option<String>,
    /// `None`: as long as the certificate it replaces was issued for.
    pub valid_for_secs: Option<u64>,
    pub csr_der: Vec<u8>,
}

/// One recorded operator certificate, as `admin list` shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AdminInfo {
    pub name: String,
    pub role: AdminRole,
    /// Hex serial number.
    pub serial: String,
    pub issued_ms: u64,
    pub not_after_ms: u64,
    /// Name of the admin who issued it (`init` for the first one).
    pub issued_by: String,
    /// When it was revoked (or replaced by a renewal).
    pub revoked_ms: Option<u64>,
}

/// A certificate just signed: the record and the DER.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AdminIssued {
    pub info: AdminInfo,
    pub cert_der: Vec<u8>,
}

/// One manifest document, as Kubernetes JSON.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Where it came from, for messages: `web.yaml: document 2`.
    pub source: String,
    pub json: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ApplyRequest {
    pub documents: Vec<Document>,
    /// Validate and report what would change; change nothing.
    pub dry_run: bool,
}

/// What apply did to one object.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ApplyResult {
    /// `deployment.apps`, `pod`, ...
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `created`, `configured` or `unchanged`.
    pub outcome: String,
    /// Fields accepted but ignored (informational ones), by path.
    pub warnings: Vec<String>,
}

/// Names one object. An empty namespace means `default` for namespaced
/// kinds.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Any spelling kubectl accepts: `deployments`, `deploy`, `Deployment`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub kind: String,
    /// `None`: every namespace.
    pub namespace: Option<String>,
    /// Label selector in kubectl's syntax (`app=web,tier!=db`).
    pub selector: String,
    /// Only pods bound to this node.
    pub node: Option<String>,
    /// Most items in one answer (0: the server's default).
    pub limit: u32,
    /// `continue` of the previous page; empty for the first.
    pub continue_from: String,
}

/// Kubernetes' deletion propagation.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete the object now, its dependents after it.
    Background,
    /// Keep the dependents, without their owner reference.
    Orphan,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    pub object: ObjectRef,
    pub propagation: Propagation,
    pub dry_run: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WatchRequest {
    pub kind: String,
    pub namespace: Option<String>,
    pub selector: String,
    /// Watch changes after this revision (from a list); 0: list first
    /// (every current object arrives as `ADDED`).
    pub resource_version: u64,
}

/// Kubernetes' `policy/v1 Eviction` of one pod.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EvictRequest {
    pub namespace: String,
    pub name: String,
    /// Seconds the pod's containers get to stop (`deleteOptions.
    /// gracePeriodSeconds`); `None`: the pod's own
    /// `terminationGracePeriodSeconds`.
    pub grace_period_seconds: Option<u32>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ScaleRequest {
    pub object: ObjectRef,
    pub replicas: u32,
}

/// A page of objects, each as Kubernetes JSON.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ObjectList {
    pub items: Vec<Vec<u8>>,
    /// Pass back for the next page; empty on the last.
    pub continue_from: String,
    /// Store revision the page was read at.
    pub resource_version: u64,
}

/// One change seen by a watch.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// `ADDED`, `MODIFIED` or `DELETED`, as Kubernetes' watch says.
    pub kind: String,
    pub object: Vec<u8>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum AdminResponse {
    Nodes(Vec<NodeView>),
    Node(Box<NodeView>),
    /// Answer to `ListEvents`, in the layout older `outpostctl`s decode.
    Events(Vec<PlainEvent>),
    TokenCreated {
        /// `ID.SECRET`; shown once, never stored in clear.
        token: String,
        info: TokenInfo,
        /// `sha256:HEX` of the cluster CA certificate, for `--ca-hash`.
        ca_hash: String,
    },
    Tokens(Vec<TokenInfo>),
    Done {
        message: String,
    },
    Pods(Vec<PodView>),
    Pod(Box<PodView>),
    Data(Vec<u8>),
    Progress(Progress),
    NodeUsage(Vec<(String, crate::pod::Usage)>),
    Applied(Vec<ApplyResult>),
    /// One object as Kubernetes JSON.
    Object(Vec<u8>),
    List(ObjectList),
    WatchEvent(WatchEvent),
    /// Per pod (`namespace/name`): cpu and memory in use.
    PodUsage(Vec<(String, crate::pod::Usage)>),
    /// A certificate `CreateAdmin` or `RenewAdmin` signed.
    AdminIssued(Box<AdminIssued>),
    /// Every recorded operator certificate.
    Admins(Vec<AdminInfo>),
    /// Answer to `ListEventSeries`.
    EventSeries(Vec<Event>),
}

/// Agent -> controller: generation of desired pods applied.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodsAck {
    pub generation: u64,
}

/// Controller -> agent: desired pods.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PodsDesired {
    /// Generation the agent acknowledges once applied.
    pub generation: u64,
    /// `pods` is the whole set: drop every pod not in it.
    pub full: bool,
    /// Pods added or changed (all pods when `full`).
    pub pods: Vec<DesiredPod>,
    /// Keys ([`crate::pod::PodSpec::key`]) of pods to stop and remove.
    pub removed: Vec<String>,
}

/// Most pods in one desired-state message, and most statuses per update.
pub const MAX_PODS_PER_NODE: usize = 110;

/// Most images one node is asked to fetch ahead of its pods (a rollout
/// asks for its template's images, at most 16 containers' worth, so this
/// leaves room for two rollouts touching the node at once).
pub const MAX_WANTED_IMAGES: usize = 32;

/// Longest grace period a removal carries (a day; Kubernetes has no bound,
/// but an edge box waiting longer for a pod to stop is a mistake).
pub const MAX_REMOVAL_GRACE_SECS: u32 = 86_400;

/// Controller -> agent (protocol 4 on): desired state of one node.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct NodeDesired {
    /// Generation the agent acknowledges once applied.
    pub generation: u64,
    /// `pods` is the whole set: drop every pod not in it.
    pub full: bool,
    /// Pods added or changed (all pods when `full`).
    pub pods: Vec<DesiredPod>,
    /// Pods to stop and remove, each with the grace period of its deletion.
    pub removed: Vec<Removal>,
    /// Images the node should fetch ahead of pods that will need them
    /// (a Recreate rollout waits for them before stopping the old pods);
    /// the whole set in every message. References as pod specs write them.
    pub images: Vec<String>,
}

/// A pod to stop and remove.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// Key of the pod ([`crate::pod::PodSpec::key`]).
    pub key: String,
    /// Seconds its containers get between SIGTERM and SIGKILL
    /// (`metadata.deletionGracePeriodSeconds`: an eviction's or a delete's
    /// grace period); `None`: the pod's own `terminationGracePeriodSeconds`.
    pub grace_period_seconds: Option<u32>,
}

impl NodeDesired {
    /// What an agent speaking protocol 3 is told: the same pods and
    /// removals, without the grace periods and images it cannot take.
    pub fn to_pods_desired(&self) -> PodsDesired {
        PodsDesired {
            generation: self.generation,
            full: self.full,
            pods: self.pods.clone(),
            removed: self.removed.iter().map(|r| r.key.clone()).collect(),
        }
    }

    /// Checks the parts an agent cannot check elsewhere (pod specs are
    /// validated one by one as they are applied): bounds, removal keys and
    /// grace periods, image references; every problem at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Vec::new();
        for (what, n, max) in [
            ("pods", self.pods.len(), MAX_PODS_PER_NODE),
            ("removals", self.removed.len(), MAX_PODS_PER_NODE),
            ("wanted images", self.images.len(), MAX_WANTED_IMAGES),
        ] {
            if n > max {
                p.push(format!("{n} {what}; at most {max}"));
            }
        }
        for r in &self.removed {
            if let Err(e) = validate_pod_key("removed pod", &r.key) {
                p.push(e);
            }
            if r.grace_period_seconds
                .is_some_and(|g| g > MAX_REMOVAL_GRACE_SECS)
            {
                p.push(format!(
                    "removal of {:?}: a grace period of {}s; at most {MAX_REMOVAL_GRACE_SECS}s",
                    r.key.chars().take(140).collect::<String>(),
                    r.grace_period_seconds.unwrap_or(0)
                ));
            }
        }
        for i in &self.images {
            if i.is_empty()
                || i.len() > crate::node::MAX_IMAGE_NAME
                || i.chars().any(char::is_whitespace)
            {
                p.push(format!(
                    "wanted image {:?}: references are 1 to {} bytes without spaces",
                    i.chars().take(64).collect::<String>(),
                    crate::node::MAX_IMAGE_NAME
                ));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p.join("; "))
        }
    }
}

impl From<PodsDesired> for NodeDesired {
    /// A protocol 3 controller's message: removals with the pods' own grace
    /// periods, no images wanted.
    fn from(d: PodsDesired) -> NodeDesired {
        NodeDesired {
            generation: d.generation,
            full: d.full,
            pods: d.pods,
            removed: d
                .removed
                .into_iter()
                .map(|key| Removal {
                    key,
                    grace_period_seconds: None,
                })
                .collect(),
            images: Vec::new(),
        }
    }
}

/// Agent -> controller: pod statuses.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PodStatusUpdate {
    /// `pods` holds every pod the agent runs; forget the others.
    pub full: bool,
    pub pods: Vec<PodStatus>,
    /// Keys of pods the agent no longer has at all (stopped and removed).
    pub gone: Vec<String>,
    /// Node cpu and memory in use, for `top nodes`.
    pub node_usage: crate::pod::Usage,
}

impl PodStatusUpdate {
    /// Checks bounds and keys on an update from a peer; all problems at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Vec::new();
        for (what, n) in [
            ("statuses", self.pods.len()),
            ("gone pods", self.gone.len()),
        ] {
            if n > MAX_PODS_PER_NODE {
                p.push(format!("{n} {what}; at most {MAX_PODS_PER_NODE}"));
            }
        }
        for s in &self.pods {
            if let Err(e) = s.validate() {
                p.push(format!(
                    "status of pod {:?}: {e}",
                    s.name.chars().take(140).collect::<String>()
                ));
            }
        }
        for k in &self.gone {
            if let Err(e) = validate_pod_key("gone pod", k) {
                p.push(e);
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p.join("; "))
        }
    }
}

/// Something the agent tells the operator about one of its pods.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AgentEvent {
    pub kind: EventType,
    /// CamelCase reason, e.g. `Evicted`, `BackOff`, `Pulled`.
    pub reason: String,
    /// Key of the pod the event is about ([`crate::pod::PodSpec::key`]);
    /// empty for an event about the node itself (image garbage collection).
    pub pod: String,
    pub message: String,
}

/// Most events in one `AgentEvents` message.
pub const MAX_AGENT_EVENTS: usize = 64;
/// An event repeats its series (Kubernetes' event correlator: the same
/// object, type, reason and message) if the series was last seen at most
/// this long before; the agent groups its queued events by the same rule.
pub const EVENT_SERIES_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Longest event reason.
pub const MAX_REASON: usize = 128;

impl AgentEvent {
    /// Checks an event from a peer: the pod key (or none), reason and
    /// message bounds.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Vec::new();
        if !self.pod.is_empty() {
            if let Err(e) = validate_pod_key("event pod", &self.pod) {
                p.push(e);
            }
        }
        if self.reason.is_empty()
            || self.reason.len() > MAX_REASON
            || !self.reason.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            p.push(format!(
                "event reason {:?} must be 1 to {MAX_REASON} letters and digits (CamelCase)",
                self.reason.chars().take(64).collect::<String>()
            ));
        }
        if self.message.len() > pod_limits::MAX_MESSAGE {
            p.push(format!(
                "event message is {} bytes, at most {}",
                self.message.len(),
                pod_limits::MAX_MESSAGE
            ));
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p.join("; "))
        }
    }
}

/// One event as an agent speaking protocol 5 sends it: when it happened,
/// and how often (a series, by the controller's rules: the same type,
/// reason, pod and message again within its window).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TimedAgentEvent {
    pub event: AgentEvent,
    /// First occurrence, on the agent's clock (ms since the epoch).
    pub first_time_ms: u64,
    /// Last occurrence, on the agent's clock; not before `first_time_ms`.
    pub time_ms: u64,
    /// Occurrences from first to last, at least one.
    pub count: u32,
}

/// Agent -> controller (protocol 5 on): events with their times.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AgentEventBatch {
    /// The agent's clock when it sent the batch. The controller's clock
    /// minus this is the agent's skew (plus the one-way delay), by which
    /// it corrects the events' times: a box whose clock is wrong still
    /// gets correct event times.
    pub sent_ms: u64,
    pub events: Vec<TimedAgentEvent>,
}

impl AgentEventBatch {
    /// The message for a controller speaking protocol `version`: before
    /// [`crate::version::EVENT_TIMES`] the bare events (that controller
    /// stamps them on arrival, one occurrence each).
    pub fn into_message(self, version: u32) -> Message {
        if crate::version::has(version, crate::version::EVENT_TIMES) {
            Message::AgentEventsAt(Box::new(self))
        } else {
            Message::AgentEvents(self.events.into_iter().map(|e| e.event).collect())
        }
    }

    /// Checks a batch from a peer: the number of events and each event.
    /// Times are not refused but bounded where they are used (the
    /// controller clamps them to what the session makes possible).
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Vec::new();
        if self.events.len() > MAX_AGENT_EVENTS {
            p.push(format!(
                "{} events in one message; at most {MAX_AGENT_EVENTS}",
                self.events.len()
            ));
        }
        for t in &self.events {
            if let Err(e) = t.event.validate() {
                p.push(e);
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p.join("; "))
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LogsRequest {
    /// Key of the pod ([`crate::pod::PodSpec::key`]).
    pub pod: String,
    /// Container name; may be omitted when the pod has one container.
    pub container: Option<String>,
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<u32>,
    /// The previous run's log, after a restart.
    pub previous: bool,
}

impl LogsRequest {
    /// Checks a request from a peer: a pod key and, if named, a container
    /// name.
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Vec::new();
        if let Err(e) = validate_pod_key("pod", &self.pod) {
            p.push(e);
        }
        if let Some(c) = &self.container {
            if let Err(e) = validate_dns_label("container name", c) {
                p.push(e);
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p.join("; "))
        }
    }
}

/// Controller -> agent: an image tarball follows.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ImageLoad {
    pub size: u64,
    pub name: String,
}

/// Progress of a transfer; `done` on the last one.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Node the progress is about (empty for the transfer as a whole).
    pub node: String,
    pub bytes: u64,
    pub total: u64,
    pub done: bool,
    /// Set when this node failed; the others carry on.
    pub error: Option<String>,
    pub message: String,
}

/// Error codes a peer can act on.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// No or unusable client certificate for this call.
    Unauthenticated,
    /// Authenticated, but not allowed (wrong node, not an admin).
    PermissionDenied,
    /// The token is unknown, expired, used up or revoked.
    InvalidToken,
    /// The request is malformed or names something invalid.
    InvalidRequest,
    NotFound,
    AlreadyExists,
    /// The protocol versions differ.
    VersionMismatch,
    Internal,
    /// The object changed since it was read (a stale resourceVersion).
    Conflict,
    /// Refused for now, retry later (Kubernetes' 429): an eviction a
    /// PodDisruptionBudget does not allow yet.
    TooManyRequests,
    /// What is asked for is not reachable now (a relay to a node that is
    /// offline, a Service with no ready endpoint): Kubernetes' 503.
    Unavailable,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorMsg {
    pub code: ErrorCode,
    pub message: String,
}

impl std::fmt::Display for ErrorMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// QUIC application close codes, so the peer can tell why it was dropped.
pub mod close {
    /// Orderly close.
    pub const DONE: u32 = 0;
    /// A frame was oversized, malformed or unexpected.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// Authentication or authorisation failed; see the reason.
    pub const DENIED: u32 = 2;
    /// A newer connection of the same node took over.
    pub const REPLACED: u32 = 3;
    /// The node was deleted by an operator.
    pub const DELETED: u32 = 4;
    /// The controller is shutting down.
    pub const SHUTDOWN: u32 = 5;
    /// The controller is too busy to take the connection now; retry later.
    pub const BUSY: u32 = 6;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removal(key: &str, grace: Option<u32>) -> Removal {
        Removal {
            key: key.into(),
            grace_period_seconds: grace,
        }
    }

    #[test]
    fn node_desired_bounds() {
        let desired = |removed: Vec<Removal>, images: Vec<String>| NodeDesired {
            generation: 7,
            full: false,
            pods: vec![],
            removed,
            images,
        };
        let ok = desired(
            vec![removal("web", Some(2)), removal("team-a.web", None)],
            vec!["outpost/workload-http:v2".into()],
        );
        assert!(ok.validate().is_ok(), "{:?}", ok.validate());
        let table: Vec<(NodeDesired, &str)> = vec![
            (desired(vec![removal("a..b", None)], vec![]), "removed pod"),
            (
                desired(
                    vec![removal("web", Some(MAX_REMOVAL_GRACE_SECS + 1))],
                    vec![],
                ),
                "a grace period of 86401s",
            ),
            (
                desired(vec![], vec!["img:1".into(); MAX_WANTED_IMAGES + 1]),
                "33 wanted images",
            ),
            (desired(vec![], vec![String::new()]), "wanted image \"\""),
            (desired(vec![], vec!["a b".into()]), "without spaces"),
            (
                desired(vec![removal("web", None); MAX_PODS_PER_NODE + 1], vec![]),
                "111 removals",
            ),
        ];
        for (d, want) in table {
            let e = d.validate().unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn protocol_3_desired_state_converts_both_ways() {
        let v4 = NodeDesired {
            generation: 9,
            full: true,
            pods: vec![],
            removed: vec![removal("web", Some(2))],
            images: vec!["img:2".into()],
        };
        let v3 = v4.to_pods_desired();
        assert_eq!(v3.removed, vec!["web".to_string()]);
        assert_eq!((v3.generation, v3.full), (9, true));
        let back = NodeDesired::from(v3);
        assert_eq!(
            back.removed,
            vec![removal("web", None)],
            "the pod's own grace"
        );
        assert!(back.images.is_empty());
    }

    #[test]
    fn existing_variants_keep_their_encoding() {
        // An agent or controller speaking protocol 3 decodes these; the new
        // variant went at the end and left every older index alone.
        let hello = Message::Hello(Hello {
            protocol_version: 4,
            node: "n".into(),
            agent_version: "v".into(),
        });
        assert_eq!(postcard::to_allocvec(&hello).unwrap()[0], 2);
        let pods = Message::PodsDesired(Box::new(PodsDesired {
            generation: 1,
            full: true,
            pods: vec![],
            removed: vec![],
        }));
        assert_eq!(postcard::to_allocvec(&pods).unwrap(), vec![12, 1, 1, 0, 0]);
        let next = Message::NodeDesired(Box::new(NodeDesired::from(PodsDesired {
            generation: 1,
            full: true,
            pods: vec![],
            removed: vec![],
        })));
        assert_eq!(postcard::to_allocvec(&next).unwrap()[0], 19);
    }

    fn timed(count: u32) -> TimedAgentEvent {
        TimedAgentEvent {
            event: AgentEvent {
                kind: EventType::Warning,
                reason: "R".into(),
                pod: String::new(),
                message: "m".into(),
            },
            first_time_ms: 1_000,
            time_ms: 2_000,
            count,
        }
    }

    #[test]
    fn event_times_go_only_to_a_controller_that_speaks_protocol_5() {
        let batch = AgentEventBatch {
            sent_ms: 3_000,
            events: vec![timed(3)],
        };
        // Protocol 4 (and 3): the message and bytes such an agent always
        // sent, variant 14 with the bare event, which a v4 controller decodes;
        // and those bytes, from a v4 agent, decode here as they did.
        let v4 = batch.clone().into_message(4);
        let v4_bytes: Vec<u8> = vec![14, 1, 1, 1, b'R', 0, 1, b'm'];
        assert_eq!(postcard::to_allocvec(&v4).unwrap(), v4_bytes);
        assert_eq!(
            postcard::from_bytes::<Message>(&v4_bytes).unwrap(),
            Message::AgentEvents(vec![timed(1).event])
        );
        assert_eq!(batch.clone().into_message(3), v4);
        // Protocol 5: the new variant, at the end, with the times.
        let v5 = batch.clone().into_message(crate::version::EVENT_TIMES);
        let bytes = postcard::to_allocvec(&v5).unwrap();
        assert_eq!(bytes[0], 25);
        assert_eq!(postcard::from_bytes::<Message>(&bytes).unwrap(), v5);
        assert_eq!(v5, Message::AgentEventsAt(Box::new(batch)));
    }

    #[test]
    fn an_event_batch_is_bounded() {
        let ok = AgentEventBatch {
            sent_ms: 0,
            events: vec![timed(1); MAX_AGENT_EVENTS],
        };
        assert!(ok.validate().is_ok());
        let many = AgentEventBatch {
            sent_ms: 0,
            events: vec![timed(1); MAX_AGENT_EVENTS + 1],
        };
        assert!(many.validate().unwrap_err().contains("65 events"));
        let mut bad = timed(1);
        bad.event.reason = "not camel".into();
        let e = AgentEventBatch {
            sent_ms: 0,
            events: vec![bad],
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("event reason"), "{e}");
    }

    #[test]
    fn operator_certificate_requests_came_after_every_older_request() {
        // A controller that predates them fails to decode these (and
        // outpostctl says so); every older request keeps its index.
        let enc = |r: AdminRequest| postcard::to_allocvec(&Message::Request(r)).unwrap();
        assert_eq!(enc(AdminRequest::ListNodes), vec![8, 0]);
        assert_eq!(
            enc(AdminRequest::PodUsage),
            vec![8, 21],
            "PodUsage keeps its index"
        );
        assert_eq!(enc(AdminRequest::ListAdmins), vec![8, 25]);
        assert_eq!(
            enc(AdminRequest::RevokeAdmin { name: "a".into() })[..2],
            [8, 26]
        );
        let renew = AdminRequest::RenewServerCert {
            extra_sans: vec![],
            valid_for_secs: None,
        };
        assert_eq!(enc(renew)[..2], [8, 28]);
        let listed =
            postcard::to_allocvec(&Message::Response(AdminResponse::Admins(vec![]))).unwrap();
        assert_eq!(listed, vec![9, 17, 0]);
        assert_eq!(AdminRole::parse("read-only"), Some(AdminRole::ReadOnly));
        assert_eq!(AdminRole::ReadOnly.to_string(), "read-only");
    }

    #[test]
    fn keys_from_peers_are_checked() {
        let logs = |pod: &str, container: Option<&str>| LogsRequest {
            pod: pod.into(),
            container: container.map(str::to_string),
            follow: false,
            tail: None,
            previous: false,
        };
        assert!(logs("web", None).validate().is_ok());
        assert!(logs("team-a.web", Some("main")).validate().is_ok());
        assert!(logs("a.b.c", None).validate().is_err());
        assert!(logs("web", Some("Main")).validate().is_err());

        let event = |pod: &str, reason: &str| AgentEvent {
            kind: EventType::Warning,
            reason: reason.into(),
            pod: pod.into(),
            message: "m".into(),
        };
        assert!(event("team-a.web", "ExecFormatError").validate().is_ok());
        assert!(event("", "ImageGCFreed").validate().is_ok(), "node event");
        assert!(event("team-a.web.x", "Evicted").validate().is_err());
        assert!(event("web", "not camel").validate().is_err());
        let mut long = event("web", "Evicted");
        long.message = "x".repeat(pod_limits::MAX_MESSAGE + 1);
        assert!(long.validate().is_err());

        let update = |gone: &[&str]| PodStatusUpdate {
            full: false,
            pods: vec![],
            gone: gone.iter().map(|g| (*g).to_string()).collect(),
            node_usage: crate::pod::Usage::default(),
        };
        assert!(update(&["web", "team-a.web"]).validate().is_ok());
        let e = update(&["web", "x..y"]).validate().unwrap_err();
        assert!(e.contains("gone pod"), "{e}");
        assert!(update(&vec!["web"; MAX_PODS_PER_NODE + 1])
            .validate()
            .is_err());
    }
}
