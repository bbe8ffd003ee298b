//! `cargo xtask bench api`: the provisioner daemon's HTTP API with a generated site of N
//! nodes, against a static file server serving the very same JSON bytes.
//!
//! Site generation is pure ([`site_yaml`], [`nodes_yaml`]); processes are owned by
//! [`ChildGuard`]s so they are stopped on every exit path.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;

use super::peer::StaticServer;
use super::process::{ChildGuard, Stopped, free_port};
use super::stats::{Summary, ms};

pub const LONG_ABOUT: &str = "\
Benchmark the provisioner daemon's HTTP API.

Builds `provisioner` in release mode (or uses --provisioner), generates a site with --nodes \
nodes in a temporary directory, and measures:
  - `provisioner site validate` time;
  - site load time: from starting `provisioner serve` until GET /api/v1/nodes lists all nodes;
  - GET /api/v1/nodes latency over --requests sequential requests (body read, JSON parsed,
    length checked): p50, p99, max; also p50 up to the body read only, since parsing in
    this client can dominate with large bodies;
  - `provisioner node list -o json` end to end, --cli-runs times: p50;
  - the daemon's memory (VmRSS, VmHWM) after the requests;
  - the same request loop against a static file server (nginx if installed, else python3
    -m http.server) serving the exact bytes of the daemon's last answer, and the ratio.

Prints a table, then one line of JSON with every figure. On failure the work directory
(site, state, daemon logs) is kept and its path printed.";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of nodes in the generated site.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    nodes: u32,
    /// Number of sequential GET /api/v1/nodes requests measured (for us and for the peer).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    requests: u32,
    /// How many times `provisioner node list` is timed.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    cli_runs: u32,
    /// Use this provisioner binary instead of building it with `cargo build --release`.
    #[arg(long, value_name = "PATH")]
    provisioner: Option<PathBuf>,
    /// Give up when the daemon has not loaded the site after this many seconds.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    ready_timeout: u64,
    /// Keep the work directory (site, state, logs) even on success.
    #[arg(long)]
    keep: bool,
}

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------
// Site generation (pure).

/// `site.yaml` for a daemon answering on 127.0.0.1:`port`, DHCP off, no images.
pub fn site_yaml(port: u16) -> String {
    format!(
        "network:
  interface: lo
  address: 127.0.0.1/8
  dhcp: {{mode: off}}
api:
  listen: 127.0.0.1:{port}
images: []
"
    )
}

/// The name, BMC system id, MAC and serial of node `i` (1-based). Unique for i < 2^24.
pub fn node_fields(i: u32) -> (String, String, String, String) {
    let id = format!("{i:05}");
    let mac = format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    );
    (format!("node-{id}"), id.clone(), mac, format!("SN{id}"))
}

/// `nodes.yaml` with `n` nodes, node-00001 .. node-N, each with a unique MAC and serial.
pub fn nodes_yaml(n: u32) -> String {
    if n == 0 {
        return "nodes: []\n".to_owned();
    }
    let mut out = String::with_capacity(n as usize * 240);
    out.push_str("nodes:\n");
    for i in 1..=n {
        let (name, id, mac, serial) = node_fields(i);
        out.push_str(&format!(
            "  - name: {name}
    bmc:
      url: \"redfish+http://127.0.0.1:9000/redfish/v1/Systems/{id}\"
      username: admin
      password_env: BENCH_BMC_PASSWORD
    boot_mac: \"{mac}\"
    serial: \"{serial}\"
"
        ));
    }
    out
}

