//! `cargo xtask bench bmc`: N concurrent power-status queries through the Redfish driver
//! against N in-process fake Redfish services (sessions and passwords on), p50/p99 latency
//! and the driver's memory.
//!
//! Both halves are `provisioner/examples/bmc_bench.rs`, built in release mode with the
//! `testing` feature (which holds `bmc::fake_redfish`): `serve` (the fakes) and `query`
//! (the drivers) run as two processes so the memory figure is the driver's alone. The serving child is owned by a [`ChildGuard`], stopped on every exit.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use super::process::ChildGuard;
use super::stats::{Summary, ms};

pub const LONG_ABOUT: &str = "\
Benchmark the Redfish BMC driver.

Builds provisioner's `bmc_bench` example in release mode, starts --bmcs fake Redfish services \
(one process, each on its own 127.0.0.1 port, session authentication on), then in a second \
process connects one driver per service (service root, session login, system lookup) and \
runs --rounds rounds of --bmcs concurrent power-status queries. Reports connect time, query \
latency p50/p99/max over every query, and the query process's memory: VmRSS before \
connecting, after connecting, after the queries, and VmHWM; the driver's share is the \
difference from the start. Prints a table, then one line of JSON.";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of fake BMCs (and concurrent queries per round).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=5000))]
    bmcs: u32,
    /// Rounds of concurrent queries.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
}

fn build() -> Result<PathBuf> {
    println!(
        "bench bmc: cargo build --release -p provisioner --example bmc_bench --features testing"
    );
    let status = crate::workspace::cargo()
        .args([
            "build",
            "--release",
            "-p",
            "provisioner",
            "--example",
            "bmc_bench",
            // The fake Redfish services are test doubles, behind the `testing` feature.
            "--features",
            "testing",
        ])
        .status()
        .context("running cargo build")?;
    ensure!(
        status.success(),
        "building the bmc_bench example failed ({status})"
    );
    let bin = crate::workspace::target_dir()?.join("release/examples/bmc_bench");
    ensure!(
        bin.is_file(),
        "cargo built bmc_bench but {} does not exist",
        bin.display()
    );
    Ok(bin)
}

fn kib(v: &Value, key: &str) -> Result<u64> {
    v[key]
        .as_u64()
        .with_context(|| format!("bmc_bench query output has no {key}"))
}

pub fn run(args: &Args) -> Result<()> {
    let bin = build()?;
    let mut server = ChildGuard::spawn(
        "bmc_bench serve",
        Command::new(&bin)
            .args(["serve", "--count", &args.bmcs.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    )?;
    let stdout = server
        .take_stdout()
        .context("bmc_bench serve has no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the fake BMCs' URLs")?;
    let urls: Value = serde_json::from_str(&line)
        .with_context(|| format!("bmc_bench serve printed {line:?}, not its URLs"))?;
    let work = tempfile::tempdir()?;
    let urls_file = work.path().join("urls.json");
    std::fs::write(&urls_file, urls["urls"].to_string())?;
    println!(
        "bench bmc: {} fake Redfish BMCs up (pid {}); querying",
        args.bmcs,
        server.pid()
    );
    let out = Command::new(&bin)
        .args(["query", "--rounds", &args.rounds.to_string(), "--urls-file"])
        .arg(&urls_file)
        .stderr(Stdio::inherit())
        .output()
        .context("running bmc_bench query")?;
    ensure!(
        out.status.success(),
        "bmc_bench query failed ({})",
        out.status
    );
    let report: Value =
        serde_json::from_slice(&out.stdout).context("parsing bmc_bench query output")?;
    server.stop()?;

    let latencies: Vec<Duration> = report["latencies_us"]
        .as_array()
        .context("no latencies")?
        .iter()
        .filter_map(Value::as_u64)
        .map(Duration::from_micros)
        .collect();
    let summary = Summary::of(&latencies).context("no successful query")?;
    let errors = report["errors"].as_u64().unwrap_or(0);
    let start = kib(&report, "rss_start_kib")?;
    let connected = kib(&report, "rss_connected_kib")?;
    let end = kib(&report, "rss_end_kib")?;
    let hwm = kib(&report, "hwm_end_kib")?;
    let per_bmc = (hwm.saturating_sub(start)) as f64 / f64::from(args.bmcs);
    let t = |d: Duration| format!("{:.3} ms", ms(d));
    println!();
    println!(
        "bench bmc: {} BMCs x {} rounds of concurrent power-status queries",
        args.bmcs, args.rounds
    );
    let rows = [
        (
            "connect all (root + session + system)".to_owned(),
            format!("{:.1} ms", report["connect_ms"].as_f64().unwrap_or(0.0)),
        ),
        (
            "queries".to_owned(),
            format!("{} ok, {errors} failed", summary.count),
        ),
        ("power status p50".to_owned(), t(summary.p50)),
        ("power status p99".to_owned(), t(summary.p99)),
        ("power status max".to_owned(), t(summary.max)),
        ("VmRSS before connecting".to_owned(), format!("{start} KiB")),
        ("VmRSS connected".to_owned(), format!("{connected} KiB")),
        ("VmRSS after queries".to_owned(), format!("{end} KiB")),
        ("VmHWM".to_owned(), format!("{hwm} KiB")),
        (
            "driver memory per BMC (HWM - start)".to_owned(),
            format!("{per_bmc:.1} KiB"),
        ),
    ];
    for (k, v) in &rows {
        println!("  {k:<40} {v}");
    }
    println!(
        "{}",
        json!({
            "bench": "bmc",
            "bmcs": args.bmcs,
            "rounds": args.rounds,
            "errors": errors,
            "connect_ms": report["connect_ms"],
            "p50_ms": ms(summary.p50),
            "p99_ms": ms(summary.p99),
            "max_ms": ms(summary.max),
            "rss_start_kib": start,
            "rss_connected_kib": connected,
            "rss_end_kib": end,
            "hwm_kib": hwm,
            "driver_kib_per_bmc": per_bmc,
        })
    );
    ensure!(errors == 0, "{errors} power-status queries failed");
    Ok(())
}
