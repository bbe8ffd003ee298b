//! Deploy through the HTTP API with a fake agent and a fake host (the
//! daemon's router on 127.0.0.1:0, a real store and config-signing key in a
//! tempdir, a fake host image on disk): `node deploy --wait` (CLI) →
//! the agent's `Command::Deploy` (fields, sealed config opened with
//! STATE/config-signing.pub) → `deployed` → boot-disk + reset queued →
//! host report with the credential → `active`; wrong credentials, a
//! mismatching host, a failed write, BIOS and ramdisk refusals; undeploy →
//! `Command::Clean` → `cleaned` → `available`; the image served with Range;
//! host-image site errors at `file:line:column`; `key init|show`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use model::agent::Command;
use model::deploy::{EraseMode, NodeConfig};
use model::inventory::{Firmware, Inventory};
use model::net::Mac;
use provisioner::app::App;
use provisioner::lifecycle::Event;
use serde_json::{Value, json};

const OPERATOR_TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";
const MAC: &str = "52:54:00:00:00:01";
const ROOT_HASH: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const DISK_BYTES: &[u8] = b"not really zstd, but the provisioner only serves it";

struct Lab {
    dir: tempfile::TempDir,
    app: Arc<App>,
    base: String,
    http: reqwest::Client,
}

/// A host image's output directory: `manifest.json` and `host.raw.zst`.
fn host_image(dir: &Path, version: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("host.raw.zst"), DISK_BYTES).unwrap();
    let manifest = json!({
        "format": 1, "version": version, "kernel_release": "6.1.0-test",
        "root": {"file": "root.img", "size": 4096, "sha256": "aa".repeat(32),
                 "filesystem": "erofs",
                 "verity": {"data_blocks": 1, "hash_start_block": 1,
                            "root_hash": ROOT_HASH, "salt": "22".repeat(32)}},
        "uki": {"file": "uki.efi", "size": 10, "sha256": "bb".repeat(32)},
        "disk": {"file": "host.raw.zst", "size": DISK_BYTES.len(), "sha256": "cc".repeat(32),
                 "raw_size": 1362 << 20, "raw_sha256": "dd".repeat(32), "partitions": []}
    });
    let path = dir.join("manifest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    path
}

fn inventory(firmware: Firmware) -> Inventory {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/inventories/lab-compute.json");
    let mut inv: Inventory = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    inv.system.firmware = firmware;
    inv
}

/// A site with a host image `host` (version 1) and a ramdisk image, one node
/// whose nodes.yaml `image` is `host`.
fn write_site(site: &Path) {
    std::fs::create_dir_all(site.join("profiles")).unwrap();
    host_image(&site.join("images/host"), "1");
    std::fs::write(site.join("vmlinuz"), b"k").unwrap();
    std::fs::write(site.join("initramfs"), b"i").unwrap();
    std::fs::write(
        site.join("site.yaml"),
        "network:\n  interface: lo\n  address: 127.0.0.1/8\n  dhcp:\n    mode: off\n\
         api:\n  listen: 127.0.0.1:0\nimages:\n  - name: host\n    host: images/host/manifest.json\n\
         \x20 - name: ramdisk\n    kernel: vmlinuz\n    initramfs: initramfs\n",
    )
    .unwrap();
    super::agent_api::copy_lab_compute_profile(site);
    std::fs::write(
        site.join("nodes.yaml"),
        format!("nodes:\n  - name: node-001\n    boot_mac: \"{MAC}\"\n    image: host\n"),
    )
    .unwrap();
}

async fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    write_site(&site);
    let (app, base) =
        super::agent_api::serve_in_process(&site, &dir.path().join("state"), OPERATOR_TOKEN).await;
    Lab {
        dir,
        app,
        base,
        http: reqwest::Client::new(),
    }
}

impl Lab {
    /// A new boot of the node's ramdisk: a fresh per-boot token.
    async fn boot(&self) -> String {
        let mac: Mac = MAC.parse().unwrap();
        self.app
            .store
            .issue_boot_token(mac, Some("node-001"))
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        response.json().await.unwrap()
    }