fn write_site(dir: &Path, port: u16, nodes: u32) -> Result<()> {
    std::fs::create_dir_all(dir.join("profiles"))?;
    std::fs::write(dir.join("site.yaml"), site_yaml(port))?;
    std::fs::write(dir.join("nodes.yaml"), nodes_yaml(nodes))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Measurement (I/O).

/// Everything one run measured.
#[derive(Debug)]
struct Report {
    nodes: u32,
    validate: Duration,
    healthz_ready: Duration,
    site_load: Duration,
    api: Gets,
    body_bytes: usize,
    cli: Summary,
    vm_rss_kib: u64,
    vm_hwm_kib: u64,
    shutdown: String,
    peer_name: &'static str,
    peer: Gets,
}

/// Timings of one request loop.
#[derive(Debug)]
struct Gets {
    /// Request sent -> whole body read -> JSON parsed -> length checked.
    full: Summary,
    /// Request sent -> whole body read (the server's and the network's share only).
    transfer: Summary,
    /// The last body received.
    last_body: Vec<u8>,
}

/// Sequentially GETs `url` `requests` times, checking each answer is 200 and a JSON array of
/// `expected_len` items. See [`Gets`] for what is timed.
async fn measure_gets(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    requests: u32,
    expected_len: usize,
) -> Result<Gets> {
    let mut times = Vec::with_capacity(requests as usize);
    let mut transfer_times = Vec::with_capacity(requests as usize);
    let mut last = Vec::new();
    for i in 0..requests {
        let t = Instant::now();
        let mut req = client.get(url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("GET {url} (request {i})"))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("reading GET {url} body"))?;
        transfer_times.push(t.elapsed());
        ensure!(status.is_success(), "GET {url} answered {status}");
        let len = json_array_len(&body).with_context(|| format!("GET {url} body"))?;
        ensure!(
            len == expected_len,
            "GET {url} listed {len} items, expected {expected_len}"
        );
        times.push(t.elapsed());
        last = body.to_vec();
    }
    Ok(Gets {
        full: Summary::of(&times).context("no requests measured")?,
        transfer: Summary::of(&transfer_times).context("no requests measured")?,
        last_body: last,
    })
}

fn json_array_len(body: &[u8]) -> Result<usize> {
    // IgnoredAny checks the whole document is valid JSON without building it in memory, so the
    // client's share of the timing stays small next to the server's.
    let items: Vec<serde::de::IgnoredAny> =
        serde_json::from_slice(body).context("not a JSON array")?;
    Ok(items.len())
}

