//! Outpost wire protocol.
//!
//! Everything the agent, the controller and `outpostctl` say to each other is a
//! [`Message`], encoded with postcard and carried in length-prefixed frames
//! ([`frame`]) over QUIC streams with ALPN [`ALPN`]. This crate has no sockets,
//! no clock and no runtime, so codecs and state machines can be tested and
//! fuzzed in memory. The optional `link` feature adds the thin async adapter
//! that moves frames over quinn streams and builds the TLS configurations.
//!
//! Compatibility rule: [`Message`] and every enum inside it only ever gain
//! variants at the end, and structs only change together with
//! [`PROTOCOL_VERSION`].
//!
//! Versions: the agent's hello names the newest version it speaks; a
//! controller accepts any version from [`MIN_PROTOCOL_VERSION`] to its own
//! and speaks the agent's for the session. A controller older than the
//! agent refuses the hello with `VersionMismatch`; the agent then says hello
//! again with the version below, down to [`MIN_PROTOCOL_VERSION`]. What a
//! version adds is only sent when the session's version has it (see
//! [`version`]), so mixed fleets keep working through an upgrade.
#![forbid(unsafe_code)]

pub mod frame;
pub mod message;
pub mod names;
pub mod node;
pub mod pod;
pub mod route;
pub mod transfer;
pub mod units;

#[cfg(feature = "link")]
pub mod clock;
#[cfg(feature = "link")]
pub mod endpoint_thread;
#[cfg(feature = "link")]
pub mod files;
#[cfg(feature = "link")]
pub mod link;

pub use frame::{FrameError, MAX_FRAME};
pub use message::*;
pub use node::*;

/// ALPN protocol identifier negotiated on every Outpost QUIC connection.
pub const ALPN: &[u8] = b"outpost/1";

/// Version of the message structures; bumped on any incompatible change.
/// The hello carries it so a mismatch is reported by name, not as a decode error.
/// 3: pod namespaces and keys, pod IPs, the images a node holds.
/// 4: agents report `Ready=False` (runtime lost); desired state as
/// [`NodeDesired`] (removals with their grace period, images to fetch ahead);
/// Service routes (`Routes`) and the relay (`Relay*`).
/// 5: agent events carry when they happened (`AgentEventsAt`: first and
/// last occurrence and count on the agent's clock, and the agent's clock
/// when sent, so the controller corrects them by the agent's skew).
pub const PROTOCOL_VERSION: u32 = 5;

/// Oldest version still spoken, by either side.
pub const MIN_PROTOCOL_VERSION: u32 = 3;

/// The version that brought each feature a session may use.
pub mod version {
    /// The agent's `Ready=False` in its report.
    pub const AGENT_READY: u32 = 4;
    /// `Message::NodeDesired` in place of `Message::PodsDesired`.
    pub const NODE_DESIRED: u32 = 4;
    /// `Message::Routes` and the relay connection (`Relay*`).
    pub const ROUTES: u32 = 4;
    /// `Message::AgentEventsAt` in place of `Message::AgentEvents`.
    pub const EVENT_TIMES: u32 = 5;

    /// True when a peer speaking `session` understands what came with
    /// `feature`.
    pub fn has(session: u32, feature: u32) -> bool {
        session >= feature
    }
}
