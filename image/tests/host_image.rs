//! The host image for real: Debian packages (apt, cached), the static node-agent that
//! `cargo xtask host-image` / `cargo xtask test` build, two builds compared byte for byte,
//! and every part read back by tools we did not write: `veritysetup` (hash tree),
//! `sgdisk -v` (GPT), `fsck.erofs` (root), `e2fsck` (data), `objcopy` (the UKI's
//! `.cmdline`), and `fatfs` and `fsck.fat` (ESP).

mod common;

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use image::host::{self, HostOptions};
use image::progress::Quiet;
use image::ramdisk::KernelSource;
use image::verity;
use model::host::{HostBoot, HostManifest, SECTOR};

fn options(out: &Path) -> HostOptions {
    let key = out.with_extension("pub");
    std::fs::write(&key, "trust me\n").unwrap();
    HostOptions {
        out: out.to_owned(),
        agent: common::static_agent(),
        kernel: KernelSource::Apt {
            metapackage: image::kernel::DEFAULT_METAPACKAGE.to_owned(),
        },
        cache: image::kernel::default_cache_dir(),
        version: "7.1".to_owned(),
        trust_key: Some(key),
        keep_raw: true,
        epoch: host::DEFAULT_EPOCH,
    }
}

/// One build shared by the tests of this file.
fn built() -> &'static (tempfile::TempDir, HostManifest, Duration) {
    static BUILT: OnceLock<(tempfile::TempDir, HostManifest, Duration)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let start = Instant::now();
        let manifest = host::build(&options(&out), &Quiet)
            .unwrap_or_else(|e| panic!("building the host image: {e}"));
        (dir, manifest, start.elapsed())
    })
}

fn out() -> PathBuf {
    built().0.path().join("out")
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e} (run `cargo xtask deps`)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed: {text}");
    text
}

/// Bytes `[start, start + len)` of `file` into a new file in `dir`.
fn extract(file: &Path, start: u64, len: u64, to: &Path) {
    let mut f = std::fs::File::open(file).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    let mut bytes = vec![0u8; len as usize];
    f.read_exact(&mut bytes).unwrap();
    std::fs::write(to, bytes).unwrap();
}

#[test]
fn two_builds_give_the_same_bytes() {
    let (_, manifest, took) = built();
    let second = tempfile::tempdir().unwrap();
    let out2 = second.path().join("out");
    let start = Instant::now();
    let again = host::build(&options(&out2), &Quiet).unwrap();
    eprintln!(
        "host image builds: {:.1} s and {:.1} s (packages cached); host.raw.zst {} bytes, root.img {} bytes, uki.efi {} bytes",
        took.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        manifest.disk.compressed.size,
        manifest.root.image.size,
        manifest.uki.size
    );
    assert_eq!(&again, manifest);
    for file in [
        "host.raw",
        "host.raw.zst",
        "root.img",
        "uki.efi",
        "manifest.json",
    ] {
        let a = std::fs::read(out().join(file)).unwrap();
        let b = std::fs::read(out2.join(file)).unwrap();
        assert!(a == b, "{file} differs between two builds");
    }
    let zst = std::fs::read(out().join("host.raw.zst")).unwrap();
    assert_eq!(image_sha256(&zst), manifest.disk.compressed.sha256);
    let raw = std::fs::read(out().join("host.raw")).unwrap();
    assert_eq!(raw.len() as u64, manifest.disk.raw_size);
    assert_eq!(image_sha256(&raw), manifest.disk.raw_sha256);
    assert_eq!(zstd::decode_all(zst.as_slice()).unwrap(), raw);
}

fn image_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    verity::hex(&sha2::Sha256::digest(bytes))
}

#[test]
fn sgdisk_finds_no_problem_and_the_table_is_the_manifests() {
    let (_, manifest, _) = built();
    let raw = out().join("host.raw");
    let report = run(Command::new("sgdisk").arg("-v").arg(&raw));
    assert!(report.contains("No problems found"), "{report}");
    let mut f = std::fs::File::open(&raw).unwrap();
    let gpt = gptman::GPT::read_from(&mut f, SECTOR).unwrap();
    for p in &manifest.disk.partitions {
        let e = &gpt[p.number];
        assert_eq!(e.partition_name.as_str(), p.label);
        assert_eq!((e.starting_lba, e.ending_lba), (p.first_lba, p.last_lba));
        assert_eq!(
            e.partition_type_guid,
            image::disk::guid_bytes(&p.type_guid).unwrap()
        );
    }
    // sgdisk names the types it knows: the ESP and the DPS root and /var types.
    let listing = run(Command::new("sgdisk").arg("-p").arg(&raw));
    assert!(listing.contains("EF00"), "{listing}");
}

