//! The inspection ramdisk for real: Debian's kernel (apt, cached), the static node-agent
//! that `cargo xtask ramdisk` / `cargo xtask test` build, two builds compared byte for
//! byte, GNU cpio reading the result, and QEMU booting it into the agent.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use image::progress::Quiet;
use image::ramdisk::{self, KernelSource, Manifest, RamdiskOptions};

/// `<target>/x86_64-unknown-linux-gnu/release/node-agent`, found from this test binary
/// (`<target>/debug/deps/ramdisk-HASH`), or `$NODE_AGENT_STATIC`.
fn static_agent() -> PathBuf {
    if let Some(path) = std::env::var_os("NODE_AGENT_STATIC") {
        return path.into();
    }
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap();
    let agent = target.join("x86_64-unknown-linux-gnu/release/node-agent");
    assert!(
        agent.is_file(),
        "no static node-agent at {}: run `cargo xtask ramdisk` once (`cargo xtask test` builds it before the tests)",
        agent.display()
    );
    agent
}

fn options(out: &Path) -> RamdiskOptions {
    RamdiskOptions::new(
        out.to_owned(),
        static_agent(),
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
        std::fs::read(static_agent()).unwrap()
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

#[test]
fn qemu_boots_the_kernel_into_the_agent() {
    let (dir, _, _) = built();
    let start = Instant::now();
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1"])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-kernel"])
        .arg(dir.path().join("vmlinuz"))
        .arg("-initrd")
        .arg(dir.path().join("initramfs"))
        // panic=-1: when init exits (the agent has no init mode yet) the kernel panics and
        // reboots at once, which -no-reboot turns into QEMU exiting.
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
    let mut ran_init = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    // The kernel says it runs /init; then the agent's own output (clap's usage, until the
    // agent has an init mode) proves /init is node-agent and that it ran.
    let agent_spoke = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line.contains("Run /init as init process") {
                    ran_init = Some(start.elapsed());
                }
                let spoke = ran_init.is_some() && line.contains("node-agent");
                console.push(line);
                if spoke {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let console = console.join("\n");
    assert!(
        !console.contains("Initramfs unpacking failed"),
        "the kernel could not unpack the initramfs:\n{console}"
    );
    assert!(
        ran_init.is_some() && agent_spoke,
        "no `Run /init` followed by node-agent output within 90 s:\n{console}"
    );
    eprintln!(
        "QEMU (TCG): /init started {:.1} s after QEMU start, agent output at {:.1} s",
        ran_init.unwrap().as_secs_f64(),
        start.elapsed().as_secs_f64()
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
