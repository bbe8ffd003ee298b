//! The two halves of `cargo xtask bench bmc` (run it through xtask, which builds this in
//! release mode and reports the figures):
//!
//! - `bmc_bench serve --count N`: N in-process fake Redfish services (sessions, passwords)
//!   on 127.0.0.1; prints `{"urls": [...]}` on one line, then serves until stdin closes.
//! - `bmc_bench query --urls-file F --rounds R`: connects one Redfish driver per URL, then R
//!   rounds of all power-status queries at once; prints one line of JSON with every latency
//!   (microseconds) and this process's memory before and after.
//!
//! The halves are separate processes so the memory measured is the driver's alone.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use provisioner::bmc::fake_redfish::{FakeRedfish, FakeRedfishOptions};
use provisioner::bmc::redfish::RedfishBmc;
use provisioner::bmc::{Bmc, BmcConfig, Credentials, Secret};
use serde_json::json;

/// `VmRSS` and `VmHWM` of this process, KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn serve(count: usize) -> Result<()> {
    let mut fakes = Vec::with_capacity(count);
    for _ in 0..count {
        fakes.push(FakeRedfish::start(FakeRedfishOptions::default()).await?);
    }
    let urls: Vec<String> = fakes.iter().map(FakeRedfish::url).collect();
    println!("{}", json!({ "urls": urls }));
    // Serve until the parent closes our stdin (or kills us).
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    })
    .await?;
    Ok(())
}

async fn query(urls: Vec<String>, rounds: usize) -> Result<()> {
    let (rss_start, _) = memory_kib();
    let connect_started = Instant::now();
    let mut connecting = tokio::task::JoinSet::new();
    for url in urls {
        connecting.spawn(async move {
            let mut config = BmcConfig::new(
                url.parse()?,
                Some(Credentials {
                    username: "admin".to_owned(),
                    password: Secret::new("password"),
                }),
            );
            config.timeout = Duration::from_secs(10);
            anyhow::Ok(RedfishBmc::connect(config).await?)
        });
    }
    let mut bmcs = vec![];
    while let Some(joined) = connecting.join_next().await {
        bmcs.push(std::sync::Arc::new(joined??));
    }
    let connect_ms = connect_started.elapsed().as_secs_f64() * 1e3;
    let (rss_connected, _) = memory_kib();
    let mut latencies_us = Vec::with_capacity(bmcs.len() * rounds);
    let mut errors = 0usize;
    let started = Instant::now();
    for _ in 0..rounds {
        let mut round = tokio::task::JoinSet::new();
        for bmc in &bmcs {
            let bmc = bmc.clone();
            round.spawn(async move {
                let t = Instant::now();
                let result = bmc.power_state().await;
                (t.elapsed(), result.is_ok())
            });
        }
        while let Some(joined) = round.join_next().await {
            let (took, ok) = joined?;
            if ok {
                latencies_us.push(took.as_micros() as u64);
            } else {
                errors += 1;
            }
        }
    }
    let wall_ms = started.elapsed().as_secs_f64() * 1e3;
    let (rss_end, hwm_end) = memory_kib();
    for bmc in &bmcs {
        bmc.close().await?;
    }
    println!(
        "{}",
        json!({
            "bmcs": bmcs.len(),
            "rounds": rounds,
            "errors": errors,
            "connect_ms": connect_ms,
            "wall_ms": wall_ms,
            "latencies_us": latencies_us,
            "rss_start_kib": rss_start,
            "rss_connected_kib": rss_connected,
            "rss_end_kib": rss_end,
            "hwm_end_kib": hwm_end,
        })
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("serve") => {
            let count = flag("--count").unwrap_or_else(|| "200".into()).parse()?;
            runtime.block_on(serve(count))
        }
        Some("query") => {
            let file = flag("--urls-file").context("query needs --urls-file FILE")?;
            let rounds = flag("--rounds").unwrap_or_else(|| "20".into()).parse()?;
            let urls: Vec<String> = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
            runtime.block_on(query(urls, rounds))
        }
        _ => bail!("usage: bmc_bench serve --count N | query --urls-file FILE [--rounds R]"),
    }
}
