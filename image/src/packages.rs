//! Debian packages other than the kernel (`busybox-static`, `systemd-boot-efi`), fetched
//! with `apt-get download`, cached under `CACHE/debs/` and unpacked there with
//! `dpkg-deb -x`, like [`crate::kernel`] does for the kernel.
//!
//! Invariants: the version wanted is apt's candidate (`apt-cache show --no-all-versions`,
//! read from the local package lists: a cached build needs no network); a cached `.deb`
//! of that version is reused as is; an unpacked tree appears under its final name only
//! once complete. Parsing ([`candidate_version`]) is pure.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::file_error;
use crate::kernel::{self, KernelError};
use crate::progress::Progress;

/// An unpacked package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub package: String,
    pub version: String,
    /// The `.deb` in the cache.
    pub deb: PathBuf,
    /// The directory it was unpacked into (holds `usr/`, `bin/`, ...).
    pub root: PathBuf,
}

/// The `Version:` field of `apt-cache show --no-all-versions` output.
pub fn candidate_version(show: &str) -> Option<String> {
    show.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Fetches (unless cached) and unpacks `package` (amd64) into `cache/debs/`.
pub fn fetch(
    cache: &Path,
    package: &str,
    progress: &dyn Progress,
) -> Result<Unpacked, KernelError> {
    let dir = cache.join("debs");
    std::fs::create_dir_all(&dir).map_err(file_error(&dir, "creating the package cache"))?;
    let show = kernel::run(
        Command::new("apt-cache")
            .args(["show", "--no-all-versions"])
            .arg(package),
        "run `apt-get update` (the package lists may be stale or missing)",
    )?;
    let version = candidate_version(&show).ok_or_else(|| KernelError::NoCandidate {
        package: package.to_owned(),
    })?;
    let deb = dir.join(kernel::deb_file_name(package, &version));
    if !deb.is_file() {
        let step = progress.begin(&format!("downloading {package} {version}"));
        let scratch = kernel::tempdir_in(&dir)?;
        let got = kernel::apt_download(scratch.path(), package, Some(&version))?;
        std::fs::rename(&got, &deb)
            .map_err(file_error(&deb, "moving the package into the cache"))?;
        let size = std::fs::metadata(&deb).map(|m| m.len()).unwrap_or(0);
        progress.finish(step, &format!("{} KiB", size / 1024));
    }
    let root = dir.join(kernel::deb_file_name(package, &version).trim_end_matches(".deb"));
    if !root.is_dir() {
        let step = progress.begin(&format!("unpacking {package} with dpkg-deb -x"));
        kernel::unpack_into(&deb, &root)?;
        progress.finish(step, &root.display().to_string());
    }
    Ok(Unpacked {
        package: package.to_owned(),
        version,
        deb,
        root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_candidate_version_is_read_from_apt_cache_show() {
        let show = "Package: busybox-static\nSource: busybox (1:1.35.0-4+deb12u1)\nVersion: 1:1.35.0-4+deb12u1+b1\nInstalled-Size: 2003\n";
        assert_eq!(
            candidate_version(show),
            Some("1:1.35.0-4+deb12u1+b1".to_owned())
        );
        assert_eq!(candidate_version("N: Unable to locate package x\n"), None);
    }
}
