//! `cargo xtask bench dhcp`: the DHCP server of `provisioner serve` (leases
//! persisted) against Kea (memfile, persist=true) and dnsmasq, each loaded by
//! Kea's `perfdhcp` over a veth pair between two network namespaces, the same
//! rate ladder in the same run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use hardware_tests::lab::VethPair;

use super::process::ChildGuard;
use crate::deps::Dep;

pub const LONG_ABOUT: &str = "\
Measures the DHCPv4 server of `provisioner serve` (full mode, every lease committed to SQLite
before its reply leaves) next to Kea 2.2 (memfile, persist=true) and dnsmasq (no-ping,
leasefile-ro), in the same run. Each server runs in its own pair of network namespaces joined
by a veth pair (dh<pid>b<N>...; removed afterwards); Kea's perfdhcp runs in the client
namespace:

  perfdhcp -4 -l <veth> -r RATE -p SECONDS -R CLIENTS 10.77.0.1

for each RATE of the ladder. Prints, per server and rate, the 4-way exchanges per second
perfdhcp completed and the drops (1 - ACKs received / DISCOVERs sent), then the highest
exchange rate each server sustained at <= 1 % drops and our ratio to Kea and to dnsmasq.
Also prints the server process's CPU time per completed exchange (/proc/PID/stat), which
stays meaningful when other work shares the machine's cores.
Installs kea-dhcp4-server, kea-admin (perfdhcp) and dnsmasq-base when missing (as root).";

const BENCH_DEPS: &[Dep] = &[
    Dep {
        package: "kea-dhcp4-server",
        why: "the peer DHCP server Kea",
        from_backports: false,
    },
    Dep {
        package: "kea-admin",
        why: "perfdhcp, the load generator",
        from_backports: false,
    },
    Dep {
        package: "dnsmasq-base",
        why: "the peer DHCP server dnsmasq",
        from_backports: false,
    },
    Dep {
        package: "curl",
        why: "reads the provisioner's /metrics (commit batch sizes)",
        from_backports: false,
    },
];

const SERVER: &str = "10.77.0.1";
const FIRST: &str = "10.77.1.0";
const LAST: &str = "10.77.255.254";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Offered rates (DORA exchanges per second), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,5000,10000,20000"
    )]
    rates: Vec<u32>,
    /// Seconds perfdhcp runs at each rate.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Distinct client MACs perfdhcp uses (-R).
    #[arg(long, default_value_t = 60000)]
    clients: u32,
    /// Use this provisioner binary instead of building one.
    #[arg(long, value_name = "PATH")]
    provisioner: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Ours,
    Kea,
    Dnsmasq,
}

impl Server {
    const ALL: [Server; 3] = [Server::Ours, Server::Kea, Server::Dnsmasq];

    fn name(self) -> &'static str {
        match self {
            Server::Ours => "provisioner",
            Server::Kea => "kea",
            Server::Dnsmasq => "dnsmasq",
        }
    }
}

/// What perfdhcp reported for one run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Step {
    offered: u32,
    /// 4-way exchanges per second.
    exchanges: f64,
    discover_sent: u64,
    offer_received: u64,
    request_sent: u64,
    ack_received: u64,
    /// CPU time the server process used during the run, in seconds.
    server_cpu: f64,
}

impl Step {
    /// 1 - ACKs received / DISCOVERs sent, in percent.
    /// Server CPU microseconds per completed exchange (ACK received).
    fn cpu_us_per_exchange(&self) -> f64 {
        if self.ack_received == 0 {
            return f64::NAN;
        }
        1e6 * self.server_cpu / self.ack_received as f64
    }

    fn drops_percent(&self) -> f64 {
        if self.discover_sent == 0 {
            return 100.0;
        }
        100.0 * (1.0 - self.ack_received as f64 / self.discover_sent as f64)
    }

    /// At most 1 % drops (exact integer arithmetic, no rounding surprise at 1 %).
    fn within_one_percent(&self) -> bool {
        self.discover_sent > 0
            && 100 * self.discover_sent.saturating_sub(self.ack_received) <= self.discover_sent
    }
}

