//! `node-agent` command line: wiring only; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use model::plan::HostPlan;

use agent::apply;
use agent::sysroot::SysRoot;

/// node-agent: the provisioner's agent on a server (inspection ramdisk and
/// installed host). Today it applies host plans; inspection comes next.
///
/// Start with `node-agent apply --plan plan.json --dry-run`: it shows what the
/// host plan would change on this machine without changing anything.
#[derive(Debug, Parser)]
#[command(name = "node-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
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
    }
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
