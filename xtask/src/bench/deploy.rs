//! `cargo xtask bench deploy`: the agent's image write path (`node-agent write-image`) next
//! to `dd` and to `curl | zstd -d | dd`, on the same synthetic host image, same target file,
//! same loopback HTTP server (ours, with Range), interleaved A B C A B C ...; then the
//! agent's peak memory writing a small and a large image.

use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use model::host::{PartitionInfo, TYPE_CONFIG, TYPE_ESP, TYPE_VAR};

use super::process::which;
use crate::deps::Dep;

pub const LONG_ABOUT: &str = "\
Measures the agent's deploy write path, `node-agent write-image` (HTTP download with Range \
resume, SHA-256 of the compressed bytes, zstd decode, 4 MiB O_DIRECT writes, read-back and \
SHA-256 of the raw bytes, then the GPT moved to the disk's end), next to two peers writing \
the same bytes to the same target file:

  dd:        dd if=RAW of=TARGET oflag=direct bs=4M conv=notrunc   (raw bytes already on disk)
  pipeline:  curl URL | zstd -d | dd of=TARGET oflag=direct bs=4M iflag=fullblock conv=notrunc

The image is synthetic and deterministic (a GPT with esp, config and data; 1 MiB blocks of \
random bytes, of compressible text and of zeros, like a real host image), compressed with \
`zstd -3`, served by a small Range-capable HTTP server on 127.0.0.1 inside xtask. The three \
are run interleaved for --rounds rounds; medians and ratios are printed (the agent's write \
phase is its own figure without the read-back, which the peers do not do). Then the agent \
writes a --big-mib image once: its peak RSS (VmHWM) must equal the small run's within 10 % \
and stay under 64 MiB. Prints a table, then one line of JSON. Work files go to --dir \
(default /var/tmp: O_DIRECT needs a real file system); they are removed at the end.

Last, image serving: `provisioner serve` (release) with a --serve-mib host image in its \
catalog answers three `curl` downloads of `/images/host/host.raw.zst` at once, next to nginx \
serving the same file (A B A B, --rounds rounds each); medians and the throughput ratio.";

/// Packages the benchmark needs besides the test dependencies.
const BENCH_DEPS: &[Dep] = &[
    Dep {
        package: "curl",
        why: "the peer pipeline's HTTP client",
        from_backports: false,
    },
    Dep {
        package: "zstd",
        why: "compresses the synthetic image; the peer pipeline's decoder",
        from_backports: false,
    },
    Dep {
        package: "nginx",
        why: "the peer serving the host image to three downloads at once",
        from_backports: false,
    },
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Size of the image timed against the peers, in MiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(128..))]
    size_mib: u64,
    /// Size of the image written once more for the memory figure, in MiB (0: skip).
    #[arg(long, default_value_t = 4096)]
    big_mib: u64,
    /// Rounds of A/B/C interleaved runs.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Where the work files go (a real file system: O_DIRECT).
    #[arg(long, value_name = "DIR", default_value = "/var/tmp")]
    dir: PathBuf,
    /// Use this node-agent binary instead of building one (release).
    #[arg(long, value_name = "PATH")]
    agent: Option<PathBuf>,
    /// Size of the image served to three downloads at once, in MiB (0: skip that part).
    #[arg(long, default_value_t = 512)]
    serve_mib: u64,
}

fn build_agent() -> Result<PathBuf> {
    println!("bench deploy: cargo build --release -p agent --bin node-agent");
    let status = crate::workspace::cargo()
        .args(["build", "--release", "-p", "agent", "--bin", "node-agent"])
        .status()
        .context("running cargo build")?;
    ensure!(
        status.success(),
        "`cargo build --release -p agent` failed ({status})"
    );
    let bin = crate::workspace::target_dir()?.join("release/node-agent");
    ensure!(
        bin.is_file(),
        "cargo built node-agent but {} does not exist",
        bin.display()
    );
    Ok(bin)
}

/// A synthetic image on disk: raw and compressed, with sizes and SHA-256.
#[derive(Debug)]
struct Image {
    raw: PathBuf,
    zst: PathBuf,
    raw_size: u64,
    raw_sha256: String,
    zst_size: u64,
    zst_sha256: String,
}

/// What kind of bytes the 1 MiB block `index` holds (deterministic).
fn block_kind(index: u64) -> u64 {
    let mut x = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed;
    x ^= x >> 31;
    x.wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 61
}

