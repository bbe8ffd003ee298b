//! `node-agent` command line: wiring only; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use model::host::Slot;
use model::plan::HostPlan;

use agent::sysroot::SysRoot;
use agent::{apply, deploy, inspect, upgrade};

/// node-agent: the provisioner's agent on a server (inspection ramdisk and
/// installed host). It inventories the hardware (`inspect`), applies host
/// plans (`apply`) and upgrades an installed host image (`upgrade`).
///
/// Start with `node-agent inspect`: it prints what this machine has (CPUs,
/// NUMA nodes, memory, NICs, disks) without changing anything. Then
/// `node-agent apply --plan plan.json --dry-run` shows what a host plan would
/// change.
///
/// In the inspection ramdisk and in a host image UKI's initramfs, node-agent
/// is `/init` (PID 1): started as PID 1 it runs `node-agent init` whatever its
/// arguments (except `host`); `init` sends a host image boot (kernel command
/// line with `host.*` words) to the verified-root boot, which switches root
/// and runs `node-agent host` as PID 1 of the installed host.
#[derive(Debug, Parser)]
#[command(name = "node-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inventory this machine's hardware: system identity and firmware,
    /// CPUs, NUMA nodes, memory, NICs (PCI address, NUMA node, SR-IOV),
    /// disks and PCI devices. Reads only; odd or missing sysfs files become
    /// warnings in the output. Exits 0 even with warnings.
    #[command(
        after_help = "Examples:\n  node-agent inspect                          summary of this machine\n  node-agent inspect -o json                  the inventory the provisioner stores\n  node-agent inspect --sysroot tree -o json   on a recorded sysfs/procfs tree\n  node-agent inspect --record /tmp/rec        also copy every file read into /tmp/rec\n\nRun as root for the SMBIOS table (installed memory) and EFI variables."
    )]
    Inspect {
        /// Root of the host's /sys, /proc and /dev (a directory holding a
        /// recorded or fake tree in tests).
        #[arg(long, value_name = "DIR", default_value = "/")]
        sysroot: PathBuf,
        /// Summary for people (text) or the inventory as JSON.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Copy every file, directory and symlink the inspection read into
        /// DIR, laid out like the host (DIR/sys/..., DIR/proc/...), so the
        /// inspection can be replayed with `--sysroot DIR`.
        #[arg(long, value_name = "DIR")]
        record: Option<PathBuf>,
    },
    /// Make this host match a host plan: create SR-IOV VFs and bind them to
    /// their driver, set the PF MTU, allocate hugepages per NUMA node, and
    /// check the kernel arguments. Safe to run again: values already right are
    /// left alone. Exits 1 when an item could not be applied.
    #[command(
        after_help = "Examples:\n  node-agent apply --plan plan.json --dry-run      show what would change\n  node-agent apply --plan plan.json                apply it\n  node-agent apply --plan plan.json --sysroot /tmp/fake-root   on a recorded sysfs tree\n\nThe plan is the JSON of `provisioner profile plan -o json`."
    )]
    Apply {
        /// The host plan (JSON).
        #[arg(long, value_name = "FILE")]
        plan: PathBuf,
        /// Root of the host's /sys and /proc (a directory holding a recorded
        /// or fake tree in tests).
        #[arg(long, value_name = "DIR", default_value = "/")]
        sysroot: PathBuf,
        /// Show what would be written, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Report as text or as JSON (items and the writes in order).
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Run as the init (PID 1) of the inspection ramdisk: mount /proc, /sys,
    /// /dev and /run, load /lib/modules/load-order, bring up the NIC whose
    /// MAC is `provisioner.mac=` on the kernel command line with DHCP, post
    /// the inventory to `provisioner.url=` with `provisioner.token=`, then
    /// heartbeat and obey the provisioner (wait, inspect, poweroff, reboot,
    /// apply: fetch the node's host plan, apply it as `apply` does, report).
    /// Never returns; every problem is printed on the console. Needs root and
    /// is meant for the ramdisk only: on a running host it would power the
    /// machine off when told. With `host.*` words on the kernel command line
    /// (a UKI of the host image) it boots the installed host instead: it
    /// verifies the slot's dm-verity root, mounts it and /var, and switches
    /// to it.
    #[command(
        after_help = "The ramdisk's kernel command line looks like:\n  console=ttyS0,115200 provisioner.url=http://10.213.0.1:8080 provisioner.token=TOKEN provisioner.mac=52:54:00:aa:00:01\n(written by the provisioner's iPXE script)."
    )]
    Init,
    /// Upgrade this installed host to another version of the host image
    /// (A/B): write the new version into the slot that is not running, then
    /// reboot into it. Runs on a host booted from the host image (host mode).
    ///
    /// Steps: the running slot comes from /run/host/status.json and the other
    /// slot is the target (the running slot is never written); the manifest,
    /// the UKI's SHA-256 and its kernel command line are checked before
    /// anything changes; the target slot's boot entries are removed from the
    /// ESP (/efi/EFI/Linux); root.img is streamed into the slot, hashed while
    /// writing, read back from the disk and checked against the manifest and
    /// the verity root hash; the UKI is written as host-SLOT-VERSION+3.efi
    /// (three tries). After the reboot the new version is blessed by its
    /// health checks, or the boot loader falls back to the running version
    /// once its tries are spent. Any failure leaves the running version
    /// booting as before (the other slot's old version is no longer
    /// bootable once its entries are removed); run the command again to
    /// retry. Refused while this boot is still on trial (not yet marked
    /// good): the other slot is its fallback.
    #[command(
        after_help = "Examples:\n  node-agent upgrade --image http://10.213.0.1:8080/images/2/manifest.json\n  node-agent upgrade --image /mnt/usb/host-2/                the directory holding manifest.json\n  node-agent upgrade --image /mnt/usb/host-2/manifest.json --no-reboot\n\nThe image is the output directory of `provisioner image build host`: manifest.json,\nroot.img and uki.efi side by side (served as-is over plain HTTP, or on a disk).\nExit status 0: the new version is in place (and the machine reboots)."
    )]
    Upgrade {
        /// The new image's manifest.json: a path, a directory holding it, or
        /// an http:// URL (a URL ending in / means its manifest.json).
        /// root.img and uki.efi are taken from the same place.
        #[arg(long, value_name = "URL|FILE")]
        image: String,
        /// Do not reboot at the end; the new version boots at the next
        /// reboot (it then has three tries to be marked good).
        #[arg(long)]
        no_reboot: bool,
        /// Root of the host's paths (/run, /sys, /dev, /efi); a fake tree in
        /// tests. Any other root than / implies --no-reboot.
        #[arg(long, value_name = "DIR", default_value = "/")]
        sysroot: PathBuf,
    },
    /// Write a host image (`host.raw.zst`) onto a disk, as a deploy does,
    /// without the provisioner: stream it (resuming a cut HTTP transfer with
    /// Range), check the compressed size and SHA-256, decompress it into
    /// 4 MiB O_DIRECT writes, read it back and check the raw SHA-256, and
    /// only then write the partition table (backup GPT moved to the disk's
    /// end, the data partition grown to fill the disk). Until that last step
    /// the disk has no partition table at either end, so a failed or
    /// interrupted write never boots. No node config is written (the host
    /// then boots without one). Prints progress, then the time, rate and
    /// peak memory. DESTROYS everything on the disk.
    #[command(after_help = "Examples:
  node-agent write-image --url http://10.213.0.1:8080/images/host/2/host.raw.zst --disk /dev/nvme0n1 \
      --compressed-size 402653184 --compressed-sha256 9f2c... --raw-size 1428160512 --raw-sha256 41ab...
  node-agent write-image --url /mnt/usb/host.raw.zst --disk /var/tmp/disk.img ...   a local file, onto a file

