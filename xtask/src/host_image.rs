//! `cargo xtask host-image`: builds a static `node-agent` and the provisioner, then runs
//! `provisioner image build host` with that agent (like `cargo xtask ramdisk`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output directory [default: <target>/host-image]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The image version (`provisioner image build host --version`).
    #[arg(long, value_name = "V", default_value = "1")]
    version: String,
    /// Package cache (`provisioner image build host --cache`).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    let target = crate::workspace::target_dir()?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| target.join("host-image"));
    let agent = crate::ramdisk::build_static_agent()?;
    let mut build = std::process::Command::new(crate::ramdisk::build_provisioner()?);
    build
        .args(["image", "build", "host", "--keep-raw", "--agent"])
        .arg(&agent)
        .arg("--out")
        .arg(&out)
        .arg("--version")
        .arg(&args.version);
    if let Some(cache) = &args.cache {
        build.arg("--cache").arg(cache);
    }
    let status = build.status()?;
    if !status.success() {
        bail!("`provisioner image build host` failed ({status})");
    }
    println!(
        "host image in {} ({:.1} s with the builds); boot host.raw with OVMF, see \
         `provisioner image build host --help`",
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
