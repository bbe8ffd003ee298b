//! The real daemon on port 0: auth, node listing, maintenance, manual events,
//! history, metrics, OpenAPI, CLI messages, site reload (good and refused),
//! graceful shutdown.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use crate::common::{self, Daemon, http, stderr, stdout, write_nodes, write_site};
use serde_json::json;

#[test]
fn api_requires_the_token_and_drives_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let (site, state) = (dir.path().join("site"), dir.path().join("state"));
    write_site(&site, 3);
    let mut daemon = Daemon::start(&site, &state);
    let nodes_url = format!("{}/api/v1/nodes", daemon.base);

    // The token file is private.
    let mode = std::fs::metadata(state.join("api-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // No token, wrong token: 401 with a Bearer challenge.
    let (status, body, headers) = http("GET", &nodes_url, None, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, _, _) = http(
        "GET",
        &nodes_url,
        Some("0123456789abcdef0123456789abcdef"),
        None,
    );
    assert_eq!(status, 401);
    let (status, _, _) = http(
        "POST",
        &format!("{}/api/v1/site/reload", daemon.base),
        Some("nope"),
        None,
    );
    assert_eq!(status, 401);

    // With the token: the three site nodes, enrolled.
    let token = Some(daemon.token.as_str());
    let (status, nodes, _) = http("GET", &nodes_url, token, None);
    assert_eq!(status, 200);
    let names: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node-001", "node-002", "node-003"]);
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "enrolled" && n["maintenance"] == false)
    );
    assert_eq!(nodes[0]["bmc_credential"], "env:TEST_BMC_PASSWORD");

    // The CLI lists the same nodes as JSON.
    let out = daemon.cli(&["node", "list", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    for node in listed.as_array().unwrap() {
        assert!(
            node["name"].is_string()
                && node["state"].is_string()
                && node["maintenance"].is_boolean()
        );
    }
    // ... and that JSON reads back into the API's view of a node.
    let typed: Vec<provisioner::views::Node> =
        serde_json::from_str(&stdout(&out)).expect("`node list -o json` is a list of views::Node");
    let typed_names: Vec<&str> = typed.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(typed_names, ["node-001", "node-002", "node-003"]);

    // Maintenance freezes: an event is refused until it is off.
    let out = daemon.cli(&[
        "node",
        "maintenance",
        "node-001",
        "on",
        "--reason",
        "swap DIMM",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let node: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(node["maintenance"], true);
    assert_eq!(node["maintenance_reason"], "swap DIMM");
    let out = daemon.cli(&["node", "event", "node-001", "inspect"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("maintenance"), "{}", stderr(&out));
    assert!(
        daemon
            .cli(&["node", "maintenance", "node-001", "off"])
            .status
            .success()
    );

    // inspect -> inspecting with a deadline; deploy is refused there.
    let out = daemon.cli(&["node", "event", "node-001", "inspect", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let node: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(node["state"], "inspecting");
    assert!(node["deadline"].is_string());
    let (status, body, _) = http(
        "POST",
        &format!("{nodes_url}/node-001/events"),
        token,
        Some(json!({"event": "deploy"})),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not allowed in state `inspecting`")
    );
    // Agent and timer events are not the operator's to send.
    let (status, _, _) = http(
        "POST",
        &format!("{nodes_url}/node-001/events"),
        token,
        Some(json!({"event": "inventory_received"})),
    );
    assert_eq!(status, 400);
    let (status, _, _) = http(
        "POST",
        &format!("{nodes_url}/node-001/events"),
        token,
        Some(json!({"event": "fly"})),
    );
    assert_eq!(status, 400);

    // A node waiting on hardware cannot be deleted; abort fails it with a reason.
    let (status, _, _) = http("DELETE", &format!("{nodes_url}/node-001"), token, None);
    assert_eq!(status, 400);
    let out = daemon.cli(&[
        "node",
        "event",
        "node-001",
        "abort",
        "--reason",
        "wrong rack",
        "-o",
        "json",
    ]);
    let node: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(node["state"], "failed");
    assert_eq!(node["failed_from"], "inspecting");
    assert_eq!(node["last_error"], "wrong rack");
    assert!(node["deadline"].is_null());

    // The history explains all of it, in order.
    let out = daemon.cli(&["node", "history", "node-001", "-o", "json"]);
    let history: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let events: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "enroll",
            "maintenance_on",
            "maintenance_off",
            "inspect",
            "abort"
        ]
    );
    let out = daemon.cli(&["node", "show", "node-001"]);
    assert!(
        stdout(&out).contains("failed (from inspecting)"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("wrong rack"));

    // Unknown node: 404 and advice.
    let out = daemon.cli(&["node", "show", "nope"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no node named `nope`"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("provisioner node list"),
        "{}",
        stderr(&out)
    );

    // Metrics count nodes per state and API requests by route template.
    let (status, metrics, _) = http("GET", &format!("{}/metrics", daemon.base), None, None);
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("provisioner_nodes{state=\"failed\",maintenance=\"false\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("provisioner_nodes{state=\"enrolled\",maintenance=\"false\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("route=\"/api/v1/nodes/{name}/events\""),
        "{metrics}"
    );
    assert!(metrics.contains("status=\"401\""), "{metrics}");

    let (status, doc, _) = http(
        "GET",
        &format!("{}/api/openapi.json", daemon.base),
        None,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    // The served document is the generated one (committed as provisioner/openapi.json).
    let generated: serde_json::Value =
        serde_json::from_str(provisioner::api::openapi_json()).unwrap();
    assert_eq!(doc, generated);

    // A failed node may be deleted.
    assert!(daemon.cli(&["node", "delete", "node-001"]).status.success());
    assert_eq!(
        http("GET", &format!("{nodes_url}/node-001"), token, None).0,
        404
    );

    // SIGTERM: a clean exit.
    assert!(daemon.terminate().success(), "{}", daemon.log_text());
}

#[test]
fn cli_explains_missing_daemon_and_bad_token() {
    let dir = tempfile::tempdir().unwrap();
    let (site, state) = (dir.path().join("site"), dir.path().join("state"));
    write_site(&site, 1);
    let daemon = Daemon::start(&site, &state);

    let out = std::process::Command::new(common::BIN)
        .args(["node", "list", "--api", &daemon.base])
        .env("PROVISIONER_TOKEN", "f".repeat(64))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refused the API token"),
        "{}",
        stderr(&out)
    );

    // Found through STATE/api-url and STATE/api-token, no flags.
    let out = std::process::Command::new(common::BIN)
        .args(["node", "list", "--state"])
        .arg(&state)
        .env_remove("PROVISIONER_TOKEN")
        .env_remove("PROVISIONER_API")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("node-001"));

    // Nothing listening there.
    let out = std::process::Command::new(common::BIN)
        .args(["node", "list", "--api", "http://127.0.0.1:9"])
        .env("PROVISIONER_TOKEN", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is `provisioner serve` running?"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn site_changes_are_applied_or_refused_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (site, state) = (dir.path().join("site"), dir.path().join("state"));
    write_site(&site, 3);
    // No watcher: each reload below is the one that applies the change it checks.
    let daemon = Daemon::start_with(&site, &state, &["--site-poll-interval", "0"], &[]);
    let token = Some(daemon.token.as_str());
    let reload = format!("{}/api/v1/site/reload", daemon.base);

    // node-002 leaves the file, node-004 joins: reported, not deleted.
    write_nodes(
        &site,
        vec!["node-001".into(), "node-003".into(), "node-004".into()],
    );
    let (status, report, _) = http("POST", &reload, token, None);
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["added"], json!(["node-004"]));
    assert_eq!(report["missing"], json!(["node-002"]));
    let (_, node, _) = http(
        "GET",
        &format!("{}/api/v1/nodes/node-002", daemon.base),
        token,
        None,
    );
    assert_eq!(node["in_site"], false);
    let out = daemon.cli(&["site", "reload"]);
    assert!(
        stdout(&out).contains("node-002 is no longer in nodes.yaml"),
        "{}",
        stdout(&out)
    );

    // An invalid change is refused with every problem, and nothing changes.
    std::fs::write(
        site.join("nodes.yaml"),
        "nodes:\n  - name: node-001\n    boot_mac: \"52:54:00:00:00:01\"\n  - name: node-001\n    boot_mac: \"52:54:00:00:00:02\"\n    colour: blue\n",
    )
    .unwrap();
    let (status, body, _) = http("POST", &reload, token, None);
    assert_eq!(status, 422, "{body}");
    let details: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(details.len() >= 2, "{details:?}");
    assert!(
        details.iter().all(|d| d.starts_with("nodes.yaml:")),
        "{details:?}"
    );
    let (_, nodes, _) = http("GET", &format!("{}/api/v1/nodes", daemon.base), token, None);
    assert_eq!(nodes.as_array().unwrap().len(), 4);
    let (_, status_doc, _) = http("GET", &format!("{}/api/v1/site", daemon.base), token, None);
    assert!(status_doc["refused"]["errors"].as_array().unwrap().len() >= 2);
}

#[test]
fn the_watcher_applies_a_fixed_site_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (site, state) = (dir.path().join("site"), dir.path().join("state"));
    write_site(&site, 1);
    let daemon = Daemon::start_with(&site, &state, &["--site-poll-interval", "1"], &[]);
    let token = Some(daemon.token.as_str());

    // A broken file is refused by the watcher and shown in the site status.
    std::fs::write(site.join("nodes.yaml"), "nodes: [\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, status_doc, _) = http("GET", &format!("{}/api/v1/site", daemon.base), token, None);
        if status_doc["refused"].is_object() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher did not refuse the broken file"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Fixed: applied without anyone asking.
    write_nodes(
        &site,
        vec![
            "node-001".into(),
            "node-003".into(),
            "node-004".into(),
            "node-005".into(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, node, _) = http(
            "GET",
            &format!("{}/api/v1/nodes/node-005", daemon.base),
            token,
            None,
        );
        if node["name"] == "node-005" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher did not reload; log:\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, status_doc, _) = http("GET", &format!("{}/api/v1/site", daemon.base), token, None);
    assert!(status_doc["refused"].is_null(), "{status_doc}");
}

#[test]
fn an_invalid_site_keeps_the_daemon_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let (site, state) = (dir.path().join("site"), dir.path().join("state"));
    write_site(&site, 1);
    std::fs::write(site.join("site.yaml"), "network: [\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--site"])
        .arg(&site)
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("site.yaml:"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("provisioner site validate"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_daemon_serves_boot_files_over_tftp_when_the_site_enables_it() {
    let dir = tempfile::tempdir().unwrap();
    let (site, state, files) = (
        dir.path().join("site"),
        dir.path().join("state"),
        dir.path().join("files"),
    );
    write_site(&site, 1);
    std::fs::create_dir_all(&files).unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(files.join("undionly.kpxe"), &payload).unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = std::fs::read_to_string(site.join("site.yaml")).unwrap();
    std::fs::write(
        site.join("site.yaml"),
        format!(
            "{yaml}boot:\n  files: {}\n  tftp:\n    enabled: true\n    port: {port}\n",
            files.display()
        ),
    )
    .unwrap();
    let daemon = Daemon::start_with(&site, &state, &[], &[]);

    let got = dir.path().join("got");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--tftp-blksize", "1468", "-o"])
        .arg(&got)
        .arg(format!("tftp://127.0.0.1:{port}/undionly.kpxe"))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        daemon.log_text()
    );
    assert!(std::fs::read(&got).unwrap() == payload);

    let (_, metrics, _) = http("GET", &format!("{}/metrics", daemon.base), None, None);
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("provisioner_tftp_transfers_total{outcome=\"completed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("provisioner_tftp_sent_bytes_total 200000"),
        "{metrics}"
    );
}
