//! The I/O edge of boot counting: the UKI file names in `/efi/EFI/Linux`,
//! the loader's EFI variables in efivarfs, and the durable no-replace rename
//! that blesses (or condemns) an entry, as `systemd-bless-boot` does it:
//! `renameat2(RENAME_NOREPLACE)`, `fsync` of the directory, `syncfs`.
//! The decisions are in [`super::entries`]; before the ESP is mounted,
//! [`repair_twins`] edits its raw directory ([`super::fat`]).

use std::path::{Path, PathBuf};

use super::entries::{LOADER_GUID, decode_efivar_string};
use super::fat::{Fat, FatError, RepairReport};

/// Where the ESP is mounted, in the initramfs and in the host.
pub const ESP_MOUNT: &str = "/efi";
/// Where efivarfs is mounted.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// The UKI directory on the ESP mounted at `esp`.
pub fn uki_dir(esp: &Path) -> PathBuf {
    esp.join(model::host::UKI_DIR)
}

/// The file names in `dir`, sorted.
pub fn list(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// A `Loader*` string variable of systemd-boot; `None` when unset or not a
/// string.
pub fn loader_var(efivars: &Path, name: &str) -> Option<String> {
    let bytes = std::fs::read(efivars.join(format!("{name}-{LOADER_GUID}"))).ok()?;
    decode_efivar_string(&bytes)
}

/// Renames `from` to `to` inside `dir` without replacing an existing `to`,
/// then makes it durable: `fsync` of the directory and `syncfs` of its file
/// system (vfat writes the directory entries on either).
pub fn rename_durably(dir: &Path, from: &str, to: &str) -> Result<(), String> {
    use nix::fcntl::{OFlag, RenameFlags, open, renameat2};
    use nix::sys::stat::Mode;
    let what = |step: &str, err: nix::errno::Errno| {
        format!(
            "{step} {} -> {} in {}: {err}; check that the ESP is mounted read-write",
            from,
            to,
            dir.display()
        )
    };
    let dirfd = open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(|e| what("cannot open the directory for", e))?;
    renameat2(&dirfd, from, &dirfd, to, RenameFlags::RENAME_NOREPLACE)
        .map_err(|e| what("cannot rename", e))?;
    nix::unistd::fsync(&dirfd).map_err(|e| what("renamed but cannot fsync", e))?;
    nix::unistd::syncfs(&dirfd).map_err(|e| what("renamed but cannot syncfs", e))?;
    Ok(())
}

/// Repairs the UKIs left under two names by a power cut, on the UNMOUNTED
/// ESP device `dev` ([`Fat::repair_twins`] in `EFI/Linux`), then fsyncs the
/// device when anything was written.
pub fn repair_twins(dev: &Path) -> Result<RepairReport, FatError> {
    let device = dev.display().to_string();
    let io = |what: &str| {
        let (device, what) = (device.clone(), what.to_owned());
        move |source| FatError::Io {
            device,
            what,
            source,
        }
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(io("open read-write"))?;
    let mut fat = Fat::open(file, &device)?;
    let report = fat.repair_twins(model::host::UKI_DIR)?;
    if !report.repaired.is_empty() {
        fat.into_inner().sync_all().map_err(io("fsync"))?;
    }
    Ok(report)
}
