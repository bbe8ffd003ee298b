//! The TFTP server's pure core: the packet codec (RFC 1350 with the option
//! extensions of RFC 2347/2348/2349/7440) and the read-transfer state machine.
//! The UDP edge lives in the provisioner crate's `tftp` module.

pub mod codec;
pub mod transfer;
