//! `provisioner node power` and the periodic power sync, end to end: the real daemon
//! (credentials from nodes.yaml references), the real CLI, and three systems on an
//! in-process fake Redfish service.

use crate::common::{self, Daemon, stderr, stdout};
use provisioner::bmc::fake_redfish::FakeRedfishOptions;

fn write_site(dir: &std::path::Path, bmc: &str) {
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::write(
        dir.join("site.yaml"),
        "network:\n  interface: lo\n  address: 127.0.0.1/8\n  dhcp:\n    mode: off\napi:\n  listen: 127.0.0.1:0\nimages: []\n",
    )
    .unwrap();
    let mut nodes = String::from("nodes:\n");
    for (name, path, env) in [
        ("node-001", "/redfish/v1/Systems/1", "TEST_BMC_PASSWORD"),
        ("node-002", "/redfish/v1/Systems/2", "TEST_BMC_PASSWORD"),
        (
            "node-003",
            "/redfish/v1/Systems/3",
            "TEST_BMC_WRONG_PASSWORD",
        ),
    ] {
        nodes.push_str(&format!(
            "  - name: {name}\n    bmc:\n      url: {bmc}{path}\n      username: admin\n      password_env: {env}\n"
        ));
    }
    std::fs::write(dir.join("nodes.yaml"), nodes).unwrap();
}

/// The `power` entries of a node's history (their reasons).
fn power_history(daemon: &Daemon, node: &str) -> Vec<String> {
    let out = daemon.cli(&["node", "history", node, "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let history: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "power")
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn node_power_and_the_power_sync() {
    // The fake serves from its own runtime thread; the test drives the daemon and CLI.
    let (_runtime, fake) = common::fake_redfish(FakeRedfishOptions {
        systems: 3,
        ..FakeRedfishOptions::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (site, state) = (dir.path().join("site"), dir.path().join("state"));
    write_site(&site, &fake.url());
    let daemon = Daemon::start_with(
        &site,
        &state,
        &["--power-sync-interval", "1", "--api-only"],
        &[
            ("TEST_BMC_PASSWORD", "password"),
            ("TEST_BMC_WRONG_PASSWORD", "not-the-password"),
        ],
    );

    // Status and a change through the CLI, the daemon and the BMC.
    let out = daemon.cli(&["node", "power", "node-001", "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "off");
    let out = daemon.cli(&["node", "power", "node-001", "on", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["power_state"], "on");
    assert_eq!(report["action"], "on");
    assert_eq!(fake.power(1), "On");
    assert_eq!(fake.power(2), "Off");

    // The sync records node-002's first reading, then a change made behind our back.
    daemon.wait_for("node-002's first power reading", 20, || {
        !power_history(&daemon, "node-002").is_empty()
    });
    fake.set_power(2, true);
    daemon.wait_for("node-002's power change", 20, || {
        power_history(&daemon, "node-002")
            .last()
            .is_some_and(|r| r.contains("off -> on"))
    });
    assert_eq!(
        power_history(&daemon, "node-002"),
        [
            "power off (first reading from the BMC)",
            "power off -> on (read from the BMC)"
        ]
    );
    // node-001: first reading off (status), then on; no duplicates from the sync.
    assert_eq!(
        power_history(&daemon, "node-001"),
        [
            "power off (first reading from the BMC)",
            "power off -> on (read from the BMC)"
        ]
    );

    // A wrong password: a clear error, and the password appears nowhere.
    let out = daemon.cli(&["node", "power", "node-003", "status"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("authentication failed"), "{err}");
    assert!(err.contains("HTTP 502"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    assert!(
        !daemon.log_text().contains("not-the-password"),
        "the daemon logged a password"
    );
    assert!(
        daemon.log_text().contains("power sync: BMC not read"),
        "the sync reports the failing BMC"
    );
    // The sessions the daemon opened were all closed.
    assert_eq!(fake.open_sessions(), 0);
}
