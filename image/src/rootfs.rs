//! One root slot's contents (`root.img`): a staging directory made from the agent,
//! Debian's `busybox-static` and the kernel's modules, packed with `mkfs.erofs` (lz4hc),
//! padded to whole verity blocks, with the [`crate::verity`] hash tree appended.
//!
//! Tree: `/usr/bin/node-agent`; `/bin/busybox` and one symlink per applet (the list comes
//! from running that busybox with `--list`); `/lib/modules/<release>/...` and
//! `/lib/modules/load-order` (the ramdisk's format); `/etc/os-release`;
//! `/etc/provisioner/trust.pub` when a trust key is given; empty `proc sys dev run var
//! tmp efi mnt`.
//!
//! Invariants: every mode is set explicitly (no umask dependence); `mkfs.erofs` runs with
//! a fixed timestamp and UUID, `--all-root`, no xattrs and without SOURCE_DATE_EPOCH in
//! its environment, so the bytes depend only on the tree and the given time. The texts
//! ([`os_release`]) and the image layout ([`RootLayout`]) are pure.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::file_error;
use crate::ramdisk::RamdiskModule;

/// What both the UKI's initramfs and the root need: the root's device-mapper and
/// verity, the file systems of root, `/var` and the ESP, EFI variables (boot counting)
/// and the watchdogs.
pub const BOOT_MODULES: &[&str] = &[
    // First: libcrc32c (erofs, ext4's metadata checksums) asks the crypto API for "crc32c"
    // when it loads; with no modprobe in the image that alias is never loaded on demand, and
    // libcrc32c, then erofs, fail with ENOENT. The generic implementation must load first.
    "crc32c_generic",
    "dm_mod",
    "dm_verity",
    "erofs",
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_utf8",
    "nls_ascii",
    "efivarfs",
    "i6300esb",
    "iTCO_wdt",
];

/// The roles' modules, in the root only: networking (bridge, VLAN, bond, macvlan, veth,
/// tap), KVM, and the NVMe-oF and iSCSI targets.
pub const ROLE_MODULES: &[&str] = &[
    "bridge",
    "8021q",
    "bonding",
    "macvlan",
    "veth",
    "tun",
    "vhost_net",
    "kvm",
    "kvm_intel",
    "kvm_amd",
    "nvmet",
    "nvmet_tcp",
    "target_core_mod",
    "target_core_iblock",
    "iscsi_target_mod",
];

/// The disk drivers of [`crate::modules::DRIVERS`] the initramfs needs to reach the root:
/// the lab's virtio and the servers' NVMe, SATA, SAS and RAID controllers.
pub const INITRD_DISK_DRIVERS: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "nvme",
    "ahci",
    "sd_mod",
    "megaraid_sas",
    "mpt3sas",
    "smartpqi",
];

/// The root's modules: the ramdisk's drivers, [`BOOT_MODULES`], [`ROLE_MODULES`].
pub fn root_modules() -> Vec<&'static str> {
    [crate::modules::DRIVERS, BOOT_MODULES, ROLE_MODULES].concat()
}

/// The UKI initramfs's modules: [`BOOT_MODULES`] (crc32c first), then the disks.
pub fn initrd_modules() -> Vec<&'static str> {
    [BOOT_MODULES, INITRD_DISK_DRIVERS].concat()
}

/// Directories the agent mounts on or writes to, empty in the image.
pub const EMPTY_DIRS: &[&str] = &["proc", "sys", "dev", "run", "var", "tmp", "efi", "mnt"];

/// Why the root file system could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Tool(#[from] crate::tool::ToolError),
    #[error("{busybox} --list printed no applets; is the busybox-static package complete?")]
    NoApplets { busybox: PathBuf },
    #[error(transparent)]
    File(#[from] crate::FileError),
}

/// `/etc/os-release` of the host (also the UKI's `.osrel`: systemd-boot sorts entries by
/// `ID`, then `VERSION_ID`).
pub fn os_release(version: &str) -> String {
    format!(
        "NAME=\"Provisioner host\"\nID=provisioner-host\nVERSION_ID={version}\nPRETTY_NAME=\"Provisioner host {version}\"\n"
    )
}

/// The names busybox prints with `--list`, one a line; `busybox` itself left out.
pub fn applets(list: &str) -> Vec<String> {
    let mut out: Vec<String> = list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The inputs of a root file system.
#[derive(Debug, Clone, Copy)]
pub struct RootInputs<'a> {
    pub agent: &'a [u8],
    /// The busybox binary (`bin/busybox` of the unpacked `busybox-static`).
    pub busybox: &'a Path,
    pub release: &'a str,
    pub modules: &'a [RamdiskModule],
    pub version: &'a str,
    pub trust_key: Option<&'a [u8]>,
}

