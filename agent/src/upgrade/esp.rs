//! The upgrade's changes to the ESP's `EFI/Linux`: removing the target
//! slot's UKIs before its root is written, and installing the new UKI once
//! the root is verified.
//!
//! Invariants:
//! - Nothing is unlinked while two names of one slot and version exist (a
//!   UKI under two counter names, or our temp file next to the UKI it was
//!   being renamed to): a FAT rename cut by a power loss can leave both names
//!   on one cluster chain, and unlinking one frees the other's clusters
//!   ([`plan_removal`] refuses; the next host boot repairs such twins on the
//!   unmounted ESP, see `crate::host::fat`).
//! - Only names of the target slot are touched; the running slot's entries
//!   never are.
//! - A UKI appears under a `.efi` name only complete and synced: it is
//!   written as `host-SLOT-VERSION.tmp` (systemd-boot ignores it), synced,
//!   then renamed; the directory is synced and the filesystem `syncfs`ed
//!   after every change.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use model::host::{Slot, UkiName};

use crate::host::entries::parse_temp;
pub use crate::host::entries::temp_name;

use super::UpgradeError;

/// Which names of `EFI/Linux` to unlink so that nothing points at `slot`:
/// its UKIs and its leftover temp file. Refuses when one slot+version has two
/// names (see the module invariants). Pure.
pub fn plan_removal(names: &[String], slot: Slot) -> Result<Vec<String>, UpgradeError> {
    let mut by_version: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for name in names {
        let owner = UkiName::parse(name)
            .map(|u| (u.slot, u.version))
            .or_else(|| parse_temp(name));
        if let Some((owner_slot, version)) = owner
            && owner_slot == slot
        {
            by_version.entry(version).or_default().push(name.clone());
        }
    }
    if let Some(names) = by_version.values().find(|names| names.len() > 1) {
        return Err(UpgradeError::TwoNames {
            names: names.clone(),
        });
    }
    Ok(by_version.into_values().flatten().collect())
}

/// `EFI/Linux` on the mounted ESP.
#[derive(Debug)]
pub struct UkiDir {
    dir: PathBuf,
}

impl UkiDir {
    /// `dir` must exist (the ESP is mounted).
    pub fn open(dir: PathBuf) -> Result<UkiDir, UpgradeError> {
        if !dir.is_dir() {
            return Err(UpgradeError::NoEsp { path: dir });
        }
        Ok(UkiDir { dir })
    }

    fn io(&self, what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> UpgradeError {
        let path = path.to_owned();
        move |source| UpgradeError::Io { what, path, source }
    }

    /// The file names in the directory, sorted.
    pub fn names(&self) -> Result<Vec<String>, UpgradeError> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(self.io("cannot list", &self.dir))? {
            let entry = entry.map_err(self.io("cannot list", &self.dir))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Unlinks every name of `slot` ([`plan_removal`]), then syncs; the
    /// names removed.
    pub fn remove_slot(&self, slot: Slot) -> Result<Vec<String>, UpgradeError> {
        let doomed = plan_removal(&self.names()?, slot)?;
        for name in &doomed {
            let path = self.dir.join(name);
            std::fs::remove_file(&path).map_err(self.io("cannot remove", &path))?;
        }
        self.sync()?;
        Ok(doomed)
    }

    /// Free bytes on the ESP.
    pub fn free_bytes(&self) -> Result<u64, UpgradeError> {
        let stat = nix::sys::statvfs::statvfs(&self.dir).map_err(|e| UpgradeError::Io {
            what: "cannot read the free space of",
            path: self.dir.clone(),
            source: e.into(),
        })?;
        Ok(stat.blocks_available() * stat.fragment_size())
    }

    /// Writes `uki` as `slot`'s fresh entry (`host-SLOT-VERSION+3.efi`):
    /// temp name, fsync, rename (never replacing), fsync the directory, syncfs.
    /// The file name.
    pub fn install(&self, slot: Slot, version: &str, uki: &[u8]) -> Result<String, UpgradeError> {
        let name = UkiName::fresh(slot, version).file_name();
        let path = self.dir.join(&name);
        if path.exists() {
            // remove_slot ran first, so this is a second upgrade at the same time.
            return Err(UpgradeError::Io {
                what: "refusing to replace",
                path,
                source: std::io::ErrorKind::AlreadyExists.into(),
            });
        }
        let temp_file = temp_name(slot, version);
        let temp = self.dir.join(&temp_file);
        let mut file = File::create(&temp).map_err(self.io("cannot create", &temp))?;
        file.write_all(uki)
            .map_err(self.io("cannot write", &temp))?;
        file.sync_all().map_err(self.io("cannot sync", &temp))?;
        drop(file);
        // The host boot's bless rename: never replaces, then fsync of the directory and syncfs.
        crate::host::esp::rename_durably(&self.dir, &temp_file, &name)
            .map_err(UpgradeError::Esp)?;
        Ok(name)
    }

    /// fsync of the directory, then syncfs of the whole ESP.
    fn sync(&self) -> Result<(), UpgradeError> {
        let dir = File::open(&self.dir).map_err(self.io("cannot open", &self.dir))?;
        dir.sync_all().map_err(self.io("cannot sync", &self.dir))?;
        nix::unistd::syncfs(&dir).map_err(|e| UpgradeError::Io {
            what: "cannot syncfs",
            path: self.dir.clone(),
            source: e.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn removal_takes_the_target_slots_names_only() {
        let dir = names(&[
            "host-a-1.efi",
            "host-a-1+1-2.efi", // two names of slot a: refused only when a is the target
            "host-b-1+0-3.efi",
            "host-b-2.tmp",
            "linux.efi",
            "host-b-3.efi.bak",
        ]);
        assert_eq!(
            plan_removal(&dir, Slot::B).unwrap(),
            ["host-b-1+0-3.efi", "host-b-2.tmp"]
        );
        let err = plan_removal(&dir, Slot::A).unwrap_err().to_string();
        assert!(err.contains("host-a-1.efi and host-a-1+1-2.efi"), "{err}");
    }

    #[test]
    fn two_names_of_one_uki_are_never_unlinked() {
        for pair in [
            ["host-b-2+2-1.efi", "host-b-2+1-2.efi"], // a counter rename cut by power loss
            ["host-b-2.tmp", "host-b-2+3.efi"],       // our own rename cut
        ] {
            let err = plan_removal(&names(&pair), Slot::B).unwrap_err();
            assert!(matches!(&err, UpgradeError::TwoNames { names } if names.len() == 2));
            assert!(err.to_string().contains("frees"), "{err}");
        }
    }

    #[test]
    fn install_renames_a_synced_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let esp = UkiDir::open(tmp.path().to_owned()).unwrap();
        std::fs::write(tmp.path().join("host-b-1+0-3.efi"), b"old").unwrap();
        assert_eq!(esp.remove_slot(Slot::B).unwrap(), ["host-b-1+0-3.efi"]);
        assert_eq!(esp.install(Slot::B, "2", b"uki").unwrap(), "host-b-2+3.efi");
        assert_eq!(esp.names().unwrap(), ["host-b-2+3.efi"]);
        assert_eq!(
            std::fs::read(tmp.path().join("host-b-2+3.efi")).unwrap(),
            b"uki"
        );
        assert!(esp.install(Slot::B, "2", b"again").is_err());
        assert!(esp.free_bytes().unwrap() > 0);
        assert!(matches!(
            UkiDir::open(tmp.path().join("missing")),
            Err(UpgradeError::NoEsp { .. })
        ));
    }
}