/// Fills `buf` with xorshift bytes from `seed`.
fn random_fill(buf: &mut [u8], seed: u64) {
    let mut state = seed | 1;
    for chunk in buf.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

fn sha256sum(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("running sha256sum")?;
    ensure!(out.status.success(), "sha256sum {} failed", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// Makes `name.raw` of `mib` MiB (GPT esp 1-65 MiB, config 65-81 MiB, data to 1 MiB before
/// the end; data blocks: 3/8 random, 3/8 text, 2/8 zeros) and `name.raw.zst`.
fn make_image(dir: &Path, name: &str, mib: u64) -> Result<Image> {
    let raw = dir.join(format!("{name}.raw"));
    let per_mib = (1 << 20) / model::host::SECTOR;
    let part = |number: u32, label: &str, type_guid: &str, from: u64, to: u64| PartitionInfo {
        number,
        label: label.to_owned(),
        type_guid: type_guid.to_owned(),
        unique_guid: image::disk::derived_guid(&format!("bench/{label}")),
        first_lba: from * per_mib,
        last_lba: to * per_mib - 1,
    };
    let table = [
        part(1, model::host::ESP, TYPE_ESP, 1, 65),
        part(2, model::host::CONFIG, TYPE_CONFIG, 65, 81),
        part(3, model::host::DATA, TYPE_VAR, 81, mib - 1),
    ];
    let mut file = image::disk::create(&raw, mib << 20, &table)?;
    let text: Vec<u8> =
        b"Dec  2 17:25:52 host systemd[1]: Started unit-%03d.service - a log line.\n"
            .iter()
            .copied()
            .cycle()
            .take(1 << 20)
            .collect();
    let mut block = vec![0u8; 1 << 20];
    for index in 1..mib - 1 {
        let (from, to) = (65, 81);
        if (from..to).contains(&index) {
            continue;
        }
        match block_kind(index) {
            0..=2 => random_fill(&mut block, index),
            3..=5 => {
                block.copy_from_slice(&text);
                block[..8].copy_from_slice(&index.to_le_bytes());
            }
            _ => continue,
        }
        file.seek(SeekFrom::Start(index << 20))?;
        file.write_all(&block)?;
    }
    file.sync_all()?;
    drop(file);
    let zst = dir.join(format!("{name}.raw.zst"));
    let status = Command::new("zstd")
        .args(["-q", "-f", "-3", "-T0"])
        .arg(&raw)
        .arg("-o")
        .arg(&zst)
        .status()
        .context("running zstd")?;
    ensure!(status.success(), "zstd {} failed", raw.display());
    Ok(Image {
        raw_size: mib << 20,
        raw_sha256: sha256sum(&raw)?,
        zst_size: std::fs::metadata(&zst)?.len(),
        zst_sha256: sha256sum(&zst)?,
        raw,
        zst,
    })
}

/// Serves the files of `dir` on 127.0.0.1 with `Range: bytes=N-`, one thread a connection.
fn serve(dir: PathBuf) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || {
                if let Err(e) = answer(&dir, stream) {
                    eprintln!("bench deploy: HTTP server: {e:#}");
                }
            });
        }
    });
    Ok(base)
}

fn answer(dir: &Path, mut stream: TcpStream) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut from = 0u64;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? <= 2 {
            break;
        }
        if let Some(v) = header.to_ascii_lowercase().strip_prefix("range: bytes=") {
            from = v.trim().trim_end_matches('-').parse().context("Range")?;
        }
    }
    let name = line
        .split(' ')
        .nth(1)
        .unwrap_or("/")
        .trim_start_matches('/');
    if name.contains('/') || name.is_empty() {
        bail!("bad path {name:?}");
    }
    let mut file = std::fs::File::open(dir.join(name))?;
    let len = file.metadata()?.len();
    if from > 0 {
        if from >= len {
            write!(
                stream,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
        write!(
            stream,
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            len - 1,
            len - from
        )?;
        file.seek(SeekFrom::Start(from))?;
    } else {
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n"
        )?;
    }
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

/// One `node-agent write-image --json` run: wall time and its figures.
#[derive(Debug, Clone, Copy)]
struct AgentRun {
    wall: Duration,
    write_s: f64,
    verify_s: f64,
    peak_rss_kib: u64,
    direct: bool,
}

fn run_agent(agent: &Path, url: &str, image: &Image, target: &Path) -> Result<AgentRun> {
    let started = Instant::now();
    let out = Command::new(agent)
        .arg("write-image")
        .args(["--url", url, "--disk"])
        .arg(target)
        .args(["--compressed-size", &image.zst_size.to_string()])
        .args(["--compressed-sha256", &image.zst_sha256])
        .args(["--raw-size", &image.raw_size.to_string()])
        .args(["--raw-sha256", &image.raw_sha256, "--json"])
        .stderr(Stdio::inherit())
        .output()
        .context("running node-agent write-image")?;
    let wall = started.elapsed();
    ensure!(
        out.status.success(),
        "node-agent write-image failed ({})",
        out.status
    );
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "write-image printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    Ok(AgentRun {
        wall,
        write_s: figures["write_s"].as_f64().context("write_s")?,
        verify_s: figures["verify_s"].as_f64().context("verify_s")?,
        peak_rss_kib: figures["peak_rss_kib"].as_u64().context("peak_rss_kib")?,
        direct: figures["direct"].as_bool().unwrap_or(false),
    })
}

