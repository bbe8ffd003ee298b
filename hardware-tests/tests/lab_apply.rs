//! Applying a host plan for real: lab-compute-0 (an igb NIC on NUMA node 1, 7 VFs
//! possible, QEMU's intel-iommu) is inspected with a site whose
//! `lifecycle.after_inspection` is `wait` (and `heartbeat_interval` 2 s), so its
//! agent stays up in the inspection ramdisk. `provisioner node apply --wait` (the operator's CLI, run in the lab's
//! namespace) makes the agent fetch the lab-compute plan and apply it: the report
//! shows the igb's `sriov_numvfs` going 0 -> 7 and each VF bound to vfio-pci; the
//! agent then inspects again and the stored inventory shows the 7 VFs; a second
//! apply changes nothing; `node show` prints the last report. The site's DHCP
//! lease is 60 s here, so the long-lived agent must also renew its lease at T1
//! (the console says so, and its address is the same).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use hardware_tests::lab::{self, Lab, RackSetup, assets};
use model::apply::{ApplyReport, Status};
use model::inventory::Inventory;

const PASSWORD: (&str, &str) = ("LAB_BMC_PASSWORD", "lab-apply-secret");
const NODE: &str = "lab-compute-0";
/// The DHCP lease in this test: the site's shortest, so the agent renews it
/// (at T1, 30 s after it was bound) while the test runs.
const LEASE_S: u32 = 60;

/// The lab site.yaml with the agent kept up after inspection, heartbeating
/// every 2 s (so an apply request reaches it within 2 s, not 10), and the
/// shortest DHCP lease.
fn site_yaml_keeping_the_agent(dir: &Path) -> Result<std::path::PathBuf> {
    Ok(lab::edited_copy(
        &hardware_tests::lab_site_dir().join("site.yaml"),
        dir,
        &[
            ("after_inspection: poweroff", "after_inspection: wait"),
            ("heartbeat_interval: 10", "heartbeat_interval: 2"),
            ("lease_time: 3600", &format!("lease_time: {LEASE_S}")),
        ],
    )?)
}

/// `node apply NODE --wait -o json`: the stored report and the CLI's exit status.
fn apply(lab: &Lab) -> Result<(ApplyReport, bool, String)> {
    let started = Instant::now();
    let out = lab.cli(&["node", "apply", NODE, "--wait", "-o", "json"])?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let status: serde_json::Value = serde_json::from_str(&stdout)
        .with_context(|| format!("`node apply` printed no JSON: {stdout}{stderr}"))?;
    let last = &status["last"];
    ensure!(
        last["error"].is_null(),
        "the agent could not apply: {}",
        last["error"]
    );
    let report: ApplyReport = serde_json::from_value(last["report"].clone())?;
    eprintln!(
        "{NODE}: apply reported {:.1} s after the request:\n{report}",
        started.elapsed().as_secs_f64()
    );
    Ok((report, out.status.success(), stderr))
}

