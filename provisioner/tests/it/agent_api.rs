//! The agent API in-process (the daemon's router on 127.0.0.1:0 with a real
//! SQLite store in a tempdir): per-boot tokens (accepted, wrong, superseded,
//! another MAC's, the operator's), inventory stored and the node made
//! available, heartbeat commands, discovery on and off,
//! `provisioner node show --inventory` against it, and `provisioner node
//! apply` (refusals, the `apply` command, the plan, the stored report).

use std::path::Path;
use std::sync::Arc;

use model::agent::Command;
use model::inventory::Inventory;
use model::net::Mac;
use provisioner::app::App;
use provisioner::lifecycle::Event;
use provisioner::store::Store;
use serde_json::{Value, json};

const OPERATOR_TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";
const KNOWN_MAC: &str = "52:54:00:00:00:01";
const UNKNOWN_MAC: &str = "52:54:00:aa:00:99";

struct Lab {
    _dir: tempfile::TempDir,
    app: Arc<App>,
    base: String,
    http: reqwest::Client,
}

fn inventory(serial: Option<&str>) -> Inventory {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/inventories/lab-compute.json");
    let mut inv: Inventory = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    inv.system.serial = serial.map(str::to_owned);
    inv
}

async fn lab(discovery: bool, after_inspection: &str) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("profiles")).unwrap();
    std::fs::write(
        site.join("site.yaml"),
        format!(
            "network:\n  interface: lo\n  address: 127.0.0.1/8\n  dhcp:\n    mode: off\n\
             api:\n  listen: 127.0.0.1:0\nlifecycle:\n  after_inspection: {after_inspection}\n\
             discovery:\n  enabled: {discovery}\n"
        ),
    )
    .unwrap();
    copy_lab_compute_profile(&site);
    std::fs::write(
        site.join("nodes.yaml"),
        format!("nodes:\n  - name: node-001\n    boot_mac: \"{KNOWN_MAC}\"\n"),
    )
    .unwrap();
    let (app, base) = serve_in_process(&site, &dir.path().join("state"), OPERATOR_TOKEN).await;
    Lab {
        _dir: dir,
        app,
        base,
        http: reqwest::Client::new(),
    }
}

/// The lab's compute profile into `site/profiles` (the inventory
/// `profiles/inventories/lab-compute.json` matches it).
pub(crate) fn copy_lab_compute_profile(site: &Path) {
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../hardware-tests/sites/lab/profiles/lab-compute.yaml"),
        site.join("profiles/lab-compute.yaml"),
    )
    .unwrap();
}

/// The daemon's state and router in this process: the site loaded, the store
/// and config-signing key in `state`, the nodes enrolled, the API on
/// 127.0.0.1:0. Returns the app and the API's base URL.
pub(crate) async fn serve_in_process(
    site: &Path,
    state: &Path,
    operator_token: &str,
) -> (Arc<App>, String) {
    let loaded = provisioner::site::load(site).expect("test site is valid");
    let store = Store::open(state).await.unwrap();
    let (key, _) = provisioner::keys::ensure_signing_key(state).unwrap();
    let app = Arc::new(App::new(loaded, store, operator_token.to_owned(), key));
    app.sync_nodes().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = provisioner::api::router(Arc::clone(&app));
    tokio::spawn(async move { axum::serve(listener, router).await });
    (app, base)
}

impl Lab {
    /// `provisioner node ARGS...` against this lab's API with the operator token.
    fn node_cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
            .args(["--api", self.base.as_str(), "node"])
            .args(args)
            .env("PROVISIONER_TOKEN", OPERATOR_TOKEN)
            .output()
            .unwrap()
    }

    async fn token(&self, mac: &str, node: Option<&str>) -> String {
        let mac: Mac = mac.parse().unwrap();
        self.app.store.issue_boot_token(mac, node).await.unwrap()
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn report(&self, token: &str, mac: &str, serial: Option<&str>) -> (u16, Value) {
        self.post(
            "/api/agent/v1/inventory",
            Some(token),
            json!({"mac": mac, "inventory": inventory(serial)}),
        )
        .await
    }

    async fn heartbeat(&self, token: &str, mac: &str) -> (u16, Value) {
        self.post(
            "/api/agent/v1/heartbeat",
            Some(token),
            json!({"mac": mac, "state": "idle", "uptime_s": 12, "last_error": null}),
        )
        .await
    }
}

