//! The deploy's and the clean's pure decisions: the partition table moved
//! to the disk's size (backup GPT at the end, `data` grown), which byte
//! ranges a metadata erase zeroes, which config slot to write and whether
//! a sealed config looks like one. No I/O.

use std::io::{Cursor, Seek, SeekFrom};

use gptman::GPT;
use model::deploy::{MAX_PAYLOAD, PAYLOAD_OFFSET, SLOT_BYTES, slot_to_write};

use crate::host::data::{ALIGN_SECTORS, grown_end};

/// The image's head held in memory until the body is verified: the MBR,
/// the primary GPT and the rest of the first MiB.
pub const HEAD: usize = 1 << 20;
/// What a metadata erase zeroes at each end of a disk and of a partition.
pub const ERASE_END: u64 = 1 << 20;
/// The first bytes of a sealed slot (`model::deploy`'s slot format).
pub const CONFIG_MAGIC: &[u8; 8] = b"PROVCFG1";
/// The partition names of the host disk (`model::host::LAYOUT`).
pub use model::host::{CONFIG, DATA};

/// A disk's size as a `Seek`, for `gptman`'s header arithmetic.
struct Sized(u64);

impl Seek for Sized {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        match pos {
            SeekFrom::End(0) => Ok(self.0),
            _ => Err(std::io::Error::other("only the size is known")),
        }
    }
}

/// The table to write on a disk of `disk_bytes`: the image's GPT (read from
/// `head`) with the backup header and array moved to the disk's last
/// sectors and its last partition, which must be `data`, grown to the last
/// usable LBA (1 MiB aligned). The grown partition's new size in bytes.
pub fn relocate(head: &[u8], disk_bytes: u64) -> Result<(GPT, u64), String> {
    let mut gpt = GPT::find_from(&mut Cursor::new(head))
        .map_err(|e| format!("the image's first MiB holds no readable GPT ({e})"))?;
    let ss = gpt.sector_size;
    gpt.header
        .update_from(&mut Sized(disk_bytes), ss)
        .map_err(|e| format!("cannot size the GPT for {disk_bytes} bytes: {e}"))?;
    let (number, last) = gpt
        .iter()
        .filter(|(_, p)| p.is_used())
        .max_by_key(|(_, p)| p.starting_lba)
        .ok_or("the image's GPT has no partition")?;
    let name = last.partition_name.as_str().to_owned();
    if name != DATA {
        return Err(format!(
            "the image's last partition is {name:?}, not {DATA:?}: not a host image of this \
             provisioner"
        ));
    }
    if last.ending_lba > gpt.header.last_usable_lba {
        return Err(format!(
            "the image's partition {name} ends at sector {} but the disk's last usable sector \
             is {}: the disk is too small for the image",
            last.ending_lba, gpt.header.last_usable_lba
        ));
    }
    let align = ALIGN_SECTORS * 512 / ss;
    if let Some(end) = grown_end(last.ending_lba, gpt.header.last_usable_lba, align) {
        gpt[number].ending_lba = end;
    }
    let p = &gpt[number];
    let bytes = (p.ending_lba - p.starting_lba + 1) * ss;
    Ok((gpt, bytes))
}

/// The byte range (start, end exclusive) of partition `name` in `gpt`.
pub fn partition(gpt: &GPT, name: &str) -> Option<(u64, u64)> {
    let ss = gpt.sector_size;
    gpt.iter()
        .find(|(_, p)| p.is_used() && p.partition_name.as_str() == name)
        .map(|(_, p)| (p.starting_lba * ss, (p.ending_lba + 1) * ss))
}

