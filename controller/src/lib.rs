//! Outpost regional controller.
//!
//! In the shape of Kubernetes' API server and controller manager, made
//! small:
//! - `api/`: the object model (every kind in Kubernetes' shape), its
//!   validation and admission;
//! - `store/`: the revisioned store (etcd v3 shape; redb or memory) and its
//!   watch;
//! - `cache/`: every object decoded once and indexed, fed by the watch;
//! - `controllers/`: the control loop and the reconcile loops it drives;
//! - `scheduler/`: placement of pods on nodes;
//! - `apiserver`, `watch`: the operator API over objects; `agents`: each
//!   node's desired pods and its reports; `cluster`: enrolment, tokens,
//!   node leases (`registry`) and the handles everything shares;
//! - `server`: QUIC to agents and operators, with `handshake` deciding
//!   how many connections are set up at once; `metrics`: Prometheus text;
//! - `writer`: the store's group-commit thread and its coalescing queue;
//! - `drain`: `outpostctl drain`'s decisions (which pods, retries,
//!   timeouts, messages), without I/O.
#![forbid(unsafe_code)]

pub mod admins;
pub mod agents;
pub mod api;
pub mod apiserver;
pub mod cache;
pub mod client;
pub mod clientconfig;
pub mod cluster;
pub mod controllers;
pub mod ctl;
pub mod drain;
pub mod events;
pub mod handshake;
pub mod manifest;
pub mod metrics;
pub mod pki;
pub mod registry;
pub mod relay;
pub mod routes;
pub mod scheduler;
pub mod server;
pub mod sim;
pub mod store;
pub mod tokens;
pub mod watch;
pub mod writer;
