//! The inspection ramdisk for real: Debian's kernel (apt, cached), the static node-agent
//! that `cargo xtask ramdisk` / `cargo xtask test` build, two builds compared byte for
//! byte, GNU cpio reading the result, and QEMU booting it into the agent.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use image::progress::Quiet;
use image::ramdisk::{self, KernelSource, Manifest, RamdiskOptions};

fn options(out: &Path) -> RamdiskOptions {
    RamdiskOptions::new(
        out.to_owned(),
        common::static_agent(),
        KernelSource::Apt {
            metapackage: image::kernel::DEFAULT_METAPACKAGE.to_owned(),
        },
        image::kernel::default_cache_dir(),
    )
}

/// One build shared by the tests of this file (building takes seconds of CPU).
fn built() -> &'static (tempfile::TempDir, Manifest, Duration) {
    static BUILT: OnceLock<(tempfile::TempDir, Manifest, Duration)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let manifest = ramdisk::build(&options(dir.path()), &Quiet)
            .unwrap_or_else(|e| panic!("building the ramdisk: {e}"));
        (dir, manifest, start.elapsed())
    })
}

#[test]
fn two_builds_give_the_same_bytes() {
    let (first, manifest, took) = built();
    let second = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let again = ramdisk::build(&options(second.path()), &Quiet).unwrap();
    eprintln!(
        "ramdisk builds: {:.1} s and {:.1} s (kernel cached); initramfs {} bytes",
        took.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        manifest.initramfs.size
    );
    assert_eq!(&again, manifest);
    for file in ["vmlinuz", "initramfs", "manifest.json"] {
        let a = std::fs::read(first.path().join(file)).unwrap();
        let b = std::fs::read(second.path().join(file)).unwrap();
        assert!(a == b, "{file} differs between two builds");
    }
}

#[test]
fn manifest_and_archive_follow_the_layout() {
    let (dir, manifest, _) = built();
    let names: Vec<&str> = manifest.modules.iter().map(|m| m.name.as_str()).collect();
    for driver in image::modules::DRIVERS {
        assert!(names.contains(driver), "{driver} missing from {names:?}");
    }
    // Dependencies first: each module's depends= come earlier in the load order.
    let initramfs = std::fs::read(dir.path().join("initramfs")).unwrap();
    assert_eq!(manifest.initramfs.size, initramfs.len() as u64);
    let cpio = zstd::stream::decode_all(initramfs.as_slice()).unwrap();
    assert_eq!(manifest.initramfs.uncompressed_size, cpio.len() as u64);
    let extracted = tempfile::tempdir().unwrap();
    let mut child = Command::new("cpio")
        .args(["-i", "-d", "--quiet", "--no-absolute-filenames"])
        .arg("--nonmatching")
        .arg("dev/console")
        .current_dir(extracted.path())
        .stdin(Stdio::piped())
        .spawn()
        .expect("`cpio` not found: run `cargo xtask deps`");
    child.stdin.take().unwrap().write_all(&cpio).unwrap();
    assert!(child.wait().unwrap().success());
    let root = extracted.path();
    assert_eq!(
        std::fs::read(root.join("init")).unwrap(),
        std::fs::read(common::static_agent()).unwrap()
    );
    let order = std::fs::read_to_string(root.join("lib/modules/load-order")).unwrap();
    let order: Vec<&str> = order.lines().collect();
    let manifest_paths: Vec<&str> = manifest.modules.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(order, manifest_paths);
    let release = &manifest.kernel.release;
    let mut position = BTreeMap::new();
    for (i, path) in order.iter().enumerate() {
        let file = root.join("lib/modules").join(release).join(path);
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let info = image::modules::parse_modinfo(path, &bytes).unwrap();
        for dep in &info.depends {
            assert!(
                position.contains_key(dep),
                "{path} needs {dep}, which is not loaded before it"
            );
        }
        position.insert(info.name, i);
    }
    // Nothing else: the agent, the modules, the load order and empty mount points.
    let mut files = vec![];
    for entry in walk(root) {
        files.push(
            entry
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
    }
    assert_eq!(files.len(), 2 + order.len(), "{files:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Kills the QEMU it holds when dropped (test failures and panics included).
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What QEMU printed on the serial console, and when the awaited line came.
struct Boot {
    console: String,
    /// Seconds from QEMU start to the line `until` accepted; `None` on timeout or exit.
    reached: Option<Duration>,
}

/// Boots `vmlinuz` + `initrd` in QEMU (TCG, one vCPU) with the serial console on stdout,
/// until a console line satisfies `until` (or 120 s pass, or QEMU exits).
fn boot(vmlinuz: &Path, initrd: &Path, mut until: impl FnMut(&str) -> bool) -> Boot {
    let start = Instant::now();
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        // panic=-1: if init exits, the kernel panics and reboots at once, which -no-reboot
        // turns into QEMU exiting.
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 not found: run `cargo xtask deps`");
    let mut qemu = Qemu(child);
    let stdout = qemu.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut console = Vec::new();
    let deadline = start + Duration::from_secs(120);
    let mut reached = None;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let done = until(&line);
        console.push(line);
        if done {
            reached = Some(start.elapsed());
            break;
        }
    }
    Boot {
        console: console.join("\n"),
        reached,
    }
}

#[test]
fn qemu_boots_the_kernel_into_the_agent() {
    let (dir, _, _) = built();
    // The kernel says it runs /init; then the agent's own output (clap's usage, until the
    // agent has an init mode) proves /init is node-agent and that it ran.
    let mut ran_init = None;
    let started = Instant::now();
    let booted = boot(
        &dir.path().join("vmlinuz"),
        &dir.path().join("initramfs"),
        |line| {
            if line.contains("Run /init as init process") {
                ran_init = Some(started.elapsed());
            }
            ran_init.is_some() && line.contains("node-agent")
        },
    );
    let console = &booted.console;
    assert!(
        !console.contains("Initramfs unpacking failed"),
        "the kernel could not unpack the initramfs:\n{console}"
    );
    let (Some(ran_init), Some(spoke)) = (ran_init, booted.reached) else {
        panic!("no `Run /init` followed by node-agent output within 120 s:\n{console}");
    };
    eprintln!(
        "QEMU (TCG): /init started {:.1} s after QEMU start, agent output at {:.1} s",
        ran_init.as_secs_f64(),
        spoke.as_secs_f64()
    );
}

/// The real kernel loads every module of the ramdisk in the order of
/// `/lib/modules/load-order` (busybox `insmod`, which resolves nothing itself: a module
/// loaded before one it needs fails with "Unknown symbol"). The built initramfs is booted
/// with a second archive appended (the kernel unpacks concatenated archives in turn) that
/// replaces `/init` with a script.
#[test]
fn every_module_loads_in_load_order_in_qemu() {
    let (dir, manifest, _) = built();
    let busybox = std::fs::read("/bin/busybox")
        .expect("/bin/busybox not found: run `cargo xtask deps` (Debian package busybox-static)");
    let script = "#!/bin/busybox sh
n=0
for m in $(/bin/busybox cat /lib/modules/load-order); do
  if /bin/busybox insmod /lib/modules/$(/bin/busybox uname -r)/$m; then
    n=$((n+1))
  else
    echo \"INSMOD-FAILED $m\"
  fi
done
echo \"INSMOD-DONE $n\"
/bin/busybox poweroff -f
";
    let mut overlay = image::cpio::Archive::new();
    overlay
        .add_file("init", 0o755, script.as_bytes().to_vec())
        .unwrap();
    overlay.add_file("bin/busybox", 0o755, busybox).unwrap();
    let mut initrd = std::fs::read(dir.path().join("initramfs")).unwrap();
    // The kernel looks for the next archive at a 4-byte boundary (zeros are skipped).
    initrd.resize(initrd.len().next_multiple_of(4), 0);
    initrd.extend(overlay.to_bytes());
    let initrd_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(initrd_file.path(), &initrd).unwrap();
    let booted = boot(&dir.path().join("vmlinuz"), initrd_file.path(), |line| {
        line.starts_with("INSMOD-DONE")
    });
    let console = &booted.console;
    let failed: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("INSMOD-FAILED") || l.contains("Unknown symbol"))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}\n{console}");
    let done = console
        .lines()
        .find(|l| l.starts_with("INSMOD-DONE"))
        .unwrap_or_else(|| panic!("the module script did not finish within 120 s:\n{console}"));
    assert_eq!(done, format!("INSMOD-DONE {}", manifest.modules.len()));
    eprintln!(
        "QEMU (TCG): {} modules loaded {:.1} s after QEMU start",
        manifest.modules.len(),
        booted.reached.unwrap().as_secs_f64()
    );
}

