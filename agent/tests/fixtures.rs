//! The inspection on sysfs/procfs trees recorded in lab VMs
//! (`cargo xtask record-sysfs`), checked against each VM's definition
//! (`fixtures/NAME/vm.json`, what QEMU was started with) and cross-checked
//! with hwloc reading the same tree (`HWLOC_FSROOT`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use agent::inspect::inspect;
use agent::sysroot::SysRoot;
use model::inventory::{DiskKind, Firmware, Inventory};
use serde_json::Value;

/// Every fixture: its name, VM definition and inventory.
fn fixtures() -> Vec<(String, PathBuf, Value, Inventory)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/fixtures") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let vm_file = path.join("vm.json");
        if !vm_file.is_file() {
            continue;
        }
        let tree = path.join("tree");
        assert!(
            tree.join("sys").is_dir(),
            "fixture {name} has no recorded tree: run `cargo xtask record-sysfs {name}`"
        );
        let vm: Value = serde_json::from_str(&std::fs::read_to_string(&vm_file).expect("read"))
            .expect("vm.json parses");
        let inv = inspect(&SysRoot::new(&tree, true));
        out.push((name, tree, vm, inv));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 3,
        "expected the three recorded fixtures, found {}",
        out.len()
    );
    out
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().expect("a number in vm.json")
}

fn cpus_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("cpus")
        .iter()
        .map(|c| u64_of(c) as u32)
        .collect()
}

/// The kernel keeps part of each node's memory for itself: `MemTotal` of a
/// node is below what QEMU gave it, but never by more than this (measured:
/// the first node, which also holds the kernel image, loses the most).
const MAX_KERNEL_SHARE_MIB: u64 = 96;

#[test]
fn each_recorded_vm_matches_its_definition() {
    for (name, _, vm, inv) in fixtures() {
        eprintln!(
            "{name}: {} warnings: {:?}",
            inv.warnings.len(),
            inv.warnings
        );
        let firmware = match vm["firmware"].as_str() {
            Some("uefi") => Firmware::Uefi,
            _ => Firmware::Bios,
        };
        assert_eq!(inv.system.firmware, firmware, "{name}: firmware");
        assert_eq!(inv.system.vendor, "QEMU", "{name}");

        let sockets = u64_of(&vm["sockets"]) as u32;
        let cores = sockets * u64_of(&vm["cores_per_socket"]) as u32;
        let threads = cores * u64_of(&vm["threads_per_core"]) as u32;
        let offline = vm.get("offline_cpus").map(cpus_of).unwrap_or_default();
        let online: Vec<u32> = (0..threads).filter(|c| !offline.contains(c)).collect();
        assert_eq!(inv.cpus.online, online, "{name}: online CPUs");
        if offline.is_empty() {
            assert_eq!(
                (inv.cpus.sockets, inv.cpus.cores, inv.cpus.threads),
                (sockets, cores, threads),
                "{name}: sockets, cores, threads"
            );
        } else {
            // Counts cover online CPUs only, and the offline ones are named.
            assert_eq!(inv.cpus.threads as usize, online.len(), "{name}: threads");
            let list = model::plan::format_cpulist(&offline);
            assert!(
                inv.warnings
                    .iter()
                    .any(|w| w.contains(&format!("offline CPUs {list}:"))),
                "{name}: offline CPUs warned about: {:?}",
                inv.warnings
            );
        }

        let nodes = vm["numa_nodes"].as_array().expect("numa_nodes");
        let total_mib: u64 = nodes.iter().map(|n| u64_of(&n["memory_mib"])).sum();
        assert_eq!(
            inv.memory_bytes,
            total_mib << 20,
            "{name}: installed memory (SMBIOS)"
        );
        assert_eq!(inv.numa_nodes.len(), nodes.len(), "{name}: NUMA nodes");
        for (id, (node, want)) in inv.numa_nodes.iter().zip(nodes).enumerate() {
            assert_eq!(node.id, id as u32, "{name}");
            let cpus: Vec<u32> = cpus_of(&want["cpus"])
                .into_iter()
                .filter(|c| !offline.contains(c))
                .collect();
            assert_eq!(node.cpus, cpus, "{name}: node {id} CPUs (online)");
            let mib = u64_of(&want["memory_mib"]);
            let got = node.memory_bytes >> 20;
            assert!(
                got <= mib && got + MAX_KERNEL_SHARE_MIB >= mib,
                "{name}: node {id} has {got} MiB, QEMU gave it {mib} MiB"
            );
            assert_eq!(
                node.distances.len(),
                nodes.len(),
                "{name}: node {id} distances"
            );
            if node.cpus.is_empty() {
                assert!(
                    inv.warnings
                        .iter()
                        .any(|w| w.contains(&format!("NUMA node {id} has no CPUs"))),
                    "{name}: a CPU-less node is warned about"
                );
            }
        }

        let nics = vm["nics"].as_array().expect("nics");
        assert_eq!(inv.nics.len(), nics.len(), "{name}: NICs {:?}", inv.nics);
        for want in nics {
            let mac = want["mac"].as_str().expect("mac");
            let nic = inv
                .nics
                .iter()
                .find(|n| n.mac == mac)
                .unwrap_or_else(|| panic!("{name}: no NIC with MAC {mac} in {:?}", inv.nics));
            assert_eq!(
                nic.driver.as_deref(),
                want["driver"].as_str(),
                "{name}: {mac} driver"
            );
            assert_eq!(
                nic.numa_node.map(u64::from),
                want["numa_node"].as_u64(),
                "{name}: {mac} NUMA node"
            );
            assert_eq!(
                u64::from(nic.sriov_totalvfs),
                u64_of(&want["sriov_totalvfs"]),
                "{name}: {mac} sriov_totalvfs"
            );
            assert!(nic.pci_address.is_some(), "{name}: {mac} PCI address");
            assert!(!nic.is_virtual_function, "{name}: {mac}");
        }

        let disks = vm["disks"].as_array().expect("disks");
        assert_eq!(
            inv.disks.len(),
            disks.len(),
            "{name}: disks {:?}",
            inv.disks
        );
        for want in disks {
            let serial = want["serial"].as_str().expect("serial");
            let disk = inv
                .disks
                .iter()
                .find(|d| d.serial.as_deref() == Some(serial))
                .unwrap_or_else(|| {
                    panic!("{name}: no disk with serial {serial} in {:?}", inv.disks)
                });
            assert_eq!(
                disk.size_bytes,
                u64_of(&want["size_mib"]) << 20,
                "{name}: {serial} size"
            );
            let kind = match want["bus"].as_str() {
                Some("nvme") => DiskKind::Nvme,
                Some("virtio") => DiskKind::Virtio,
                Some("sata") => DiskKind::Sata,
                other => panic!("{name}: unknown bus {other:?}"),
            };
            assert_eq!(disk.kind, kind, "{name}: {serial} kind");
            let pci = disk
                .by_path
                .as_deref()
                .unwrap_or_else(|| panic!("{name}: {serial} by_path"));
            assert!(
                pci.starts_with("pci-0000:"),
                "{name}: {serial} by_path {pci}"
            );
        }
    }
}