/// Reads perfdhcp's report: the `Rate:` line and the sent/received counts of
/// the DISCOVER-OFFER and REQUEST-ACK blocks.
fn parse_perfdhcp(offered: u32, text: &str) -> Result<Step> {
    let mut step = Step {
        offered,
        ..Step::default()
    };
    let mut block = "";
    let mut rate = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Rate:") {
            let value = rest.split_whitespace().next().unwrap_or("");
            rate = Some(
                value
                    .parse::<f64>()
                    .with_context(|| format!("perfdhcp rate {value:?}"))?,
            );
        } else if line.starts_with("***Statistics for:") {
            block = if line.contains("DISCOVER-OFFER") {
                "do"
            } else if line.contains("REQUEST-ACK") {
                "ra"
            } else {
                ""
            };
        } else if let Some((key, value)) = line.split_once(':') {
            let Ok(n) = value.trim().parse::<u64>() else {
                continue;
            };
            match (block, key) {
                ("do", "sent packets") => step.discover_sent = n,
                ("do", "received packets") => step.offer_received = n,
                ("ra", "sent packets") => step.request_sent = n,
                ("ra", "received packets") => step.ack_received = n,
                _ => {}
            }
        }
    }
    step.exchanges = rate.context("perfdhcp printed no `Rate:` line")?;
    if step.discover_sent == 0 {
        bail!("perfdhcp printed no DISCOVER-OFFER statistics");
    }
    Ok(step)
}

pub fn run(args: &Args) -> Result<()> {
    crate::deps::ensure(BENCH_DEPS, false)?;
    let bin = match &args.provisioner {
        Some(bin) => bin.clone(),
        None => super::api::build_provisioner()?,
    };
    let work = tempfile::Builder::new()
        .prefix("xtask-bench-dhcp-")
        .tempdir()?;
    let mut results = Vec::new();
    for (i, server) in Server::ALL.into_iter().enumerate() {
        let pair = VethPair::create(
            "dh",
            &format!("b{i}"),
            &format!("{SERVER}/16"),
            Some("10.77.0.2/16"),
        )?;
        let dir = work.path().join(server.name());
        std::fs::create_dir_all(&dir)?;
        println!("bench dhcp: starting {}", server.name());
        let guard = start(server, &bin, &pair, &dir)?;
        wait_ready(server, &pair, &dir)?;
        let mut steps = Vec::new();
        for &rate in &args.rates {
            let before = cpu_seconds(guard.pid())?;
            let mut step = perfdhcp(&pair, rate, args)?;
            step.server_cpu = cpu_seconds(guard.pid())? - before;
            println!(
                "bench dhcp: {:<12} offered {:>6}/s: {:>8.0} exchanges/s, drops {:>5.1} %, \
                 server CPU {:>5.1} us/exchange",
                server.name(),
                rate,
                step.exchanges,
                step.drops_percent(),
                step.cpu_us_per_exchange()
            );
            steps.push(step);
        }
        if server == Server::Ours {
            print_commit_figures(&pair, &dir);
        }
        drop(guard);
        results.push((server, steps));
    }
    report(args, &results);
    Ok(())
}

fn start(server: Server, bin: &Path, pair: &VethPair, dir: &Path) -> Result<ChildGuard> {
    let log = std::fs::File::create(dir.join("server.log"))?;
    let guard = match server {
        Server::Ours => {
            let site = dir.join("site");
            std::fs::create_dir_all(&site)?;
            std::fs::write(
                site.join("site.yaml"),
                format!(
                    "network:\n  interface: {}\n  address: {SERVER}/16\n  dhcp:\n    mode: full\n    \
                     range: [{FIRST}, {LAST}]\n    router: {SERVER}\n    lease_time: 3600\n    answer: all\n\
                     api:\n  listen: 127.0.0.1:0\nboot:\n  tftp:\n    enabled: false\n",
                    pair.server_if
                ),
            )?;
            std::fs::write(site.join("nodes.yaml"), "nodes: []\n")?;
            ChildGuard::spawn(
                "provisioner serve",
                pair.in_server(&bin.to_string_lossy())
                    .args(["serve", "--site"])
                    .arg(&site)
                    .arg("--state")
                    .arg(dir.join("state"))
                    .args(["--site-poll-interval", "0", "--power-sync-interval", "0"])
                    .stdout(log.try_clone()?)
                    .stderr(log),
            )?
        }
        Server::Kea => {
            let conf = dir.join("kea.json");
            std::fs::write(&conf, kea_config(&pair.server_if, dir))?;
            ChildGuard::spawn(
                "kea-dhcp4",
                pair.in_server("kea-dhcp4")
                    .arg("-c")
                    .arg(&conf)
                    .env("KEA_PIDFILE_DIR", dir)
                    .env("KEA_LOCKFILE_DIR", dir)
                    .stdout(log.try_clone()?)
                    .stderr(log),
            )?
        }
        Server::Dnsmasq => ChildGuard::spawn(
            "dnsmasq",
            pair.in_server("dnsmasq")
                .args([
                    "--no-daemon",
                    "--conf-file=/dev/null",
                    "--port=0",
                    "--bind-interfaces",
                    "--no-ping",
                    "--leasefile-ro",
                    "--quiet-dhcp",
                    "--dhcp-lease-max=200000",
                    "--log-facility=-",
                ])
                .arg(format!("--interface={}", pair.server_if))
                .arg(format!("--dhcp-range={FIRST},{LAST},255.255.0.0,1h"))
                .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
                .stdout(log.try_clone()?)
                .stderr(log),
        )?,
    };
    Ok(guard)
}

