//! The IPMI half of the virtual BMC: OpenIPMI's `ipmi_sim` with `ipmi-qemu-hook` as its
//! chassis-control hook, in front of a real QEMU VM; driven by the provisioner's IPMI
//! driver and cross-checked with `ipmitool` (both simulator and ipmitool come from
//! `cargo xtask deps`).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{Vm, bootindex, qmp, start_vm};
use provisioner::bmc::ipmi::IpmiBmc;
use provisioner::bmc::{
    Bmc, BmcConfig, BootDevice, BootMode, BootOverride, Credentials, PowerAction, PowerState,
    Secret,
};

/// `ipmi_sim`, killed (by PID) when dropped.
struct Sim {
    child: Child,
    port: u16,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sim(dir: &Path) -> Result<Sim> {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let hook = format!(
        "{} --qmp {} --nic nic0:2 --disk disk0:1 0x20",
        env!("CARGO_BIN_EXE_ipmi-qemu-hook"),
        dir.join("hook.qmp").display()
    );
    let auths = "none md2 md5 straight";
    std::fs::write(
        dir.join("lan.conf"),
        format!(
            "name \"vm0\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    \
             priv_limit admin\n    allowed_auths_callback {auths}\n    allowed_auths_user {auths}\n    \
             allowed_auths_operator {auths}\n    allowed_auths_admin {auths}\n    \
             guid 6b1f4c2e0d3a4b7e9f102a3b4c5d6e01\n  endlan\n  chassis_control \"{hook}\"\n  \
             user 2 true \"admin\" \"lab-secret\" admin 10 {auths}\n"
        ),
    )?;
    std::fs::write(
        dir.join("lab.emu"),
        "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
    )?;
    std::fs::create_dir_all(dir.join("sim-state"))?;
    let child = Command::new("ipmi_sim")
        .current_dir(dir)
        .args(["-n", "-c", "lan.conf", "-f", "lab.emu", "-s", "sim-state"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sim.log"))?)
        .spawn()
        .context("starting ipmi_sim (install openipmi with `cargo xtask deps`)")?;
    Ok(Sim { child, port })
}

async fn ipmitool(port: u16, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new("ipmitool")
        .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", "admin", "-P", "lab-secret"])
        .args(args)
        .output()
        .await
        .context("running ipmitool")?;
    ensure!(
        out.status.success(),
        "ipmitool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn scenario(dir: &Path, vm: &mut Vm, sim: &mut Sim) -> Result<()> {
    let test_qmp = qmp(vm, &dir.join("test.qmp"), dir).await?;
    let url = format!("ipmi://127.0.0.1:{}", sim.port);
    let mut config = BmcConfig::new(
        url.parse()?,
        Some(Credentials {
            username: "admin".into(),
            password: Secret::new("lab-secret"),
        }),
    );
    config.timeout = Duration::from_secs(4);
    let deadline = Instant::now() + Duration::from_secs(20);
    let bmc = loop {
        match IpmiBmc::connect(config.clone()).await {
            Ok(bmc) => break bmc,
            Err(e) => {
                if let Some(status) = sim.child.try_wait()? {
                    bail!("ipmi_sim exited ({status}): {e}");
                }
                ensure!(Instant::now() < deadline, "ipmi_sim never answered: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    ensure!(bmc.power_state().await? == PowerState::Off, "-S starts off");
    bmc.power(PowerAction::On).await?;
    ensure!(test_qmp.status().await?.0, "running after IPMI power on");
    ensure!(
        ipmitool(sim.port, &["chassis", "power", "status"])
            .await?
            .contains("is on")
    );
    bmc.set_boot(BootOverride {
        device: BootDevice::Pxe,
        persistent: false,
        mode: BootMode::Uefi,
    })
    .await?;
    ensure!(bootindex(&test_qmp, "nic0").await? == 0, "NIC first");
    ensure!(
        ipmitool(sim.port, &["chassis", "bootparam", "get", "5"])
            .await?
            .contains("Force PXE")
    );
    bmc.set_boot(BootOverride {
        device: BootDevice::Disk,
        persistent: true,
        mode: BootMode::Uefi,
    })
    .await?;
    ensure!(bootindex(&test_qmp, "nic0").await? == 2, "NIC back");
    bmc.power(PowerAction::Reset).await?;
    ensure!(test_qmp.status().await?.0, "running after reset");
    bmc.power(PowerAction::ForceOff).await?;
    ensure!(!test_qmp.status().await?.0, "stopped after IPMI power off");
    ensure!(bmc.power_state().await? == PowerState::Off);
    bmc.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_sim_with_the_qemu_hook_drives_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = start_vm(dir.path()).expect("QEMU starts");
    let mut sim = start_sim(dir.path()).expect("ipmi_sim starts");
    if let Err(e) = scenario(dir.path(), &mut vm, &mut sim).await {
        panic!(
            "{e:#}\n--- ipmi_sim log ---\n{}\n--- qemu log ---\n{}",
            std::fs::read_to_string(dir.path().join("sim.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("qemu.log")).unwrap_or_default()
        );
    }
}
