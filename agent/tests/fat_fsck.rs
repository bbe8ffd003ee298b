//! The repair of a UKI left under two FAT names, checked by a FAT checker
//! we did not write: `fsck.fat -n` (dosfstools) finds the two names sharing
//! one cluster chain before [`agent::host::esp::repair_twins`], and
//! afterwards says exactly what it says of an image where the rename
//! finished, on FAT16 and FAT32 image files (no root needed).

use std::process::Command;

use agent::host::esp::repair_twins;
use agent::host::fat::testing::{NEW, OLD, content, image, names, power_cut, read, write};
use fatfs::FatType;

/// `fsck.fat -n` (check only, never write) of `path`: success and output.
fn fsck(path: &std::path::Path) -> (bool, String) {
    let out = Command::new("fsck.fat")
        .arg("-n")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run fsck.fat ({e}); run `cargo xtask deps`"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Writes `img` to `esp.img` in a new directory.
fn save(img: &std::io::Cursor<Vec<u8>>) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("esp.img");
    std::fs::write(&path, img.get_ref()).unwrap();
    (tmp, path)
}

#[test]
fn fsck_finds_the_power_cut_state_and_a_clean_esp_after_the_repair() {
    for kind in [FatType::Fat16, FatType::Fat32] {
        let uki = content(20_000);
        let mut img = image(kind);
        power_cut(&mut img, OLD, NEW, &uki);
        let (_tmp, path) = save(&img);
        // What fsck.fat says about an image where the rename finished.
        let mut done = image(kind);
        write(&mut done, NEW, &uki);
        let (_done_tmp, done_path) = save(&done);
        let (done_clean, expected) = fsck(&done_path);
        assert!(done_clean, "{kind:?}: the reference image:\n{expected}");

        let (clean, before) = fsck(&path);
        assert!(
            !clean,
            "{kind:?}: fsck.fat accepted two names on one chain:\n{before}"
        );
        assert_ne!(
            before.replace(&*path.to_string_lossy(), "ESP"),
            expected.replace(&*done_path.to_string_lossy(), "ESP")
        );

        let report = repair_twins(&path).unwrap();
        assert_eq!(report.repaired.len(), 1, "{kind:?}: {report:?}");
        let (clean, after) = fsck(&path);
        assert_eq!(
            (clean, after.replace(&*path.to_string_lossy(), "ESP")),
            (
                done_clean,
                expected.replace(&*done_path.to_string_lossy(), "ESP")
            ),
            "{kind:?}: fsck.fat after the repair, and of an image where the rename finished"
        );
        assert!(
            !after.contains("share clusters") && !after.contains(NEW) && !after.contains(OLD),
            "{kind:?}: {after}"
        );

        let mut img = std::io::Cursor::new(std::fs::read(&path).unwrap());
        assert_eq!(names(&mut img), [NEW]);
        assert_eq!(read(&mut img, NEW), uki);
    }
}
