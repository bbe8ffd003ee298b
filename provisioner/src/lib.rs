//! The provisioner: boot services, BMC drivers, the node store, the daemon
//! and the REST API, plus the operator CLI that talks to it. `main.rs` is
//! wiring only.
//!
//! The pure cores (lifecycle, site, plan, the DHCP and TFTP protocol cores,
//! iPXE scripts) live in the `provisioner-core` crate and are re-exported here
//! under the same paths. Layers, bottom up (`cargo xtask test` fails on an
//! import cycle between these modules):
//! `store`, `bmc`, `metrics` -> `dhcp`, `tftp` (UDP edges) -> `app` (state and
//! `fire`) -> `executor`, `boot`, `api` -> `daemon` (wiring) -> `cli`.

pub use provisioner_core::{inspection, lifecycle, outcome, plan, progress, site};

pub mod api;
pub mod app;
pub mod bmc;
pub mod boot;
pub mod cli;
pub mod daemon;
pub mod dhcp;
pub mod executor;
pub mod metrics;
pub mod store;
pub mod tftp;
pub mod views;
