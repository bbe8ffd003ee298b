//! The host plan: what one machine's installed host must look like, derived
//! by the provisioner's planner from the machine's inventory and its
//! hardware profile, and applied on the host by `node-agent apply`.
//!
//! Field names are a contract between the planner and the agent. Lists are
//! in a deterministic order (ascending CPU ids, node ids, PCI addresses), so
//! the same inventory and profile always give the same JSON.
//!
//! This module does no I/O.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::cpulist::{format_cpulist, parse_cpulist};
use crate::profile::Role;

/// The host plan of one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Host plan")]
pub struct HostPlan {
    /// Name of the profile the plan was made from.
    pub profile: String,
    /// Roles of the machine (from the profile).
    pub roles: Vec<Role>,
    /// Kernel command-line arguments the host must boot with, in order
    /// (IOMMU, hugepages, CPU isolation, then the profile's extra arguments).
    pub kernel_args: Vec<String>,
    /// Hugepages to allocate at runtime, per NUMA node and page size.
    pub hugepages: Vec<NodeHugepages>,
    /// Housekeeping CPUs (interrupts, kernel threads, the OS), ascending.
    pub reserved_cpus: Vec<u32>,
    /// CPUs isolated for workloads, ascending.
    pub isolated_cpus: Vec<u32>,
    /// Virtual functions to create, one entry per physical function.
    pub sriov: Vec<SriovPlan>,
    /// The disk the host image is written to.
    pub root_disk: PlannedDisk,
    /// Disks handed to the storage role, in selection order.
    pub data_disks: Vec<PlannedDisk>,
    /// Things the operator should know that did not stop the plan.
    pub warnings: Vec<String>,
}

/// Hugepages of one size on one NUMA node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeHugepages {
    /// NUMA node id.
    pub node: u32,
    /// Page size in KiB (2048 or 1048576).
    pub size_kb: u64,
    /// Number of pages (`nr_hugepages` of the node).
    pub count: u64,
}

/// Virtual functions of one physical function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SriovPlan {
    /// PCI address of the physical function, e.g. `0000:17:00.0`.
    pub pci_address: String,
    /// Interface name of the physical function, e.g. `ens1f0`.
    pub pf_name: String,
    /// Number of VFs (`sriov_numvfs`).
    pub num_vfs: u32,
    /// Driver the VFs are bound to.
    pub device_type: DeviceType,
    /// MTU of the physical function, when the profile sets one.
    pub mtu: Option<u32>,
    /// CPUs local to the NIC for pinning its users: the isolated CPUs of
    /// the NIC's NUMA node (all its online CPUs when nothing is isolated).
    pub local_cpus: Vec<u32>,
}

pub use crate::profile::DeviceType;

/// A disk chosen by the planner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlannedDisk {
    /// Kernel name at inspection time (may change across boots; prefer `by_path` or `serial`).
    pub name: String,
    /// Stable `/dev/disk/by-path/` name, when known.
    pub by_path: Option<String>,
    /// Serial number, when known.
    pub serial: Option<String>,
    /// Size in bytes.
    pub size_bytes: u64,
}

impl HostPlan {
    /// One line for operators: CPUs, hugepages, VFs and root disk
    /// (`provisioner node show`, the demo's summary).
    pub fn summary(&self) -> String {
        let vfs: u32 = self.sriov.iter().map(|s| s.num_vfs).sum();
        let pages: Vec<String> = self
            .hugepages
            .iter()
            .map(|h| format!("{} x {} KiB on node {}", h.count, h.size_kb, h.node))
            .collect();
        format!(
            "CPUs {} reserved / {} isolated; hugepages {}; {vfs} VFs; root disk {}",
            self.reserved_cpus.len(),
            self.isolated_cpus.len(),
            if pages.is_empty() {
                "none".to_owned()
            } else {
                pages.join(", ")
            },
            self.root_disk.name
        )
    }
}
