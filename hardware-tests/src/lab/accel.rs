//! The lab's accelerator: KVM only where a probe guest was seen to boot under it.
//!
//! On some hosts `/dev/kvm` exists and QEMU starts under `-accel kvm`, yet the
//! guest stops making progress in firmware (LAB-NOTES: a paravirtual `kvm-pvm`
//! module hung every lab guest in iPXE while QEMU kept running, silent). So the
//! probe boots a guest through the lab's own firmware path (q35, `-cpu max`,
//! SeaBIOS and the virtio NIC's iPXE option ROM) and needs a marker that only
//! iPXE's interpreter can print on the serial console within [`PROBE_LIMIT`].
//! The network is QEMU's user-mode stack with `restrict=on` and its built-in
//! TFTP server: no packet leaves QEMU and no root is needed.
//!
//! The decision ([`Probe::decide`]) takes every outside fact as a parameter (the
//! QEMU program, the KVM device, the cache file, `LAB_ACCEL`) so tests can run
//! it against stand-ins; [`accel`] runs it once per process on this host and
//! prints its line.

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::process::Owned;

/// How long the probe guest may take to print its marker. A TCG run of the
/// same probe printed it after 5.6-6.0 s on a 2-core host busy with builds
/// (load 5; a working KVM is faster still); 20 s leaves a margin of three
/// without making a hung KVM cost much, once per host (the verdict is cached).
pub const PROBE_LIMIT: Duration = Duration::from_secs(20);

/// Bumped whenever the probe changes what it checks, so that cached verdicts
/// of an older probe are not trusted.
const PROBE_REVISION: u32 = 1;

/// The QEMU the lab runs.
const QEMU: &str = "qemu-system-x86_64";

/// Accelerator: TCG unless KVM was shown to run a guest here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// The value of QEMU's `-accel`.
    ///
    /// TCG runs every vCPU of a VM on one host thread (`thread=single`). With
    /// multi-threaded TCG, a 4-vCPU guest of the Debian 6.1 ramdisk kernel lost
    /// a halted vCPU's timer interrupts in about one boot in four (RCU stall
    /// while the NVMe driver waited for its admin queue; the node then hung in
    /// inspection). Single-threaded, 6 boots of 6 came up, each faster (15 s
    /// against 17-20 s to the agent's module load on this 2-core host): two host
    /// cores gain nothing from four TCG threads.
    pub fn qemu_arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg,thread=single",
        }
    }

    /// The short name printed in the verdict line.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The accelerator the lab uses in this process: decided once (see
/// [`decision`]), the first call prints the verdict line on stderr.
pub fn accel() -> Accel {
    decision().verdict.accel
}

/// This host's decision, made once per process: `LAB_ACCEL=tcg|kvm`, else no
/// `/dev/kvm` means TCG, else the cached verdict for this kernel and QEMU,
/// else the probe guest under KVM. The first call prints the verdict line
/// (e.g. `accelerator: tcg (no /dev/kvm)`) on stderr; callers running in
/// parallel wait for that one decision.
pub fn decision() -> &'static Decision {
    static DECISION: OnceLock<Decision> = OnceLock::new();
    DECISION.get_or_init(|| {
        let decision = Probe::host().decide();
        eprintln!("{decision}");
        decision
    })
}

/// An accelerator and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub accel: Accel,
    pub reason: String,
}

impl Verdict {
    fn new(accel: Accel, reason: impl Into<String>) -> Verdict {
        Verdict {
            accel,
            reason: reason.into(),
        }
    }
}

/// A verdict and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The cache file the verdict was read from, when it was not decided now.
    pub cached_from: Option<PathBuf>,
    /// Things the operator should know (an ignored `LAB_ACCEL`, a cache that
    /// could not be written).
    pub notes: Vec<String>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accelerator: {} ({}",
            self.verdict.accel.name(),
            self.verdict.reason
        )?;
        if let Some(path) = &self.cached_from {
            write!(
                f,
                "; cached verdict from {}, delete it to probe again",
                path.display()
            )?;
        }
        for note in &self.notes {
            write!(f, "; {note}")?;
        }
        write!(f, ")")
    }
}

