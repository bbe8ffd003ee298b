//! The EFI System Partition: FAT32 made by `mkfs.fat` (dosfstools) on a file and filled
//! with `mmd`/`mcopy` (mtools), as build-time tools like `mkfs.erofs`: no mount, no root.
//! (The `fatfs` crate was used first; its 0.3.6 writes a long-name entry before `.` and
//! `..` of every new directory, rafalh/rust-fatfs#117, and `fsck.fat` then "repairs" the
//! ESP into a broken one. The test below runs `fsck.fat -n` on the result.)
//!
//! Invariants: deterministic: a fixed volume id and label, `--invariant`, every timestamp
//! from SOURCE_DATE_EPOCH in UTC (the tools honour it; files are staged with that mtime and
//! copied with `mcopy -m`), files and directories created in the order given.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::file_error;

/// The ESP's volume label.
pub const LABEL: &str = "ESP";
/// The ESP's volume id (serial number), fixed so that builds are reproducible.
pub const VOLUME_ID: u32 = 0x4853_5431;
/// FAT32 needs at least 65525 clusters: 2 KiB clusters (4 sectors) give about 130 000 in
/// 256 MiB.
const SECTORS_PER_CLUSTER: u32 = 4;

/// `loader/loader.conf`: boot the default entry at once, no editing of the command line
/// (it carries the root hash).
pub const LOADER_CONF: &str = "timeout 0\neditor no\n";

/// Why the ESP could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error(transparent)]
    Tool(#[from] crate::tool::ToolError),
    #[error(transparent)]
    File(#[from] crate::FileError),
}

/// The tool runs of [`write`], in order: `(tool, package, arguments)`. Pure, so the
/// arguments are tested without the tools.
pub fn commands(
    image: &Path,
    staged: &[(PathBuf, String)],
) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let img = image.display().to_string();
    let mut runs = vec![(
        "mkfs.fat",
        "dosfstools",
        vec![
            "-F".into(),
            "32".into(),
            "-S".into(),
            "512".into(),
            "-s".into(),
            SECTORS_PER_CLUSTER.to_string(),
            "-n".into(),
            LABEL.into(),
            "-i".into(),
            format!("{VOLUME_ID:08X}"),
            "--invariant".into(),
            img.clone(),
        ],
    )];
    let mut made: Vec<String> = Vec::new();
    for (source, target) in staged {
        let parts: Vec<&str> = target.split('/').collect();
        for depth in 1..parts.len() {
            let dir = parts[..depth].join("/");
            if !made.contains(&dir) {
                runs.push((
                    "mmd",
                    "mtools",
                    vec!["-i".into(), img.clone(), format!("::/{dir}")],
                ));
                made.push(dir);
            }
        }
        runs.push((
            "mcopy",
            "mtools",
            vec![
                "-i".into(),
                img.clone(),
                "-m".into(),
                source.display().to_string(),
                format!("::/{target}"),
            ],
        ));
    }
    runs
}

/// Creates `path` as a FAT32 file system of `size` bytes holding `files` (path with `/`
/// separators, contents), every timestamp at `epoch`.
pub fn write(path: &Path, size: u64, files: &[(&str, &[u8])], epoch: u64) -> Result<(), EspError> {
    let error = |action| file_error(path, action);
    let file = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(error("creating the ESP image"))?;
    file.set_len(size).map_err(error("sizing the ESP image"))?;
    drop(file);
    let stage_dir = path.with_extension("staging");
    let _ = std::fs::remove_dir_all(&stage_dir);
    std::fs::create_dir_all(&stage_dir).map_err(file_error(&stage_dir, "creating"))?;
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch);
    let mut staged = Vec::new();
    for (i, (name, contents)) in files.iter().enumerate() {
        let source = stage_dir.join(format!("{i}"));
        std::fs::write(&source, contents).map_err(file_error(&source, "staging an ESP file"))?;
        std::fs::File::options()
            .write(true)
            .open(&source)
            .and_then(|f| f.set_modified(mtime))
            .map_err(file_error(&source, "setting the time of an ESP file"))?;
        staged.push((source, (*name).to_owned()));
    }
    for (tool, package, args) in commands(path, &staged) {
        let mut command = Command::new(tool);
        command
            .args(&args)
            .env("SOURCE_DATE_EPOCH", epoch.to_string())
            .env("TZ", "UTC")
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("MTOOLSRC", "/dev/null");
        crate::tool::run(&mut command, tool, package)?;
    }
    let _ = std::fs::remove_dir_all(&stage_dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_made_once_before_their_files() {
        let staged = vec![
            (PathBuf::from("/s/0"), "EFI/BOOT/BOOTX64.EFI".to_owned()),
            (PathBuf::from("/s/1"), "loader/loader.conf".to_owned()),
            (PathBuf::from("/s/2"), "EFI/Linux/host-a-1.efi".to_owned()),
        ];
        let runs = commands(Path::new("/o/esp.img"), &staged);
        let lines: Vec<String> = runs
            .iter()
            .map(|(tool, _, args)| format!("{tool} {}", args.join(" ")))
            .collect();
        assert_eq!(
            lines,
            [
                "mkfs.fat -F 32 -S 512 -s 4 -n ESP -i 48535431 --invariant /o/esp.img",
                "mmd -i /o/esp.img ::/EFI",
                "mmd -i /o/esp.img ::/EFI/BOOT",
                "mcopy -i /o/esp.img -m /s/0 ::/EFI/BOOT/BOOTX64.EFI",
                "mmd -i /o/esp.img ::/loader",
                "mcopy -i /o/esp.img -m /s/1 ::/loader/loader.conf",
                "mmd -i /o/esp.img ::/EFI/Linux",
                "mcopy -i /o/esp.img -m /s/2 ::/EFI/Linux/host-a-1.efi",
            ]
        );
    }
}
