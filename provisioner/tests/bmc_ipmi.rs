//! The IPMI driver against a peer we did not write: OpenIPMI's `ipmi_sim` (Debian
//! `openipmi`) on 127.0.0.1, every result cross-checked with `ipmitool -I lanplus -C 3`
//! (Debian `ipmitool`); both come from `cargo xtask deps`. The simulator's chassis hook is a
//! shell script that keeps power and boot device in files and logs every call.
//! Retransmission is checked through an in-process UDP relay that drops requests.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use provisioner::bmc::ipmi::IpmiBmc;
use provisioner::bmc::{
    Bmc, BmcConfig, BmcError, BootDevice, BootMode, BootOverride, Credentials, PowerAction,
    PowerState, Secret,
};

const GUID: &str = "a123456789abcdefa123456789abcdef";

const HOOK: &str = r#"#!/bin/sh
# ipmi_sim chassis hook: $1 = 0x20, then get power | set power 1|0 | set reset 1 |
# get boot | set boot pxe|default|...
dir=$(dirname "$0")
echo "$2 $3 $4" >> "$dir/hook.log"
case "$2 $3" in
  "get power") echo "power:$(cat "$dir/power" 2>/dev/null || echo 0)";;
  "set power") echo "$4" > "$dir/power";;
  "get boot") echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)";;
  "set boot") echo "$4" > "$dir/boot";;
esac
exit 0
"#;