#[test]
fn node_apply_creates_the_igb_vfs_through_the_running_agent() -> Result<()> {
    let ramdisk = assets::inspection_ramdisk()?;
    let scratch = tempfile::tempdir()?;
    let site_yaml = site_yaml_keeping_the_agent(scratch.path())?;
    let mut lab = Lab::start_rack(RackSetup {
        nodes: Some(&[NODE]),
        site_files: vec![("site.yaml".into(), site_yaml)],
        ..RackSetup::new(&ramdisk, PASSWORD)
    })?;
    let started = lab.rack_vm(NODE).context("started")?.started;

    let node = lab.wait_matched(NODE, Duration::from_secs(300))?;
    let plan = node.plan.context("no host plan")?;
    let sriov = plan.sriov.first().context("no SR-IOV in the plan")?;
    ensure!(sriov.num_vfs == 7, "{sriov:?}");
    let applying = Instant::now();
    eprintln!(
        "{NODE}: available {:.1} s after QEMU started",
        started.elapsed().as_secs_f64()
    );

    // First apply: the PF gets its 7 VFs, each bound to vfio-pci.
    let (first, ok, stderr) = apply(&lab)?;
    let numvfs = first
        .items
        .iter()
        .find(|i| i.what.ends_with("sriov_numvfs") && i.what.contains(&sriov.pci_address))
        .with_context(|| format!("no sriov_numvfs item for {}:\n{first}", sriov.pci_address))?;
    ensure!(
        numvfs.status == Status::Changed
            && numvfs.before.as_deref() == Some("0")
            && numvfs.wanted.as_deref() == Some("7"),
        "{numvfs:?}"
    );
    let vf_items: Vec<_> = first
        .items
        .iter()
        .filter(|i| i.what.starts_with(&format!("sriov {} vf", sriov.pf_name)))
        .collect();
    ensure!(
        vf_items.len() == 7,
        "7 VFs expected in the report:\n{first}"
    );
    for item in &vf_items {
        ensure!(
            item.status == Status::Changed
                && item.wanted.as_deref() == Some("vfio-pci (override vfio-pci)"),
            "VF not bound to vfio-pci: {item:?}"
        );
    }
    ensure!(
        !first.failed() && ok,
        "items failed (CLI: {stderr}):\n{first}"
    );

    // The apply changed the machine: the agent inspects again at once, and the
    // stored inventory (read from sysfs by the inspection, not the apply) shows
    // the PF with 7 VFs and 7 VF devices (8086:10ca) on NUMA node 1.
    let deadline = Instant::now() + Duration::from_secs(60);
    let inventory = loop {
        let out = lab.cli(&["node", "show", NODE, "--inventory", "-o", "json"])?;
        let stored: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{}", String::from_utf8_lossy(&out.stderr)))?;
        let inventory: Inventory = serde_json::from_value(stored["inventory"].clone())?;
        let pf_vfs = inventory
            .nics
            .iter()
            .find(|n| n.pci_address.as_deref() == Some(sriov.pci_address.as_str()))
            .map(|n| n.sriov_numvfs);
        if pf_vfs == Some(7) {
            break inventory;
        }
        ensure!(
            Instant::now() < deadline,
            "the stored inventory still shows {pf_vfs:?} VFs on {} 60 s after the apply",
            sriov.pci_address
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let vfs: Vec<_> = inventory
        .pci_devices
        .iter()
        .filter(|d| d.vendor_id == "8086" && d.device_id == "10ca")
        .collect();
    ensure!(
        vfs.len() == 7 && vfs.iter().all(|d| d.numa_node == Some(1)),
        "7 VFs on node 1 expected: {vfs:?}"
    );

    // Second apply: nothing to write.
    let (second, ok, stderr) = apply(&lab)?;
    ensure!(ok && !second.failed(), "CLI: {stderr}\n{second}");
    ensure!(
        second.writes.is_empty() && second.count(Status::Changed) == 0,
        "the second apply changed something:\n{second}"
    );
    ensure!(
        second
            .items
            .iter()
            .filter(|i| i.what.starts_with(&format!("sriov {} vf", sriov.pf_name)))
            .all(|i| i.status == Status::Unchanged),
        "{second}"
    );

    // The operator's view.
    let out = lab.cli(&["node", "show", NODE])?;
    let shown = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !shown.contains("last apply") {
        bail!(
            "`node show` lacks the apply report: {shown}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "{NODE}: two applies in {:.1} s",
        applying.elapsed().as_secs_f64()
    );

    // The agent outlived half its lease: it renewed it, same address, from its
    // server (a REQUEST from the address, RFC 2131 RENEWING).
    let vm = lab.rack_vm(NODE).context("started")?;
    let renewed = vm.wait_serial("DHCP: lease of ", Duration::from_secs(u64::from(LEASE_S)))?;
    let console = std::fs::read_to_string(vm.serial_log())?;
    let bound = console
        .lines()
        .find_map(|l| l.strip_prefix("node-agent: address "))
        .and_then(|rest| rest.split('/').next())
        .context("the console lacks the agent's address line")?
        .to_owned();
    let line = console
        .lines()
        .find(|l| l.contains("DHCP: lease of "))
        .context("renewal line")?;
    ensure!(
        line.contains(&format!(
            "DHCP: lease of {bound} extended for {LEASE_S} s by 10.213.0.1"
        )),
        "the agent did not renew its lease of {bound}: {line}"
    );
    eprintln!(
        "{NODE}: lease renewed {:.1} s after QEMU started: {line}",
        renewed.as_secs_f64()
    );
    lab.pass();
    Ok(())
}
