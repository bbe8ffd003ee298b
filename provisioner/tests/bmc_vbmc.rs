//! `provisioner bmc` (the real binary) against the lab's virtual BMC in front of a real
//! QEMU VM (TCG, started powered off): inventory shows the VM's UUID, serial, CPU count,
//! memory and NIC MAC; power and boot device go through to the VM.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hardware_tests::qmp::Qmp;
use hardware_tests::vbmc::{Vbmc, VbmcConfig, VbmcNic};

const UUID: &str = "6b1f4c2e-0d3a-4b7e-9f10-2a3b4c5d6e02";
const MAC: &str = "52:54:00:aa:00:02";

/// QEMU, killed (by PID) when dropped.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_vm(dir: &Path) -> Vm {
    let child = Command::new("qemu-system-x86_64")
        .current_dir(dir)
        .args(["-S", "-no-shutdown", "-nodefaults", "-display", "none"])
        .args(["-machine", "q35", "-accel", "tcg", "-m", "512", "-smp", "4"])
        .args(["-uuid", UUID, "-smbios", "type=1,serial=LAB-VM-0002"])
        .args(["-qmp", "unix:bmc.qmp,server=on,wait=off"])
        .args(["-netdev", "user,id=n0,restrict=on"])
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,id=nic0,mac={MAC},bootindex=2,romfile="),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu-system-x86_64 (install it with `cargo xtask deps`)");
    Vm(child)
}

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(args)
        .env("VBMC_PASSWORD", "lab-secret")
        .output()
        .expect("run provisioner")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bmc_commands_against_the_virtual_bmc() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = start_vm(dir.path());
    let socket = dir.path().join("bmc.qmp");
    let deadline = Instant::now() + Duration::from_secs(20);
    let qmp = loop {
        if socket.exists()
            && let Ok(qmp) = Qmp::connect(&socket).await
        {
            break qmp;
        }
        assert!(vm.0.try_wait().unwrap().is_none(), "QEMU exited");
        assert!(Instant::now() < deadline, "no QMP socket");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let vbmc = Vbmc::start(
        VbmcConfig {
            system_id: "vm1".into(),
            uuid: UUID.into(),
            serial: "LAB-VM-0002".into(),
            cpus: 4,
            memory_mib: 512,
            nics: vec![VbmcNic {
                device: "nic0".into(),
                mac: MAC.into(),
                bootindex: 2,
            }],
            disk: None,
            username: "admin".into(),
            password: "lab-secret".into(),
            once_window: Duration::from_secs(30),
            fail_first: 0,
        },
        qmp,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let url = vbmc.url();
    let auth = ["-u", "admin", "--password-env", "VBMC_PASSWORD"];
    // The CLI blocks; run it off the runtime's workers.
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&args)
        })
    };
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["bmc".into()];
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v.extend(["--bmc".to_owned(), url.clone()]);
        v.extend(auth.iter().map(|s| (*s).to_owned()));
        v
    };

    let out = run(args(&["inventory"])).await.unwrap();
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    for expected in [
        format!("uuid  {UUID}"),
        "serial  LAB-VM-0002".to_owned(),
        "cpus  4".to_owned(),
        "memory  0.5 GiB".to_owned(),
        format!("nic  {MAC}"),
        "power  off".to_owned(),
    ] {
        assert!(shown.contains(&expected), "no {expected:?} in:\n{shown}");
    }

    let out = run(args(&["power", "on", "--wait", "-o", "json"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["power_state"], "on");

    let out = run(args(&["boot-device", "pxe"])).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("boot from pxe (next boot only, UEFI)"));

    let out = run(args(&["power", "off"])).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("power is now off"), "{}", text(&out));
    drop(vbmc);
}
