//! `provisioner bmc ...`: one BMC, no daemon: power, boot device, inventory.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::output::{Output, print_json};
use crate::bmc::PowerAction;

pub(crate) const BMC_LONG_ABOUT: &str = "\
Talk to one BMC directly, without the daemon: power, boot device, inventory.

BMC URLs: redfish://host[:port][/redfish/v1/Systems/ID] (HTTPS, certificate verified),
redfish+http://host[:port][...] (plain HTTP, labs only). Without a system path the
BMC's only system is used; when it has several, they are listed and you pick one.
The password never goes on the command line: --password-env VAR or --password-file FILE.

Examples:
  BMC_PASSWORD=... provisioner bmc power status --bmc redfish://10.0.0.5 -u admin --password-env BMC_PASSWORD
  provisioner bmc boot-device pxe --bmc redfish://10.0.0.5 -u admin --password-file /etc/bmc.pw
  provisioner bmc inventory --bmc redfish://10.0.0.5 --ca-file site-ca.pem -u admin --password-env PW -o json";

/// Which BMC and how to log in.
#[derive(Debug, Args)]
pub(crate) struct BmcTarget {
    /// The BMC: redfish://host[:port][/redfish/v1/Systems/ID] or redfish+http://...
    #[arg(long, value_name = "URL")]
    bmc: String,
    /// The BMC account.
    #[arg(short, long, value_name = "USER")]
    username: Option<String>,
    /// Read the password from this environment variable.
    #[arg(long, value_name = "VAR", conflicts_with = "password_file")]
    password_env: Option<String>,
    /// Read the password from this file (its first line).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Do not verify the BMC's TLS certificate (labs only; the BMC can then be impersonated).
    #[arg(long, conflicts_with = "ca_file")]
    insecure: bool,
    /// Verify the BMC's certificate against this CA certificate (PEM) instead of the web PKI.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Time limit for each request to the BMC.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    timeout: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum PowerCommand {
    /// Show the power state.
    Status,
    /// Power on.
    On,
    /// Power off: cut power (or ask the OS with --graceful).
    Off,
    /// Hard reset.
    Reset,
    /// Power off, then on.
    Cycle,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum BootDeviceArg {
    /// Network boot (PXE).
    Pxe,
    /// The local disk.
    Disk,
    /// UEFI HTTP boot.
    Http,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BmcCommand {
    /// Show or change the power state.
    Power {
        #[arg(value_name = "status|on|off|reset|cycle")]
        action: PowerCommand,
        #[command(flatten)]
        target: BmcTarget,
        /// With `off`: ask the operating system to shut down instead of cutting power.
        #[arg(long)]
        graceful: bool,
        /// Wait until the new state is reached (BMCs accept a change before it lands).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        wait_timeout: u64,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Set the device for the next boot (every boot with --persistent).
    BootDevice {
        #[arg(value_name = "pxe|disk|http")]
        device: BootDeviceArg,
        #[command(flatten)]
        target: BmcTarget,
        /// Every boot, not only the next one.
        #[arg(long)]
        persistent: bool,
        /// Legacy BIOS boot instead of UEFI.
        #[arg(long)]
        legacy: bool,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Read the system's identity and hardware as the BMC sees it.
    Inventory {
        #[command(flatten)]
        target: BmcTarget,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

impl PowerCommand {
    /// The change asked for (none: `status`); `off` cuts power unless `graceful`.
    pub(crate) fn action(self, graceful: bool) -> Option<PowerAction> {
        match self {
            PowerCommand::Status => None,
            PowerCommand::On => Some(PowerAction::On),
            PowerCommand::Off if graceful => Some(PowerAction::GracefulOff),
            PowerCommand::Off => Some(PowerAction::ForceOff),
            PowerCommand::Reset => Some(PowerAction::Reset),
            PowerCommand::Cycle => Some(PowerAction::Cycle),
        }
    }
}

impl BmcTarget {
    fn config(&self) -> anyhow::Result<crate::bmc::BmcConfig> {
        use crate::bmc::{BmcConfig, Credentials, Secret, TlsPolicy};
        let url: crate::site::BmcUrl = self.bmc.parse()?;
        let password = match (&self.password_env, &self.password_file) {
            (Some(var), _) => Some(std::env::var(var).map_err(|_| {
                anyhow::anyhow!("--password-env {var}: the environment variable {var} is not set")
            })?),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--password-file: cannot read {}", path.display()))?;
                Some(text.lines().next().unwrap_or_default().to_owned())
            }
            (None, None) => None,
        };
        let credentials = match (&self.username, password) {
            (Some(username), Some(password)) => Some(Credentials {
                username: username.clone(),
                password: Secret::new(password),
            }),
            (Some(username), None) => bail!(
                "no password for {username}: give --password-env VAR or --password-file FILE \
                 (never the password itself)"
            ),
            (None, Some(_)) => bail!("a password without a user: add --username"),
            (None, None) => None,
        };
        let mut config = BmcConfig::new(url, credentials);
        config.timeout = std::time::Duration::from_secs(self.timeout.max(1));
        config.tls = match (&self.ca_file, self.insecure) {
            (Some(path), _) => TlsPolicy::CaFile(path.clone()),
            (None, true) => TlsPolicy::Insecure,
            (None, false) => TlsPolicy::WebPki,
        };
        Ok(config)
    }
}

pub(crate) async fn run(command: BmcCommand) -> anyhow::Result<()> {
    use crate::bmc::{self, Bmc as _};
    let target = match &command {
        BmcCommand::Power { target, .. }
        | BmcCommand::BootDevice { target, .. }
        | BmcCommand::Inventory { target, .. } => target,
    };
    let bmc = bmc::connect(target.config()?).await?;
    let result = bmc_run(&bmc, command).await;
    if let Err(e) = bmc.close().await {
        eprintln!("warning: {e}");
    }
    result
}

async fn bmc_run(bmc: &crate::bmc::AnyBmc, command: BmcCommand) -> anyhow::Result<()> {
    use crate::bmc::{Bmc as _, BootDevice, BootMode, BootOverride, wait_for_power};
    let url = bmc.url().to_string();
    match command {
        BmcCommand::Power {
            action,
            graceful,
            wait,
            wait_timeout,
            output,
            ..
        } => {
            let action = action.action(graceful);
            if let Some(action) = action {
                bmc.power(action).await?;
                if wait {
                    wait_for_power(
                        bmc,
                        action.target_state(),
                        std::time::Duration::from_secs(wait_timeout),
                        std::time::Duration::from_millis(500),
                    )
                    .await?;
                }
            }
            let state = bmc.power_state().await?;
            match output {
                Output::Json => print_json(&json!({
                    "bmc": url,
                    "action": action,
                    "power_state": state,
                }))?,
                Output::Table => match action {
                    None => println!("{state}"),
                    Some(action) => println!(
                        "{action:?} accepted by {url}; power is now {state}{}",
                        if wait || state == action.target_state() {
                            ""
                        } else {
                            " (the change can take a while: --wait waits for it)"
                        }
                    ),
                },
            }
        }
        BmcCommand::BootDevice {
            device,
            persistent,
            legacy,
            output,
            ..
        } => {
            let boot = BootOverride {
                device: match device {
                    BootDeviceArg::Pxe => BootDevice::Pxe,
                    BootDeviceArg::Disk => BootDevice::Disk,
                    BootDeviceArg::Http => BootDevice::Http,
                },
                persistent,
                mode: if legacy {
                    BootMode::Legacy
                } else {
                    BootMode::Uefi
                },
            };
            bmc.set_boot(boot).await?;
            match output {
                Output::Json => print_json(&json!({"bmc": url, "boot": boot}))?,
                Output::Table => println!(
                    "{url}: boot from {} ({}, {})",
                    serde_json::to_value(boot.device)?
                        .as_str()
                        .unwrap_or_default(),
                    if persistent {
                        "every boot"
                    } else {
                        "next boot only"
                    },
                    if legacy { "legacy BIOS" } else { "UEFI" }
                ),
            }
        }
        BmcCommand::Inventory { output, .. } => {
            let inventory = bmc.inventory().await?;
            match output {
                Output::Json => {
                    let mut value = serde_json::to_value(&inventory)?;
                    value["bmc"] = json!(url);
                    print_json(&value)?;
                }
                Output::Table => print!("{}", render_inventory(&url, &inventory)),
            }
            for warning in &inventory.warnings {
                eprintln!("warning: {warning}");
            }
        }
    }
    Ok(())
}

/// The inventory as aligned `key  value` lines.
fn render_inventory(url: &str, inv: &crate::bmc::Inventory) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let memory_gib = inv.memory_gib.or_else(|| {
        let mib: u64 = inv.memory.iter().filter_map(|m| m.capacity_mib).sum();
        (mib > 0).then(|| mib as f64 / 1024.0)
    });
    let rows = [
        ("bmc", url.to_owned()),
        ("system", inv.system.clone()),
        ("vendor", opt(&inv.vendor)),
        ("model", opt(&inv.model)),
        ("serial", opt(&inv.serial)),
        ("uuid", opt(&inv.uuid)),
        ("bios", opt(&inv.bios_version)),
        (
            "power",
            inv.power_state.map_or("-".to_owned(), |p| p.to_string()),
        ),
        (
            "cpus",
            inv.processor_count
                .map_or("-".to_owned(), |n| n.to_string()),
        ),
        (
            "memory",
            memory_gib.map_or("-".to_owned(), |g| format!("{g} GiB")),
        ),
    ];
    for (key, value) in rows {
        let _ = writeln!(out, "{key:>8}  {value}");
    }
    for p in &inv.processors {
        let _ = writeln!(
            out,
            "{:>8}  {} {} ({} cores, {} threads)",
            "cpu",
            p.socket.as_deref().unwrap_or(&p.id),
            p.model.as_deref().unwrap_or("-"),
            p.cores.map_or("-".to_owned(), |n| n.to_string()),
            p.threads.map_or("-".to_owned(), |n| n.to_string())
        );
    }
    for m in &inv.memory {
        let _ = writeln!(
            out,
            "{:>8}  {} {} MiB {}",
            "dimm",
            m.id,
            m.capacity_mib.map_or("-".to_owned(), |n| n.to_string()),
            m.memory_type.as_deref().unwrap_or("")
        );
    }
    for n in &inv.nics {
        let _ = writeln!(
            out,
            "{:>8}  {} {}",
            "nic",
            n.mac.as_deref().unwrap_or("-"),
            n.id
        );
    }
    for d in &inv.drives {
        let _ = writeln!(
            out,
            "{:>8}  {} {} {} bytes",
            "drive",
            d.model.as_deref().unwrap_or("-"),
            d.serial.as_deref().unwrap_or("-"),
            d.capacity_bytes.map_or("-".to_owned(), |n| n.to_string())
        );
    }
    for d in &inv.pcie_devices {
        let _ = writeln!(
            out,
            "{:>8}  {} {} {}",
            "pcie",
            d.name.as_deref().unwrap_or(&d.id),
            d.vendor.as_deref().unwrap_or("-"),
            d.model.as_deref().unwrap_or("-")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_table_shows_identity_cpus_memory_and_macs() {
        use crate::bmc::{Inventory, Nic, PowerState};
        let inventory = Inventory {
            system: "/redfish/v1/Systems/1".into(),
            vendor: Some("Fake Computers".into()),
            serial: Some("SN1".into()),
            uuid: Some("00000000-0000-4000-8000-000000000001".into()),
            power_state: Some(PowerState::On),
            processor_count: Some(2),
            memory_gib: Some(64.0),
            nics: vec![Nic {
                id: "NIC0".into(),
                mac: Some("52:54:00:00:01:00".into()),
                ..Nic::default()
            }],
            ..Inventory::default()
        };
        insta::assert_snapshot!(render_inventory("redfish://bmc:443", &inventory), @r"
             bmc  redfish://bmc:443
          system  /redfish/v1/Systems/1
          vendor  Fake Computers
           model  -
          serial  SN1
            uuid  00000000-0000-4000-8000-000000000001
            bios  -
           power  on
            cpus  2
          memory  64 GiB
             nic  52:54:00:00:01:00 NIC0
        ");
    }
}
