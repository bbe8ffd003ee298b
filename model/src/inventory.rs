//! The hardware inventory of one machine, as the agent's inspection reports
//! it (JSON) and as profile matching and the host planner read it.
//!
//! Field names are a contract between the inspection (agent) and the
//! provisioner: change them only together with both. Values that the
//! hardware may not expose are `Option`s (`null` in JSON); lists are empty
//! when there is nothing. A scanner that meets an odd entry keeps going and
//! records a sentence in `warnings`.
//!
//! This module does no I/O.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Everything the inspection found on one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Hardware inventory")]
pub struct Inventory {
    /// DMI identity and firmware.
    pub system: System,
    /// Processors and their topology.
    pub cpus: Cpus,
    /// NUMA nodes (one node `0` holding everything on a non-NUMA machine).
    pub numa_nodes: Vec<NumaNode>,
    /// Installed physical memory in bytes (DMI memory devices or the sum of
    /// `/sys/devices/system/memory` blocks), not `MemTotal`.
    pub memory_bytes: u64,
    /// Network interfaces backed by a device (physical functions and VFs),
    /// not virtual interfaces such as bridges or loopback.
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// Block devices that can hold data (no loop, ram, zram, optical drives).
    #[serde(default)]
    pub disks: Vec<Disk>,
    /// Every PCI device.
    #[serde(default)]
    pub pci_devices: Vec<PciDevice>,
    /// What the inspection could not read, one sentence each.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// DMI identity (`/sys/class/dmi/id`) and firmware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct System {
    /// `sys_vendor`, trimmed, e.g. `Dell Inc.`, `QEMU`.
    pub vendor: String,
    /// `product_name`, trimmed, e.g. `PowerEdge R750`.
    pub product: String,
    /// `product_serial`, when readable and not a placeholder.
    pub serial: Option<String>,
    /// `product_uuid`, lowercase.
    pub uuid: Option<String>,
    /// How the machine booted the inspection.
    pub firmware: Firmware,
    /// UEFI Secure Boot state; `null` on BIOS or when unknown.
    pub secure_boot: Option<bool>,
}

/// Boot firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// UEFI (`/sys/firmware/efi` exists).
    Uefi,
    /// Legacy BIOS.
    Bios,
}

/// Processors: identity, counts and topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cpus {
    /// `model name` from `/proc/cpuinfo`, e.g. `Intel(R) Xeon(R) Gold 6348 CPU @ 2.60GHz`.
    pub model: String,
    /// `vendor_id` from `/proc/cpuinfo`: `GenuineIntel`, `AuthenticAMD`, ...
    pub vendor: String,
    /// Populated sockets.
    pub sockets: u32,
    /// Physical cores over all sockets.
    pub cores: u32,
    /// Hardware threads (logical CPUs) over all sockets.
    pub threads: u32,
    /// CPU flags from `/proc/cpuinfo` (e.g. `pdpe1gb`, `vmx`), as listed there.
    pub flags: Vec<String>,
    /// Online logical CPU ids, ascending.
    pub online: Vec<u32>,
    /// Hyperthread sibling groups (`thread_siblings_list`) of the online
    /// CPUs: each inner list is one core, ascending; one element without SMT.
    pub siblings: Vec<Vec<u32>>,
}

/// One NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NumaNode {
    /// Node id (`/sys/devices/system/node/nodeN`).
    pub id: u32,
    /// Logical CPU ids of the node (`cpulist`), ascending; may be empty
    /// (memory-only node).
    pub cpus: Vec<u32>,
    /// Memory of the node in bytes (`MemTotal` of the node's `meminfo`).
    pub memory_bytes: u64,
    /// Hugepage pools of the node, one per supported page size.
    #[serde(default)]
    pub hugepages: Vec<HugepagePool>,
    /// Distances to every node, in node order (`distance`).
    #[serde(default)]
    pub distances: Vec<u32>,
}

/// A node's pool of hugepages of one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HugepagePool {
    /// Page size in KiB (2048, 1048576).
    pub size_kb: u64,
    /// `nr_hugepages`.
    pub total: u64,
    /// `free_hugepages`.
    pub free: u64,
}

/// A network interface backed by a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// Interface name, e.g. `ens1f0`.
    pub name: String,
    /// Permanent MAC address, lowercase `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// PCI address (`0000:17:00.0`); `null` for a non-PCI device.
    pub pci_address: Option<String>,
    /// NUMA node of the device; `null` when the platform does not say (-1 in sysfs).
    pub numa_node: Option<u32>,
    /// Bound kernel driver, e.g. `ice`.
    pub driver: Option<String>,
    /// PCI vendor id, 4 lowercase hex digits.
    pub vendor_id: Option<String>,
    /// PCI device id, 4 lowercase hex digits.
    pub device_id: Option<String>,
    /// Negotiated speed; `null` without link.
    pub speed_mbps: Option<u32>,
    /// Carrier up.
    pub link: bool,
    /// `sriov_totalvfs` (0 without SR-IOV).
    #[serde(default)]
    pub sriov_totalvfs: u32,
    /// `sriov_numvfs` at inspection time.
    #[serde(default)]
    pub sriov_numvfs: u32,
    /// The interface is a virtual function (it has a `physfn` link).
    #[serde(default)]
    pub is_virtual_function: bool,
}