/// What the probe guest did under the accelerator it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The marker was on the serial console this long after QEMU started.
    Marker(Duration),
    /// QEMU kept running but the marker did not appear within the limit.
    Hung {
        limit: Duration,
        /// The last readable line of the serial console, if any.
        last_line: Option<String>,
    },
    /// QEMU exited before printing the marker.
    Exited {
        after: Duration,
        status: String,
        /// The last line QEMU wrote on stderr, if any.
        stderr: Option<String>,
    },
    /// QEMU (or the probe's scratch directory) could not be set up.
    NotStarted(String),
}

impl ProbeOutcome {
    /// The verdict for KVM given what the probe guest did under it.
    pub fn verdict(&self) -> Verdict {
        match self {
            ProbeOutcome::Marker(after) => Verdict::new(
                Accel::Kvm,
                format!(
                    "probe guest printed its marker in {:.1} s",
                    after.as_secs_f64()
                ),
            ),
            ProbeOutcome::Hung { limit, last_line } => {
                let mut reason = format!(
                    "KVM present but a probe guest hung in firmware: no marker within {} s",
                    limit.as_secs_f64()
                );
                if let Some(line) = last_line {
                    reason.push_str(&format!(", last console line {line:?}"));
                }
                Verdict::new(Accel::Tcg, reason)
            }
            ProbeOutcome::Exited {
                after,
                status,
                stderr,
            } => {
                let mut reason = format!(
                    "KVM present but the probe QEMU exited without the marker after {:.1} s, {status}",
                    after.as_secs_f64()
                );
                if let Some(line) = stderr {
                    reason.push_str(&format!("; it said {line:?}"));
                }
                Verdict::new(Accel::Tcg, reason)
            }
            ProbeOutcome::NotStarted(why) => Verdict::new(
                Accel::Tcg,
                format!("KVM present but the probe QEMU did not start: {why}"),
            ),
        }
    }

    /// Whether the verdict says something about this host that holds until
    /// its kernel or QEMU changes. A probe that could not even start (no
    /// scratch directory, QEMU missing) says nothing about KVM.
    fn is_host_property(&self) -> bool {
        !matches!(self, ProbeOutcome::NotStarted(_))
    }
}

/// What a cached verdict is valid for: an upgrade of either, or a new probe,
/// probes again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// The host kernel's release (`uname -r`).
    pub kernel: String,
    /// The first line of `qemu-system-x86_64 --version`.
    pub qemu: String,
    pub probe: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    key: CacheKey,
    verdict: Verdict,
}

/// The cache file's text for `verdict` under `key`.
pub fn cache_text(key: &CacheKey, verdict: &Verdict) -> String {
    let entry = CacheEntry {
        key: key.clone(),
        verdict: verdict.clone(),
    };
    // Serializing these plain structs cannot fail; the fallback keeps the
    // function total without a panic path.
    serde_json::to_string_pretty(&entry).unwrap_or_default() + "\n"
}

/// The verdict in a cache file's text, if it is valid and made for `key`.
pub fn cached_verdict(text: &str, key: &CacheKey) -> Option<Verdict> {
    let entry: CacheEntry = serde_json::from_str(text).ok()?;
    (entry.key == *key).then_some(entry.verdict)
}

/// The per-user cache file: `$XDG_CACHE_HOME/provisioner/accel.json`, else
/// `~/.cache/provisioner/accel.json`; none when neither variable is set.
pub fn cache_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        })?;
    Some(base.join("provisioner").join("accel.json"))
}

/// Everything the decision depends on; [`Probe::host`] for this host.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The QEMU program the probe guest runs under.
    pub qemu: PathBuf,
    /// KVM's device node; without it the verdict is TCG at once.
    pub kvm_device: PathBuf,
    /// Where verdicts are cached; `None` probes every time.
    pub cache: Option<PathBuf>,
    /// How long the probe guest may take to print its marker.
    pub limit: Duration,
    /// The value of `LAB_ACCEL`, if set.
    pub env_override: Option<String>,
}

