//! The lifecycle executor end to end: the real daemon carries out the BMC actions of
//! `inspect` (one-time network boot, power on) against an in-process fake Redfish
//! service, retries the BMC's 5xx answers, holds nodes back beyond
//! `lifecycle.max_concurrent_boots`, fails a node whose BMC refuses the credentials,
//! and resumes a queued job after `kill -9`.

use std::time::Duration;

use crate::common::{self, Daemon, stderr, stdout};
use provisioner::bmc::fake_redfish::{FakeRedfish, FakeRedfishOptions, Fault};

const ENV: &[(&str, &str)] = &[
    ("TEST_BMC_PASSWORD", "password"),
    ("TEST_BMC_WRONG_PASSWORD", "not-the-password"),
];

fn write_site(dir: &std::path::Path, bmc: &str) {
    write_site_with(dir, bmc, "  auto_inspect: false\n");
}

/// The test site, with `lifecycle_extra` appended to its `lifecycle:` section.
fn write_site_with(dir: &std::path::Path, bmc: &str, lifecycle_extra: &str) {
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::write(
        dir.join("site.yaml"),
        format!("network:\n  interface: lo\n  address: 127.0.0.1/8\n  dhcp:\n    mode: off\napi:\n  listen: 127.0.0.1:0\nimages: []\n\
         lifecycle:\n  inspect_timeout: 600\n  max_concurrent_boots: 1\n  bmc_attempts: 4\n{lifecycle_extra}"),
    )
    .unwrap();
    let mut nodes = String::from("nodes:\n");
    for (i, env) in [
        (1, "TEST_BMC_PASSWORD"),
        (2, "TEST_BMC_PASSWORD"),
        (3, "TEST_BMC_WRONG_PASSWORD"),
    ] {
        nodes.push_str(&format!(
            "  - name: node-00{i}\n    bmc:\n      url: {bmc}/redfish/v1/Systems/{i}\n      username: admin\n      password_env: {env}\n    boot_mac: \"52:54:00:00:00:0{i}\"\n"
        ));
    }
    std::fs::write(dir.join("nodes.yaml"), nodes).unwrap();
}

fn node(daemon: &Daemon, name: &str) -> serde_json::Value {
    let out = daemon.cli(&["node", "show", name, "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn event(daemon: &Daemon, name: &str, event: &str) {
    let out = daemon.cli(&["node", "event", name, event]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn fake_runtime() -> (tokio::runtime::Runtime, FakeRedfish) {
    common::fake_redfish(FakeRedfishOptions {
        systems: 3,
        credentials: Some(("admin".into(), "password".into())),
        ..FakeRedfishOptions::default()
    })
}

#[test]
fn inspect_boots_nodes_through_their_bmc_within_the_boot_limit() {
    let (_runtime, fake) = fake_runtime();
    let dir = tempfile::tempdir().unwrap();
    let (site, state) = (dir.path().join("site"), dir.path().join("state"));
    write_site(&site, &fake.url());
    let daemon = Daemon::start_with(&site, &state, &[], ENV);

    // The BMC's first answers are 500s: the driver's own retries are used up, the
    // executor backs off and tries again, and the node is booted all the same.
    fake.set_fault(Fault::ServerErrors(6));
    event(&daemon, "node-001", "inspect");
    daemon.wait_for("node-001 powered on", 30, || fake.power(1) == "On");
    let (target, enabled, _mode) = fake.boot(1);
    assert_eq!((target.as_str(), enabled.as_str()), ("Pxe", "Once"));
    assert!(
        daemon.log_text().contains("BMC call failed; will retry"),
        "the executor did not retry: {}",
        daemon.log_text()
    );
    assert_eq!(node(&daemon, "node-001")["state"], "inspecting");

    // One boot at a time: node-002 waits while node-001 is inspecting...
    event(&daemon, "node-002", "inspect");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(fake.power(2), "Off", "the boot limit of 1 was not kept");
    assert_eq!(node(&daemon, "node-002")["state"], "inspecting");
    // The operator sees why: node-002's BMC actions wait their turn, node-001
    // was powered on.
    let shown = daemon.cli(&["node", "show", "node-002"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(
        stdout(&shown)
            .contains("bmc actions  boot network (once), power on/reset: queued, not tried yet"),
        "{}",
        stdout(&shown)
    );
    let shown = stdout(&daemon.cli(&["node", "show", "node-001"]));
    assert!(
        shown.contains("boot progress  powered_on ") && !shown.contains("bmc actions"),
        "{shown}"
    );
    // ... and boots once node-001 leaves its wait state.
    event(&daemon, "node-001", "abort");
    daemon.wait_for("node-002 powered on", 30, || fake.power(2) == "On");
    assert_eq!(fake.boot(2).0, "Pxe");

    // Wrong credentials: no amount of retrying helps; the node fails at once and says why.
    event(&daemon, "node-002", "abort");
    let out = daemon.cli(&["node", "inspect", "node-003", "--reason", "racked"]);
    assert!(out.status.success(), "{}", stderr(&out));
    daemon.wait_for("node-003 failed", 30, || {
        node(&daemon, "node-003")["state"] == "failed"
    });
    let failed = node(&daemon, "node-003");
    let why = failed["last_error"].as_str().unwrap();
    assert!(why.contains("authentication failed"), "{why}");
    assert!(why.contains("power on/reset"), "{why}");
    assert_eq!(fake.power(3), "Off");
}

#[test]
fn a_queued_job_survives_kill_9() {
    let (_runtime, fake) = fake_runtime();
    let dir = tempfile::tempdir().unwrap();
    let (site, state) = (dir.path().join("site"), dir.path().join("state"));
    write_site(&site, &fake.url());
    let mut daemon = Daemon::start_with(&site, &state, &[], ENV);
    // The BMC hangs: the job is queued and in flight when the daemon dies.
    fake.set_fault(Fault::Hang);
    event(&daemon, "node-001", "inspect");
    std::thread::sleep(Duration::from_millis(500));
    daemon.kill9();
    assert_eq!(fake.power(1), "Off");

    fake.set_fault(Fault::None);
    let daemon = Daemon::start_with(&site, &state, &[], ENV);
    daemon.wait_for("node-001 powered on after the restart", 30, || {
        fake.power(1) == "On"
    });
    assert_eq!(fake.boot(1).0, "Pxe");
    assert_eq!(node(&daemon, "node-001")["state"], "inspecting");
}

#[test]
fn zero_touch_inspects_enrolled_nodes_one_boot_at_a_time() {
    let (_runtime, fake) = fake_runtime();
    let dir = tempfile::tempdir().unwrap();
    let (site, state) = (dir.path().join("site"), dir.path().join("state"));
    // Default `auto_inspect`: nobody sends an event.
    write_site_with(&site, &fake.url(), "");
    let daemon = Daemon::start_with(&site, &state, &[], ENV);
    daemon.wait_for("a first node powered on", 30, || {
        (1..=3).any(|i| fake.power(i) == "On")
    });
    for name in ["node-001", "node-002", "node-003"] {
        let node = node(&daemon, name);
        assert_eq!(node["state"], "inspecting", "{name}: {node}");
    }
    // The boot limit is 1: the others wait, powered off.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!((1..=3).filter(|i| fake.power(*i) == "On").count(), 1);
    let history = daemon.cli(&["node", "history", "node-002", "-o", "json"]);
    assert!(
        stdout(&history).contains("zero-touch"),
        "{}",
        stdout(&history)
    );
}
