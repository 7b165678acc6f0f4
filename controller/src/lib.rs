//! Outpost regional controller.
//!
//! `pki` (cluster CA), `tokens` (bootstrap tokens), `registry` (nodes and
//! leases) decide; `state` wires decisions to the `store` through the ordered
//! `writer`; `server` speaks QUIC to agents and operators; `metrics` serves
//! Prometheus text over HTTP; `clientconfig` is the operator's config file.
#![forbid(unsafe_code)]

pub mod api;
pub mod cache;
pub mod client;
pub mod clientconfig;
pub mod ctl;
pub mod controllers;
pub mod ctl_pods;
pub mod events;
pub mod legacy_store;
pub mod manifest;
pub mod metrics;
pub mod pki;
pub mod pods;
pub mod registry;
pub mod scheduler;
pub mod server;
pub mod state;
pub mod store;
pub mod tokens;
pub mod writer;
