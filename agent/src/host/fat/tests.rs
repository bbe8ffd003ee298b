//! Images built and checked with the `fatfs` crate (a FAT implementation we
//! did not write); the power-cut state is made by patching the new name's
//! 8.3 entry to the old one's start cluster and size, as vfat's rename
//! leaves it.

use std::io::{Cursor, Read as _, Write as _};

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};

use super::*;

type Image = Cursor<Vec<u8>>;

const DIR: &str = "EFI/Linux";
const OLD: &str = "host-b-2+2-1.efi";
const NEW: &str = "host-b-2+1-2.efi";

/// A formatted image of `kind` with `EFI/Linux`.
fn image(kind: FatType) -> Image {
    let (mib, cluster) = match kind {
        FatType::Fat12 => (4, 2048),
        FatType::Fat16 => (16, 2048),
        // At least 65525 clusters.
        FatType::Fat32 => (40, 512),
    };
    let mut img = Cursor::new(vec![0u8; mib << 20]);
    fatfs::format_volume(
        &mut img,
        FormatVolumeOptions::new()
            .fat_type(kind)
            .bytes_per_cluster(cluster),
    )
    .unwrap();
    img.set_position(0);
    with_fs(&mut img, |fs| {
        fs.root_dir()
            .create_dir("EFI")
            .unwrap()
            .create_dir("Linux")
            .unwrap();
    });
    img
}

fn with_fs<T>(img: &mut Image, f: impl FnOnce(&FileSystem<&mut Image>) -> T) -> T {
    img.set_position(0);
    let fs = FileSystem::new(img, FsOptions::new()).unwrap();
    let out = f(&fs);
    fs.unmount().unwrap();
    out
}

fn write(img: &mut Image, name: &str, content: &[u8]) {
    with_fs(img, |fs| {
        let mut file = fs.root_dir().create_file(&format!("{DIR}/{name}")).unwrap();
        file.truncate().unwrap();
        file.write_all(content).unwrap();
    });
}

fn read(img: &mut Image, name: &str) -> Vec<u8> {
    with_fs(img, |fs| {
        let mut bytes = Vec::new();
        let mut file = fs.root_dir().open_file(&format!("{DIR}/{name}")).unwrap();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    })
}

/// The names in `EFI/Linux`, as fatfs lists them, sorted.
fn names(img: &mut Image) -> Vec<String> {
    with_fs(img, |fs| {
        let dir = fs.root_dir().open_dir(DIR).unwrap();
        let mut names: Vec<String> = dir
            .iter()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "." && n != "..")
            .collect();
        names.sort();
        names
    })
}

/// Fills the free space with a new file of 0xAA bytes, then removes it.
fn fill_and_remove(img: &mut Image) {
    with_fs(img, |fs| {
        let stats = fs.stats().unwrap();
        let free = u64::from(stats.free_clusters()) * u64::from(stats.cluster_size());
        let mut file = fs.root_dir().create_file("fill.bin").unwrap();
        file.write_all(&vec![0xAA; free as usize]).unwrap();
        drop(file);
        assert_eq!(
            fs.stats().unwrap().free_clusters(),
            0,
            "the fill took every cluster"
        );
        fs.root_dir().remove("fill.bin").unwrap();
    });
}

fn entry(img: &mut Image, name: &str) -> Entry {
    let mut fat = Fat::open(img, "test.img").unwrap();
    let entries = fat.list(DIR).unwrap();
    entries.into_iter().find(|e| e.name == name).unwrap()
}

/// Patches `name`'s 8.3 entry to `start` and `size`.
fn patch(img: &mut Image, name: &str, start: u32, size: u32) {
    let at = *entry(img, name).slots.last().unwrap() as usize;
    let raw = img.get_mut();
    raw[at + 20..at + 22].copy_from_slice(&((start >> 16) as u16).to_le_bytes());
    raw[at + 26..at + 28].copy_from_slice(&(start as u16).to_le_bytes());
    raw[at + 28..at + 32].copy_from_slice(&size.to_le_bytes());
}

