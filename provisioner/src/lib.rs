//! The provisioner: boot services, BMC drivers, the node store, the daemon
//! and the REST API, plus the operator CLI that talks to it. `main.rs` is
//! wiring only.
//!
//! The pure cores (lifecycle, site, plan, the DHCP and TFTP protocol cores,
//! iPXE scripts) live in the `provisioner-core` crate and are re-exported here
//! under the same paths. Layers, bottom up (`cargo xtask test` fails on an
//! import cycle between these modules):
//! `store`, `bmc`, `metrics`, `keys` -> `dhcp`, `tftp` (UDP edges) -> `app` (state and
//! `fire`) -> `executor`, `boot`, `api` -> `daemon` (wiring) -> `cli`.
//!
//! Only what another crate uses is `pub`: `main.rs` (`cli::main`), the tests in
//! `tests/`, the `bmc_bench` example and `hardware-tests`. Everything else is
//! `pub(crate)` or private, so the compiler reports dead code; `unreachable_pub`
//! keeps a stray `pub` out of the private modules.

#![warn(unreachable_pub)]

use provisioner_core::{inspection, outcome, plan};
pub use provisioner_core::{lifecycle, power, progress, site};

pub mod api;
pub mod app;
pub mod bmc;
mod boot;
pub mod cli;
mod daemon;
pub mod dhcp;
mod executor;
pub mod keys;
mod metrics;
pub mod store;
pub mod tftp;
pub mod views;
