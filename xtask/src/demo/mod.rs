//! `cargo xtask demo`: a virtual rack brought up end to end.
//!
//! Installs what is missing (as `cargo xtask test` does), builds the provisioner, the
//! lab's virtual BMC and the inspection ramdisk, then starts the lab harness (a network
//! namespace with the lab bridge), the rack's VMs powered off behind their virtual BMCs
//! (`hardware-tests/sites/lab/rack.yaml`), and `provisioner serve` on a copy of the lab
//! site. From there the provisioner does everything: zero-touch inspection powers each
//! node on through its BMC with a one-time network boot, the node PXE-boots the ramdisk,
//! the agent reports the inventory, the node becomes `available`. The demo then deploys
//! each available node (`provisioner node deploy NAME --image host`, the lab's host
//! image built with the lab's config-signing key): the ramdisk agent writes the image,
//! the BMC sets the boot device to disk and resets the node, the host image boots,
//! applies the plan and reports: the node becomes `active`.
//!
//! `--vms N` scales the rack: the rack's VMs in turn (compute, network, storage,
//! compute, ...), copies renamed and re-addressed by `hardware_tests::rack::Rack::scaled`
//! with their `nodes.yaml` entries; the demo writes both files (`<target>/demo/`, copied
//! into the lab's site) and refuses a rack whose guest memory the host cannot hold.
//!
//! The operator's view is the CLI's: the demo polls `provisioner node list` inside the
//! namespace and redraws a table (plain lines when stdout is not a terminal or `CI` is
//! set), then prints a summary per node. Ctrl-C tears everything down (the harness kills
//! its processes by PID and deletes the namespace).

mod table;

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use hardware_tests::lab::{Lab, RackSetup, assets, assets::TestRamdisk};
use hardware_tests::rack;
use serde_json::Value;

/// The lab site's BMC password variable and the value the demo's BMCs use.
const PASSWORD: (&str, &str) = ("LAB_BMC_PASSWORD", "demo-bmc-secret");

/// Host memory a VM costs beyond its guest RAM (QEMU, TCG's translation cache), MiB.
const QEMU_OVERHEAD_MIB: u64 = 256;
/// Host memory left for the rest (provisioner, BMCs, the CLI polls), MiB.
const HOST_RESERVE_MIB: u64 = 512;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many VMs to start: the rack's VMs taken in turn (compute, network, storage,
    /// compute, ...); VMs beyond the rack's three are copies with their own name (e.g.
    /// lab-compute-1), MACs, serials, BMC port and nodes.yaml entry. Each costs its guest
    /// RAM (1.5 to 3 GiB): the demo refuses more than the host's available memory holds.
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    vms: u16,
    /// Give up after this many seconds once the lab is up.
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    timeout: u64,
    /// Skip `cargo xtask deps` (on a machine where the packages are known to be there).
    #[arg(long)]
    no_deps: bool,
    /// Keep the lab directory (site copy, state, logs) even when every node ends active.
    #[arg(long)]
    keep: bool,
}

