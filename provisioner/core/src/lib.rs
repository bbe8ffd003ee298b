//! The provisioner's pure cores: what the daemon decides, without any of the
//! I/O it does. Each module is synchronous and deterministic: bytes or values
//! in, typed values or decisions out; the clock is an argument.
//!
//! - [`lifecycle`]: the node state machine, with its policy (deadlines, failure
//!   reasons, power-off after inspection) inside the pure `transition`.
//! - [`site`]: loads and validates the site repository (`file:line:column`).
//! - [`plan`]: inventory + profile -> host plan, and profile matching.
//! - [`outcome`]: which profile and plan a node gets (or why none).
//! - [`inspection`]: what an agent's report does to its node.
//! - [`power`]: a BMC's power state (`on`, `off`, `powering_on`, `powering_off`).
//! - [`progress`]: the boot steps of a wait state and why a wait timed out.
//! - [`dhcp`]: the DHCPv4 server: lease table, answer policy, boot-file choice;
//!   its codec is `model::dhcp` (shared with the agent), re-exported as `dhcp::codec`.
//! - [`tftp`]: the TFTP codec and the read-transfer state machine.
//! - [`script`]: which iPXE script a machine gets, rendered with tera.
//!
//! Invariant: this crate depends on no async runtime, database or HTTP server
//! (no tokio, sqlx, axum); `cargo xtask test` fails if one appears in
//! `cargo tree -p provisioner-core`. The only file reads are the site loader's
//! and the script templates' (both given a directory by the caller).

pub mod dhcp;
pub mod inspection;
pub mod lifecycle;
pub mod outcome;
pub mod plan;
pub mod power;
pub mod progress;
pub mod script;
pub mod site;
pub mod tftp;