fn dir(path: &Path) -> Result<(), crate::FileError> {
    std::fs::create_dir_all(path).map_err(file_error(path, "creating a directory"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(file_error(path, "setting its mode"))
}

fn file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), crate::FileError> {
    if let Some(parent) = path.parent() {
        dir(parent)?;
    }
    std::fs::write(path, bytes).map_err(file_error(path, "writing"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(file_error(path, "setting its mode"))
}

/// Fills the empty directory `root` with the host's tree.
pub fn stage(root: &Path, inputs: &RootInputs) -> Result<usize, RootfsError> {
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755))
        .map_err(file_error(root, "setting its mode"))?;
    file(&root.join("usr/bin/node-agent"), inputs.agent, 0o755)?;
    let busybox = std::fs::read(inputs.busybox).map_err(file_error(inputs.busybox, "reading"))?;
    file(&root.join("bin/busybox"), &busybox, 0o755)?;
    let list = Command::new(inputs.busybox)
        .arg("--list")
        .output()
        .map_err(|source| crate::tool::ToolError::Spawn {
            tool: "busybox",
            package: "busybox-static",
            source,
        })?;
    let applets = applets(&String::from_utf8_lossy(&list.stdout));
    if applets.is_empty() {
        return Err(RootfsError::NoApplets {
            busybox: inputs.busybox.to_owned(),
        });
    }
    for applet in &applets {
        let link = root.join("bin").join(applet);
        std::os::unix::fs::symlink("busybox", &link)
            .map_err(file_error(&link, "creating a symlink"))?;
    }
    let modules = root.join("lib/modules");
    for m in inputs.modules {
        file(
            &modules.join(inputs.release).join(&m.path),
            &m.contents,
            0o644,
        )?;
    }
    file(
        &modules.join("load-order"),
        crate::ramdisk::load_order_file(inputs.modules).as_bytes(),
        0o644,
    )?;
    file(
        &root.join("etc/os-release"),
        os_release(inputs.version).as_bytes(),
        0o644,
    )?;
    if let Some(key) = inputs.trust_key {
        file(&root.join("etc/provisioner/trust.pub"), key, 0o644)?;
    }
    for d in EMPTY_DIRS {
        dir(&root.join(d))?;
    }
    // tmp is world-writable and sticky, as everywhere.
    let tmp = root.join("tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
        .map_err(file_error(&tmp, "setting its mode"))?;
    Ok(applets.len())
}

/// The `mkfs.erofs` arguments for `tree` into `out`.
pub fn mkfs_args(tree: &Path, out: &Path, epoch: u64, uuid: &str) -> Vec<std::ffi::OsString> {
    vec![
        "-zlz4hc".into(),
        "-x-1".into(),
        format!("-T{epoch}").into(),
        format!("-U{}", uuid.to_ascii_lowercase()).into(),
        "--all-root".into(),
        "--quiet".into(),
        out.into(),
        tree.into(),
    ]
}

/// Runs `mkfs.erofs` and returns the image padded to whole verity blocks.
pub fn mkfs(tree: &Path, out: &Path, epoch: u64, uuid: &str) -> Result<Vec<u8>, RootfsError> {
    let mut command = Command::new("mkfs.erofs");
    command
        .args(mkfs_args(tree, out, epoch, uuid))
        // It would force extended inodes when set: -T alone fixes the times.
        .env_remove("SOURCE_DATE_EPOCH");
    crate::tool::run(&mut command, "mkfs.erofs", "erofs-utils")?;
    let mut image = std::fs::read(out).map_err(file_error(out, "reading the erofs image"))?;
    let block = crate::verity::BLOCK;
    image.resize(image.len().next_multiple_of(block), 0);
    Ok(image)
}

/// A slot's image: the file system, then its hash tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootLayout {
    pub data_blocks: u64,
    pub hash_start_block: u64,
    pub hash_blocks: u64,
}

impl RootLayout {
    /// For a padded file system of `fs_len` bytes and a tree of `tree_len` bytes.
    pub fn new(fs_len: usize, tree_len: usize) -> RootLayout {
        let block = crate::verity::BLOCK;
        let data_blocks = (fs_len / block) as u64;
        RootLayout {
            data_blocks,
            hash_start_block: data_blocks,
            hash_blocks: (tree_len / block) as u64,
        }
    }

    pub fn bytes(&self) -> u64 {
        (self.hash_start_block + self.hash_blocks) * model::host::VERITY_BLOCK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_names_the_host_and_version() {
        assert_eq!(
            os_release("1.2"),
            "NAME=\"Provisioner host\"\nID=provisioner-host\nVERSION_ID=1.2\nPRETTY_NAME=\"Provisioner host 1.2\"\n"
        );
    }

    #[test]
    fn applets_are_sorted_without_busybox_itself() {
        assert_eq!(applets("sh\nls\n\nbusybox\nls\n"), ["ls", "sh"]);
    }

    #[test]
    fn mkfs_is_pinned_and_the_tree_follows_the_data() {
        let args = mkfs_args(Path::new("t"), Path::new("o"), 42, "ABC-D");
        assert_eq!(
            args,
            [
                "-zlz4hc",
                "-x-1",
                "-T42",
                "-Uabc-d",
                "--all-root",
                "--quiet",
                "o",
                "t"
            ]
        );
        let l = RootLayout::new(10 * 4096, 4096);
        assert_eq!(
            (l.data_blocks, l.hash_start_block, l.bytes()),
            (10, 10, 11 * 4096)
        );
    }

    #[test]
    fn initrd_modules_are_in_the_root_too() {
        let root = root_modules();
        for m in initrd_modules() {
            assert!(root.contains(&m), "{m} is in the initrd but not the root");
        }
    }
}
