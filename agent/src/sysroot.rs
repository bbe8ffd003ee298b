//! Every file the agent reads or writes on the host goes through a
//! [`SysRoot`]: `/` on a real machine, a directory holding a recorded or
//! fake `sys/` (and `proc/`) tree in tests. Writes are logged in order, and
//! skipped in dry-run mode, so a test can check exactly what would have been
//! written and in which order.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use model::apply::Write;

/// A root directory for host paths, with a log of the writes made through it.
#[derive(Debug)]
pub struct SysRoot {
    root: PathBuf,
    dry_run: bool,
    writes: Vec<Write>,
}

impl SysRoot {
    /// Host paths under `root` (`/` on a real machine). With `dry_run`, writes
    /// are logged but not performed.
    pub fn new(root: impl Into<PathBuf>, dry_run: bool) -> SysRoot {
        SysRoot {
            root: root.into(),
            dry_run,
            writes: Vec::new(),
        }
    }

    /// Whether writes are only logged.
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// The real path of host path `path` (e.g. `/sys/bus/pci/devices`).
    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// The contents of host file `path`, trimmed.
    pub fn read(&self, path: &str) -> io::Result<String> {
        fs::read_to_string(self.path(path)).map(|s| s.trim().to_owned())
    }

    /// The raw bytes of host file `path` (binary files such as the SMBIOS
    /// table, EFI variables or SCSI VPD pages).
    pub fn read_bytes(&self, path: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(path))
    }

    /// The target of symlink `path` as written in the link (not resolved:
    /// sysfs links are relative, e.g. `../../devices/pci0000:00/...`), or
    /// `None` when `path` is not a symlink.
    pub fn read_link(&self, path: &str) -> Option<PathBuf> {
        fs::read_link(self.path(path)).ok()
    }

    /// The root directory (`/` on a real machine).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Host file `path` parsed as an unsigned number.
    pub fn read_u64(&self, path: &str) -> io::Result<u64> {
        let text = self.read(path)?;
        text.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{path}: expected a number, found {text:?}"),
            )
        })
    }

    /// Whether host path `path` exists (a dangling symlink counts: sysfs
    /// links are read by name with [`SysRoot::link_name`], not followed).
    pub fn exists(&self, path: &str) -> bool {
        let p = self.path(path);
        p.exists() || p.is_symlink()
    }

    /// The last component of the target of symlink `path` (e.g. the driver
    /// name of `.../driver`, the PCI address of `.../virtfn0`), or `None`
    /// when `path` is not a symlink. Targets are not resolved, so absolute
    /// links in a recorded tree cannot escape the root.
    pub fn link_name(&self, path: &str) -> Option<String> {
        let target = fs::read_link(self.path(path)).ok()?;
        Some(
            Path::new(&target)
                .file_name()?
                .to_string_lossy()
                .into_owned(),
        )
    }

    /// Names in host directory `path`, sorted; empty when it does not exist.
    pub fn list(&self, path: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path(path))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Writes `value` to host file `path` (logged; skipped in dry-run mode).
    /// Like the kernel's sysfs files, the file must already exist.
    pub fn write(&mut self, path: &str, value: &str) -> io::Result<()> {
        self.writes.push(Write {
            path: path.to_owned(),
            value: value.to_owned(),
        });
        if self.dry_run {
            return Ok(());
        }
        let real = self.path(path);
        if !real.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist", real.display()),
            ));
        }
        fs::write(real, value)
    }

    /// The writes made (or, in dry-run mode, that would have been made), in order.
    pub fn writes(&self) -> &[Write] {
        &self.writes
    }
}
