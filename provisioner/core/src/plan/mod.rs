//! The host planner: inventory + profile -> [`HostPlan`] (CPU isolation,
//! hugepages per NUMA node, IOMMU, SR-IOV VFs per physical function, root
//! and data disks, kernel arguments), derived from the machine's real
//! topology. [`matching`] chooses the profile.
//!
//! Invariants: pure (no I/O, no clock, no randomness): the same inventory and
//! profile always give the same plan. Reserved and isolated CPUs are
//! disjoint, within the online CPUs, and never split a core's hyperthread
//! siblings; every node with CPUs keeps at least one of each. Hugepages fit
//! each node's memory after the host reserve. VF counts fit
//! `sriov_totalvfs`. Anything impossible is a [`PlanError`] naming the
//! profile field (JSON pointer) and what to do, never a silent clamp; things
//! worth knowing that do not stop the plan go to `warnings`.

pub mod matching;
pub mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use model::inventory::{Disk, Inventory, Nic};
use model::plan::{
    DeviceType, HostPlan, NodeHugepages, PlannedDisk, SriovPlan, format_cpulist, parse_cpulist,
};
use model::profile::{DataDiskUse, HugepageNode, PageSize, Profile, RootDiskHints};

use matching::gib;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// Without root size hints, a root disk must be at least this big (as Ironic does).
const MIN_ROOT_BYTES: u64 = 4 * GIB;

/// One reason a profile cannot be planned on a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanIssue {
    /// JSON pointer of the profile field, e.g. `/sriov/0/num_vfs`.
    pub pointer: String,
    /// What is impossible on this machine and what to do.
    pub message: String,
}

impl fmt::Display for PlanIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pointer, self.message)
    }
}

/// A profile that cannot be planned on a machine, with every reason found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PlanError {
    /// The profile's name.
    pub profile: String,
    /// Every problem, in profile field order.
    pub issues: Vec<PlanIssue>,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "profile {} cannot be planned on this machine:",
            self.profile
        )?;
        for issue in &self.issues {
            write!(f, "\n  {issue}")?;
        }
        Ok(())
    }
}

/// Accumulates issues and warnings while planning.
#[derive(Debug, Default)]
struct Notes {
    issues: Vec<PlanIssue>,
    warnings: Vec<String>,
}

impl Notes {
    fn issue(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.issues.push(PlanIssue {
            pointer: pointer.into(),
            message: message.into(),
        });
    }
}

/// A NUMA node as the planner sees it: online CPUs and memory.
#[derive(Debug, Clone)]
struct Node {
    id: u32,
    cpus: Vec<u32>,
    memory_bytes: u64,
}

/// The machine's nodes (from `numa_nodes`; one node 0 with everything when
/// the inventory lists none), each with its online CPUs only.
fn nodes(inv: &Inventory, notes: &mut Notes) -> Vec<Node> {
    let online: BTreeSet<u32> = inv.cpus.online.iter().copied().collect();
    if inv.numa_nodes.is_empty() {
        notes.warnings.push(
            "the inventory lists no NUMA nodes: planned as one node 0 holding every CPU and \
             all memory"
                .into(),
        );
        return vec![Node {
            id: 0,
            cpus: online.into_iter().collect(),
            memory_bytes: inv.memory_bytes,
        }];
    }
    let mut nodes: Vec<Node> = inv
        .numa_nodes
        .iter()
        .map(|n| {
            let mut cpus: Vec<u32> = n
                .cpus
                .iter()
                .copied()
                .filter(|c| online.contains(c))
                .collect();
            cpus.sort_unstable();
            cpus.dedup();
            Node {
                id: n.id,
                cpus,
                memory_bytes: n.memory_bytes,
            }
        })
        .collect();
    nodes.sort_by_key(|n| n.id);
    let in_nodes: BTreeSet<u32> = nodes.iter().flat_map(|n| n.cpus.iter().copied()).collect();
    let orphans: Vec<u32> = online.difference(&in_nodes).copied().collect();
    if !orphans.is_empty() {
        notes.warnings.push(format!(
            "online CPUs {} belong to no NUMA node in the inventory: they are neither reserved \
             nor isolated",
            format_cpulist(&orphans)
        ));
    }
    nodes
}

