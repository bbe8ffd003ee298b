//! The host image in the lab, without the provisioner: `provisioner image
//! build host` disks booted by OVMF + systemd-boot from a virtual disk, under
//! TCG. One disk lives through the whole story, because every step needs the
//! state the previous one left (an upgraded slot, a spent entry), and one VM
//! directory keeps its UEFI variable store across restarts:
//!
//! 1. version 1 boots to host mode with its root on dm-verity, and the data
//!    partition grows to the (larger) disk's end;
//! 2. an upgrade to version 2 is cut by a power cut (QEMU killed) while slot B
//!    is written: version 1 still boots, the upgrade is retried and version 2
//!    runs from slot B, is blessed and stays the default over two reboots;
//! 3. an upgrade to a broken version 3 (its agent exits at once, so the kernel
//!    panics) spends its three tries and the machine rolls back to version 2,
//!    which says so;
//! 4. a good version 4 goes to slot A; one byte of slot A's filesystem is then
//!    flipped on the powered-off disk: the next boot refuses it (the full
//!    verity check fails, the entry is marked bad, the machine resets) and it
//!    ends up in slot B.
//!
//! Before that, the same kernel and initramfs are booted straight from QEMU's
//! `-kernel` (no systemd-boot) to measure the floor the disk boot is compared
//! with. Figures are printed as `figure: ...` lines.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use hardware_tests::lab::host_vm::{DirectKernel, HostVm, HostVmSpec};
use hardware_tests::lab::{assets, provisioner_binary};
use model::host::HostManifest;

/// One boot under TCG (OVMF, systemd-boot, kernel, full verity check) is
/// about 20-40 s on the 2-core machine; this leaves room for a loaded host.
const BOOT: Duration = Duration::from_secs(240);
const SHELL: Duration = Duration::from_secs(60);
/// The disk the VM gets: larger than the image, so the data partition grows.
const DISK_SIZE: u64 = 3 << 30;

fn host_line(version: &str, slot: &str) -> String {
    format!("node-agent: host: version {version}, slot {slot}, root ")
}

struct Built {
    dir: PathBuf,
    manifest: HostManifest,
}

fn build(work: &Path, version: &str, agent: &Path) -> Result<Built> {
    let out = work.join(format!("v{version}"));
    let started = Instant::now();
    let status = Command::new(provisioner_binary()?)
        .args(["image", "build", "host", "--keep-raw", "--version", version])
        .arg("--out")
        .arg(&out)
        .arg("--agent")
        .arg(agent)
        .status()
        .context("running provisioner image build host")?;
    ensure!(
        status.success(),
        "provisioner image build host failed: {status}"
    );
    eprintln!(
        "figure: image version {version} built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let manifest: HostManifest = serde_json::from_slice(
        &std::fs::read(out.join("manifest.json")).context("manifest.json")?,
    )?;
    Ok(Built { dir: out, manifest })
}

