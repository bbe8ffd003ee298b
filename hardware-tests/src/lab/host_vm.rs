//! A VM that boots an installed host disk (`host.raw` from `provisioner image
//! build host`) under OVMF, with no provisioner: q35, the disk on virtio-blk
//! as the first boot device, optional read-only extra disks, an i6300esb
//! watchdog that resets the VM, the serial console on a Unix socket so a
//! test can both read it and type into it (the host mode's console shell),
//! and no network or, with [`HostVmSpec::nic_mac`], one virtio NIC on QEMU's
//! user-mode network with `restrict=on` (its DHCP server answers; nothing
//! outside the VM is reachable).
//!
//! Invariants: the OVMF variable store lives in the VM directory and is kept
//! across [`HostVm::start`]s of the same directory (a restarted VM is the same
//! machine after a power cut); QEMU is killed (by PID) when the [`HostVm`] is
//! dropped; everything the console printed is in `serial.log` in that
//! directory, across restarts.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::accel::accel;
use super::process::Owned;
use super::vm::{OVMF_CODE, ovmf_vars, spawn_qemu};
use super::{LabError, io};

/// Booting the kernel and initramfs straight from QEMU (`-kernel`), without
/// systemd-boot: the floor the disk boot is compared with.
#[derive(Debug, Clone)]
pub struct DirectKernel {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct HostVmSpec {
    /// The host disk (raw), written by the guest.
    pub disk: PathBuf,
    /// More disks, raw and read-only (`/dev/vdb`, `/dev/vdc`, ...).
    pub extra_disks: Vec<PathBuf>,
    pub memory_mib: u32,
    pub direct_kernel: Option<DirectKernel>,
    /// A virtio NIC with this MAC on an isolated user-mode network.
    pub nic_mac: Option<String>,
}

impl HostVmSpec {
    pub fn new(disk: &Path) -> HostVmSpec {
        HostVmSpec {
            disk: disk.to_owned(),
            extra_disks: Vec::new(),
            memory_mib: 1024,
            direct_kernel: None,
            nic_mac: None,
        }
    }
}

/// A running host VM.
#[derive(Debug)]
pub struct HostVm {
    pub dir: PathBuf,
    /// When QEMU was spawned.
    pub started: Instant,
    qemu: Owned,
    console: UnixStream,
    output: Arc<Mutex<Vec<u8>>>,
    /// Where the next [`HostVm::wait_for`] starts looking.
    cursor: usize,
    commands: u32,
}

impl HostVm {
    /// Starts QEMU in `dir` (created if missing) and connects to its console.
    pub fn start(dir: &Path, spec: &HostVmSpec) -> Result<HostVm, LabError> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let vars = ovmf_vars(dir)?;
        let socket = dir.join("console.sock");
        let _ = std::fs::remove_file(&socket);
        let mut command = Command::new("qemu-system-x86_64");
        command
            .args(["-machine", "q35", "-accel", accel().qemu_arg()])
            .args(["-cpu", "max", "-smp", "1"])
            .args(["-m", &spec.memory_mib.to_string()])
            .args(["-nographic", "-monitor", "none", "-nodefaults"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=con,path={},server=on,wait=on",
                socket.display()
            ))
            .args(["-serial", "chardev:con"])
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
            ))
            .arg("-drive")
            .arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.display()
            ))
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=none,id=disk0,cache=writeback",
                spec.disk.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=disk0,bootindex=1"])
            .args(["-device", "i6300esb", "-action", "watchdog=reset"]);
        match &spec.nic_mac {
            // No option ROM: the VM boots from its disk, never from the network.
            Some(mac) => command
                .args(["-netdev", "user,id=net0,restrict=on"])
                .arg("-device")
                .arg(format!("virtio-net-pci,netdev=net0,mac={mac},romfile=")),
            None => command.args(["-nic", "none"]),
        };
        for (i, extra) in spec.extra_disks.iter().enumerate() {
            command
                .arg("-drive")
                .arg(format!(
                    "file={},format=raw,if=none,id=extra{i},readonly=on",
                    extra.display()
                ))
                .args(["-device", &format!("virtio-blk-pci,drive=extra{i}")]);
        }
        if let Some(direct) = &spec.direct_kernel {
            command
                .arg("-kernel")
                .arg(&direct.kernel)
                .arg("-initrd")
                .arg(&direct.initrd)
                .args(["-append", &direct.cmdline]);
        }
        let started = Instant::now();
        let child = spawn_qemu(&mut command, dir)?;
        let mut qemu = Owned::new(format!("QEMU {}", dir.display()), child);
        // QEMU waits for this connection before it starts the guest (wait=on).
        let console = loop {
            match UnixStream::connect(&socket) {
                Ok(stream) => break stream,
                Err(_) if started.elapsed() < Duration::from_secs(10) && qemu.running() => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(err) => {
                    return Err(LabError::Io {
                        what: format!(
                            "connecting to the console socket {} (see {})",
                            socket.display(),
                            dir.join("qemu.log").display()
                        ),
                        source: err,
                    });
                }
            }
        };
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut reader = console.try_clone().map_err(io("console socket"))?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("serial.log"))
            .map_err(io("creating serial.log"))?;
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let _ = log.write_all(&buf[..n]);
                sink.lock()
                    .expect("console buffer")
                    .extend_from_slice(&buf[..n]);
            }
        });
        Ok(HostVm {
            dir: dir.to_owned(),
            started,
            qemu,
            console,
            output,
            cursor: 0,
            commands: 0,
        })
    }

    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    /// Everything the console printed since this QEMU started.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().expect("console buffer")).into_owned()
    }

    /// The console text after the cursor (what the last wait has not consumed).
    pub fn unread(&self) -> String {
        let out = self.output.lock().expect("console buffer");
        String::from_utf8_lossy(&out[self.cursor.min(out.len())..]).into_owned()
    }

    /// Waits until the console shows `marker` after the cursor; moves the
    /// cursor past it and returns the time since QEMU started. Fails when
    /// QEMU exits first or after `timeout`.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<Duration, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let out = self.output.lock().expect("console buffer");
                let from = self.cursor.min(out.len());
                if let Some(at) = find(&out[from..], marker.as_bytes()) {
                    self.cursor = from + at + marker.len();
                    return Ok(self.started.elapsed());
                }
            }
            if !self.qemu.running() {
                return Err(LabError::Exited {
                    what: format!("{} before printing {marker:?}", self.qemu.what),
                    status: "see qemu.log".into(),
                    logs: self.serial_log().display().to_string(),
                });
            }
            if Instant::now() > deadline {
                return Err(LabError::Timeout {
                    what: format!("{marker:?} on the console"),
                    waited: timeout,
                    logs: self.serial_log().display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `line` and Enter on the console.
    pub fn send(&mut self, line: &str) -> Result<(), LabError> {
        self.console
            .write_all(format!("{line}\n").as_bytes())
            .map_err(io("typing on the console"))
    }

    /// Runs `command` in the console shell and returns what it printed. The
    /// end is found by an `echo` whose output differs from its echoed input
    /// (`$((N+1))`), so the terminal's echo never matches.
    pub fn run(&mut self, command: &str, timeout: Duration) -> Result<String, LabError> {
        self.commands += 1;
        let n = self.commands;
        // Settle: consume what is already there, then type.
        let start = self.output.lock().expect("console buffer").len();
        self.cursor = self.cursor.max(start);
        self.send(&format!("{command}; echo CMD-END-{}-$(({n}+1000))", n))?;
        let before = self.cursor;
        self.wait_for(&format!("CMD-END-{n}-{}", n + 1000), timeout)?;
        let out = self.output.lock().expect("console buffer");
        Ok(String::from_utf8_lossy(&out[before..self.cursor]).into_owned())
    }

    /// Pulls the plug: kills QEMU at once (SIGKILL) and waits for it.
    pub fn power_cut(mut self) {
        let _ = self.qemu.child.kill();
        let _ = self.qemu.child.wait();
    }

    /// Whether QEMU still runs.
    pub fn running(&mut self) -> bool {
        self.qemu.running()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn find_locates_the_first_match() {
        assert_eq!(find(b"abcabc", b"ca"), Some(2));
        assert_eq!(find(b"abc", b"x"), None);
        assert_eq!(find(b"ab", b"abc"), None);
    }
}
