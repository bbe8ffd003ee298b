//! Test support: FAT images built with the `fatfs` crate (a FAT
//! implementation we did not write), and the power-cut state made by
//! patching the new name's 8.3 entry to the old one's start cluster and
//! size, as vfat's rename leaves it. For this crate's tests only.

use std::io::{Cursor, Read as _, Write as _};

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};

use super::{Entry, Fat};

pub type Image = Cursor<Vec<u8>>;

pub const DIR: &str = "EFI/Linux";
pub const OLD: &str = "host-b-2+2-1.efi";
pub const NEW: &str = "host-b-2+1-2.efi";

/// A formatted image of `kind` with `EFI/Linux`.
pub fn image(kind: FatType) -> Image {
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
    for dir in ["EFI", DIR] {
        fix_dot_entries(&mut img, dir);
    }
    img
}

/// fatfs 0.3.6 writes an LFN entry before `.` and `..` of a new directory
/// (rafalh/rust-fatfs#117), which `fsck.fat` reports. Moves `.` and `..`
/// to the first two slots of directory `dir`, as vfat writes them.
fn fix_dot_entries(img: &mut Image, dir: &str) {
    let (parent, name) = dir.rsplit_once('/').unwrap_or(("", dir));
    let mut fat = Fat::open(&mut *img, "test.img").unwrap();
    let start = fat
        .list(parent)
        .unwrap()
        .into_iter()
        .find(|e| e.name == name)
        .unwrap()
        .start_cluster;
    let at = fat.geometry().cluster_offset(start) as usize;
    let raw = img.get_mut();
    let slot = |i: usize| at + i * 32..at + (i + 1) * 32;
    if raw[at + 11] != 0x0F {
        return; // a fixed fatfs
    }
    assert_eq!(&raw[slot(1)][..2], b". ");
    raw.copy_within(slot(1), at);
    raw.copy_within(slot(3), at + 32);
    if parent.is_empty() {
        // `..` of a directory in the root says cluster 0, on FAT32 too.
        raw[at + 32 + 20..at + 32 + 22].fill(0);
        raw[at + 32 + 26..at + 32 + 28].fill(0);
    }
    // Free (deleted) entries: the directory may go on after them.
    raw[slot(2).start..slot(3).end].fill(0);
    raw[slot(2).start] = 0xE5;
    raw[slot(3).start] = 0xE5;
}

pub fn with_fs<T>(img: &mut Image, f: impl FnOnce(&FileSystem<&mut Image>) -> T) -> T {
    img.set_position(0);
    let fs = FileSystem::new(img, FsOptions::new()).unwrap();
    let out = f(&fs);
    fs.unmount().unwrap();
    out
}

pub fn write(img: &mut Image, name: &str, content: &[u8]) {
    with_fs(img, |fs| {
        let mut file = fs.root_dir().create_file(&format!("{DIR}/{name}")).unwrap();
        file.truncate().unwrap();
        file.write_all(content).unwrap();
    });
}

pub fn read(img: &mut Image, name: &str) -> Vec<u8> {
    with_fs(img, |fs| {
        let mut bytes = Vec::new();
        let mut file = fs.root_dir().open_file(&format!("{DIR}/{name}")).unwrap();
        file.read_to_end(&mut bytes).unwrap();
        bytes
    })
}

/// The names in `EFI/Linux`, as fatfs lists them, sorted.
pub fn names(img: &mut Image) -> Vec<String> {
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
pub fn fill_and_remove(img: &mut Image) {
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

/// `name`'s entry in `EFI/Linux`, as this module lists it.
pub fn entry(img: &mut Image, name: &str) -> Entry {
    let mut fat = Fat::open(img, "test.img").unwrap();
    let entries = fat.list(DIR).unwrap();
    entries.into_iter().find(|e| e.name == name).unwrap()
}

/// Patches `name`'s 8.3 entry to `start` and `size`.
pub fn patch(img: &mut Image, name: &str, start: u32, size: u32) {
    let at = *entry(img, name).slots.last().unwrap() as usize;
    let raw = img.get_mut();
    raw[at + 20..at + 22].copy_from_slice(&((start >> 16) as u16).to_le_bytes());
    raw[at + 26..at + 28].copy_from_slice(&(start as u16).to_le_bytes());
    raw[at + 28..at + 32].copy_from_slice(&size.to_le_bytes());
}

/// `old` with `content`, then `new` pointing at the same chain: a rename
/// cut between its two halves.
pub fn power_cut(img: &mut Image, old: &str, new: &str, content: &[u8]) {
    write(img, old, content);
    write(img, new, b"");
    let e = entry(img, old);
    patch(img, new, e.start_cluster, e.size);
}

/// Bytes that are not all alike (a stand-in UKI).
pub fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}
