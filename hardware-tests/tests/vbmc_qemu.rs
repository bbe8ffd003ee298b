//! The virtual BMC in front of a real QEMU VM (TCG, no network but a restricted user-mode
//! NIC, a 1 MiB blank disk), driven by the provisioner's Redfish driver, then checked by
//! DMTF's `redfish-service-validator` (PyPI, in `<target>/venv`; run offline against the
//! CSDL schemas of the `nv-redfish-schema` crate). A second QMP socket lets the test see
//! what the BMC did to the VM.

mod common;
#[path = "../../xtask/src/venv.rs"]
mod venv;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::{MAC, UUID, Vm, bootindex, qmp, start_vm};
use hardware_tests::qmp::Qmp;
use hardware_tests::vbmc::{Vbmc, VbmcConfig, VbmcNic};
use provisioner::bmc::redfish::RedfishBmc;
use provisioner::bmc::{
    Bmc, BmcConfig, BmcError, BootDevice, BootMode, BootOverride, Credentials, PowerAction,
    PowerState, Secret,
};

fn config(url: &str, password: &str) -> Result<BmcConfig> {
    let mut config = BmcConfig::new(
        url.parse()?,
        Some(Credentials {
            username: "admin".into(),
            password: Secret::new(password),
        }),
    );
    config.timeout = Duration::from_secs(10);
    Ok(config)
}

