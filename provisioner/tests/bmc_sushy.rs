//! The Redfish driver and `provisioner bmc` against a peer we did not write: sushy-tools'
//! emulator with its fake driver (PyPI `sushy-tools`, in `<target>/venv`, created here when
//! missing). One emulator per test binary, a fresh state directory, three systems; the
//! scenarios run concurrently on different systems because power changes land only after
//! 1-11 s there.

#[path = "../../xtask/src/venv.rs"]
mod venv;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use provisioner::bmc::redfish::RedfishBmc;
use provisioner::bmc::{
    Bmc, BmcConfig, BmcError, BootDevice, BootMode, BootOverride, PowerAction, PowerState,
    wait_for_power,
};
use serde_json::Value;

const UUIDS: [&str; 3] = [
    "5a1a0001-6d3c-4f1e-9a55-000000000001",
    "5a1a0002-6d3c-4f1e-9a55-000000000002",
    "5a1a0003-6d3c-4f1e-9a55-000000000003",
];
/// Sushy's fake driver applies a power change 1-11 s after accepting it.
const POWER_LANDS_WITHIN: Duration = Duration::from_secs(30);

/// The emulator; killed (by PID, through its `Child`) when dropped, panics included.
struct Emulator {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Emulator {
    fn base(&self) -> String {
        format!("redfish+http://127.0.0.1:{}", self.port)
    }

    fn system_url(&self, i: usize) -> String {
        format!("{}/redfish/v1/Systems/{}", self.base(), UUIDS[i])
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulator.log")).unwrap_or_default()
    }
}

/// `<target>` from this test's own path: `<target>/debug/deps/bmc_sushy-HASH`.
fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .context("cannot find the target directory from the test's path")
}