pub fn run(args: &Args) -> Result<()> {
    // At once, before anything slow: what is about to happen and that the first steps
    // (packages, builds) take minutes on a fresh machine.
    step(&format!(
        "demo: a virtual rack of {} VM(s) brought up end to end; first {} (minutes on a \
         fresh machine), then the lab",
        args.vms,
        if args.no_deps {
            "the builds"
        } else {
            "the packages and builds"
        }
    ));
    let interrupted = Arc::new(AtomicBool::new(false));
    watch_ctrl_c(Arc::clone(&interrupted))?;
    // The rack first: a request the host cannot hold fails before any build.
    let original = rack::load(&rack::lab_rack_file()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rack = original
        .scaled(usize::from(args.vms))
        .with_context(|| format!("scaling the lab rack to {} VMs", args.vms))?;
    fits_in_memory(&rack, mem_available_kib()?)?;
    if !args.no_deps {
        step("installing what is missing (cargo xtask deps)");
        crate::deps::run(&crate::deps::Args::default())?;
    }
    step("building the provisioner and the lab's virtual BMC");
    let status = crate::workspace::cargo()
        .args([
            "build",
            "--locked",
            "-p",
            "provisioner",
            "-p",
            "hardware-tests",
            "--bins",
        ])
        .status()?;
    if !status.success() {
        bail!("the build failed ({status})");
    }
    let target = crate::workspace::target_dir()?;
    step("building the inspection ramdisk (static node-agent, Debian's kernel)");
    let ramdisk = target.join("ramdisk");
    crate::ramdisk::build(&ramdisk, None, None)?;
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    step("building the host image (version 1, trusting the lab's config-signing key)");
    let host = assets::host_image("1").context("building the lab's host image")?;
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted");
    }

    // Again after the build (the compilers have freed their memory): what the VMs will find.
    fits_in_memory(&rack, mem_available_kib()?)?;
    let files = target.join("demo");
    let (rack_file, nodes_file) = write_rack_files(&original, &rack, &files)?;

    // Before any VM: the accelerator's verdict line (printed once by `lab::accel`). The
    // probe takes up to 20 s on a host whose verdict is not cached yet.
    step("choosing the accelerator: KVM only if a probe guest boots under it (cached per host)");
    hardware_tests::lab::accel();
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted");
    }

    let start = Instant::now();
    step(&format!(
        "starting the lab: network namespace, bridge br0 10.213.0.1/24, rack VMs and BMCs: {}",
        rack.vms.len()
    ));
    let ramdisk = TestRamdisk {
        kernel: ramdisk.join("vmlinuz"),
        initramfs: ramdisk.join("initramfs"),
    };
    let mut lab = Lab::start_rack(RackSetup {
        provisioner: Some(target.join("debug/provisioner")),
        rack_file: Some(rack_file.clone()),
        site_files: vec![
            ("rack.yaml".into(), rack_file),
            ("nodes.yaml".into(), nodes_file),
        ],
        host_image: Some(&host),
        ..RackSetup::new(&ramdisk, PASSWORD)
    })?;
    step(&format!(
        "provisioner serving in namespace {} (logs: {})",
        lab.netns().name(),
        lab.dir().display()
    ));

    let live = std::io::stdout().is_terminal() && std::env::var_os("CI").is_none();
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut drawn = 0;
    let mut last_plain: Vec<String> = vec![];
    let mut peak_rss_kib = 0;
    // Nodes the demo asked to deploy (once each, when they became available).
    let mut deployed: Vec<String> = vec![];
    let outcome = loop {
        if interrupted.load(Ordering::SeqCst) {
            break Outcome::Interrupted;
        }
        if let Some(pid) = lab.provisioner_pid() {
            peak_rss_kib = peak_rss_kib.max(vm_hwm_kib(pid).unwrap_or(0));
        }
        let nodes = cli_json(&lab, &["node", "list"])?;
        let mut events = vec![];
        for node in nodes.as_array().into_iter().flatten() {
            let name = node["name"].as_str().unwrap_or_default().to_owned();
            let history = cli_json(&lab, &["node", "history", &name])?;
            if let Some(last) = history.as_array().and_then(|h| h.last()) {
                events.push((name, last.clone()));
            }
        }
        let rows = table::rows(&nodes, &events, table::chrono_like::Now::system());
        let lines = table::render(&rows, start.elapsed(), terminal_width());
        if live {
            let mut out = std::io::stdout().lock();
            if drawn > 0 {
                // Up over the previous table, then clear to the end of the screen.
                write!(out, "\x1b[{drawn}A\x1b[J")?;
            }
            for line in &lines {
                writeln!(out, "{line}")?;
            }
            out.flush()?;
            drawn = lines.len();
        } else {
            // Plain output: a line per node whose row changed (not the clock).
            for (line, row) in lines.iter().skip(1).zip(&rows) {
                let key = format!("{} {} {}", row.node, row.state, row.last_event);
                if !last_plain.contains(&key) {
                    println!("[{:>4.0}s] {line}", start.elapsed().as_secs_f64());
                    last_plain.retain(|k| !k.starts_with(&format!("{} ", row.node)));
                    last_plain.push(key);
                }
            }
        }
        for row in &rows {
            if row.state == "available" && !deployed.contains(&row.node) {
                let out = lab.cli(&["node", "deploy", &row.node, "--image", "host"])?;
                if !out.status.success() {
                    bail!(
                        "provisioner node deploy {}: {}",
                        row.node,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                deployed.push(row.node.clone());
            }
        }
        if table::settled(&rows) {
            let all_active = rows.iter().all(|r| r.state == "active");
            break if all_active {
                Outcome::Active
            } else {
                Outcome::Failed
            };
        }
        if Instant::now() > deadline {
            break Outcome::TimedOut;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let took = start.elapsed();

    println!();
    for node in &rack.vms {
        match cli_json(&lab, &["node", "show", &node.name]) {
            Ok(shown) => println!("{}", table::summary(&shown)),
            Err(err) => println!("{}: cannot read it: {err:#}", node.name),
        }
    }
    println!(
        "\nnodes: {}, {:.1} s from the lab start; provisioner peak RSS {:.1} MiB",
        rack.vms.len(),
        took.as_secs_f64(),
        peak_rss_kib as f64 / 1024.0
    );
    let logs = lab.dir().to_path_buf();
    match outcome {
        Outcome::Active => {
            if args.keep {
                lab.pass_and_keep();
            } else {
                lab.pass();
            }
            println!("every node is active");
            Ok(())
        }
        Outcome::Failed => bail!(
            "some nodes failed; logs (provisioner.log, */serial.log, */bmc.log) in {}",
            logs.display()
        ),
        Outcome::TimedOut => bail!(
            "not every node was active after {} s; logs in {}",
            args.timeout,
            logs.display()
        ),
        Outcome::Interrupted => bail!(
            "interrupted; the lab is torn down, logs in {}",
            logs.display()
        ),
    }
}

/// Writes the rack and its `nodes.yaml` (the lab site's, with entries for the copies)
/// into `dir`; returns their paths.
fn write_rack_files(
    original: &rack::Rack,
    rack: &rack::Rack,
    dir: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let site_nodes = hardware_tests::lab_site_dir().join("nodes.yaml");
    let text = std::fs::read_to_string(&site_nodes)
        .with_context(|| format!("reading {}", site_nodes.display()))?;
    let nodes = rack::scale::scaled_nodes_yaml(original, rack, &text)
        .with_context(|| format!("the nodes of {}", site_nodes.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let header = format!(
        "# Written by `cargo xtask demo --vms {}` from hardware-tests/sites/lab: \
         the lab's VMs taken in turn, copies renamed and re-addressed.\n",
        rack.vms.len()
    );
    let rack_file = dir.join("rack.yaml");
    let nodes_file = dir.join("nodes.yaml");
    let rack_text = rack::to_yaml(&serde_json::to_value(rack).context("the scaled rack as data")?);
    for (path, text) in [(&rack_file, &rack_text), (&nodes_file, &nodes)] {
        std::fs::write(path, format!("{header}{text}"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok((rack_file, nodes_file))
}

/// Refuses a rack whose VMs (guest RAM plus QEMU's own) would not fit in the host's
/// available memory.
fn fits_in_memory(rack: &rack::Rack, available_kib: u64) -> Result<()> {
    let guests: u64 = rack.vms.iter().map(rack::VmSpec::memory_mib).sum();
    let needed = guests + QEMU_OVERHEAD_MIB * rack.vms.len() as u64 + HOST_RESERVE_MIB;
    let available = available_kib / 1024;
    if needed > available {
        bail!(
            "{} VMs need about {:.1} GiB ({:.1} GiB of guest RAM plus QEMU and the provisioner) \
             but the host has {:.1} GiB available (MemAvailable in /proc/meminfo): ask for \
             fewer with --vms, or free memory",
            rack.vms.len(),
            needed as f64 / 1024.0,
            guests as f64 / 1024.0,
            available as f64 / 1024.0
        );
    }
    Ok(())
}

/// MemAvailable of /proc/meminfo, KiB.
fn mem_available_kib() -> Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("/proc/meminfo has no MemAvailable line")
}

enum Outcome {
    Active,
    Failed,
    TimedOut,
    Interrupted,
}

fn step(what: &str) {
    println!("==> {what}");
}

/// `provisioner ARGS -o json` in the lab's namespace (`Lab::cli`), parsed.
fn cli_json(lab: &Lab, args: &[&str]) -> Result<Value> {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    let out = lab.cli(&full)?;
    if !out.status.success() {
        bail!(
            "provisioner {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing the CLI's JSON")
}

/// Peak resident memory of a process (VmHWM), KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(120)
}

/// Ctrl-C or SIGTERM sets `flag` (the demo loop then returns and the lab is dropped,
/// which kills its processes and deletes the namespace) instead of killing xtask
/// outright.
fn watch_ctrl_c(flag: Arc<AtomicBool>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            let terminated = async {
                match term.as_mut() {
                    Some(term) => term.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminated => {}
            }
            eprintln!("\ninterrupted: tearing the lab down...");
            flag.store(true, Ordering::SeqCst);
        });
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_vms_fit_in_24_gib_and_the_refusal_says_how_much() {
        let lab = rack::load(&rack::lab_rack_file()).unwrap();
        let six = lab.scaled(6).unwrap();
        // This host: 24 GiB, about 22.5 GiB available.
        fits_in_memory(&six, 22_500 * 1024).unwrap();
        let err = fits_in_memory(&six, 12 * 1024 * 1024)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("6 VMs need about 15.0 GiB (13.0 GiB of guest RAM plus")
                && err.contains("the host has 12.0 GiB available")
                && err.contains("--vms"),
            "{err}"
        );
    }

    #[test]
    fn the_scaled_files_are_written_and_load_as_a_rack() {
        let dir = tempfile::tempdir().unwrap();
        let lab = rack::load(&rack::lab_rack_file()).unwrap();
        let four = lab.scaled(4).unwrap();
        let (rack_file, nodes_file) = write_rack_files(&lab, &four, dir.path()).unwrap();
        assert_eq!(rack::load(&rack_file).unwrap(), four);
        let nodes = std::fs::read_to_string(nodes_file).unwrap();
        assert!(
            nodes.starts_with("# Written by `cargo xtask demo --vms 4`"),
            "{nodes}"
        );
        assert!(nodes.contains("lab-compute-1"), "{nodes}");
    }
}
