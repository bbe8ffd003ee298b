//! `provisioner image build ...`: the image builder's CLI (the work is in the `image` crate).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use image::progress::{Lines, Progress, Step};
use image::ramdisk::{self, KernelSource, RamdiskOptions};

pub(super) const IMAGE_LONG_ABOUT: &str = "\
Build the images the provisioner serves, without a daemon.

  provisioner image build ramdisk --agent node-agent --out DIR
      the inspection ramdisk: DIR/vmlinuz (Debian's kernel), DIR/initramfs
      (node-agent as /init plus the NIC and disk drivers servers need) and
      DIR/manifest.json (versions, modules, sizes, sha256)

`cargo xtask ramdisk` builds a static node-agent and runs the ramdisk build in one go.";

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
}

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

pub(super) fn run(command: ImageCommand) -> anyhow::Result<()> {
    let ImageCommand::Build(BuildCommand::Ramdisk {
        out,
        agent,
        cache,
        kernel_deb,
        kernel_metapackage,
    }) = command;
    let kernel = match kernel_deb {
        Some(deb) => KernelSource::Deb(deb),
        None => KernelSource::Apt {
            metapackage: kernel_metapackage,
        },
    };
    let cache = cache.unwrap_or_else(image::kernel::default_cache_dir);
    let options = RamdiskOptions::new(out.clone(), agent, kernel, cache);
    let started = std::time::Instant::now();
    let progress: &dyn Progress = if std::io::stderr().is_terminal() {
        &Spinners
    } else {
        &Lines
    };
    let manifest = ramdisk::build(&options, progress)
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