/// What a metadata erase zeroes on a disk of `disk_bytes` with these
/// partitions (byte ranges): the first and last [`ERASE_END`] of the disk
/// (MBR, both GPT copies) and of each partition (file-system signatures at
/// the start, md superblocks and backup headers at the end, the config
/// slots), clamped to the disk, aligned outwards to `block`, sorted and
/// merged.
pub fn erase_ranges(disk_bytes: u64, partitions: &[(u64, u64)], block: u64) -> Vec<(u64, u64)> {
    let down = |x: u64| x / block * block;
    let up = |x: u64| x.div_ceil(block) * block;
    let mut ranges = Vec::new();
    let mut ends = |start: u64, end: u64| {
        let end = end.min(disk_bytes);
        if start >= end {
            return;
        }
        ranges.push((start, (start + ERASE_END).min(end)));
        ranges.push((end.saturating_sub(ERASE_END).max(start), end));
    };
    ends(0, disk_bytes);
    for &(start, end) in partitions {
        ends(start, end);
    }
    let mut ranges: Vec<(u64, u64)> = ranges
        .into_iter()
        .map(|(s, e)| (down(s), up(e).min(disk_bytes)))
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in ranges {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

/// A slot's generation when its header looks written (magic, length in
/// range); the agent has no key to check the signature.
fn generation(header: &[u8]) -> Option<u64> {
    if header.len() < 20 || &header[..8] != CONFIG_MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(header[16..20].try_into().ok()?) as usize;
    (len <= MAX_PAYLOAD).then(|| u64::from_le_bytes(header[8..16].try_into().expect("8 bytes")))
}

/// The slot to write given the two slots' first bytes: the other one than
/// the newest written slot, slot 0 when none is written.
pub fn config_slot(slots: [&[u8]; 2]) -> usize {
    let newest = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| generation(s).map(|g| (i, g)))
        .max_by_key(|&(_, g)| g);
    slot_to_write(newest).0
}

/// Checks that `sealed` is a sealed config slot: magic, and a payload
/// length that matches its size. The signature is the host's to check.
pub fn check_sealed(sealed: &[u8]) -> Result<(), String> {
    if sealed.len() < PAYLOAD_OFFSET || &sealed[..8] != CONFIG_MAGIC {
        return Err(format!(
            "the order's config ({} bytes) does not start with PROVCFG1: not a sealed node config",
            sealed.len()
        ));
    }
    let len = u32::from_le_bytes(sealed[16..20].try_into().expect("4 bytes")) as usize;
    if sealed.len() > SLOT_BYTES || sealed.len() < PAYLOAD_OFFSET + len {
        return Err(format!(
            "the order's config has {} bytes for a payload of {len}: truncated or larger than a \
             slot ({SLOT_BYTES} bytes)",
            sealed.len()
        ));
    }
    Ok(())
}

/// Writes onto `disk` (whole MiB) a GPT like the host image's: esp 1-3 MiB,
/// config 3-19 MiB, then `last` up to the last MiB; protective MBR too.
/// Test support (the crate's tests and feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub fn write_test_gpt(disk: &mut Vec<u8>, last: &str) {
    let mib = disk.len() as u64 >> 20;
    let mut cursor = Cursor::new(std::mem::take(disk));
    let mut gpt = GPT::new_from(&mut cursor, 512, [9; 16]).expect("a GPT fits");
    for (i, (name, start, end)) in [("esp", 1, 3), (CONFIG, 3, 19), (last, 19, mib - 1)]
        .into_iter()
        .enumerate()
    {
        gpt[i as u32 + 1] = gptman::GPTPartitionEntry {
            partition_type_guid: [1; 16],
            unique_partition_guid: [i as u8 + 2; 16],
            starting_lba: start * 2048,
            ending_lba: end * 2048 - 1,
            attribute_bits: 0,
            partition_name: name.into(),
        };
    }
    GPT::write_protective_mbr_into(&mut cursor, 512).expect("an MBR fits");
    gpt.write_into(&mut cursor).expect("valid partitions");
    *disk = cursor.into_inner();
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn image_head(mib: u64, last: &str) -> Vec<u8> {
        let mut disk = vec![0u8; (mib * MIB) as usize];
        write_test_gpt(&mut disk, last);
        disk[..HEAD].to_vec()
    }

    #[test]
    fn the_table_moves_to_the_disk_end_and_data_grows() {
        let head = image_head(24, DATA);
        let (gpt, data) = relocate(&head, 64 * MIB).unwrap();
        assert_eq!(gpt.header.backup_lba, 64 * 2048 - 1);
        assert_eq!(gpt.header.last_usable_lba, 64 * 2048 - 34);
        assert_eq!(gpt[3].ending_lba, 63 * 2048 - 1);
        assert_eq!(data, 44 * MIB);
        assert_eq!(partition(&gpt, CONFIG), Some((3 * MIB, 19 * MIB)));
        assert_eq!(partition(&gpt, "root-a"), None);
        // The same size as the image: nothing grows, the backup still moves.
        let (gpt, data) = relocate(&head, 24 * MIB).unwrap();
        assert_eq!((gpt[3].ending_lba, data), (23 * 2048 - 1, 4 * MIB));
    }

    #[test]
    fn a_foreign_or_too_big_image_is_refused() {
        let err = relocate(&image_head(24, "home"), 64 * MIB).unwrap_err();
        assert!(err.contains("\"home\""), "{err}");
        let err = relocate(&image_head(24, DATA), 20 * MIB).unwrap_err();
        assert!(err.contains("too small"), "{err}");
        let err = relocate(&vec![0u8; HEAD], 64 * MIB).unwrap_err();
        assert!(err.contains("no readable GPT"), "{err}");
    }

    #[test]
    fn metadata_erase_covers_both_ends_of_disk_and_partitions_merged() {
        let parts = [(MIB, 3 * MIB), (3 * MIB, 19 * MIB), (19 * MIB, 100 * MIB)];
        assert_eq!(
            erase_ranges(100 * MIB, &parts, 512),
            [(0, 4 * MIB), (18 * MIB, 20 * MIB), (99 * MIB, 100 * MIB)]
        );
        // A partition past the disk's end is clamped; odd ends align outwards.
        assert_eq!(
            erase_ranges(10 * MIB, &[(5 * MIB + 100, 50 * MIB)], 4096),
            [(0, MIB), (5 * MIB, 6 * MIB + 4096), (9 * MIB, 10 * MIB)]
        );
        assert_eq!(erase_ranges(MIB / 2, &[], 512), [(0, MIB / 2)]);
    }

    fn slot(generation: u64) -> Vec<u8> {
        let mut s = CONFIG_MAGIC.to_vec();
        s.extend_from_slice(&generation.to_le_bytes());
        s.extend_from_slice(&10u32.to_le_bytes());
        s.resize(PAYLOAD_OFFSET + 10, 0);
        s
    }

    #[test]
    fn the_config_goes_to_the_older_or_unwritten_slot() {
        let empty = vec![0u8; 4096];
        assert_eq!(config_slot([&empty, &empty]), 0);
        assert_eq!(config_slot([&slot(3), &empty]), 1);
        assert_eq!(config_slot([&slot(3), &slot(4)]), 0);
        assert_eq!(config_slot([&slot(5), &slot(4)]), 1);
        check_sealed(&slot(1)).unwrap();
        assert!(check_sealed(&empty).unwrap_err().contains("PROVCFG1"));
        assert!(
            check_sealed(&slot(1)[..PAYLOAD_OFFSET + 3])
                .unwrap_err()
                .contains("truncated")
        );
    }
}
