//! Workload programs for Outpost's scenario tests, and the helper that builds
//! them into local Docker images.
//!
//! Four binaries, one per image, each a thin `main` over a module here:
//!
//! | binary | module | image |
//! | --- | --- | --- |
//! | `outpost-http` | [`http`] | [`HTTP_IMAGE`] |
//! | `outpost-burn` | [`burn`] | [`BURN_IMAGE`] |
//! | `outpost-hog` | [`hog`] | [`HOG_IMAGE`] |
//! | `outpost-exit` | [`exit`] | [`EXIT_IMAGE`] |
//!
//! The images are `FROM scratch` with one static binary, built by
//! `images/workloads/build-images.sh` into the local engine, because no
//! registry is reachable. Scenario tests call [`ensure_images`] before
//! creating pods from them. The crate is std only so that build takes seconds.
//!
//! `outpost-http --upstream` calls another Service by name: [`upstream`]
//! over [`dns`], a std-only resolver (a static binary on a scratch image
//! has no libc resolver that works).
//!
//! Every binary prints usage for `--help` and exits 2 on a bad command line
//! ([`cli`]).

#![forbid(unsafe_code)]

pub mod burn;
pub mod cli;
pub mod dns;
pub mod exit;
pub mod hog;
pub mod http;
mod images;
pub mod upstream;

pub use images::{ensure_images, BURN_IMAGE, EXIT_IMAGE, HOG_IMAGE, HTTP_IMAGE, IMAGES, WEB_IMAGE};
