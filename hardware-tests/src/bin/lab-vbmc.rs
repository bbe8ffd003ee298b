//! The virtual Redfish BMC of one lab rack VM, as a process the lab harness starts
//! inside its network namespace (so it can listen on the lab bridge address):
//!
//! `lab-vbmc --rack RACK.yaml --vm NAME --qmp VM/bmc.qmp --listen 10.213.0.1:8101 \
//!   --password-env LAB_BMC_PASSWORD`
//!
//! What it reports (UUID, serial, CPUs, memory, NICs, boot disk) comes from the rack
//! file, the same description QEMU was started from. It serves until killed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use hardware_tests::qmp::Qmp;
use hardware_tests::rack::{self, DiskKind};
use hardware_tests::vbmc::{Vbmc, VbmcConfig, VbmcNic};

const USAGE: &str = "usage: lab-vbmc --rack FILE --vm NAME --qmp SOCKET --listen ADDR:PORT \
                     --password-env VAR [--username NAME]";

struct Args {
    rack: PathBuf,
    vm: String,
    qmp: PathBuf,
    listen: SocketAddr,
    password_env: String,
    username: String,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let (mut rack, mut vm, mut qmp, mut listen, mut password_env) = (None, None, None, None, None);
    let mut username = "admin".to_owned();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--rack" => rack = Some(PathBuf::from(value()?)),
            "--vm" => vm = Some(value()?),
            "--qmp" => qmp = Some(PathBuf::from(value()?)),
            "--listen" => {
                let v = value()?;
                listen = Some(
                    v.parse()
                        .map_err(|_| format!("--listen {v:?}: not ADDR:PORT"))?,
                )
            }
            "--password-env" => password_env = Some(value()?),
            "--username" => username = value()?,
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let missing = |what: &str| format!("{what} is required\n{USAGE}");
    Ok(Args {
        rack: rack.ok_or_else(|| missing("--rack"))?,
        vm: vm.ok_or_else(|| missing("--vm"))?,
        qmp: qmp.ok_or_else(|| missing("--qmp"))?,
        listen: listen.ok_or_else(|| missing("--listen"))?,
        password_env: password_env.ok_or_else(|| missing("--password-env"))?,
        username,
    })
}

/// The virtual BMC's view of a rack VM.
fn config(vm: &rack::VmSpec, username: String, password: String) -> VbmcConfig {
    let boot_disk = vm
        .disks
        .iter()
        .position(|d| matches!(d.kind, DiskKind::Virtio | DiskKind::Sata));
    VbmcConfig {
        system_id: vm.name.clone(),
        uuid: vm.uuid(),
        serial: vm.serial.clone(),
        cpus: vm.cpus(),
        memory_mib: vm.memory_mib(),
        nics: vm
            .nics
            .iter()
            .enumerate()
            .filter(|(_, nic)| nic.boot)
            .map(|(i, nic)| VbmcNic {
                device: rack::nic_id(i),
                mac: nic.mac.clone(),
                bootindex: rack::NIC_BOOTINDEX,
            })
            .collect(),
        disk: boot_disk.map(|i| (rack::disk_id(i), rack::DISK_BOOTINDEX)),
        username,
        password,
        // SeaBIOS resets once more after a QMP reset: keep the override a while.
        once_window: Duration::from_secs(20),
        fail_first: vm.bmc.fail_first,
    }
}

async fn run(args: Args) -> Result<(), String> {
    let rack = rack::load(&args.rack).map_err(|e| e.to_string())?;
    let vm = rack
        .vms
        .iter()
        .find(|v| v.name == args.vm)
        .ok_or_else(|| format!("no VM named {:?} in {}", args.vm, args.rack.display()))?;
    let password = std::env::var(&args.password_env)
        .map_err(|_| format!("set the BMC password in ${}", args.password_env))?;
    // QEMU may still be creating its socket.
    let mut waited = 0;
    let qmp = loop {
        match Qmp::connect(&args.qmp).await {
            Ok(qmp) => break qmp,
            Err(err) if waited >= 100 => {
                return Err(format!("QMP socket {}: {err}", args.qmp.display()));
            }
            Err(_) => {
                waited += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let vbmc = Vbmc::start(config(vm, args.username, password), qmp, args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    println!("lab-vbmc: {} serving {}", vm.name, vbmc.url());
    std::future::pending::<()>().await;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&args) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("lab-vbmc: cannot start a runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("lab-vbmc: {msg}");
            ExitCode::FAILURE
        }
    }
}
