//! Human-readable text for `provisioner profile match` and `profile plan`.
//! Pure: values in, text out (the CLI prints it; tests snapshot it).

use std::fmt::Write as _;

use model::inventory::Inventory;
use model::plan::{HostPlan, PlannedDisk, format_cpulist};

use super::matching::{MatchReport, gib};

/// One line describing a machine, e.g. `Dell Inc. PowerEdge R750 (serial
/// 7XK2Q93): Intel(R) Xeon(R) Gold 6348 CPU @ 2.60GHz, 2 sockets, 56
/// cores, 112 threads, 512.0 GiB, 2 NUMA nodes, 5 NICs, 3 disks`.
pub fn machine(inv: &Inventory) -> String {
    let serial = inv
        .system
        .serial
        .as_deref()
        .map(|s| format!(" (serial {s})"))
        .unwrap_or_default();
    format!(
        "{} {}{serial}: {}, {} socket(s), {} cores, {} threads, {}, {} NUMA node(s), {} NIC(s), \
         {} disk(s)",
        inv.system.vendor,
        inv.system.product,
        inv.cpus.model,
        inv.cpus.sockets,
        inv.cpus.cores,
        inv.cpus.threads,
        gib(inv.memory_bytes),
        inv.numa_nodes.len(),
        inv.nics.len(),
        inv.disks.len()
    )
}

/// The match report: one block per profile (why it did not match), then
/// the verdict.
pub fn match_report(inv: &Inventory, report: &MatchReport) -> String {
    let mut out = format!("machine: {}\n", machine(inv));
    for r in &report.results {
        let verdict = if r.matches { "matches" } else { "no match" };
        let _ = writeln!(
            out,
            "{}: {verdict} (specificity {}, priority {})",
            r.profile, r.specificity, r.priority
        );
        for m in &r.mismatches {
            let _ = writeln!(out, "  {}: {}", m.pointer, m.reason);
        }
    }
    match report.result() {
        Ok(name) => {
            let _ = writeln!(out, "chosen: {name}");
        }
        Err(e) => {
            let _ = writeln!(out, "chosen: none: {e}");
        }
    }
    out
}

fn disk(d: &PlannedDisk) -> String {
    let mut parts = vec![gib(d.size_bytes)];
    if let Some(p) = &d.by_path {
        parts.push(format!("by-path {p}"));
    }
    if let Some(s) = &d.serial {
        parts.push(format!("serial {s}"));
    }
    format!("{} ({})", d.name, parts.join(", "))
}

fn size(kib: u64) -> String {
    if kib >= 1 << 20 && kib.is_multiple_of(1 << 20) {
        format!("{}G", kib >> 20)
    } else if kib >= 1 << 10 && kib.is_multiple_of(1 << 10) {
        format!("{}M", kib >> 10)
    } else {
        format!("{kib}k")
    }
}

fn or_none(s: String) -> String {
    if s.is_empty() { "none".into() } else { s }
}

/// A host plan as aligned `label: value` lines.
pub fn plan(plan: &HostPlan) -> String {
    let roles: Vec<&str> = plan.roles.iter().map(|r| r.as_str()).collect();
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<14} {value}");
    };
    line(
        "profile:",
        format!("{} (roles: {})", plan.profile, roles.join(", ")),
    );
    line("kernel args:", or_none(plan.kernel_args.join(" ")));
    line(
        "reserved CPUs:",
        or_none(format_cpulist(&plan.reserved_cpus)),
    );
    line(
        "isolated CPUs:",
        or_none(format_cpulist(&plan.isolated_cpus)),
    );
    line(
        "hugepages:",
        or_none(
            plan.hugepages
                .iter()
                .map(|h| format!("node {}: {} x {}", h.node, h.count, size(h.size_kb)))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    );
    if plan.sriov.is_empty() {
        line("sriov:", "none".into());
    }
    for (i, vf) in plan.sriov.iter().enumerate() {
        let mtu = vf.mtu.map(|m| format!(", mtu {m}")).unwrap_or_default();
        line(
            if i == 0 { "sriov:" } else { "" },
            format!(
                "{} {}: {} VFs {}{mtu}, local CPUs {}",
                vf.pf_name,
                vf.pci_address,
                vf.num_vfs,
                vf.device_type.as_str(),
                or_none(format_cpulist(&vf.local_cpus))
            ),
        );
    }
    line("root disk:", disk(&plan.root_disk));
    if plan.data_disks.is_empty() {
        line("data disks:", "none".into());
    }
    for (i, d) in plan.data_disks.iter().enumerate() {
        line(if i == 0 { "data disks:" } else { "" }, disk(d));
    }
    for (i, w) in plan.warnings.iter().enumerate() {
        line(if i == 0 { "warnings:" } else { "" }, w.clone());
    }
    out
}
