//! Data shared by the provisioner and the node agent: hardware profiles,
//! and (with later work) the inventory, host plans and agent protocol.
//!
//! This crate does no I/O: it holds serde + schemars types and pure helpers
//! only, so both binaries and every test can depend on it cheaply.

pub mod profile;