/// VmRSS and VmHWM of `pid` in KiB, from /proc/PID/status.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("{path} has no {name}"))?;
        let kib = line.trim().trim_end_matches("kB").trim();
        kib.parse().with_context(|| format!("{path}: {name}{line}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

pub(super) fn build_provisioner() -> Result<PathBuf> {
    println!("bench api: cargo build --release -p provisioner");
    let status = crate::workspace::cargo()
        .args(["build", "--release", "-p", "provisioner"])
        .status()
        .context("running cargo build")?;
    ensure!(
        status.success(),
        "`cargo build --release -p provisioner` failed ({status})"
    );
    let bin = crate::workspace::target_dir()?.join("release/provisioner");
    ensure!(
        bin.is_file(),
        "cargo built provisioner but {} does not exist",
        bin.display()
    );
    Ok(bin)
}

/// Paths of one run, all inside the work directory.
#[derive(Debug)]
struct Paths {
    site: PathBuf,
    state: PathBuf,
    stdout_log: PathBuf,
    stderr_log: PathBuf,
    peer_root: PathBuf,
    peer_work: PathBuf,
}

impl Paths {
    fn new(work: &Path) -> Paths {
        Paths {
            site: work.join("site"),
            state: work.join("state"),
            stdout_log: work.join("provisioner.stdout.log"),
            stderr_log: work.join("provisioner.stderr.log"),
            peer_root: work.join("peer/www"),
            peer_work: work.join("peer"),
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    let bin = match &args.provisioner {
        Some(bin) => bin.clone(),
        None => build_provisioner()?,
    };
    ensure!(
        bin.is_file(),
        "no provisioner binary at {} (build it with `cargo build --release -p provisioner`, \
         or leave out --provisioner)",
        bin.display()
    );
    let work = tempfile::Builder::new()
        .prefix("xtask-bench-api-")
        .tempdir()
        .context("creating the work directory")?;
    let paths = Paths::new(work.path());
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(bench(args, &bin, &paths));
    // Every child has been stopped by now (their guards live inside `bench`).
    match result {
        Ok(report) => {
            print_report(args, &report);
            if args.keep {
                println!("bench api: work directory kept: {}", work.keep().display());
            }
            Ok(())
        }
        Err(e) => {
            let kept = work.keep();
            Err(anyhow::anyhow!(
                "bench api: {e:#}\n\ndaemon stderr log: {}\n{}work directory kept: {}",
                paths.stderr_log.display(),
                log_tail(&paths.stderr_log, 20),
                kept.display()
            ))
        }
    }
}

/// The last `lines` lines of a log file, indented, or a note when it is empty or unreadable.
fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            tail.iter().map(|l| format!("  | {l}\n")).collect()
        }
        Ok(_) => "  (empty)\n".to_owned(),
        Err(e) => format!("  (unreadable: {e})\n"),
    }
}

async fn bench(args: &Args, bin: &Path, paths: &Paths) -> Result<Report> {
    let n = args.nodes;
    let port = free_port()?;
    write_site(&paths.site, port, n)
        .with_context(|| format!("writing the site to {}", paths.site.display()))?;
    std::fs::create_dir_all(&paths.state)?;

    // 1. Validation.
    println!("bench api: provisioner site validate ({n} nodes)");
    let t = Instant::now();
    let out = Command::new(bin)
        .args(["site", "validate"])
        .arg(&paths.site)
        .env("BENCH_BMC_PASSWORD", "bench")
        .output()
        .with_context(|| format!("running {} site validate", bin.display()))?;
    let validate = t.elapsed();
    if !out.status.success() {
        bail!(
            "`provisioner site validate {}` failed ({}):\n{}{}",
            paths.site.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // 2. Start and wait for the site to be loaded.
    println!("bench api: provisioner serve on 127.0.0.1:{port}");
    let base = format!("http://127.0.0.1:{port}");
    let nodes_url = format!("{base}/api/v1/nodes");
    let spawned = Instant::now();
    let mut daemon = ChildGuard::spawn(
        "provisioner serve",
        Command::new(bin)
            .arg("serve")
            .arg("--site")
            .arg(&paths.site)
            .arg("--state")
            .arg(&paths.state)
            .args(["--log-format", "json"])
            .env("BENCH_BMC_PASSWORD", "bench")
            .stdin(Stdio::null())
            .stdout(File::create(&paths.stdout_log)?)
            .stderr(File::create(&paths.stderr_log)?),
    )?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let deadline = spawned + Duration::from_secs(args.ready_timeout);
    let token_path = paths.state.join("api-token");
    let mut healthz_ready = None;
    let mut token = None;
    let site_load = loop {
        if let Some(status) = daemon.exited()? {
            bail!("the daemon exited ({status}) before it was ready");
        }
        if Instant::now() > deadline {
            let healthz = if healthz_ready.is_some() {
                "200"
            } else {
                "never 200"
            };
            let token_state = if token.is_some() { "read" } else { "missing" };
            bail!(
                "the daemon was not ready after {}s (GET /healthz: {healthz}; {}: {token_state}; \
                 GET /api/v1/nodes: never listed all {n} nodes)",
                args.ready_timeout,
                token_path.display(),
            );
        }
        if healthz_ready.is_none() {
            let ok = client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == reqwest::StatusCode::OK);
            if ok {
                healthz_ready = Some(spawned.elapsed());
            }
        }
        if healthz_ready.is_some() && token.is_none() {
            token = std::fs::read_to_string(&token_path)
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty());
        }
        if let Some(token) = &token
            && let Ok(resp) = client.get(&nodes_url).bearer_auth(token).send().await
            && resp.status().is_success()
            && let Ok(body) = resp.bytes().await
            && json_array_len(&body).is_ok_and(|len| len == n as usize)
        {
            break spawned.elapsed();
        }
        tokio::time::sleep(POLL).await;
    };
    let token = token.context("ready without a token")?;
    let healthz_ready = healthz_ready.context("ready without healthz")?;

    // 3. API latency.
    println!("bench api: {} x GET /api/v1/nodes", args.requests);
    let api = measure_gets(&client, &nodes_url, Some(&token), args.requests, n as usize).await?;

    // 4. The CLI, end to end.
    println!(
        "bench api: {} x provisioner node list -o json",
        args.cli_runs
    );
    let mut cli_times = vec![];
    for _ in 0..args.cli_runs {
        let t = Instant::now();
        let out = Command::new(bin)
            .args(["node", "list", "-o", "json", "--api", &base])
            .env("PROVISIONER_TOKEN", &token)
            .stdin(Stdio::null())
            .output()
            .context("running provisioner node list")?;
        cli_times.push(t.elapsed());
        if !out.status.success() {
            bail!(
                "`provisioner node list -o json --api {base}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .context("`provisioner node list -o json` printed something that is not JSON")?;
    }
    let cli = Summary::of(&cli_times).context("no CLI timings")?;

    // 5. Memory, then a graceful stop.
    let (vm_rss_kib, vm_hwm_kib) = memory_kib(daemon.pid())?;
    let shutdown = match daemon.stop()? {
        Stopped::Terminated(d) => format!("SIGTERM, exited in {:.0} ms", ms(d)),
        Stopped::Killed => format!(
            "ignored SIGTERM for {} s, killed",
            super::process::GRACE.as_secs()
        ),
        Stopped::AlreadyExited(status) => format!("had already exited ({status})"),
    };

    // 6. The peer, serving the exact same bytes.
    std::fs::create_dir_all(&paths.peer_root)?;
    std::fs::write(paths.peer_root.join("nodes.json"), &api.last_body)?;
    let mut peer = StaticServer::start(&paths.peer_root, &paths.peer_work)?;
    println!("bench api: peer {} on 127.0.0.1:{}", peer.name, peer.port);
    let peer_url = format!("http://127.0.0.1:{}/nodes.json", peer.port);
    let peer_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = peer.guard.exited()? {
            bail!(
                "peer {} exited ({status}); see {}",
                peer.name,
                peer.log.display()
            );
        }
        if client
            .get(&peer_url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        if Instant::now() > peer_deadline {
            bail!(
                "peer {} not ready after 10 s; see {}",
                peer.name,
                peer.log.display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    let peer_gets = measure_gets(&client, &peer_url, None, args.requests, n as usize).await?;

    Ok(Report {
        nodes: n,
        validate,
        healthz_ready,
        site_load,
        body_bytes: api.last_body.len(),
        api,
        cli,
        vm_rss_kib,
        vm_hwm_kib,
        shutdown,
        peer_name: peer.name,
        peer: peer_gets,
    })
}

fn print_report(args: &Args, r: &Report) {
    let ratio = |ours: Duration, peer: Duration| ours.as_secs_f64() / peer.as_secs_f64();
    let ratio_full = ratio(r.api.full.p50, r.peer.full.p50);
    let ratio_transfer = ratio(r.api.transfer.p50, r.peer.transfer.p50);
    let peer = r.peer_name;
    let t = |d: Duration| format!("{:.3} ms", ms(d));
    println!();
    println!(
        "bench api: {} nodes, {} sequential requests, body {} bytes, peer: {peer}",
        r.nodes, args.requests, r.body_bytes
    );
    let rows: Vec<(String, String)> = vec![
        ("site validate".into(), t(r.validate)),
        ("spawn -> /healthz 200".into(), t(r.healthz_ready)),
        (
            "spawn -> all nodes listed (site load)".into(),
            t(r.site_load),
        ),
        ("GET /api/v1/nodes p50".into(), t(r.api.full.p50)),
        ("GET /api/v1/nodes p99".into(), t(r.api.full.p99)),
        ("GET /api/v1/nodes max".into(), t(r.api.full.max)),
        (format!("peer {peer} p50"), t(r.peer.full.p50)),
        (format!("peer {peer} p99"), t(r.peer.full.p99)),
        (format!("peer {peer} max"), t(r.peer.full.max)),
        ("ratio p50 ours / peer".into(), format!("{ratio_full:.2}")),
        ("  body read only: ours p50".into(), t(r.api.transfer.p50)),
        ("  body read only: peer p50".into(), t(r.peer.transfer.p50)),
        (
            "  body read only: ratio p50".into(),
            format!("{ratio_transfer:.2}"),
        ),
        (
            format!("node list -o json p50 ({} runs)", r.cli.count),
            t(r.cli.p50),
        ),
        (
            "daemon VmRSS after requests".into(),
            format!("{} KiB", r.vm_rss_kib),
        ),
        ("daemon VmHWM".into(), format!("{} KiB", r.vm_hwm_kib)),
        ("daemon shutdown".into(), r.shutdown.clone()),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v:>12}");
    }
    let round3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let line = json!({
        "bench": "api",
        "nodes": r.nodes,
        "requests": args.requests,
        "body_bytes": r.body_bytes,
        "validate_ms": ms(r.validate),
        "healthz_ready_ms": ms(r.healthz_ready),
        "site_load_ms": ms(r.site_load),
        "api_p50_ms": ms(r.api.full.p50),
        "api_p99_ms": ms(r.api.full.p99),
        "api_max_ms": ms(r.api.full.max),
        "api_transfer_p50_ms": ms(r.api.transfer.p50),
        "peer": peer,
        "peer_p50_ms": ms(r.peer.full.p50),
        "peer_p99_ms": ms(r.peer.full.p99),
        "peer_max_ms": ms(r.peer.full.max),
        "peer_transfer_p50_ms": ms(r.peer.transfer.p50),
        "ratio_p50": round3(ratio_full),
        "ratio_transfer_p50": round3(ratio_transfer),
        "cli_runs": r.cli.count,
        "cli_p50_ms": ms(r.cli.p50),
        "vm_rss_kib": r.vm_rss_kib,
        "vm_hwm_kib": r.vm_hwm_kib,
        "shutdown": r.shutdown,
    });
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use yaml_rust2::YamlLoader;

    #[test]
    fn nodes_yaml_has_unique_names_macs_and_serials() {
        let n = 1000;
        let docs = YamlLoader::load_from_str(&nodes_yaml(n)).unwrap();
        let nodes = docs[0]["nodes"].as_vec().unwrap();
        assert_eq!(nodes.len(), n as usize);
        let mut names = HashSet::new();
        let mut macs = HashSet::new();
        let mut serials = HashSet::new();
        for node in nodes {
            assert!(names.insert(node["name"].as_str().unwrap().to_owned()));
            let mac = node["boot_mac"].as_str().unwrap();
            assert!(mac.starts_with("52:54:00:") && mac.len() == 17, "{mac}");
            assert!(macs.insert(mac.to_owned()));
            assert!(serials.insert(node["serial"].as_str().unwrap().to_owned()));
            let bmc = &node["bmc"];
            assert!(
                bmc["url"]
                    .as_str()
                    .unwrap()
                    .starts_with("redfish+http://127.0.0.1:9000/")
            );
            assert_eq!(bmc["username"].as_str(), Some("admin"));
            assert_eq!(bmc["password_env"].as_str(), Some("BENCH_BMC_PASSWORD"));
        }
        assert_eq!(nodes[0]["name"].as_str(), Some("node-00001"));
        assert_eq!(nodes[0]["boot_mac"].as_str(), Some("52:54:00:00:00:01"));
        assert_eq!(
            nodes[0]["bmc"]["url"].as_str(),
            Some("redfish+http://127.0.0.1:9000/redfish/v1/Systems/00001")
        );
        assert_eq!(nodes[0]["serial"].as_str(), Some("SN00001"));
    }

    #[test]
    fn macs_stay_unique_past_one_byte_and_two_bytes() {
        let macs: HashSet<_> = [1, 255, 256, 65535, 65536, 70000]
            .into_iter()
            .map(|i| node_fields(i).2)
            .collect();
        assert_eq!(macs.len(), 6);
        assert_eq!(node_fields(65536).2, "52:54:00:01:00:00");
    }

    #[test]
    fn site_yaml_matches_the_contract() {
        let docs = YamlLoader::load_from_str(&site_yaml(4242)).unwrap();
        let site = &docs[0];
        assert_eq!(site["network"]["interface"].as_str(), Some("lo"));
        assert_eq!(site["network"]["address"].as_str(), Some("127.0.0.1/8"));
        assert_eq!(site["network"]["dhcp"]["mode"].as_str(), Some("off"));
        assert_eq!(site["api"]["listen"].as_str(), Some("127.0.0.1:4242"));
        assert!(site["images"].as_vec().unwrap().is_empty());
    }

    #[test]
    fn write_site_creates_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        write_site(dir.path(), 1, 3).unwrap();
        assert!(dir.path().join("profiles").is_dir());
        assert!(dir.path().join("site.yaml").is_file());
        let nodes = std::fs::read_to_string(dir.path().join("nodes.yaml")).unwrap();
        assert_eq!(nodes.matches("- name: node-").count(), 3);
    }

    #[test]
    fn memory_of_this_process() {
        let (rss, hwm) = memory_kib(std::process::id()).unwrap();
        assert!(rss > 0 && hwm >= rss);
    }
}
