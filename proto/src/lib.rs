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
#![forbid(unsafe_code)]

pub mod frame;
pub mod message;
pub mod names;
pub mod node;
pub mod pod;
pub mod units;

#[cfg(feature = "link")]
pub mod clock;
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
pub const PROTOCOL_VERSION: u32 = 3;
