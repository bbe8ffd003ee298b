//! `provisioner serve`: the daemon's command line and logging.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::daemon::{self, ServeOptions};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The site directory (site.yaml, nodes.yaml, profiles/).
    #[arg(long, value_name = "DIR")]
    site: PathBuf,
    /// Listen here instead of site.yaml's api.listen (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Seconds between checks of the site files for changes (0: reload only on
    /// `provisioner site reload`).
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    site_poll_interval: u64,
    /// Run only the API, the store and the timers: no boot services (DHCP,
    /// TFTP) on the provisioning network (to try the CLI on a site away from
    /// its network). `network.dhcp.mode: off` in site.yaml turns off DHCP alone.
    #[arg(long)]
    api_only: bool,
    /// Log lines as human text or as JSON objects (one per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Read every node's power state from its BMC this often and record changes in the
    /// node's history (0: never).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    power_sync_interval: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Runs the daemon until it is stopped.
pub(crate) fn run(args: ServeArgs, state: PathBuf) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(daemon::serve(ServeOptions {
        site: args.site,
        state,
        listen: args.listen,
        api_only: args.api_only,
        site_poll: (args.site_poll_interval > 0)
            .then(|| std::time::Duration::from_secs(args.site_poll_interval)),
        power_sync: (args.power_sync_interval > 0)
            .then(|| std::time::Duration::from_secs(args.power_sync_interval)),
    }))?;
    Ok(())
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
