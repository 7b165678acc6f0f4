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

use crate::node::{Event, EventType, NodeReport, NodeView, TokenInfo};
use crate::pod::{DesiredPod, PodSpec, PodStatus, PodView};
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
    Events(Vec<Event>),
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
    /// Pods to stop and remove.
    pub removed: Vec<String>,
}

/// Most pods in one desired-state message, and most statuses per update.
pub const MAX_PODS_PER_NODE: usize = 110;

/// Agent -> controller: pod statuses.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PodStatusUpdate {
    /// `pods` holds every pod the agent runs; forget the others.
    pub full: bool,
    pub pods: Vec<PodStatus>,
    /// Pods the agent no longer has at all (stopped and removed).
    pub gone: Vec<String>,
    /// Node cpu and memory in use, for `top nodes`.
    pub node_usage: crate::pod::Usage,
}

/// Something the agent tells the operator about one of its pods.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AgentEvent {
    pub kind: EventType,
    /// CamelCase reason, e.g. `Evicted`, `BackOff`, `Pulled`.
    pub reason: String,
    /// Pod name the event is about.
    pub pod: String,
    pub message: String,
}

/// Most events in one `AgentEvents` message.
pub const MAX_AGENT_EVENTS: usize = 64;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LogsRequest {
    pub pod: String,
    /// Container name; may be omitted when the pod has one container.
    pub container: Option<String>,
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<u32>,
    /// The previous run's log, after a restart.
    pub previous: bool,
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
}
