//! `provisioner image build host`: the immutable A/B host disk.
//!
//! Outputs in the output directory:
//! - `root.img`: one slot's erofs root ([`crate::rootfs`]) with its dm-verity tree
//!   ([`crate::verity`]) appended at block `data_blocks`;
//! - `uki.efi`: the UKI that boots it ([`crate::uki`]): Debian's kernel, an initramfs
//!   with the agent as `/init` and the modules that reach the root, the `.cmdline` of
//!   [`model::host::HostBoot`] (root hash, salt, block counts);
//! - `host.raw.zst` (and `host.raw` with `keep_raw`): the whole GPT disk
//!   ([`crate::disk`]): the ESP ([`crate::esp`]) with systemd-boot and the UKI under its
//!   blessed name, root-a = `root.img`, root-b and config zero, data an empty ext4;
//! - `manifest.json`: [`model::host::HostManifest`].
//!
//! Invariants: deterministic (the same inputs and SOURCE_DATE_EPOCH give the same bytes
//! of every output); no root, no loop device, no file of the build host in the image
//! (packages come from apt, tools run only at build time). Outputs appear under their
//! final names only when complete; scratch files live in a temporary directory inside
//! the output directory and are removed on success or failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use model::host::{self as contract, HostBoot, HostManifest, VerityParams};
use sha2::{Digest as _, Sha256};

use crate::kernel::{self, KernelError};
use crate::progress::Progress;
use crate::ramdisk::{self, KernelSource, RamdiskError};
use crate::rootfs::{self, RootfsError};
use crate::uki::{self, UkiError};
use crate::{disk, esp, file_error, packages, sha256_hex, verity, write_atomic};

/// The timestamp of every file when SOURCE_DATE_EPOCH is not set: 2025-01-01T00:00:00Z.
pub const DEFAULT_EPOCH: u64 = 1_735_689_600;
/// zstd level of `host.raw.zst` (single-threaded: the same bytes on every machine).
pub const DISK_ZSTD_LEVEL: i32 = 9;
/// The label of the ext4 file system made for `data` (the agent grows it to the disk's
/// end on first boot).
const DATA_LABEL: &str = "data";

/// What to build.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub out: PathBuf,
    /// The static node-agent.
    pub agent: PathBuf,
    pub kernel: KernelSource,
    /// Package cache (kernel, busybox-static, systemd-boot-efi).
    pub cache: PathBuf,
    /// The image version ([`contract::check_version`]).
    pub version: String,
    /// Public key copied to `/etc/provisioner/trust.pub`.
    pub trust_key: Option<PathBuf>,
    /// Leave `host.raw` beside `host.raw.zst`.
    pub keep_raw: bool,
    /// Every timestamp in the image ([`source_date_epoch`]).
    pub epoch: u64,
}

