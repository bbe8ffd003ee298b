//! The EFI System Partition, formatted FAT32 in-process with the `fatfs` crate: no
//! `mkfs.vfat`, no mount, no root.
//!
//! Invariants: deterministic: a fixed volume id and label, every timestamp taken from
//! one fixed instant ([`FixedTime`], from SOURCE_DATE_EPOCH), files written in the order
//! given. Directories are created as the paths need them. [`civil_from_epoch`] is pure.

use std::path::Path;

use crate::file_error;

/// The ESP's volume label (11 bytes, space-padded).
pub const LABEL: &[u8; 11] = b"ESP        ";
/// The ESP's volume id (serial number), fixed so that builds are reproducible.
pub const VOLUME_ID: u32 = 0x4853_5431;
/// FAT32 needs at least 65525 clusters: 2 KiB clusters give about 130 000 in 256 MiB.
const BYTES_PER_CLUSTER: u32 = 2048;

/// `loader/loader.conf`: boot the default entry at once, no editing of the command line
/// (it carries the root hash).
pub const LOADER_CONF: &str = "timeout 0\neditor no\n";

/// Every timestamp the file system writes: one fixed instant.
#[derive(Debug, Clone, Copy)]
pub struct FixedTime(pub fatfs::DateTime);

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0
    }
}

/// (year, month, day, hour, minute, second) in UTC of a Unix time (Howard Hinnant's
/// days-from-civil inverse).
pub fn civil_from_epoch(epoch: u64) -> (u64, u64, u64, u64, u64, u64) {
    let days = epoch / 86_400;
    let secs = epoch % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day, secs / 3600, secs % 3600 / 60, secs % 60)
}

/// The FAT timestamp of a Unix time, clamped to FAT's range (1980 to 2107).
pub fn fat_time(epoch: u64) -> fatfs::DateTime {
    let (year, month, day, hour, min, sec) = civil_from_epoch(epoch);
    let (year, month, day) = match year {
        ..1980 => (1980, 1, 1),
        2108.. => (2107, 12, 31),
        _ => (year, month, day),
    };
    fatfs::DateTime {
        date: fatfs::Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: fatfs::Time {
            hour: hour as u16,
            min: min as u16,
            sec: sec as u16,
            millis: 0,
        },
    }
}

/// Creates `path` as a FAT32 file system of `size` bytes holding `files` (path with `/`
/// separators, contents), every timestamp at `epoch`.
pub fn write(
    path: &Path,
    size: u64,
    files: &[(&str, &[u8])],
    epoch: u64,
) -> Result<(), crate::FileError> {
    let error = |action| file_error(path, action);
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(error("creating the ESP image"))?;
    file.set_len(size).map_err(error("sizing the ESP image"))?;
    let mut file = file;
    fatfs::format_volume(
        &mut file,
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .bytes_per_cluster(BYTES_PER_CLUSTER)
            .volume_id(VOLUME_ID)
            .volume_label(*LABEL),
    )
    .map_err(error("formatting the ESP (FAT32)"))?;
    // fatfs keeps the provider for the file system's lifetime: one small leak per build.
    let time: &'static FixedTime = Box::leak(Box::new(FixedTime(fat_time(epoch))));
    let fs = fatfs::FileSystem::new(
        &mut file,
        fatfs::FsOptions::new()
            .time_provider(time)
            .update_accessed_date(false),
    )
    .map_err(error("opening the fresh ESP"))?;
    {
        let root = fs.root_dir();
        for (name, contents) in files {
            let parts: Vec<&str> = name.split('/').collect();
            let (file_name, dirs) = parts.split_last().expect("split gives one part");
            let mut dir = root.clone();
            for d in dirs {
                dir = match dir.open_dir(d) {
                    Ok(existing) => existing,
                    Err(_) => dir
                        .create_dir(d)
                        .map_err(error("creating a directory on the ESP"))?,
                };
            }
            let mut f = dir
                .create_file(file_name)
                .map_err(error("creating a file on the ESP"))?;
            f.truncate().map_err(error("writing a file on the ESP"))?;
            std::io::Write::write_all(&mut f, contents)
                .map_err(error("writing a file on the ESP"))?;
        }
    }
    fs.unmount().map_err(error("closing the ESP"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_become_civil_times() {
        assert_eq!(civil_from_epoch(0), (1970, 1, 1, 0, 0, 0));
        // 2024-02-29T12:34:56Z
        assert_eq!(civil_from_epoch(1_709_210_096), (2024, 2, 29, 12, 34, 56));
        let t = fat_time(0);
        assert_eq!((t.date.year, t.date.month, t.date.day), (1980, 1, 1));
        let t = fat_time(1_709_210_096);
        assert_eq!((t.date.year, t.time.hour, t.time.sec), (2024, 12, 56));
    }

    #[test]
    fn files_read_back_from_a_small_esp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("esp.img");
        let files: &[(&str, &[u8])] = &[
            ("EFI/BOOT/BOOTX64.EFI", b"loader"),
            ("loader/loader.conf", LOADER_CONF.as_bytes()),
            ("EFI/Linux/host-a-1.efi", &[7u8; 5000]),
        ];
        write(&path, 256 << 20, files, 1_700_000_000).unwrap();
        let mut disk = std::fs::File::options()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        assert_eq!(fs.volume_id(), VOLUME_ID);
        for (name, contents) in files {
            let mut got = vec![];
            std::io::Read::read_to_end(&mut fs.root_dir().open_file(name).unwrap(), &mut got)
                .unwrap();
            assert_eq!(&got, contents, "{name}");
        }
    }
}
