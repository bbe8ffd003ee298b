//! Installed memory: the SMBIOS memory devices (type 17) when the table is
//! readable, else the sum of the memory blocks the kernel knows
//! (`/sys/devices/system/memory`), else `MemTotal` (less than installed: the
//! kernel's own reservations are missing) with a warning.

use model::inventory::NumaNode;

use super::{Scan, numa, numbered};

const DMI_TABLE: &str = "/sys/firmware/dmi/tables/DMI";
const MEMORY: &str = "/sys/devices/system/memory";

pub(super) fn scan(s: &mut Scan, nodes: &[NumaNode]) -> u64 {
    if let Some(table) = s.read_bytes(DMI_TABLE) {
        match smbios_memory_bytes(&table) {
            Some(bytes) if bytes > 0 => return bytes,
            _ => s.warn(format!(
                "{DMI_TABLE} lists no sized memory device: installed memory read from \
                 the kernel's memory blocks"
            )),
        }
    }
    let blocks = numbered(&s.list(MEMORY), "memory");
    if !blocks.is_empty() {
        let size = s
            .read(&format!("{MEMORY}/block_size_bytes"))
            .and_then(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok());
        match size {
            Some(size) => return size.saturating_mul(blocks.len() as u64),
            None => s.warn(format!(
                "{MEMORY}/block_size_bytes is missing or not hex: memory blocks not counted"
            )),
        }
    }
    if let Some(total) = numa::meminfo_total(s, "/proc/meminfo", "MemTotal:") {
        s.warn(
            "installed memory unknown (no SMBIOS table, no memory blocks): reporting \
             /proc/meminfo MemTotal, which is less than installed",
        );
        return total;
    }
    let sum: u64 = nodes.iter().map(|n| n.memory_bytes).sum();
    s.warn(
        "installed memory unknown (no SMBIOS table, memory blocks or /proc/meminfo): \
         reporting the sum of the NUMA nodes' MemTotal",
    );
    sum
}

/// Sum of the sizes of the SMBIOS type 17 (memory device) structures in a
/// raw table (`/sys/firmware/dmi/tables/DMI`); `None` when the table is
/// malformed before its end-of-table marker.
pub(crate) fn smbios_memory_bytes(table: &[u8]) -> Option<u64> {
    let mut total: u64 = 0;
    let mut at = 0usize;
    while at + 4 <= table.len() {
        let kind = table[at];
        let len = usize::from(table[at + 1]);
        if len < 4 || at + len > table.len() {
            return None;
        }
        let s = &table[at..at + len];
        if kind == 17 && len >= 0x0e {
            let size = u16::from_le_bytes([s[0x0c], s[0x0d]]);
            total = total.checked_add(match size {
                0 | 0xffff => 0,
                0x7fff if len >= 0x20 => {
                    let ext = u32::from_le_bytes([s[0x1c], s[0x1d], s[0x1e], s[0x1f]]);
                    u64::from(ext & 0x7fff_ffff) << 20
                }
                n if n & 0x8000 != 0 => u64::from(n & 0x7fff) << 10,
                n => u64::from(n) << 20,
            })?;
        }
        if kind == 127 {
            return Some(total);
        }
        // The string set after the formatted area ends with two NULs.
        let strings = &table[at + len..];
        let end = strings.windows(2).position(|w| w == [0, 0])?;
        at += len + end + 2;
    }
    Some(total)
}