/// `ipmi_sim`, killed (by PID, through its `Child`) when dropped, panics included.
struct Simulator {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Simulator {
    fn start() -> Result<Simulator> {
        for tool in ["ipmi_sim", "ipmitool"] {
            ensure!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .stdout(Stdio::null())
                    .status()?
                    .success(),
                "{tool} is not installed: run `cargo xtask deps` (Debian openipmi, ipmitool)"
            );
        }
        let port = std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let hook = dir.path().join("hook.sh");
        std::fs::write(&hook, HOOK)?;
        let chmod = Command::new("chmod").arg("+x").arg(&hook).status()?;
        ensure!(chmod.success(), "chmod +x {}", hook.display());
        let auths = "none md2 md5 straight";
        let lan = format!(
            "name \"bmc\"\n\
             set_working_mc 0x20\n\
             \x20 startlan 1\n\
             \x20   addr 127.0.0.1 {port}\n\
             \x20   priv_limit admin\n\
             \x20   allowed_auths_callback {auths}\n\
             \x20   allowed_auths_user {auths}\n\
             \x20   allowed_auths_operator {auths}\n\
             \x20   allowed_auths_admin {auths}\n\
             \x20   guid {GUID}\n\
             \x20 endlan\n\
             \x20 chassis_control \"{} 0x20\"\n\
             \x20 user 2 true \"admin\" \"secret\" admin 10 {auths}\n",
            hook.display()
        );
        std::fs::write(dir.path().join("lan.conf"), lan)?;
        // FRU 0: the system's identity, as a real BMC keeps it.
        let fru = provisioner::bmc::fru::build(
            "CH-0007",
            ["Board Co", "Mainboard X", "BRD-0007"],
            ["Acme", "Server 9000", "PN-1", "v2", "SRV-0042"],
        );
        // Inline bytes: ipmi_sim 2.0.33 silently never starts its LAN with the `file` form.
        let bytes: Vec<String> = fru.iter().map(|b| format!("{b:#04x}")).collect();
        std::fs::write(
            dir.path().join("lab.emu"),
            format!(
                "mc_setbmc 0x20\n\
                 mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
                 mc_add_fru_data 0x20 0 {} data {}\n\
                 mc_enable 0x20\n",
                fru.len(),
                bytes.join(" ")
            ),
        )?;
        std::fs::create_dir(dir.path().join("state"))?;
        let log = std::fs::File::create(dir.path().join("sim.log"))?;
        let child = Command::new("ipmi_sim")
            .arg("-n")
            .arg("-c")
            .arg(dir.path().join("lan.conf"))
            .arg("-f")
            .arg(dir.path().join("lab.emu"))
            .arg("-s")
            .arg(dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting ipmi_sim")?;
        Ok(Simulator { child, port, dir })
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn url(&self) -> String {
        format!("ipmi://127.0.0.1:{}", self.port)
    }

    fn hook_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hook.log")).unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sim.log")).unwrap_or_default()
    }

    /// `ipmitool -I lanplus -C 3 ... ARGS`: its stdout.
    async fn ipmitool(&self, args: &[&str]) -> Result<String> {
        let out = tokio::process::Command::new("ipmitool")
            .args(["-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", "admin", "-P", "secret"])
            .args(args)
            .output()
            .await?;
        ensure!(
            out.status.success(),
            "ipmitool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn config(url: &str, password: &str) -> Result<BmcConfig> {
    let mut config = BmcConfig::new(
        url.parse()?,
        Some(Credentials {
            username: "admin".into(),
            password: Secret::new(password),
        }),
    );
    config.timeout = Duration::from_secs(2);
    config.retries = 3;
    Ok(config)
}

/// Connects once the simulator answers (it binds its port shortly after starting).
async fn connect(sim: &mut Simulator) -> Result<IpmiBmc> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match IpmiBmc::connect(config(&sim.url(), "secret")?).await {
            Ok(bmc) => return Ok(bmc),
            Err(e) if Instant::now() < deadline => {
                if let Some(status) = sim.child.try_wait()? {
                    bail!("ipmi_sim exited ({status}): {e}\n{}", sim.log());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("ipmi_sim never answered: {e}\n{}", sim.log()),
        }
    }
}

async fn power_scenario(sim: &Simulator, bmc: &IpmiBmc) -> Result<()> {
    ensure!(bmc.power_state().await? == PowerState::Off, "starts off");
    ensure!(
        sim.ipmitool(&["chassis", "power", "status"])
            .await?
            .contains("is off")
    );
    bmc.power(PowerAction::On).await?;
    ensure!(bmc.power_state().await? == PowerState::On);
    ensure!(
        sim.ipmitool(&["chassis", "power", "status"])
            .await?
            .contains("is on")
    );
    bmc.power(PowerAction::Reset).await?;
    bmc.power(PowerAction::ForceOff).await?;
    ensure!(bmc.power_state().await? == PowerState::Off);
    ensure!(
        sim.ipmitool(&["chassis", "power", "status"])
            .await?
            .contains("is off")
    );
    let log = sim.hook_log();
    for call in ["set power 1", "set reset 1", "set power 0"] {
        ensure!(log.contains(call), "the hook never saw {call:?}:\n{log}");
    }
    Ok(())
}

async fn boot_scenario(sim: &Simulator, bmc: &IpmiBmc) -> Result<()> {
    for (device, shown) in [
        (BootDevice::Pxe, "Force PXE"),
        (BootDevice::Disk, "Force Boot from default Hard-Drive"),
    ] {
        bmc.set_boot(BootOverride {
            device,
            persistent: false,
            mode: BootMode::Uefi,
        })
        .await?;
        // ipmi_sim keeps only the device selector (the valid, persistent and EFI bits read
        // back as zero), so that is what is compared.
        let (read, _, _) = bmc.boot_flags().await?;
        ensure!(read == Some(device), "{device:?}: read back {read:?}");
        let ipmitool = sim.ipmitool(&["chassis", "bootparam", "get", "5"]).await?;
        ensure!(
            ipmitool.contains(shown),
            "{device:?}: ipmitool shows\n{ipmitool}"
        );
    }
    let err = bmc
        .set_boot(BootOverride {
            device: BootDevice::Http,
            persistent: false,
            mode: BootMode::Uefi,
        })
        .await
        .unwrap_err();
    ensure!(matches!(err, BmcError::NotSupported { .. }), "http: {err}");
    Ok(())
}

async fn inventory_scenario(sim: &Simulator, bmc: &IpmiBmc) -> Result<()> {
    let inventory = bmc.inventory().await?;
    let guid = sim.ipmitool(&["mc", "guid"]).await?;
    let uuid = inventory.uuid.clone().context("no UUID")?;
    let theirs = guid
        .lines()
        .find_map(|l| l.strip_prefix("System GUID"))
        .map(|v| v.trim_start_matches([' ', ':']).trim());
    ensure!(
        theirs == Some(uuid.as_str()),
        "ours {uuid}, ipmitool:\n{guid}"
    );
    // Identity from FRU 0, as ipmitool reads it too.
    let fru = sim.ipmitool(&["fru", "print", "0"]).await?;
    for (field, ours) in [
        ("Product Serial", inventory.serial.as_deref()),
        ("Product Name", inventory.model.as_deref()),
        ("Product Manufacturer", inventory.vendor.as_deref()),
    ] {
        let theirs = fru
            .lines()
            .find_map(|l| l.trim().strip_prefix(field))
            .map(|v| v.trim_start_matches([' ', ':']).trim());
        ensure!(
            theirs.is_some() && theirs == ours,
            "{field}: ours {ours:?}, ipmitool:\n{fru}"
        );
    }
    ensure!(
        inventory.serial.as_deref() == Some("SRV-0042"),
        "{inventory:?}"
    );
    ensure!(inventory.power_state.is_some(), "{inventory:?}");
    Ok(())
}

async fn session_scenario(sim: &Simulator, bmc: &IpmiBmc) -> Result<()> {
    bmc.close().await?;
    // The next call opens a new session.
    bmc.check().await?;
    let err = IpmiBmc::connect(config(&sim.url(), "wrong-secret")?)
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    ensure!(matches!(err, BmcError::Auth { .. }), "{text}");
    ensure!(
        !text.contains("wrong-secret") && text.contains(&sim.url()),
        "{text}"
    );
    Ok(())
}

/// A UDP relay in front of the simulator that drops every `nth` request; replies pass.
async fn lossy_relay(target: SocketAddr, nth: u64) -> Result<(SocketAddr, Arc<AtomicU64>)> {
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await?);
    back.connect(target).await?;
    let addr = front.local_addr()?;
    let dropped = Arc::new(AtomicU64::new(0));
    let client: Arc<tokio::sync::Mutex<Option<SocketAddr>>> = Arc::default();
    {
        let (front, back, client, dropped) =
            (front.clone(), back.clone(), client.clone(), dropped.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut seen = 0u64;
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().await = Some(from);
                seen += 1;
                if seen.is_multiple_of(nth) {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let _ = back.send(&buf[..n]).await;
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok(n) = back.recv(&mut buf).await {
            if let Some(to) = *client.lock().await {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    Ok((addr, dropped))
}

async fn retransmission_scenario(sim: &Simulator) -> Result<()> {
    let (relay, dropped) = lossy_relay(sim.addr(), 3).await?;
    let mut config = config(&format!("ipmi://{relay}"), "secret")?;
    // 4 attempts of 250 ms each.
    config.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let bmc = IpmiBmc::connect(config).await?;
    for _ in 0..6 {
        bmc.power_state().await?;
    }
    bmc.close().await?;
    ensure!(
        dropped.load(Ordering::Relaxed) >= 3,
        "the relay dropped {} requests",
        dropped.load(Ordering::Relaxed)
    );
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    Ok(())
}

async fn cli_scenario(sim: &Simulator) -> Result<()> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["bmc", "power", "status", "--bmc", &sim.url()])
        .args(["-u", "admin", "--password-env", "BMC_TEST_PASSWORD"])
        .env("BMC_TEST_PASSWORD", "secret")
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.trim() == "off",
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

async fn all(sim: &mut Simulator) -> Result<()> {
    let bmc = connect(sim).await?;
    power_scenario(sim, &bmc).await.context("power")?;
    boot_scenario(sim, &bmc).await.context("boot")?;
    inventory_scenario(sim, &bmc).await.context("inventory")?;
    session_scenario(sim, &bmc).await.context("session")?;
    bmc.close().await?;
    retransmission_scenario(sim)
        .await
        .context("retransmission")?;
    cli_scenario(sim).await.context("cli")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipmi_driver_against_ipmi_sim_and_ipmitool() {
    let mut sim = Simulator::start().expect("ipmi_sim starts");
    let result = all(&mut sim).await;
    if let Err(e) = result {
        panic!(
            "{e:#}\n--- hook log ---\n{}\n--- ipmi_sim log ---\n{}",
            sim.hook_log(),
            sim.log()
        );
    }
}
