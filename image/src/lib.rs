//! The library behind `provisioner image build`: the inspection ramdisk (Debian's kernel
//! and a cpio initramfs with `node-agent` as init) and the immutable A/B host disk image.
//!
//! Modules: [`kernel`] fetches and caches Debian's kernel package with apt, [`packages`]
//! other Debian packages; [`cpio`] writes the newc archives the kernel unpacks;
//! [`modules`] picks the drivers and their load order; [`ramdisk`] builds `vmlinuz`,
//! `initramfs` and `manifest.json`; [`host`] builds the host image from [`rootfs`] (the
//! erofs root), [`verity`] (its hash tree), [`uki`] (the unified kernel image), [`esp`]
//! (the FAT32 ESP) and [`disk`] (the GPT disk); [`progress`] is how long steps are
//! reported.
//!
//! Invariant: building is deterministic (same inputs, same bytes) and never needs root or
//! loop devices. The pure cores (cpio, package fields, `.modinfo`, load order, archive
//! layout, verity tree, partition table, PE headers) are apart from the few functions
//! that run commands or touch files.

pub mod cpio;
pub mod disk;
pub mod esp;
pub mod host;
pub mod kernel;
pub mod modules;
pub mod packages;
pub mod progress;
pub mod ramdisk;
pub mod rootfs;
pub mod tool;
pub mod uki;
pub mod verity;

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A file or directory that could not be read or written: which one, doing what.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {action}")]
pub struct FileError {
    pub path: PathBuf,
    pub action: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// For `map_err`: an I/O error on `path` while doing `action`.
pub(crate) fn file_error(
    path: &Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_owned();
    move |source| FileError {
        path,
        action,
        source,
    }
}

/// Lowercase hex of the SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    verity::hex(&sha2::Sha256::digest(bytes))
}

/// Writes `bytes` to `path` through a temporary file in the same directory, so a reader
/// never sees half a file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(file_error(dir, "creating a file"))?;
    tmp.write_all(bytes).map_err(file_error(path, "writing"))?;
    // NamedTempFile creates 0600; outputs are for others to read (a web server, a test).
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(file_error(path, "setting its mode"))?;
    tmp.as_file()
        .sync_all()
        .map_err(file_error(path, "writing"))?;
    tmp.persist(path)
        .map_err(|e| file_error(path, "writing")(e.error))?;
    Ok(())
}
