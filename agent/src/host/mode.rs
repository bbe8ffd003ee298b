//! Host mode: `node-agent host`, PID 1 in the real root after the host boot
//! ([`super::boot`]) switched to it. It adopts the watchdog, says the one
//! line naming version, slot and root hash, runs the health checks (root on
//! the dm-verity device read-only, `/var` writable and durable, ESP mounted,
//! watchdog armed), blesses a trial boot (the `systemd-bless-boot` rename),
//! reports a rollback and duplicate entry names, writes
//! `/run/host/status.json`, opens the node config ([`super::config`]) and,
//! with one, starts the plan, network and report thread
//! ([`super::report`]), then keeps a shell on the console, reaps zombies
//! and never exits.
//!
//! Invariants:
//! - A boot is blessed only after every health check passed. A trial that
//!   fails them reboots (after a pause) so the loader counts down and falls
//!   back; a blessed boot that fails them stays up and says so (rebooting
//!   would loop on the same entry).
//! - UKIs are only renamed, never unlinked or overwritten
//!   ([`super::entries`] says why).
//! - [`run`] never returns.

use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use model::host::{HostBoot, HostStatus, Slot};

use super::config::Found;
use super::entries::{self, AfterHealth, Bless};
use super::esp::{self, EFIVARS, ESP_MOUNT};
use super::watchdog::Watchdog;
use crate::pid1::say;

/// Where the status is written.
pub const STATUS_FILE: &str = "/run/host/status.json";
/// The file the `/var` check writes, fsyncs and reads back.
const VAR_PROBE: &str = "/var/lib/node-agent/health-probe";
/// The pause before a trial that failed its checks reboots (time to read
/// the console).
const UNHEALTHY_PAUSE: Duration = Duration::from_secs(30);

/// What the host boot hands on (`node-agent host --slot .. --root .. --var ..`).
#[derive(Debug, Clone)]
pub struct HostArgs {
    pub slot: Slot,
    /// The root's device (`/dev/dm-N`).
    pub root: PathBuf,
    /// The data partition mounted on `/var`, or `tmpfs`.
    pub var: String,
    pub watchdog_fd: Option<i32>,
}

/// One mount of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
    pub read_only: bool,
}

/// The last (topmost) mount on `mount_point` in a `mountinfo` text.
pub fn mount_at(mountinfo: &str, mount_point: &str) -> Option<Mount> {
    mountinfo
        .lines()
        .rev()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let source = right.next()?;
            Some(Mount {
                mount_point: left.get(4)?.to_string(),
                fstype: fstype.to_owned(),
                source: source.to_owned(),
                read_only: left.get(5)?.split(',').any(|o| o == "ro"),
            })
        })
        .find(|m| m.mount_point == mount_point)
}

/// The root check: `/` is the dm-verity device `root`, read-only.
pub fn check_root(mountinfo: &str, root: &Path) -> Result<(), String> {
    let m = mount_at(mountinfo, "/").ok_or("no mount on / in /proc/self/mountinfo")?;
    if Path::new(&m.source) != root {
        return Err(format!(
            "/ is {} ({}), not the dm-verity device {}",
            m.source,
            m.fstype,
            root.display()
        ));
    }
    if !m.read_only {
        return Err(format!("/ ({}) is mounted read-write", m.source));
    }
    Ok(())
}

/// The ESP check: `/efi` is a vfat mounted read-write.
pub fn check_esp(mountinfo: &str) -> Result<(), String> {
    match mount_at(mountinfo, ESP_MOUNT) {
        Some(m) if m.fstype == "vfat" && !m.read_only => Ok(()),
        Some(m) => Err(format!(
            "{ESP_MOUNT} is {} {} ({}), not the ESP read-write",
            m.fstype,
            m.source,
            if m.read_only { "ro" } else { "rw" }
        )),
        None => Err(format!("nothing is mounted on {ESP_MOUNT}")),
    }
}

/// Runs host mode; never returns.
pub fn run(args: &HostArgs) -> ! {
    let watchdog = match args.watchdog_fd {
        Some(fd) => Watchdog::adopt(fd).map(Some),
        None => Ok(Watchdog::open(Duration::from_secs(1))),
    };
    let status = check_and_bless(args, &watchdog);
    if let Some(status) = status {
        write_status(&status);
        configure(status);
    }
    serve_console()
}