/// `old` with `content`, then `new` pointing at the same chain: a rename
/// cut between its two halves.
fn power_cut(img: &mut Image, old: &str, new: &str, content: &[u8]) {
    write(img, old, content);
    write(img, new, b"");
    let e = entry(img, old);
    patch(img, new, e.start_cluster, e.size);
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn a_counter_bump_cut_by_a_power_loss_keeps_one_name_and_its_clusters() {
    for (kind, expected) in [
        (FatType::Fat12, FatKind::Fat12),
        (FatType::Fat16, FatKind::Fat16),
        (FatType::Fat32, FatKind::Fat32),
    ] {
        let mut img = image(kind);
        let uki = content(10_000);
        write(&mut img, "host-a-1.efi", b"the other slot");
        power_cut(&mut img, OLD, NEW, &uki);
        assert_eq!(read(&mut img, NEW), uki, "{kind:?}: the power-cut state");

        let mut fat = Fat::open(&mut img, "test.img").unwrap();
        assert_eq!(fat.geometry().kind, expected);
        assert_eq!(
            shared_chains(&fat.list(DIR).unwrap()),
            [[NEW.to_owned(), OLD.to_owned()]]
        );
        let report = fat.repair_twins(DIR).unwrap();
        assert_eq!(
            report.repaired,
            [Repaired {
                kept: NEW.into(),
                removed: OLD.into()
            }],
            "{kind:?}"
        );
        assert!(report.not_ours.is_empty());

        assert_eq!(names(&mut img), ["host-a-1.efi", NEW], "{kind:?}");
        fill_and_remove(&mut img);
        write(&mut img, "host-a-1.efi", b"rewritten");
        assert_eq!(
            read(&mut img, NEW),
            uki,
            "{kind:?}: the clusters stayed with {NEW}"
        );
        // Nothing left to repair.
        let again = Fat::open(&mut img, "test.img")
            .unwrap()
            .repair_twins(DIR)
            .unwrap();
        assert_eq!(again, RepairReport::default());
    }
}

#[test]
fn without_the_repair_a_normal_unlink_frees_the_kept_names_clusters() {
    // The check above would catch the bug it guards against: unlinking one
    // twin through a FAT implementation, then filling the disk, overwrites
    // the other's content.
    let mut img = image(FatType::Fat32);
    let uki = content(10_000);
    power_cut(&mut img, OLD, NEW, &uki);
    with_fs(&mut img, |fs| {
        fs.root_dir().remove(&format!("{DIR}/{OLD}")).unwrap()
    });
    fill_and_remove(&mut img);
    assert_ne!(read(&mut img, NEW), uki);
}

#[test]
fn the_bless_and_the_upgrade_rename_keep_the_newer_name() {
    for (old, new) in [
        ("host-b-2+1-2.efi", "host-b-2.efi"),
        ("host-b-2.tmp", "host-b-2+3.efi"),
    ] {
        let mut img = image(FatType::Fat16);
        power_cut(&mut img, old, new, b"uki");
        // Listed in either order, the newer name is kept.
        let report = Fat::open(&mut img, "test.img")
            .unwrap()
            .repair_twins(DIR)
            .unwrap();
        assert_eq!(
            report.repaired,
            [Repaired {
                kept: new.into(),
                removed: old.into()
            }]
        );
        assert_eq!(names(&mut img), [new]);
        assert_eq!(read(&mut img, new), b"uki");
    }
}

#[test]
fn two_distinct_files_are_refused() {
    let mut img = image(FatType::Fat32);
    write(&mut img, OLD, b"one");
    write(&mut img, NEW, b"two");
    let mut fat = Fat::open(&mut img, "test.img").unwrap();
    assert_eq!(fat.repair_twins(DIR).unwrap(), RepairReport::default());
    let err = fat.forget(DIR, OLD, NEW).unwrap_err();
    assert!(matches!(err, FatError::NotTwins { .. }), "{err}");
    assert!(err.to_string().contains("two files"), "{err}");
    // Same start cluster, another size: not one file either.
    let start = entry(&mut img, OLD).start_cluster;
    patch(&mut img, NEW, start, 2);
    let mut fat = Fat::open(&mut img, "test.img").unwrap();
    assert!(matches!(
        fat.forget(DIR, OLD, NEW),
        Err(FatError::NotTwins { .. })
    ));
    assert!(matches!(
        fat.forget(DIR, "host-b-9.efi", NEW),
        Err(FatError::NotFound { .. })
    ));
    assert_eq!(names(&mut img), [NEW, OLD]);
    assert_eq!(read(&mut img, OLD), b"one");
}

#[test]
fn shared_chains_of_other_names_are_left_alone() {
    let mut img = image(FatType::Fat16);
    power_cut(&mut img, "host-a-1.efi", "host-b-1.efi", b"x");
    let report = Fat::open(&mut img, "test.img")
        .unwrap()
        .repair_twins(DIR)
        .unwrap();
    assert!(report.repaired.is_empty());
    assert_eq!(
        report.not_ours,
        [["host-a-1.efi".to_owned(), "host-b-1.efi".to_owned()]]
    );
    assert_eq!(names(&mut img).len(), 2);
}

#[test]
fn long_names_over_several_entries_and_a_cluster_boundary() {
    // 512-byte clusters: 16 entries per directory cluster. Fill EFI/Linux
    // until two free entries are left in its cluster, then write two long
    // names of 5 entries each (4 LFN + 8.3), the first across the boundary.
    let mut img = image(FatType::Fat32);
    let data_offset = Fat::open(&mut img, "test.img")
        .unwrap()
        .geometry()
        .data_offset;
    let left_in_cluster = |img: &mut Image, name: &str| {
        let end = entry(img, name).slots.last().unwrap() + 32;
        (512 - (end - data_offset) % 512) % 512 / 32
    };
    let mut n = 0;
    loop {
        let name = format!("F{n}.BIN");
        write(&mut img, &name, b"f");
        n += 1;
        assert!(n < 64, "never two entries left before the cluster's end");
        if left_in_cluster(&mut img, &name) == 2 {
            break;
        }
    }
    let version = "2026.12.02_build.1234567890";
    let old = format!("host-b-{version}+3.efi");
    let new = format!("host-b-{version}+2-1.efi");
    assert!(old.len() > 39 && new.len() > 39, "needs 4 LFN entries");
    power_cut(&mut img, &old, &new, &content(3000));

    let spans = entry(&mut img, &old);
    assert_eq!(spans.slot_count(), 5);
    let gaps: Vec<u64> = spans.slots.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().any(|&g| g != 32),
        "not across clusters: {gaps:?}"
    );
    // Upper or lower case: FAT compares names case-insensitively.
    let mut fat = Fat::open(&mut img, "test.img").unwrap();
    fat.forget(&DIR.to_uppercase(), &old.to_uppercase(), &new)
        .unwrap();
    let mut expected = names(&mut img);
    expected.retain(|n| n.starts_with('F'));
    expected.push(new.clone());
    expected.sort();
    assert_eq!(names(&mut img), expected);
    fill_and_remove(&mut img);
    assert_eq!(read(&mut img, &new), content(3000));
}