impl Probe {
    /// This host: `qemu-system-x86_64` from PATH, `/dev/kvm`, the user's
    /// cache file, [`PROBE_LIMIT`] and `LAB_ACCEL`.
    pub fn host() -> Probe {
        Probe {
            qemu: PathBuf::from(QEMU),
            kvm_device: PathBuf::from("/dev/kvm"),
            cache: cache_file(),
            limit: PROBE_LIMIT,
            env_override: std::env::var("LAB_ACCEL").ok(),
        }
    }

    /// Decides: `LAB_ACCEL`, then the KVM device, then the cache, then the
    /// probe guest under KVM (whose verdict is cached when it says something
    /// about the host).
    pub fn decide(&self) -> Decision {
        let mut notes = vec![];
        match self.env_override.as_deref().map(str::trim) {
            Some("tcg") => return Decision::now(Verdict::new(Accel::Tcg, "LAB_ACCEL=tcg"), notes),
            Some("kvm") => return Decision::now(Verdict::new(Accel::Kvm, "LAB_ACCEL=kvm"), notes),
            None | Some("") => {}
            Some(other) => notes.push(format!("LAB_ACCEL={other:?} ignored: set tcg or kvm")),
        }
        if !self.kvm_device.exists() {
            let reason = format!("no {}", self.kvm_device.display());
            return Decision::now(Verdict::new(Accel::Tcg, reason), notes);
        }
        let key = match self.cache_key() {
            Ok(key) => key,
            Err(why) => {
                let reason = format!("KVM present but {why}");
                return Decision::now(Verdict::new(Accel::Tcg, reason), notes);
            }
        };
        if let Some(path) = &self.cache {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if let Some(verdict) = cached_verdict(&text, &key) {
                return Decision {
                    verdict,
                    cached_from: Some(path.clone()),
                    notes,
                };
            }
        }
        let outcome = probe_guest(&self.qemu, Accel::Kvm.qemu_arg(), self.limit);
        let verdict = outcome.verdict();
        if let (Some(path), true) = (&self.cache, outcome.is_host_property())
            && let Err(err) = write_cache(path, &key, &verdict)
        {
            notes.push(format!(
                "cannot cache it in {}: {err} (set XDG_CACHE_HOME to a writable directory)",
                path.display()
            ));
        }
        Decision::now(verdict, notes)
    }

    /// This host's kernel release and the QEMU's version.
    fn cache_key(&self) -> Result<CacheKey, String> {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .map_err(|e| format!("cannot read /proc/sys/kernel/osrelease: {e}"))?;
        let mut version = Command::new(&self.qemu);
        version
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let out = spawn_retrying(&mut version)
            .and_then(|child| child.wait_with_output())
            .map_err(|e| {
                format!(
                    "cannot run `{} --version`: {e} (install QEMU with `cargo xtask deps`)",
                    self.qemu.display()
                )
            })?;
        let qemu = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        if !out.status.success() || qemu.is_empty() {
            return Err(format!(
                "`{} --version` failed ({}): reinstall QEMU with `cargo xtask deps`",
                self.qemu.display(),
                out.status
            ));
        }
        Ok(CacheKey {
            kernel,
            qemu,
            probe: PROBE_REVISION,
        })
    }
}

impl Decision {
    fn now(verdict: Verdict, notes: Vec<String>) -> Decision {
        Decision {
            verdict,
            cached_from: None,
            notes,
        }
    }
}