fn command(body: &Value) -> Command {
    serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{body}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inspecting_node_reports_and_becomes_available() {
    let lab = lab(false, "poweroff").await;
    lab.app
        .fire("node-001", Event::Inspect, Some("test".into()))
        .await
        .unwrap();
    let token = lab.token(KNOWN_MAC, Some("node-001")).await;

    // Before the inventory, a heartbeat asks for it.
    let (status, body) = lab.heartbeat(&token, KNOWN_MAC).await;
    assert_eq!((status, command(&body)), (200, Command::Inspect), "{body}");
    let beat = lab.app.store.heartbeat(KNOWN_MAC).await.unwrap().unwrap();
    assert_eq!(
        (beat.node.as_deref(), beat.uptime_s),
        (Some("node-001"), 12)
    );

    // The MAC in the report may be written in any case: it is the same boot.
    let (status, body) = lab.report(&token, "52:54:00:00:00:01", Some("SN1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(command(&body), Command::Poweroff);

    let node = lab.app.store.node("node-001").await.unwrap();
    assert_eq!(node.state.as_str(), "available");
    assert!(node.has_inventory);
    assert_eq!(node.deadline, None, "the inspect timer is cancelled");
    // `match profile`: the site's profile matched and its host plan is stored.
    assert_eq!(node.matched_profile.as_deref(), Some("lab-compute"));
    assert_eq!(node.plan_error, None);
    let plan = node.plan.as_ref().expect("a host plan");
    assert_eq!(
        plan.sriov.iter().map(|s| s.num_vfs).sum::<u32>(),
        7,
        "{plan:?}"
    );
    assert!(!plan.isolated_cpus.is_empty());
    let stored = lab.app.store.inventory("node-001").await.unwrap().unwrap();
    assert_eq!(stored.inventory, inventory(Some("SN1")));
    assert_eq!(stored.mac.as_deref(), Some(KNOWN_MAC));
    let history = lab.app.store.history("node-001").await.unwrap();
    let last = history.last().unwrap();
    assert_eq!(last.event, "inventory_received");
    assert_eq!(
        last.reason.as_deref(),
        Some("inventory from the agent booted from 52:54:00:00:00:01")
    );

    // After the inventory of this boot, heartbeats say: power off.
    let (status, body) = lab.heartbeat(&token, KNOWN_MAC).await;
    assert_eq!((status, command(&body)), (200, Command::Poweroff));

    // The operator reads it through the API and the CLI.
    let response = lab
        .http
        .get(format!("{}/api/v1/nodes/node-001/inventory", lab.base))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["node"], "node-001");
    assert_eq!(
        body["inventory"]["cpus"]["threads"],
        json!(inventory(None).cpus.threads)
    );

    let cli = |args: &[&str]| {
        let mut all = vec!["show", "node-001", "--inventory"];
        all.extend_from_slice(args);
        lab.node_cli(&all)
    };
    let json_out = cli(&["-o", "json"]);
    assert!(
        json_out.status.success(),
        "{}",
        String::from_utf8_lossy(&json_out.stderr)
    );
    let printed: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(printed["inventory"], json!(inventory(Some("SN1"))));
    let text_out = cli(&[]);
    assert!(
        text_out.status.success(),
        "{}",
        String::from_utf8_lossy(&text_out.stderr)
    );
    let text = String::from_utf8_lossy(&text_out.stdout);
    assert!(text.contains("node-001 from 52:54:00:00:00:01"), "{text}");
    assert!(text.contains("serial SN1"), "{text}");
    for nic in &inventory(None).nics {
        assert!(text.contains(&nic.mac), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_current_token_of_the_reporting_mac_is_accepted() {
    let lab = lab(false, "poweroff").await;
    let first = lab.token(KNOWN_MAC, Some("node-001")).await;
    let other_mac = lab.token("52:54:00:00:00:02", None).await;

    let refused = [
        (None, KNOWN_MAC, "missing bearer token"),
        (Some("not-a-token"), KNOWN_MAC, "unknown or superseded"),
        (Some(OPERATOR_TOKEN), KNOWN_MAC, "unknown or superseded"),
        (Some(other_mac.as_str()), KNOWN_MAC, "another MAC"),
    ];
    for (token, mac, error) in refused {
        let bodies = [
            (
                "/api/agent/v1/inventory",
                json!({"mac": mac, "inventory": inventory(None)}),
            ),
            (
                "/api/agent/v1/heartbeat",
                json!({"mac": mac, "state": "idle", "uptime_s": 1}),
            ),
        ];
        for (path, body) in bodies {
            let (status, answer) = lab.post(path, token, body).await;
            assert_eq!(status, 401, "{path} {token:?}: {answer}");
            assert!(
                answer["error"].as_str().unwrap().contains(error),
                "{answer}"
            );
        }
    }
    // A wrong token is refused before the body is read.
    let (status, _) = lab
        .post(
            "/api/agent/v1/heartbeat",
            Some("not-a-token"),
            json!({"garbage": true}),
        )
        .await;
    assert_eq!(status, 401);

    // A newer boot of the same MAC supersedes the first token.
    let second = lab.token(KNOWN_MAC, Some("node-001")).await;
    let (status, answer) = lab.report(&first, KNOWN_MAC, None).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["hint"].as_str().unwrap().contains("reboot"),
        "{answer}"
    );
    let (status, answer) = lab.heartbeat(&second, KNOWN_MAC).await;
    assert_eq!(status, 200, "{answer}");

    // A boot token is no operator token.
    let response = lab
        .http
        .get(format!("{}/api/v1/nodes", lab.base))
        .bearer_auth(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    // Nothing was stored by the refused reports.
    assert!(lab.app.store.inventory("node-001").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_node_that_boots_on_its_own_is_inspected_and_waits_when_told() {
    let lab = lab(false, "wait").await;
    let token = lab.token(KNOWN_MAC, Some("node-001")).await;
    let (status, body) = lab.report(&token, KNOWN_MAC, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        command(&body),
        Command::Wait {
            interval_s: Command::DEFAULT_INTERVAL_S
        }
    );
    let node = lab.app.store.node("node-001").await.unwrap();
    assert_eq!(node.state.as_str(), "available");
    let events: Vec<String> = lab
        .app
        .store
        .history("node-001")
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.event)
        .collect();
    assert_eq!(events, ["enroll", "inspect", "inventory_received"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_apply_goes_to_the_running_agent_and_its_report_is_stored() {
    let lab = lab(false, "wait").await;
    let cli = |args: &[&str]| lab.node_cli(args);
    // Not inspected yet: refused, saying why.
    let out = cli(&["apply", "node-001"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("node `node-001` is enrolled") && stderr.contains("HTTP 409"),
        "{stderr}"
    );

    let token = lab.token(KNOWN_MAC, Some("node-001")).await;
    let (status, body) = lab.report(&token, KNOWN_MAC, None).await;
    assert_eq!(status, 200, "{body}");
    // Heartbeats say wait until the operator asks.
    let wait = Command::Wait {
        interval_s: Command::DEFAULT_INTERVAL_S,
    };
    assert_eq!(command(&lab.heartbeat(&token, KNOWN_MAC).await.1), wait);
    let out = cli(&["apply", "node-001"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("apply requested"));
    assert_eq!(
        command(&lab.heartbeat(&token, KNOWN_MAC).await.1),
        Command::Apply
    );

    // The agent fetches the plan with its boot token (the operator's is refused).
    let get = |token: &str| {
        lab.http
            .get(format!("{}/api/agent/v1/plan", lab.base))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(get(OPERATOR_TOKEN).await.unwrap().status().as_u16(), 401);
    let response = get(&token).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let plan: model::plan::HostPlan = response.json().await.unwrap();
    let node = lab.app.store.node("node-001").await.unwrap();
    assert_eq!(Some(&plan), node.plan.as_ref());

    // It reports; the request is cleared and heartbeats say wait again.
    let report = json!({"profile": "lab-compute", "dry_run": false, "items": [
        {"what": "sriov enp65s0 (0000:41:00.0) sriov_numvfs", "status": "changed",
         "before": "0", "wanted": "7", "detail": null},
        {"what": "hugepages node 0 2048 kB", "status": "failed", "before": "0",
         "wanted": "512", "detail": "the kernel allocated 100 pages"}],
        "writes": [{"path": "/sys/bus/pci/devices/0000:41:00.0/sriov_numvfs", "value": "7"}]});
    let (status, body) = lab
        .post(
            "/api/agent/v1/applied",
            Some(&token),
            json!({"mac": KNOWN_MAC, "report": report}),
        )
        .await;
    // It changed the machine: the answer asks for a fresh inventory.
    assert_eq!((status, command(&body)), (200, Command::Inspect), "{body}");
    assert_eq!(command(&lab.heartbeat(&token, KNOWN_MAC).await.1), wait);
    let stored = lab.app.store.apply_status("node-001").await.unwrap();
    assert_eq!(stored.requested_at, None);
    let last = stored.last.expect("a report");
    assert_eq!(last.mac, KNOWN_MAC);
    assert_eq!(serde_json::to_value(last.report).unwrap(), report);

    // The operator sees it, failure included.
    let out = cli(&["show", "node-001"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("lab-compute: 1 changed, 0 unchanged, 0 pending, 1 failed"),
        "{text}"
    );
    assert!(
        text.contains(
            "FAILED       hugepages node 0 2048 kB: 0 -> 512 (the kernel allocated 100 pages)"
        ),
        "{text}"
    );

    // An agent that could not read the plan reports that instead.
    lab.app
        .store
        .request_apply("node-001", chrono::Utc::now())
        .await
        .unwrap();
    let (status, body) = lab
        .post(
            "/api/agent/v1/applied",
            Some(&token),
            json!({"mac": KNOWN_MAC, "error": "the plan is not a host plan"}),
        )
        .await;
    // Nothing changed: no fresh inventory needed.
    assert_eq!((status, command(&body)), (200, wait), "{body}");
    let text = String::from_utf8_lossy(&cli(&["show", "node-001"]).stdout).into_owned();
    assert!(
        text.contains("FAILED: the plan is not a host plan"),
        "{text}"
    );

    // `node apply --wait` waits for the report and fails when an item failed.
    let waiting = std::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args([
            "--api",
            lab.base.as_str(),
            "node",
            "apply",
            "node-001",
            "--wait",
        ])
        .args(["--timeout", "30"])
        .env("PROVISIONER_TOKEN", OPERATOR_TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lab
        .app
        .store
        .apply_status("node-001")
        .await
        .unwrap()
        .requested_at
        .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "the CLI never asked");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        command(&lab.heartbeat(&token, KNOWN_MAC).await.1),
        Command::Apply
    );
    let (status, _) = lab
        .post(
            "/api/agent/v1/applied",
            Some(&token),
            json!({"mac": KNOWN_MAC, "report": report}),
        )
        .await;
    assert_eq!(status, 200);
    let out = tokio::task::spawn_blocking(move || waiting.wait_with_output().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("FAILED       hugepages node 0"), "{stdout}");
    assert!(stderr.contains("1 item(s) of the plan failed"), "{stderr}");

    // A node in maintenance is not touched: the refusal says what to do.
    lab.app
        .fire("node-001", Event::MaintenanceOn, Some("test".into()))
        .await
        .unwrap();
    let out = cli(&["apply", "node-001"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("maintenance node-001 off"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_enrolls_unknown_machines_when_the_site_allows_it() {
    let lab = lab(true, "poweroff").await;
    let token = lab.token(UNKNOWN_MAC, None).await;
    let (status, body) = lab.heartbeat(&token, UNKNOWN_MAC).await;
    assert_eq!((status, command(&body)), (200, Command::Inspect), "{body}");
    let (status, body) = lab.report(&token, UNKNOWN_MAC, Some("CZ 2039-0ABC")).await;
    assert_eq!((status, command(&body)), (200, Command::Poweroff), "{body}");
    let node = lab.app.store.node("discovered-cz-2039-0abc").await.unwrap();
    assert_eq!(node.state.as_str(), "available");
    assert_eq!(node.config.boot_mac.as_deref(), Some(UNKNOWN_MAC));
    assert_eq!(node.config.serial.as_deref(), Some("CZ 2039-0ABC"));
    assert_eq!(serde_json::to_value(node.source).unwrap(), "discovered");

    // A second machine with the same serial is named by its MAC.
    let twin_mac = "52:54:00:aa:00:98";
    let twin = lab.token(twin_mac, None).await;
    let (status, body) = lab.report(&twin, twin_mac, Some("CZ 2039-0ABC")).await;
    assert_eq!(status, 200, "{body}");
    let twin_node = lab.app.store.node("discovered-525400aa0098").await.unwrap();
    assert_eq!(twin_node.state.as_str(), "available");

    // The next boot of the first machine finds it by its MAC: no second enrollment.
    let again = lab.token(UNKNOWN_MAC, None).await;
    let (status, _) = lab.report(&again, UNKNOWN_MAC, Some("CZ 2039-0ABC")).await;
    assert_eq!(status, 200);
    assert_eq!(lab.app.store.nodes().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_discovery_unknown_machines_are_refused() {
    let lab = lab(false, "poweroff").await;
    let token = lab.token(UNKNOWN_MAC, None).await;
    let (status, body) = lab.report(&token, UNKNOWN_MAC, Some("SN9")).await;
    assert_eq!(status, 403, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(UNKNOWN_MAC) && error.contains("discovery"),
        "{error}"
    );
    assert_eq!(lab.app.store.nodes().await.unwrap().len(), 1);
    // Its heartbeats are answered (it waits), and recorded.
    let (status, body) = lab.heartbeat(&token, UNKNOWN_MAC).await;
    assert_eq!(status, 200);
    assert!(matches!(command(&body), Command::Wait { .. }), "{body}");
    assert!(
        lab.app
            .store
            .heartbeat(UNKNOWN_MAC)
            .await
            .unwrap()
            .is_some()
    );
}
