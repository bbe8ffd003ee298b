//! The rack from power-on to `active`, through its virtual BMCs: lab-network-0
//! (Redfish) and lab-storage-0 (IPMI, ipmi_sim), both UEFI (OVMF) with their disk
//! first in the boot order, are enrolled from nodes.yaml; zero-touch inspection sets
//! a one-time network boot and powers each on, they PXE-boot the real inspection
//! ramdisk through our DHCP, TFTP and HTTP, and become `available`. Then `provisioner node deploy NAME
//! --image host`: the ramdisk agent writes the lab's host image (built with the
//! lab's config-signing key) to the plan's root disk with the sealed node config,
//! the provisioner sets the boot device to disk through the BMC and resets the node,
//! the host image boots, applies the plan (its kernel arguments on the running
//! kernel's command line) and reports with its node credential: `active`, with the
//! deployed version, slot and root hash in `node show`. Last, `node undeploy` of
//! lab-storage-0 erases it: `cleaning`, then `available`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use hardware_tests::lab::{Lab, RackSetup, assets};
use hardware_tests::rack;
use provisioner::lifecycle::State;
use serde_json::Value;

const PASSWORD: (&str, &str) = ("LAB_BMC_PASSWORD", "lab-rack-secret");
const NODES: [&str; 2] = ["lab-network-0", "lab-storage-0"];

fn cli_json(lab: &Lab, args: &[&str]) -> Result<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = lab.cli(&all)?;
    ensure!(
        out.status.success(),
        "provisioner {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn zero_touch_inspection_then_deploy_to_active_through_redfish_and_ipmi() -> Result<()> {
    let ramdisk = assets::inspection_ramdisk()?;
    let host = assets::host_image("1")?;
    // VMs and BMCs first (powered off), then the provisioner.
    let mut lab = Lab::start_rack(RackSetup {
        nodes: Some(&NODES),
        host_image: Some(&host),
        ..RackSetup::new(&ramdisk, PASSWORD)
    })?;
    let rack = rack::load(&rack::lab_rack_file())?;
    let since = Instant::now();
    for node in NODES {
        let mac = rack
            .vms
            .iter()
            .find(|v| v.name == node)
            .map(|v| v.boot_nic().mac.clone())
            .with_context(|| format!("{node} in rack.yaml"))?;
        let script = lab.wait_log(
            &["iPXE script served", &mac],
            since,
            Duration::from_secs(150),
        )?;
        let record = lab.wait_matched(node, Duration::from_secs(400))?;
        eprintln!(
            "figure: {node}: script {:.1} s, available {:.1} s after the provisioner started",
            script.as_secs_f64(),
            since.elapsed().as_secs_f64()
        );
        ensure!(
            record.plan.is_some(),
            "{node}: no plan: {:?}",
            record.plan_error
        );
    }

    let state = lab.dir().join("state");
    let runtime = tokio::runtime::Runtime::new()?;
    for node in NODES {
        let history = runtime.block_on(async {
            let store = provisioner::store::Store::open(&state).await?;
            let history = store.history(node).await?;
            store.close().await;
            anyhow::Ok(history)
        })?;
        ensure!(
            history
                .iter()
                .any(|h| h.reason.as_deref() == Some("zero-touch: enrolled with a BMC")),
            "{node}: no zero-touch inspect in the history: {history:?}"
        );
    }

    // Deploy both at once.
    let deploy_start = Instant::now();
    for node in NODES {
        let out = lab.cli(&["node", "deploy", node, "--image", "host"])?;
        ensure!(
            out.status.success(),
            "node deploy {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for node in NODES {
        lab.wait_state(node, State::Active, Duration::from_secs(900))?;
        eprintln!(
            "figure: {node}: active {:.1} s after `node deploy`",
            deploy_start.elapsed().as_secs_f64()
        );
    }
    let root_hash = &host.manifest.root.verity.root_hash;
    for node in NODES {
        let shown = cli_json(&lab, &["node", "show", node])?;
        let text = shown.to_string();
        ensure!(
            text.contains(root_hash.as_str()),
            "{node}: node show lacks the deployed root hash {root_hash}: {shown:#}"
        );
        let serial = std::fs::read_to_string(lab.rack_vm(node).context("vm")?.serial_log())?;
        ensure!(
            serial.contains("node-agent: host: version 1, slot a"),
            "{node}: the host line is not on the console"
        );
    }
    // The plan's kernel arguments reached the running kernel (lab-network: hugepages).
    let network = cli_json(&lab, &["node", "show", "lab-network-0"])?;
    let plan: model::plan::HostPlan = serde_json::from_value(network["plan"].clone())?;
    let text = network.to_string();
    for arg in &plan.kernel_args {
        ensure!(
            text.contains(arg.as_str()),
            "lab-network-0: the reported command line lacks the plan's {arg}: {network:#}"
        );
    }

    // Undeploy: the ramdisk erases the disk, the node is available again.
    let undeploy_start = Instant::now();
    let out = lab.cli(&["node", "undeploy", "lab-storage-0"])?;
    ensure!(
        out.status.success(),
        "node undeploy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.wait_state("lab-storage-0", State::Available, Duration::from_secs(600))?;
    eprintln!(
        "figure: lab-storage-0: undeployed (erased, available) in {:.1} s",
        undeploy_start.elapsed().as_secs_f64()
    );
    lab.pass();
    Ok(())
}
