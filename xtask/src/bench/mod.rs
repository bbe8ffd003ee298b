//! `cargo xtask bench <name>`: performance figures for one component, measured next to a
//! peer written by others on the same machine in the same run.
//!
//! Each benchmark is a submodule with its own `Args` and `run`; shared pieces (child process
//! guard, free ports, percentiles) live in `process` and `stats`. To add a benchmark, add a
//! module and a variant to [`Bench`].

mod api;
mod bmc;
mod deploy;
mod dhcp;
mod image_serve;
mod peer;
mod process;
mod pxe;
mod stats;
mod tftp;

use anyhow::Result;
use clap::Subcommand;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// The daemon's HTTP API: site load time, `GET /api/v1/nodes` latency, CLI, memory.
    #[command(long_about = api::LONG_ABOUT)]
    Api(api::Args),
    /// The TFTP server of `provisioner serve` next to dnsmasq: one large file, many clients.
    #[command(long_about = tftp::LONG_ABOUT)]
    Tftp(tftp::Args),
    /// The Redfish BMC driver: 200 concurrent power-status queries, p50/p99, memory.
    #[command(long_about = bmc::LONG_ABOUT)]
    Bmc(bmc::Args),
    /// The DHCP server of `provisioner serve` next to Kea and dnsmasq under perfdhcp.
    #[command(long_about = dhcp::LONG_ABOUT)]
    Dhcp(dhcp::Args),
    /// The agent's image write path (`node-agent write-image`) next to dd and curl|zstd|dd; memory.
    #[command(long_about = deploy::LONG_ABOUT)]
    Deploy(deploy::Args),
    /// PXE boots in the lab: seconds to the iPXE script and to the initramfs marker, BIOS and UEFI.
    #[command(long_about = pxe::LONG_ABOUT)]
    Pxe(pxe::Args),
}

pub fn run(args: Args) -> Result<()> {
    match args.bench {
        Bench::Api(args) => api::run(&args),
        Bench::Tftp(args) => tftp::run(&args),
        Bench::Bmc(args) => bmc::run(&args),
        Bench::Dhcp(args) => dhcp::run(&args),
        Bench::Pxe(args) => pxe::run(&args),
        Bench::Deploy(args) => deploy::run(&args),
    }
}
