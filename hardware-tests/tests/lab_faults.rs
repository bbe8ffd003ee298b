//! Faults in the lab rack, on two VMs booted once for all three checks (issue 6):
//!
//! - **A busy BMC**: lab-network-0's virtual BMC answers `500` to its first three
//!   requests (rack.yaml `fail_first`); the executor retries with back-off and the
//!   node is inspected anyway.
//! - **A crash**: `provisioner serve` is killed with SIGKILL while lab-network-0
//!   is inspecting (its iPXE script was served) and started again on the same
//!   state; the node still ends `available` with its profile and plan.
//! - **A dead link**: lab-storage-0's boot NIC has its link down (QMP `set_link`)
//!   from before power-on. The node fails when the inspection timeout passes,
//!   with a reason that names its MAC and says no DHCP request was seen; once the
//!   link is up, `provisioner node inspect` brings it to `available`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use hardware_tests::lab::{self, Lab, RackSetup, assets};
use hardware_tests::rack;
use provisioner::lifecycle::State;
use provisioner::progress::Step;
use provisioner::store::{NodeRecord, Store};

const PASSWORD: (&str, &str) = ("LAB_BMC_PASSWORD", "lab-faults-secret");
const BUSY: &str = "lab-network-0";
const UNPLUGGED: &str = "lab-storage-0";
/// Injected BMC failures.
const BMC_FAILURES: u32 = 3;
/// The site's inspection timeout in this test: long enough for a BIOS VM under
/// TCG on a loaded 2-core host plus the BMC's retries and a daemon restart
/// (about 30 s seen), short enough not to stretch CI.
const INSPECT_TIMEOUT_S: u64 = 75;

struct Watch {
    runtime: tokio::runtime::Runtime,
    state: PathBuf,
}

impl Watch {
    /// The node's record and boot progress, from a store opened for this read (the
    /// daemon may be down or restarting).
    fn node(&self, name: &str) -> Result<(NodeRecord, Vec<Step>)> {
        self.runtime.block_on(async {
            let store = Store::open(&self.state).await?;
            let record = store.node(name).await?;
            let steps = store.progress(name).await?;
            store.close().await;
            anyhow::Ok((record, steps.into_iter().map(|(s, _)| s).collect()))
        })
    }

