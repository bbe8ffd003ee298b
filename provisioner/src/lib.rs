//! The provisioner: boot services, BMC drivers, the node store, the lifecycle
//! state machine, the site repository and the REST API, plus the operator CLI
//! that talks to it. `main.rs` is wiring only.

pub mod api;
pub mod bmc;
pub mod boot;
pub mod cli;
pub mod daemon;
pub mod dhcp;
pub mod executor;
pub mod inspection;
pub mod lifecycle;
pub mod metrics;
pub mod plan;
pub mod site;
pub mod store;
pub mod tftp;
pub mod views;
