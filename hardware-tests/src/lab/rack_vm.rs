//! Rack VMs in the lab: QEMU started from [`crate::rack::qemu_args`] (powered off,
//! `-S`), one tap per NIC on br0, sparse disk images, and the VM's virtual BMC
//! listening on the lab bridge, so the provisioner powers and boots it like a real
//! server.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::process::Owned;
use super::vm::{OVMF_CODE, OVMF_VARS, wait_marker};
use super::{Accel, Lab, LabError, accel, io, sibling_binary};
use crate::rack::{self, BmcKind, Firmware, VmPaths, VmSpec};

/// The lab bridge address the virtual BMCs listen on (nodes.yaml's BMC URLs).
pub const BMC_ADDRESS: &str = "10.213.0.1";

/// A rack VM and its BMC; both killed (by PID) on drop.
#[derive(Debug)]
pub struct RackVm {
    pub spec: VmSpec,
    /// The VM's directory (serial.log, qemu.log, bmc.log, disks, VARS copy).
    pub dir: PathBuf,
    /// When QEMU was spawned (powered off: the BMC powers it on).
    pub started: Instant,
    // Field order is drop order: the BMC goes before its VM.
    bmc: Owned,
    qemu: Owned,
}

impl RackVm {
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    /// The harness's own QMP socket (the BMC has another).
    pub fn test_qmp(&self) -> PathBuf {
        self.dir.join("test.qmp")
    }

    /// Waits until the serial console shows `marker`; the time since QEMU started.
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
}

impl Lab {
    /// Starts a rack VM powered off, with its virtual BMC on the lab bridge. The BMC
    /// reads the VM from `rack_file` and its password from `password` (the value the
    /// site's `password_env` names).
    pub fn start_rack_vm(
        &mut self,
        rack_file: &Path,
        spec: &VmSpec,
        password: (&str, &str),
    ) -> Result<&mut RackVm, LabError> {
        if spec.bmc.kind == BmcKind::Ipmi {
            return Err(LabError::Missing(format!(
                "{}: the harness does not start IPMI BMCs (ipmi_sim) for rack VMs yet; use a \
                 Redfish VM",
                spec.name
            )));
        }
        let dir = self.dir().join(&spec.name);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let mut taps = vec![];
        for _ in &spec.nics {
            taps.push(self.new_tap()?);
        }
        let mut disks = vec![];
        for (i, disk) in spec.disks.iter().enumerate() {
            let path = dir.join(format!("disk{i}.raw"));
            std::fs::File::create(&path)
                .and_then(|f| f.set_len(disk.size_gib << 30))
                .map_err(io(format!("creating the sparse disk {}", path.display())))?;
            disks.push(path);
        }
        let ovmf = match spec.firmware {
            Firmware::Bios => None,
            Firmware::Uefi => {
                let vars = dir.join("OVMF_VARS.fd");
                std::fs::copy(OVMF_VARS, &vars).map_err(io(format!(
                    "copying {OVMF_VARS} (install Debian's `ovmf`: `cargo xtask deps`)"
                )))?;
                Some((PathBuf::from(OVMF_CODE), vars))
            }
        };
        let bmc_qmp = dir.join("bmc.qmp");
        let paths = VmPaths {
            taps,
            disks,
            serial_log: dir.join("serial.log"),
            qmp: vec![bmc_qmp.clone(), dir.join("test.qmp")],
            ovmf,
            accel: match accel() {
                Accel::Kvm => "kvm".into(),
                Accel::Tcg => "tcg".into(),
            },
        };
        let qemu_log = std::fs::File::create(dir.join("qemu.log")).map_err(io("qemu.log"))?;
        let started = Instant::now();
        let qemu = self
            .netns()
            .command("qemu-system-x86_64")
            .args(rack::qemu_args(spec, &paths))
            .stdin(Stdio::null())
            .stdout(qemu_log.try_clone().map_err(io("qemu.log"))?)
            .stderr(qemu_log)
            .spawn()
            .map_err(|source| LabError::Spawn {
                what: "qemu-system-x86_64 (Debian qemu-system-x86 from bookworm-backports)".into(),
                source,
            })?;
        let qemu = Owned::new(format!("QEMU {}", spec.name), qemu);
        let vbmc = sibling_binary(
            "lab-vbmc",
            "run `cargo build -p hardware-tests` (or `cargo test --workspace`)",
        )?;
        let bmc_log = std::fs::File::create(dir.join("bmc.log")).map_err(io("bmc.log"))?;
        let bmc = self
            .netns()
            .command(&vbmc.to_string_lossy())
            .arg("--rack")
            .arg(rack_file)
            .args(["--vm", &spec.name, "--qmp"])
            .arg(&bmc_qmp)
            .args(["--listen", &format!("{BMC_ADDRESS}:{}", spec.bmc.port)])
            .args(["--password-env", password.0])
            .env(password.0, password.1)
            .stdin(Stdio::null())
            .stdout(bmc_log.try_clone().map_err(io("bmc.log"))?)
            .stderr(bmc_log)
            .spawn()
            .map_err(|source| LabError::Spawn {
                what: vbmc.display().to_string(),
                source,
            })?;
        let mut vm = RackVm {
            spec: spec.clone(),
            dir,
            started,
            bmc: Owned::new(format!("virtual BMC of {}", spec.name), bmc),
            qemu,
        };
        // Ready when the BMC says it serves (it waits for QEMU's QMP socket first).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = std::fs::read_to_string(vm.dir.join("bmc.log")).unwrap_or_default();
            if log.contains("serving") {
                break;
            }
            if !vm.bmc.running() || !vm.qemu.running() || Instant::now() > deadline {
                return Err(LabError::Exited {
                    what: format!("the virtual BMC or QEMU of {}", spec.name),
                    status: log.trim().to_owned(),
                    logs: vm.dir.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.rack_vms.push(vm);
        Ok(self.rack_vms.last_mut().expect("just pushed"))
    }

    /// A rack VM started earlier, by name.
    pub fn rack_vm(&mut self, name: &str) -> Option<&mut RackVm> {
        self.rack_vms.iter_mut().find(|vm| vm.spec.name == name)
    }
}
