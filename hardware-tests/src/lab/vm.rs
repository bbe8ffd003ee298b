//! A QEMU VM of the lab: q35, SeaBIOS or OVMF (with its own copy of the
//! VARS store), the NIC on a tap of br0, the serial console in a file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::accel::accel;
use super::netns::Netns;
use super::process::Owned;
use super::{LabError, io};

/// OVMF's code (read-only) and the template of its variable store.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The VM's own OVMF variable store in `dir`, copied from the template unless it is
/// already there (a VM started again in the same directory keeps its variables, as a
/// machine does across a power cut). Fails with what to install when OVMF is missing.
pub(super) fn ovmf_vars(dir: &Path) -> Result<PathBuf, LabError> {
    for file in [OVMF_CODE, OVMF_VARS] {
        if !Path::new(file).is_file() {
            return Err(LabError::Missing(format!(
                "{file} is missing: install Debian's `ovmf` (`cargo xtask deps`)"
            )));
        }
    }
    let vars = dir.join("OVMF_VARS.fd");
    if !vars.is_file() {
        std::fs::copy(OVMF_VARS, &vars).map_err(io("copying the OVMF VARS template"))?;
    }
    Ok(vars)
}

/// Spawns QEMU (`command`) with its output appended to `dir/qemu.log`.
pub(super) fn spawn_qemu(
    command: &mut std::process::Command,
    dir: &Path,
) -> Result<std::process::Child, LabError> {
    let qemu_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("qemu.log"))
        .map_err(io("creating qemu.log"))?;
    command
        .stdin(Stdio::null())
        .stdout(qemu_log.try_clone().map_err(io("qemu.log"))?)
        .stderr(qemu_log)
        .spawn()
        .map_err(|source| LabError::Spawn {
            what: "qemu-system-x86_64 (Debian qemu-system-x86 from bookworm-backports)".into(),
            source,
        })
}

/// Firmware and network-boot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS; the virtio NIC's iPXE option ROM boots (DHCP straight to the script URL).
    Bios,
    /// OVMF's own PXE client (NIC option ROM off): DHCP, TFTP `snponly.efi`, then iPXE.
    UefiPxe,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub name: String,
    pub firmware: Firmware,
    /// The boot NIC's MAC, lowercase colon form.
    pub mac: String,
    pub memory_mib: u32,
}

impl VmSpec {
    pub fn new(name: &str, firmware: Firmware, mac: &str) -> VmSpec {
        VmSpec {
            name: name.to_owned(),
            firmware,
            mac: mac.to_owned(),
            memory_mib: 512,
        }
    }
}

/// A running VM; killed (by PID) on drop.
#[derive(Debug)]
pub struct Vm {
    pub spec: VmSpec,
    /// The VM's directory (serial.log, qemu.log, OVMF VARS copy).
    pub dir: PathBuf,
    /// When QEMU was spawned.
    pub started: Instant,
    qemu: Owned,
}

impl Vm {
    pub(super) fn start(
        netns: &Netns,
        tap: &str,
        lab_dir: &Path,
        spec: VmSpec,
    ) -> Result<Vm, LabError> {
        let dir = lab_dir.join(&spec.name);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let serial = dir.join("serial.log");
        let mut command = netns.command("qemu-system-x86_64");
        let accel = accel().qemu_arg();
        command
            .args([
                "-machine", "q35", "-accel", accel, "-cpu", "max", "-smp", "1",
            ])
            .args(["-m", &spec.memory_mib.to_string()])
            .args(["-nographic", "-monitor", "none", "-nodefaults"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .args([
                "-netdev",
                &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            ]);
        match spec.firmware {
            Firmware::Bios => {
                command.args([
                    "-device",
                    &format!("virtio-net-pci,netdev=n0,mac={},bootindex=1", spec.mac),
                ]);
            }
            Firmware::UefiPxe => {
                let vars = ovmf_vars(&dir)?;
                command
                    .args([
                        "-drive",
                        &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
                    ])
                    .args([
                        "-drive",
                        &format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
                    ])
                    // romfile= : no iPXE option ROM, so OVMF's own PXE client boots.
                    .args([
                        "-device",
                        &format!(
                            "virtio-net-pci,netdev=n0,mac={},bootindex=1,romfile=",
                            spec.mac
                        ),
                    ]);
            }
        }
        let started = Instant::now();
        let child = spawn_qemu(&mut command, &dir)?;
        Ok(Vm {
            qemu: Owned::new(format!("QEMU {}", spec.name), child),
            spec,
            dir,
            started,
        })
    }

    /// QEMU's exit status, once it has exited.
    pub fn exit_status(&mut self) -> Option<String> {
        match self.qemu.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(err) => Some(err.to_string()),
        }
    }

    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    /// Waits until the serial console shows `marker`; returns the time since
    /// QEMU started. Fails early when QEMU exits without showing it.
    pub fn wait_serial(&mut self, marker: &str, timeout: Duration) -> Result<Duration, LabError> {
        let serial = self.serial_log();
        wait_marker(
            &mut self.qemu,
            &serial,
            &self.spec.name,
            marker,
            self.started,
            timeout,
        )
    }

    /// Waits for QEMU to exit (the guest powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Duration, LabError> {
        let deadline = Instant::now() + timeout;
        while self.qemu.running() {
            if Instant::now() > deadline {
                return Err(LabError::Timeout {
                    what: format!("{} to power off", self.spec.name),
                    waited: timeout,
                    logs: self.serial_log().display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(self.started.elapsed())
    }
}

/// Waits until the console log at `serial` shows `marker`; the time since `started`.
/// Fails early when `qemu` exits without showing it.
pub(super) fn wait_marker(
    qemu: &mut Owned,
    serial: &Path,
    name: &str,
    marker: &str,
    started: Instant,
    timeout: Duration,
) -> Result<Duration, LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        let exited = !qemu.running();
        let text = std::fs::read(serial).unwrap_or_default();
        if String::from_utf8_lossy(&text).contains(marker) {
            return Ok(started.elapsed());
        }
        if exited {
            return Err(LabError::Exited {
                what: format!("{} before printing {marker:?}", qemu.what),
                status: qemu
                    .child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map_or_else(|| "?".into(), |s| s.to_string()),
                logs: serial.display().to_string(),
            });
        }
        if Instant::now() > deadline {
            return Err(LabError::Timeout {
                what: format!("{marker:?} on the serial console of {name}"),
                waited: timeout,
                logs: serial.display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