    /// Waits until `done` holds for the node; fails at `timeout` or when `bad` holds.
    fn until(
        &self,
        lab: &Lab,
        name: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&NodeRecord, &[Step]) -> bool,
    ) -> Result<NodeRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let (node, steps) = self.node(name)?;
            if done(&node, &steps) {
                return Ok(node);
            }
            if Instant::now() > deadline {
                bail!(
                    "{name}: not {what} after {timeout:?}: {} ({:?}), progress {steps:?}; logs in {}",
                    node.state,
                    node.last_error,
                    lab.dir().display()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

#[test]
fn a_busy_bmc_a_daemon_crash_and_a_dead_link() -> Result<()> {
    let ramdisk = assets::inspection_ramdisk()?;
    let work = tempfile::tempdir()?;
    let rack_file = lab::edited_copy(
        &rack::lab_rack_file(),
        work.path(),
        &[(
            "bmc: {kind: redfish, port: 8102}",
            &format!("bmc: {{kind: redfish, port: 8102, fail_first: {BMC_FAILURES}}}"),
        )],
    )?;
    let site_file = lab::edited_copy(
        &hardware_tests::lab_site_dir().join("site.yaml"),
        work.path(),
        &[(
            "inspect_timeout: 300",
            &format!("inspect_timeout: {INSPECT_TIMEOUT_S}"),
        )],
    )?;
    let mut lab = Lab::start_rack(RackSetup {
        nodes: Some(&[BUSY, UNPLUGGED]),
        rack_file: Some(rack_file.clone()),
        site_files: vec![(PathBuf::from("site.yaml"), site_file)],
        serve: false,
        ..RackSetup::new(&ramdisk, PASSWORD)
    })?;
    // The cable is out before anyone powers the VM on.
    lab.rack_vm(UNPLUGGED)
        .context("started")?
        .set_link(0, false)?;
    lab.serve(None)?;
    let served = Instant::now();
    let rack = rack::load(&rack_file)?;
    let unplugged_mac = rack
        .vms
        .iter()
        .find(|v| v.name == UNPLUGGED)
        .context("in rack.yaml")?
        .boot_nic()
        .mac
        .clone();
    let watch = Watch {
        runtime: tokio::runtime::Runtime::new()?,
        state: lab.dir().join("state"),
    };

    // The busy BMC: three 500s, then the VM is powered on and fetches its script.
    watch.until(
        &lab,
        BUSY,
        Duration::from_secs(60),
        "booted to its iPXE script",
        |_, steps| steps.contains(&Step::Script),
    )?;
    let bmc_log = std::fs::read_to_string(lab.dir().join(BUSY).join("bmc.log"))?;
    let injected = bmc_log.matches("lab-vbmc: injected fault").count();
    ensure!(
        injected == BMC_FAILURES as usize,
        "{BUSY}'s BMC answered {injected} injected 500s, want {BMC_FAILURES}:\n{bmc_log}"
    );
    let log = std::fs::read_to_string(lab.provisioner_log())?;
    // The Redfish client retries a 5xx itself, with back-off (three times before
    // the executor's own retry of the whole call).
    let retries = log
        .lines()
        .filter(|l| l.contains("BMC request failed; retrying") && l.contains(":8102"))
        .count();
    ensure!(
        retries == BMC_FAILURES as usize,
        "the provisioner log shows {retries} retried requests to {BUSY}'s BMC, want {BMC_FAILURES}"
    );
    eprintln!(
        "{BUSY}: its BMC failed {injected} requests, each retried; script served {:.1} s after the provisioner started",
        served.elapsed().as_secs_f64()
    );

    // The crash: SIGKILL while the node is inspecting, then the same daemon again.
    let (node, _) = watch.node(BUSY)?;
    ensure!(node.state == State::Inspecting, "{BUSY} is {}", node.state);
    let pid = lab
        .kill_provisioner()
        .context("the provisioner was running")?;
    eprintln!("killed provisioner serve (PID {pid}) with SIGKILL while {BUSY} was inspecting");
    std::thread::sleep(Duration::from_secs(1));
    lab.serve(None)?;
    let node = lab.wait_matched(BUSY, Duration::from_secs(INSPECT_TIMEOUT_S))?;
    ensure!(
        node.matched_profile.as_deref() == Some("lab-network") && node.plan.is_some(),
        "{BUSY}: profile {:?}, plan error {:?}",
        node.matched_profile,
        node.plan_error
    );
    eprintln!(
        "{BUSY}: available with profile lab-network {:.1} s after the provisioner first started",
        served.elapsed().as_secs_f64()
    );

    // The dead link: the timeout fails the node and says what to check.
    let node = watch.until(
        &lab,
        UNPLUGGED,
        Duration::from_secs(INSPECT_TIMEOUT_S + 30),
        "failed",
        |n, _| n.state == State::Failed,
    )?;
    let reason = node.last_error.clone().unwrap_or_default();
    ensure!(
        reason.contains("inspection timed out")
            && reason.contains("no DHCP request was seen")
            && reason.contains(&unplugged_mac),
        "{UNPLUGGED} failed with: {reason:?}"
    );
    eprintln!("{UNPLUGGED}: failed: {reason}");

    // Cable back in; the operator inspects again.
    lab.rack_vm(UNPLUGGED)
        .context("started")?
        .set_link(0, true)?;
    let out = lab.cli(&["node", "inspect", UNPLUGGED])?;
    ensure!(
        out.status.success(),
        "provisioner node inspect {UNPLUGGED}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let again = Instant::now();
    let node = lab.wait_matched(UNPLUGGED, Duration::from_secs(INSPECT_TIMEOUT_S))?;
    ensure!(
        node.matched_profile.as_deref() == Some("lab-storage") && node.plan.is_some(),
        "{UNPLUGGED}: profile {:?}, plan error {:?}",
        node.matched_profile,
        node.plan_error
    );
    eprintln!(
        "{UNPLUGGED}: available {:.1} s after `node inspect`",
        again.elapsed().as_secs_f64()
    );
    lab.pass();
    Ok(())
}
