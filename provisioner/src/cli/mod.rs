//! The operator CLI (clap), one module per command group: `serve`, `site`,
//! `node`, `profile`, `bmc`, `key`, `image` (`build.rs`); `client.rs` talks to the
//! daemon, `output.rs` prints. `serve`, `site validate|schema`, `profile`,
//! `bmc`, `key` and `image` work without a daemon; every other command talks to the
//! daemon's REST API and decodes its answers into [`crate::views`].
//!
//! Invariant: the CLI never opens the database; it goes through the API so the
//! daemon stays the only writer.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bmc;
mod build;
mod client;
mod key;
mod node;
mod output;
mod profile;
mod serve;
mod site;

use client::Client;

const ABOUT: &str = "Bare-metal provisioner: boots, inspects and provisions servers from one site directory kept in git.";

const LONG_ABOUT: &str = "\
Bare-metal provisioner: boots, inspects and provisions servers from one site directory kept in git.

Start here:
  provisioner site validate ./site          check a site directory, no daemon needed
  provisioner serve --site ./site --state /var/lib/provisioner
                                            run the daemon (API, timers, site reload)
  provisioner node list                     what the daemon knows, in a table
  provisioner profile plan --inventory node.json --site ./site
                                            the host plan of a machine, no daemon needed

The CLI finds the local daemon through STATE/api-url and STATE/api-token
(STATE is --state, default /var/lib/provisioner); --api and PROVISIONER_TOKEN
override them for a remote daemon.";

#[derive(Debug, Parser)]
#[command(name = "provisioner", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// Base URL of the daemon's API [default: read from STATE/api-url, else http://127.0.0.1:8080]
    #[arg(long, global = true, env = "PROVISIONER_API", value_name = "URL")]
    api: Option<String>,
    /// The daemon's state directory: database, API token, API URL, config-signing key.
    #[arg(
        long,
        global = true,
        env = "PROVISIONER_STATE",
        value_name = "DIR",
        default_value = "/var/lib/provisioner"
    )]
    state: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: REST API, node store, wait-state timers, site reload on change.
    Serve(serve::ServeArgs),
    /// Check, reload and describe the site directory (site.yaml, nodes.yaml, profiles/).
    #[command(subcommand)]
    Site(site::SiteCommand),
    /// Show and change nodes through the daemon.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Match an inventory to a hardware profile and compute its host plan (no daemon needed).
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
    /// Talk to one BMC directly, without the daemon: power, boot device, inventory.
    #[command(subcommand, long_about = bmc::BMC_LONG_ABOUT)]
    Bmc(bmc::BmcCommand),
    /// The config-signing key that seals each node's config at deploy (no daemon needed).
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Build images without a daemon: the inspection ramdisk (kernel + initramfs).
    #[command(subcommand, long_about = build::IMAGE_LONG_ABOUT)]
    Image(build::ImageCommand),
}

/// Entry point of the `provisioner` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args, cli.state).map(|()| ExitCode::SUCCESS),
        Command::Site(command) if !command.needs_daemon() => site::run_local(command),
        Command::Site(command) => {
            let client = Client::new(cli.api, &cli.state)?;
            block_on(site::run(&client, command))
        }
        Command::Node(command) => {
            let client = Client::new(cli.api, &cli.state)?;
            block_on(node::run(&client, command))
        }
        Command::Profile(command) => profile::run(command),
        Command::Key(command) => key::run(command, &cli.state).map(|()| ExitCode::SUCCESS),
        Command::Bmc(command) => block_on(bmc::run(command)),
        Command::Image(command) => build::run(command).map(|()| ExitCode::SUCCESS),
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(
    future: F,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(future)?;
    Ok(ExitCode::SUCCESS)
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
