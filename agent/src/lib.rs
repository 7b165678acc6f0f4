//! Outpost edge agent as a library: the pieces `main.rs` wires together.
//!
//! `probe` measures this box (memory, filesystems, pids, Docker) and
//! `pressure` turns those measurements into kubelet-style node conditions and
//! eviction decisions, without I/O. `report` decides when a report is worth
//! sending; `session` enrols (`identity` keeps key and certificate on disk)
//! and keeps the QUIC session alive, reconnecting with `backoff`; `config`
//! merges flags over the config file.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod config;
pub mod identity;
pub mod podstate;
pub mod pressure;
pub mod probe;
pub mod report;
pub mod runtime;
pub mod session;
