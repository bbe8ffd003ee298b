//! A minimal FAT12/16/32 directory editor over the raw bytes of an
//! UNMOUNTED ESP (`Read + Write + Seek`): it parses the boot sector,
//! follows cluster chains in the first FAT, lists a directory by long
//! (VFAT) names and can [`Fat::forget`] one name of a file that has two.
//!
//! Why: vfat's rename writes the new directory entry, then deletes the old
//! one. A power cut in between leaves ONE file (one cluster chain) under TWO
//! names. Through the VFS, dropping either name (unlink, rename over it)
//! frees the chain the other name still uses. Here the stale name's entries
//! are only marked deleted (first byte `0xE5`); the FAT is never written, so
//! the chain stays owned by the name that is kept. Which name is stale is
//! decided by [`super::entries::twin_names`] (the rename sequence).
//!
//! Invariants:
//! - Only directory entries are written, one byte each (`0xE5`), and only
//!   after the two names were checked to share their start cluster and size.
//!   The FAT, FSInfo and data clusters are never written.
//! - Anything this module does not understand (a boot sector that is not
//!   FAT, a cluster chain that leaves the volume or loops) is an error that
//!   names the device and the field; nothing is guessed.
//! - The stale name's 8.3 entry is written before its LFN entries: a cut in
//!   between leaves orphan LFN pieces, which every reader (this one too)
//!   skips. (There is no sync between the writes: when the entries straddle
//!   a sector the device may reorder them, and a cut can leave the 8.3 name
//!   alone on the chain; the next boot reports it and leaves it alone.)
//! - The ESP must not be mounted while this runs (the kernel's vfat keeps
//!   its own view of the directory).

use std::io::{Read, Seek, SeekFrom, Write};

use super::entries::{self, Twins};

/// First byte of a deleted directory entry.
const DELETED: u8 = 0xE5;
/// Attribute byte of a long-name (LFN) entry.
const ATTR_LFN: u8 = 0x0F;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
/// Size of a directory entry.
const ENTRY: usize = 32;

/// The FAT variant, by cluster count (as the Microsoft specification says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatKind {
    Fat12,
    Fat16,
    Fat32,
}

/// Why the ESP could not be read or edited. `device` names it.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("{device}: cannot {what}")]
    Io {
        device: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{device}: not a FAT file system this agent can edit: {field}; is it the ESP \
         (`mkfs.fat`)? Check it with `fsck.fat -n {device}`"
    )]
    BootSector { device: String, field: String },
    #[error(
        "{device}: cluster chain of {what} is broken ({why}); run `fsck.fat -n {device}` from a \
         rescue system"
    )]
    Chain {
        device: String,
        what: String,
        why: String,
    },
    #[error("{device}: no {name:?} in /{dir} (names there: {present})")]
    NotFound {
        device: String,
        dir: String,
        name: String,
        present: String,
    },
    #[error(
        "{device}: /{dir}/{stale} and /{dir}/{kept} are two files (start cluster {stale_start} \
         size {stale_size}, start cluster {kept_start} size {kept_size}), not one file under \
         two names: nothing to repair; remove the unwanted one normally"
    )]
    NotTwins {
        device: String,
        dir: String,
        stale: String,
        kept: String,
        stale_start: u32,
        stale_size: u32,
        kept_start: u32,
        kept_size: u32,
    },
}

/// The boot sector's geometry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub kind: FatKind,
    pub bytes_per_sector: u32,
    pub sectors_per_cluster: u32,
    /// Byte offset of the first FAT.
    pub fat_offset: u64,
    /// Byte offset of cluster 2.
    pub data_offset: u64,
    /// Number of data clusters (valid clusters are 2..clusters+2).
    pub clusters: u32,
    /// FAT32: the root directory's first cluster. FAT12/16: 0.
    pub root_cluster: u32,
    /// FAT12/16: byte offset and length of the fixed root directory.
    pub root_region: (u64, u64),
}

