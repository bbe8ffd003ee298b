//! The host disk's partition table and the writing of `host.raw`: a sparse file of
//! [`model::host::disk_size_bytes`], a protective MBR and a GPT written with `gptman` as
//! [`model::host::LAYOUT`] says (names = labels, type GUIDs from the contract, each
//! partition on a 1 MiB boundary), then the partitions' contents copied in.
//!
//! Invariants: the table ([`partition_table`]) and the GUIDs ([`derived_guid`]) are pure
//! and the same for every build: unique GUIDs are derived from a fixed namespace and the
//! label, so two builds give the same bytes. Zero blocks of a partition's content are
//! skipped, not written, so the file stays sparse (its size is the disk's).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use model::host::{LAYOUT, PartitionInfo, SECTOR};
use sha2::{Digest as _, Sha256};

use crate::file_error;

/// The namespace of every GUID and UUID the image builder derives.
const NAMESPACE: &str = "provisioner host image";

/// Why the disk could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{path}: writing the GPT with gptman")]
    Gpt {
        path: std::path::PathBuf,
        #[source]
        source: gptman::Error,
    },
    #[error(
        "{what} is {size} bytes but partition {label} holds {capacity}: make the content smaller or the partition larger in model::host::LAYOUT"
    )]
    TooLarge {
        what: String,
        label: String,
        size: u64,
        capacity: u64,
    },
    #[error(transparent)]
    File(#[from] crate::FileError),
}