async fn start_emulator() -> Result<Emulator> {
    let venv = venv::ensure(&target_dir()?, venv::PEERS)
        .context("preparing the sushy-tools venv (run `cargo xtask deps` for python3-venv)")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    let systems: Vec<String> = UUIDS
        .iter()
        .enumerate()
        .map(|(i, uuid)| {
            format!(
                "{{'uuid': '{uuid}', 'name': 'node{i}', 'power_state': 'Off', \
                 'nics': [{{'mac': '52:54:00:5a:00:0{i}', 'ip': '10.213.0.1{i}'}}]}}"
            )
        })
        .collect();
    let config = format!(
        "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
         SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
         SUSHY_EMULATOR_FAKE_DRIVER = True\n\
         SUSHY_EMULATOR_STATE_DIR = '{}'\n\
         SUSHY_EMULATOR_FAKE_SYSTEMS = [{}]\n",
        dir.path().join("state").display(),
        systems.join(", ")
    );
    std::fs::write(dir.path().join("emulator.conf"), config)?;
    let log = std::fs::File::create(dir.path().join("emulator.log"))?;
    let child = Command::new(venv.bin("sushy-emulator"))
        .arg("--config")
        .arg(dir.path().join("emulator.conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting sushy-emulator")?;
    let mut emulator = Emulator { child, port, dir };
    // Ready when the service root answers.
    let http = reqwest::Client::new();
    let root = format!("http://127.0.0.1:{port}/redfish/v1/");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(&root).send().await
            && r.status().is_success()
        {
            return Ok(emulator);
        }
        if let Some(status) = emulator.child.try_wait()? {
            bail!("sushy-emulator exited ({status}):\n{}", emulator.log());
        }
        if Instant::now() > deadline {
            bail!("sushy-emulator not ready after 60 s:\n{}", emulator.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect(url: &str) -> Result<RedfishBmc> {
    // The fake driver asks for no authentication.
    let mut config = BmcConfig::new(url.parse()?, None);
    config.timeout = Duration::from_secs(10);
    config.backoff = Duration::from_millis(100);
    Ok(RedfishBmc::connect(config).await?)
}

async fn power_scenario(emulator: &Emulator) -> Result<()> {
    let bmc = connect(&emulator.system_url(0)).await?;
    ensure!(bmc.power_state().await? == PowerState::Off, "starts off");
    for (action, state) in [
        (PowerAction::On, PowerState::On),
        (PowerAction::ForceOff, PowerState::Off),
    ] {
        bmc.power(action).await?;
        wait_for_power(&bmc, state, POWER_LANDS_WITHIN, Duration::from_millis(250))
            .await
            .with_context(|| format!("after {action:?}"))?;
    }
    // sushy-tools offers no PowerCycle: a typed "not supported" naming what it allows.
    let err = bmc.power(PowerAction::Cycle).await.unwrap_err();
    ensure!(
        matches!(err, BmcError::NotSupported { .. }) && err.to_string().contains("ForceRestart"),
        "cycle: {err}"
    );
    Ok(())
}

async fn system_json(emulator: &Emulator, i: usize) -> Result<Value> {
    let url = format!(
        "http://127.0.0.1:{}/redfish/v1/Systems/{}",
        emulator.port, UUIDS[i]
    );
    Ok(reqwest::get(url).await?.json().await?)
}

async fn boot_scenario(emulator: &Emulator) -> Result<()> {
    let bmc = connect(&emulator.system_url(1)).await?;
    for (device, mode, target, mode_text) in [
        (BootDevice::Pxe, BootMode::Uefi, "Pxe", "UEFI"),
        (BootDevice::Disk, BootMode::Legacy, "Hdd", "Legacy"),
        // sushy-tools records UefiHttp without an HttpBootUri as Pxe (main.py says so).
        (BootDevice::Http, BootMode::Uefi, "Pxe", "UEFI"),
    ] {
        bmc.set_boot(BootOverride {
            device,
            persistent: false,
            mode,
        })
        .await?;
        let boot = system_json(emulator, 1).await?["Boot"].clone();
        ensure!(
            boot["BootSourceOverrideTarget"] == target
                && boot["BootSourceOverrideMode"] == mode_text,
            "{device:?}/{mode:?}: the emulator shows {boot}"
        );
    }
    Ok(())
}

async fn inventory_scenario(emulator: &Emulator) -> Result<()> {
    let bmc = connect(&emulator.system_url(2)).await?;
    let inventory = bmc.inventory().await?;
    ensure!(inventory.uuid.as_deref() == Some(UUIDS[2]), "{inventory:?}");
    ensure!(
        inventory.vendor.as_deref() == Some("Sushy Emulator"),
        "{inventory:?}"
    );
    let macs: Vec<_> = inventory
        .nics
        .iter()
        .filter_map(|n| n.mac.as_deref())
        .collect();
    ensure!(macs == ["52:54:00:5a:00:02"], "{macs:?}");
    ensure!(inventory.power_state == Some(PowerState::Off));
    // The emulator links Memory and Storage but answers 404 and 500 there: warnings, no error.
    ensure!(inventory.warnings.len() == 2, "{:?}", inventory.warnings);
    Ok(())
}

async fn ambiguity_scenario(emulator: &Emulator) -> Result<()> {
    let err = connect(&emulator.base()).await.unwrap_err();
    let err = err.downcast::<BmcError>()?;
    match &err {
        BmcError::AmbiguousSystem { systems, .. } => {
            ensure!(systems.len() == 3, "{err}");
        }
        other => bail!("expected AmbiguousSystem, got {other}"),
    }
    Ok(())
}

async fn cli(args: &[&str]) -> Result<(bool, String, String)> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(args)
        .output()
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

async fn cli_scenario(emulator: &Emulator) -> Result<()> {
    let url = emulator.system_url(2);
    let (ok, stdout, stderr) = cli(&["bmc", "inventory", "--bmc", &url, "-o", "json"]).await?;
    ensure!(ok, "inventory failed: {stderr}");
    let inventory: Value = serde_json::from_str(&stdout)?;
    ensure!(inventory["uuid"] == UUIDS[2], "{inventory}");
    ensure!(
        inventory["nics"][0]["mac"] == "52:54:00:5a:00:02",
        "{inventory}"
    );
    let (ok, stdout, stderr) = cli(&["bmc", "power", "status", "--bmc", &url]).await?;
    ensure!(
        ok && stdout.trim() == "off",
        "power status: {stdout} {stderr}"
    );
    let (ok, _, stderr) = cli(&["bmc", "power", "status", "--bmc", &emulator.base()]).await?;
    ensure!(
        !ok && stderr.contains("manages 3 systems") && stderr.contains(UUIDS[0]),
        "without a system path: {stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redfish_driver_against_sushy_tools() {
    let started = Instant::now();
    let emulator = start_emulator().await.expect("sushy-emulator starts");
    let (power, boot, inventory, ambiguity, cli) = tokio::join!(
        power_scenario(&emulator),
        boot_scenario(&emulator),
        inventory_scenario(&emulator),
        ambiguity_scenario(&emulator),
        cli_scenario(&emulator),
    );
    let mut failures = vec![];
    for (name, result) in [
        ("power", power),
        ("boot", boot),
        ("inventory", inventory),
        ("ambiguity", ambiguity),
        ("cli", cli),
    ] {
        if let Err(e) = result {
            failures.push(format!("{name}: {e:#}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n--- emulator log ---\n{}",
        failures.join("\n"),
        emulator.log()
    );
    eprintln!("sushy scenarios took {:?}", started.elapsed());
}