impl Geometry {
    /// Parses a boot sector (its first 512 bytes at least). `Err` names the
    /// field that is not FAT.
    pub fn parse(sector: &[u8]) -> Result<Geometry, String> {
        if sector.len() < 512 {
            return Err(format!("boot sector of {} bytes", sector.len()));
        }
        let u16_at = |o: usize| u32::from(u16::from_le_bytes([sector[o], sector[o + 1]]));
        let u32_at = |o: usize| u32::from_le_bytes(sector[o..o + 4].try_into().unwrap_or([0; 4]));
        if sector[510..512] != [0x55, 0xAA] {
            return Err("no 0x55AA signature at byte 510".to_owned());
        }
        let bytes_per_sector = u16_at(11);
        if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
            return Err(format!("bytes per sector {bytes_per_sector}"));
        }
        let sectors_per_cluster = u32::from(sector[13]);
        if !sectors_per_cluster.is_power_of_two() || sectors_per_cluster > 128 {
            return Err(format!("sectors per cluster {sectors_per_cluster}"));
        }
        let reserved = u16_at(14);
        if reserved == 0 {
            return Err("0 reserved sectors".to_owned());
        }
        let fats = u32::from(sector[16]);
        if fats == 0 {
            return Err("0 FATs".to_owned());
        }
        let root_entries = u16_at(17);
        let total = match u16_at(19) {
            0 => u32_at(32),
            n => n,
        };
        let fat_sectors = match u16_at(22) {
            0 => u32_at(36),
            n => n,
        };
        if fat_sectors == 0 {
            return Err("FAT size 0".to_owned());
        }
        let root_sectors = (root_entries * ENTRY as u32).div_ceil(bytes_per_sector);
        let first_data = u64::from(reserved)
            + u64::from(fats) * u64::from(fat_sectors)
            + u64::from(root_sectors);
        let data_sectors = u64::from(total)
            .checked_sub(first_data)
            .ok_or_else(|| format!("total sectors {total} < first data sector {first_data}"))?;
        let clusters = (data_sectors / u64::from(sectors_per_cluster)) as u32;
        let kind = if clusters < 4085 {
            FatKind::Fat12
        } else if clusters < 65525 {
            FatKind::Fat16
        } else {
            FatKind::Fat32
        };
        let bps = u64::from(bytes_per_sector);
        let fat_entries_room = u64::from(fat_sectors) * bps * 2
            / match kind {
                FatKind::Fat12 => 3,
                FatKind::Fat16 => 4,
                FatKind::Fat32 => 8,
            };
        if fat_entries_room < u64::from(clusters) + 2 {
            return Err(format!(
                "FAT of {fat_sectors} sectors is too small for {clusters} clusters"
            ));
        }
        let (root_cluster, root_region) = if kind == FatKind::Fat32 {
            if root_entries != 0 {
                return Err(format!("FAT32 with {root_entries} fixed root entries"));
            }
            let root = u32_at(44);
            if root < 2 || root >= clusters + 2 {
                return Err(format!("root cluster {root}"));
            }
            (root, (0, 0))
        } else {
            if root_entries == 0 {
                return Err("FAT12/16 with 0 root entries".to_owned());
            }
            let start = (u64::from(reserved) + u64::from(fats) * u64::from(fat_sectors)) * bps;
            (0, (start, u64::from(root_entries) * ENTRY as u64))
        };
        Ok(Geometry {
            kind,
            bytes_per_sector,
            sectors_per_cluster,
            fat_offset: u64::from(reserved) * bps,
            data_offset: first_data * bps,
            clusters,
            root_cluster,
            root_region,
        })
    }

    fn cluster_bytes(&self) -> u64 {
        u64::from(self.bytes_per_sector) * u64::from(self.sectors_per_cluster)
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset + u64::from(cluster - 2) * self.cluster_bytes()
    }

    fn valid(&self, cluster: u32) -> bool {
        (2..self.clusters + 2).contains(&cluster)
    }

    fn end_of_chain(&self, value: u32) -> bool {
        value
            >= match self.kind {
                FatKind::Fat12 => 0xFF8,
                FatKind::Fat16 => 0xFFF8,
                FatKind::Fat32 => 0x0FFF_FFF8,
            }
    }
}

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The long (VFAT) name, or the 8.3 name when there is none.
    pub name: String,
    pub attributes: u8,
    pub start_cluster: u32,
    pub size: u32,
    /// Device byte offsets of its LFN entries, then of its 8.3 entry.
    slots: Vec<u64>,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.attributes & ATTR_DIR != 0
    }

    /// How many 32-byte directory entries the name uses (LFN pieces + 1).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }
}

