//! Outpost edge agent as a library: the pieces `main.rs` wires together.
//!
//! `probe` measures this box (memory, filesystems, pids, Docker) and
//! `pressure` turns those measurements into kubelet-style node conditions and
//! eviction decisions, without I/O; `readiness` says Ready=False when the
//! container runtime was lost. `report` decides when a report is worth
//! sending; `session` enrols (`identity` keeps key and certificate on disk)
//! and keeps the QUIC session alive, reconnecting with `backoff`; `config`
//! merges flags over the config file; `dirlock` keeps a second agent off
//! the data directory; `clock` keeps "now" from going back past the
//! controller's time of the last contact, and `eventqueue` holds events
//! with when they happened until the controller is reached. `services` is
//! the agent's snapshot of the cluster's Services; `dns` serves it to pods
//! as a resolver and
//! `service_env` turns it into the kubelet's service environment variables.
//! `proxy` forwards Service connections (in userspace, or through the
//! kernel's nf_tables DNAT, which `nft` programs); `netlink` sets the
//! routes Service routing needs.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod clock;
pub mod config;
pub mod dirlock;
pub mod dns;
pub mod eventqueue;
pub mod identity;
pub mod metrics;
pub mod netlink;
pub mod nft;
pub mod podnet;
pub mod podstate;
pub mod pressure;
pub mod probe;
pub mod proxy;
pub mod readiness;
pub mod report;
pub mod routes;
pub mod runtime;
pub mod service_env;
pub mod services;
pub mod session;
#[cfg(test)]
pub(crate) mod testns;
