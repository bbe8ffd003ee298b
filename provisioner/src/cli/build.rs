//! `provisioner image build ...`: the image builder's CLI (the work is in the `image` crate).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use image::host::{self, HostOptions};
use image::progress::{Lines, Progress, Step};
use image::ramdisk::{self, KernelSource, RamdiskOptions};

pub(super) const IMAGE_LONG_ABOUT: &str = "\
Build the images the provisioner serves, without a daemon.

  provisioner image build ramdisk --agent node-agent --out DIR
      the inspection ramdisk: DIR/vmlinuz (Debian's kernel), DIR/initramfs
      (node-agent as /init plus the NIC and disk drivers servers need) and
      DIR/manifest.json (versions, modules, sizes, sha256)

  provisioner image build host --agent node-agent --out DIR [--version V]
      the immutable A/B host disk: DIR/host.raw.zst (the whole GPT disk),
      DIR/root.img and DIR/uki.efi (one slot's root with its dm-verity tree,
      and the UKI that boots it: for upgrades) and DIR/manifest.json

`cargo xtask ramdisk` and `cargo xtask host-image` build a static node-agent and run
the build in one go.";

#[derive(Debug, Subcommand)]
pub(super) enum ImageCommand {
    /// Build an image.
    #[command(subcommand)]
    Build(BuildCommand),
}

#[derive(Debug, Subcommand)]
pub(super) enum BuildCommand {
    /// The inspection ramdisk: Debian's kernel and an initramfs with node-agent as /init.
    #[command(long_about = RAMDISK_LONG_ABOUT, after_help = RAMDISK_AFTER_HELP)]
    Ramdisk {
        /// Output directory: vmlinuz, initramfs and manifest.json are written there.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A statically linked node-agent (x86-64). It becomes /init.
        #[arg(long, value_name = "PATH")]
        agent: PathBuf,
        /// Where kernel packages are downloaded and unpacked
        /// [default: $XDG_CACHE_HOME/provisioner, else ~/.cache/provisioner]
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// Use this kernel package (.deb) instead of downloading one with apt-get.
        #[arg(long, value_name = "FILE", conflicts_with = "kernel_metapackage")]
        kernel_deb: Option<PathBuf>,
        /// The Debian package that names the current kernel (apt-get download resolves it).
        #[arg(long, value_name = "PACKAGE", default_value = image::kernel::DEFAULT_METAPACKAGE)]
        kernel_metapackage: String,
    },
    /// The immutable A/B host disk: host.raw.zst, root.img, uki.efi, manifest.json.
    #[command(long_about = HOST_LONG_ABOUT, after_help = HOST_AFTER_HELP)]
    Host {
        /// Output directory: host.raw.zst, root.img, uki.efi and manifest.json are written
        /// there (and host.raw with --keep-raw).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The image version: in the UKI's file name and os-release's VERSION_ID, which
        /// systemd-boot sorts by. Letters, digits, '.', '_', '~'.
        #[arg(long, value_name = "V", default_value = "1")]
        version: String,
        /// A public key the host trusts, copied to /etc/provisioner/trust.pub in the root.
        #[arg(long, value_name = "FILE")]
        trust_key: Option<PathBuf>,
        /// A statically linked node-agent (x86-64): /init of the UKI's initramfs and
        /// /usr/bin/node-agent in the root.
        #[arg(long, value_name = "PATH")]
        agent: PathBuf,
        /// Use this kernel package (.deb) instead of downloading linux-image-amd64's.
        #[arg(long, value_name = "FILE")]
        kernel_deb: Option<PathBuf>,
        /// Where Debian packages are downloaded and unpacked
        /// [default: $XDG_CACHE_HOME/provisioner, else ~/.cache/provisioner]
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// Also leave the uncompressed disk, DIR/host.raw (to boot it in QEMU).
        #[arg(long)]
        keep_raw: bool,
    },
}

const HOST_LONG_ABOUT: &str = "\
Build the immutable host image that deployed machines run.

The disk is GPT: esp (systemd-boot and one unified kernel image per slot), root-a
and root-b (read-only erofs roots checked by dm-verity), config (per-node config,
written at deploy) and data (ext4 for /var). This builds slot A; root-b stays
empty until the first upgrade.

Steps: fetch Debian's kernel, busybox-static and systemd-boot-efi with apt-get
(cached); make the root file system (node-agent, busybox, kernel modules) with
mkfs.erofs; compute its dm-verity hash tree; build the UKI (kernel, an initramfs
with node-agent as /init, a command line with the root hash) with objcopy; write
the ESP (FAT32), the data file system (mkfs.ext4) and the GPT into host.raw; and
compress it. No root and no loop devices are needed. The same inputs and
SOURCE_DATE_EPOCH give the same bytes (default time: 2025-01-01T00:00:00Z).

Tools needed at build time: apt-get, dpkg-deb, mkfs.erofs (erofs-utils), objcopy
(binutils), mkfs.ext4 (e2fsprogs).";

const HOST_AFTER_HELP: &str = "\
Examples:
  cargo xtask host-image                      (builds a static agent, then this)
  provisioner image build host --agent target/x86_64-unknown-linux-gnu/release/node-agent --out out/host --version 2 --keep-raw

Boot the raw disk in QEMU (UEFI):
  cp /usr/share/OVMF/OVMF_VARS_4M.fd vars.fd
  qemu-system-x86_64 -machine q35 -m 1024 -nographic \\
    -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \\
    -drive if=pflash,format=raw,file=vars.fd \\
    -drive if=virtio,format=raw,file=out/host/host.raw";

const RAMDISK_LONG_ABOUT: &str = "\
Build the inspection ramdisk that PXE-booted servers run.

Steps: fetch Debian's kernel (apt-get download linux-image-amd64, resolved to the
versioned package, cached), pick the NIC and storage drivers real servers and the
lab need with their dependencies, and pack an initramfs (cpio, zstd) whose /init
is the static node-agent. The same inputs always give the same bytes.