/// A hwloc bitmap (`0x00000003`, `0xffffffff,0x0000000f`: 32-bit groups,
/// most significant first) as CPU ids.
fn hwloc_set(text: &str) -> Vec<u32> {
    let mut ids = Vec::new();
    for (i, group) in text.split(',').rev().enumerate() {
        let bits = u32::from_str_radix(group.trim_start_matches("0x"), 16).expect("hex group");
        ids.extend(
            (0..32)
                .filter(|b| bits & (1 << b) != 0)
                .map(|b| i as u32 * 32 + b),
        );
    }
    ids.sort_unstable();
    ids
}

/// NUMA nodes as hwloc sees them: os_index -> (cpus, local memory).
fn hwloc_nodes(tree: &Path) -> BTreeMap<u32, (Vec<u32>, u64)> {
    let out = Command::new("lstopo-no-graphics")
        .args(["--of", "xml", "-"])
        .env("HWLOC_FSROOT", tree)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run lstopo-no-graphics ({e}): install hwloc with `cargo xtask deps`")
        });
    assert!(
        out.status.success(),
        "lstopo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = String::from_utf8(out.stdout).expect("utf-8");
    let mut nodes = BTreeMap::new();
    for tag in xml.split("<object type=\"NUMANode\"").skip(1) {
        let tag = &tag[..tag.find('>').expect("tag end")];
        let attr = |name: &str| {
            let start = tag
                .find(&format!(" {name}=\""))
                .map(|i| i + name.len() + 3)?;
            Some(&tag[start..start + tag[start..].find('"')?])
        };
        let id: u32 = attr("os_index").expect("os_index").parse().expect("number");
        let cpus = attr("cpuset").map(hwloc_set).unwrap_or_default();
        let memory: u64 = attr("local_memory").map_or(0, |m| m.parse().expect("number"));
        nodes.insert(id, (cpus, memory));
    }
    nodes
}

#[test]
fn hwloc_sees_the_same_numa_nodes_cpus_and_memory() {
    for (name, tree, _, inv) in fixtures() {
        let hwloc = hwloc_nodes(&tree);
        let ours: BTreeMap<u32, (Vec<u32>, u64)> = inv
            .numa_nodes
            .iter()
            .map(|n| (n.id, (n.cpus.clone(), n.memory_bytes)))
            .collect();
        assert_eq!(ours, hwloc, "{name}: NUMA nodes (ours, hwloc's)");
    }
}

#[test]
fn hwloc_bitmaps_parse() {
    assert_eq!(hwloc_set("0x00000003"), [0, 1]);
    assert_eq!(hwloc_set("0x00000001,0x80000000"), [31, 32]);
}
