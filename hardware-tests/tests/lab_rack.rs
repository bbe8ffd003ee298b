//! The lifecycle executor boots rack VMs through their virtual BMCs: lab-network-0
//! (Redfish) and lab-storage-0 (IPMI, ipmi_sim), both SeaBIOS with their disk first
//! in the boot order, are enrolled from nodes.yaml; zero-touch inspection sets a
//! one-time network boot and powers each on, and they PXE-boot through our DHCP,
//! TFTP and HTTP into the lab's test ramdisk. Each node's recorded boot progress
//! shows the steps.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use hardware_tests::lab::{Lab, RackSetup, assets};
use hardware_tests::rack;
use provisioner::progress::Step;

const PASSWORD: (&str, &str) = ("LAB_BMC_PASSWORD", "lab-rack-secret");
const NODES: [&str; 2] = ["lab-network-0", "lab-storage-0"];

#[test]
fn zero_touch_boots_rack_vms_through_redfish_and_ipmi_bmcs() -> Result<()> {
    let ramdisk =
        assets::test_ramdisk(&assets::cache_dir()?).context("building the test ramdisk")?;
    // VMs and BMCs first (powered off), then the provisioner.
    let mut lab = Lab::start_rack(RackSetup {
        nodes: Some(&NODES),
        ..RackSetup::new(&ramdisk, PASSWORD)
    })?;
    let rack = rack::load(&rack::lab_rack_file())?;
    let macs: Vec<String> = NODES
        .iter()
        .map(|node| {
            rack.vms
                .iter()
                .find(|v| v.name == *node)
                .map(|v| v.boot_nic().mac.clone())
                .with_context(|| format!("{node} in rack.yaml"))
        })
        .collect::<Result<_>>()?;
    let since = Instant::now();
    for (node, mac) in NODES.iter().zip(&macs) {
        let script = lab.wait_log(
            &["iPXE script served", mac],
            since,
            Duration::from_secs(150),
        )?;
        let vm = lab.rack_vm(node).context("started")?;
        let marker = vm.wait_serial(assets::MARKER, Duration::from_secs(150))?;
        eprintln!(
            "{node}: script {:.1} s after the provisioner started, marker {:.1} s after QEMU",
            script.as_secs_f64(),
            marker.as_secs_f64()
        );
        let serial = std::fs::read_to_string(vm.serial_log())?;
        ensure!(
            serial.contains(&format!("provisioner.mac={mac}")),
            "{node}: the ramdisk's kernel line lacks the MAC"
        );
    }

    let state = lab.dir().join("state");
    let runtime = tokio::runtime::Runtime::new()?;
    for node in NODES {
        let (record, steps, history) = runtime.block_on(async {
            let store = provisioner::store::Store::open(&state).await?;
            let record = store.node(node).await?;
            let steps = store.progress(node).await?;
            let history = store.history(node).await?;
            store.close().await;
            anyhow::Ok((record, steps, history))
        })?;
        ensure!(
            record.state == provisioner::lifecycle::State::Inspecting,
            "{node} is {} ({:?})",
            record.state,
            record.last_error
        );
        let seen: Vec<Step> = steps.iter().map(|(step, _)| *step).collect();
        ensure!(
            seen.contains(&Step::PoweredOn)
                && seen.contains(&Step::Dhcp)
                && seen.contains(&Step::Script),
            "boot progress of {node}: {seen:?}"
        );
        ensure!(
            history
                .iter()
                .any(|h| h.reason.as_deref() == Some("zero-touch: enrolled with a BMC")),
            "{node}: no zero-touch inspect in the history: {history:?}"
        );
    }
    lab.pass();
    Ok(())
}