/// A GUID (RFC 4122 version 4 layout) derived from `sha256(NAMESPACE / what)`: the same
/// name always gives the same GUID, different names different ones.
pub fn derived_guid(what: &str) -> String {
    let hash = Sha256::digest(format!("{NAMESPACE}/{what}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&hash[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::verity::hex(&b).to_ascii_uppercase();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The 16 bytes of a GUID string as GPT stores them: the first three fields little-endian,
/// the last two as written. `None` for a malformed string.
pub fn guid_bytes(guid: &str) -> Option<[u8; 16]> {
    let fields: Vec<&str> = guid.split('-').collect();
    let lens: Vec<usize> = fields.iter().map(|f| f.len()).collect();
    if lens != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex: String = fields.concat();
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    b[..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    Some(b)
}

/// The partitions as built: numbers, labels, type and unique GUIDs, first and last LBA.
pub fn partition_table() -> Vec<PartitionInfo> {
    let per_mib = (1 << 20) / SECTOR;
    let mut start_mib = 1;
    LAYOUT
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let first_lba = start_mib * per_mib;
            start_mib += spec.size_mib;
            PartitionInfo {
                number: i as u32 + 1,
                label: spec.label.to_owned(),
                type_guid: spec.type_guid.to_owned(),
                unique_guid: derived_guid(&format!("partition/{}", spec.label)),
                first_lba,
                last_lba: start_mib * per_mib - 1,
            }
        })
        .collect()
}

/// The disk's GUID.
pub fn disk_guid() -> String {
    derived_guid("disk")
}

/// Partition size in bytes.
pub fn partition_bytes(p: &PartitionInfo) -> u64 {
    (p.last_lba - p.first_lba + 1) * SECTOR
}

/// Creates `path` as a sparse file of `size` bytes with a protective MBR and the GPT of
/// `table`.
pub fn create(path: &Path, size: u64, table: &[PartitionInfo]) -> Result<File, DiskError> {
    let gpt_error = |source| DiskError::Gpt {
        path: path.to_owned(),
        source,
    };
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(file_error(path, "creating the disk image"))?;
    file.set_len(size)
        .map_err(file_error(path, "sizing the disk image"))?;
    let guid = |s: &str| guid_bytes(s).unwrap_or_else(|| panic!("a valid GUID: {s}"));
    let mut gpt =
        gptman::GPT::new_from(&mut file, SECTOR, guid(&disk_guid())).map_err(gpt_error)?;
    for p in table {
        gpt[p.number] = gptman::GPTPartitionEntry {
            partition_type_guid: guid(&p.type_guid),
            unique_partition_guid: guid(&p.unique_guid),
            starting_lba: p.first_lba,
            ending_lba: p.last_lba,
            attribute_bits: 0,
            partition_name: p.label.as_str().into(),
        };
    }
    gptman::GPT::write_protective_mbr_into(&mut file, SECTOR).map_err(gpt_error)?;
    gpt.write_into(&mut file).map_err(gpt_error)?;
    Ok(file)
}

/// Copies the file `content` into partition `p` of `disk`, skipping zero blocks (the disk
/// file is sparse and zero there already).
pub fn copy_into(disk: &mut File, p: &PartitionInfo, content: &Path) -> Result<(), DiskError> {
    let mut src = File::open(content).map_err(file_error(content, "reading"))?;
    let size = src
        .metadata()
        .map_err(file_error(content, "reading"))?
        .len();
    let capacity = partition_bytes(p);
    if size > capacity {
        return Err(DiskError::TooLarge {
            what: content.display().to_string(),
            label: p.label.clone(),
            size,
            capacity,
        });
    }
    let base = p.first_lba * SECTOR;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = read_full(&mut src, &mut buf).map_err(file_error(content, "reading"))?;
        if n == 0 {
            break;
        }
        for (i, chunk) in buf[..n].chunks(64 << 10).enumerate() {
            if chunk.iter().any(|b| *b != 0) {
                let offset = base + at + (i as u64) * (64 << 10);
                disk.seek(SeekFrom::Start(offset))
                    .and_then(|_| disk.write_all(chunk))
                    .map_err(file_error(content, "copying into the disk image"))?;
            }
        }
        at += n as u64;
    }
    Ok(())
}

/// Reads until `buf` is full or the end of the file.
pub(crate) fn read_full(src: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_the_layout_on_mib_boundaries() {
        let t = partition_table();
        let labels: Vec<&str> = t.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["esp", "root-a", "root-b", "config", "data"]);
        assert_eq!(
            (t[0].number, t[0].first_lba, t[0].last_lba),
            (1, 2048, 526_335)
        );
        assert_eq!(t[1].first_lba, 526_336);
        for w in t.windows(2) {
            assert_eq!(w[1].first_lba, w[0].last_lba + 1);
        }
        for p in &t {
            assert_eq!(p.first_lba % 2048, 0, "{}", p.label);
        }
        assert_eq!(partition_bytes(&t[1]), model::host::slot_size_bytes());
        // 1 MiB is left after the last partition for the backup GPT.
        let end = (t[4].last_lba + 1) * SECTOR;
        assert_eq!(end + (1 << 20), model::host::disk_size_bytes());
        assert_eq!(t[1].type_guid, model::host::TYPE_ROOT_X86_64);
    }

    #[test]
    fn guids_are_derived_stable_and_distinct() {
        let a = derived_guid("partition/root-a");
        assert_eq!(a, derived_guid("partition/root-a"));
        assert_ne!(a, derived_guid("partition/root-b"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4", "version 4 layout: {a}");
        assert!(matches!(&a[19..20], "8" | "9" | "A" | "B"), "variant: {a}");
        let t = partition_table();
        let mut guids: Vec<&str> = t.iter().map(|p| p.unique_guid.as_str()).collect();
        guids.sort();
        guids.dedup();
        assert_eq!(guids.len(), t.len());
    }

    #[test]
    fn guid_bytes_are_mixed_endian() {
        // The ESP type as it appears on disk.
        assert_eq!(
            guid_bytes(model::host::TYPE_ESP).unwrap(),
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
        assert_eq!(guid_bytes("C12A7328-F81F-11D2-BA4B"), None);
        assert_eq!(guid_bytes("X12A7328-F81F-11D2-BA4B-00A0C93EC93B"), None);
    }
}
