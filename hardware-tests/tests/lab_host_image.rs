//! The host image in the lab, without the provisioner: `provisioner image
//! build host` disks booted by OVMF + systemd-boot from a virtual disk, under
//! TCG. One disk lives through the whole story, because every step needs the
//! state the previous one left (an upgraded slot, a spent entry), and one VM
//! directory keeps its UEFI variable store across restarts:
//!
//! 1. version 1 (built with a test trust key) boots from a disk prepared as
//!    a deploy leaves it: the data partition already at the (larger) disk's
//!    end in the GPT, its ext4 still small, and a node config sealed with the
//!    test key in the `config` partition. The host boot boots the UKI's kernel
//!    again (kexec) with the plan's kernel arguments; host mode runs with
//!    its root on dm-verity, `/var` grown to the partition, the plan applied
//!    (2 MiB hugepages), the NIC of the config up by DHCP (QEMU's isolated
//!    user network) and the report to the (unreachable) provisioner retried
//!    with a message saying what to check;
//! 2. an upgrade to version 2 is cut by a power cut (QEMU killed) while slot B
//!    is written; the config partition is then rewritten with a config sealed
//!    by ANOTHER key: version 1 still boots, refuses that config loudly and
//!    contacts no one, the upgrade is retried and version 2 runs from slot B,
//!    is blessed and stays the default over two reboots;
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
use model::deploy;
use model::host::{HostManifest, PartitionInfo};

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

fn build(work: &Path, version: &str, agent: &Path, trust_key: Option<&Path>) -> Result<Built> {
    let out = work.join(format!("v{version}"));
    let started = Instant::now();
    let mut command = Command::new(provisioner_binary()?);
    command
        .args(["image", "build", "host", "--keep-raw", "--version", version])
        .arg("--out")
        .arg(&out)
        .arg("--agent")
        .arg(agent);
    if let Some(key) = trust_key {
        command.arg("--trust-key").arg(key);
    }
    let status = command
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

    let trust_key = work.join("trust.pub");
    std::fs::write(&trust_key, public_key_text(TRUSTED)?)?;
    let v1 = build(&work, "1", &agent, Some(&trust_key))?;
    let v2 = build(&work, "2", &agent, None)?;
    let broken_agent = exiting_agent(&work)?;
    let v3 = build(&work, "3", &broken_agent, None)?;
    let v4 = build(&work, "4", &agent, None)?;
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
    as_deployed(&disk, &v1.manifest)?;
    write_config(&disk, &v1.manifest, &node_config(&v1.manifest), 1, TRUSTED)?;
    let vm_dir = work.join("vm");
    let mut spec = HostVmSpec::new(&disk);
    spec.extra_disks.push(bundle);
    spec.nic_mac = Some(NIC_MAC.to_owned());

    // 1. First boot: the plan's kernel arguments by kexec, host mode, root on
    //    dm-verity, /var grown, the plan applied, the report retried.
    let mut vm = HostVm::start(&vm_dir, &spec)?;
    let kexec_at = vm.wait_for(
        "node-agent: host boot: kernel arguments hugepagesz=2M hugepages=8 of the plan are \
         missing: booting /efi/EFI/Linux/host-a-1.efi again with them (kexec)",
        BOOT,
    )?;
    let first = vm.wait_for(&host_line("1", "a"), BOOT)?;
    vm.wait_for("(dm-verity)", SHELL)?;
    eprintln!(
        "figure: disk boot (OVMF, systemd-boot, UKI, kexec with the plan's kernel arguments) to \
         host mode: {:.1} s, of which {:.1} s after the kexec",
        first.as_secs_f64(),
        (first - kexec_at).as_secs_f64()
    );
    vm.wait_for(
        &format!("node-agent: host: config of node {NODE} (generation 1) from {PROVISIONER}"),
        SHELL,
    )?;
    // The boot reserved the pages (hugepages=8): already as planned.
    vm.wait_for(
        "node-agent: host: applied the plan: lab: 0 changed, 2 unchanged, 0 pending, 0 failed",
        BOOT,
    )?;
    vm.wait_for("node-agent: address 10.0.2.15/", BOOT)
        .context("the config's NIC must get an address from QEMU's DHCP")?;
    vm.wait_for(
        &format!(
            "node-agent: host: reporting to the provisioner failed: {PROVISIONER}/api/host/v1/report"
        ),
        BOOT,
    )?;
    vm.wait_for(
        &format!("check the cable and switch port of the NIC {NIC_MAC}, that the provisioner runs"),
        SHELL,
    )?;
    let boot_text = vm.text();
    ensure!(
        boot_text.matches("(from LoaderEntrySelected)").count() == 2
            && boot_text.matches("host boot: watchdog armed").count() == 2,
        "both boots (before and after the kexec) must read the loader's EFI variables and arm \
         the watchdog"
    );
    ensure!(
        boot_text.contains("host boot: /var (ext4 on vda5) grown from ")
            && !boot_text.contains("data partition vda5 grown"),
        "the deployed partition table has data at the disk's end: only its ext4 must grow"
    );
    wait_shell(&mut vm)?;
    let cmdline = vm.run("cat /proc/cmdline", SHELL)?;
    ensure!(
        cmdline.contains(&format!(
            "host.roothash={} host.salt=",
            v1.manifest.root.verity.root_hash
        )) && cmdline.contains(" hugepagesz=2M hugepages=8 node_agent.kexec=1"),
        "/proc/cmdline must keep the UKI's verity words and carry the plan's arguments: {cmdline}"
    );
    let pages = vm.run(
        "cat /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages",
        SHELL,
    )?;
    ensure!(
        pages.lines().any(|l| l.trim() == "8"),
        "the plan's 8 hugepages of 2 MiB: {pages}"
    );
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
    // A config sealed by another key replaces the trusted one.
    let mut forged = node_config(&v1.manifest);
    forged.provisioner_url = "http://10.0.2.2:10".into();
    write_config(&disk, &v1.manifest, &forged, 2, FOREIGN)?;
    let mut vm = HostVm::start(&vm_dir, &spec)?;
    vm.wait_for(&host_line("1", "a"), BOOT)
        .context("after a power cut during the upgrade, version 1 must still boot")?;
    vm.wait_for(
        "node-agent: host: config REFUSED: slot 0: config signature does not verify with the \
         image's trust key",
        SHELL,
    )?;
    wait_shell(&mut vm)?;
    let cmdline = vm.run("cat /proc/cmdline", SHELL)?;
    let text = vm.text();
    ensure!(
        !cmdline.contains("hugepages=8")
            && !text.contains("(kexec)")
            && !text.contains("node-agent: address")
            && !text.contains("reporting to the provisioner"),
        "a config sealed by another key must not be used (no kexec, no network, no report): \
         {cmdline}"
    );
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

/// The test's config-signing keys: the one the image trusts and another.
const TRUSTED: u8 = 0x11;
const FOREIGN: u8 = 0x22;
const NODE: &str = "lab-host-0";
const NIC_MAC: &str = "52:54:00:0c:00:01";
/// QEMU's user-mode gateway: with `restrict=on` nothing answers there.
const PROVISIONER: &str = "http://10.0.2.2:9";

/// The private key file's text of the key of `seed`.
fn signing_key_text(seed: u8) -> String {
    format!("{seed:02x}").repeat(32)
}

/// The public key file's text (`trust.pub`) of the key of `seed`.
fn public_key_text(seed: u8) -> Result<String> {
    let key = deploy::parse_signing_key(&signing_key_text(seed))?;
    Ok(deploy::public_key_text(&key.verifying_key()))
}

/// The node config a deploy would seal: a plan with kernel arguments the lab
/// VM tolerates (1 GiB of memory) and the hugepages they reserve.
fn node_config(manifest: &HostManifest) -> deploy::NodeConfig {
    deploy::NodeConfig {
        format: 1,
        node: NODE.into(),
        boot_mac: NIC_MAC.into(),
        provisioner_url: PROVISIONER.into(),
        credential: "c".repeat(64),
        image: "host".into(),
        version: manifest.version.clone(),
        root_hash: manifest.root.verity.root_hash.clone(),
        plan: serde_json::from_value(serde_json::json!({
            "profile": "lab", "roles": [], "kernel_args": ["hugepagesz=2M", "hugepages=8"],
            "hugepages": [{"node": 0, "size_kb": 2048, "count": 8}],
            "reserved_cpus": [0], "isolated_cpus": [], "sriov": [],
            "root_disk": {"name": "vda", "by_path": null, "serial": null, "size_bytes": DISK_SIZE},
            "data_disks": [], "warnings": []
        }))
        .expect("a host plan"),
    }
}

fn partition<'a>(manifest: &'a HostManifest, label: &str) -> Result<&'a PartitionInfo> {
    manifest
        .disk
        .partitions
        .iter()
        .find(|p| p.label == label)
        .with_context(|| format!("{label} in the manifest"))
}