async fn scenario(dir: &Path, vm: &mut Vm) -> Result<()> {
    let bmc_qmp = qmp(vm, &dir.join("bmc.qmp"), dir).await?;
    let test_qmp = qmp(vm, &dir.join("test.qmp"), dir).await?;
    let vbmc = Vbmc::start(
        VbmcConfig {
            system_id: "vm0".into(),
            uuid: UUID.into(),
            serial: "LAB-VM-0001".into(),
            cpus: 2,
            memory_mib: 256,
            nics: vec![VbmcNic {
                device: "nic0".into(),
                mac: MAC.into(),
                bootindex: 2,
            }],
            disk: Some(("disk0".into(), 1)),
            username: "admin".into(),
            password: "lab-secret".into(),
            once_window: Duration::from_secs(1),
            fail_first: 0,
        },
        bmc_qmp,
        "127.0.0.1:0".parse()?,
    )
    .await?;

    // Only the service root answers without a password.
    let err = RedfishBmc::connect(config(&vbmc.url(), "wrong")?)
        .await
        .err();
    ensure!(
        matches!(err, Some(BmcError::Auth { .. })),
        "wrong password: {err:?}"
    );

    let bmc = RedfishBmc::connect(config(&vbmc.url(), "lab-secret")?).await?;
    ensure!(bmc.uses_session(), "the vBMC offers sessions");
    ensure!(bmc.power_state().await? == PowerState::Off, "-S starts off");

    bmc.power(PowerAction::On).await?;
    ensure!(test_qmp.status().await?.0, "running after On");
    ensure!(bmc.power_state().await? == PowerState::On);
    bmc.power(PowerAction::ForceOff).await?;
    ensure!(!test_qmp.status().await?.0, "stopped after ForceOff");
    ensure!(bmc.power_state().await? == PowerState::Off);

    // PXE once: the NIC goes first until the window after the next power-on passes.
    bmc.set_boot(BootOverride {
        device: BootDevice::Pxe,
        persistent: false,
        mode: BootMode::Uefi,
    })
    .await?;
    ensure!(bootindex(&test_qmp, "nic0").await? == 0, "NIC first");
    ensure!(bootindex(&test_qmp, "disk0").await? == 1);
    bmc.power(PowerAction::On).await?;
    ensure!(test_qmp.status().await?.0, "running after the second On");
    let deadline = Instant::now() + Duration::from_secs(10);
    while bootindex(&test_qmp, "nic0").await? != 2 {
        ensure!(
            Instant::now() < deadline,
            "the one-time override was never undone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Disk, persistent: the disk goes first and stays.
    bmc.set_boot(BootOverride {
        device: BootDevice::Disk,
        persistent: true,
        mode: BootMode::Uefi,
    })
    .await?;
    ensure!(bootindex(&test_qmp, "disk0").await? == 0);
    bmc.power(PowerAction::Reset).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ensure!(
        bootindex(&test_qmp, "disk0").await? == 0,
        "persistent stays"
    );

    let inventory = bmc.inventory().await?;
    ensure!(inventory.uuid.as_deref() == Some(UUID), "{inventory:?}");
    ensure!(
        inventory.serial.as_deref() == Some("LAB-VM-0001"),
        "{inventory:?}"
    );
    ensure!(inventory.processor_count == Some(2), "{inventory:?}");
    ensure!(inventory.memory_gib == Some(0.25), "{inventory:?}");
    let macs: Vec<_> = inventory
        .nics
        .iter()
        .filter_map(|n| n.mac.as_deref())
        .collect();
    ensure!(macs == [MAC], "{macs:?}");
    ensure!(inventory.warnings.is_empty(), "{:?}", inventory.warnings);
    ensure!(inventory.power_state == Some(PowerState::On));

    bmc.power(PowerAction::ForceOff).await?;
    bmc.close().await?;
    validate(dir, &vbmc).await?;
    driven_by_sushy(dir, &vbmc, &test_qmp).await?;
    drop(vbmc);
    Ok(())
}

/// `<target>` from this test's own path: `<target>/debug/deps/vbmc_qemu-HASH`.
fn target_dir() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .context("cannot find the target directory from the test's path")
}

/// OpenStack's `sushy` (the library behind Ironic's Redfish driver) powers the VM on and
/// sets a one-time PXE boot through the vBMC.
const SUSHY_SCRIPT: &str = r#"
import sys
import sushy
url, user, password = sys.argv[1:4]
auth = sushy.auth.SessionOrBasicAuth(username=user, password=password)
root = sushy.Sushy(url + "/redfish/v1", auth=auth)
system = root.get_system("/redfish/v1/Systems/vm0")
print("before", system.power_state.value)
system.reset_system(sushy.ResetType.ON)
system.set_system_boot_options(sushy.BootSource.PXE, enabled=sushy.BootSourceOverrideEnabled.ONCE)
system.refresh()
print("after", system.power_state.value, system.boot.target.value, system.boot.enabled.value)
print("identity", system.uuid, system.serial_number, system.processors.summary.count)
"#;

async fn driven_by_sushy(dir: &Path, vbmc: &Vbmc, test_qmp: &Qmp) -> Result<()> {
    let venv = venv::ensure(&target_dir()?, venv::PEERS)?;
    std::fs::write(dir.join("sushy_drive.py"), SUSHY_SCRIPT)?;
    let out = tokio::process::Command::new(venv.python())
        .arg(dir.join("sushy_drive.py"))
        .arg(format!("http://{}", vbmc.addr()))
        .args(["admin", "lab-secret"])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "sushy failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(stdout.contains("before Off"), "{stdout}");
    ensure!(stdout.contains("after On Pxe Once"), "{stdout}");
    ensure!(
        stdout.contains(&format!("identity {UUID} LAB-VM-0001 2")),
        "{stdout}"
    );
    ensure!(test_qmp.status().await?.0, "running after sushy's On");
    ensure!(bootindex(test_qmp, "nic0").await? == 0, "sushy's PXE once");
    Ok(())
}

/// DMTF's validator over every resource the vBMC serves: no errors.
async fn validate(dir: &Path, vbmc: &Vbmc) -> Result<()> {
    let venv = venv::ensure(&target_dir()?, venv::PEERS)
        .context("preparing the venv (run `cargo xtask deps` for python3-venv)")?;
    let schemas = Path::new(&nv_redfish_schema::redfish_schema("ServiceRoot_v1.xml"))
        .parent()
        .context("no schema directory")?
        .to_path_buf();
    let logs = dir.join("validator");
    let out = tokio::process::Command::new(venv.bin("rf_service_validator"))
        .arg("--ip")
        .arg(format!("http://{}", vbmc.addr()))
        .args(["-u", "admin", "-p", "lab-secret", "--authtype", "Session"])
        .arg("--logdir")
        .arg(&logs)
        .arg("--schema_directory")
        .arg(&schemas)
        .arg("--skipschema")
        .output()
        .await
        .context("running rf_service_validator")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The debug log names each failure and warning; show them when it fails.
    let details = || {
        std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|run| {
                std::fs::read_dir(run.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .filter(|f| f.file_name().to_string_lossy().contains("Debug"))
            .filter_map(|f| std::fs::read_to_string(f.path()).ok())
            .flat_map(|log| {
                log.lines()
                    .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    ensure!(
        out.status.success(),
        "the validator failed:\n{text}\n{}",
        details()
    );
    eprintln!("validator warnings:\n{}", details());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_driver_drives_a_qemu_vm_through_the_virtual_bmc() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = start_vm(dir.path()).expect("QEMU starts");
    if let Err(e) = scenario(dir.path(), &mut vm).await {
        panic!(
            "{e:#}\n--- qemu log ---\n{}",
            std::fs::read_to_string(dir.path().join("qemu.log")).unwrap_or_default()
        );
    }
}