/// Opens the node config with the root's trust key; with one, starts the
/// plan, network and report thread ([`super::report::run`]).
fn configure(status: HostStatus) {
    let partitions = super::disk::scan(Path::new("/sys"));
    let found = super::config::read(
        &Path::new("/").join(super::config::TRUST_KEY),
        super::disk::by_label(&partitions, model::host::CONFIG).map(|p| p.dev.as_path()),
    );
    for line in super::config::console_lines(&found, "host") {
        say(&line);
    }
    if let Found::Opened { config, .. } = found {
        let spawned = std::thread::Builder::new()
            .name("host-report".into())
            .spawn(move || super::report::run(*config, status));
        if let Err(e) = spawned {
            say(&format!(
                "host: cannot start the report thread: {e}; the plan is not applied and the \
                 provisioner not told; reboot"
            ));
        }
    }
}

/// The checks, the bless and the reports; the status when the command line
/// could be read.
fn check_and_bless(
    args: &HostArgs,
    watchdog: &Result<Option<Watchdog>, String>,
) -> Option<HostStatus> {
    let boot = match std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| format!("cannot read /proc/cmdline: {e}"))
        .and_then(|c| HostBoot::from_cmdline(&c).map_err(|e| e.to_string()))
    {
        Ok(Some(boot)) => boot,
        Ok(None) => {
            say("host: the kernel command line has no host.* words: not a host boot; no checks");
            return None;
        }
        Err(e) => {
            say(&format!("host: {e}; no checks"));
            return None;
        }
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let root = check_root(&mountinfo, &args.root);
    if root.is_ok() {
        say(&format!(
            "host: version {}, slot {}, root {} (dm-verity), /var on {}",
            boot.version, args.slot, boot.verity.root_hash, args.var
        ));
    }
    let checks = [
        ("root", root),
        ("/var", check_var(&args.var)),
        ("ESP", check_esp(&mountinfo)),
        (
            "watchdog",
            match watchdog {
                Ok(Some(_)) => Ok(()),
                Ok(None) => {
                    say("host: no /dev/watchdog on this machine: hangs will not reset it");
                    Ok(())
                }
                Err(e) => Err(e.clone()),
            },
        ),
    ];
    let mut healthy = true;
    for (name, result) in &checks {
        if let Err(e) = result {
            healthy = false;
            say(&format!("host: health check {name} FAILED: {e}"));
        }
    }

    let uki_dir = esp::uki_dir(Path::new(ESP_MOUNT));
    let names = esp::list(&uki_dir).unwrap_or_else(|e| {
        say(&format!("host: cannot list {}: {e}", uki_dir.display()));
        Vec::new()
    });
    let efivars = Path::new(EFIVARS);
    let count_path = esp::loader_var(efivars, entries::BOOT_COUNT_PATH);
    let selected = esp::loader_var(efivars, entries::ENTRY_SELECTED);
    for group in entries::duplicates(&names) {
        say(&format!(
            "host: WARNING: one version under several names: {} (a power cut during a rename?); \
             none is deleted here (on FAT that could free clusters another name still uses); \
             the host boot repairs one UKI under two names before mounting the ESP, so if this \
             stays after a reboot they are two files: check with `fsck.fat -n` before removing \
             one by hand",
            group.join(" and ")
        ));
    }
    let rolled_back_from = entries::rollback(&names, args.slot, &boot.version);
    if let Some(r) = &rolled_back_from {
        say(&format!(
            "host: rollback: slot {} version {} failed its tries ({}); running slot {} version {}",
            r.slot, r.version, r.entry, args.slot, boot.version
        ));
    }
    let mut status = HostStatus {
        version: boot.version.clone(),
        slot: args.slot,
        root_hash: boot.verity.root_hash.clone(),
        trial: false,
        blessed: false,
        rolled_back_from,
    };
    let booted = match entries::booted_entry(
        count_path.as_deref(),
        selected.as_deref(),
        &names,
        args.slot,
        &boot.version,
    ) {
        Ok(b) => b,
        Err(e) => {
            say(&format!(
                "host: cannot tell the booted entry: {e}; not blessing"
            ));
            return Some(status);
        }
    };
    status.trial = entries::is_trial(&booted.name, count_path.is_some());
    match entries::after_health(status.trial, healthy) {
        AfterHealth::Bless => {}
        AfterHealth::StayUnhealthy => {
            say("host: health checks failed on a blessed boot: staying up; fix and reboot");
            return Some(status);
        }
        AfterHealth::Reboot => {
            say(&format!(
                "host: health checks failed on trial boot {}: rebooting in {} s (the loader falls \
                 back when its tries are spent)",
                booted.name.file_name(),
                UNHEALTHY_PAUSE.as_secs()
            ));
            write_status(&status);
            std::thread::sleep(UNHEALTHY_PAUSE);
            crate::pid1::reboot()
        }
    }
    match entries::bless(&booted.name, status.trial, &names) {
        Bless::NotTrial => {}
        Bless::Rename { from, to } => match esp::rename_durably(&uki_dir, &from, &to) {
            Ok(()) => {
                status.blessed = true;
                say(&format!("host: boot blessed: {from} -> {to}"));
            }
            Err(e) => say(&format!("host: cannot bless this boot: {e}")),
        },
        Bless::AlreadyThere { from, to } => say(&format!(
            "host: WARNING: not blessing {from}: {to} exists already (the same UKI under two \
             names after a power cut?); neither is deleted"
        )),
    }
    Some(status)
}

