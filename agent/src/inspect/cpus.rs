//! Processors: identity and flags from `/proc/cpuinfo`, online CPUs and
//! topology from `/sys/devices/system/cpu`.

use std::collections::{BTreeMap, BTreeSet};

use model::inventory::Cpus;
use model::plan::format_cpulist;

use super::{Scan, cpu_set, cpulist, numbered};

const CPU: &str = "/sys/devices/system/cpu";

/// One processor block of `/proc/cpuinfo`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct CpuinfoEntry {
    pub processor: Option<u32>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub flags: Vec<String>,
    pub physical_id: Option<u32>,
    pub core_id: Option<u32>,
}

/// Parses `/proc/cpuinfo` into its processor blocks (x86 field names;
/// other architectures simply leave fields empty).
pub(crate) fn parse_cpuinfo(text: &str) -> Vec<CpuinfoEntry> {
    let mut entries = Vec::new();
    let mut cur = CpuinfoEntry::default();
    let mut any = false;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            if line.trim().is_empty() && any {
                entries.push(std::mem::take(&mut cur));
                any = false;
            }
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        any = true;
        match key {
            "processor" => cur.processor = value.parse().ok(),
            "vendor_id" => cur.vendor = Some(value.to_owned()),
            "model name" => cur.model = Some(value.to_owned()),
            "flags" => cur.flags = value.split_whitespace().map(str::to_owned).collect(),
            "physical id" => cur.physical_id = value.parse().ok(),
            "core id" => cur.core_id = value.parse().ok(),
            _ => {}
        }
    }
    if any {
        entries.push(cur);
    }
    entries
}

pub(super) fn scan(s: &mut Scan) -> Cpus {
    let cpuinfo = match s.read("/proc/cpuinfo") {
        Some(text) => parse_cpuinfo(&text),
        None => {
            s.warn("/proc/cpuinfo is missing: CPU model, vendor and flags are unknown");
            Vec::new()
        }
    };
    let first = cpuinfo.first().cloned().unwrap_or_default();
    let present = present_cpus(s);
    let online = online_cpus(s, &present, &cpuinfo);
    let offline: Vec<u32> = present
        .iter()
        .copied()
        .filter(|c| !online.contains(c))
        .collect();
    if !offline.is_empty() {
        s.warn(format!(
            "offline CPUs {}: counts, siblings and NUMA CPU lists cover online CPUs only",
            format_cpulist(&offline)
        ));
    }

    // Topology of every online CPU: package and sibling group.
    let mut packages = BTreeSet::new();
    let mut groups: BTreeSet<Vec<u32>> = BTreeSet::new();
    let mut by_core: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
    let mut no_topology = Vec::new();
    for &cpu in &online {
        let info = cpuinfo.iter().find(|e| e.processor == Some(cpu));
        let topo = format!("{CPU}/cpu{cpu}/topology");
        let package = s
            .read_u64(&format!("{topo}/physical_package_id"))
            .map(|p| p as u32)
            .or_else(|| info.and_then(|i| i.physical_id));
        let siblings = match cpu_set(
            s,
            &format!("{topo}/thread_siblings_list"),
            &format!("{topo}/thread_siblings"),
        ) {
            Some(Ok(set)) => Some(set),
            Some(Err(e)) => {
                s.warn(e);
                None
            }
            None => None,
        };
        match (package, siblings) {
            (Some(package), Some(siblings)) => {
                packages.insert(package);
                let mut group: Vec<u32> = siblings
                    .into_iter()
                    .filter(|c| online.contains(c))
                    .collect();
                if !group.contains(&cpu) {
                    group.push(cpu);
                    group.sort_unstable();
                }
                groups.insert(group);
            }
            (package, _) => {
                // Fall back to /proc/cpuinfo's ids; without them the CPU is
                // its own core.
                no_topology.push(cpu);
                let package = package.unwrap_or(0);
                packages.insert(package);
                let core = info.and_then(|i| i.core_id).unwrap_or(u32::MAX - cpu);
                by_core.entry((package, core)).or_default().push(cpu);
            }
        }
    }
    if !no_topology.is_empty() {
        s.warn(format!(
            "{CPU}/cpuN/topology is missing or unreadable for CPUs {}: their sockets and \
             hyperthread siblings come from /proc/cpuinfo (or each counts as its own core)",
            format_cpulist(&no_topology)
        ));
    }
    groups.extend(by_core.into_values());
    // A CPU listed in two different groups means inconsistent files.
    let mut seen = BTreeSet::new();
    let mut overlap = Vec::new();
    for g in &groups {
        for c in g {
            if !seen.insert(*c) {
                overlap.push(*c);
            }
        }
    }
    if !overlap.is_empty() {
        s.warn(format!(
            "thread_siblings_list files disagree for CPUs {}: the core count may be wrong",
            format_cpulist(&overlap)
        ));
    }

    Cpus {
        model: first.model.unwrap_or_default(),
        vendor: first.vendor.unwrap_or_default(),
        sockets: packages.len() as u32,
        cores: groups.len() as u32,
        threads: online.len() as u32,
        flags: first.flags,
        online,
        siblings: groups.into_iter().collect(),
    }
}

/// Online CPUs from `cpu/online`; without it, from each `cpuN/online`
/// (CPU 0 often has none: it cannot go offline), then from `/proc/cpuinfo`.
/// Present CPUs: the kernel's `present` list, else the `cpuN` directories (an
/// offline CPU's directory holds nothing the inspection reads, so a recorded tree
/// may lack it; `present` always names it).
fn present_cpus(s: &mut Scan) -> Vec<u32> {
    let path = format!("{CPU}/present");
    match s.read(&path).map(|t| cpulist(&t)) {
        Some(Ok(list)) if !list.is_empty() => list,
        Some(Err(e)) => {
            s.warn(format!(
                "{path}: {e}: present CPUs taken from the cpuN directories"
            ));
            numbered(&s.list(CPU), "cpu")
        }
        _ => numbered(&s.list(CPU), "cpu"),
    }
}

fn online_cpus(s: &mut Scan, present: &[u32], cpuinfo: &[CpuinfoEntry]) -> Vec<u32> {
    let path = format!("{CPU}/online");
    match s.read(&path).map(|t| cpulist(&t)) {
        Some(Ok(list)) if !list.is_empty() => return list,
        Some(Ok(_)) => s.warn(format!("{path} is empty: online CPUs read one by one")),
        Some(Err(e)) => s.warn(format!("{path}: {e}: online CPUs read one by one")),
        None => s.warn(format!("{path} is missing: online CPUs read one by one")),
    }
    if !present.is_empty() {
        return present
            .iter()
            .copied()
            .filter(|c| s.read(&format!("{CPU}/cpu{c}/online")).as_deref() != Some("0"))
            .collect();
    }
    let mut ids: Vec<u32> = cpuinfo.iter().filter_map(|e| e.processor).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        s.warn("no CPU found in /sys/devices/system/cpu or /proc/cpuinfo");
    }
    ids
}