fn timed_shell(script: &str) -> Result<Duration> {
    let started = Instant::now();
    let status = Command::new("sh")
        .args(["-c", script])
        .status()
        .with_context(|| format!("running {script}"))?;
    ensure!(status.success(), "{script} failed ({status})");
    Ok(started.elapsed())
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// A target file of `bytes`, its blocks allocated (written once with dd, not timed).
fn make_target(path: &Path, bytes: u64) -> Result<()> {
    let file = std::fs::File::create(path)?;
    file.set_len(bytes)?;
    drop(file);
    timed_shell(&format!(
        "dd if=/dev/zero of={} bs=4M count={} oflag=direct conv=notrunc status=none",
        quote(path),
        bytes >> 22
    ))?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: &Args) -> Result<()> {
    crate::deps::ensure(BENCH_DEPS, false)?;
    for tool in ["curl", "zstd", "dd", "sha256sum"] {
        ensure!(which(tool).is_some(), "{tool} is not on PATH");
    }
    let agent = match &args.agent {
        Some(agent) => agent.clone(),
        None => build_agent()?,
    };
    let work = tempfile::Builder::new()
        .prefix("xtask-bench-deploy-")
        .tempdir_in(&args.dir)
        .with_context(|| format!("creating a work directory in {}", args.dir.display()))?;
    let dir = work.path();
    println!(
        "bench deploy: making a {} MiB synthetic image in {}",
        args.size_mib,
        dir.display()
    );
    let small = make_image(dir, "small", args.size_mib)?;
    let base = serve(dir.to_owned())?;
    let url = format!("{base}/small.raw.zst");
    let target = dir.join("target.disk");
    make_target(&target, small.raw_size + (64 << 20))?;
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let dd = format!(
        "dd if={} of={} oflag=direct bs=4M conv=notrunc status=none",
        quote(&small.raw),
        quote(&target)
    );
    let pipeline = format!(
        "curl -sSf {url} | zstd -d -q | dd of={} oflag=direct bs=4M iflag=fullblock conv=notrunc status=none",
        quote(&target)
    );
    let (mut agent_runs, mut dd_s, mut pipe_s) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let a = run_agent(&agent, &url, &small, &target)?;
        let d = timed_shell(&dd)?;
        let p = timed_shell(&pipeline)?;
        println!(
            "bench deploy: round {round}: agent {:.2} s (write {:.2} s, read-back {:.2} s), dd {:.2} s, curl|zstd|dd {:.2} s",
            a.wall.as_secs_f64(),
            a.write_s,
            a.verify_s,
            d.as_secs_f64(),
            p.as_secs_f64()
        );
        agent_runs.push(a);
        dd_s.push(d.as_secs_f64());
        pipe_s.push(p.as_secs_f64());
    }
    let small_rss = agent_runs.iter().map(|a| a.peak_rss_kib).max().unwrap_or(0);
    let big = if args.big_mib > 0 {
        println!(
            "bench deploy: making a {} MiB synthetic image",
            args.big_mib
        );
        // Room for the big one: the small image's files are done with.
        std::fs::remove_file(&small.raw)?;
        std::fs::remove_file(&small.zst)?;
        std::fs::remove_file(&target)?;
        let big = make_image(dir, "big", args.big_mib)?;
        let big_target = dir.join("big-target.disk");
        std::fs::File::create(&big_target)?.set_len(big.raw_size + (64 << 20))?;
        let run = run_agent(&agent, &format!("{base}/big.raw.zst"), &big, &big_target)?;
        Some((run, big.raw_size))
    } else {
        None
    };
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let mib = small.raw_size as f64 / f64::from(1 << 20);
    let agent_wall = median(agent_runs.iter().map(|a| a.wall.as_secs_f64()).collect());
    let agent_write = median(agent_runs.iter().map(|a| a.write_s).collect());
    let agent_verify = median(agent_runs.iter().map(|a| a.verify_s).collect());
    let (dd_med, pipe_med) = (median(dd_s), median(pipe_s));
    println!();
    println!(
        "bench deploy: {mib:.0} MiB image ({} bytes zstd, {:.1}x), {} rounds, O_DIRECT {}, load {} / {}",
        small.zst_size,
        small.raw_size as f64 / small.zst_size as f64,
        args.rounds,
        agent_runs.iter().all(|a| a.direct),
        load_before.split_whitespace().next().unwrap_or("?"),
        load_after.split_whitespace().next().unwrap_or("?"),
    );
    println!("{:<52}{:>10}{:>10}", "median", "seconds", "MiB/s");
    for (label, s) in [
        ("agent write-image, whole (with read-back, GPT)", agent_wall),
        ("agent write phase (download, decode, write)", agent_write),
        ("agent read-back phase", agent_verify),
        ("dd of the raw file (oflag=direct bs=4M)", dd_med),
        ("curl | zstd -d | dd (oflag=direct bs=4M)", pipe_med),
    ] {
        println!("{label:<52}{s:>10.2}{:>10.1}", mib / s);
    }
    let ratio = |ours: f64, peer: f64| peer / ours;
    println!(
        "{:<52}{:>10}",
        "throughput ratio (>1: agent faster)", "ratio"
    );
    for (label, r) in [
        ("agent write phase / dd", ratio(agent_write, dd_med)),
        (
            "agent write phase / curl|zstd|dd",
            ratio(agent_write, pipe_med),
        ),
        ("agent whole / dd", ratio(agent_wall, dd_med)),
        ("agent whole / curl|zstd|dd", ratio(agent_wall, pipe_med)),
    ] {
        println!("{label:<52}{r:>10.2}");
    }
    println!(
        "{:<52}{:>10}",
        format!("agent peak RSS, {mib:.0} MiB image (KiB)"),
        small_rss
    );
    let mut json = serde_json::json!({
        "bench": "deploy",
        "size_mib": args.size_mib,
        "rounds": args.rounds,
        "zst_bytes": small.zst_size,
        "agent_whole_s": agent_wall,
        "agent_write_s": agent_write,
        "agent_verify_s": agent_verify,
        "dd_s": dd_med,
        "pipeline_s": pipe_med,
        "ratio_write_vs_dd": ratio(agent_write, dd_med),
        "ratio_whole_vs_dd": ratio(agent_wall, dd_med),
        "ratio_write_vs_pipeline": ratio(agent_write, pipe_med),
        "agent_peak_rss_kib": small_rss,
    });
    if let Some((run, bytes)) = big {
        let big_mib = bytes as f64 / f64::from(1 << 20);
        println!(
            "{:<52}{:>10}",
            format!("agent peak RSS, {big_mib:.0} MiB image (KiB)"),
            run.peak_rss_kib
        );
        let r = run.peak_rss_kib as f64 / small_rss.max(1) as f64;
        println!(
            "{:<52}{r:>10.3}",
            "peak RSS ratio big / small (target 0.9-1.1)"
        );
        println!(
            "{:<52}{:>10.2}",
            format!("agent write phase, {big_mib:.0} MiB (s)"),
            run.write_s
        );
        json["big_mib"] = args.big_mib.into();
        json["agent_big_peak_rss_kib"] = run.peak_rss_kib.into();
        json["agent_big_write_s"] = run.write_s.into();
        json["rss_ratio_big_vs_small"] = r.into();
    }
    if args.serve_mib > 0 {
        let provisioner = super::api::build_provisioner()?;
        let serving =
            super::image_serve::run(&provisioner, dir, args.serve_mib, args.rounds as usize)?;
        println!();
        serving.print();
        json["serve_mib"] = args.serve_mib.into();
        json["serve_clients"] = super::image_serve::CLIENTS.into();
        json["serve_ours_s"] = serving.ours.median().as_secs_f64().into();
        json["serve_peer"] = serving.peer.name.clone().into();
        json["serve_peer_s"] = serving.peer.median().as_secs_f64().into();
    }
    println!("{json}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_kinds_mix_random_text_and_zeros_deterministically() {
        let kinds: Vec<u64> = (0..4096).map(block_kind).collect();
        let count = |f: fn(u64) -> bool| kinds.iter().filter(|&&k| f(k)).count();
        let random = count(|k| k <= 2);
        let zeros = count(|k| k >= 6);
        assert!((1300..1800).contains(&random), "{random}");
        assert!((800..1250).contains(&zeros), "{zeros}");
        assert_eq!(kinds, (0..4096).map(block_kind).collect::<Vec<_>>());
        let (mut a, mut b) = (vec![0u8; 20], vec![0u8; 20]);
        random_fill(&mut a, 7);
        random_fill(&mut b, 8);
        assert_ne!(a, b);
        assert_ne!(a, vec![0u8; 20]);
    }

    #[test]
    fn median_takes_the_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![5.0]), 5.0);
    }
}