/// `/var` is a persistent, writable file system: write, fsync, read back.
fn check_var(var: &str) -> Result<(), String> {
    if var == "tmpfs" {
        return Err("/var is a tmpfs: the data partition did not mount".to_owned());
    }
    let probe = Path::new(VAR_PROBE);
    let content = format!("node-agent health probe {}\n", std::process::id());
    let run = || -> std::io::Result<String> {
        if let Some(dir) = probe.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(probe)?;
        file.write_all(content.as_bytes())?;
        file.sync_all()?;
        file.rewind()?;
        let mut back = String::new();
        file.read_to_string(&mut back)?;
        Ok(back)
    };
    match run() {
        Ok(back) if back == content => Ok(()),
        Ok(back) => Err(format!("{VAR_PROBE} read back {back:?}, wrote {content:?}")),
        Err(e) => Err(format!(
            "cannot write, fsync and read back {VAR_PROBE}: {e}"
        )),
    }
}

fn write_status(status: &HostStatus) {
    let path = Path::new(STATUS_FILE);
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            let json = serde_json::to_string_pretty(status).unwrap_or_default();
            std::fs::write(path, json + "\n")
        });
    if let Err(e) = written {
        say(&format!("host: cannot write {STATUS_FILE}: {e}"));
    }
}

/// Keeps `/bin/sh` on the console (respawned when it exits) and reaps every
/// child (orphans are re-parented to PID 1). Never returns.
fn serve_console() -> ! {
    use nix::sys::wait::{WaitStatus, waitpid};
    let mut shell: Option<u32> = None;
    loop {
        if shell.is_none() {
            match spawn_shell() {
                Ok(pid) => shell = Some(pid),
                Err(e) => {
                    say(&format!(
                        "host: cannot start /bin/sh on the console: {e}; retrying in 10 s"
                    ));
                    std::thread::sleep(Duration::from_secs(10));
                    continue;
                }
            }
        }
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)) => {
                if shell == Some(pid.as_raw() as u32) {
                    shell = None;
                    // Do not spin if the shell dies at once.
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

fn spawn_shell() -> std::io::Result<u32> {
    let console = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
    };
    let mut command = std::process::Command::new("/bin/sh");
    command
        .stdin(console()?)
        .stdout(console()?)
        .stderr(console()?)
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", "/")
        .env("TERM", "vt100")
        .current_dir("/");
    super::dm::new_session_on_stdin(&mut command);
    let child = command.spawn()?;
    Ok(child.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:5 / / rw - rootfs rootfs rw
30 22 253:1 / / ro,nodev,relatime - erofs /dev/dm-1 ro,user_xattr
31 30 0:20 / /proc rw,nosuid - proc proc rw
32 30 254:5 / /var rw,nosuid,nodev - ext4 /dev/vda5 rw
33 30 254:1 / /efi rw,nosuid,nodev,noexec - vfat /dev/vda1 rw,fmask=0022
";

    #[test]
    fn mountinfo_gives_the_topmost_mount() {
        assert_eq!(
            mount_at(MOUNTINFO, "/"),
            Some(Mount {
                mount_point: "/".into(),
                fstype: "erofs".into(),
                source: "/dev/dm-1".into(),
                read_only: true
            })
        );
        assert_eq!(mount_at(MOUNTINFO, "/mnt"), None);
    }

    #[test]
    fn root_and_esp_checks() {
        assert_eq!(check_root(MOUNTINFO, Path::new("/dev/dm-1")), Ok(()));
        assert!(
            check_root(MOUNTINFO, Path::new("/dev/dm-0"))
                .unwrap_err()
                .contains("not the dm-verity device /dev/dm-0")
        );
        let rw = MOUNTINFO.replace("/ / ro,nodev", "/ / rw,nodev");
        assert!(
            check_root(&rw, Path::new("/dev/dm-1"))
                .unwrap_err()
                .contains("read-write")
        );
        assert_eq!(check_esp(MOUNTINFO), Ok(()));
        let ro = MOUNTINFO.replace("/efi rw,", "/efi ro,");
        assert!(check_esp(&ro).unwrap_err().contains("ro"));
        assert!(check_esp("").unwrap_err().contains("nothing is mounted"));
    }

    #[test]
    fn a_tmpfs_var_fails_its_check() {
        assert!(check_var("tmpfs").unwrap_err().contains("did not mount"));
    }
}
