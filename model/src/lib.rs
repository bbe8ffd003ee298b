//! Data shared by the provisioner and the node agent: hardware profiles
//! (`profile`), the inventory the agent reports (`inventory`) and the host
//! plan the planner derives from both (`plan`), the report of applying a plan
//! (`apply`), and the messages between the
//! agent and the provisioner's agent API (`agent`); the MAC address type
//! (`net`) and the DHCPv4 codec both the provisioner's server and the agent's
//! client use (`dhcp`).
//!
//! This crate does no I/O: it holds serde + schemars types and pure helpers
//! only, so both binaries and every test can depend on it cheaply.

pub mod agent;
pub mod apply;
pub mod cpulist;
pub mod deploy;
pub mod dhcp;
pub mod host;
pub mod inventory;
pub mod net;
pub mod plan;
pub mod profile;
