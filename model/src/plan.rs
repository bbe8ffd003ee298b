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

/// Which driver virtual functions are bound to (sriov-network-operator's `deviceType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DeviceType {
    /// `vfio-pci`: handed to VMs or DPDK in user space; needs the IOMMU.
    #[serde(rename = "vfio-pci")]
    VfioPci,
    /// The NIC's own VF driver: kernel network interfaces.
    #[serde(rename = "netdevice")]
    Netdevice,
}

impl DeviceType {
    /// The name used in YAML and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::VfioPci => "vfio-pci",
            DeviceType::Netdevice => "netdevice",
        }
    }
}

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

/// Formats CPU ids as a kernel cpulist (`0-3,8,10-11`). Input need not be
/// sorted; duplicates are ignored.
pub fn format_cpulist(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

/// Parses a kernel cpulist (`0-3,8,10-11`) into ascending, distinct ids.
/// Spaces around items are allowed. The error says which item is wrong.
pub fn parse_cpulist(text: &str) -> Result<Vec<u32>, String> {
    let mut cpus = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!(
                "empty item in CPU list {text:?}: write ids and ranges like \"0-3,8\""
            ));
        }
        let id = |s: &str| {
            s.trim().parse::<u32>().map_err(|_| {
                format!("{item:?} is not a CPU id or range: write ids and ranges like \"0-3,8\"")
            })
        };
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (id(a)?, id(b)?);
                if a > b {
                    return Err(format!(
                        "range {item:?} is backwards: write the lower id first"
                    ));
                }
                if b - a > 65_535 {
                    return Err(format!("range {item:?} is too large"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(id(item)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists_round_trip() {
        for (text, ids) in [
            ("0", vec![0]),
            ("0-3,8,10-11", vec![0, 1, 2, 3, 8, 10, 11]),
            ("1,3,5", vec![1, 3, 5]),
        ] {
            assert_eq!(parse_cpulist(text).expect(text), ids);
            assert_eq!(format_cpulist(&ids), text);
        }
        assert_eq!(format_cpulist(&[3, 1, 2, 2]), "1-3");
        assert_eq!(format_cpulist(&[]), "");
        assert_eq!(parse_cpulist(" 0 - 1 , 4").expect("spaces"), [0, 1, 4]);
    }

    proptest::proptest! {
        #[test]
        fn cpulists_round_trip_any_set(ids in proptest::collection::btree_set(0u32..512, 0..64)) {
            let ids: Vec<u32> = ids.into_iter().collect();
            let text = format_cpulist(&ids);
            if ids.is_empty() {
                proptest::prop_assert_eq!(text, "");
            } else {
                proptest::prop_assert_eq!(parse_cpulist(&text).expect("formatted lists parse"), ids);
            }
        }

        #[test]
        fn parsing_gives_sorted_ids_or_a_reason(text in "[0-9, -]{0,24}") {
            match parse_cpulist(&text) {
                Ok(ids) => {
                    proptest::prop_assert!(ids.windows(2).all(|w| w[0] < w[1]));
                    proptest::prop_assert_eq!(parse_cpulist(&format_cpulist(&ids)).ok(), Some(ids));
                }
                Err(e) => proptest::prop_assert!(!e.is_empty()),
            }
        }
    }

    #[test]
    fn bad_cpulists_say_what_is_wrong() {
        assert!(parse_cpulist("").unwrap_err().contains("empty item"));
        assert!(parse_cpulist("3-1").unwrap_err().contains("backwards"));
        assert!(parse_cpulist("a").unwrap_err().contains("not a CPU id"));
        assert!(
            parse_cpulist("0-9999999")
                .unwrap_err()
                .contains("too large")
        );
    }
}
