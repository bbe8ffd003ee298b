//! A lab VM for the virtual BMC tests: QEMU (TCG) started powered off (`-S
//! -no-shutdown`) with a restricted user-mode NIC, a blank disk and three QMP sockets
//! (`bmc.qmp` for the Redfish vBMC, `hook.qmp` for the IPMI hook, `test.qmp` for checks).
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use hardware_tests::qmp::Qmp;

pub const UUID: &str = "6b1f4c2e-0d3a-4b7e-9f10-2a3b4c5d6e01";
pub const MAC: &str = "52:54:00:aa:00:01";

/// QEMU, killed (by PID, through its `Child`) when dropped.
pub struct Vm {
    pub child: Child,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_vm(dir: &Path) -> Result<Vm> {
    std::fs::write(dir.join("disk.img"), vec![0u8; 1 << 20])?;
    let child = Command::new("qemu-system-x86_64")
        .current_dir(dir)
        .args(["-S", "-no-shutdown", "-nodefaults", "-display", "none"])
        .args(["-machine", "q35", "-accel", "tcg", "-m", "256", "-smp", "2"])
        .args(["-uuid", UUID, "-smbios", "type=1,serial=LAB-VM-0001"])
        .args(["-qmp", "unix:bmc.qmp,server=on,wait=off"])
        .args(["-qmp", "unix:hook.qmp,server=on,wait=off"])
        .args(["-qmp", "unix:test.qmp,server=on,wait=off"])
        .args(["-netdev", "user,id=n0,restrict=on"])
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,id=nic0,mac={MAC},bootindex=2,romfile="),
        ])
        .args(["-drive", "file=disk.img,if=none,id=d0,format=raw"])
        .args(["-device", "virtio-blk-pci,drive=d0,id=disk0,bootindex=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("qemu.log"))?)
        .spawn()
        .context("starting qemu-system-x86_64 (install it with `cargo xtask deps`)")?;
    Ok(Vm { child })
}

pub async fn qmp(vm: &mut Vm, path: &Path, dir: &Path) -> Result<Qmp> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if path.exists()
            && let Ok(qmp) = Qmp::connect(path).await
        {
            return Ok(qmp);
        }
        if let Some(status) = vm.child.try_wait()? {
            bail!(
                "QEMU exited ({status}): {}",
                std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "no QMP socket at {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn bootindex(qmp: &Qmp, device: &str) -> Result<i64> {
    Ok(qmp.bootindex(device).await?)
}
