//! Planner tests: the rules one by one, snapshots of the plan of every
//! example profile against its example inventory, and a proptest over
//! random topologies checking the plan invariants.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use model::inventory::{Cpus, Disk, DiskKind, Firmware, Inventory, Nic, NumaNode, System};
use model::plan::HostPlan;
use model::profile::Profile;
use proptest::prelude::*;

use super::fixtures::inventory;
use super::{PlanError, plan};

fn profile(json: serde_json::Value) -> Profile {
    serde_json::from_value(json).expect("profile parses")
}

fn base(extra: serde_json::Value) -> Profile {
    let mut p = serde_json::json!({"name": "t", "match": {}, "roles": ["compute"]});
    for (k, v) in extra.as_object().expect("object") {
        p[k] = v.clone();
    }
    profile(p)
}

fn pointers(err: &PlanError) -> Vec<&str> {
    err.issues.iter().map(|i| i.pointer.as_str()).collect()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root: provisioner/core is two levels down")
        .to_owned()
}

/// Every example profile file: (profile file, inventory fixture name).
fn examples() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["profiles", "hardware-tests/sites/lab/profiles"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        out.extend(files);
    }
    out
}

#[test]
fn every_example_profile_plans_on_its_inventory() {
    let mut names = Vec::new();
    for path in examples() {
        let profile =
            crate::site::load_profile(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let inv = inventory(&profile.name);
        let plan = plan(&inv, &profile).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check_invariants(&inv, &plan);
        insta::assert_json_snapshot!(format!("plan-{}", profile.name), plan);
        names.push(profile.name);
    }
    assert_eq!(
        names,
        [
            "compute-e810",
            "network-epyc-cx6",
            "storage-nvme12",
            "lab-compute",
            "lab-network",
            "lab-storage"
        ]
    );
}

#[test]
fn every_example_inventory_matches_its_own_profile_only_or_best() {
    let profiles: Vec<Profile> = examples()
        .iter()
        .map(|p| crate::site::load_profile(p).expect("valid"))
        .collect();
    for p in &profiles {
        let report = super::matching::select(&inventory(&p.name), &profiles);
        assert_eq!(report.result(), Ok(p.name.as_str()), "{report:#?}");
    }
}

#[test]
fn cpus_are_reserved_per_node_with_siblings() {
    let inv = inventory("compute-e810");
    let p = base(serde_json::json!({"cpu": {"reserved_per_numa_node": 2}}));
    let plan = plan(&inv, &p).expect("plans");
    // Cores 0-1 of socket 0 and 28-29 of socket 1, with siblings +56.
    assert_eq!(plan.reserved_cpus, [0, 1, 28, 29, 56, 57, 84, 85]);
    assert_eq!(plan.isolated_cpus.len(), 112 - 8);
    assert!(
        plan.kernel_args
            .contains(&"isolcpus=managed_irq,domain,2-27,30-55,58-83,86-111".to_owned())
    );
    assert!(
        plan.kernel_args
            .contains(&"irqaffinity=0-1,28-29,56-57,84-85".to_owned())
    );
}

#[test]
fn explicit_cpu_lists_must_keep_siblings_and_online_cpus() {
    let inv = inventory("compute-e810");
    let err = plan(
        &inv,
        &base(serde_json::json!({"cpu": {"reserved": "0,28,56,84,200"}})),
    )
    .unwrap_err();
    assert_eq!(pointers(&err), ["/cpu/reserved"]);
    assert!(err.issues[0].message.contains("CPUs 200 are not online"));

    let err = plan(
        &inv,
        &base(serde_json::json!({"cpu": {"reserved": "0,28"}})),
    )
    .unwrap_err();
    assert!(
        err.issues[0]
            .message
            .contains("CPU 0 is reserved without its hyperthread sibling(s) 56"),
        "{err}"
    );

    // Only node 0 reserved: node 1 has no housekeeping CPU.
    let err = plan(
        &inv,
        &base(serde_json::json!({"cpu": {"reserved": "0,56"}})),
    )
    .unwrap_err();
    assert!(err.to_string().contains("NUMA node 1"), "{err}");

    let ok = plan(
        &inv,
        &base(serde_json::json!({"cpu": {"reserved": "0,28,56,84", "isolated": "1-27,29-55,57-83,85-111"}})),
    )
    .expect("plans");
    assert_eq!(ok.isolated_cpus.len(), 108);
}

#[test]
fn reserving_every_cpu_is_an_error() {
    let inv = inventory("lab-network");
    let err = plan(
        &inv,
        &base(serde_json::json!({"cpu": {"reserved_per_numa_node": 2}})),
    )
    .unwrap_err();
    assert_eq!(
        pointers(&err),
        ["/cpu/reserved_per_numa_node", "/cpu/reserved_per_numa_node"]
    );
    assert!(
        err.issues[0].message.contains("lower it to at most 1"),
        "{err}"
    );
}

#[test]
fn hugepages_by_percent_are_per_node_and_rounded_down() {
    let inv = inventory("compute-e810");
    let p = base(serde_json::json!({"hugepages": {"default_size": "1G",
        "pages": [{"size": "1G", "percent": 75}]}}));
    let plan = plan(&inv, &p).expect("plans");
    // Node 0: (263722135552 - 2 GiB) * 0.75 / 1 GiB = 182.7 -> 182.
    let counts: Vec<_> = plan
        .hugepages
        .iter()
        .map(|h| (h.node, h.size_kb, h.count))
        .collect();
    assert_eq!(counts, [(0, 1048576, 182), (1, 1048576, 183)]);
    // Uneven counts use the per-node boot form; even ones the plain total.
    assert_eq!(
        plan.kernel_args,
        [
            "default_hugepagesz=1G",
            "hugepagesz=1G",
            "hugepages=0:182,1:183"
        ]
    );
    let even = plan_of(
        &inv,
        serde_json::json!({"hugepages": {"pages": [{"size": "2M", "count": 100}]}}),
    );
    assert_eq!(even.kernel_args, ["hugepagesz=2M", "hugepages=200"]);
    let one_node = plan_of(
        &inv,
        serde_json::json!({"hugepages": {"pages": [{"size": "2M", "count": 100, "node": 1}]}}),
    );
    assert_eq!(one_node.kernel_args, ["hugepagesz=2M", "hugepages=1:100"]);
}

fn plan_of(inv: &Inventory, layout: serde_json::Value) -> HostPlan {
    plan(inv, &base(layout)).expect("plans")
}

#[test]
fn too_many_hugepages_and_missing_flags_are_errors() {
    let mut inv = inventory("lab-compute");
    let p = base(serde_json::json!({"hugepages": {
        "pages": [{"size": "2M", "count": 3000}, {"size": "2M", "count": 1, "node": 3}]}}));
    let err = plan(&inv, &p).unwrap_err();
    assert_eq!(
        pointers(&err),
        ["/hugepages/pages/0", "/hugepages/pages/1/node"]
    );
    assert!(err.issues[0].message.contains("lower count or percent"));

    inv.cpus.flags.retain(|f| f != "pdpe1gb");
    let p = base(serde_json::json!({"hugepages": {"pages": [{"size": "1G", "count": 1}]}}));
    let err = plan(&inv, &p).unwrap_err();
    assert_eq!(pointers(&err), ["/hugepages/pages/0/size"]);
    assert!(err.issues[0].message.contains("pdpe1gb"));
}

#[test]
fn sriov_rules() {
    let inv = inventory("compute-e810");
    let policy = |sel: serde_json::Value, n: u32| serde_json::json!({"nic_selector": sel, "num_vfs": n, "device_type": "vfio-pci"});
    // Too many VFs.
    let err = plan(
        &inv,
        &base(serde_json::json!({"sriov": [policy(serde_json::json!({"pf_names": ["ens1f0"]}), 129)]})),
    )
    .unwrap_err();
    assert_eq!(pointers(&err), ["/sriov/0/num_vfs"]);
    assert!(err.issues[0].message.contains("lower num_vfs to 128"));
    // No SR-IOV on the tg3 NIC, nothing at all for a missing vendor.
    let err = plan(
        &inv,
        &base(serde_json::json!({"sriov": [
            policy(serde_json::json!({"driver": "tg3"}), 1),
            policy(serde_json::json!({"vendor_id": "15b3"}), 1),
        ]})),
    )
    .unwrap_err();
    assert_eq!(
        pointers(&err),
        ["/sriov/0/nic_selector", "/sriov/1/nic_selector"]
    );
    assert!(err.issues[0].message.contains("sriov_totalvfs is 0"));
    assert!(err.issues[1].message.contains("optional: true"));
    // Optional: a warning instead.
    let mut optional = policy(serde_json::json!({"vendor_id": "15b3"}), 1);
    optional["optional"] = true.into();
    let ok = plan(&inv, &base(serde_json::json!({"sriov": [optional]}))).expect("plans");
    assert!(ok.sriov.is_empty());
    assert_eq!(ok.warnings.len(), 1);
    // Two selectors on one NIC.
    let err = plan(
        &inv,
        &base(serde_json::json!({"sriov": [
            policy(serde_json::json!({"pf_names": ["ens1f0"]}), 1),
            policy(serde_json::json!({"pci_addresses": ["0000:17:00.0"]}), 1),
        ]})),
    )
    .unwrap_err();
    assert!(
        err.issues[0]
            .message
            .contains("already selected by /sriov/0")
    );
}

#[test]
fn sriov_local_cpus_are_the_isolated_cpus_of_the_nic_node() {
    let inv = inventory("compute-e810");
    let plan = plan(
        &inv,
        &base(serde_json::json!({
            "cpu": {"reserved_per_numa_node": 1},
            "sriov": [{"nic_selector": {"pf_names": ["ens5f0"]}, "num_vfs": 4}]})),
    )
    .expect("plans");
    let node1: Vec<u32> = (29..56).chain(85..112).collect();
    assert_eq!(plan.sriov[0].local_cpus, node1);
    // netdevice VFs alone do not turn the IOMMU on.
    assert!(!plan.kernel_args.iter().any(|a| a.contains("iommu")));

    // A NIC on a node the inventory does not list: all isolated CPUs, and a warning.
    let mut odd = inventory("lab-compute");
    odd.nics[1].numa_node = Some(7);
    let plan = plan_of(
        &odd,
        serde_json::json!({"cpu": {"reserved_per_numa_node": 1},
                           "sriov": [{"nic_selector": {"driver": "igb"}, "num_vfs": 7}]}),
    );
    assert_eq!(plan.sriov[0].local_cpus, [2, 3]);
    assert_eq!(
        plan.warnings,
        [
            "NIC enp2s0 is on NUMA node 7, which the inventory does not list: its local_cpus are \
          all isolated CPUs"
        ]
    );
}

#[test]
fn amd_gets_amd_iommu() {
    let inv = inventory("network-epyc-cx6");
    let plan = plan(&inv, &base(serde_json::json!({"iommu": true}))).expect("plans");
    assert_eq!(plan.kernel_args, ["amd_iommu=on", "iommu=pt"]);
}

#[test]
fn root_disk_is_the_smallest_adequate_then_by_path() {
    let inv = inventory("compute-e810");
    // Two equal NVMe drives: the first by path wins.
    let plan1 = plan(
        &inv,
        &base(serde_json::json!({"disks": {"root": {"kind": "nvme"}}})),
    )
    .expect("plans");
    assert_eq!(plan1.root_disk.name, "nvme0n1");
    // Without hints: the smallest disk (the 480 GB SATA SSD).
    let plan2 = plan(&inv, &base(serde_json::json!({}))).expect("plans");
    assert_eq!(plan2.root_disk.name, "sda");
    // By serial.
    let plan3 = plan(
        &inv,
        &base(serde_json::json!({"disks": {"root": {"serial": "S6CKNE0T401240"}}})),
    )
    .expect("plans");
    assert_eq!(plan3.root_disk.name, "nvme1n1");
    // Nothing that big.
    let err = plan(
        &inv,
        &base(serde_json::json!({"disks": {"root": {"min_size_gib": 4000}}})),
    )
    .unwrap_err();
    assert_eq!(pointers(&err), ["/disks/root"]);
    assert!(err.issues[0].message.contains("nvme0n1 nvme"), "{err}");
}

#[test]
fn data_disks_exclude_the_root_and_removable_disks() {
    let inv = inventory("storage-nvme12");
    let err = plan(
        &inv,
        &base(serde_json::json!({"disks": {"root": {"kind": "nvme"},
                                           "data": [{"kind": "nvme", "min_count": 12}]}})),
    )
    .unwrap_err();
    assert_eq!(pointers(&err), ["/disks/data/0"]);
    assert!(err.issues[0].message.contains("found 11"), "{err}");
    let plan = plan(
        &inv,
        &base(serde_json::json!({"disks": {"root": {"kind": "sata"},
                                           "data": [{"kind": "sata", "use": "one"}, {}]}})),
    )
    .expect("plans");
    assert_eq!(plan.root_disk.name, "sda");
    assert_eq!(plan.data_disks[0].name, "sdb");
    // The USB stick is never a data disk.
    assert_eq!(plan.data_disks.len(), 13);
    assert!(plan.data_disks.iter().all(|d| d.name != "sdc"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let inv = inventory("lab-compute");
    let p = base(serde_json::json!({
        "cpu": {"reserved_per_numa_node": 2},
        "hugepages": {"pages": [{"size": "2M", "percent": 100}, {"size": "2M", "count": 1}]},
        "sriov": [{"nic_selector": {"vendor_id": "8086"}, "num_vfs": 8}],
        "disks": {"root": {"kind": "nvme"}}
    }));
    let err = plan(&inv, &p).unwrap_err();
    assert_eq!(
        pointers(&err),
        [
            "/cpu/reserved_per_numa_node",
            "/hugepages/pages/1",
            "/sriov/0/num_vfs",
            "/disks/root"
        ]
    );
    let text = err.to_string();
    assert!(text.starts_with("profile t cannot be planned on this machine:\n  /cpu"));
}

#[test]
fn absurd_counts_are_errors_not_overflows() {
    let inv = inventory("network-epyc-cx6");
    let huge = u64::MAX / 2 + 1;
    let err = plan(
        &inv,
        &base(serde_json::json!({"hugepages": {"pages": [
            {"size": "1G", "count": huge}, {"size": "1G", "count": huge}]}})),
    )
    .unwrap_err();
    assert!(
        err.issues
            .iter()
            .all(|i| i.pointer.starts_with("/hugepages/pages/"))
    );
    assert_eq!(err.issues.len(), 8, "{err}");
}

#[test]
fn invalid_profiles_are_refused_before_planning() {
    let inv = inventory("lab-compute");
    let err = plan(&inv, &base(serde_json::json!({"cpu": {}}))).unwrap_err();
    assert_eq!(pointers(&err), ["/cpu"]);
}

/// The invariants every plan keeps (also run by the proptest).
fn check_invariants(inv: &Inventory, plan: &HostPlan) {
    let reserved: BTreeSet<u32> = plan.reserved_cpus.iter().copied().collect();
    let isolated: BTreeSet<u32> = plan.isolated_cpus.iter().copied().collect();
    let online: BTreeSet<u32> = inv.cpus.online.iter().copied().collect();
    assert!(
        reserved.is_disjoint(&isolated),
        "reserved and isolated overlap"
    );
    assert!(reserved.is_subset(&online), "reserved CPUs offline");
    assert!(isolated.is_subset(&online), "isolated CPUs offline");
    for cpu in &reserved {
        for s in inv.siblings_of(*cpu) {
            assert!(
                !isolated.contains(&s),
                "CPU {cpu} reserved, sibling {s} isolated"
            );
        }
    }
    if !reserved.is_empty() || !isolated.is_empty() {
        for node in &inv.numa_nodes {
            let cpus: Vec<u32> = node
                .cpus
                .iter()
                .copied()
                .filter(|c| online.contains(c))
                .collect();
            if !cpus.is_empty() {
                assert!(
                    cpus.iter().any(|c| reserved.contains(c)),
                    "node {} no reserved",
                    node.id
                );
                assert!(
                    cpus.iter().any(|c| isolated.contains(c)),
                    "node {} no isolated",
                    node.id
                );
            }
        }
    }
    let mut per_node: BTreeMap<u32, u64> = BTreeMap::new();
    for h in &plan.hugepages {
        *per_node.entry(h.node).or_default() += h.count * h.size_kb * 1024;
    }
    for (node, bytes) in per_node {
        let mem = inv
            .numa_nodes
            .iter()
            .find(|n| n.id == node)
            .map_or(inv.memory_bytes, |n| n.memory_bytes);
        assert!(
            bytes <= mem,
            "node {node}: {bytes} bytes of hugepages > {mem}"
        );
    }
    for vf in &plan.sriov {
        let nic = inv
            .nics
            .iter()
            .find(|n| n.pci_address.as_deref() == Some(&vf.pci_address))
            .expect("planned NIC exists");
        assert!(
            vf.num_vfs <= nic.sriov_totalvfs,
            "{} VFs > total",
            vf.num_vfs
        );
        assert!(!nic.is_virtual_function);
    }
    let disks: Vec<&str> = std::iter::once(&plan.root_disk)
        .chain(&plan.data_disks)
        .map(|d| d.name.as_str())
        .collect();
    let distinct: BTreeSet<&str> = disks.iter().copied().collect();
    assert_eq!(distinct.len(), disks.len(), "a disk is used twice");
}

/// A random machine: sockets, NUMA nodes per socket, cores per node, SMT
/// (with Linux or QEMU CPU numbering), offline CPUs, a CPU-less node,
/// node memory, NICs on random nodes with random VF totals.
#[derive(Debug, Clone)]
struct Topology {
    sockets: u32,
    nodes_per_socket: u32,
    cores_per_node: u32,
    smt: bool,
    adjacent_siblings: bool,
    cpuless_last_node: bool,
    offline: Vec<bool>,
    node_mem_gib: Vec<u64>,
    nics: Vec<(Option<u32>, u32)>,
    amd: bool,
    pdpe1gb: bool,
}

fn topology() -> impl Strategy<Value = Topology> {
    (
        (1u32..=2, 1u32..=4, 1u32..=8),
        (any::<bool>(), any::<bool>(), proptest::bool::weighted(0.2)),
        proptest::collection::vec(proptest::bool::weighted(0.1), 128),
        proptest::collection::vec(3u64..=64, 8),
        proptest::collection::vec(
            (
                proptest::option::weighted(0.8, 0u32..9),
                prop_oneof![1 => Just(0u32), 6 => 8u32..=128],
            ),
            0..4,
        ),
        (any::<bool>(), proptest::bool::weighted(0.8)),
    )
        .prop_map(
            |(
                (sockets, nps, cores),
                (smt, adjacent, cpuless),
                offline,
                mem,
                nics,
                (amd, pdpe1gb),
            )| {
                Topology {
                    sockets,
                    nodes_per_socket: nps,
                    cores_per_node: cores,
                    smt,
                    adjacent_siblings: adjacent,
                    cpuless_last_node: cpuless,
                    offline,
                    node_mem_gib: mem,
                    nics,
                    amd,
                    pdpe1gb,
                }
            },
        )
}

fn build(t: &Topology) -> Inventory {
    let nodes = t.sockets * t.nodes_per_socket;
    // Cores of each node; the last node may have none (memory only).
    let node_cores: Vec<u32> = (0..nodes)
        .map(|n| {
            if t.cpuless_last_node && nodes > 1 && n == nodes - 1 {
                0
            } else {
                t.cores_per_node
            }
        })
        .collect();
    let cores: u32 = node_cores.iter().sum();
    let threads = if t.smt { 2 } else { 1 };
    // CPU id of thread `th` of core `c`: Linux style (all first threads,
    // then all second threads) or QEMU style (siblings adjacent).
    let id = |c: u32, th: u32| {
        if t.adjacent_siblings {
            c * threads + th
        } else {
            th * cores + c
        }
    };
    let online_of = |cpu: u32| cpu == 0 || !t.offline[cpu as usize % t.offline.len()];
    let mut siblings = Vec::new();
    let mut numa_nodes = Vec::new();
    let mut first_core = 0;
    for (n, count) in (0u32..).zip(&node_cores) {
        let mut cpus = Vec::new();
        for c in first_core..first_core + count {
            let group: Vec<u32> = (0..threads)
                .map(|th| id(c, th))
                .filter(|&x| online_of(x))
                .collect();
            cpus.extend((0..threads).map(|th| id(c, th)));
            if !group.is_empty() {
                siblings.push(group);
            }
        }
        first_core += count;
        cpus.sort_unstable();
        numa_nodes.push(NumaNode {
            id: n,
            cpus,
            memory_bytes: t.node_mem_gib[n as usize % t.node_mem_gib.len()] << 30,
            hugepages: Vec::new(),
            distances: Vec::new(),
        });
    }
    let mut online: Vec<u32> = (0..cores * threads).filter(|&x| online_of(x)).collect();
    online.sort_unstable();
    let mut flags = vec!["pse".to_owned()];
    if t.pdpe1gb {
        flags.push("pdpe1gb".into());
    }
    let nics = t
        .nics
        .iter()
        .enumerate()
        .map(|(i, (node, total))| Nic {
            name: format!("ens{i}"),
            mac: format!("52:54:00:00:00:{i:02x}"),
            pci_address: Some(format!("0000:{:02x}:00.0", i + 1)),
            numa_node: node.map(|n| n % nodes),
            driver: Some("ice".into()),
            vendor_id: Some("8086".into()),
            device_id: Some("159b".into()),
            speed_mbps: None,
            link: true,
            sriov_totalvfs: *total,
            sriov_numvfs: 0,
            is_virtual_function: false,
        })
        .collect();
    Inventory {
        system: System {
            vendor: "Test".into(),
            product: "Random".into(),
            serial: None,
            uuid: None,
            firmware: Firmware::Uefi,
            secure_boot: None,
        },
        cpus: Cpus {
            model: "Test CPU".into(),
            vendor: if t.amd {
                "AuthenticAMD"
            } else {
                "GenuineIntel"
            }
            .into(),
            sockets: t.sockets,
            cores,
            threads: cores * threads,
            flags,
            online,
            siblings,
        },
        memory_bytes: numa_nodes.iter().map(|n| n.memory_bytes).sum(),
        numa_nodes,
        nics,
        disks: vec![Disk {
            name: "vda".into(),
            path: "/dev/vda".into(),
            by_path: Some("pci-0000:10:00.0".into()),
            size_bytes: 100 << 30,
            model: None,
            serial: None,
            wwn: None,
            rotational: false,
            kind: DiskKind::Virtio,
            removable: false,
        }],
        pci_devices: Vec::new(),
        warnings: Vec::new(),
    }
}

/// A random profile: reserved cores per node or an explicit (often wrong)
/// CPU list, hugepages by count or percent, VFs on every Intel NIC.
fn random_profile() -> impl Strategy<Value = Profile> {
    (
        (
            1u32..=2,
            proptest::option::weighted(0.25, proptest::collection::vec(0u32..24, 1..6)),
        ),
        (any::<bool>(), 1u8..=100, proptest::option::of(1u64..=12)),
        (any::<bool>(), 1u32..=16, any::<bool>()),
    )
        .prop_map(
            |((reserve, explicit), (one_g, percent, count), (vfio, vfs, optional))| {
                let size = if one_g { "1G" } else { "2M" };
                let page = match count {
                    Some(c) => {
                        serde_json::json!({"size": size, "count": c * if one_g { 1 } else { 512 }})
                    }
                    None => serde_json::json!({"size": size, "percent": percent}),
                };
                let cpu = match explicit {
                    Some(list) => {
                        serde_json::json!({"reserved": model::plan::format_cpulist(&list)})
                    }
                    None => serde_json::json!({"reserved_per_numa_node": reserve}),
                };
                base(serde_json::json!({
                    "cpu": cpu,
                    "hugepages": {"pages": [page]},
                    "sriov": [{"nic_selector": {"vendor_id": "8086"}, "num_vfs": vfs,
                               "device_type": if vfio { "vfio-pci" } else { "netdevice" },
                               "optional": optional}],
                }))
            },
        )
}

/// The profile sections that cannot be planned on `inv`, computed
/// independently of the planner (`cpu` is `None` for explicit CPU lists,
/// which the oracle does not judge).
fn infeasible(inv: &Inventory, p: &Profile) -> (BTreeSet<&'static str>, bool) {
    let mut out = BTreeSet::new();
    let online: BTreeSet<u32> = inv.cpus.online.iter().copied().collect();
    let cpu = p.cpu.as_ref().expect("cpu section");
    let judged = cpu.reserved_per_numa_node.is_some();
    if let Some(reserve) = cpu.reserved_per_numa_node {
        for n in &inv.numa_nodes {
            let cores: BTreeSet<u32> = n
                .cpus
                .iter()
                .filter(|c| online.contains(c))
                .map(|c| inv.siblings_of(*c)[0])
                .collect();
            if !cores.is_empty() && cores.len() <= reserve as usize {
                out.insert("cpu");
            }
        }
    }
    let hp = p.hugepages.as_ref().expect("hugepages section");
    let req = &hp.pages[0];
    if !inv.has_cpu_flag(req.size.cpu_flag()) {
        out.insert("hugepages");
    } else if let Some(count) = req.count {
        for n in &inv.numa_nodes {
            if count * req.size.kib() * 1024
                > n.memory_bytes.saturating_sub(hp.host_reserve_mib << 20)
            {
                out.insert("hugepages");
            }
        }
    }
    let policy = &p.sriov[0];
    if (inv.nics.is_empty() && !policy.optional)
        || inv
            .nics
            .iter()
            .any(|n| n.sriov_totalvfs == 0 || n.sriov_totalvfs < policy.num_vfs)
    {
        out.insert("sriov");
    }
    (out, judged)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn plans_keep_their_invariants_on_random_topologies(t in topology(), p in random_profile()) {
        let inv = build(&t);
        let first = plan(&inv, &p);
        // Same input, same plan.
        prop_assert_eq!(&first, &plan(&inv, &p));
        let (mut expected, cpu_judged) = infeasible(&inv, &p);
        match first {
            Ok(plan) => {
                prop_assert!(expected.is_empty(), "planned although {:?} are impossible", expected);
                check_invariants(&inv, &plan);
                // Hugepages stay within each node's memory after the host reserve.
                for h in &plan.hugepages {
                    let node = inv.numa_nodes.iter().find(|n| n.id == h.node).expect("node");
                    prop_assert!(h.count * h.size_kb * 1024 <= node.memory_bytes.saturating_sub(2 << 30));
                }
                // An explicit list is taken as written.
                if let Some(list) = p.cpu.as_ref().and_then(|c| c.reserved.as_deref()) {
                    prop_assert_eq!(&plan.reserved_cpus, &model::plan::parse_cpulist(list).expect("list"));
                }
                // VFs: every NIC gets them, local to its node's isolated CPUs.
                prop_assert_eq!(plan.sriov.len(), inv.nics.len());
                for vf in &plan.sriov {
                    let nic = inv.nics.iter().find(|n| n.name == vf.pf_name).expect("nic");
                    if let Some(node) = nic.numa_node {
                        let node_cpus = &inv.numa_nodes[node as usize].cpus;
                        prop_assert!(vf.local_cpus.iter().all(|c| node_cpus.contains(c) && plan.isolated_cpus.contains(c)));
                    }
                }
                if !plan.isolated_cpus.is_empty() {
                    let arg = format!("nohz_full={}", model::plan::format_cpulist(&plan.isolated_cpus));
                    prop_assert!(plan.kernel_args.contains(&arg));
                }
            }
            Err(err) => {
                let mut found = BTreeSet::new();
                for issue in &err.issues {
                    let section = issue.pointer.split('/').nth(1).unwrap_or_default();
                    prop_assert!(
                        ["cpu", "hugepages", "sriov"].contains(&section),
                        "unexpected pointer {}", issue.pointer
                    );
                    prop_assert!(issue.message.contains(':'), "no advice in {}", issue.message);
                    found.insert(section);
                }
                if !cpu_judged {
                    found.remove("cpu");
                    expected.remove("cpu");
                }
                // Exactly the impossible sections are reported.
                prop_assert_eq!(
                    found.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                    expected.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                    "{}", err
                );
            }
        }
    }
}

proptest! {
    /// Extreme numbers anywhere in a profile give a plan or errors with
    /// pointers, never a panic or an overflow.
    #[test]
    fn extreme_numbers_never_panic(
        reserve in any::<u32>(),
        count in any::<u64>(),
        percent in any::<u8>(),
        reserve_mib in any::<u64>(),
        vfs in any::<u32>(),
        root_gib in any::<u64>(),
        min_count in any::<u32>(),
        node in any::<u32>(),
    ) {
        let inv = inventory("compute-e810");
        let p = base(serde_json::json!({
            "cpu": {"reserved_per_numa_node": reserve},
            "hugepages": {"host_reserve_mib": reserve_mib, "pages": [
                {"size": "2M", "count": count, "node": node},
                {"size": "1G", "percent": percent}]},
            "sriov": [{"nic_selector": {"vendor_id": "8086"}, "num_vfs": vfs}],
            "disks": {"root": {"min_size_gib": root_gib}, "data": [{"min_count": min_count}]}
        }));
        match plan(&inv, &p) {
            Ok(plan) => check_invariants(&inv, &plan),
            Err(err) => prop_assert!(err.issues.iter().all(|i| i.pointer.starts_with('/'))),
        }
    }
}