/// The VFAT checksum of an 8.3 name, stored in each of its LFN entries.
pub fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

/// The 8.3 name as text: `HOST-B~1.EFI`; the NT case bits (byte 12: 0x08
/// lower-case base, 0x10 lower-case extension) apply.
fn short_name(raw: &[u8; 32]) -> String {
    let mut base: Vec<u8> = raw[..8].to_vec();
    if base[0] == 0x05 {
        base[0] = DELETED;
    }
    let piece = |bytes: &[u8], lower: bool| {
        let text: String = bytes.iter().map(|&b| char::from(b)).collect();
        let text = text.trim_end().to_owned();
        if lower { text.to_lowercase() } else { text }
    };
    let base = piece(&base, raw[12] & 0x08 != 0);
    let ext = piece(&raw[8..11], raw[12] & 0x10 != 0);
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

/// Long-name pieces being collected, last piece first (as on disk).
struct PendingLfn {
    checksum: u8,
    /// The sequence number the next LFN entry must have.
    next: u8,
    /// The pieces, index = sequence number - 1.
    pieces: Vec<Vec<u16>>,
    slots: Vec<u64>,
}

/// Parses a directory's raw entries (device offset, bytes) into names; "."
/// and "..", volume labels, deleted entries and orphan LFN pieces are
/// skipped. Stops at the end marker (first byte 0).
fn parse_dir(raw: &[(u64, [u8; 32])]) -> Vec<Entry> {
    let mut found = Vec::new();
    let mut pending: Option<PendingLfn> = None;
    for (offset, e) in raw {
        match e[0] {
            0 => break,
            DELETED => {
                pending = None;
                continue;
            }
            _ => {}
        }
        if e[11] == ATTR_LFN {
            let seq = e[0] & 0x1F;
            let units = |range: std::ops::Range<usize>| {
                e[range]
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect::<Vec<u16>>()
            };
            let piece = [units(1..11), units(14..26), units(28..32)].concat();
            if e[0] & 0x40 != 0 && seq >= 1 {
                pending = Some(PendingLfn {
                    checksum: e[13],
                    next: seq - 1,
                    pieces: vec![Vec::new(); usize::from(seq)],
                    slots: Vec::new(),
                });
            } else if !matches!(&pending, Some(p) if p.next == seq && p.next >= 1 && p.checksum == e[13])
            {
                pending = None;
                continue;
            }
            if let Some(p) = &mut pending {
                p.pieces[usize::from(seq) - 1] = piece;
                p.slots.push(*offset);
                p.next = seq - 1;
            }
            continue;
        }
        let lfn = pending.take();
        if e[11] & ATTR_VOLUME != 0 || e[0] == b'.' {
            continue;
        }
        let short: [u8; 11] = e[..11].try_into().unwrap_or([0; 11]);
        let long = lfn.filter(|p| p.next == 0 && p.checksum == lfn_checksum(&short));
        let (name, mut slots) = match long {
            Some(p) => {
                let units: Vec<u16> = p
                    .pieces
                    .concat()
                    .into_iter()
                    .take_while(|&u| u != 0)
                    .collect();
                (String::from_utf16_lossy(&units), p.slots)
            }
            None => (short_name(e), Vec::new()),
        };
        slots.push(*offset);
        let hi = u32::from(u16::from_le_bytes([e[20], e[21]]));
        let lo = u32::from(u16::from_le_bytes([e[26], e[27]]));
        found.push(Entry {
            name,
            attributes: e[11],
            start_cluster: hi << 16 | lo,
            size: u32::from_le_bytes([e[28], e[29], e[30], e[31]]),
            slots,
        });
    }
    found
}

/// The names FAT treats as the same (it compares case-insensitively).
fn same_name(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

/// One UKI's two names after the repair: `removed` was forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    pub kept: String,
    pub removed: String,
}

/// What [`Fat::repair_twins`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    pub repaired: Vec<Repaired>,
    /// Names sharing one start cluster that are not two names of one UKI
    /// (not `host-*` names of one slot and version, or another size): left
    /// alone.
    pub not_ours: Vec<Vec<String>>,
}

/// An ESP opened for directory edits.
#[derive(Debug)]
pub struct Fat<D> {
    dev: D,
    device: String,
    geometry: Geometry,
}

