//! The human summary of an inventory (`node-agent inspect` without `-o json`).

use std::fmt;

use model::inventory::{Firmware, Inventory};
use model::plan::format_cpulist;

/// Displays an inventory as a short text summary, warnings last.
#[derive(Debug)]
pub struct Summary<'a>(pub &'a Inventory);

const GIB: f64 = (1u64 << 30) as f64;

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inv = self.0;
        let sys = &inv.system;
        let firmware = match (sys.firmware, sys.secure_boot) {
            (Firmware::Bios, _) => "BIOS".to_owned(),
            (Firmware::Uefi, Some(true)) => "UEFI, secure boot on".to_owned(),
            (Firmware::Uefi, Some(false)) => "UEFI, secure boot off".to_owned(),
            (Firmware::Uefi, None) => "UEFI, secure boot unknown".to_owned(),
        };
        writeln!(f, "system   {} {} ({firmware})", sys.vendor, sys.product)?;
        writeln!(
            f,
            "         serial {}, uuid {}",
            sys.serial.as_deref().unwrap_or("-"),
            sys.uuid.as_deref().unwrap_or("-")
        )?;
        let c = &inv.cpus;
        writeln!(
            f,
            "cpus     {}: {} sockets, {} cores, {} threads, online {}",
            if c.model.is_empty() { "?" } else { &c.model },
            c.sockets,
            c.cores,
            c.threads,
            format_cpulist(&c.online)
        )?;
        writeln!(
            f,
            "memory   {:.1} GiB installed",
            inv.memory_bytes as f64 / GIB
        )?;
        for n in &inv.numa_nodes {
            let huge: Vec<String> = n
                .hugepages
                .iter()
                .map(|h| format!("{}x{}k ({} free)", h.total, h.size_kb, h.free))
                .collect();
            writeln!(
                f,
                "numa {:<3} cpus {:<12} memory {:.1} GiB, hugepages {}, distances {:?}",
                n.id,
                if n.cpus.is_empty() {
                    "-".to_owned()
                } else {
                    format_cpulist(&n.cpus)
                },
                n.memory_bytes as f64 / GIB,
                if huge.is_empty() {
                    "-".to_owned()
                } else {
                    huge.join(" ")
                },
                n.distances
            )?;
        }
        for n in &inv.nics {
            writeln!(
                f,
                "nic      {} {} pci {} node {} driver {} [{}:{}] {} {}{}{}",
                n.name,
                n.mac,
                n.pci_address.as_deref().unwrap_or("-"),
                n.numa_node.map_or("?".to_owned(), |v| v.to_string()),
                n.driver.as_deref().unwrap_or("-"),
                n.vendor_id.as_deref().unwrap_or("?"),
                n.device_id.as_deref().unwrap_or("?"),
                if n.link { "link up" } else { "no link" },
                n.speed_mbps.map_or(String::new(), |s| format!("{s} Mb/s")),
                if n.sriov_totalvfs > 0 {
                    format!(" sriov {}/{} VFs", n.sriov_numvfs, n.sriov_totalvfs)
                } else {
                    String::new()
                },
                if n.is_virtual_function { " (VF)" } else { "" },
            )?;
        }
        for d in &inv.disks {
            writeln!(
                f,
                "disk     {} {} {:.1} GiB {} model {} serial {} by-path {}{}",
                d.name,
                d.kind,
                d.size_bytes as f64 / GIB,
                if d.rotational {
                    "rotational"
                } else {
                    "solid-state"
                },
                d.model.as_deref().unwrap_or("-"),
                d.serial.as_deref().unwrap_or("-"),
                d.by_path.as_deref().unwrap_or("-"),
                if d.removable { " removable" } else { "" },
            )?;
        }
        writeln!(f, "pci      {} devices", inv.pci_devices.len())?;
        for w in &inv.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}