/// The cores of a node: hyperthread sibling groups restricted to the node's
/// online CPUs, ordered by their lowest CPU id.
fn cores(inv: &Inventory, node: &Node) -> Vec<Vec<u32>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for &cpu in &node.cpus {
        if seen.contains(&cpu) {
            continue;
        }
        let mut group: Vec<u32> = inv
            .siblings_of(cpu)
            .into_iter()
            .filter(|c| node.cpus.contains(c) && !seen.contains(c))
            .collect();
        if !group.contains(&cpu) {
            group.push(cpu);
        }
        group.sort_unstable();
        seen.extend(group.iter().copied());
        out.push(group);
    }
    out
}

/// Plans `profile` on the machine described by `inv`.
pub fn plan(inv: &Inventory, profile: &Profile) -> Result<HostPlan, PlanError> {
    let mut notes = Notes::default();
    for issue in profile.validate() {
        notes.issue(issue.pointer, issue.message);
    }
    if !notes.issues.is_empty() {
        return Err(PlanError {
            profile: profile.name.clone(),
            issues: notes.issues,
        });
    }
    let nodes = nodes(inv, &mut notes);
    // Sections are planned in profile field order, so the issues come in
    // that order; the kernel arguments are assembled in boot-relevant order.
    let (reserved_cpus, isolated_cpus) = plan_cpus(inv, profile, &nodes, &mut notes);
    let mut hugepage_args = Vec::new();
    let hugepages = plan_hugepages(inv, profile, &nodes, &mut hugepage_args, &mut notes);
    let mut kernel_args = Vec::new();
    if profile.needs_iommu() {
        iommu_args(inv, profile, &mut kernel_args, &mut notes);
    }
    kernel_args.extend(hugepage_args);
    if profile.cpu.is_some() && !isolated_cpus.is_empty() {
        let isolated = format_cpulist(&isolated_cpus);
        kernel_args.push(format!("isolcpus=managed_irq,domain,{isolated}"));
        kernel_args.push(format!("nohz_full={isolated}"));
        kernel_args.push(format!("rcu_nocbs={isolated}"));
        kernel_args.push(format!("irqaffinity={}", format_cpulist(&reserved_cpus)));
    }
    let sriov = plan_sriov(inv, profile, &nodes, &isolated_cpus, &mut notes);
    let disks = plan_disks(inv, profile, &mut notes);
    if let Some(kernel) = &profile.kernel {
        kernel_args.extend(kernel.extra_args.iter().cloned());
    }

    match disks {
        Some((root_disk, data_disks)) if notes.issues.is_empty() => Ok(HostPlan {
            profile: profile.name.clone(),
            roles: profile.roles.clone(),
            kernel_args,
            hugepages,
            reserved_cpus,
            isolated_cpus,
            sriov,
            root_disk,
            data_disks,
            warnings: notes.warnings,
        }),
        _ => Err(PlanError {
            profile: profile.name.clone(),
            issues: notes.issues,
        }),
    }
}

fn iommu_args(inv: &Inventory, profile: &Profile, args: &mut Vec<String>, notes: &mut Notes) {
    let pointer = if profile.iommu {
        "/iommu".to_owned()
    } else {
        let i = profile
            .sriov
            .iter()
            .position(|p| p.device_type == DeviceType::VfioPci)
            .unwrap_or(0);
        format!("/sriov/{i}/device_type")
    };
    match inv.cpus.vendor.as_str() {
        "GenuineIntel" => args.extend(["intel_iommu=on".into(), "iommu=pt".into()]),
        "AuthenticAMD" => args.extend(["amd_iommu=on".into(), "iommu=pt".into()]),
        other => notes.issue(
            pointer,
            format!(
                "the IOMMU is needed but the CPU vendor {other:?} is neither GenuineIntel nor \
                 AuthenticAMD, so the kernel arguments are unknown: set them in \
                 kernel.extra_args and remove `iommu`/`vfio-pci`"
            ),
        ),
    }
}