impl<D: Read + Write + Seek> Fat<D> {
    /// Reads the boot sector of `dev`; `device` names it in errors.
    pub fn open(mut dev: D, device: &str) -> Result<Fat<D>, FatError> {
        let mut sector = [0u8; 512];
        dev.seek(SeekFrom::Start(0))
            .and_then(|_| dev.read_exact(&mut sector))
            .map_err(|source| FatError::Io {
                device: device.to_owned(),
                what: "read the boot sector".to_owned(),
                source,
            })?;
        let geometry = Geometry::parse(&sector).map_err(|field| FatError::BootSector {
            device: device.to_owned(),
            field,
        })?;
        Ok(Fat {
            dev,
            device: device.to_owned(),
            geometry,
        })
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The device back (to sync it).
    pub fn into_inner(self) -> D {
        self.dev
    }

    fn io(&self, what: String) -> impl FnOnce(std::io::Error) -> FatError + use<D> {
        let device = self.device.clone();
        move |source| FatError::Io {
            device,
            what,
            source,
        }
    }

    /// The FAT entry of `cluster` (first FAT only).
    fn next_cluster(&mut self, cluster: u32) -> Result<u32, FatError> {
        let g = &self.geometry;
        let (offset, width) = match g.kind {
            FatKind::Fat12 => (u64::from(cluster) * 3 / 2, 2),
            FatKind::Fat16 => (u64::from(cluster) * 2, 2),
            FatKind::Fat32 => (u64::from(cluster) * 4, 4),
        };
        let kind = g.kind;
        let mut bytes = [0u8; 4];
        let at = g.fat_offset + offset;
        let err = self.io(format!("read the FAT entry of cluster {cluster}"));
        self.dev
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.dev.read_exact(&mut bytes[..width]))
            .map_err(err)?;
        let raw = u32::from_le_bytes(bytes);
        Ok(match kind {
            FatKind::Fat12 if cluster % 2 == 1 => (raw & 0xFFFF) >> 4,
            FatKind::Fat12 => raw & 0xFFF,
            FatKind::Fat16 => raw & 0xFFFF,
            FatKind::Fat32 => raw & 0x0FFF_FFFF,
        })
    }

    /// The clusters of the chain starting at `start`.
    fn chain(&mut self, start: u32, what: &str) -> Result<Vec<u32>, FatError> {
        let device = self.device.clone();
        let broken = |why: String| FatError::Chain {
            device: device.clone(),
            what: what.to_owned(),
            why,
        };
        let mut chain = Vec::new();
        let mut cluster = start;
        loop {
            if !self.geometry.valid(cluster) {
                return Err(broken(format!(
                    "cluster {cluster} is outside 2..{}",
                    self.geometry.clusters + 2
                )));
            }
            if chain.len() > self.geometry.clusters as usize {
                return Err(broken(format!(
                    "it loops (longer than the volume at {cluster})"
                )));
            }
            chain.push(cluster);
            let next = self.next_cluster(cluster)?;
            if self.geometry.end_of_chain(next) {
                return Ok(chain);
            }
            cluster = next;
        }
    }

    /// The raw entries of a directory: the fixed root (`cluster` 0 on
    /// FAT12/16) or a cluster chain.
    fn raw_dir(&mut self, cluster: u32, what: &str) -> Result<Vec<(u64, [u8; 32])>, FatError> {
        let regions: Vec<(u64, u64)> = if cluster == 0 && self.geometry.kind != FatKind::Fat32 {
            vec![self.geometry.root_region]
        } else {
            let bytes = self.geometry.cluster_bytes();
            self.chain(cluster, what)?
                .into_iter()
                .map(|c| (self.geometry.cluster_offset(c), bytes))
                .collect()
        };
        let mut raw = Vec::new();
        for (start, len) in regions {
            let mut buf = vec![0u8; len as usize];
            let err = self.io(format!("read the directory {what} at byte {start}"));
            self.dev
                .seek(SeekFrom::Start(start))
                .and_then(|_| self.dev.read_exact(&mut buf))
                .map_err(err)?;
            for (i, e) in buf.chunks_exact(ENTRY).enumerate() {
                let e: [u8; 32] = e.try_into().unwrap_or([0; 32]);
                raw.push((start + (i * ENTRY) as u64, e));
            }
        }
        Ok(raw)
    }