/// A block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Kernel name, e.g. `nvme0n1`, `sda`.
    pub name: String,
    /// Device path, e.g. `/dev/nvme0n1`.
    pub path: String,
    /// Stable path under `/dev/disk/by-path/`, when udev has one.
    pub by_path: Option<String>,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Model string, trimmed.
    pub model: Option<String>,
    /// Serial number, trimmed.
    pub serial: Option<String>,
    /// World Wide Name, e.g. `eui.002538b...` or `0x5000c500...`.
    pub wwn: Option<String>,
    /// `queue/rotational`.
    pub rotational: bool,
    /// Bus or transport.
    pub kind: DiskKind,
    /// `removable` (USB sticks, card readers).
    #[serde(default)]
    pub removable: bool,
}

/// Bus or transport of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskKind {
    /// NVMe namespace.
    Nvme,
    /// SATA (ATA) disk.
    Sata,
    /// SAS disk.
    Sas,
    /// virtio-blk.
    Virtio,
    /// Other SCSI (including virtio-scsi).
    Scsi,
    /// USB mass storage.
    Usb,
    /// Anything else.
    Unknown,
}

impl DiskKind {
    /// The lowercase name used in JSON and YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskKind::Nvme => "nvme",
            DiskKind::Sata => "sata",
            DiskKind::Sas => "sas",
            DiskKind::Virtio => "virtio",
            DiskKind::Scsi => "scsi",
            DiskKind::Usb => "usb",
            DiskKind::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for DiskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One PCI device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PciDevice {
    /// PCI address, e.g. `0000:17:00.0`.
    pub address: String,
    /// Class code, 6 hex digits (`020000` Ethernet).
    pub class: String,
    /// Vendor id, 4 lowercase hex digits.
    pub vendor_id: String,
    /// Device id, 4 lowercase hex digits.
    pub device_id: String,
    /// NUMA node; `null` when unknown.
    pub numa_node: Option<u32>,
}

impl Inventory {
    /// The NUMA node that holds logical CPU `cpu`, if any.
    pub fn node_of_cpu(&self, cpu: u32) -> Option<u32> {
        self.numa_nodes
            .iter()
            .find(|n| n.cpus.contains(&cpu))
            .map(|n| n.id)
    }

    /// The hyperthread sibling group of `cpu` among online CPUs (the CPU
    /// alone when the inventory lists no group for it).
    pub fn siblings_of(&self, cpu: u32) -> Vec<u32> {
        self.cpus
            .siblings
            .iter()
            .find(|g| g.contains(&cpu))
            .map(|g| {
                g.iter()
                    .copied()
                    .filter(|c| self.cpus.online.contains(c))
                    .collect()
            })
            .unwrap_or_else(|| vec![cpu])
    }

    /// Whether the CPUs have flag `flag` (e.g. `pdpe1gb`).
    pub fn has_cpu_flag(&self, flag: &str) -> bool {
        self.cpus.flags.iter().any(|f| f == flag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_are_the_contract() {
        let inv: Inventory = serde_json::from_value(serde_json::json!({
            "system": {"vendor": "QEMU", "product": "Standard PC (Q35 + ICH9, 2009)",
                       "serial": null, "uuid": "5c2f...", "firmware": "uefi", "secure_boot": null},
            "cpus": {"model": "QEMU Virtual CPU", "vendor": "GenuineIntel", "sockets": 1,
                     "cores": 2, "threads": 4, "flags": ["pse", "pdpe1gb"],
                     "online": [0, 1, 2, 3], "siblings": [[0, 2], [1, 3]]},
            "numa_nodes": [{"id": 0, "cpus": [0, 1, 2, 3], "memory_bytes": 4294967296u64,
                            "hugepages": [{"size_kb": 2048, "total": 0, "free": 0}],
                            "distances": [10]}],
            "memory_bytes": 4294967296u64,
            "nics": [{"name": "enp1s0", "mac": "52:54:00:0d:00:01", "pci_address": "0000:01:00.0",
                      "numa_node": null, "driver": "igb", "vendor_id": "8086", "device_id": "10c9",
                      "speed_mbps": 1000, "link": true, "sriov_totalvfs": 7, "sriov_numvfs": 0,
                      "is_virtual_function": false}],
            "disks": [{"name": "vda", "path": "/dev/vda", "by_path": "pci-0000:04:00.0",
                       "size_bytes": 21474836480u64, "model": null, "serial": "lab0", "wwn": null,
                       "rotational": true, "kind": "virtio", "removable": false}],
            "pci_devices": [{"address": "0000:01:00.0", "class": "020000", "vendor_id": "8086",
                             "device_id": "10c9", "numa_node": null}],
            "warnings": []
        }))
        .expect("inventory parses");
        assert_eq!(inv.siblings_of(2), [0, 2]);
        assert_eq!(inv.node_of_cpu(3), Some(0));
        assert!(inv.has_cpu_flag("pdpe1gb"));
        assert_eq!(inv.disks[0].kind, DiskKind::Virtio);
        // Round trip keeps every field.
        let back: Inventory =
            serde_json::from_value(serde_json::to_value(&inv).expect("serializes"))
                .expect("parses back");
        assert_eq!(back, inv);
    }
}
