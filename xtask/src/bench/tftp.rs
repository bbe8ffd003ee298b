//! `cargo xtask bench tftp`: our TFTP server (inside `provisioner serve`) against dnsmasq's,
//! same files, same clients (atftp and curl), same run, on loopback.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use super::process::{ChildGuard, free_port, which};
use crate::deps::Dep;

pub const LONG_ABOUT: &str = "\
Measures the TFTP server that `provisioner serve` runs for PXE boot files, next to dnsmasq's
TFTP server, in the same run on loopback, with clients neither of them wrote:

  1. one large file (default 100 MiB) with atftp (blksize 1468, windowsize 8) and with curl
     (blksize 1468; curl has no windowsize), throughput in MiB/s;
  2. many clients at once (default 50 x 1 MiB, atftp), aggregate MiB/s and failed transfers.

Every received file is compared byte for byte with the original. Prints each figure and the
ratio ours / dnsmasq. Installs dnsmasq-base, atftp and curl when missing (as root). Uses UDP
port 69 on 127.0.0.1 for each server in turn.";

/// Packages the benchmark needs besides the test dependencies.
const BENCH_DEPS: &[Dep] = &[
    Dep {
        package: "dnsmasq-base",
        why: "the peer TFTP server",
        from_backports: false,
    },
    Dep {
        package: "atftp",
        why: "a TFTP client with windowsize (RFC 7440)",
        from_backports: false,
    },
    Dep {
        package: "curl",
        why: "a second TFTP client (blksize only)",
        from_backports: false,
    },
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Size of the single large file, in MiB.
    #[arg(long, default_value_t = 100)]
    size_mib: u64,
    /// Number of clients fetching the small file at once.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Size of the small file, in KiB.
    #[arg(long, default_value_t = 1024)]
    small_kib: u64,
    /// Use this provisioner binary instead of building one.
    #[arg(long, value_name = "PATH")]
    provisioner: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
enum Server {
    Ours,
    Dnsmasq,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Ours => "provisioner",
            Server::Dnsmasq => "dnsmasq",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Figures {
    atftp_mib_s: f64,
    curl_mib_s: f64,
    concurrent_mib_s: f64,
    concurrent_failed: usize,
    concurrent_secs: f64,
}

/// Deterministic pseudo-random bytes (incompressible enough, cheap to make).
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

pub fn run(args: &Args) -> Result<()> {
    crate::deps::ensure(BENCH_DEPS, false)?;
    let bin = match &args.provisioner {
        Some(bin) => bin.clone(),
        None => super::api::build_provisioner()?,
    };
    let work = tempfile::Builder::new()
        .prefix("xtask-bench-tftp-")
        .tempdir()?;
    // dnsmasq drops to `nobody`: everything it serves must be world-readable.
    set_mode(work.path(), 0o755)?;
    let files = work.path().join("files");
    std::fs::create_dir_all(&files)?;
    set_mode(&files, 0o755)?;
    let big = content((args.size_mib * 1024 * 1024) as usize, 7);
    let small = content((args.small_kib * 1024) as usize, 11);
    std::fs::write(files.join("big.bin"), &big)?;
    std::fs::write(files.join("small.bin"), &small)?;
    for name in ["big.bin", "small.bin"] {
        set_mode(&files.join(name), 0o644)?;
    }

    let mut results = vec![];
    for server in [Server::Ours, Server::Dnsmasq] {
        let guard = start(server, &bin, work.path(), &files)?;
        let figures = measure(server, args, work.path(), &big, &small);
        guard.stop()?;
        results.push((server, figures?));
    }
    report(args, &results);
    Ok(())
}

fn start(server: Server, bin: &Path, work: &Path, files: &Path) -> Result<ChildGuard> {
    println!("bench tftp: starting {}", server.name());
    let log = std::fs::File::create(work.join(format!("{}.log", server.name())))?;
    let guard = match server {
        Server::Ours => {
            let site = work.join("site");
            std::fs::create_dir_all(site.join("profiles"))?;
            std::fs::write(
                site.join("site.yaml"),
                format!(
                    "network:\n  interface: lo\n  address: 127.0.0.1/8\n  dhcp: {{mode: off}}\n\
                     api:\n  listen: 127.0.0.1:{}\n\
                     boot:\n  files: {}\n  tftp: {{enabled: true, port: 69, max_transfers: 1024}}\n",
                    free_port()?,
                    files.display()
                ),
            )?;
            std::fs::write(site.join("nodes.yaml"), "nodes: []\n")?;
            ChildGuard::spawn(
                "provisioner serve",
                Command::new(bin)
                    .args(["serve", "--site"])
                    .arg(&site)
                    .arg("--state")
                    .arg(work.join("state"))
                    .stdout(log.try_clone()?)
                    .stderr(log),
            )?
        }
        Server::Dnsmasq => {
            let dnsmasq = which("dnsmasq").context("dnsmasq not found (package dnsmasq-base)")?;
            ChildGuard::spawn(
                "dnsmasq",
                Command::new(dnsmasq)
                    .args([
                        "--no-daemon",
                        "--conf-file=/dev/null",
                        "--port=0",
                        "--enable-tftp",
                        "--listen-address=127.0.0.1",
                        "--bind-interfaces",
                        "--tftp-max=1024",
                        "--log-facility=-",
                    ])
                    .arg(format!("--tftp-root={}", files.display()))
                    .arg(format!("--pid-file={}", work.join("dnsmasq.pid").display()))
                    .stdout(log.try_clone()?)
                    .stderr(log),
            )?
        }
    };
    // Ready when a small fetch works.
    let deadline = Instant::now() + Duration::from_secs(30);
    let probe = work.join("probe.bin");
    loop {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "2", "-o"])
            .arg(&probe)
            .arg("tftp://127.0.0.1/small.bin")
            .output()?;
        if out.status.success() {
            return Ok(guard);
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not serve TFTP within 30 s: {} (log: {})",
                server.name(),
                String::from_utf8_lossy(&out.stderr).trim(),
                work.join(format!("{}.log", server.name())).display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn atftp(remote: &str, local: &Path) -> Command {
    let mut cmd = Command::new("atftp");
    cmd.args([
        "--option",
        "blksize 1468",
        "--option",
        "windowsize 8",
        "-g",
        "-r",
        remote,
        "-l",
    ])
    .arg(local)
    .args(["127.0.0.1", "69"]);
    cmd
}

fn timed_fetch(mut cmd: Command, local: &Path, expected: &[u8], what: &str) -> Result<f64> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    ensure!(
        std::fs::read(local)? == expected,
        "{what} received different bytes"
    );
    Ok(expected.len() as f64 / (1024.0 * 1024.0) / secs)
}

fn measure(server: Server, args: &Args, work: &Path, big: &[u8], small: &[u8]) -> Result<Figures> {
    let name = server.name();
    let out_dir = work.join(format!("out-{name}"));
    std::fs::create_dir_all(&out_dir)?;
    let mut figures = Figures::default();

    println!(
        "bench tftp: {name}: {} MiB with atftp (blksize 1468, windowsize 8)",
        args.size_mib
    );
    let local = out_dir.join("big-atftp.bin");
    figures.atftp_mib_s = timed_fetch(atftp("big.bin", &local), &local, big, "atftp")?;
    std::fs::remove_file(&local)?;

    println!(
        "bench tftp: {name}: {} MiB with curl (blksize 1468)",
        args.size_mib
    );
    let local = out_dir.join("big-curl.bin");
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--tftp-blksize", "1468", "-o"])
        .arg(&local)
        .arg("tftp://127.0.0.1/big.bin");
    figures.curl_mib_s = timed_fetch(curl, &local, big, "curl")?;
    std::fs::remove_file(&local)?;

    println!(
        "bench tftp: {name}: {} clients x {} KiB with atftp",
        args.clients, args.small_kib
    );
    let t = Instant::now();
    let mut children = vec![];
    for i in 0..args.clients {
        let local = out_dir.join(format!("small-{i}.bin"));
        let child = atftp("small.bin", &local)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("spawning atftp")?;
        children.push((child, local));
    }
    for (mut child, local) in children {
        let ok =
            child.wait()?.success() && std::fs::read(&local).map(|b| b == small).unwrap_or(false);
        if !ok {
            figures.concurrent_failed += 1;
        }
    }
    figures.concurrent_secs = t.elapsed().as_secs_f64();
    let ok = (args.clients - figures.concurrent_failed) as f64;
    figures.concurrent_mib_s =
        ok * small.len() as f64 / (1024.0 * 1024.0) / figures.concurrent_secs;
    Ok(figures)
}

fn report(args: &Args, results: &[(Server, Figures)]) {
    let ours = &results[0].1;
    let peer = &results[1].1;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!();
    println!(
        "bench tftp: loopback, {} MiB file, {} clients x {} KiB",
        args.size_mib, args.clients, args.small_kib
    );
    println!(
        "{:<44}{:>14}{:>14}{:>10}",
        "", "provisioner", "dnsmasq", "ratio"
    );
    let rows = [
        (
            "1 file, atftp blksize 1468 windowsize 8, MiB/s",
            ours.atftp_mib_s,
            peer.atftp_mib_s,
        ),
        (
            "1 file, curl blksize 1468, MiB/s",
            ours.curl_mib_s,
            peer.curl_mib_s,
        ),
        (
            "concurrent clients, aggregate MiB/s",
            ours.concurrent_mib_s,
            peer.concurrent_mib_s,
        ),
        (
            "concurrent clients, seconds",
            ours.concurrent_secs,
            peer.concurrent_secs,
        ),
    ];
    for (label, a, b) in rows {
        println!("{label:<44}{a:>14.1}{b:>14.1}{:>10.2}", ratio(a, b));
    }
    println!(
        "{:<44}{:>14}{:>14}",
        "concurrent clients, failed transfers", ours.concurrent_failed, peer.concurrent_failed
    );
    println!(
        "{{\"bench\":\"tftp\",\"size_mib\":{},\"clients\":{},\"small_kib\":{},\"ours_atftp_mib_s\":{:.2},\"peer_atftp_mib_s\":{:.2},\"ours_curl_mib_s\":{:.2},\"peer_curl_mib_s\":{:.2},\"ours_concurrent_mib_s\":{:.2},\"peer_concurrent_mib_s\":{:.2},\"ours_failed\":{},\"peer_failed\":{}}}",
        args.size_mib,
        args.clients,
        args.small_kib,
        ours.atftp_mib_s,
        peer.atftp_mib_s,
        ours.curl_mib_s,
        peer.curl_mib_s,
        ours.concurrent_mib_s,
        peer.concurrent_mib_s,
        ours.concurrent_failed,
        peer.concurrent_failed
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_sized() {
        assert_eq!(content(1000, 7), content(1000, 7));
        assert_ne!(content(1000, 7), content(1000, 8));
        assert_eq!(content(1001, 3).len(), 1001);
    }
}
