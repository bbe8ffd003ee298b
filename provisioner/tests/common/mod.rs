//! Shared helpers for the component tests: a generated site, the real
//! `provisioner` binary started on port 0 with its state in a tempdir, and the
//! CLI run as a subprocess.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_provisioner");

/// Writes a valid site with `n` nodes named `node-001`... into `dir`.
pub fn write_site(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::write(
        dir.join("site.yaml"),
        "network:\n  interface: lo\n  address: 127.0.0.1/8\n  dhcp:\n    mode: off\napi:\n  listen: 127.0.0.1:0\nimages: []\n",
    )
    .unwrap();
    write_nodes(dir, (1..=n).map(|i| format!("node-{i:03}")).collect());
}

/// Rewrites nodes.yaml with the given node names (MACs derived from the number).
pub fn write_nodes(dir: &Path, names: Vec<String>) {
    let mut yaml = String::from("nodes:\n");
    for name in names {
        let i: u32 = name.rsplit('-').next().unwrap().parse().unwrap();
        yaml.push_str(&format!(
            "  - name: {name}\n    bmc:\n      url: redfish+http://127.0.0.1:9000/redfish/v1/Systems/{i}\n      username: admin\n      password_env: TEST_BMC_PASSWORD\n    boot_mac: \"52:54:00:00:{:02x}:{:02x}\"\n    serial: SN{i:05}\n",
            i / 256,
            i % 256
        ));
    }
    std::fs::write(dir.join("nodes.yaml"), yaml).unwrap();
}

/// A running daemon, SIGKILLed on drop.
pub struct Daemon {
    pub child: Child,
    pub base: String,
    pub token: String,
    pub state: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(site: &Path, state: &Path) -> Daemon {
        Daemon::start_with(site, state, &["--api-only"], &[])
    }

    /// Starts the daemon with extra `serve` arguments and environment variables.
    pub fn start_with(
        site: &Path,
        state: &Path,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Daemon {
        std::fs::create_dir_all(state).unwrap();
        let url_file = state.join("api-url");
        let _ = std::fs::remove_file(&url_file);
        let log = state.join(format!("daemon-{}.log", std::process::id()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(BIN)
            .args([
                "serve",
                "--log-format",
                "json",
                "--listen",
                "127.0.0.1:0",
                "--site",
            ])
            .arg(site)
            .arg("--state")
            .arg(state)
            .args(extra_args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn provisioner serve");
        let mut daemon = Daemon {
            child,
            base: String::new(),
            token: String::new(),
            state: state.into(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!(
                    "daemon exited early ({status}); log:\n{}",
                    daemon.log_text()
                );
            }
            if let Ok(url) = std::fs::read_to_string(&url_file) {
                daemon.base = url.trim().to_owned();
                break;
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready after 30 s; log:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon.token = std::fs::read_to_string(state.join("api-token"))
            .unwrap()
            .trim()
            .to_owned();
        daemon
    }

    /// Polls `done` every 100 ms until it holds; panics with the daemon's log after
    /// `limit_secs`.
    pub fn wait_for(&self, what: &str, limit_secs: u64, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(limit_secs);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "{what}: not after {limit_secs} s; daemon log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--api")
            .arg(&self.base)
            .env("PROVISIONER_TOKEN", &self.token)
            .env_remove("PROVISIONER_API")
            .output()
            .expect("run the CLI")
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "daemon ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A blocking HTTP call; returns (status, JSON body or Null).
pub fn http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let client = reqwest::blocking::Client::new();
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().expect("HTTP request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().unwrap();
    let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, value, headers)
}

/// An in-process fake Redfish service with `options`, served from its own runtime
/// (keep the runtime alive as long as the fake is used).
pub fn fake_redfish(
    options: provisioner::bmc::fake_redfish::FakeRedfishOptions,
) -> (
    tokio::runtime::Runtime,
    provisioner::bmc::fake_redfish::FakeRedfish,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = runtime
        .block_on(provisioner::bmc::fake_redfish::FakeRedfish::start(options))
        .unwrap();
    (runtime, fake)
}