The sizes and SHA-256 are those of the image's manifest.json (`disk.compressed`, `disk.raw_size`,
`disk.raw_sha256`). The disk must be at least 1 MiB larger than the raw image. Exit status 0: the
image is on the disk, read back and checked, with its partition table.")]
    WriteImage {
        /// Where `host.raw.zst` is: an http:// URL (served with Range
        /// support) or a local file.
        #[arg(long, value_name = "URL|FILE")]
        url: String,
        /// The disk to overwrite (`/dev/nvme0n1`), or a file.
        #[arg(long, value_name = "PATH")]
        disk: String,
        /// Size in bytes of the compressed image.
        #[arg(long, value_name = "BYTES")]
        compressed_size: u64,
        /// SHA-256 (lowercase hex) of the compressed image.
        #[arg(long, value_name = "HEX")]
        compressed_sha256: String,
        /// Size in bytes of the raw (decompressed) image.
        #[arg(long, value_name = "BYTES")]
        raw_size: u64,
        /// SHA-256 (lowercase hex) of the raw image.
        #[arg(long, value_name = "HEX")]
        raw_sha256: String,
        /// How long a cut download is retried before giving up, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 180)]
        retry_seconds: u64,
        /// Print the figures as one JSON object at the end (for scripts and
        /// `cargo xtask bench deploy`).
        #[arg(long)]
        json: bool,
    },
    /// PID 1 of the installed host, run by the host boot after it switched
    /// to the verified root (not by hand): health checks, blessing the boot,
    /// the console shell.
    #[command(hide = true)]
    Host {
        /// The root slot the boot verified and mounted.
        #[arg(long, value_parser = parse_slot)]
        slot: Slot,
        /// The root's dm-verity device (`/dev/dm-N`).
        #[arg(long, value_name = "DEV")]
        root: PathBuf,
        /// The device mounted on /var, or `tmpfs`.
        #[arg(long, value_name = "DEV")]
        var: String,
        /// The armed watchdog's descriptor, inherited across exec.
        #[arg(long, value_name = "FD")]
        watchdog_fd: Option<i32>,
    },
}

