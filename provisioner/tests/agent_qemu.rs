//! The real inspection ramdisk (Debian's kernel, the static node-agent as
//! /init) booted in QEMU (TCG, `-kernel/-initrd`) against the agent API of an
//! in-process provisioner: the agent loads its modules, gets an address from
//! QEMU's user-mode network with its own DHCP client, posts the inventory
//! with its per-boot token, the node becomes `available`, and the agent
//! powers the VM off when told. User-mode networking creates no host
//! interface; the guest reaches the provisioner's 127.0.0.1 as 10.0.2.2.
//!
//! Needs QEMU (`cargo xtask deps`) and the static agent (`cargo xtask
//! ramdisk`; `cargo xtask test` builds it before the tests).

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::progress::Quiet;
use image::ramdisk::{KernelSource, RamdiskOptions};
use model::net::Mac;
use provisioner::app::App;
use provisioner::lifecycle::Event;
use provisioner::store::Store;

const MAC: &str = "52:54:00:a9:00:01";

/// `<target>/x86_64-unknown-linux-gnu/release/node-agent`, found from this test
/// binary (`<target>/debug/deps/agent_qemu-HASH`), or `$NODE_AGENT_STATIC`.
fn static_agent() -> PathBuf {
    if let Some(path) = std::env::var_os("NODE_AGENT_STATIC") {
        return path.into();
    }
    let exe = std::env::current_exe().unwrap();
    let agent = exe
        .ancestors()
        .nth(3)
        .unwrap()
        .join("x86_64-unknown-linux-gnu/release/node-agent");
    assert!(
        agent.is_file(),
        "no static node-agent at {}: run `cargo xtask ramdisk` once (`cargo xtask test` builds it before the tests)",
        agent.display()
    );
    agent
}

/// QEMU, killed (by its PID, through `Child`) however the test ends.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn provisioner(dir: &Path) -> (Arc<App>, u16) {
    let site = dir.join("site");
    std::fs::create_dir_all(site.join("profiles")).unwrap();
    std::fs::write(
        site.join("site.yaml"),
        "network:\n  interface: lo\n  address: 127.0.0.1/8\n  dhcp:\n    mode: off\n\
         api:\n  listen: 127.0.0.1:0\nlifecycle:\n  inspect_timeout: 600\n",
    )
    .unwrap();
    std::fs::write(
        site.join("nodes.yaml"),
        format!("nodes:\n  - name: vm-0\n    boot_mac: \"{MAC}\"\n"),
    )
    .unwrap();
    let loaded = provisioner::site::load(&site).expect("test site is valid");
    let store = Store::open(&dir.join("state")).await.unwrap();
    let token: String = "ab".repeat(32);
    let (key, _) = provisioner::keys::ensure_signing_key(&dir.join("state")).unwrap();
    let app = Arc::new(App::new(loaded, store, token, key));
    app.sync_nodes().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = provisioner::api::router(Arc::clone(&app));
    tokio::spawn(async move { axum::serve(listener, router).await });
    (app, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ramdisk_agent_reports_its_inventory_and_powers_off() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ramdisk");
    let options = RamdiskOptions::new(
        out.clone(),
        static_agent(),
        KernelSource::Apt {
            metapackage: image::kernel::DEFAULT_METAPACKAGE.to_owned(),
        },
        image::kernel::default_cache_dir(),
    );
    tokio::task::spawn_blocking(move || image::ramdisk::build(&options, &Quiet))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("building the ramdisk: {e}"));

    let (app, port) = provisioner(dir.path()).await;
    app.fire("vm-0", Event::Inspect, Some("test".into()))
        .await
        .unwrap();
    let token = app
        .store
        .issue_boot_token(MAC.parse::<Mac>().unwrap(), Some("vm-0"))
        .await
        .unwrap();

    let start = Instant::now();
    let child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "768", "-smp", "2"])
        .args(["-machine", "q35", "-display", "none", "-monitor", "none"])
        .args(["-serial", "stdio", "-no-reboot", "-kernel"])
        .arg(out.join("vmlinuz"))
        .arg("-initrd")
        .arg(out.join("initramfs"))
        .arg("-append")
        .arg(format!(
            "console=ttyS0,115200 panic=-1 provisioner.url=http://10.0.2.2:{port} \
             provisioner.token={token} provisioner.mac={MAC}"
        ))
        .args(["-netdev", "user,id=n0"])
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={MAC}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 not found: run `cargo xtask deps`");
    let mut qemu = Qemu(child);
    let console_path = dir.path().join("console.log");
    let stdout = qemu.0.stdout.take().unwrap();
    let log = console_path.clone();
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(log).unwrap();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(file, "{line}");
        }
    });
    let console = || std::fs::read_to_string(&console_path).unwrap_or_default();

    // Inventory stored and the node available, then the VM powers itself off.
    let deadline = start + Duration::from_secs(240);
    let mut available_at = None;
    let powered_off = loop {
        if available_at.is_none()
            && app.store.node("vm-0").await.unwrap().state.as_str() == "available"
        {
            available_at = Some(start.elapsed());
        }
        if let Some(status) = qemu.0.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let console = console();
    let available_at = available_at
        .unwrap_or_else(|| panic!("the node never became available; console:\n{console}"));
    assert!(
        powered_off.is_some_and(|s| s.success()),
        "the agent did not power the VM off after the inventory ({powered_off:?}); console:\n{console}"
    );
    assert!(
        console.contains("node-agent: inventory accepted"),
        "{console}"
    );
    assert!(
        console.contains("node-agent: address 10.0.2.15/24"),
        "{console}"
    );

    let stored = app.store.inventory("vm-0").await.unwrap().unwrap();
    assert_eq!(stored.mac.as_deref(), Some(MAC));
    let inv = stored.inventory;
    assert_eq!(inv.system.vendor, "QEMU");
    assert_eq!(inv.cpus.threads, 2);
    let nic = inv
        .nics
        .iter()
        .find(|n| n.mac == MAC)
        .unwrap_or_else(|| panic!("the boot NIC is not in the inventory: {:?}", inv.nics));
    assert_eq!(nic.driver.as_deref(), Some("virtio_net"));
    let history = app.store.history("vm-0").await.unwrap();
    assert_eq!(history.last().unwrap().event, "inventory_received");
    for line in console.lines().filter(|l| l.contains("node-agent:")) {
        eprintln!("console: {line}");
    }
    eprintln!(
        "QEMU (TCG, -kernel): node available {:.1} s after QEMU start, powered off at {:.1} s",
        available_at.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
}