/// Seals `config` with the key of `seed` into slot 0 of the config partition.
fn write_config(
    disk: &Path,
    manifest: &HostManifest,
    config: &deploy::NodeConfig,
    generation: u64,
    seed: u8,
) -> Result<()> {
    use std::os::unix::fs::FileExt as _;
    let key = deploy::parse_signing_key(&signing_key_text(seed))?;
    let slot = deploy::seal(config, generation, &key);
    let at = partition(manifest, model::host::CONFIG)?.first_lba * model::host::SECTOR;
    let file = std::fs::OpenOptions::new().write(true).open(disk)?;
    file.write_all_at(&slot, at)?;
    file.sync_all()?;
    Ok(())
}

/// The partition table as a deploy leaves it on a larger disk: the backup
/// GPT at the disk's end and the data partition grown to it (its ext4 is
/// still the image's).
fn as_deployed(disk: &Path, manifest: &HostManifest) -> Result<()> {
    let data = partition(manifest, model::host::DATA)?;
    let n = data.number;
    let status = Command::new("sgdisk")
        .arg("-e")
        .arg(format!("-d{n}"))
        .arg(format!("-n{n}:{}:0", data.first_lba))
        .arg(format!("-c{n}:{}", data.label))
        .arg(format!("-t{n}:{}", data.type_guid))
        .arg(format!("-u{n}:{}", data.unique_guid))
        .arg(disk)
        .stdout(std::process::Stdio::null())
        .status()
        .context("sgdisk (Debian gdisk)")?;
    ensure!(status.success(), "sgdisk failed: {status}");
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
