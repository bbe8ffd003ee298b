//! DHCPv4: the pure core ([`provisioner_core::dhcp`], re-exported here under
//! the same names) and its UDP edge, `server`.

pub use provisioner_core::dhcp::*;

pub(crate) mod server;