/// Why the host image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Version(#[from] contract::BadVersion),
    #[error("SOURCE_DATE_EPOCH={0:?} is not a number of seconds since 1970; unset it or fix it")]
    Epoch(String),
    #[error(transparent)]
    Ramdisk(#[from] RamdiskError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Esp(#[from] esp::EspError),
    #[error(transparent)]
    Uki(#[from] UkiError),
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error(transparent)]
    Cpio(#[from] crate::cpio::CpioError),
    #[error(transparent)]
    Verity(#[from] verity::VerityError),
    #[error("{package}: no {path} in the package; is it the package expected?")]
    PackageLayout { package: String, path: &'static str },
    #[error(
        "root.img is {size} bytes but a slot holds {capacity} (model::host::LAYOUT): drop modules or grow the slots"
    )]
    RootTooLarge { size: u64, capacity: u64 },
    #[error(transparent)]
    Tool(#[from] crate::tool::ToolError),
    #[error(transparent)]
    File(#[from] crate::FileError),
}

/// SOURCE_DATE_EPOCH from `value` (the environment variable), else [`DEFAULT_EPOCH`].
pub fn source_date_epoch(value: Option<&str>) -> Result<u64, HostError> {
    match value {
        None | Some("") => Ok(DEFAULT_EPOCH),
        Some(v) => v.trim().parse().map_err(|_| HostError::Epoch(v.to_owned())),
    }
}

/// The initramfs of the UKI: the ramdisk's layout (agent as `/init`, modules, load
/// order) plus the directories the agent mounts on in host mode.
pub fn initrd_archive(
    agent: &[u8],
    release: &str,
    modules: &[ramdisk::RamdiskModule],
) -> Result<crate::cpio::Archive, crate::cpio::CpioError> {
    let mut a = ramdisk::assemble(agent, release, modules)?;
    a.add_dir("newroot", 0o755)?;
    a.add_dir("efi", 0o755)?;
    Ok(a)
}

/// mke2fs's configuration for the data file system (`MKE2FS_CONFIG`), so that the build
/// host's `/etc/mke2fs.conf` does not change the bytes: Debian 12's ext4 defaults, and the
/// `small` usage type (what a 64 MiB file system gets) with the same inode ratio.
pub const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
\tsmall = {
\t\tinode_ratio = 16384
\t}
";

/// The `mkfs.ext4` arguments for the data file system in `file`: fixed UUID and hash
/// seed, root-owned, labelled [`DATA_LABEL`], 4 KiB blocks.
pub fn mkfs_ext4_args(file: &Path) -> Vec<std::ffi::OsString> {
    let uuid = disk::derived_guid("data/ext4").to_ascii_lowercase();
    let seed = disk::derived_guid("data/hash_seed").to_ascii_lowercase();
    vec![
        "-q".into(),
        "-F".into(),
        "-t".into(),
        "ext4".into(),
        "-b".into(),
        "4096".into(),
        "-L".into(),
        DATA_LABEL.into(),
        "-U".into(),
        uuid.into(),
        "-E".into(),
        format!("hash_seed={seed},root_owner=0:0,lazy_itable_init=0").into(),
        file.into(),
    ]
}

/// A `Write` that hashes what passes through.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses `raw` into `zst` (zstd, one thread) and returns (raw sha256, compressed
/// size, compressed sha256).
fn compress(raw: &Path, zst: &Path) -> Result<(String, u64, String), crate::FileError> {
    let mut src = std::fs::File::open(raw).map_err(file_error(raw, "reading"))?;
    let out = std::fs::File::create(zst).map_err(file_error(zst, "creating"))?;
    let hashing = Hashing {
        inner: std::io::BufWriter::new(out),
        hash: Sha256::new(),
        len: 0,
    };
    let mut encoder =
        zstd::Encoder::new(hashing, DISK_ZSTD_LEVEL).map_err(file_error(zst, "compressing"))?;
    let mut raw_hash = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = disk::read_full(&mut src, &mut buf).map_err(file_error(raw, "reading"))?;
        if n == 0 {
            break;
        }
        raw_hash.update(&buf[..n]);
        encoder
            .write_all(&buf[..n])
            .map_err(file_error(zst, "compressing"))?;
    }
    let mut hashing = encoder.finish().map_err(file_error(zst, "compressing"))?;
    hashing.flush().map_err(file_error(zst, "writing"))?;
    hashing
        .inner
        .into_inner()
        .map_err(|e| file_error(zst, "writing")(e.into_error()))?
        .sync_all()
        .map_err(file_error(zst, "writing"))?;
    Ok((
        verity::hex(&raw_hash.finalize()),
        hashing.len,
        verity::hex(&hashing.hash.finalize()),
    ))
}

fn file_info(file: &str, bytes: &[u8]) -> contract::FileInfo {
    contract::FileInfo {
        file: file.to_owned(),
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Builds the host image into `options.out` and returns (and writes) its manifest.
pub fn build(options: &HostOptions, progress: &dyn Progress) -> Result<HostManifest, HostError> {
    contract::check_version(&options.version)?;
    let step = progress.begin("checking the agent");
    let agent =
        std::fs::read(&options.agent).map_err(file_error(&options.agent, "reading the agent"))?;
    ramdisk::check_static_agent(&agent).map_err(|what| RamdiskError::Agent {
        path: options.agent.clone(),
        what,
    })?;
    progress.finish(step, &format!("static, {}", mib(agent.len() as u64)));
    let trust_key = match &options.trust_key {
        Some(path) => Some(std::fs::read(path).map_err(file_error(path, "reading the trust key"))?),
        None => None,
    };

    let kernel = match &options.kernel {
        KernelSource::Apt { metapackage } => kernel::fetch(&options.cache, metapackage, progress)?,
        KernelSource::Deb(deb) => kernel::unpack(deb, &options.cache, progress)?,
    };
    let busybox = packages::fetch(&options.cache, "busybox-static", progress)?;
    let boot = packages::fetch(&options.cache, "systemd-boot-efi", progress)?;
    let step = progress.begin("packages");
    let need = |unpacked: &packages::Unpacked, path: &'static str| {
        let full = unpacked.root.join(path);
        if full.is_file() {
            Ok(full)
        } else {
            Err(HostError::PackageLayout {
                package: unpacked.package.clone(),
                path,
            })
        }
    };
    let busybox_bin = need(&busybox, "bin/busybox")?;
    let stub = need(&boot, uki::STUB)?;
    let loader = need(&boot, uki::LOADER)?;
    progress.finish(
        step,
        &format!(
            "{} {}, {} {}",
            busybox.package, busybox.version, boot.package, boot.version
        ),
    );

    let step = progress.begin("resolving kernel modules");
    let root_drivers = rootfs::root_modules();
    let root_modules = ramdisk::resolve_modules(
        &kernel.modules_dir,
        &root_drivers,
        crate::modules::OPTIONAL_DRIVERS,
    )?;
    // The checksum helpers of the disks' protection information; no 9p in the initrd.
    let initrd_optional: Vec<&str> = crate::modules::OPTIONAL_DRIVERS
        .iter()
        .copied()
        .filter(|m| !m.starts_with("9p"))
        .collect();
    let initrd_modules = ramdisk::resolve_modules(
        &kernel.modules_dir,
        &rootfs::initrd_modules(),
        &initrd_optional,
    )?;
    progress.finish(
        step,
        &format!(
            "{} in the root, {} in the initramfs",
            root_modules.modules.len(),
            initrd_modules.modules.len()
        ),
    );

    std::fs::create_dir_all(&options.out)
        .map_err(file_error(&options.out, "creating the output directory"))?;
    let scratch = tempfile::Builder::new()
        .prefix(".build-host-")
        .tempdir_in(&options.out)
        .map_err(file_error(&options.out, "creating a scratch directory"))?;
    let scratch = scratch.path();

    let step = progress.begin("root file system (mkfs.erofs -zlz4hc)");
    let tree = scratch.join("root");
    std::fs::create_dir(&tree).map_err(file_error(&tree, "creating"))?;
    let applets = rootfs::stage(
        &tree,
        &rootfs::RootInputs {
            agent: &agent,
            busybox: &busybox_bin,
            release: &kernel.release,
            modules: &root_modules.modules,
            version: &options.version,
            trust_key: trust_key.as_deref(),
        },
    )?;
    let fs = rootfs::mkfs(
        &tree,
        &scratch.join("root.erofs"),
        options.epoch,
        &disk::derived_guid("root/erofs"),
    )?;
    progress.finish(
        step,
        &format!("{}, {applets} busybox applets", mib(fs.len() as u64)),
    );

    let step = progress.begin("dm-verity hash tree");
    let salt: [u8; 32] = Sha256::digest(&fs).into();
    let hash_tree = verity::tree(&fs, &salt)?;
    let layout = rootfs::RootLayout::new(fs.len(), hash_tree.bytes.len());
    let mut root_img = fs;
    root_img.extend_from_slice(&hash_tree.bytes);
    let capacity = contract::slot_size_bytes();
    if root_img.len() as u64 > capacity {
        return Err(HostError::RootTooLarge {
            size: root_img.len() as u64,
            capacity,
        });
    }
    let verity_params = VerityParams {
        data_blocks: layout.data_blocks,
        hash_start_block: layout.hash_start_block,
        root_hash: verity::hex(&hash_tree.root),
        salt: verity::hex(&salt),
    };
    let root_tmp = scratch.join("root.img");
    std::fs::write(&root_tmp, &root_img).map_err(file_error(&root_tmp, "writing"))?;
    let root_info = file_info("root.img", &root_img);
    drop(root_img);
    progress.finish(
        step,
        &format!(
            "root {}, {} hash blocks; root.img {} of a {} slot",
            verity_params.root_hash,
            layout.hash_blocks,
            mib(root_info.size),
            mib(capacity)
        ),
    );

    let step = progress.begin(&format!(
        "UKI (initramfs zstd -{}, objcopy)",
        ramdisk::ZSTD_LEVEL
    ));
    let cpio = initrd_archive(&agent, &kernel.release, &initrd_modules.modules)?.to_bytes();
    let initrd = zstd::bulk::compress(&cpio, ramdisk::ZSTD_LEVEL)
        .map_err(file_error(Path::new("initramfs"), "compressing"))?;
    let boot_params = HostBoot {
        version: options.version.clone(),
        verity: verity_params.clone(),
    };
    let osrel = rootfs::os_release(&options.version);
    let cmdline = boot_params.cmdline();
    let uki_tmp = scratch.join("uki.efi");
    uki::build(
        &stub,
        &uki::UkiParts {
            osrel: &osrel,
            cmdline: &cmdline,
            linux: &kernel.vmlinuz,
            initrd: &initrd,
            timestamp: u32::try_from(options.epoch).unwrap_or(u32::MAX),
        },
        scratch,
        &uki_tmp,
    )?;
    let uki_bytes = std::fs::read(&uki_tmp).map_err(file_error(&uki_tmp, "reading"))?;
    progress.finish(
        step,
        &format!(
            "{} (initramfs {})",
            mib(uki_bytes.len() as u64),
            mib(initrd.len() as u64)
        ),
    );

    let step = progress.begin("disk: ESP (FAT32), data (mkfs.ext4), GPT");
    let table = disk::partition_table();
    let esp_img = scratch.join("esp.img");
    let entry = contract::UkiName {
        slot: contract::Slot::A,
        version: options.version.clone(),
        counter: None,
    };
    let uki_path = format!("{}/{}", contract::UKI_DIR, entry.file_name());
    let loader_bytes = std::fs::read(&loader).map_err(file_error(&loader, "reading"))?;
    esp::write(
        &esp_img,
        disk::partition_bytes(&table[0]),
        &[
            ("EFI/BOOT/BOOTX64.EFI", &loader_bytes),
            ("loader/loader.conf", esp::LOADER_CONF.as_bytes()),
            (&uki_path, &uki_bytes),
        ],
        options.epoch,
    )?;
    let data_img = scratch.join("data.img");
    let data_spec = table
        .iter()
        .find(|p| p.label == contract::DATA)
        .expect("the layout has a data partition");
    std::fs::File::create(&data_img)
        .and_then(|f| f.set_len(disk::partition_bytes(data_spec)))
        .map_err(file_error(&data_img, "creating"))?;
    let mke2fs_conf = scratch.join("mke2fs.conf");
    std::fs::write(&mke2fs_conf, MKE2FS_CONF).map_err(file_error(&mke2fs_conf, "writing"))?;
    crate::tool::run(
        Command::new("mkfs.ext4")
            .args(mkfs_ext4_args(&data_img))
            .env("MKE2FS_CONFIG", &mke2fs_conf)
            .env("E2FSPROGS_FAKE_TIME", options.epoch.to_string())
            .env("MKE2FS_DEVICE_SECTSIZE", "512"),
        "mkfs.ext4",
        "e2fsprogs",
    )?;
    let raw = scratch.join("host.raw");
    let mut disk_file = disk::create(&raw, contract::disk_size_bytes(), &table)?;
    for p in &table {
        let content = match p.label.as_str() {
            contract::ESP => &esp_img,
            contract::ROOT_A => &root_tmp,
            contract::DATA => &data_img,
            // root-b and config stay zero.
            _ => continue,
        };
        disk::copy_into(&mut disk_file, p, content)?;
    }
    disk_file
        .sync_all()
        .map_err(file_error(&raw, "writing the disk image"))?;
    drop(disk_file);
    progress.finish(
        step,
        &format!(
            "{} partitions, {}",
            table.len(),
            mib(contract::disk_size_bytes())
        ),
    );

    let step = progress.begin(&format!("compressing host.raw (zstd -{DISK_ZSTD_LEVEL})"));
    let zst_tmp = scratch.join("host.raw.zst");
    let (raw_sha256, zst_size, zst_sha256) = compress(&raw, &zst_tmp)?;
    progress.finish(step, &mib(zst_size));

    let manifest = HostManifest {
        format: 1,
        version: options.version.clone(),
        kernel_release: kernel.release.clone(),
        root: contract::RootInfo {
            image: root_info,
            filesystem: "erofs".to_owned(),
            verity: verity_params,
        },
        uki: file_info("uki.efi", &uki_bytes),
        disk: contract::DiskInfo {
            compressed: contract::FileInfo {
                file: "host.raw.zst".to_owned(),
                size: zst_size,
                sha256: zst_sha256,
            },
            raw_size: contract::disk_size_bytes(),
            raw_sha256,
            partitions: table,
        },
    };
    let rename = |from: &Path, name: &str| {
        let to = options.out.join(name);
        std::fs::rename(from, &to).map_err(file_error(&to, "moving into place"))
    };
    rename(&root_tmp, "root.img")?;
    rename(&uki_tmp, "uki.efi")?;
    rename(&zst_tmp, "host.raw.zst")?;
    if options.keep_raw {
        rename(&raw, "host.raw")?;
    } else {
        let stale = options.out.join("host.raw");
        if stale.exists() {
            // A host.raw of an earlier build would no longer match the manifest.
            std::fs::remove_file(&stale).map_err(file_error(&stale, "removing the stale disk"))?;
        }
    }
    let mut json = serde_json::to_vec_pretty(&manifest).expect("the manifest serializes");
    json.push(b'\n');
    write_atomic(&options.out.join("manifest.json"), &json)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_comes_from_the_environment_or_the_constant() {
        assert_eq!(source_date_epoch(None).unwrap(), DEFAULT_EPOCH);
        assert_eq!(source_date_epoch(Some("")).unwrap(), DEFAULT_EPOCH);
        assert_eq!(
            source_date_epoch(Some("1700000000")).unwrap(),
            1_700_000_000
        );
        assert!(matches!(
            source_date_epoch(Some("yesterday")),
            Err(HostError::Epoch(_))
        ));
    }

    #[test]
    fn the_initrd_has_the_mount_points_of_host_mode() {
        let a = initrd_archive(b"agent", "6.1.0-56-amd64", &[]).unwrap();
        let names: Vec<&str> = a.entries().map(|(n, _)| n).collect();
        for dir in ["proc", "sys", "dev", "run", "tmp", "newroot", "efi"] {
            assert!(names.contains(&dir), "{dir} missing from {names:?}");
        }
        assert!(names.contains(&"init"));
    }

    #[test]
    fn mkfs_ext4_is_pinned() {
        let args: Vec<String> = mkfs_ext4_args(Path::new("d.img"))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let uuid = disk::derived_guid("data/ext4").to_ascii_lowercase();
        assert!(args.windows(2).any(|w| w[0] == "-U" && w[1] == uuid));
        assert!(args.iter().any(|a| a.starts_with("hash_seed=")));
        assert_eq!(args.last().unwrap(), "d.img");
    }
}
