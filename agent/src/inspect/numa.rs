//! NUMA nodes from `/sys/devices/system/node`: CPUs, memory, hugepage
//! pools and distances. A machine without that directory (a kernel without
//! NUMA) is reported as one node holding everything, with a warning.

use model::inventory::{HugepagePool, NumaNode};
use model::plan::format_cpulist;

use super::{Scan, cpu_set, numbered};

const NODE: &str = "/sys/devices/system/node";

pub(super) fn scan(s: &mut Scan, online: &[u32]) -> Vec<NumaNode> {
    let ids = numbered(&s.list(NODE), "node");
    if ids.is_empty() {
        s.warn(format!(
            "{NODE} has no nodes (kernel without NUMA?): reporting one node 0 with every \
             online CPU and /proc/meminfo's MemTotal"
        ));
        let memory_bytes = meminfo_total(s, "/proc/meminfo", "MemTotal:").unwrap_or(0);
        let hugepages = hugepages(s, "/sys/kernel/mm/hugepages");
        return vec![NumaNode {
            id: 0,
            cpus: online.to_vec(),
            memory_bytes,
            hugepages,
            distances: vec![10],
        }];
    }
    let mut nodes = Vec::new();
    for &id in &ids {
        let dir = format!("{NODE}/node{id}");
        let cpus = match cpu_set(s, &format!("{dir}/cpulist"), &format!("{dir}/cpumap")) {
            Some(Ok(cpus)) => cpus,
            Some(Err(e)) => {
                s.warn(format!("{e}: node {id}'s CPUs are unknown"));
                Vec::new()
            }
            None => {
                s.warn(format!(
                    "{dir}/cpulist and cpumap are missing: node {id}'s CPUs are unknown"
                ));
                Vec::new()
            }
        };
        let memory_bytes = match meminfo_total(s, &format!("{dir}/meminfo"), "MemTotal:") {
            Some(bytes) => bytes,
            None => {
                s.warn(format!(
                    "{dir}/meminfo has no readable MemTotal: node {id}'s memory is reported as 0"
                ));
                0
            }
        };
        if cpus.is_empty() {
            s.warn(format!("NUMA node {id} has no CPUs (memory-only node)"));
        }
        if memory_bytes == 0 {
            s.warn(format!("NUMA node {id} has no memory (CPU-only node)"));
        }
        let distances = distances(s, &dir, id, ids.len());
        let hugepages = hugepages(s, &format!("{dir}/hugepages"));
        nodes.push(NumaNode {
            id,
            cpus,
            memory_bytes,
            hugepages,
            distances,
        });
    }
    let homeless: Vec<u32> = online
        .iter()
        .copied()
        .filter(|c| !nodes.iter().any(|n| n.cpus.contains(c)))
        .collect();
    if !homeless.is_empty() {
        s.warn(format!(
            "online CPUs {} belong to no NUMA node's cpulist",
            format_cpulist(&homeless)
        ));
    }
    nodes
}

fn distances(s: &mut Scan, dir: &str, id: u32, count: usize) -> Vec<u32> {
    let Some(text) = s.read(&format!("{dir}/distance")) else {
        s.warn(format!(
            "{dir}/distance is missing: node {id}'s distances are unknown"
        ));
        return Vec::new();
    };
    let parsed: Result<Vec<u32>, _> = text.split_whitespace().map(str::parse).collect();
    match parsed {
        Ok(d) if d.len() == count => d,
        Ok(d) => {
            s.warn(format!(
                "{dir}/distance lists {} distances for {count} nodes: kept as read",
                d.len()
            ));
            d
        }
        Err(_) => {
            s.warn(format!("{dir}/distance: not a list of numbers: {text:?}"));
            Vec::new()
        }
    }
}

/// The hugepage pools under `dir` (`hugepages-2048kB/nr_hugepages`, ...).
fn hugepages(s: &mut Scan, dir: &str) -> Vec<HugepagePool> {
    let mut pools = Vec::new();
    for name in s.list(dir) {
        let Some(size_kb) = name
            .strip_prefix("hugepages-")
            .and_then(|n| n.strip_suffix("kB"))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        let total = s.read_u64(&format!("{dir}/{name}/nr_hugepages"));
        let free = s.read_u64(&format!("{dir}/{name}/free_hugepages"));
        match (total, free) {
            (Some(total), Some(free)) => pools.push(HugepagePool {
                size_kb,
                total,
                free,
            }),
            _ => s.warn(format!(
                "{dir}/{name}: nr_hugepages or free_hugepages unreadable: pool left out"
            )),
        }
    }
    pools.sort_by_key(|p| p.size_kb);
    pools
}

/// `KEY N kB` from a meminfo file (the node files prefix each line with
/// `Node N `), in bytes.
pub(super) fn meminfo_total(s: &mut Scan, path: &str, key: &str) -> Option<u64> {
    let text = s.read(path)?;
    parse_meminfo(&text, key)
}

pub(crate) fn parse_meminfo(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = &line[line.find(key)? + key.len()..];
        let kb: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        kb.checked_mul(1024)
    })
}
