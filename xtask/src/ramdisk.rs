//! `cargo xtask ramdisk`: builds a static `node-agent`, then runs
//! `provisioner image build ramdisk` with it.
//!
//! The static agent is `<target>/x86_64-unknown-linux-gnu/release/node-agent`: with an
//! explicit `--target`, RUSTFLAGS apply to that target's artifacts only, so the host build
//! (build scripts, the debug binaries the tests use) is not rebuilt.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};

/// The target triple of the static agent (glibc, linked statically: no extra toolchain).
pub const AGENT_TARGET: &str = "x86_64-unknown-linux-gnu";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output directory [default: <target>/ramdisk]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Kernel package cache (passed to `provisioner image build ramdisk --cache`).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Use this kernel .deb instead of apt-get download.
    #[arg(long, value_name = "FILE")]
    kernel_deb: Option<PathBuf>,
}

/// Where [`build_static_agent`] leaves the agent.
pub fn static_agent_path(target: &Path) -> PathBuf {
    target.join(AGENT_TARGET).join("release/node-agent")
}

/// `cargo build --release -p agent --target x86_64-unknown-linux-gnu` with
/// `-C target-feature=+crt-static -C strip=debuginfo` added to RUSTFLAGS (the line tables
/// of the release profile would double the agent's size in the ramdisk; symbols stay, so
/// a panic's backtrace still names functions).
pub fn build_static_agent() -> Result<PathBuf> {
    let flags = format!(
        "{} -C target-feature=+crt-static -C strip=debuginfo",
        std::env::var("RUSTFLAGS").unwrap_or_default()
    )
    .trim()
    .to_owned();
    let status = crate::workspace::cargo()
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "agent",
            "--target",
            AGENT_TARGET,
        ])
        .env("RUSTFLAGS", flags)
        .status()?;
    if !status.success() {
        bail!(
            "building the static node-agent failed ({status}); is the target installed? \
             `rustup target add {AGENT_TARGET}`"
        );
    }
    Ok(static_agent_path(&crate::workspace::target_dir()?))
}

pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    let target = crate::workspace::target_dir()?;
    let out = args.out.clone().unwrap_or_else(|| target.join("ramdisk"));
    build(&out, args.cache.as_deref(), args.kernel_deb.as_deref())?;
    println!(
        "ramdisk in {} ({:.1} s with the builds); boot it with:\n  \
         qemu-system-x86_64 -accel tcg -m 1024 -nographic -kernel {0}/vmlinuz -initrd {0}/initramfs -append console=ttyS0",
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds the static agent and the provisioner (debug), then the ramdisk into `out`
/// (`vmlinuz`, `initramfs`, `manifest.json`).
pub fn build(out: &Path, cache: Option<&Path>, kernel_deb: Option<&Path>) -> Result<()> {
    let agent = build_static_agent()?;
    let mut build = std::process::Command::new(build_provisioner()?);
    build
        .args(["image", "build", "ramdisk", "--agent"])
        .arg(&agent)
        .arg("--out")
        .arg(out);
    if let Some(cache) = cache {
        build.arg("--cache").arg(cache);
    }
    if let Some(deb) = kernel_deb {
        build.arg("--kernel-deb").arg(deb);
    }
    let status = build.status()?;
    if !status.success() {
        bail!("`provisioner image build ramdisk` failed ({status})");
    }
    Ok(())
}

/// `cargo build -p provisioner` (debug); returns the binary's path.
pub fn build_provisioner() -> Result<PathBuf> {
    let status = crate::workspace::cargo()
        .args(["build", "--locked", "-p", "provisioner"])
        .status()?;
    if !status.success() {
        bail!("building the provisioner failed ({status})");
    }
    Ok(crate::workspace::target_dir()?.join("debug/provisioner"))
}
