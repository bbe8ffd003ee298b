//! `node-agent`: the only code the provisioner runs on a server. In the
//! inspection ramdisk it inventories the hardware and writes the host image;
//! in the installed host it applies the host plan. It never talks to a BMC.
//!
//! This build carries the command-line frame only: `inspect`, `apply` and the
//! init mode arrive with the inspection and planner work (see ARCHITECTURE.md).

use clap::Parser;

/// node-agent: runs on the server being provisioned (inspection ramdisk and
/// installed host) and reports to the provisioner over HTTP.
///
/// This build has no subcommands yet; `inspect` (hardware inventory) and
/// `apply` (host plan) come next. See ARCHITECTURE.md.
#[derive(Debug, Parser)]
#[command(name = "node-agent", version)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "node-agent {}: no commands in this build yet; see --help",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