fn kea_config(interface: &str, dir: &Path) -> String {
    serde_json::json!({
        "Dhcp4": {
            "interfaces-config": { "interfaces": [interface], "dhcp-socket-type": "udp" },
            "lease-database": {
                "type": "memfile",
                "persist": true,
                "name": dir.join("kea-leases4.csv"),
                "lfc-interval": 0
            },
            "valid-lifetime": 3600,
            "renew-timer": 1800,
            "rebind-timer": 3150,
            "subnet4": [{
                "id": 1,
                "subnet": "10.77.0.0/16",
                "pools": [{ "pool": format!("{FIRST} - {LAST}") }],
                "option-data": [{ "name": "routers", "data": SERVER }]
            }],
            "loggers": [{
                "name": "kea-dhcp4",
                "output_options": [{ "output": "stdout" }],
                "severity": "WARN"
            }]
        }
    })
    .to_string()
}

/// Ready when a one-second perfdhcp run gets an ACK (30 s at most).
fn wait_ready(server: Server, pair: &VethPair, dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = pair
            .in_client("perfdhcp")
            .args([
                "-4",
                "-l",
                &pair.client_if,
                "-r",
                "50",
                "-p",
                "1",
                "-R",
                "50",
                SERVER,
            ])
            .stdin(Stdio::null())
            .output()
            .context("running perfdhcp (package kea-admin)")?;
        let acks = parse_perfdhcp(50, &String::from_utf8_lossy(&out.stdout))
            .map(|s| s.ack_received)
            .unwrap_or(0);
        if acks > 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!(
                "{} answered no DHCP exchange within 30 s; its log ends with:\n{}",
                server.name(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn perfdhcp(pair: &VethPair, rate: u32, args: &Args) -> Result<Step> {
    let out = pair
        .in_client("perfdhcp")
        .args(["-4", "-l", &pair.client_if])
        .args(["-r", &rate.to_string()])
        .args(["-p", &args.seconds.to_string()])
        .args(["-R", &args.clients.to_string()])
        .arg(SERVER)
        .stdin(Stdio::null())
        .output()
        .context("running perfdhcp")?;
    // perfdhcp exits 3 when it saw drops: a result, not a failure.
    if !matches!(out.status.code(), Some(0 | 3)) {
        bail!(
            "perfdhcp failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_perfdhcp(rate, &String::from_utf8_lossy(&out.stdout))
}

/// User + system CPU seconds of a process so far (`/proc/PID/stat`, clock
/// ticks of 1/100 s, the Linux `USER_HZ` on every architecture we run on).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat: did the server exit?"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / 100.0)
        .with_context(|| format!("unexpected /proc/{pid}/stat: {stat}"))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line; the command
/// name in parentheses may contain spaces, so fields count from its `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": field 3 (state) is index 0, so utime (14) is index 11.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Average packets per commit and commit time, from the provisioner's /metrics.
fn print_commit_figures(pair: &VethPair, dir: &Path) {
    let Ok(url) = std::fs::read_to_string(dir.join("state/api-url")) else {
        return;
    };
    let Ok(out) = pair
        .in_server("curl")
        .args(["-sf", &format!("{}/metrics", url.trim())])
        .output()
    else {
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let commits = value("provisioner_dhcp_commit_batch_packets_count");
    if commits > 0.0 {
        println!(
            "bench dhcp: provisioner: {commits:.0} commits, {:.1} packets per commit on average, \
             {:.2} ms per commit on average",
            value("provisioner_dhcp_commit_batch_packets_sum") / commits,
            1000.0 * value("provisioner_dhcp_commit_duration_seconds_sum") / commits
        );
    }
}

/// The highest exchange rate at <= 1 % drops.
fn best(steps: &[Step]) -> f64 {
    steps
        .iter()
        .filter(|s| s.within_one_percent())
        .map(|s| s.exchanges)
        .fold(0.0, f64::max)
}

fn report(args: &Args, results: &[(Server, Vec<Step>)]) {
    println!();
    println!(
        "bench dhcp: perfdhcp -r RATE -p {} -R {} over a veth pair; exchanges/s (drops %) [server CPU us/exchange]",
        args.seconds, args.clients
    );
    print!("{:>10}", "offered/s");
    for (server, _) in results {
        print!("{:>30}", server.name());
    }
    println!();
    for (i, rate) in args.rates.iter().enumerate() {
        print!("{rate:>10}");
        for (_, steps) in results {
            let s = steps[i];
            print!(
                "{:>14.0} ({:>5.1}) [{:>5.1}]",
                s.exchanges,
                s.drops_percent(),
                s.cpu_us_per_exchange()
            );
        }
        println!();
    }
    let best_of = |which: Server| {
        results
            .iter()
            .find(|(s, _)| *s == which)
            .map_or(0.0, |(_, steps)| best(steps))
    };
    let (ours, kea, dnsmasq) = (
        best_of(Server::Ours),
        best_of(Server::Kea),
        best_of(Server::Dnsmasq),
    );
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "n/a (peer figure is 0)".to_owned()
        }
    };
    println!(
        "best exchanges/s at <= 1 % drops: provisioner {ours:.0}, kea {kea:.0}, dnsmasq {dnsmasq:.0}"
    );
    println!(
        "ratio provisioner/kea {}, provisioner/dnsmasq {}",
        ratio(ours, kea),
        ratio(ours, dnsmasq)
    );
    let peak_of = |which: Server| {
        results
            .iter()
            .find(|(s, _)| *s == which)
            .map_or(0.0, |(_, steps)| {
                steps.iter().map(|s| s.exchanges).fold(0.0, f64::max)
            })
    };
    let (p_ours, p_kea, p_dnsmasq) = (
        peak_of(Server::Ours),
        peak_of(Server::Kea),
        peak_of(Server::Dnsmasq),
    );
    println!(
        "peak exchanges/s at any drops: provisioner {p_ours:.0}, kea {p_kea:.0}, dnsmasq {p_dnsmasq:.0} \
         (provisioner/kea {}, provisioner/dnsmasq {})",
        ratio(p_ours, p_kea),
        ratio(p_ours, p_dnsmasq)
    );
    // CPU per exchange at the lowest rate (no drops anywhere): what each
    // server costs, independent of other load on the machine.
    let cpu_of = |which: Server| {
        results
            .iter()
            .find(|(s, _)| *s == which)
            .and_then(|(_, steps)| steps.first())
            .map_or(f64::NAN, Step::cpu_us_per_exchange)
    };
    let (c_ours, c_kea, c_dnsmasq) = (
        cpu_of(Server::Ours),
        cpu_of(Server::Kea),
        cpu_of(Server::Dnsmasq),
    );
    println!(
        "server CPU per exchange at {}/s: provisioner {c_ours:.1} us, kea {c_kea:.1} us, dnsmasq {c_dnsmasq:.1} us \
         (provisioner/kea {}, provisioner/dnsmasq {})",
        args.rates.first().copied().unwrap_or(0),
        ratio(c_ours, c_kea),
        ratio(c_ours, c_dnsmasq)
    );
    println!(
        "{{\"bench\":\"dhcp\",\"seconds\":{},\"clients\":{},\"best_ours\":{ours:.0},\"best_kea\":{kea:.0},\"best_dnsmasq\":{dnsmasq:.0}}}",
        args.seconds, args.clients
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Running: perfdhcp -4 -l dh1b -r 2000 -p 5 -R 60000 10.77.0.1
***Rate statistics***
Rate: 1994.43 4-way exchanges/second, expected rate: 2000

***Statistics for: DISCOVER-OFFER***
sent packets: 9999
received packets: 9996
drops: 3
drops ratio: 0.030003 %
orphans: 0

***Statistics for: REQUEST-ACK***
sent packets: 9996
received packets: 9976
drops: 20
drops ratio: 0.200 %
";

    #[test]
    fn perfdhcp_report_is_read() {
        let step = parse_perfdhcp(2000, SAMPLE).unwrap();
        assert_eq!(
            step,
            Step {
                offered: 2000,
                exchanges: 1994.43,
                discover_sent: 9999,
                offer_received: 9996,
                request_sent: 9996,
                ack_received: 9976,
                server_cpu: 0.0,
            }
        );
        assert!((step.drops_percent() - 0.230).abs() < 0.01);
        assert!(parse_perfdhcp(1, "garbage").is_err());
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "4242 (kea dhcp4) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(175));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn best_rate_ignores_steps_over_one_percent() {
        let step = |exchanges: f64, acks: u64| Step {
            exchanges,
            discover_sent: 1000,
            ack_received: acks,
            ..Step::default()
        };
        assert_eq!(
            best(&[step(900.0, 995), step(1900.0, 990), step(2500.0, 700)]),
            1900.0
        );
    }
}
