//! `cargo xtask test`: exactly what CI runs (`.ci/run` calls this and nothing else).
//!
//! Steps run in order with output streamed; the first failure stops the run with an error
//! naming the step. The caller's target directory is used as is (no CARGO_TARGET_DIR here).

use std::ffi::OsString;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip the `deps` and `venv` steps (e.g. on a machine where you cannot or need not install
    /// packages; the peer tests still create their venv when it is missing).
    #[arg(long)]
    no_deps: bool,
    /// Extra arguments for `cargo test`, after `--` (e.g. `-- lease` runs only tests whose
    /// name contains "lease"; `-- -- --nocapture` shows their output).
    #[arg(last = true)]
    cargo_test_args: Vec<OsString>,
}

/// One CI step: a name for humans and what it runs.
enum Step {
    Deps,
    /// The PyPI peers in `<target>/venv` (sushy-tools, ...).
    Venv,
    /// The static `node-agent` the ramdisk tests pack as `/init` (image/tests/ramdisk.rs).
    StaticAgent,
    Cargo(Vec<OsString>),
    /// No import cycles, a pure core crate, no fakes in the provisioner's build
    /// (`cargo xtask layers`).
    Layers,
}

/// The slow tier of every crate that has one (see each Cargo.toml's `slow-tests`):
/// tests that need root, QEMU, Python or the Debian peers `deps` installs. A plain
/// `cargo test --workspace` leaves them out; CI and this command run them.
pub const SLOW_TIER: &str =
    "provisioner/slow-tests,hardware-tests/slow-tests,agent/slow-tests,image/slow-tests";

fn steps(args: &Args) -> Vec<(String, Step)> {
    let cargo = |a: &[&str]| Step::Cargo(a.iter().map(OsString::from).collect());
    let mut steps = vec![];
    if !args.no_deps {
        steps.push(("deps".to_owned(), Step::Deps));
        steps.push(("venv".to_owned(), Step::Venv));
    }
    steps.push(("fmt".to_owned(), cargo(&["fmt", "--all", "--", "--check"])));
    steps.push(("layers".to_owned(), Step::Layers));
    steps.push((
        "clippy".to_owned(),
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--features",
            SLOW_TIER,
            "--",
            "-D",
            "warnings",
        ]),
    ));
    steps.push(("static-agent".to_owned(), Step::StaticAgent));
    let mut test: Vec<OsString> = ["test", "--workspace", "--locked", "--features", SLOW_TIER]
        .map(OsString::from)
        .to_vec();
    test.extend(args.cargo_test_args.iter().cloned());
    steps.push(("test".to_owned(), Step::Cargo(test)));
    steps
}

fn describe(step: &Step) -> String {
    match step {
        Step::Deps => "cargo xtask deps".to_owned(),
        Step::Venv => format!(
            "pip install into <target>/venv: {}",
            crate::venv::PEERS.join(" ")
        ),
        Step::Layers => "cargo xtask layers (import cycles, pure core, no fakes)".to_owned(),
        Step::StaticAgent => format!(
            "RUSTFLAGS=\"-C target-feature=+crt-static -C strip=debuginfo\" cargo build --release -p agent --target {}",
            crate::ramdisk::AGENT_TARGET
        ),
        Step::Cargo(args) => {
            let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
            format!("cargo {}", args.join(" "))
        }
    }
}

fn run_step(step: &Step) -> Result<()> {
    match step {
        Step::Deps => crate::deps::run(&crate::deps::Args::default()),
        Step::Venv => {
            crate::venv::ensure(&crate::workspace::target_dir()?, crate::venv::PEERS).map(drop)
        }
        Step::Layers => crate::layers::check(),
        Step::StaticAgent => crate::ramdisk::build_static_agent().map(drop),
        Step::Cargo(args) => {
            let status = crate::workspace::cargo().args(args).status()?;
            if !status.success() {
                bail!("exited with {status}");
            }
            Ok(())
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    let mut done = vec![];
    for (name, step) in steps(args) {
        println!("==> [{name}] {}", describe(&step));
        let t = Instant::now();
        let result = run_step(&step);
        let took = t.elapsed();
        if let Err(e) = result {
            println!("==> [{name}] FAILED after {}", secs(took));
            bail!(
                "CI step `{name}` failed ({}): {e:#}\nsteps passed before it: {}",
                describe(&step),
                if done.is_empty() {
                    "none".to_owned()
                } else {
                    done.join(", ")
                }
            );
        }
        println!("==> [{name}] ok in {}", secs(took));
        done.push(format!("{name} {}", secs(took)));
    }
    println!(
        "==> all {} steps passed in {} ({})",
        done.len(),
        secs(start.elapsed()),
        done.join(", ")
    );
    Ok(())
}