/// Reserved and isolated CPUs, ascending.
fn plan_cpus(
    inv: &Inventory,
    profile: &Profile,
    nodes: &[Node],
    notes: &mut Notes,
) -> (Vec<u32>, Vec<u32>) {
    let Some(cpu) = &profile.cpu else {
        return (Vec::new(), Vec::new());
    };
    let online: BTreeSet<u32> = inv.cpus.online.iter().copied().collect();
    let before = notes.issues.len();
    let mut reserved = BTreeSet::new();
    if let Some(n) = cpu.reserved_per_numa_node {
        for node in nodes.iter().filter(|n| !n.cpus.is_empty()) {
            let cores = cores(inv, node);
            if cores.len() <= n as usize {
                notes.issue(
                    "/cpu/reserved_per_numa_node",
                    format!(
                        "reserving {n} core(s) per NUMA node takes every CPU of node {} ({} \
                         core(s): CPUs {}), leaving none isolated: lower it to at most {}",
                        node.id,
                        cores.len(),
                        format_cpulist(&node.cpus),
                        cores.len().saturating_sub(1)
                    ),
                );
                continue;
            }
            reserved.extend(cores.iter().take(n as usize).flatten().copied());
        }
    } else if let Some(list) = &cpu.reserved {
        // Syntax was checked by validate().
        let ids = parse_cpulist(list).unwrap_or_default();
        check_cpuset(inv, &online, &ids, "/cpu/reserved", "reserved", notes);
        reserved.extend(ids.into_iter().filter(|c| online.contains(c)));
    }

    let isolated: BTreeSet<u32> = if cpu.isolated == "rest" {
        online.difference(&reserved).copied().collect()
    } else {
        let ids = parse_cpulist(&cpu.isolated).unwrap_or_default();
        check_cpuset(inv, &online, &ids, "/cpu/isolated", "isolated", notes);
        ids.into_iter().filter(|c| online.contains(c)).collect()
    };
    // Nodes that are not in `nodes` have their CPUs neither reserved nor isolated.
    let in_nodes: BTreeSet<u32> = nodes.iter().flat_map(|n| n.cpus.iter().copied()).collect();
    let isolated: BTreeSet<u32> = isolated.intersection(&in_nodes).copied().collect();

    if notes.issues.len() == before {
        let both: Vec<u32> = reserved.intersection(&isolated).copied().collect();
        if !both.is_empty() {
            notes.issue(
                "/cpu/isolated",
                format!(
                    "CPUs {} are both reserved and isolated: remove them from one",
                    format_cpulist(&both)
                ),
            );
        }
        for &cpu in &reserved {
            let split: Vec<u32> = inv
                .siblings_of(cpu)
                .into_iter()
                .filter(|s| isolated.contains(s))
                .collect();
            if !split.is_empty() {
                notes.issue(
                    "/cpu/isolated",
                    format!(
                        "CPU {cpu} is reserved but its hyperthread sibling(s) {} are isolated: \
                         keep a core's siblings on one side",
                        format_cpulist(&split)
                    ),
                );
            }
        }
        for node in nodes.iter().filter(|n| !n.cpus.is_empty()) {
            let has = |set: &BTreeSet<u32>| node.cpus.iter().any(|c| set.contains(c));
            if !has(&reserved) {
                let field = if cpu.reserved.is_some() {
                    "/cpu/reserved"
                } else {
                    "/cpu/reserved_per_numa_node"
                };
                notes.issue(
                    field,
                    format!(
                        "NUMA node {} (CPUs {}) has no reserved CPU: reserve one of its cores",
                        node.id,
                        format_cpulist(&node.cpus)
                    ),
                );
            }
            if !has(&isolated) {
                let field = if cpu.isolated == "rest" {
                    if cpu.reserved.is_some() {
                        "/cpu/reserved"
                    } else {
                        "/cpu/reserved_per_numa_node"
                    }
                } else {
                    "/cpu/isolated"
                };
                notes.issue(
                    field,
                    format!(
                        "NUMA node {} (CPUs {}) has no isolated CPU: reserve fewer of its CPUs \
                         or isolate some",
                        node.id,
                        format_cpulist(&node.cpus)
                    ),
                );
            }
        }
    }
    (
        reserved.into_iter().collect(),
        isolated.into_iter().collect(),
    )
}

