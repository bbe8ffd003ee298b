//! The lab harness: a network namespace with bridge `br0` (10.213.0.1/24) and
//! one tap per VM, the real `provisioner serve` inside it on a temporary copy
//! of the lab site, router advertisements on that bridge only (radvd, so iPXE
//! does not wait ~13 s for IPv6 autoconfiguration; the provisioner itself
//! never sends them), and QEMU VMs (q35, SeaBIOS or OVMF with a VARS copy per
//! VM, TCG unless a probe shows KVM works) with their serial consoles in
//! files.
//!
//! Every lab test builds on [`Lab`]. Invariants: the lab touches only the
//! namespace it created (named `px<pid>n<k>`) and the devices inside it;
//! dropping a [`Lab`] (also while panicking) kills the processes it started,
//! by PID, and removes the namespace; unless [`Lab::pass`] was called, the
//! lab directory (site copy, state, provisioner log, serial logs) is kept
//! and its path printed.

pub mod accel;
pub mod assets;
pub mod host_vm;
mod netns;
mod process;
mod rack_vm;
mod vm;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

pub use accel::{Accel, accel};
pub use netns::{Netns, PREFIX, VethPair};
pub use process::Owned;
pub use rack_vm::{RackSetup, RackVm};
pub use vm::{Firmware, Vm, VmSpec};

/// The provisioner's address on the lab bridge (site.yaml `network.address`).
pub const BRIDGE_ADDRESS: &str = "10.213.0.1/24";
/// The API / HTTP boot listener in the lab site.
pub const HTTP: &str = "10.213.0.1:8080";

/// Why the lab could not do something; every message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("cannot start {what}: is it installed? (`cargo xtask deps`)")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr} (the lab needs root for network namespaces)")]
    Command { command: String, stderr: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {waited:?} waiting for {what}; logs: {logs}")]
    Timeout {
        what: String,
        waited: Duration,
        logs: String,
    },
    #[error("{what} exited early ({status}); logs: {logs}")]
    Exited {
        what: String,
        status: String,
        logs: String,
    },
    #[error("{0}")]
    Missing(String),
    /// A request refused before touching anything: an interface name too
    /// long, a namespace name already taken.
    #[error("{0}")]
    Invalid(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// Writes `src` with each `(from, to)` replaced to `dir/NAME` (NAME: `src`'s
/// file name) and returns that path: a test's variant of a checked-in lab
/// file (e.g. a shorter timeout in site.yaml). Every `from` must be in the
/// file, so a test notices when the file it edits changed.
pub fn edited_copy(src: &Path, dir: &Path, edits: &[(&str, &str)]) -> Result<PathBuf, LabError> {
    let mut text =
        std::fs::read_to_string(src).map_err(io(format!("reading {}", src.display())))?;
    for (from, to) in edits {
        if !text.contains(from) {
            return Err(LabError::Missing(format!(
                "{}: no `{from}` to replace; update the test that edits it",
                src.display()
            )));
        }
        text = text.replace(from, to);
    }
    let name = src.file_name().unwrap_or_default();
    let out = dir.join(name);
    std::fs::write(&out, text).map_err(io(format!("writing {}", out.display())))?;
    Ok(out)
}

/// The built `provisioner` binary next to the running test's target
/// directory (`cargo test --workspace` builds it for the provisioner's own tests).
pub fn provisioner_binary() -> Result<PathBuf, LabError> {
    sibling_binary(
        "provisioner",
        "run `cargo build -p provisioner` (or the whole `cargo test --workspace`, which builds it)",
    )
}

/// A binary of the workspace next to the running binary: `target/<profile>/<name>`
/// for a test (`target/<profile>/deps/<test>`) or for xtask (`target/<profile>/xtask`).
pub fn sibling_binary(name: &str, how_to_build: &str) -> Result<PathBuf, LabError> {
    let exe = std::env::current_exe().map_err(io("locating the test binary"))?;
    // Tests run from target/<profile>/deps/, xtask from target/<profile>/.
    let candidate = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    candidate.ok_or_else(|| {
        LabError::Missing(format!(
            "no {name} binary next to the test binary: {how_to_build}"
        ))
    })
}

/// Copies a directory tree (files and directories; symlinks as links).
fn copy_tree(from: &Path, to: &Path) -> Result<(), LabError> {
    std::fs::create_dir_all(to).map_err(io(format!("creating {}", to.display())))?;
    let entries = std::fs::read_dir(from).map_err(io(format!("reading {}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("reading {}", from.display())))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry
            .file_type()
            .map_err(io(format!("stat {}", src.display())))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(io(format!("copying {}", src.display())))?;
        }
    }
    Ok(())
}

/// When a PXE-booted VM reached each milestone, from QEMU start.
#[derive(Debug, Clone, Copy)]
pub struct BootTimes {
    /// Its iPXE script was served.
    pub script: Duration,
    /// The test initramfs printed its marker.
    pub marker: Duration,
}

/// Options of a lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The site to copy (default: the checked-in lab site).
    pub site: PathBuf,
    /// The `provisioner` binary (default: [`provisioner_binary`]).
    pub provisioner: Option<PathBuf>,
    /// Start `provisioner serve` (default on; off when a peer serves the lab
    /// instead, e.g. the dnsmasq stand-in of `cargo xtask bench pxe`).
    pub serve: bool,
    /// Files to place in the site copy: (path inside the site, source file).
    pub site_files: Vec<(PathBuf, PathBuf)>,
    /// Send IPv6 router advertisements on br0 (default on).
    pub router_advertisements: bool,
    /// Environment of `provisioner serve` (e.g. the lab BMC password).
    pub env: Vec<(String, String)>,
}

impl LabOptions {
    /// Places a ramdisk where the lab site's inspection image points
    /// (`assets/inspect/{vmlinuz,initramfs}`).
    pub fn with_inspect_ramdisk(mut self, ramdisk: &assets::TestRamdisk) -> Self {
        self.site_files.push((
            PathBuf::from("assets/inspect/vmlinuz"),
            ramdisk.kernel.clone(),
        ));
        self.site_files.push((
            PathBuf::from("assets/inspect/initramfs"),
            ramdisk.initramfs.clone(),
        ));
        self
    }
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            site: crate::lab_site_dir(),
            provisioner: None,
            serve: true,
            site_files: vec![],
            router_advertisements: true,
            env: vec![],
        }
    }
}

