//! Part of `cargo xtask bench deploy`: `provisioner serve` handing a host image to three
//! nodes at once (`GET /images/NAME/host.raw.zst`), next to nginx serving the same file.
//!
//! The image is synthetic (random bytes, so nothing compresses on the way) with a
//! `manifest.json` that names it, in a site whose catalog has it as a host image. Each
//! round starts three `curl` downloads at once against one server and times until the
//! last one ends; servers alternate A B A B. Both are read by the same client, so the
//! ratio compares the servers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};

use super::peer::StaticServer;
use super::process::{ChildGuard, free_port};

/// Concurrent downloads per round (the rack of the demo).
pub const CLIENTS: usize = 3;

/// Timings of one server: one wall time per round (all clients done).
#[derive(Debug, Clone)]
pub struct Serving {
    pub name: String,
    pub rounds: Vec<Duration>,
}

impl Serving {
    /// Median round.
    pub fn median(&self) -> Duration {
        let mut sorted = self.rounds.clone();
        sorted.sort();
        sorted[sorted.len() / 2]
    }
}

/// The report of the serving part.
#[derive(Debug, Clone)]
pub struct ServeReport {
    pub size_bytes: u64,
    pub ours: Serving,
    pub peer: Serving,
}

impl ServeReport {
    /// Aggregate MiB/s of a round (all clients' bytes over the wall time).
    pub fn rate_mib_s(&self, round: Duration) -> f64 {
        (self.size_bytes as f64 * CLIENTS as f64) / (1 << 20) as f64 / round.as_secs_f64()
    }

    pub fn print(&self) {
        let ours = self.ours.median();
        let peer = self.peer.median();
        println!(
            "bench deploy: image serving, {CLIENTS} downloads at once of {} MiB, {} rounds each \
             (A B A B)",
            self.size_bytes >> 20,
            self.ours.rounds.len()
        );
        println!(
            "  provisioner serve  median {:>7.2} s  {:>7.0} MiB/s",
            ours.as_secs_f64(),
            self.rate_mib_s(ours)
        );
        println!(
            "  {:<17}  median {:>7.2} s  {:>7.0} MiB/s",
            self.peer.name,
            peer.as_secs_f64(),
            self.rate_mib_s(peer)
        );
        println!(
            "  ratio throughput ours / {}: {:.2}",
            self.peer.name,
            peer.as_secs_f64() / ours.as_secs_f64()
        );
    }
}

/// Writes `dir/host.raw.zst` (`size_mib` MiB of random bytes) and a `manifest.json`
/// naming it (sizes and SHA-256 real, the rest plausible).
fn write_image(dir: &Path, size_mib: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let image = dir.join("host.raw.zst");
    let status = Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "status=none"])
        .arg(format!("of={}", image.display()))
        .arg(format!("count={size_mib}"))
        .status()
        .context("running dd")?;
    ensure!(status.success(), "dd if=/dev/urandom failed ({status})");
    let out = Command::new("sha256sum")
        .arg(&image)
        .output()
        .context("sha256sum")?;
    ensure!(out.status.success(), "sha256sum failed");
    let sha = String::from_utf8(out.stdout)?
        .split_whitespace()
        .next()
        .context("sha256sum output")?
        .to_owned();
    let size = size_mib << 20;
    let file = |name: &str, size: u64, sha256: &str| model::host::FileInfo {
        file: name.into(),
        size,
        sha256: sha256.into(),
    };
    let zeros = "0".repeat(64);
    let manifest = model::host::HostManifest {
        format: 1,
        version: "1".into(),
        kernel_release: "bench".into(),
        root: model::host::RootInfo {
            image: file("root.img", 4096, &zeros),
            filesystem: "erofs".into(),
            verity: model::host::VerityParams {
                data_blocks: 1,
                hash_start_block: 1,
                root_hash: zeros.clone(),
                salt: zeros.clone(),
            },
        },
        uki: file("uki.efi", 4096, &zeros),
        disk: model::host::DiskInfo {
            compressed: file("host.raw.zst", size, &sha),
            raw_size: size,
            raw_sha256: sha.clone(),
            partitions: vec![],
        },
    };
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(())
}

/// Starts three `curl` downloads of `url` at once; the wall time until all are done.
fn round(url: &str, size: u64) -> Result<Duration> {
    let start = Instant::now();
    let children: Vec<_> = (0..CLIENTS)
        .map(|_| {
            Command::new("curl")
                .args(["-sf", "-o", "/dev/null", "-w", "%{size_download}", url])
                .stdout(Stdio::piped())
                .spawn()
                .context("starting curl")
        })
        .collect::<Result<_>>()?;
    for child in children {
        let out = child.wait_with_output()?;
        ensure!(out.status.success(), "curl {url} failed ({})", out.status);
        let got: u64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        ensure!(got == size, "curl {url}: {got} bytes, expected {size}");
    }
    Ok(start.elapsed())
}

fn wait_ready(url: &str, guard: &mut ChildGuard, what: &str, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = guard.exited()? {
            bail!("{what} exited ({status}); see {}", log.display());
        }
        let ok = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-r", "0-0", url])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{what} does not serve {url} after 20 s; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the serving comparison in `work` with the release `provisioner` binary `bin`.
pub fn run(bin: &Path, work: &Path, size_mib: u64, rounds: usize) -> Result<ServeReport> {
    let site = work.join("serve-site");
    let images = site.join("images");
    write_image(&images, size_mib)?;
    let port = free_port()?;
    std::fs::write(
        site.join("site.yaml"),
        super::api::site_yaml(port).replace(
            "images: []\n",
            "images:\n  - name: host\n    host: images/manifest.json\n",
        ),
    )?;
    std::fs::write(site.join("nodes.yaml"), "nodes: []\n")?;
    let state: PathBuf = work.join("serve-state");
    let log = work.join("serve.log");
    let mut daemon = ChildGuard::spawn(
        "provisioner serve",
        Command::new(bin)
            .args(["serve", "--api-only", "--site"])
            .arg(&site)
            .arg("--state")
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?),
    )?;
    let ours_url = format!("http://127.0.0.1:{port}/images/host/host.raw.zst");
    wait_ready(&ours_url, &mut daemon, "provisioner serve", &log)?;
    let peer_work = work.join("serve-peer");
    std::fs::create_dir_all(&peer_work)?;
    let mut peer = StaticServer::start(&images, &peer_work)?;
    let peer_url = format!("http://127.0.0.1:{}/host.raw.zst", peer.port);
    wait_ready(&peer_url, &mut peer.guard, peer.name, &peer.log)?;
    let size = size_mib << 20;
    // One warm-up each (page cache), then A B A B.
    round(&ours_url, size)?;
    round(&peer_url, size)?;
    let mut ours = Serving {
        name: "provisioner serve".into(),
        rounds: vec![],
    };
    let mut theirs = Serving {
        name: peer.name.into(),
        rounds: vec![],
    };
    for _ in 0..rounds {
        ours.rounds.push(round(&ours_url, size)?);
        theirs.rounds.push(round(&peer_url, size)?);
    }
    daemon.stop()?;
    peer.guard.stop()?;
    Ok(ServeReport {
        size_bytes: size,
        ours,
        peer: theirs,
    })
}
