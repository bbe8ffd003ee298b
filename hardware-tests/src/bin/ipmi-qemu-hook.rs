//! `ipmi_sim`'s chassis-control hook for a lab VM: the IPMI half of the virtual BMC.
//!
//! In ipmi_sim's lan.conf:
//! `chassis_control "/path/ipmi-qemu-hook --qmp VM.qmp --nic nic0:2 --disk disk0:1 0x20"`;
//! ipmi_sim appends the request, e.g. `get power`, `set power 1`, `set reset 1`,
//! `get boot`, `set boot pxe`. Answers go to stdout (`power:1`, `boot:pxe`); a failure
//! exits non-zero with the reason on stderr. It talks only to the VM's own QMP socket.

use std::path::PathBuf;
use std::process::ExitCode;

use hardware_tests::qmp::Qmp;
use serde_json::json;

#[derive(Debug, Default)]
struct Args {
    qmp: PathBuf,
    nics: Vec<(String, i64)>,
    disk: Option<(String, i64)>,
    request: Vec<String>,
}

fn device(spec: &str) -> Result<(String, i64), String> {
    let (id, index) = spec
        .split_once(':')
        .ok_or_else(|| format!("{spec:?}: expected DEVICE-ID:BOOTINDEX"))?;
    let index = index
        .parse()
        .map_err(|_| format!("{spec:?}: the boot index is not a number"))?;
    Ok((id.to_owned(), index))
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut out = Args::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--qmp" => out.qmp = PathBuf::from(value()?),
            "--nic" => out.nics.push(device(&value()?)?),
            "--disk" => out.disk = Some(device(&value()?)?),
            _ => out.request.push(arg.clone()),
        }
    }
    if out.qmp.as_os_str().is_empty() {
        return Err("--qmp SOCKET is required".to_owned());
    }
    // The first word is the MC address (0x20); the rest is the request.
    if out.request.len() < 3 {
        return Err(format!(
            "expected `MC get|set WHAT [VALUE]`, got {:?}",
            out.request
        ));
    }
    Ok(out)
}

async fn run(args: Args) -> Result<(), String> {
    let qmp = Qmp::connect(&args.qmp).await.map_err(|e| e.to_string())?;
    let request: Vec<&str> = args.request[1..].iter().map(String::as_str).collect();
    let normal: Vec<(String, i64)> = args.nics.iter().cloned().chain(args.disk.clone()).collect();
    let result = match request.as_slice() {
        ["get", "power"] => {
            let (running, _) = qmp.status().await.map_err(|e| e.to_string())?;
            println!("power:{}", u8::from(running));
            Ok(())
        }
        ["set", "power", "1"] => qmp.power_on().await,
        ["set", "power", "0"] => qmp.power_off().await,
        ["set", "reset", _] => qmp.execute("system_reset", json!({})).await.map(drop),
        ["get", "boot"] => {
            let pxe = match args.nics.first() {
                Some((nic, _)) => qmp.bootindex(nic).await.map_err(|e| e.to_string())? == 0,
                None => false,
            };
            println!("boot:{}", if pxe { "pxe" } else { "default" });
            Ok(())
        }
        ["set", "boot", device] => {
            let first = match *device {
                "pxe" => args.nics.first().map(|(d, _)| d.clone()),
                _ => None,
            };
            let order: Vec<(String, i64)> = normal
                .iter()
                .map(|(d, i)| (d.clone(), if Some(d) == first.as_ref() { 0 } else { *i }))
                .collect();
            qmp.set_boot_order(&order).await
        }
        other => return Err(format!("unknown request {other:?}")),
    };
    result.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("ipmi-qemu-hook: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ipmi-qemu-hook: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(parsed)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipmi-qemu-hook: {e}");
            ExitCode::FAILURE
        }
    }
}
