//! The lifecycle executor boots a rack VM through its virtual BMC: lab-network-0
//! (SeaBIOS, its disk first in the boot order, a Redfish BMC on the lab bridge) is
//! enrolled from nodes.yaml, zero-touch inspection sets a one-time network boot and
//! powers it on, and the VM PXE-boots through our DHCP, TFTP and HTTP into the lab's
//! test ramdisk. The node's recorded boot progress shows each step.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use hardware_tests::lab::{Lab, LabOptions, assets};
use hardware_tests::rack;
use provisioner::executor::jobs::Step;

const PASSWORD: (&str, &str) = ("LAB_BMC_PASSWORD", "lab-rack-secret");
const NODE: &str = "lab-network-0";

#[test]
fn zero_touch_boots_a_rack_vm_through_its_bmc() -> Result<()> {
    let ramdisk =
        assets::test_ramdisk(&assets::cache_dir()?).context("building the test ramdisk")?;
    let mut lab = Lab::start(
        LabOptions {
            serve: false,
            env: vec![(PASSWORD.0.into(), PASSWORD.1.into())],
            ..LabOptions::default()
        }
        .with_inspect_ramdisk(&ramdisk),
    )?;
    let rack_file = rack::lab_rack_file();
    let rack = rack::load(&rack_file)?;
    let spec = rack
        .vms
        .iter()
        .find(|v| v.name == NODE)
        .context("lab-network-0 in rack.yaml")?;
    let mac = spec.boot_nic().mac.clone();
    // VM and BMC first (powered off), then the provisioner: nobody touches the VM
    // but the executor.
    lab.start_rack_vm(&rack_file, spec, PASSWORD)?;
    lab.serve(None)?;
    let since = Instant::now();
    let script = lab.wait_log(
        &["iPXE script served", &mac],
        since,
        Duration::from_secs(120),
    )?;
    let vm = lab.rack_vm(NODE).context("started")?;
    let marker = vm.wait_serial(assets::MARKER, Duration::from_secs(150))?;
    eprintln!(
        "{NODE}: script {:.1} s after the provisioner started, marker {:.1} s after QEMU",
        script.as_secs_f64(),
        marker.as_secs_f64()
    );
    let serial = std::fs::read_to_string(vm.serial_log())?;
    ensure!(
        serial.contains(&format!("provisioner.mac={mac}")),
        "the ramdisk's kernel line lacks the MAC"
    );

    let state = lab.dir().join("state");
    let runtime = tokio::runtime::Runtime::new()?;
    let (node, steps, history) = runtime.block_on(async {
        let store = provisioner::store::Store::open(&state).await?;
        let node = store.node(NODE).await?;
        let steps = store.progress(NODE).await?;
        let history = store.history(NODE).await?;
        store.close().await;
        anyhow::Ok((node, steps, history))
    })?;
    ensure!(
        node.state == provisioner::lifecycle::State::Inspecting,
        "{NODE} is {} ({:?})",
        node.state,
        node.last_error
    );
    let seen: Vec<Step> = steps.iter().map(|(step, _)| *step).collect();
    ensure!(
        seen.contains(&Step::PoweredOn) && seen.contains(&Step::Script),
        "boot progress of {NODE}: {seen:?}"
    );
    ensure!(
        history
            .iter()
            .any(|h| h.reason.as_deref() == Some("zero-touch: enrolled with a BMC")),
        "no zero-touch inspect in the history: {history:?}"
    );
    lab.pass();
    Ok(())
}
