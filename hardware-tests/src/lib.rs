//! The virtual lab: the example lab site (`sites/lab/`), the virtual BMC
//! ([`vbmc`]: Redfish in front of a VM's QMP socket, [`qmp`]) and the lab
//! harness ([`lab`]: network namespace, bridge, taps, the real `provisioner
//! serve`, QEMU VMs with serial logs) that every lab test builds on.
//!
//! Invariant: the lab only ever touches network namespaces, bridges, taps and
//! veth pairs it created itself, and removes them (and kills the processes it
//! started, by PID) on every exit path.

pub mod lab;
pub mod qmp;
pub mod rack;
pub mod vbmc;

use std::path::PathBuf;

/// The lab's site directory, checked in next to this crate.
pub fn lab_site_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sites/lab")
}