/// A static program that exits 1: the agent of the broken image.
fn exiting_agent(work: &Path) -> Result<PathBuf> {
    let source = work.join("exit1.c");
    std::fs::write(&source, "int main(void) { return 1; }\n")?;
    let out = work.join("exit1");
    let status = Command::new("gcc")
        .args(["-static", "-Os", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .context("gcc")?;
    ensure!(
        status.success(),
        "gcc -static failed (is libc6-dev installed?)"
    );
    Ok(out)
}

/// An erofs disk with the upgrade sources `vN/{manifest.json,root.img,uki.efi}`.
fn bundle_disk(work: &Path, builds: &[&Built]) -> Result<PathBuf> {
    let tree = work.join("bundle");
    for built in builds {
        let dir = tree.join(format!("v{}", built.manifest.version));
        std::fs::create_dir_all(&dir)?;
        for file in ["manifest.json", "root.img", "uki.efi"] {
            std::fs::copy(built.dir.join(file), dir.join(file))
                .with_context(|| format!("copying {file}"))?;
        }
    }
    let disk = work.join("bundle.erofs");
    let status = Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(&disk)
        .arg(&tree)
        .status()
        .context("mkfs.erofs (Debian erofs-utils; `cargo xtask deps`)")?;
    ensure!(status.success(), "mkfs.erofs failed");
    Ok(disk)
}

/// `host.raw` copied sparsely and enlarged to [`DISK_SIZE`].
fn fresh_disk(built: &Built, to: &Path) -> Result<()> {
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(built.dir.join("host.raw"))
        .arg(to)
        .status()?;
    ensure!(status.success(), "copying host.raw");
    std::fs::OpenOptions::new()
        .write(true)
        .open(to)?
        .set_len(DISK_SIZE)?;
    Ok(())
}

/// Mounts the bundle disk and runs the upgrade to `version` (the agent reboots).
fn start_upgrade(vm: &mut HostVm, version: &str) -> Result<()> {
    // /mnt is an empty directory of the read-only root; mounted once per boot.
    let out = vm.run(
        "grep -q ' /mnt ' /proc/mounts || mount -t erofs -o ro /dev/vdb /mnt; ls /mnt",
        SHELL,
    )?;
    ensure!(
        out.contains("v4"),
        "the upgrade disk did not mount on /mnt: {out}"
    );
    vm.send(&format!(
        "node-agent upgrade --image /mnt/v{version}/manifest.json"
    ))?;
    Ok(())
}

fn wait_shell(vm: &mut HostVm) -> Result<()> {
    // The console shell starts after the host line; give it a moment and check it answers.
    let out = vm.run("echo shell-ok-$((40+2))", SHELL)?;
    ensure!(
        out.contains("shell-ok-42"),
        "the console shell did not answer: {out}"
    );
    Ok(())
}

#[test]
fn host_disk_boots_upgrades_rolls_back_and_refuses_a_tampered_root() -> Result<()> {
    let lab_assets = assets::cache_dir()?;
    let agent = lab_assets
        .parent()
        .context("target dir")?
        .join("x86_64-unknown-linux-gnu/release/node-agent");
    ensure!(
        agent.is_file(),
        "no static node-agent at {}: run `cargo xtask ramdisk` once (`cargo xtask test` builds it)",
        agent.display()
    );
    let work = lab_assets.join(format!("host-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let v1 = build(&work, "1", &agent)?;
    let v2 = build(&work, "2", &agent)?;
    let broken_agent = exiting_agent(&work)?;
    let v3 = build(&work, "3", &broken_agent)?;
    let v4 = build(&work, "4", &agent)?;
    let bundle = bundle_disk(&work, &[&v2, &v3, &v4])?;
    eprintln!(
        "figure: host.raw.zst {} MiB, raw {} MiB, root.img {} MiB, uki.efi {} MiB",
        v1.manifest.disk.compressed.size >> 20,
        v1.manifest.disk.raw_size >> 20,
        v1.manifest.root.image.size >> 20,
        v1.manifest.uki.size >> 20
    );

    // 0. The floor: the UKI's own kernel and initramfs from QEMU's -kernel.
    let floor = {
        let extract = |section: &str, to: &Path| -> Result<()> {
            let status = Command::new("objcopy")
                .args(["-O", "binary", "--only-section", section])
                .arg(v1.dir.join("uki.efi"))
                .arg(to)
                .status()?;
            ensure!(status.success(), "objcopy --only-section {section}");
            Ok(())
        };
        let kernel = work.join("floor-vmlinuz");
        let initrd = work.join("floor-initrd");
        extract(".linux", &kernel)?;
        extract(".initrd", &initrd)?;
        let disk = work.join("floor.raw");
        fresh_disk(&v1, &disk)?;
        let cmdline = model::host::HostBoot {
            version: "1".into(),
            verity: v1.manifest.root.verity.clone(),
        }
        .cmdline();
        let mut spec = HostVmSpec::new(&disk);
        spec.direct_kernel = Some(DirectKernel {
            kernel,
            initrd,
            cmdline,
        });
        let mut vm = HostVm::start(&work.join("vm-floor"), &spec)?;
        let took = vm.wait_for(&host_line("1", "a"), BOOT)?;
        vm.power_cut();
        let _ = std::fs::remove_file(&disk);
        took
    };
    eprintln!(
        "figure: -kernel boot (OVMF, no systemd-boot) to host mode: {:.1} s",
        floor.as_secs_f64()
    );

    let disk = work.join("disk.raw");
    fresh_disk(&v1, &disk)?;
    let vm_dir = work.join("vm");
    let mut spec = HostVmSpec::new(&disk);
    spec.extra_disks.push(bundle);

    // 1. First boot: host mode, root on dm-verity, /var grown.
    let mut vm = HostVm::start(&vm_dir, &spec)?;
    let first = vm.wait_for(&host_line("1", "a"), BOOT)?;
    vm.wait_for("(dm-verity)", SHELL)?;
    eprintln!(
        "figure: disk boot (OVMF, systemd-boot, UKI) to host mode: {:.1} s",
        first.as_secs_f64()
    );
    wait_shell(&mut vm)?;
    let mounts = vm.run("grep -E ' / | /var ' /proc/mounts", SHELL)?;
    ensure!(
        mounts.contains("/dev/dm-") && mounts.contains(" / erofs ro"),
        "the root is not the dm-verity device mounted read-only: {mounts}"
    );
    let var = vm.run("df -k /var | tail -1", SHELL)?;
    // The echoed command comes first; df's line is the one of the device.
    let var_kib: u64 = var
        .lines()
        .find(|line| line.starts_with("/dev/") && line.trim_end().ends_with("/var"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("df /var: {var}"))?;
    // The disk is DISK_SIZE; /var gets what the other partitions leave (minus ext4's own).
    let grown_kib = (DISK_SIZE - model::host::disk_size_bytes()) >> 10;
    ensure!(
        var_kib > grown_kib * 9 / 10,
        "/var was not grown to the disk's end: {var_kib} KiB, want about {grown_kib} KiB ({var})"
    );

    // 2. Upgrade to 2, cut by a power cut while slot B is written.
    start_upgrade(&mut vm, "2")?;
    vm.wait_for("node-agent: upgrade: writing slot b", SHELL)?;
    vm.power_cut();
    eprintln!("power cut right after the console showed \"node-agent: upgrade: writing slot b\"");
    let mut vm = HostVm::start(&vm_dir, &spec)?;
    vm.wait_for(&host_line("1", "a"), BOOT)
        .context("after a power cut during the upgrade, version 1 must still boot")?;
    wait_shell(&mut vm)?;
    let entries = vm.run("ls /efi/EFI/Linux", SHELL)?;
    ensure!(
        entries.contains("host-a-1.efi") && !entries.contains("host-b-"),
        "the cut upgrade left a UKI for slot B (or lost slot A's): {entries}"
    );
    let upgrade_started = Instant::now();
    start_upgrade(&mut vm, "2")?;
    vm.wait_for("node-agent: upgrade: slot b holds version 2", BOOT)?;
    vm.wait_for(&host_line("2", "b"), BOOT)?;
    vm.wait_for("node-agent: host: boot blessed: host-b-2+", SHELL)?;
    eprintln!(
        "figure: upgrade (write slot b, reboot) to version 2 blessed: {:.1} s",
        upgrade_started.elapsed().as_secs_f64()
    );
    for reboot in 1..=2 {
        wait_shell(&mut vm)?;
        vm.send("sync; reboot -f")?;
        vm.wait_for(&host_line("2", "b"), BOOT)
            .with_context(|| format!("version 2 after reboot {reboot}"))?;
    }
    ensure!(
        !vm.unread().contains("boot blessed"),
        "version 2 was blessed again: it should have stayed blessed"
    );

    // 3. A broken version 3: three panicking tries, then back to version 2.
    wait_shell(&mut vm)?;
    let rollback_started = Instant::now();
    start_upgrade(&mut vm, "3")?;
    vm.wait_for("node-agent: upgrade: slot a holds version 3", BOOT)?;
    for attempt in 1..=3 {
        vm.wait_for("Kernel panic", BOOT)
            .with_context(|| format!("broken version 3, try {attempt}"))?;
    }
    vm.wait_for(&host_line("2", "b"), BOOT)?;
    vm.wait_for(
        "node-agent: host: rollback: slot a version 3 failed its tries",
        SHELL,
    )?;
    eprintln!(
        "figure: upgrade to a broken version and automatic rollback: {:.1} s",
        rollback_started.elapsed().as_secs_f64()
    );

    // 4. A good version 4 in slot A, then one flipped byte in its filesystem.
    wait_shell(&mut vm)?;
    start_upgrade(&mut vm, "4")?;
    vm.wait_for(&host_line("4", "a"), BOOT)?;
    vm.wait_for("node-agent: host: boot blessed: host-a-4+", SHELL)?;
    wait_shell(&mut vm)?;
    vm.send("sync; poweroff -f")?;
    let deadline = Instant::now() + SHELL;
    while vm.running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    vm.power_cut();
    let root_a = v4
        .manifest
        .disk
        .partitions
        .iter()
        .find(|p| p.label == model::host::ROOT_A)
        .context("root-a in the manifest")?;
    let offset = root_a.first_lba * model::host::SECTOR
        + v4.manifest.root.verity.data_blocks / 2 * model::host::VERITY_BLOCK
        + 123;
    flip_byte(&disk, offset)?;
    let mut vm = HostVm::start(&vm_dir, &spec)?;
    vm.wait_for("FAILED verification", BOOT)
        .context("the tampered slot A must fail its verity check")?;
    vm.wait_for(&host_line("2", "b"), BOOT)
        .context("after refusing slot A the machine must boot slot B")?;
    ensure!(
        !vm.text().contains(&host_line("4", "a")),
        "the tampered root of version 4 ran"
    );
    vm.power_cut();
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn flip_byte(disk: &Path, offset: u64) -> Result<()> {
    use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)?;
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut byte)?;
    byte[0] ^= 0xff;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(&byte)?;
    file.sync_all()?;
    Ok(())
}