#[test]
fn the_root_is_erofs_with_the_verity_tree_appended() {
    let (dir, manifest, _) = built();
    let v = &manifest.root.verity;
    let root_img = out().join("root.img");
    assert_eq!(
        std::fs::metadata(&root_img).unwrap().len(),
        manifest.root.image.size
    );
    let fs = dir.path().join("root.erofs");
    extract(&root_img, 0, v.data_blocks * 4096, &fs);
    let tree = dir.path().join("root-tree");
    run(Command::new("fsck.erofs")
        .arg(format!("--extract={}", tree.display()))
        .arg("--preserve-perms")
        .arg(&fs));
    check_root_tree(&tree, manifest);
    // veritysetup checks every block against the root hash in user space.
    run(Command::new("veritysetup")
        .arg("verify")
        .arg("--no-superblock")
        .arg(format!("--salt={}", v.salt))
        .arg(format!("--data-blocks={}", v.data_blocks))
        .arg(format!("--hash-offset={}", v.hash_start_block * 4096))
        .arg(&root_img)
        .arg(&root_img)
        .arg(&v.root_hash));
    // The same bytes are root-a on the disk.
    let a = &manifest.disk.partitions[1];
    let slot = dir.path().join("slot-a");
    extract(
        &out().join("host.raw"),
        a.first_lba * SECTOR,
        manifest.root.image.size,
        &slot,
    );
    assert!(std::fs::read(&slot).unwrap() == std::fs::read(&root_img).unwrap());
}

