//! Images built and checked with the `fatfs` crate ([`super::testing`]).

use std::io::{Cursor, Write as _};

use fatfs::FatType;

use super::testing::*;
use super::*;

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
    // The repair lists them and leaves them alone.
    let report = fat.repair_twins(DIR).unwrap();
    assert!(report.repaired.is_empty());
    assert_eq!(report.not_ours, [[OLD.to_owned(), NEW.to_owned()]]);
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

#[test]
fn the_esp_device_is_repaired_and_synced_in_place() {
    let mut img = image(FatType::Fat32);
    power_cut(&mut img, "host-a-3+1-2.efi", "host-a-3.efi", b"blessed");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("esp.img");
    std::fs::write(&path, img.get_ref()).unwrap();
    let report = crate::host::esp::repair_twins(&path).unwrap();
    assert_eq!(
        report.repaired,
        [Repaired {
            kept: "host-a-3.efi".into(),
            removed: "host-a-3+1-2.efi".into()
        }]
    );
    let mut img = Cursor::new(std::fs::read(&path).unwrap());
    assert_eq!(names(&mut img), ["host-a-3.efi"]);
    let missing = crate::host::esp::repair_twins(&tmp.path().join("none")).unwrap_err();
    assert!(
        missing.to_string().contains("none: cannot open"),
        "{missing}"
    );
}

#[test]
fn orphan_long_name_pieces_are_skipped() {
    // A forget cut after its 8.3 entry was marked: the LFN pieces left
    // belong to no name.
    let mut img = image(FatType::Fat16);
    power_cut(&mut img, OLD, NEW, b"uki");
    let old = entry(&mut img, OLD);
    let short_at = *old.slots.last().unwrap() as usize;
    img.get_mut()[short_at] = DELETED;
    let listed = Fat::open(&mut img, "test.img").unwrap().list(DIR).unwrap();
    assert_eq!(listed.iter().map(|e| &e.name).collect::<Vec<_>>(), [NEW]);
    assert_eq!(names(&mut img), [NEW]);

    // LFN pieces whose checksum is not the next 8.3 name's: that name is
    // listed by its 8.3 form.
    let mut img = image(FatType::Fat16);
    write(&mut img, "host-a-1.efi", b"a");
    let e = entry(&mut img, "host-a-1.efi");
    let first_lfn = e.slots[0] as usize;
    img.get_mut()[first_lfn + 13] ^= 0xFF;
    let listed = Fat::open(&mut img, "test.img").unwrap().list(DIR).unwrap();
    assert_eq!(listed.len(), 1);
    assert_ne!(listed[0].name, "host-a-1.efi");
    assert_eq!(listed[0].slot_count(), 1);
}

#[test]
fn an_esp_as_the_image_builder_writes_it() {
    // The geometry `image::esp::write` gives (`mkfs.fat -F 32 -s 4 -n ESP`):
    // 256 MiB FAT32, 2 KiB clusters, a volume label, the loader's files next
    // to EFI/Linux; made here with fatfs (dot entries fixed) to stay fast.
    let mut img = Cursor::new(vec![0u8; 256 << 20]);
    fatfs::format_volume(
        &mut img,
        fatfs::FormatVolumeOptions::new()
            .fat_type(FatType::Fat32)
            .bytes_per_cluster(2048)
            .volume_label(*b"ESP        "),
    )
    .unwrap();
    with_fs(&mut img, |fs| {
        let root = fs.root_dir();
        let efi = root.create_dir("EFI").unwrap();
        efi.create_dir("BOOT").unwrap();
        efi.create_dir("systemd").unwrap();
        efi.create_dir("Linux").unwrap();
        root.create_dir("loader").unwrap();
        for (name, bytes) in [
            ("EFI/BOOT/BOOTX64.EFI", &b"systemd-boot"[..]),
            ("loader/loader.conf", b"timeout 0\n"),
            ("EFI/Linux/host-a-1.efi", b"slot a"),
        ] {
            root.create_file(name).unwrap().write_all(bytes).unwrap();
        }
    });
    let uki = content(70_000);
    power_cut(&mut img, "host-b-2+3.efi", "host-b-2+2-1.efi", &uki);
    let mut fat = Fat::open(&mut img, "esp").unwrap();
    assert_eq!(fat.geometry().kind, FatKind::Fat32);
    let report = fat.repair_twins(DIR).unwrap();
    assert_eq!(
        report.repaired,
        [Repaired {
            kept: "host-b-2+2-1.efi".into(),
            removed: "host-b-2+3.efi".into()
        }]
    );
    assert_eq!(names(&mut img), ["host-a-1.efi", "host-b-2+2-1.efi"]);
    assert_eq!(read(&mut img, "host-b-2+2-1.efi"), uki);
}