The agent must be statically linked: build it with `cargo xtask ramdisk` or
RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p agent --target x86_64-unknown-linux-gnu";

const RAMDISK_AFTER_HELP: &str = "\
Examples:
  provisioner image build ramdisk --agent target/x86_64-unknown-linux-gnu/release/node-agent --out /srv/ramdisk
  provisioner image build ramdisk --agent node-agent --out out --kernel-deb linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb";

/// A spinner per step on a terminal; each finished step stays as a line.
#[derive(Debug)]
struct Spinners;

impl Progress for Spinners {
    fn begin(&self, what: &str) -> Step {
        let bar = indicatif::ProgressBar::new_spinner()
            .with_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .expect("a valid template"),
            )
            .with_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        SPINNER.with(|s| *s.borrow_mut() = Some(bar));
        Step::new(what)
    }

    fn finish(&self, step: Step, detail: &str) {
        let line = format!(
            "{}: {detail} ({:.1} s)",
            step.what,
            step.elapsed().as_secs_f64()
        );
        match SPINNER.with(|s| s.borrow_mut().take()) {
            Some(bar) => bar.finish_with_message(line),
            None => eprintln!("{line}"),
        }
    }
}

thread_local! {
    // The current step's spinner (steps do not overlap).
    static SPINNER: std::cell::RefCell<Option<indicatif::ProgressBar>> = const { std::cell::RefCell::new(None) };
}

fn progress() -> &'static dyn Progress {
    if std::io::stderr().is_terminal() {
        &Spinners
    } else {
        &Lines
    }
}

pub(super) fn run(command: ImageCommand) -> anyhow::Result<()> {
    let ImageCommand::Build(build) = command;
    match build {
        BuildCommand::Ramdisk {
            out,
            agent,
            cache,
            kernel_deb,
            kernel_metapackage,
        } => build_ramdisk(out, agent, cache, kernel_deb, kernel_metapackage),
        BuildCommand::Host {
            out,
            version,
            trust_key,
            agent,
            kernel_deb,
            cache,
            keep_raw,
        } => {
            let epoch =
                host::source_date_epoch(std::env::var("SOURCE_DATE_EPOCH").ok().as_deref())?;
            let options = HostOptions {
                out: out.clone(),
                agent,
                kernel: match kernel_deb {
                    Some(deb) => KernelSource::Deb(deb),
                    None => KernelSource::Apt {
                        metapackage: image::kernel::DEFAULT_METAPACKAGE.to_owned(),
                    },
                },
                cache: cache.unwrap_or_else(image::kernel::default_cache_dir),
                version,
                trust_key,
                keep_raw,
                epoch,
            };
            let started = std::time::Instant::now();
            let manifest = host::build(&options, progress())
                .with_context(|| format!("building the host image into {}", out.display()))?;
            println!(
                "{}: host image {} (kernel {}), host.raw.zst {:.1} MiB of a {:.0} MiB disk, root hash {}, in {:.1} s",
                out.display(),
                manifest.version,
                manifest.kernel_release,
                manifest.disk.compressed.size as f64 / (1 << 20) as f64,
                manifest.disk.raw_size as f64 / (1 << 20) as f64,
                manifest.root.verity.root_hash,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

fn build_ramdisk(
    out: PathBuf,
    agent: PathBuf,
    cache: Option<PathBuf>,
    kernel_deb: Option<PathBuf>,
    kernel_metapackage: String,
) -> anyhow::Result<()> {
    let kernel = match kernel_deb {
        Some(deb) => KernelSource::Deb(deb),
        None => KernelSource::Apt {
            metapackage: kernel_metapackage,
        },
    };
    let cache = cache.unwrap_or_else(image::kernel::default_cache_dir);
    let options = RamdiskOptions::new(out.clone(), agent, kernel, cache);
    let started = std::time::Instant::now();
    let manifest = ramdisk::build(&options, progress())
        .with_context(|| format!("building the inspection ramdisk into {}", out.display()))?;
    println!(
        "{}: kernel {} ({} {}), initramfs {:.1} MiB with {} modules, in {:.1} s",
        out.display(),
        manifest.kernel.release,
        manifest.kernel.package,
        manifest.kernel.package_version,
        manifest.initramfs.size as f64 / (1 << 20) as f64,
        manifest.modules.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