    async fn report(&self, token: &str, firmware: Firmware) -> Command {
        let (status, body) = self
            .post(
                "/api/agent/v1/inventory",
                token,
                json!({"mac": MAC, "inventory": inventory(firmware)}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        command(&body)
    }

    async fn heartbeat(&self, token: &str, state: &str, progress: Value) -> Command {
        let (status, body) = self
            .post(
                "/api/agent/v1/heartbeat",
                token,
                json!({"mac": MAC, "state": state, "uptime_s": 30, "progress": progress}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        command(&body)
    }

    /// Inspected and available, with a plan; returns that boot's token.
    async fn available(&self, firmware: Firmware) -> String {
        self.app
            .fire("node-001", Event::Inspect, Some("test".into()))
            .await
            .unwrap();
        let token = self.boot().await;
        self.report(&token, firmware).await;
        assert_eq!(self.state().await, "available");
        token
    }

    async fn state(&self) -> String {
        self.app
            .store
            .node("node-001")
            .await
            .unwrap()
            .state
            .to_string()
    }

    async fn last_reason(&self) -> String {
        let history = self.app.store.history("node-001").await.unwrap();
        history.last().unwrap().reason.clone().unwrap_or_default()
    }

    /// Deploys through the API and answers the agent of the new boot:
    /// returns the per-boot token and the order.
    async fn deploy_order(&self) -> (String, model::deploy::DeployOrder) {
        let (status, body) = self
            .post("/api/v1/nodes/node-001/deploy", OPERATOR_TOKEN, json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "deploying");
        self.order_of_new_boot().await
    }

    async fn order_of_new_boot(&self) -> (String, model::deploy::DeployOrder) {
        let token = self.boot().await;
        match self.report(&token, Firmware::Uefi).await {
            Command::Deploy(order) => (token, *order),
            other => panic!("expected a deploy order, got {other:?}"),
        }
    }

    fn cli(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_provisioner"));
        command
            .args(["--api", self.base.as_str()])
            .args(args)
            .env("PROVISIONER_TOKEN", OPERATOR_TOKEN);
        command
    }
}

fn command(body: &Value) -> Command {
    serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{body}: {e}"))
}

/// Opens an order's sealed config with the public key the daemon left in STATE.
fn open_config(lab: &Lab, order: &model::deploy::DeployOrder) -> (u64, NodeConfig) {
    let public = std::fs::read_to_string(lab.dir.path().join("state/config-signing.pub")).unwrap();
    let key = model::deploy::parse_public_key(&public).unwrap();
    let slot = base64::engine::general_purpose::STANDARD
        .decode(&order.config)
        .unwrap();
    model::deploy::open(&slot, &key).expect("the sealed config opens with STATE's pub key")
}

fn host_report(config: &NodeConfig, version: &str, root_hash: &str) -> Value {
    json!({
        "node": config.node, "version": version, "slot": "a", "root_hash": root_hash,
        "cmdline": format!("host.version={version} host.roothash={root_hash}"),
        "trial": false, "blessed": true,
        "apply": {"profile": "lab-compute", "dry_run": false, "items": [], "writes": []},
        "uptime_s": 20
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_deployed_to_active_and_undeployed_to_available() {
    let lab = lab().await;
    let inspection_token = lab.available(Firmware::Uefi).await;
    let plan = lab.app.store.node("node-001").await.unwrap().plan.unwrap();

    // The operator deploys with the CLI and follows it to the end.
    let cli = lab
        .cli(&["node", "deploy", "node-001", "--wait"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if lab.state().await == "deploying" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(lab.state().await, "deploying");
    // An agent still up from before the deploy gets no order: the reset comes.
    assert_eq!(
        lab.heartbeat(&inspection_token, "idle", Value::Null).await,
        Command::Wait { interval_s: 10 }
    );

    // The ramdisk agent of the new boot reports and is given the order.
    let (token, order) = lab.order_of_new_boot().await;
    assert_eq!(order.image, "host");
    assert_eq!(order.version, "1");
    assert_eq!(order.url, format!("{}/images/host/host.raw.zst", lab.base));
    assert_eq!(order.compressed_size, DISK_BYTES.len() as u64);
    assert_eq!(order.compressed_sha256, "cc".repeat(32));
    assert_eq!(
        (order.raw_size, order.raw_sha256.as_str()),
        (1362 << 20, "dd".repeat(32).as_str())
    );
    assert_eq!(order.root_hash, ROOT_HASH);
    assert_eq!(order.root_disk, plan.root_disk);
    let (generation, config) = open_config(&lab, &order);
    assert_eq!(generation, 1);
    assert_eq!(config.format, 1);
    assert_eq!(config.node, "node-001");
    assert_eq!(config.boot_mac, MAC);
    assert_eq!(config.provisioner_url, lab.base);
    assert_eq!(
        (config.image.as_str(), config.version.as_str()),
        ("host", "1")
    );
    assert_eq!(config.root_hash, ROOT_HASH);
    assert_eq!(config.plan, plan);
    assert_eq!(config.credential.len(), 64);

    // Writing: heartbeats carry progress and get `wait`, never a second order.
    let progress = json!({"phase": "writing", "done_bytes": 512 << 20, "total_bytes": 1362 << 20});
    assert_eq!(
        lab.heartbeat(&token, "deploying", progress).await,
        Command::Wait { interval_s: 10 }
    );
    let node = lab.get("/api/v1/nodes/node-001").await;
    assert_eq!(node["deploy"]["image"], "host");
    assert_eq!(node["deploy"]["version"], "1");
    assert_eq!(node["deploy"]["progress"]["phase"], "writing");
    assert_eq!(node["deploy"]["progress"]["done_bytes"], 512 << 20);
    let list = lab.get("/api/v1/nodes").await;
    assert_eq!(list[0]["deploy"]["progress"]["total_bytes"], 1362 << 20);

    // Written: the node boots it from disk (queued BMC actions) and keeps waiting.
    let (status, body) = lab
        .post(
            "/api/agent/v1/deployed",
            &token,
            json!({"mac": MAC, "disk": "/dev/vda", "written_bytes": 1362u64 << 20,
                   "elapsed_ms": 41_000}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(command(&body), Command::Wait { interval_s: 10 });
    assert_eq!(lab.state().await, "deploying");
    assert_eq!(
        lab.last_reason().await,
        "image host 1 written to /dev/vda (1362 MiB in 41 s)"
    );
    let progress = lab.get("/api/v1/nodes/node-001/progress").await;
    assert_eq!(
        progress["bmc_job"]["actions"],
        "boot disk (persistent), power on/reset"
    );
    let node = lab.app.store.node("node-001").await.unwrap();
    assert!(node.deadline.is_some(), "the deploy timer keeps running");
    // The agent, until it is reset, is told to wait (no second order).
    assert_eq!(
        lab.heartbeat(&token, "idle", Value::Null).await,
        Command::Wait { interval_s: 10 }
    );

    // The installed host: a wrong credential is refused.
    let (status, body) = lab
        .post(
            "/api/host/v1/report",
            &"0".repeat(64),
            host_report(&config, "1", ROOT_HASH),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("credential"),
        "{body}"
    );
    assert!(
        body["hint"].as_str().unwrap().contains("redeploy"),
        "{body}"
    );
    // The per-boot token is not a credential either.
    let (status, _) = lab
        .post(
            "/api/host/v1/report",
            &token,
            host_report(&config, "1", ROOT_HASH),
        )
        .await;
    assert_eq!(status, 401);

    // The right one, with what was deployed: active.
    let (status, body) = lab
        .post(
            "/api/host/v1/report",
            &config.credential,
            host_report(&config, "1", ROOT_HASH),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"command": "wait", "interval_s": 10}));
    assert_eq!(lab.state().await, "active");
    assert_eq!(
        lab.last_reason().await,
        format!("host booted version 1 slot a root {ROOT_HASH}")
    );

    let out = cli.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "node-001: active, version 1 slot a root {ROOT_HASH}"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("image_written -> deploying"), "{stdout}");

    // `node show` prints what the host reported.
    let out = lab.cli(&["node", "show", "node-001"]).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    for expected in [
        "deployed  version 1 slot a, blessed",
        &format!("root hash  {ROOT_HASH}"),
        "cmdline  host.version=1",
        "applied  ",
    ] {
        assert!(shown.contains(expected), "no {expected:?} in\n{shown}");
    }

    // Undeploy, erasing every byte: the agent of the next boot is told to clean.
    let (status, body) = lab
        .post(
            "/api/v1/nodes/node-001/undeploy",
            OPERATOR_TOKEN,
            json!({"erase": "full"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "cleaning");
    // The erased host's credential is revoked.
    let (status, _) = lab
        .post(
            "/api/host/v1/report",
            &config.credential,
            host_report(&config, "1", ROOT_HASH),
        )
        .await;
    assert_eq!(status, 401);
    let token = lab.boot().await;
    assert_eq!(
        lab.report(&token, Firmware::Uefi).await,
        Command::Clean {
            mode: EraseMode::Full
        }
    );
    assert_eq!(
        lab.heartbeat(
            &token,
            "cleaning",
            json!({"phase": "erasing", "done_bytes": 1, "total_bytes": 2})
        )
        .await,
        Command::Wait { interval_s: 10 }
    );
    let (status, body) = lab
        .post(
            "/api/agent/v1/cleaned",
            &token,
            json!({"mac": MAC, "disks": ["/dev/vda"], "mode": "full"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(lab.state().await, "available");
    assert_eq!(lab.last_reason().await, "erased /dev/vda (full)");
    let node = lab.get("/api/v1/nodes/node-001").await;
    assert_eq!(
        node["deploy"]["host"],
        Value::Null,
        "the erased host is forgotten"
    );
    assert_eq!(node["deploy"]["erase"], "full");

    // A second deploy seals a higher generation with a new credential.
    let (_, order) = lab.deploy_order().await;
    let (second, again) = open_config(&lab, &order);
    assert_eq!(second, 2);
    assert_ne!(again.credential, config.credential);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_booted_something_else_fails_the_node() {
    let lab = lab().await;
    lab.available(Firmware::Uefi).await;
    let (token, order) = lab.deploy_order().await;
    let (_, config) = open_config(&lab, &order);
    let (status, _) = lab
        .post(
            "/api/agent/v1/deployed",
            &token,
            json!({"mac": MAC, "disk": "/dev/vda", "written_bytes": 1, "elapsed_ms": 1}),
        )
        .await;
    assert_eq!(status, 200);
    let other = "9".repeat(64);
    let (status, body) = lab
        .post(
            "/api/host/v1/report",
            &config.credential,
            host_report(&config, "0", &other),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let node = lab.app.store.node("node-001").await.unwrap();
    assert_eq!(node.state.as_str(), "failed");
    assert_eq!(
        node.last_error.as_deref(),
        Some(&*format!(
            "the host booted version 0 root {other}, but 1 root {ROOT_HASH} was deployed"
        ))
    );
    // The report is kept for the operator.
    let view = lab.get("/api/v1/nodes/node-001").await;
    assert_eq!(view["deploy"]["host"]["version"], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_fails_the_node_with_the_step_and_error_and_can_be_retried() {
    let lab = lab().await;
    lab.available(Firmware::Uefi).await;
    let (token, _) = lab.deploy_order().await;
    let (status, body) = lab
        .post(
            "/api/agent/v1/deployed",
            &token,
            json!({"mac": MAC, "disk": "/dev/vda", "written_bytes": 4096, "elapsed_ms": 900,
                   "step": "write", "error": "/dev/vda: Input/output error at byte 4096"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let node = lab.app.store.node("node-001").await.unwrap();
    assert_eq!(node.state.as_str(), "failed");
    assert_eq!(
        node.last_error.as_deref(),
        Some("deploy failed at step write: /dev/vda: Input/output error at byte 4096")
    );
    // A failed deploy is retried as it is (the manual event takes the same path).
    let (status, body) = lab
        .post(
            "/api/v1/nodes/node-001/events",
            OPERATOR_TOKEN,
            json!({"event": "deploy"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deploy"]["image"], "host");
    let (_, order) = lab.order_of_new_boot().await;
    assert_eq!(order.image, "host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_is_refused_for_bios_a_ramdisk_image_or_no_plan() {
    let lab = lab().await;
    async fn refused(lab: &Lab, body: Value) -> String {
        let (status, body) = lab
            .post("/api/v1/nodes/node-001/deploy", OPERATOR_TOKEN, body)
            .await;
        assert_eq!(status, 409, "{body}");
        body["error"].as_str().unwrap().to_owned()
    }
    // Enrolled: the state refuses it.
    let why = refused(&lab, json!({})).await;
    assert!(why.contains("not allowed in state `enrolled`"), "{why}");
    lab.available(Firmware::Bios).await;
    let why = refused(&lab, json!({})).await;
    assert_eq!(
        why,
        "the host image boots UEFI only; switch node node-001's firmware to UEFI (its inventory \
         says legacy BIOS), inspect it again, then deploy"
    );
    let why = refused(&lab, json!({"image": "ramdisk"})).await;
    assert!(why.contains("image `ramdisk` is not a host image"), "{why}");
    let why = refused(&lab, json!({"image": "nope"})).await;
    assert!(why.contains("no image `nope`"), "{why}");
    assert_eq!(lab.state().await, "available", "a refusal changes nothing");
    // Through the CLI: the reason, exit 1.
    let out = lab.cli(&["node", "deploy", "node-001"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("boots UEFI only"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_image_is_served_with_range_and_without_a_token() {
    let lab = lab().await;
    let url = format!("{}/images/host/host.raw.zst", lab.base);
    let response = lab
        .http
        .get(&url)
        .header("Range", "bytes=4-10")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 206);
    assert!(response.headers().contains_key("etag"));
    assert_eq!(&response.bytes().await.unwrap()[..], &DISK_BYTES[4..=10]);
    let whole = lab.http.get(&url).send().await.unwrap();
    assert_eq!(whole.status().as_u16(), 200);
    assert_eq!(&whole.bytes().await.unwrap()[..], DISK_BYTES);
    let manifest: Value = lab
        .http
        .get(format!("{}/images/host/manifest.json", lab.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(manifest["version"], "1");
    let missing = lab
        .http
        .get(format!("{}/images/host/root.img", lab.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}

#[test]
fn host_image_errors_name_the_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path();
    write_site(site);
    let load_errors = || -> String {
        provisioner::site::load(site)
            .expect_err("the site is invalid")
            .to_string()
    };
    // `host:` is on line 10, its value at column 11.
    std::fs::remove_file(site.join("images/host/manifest.json")).unwrap();
    let errors = load_errors();
    assert!(
        errors.contains("site.yaml:10:11: images[0].host: cannot read the host image manifest"),
        "{errors}"
    );
    std::fs::write(site.join("images/host/manifest.json"), "{\"format\": 1,").unwrap();
    let errors = load_errors();
    assert!(
        errors.contains("site.yaml:10:11") && errors.contains("is not a host image manifest: EOF"),
        "{errors}"
    );
    host_image(&site.join("images/host"), "1");
    std::fs::write(site.join("images/host/host.raw.zst"), b"short").unwrap();
    let errors = load_errors();
    assert!(
        errors.contains(&format!(
            "is 5 bytes but {} says {}",
            site.join("images/host/manifest.json").display(),
            DISK_BYTES.len()
        )),
        "{errors}"
    );
    std::fs::remove_file(site.join("images/host/host.raw.zst")).unwrap();
    let errors = load_errors();
    assert!(errors.contains("host.raw.zst (named by"), "{errors}");
    // A node naming an image the catalog lacks.
    host_image(&site.join("images/host"), "1");
    std::fs::write(
        site.join("nodes.yaml"),
        format!("nodes:\n  - name: node-001\n    boot_mac: \"{MAC}\"\n    image: hots\n"),
    )
    .unwrap();
    let errors = load_errors();
    assert!(
        errors.contains("nodes.yaml:4:12: nodes[0].image: unknown image \"hots\""),
        "{errors}"
    );
}

#[test]
fn key_init_is_idempotent_and_show_prints_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
            .args(args)
            .arg("--state")
            .arg(&state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run(&["key", "init"]);
    assert_eq!(
        first.trim(),
        state.join("config-signing.pub").display().to_string()
    );
    let public = std::fs::read_to_string(state.join("config-signing.pub")).unwrap();
    assert_eq!(run(&["key", "init"]), first);
    assert_eq!(
        std::fs::read_to_string(state.join("config-signing.pub")).unwrap(),
        public,
        "the key is kept"
    );
    assert_eq!(run(&["key", "show"]), public);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}
