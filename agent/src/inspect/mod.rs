//! `node-agent inspect`: the machine's hardware [`Inventory`] read from
//! sysfs, procfs and the SMBIOS table, every path through a [`SysRoot`] so
//! the same code runs on a live host and on a recorded tree.
//!
//! One module per part of the inventory (`system`, `cpus`, `numa`,
//! `memory`, `nics`, `disks`, `pci`); each reads through a [`Scan`], which
//! logs every path it touched (for `--record`) and collects warnings.
//! Invariants: reading never writes; an odd, partial or missing file is a
//! warning in the inventory and a value marked unknown (`null`, empty),
//! never a panic and never a guessed value presented as read.

mod cpus;
mod disks;
mod memory;
mod nics;
mod numa;
mod pci;
pub mod record;
mod render;
mod system;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::PathBuf;

use model::inventory::Inventory;

use crate::sysroot::SysRoot;

pub use record::RecordError;
pub use render::Summary;

/// How a host path was touched, so a recording can reproduce it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// A file was read.
    File(String),
    /// A directory was listed.
    Dir(String),
    /// A symlink was read (by name, not followed).
    Link(String),
    /// A path was checked for existence.
    Exists(String),
}

/// Reads the inventory of the machine under `sys`.
pub fn inspect(sys: &SysRoot) -> Inventory {
    inspect_logged(sys).0
}

/// Like [`inspect`], and also returns every host path it touched, in
/// order of path (the input of [`record::record`]).
pub fn inspect_logged(sys: &SysRoot) -> (Inventory, BTreeSet<Access>) {
    let mut scan = Scan::new(sys);
    let system = system::scan(&mut scan);
    let cpus = cpus::scan(&mut scan);
    let numa_nodes = numa::scan(&mut scan, &cpus.online);
    let memory_bytes = memory::scan(&mut scan, &numa_nodes);
    let pci_devices = pci::scan(&mut scan);
    let nics = nics::scan(&mut scan, numa_nodes.len());
    let disks = disks::scan(&mut scan);
    let inventory = Inventory {
        system,
        cpus,
        numa_nodes,
        memory_bytes,
        nics,
        disks,
        pci_devices,
        warnings: scan.warnings,
    };
    (inventory, scan.log)
}

/// A read-only view of the host through a [`SysRoot`] that remembers what
/// it touched and collects warnings.
#[derive(Debug)]
pub(crate) struct Scan<'a> {
    sys: &'a SysRoot,
    log: BTreeSet<Access>,
    warnings: Vec<String>,
}

impl<'a> Scan<'a> {
    pub(crate) fn new(sys: &'a SysRoot) -> Scan<'a> {
        Scan {
            sys,
            log: BTreeSet::new(),
            warnings: Vec::new(),
        }
    }

    /// Records a warning (one sentence: what, where, what it means).
    pub(crate) fn warn(&mut self, text: impl Into<String>) {
        self.warnings.push(text.into());
    }

    /// File `path`, trimmed, as text (invalid UTF-8 replaced); `None` when
    /// it cannot be read (missing, or an attribute the kernel refuses to
    /// show, such as `speed` of a NIC without link).
    pub(crate) fn read(&mut self, path: &str) -> Option<String> {
        self.read_bytes(path)
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
    }

    /// File `path` as bytes.
    pub(crate) fn read_bytes(&mut self, path: &str) -> Option<Vec<u8>> {
        self.log.insert(Access::File(path.to_owned()));
        self.sys.read_bytes(path).ok()
    }

    /// File `path` as an unsigned decimal number. Missing: `None`.
    /// Present but not a number: `None` and a warning naming the file.
    pub(crate) fn read_u64(&mut self, path: &str) -> Option<u64> {
        let text = self.read(path)?;
        match text.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                self.warn(format!("{path}: expected a number, found {text:?}"));
                None
            }
        }
    }

    /// Names in directory `path`, sorted; empty when it does not exist.
    pub(crate) fn list(&mut self, path: &str) -> Vec<String> {
        self.log.insert(Access::Dir(path.to_owned()));
        self.sys.list(path)
    }

    /// The target of symlink `path` as written, or `None`.
    pub(crate) fn link(&mut self, path: &str) -> Option<PathBuf> {
        self.log.insert(Access::Link(path.to_owned()));
        self.sys.read_link(path)
    }

    /// The last component of the target of symlink `path`.
    pub(crate) fn link_name(&mut self, path: &str) -> Option<String> {
        self.link(path)?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    }

    /// Whether `path` exists (a dangling symlink counts).
    pub(crate) fn exists(&mut self, path: &str) -> bool {
        self.log.insert(Access::Exists(path.to_owned()));
        self.sys.exists(path)
    }
}

/// Directory entries named `PREFIX<number>` (`cpu12`, `node1`), as numbers,
/// ascending.
pub(crate) fn numbered(names: &[String], prefix: &str) -> Vec<u32> {
    let mut ids: Vec<u32> = names
        .iter()
        .filter_map(|n| n.strip_prefix(prefix)?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// Parses a kernel cpulist, where an empty file means no CPUs (a
/// memory-only NUMA node).
pub(crate) fn cpulist(text: &str) -> Result<Vec<u32>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    model::plan::parse_cpulist(text)
}

/// Whether `s` looks like a PCI address (`0000:17:00.0`).
pub(crate) fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// A PCI id as sysfs shows it (`0x8086`) in the inventory's form (`8086`).
pub(crate) fn hex_id(text: &str) -> String {
    text.trim().trim_start_matches("0x").to_ascii_lowercase()
}

/// Parses a kernel CPU mask (`00000000,000000ff`: 32-bit hex groups, most
/// significant first), the older form of a cpulist.
pub(crate) fn cpumask(text: &str) -> Result<Vec<u32>, String> {
    let mut cpus = Vec::new();
    let groups: Vec<&str> = text.trim().split(',').collect();
    for (i, group) in groups.iter().rev().enumerate() {
        let bits = u32::from_str_radix(group.trim(), 16)
            .map_err(|_| format!("{text:?} is not a CPU mask"))?;
        let base = u32::try_from(i * 32).map_err(|_| format!("{text:?} is too long"))?;
        cpus.extend((0..32).filter(|b| bits & (1 << b) != 0).map(|b| base + b));
    }
    Ok(cpus)
}

/// A CPU set from `DIR/NAME_list` (cpulist) or, on older kernels, from the
/// mask file `DIR/NAME`; `None` when neither is there. A malformed file is
/// an error naming it.
pub(crate) fn cpu_set(
    s: &mut Scan,
    list_file: &str,
    mask_file: &str,
) -> Option<Result<Vec<u32>, String>> {
    if let Some(text) = s.read(list_file) {
        return Some(cpulist(&text).map_err(|e| format!("{list_file}: {e}")));
    }
    let text = s.read(mask_file)?;
    Some(cpumask(&text).map_err(|e| format!("{mask_file}: {e}")))
}