#[test]
fn lfn_checksum_and_short_names() {
    // Known value: the checksum of "FOO     BAR".
    let mut short = [b' '; 11];
    short[..3].copy_from_slice(b"FOO");
    short[8..].copy_from_slice(b"BAR");
    let sum = short.iter().fold(0u8, |s, &b| {
        ((s & 1) << 7).wrapping_add(s >> 1).wrapping_add(b)
    });
    assert_eq!(lfn_checksum(&short), sum);
    let mut raw = [0u8; 32];
    raw[..11].copy_from_slice(&short);
    assert_eq!(short_name(&raw), "FOO.BAR");
    raw[12] = 0x18;
    assert_eq!(short_name(&raw), "foo.bar");
}

#[test]
fn boot_sectors_that_are_not_fat_are_refused() {
    let mut img = image(FatType::Fat32);
    let good = img.get_ref()[..512].to_vec();
    assert!(Geometry::parse(&good).is_ok());
    for (at, byte, field) in [
        (510, 0, "0x55AA"),
        (11, 3, "bytes per sector"),
        (13, 3, "sectors per cluster"),
        (16, 0, "0 FATs"),
    ] {
        let mut bad = good.clone();
        bad[at] = byte;
        assert!(
            Geometry::parse(&bad).unwrap_err().contains(field),
            "{field}"
        );
    }
    img.get_mut()[510] = 0;
    let err = Fat::open(&mut img, "/dev/vda1").err().unwrap().to_string();
    assert!(
        err.contains("/dev/vda1") && err.contains("fsck.fat"),
        "{err}"
    );
    assert!(Fat::open(Cursor::new(vec![0u8; 100]), "short").is_err());
}