/// Our dependency resolution (from each module's `.modinfo`) against `depmod`'s
/// `modules.dep` for the same kernel: the same set of modules, each loaded after all it
/// depends on.
#[test]
fn modules_match_depmod() {
    let (_, manifest, _) = built();
    let kernel = image::kernel::fetch(
        &image::kernel::default_cache_dir(),
        image::kernel::DEFAULT_METAPACKAGE,
        &Quiet,
    )
    .unwrap();
    let root = kernel
        .modules_dir
        .to_str()
        .and_then(|d| d.strip_suffix(&format!("/lib/modules/{}", kernel.release)))
        .expect("the kernel package keeps its modules in lib/modules/RELEASE");
    let out = Command::new("depmod")
        .args(["-b", root, "-n", &kernel.release])
        .output()
        .expect("`depmod` not found: run `cargo xtask deps` (Debian package kmod)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `-n` prints modules.dep first ("path: dep dep ..."), then other files after a comment.
    let text = String::from_utf8(out.stdout).unwrap();
    let depmod: BTreeMap<&str, Vec<&str>> = text
        .lines()
        .take_while(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(m, deps)| (m, deps.split_whitespace().collect()))
        .collect();
    let ours: Vec<&str> = manifest.modules.iter().map(|m| m.path.as_str()).collect();
    for (i, path) in ours.iter().enumerate() {
        let deps = depmod
            .get(path)
            .unwrap_or_else(|| panic!("depmod does not know {path}"));
        for dep in deps {
            let at = ours.iter().position(|p| p == dep);
            assert!(
                at.is_some_and(|at| at < i),
                "depmod says {path} needs {dep}; ours loads it at {at:?}, {path} at {i}"
            );
        }
    }
    // The closure of the listed drivers under depmod's dependencies is exactly our set.
    let roots = image::modules::DRIVERS
        .iter()
        .chain(image::modules::OPTIONAL_DRIVERS);
    let mut closure = std::collections::BTreeSet::new();
    for root in roots {
        if let Some(m) = manifest.modules.iter().find(|m| m.name == *root) {
            closure.insert(m.path.as_str());
            closure.extend(depmod[m.path.as_str()].iter().copied());
        }
    }
    let ours: std::collections::BTreeSet<&str> = ours.into_iter().collect();
    assert_eq!(ours, closure);
}
