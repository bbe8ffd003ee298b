//! The data partition (`/var`): grown to the disk's end on first boot. The
//! GPT is rewritten with `gptman` (the last partition's end moved to the
//! aligned last usable LBA, the backup header moved to the disk's end), the
//! kernel is told with `BLKPG_RESIZE_PARTITION`, and once mounted the ext4
//! file system is grown online with `EXT4_IOC_RESIZE_FS`.
//!
//! Invariants: the pure decision ([`grown_end`]) only ever moves the end
//! forward, never the start; the file-system resize runs on every boot (a
//! no-op when the size is already right), whether or not the partition was
//! grown here, so that a power cut between the GPT write and the resize is
//! finished on the next boot and a deploy's partition table (`data` already
//! at the disk's end, its ext4 still the image's 64 MiB) is filled too.

use std::fs::File;
use std::path::Path;

/// Partitions end on 1 MiB boundaries (in 512-byte sectors).
pub const ALIGN_SECTORS: u64 = 2048;

/// The new last LBA of a partition ending at `end` when the disk's last
/// usable LBA is `last_usable`: the last LBA before the 1 MiB boundary at or
/// below `last_usable + 1`; `None` when that does not grow it.
pub fn grown_end(end: u64, last_usable: u64, align: u64) -> Option<u64> {
    let boundary = (last_usable + 1) / align * align;
    let new_end = boundary.checked_sub(1)?;
    (new_end > end).then_some(new_end)
}

/// What [`grow_partition`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grown {
    Already,
    To { old_bytes: u64, new_bytes: u64 },
}

/// Grows partition `number` of disk `disk_dev` (`/dev/vda`) to the disk's
/// end if it does not reach it: GPT rewritten, then the kernel told.
pub fn grow_partition(disk_dev: &Path, number: u32) -> Result<Grown, String> {
    let at = |step: &str, e: &dyn std::fmt::Display| format!("{step} {}: {e}", disk_dev.display());
    let mut disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk_dev)
        .map_err(|e| at("cannot open", &e))?;
    let mut gpt = gptman::GPT::find_from(&mut disk).map_err(|e| at("no readable GPT on", &e))?;
    gpt.header
        .update_from(&mut disk, gpt.sector_size)
        .map_err(|e| at("cannot size", &e))?;
    let ss = gpt.sector_size;
    let align = ALIGN_SECTORS * 512 / ss;
    let entry = &gpt[number];
    if entry.is_unused() {
        return Err(format!(
            "{}: partition {number} is empty in the GPT",
            disk_dev.display()
        ));
    }
    let (start, end) = (entry.starting_lba, entry.ending_lba);
    let old_bytes = (end - start + 1) * ss;
    let Some(new_end) = grown_end(end, gpt.header.last_usable_lba, align) else {
        // Still write nothing: the backup header is where it belongs when the
        // partition already reaches the end.
        return Ok(Grown::Already);
    };
    gpt[number].ending_lba = new_end;
    gpt.write_into(&mut disk)
        .map_err(|e| at("cannot write the GPT of", &e))?;
    disk.sync_all().map_err(|e| at("cannot sync", &e))?;
    let new_bytes = (new_end - start + 1) * ss;
    super::dm::resize_partition(&disk, number, start * ss, new_bytes).map_err(|e| {
        at(
            &format!("GPT written, but the kernel refused to resize partition {number} of"),
            &e,
        )
    })?;
    Ok(Grown::To {
        old_bytes,
        new_bytes,
    })
}

/// Grows the ext4 file system mounted at `mountpoint` to fill its
/// partition of `partition_bytes` bytes, whether or not the partition was
/// just grown (a deploy writes the partition table with `data` already at
/// the disk's end, and a power cut can fall between a GPT write and the
/// resize). The sizes before and after, in bytes, when it grew.
pub fn grow_ext4(mountpoint: &Path, partition_bytes: u64) -> Result<Option<(u64, u64)>, String> {
    let size = || {
        nix::sys::statvfs::statvfs(mountpoint)
            .map(|s| (s.block_size().max(1024), s.blocks() * s.fragment_size()))
            .map_err(|e| format!("cannot statvfs {}: {e}", mountpoint.display()))
    };
    let (block, before) = size()?;
    let dir =
        File::open(mountpoint).map_err(|e| format!("cannot open {}: {e}", mountpoint.display()))?;
    super::dm::ext4_resize(&dir, partition_bytes / block).map_err(|e| {
        format!(
            "cannot grow the ext4 on {} to {} blocks of {block} bytes: {e}; is it ext4?",
            mountpoint.display(),
            partition_bytes / block
        )
    })?;
    let (_, after) = size()?;
    Ok((after > before).then_some((before, after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_last_aligned_lba_only_forward() {
        // The built disk: data ends 1 MiB before the end (backup GPT after it).
        let disk_sectors = (1 + 256 + 512 + 512 + 16 + 64 + 1) * 2048;
        let last_usable = disk_sectors - 34;
        let end = disk_sectors - 2048 - 1;
        assert_eq!(
            grown_end(end, last_usable, 2048),
            None,
            "as built: nothing to do"
        );
        // Written to a 4 GiB disk.
        let big = 4u64 << 21;
        assert_eq!(grown_end(end, big - 34, 2048), Some(big - 2048 - 1));
        // An odd disk size: the end rounded down to a MiB boundary within the usable area.
        assert_eq!(grown_end(end, big + 1000 - 34, 2048), Some(big - 1));
        assert_eq!(grown_end(10, 5, 2048), None);
    }

    #[test]
    fn grows_a_gpt_on_a_file() {
        use gptman::{GPT, GPTPartitionEntry};
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("disk.raw");
        let mut file = File::create_new(&path).unwrap();
        file.set_len(8 << 20).unwrap();
        let mut gpt = GPT::new_from(&mut file, 512, [7; 16]).unwrap();
        gpt[1] = GPTPartitionEntry {
            partition_type_guid: [1; 16],
            unique_partition_guid: [2; 16],
            starting_lba: 2048,
            ending_lba: 2 * 2048 - 1,
            attribute_bits: 0,
            partition_name: "data".into(),
        };
        gpt.write_into(&mut file).unwrap();
        file.set_len(32 << 20).unwrap();
        drop(file);
        // Not a block device: the GPT is written, then BLKPG is refused.
        let err = grow_partition(&path, 1).unwrap_err();
        assert!(err.contains("kernel refused"), "{err}");
        let mut file = File::open(&path).unwrap();
        let gpt = GPT::find_from(&mut file).unwrap();
        assert_eq!(gpt[1].ending_lba, (32 << 11) - 2048 - 1);
        assert_eq!(gpt.header.backup_lba, (32 << 11) - 1);
        drop(file);
        assert_eq!(grow_partition(&path, 1), Ok(Grown::Already));
    }
}