fn parse_slot(text: &str) -> Result<Slot, String> {
    match text {
        "a" => Ok(Slot::A),
        "b" => Ok(Slot::B),
        _ => Err(format!("slot {text:?}: a or b")),
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    // As PID 1 the kernel passes its own arguments: ignore them, unless the
    // host boot exec'd `node-agent host` after switching root.
    if std::process::id() == 1 && std::env::args().nth(1).as_deref() != Some("host") {
        run_init();
    }
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_init() -> ! {
    agent::init::run(&|| inspect::inspect(&SysRoot::new("/", true)))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init => run_init(),
        Command::Host { .. } if std::process::id() != 1 => anyhow::bail!(
            "`node-agent host` is PID 1 of the installed host, started by the host boot after it \
             switched to the verified root; it is not run by hand"
        ),
        Command::Host {
            slot,
            root,
            var,
            watchdog_fd,
        } => agent::host::mode::run(&agent::host::mode::HostArgs {
            slot,
            root,
            var,
            watchdog_fd,
        }),
        Command::Inspect {
            sysroot,
            output,
            record,
        } => {
            let sys = SysRoot::new(&sysroot, true);
            let (inventory, accesses) = inspect::inspect_logged(&sys);
            if let Some(dir) = record {
                inspect::record::record(&sysroot, &dir, &accesses)?;
            }
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&inventory)?),
                Output::Text => print!("{}", inspect::Summary(&inventory)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply {
            plan,
            sysroot,
            dry_run,
            output,
        } => {
            let text = std::fs::read_to_string(&plan)
                .with_context(|| format!("cannot read the plan {}", plan.display()))?;
            let host_plan: HostPlan = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a host plan: give the JSON of `provisioner profile plan -o json`",
                    plan.display()
                )
            })?;
            let mut sys = SysRoot::new(sysroot, dry_run);
            let report = apply::apply(&host_plan, &mut sys);
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Text => println!("{report}"),
            }
            Ok(if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Upgrade {
            image,
            no_reboot,
            sysroot,
        } => run_upgrade(image, no_reboot, sysroot),
        Command::WriteImage {
            url,
            disk,
            compressed_size,
            compressed_sha256,
            raw_size,
            raw_sha256,
            retry_seconds,
            json,
        } => {
            let image = deploy::Image {
                source: url,
                compressed_size,
                compressed_sha256: compressed_sha256.to_ascii_lowercase(),
                raw_size,
                raw_sha256: raw_sha256.to_ascii_lowercase(),
            };
            let retry = deploy::fetch::Retry {
                budget: std::time::Duration::from_secs(retry_seconds),
                ..deploy::fetch::Retry::default()
            };
            run_write_image(&image, &disk, retry, json)
        }
    }
}

fn run_write_image(
    image: &deploy::Image,
    disk: &str,
    retry: deploy::fetch::Retry,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let say = |line: &str| eprintln!("node-agent: write-image: {line}");
    let started = std::time::Instant::now();
    let sys = SysRoot::new("/", false);
    let dev = deploy::open_disk(&sys, disk, &say)?;
    let progress = deploy::Progress::default();
    let (written, _) = deploy::write_image(image, &dev, retry, &progress, &say)?;
    let total = started.elapsed();
    let peak_kib = peak_rss_kib();
    let mib = |b: u64, t: std::time::Duration| b as f64 / f64::from(1 << 20) / t.as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "disk": disk,
                "raw_bytes": written.raw_bytes,
                "total_s": total.as_secs_f64(),
                "write_s": written.write_time.as_secs_f64(),
                "verify_s": written.verify_time.as_secs_f64(),
                "resumes": written.resumes,
                "direct": written.direct,
                "data_bytes": written.data_bytes,
                "peak_rss_kib": peak_kib,
            })
        );
    } else {
        println!(
            "{disk}: {} bytes written and verified in {:.1} s (write {:.1} s, {:.1} MiB/s; read              back {:.1} s, {:.1} MiB/s); {} resumes; {}; peak RSS {} KiB",
            written.raw_bytes,
            total.as_secs_f64(),
            written.write_time.as_secs_f64(),
            mib(written.raw_bytes, written.write_time),
            written.verify_time.as_secs_f64(),
            mib(written.raw_bytes, written.verify_time),
            written.resumes,
            if written.direct {
                "O_DIRECT"
            } else {
                "page cache + fsync"
            },
            peak_kib.map_or("unknown".to_owned(), |k| k.to_string())
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// This process's peak resident memory (`VmHWM` of /proc/self/status), KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn run_upgrade(image: String, no_reboot: bool, sysroot: PathBuf) -> anyhow::Result<ExitCode> {
    let say = |line: &str| println!("node-agent: upgrade: {line}");
    let real_root = sysroot == std::path::Path::new("/");
    let options = upgrade::Options { image, sysroot };
    let done = upgrade::upgrade(&options, &mut |line| say(line))?;
    let tries = model::host::TRIES;
    if no_reboot || !real_root {
        say(&format!(
            "slot {} holds version {}; it boots at the next reboot ({tries} tries)",
            done.slot, done.version
        ));
        return Ok(ExitCode::SUCCESS);
    }
    say(&format!(
        "slot {} holds version {}; rebooting into it ({tries} tries)",
        done.slot, done.version
    ));
    nix::unistd::sync();
    let err = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT)
        .expect_err("reboot returns only on failure");
    anyhow::bail!("cannot reboot ({err}); the new version is in place: reboot by hand to boot it")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