    /// The names in directory `dir` (`EFI/Linux`, `/`-separated, matched
    /// case-insensitively from the root).
    pub fn list(&mut self, dir: &str) -> Result<Vec<Entry>, FatError> {
        let mut cluster = self.geometry.root_cluster;
        let mut walked = String::new();
        let mut entries = parse_dir(&self.raw_dir(cluster, "/")?);
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            let found = entries
                .iter()
                .find(|e| e.is_dir() && same_name(&e.name, part))
                .ok_or_else(|| FatError::NotFound {
                    device: self.device.clone(),
                    dir: walked.clone(),
                    name: part.to_owned(),
                    present: names_of(&entries),
                })?;
            cluster = found.start_cluster;
            walked = if walked.is_empty() {
                part.to_owned()
            } else {
                format!("{walked}/{part}")
            };
            entries = parse_dir(&self.raw_dir(cluster, &format!("/{walked}"))?);
        }
        Ok(entries)
    }

    /// Marks `stale`'s entries in `dir` deleted (0xE5) and leaves the FAT
    /// alone, so the cluster chain stays with `kept`. Refuses unless both
    /// are files with the same start cluster (not 0) and size.
    pub fn forget(&mut self, dir: &str, stale: &str, kept: &str) -> Result<(), FatError> {
        let entries = self.list(dir)?;
        let find = |name: &str| {
            entries
                .iter()
                .find(|e| same_name(&e.name, name))
                .ok_or_else(|| FatError::NotFound {
                    device: self.device.clone(),
                    dir: dir.to_owned(),
                    name: name.to_owned(),
                    present: names_of(&entries),
                })
        };
        let (s, k) = (find(stale)?, find(kept)?);
        let twins = !s.is_dir()
            && !k.is_dir()
            && s.start_cluster != 0
            && s.start_cluster == k.start_cluster
            && s.size == k.size
            && s.slots != k.slots;
        if !twins {
            return Err(FatError::NotTwins {
                device: self.device.clone(),
                dir: dir.to_owned(),
                stale: s.name.clone(),
                kept: k.name.clone(),
                stale_start: s.start_cluster,
                stale_size: s.size,
                kept_start: k.start_cluster,
                kept_size: k.size,
            });
        }
        // The 8.3 entry first: cut after it, the LFN entries left are
        // orphans every reader skips; the chain then has one name.
        for &slot in s.slots.clone().iter().rev() {
            let err = self.io(format!(
                "mark the entry of {dir}/{stale} deleted at byte {slot}"
            ));
            self.dev
                .seek(SeekFrom::Start(slot))
                .and_then(|_| self.dev.write_all(&[DELETED]))
                .map_err(err)?;
        }
        let err = self.io("flush".to_owned());
        self.dev.flush().map_err(err)
    }

    /// Finds the files of `dir` that share a cluster chain and, where they
    /// are names of one UKI ([`entries::twin_names`]) with one size, forgets
    /// the older names; other groups are left alone and listed.
    pub fn repair_twins(&mut self, dir: &str) -> Result<RepairReport, FatError> {
        let mut report = RepairReport::default();
        for group in shared_chains(&self.list(dir)?) {
            let Some(Twins { kept, stale }) = entries::twin_names(&group) else {
                report.not_ours.push(group);
                continue;
            };
            for removed in stale {
                match self.forget(dir, &removed, &kept) {
                    Ok(()) => report.repaired.push(Repaired {
                        kept: kept.clone(),
                        removed,
                    }),
                    // One start cluster, another size: not a rename's twin.
                    Err(FatError::NotTwins { .. }) => {
                        report.not_ours.push(vec![removed, kept.clone()]);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(report)
    }
}

fn names_of(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return "none".to_owned();
    }
    entries
        .iter()
        .map(|e| e.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Groups of file names that share a start cluster (not 0: empty files own
/// no cluster), each sorted; groups of two names or more only.
pub fn shared_chains(entries: &[Entry]) -> Vec<Vec<String>> {
    let mut by_start: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for e in entries
        .iter()
        .filter(|e| !e.is_dir() && e.start_cluster != 0)
    {
        by_start
            .entry(e.start_cluster)
            .or_default()
            .push(e.name.clone());
    }
    by_start
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect()
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