/// Writes the cache file whole (a temporary file renamed over it), so that a
/// process probing at the same time never reads half a file.
fn write_cache(path: &Path, key: &CacheKey, verdict: &Verdict) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    std::fs::write(&tmp, cache_text(key, verdict))?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Boots the probe guest under `-accel <accel>` with `qemu` and waits up to
/// `limit` for its marker; QEMU is killed (by PID, through [`Owned`]) on every
/// path, and its scratch directory removed.
///
/// The guest: q35, `-cpu max`, 1 vCPU, SeaBIOS, a virtio NIC whose iPXE option
/// ROM gets its boot file `probe.ipxe` by DHCP and TFTP from QEMU's user-mode
/// network (`restrict=on`: nothing leaves QEMU). The script sets a variable and
/// echoes it with a suffix, so the marker is nowhere in the script's text: only
/// iPXE running the script can print it.
pub fn probe_guest(qemu: &Path, accel: &str, limit: Duration) -> ProbeOutcome {
    let scratch = match Scratch::new() {
        Ok(scratch) => scratch,
        Err(err) => return ProbeOutcome::NotStarted(err),
    };
    let dir = &scratch.0;
    let nonce = nonce();
    let stem = format!("LAB-ACCEL-PROBE-{nonce}");
    let marker = format!("{stem}-booted");
    // No `poweroff` after the echo: Debian's iPXE ROM has no such command; the
    // probe kills QEMU once it has seen the marker.
    let script = format!("#!ipxe\nset probe_stem {stem}\necho ${{probe_stem}}-booted\n");
    if let Err(err) = std::fs::write(dir.join("probe.ipxe"), script) {
        return ProbeOutcome::NotStarted(format!("cannot write the probe's iPXE script: {err}"));
    }
    let serial = dir.join("serial.log");
    let stderr_path = dir.join("qemu.log");
    let stderr = match std::fs::File::create(&stderr_path) {
        Ok(file) => file,
        Err(err) => return ProbeOutcome::NotStarted(format!("cannot create qemu.log: {err}")),
    };
    let mut command = Command::new(qemu);
    command
        .args([
            "-machine", "q35", "-accel", accel, "-cpu", "max", "-smp", "1",
        ])
        .args(["-m", "128", "-nodefaults", "-no-reboot"])
        // -nographic: SeaBIOS copies the screen (iPXE's output) to the serial port.
        .args(["-nographic", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-netdev")
        .arg(format!(
            "user,id=n0,restrict=on,tftp={},bootfile=probe.ipxe",
            dir.display()
        ))
        .args(["-device", "virtio-net-pci,netdev=n0,bootindex=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    let started = Instant::now();
    let child = match spawn_retrying(&mut command) {
        Ok(child) => child,
        Err(err) => {
            return ProbeOutcome::NotStarted(format!(
                "{}: {err} (install QEMU with `cargo xtask deps`)",
                qemu.display()
            ));
        }
    };
    let mut qemu_child = Owned::new("KVM probe QEMU", child);
    let deadline = started + limit;
    let outcome = loop {
        // Whether QEMU had exited is read before the console, so that a guest
        // that printed the marker and powered off still counts as booted.
        let exited = !qemu_child.running();
        let console = std::fs::read(&serial).unwrap_or_default();
        let console = String::from_utf8_lossy(&console);
        if console.contains(&marker) {
            break ProbeOutcome::Marker(started.elapsed());
        }
        if exited {
            let status = match qemu_child.child.try_wait() {
                Ok(Some(status)) => status.to_string(),
                Ok(None) => "still running".to_owned(),
                Err(err) => err.to_string(),
            };
            let stderr = std::fs::read(&stderr_path).unwrap_or_default();
            break ProbeOutcome::Exited {
                after: started.elapsed(),
                status,
                stderr: cause_line(&String::from_utf8_lossy(&stderr)),
            };
        }
        if Instant::now() >= deadline {
            break ProbeOutcome::Hung {
                limit,
                last_line: last_line(&console),
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    qemu_child.stop(Duration::from_millis(200));
    outcome
}

/// Spawns `command`, retrying briefly while the program is "text file busy":
/// a program written just before (a test's stand-in) can still be open for
/// writing in a child forked by another thread at that moment.
fn spawn_retrying(command: &mut Command) -> std::io::Result<std::process::Child> {
    let mut attempts = 0;
    loop {
        match command.spawn() {
            Err(err) if err.kind() == ErrorKind::ExecutableFileBusy && attempts < 20 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            result => return result,
        }
    }
}

/// A value that differs between probes, so that no earlier console output
/// can pass for this probe's marker.
fn nonce() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{nanos:09}", std::process::id())
}

/// The last line of console or log text with something readable on it,
/// terminal escape sequences and control characters removed, at most 100
/// characters.
fn last_line(text: &str) -> Option<String> {
    let mut clean = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI sequences (ESC [ parameters final-byte), as iPXE and SeaBIOS emit them.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c == '\r' {
            clean.push('\n');
        } else if c == '\n' || !c.is_control() {
            clean.push(c);
        }
    }
    let line = clean.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    Some(line.chars().take(100).collect())
}

/// The line of QEMU's stderr that most likely says why it exited: the first
/// with "error" in it (an assertion that follows is a consequence), else the
/// last one.
fn cause_line(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .and_then(last_line)
        .or_else(|| last_line(stderr))
}

/// The probe's scratch directory (TFTP root, serial log, QEMU's stderr),
/// removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, String> {
        let dir = std::env::temp_dir().join(format!("lab-accel-probe-{}", nonce()));
        // QEMU's option parser splits on commas, so the path must have none.
        if dir.to_string_lossy().contains(',') {
            return Err(format!(
                "the temporary directory {} has a comma, which QEMU's -netdev option cannot take: set TMPDIR",
                dir.display()
            ));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e} (set TMPDIR)", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A stand-in QEMU: answers `--version`, otherwise runs `body` (POSIX sh)
    /// with `$serial` and `$tftp` taken from the probe's arguments.
    fn stand_in(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        let script = format!(
            r#"#!/bin/sh
if [ "$1" = --version ]; then echo "QEMU emulator version 99.0 ({name})"; exit 0; fi
for arg in "$@"; do
  case "$arg" in
    file:*) serial="${{arg#file:}}" ;;
    user,*tftp=*) tftp="${{arg#*tftp=}}"; tftp="${{tftp%%,*}}" ;;
  esac
done
{body}
"#
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// What real iPXE would print: the script's variable, expanded.
    const PRINTS_MARKER: &str = r#"stem=$(sed -n 's/^set probe_stem //p' "$tftp/probe.ipxe")
printf 'iPXE initialising devices...\n%s-booted\n' "$stem" > "$serial"
exec sleep 60"#;

    /// Starts, prints nothing and never finishes: the `kvm-pvm` hang.
    const HANGS: &str = "exec sleep 60";

    fn probe(dir: &Path, qemu: PathBuf) -> Probe {
        let kvm_device = dir.join("kvm");
        std::fs::write(&kvm_device, "").unwrap();
        Probe {
            qemu,
            kvm_device,
            cache: Some(dir.join("cache/accel.json")),
            limit: Duration::from_millis(1500),
            env_override: None,
        }
    }

    #[test]
    fn a_guest_that_prints_nothing_is_a_hang_and_means_tcg() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = stand_in(dir.path(), "qemu-hangs", HANGS);
        let started = Instant::now();
        let decision = probe(dir.path(), qemu).decide();
        // The stand-in sleeps 60 s: the probe must have killed it at its limit.
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(decision.verdict.accel, Accel::Tcg);
        assert!(
            decision.verdict.reason.contains("hung")
                && decision.verdict.reason.contains("no marker"),
            "{decision}"
        );
        assert_eq!(decision.cached_from, None);
    }

    #[test]
    fn a_qemu_that_exits_at_once_means_tcg_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = stand_in(
            dir.path(),
            "qemu-exits",
            "echo 'qemu-system-x86_64: failed to initialize kvm: Permission denied' >&2\nexit 1",
        );
        let decision = probe(dir.path(), qemu).decide();
        assert_eq!(decision.verdict.accel, Accel::Tcg);
        let reason = &decision.verdict.reason;
        assert!(reason.contains("exited"), "{reason}");
        assert!(reason.contains("failed to initialize kvm"), "{reason}");
    }

    #[test]
    fn a_guest_that_prints_the_marker_means_kvm_and_the_verdict_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = stand_in(dir.path(), "qemu-boots", PRINTS_MARKER);
        let first = probe(dir.path(), qemu.clone()).decide();
        assert_eq!(first.verdict.accel, Accel::Kvm, "{first}");
        assert!(
            first
                .verdict
                .reason
                .starts_with("probe guest printed its marker in"),
            "{first}"
        );
        assert_eq!(first.cached_from, None);
        assert!(
            first
                .to_string()
                .starts_with("accelerator: kvm (probe guest printed its marker in "),
            "{first}"
        );

        // The same QEMU (same --version) now hangs: the cached verdict stands.
        std::fs::remove_file(&qemu).unwrap();
        let qemu = stand_in(dir.path(), "qemu-boots", HANGS);
        let probe = probe(dir.path(), qemu);
        let second = probe.decide();
        assert_eq!(second.verdict, first.verdict);
        let cache = probe.cache.clone().unwrap();
        assert_eq!(second.cached_from.as_deref(), Some(cache.as_path()));
        assert!(
            second
                .to_string()
                .contains(&format!("cached verdict from {}", cache.display())),
            "{second}"
        );
    }

    #[test]
    fn a_script_copied_to_the_console_is_not_the_marker() {
        // The marker must come from iPXE running the script, not from its text.
        let dir = tempfile::tempdir().unwrap();
        let qemu = stand_in(
            dir.path(),
            "qemu-echoes-script",
            "cat \"$tftp/probe.ipxe\" > \"$serial\"\nexec sleep 60",
        );
        let decision = probe(dir.path(), qemu).decide();
        assert_eq!(decision.verdict.accel, Accel::Tcg, "{decision}");
        assert!(decision.verdict.reason.contains("no marker"), "{decision}");
    }

    #[test]
    fn lab_accel_and_a_missing_device_decide_without_a_probe() {
        let dir = tempfile::tempdir().unwrap();
        // A QEMU that cannot run: any attempt to probe would say "did not start".
        let missing_qemu = dir.path().join("no-such-qemu");
        let mut probe = probe(dir.path(), missing_qemu);
        for (value, accel) in [("tcg", Accel::Tcg), ("kvm", Accel::Kvm)] {
            probe.env_override = Some(value.into());
            let decision = probe.decide();
            assert_eq!(
                decision.verdict,
                Verdict::new(accel, format!("LAB_ACCEL={value}"))
            );
            assert_eq!(
                decision.to_string(),
                format!("accelerator: {value} (LAB_ACCEL={value})")
            );
        }
        probe.env_override = Some("fast".into());
        probe.kvm_device = dir.path().join("no-kvm");
        let decision = probe.decide();
        assert_eq!(
            decision.to_string(),
            format!(
                "accelerator: tcg (no {}; LAB_ACCEL=\"fast\" ignored: set tcg or kvm)",
                probe.kvm_device.display()
            )
        );
        assert!(!probe.cache.as_ref().unwrap().exists());
    }

    #[test]
    fn a_missing_qemu_means_tcg_and_is_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let probe = probe(dir.path(), dir.path().join("no-such-qemu"));
        let decision = probe.decide();
        assert_eq!(decision.verdict.accel, Accel::Tcg);
        assert!(
            decision.verdict.reason.contains("cargo xtask deps"),
            "{decision}"
        );
        assert!(!probe.cache.unwrap().exists());
    }

    fn key() -> CacheKey {
        CacheKey {
            kernel: "6.18.44-fc-v1045".into(),
            qemu: "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1~bpo12+1)".into(),
            probe: PROBE_REVISION,
        }
    }

    #[test]
    fn the_cache_round_trips_only_for_the_same_kernel_qemu_and_probe() {
        let verdict = Verdict::new(
            Accel::Tcg,
            "KVM present but a probe guest hung in firmware: no marker within 20 s",
        );
        let text = cache_text(&key(), &verdict);
        assert!(text.contains("\"accel\": \"tcg\""), "{text}");
        assert_eq!(cached_verdict(&text, &key()), Some(verdict.clone()));
        let kernel = CacheKey {
            kernel: "6.19.0".into(),
            ..key()
        };
        let qemu = CacheKey {
            qemu: "QEMU emulator version 10.1.0".into(),
            ..key()
        };
        let probe = CacheKey {
            probe: PROBE_REVISION + 1,
            ..key()
        };
        for other in [kernel, qemu, probe] {
            assert_eq!(cached_verdict(&text, &other), None, "{other:?}");
        }
        assert_eq!(cached_verdict("", &key()), None);
        assert_eq!(cached_verdict("{\"key\": 1}", &key()), None);
        let kvm = Verdict::new(Accel::Kvm, "probe guest printed its marker in 1.2 s");
        assert_eq!(cached_verdict(&cache_text(&key(), &kvm), &key()), Some(kvm));
    }

    #[test]
    fn the_cache_file_follows_xdg_then_home() {
        // Read-only on the environment: the variables are whatever the test runs with.
        let expected = match (std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME")) {
            (Some(xdg), _) if !xdg.is_empty() => Some(PathBuf::from(xdg)),
            (_, Some(home)) if !home.is_empty() => Some(PathBuf::from(home).join(".cache")),
            _ => None,
        };
        assert_eq!(
            cache_file(),
            expected.map(|base| base.join("provisioner/accel.json"))
        );
    }

    #[test]
    fn outcomes_give_verdicts_that_say_what_happened() {
        let hung = ProbeOutcome::Hung {
            limit: Duration::from_secs(20),
            last_line: Some("iPXE 1.21.1+ (g4bd0) -- Open Source Network Boot Firmware".into()),
        };
        assert_eq!(
            hung.verdict().reason,
            "KVM present but a probe guest hung in firmware: no marker within 20 s, \
             last console line \"iPXE 1.21.1+ (g4bd0) -- Open Source Network Boot Firmware\""
        );
        let exited = ProbeOutcome::Exited {
            after: Duration::from_millis(140),
            status: "exit status: 1".into(),
            stderr: None,
        };
        assert_eq!(
            exited.verdict(),
            Verdict::new(
                Accel::Tcg,
                "KVM present but the probe QEMU exited without the marker after 0.1 s, exit status: 1"
            )
        );
        assert_eq!(
            ProbeOutcome::Marker(Duration::from_millis(1230)).verdict(),
            Verdict::new(Accel::Kvm, "probe guest printed its marker in 1.2 s")
        );
    }

    #[test]
    fn the_last_console_line_has_no_escape_sequences() {
        let console = "\x1b[2J\x1b[01;01HSeaBIOS (version 1.16.3)\r\n\r\n\x1b[1miPXE\x1b[0m initialising devices...\r\n  \r\n";
        assert_eq!(
            last_line(console).as_deref(),
            Some("iPXE initialising devices...")
        );
        assert_eq!(last_line("\r\n \n"), None);
    }

    #[test]
    fn the_cause_of_an_exit_is_the_first_error_line() {
        // What QEMU 10 printed here under `-accel kvm -cpu max` before it aborted.
        let stderr = "qemu-system-x86_64: error: failed to set MSR 0x10a to 0xc000069\n\
                      qemu-system-x86_64: target/i386/kvm/kvm.c:3849: kvm_buf_set_msrs: \
                      Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.\n";
        assert_eq!(
            cause_line(stderr).as_deref(),
            Some("qemu-system-x86_64: error: failed to set MSR 0x10a to 0xc000069")
        );
        assert_eq!(
            cause_line("warning: a\nkilled\n").as_deref(),
            Some("killed")
        );
        assert_eq!(cause_line(""), None);
    }
}