/// The root tree as `fsck.erofs --extract` wrote it.
fn check_root_tree(tree: &Path, manifest: &HostManifest) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &str| {
        std::fs::symlink_metadata(tree.join(p))
            .unwrap_or_else(|e| panic!("{p} in the root: {e}"))
            .permissions()
            .mode()
            & 0o7777
    };
    let agent = std::fs::read(common::static_agent()).unwrap();
    assert!(std::fs::read(tree.join("usr/bin/node-agent")).unwrap() == agent);
    assert_eq!(mode("usr/bin/node-agent"), 0o755);
    assert_eq!(
        std::fs::read_link(tree.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(mode("bin/busybox"), 0o755);
    assert_eq!(
        std::fs::read_to_string(tree.join("etc/provisioner/trust.pub")).unwrap(),
        "trust me\n"
    );
    let osrel = std::fs::read_to_string(tree.join("etc/os-release")).unwrap();
    assert!(osrel.contains(&format!("VERSION_ID={}\n", manifest.version)));
    for d in image::rootfs::EMPTY_DIRS {
        assert!(tree.join(d).is_dir(), "/{d} missing");
    }
    assert_eq!(mode("tmp"), 0o1777);
    let order = std::fs::read_to_string(tree.join("lib/modules/load-order")).unwrap();
    let modules = tree.join("lib/modules").join(&manifest.kernel_release);
    for line in order.lines() {
        assert!(
            modules.join(line).is_file(),
            "{line} in load-order but not in the root"
        );
    }
    for m in [
        "dm-verity.ko",
        "erofs.ko",
        "nvmet-tcp.ko",
        "bridge.ko",
        "virtio_blk.ko",
    ] {
        assert!(
            order.lines().any(|l| l.ends_with(&format!("/{m}"))),
            "{m} not in the root's load-order"
        );
    }
}

#[test]
fn the_data_partition_is_a_clean_ext4() {
    let (dir, manifest, _) = built();
    let p = &manifest.disk.partitions[4];
    let data = dir.path().join("data.ext4");
    extract(
        &out().join("host.raw"),
        p.first_lba * SECTOR,
        (p.last_lba - p.first_lba + 1) * SECTOR,
        &data,
    );
    let report = run(Command::new("e2fsck").arg("-fn").arg(&data));
    assert!(report.contains("data: "), "{report}");
}

#[test]
fn the_esp_holds_the_loader_and_the_blessed_uki() {
    let (_, manifest, _) = built();
    let p = &manifest.disk.partitions[0];
    let mut raw = std::fs::File::open(out().join("host.raw")).unwrap();
    raw.seek(SeekFrom::Start(p.first_lba * SECTOR)).unwrap();
    let mut esp = vec![0u8; ((p.last_lba - p.first_lba + 1) * SECTOR) as usize];
    raw.read_exact(&mut esp).unwrap();
    // fsck.fat finds nothing to repair (a malformed `.`/`..` would be "repaired" into a
    // broken ESP by an operator's fsck).
    let dir = tempfile::tempdir().unwrap();
    let esp_file = dir.path().join("esp.img");
    std::fs::write(&esp_file, &esp).unwrap();
    let fsck = Command::new("fsck.fat")
        .arg("-n")
        .arg(&esp_file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&fsck.stdout);
    assert!(fsck.status.success(), "fsck.fat -n: {report}");
    assert_eq!(
        report.lines().count(),
        2,
        "fsck.fat -n has remarks: {report}"
    );
    let fs = fatfs::FileSystem::new(std::io::Cursor::new(esp), fatfs::FsOptions::new()).unwrap();
    assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
    let read = |path: &str| {
        let mut bytes = vec![];
        fs.root_dir()
            .open_file(path)
            .unwrap_or_else(|e| panic!("{path} on the ESP: {e}"))
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    };
    assert_eq!(read("loader/loader.conf"), b"timeout 0\neditor no\n");
    assert!(read("EFI/BOOT/BOOTX64.EFI").starts_with(b"MZ"));
    let uki = read(&format!("EFI/Linux/host-a-{}.efi", manifest.version));
    assert!(uki == std::fs::read(out().join("uki.efi")).unwrap());
}

#[test]
fn the_uki_cmdline_carries_the_manifests_verity_params() {
    let (dir, manifest, _) = built();
    let section = |name: &str| {
        let file = dir.path().join(name.trim_start_matches('.'));
        run(Command::new("objcopy")
            .arg("-O")
            .arg("binary")
            .arg(format!("--only-section={name}"))
            .arg(out().join("uki.efi"))
            .arg(&file));
        String::from_utf8(std::fs::read(&file).unwrap()).unwrap()
    };
    let cmdline = section(".cmdline");
    let boot = HostBoot::from_cmdline(&cmdline).unwrap().unwrap();
    assert_eq!(boot.version, manifest.version);
    assert_eq!(boot.verity, manifest.root.verity);
    let osrel = section(".osrel");
    assert!(osrel.contains("ID=provisioner-host\n"), "{osrel}");
    assert!(osrel.contains(&format!("VERSION_ID={}\n", manifest.version)));
}

/// Data of `blocks` blocks that differ from each other.
fn data(blocks: usize) -> Vec<u8> {
    (0..blocks * 4096)
        .map(|i| ((i / 4096) as u8).wrapping_mul(31) ^ (i as u8))
        .collect()
}

#[test]
fn the_verity_tree_is_veritysetups() {
    let dir = tempfile::tempdir().unwrap();
    let salt = [0x3cu8; 32];
    for blocks in [1, 2, 127, 128, 129, 300, 128 * 128, 128 * 128 + 1] {
        let data_file = dir.path().join("data");
        let hash_file = dir.path().join("hash");
        std::fs::write(&data_file, data(blocks)).unwrap();
        std::fs::write(&hash_file, b"").unwrap();
        let report = run(Command::new("veritysetup")
            .arg("format")
            .arg("--no-superblock")
            .arg(format!("--salt={}", verity::hex(&salt)))
            .arg("--data-block-size=4096")
            .arg("--hash-block-size=4096")
            .arg(&data_file)
            .arg(&hash_file));
        let root = report
            .lines()
            .find_map(|l| l.strip_prefix("Root hash:"))
            .unwrap_or_else(|| panic!("no root hash in {report}"))
            .trim()
            .to_owned();
        let tree = verity::tree(&data(blocks), &salt).unwrap();
        assert_eq!(verity::hex(&tree.root), root, "{blocks} blocks");
        assert!(
            std::fs::read(&hash_file).unwrap() == tree.bytes,
            "{blocks} blocks: the hash trees differ"
        );
    }
}

#[test]
fn our_pe_checksum_is_the_one_debians_stub_carries() {
    // After a build the package is unpacked in the cache.
    let _ = built();
    let debs = image::kernel::default_cache_dir().join("debs");
    let stub = std::fs::read_dir(&debs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.is_dir()
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("systemd-boot-efi_")
        })
        .expect("systemd-boot-efi unpacked in the cache")
        .join(image::uki::STUB);
    let stub = std::fs::read(stub).unwrap();
    assert_ne!(image::uki::stored_checksum(&stub), Ok(0));
    assert_eq!(
        image::uki::pe_checksum(&stub),
        image::uki::stored_checksum(&stub)
    );
    let uki = std::fs::read(out().join("uki.efi")).unwrap();
    assert_eq!(
        image::uki::pe_checksum(&uki),
        image::uki::stored_checksum(&uki)
    );
}
