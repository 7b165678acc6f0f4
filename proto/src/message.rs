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

use crate::node::{Event, NodeReport, NodeView, TokenInfo};
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
