//! `cargo xtask record-sysfs [NAME...]`: records the sysfs/procfs files
//! `node-agent inspect` reads, in a QEMU VM built from
//! `agent/tests/fixtures/NAME/vm.json`, into `agent/tests/fixtures/NAME/tree/`.
//!
//! The VM boots Debian's kernel (fetched and cached by the `image` crate)
//! straight into a small initramfs: busybox-static, the kernel modules the
//! VM's devices need (in dependency order), and a static `node-agent`. Its
//! init loads the modules, waits for the disks and NICs, runs
//! `node-agent inspect --record` (plus the node and CPU topology mask files
//! hwloc reads, for the fixture test's cross-check), and writes the recording as a gzipped,
//! base64 tar to the second serial port, which QEMU writes to a file here.
//! No network: NICs have no backend. Everything runs in a temp directory
//! that is removed at the end; QEMU is killed by PID on timeout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::workspace;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Fixtures to record (directory names under agent/tests/fixtures);
    /// all of them when none is given.
    names: Vec<String>,
    /// Seconds to wait for a VM to finish.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// A lab VM (`vm.json`): what QEMU is started with, and so the ground
/// truth the fixture test checks the inventory against.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// What this topology is for (printed when recording).
    pub description: String,
    /// `uefi` (OVMF) or `bios` (SeaBIOS).
    pub firmware: String,
    pub sockets: u32,
    pub cores_per_socket: u32,
    pub threads_per_core: u32,
    pub numa_nodes: Vec<VmNode>,
    #[serde(default)]
    pub nics: Vec<VmNic>,
    #[serde(default)]
    pub disks: Vec<VmDisk>,
    /// Kernel modules to load (names; dependencies are added).
    pub modules: Vec<String>,
    /// CPUs taken offline before the inspection (`cpuN/online` = 0).
    #[serde(default)]
    pub offline_cpus: Vec<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmNode {
    pub cpus: Vec<u32>,
    pub memory_mib: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmNic {
    /// QEMU device model: `igb`, `e1000e`, `virtio-net-pci`.
    pub model: String,
    pub mac: String,
    /// Put the NIC behind a `pxb-pcie` bridge on this NUMA node.
    pub numa_node: Option<u32>,
    /// Ground truth for agent/tests/fixtures.rs; the recorder does not need it.
    #[allow(dead_code)]
    pub driver: String,
    /// Ground truth (QEMU's igb has 7 VFs); not needed to start the VM.
    #[allow(dead_code)]
    pub sriov_totalvfs: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDisk {
    /// `nvme`, `virtio` or `sata`.
    pub bus: String,
    pub serial: String,
    pub size_mib: u64,
}

pub fn run(args: &Args) -> Result<()> {
    let fixtures = workspace::root().join("agent/tests/fixtures");
    let names = if args.names.is_empty() {
        let mut names: Vec<String> = std::fs::read_dir(&fixtures)
            .with_context(|| format!("listing {}", fixtures.display()))?
            .flatten()
            .filter(|e| e.path().join("vm.json").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    } else {
        args.names.clone()
    };
    for tool in ["qemu-system-x86_64", "busybox", "base64", "tar"] {
        if which(tool).is_none() {
            bail!("{tool} is not installed: run `cargo xtask deps`");
        }
    }
    let step = Instant::now();
    let kernel = image::kernel::fetch(
        &image::kernel::default_cache_dir(),
        image::kernel::DEFAULT_METAPACKAGE,
        &image::progress::Lines,
    )
    .context("fetching Debian's kernel")?;
    eprintln!("kernel {} ready ({:.1?})", kernel.release, step.elapsed());
    let agent = build_static_agent()?;
    for name in names {
        let dir = fixtures.join(&name);
        let text = std::fs::read_to_string(dir.join("vm.json"))
            .with_context(|| format!("reading {}/vm.json", dir.display()))?;
        let vm: Vm = serde_json::from_str(&text)
            .with_context(|| format!("{}/vm.json is not a VM definition", dir.display()))?;
        eprintln!("{name}: {}", vm.description);
        let started = Instant::now();
        record(
            &name,
            &vm,
            &kernel,
            &agent,
            &dir,
            Duration::from_secs(args.timeout),
        )?;
        eprintln!(
            "{name}: recorded into {}/tree ({:.1?})",
            dir.display(),
            started.elapsed()
        );
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// Builds `node-agent` statically linked (glibc, `+crt-static`), so it runs
/// as-is in an initramfs with no libraries.
fn build_static_agent() -> Result<PathBuf> {
    let target = "x86_64-unknown-linux-gnu";
    let status = workspace::cargo()
        .args([
            "build",
            "-p",
            "agent",
            "--bin",
            "node-agent",
            "--release",
            "--target",
            target,
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .context("running cargo build for the static node-agent")?;
    if !status.success() {
        bail!("building the static node-agent failed ({status})");
    }
    Ok(workspace::target_dir()?
        .join(target)
        .join("release/node-agent"))
}

/// Module paths (relative to `lib/modules/<release>`) for `wanted` and
/// their dependencies, dependencies first.
fn module_order(modules_dir: &Path, wanted: &[String]) -> Result<Vec<String>> {
    let mut index = BTreeMap::new();
    let mut stack = vec![modules_dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str())
                && let Some(stem) = name.strip_suffix(".ko")
            {
                let rel = p
                    .strip_prefix(modules_dir)
                    .expect("below")
                    .to_string_lossy();
                index.insert(stem.replace('-', "_"), rel.into_owned());
            }
        }
    }
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let mut order = Vec::new();
    fn visit(
        name: &str,
        modules_dir: &Path,
        index: &BTreeMap<String, String>,
        builtin: &str,
        order: &mut Vec<String>,
    ) -> Result<()> {
        let key = name.replace('-', "_");
        let Some(rel) = index.get(&key) else {
            if builtin.lines().any(|l| l.ends_with(&format!("/{name}.ko"))) {
                return Ok(());
            }
            bail!(
                "kernel module {name} not found in {}",
                modules_dir.display()
            );
        };
        if order.contains(rel) {
            return Ok(());
        }
        let bytes = std::fs::read(modules_dir.join(rel))?;
        let depends = modinfo(&bytes, "depends");
        for dep in depends.split(',').filter(|d| !d.is_empty()) {
            visit(dep, modules_dir, index, builtin, order)?;
        }
        order.push(rel.clone());
        Ok(())
    }
    for name in wanted {
        visit(name, modules_dir, &index, &builtin, &mut order)?;
    }
    Ok(order)
}

/// A `KEY=value` string of a module's `.modinfo` section (found by scanning
/// the file: the section is NUL-separated text).
fn modinfo(ko: &[u8], key: &str) -> String {
    let needle = format!("{key}=");
    ko.split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(needle.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

fn init_script(vm: &Vm) -> String {
    let disks = vm.disks.len();
    let nics = vm.nics.len();
    let offline: Vec<String> = vm.offline_cpus.iter().map(u32::to_string).collect();
    let offline = offline.join(" ");
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
rel=$(ls /lib/modules | grep -v load-order)
while read m; do insmod /lib/modules/$rel/$m || echo "insmod $m failed"; done < /lib/modules/load-order
[ -d /sys/firmware/efi ] && mount -t efivarfs efivarfs /sys/firmware/efi/efivars
i=0
while [ $i -lt 300 ]; do
  d=$(ls /sys/block | grep -cvE '^(loop|ram|zram)')
  n=$(ls /sys/class/net | grep -cv '^lo$')
  [ "$d" -ge {disks} ] && [ "$n" -ge {nics} ] && break
  sleep 0.2; i=$((i+1))
done
for n in $(ls /sys/class/net); do ip link set $n up; done
for c in {offline}; do echo 0 > /sys/devices/system/cpu/cpu$c/online; done
sleep 1
mkdir /rec
/bin/node-agent inspect --record /rec
# hwloc (the fixture test's cross-check) reads the mask forms of the same
# topology: record them too.
for f in /sys/devices/system/node/node*/cpumap /sys/devices/system/cpu/cpu[0-9]*/topology/*; do
  [ -r "$f" ] && mkdir -p "/rec${{f%/*}}" && cat "$f" > "/rec$f"
done
(echo RECORD-BEGIN; cd /rec && tar cf - . | gzip | base64; echo RECORD-END) > /dev/ttyS1
echo RECORD-DONE
poweroff -f
"#
    )
}

fn qemu_args(vm: &Vm, work: &Path) -> Result<Vec<String>> {
    let cpus = vm.sockets * vm.cores_per_socket * vm.threads_per_core;
    let memory: u64 = vm.numa_nodes.iter().map(|n| n.memory_mib).sum();
    let mut a: Vec<String> = Vec::new();
    let mut push = |s: String| a.push(s);
    for s in [
        "-accel",
        hardware_tests::lab::Accel::Tcg.qemu_arg(),
        "-cpu",
        "max,vendor=GenuineIntel",
        "-machine",
        "q35",
        "-nographic",
        "-no-reboot",
        // No default NIC (QEMU would add one with user-mode networking).
        "-nic",
        "none",
    ] {
        push(s.to_owned());
    }
    push("-m".into());
    push(format!("{memory}M"));
    push("-smp".into());
    push(format!(
        "{cpus},sockets={},cores={},threads={}",
        vm.sockets, vm.cores_per_socket, vm.threads_per_core
    ));
    if vm.numa_nodes.len() > 1 {
        for (id, node) in vm.numa_nodes.iter().enumerate() {
            let mut spec = format!("node,nodeid={id}");
            if node.memory_mib > 0 {
                push("-object".into());
                push(format!(
                    "memory-backend-ram,id=m{id},size={}M",
                    node.memory_mib
                ));
                write!(spec, ",memdev=m{id}")?;
            }
            for c in &node.cpus {
                write!(spec, ",cpus={c}")?;
            }
            push("-numa".into());
            push(spec);
        }
    }
    if vm.firmware == "uefi" {
        let vars = work.join("OVMF_VARS.fd");
        std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars)
            .context("copying OVMF_VARS_4M.fd (package ovmf: run `cargo xtask deps`)")?;
        push("-drive".into());
        push("if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".into());
        push("-drive".into());
        push(format!("if=pflash,format=raw,file={}", vars.display()));
    }
    for (i, nic) in vm.nics.iter().enumerate() {
        let mut dev = format!("{},mac={}", nic.model, nic.mac);
        // Without a bus, QEMU would plug devices into the last bus created.
        if let Some(node) = nic.numa_node {
            push("-device".into());
            push(format!(
                "pxb-pcie,id=pxb{i},bus_nr={},numa_node={node},bus=pcie.0",
                64 + 16 * i
            ));
            push("-device".into());
            push(format!(
                "pcie-root-port,id=rp{i},bus=pxb{i},chassis={},slot=0",
                10 + i
            ));
            write!(dev, ",bus=rp{i}")?;
        } else {
            dev.push_str(",bus=pcie.0");
        }
        push("-device".into());
        push(dev);
    }
    for (i, disk) in vm.disks.iter().enumerate() {
        let img = work.join(format!("disk{i}.img"));
        std::fs::File::create(&img)?.set_len(disk.size_mib << 20)?;
        push("-drive".into());
        push(format!("file={},if=none,id=d{i},format=raw", img.display()));
        push("-device".into());
        push(match disk.bus.as_str() {
            "nvme" => format!("nvme,drive=d{i},serial={},bus=pcie.0", disk.serial),
            "virtio" => format!(
                "virtio-blk-pci,drive=d{i},serial={},bus=pcie.0",
                disk.serial
            ),
            "sata" => format!("ide-hd,drive=d{i},bus=ide.{i},serial={}", disk.serial),
            other => bail!("disk bus {other:?}: use nvme, virtio or sata"),
        });
    }
    Ok(a)
}

fn record(
    name: &str,
    vm: &Vm,
    kernel: &image::kernel::Kernel,
    agent: &Path,
    fixture: &Path,
    timeout: Duration,
) -> Result<()> {
    let work = tempfile::Builder::new().prefix("in-record-").tempdir()?;
    let w = work.path();
    // The initramfs.
    let mut cpio = image::cpio::Archive::new();
    for d in ["bin", "dev", "proc", "sys", "lib", "lib/modules"] {
        cpio.add_dir(d, 0o755)?;
    }
    cpio.add_char_device("dev/console", 0o600, 5, 1)?;
    cpio.add_file("init", 0o755, init_script(vm).into_bytes())?;
    cpio.add_file(
        "bin/busybox",
        0o755,
        std::fs::read(which("busybox").expect("checked"))?,
    )?;
    cpio.add_file("bin/node-agent", 0o755, std::fs::read(agent)?)?;
    let order = module_order(&kernel.modules_dir, &vm.modules)?;
    let base = format!("lib/modules/{}", kernel.release);
    for rel in &order {
        let path = format!("{base}/{rel}");
        cpio.add_file(&path, 0o644, std::fs::read(kernel.modules_dir.join(rel))?)?;
    }
    cpio.add_file(
        "lib/modules/load-order",
        0o644,
        format!("{}\n", order.join("\n")).into_bytes(),
    )?;
    let initrd = w.join("initramfs");
    std::fs::write(&initrd, cpio.to_bytes())?;

    let console = w.join("console.log");
    let out = w.join("record.b64");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(qemu_args(vm, w)?)
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0,115200 panic=-1 loglevel=4"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", out.display()))
        .args(["-monitor", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&console).unwrap_or_default();
            bail!(
                "{name}: the VM did not finish within {timeout:?}; console:\n{}",
                tail(&log)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    if !status.success() || !log.contains("RECORD-DONE") {
        bail!(
            "{name}: the VM stopped without a recording ({status}); console:\n{}",
            tail(&log)
        );
    }
    // Decode and unpack the recording over a fresh tree.
    // Firmware may write to the port before Linux does: keep what lies
    // between the markers.
    let raw = String::from_utf8_lossy(&std::fs::read(&out)?).into_owned();
    let Some(body) = raw
        .split_once("RECORD-BEGIN")
        .and_then(|(_, rest)| rest.split_once("RECORD-END"))
        .map(|(body, _)| body)
    else {
        bail!("{name}: no RECORD-BEGIN/RECORD-END on the second serial port");
    };
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let tgz = w.join("record.tar.gz");
    let decoded = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().expect("piped").write_all(b64.as_bytes())?;
            c.wait_with_output()
        })?;
    if !decoded.status.success() {
        bail!("{name}: the recording read from the second serial port is not base64");
    }
    std::fs::write(&tgz, decoded.stdout)?;
    let tree = fixture.join("tree");
    if tree.exists() {
        std::fs::remove_dir_all(&tree)?;
    }
    std::fs::create_dir_all(&tree)?;
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&tree)
        .status()?;
    if !status.success() {
        bail!("{name}: unpacking the recording failed ({status})");
    }
    Ok(())
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