/// Reports CPUs of an explicit list that are not online and cores whose
/// siblings the list splits.
fn check_cpuset(
    inv: &Inventory,
    online: &BTreeSet<u32>,
    ids: &[u32],
    pointer: &str,
    what: &str,
    notes: &mut Notes,
) {
    let offline: Vec<u32> = ids
        .iter()
        .copied()
        .filter(|c| !online.contains(c))
        .collect();
    if !offline.is_empty() {
        notes.issue(
            pointer,
            format!(
                "CPUs {} are not online on this machine (online: {}): list online CPUs only",
                format_cpulist(&offline),
                format_cpulist(&inv.cpus.online)
            ),
        );
    }
    for &cpu in ids.iter().filter(|c| online.contains(c)) {
        let missing: Vec<u32> = inv
            .siblings_of(cpu)
            .into_iter()
            .filter(|s| !ids.contains(s))
            .collect();
        if !missing.is_empty() {
            notes.issue(
                pointer,
                format!(
                    "CPU {cpu} is {what} without its hyperthread sibling(s) {}: list whole cores",
                    format_cpulist(&missing)
                ),
            );
        }
    }
}

/// Hugepages per node, and the boot-time kernel arguments.
fn plan_hugepages(
    inv: &Inventory,
    profile: &Profile,
    nodes: &[Node],
    args: &mut Vec<String>,
    notes: &mut Notes,
) -> Vec<NodeHugepages> {
    let Some(hp) = &profile.hugepages else {
        return Vec::new();
    };
    let reserve = hp.host_reserve_mib.saturating_mul(MIB);
    let mut counts: BTreeMap<(u32, u64), u64> = BTreeMap::new();
    let mut used: BTreeMap<u32, u64> = BTreeMap::new();
    let mut flags_ok = true;
    for (i, req) in hp.pages.iter().enumerate() {
        let size = req.size;
        if !inv.has_cpu_flag(size.cpu_flag()) {
            notes.issue(
                format!("/hugepages/pages/{i}/size"),
                format!(
                    "{} pages need the `{}` CPU flag, which this CPU ({}) lacks: {}",
                    size.as_str(),
                    size.cpu_flag(),
                    inv.cpus.model,
                    if size == PageSize::Size1G {
                        "use 2M pages (or expose pdpe1gb to the VM: `-cpu host`)"
                    } else {
                        "remove the entry"
                    }
                ),
            );
            flags_ok = false;
            continue;
        }
        let targets: Vec<&Node> = match req.node {
            HugepageNode::All => nodes.iter().filter(|n| n.memory_bytes > 0).collect(),
            HugepageNode::Id(id) => match nodes.iter().find(|n| n.id == id) {
                Some(n) => vec![n],
                None => {
                    notes.issue(
                        format!("/hugepages/pages/{i}/node"),
                        format!(
                            "this machine has no NUMA node {id} (nodes: {}): use one of them or \
                             `all`",
                            nodes
                                .iter()
                                .map(|n| n.id.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                    continue;
                }
            },
        };
        let page_bytes = size.kib() * 1024;
        for node in targets {
            let available = node.memory_bytes.saturating_sub(reserve);
            let pages = match (req.count, req.percent) {
                (Some(count), _) => count,
                (None, Some(percent)) => {
                    let pages =
                        u128::from(available) * u128::from(percent) / 100 / u128::from(page_bytes);
                    let pages = u64::try_from(pages).unwrap_or(u64::MAX);
                    if pages == 0 {
                        notes.warnings.push(format!(
                            "hugepages.pages[{i}]: {percent}% of node {}'s {} after the host \
                             reserve is less than one {} page: none on node {}",
                            node.id,
                            gib(available),
                            size.as_str(),
                            node.id
                        ));
                    }
                    pages
                }
                (None, None) => 0,
            };
            let bytes = pages.saturating_mul(page_bytes);
            let total = used.entry(node.id).or_default();
            *total = total.saturating_add(bytes);
            if *total > available {
                notes.issue(
                    format!("/hugepages/pages/{i}"),
                    format!(
                        "node {} has {} for hugepages ({} minus the {} MiB host reserve) but \
                         the pages up to this entry need {}: lower count or percent, or \
                         host_reserve_mib",
                        node.id,
                        gib(available),
                        gib(node.memory_bytes),
                        hp.host_reserve_mib,
                        gib(*total)
                    ),
                );
            }
            let count = counts.entry((node.id, size.kib())).or_default();
            *count = count.saturating_add(pages);
        }
    }
    if let Some(size) = hp.default_size
        && flags_ok
    {
        args.push(format!("default_hugepagesz={}", size.as_str()));
    }
    // Boot-time pages: `hugepages=N` when every node with memory gets the
    // same count (the kernel spreads N evenly), otherwise the per-node form
    // `hugepages=0:4,2:20` (Linux 5.16+), so no node gets pages it should not.
    let with_memory: Vec<u32> = nodes
        .iter()
        .filter(|n| n.memory_bytes > 0)
        .map(|n| n.id)
        .collect();
    for size in [PageSize::Size2M, PageSize::Size1G] {
        let per_node: Vec<(u32, u64)> = counts
            .iter()
            .filter(|((_, kib), count)| *kib == size.kib() && **count > 0)
            .map(|((node, _), count)| (*node, *count))
            .collect();
        if per_node.is_empty() {
            continue;
        }
        let even = per_node.len() == with_memory.len()
            && per_node.iter().all(|(_, c)| *c == per_node[0].1);
        args.push(format!("hugepagesz={}", size.as_str()));
        if even {
            let total = per_node
                .iter()
                .fold(0u64, |sum, (_, c)| sum.saturating_add(*c));
            args.push(format!("hugepages={total}"));
        } else {
            let list: Vec<String> = per_node.iter().map(|(n, c)| format!("{n}:{c}")).collect();
            args.push(format!("hugepages={}", list.join(",")));
        }
    }
    counts
        .into_iter()
        .map(|((node, size_kb), count)| NodeHugepages {
            node,
            size_kb,
            count,
        })
        .collect()
}

fn describe_nic(nic: &Nic) -> String {
    format!(
        "{} ({}:{}, {}, {})",
        nic.name,
        nic.vendor_id.as_deref().unwrap_or("?"),
        nic.device_id.as_deref().unwrap_or("?"),
        nic.driver.as_deref().unwrap_or("no driver"),
        nic.pci_address.as_deref().unwrap_or("no PCI address")
    )
}

fn plan_sriov(
    inv: &Inventory,
    profile: &Profile,
    nodes: &[Node],
    isolated: &[u32],
    notes: &mut Notes,
) -> Vec<SriovPlan> {
    let pfs: Vec<&Nic> = {
        let mut v: Vec<&Nic> = inv.nics.iter().filter(|n| !n.is_virtual_function).collect();
        v.sort_by(|a, b| (&a.pci_address, &a.name).cmp(&(&b.pci_address, &b.name)));
        v
    };
    let mut claimed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, policy) in profile.sriov.iter().enumerate() {
        let sel = &policy.nic_selector;
        let eq = |want: &Option<String>, have: &Option<String>| match want {
            None => true,
            Some(w) => have.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(w)),
        };
        let matched: Vec<&Nic> = pfs
            .iter()
            .copied()
            .filter(|n| {
                eq(&sel.vendor_id, &n.vendor_id)
                    && eq(&sel.device_id, &n.device_id)
                    && sel
                        .driver
                        .as_ref()
                        .is_none_or(|d| n.driver.as_ref() == Some(d))
                    && (sel.pf_names.is_empty() || sel.pf_names.contains(&n.name))
                    && (sel.pci_addresses.is_empty()
                        || n.pci_address.as_deref().is_some_and(|a| {
                            sel.pci_addresses.iter().any(|s| s.eq_ignore_ascii_case(a))
                        }))
            })
            .collect();
        if matched.is_empty() {
            let nics = pfs
                .iter()
                .map(|n| describe_nic(n))
                .collect::<Vec<_>>()
                .join(", ");
            if policy.optional {
                notes.warnings.push(format!(
                    "sriov[{i}]: the nic_selector matches no NIC on this machine (optional, \
                     skipped)"
                ));
            } else {
                notes.issue(
                    format!("/sriov/{i}/nic_selector"),
                    format!(
                        "matches no physical function on this machine (NICs: {}): fix the \
                         selector, or set `optional: true` if some machines lack this NIC",
                        if nics.is_empty() { "none" } else { &nics }
                    ),
                );
            }
            continue;
        }
        for nic in matched {
            if let Some(j) = claimed.insert(&nic.name, i) {
                notes.issue(
                    format!("/sriov/{i}/nic_selector"),
                    format!(
                        "NIC {} is already selected by /sriov/{j}: make the selectors pick \
                         different NICs (pf_names or pci_addresses)",
                        nic.name
                    ),
                );
                continue;
            }
            let Some(pci_address) = nic.pci_address.clone() else {
                notes.issue(
                    format!("/sriov/{i}/nic_selector"),
                    format!(
                        "NIC {} has no PCI address, so it has no SR-IOV: narrow the selector",
                        nic.name
                    ),
                );
                continue;
            };
            if nic.sriov_totalvfs == 0 {
                notes.issue(
                    format!("/sriov/{i}/nic_selector"),
                    format!(
                        "NIC {} does not support SR-IOV (sriov_totalvfs is 0): enable SR-IOV \
                         in the system and NIC firmware, or narrow the selector",
                        describe_nic(nic)
                    ),
                );
                continue;
            }
            if policy.num_vfs > nic.sriov_totalvfs {
                notes.issue(
                    format!("/sriov/{i}/num_vfs"),
                    format!(
                        "{} VFs requested but NIC {} supports at most {} (sriov_totalvfs): \
                         lower num_vfs to {} or less",
                        policy.num_vfs,
                        describe_nic(nic),
                        nic.sriov_totalvfs,
                        nic.sriov_totalvfs
                    ),
                );
                continue;
            }
            let local_cpus = match nic
                .numa_node
                .and_then(|id| nodes.iter().find(|n| n.id == id))
            {
                Some(node) => {
                    let local: Vec<u32> = node
                        .cpus
                        .iter()
                        .copied()
                        .filter(|c| isolated.contains(c))
                        .collect();
                    if local.is_empty() && !isolated.is_empty() {
                        notes.warnings.push(format!(
                            "NIC {} is on NUMA node {}, which has no isolated CPUs: its \
                             local_cpus are empty",
                            nic.name, node.id
                        ));
                    }
                    if isolated.is_empty() {
                        node.cpus.clone()
                    } else {
                        local
                    }
                }
                None => {
                    let why = match nic.numa_node {
                        Some(id) => {
                            format!("is on NUMA node {id}, which the inventory does not list")
                        }
                        None => "reports no NUMA node".to_owned(),
                    };
                    notes.warnings.push(format!(
                        "NIC {} {why}: its local_cpus are all {} CPUs",
                        nic.name,
                        if isolated.is_empty() {
                            "online"
                        } else {
                            "isolated"
                        }
                    ));
                    if isolated.is_empty() {
                        let mut all = inv.cpus.online.clone();
                        all.sort_unstable();
                        all
                    } else {
                        isolated.to_vec()
                    }
                }
            };
            out.push(SriovPlan {
                pci_address,
                pf_name: nic.name.clone(),
                num_vfs: policy.num_vfs,
                device_type: policy.device_type,
                mtu: policy.mtu,
                local_cpus,
            });
        }
    }
    out.sort_by(|a, b| a.pci_address.cmp(&b.pci_address));
    out
}

/// Disk order for every choice: smallest first, then by `by_path` (disks
/// without one last), then by kernel name.
fn disk_order(a: &&Disk, b: &&Disk) -> std::cmp::Ordering {
    (a.size_bytes, a.by_path.is_none(), &a.by_path, &a.name).cmp(&(
        b.size_bytes,
        b.by_path.is_none(),
        &b.by_path,
        &b.name,
    ))
}

fn planned(d: &Disk) -> PlannedDisk {
    PlannedDisk {
        name: d.name.clone(),
        by_path: d.by_path.clone(),
        serial: d.serial.clone(),
        size_bytes: d.size_bytes,
    }
}

fn root_matches(h: &RootDiskHints, d: &Disk) -> bool {
    let eq = |want: &Option<String>, have: &Option<String>| {
        want.as_ref()
            .is_none_or(|w| have.as_deref().is_some_and(|h| h.trim() == w.trim()))
    };
    d.size_bytes
        >= h.min_size_gib
            .map_or(MIN_ROOT_BYTES, |g| g.saturating_mul(GIB))
        && h.kind.is_none_or(|k| k == d.kind)
        && h.rotational.is_none_or(|r| r == d.rotational)
        && eq(&h.model, &d.model)
        && eq(&h.serial, &d.serial)
        && eq(&h.wwn, &d.wwn)
        && eq(&h.by_path, &d.by_path)
}

fn describe_disks(disks: &[&Disk]) -> String {
    if disks.is_empty() {
        return "none".into();
    }
    disks
        .iter()
        .map(|d| {
            format!(
                "{} {} {}{}",
                d.name,
                d.kind,
                gib(d.size_bytes),
                if d.rotational { " rotational" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The root disk and the data disks, or `None` (with issues) when the root
/// hints match no disk.
fn plan_disks(
    inv: &Inventory,
    profile: &Profile,
    notes: &mut Notes,
) -> Option<(PlannedDisk, Vec<PlannedDisk>)> {
    let mut candidates: Vec<&Disk> = inv.disks.iter().filter(|d| !d.removable).collect();
    candidates.sort_by(disk_order);
    let layout = profile.disks.clone().unwrap_or_default();
    let hints = layout.root.clone().unwrap_or_default();
    let Some(root) = candidates.iter().copied().find(|d| root_matches(&hints, d)) else {
        let (pointer, what) = if layout.root.is_some() {
            ("/disks/root", "the root hints")
        } else {
            (
                "/disks",
                "the default root hints (any non-removable disk of at least 4 GiB)",
            )
        };
        notes.issue(
            pointer,
            format!(
                "no disk matches {what} (non-removable disks: {}): loosen the hints or add \
                 `disks.root`",
                describe_disks(&candidates)
            ),
        );
        return None;
    };
    let mut remaining: Vec<&Disk> = candidates
        .iter()
        .copied()
        .filter(|d| d.name != root.name)
        .collect();
    let mut data = Vec::new();
    for (i, rule) in layout.data.iter().enumerate() {
        let matching: Vec<&Disk> = remaining
            .iter()
            .copied()
            .filter(|d| {
                rule.kind.is_none_or(|k| k == d.kind)
                    && rule.rotational.is_none_or(|r| r == d.rotational)
                    && rule
                        .min_size_gib
                        .is_none_or(|g| d.size_bytes >= g.saturating_mul(GIB))
            })
            .collect();
        if matching.len() < rule.min_count as usize {
            notes.issue(
                format!("/disks/data/{i}"),
                format!(
                    "needs at least {} matching disk(s) besides the root disk ({}) and earlier \
                     rules, found {} (left: {}): lower min_count or loosen the rule",
                    rule.min_count,
                    root.name,
                    matching.len(),
                    describe_disks(&remaining)
                ),
            );
            continue;
        }
        let taken: Vec<&Disk> = match rule.take {
            DataDiskUse::AllRemaining => matching,
            DataDiskUse::One => matching.into_iter().take(1).collect(),
        };
        remaining.retain(|d| !taken.iter().any(|t| t.name == d.name));
        data.extend(taken.into_iter().map(planned));
    }
    Some((planned(root), data))
}

/// Example inventories (`profiles/inventories/*.json`), for tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use model::inventory::Inventory;

    /// The example inventory called `name` (a profile name).
    pub fn inventory(name: &str) -> Inventory {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../profiles/inventories")
            .join(format!("{name}.json"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests;