/// A running lab. Drop order: VMs, daemons, then the namespace.
#[derive(Debug)]
pub struct Lab {
    vms: Vec<Vm>,
    rack_vms: Vec<RackVm>,
    provisioner: Option<Owned>,
    /// The binary `provisioner serve` was last started from (for [`Lab::cli`]).
    provisioner_binary: Option<PathBuf>,
    radvd: Option<Owned>,
    netns: Netns,
    dir: PathBuf,
    passed: bool,
    /// Keep the lab directory even when passed.
    keep: bool,
    started: Instant,
    /// Taps created so far (their names are numbered).
    taps: usize,
    /// Environment of `provisioner serve`.
    env: Vec<(String, String)>,
}

impl Lab {
    /// Creates the namespace and bridge, copies the site, starts radvd and
    /// `provisioner serve`, and waits until the API answers.
    pub fn start(options: LabOptions) -> Result<Lab, LabError> {
        let dir = std::env::temp_dir().join(format!(
            "{PREFIX}-lab-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let netns = Netns::create()?;
        let mut lab = Lab {
            vms: vec![],
            rack_vms: vec![],
            taps: 0,
            env: options.env.clone(),
            provisioner: None,
            provisioner_binary: None,
            radvd: None,
            netns,
            dir,
            passed: false,
            keep: false,
            started: Instant::now(),
        };
        lab.netns.add_bridge(BRIDGE_ADDRESS)?;
        let site = lab.dir.join("site");
        copy_tree(&options.site, &site)?;
        for (inside, source) in &options.site_files {
            let target = site.join(inside);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("creating {}", parent.display())))?;
            }
            std::fs::copy(source, &target)
                .map_err(io(format!("copying {} into the site", source.display())))?;
        }
        if options.router_advertisements {
            lab.start_radvd()?;
        }
        if options.serve {
            let binary = match options.provisioner {
                Some(binary) => binary,
                None => provisioner_binary()?,
            };
            lab.start_provisioner(&binary, &site)?;
        }
        Ok(lab)
    }

    /// The lab directory (site copy, state, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The provisioner's log file.
    pub fn provisioner_log(&self) -> PathBuf {
        self.dir.join("provisioner.log")
    }

    /// Marks the test as passed: the lab directory is removed on drop.
    pub fn pass(&mut self) {
        self.passed = true;
    }

    /// Marks the run as passed but keeps the lab directory (its logs) on drop.
    pub fn pass_and_keep(&mut self) {
        self.passed = true;
        self.keep = true;
    }

    fn start_radvd(&mut self) -> Result<(), LabError> {
        // IPv6 forwarding in our namespace only: radvd refuses to advertise without it.
        let sysctl = self.dir.join("sysctl.log");
        let status = self
            .netns
            .command("sysctl")
            .args(["-q", "-w", "net.ipv6.conf.all.forwarding=1"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&sysctl).map_err(io("creating sysctl.log"))?)
            .status()
            .map_err(|source| LabError::Spawn {
                what: "sysctl (procps)".into(),
                source,
            })?;
        if !status.success() {
            return Err(LabError::Command {
                command: "sysctl net.ipv6.conf.all.forwarding=1".into(),
                stderr: std::fs::read_to_string(&sysctl).unwrap_or_default(),
            });
        }
        // No default route offered (lifetime 0), a ULA prefix for SLAAC: iPXE
        // finishes IPv6 autoconfiguration at once and nothing leaves the bridge.
        let conf = self.dir.join("radvd.conf");
        std::fs::write(
            &conf,
            "interface br0 {\n  AdvSendAdvert on;\n  MinRtrAdvInterval 3;\n  MaxRtrAdvInterval 10;\n  \
             AdvDefaultLifetime 0;\n  prefix fd00:213::/64 { AdvOnLink on; AdvAutonomous on; };\n};\n",
        )
        .map_err(io("writing radvd.conf"))?;
        let log =
            std::fs::File::create(self.dir.join("radvd.log")).map_err(io("creating radvd.log"))?;
        let child = self
            .netns
            .command("radvd")
            .arg("--nodaemon")
            .arg("--config")
            .arg(&conf)
            .arg("--pidfile")
            .arg(self.dir.join("radvd.pid"))
            .args(["--logmethod", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| LabError::Spawn {
                what: "radvd".into(),
                source,
            })?;
        self.radvd = Some(Owned::new("radvd", child));
        Ok(())
    }

    fn start_provisioner(&mut self, binary: &Path, site: &Path) -> Result<(), LabError> {
        let state = self.dir.join("state");
        // Appended to: a restarted daemon's log follows the first one's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.provisioner_log())
            .map_err(io("opening provisioner.log"))?;
        // A killed daemon leaves its URL file behind: wait for the new one's.
        let url_file = state.join("api-url");
        match std::fs::remove_file(&url_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(format!("removing {}", url_file.display()))(e));
            }
            _ => {}
        }
        let child = self
            .netns
            .command(&binary.to_string_lossy())
            .arg("serve")
            .arg("--site")
            .arg(site)
            .arg("--state")
            .arg(&state)
            // The lab site's BMCs are not running in a PXE lab.
            .args(["--power-sync-interval", "0"])
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("provisioner.log"))?)
            .stderr(log)
            .spawn()
            .map_err(|source| LabError::Spawn {
                what: binary.display().to_string(),
                source,
            })?;
        self.provisioner = Some(Owned::new("provisioner serve", child));
        self.provisioner_binary = Some(binary.to_owned());
        // Ready when the daemon wrote its API URL (after binding every listener).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !url_file.exists() {
            if let Some(status) = self.provisioner_exit() {
                return Err(LabError::Exited {
                    what: "provisioner serve".into(),
                    status,
                    logs: self.provisioner_log().display().to_string(),
                });
            }
            if Instant::now() > deadline {
                return Err(LabError::Timeout {
                    what: "provisioner serve to write STATE/api-url".into(),
                    waited: Duration::from_secs(30),
                    logs: self.provisioner_log().display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Starts a VM on a new tap of br0. Its clock ([`Vm::started`]) starts
    /// when QEMU is spawned.
    pub fn start_vm(&mut self, spec: VmSpec) -> Result<&mut Vm, LabError> {
        let tap = self.new_tap()?;
        let vm = Vm::start(&self.netns, &tap, &self.dir, spec)?;
        self.vms.push(vm);
        Ok(self.vms.last_mut().expect("just pushed"))
    }

    pub fn vm(&mut self, index: usize) -> &mut Vm {
        &mut self.vms[index]
    }

    /// Waits until the provisioner's log has a line containing every one of
    /// `needles`; returns the time since `since`.
    pub fn wait_log(
        &mut self,
        needles: &[&str],
        since: Instant,
        timeout: Duration,
    ) -> Result<Duration, LabError> {
        self.wait_line(&self.provisioner_log(), needles, since, timeout)
    }

    /// Waits until the file at `path` (a log) has a line containing every
    /// one of `needles`; returns the time since `since`. Fails early when the
    /// provisioner or a VM exits.
    pub fn wait_line(
        &mut self,
        path: &Path,
        needles: &[&str],
        since: Instant,
        timeout: Duration,
    ) -> Result<Duration, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text
                .lines()
                .any(|line| needles.iter().all(|n| line.contains(n)))
            {
                return Ok(since.elapsed());
            }
            if let Some(status) = self.provisioner_exit() {
                return Err(LabError::Exited {
                    what: "provisioner serve".into(),
                    status,
                    logs: path.display().to_string(),
                });
            }
            // A VM that died (firmware or QEMU error) will never fetch anything.
            for vm in &mut self.vms {
                if let Some(status) = vm.exit_status() {
                    return Err(LabError::Exited {
                        what: format!("QEMU {} while waiting for {needles:?}", vm.spec.name),
                        status,
                        logs: vm.dir.display().to_string(),
                    });
                }
            }
            if Instant::now() > deadline {
                return Err(LabError::Timeout {
                    what: format!("provisioner log line with {needles:?}"),
                    waited: timeout,
                    logs: self.dir.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The PID of `provisioner serve`, while it runs.
    pub fn provisioner_pid(&self) -> Option<u32> {
        self.provisioner.as_ref().map(|p| p.child.id())
    }

    /// Runs the operator CLI (`provisioner ARGS --api http://HTTP`) in the lab's
    /// namespace with the daemon's API token, as an operator on the provisioning
    /// network would; its output, whatever its exit status.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output, LabError> {
        let binary = match &self.provisioner_binary {
            Some(binary) => binary.clone(),
            None => provisioner_binary()?,
        };
        let token_file = self.dir.join("state/api-token");
        let token = std::fs::read_to_string(&token_file)
            .map_err(io(format!("reading {}", token_file.display())))?;
        self.netns
            .command(&binary.to_string_lossy())
            .args(args)
            .args(["--api", &format!("http://{HTTP}")])
            .env("PROVISIONER_TOKEN", token.trim())
            .output()
            .map_err(|source| LabError::Spawn {
                what: binary.display().to_string(),
                source,
            })
    }

    /// Kills `provisioner serve` with SIGKILL, as a crash or a power cut would
    /// (no shutdown path runs), and reaps it; its PID. [`Lab::serve`] starts it
    /// again on the same state directory.
    pub fn kill_provisioner(&mut self) -> Option<u32> {
        let mut p = self.provisioner.take()?;
        let pid = p.child.id();
        let _ = p.child.kill();
        let _ = p.child.wait();
        Some(pid)
    }

    /// The provisioner's exit status, once it has exited.
    fn provisioner_exit(&mut self) -> Option<String> {
        let p = self.provisioner.as_mut()?;
        match p.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(err) => Some(err.to_string()),
        }
    }

    /// Starts a VM that PXE-boots and waits for its iPXE script to be served
    /// and for [`assets::MARKER`] on its console: the two times from QEMU start.
    pub fn pxe_boot(
        &mut self,
        spec: VmSpec,
        timeouts: (Duration, Duration),
    ) -> Result<BootTimes, LabError> {
        let mac = spec.mac.clone();
        let log = self.provisioner_log();
        self.pxe_boot_with(spec, &log, &["iPXE script served", &mac], timeouts)
    }

    /// [`Lab::pxe_boot`] where the script fetch shows as a line with
    /// `needles` in the log at `log` (another server's).
    pub fn pxe_boot_with(
        &mut self,
        spec: VmSpec,
        log: &Path,
        needles: &[&str],
        timeouts: (Duration, Duration),
    ) -> Result<BootTimes, LabError> {
        let index = self.vms.len();
        let started = self.start_vm(spec)?.started;
        let script = self.wait_line(log, needles, started, timeouts.0)?;
        let marker = self.vm(index).wait_serial(assets::MARKER, timeouts.1)?;
        Ok(BootTimes { script, marker })
    }

    /// A new tap on br0.
    pub(crate) fn new_tap(&mut self) -> Result<String, LabError> {
        self.taps += 1;
        self.netns.add_tap(self.taps - 1)
    }

    /// Starts `provisioner serve` on the lab's site copy, for a lab made with
    /// `serve: false` (e.g. to start the rack's VMs and BMCs first).
    pub fn serve(&mut self, binary: Option<PathBuf>) -> Result<(), LabError> {
        let binary = match binary {
            Some(binary) => binary,
            None => provisioner_binary()?,
        };
        let site = self.dir.join("site");
        self.start_provisioner(&binary, &site)
    }

    /// The lab's site copy.
    pub fn site(&self) -> PathBuf {
        self.dir.join("site")
    }

    /// Seconds since the lab started (for progress messages).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.vms.clear();
        self.rack_vms.clear();
        if let Some(p) = self.provisioner.as_mut() {
            p.stop(Duration::from_secs(5));
        }
        self.provisioner = None;
        self.radvd = None;
        if self.passed && self.keep && !std::thread::panicking() {
            eprintln!("lab: directory kept in {}", self.dir.display());
        } else if self.passed && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "lab: test did not pass; logs kept in {} (provisioner.log, vm*/serial.log)",
                self.dir.display()
            );
        }
        // The namespace goes when `netns` is dropped, after this body.
    }
}
