//! The operator CLI. `serve` and `site validate|schema` work without a daemon;
//! every other command talks to the daemon's REST API.
//!
//! Invariant: the CLI never opens the database; it goes through the API so the
//! daemon stays the only writer.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use model::apply::ApplyReport;
use model::inventory::Inventory;
use model::profile::Profile;

mod build;

use crate::daemon::{self, ServeOptions};
use crate::plan::{self, matching, render};
use crate::site;

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
    /// The daemon's state directory: database, API token, API URL.
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
    Serve(ServeArgs),
    /// Check, reload and describe the site directory (site.yaml, nodes.yaml, profiles/).
    #[command(subcommand)]
    Site(SiteCommand),
    /// Show and change nodes through the daemon.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Match an inventory to a hardware profile and compute its host plan (no daemon needed).
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Talk to one BMC directly, without the daemon: power, boot device, inventory.
    #[command(subcommand, long_about = BMC_LONG_ABOUT)]
    Bmc(BmcCommand),
    /// Build images without a daemon: the inspection ramdisk (kernel + initramfs).
    #[command(subcommand, long_about = build::IMAGE_LONG_ABOUT)]
    Image(build::ImageCommand),
}

#[derive(Debug, Subcommand)]
enum ProfileCommand {
    /// Say which profile matches a machine, and why each other profile does not.
    #[command(
        after_help = "Example:\n  provisioner profile match --inventory node.json --site ./site"
    )]
    Match {
        /// The machine's inventory (JSON, as the agent's inspection reports it).
        #[arg(long, value_name = "FILE")]
        inventory: PathBuf,
        #[command(flatten)]
        source: ProfileSet,
        /// Print a text report (table) or the match report as JSON.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Compute a machine's host plan: kernel arguments, reserved and isolated CPUs,
    /// hugepages per NUMA node, SR-IOV VFs, root and data disks.
    #[command(
        after_help = "Examples:\n  provisioner profile plan --inventory node.json --profile profiles/compute-intel-e810.yaml\n  provisioner profile plan --inventory node.json --site ./site -o json"
    )]
    Plan {
        /// The machine's inventory (JSON, as the agent's inspection reports it).
        #[arg(long, value_name = "FILE")]
        inventory: PathBuf,
        #[command(flatten)]
        source: PlanSource,
        /// Print the plan as text (table) or as the JSON that `node-agent apply --plan` reads.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

/// Where the candidate profiles come from.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct ProfileSet {
    /// A site directory: the whole site is validated and its profiles/*.yaml are the candidates.
    #[arg(long, value_name = "DIR")]
    site: Option<PathBuf>,
    /// A directory of profile files (e.g. the repository's profiles/).
    #[arg(long, value_name = "DIR")]
    profiles: Option<PathBuf>,
}

/// Which profile to plan with: one file, or the one that matches among a set.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct PlanSource {
    /// Plan with this profile file (when its `match` does not hold on the machine, a
    /// warning says why, and the plan is made anyway).
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Plan with the profile of this site that matches the machine.
    #[arg(long, value_name = "DIR")]
    site: Option<PathBuf>,
    /// Plan with the profile of this directory that matches the machine.
    #[arg(long, value_name = "DIR")]
    profiles: Option<PathBuf>,
}

const BMC_LONG_ABOUT: &str = "\
Talk to one BMC directly, without the daemon: power, boot device, inventory.

BMC URLs: redfish://host[:port][/redfish/v1/Systems/ID] (HTTPS, certificate verified),
redfish+http://host[:port][...] (plain HTTP, labs only). Without a system path the
BMC's only system is used; when it has several, they are listed and you pick one.
The password never goes on the command line: --password-env VAR or --password-file FILE.

Examples:
  BMC_PASSWORD=... provisioner bmc power status --bmc redfish://10.0.0.5 -u admin --password-env BMC_PASSWORD
  provisioner bmc boot-device pxe --bmc redfish://10.0.0.5 -u admin --password-file /etc/bmc.pw
  provisioner bmc inventory --bmc redfish://10.0.0.5 --ca-file site-ca.pem -u admin --password-env PW -o json";

#[derive(Debug, Args)]
struct ServeArgs {
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

#[derive(Debug, Clone, Copy, Default, ValueEnum)]
enum Output {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum SiteCommand {
    /// Check every file of a site directory; print every problem as file:line:column: message.
    Validate {
        /// The site directory.
        dir: PathBuf,
    },
    /// Ask the daemon to reload its site now (it also reloads by itself when files change).
    Reload,
    /// Show the daemon's active site and the last refused change.
    Status {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Write the JSON Schemas of site.yaml, nodes.yaml, profiles, inventories and host plans (for editors and tools) into DIR.
    Schema {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ManualEvent {
    /// Boot the inspection ramdisk and record the hardware.
    Inspect,
    /// Write the host image.
    Deploy,
    /// Take an active node out of service and clean it.
    Undeploy,
    /// Clean an available or failed node.
    Clean,
    /// Stop the current wait and mark the node failed.
    Abort,
}

impl ManualEvent {
    fn as_str(self) -> &'static str {
        match self {
            ManualEvent::Inspect => "inspect",
            ManualEvent::Deploy => "deploy",
            ManualEvent::Undeploy => "undeploy",
            ManualEvent::Clean => "clean",
            ManualEvent::Abort => "abort",
        }
    }
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// List nodes with their state.
    List {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one node: state, why, since when, BMC, profile. With
    /// `--inventory`, the hardware its inspection agent reported instead.
    #[command(
        after_help = "Examples:\n  provisioner node show lab-compute-0\n  provisioner node show lab-compute-0 --inventory          CPUs, NUMA nodes, NICs, disks\n  provisioner node show lab-compute-0 --inventory -o json  the whole inventory, as the agent sent it"
    )]
    Show {
        name: String,
        /// Print the node's stored inventory (from its last inspection).
        #[arg(long)]
        inventory: bool,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show a node's transitions, oldest first.
    History {
        name: String,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Freeze (on) or unfreeze (off) a node: no automation and no provisioning while on.
    Maintenance {
        name: String,
        #[arg(value_name = "on|off")]
        switch: OnOff,
        /// Why (recorded in the history and shown by `node show`).
        #[arg(long)]
        reason: Option<String>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Inspect a node (again): one-time network boot and power on through its BMC, then
    /// the agent reports the inventory. Allowed when enrolled, available or failed.
    Inspect {
        name: String,
        /// Why (recorded in the history).
        #[arg(long)]
        reason: Option<String>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Send a lifecycle event by hand (the daemon refuses one that the node's state does not allow).
    Event {
        name: String,
        event: ManualEvent,
        #[arg(long)]
        reason: Option<String>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Apply the node's host plan on the machine now, through its running agent
    /// (inspection ramdisk): create the SR-IOV VFs and bind their driver, set the
    /// PF MTU, allocate hugepages per NUMA node, check the kernel arguments. The
    /// agent gets the request with its next heartbeat (site.yaml
    /// `lifecycle.heartbeat_interval`, default 10 s) and reports item by item; a second apply changes nothing. Refused unless the node is
    /// available with a plan and its agent is up (site.yaml
    /// `lifecycle.after_inspection: wait` keeps it up after inspection).
    #[command(
        after_help = "Examples:\n  provisioner node apply lab-compute-0            ask; `node show` shows the report later\n  provisioner node apply lab-compute-0 --wait     ask, wait for the report and print it\n\nWith --wait the exit status is 1 when an item failed."
    )]
    Apply {
        name: String,
        /// Wait for the agent's report and print it.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        timeout: u64,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Delete a node and its history (only at rest or in maintenance).
    Delete { name: String },
    /// Read or change a node's power through its BMC (credentials from nodes.yaml).
    Power {
        name: String,
        #[arg(value_name = "status|on|off|reset|cycle")]
        action: PowerCommand,
        /// With `off`: ask the operating system to shut down instead of cutting power.
        #[arg(long)]
        graceful: bool,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
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
        Command::Serve(args) => {
            init_logging(args.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(daemon::serve(ServeOptions {
                site: args.site,
                state: cli.state,
                listen: args.listen,
                api_only: args.api_only,
                site_poll: (args.site_poll_interval > 0)
                    .then(|| std::time::Duration::from_secs(args.site_poll_interval)),
                power_sync: (args.power_sync_interval > 0)
                    .then(|| std::time::Duration::from_secs(args.power_sync_interval)),
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Site(SiteCommand::Validate { dir }) => Ok(validate(&dir)),
        Command::Site(SiteCommand::Schema { out }) => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            for (name, schema) in site::schemas() {
                let path = out.join(name);
                std::fs::write(&path, serde_json::to_string_pretty(&schema)? + "\n")
                    .with_context(|| format!("cannot write {}", path.display()))?;
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Profile(command) => profile_command(command),
        Command::Site(command) => {
            let client = Client::new(cli.api, &cli.state)?;
            block_on(site_command(&client, command))
        }
        Command::Node(command) => {
            let client = Client::new(cli.api, &cli.state)?;
            block_on(node_command(&client, command))
        }
        Command::Bmc(command) => block_on(bmc_command(command)),
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

fn validate(dir: &Path) -> ExitCode {
    match site::load(dir) {
        Ok(site) => {
            println!("{}", site.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for diagnostic in &errors.0 {
                println!("{diagnostic}");
            }
            let n = errors.0.len();
            eprintln!(
                "{} invalid: {n} error{}",
                dir.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }
}

/// A thin client of the daemon's API that turns failures into advice.
#[derive(Debug)]
struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
    state: PathBuf,
}

impl Client {
    fn new(api: Option<String>, state: &Path) -> anyhow::Result<Client> {
        let base = match api {
            Some(api) => api,
            None => std::fs::read_to_string(state.join(daemon::URL_FILE))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "http://127.0.0.1:8080".to_owned()),
        };
        let token = match std::env::var("PROVISIONER_TOKEN") {
            Ok(token) => token,
            Err(_) => {
                let path = state.join(daemon::TOKEN_FILE);
                std::fs::read_to_string(&path).map(|s| s.trim().to_owned()).with_context(|| {
                    format!(
                        "no API token: set PROVISIONER_TOKEN, or point --state at the daemon's state \
                         directory (cannot read {})",
                        path.display()
                    )
                })?
            }
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
            state: state.to_owned(),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|err| {
            if err.is_connect() || err.is_timeout() {
                anyhow::anyhow!(
                    "cannot reach the provisioner daemon at {}: is `provisioner serve` running? \
                     (set --api or PROVISIONER_API for another address)",
                    self.base
                )
            } else {
                anyhow::Error::new(err).context(format!("request to {url} failed"))
            }
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .context("reading the daemon's answer")?;
        if status.is_success() {
            if text.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text)
                .with_context(|| format!("the daemon sent invalid JSON for {path}"));
        }
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| json!({"error": text}));
        let error = body["error"].as_str().unwrap_or("(no message)");
        let mut message = format!("{error} (HTTP {})", status.as_u16());
        for detail in body["details"].as_array().into_iter().flatten() {
            message.push_str(&format!("\n  {}", detail.as_str().unwrap_or_default()));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            message.push_str(&format!(
                "\nthe daemon refused the API token: use the token in {} (or PROVISIONER_TOKEN)",
                self.state.join(daemon::TOKEN_FILE).display()
            ));
        } else if let Some(hint) = body["hint"].as_str() {
            message.push_str(&format!("\nhint: {hint}"));
        }
        bail!(message)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }
}

fn node_path(name: &str) -> String {
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/api/v1/nodes/{encoded}")
}

async fn site_command(client: &Client, command: SiteCommand) -> anyhow::Result<()> {
    match command {
        SiteCommand::Reload => {
            let report = client
                .call(reqwest::Method::POST, "/api/v1/site/reload", None)
                .await?;
            let count = |key: &str| report[key].as_array().map_or(0, Vec::len);
            println!(
                "site reloaded: {} added, {} updated, {} unchanged, {} no longer listed",
                count("added"),
                count("updated"),
                report["unchanged"].as_u64().unwrap_or(0),
                count("missing")
            );
            for name in report["missing"].as_array().into_iter().flatten() {
                println!(
                    "  {} is no longer in nodes.yaml (kept; `provisioner node delete {}` removes it)",
                    name.as_str().unwrap_or_default(),
                    name.as_str().unwrap_or_default()
                );
            }
        }
        SiteCommand::Status { output } => {
            let status = client.get("/api/v1/site").await?;
            match output {
                Output::Json => print_json(&status)?,
                Output::Table => {
                    println!("site:    {}", text(&status["dir"]));
                    println!(
                        "active:  {} (loaded {})",
                        text(&status["summary"]),
                        text(&status["loaded_at"])
                    );
                    if let Some(refused) = status["refused"].as_object() {
                        println!("refused change at {}:", text(&refused["at"]));
                        for line in refused["errors"].as_array().into_iter().flatten() {
                            println!("  {}", text(line));
                        }
                    }
                    for name in status["missing_nodes"].as_array().into_iter().flatten() {
                        println!("no longer in nodes.yaml: {}", text(name));
                    }
                }
            }
        }
        SiteCommand::Validate { .. } | SiteCommand::Schema { .. } => {
            unreachable!("handled without the daemon")
        }
    }
    Ok(())
}

async fn node_command(client: &Client, command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::List { output } => {
            let nodes = client.get("/api/v1/nodes").await?;
            match output {
                Output::Json => print_json(&nodes)?,
                Output::Table => print_node_table(&nodes),
            }
        }
        NodeCommand::Show {
            name,
            inventory: true,
            output,
        } => {
            let stored = client
                .get(&format!("{}/inventory", node_path(&name)))
                .await?;
            match output {
                Output::Json => print_json(&stored)?,
                Output::Table => print_inventory(&stored)?,
            }
        }
        NodeCommand::Show {
            name,
            inventory: false,
            output,
        } => {
            let node = client.get(&node_path(&name)).await?;
            print_node(&node, output)?;
            if let Output::Table = output {
                let progress = client
                    .get(&format!("{}/progress", node_path(&name)))
                    .await?;
                print_progress(&progress);
                let apply = client.get(&format!("{}/apply", node_path(&name))).await?;
                print_apply(&apply);
            }
        }
        NodeCommand::Apply {
            name,
            wait,
            timeout,
            output,
        } => {
            let path = format!("{}/apply", node_path(&name));
            let requested = client.call(reqwest::Method::POST, &path, None).await?;
            if !wait {
                match output {
                    Output::Json => print_json(&requested)?,
                    Output::Table => println!(
                        "{name}: apply requested at {}; its agent applies the plan with its next \
                         heartbeat (`provisioner node show {name}` shows the report)",
                        text(&requested["requested_at"])
                    ),
                }
                return Ok(());
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
            let status = loop {
                let status = client.get(&path).await?;
                if status["requested_at"].is_null() && status["last"].is_object() {
                    break status;
                }
                if std::time::Instant::now() > deadline {
                    bail!(
                        "{name}: no apply report after {timeout} s: is its agent still up? \
                         (`provisioner node show {name}`; the console shows the agent's messages)"
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            };
            match output {
                Output::Json => print_json(&status)?,
                Output::Table => print_apply(&status),
            }
            let last = &status["last"];
            if !last["error"].is_null() {
                bail!(
                    "{name}: the agent could not apply the plan: {}",
                    text(&last["error"])
                );
            }
            if let Ok(report) = serde_json::from_value::<ApplyReport>(last["report"].clone())
                && report.failed()
            {
                bail!(
                    "{name}: {} item(s) of the plan failed (see above)",
                    report.count(model::apply::Status::Failed)
                );
            }
        }
        NodeCommand::History { name, output } => {
            let history = client.get(&format!("{}/history", node_path(&name))).await?;
            match output {
                Output::Json => print_json(&history)?,
                Output::Table => {
                    let mut table = new_table(&["time", "from", "to", "event", "reason"]);
                    for entry in history.as_array().into_iter().flatten() {
                        table.add_row([
                            text(&entry["at"]),
                            text(&entry["from"]),
                            text(&entry["to"]),
                            text(&entry["event"]),
                            text(&entry["reason"]),
                        ]);
                    }
                    println!("{table}");
                }
            }
        }
        NodeCommand::Maintenance {
            name,
            switch,
            reason,
            output,
        } => {
            let body = json!({"maintenance": matches!(switch, OnOff::On), "reason": reason});
            let node = client
                .call(
                    reqwest::Method::PUT,
                    &format!("{}/maintenance", node_path(&name)),
                    Some(body),
                )
                .await?;
            print_node(&node, output)?;
        }
        NodeCommand::Inspect {
            name,
            reason,
            output,
        } => {
            let node = send_event(client, &name, "inspect", reason).await?;
            print_node(&node, output)?;
        }
        NodeCommand::Event {
            name,
            event,
            reason,
            output,
        } => {
            let node = send_event(client, &name, event.as_str(), reason).await?;
            print_node(&node, output)?;
        }
        NodeCommand::Power {
            name,
            action,
            graceful,
            output,
        } => {
            let action = match action {
                PowerCommand::Status => None,
                PowerCommand::On => Some("on"),
                PowerCommand::Off if graceful => Some("graceful_off"),
                PowerCommand::Off => Some("force_off"),
                PowerCommand::Reset => Some("reset"),
                PowerCommand::Cycle => Some("cycle"),
            };
            let path = format!("{}/power", node_path(&name));
            let report = match action {
                None => client.get(&path).await?,
                Some(action) => {
                    client
                        .call(
                            reqwest::Method::POST,
                            &path,
                            Some(json!({ "action": action })),
                        )
                        .await?
                }
            };
            match output {
                Output::Json => print_json(&report)?,
                Output::Table => match action {
                    None => println!("{}", text(&report["power_state"]).replace('_', " ")),
                    Some(action) => println!(
                        "{name}: {action} accepted by {}; power is now {}",
                        text(&report["bmc"]),
                        text(&report["power_state"]).replace('_', " ")
                    ),
                },
            }
        }
        NodeCommand::Delete { name } => {
            client
                .call(reqwest::Method::DELETE, &node_path(&name), None)
                .await?;
            println!("deleted {name}");
        }
    }
    Ok(())
}

/// Reads an inventory file; a bad field is named by its path.
fn read_inventory(path: &Path) -> anyhow::Result<Inventory> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the inventory {}", path.display()))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        anyhow::anyhow!(
            "{}: {}{}: give the inventory JSON that `node-agent inspect` writes (schema: \
             provisioner/schemas/inventory.schema.json)",
            path.display(),
            if at == "." {
                String::new()
            } else {
                format!("at {at}: ")
            },
            e.inner()
        )
    })
}

/// The candidate profiles and the directory their files are in.
fn load_profile_set(
    site_dir: Option<&Path>,
    profiles_dir: Option<&Path>,
) -> anyhow::Result<(Vec<Profile>, PathBuf)> {
    let invalid = |what: &Path, e: site::SiteErrors| {
        anyhow::anyhow!("{e}\n{} is invalid: fix the errors above", what.display())
    };
    match (site_dir, profiles_dir) {
        (Some(dir), _) => {
            let site = site::load(dir).map_err(|e| invalid(dir, e))?;
            Ok((site.profiles, dir.join("profiles")))
        }
        (None, Some(dir)) => {
            let profiles = site::load_profile_dir(dir).map_err(|e| invalid(dir, e))?;
            Ok((profiles, dir.to_owned()))
        }
        (None, None) => bail!("give --site DIR or --profiles DIR"),
    }
}

fn profile_command(command: ProfileCommand) -> anyhow::Result<ExitCode> {
    match command {
        ProfileCommand::Match {
            inventory,
            source,
            output,
        } => {
            let inv = read_inventory(&inventory)?;
            let (profiles, _) =
                load_profile_set(source.site.as_deref(), source.profiles.as_deref())?;
            let report = matching::select(&inv, &profiles);
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Table => print!("{}", render::match_report(&inv, &report)),
            }
            Ok(if report.chosen.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        ProfileCommand::Plan {
            inventory,
            source,
            output,
        } => {
            let inv = read_inventory(&inventory)?;
            let (profile, file) = match &source.profile {
                Some(file) => {
                    let profile = site::load_profile(file).map_err(|e| {
                        anyhow::anyhow!("{e}\n{} is invalid: fix the errors above", file.display())
                    })?;
                    let mismatches: Vec<(String, String)> =
                        matching::mismatches(&inv, &profile.selectors)
                            .into_iter()
                            .map(|m| (m.pointer, m.reason))
                            .collect();
                    for d in site::locate_in_profile(file, &mismatches) {
                        eprintln!(
                            "warning: {d} (the profile's match does not hold on this machine; \
                             planning anyway)"
                        );
                    }
                    (profile, Some(file.clone()))
                }
                None => {
                    let (profiles, dir) =
                        load_profile_set(source.site.as_deref(), source.profiles.as_deref())?;
                    let report = matching::select(&inv, &profiles);
                    let name = match report.chosen.clone() {
                        Some(name) => name,
                        None => {
                            eprint!("{}", render::match_report(&inv, &report));
                            bail!(
                                "no single profile for this machine (see above): fix the \
                                 profiles' `match`, or plan with --profile FILE"
                            );
                        }
                    };
                    let file = site::find_profile_file(&dir, &name);
                    let profile = profiles
                        .into_iter()
                        .find(|p| p.name == name)
                        .context("the chosen profile is in the set")?;
                    (profile, file)
                }
            };
            match plan::plan(&inv, &profile) {
                Ok(plan) => {
                    match output {
                        Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
                        Output::Table => print!("{}", render::plan(&plan)),
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(err) => {
                    let issues: Vec<(String, String)> = err
                        .issues
                        .iter()
                        .map(|i| (i.pointer.clone(), i.message.clone()))
                        .collect();
                    match &file {
                        Some(file) => {
                            for d in site::locate_in_profile(file, &issues) {
                                eprintln!("{d}");
                            }
                        }
                        None => {
                            for i in &err.issues {
                                eprintln!("{i}");
                            }
                        }
                    }
                    bail!(
                        "profile {} cannot be planned on the machine of {}: fix the fields above \
                         (or the inventory, if it is wrong)",
                        err.profile,
                        inventory.display()
                    )
                }
            }
        }
    }
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A JSON value as table text: strings bare, null as "-".
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn new_table(header: &[&str]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::UTF8_BORDERS_ONLY)
        .set_header(header.to_vec());
    if !std::io::stdout().is_terminal() {
        table.load_preset(comfy_table::presets::NOTHING);
    }
    table
}

fn state_text(node: &Value) -> String {
    match node["failed_from"].as_str() {
        Some(from) => format!("{} (from {from})", text(&node["state"])),
        None => text(&node["state"]),
    }
}

/// Sends a lifecycle event to a node through the daemon; returns the node after it.
async fn send_event(
    client: &Client,
    name: &str,
    event: &str,
    reason: Option<String>,
) -> anyhow::Result<Value> {
    client
        .call(
            reqwest::Method::POST,
            &format!("{}/events", node_path(name)),
            Some(json!({"event": event, "reason": reason})),
        )
        .await
}

fn print_node_table(nodes: &Value) {
    let mut table = new_table(&[
        "name",
        "state",
        "maint",
        "since",
        "boot mac",
        "bmc",
        "last error",
    ]);
    for node in nodes.as_array().into_iter().flatten() {
        table.add_row([
            text(&node["name"]),
            state_text(node),
            if node["maintenance"].as_bool() == Some(true) {
                "yes".into()
            } else {
                "".into()
            },
            text(&node["state_since"]),
            text(&node["boot_mac"]),
            text(&node["bmc_url"]),
            text(&node["last_error"]),
        ]);
    }
    println!("{table}");
}

fn print_node(node: &Value, output: Output) -> anyhow::Result<()> {
    if let Output::Json = output {
        return print_json(node);
    }
    let mut rows: Vec<(&str, String)> = vec![
        ("name", text(&node["name"])),
        ("state", state_text(node)),
        ("since", text(&node["state_since"])),
    ];
    if node["last_error"].is_string() {
        rows.push(("why", text(&node["last_error"])));
    }
    if node["deadline"].is_string() {
        rows.push(("times out at", text(&node["deadline"])));
    }
    if node["maintenance"].as_bool() == Some(true) {
        rows.push((
            "maintenance",
            format!("on: {}", text(&node["maintenance_reason"])),
        ));
    }
    rows.extend([
        ("source", text(&node["source"])),
        ("in nodes.yaml", text(&node["in_site"])),
        ("bmc", text(&node["bmc_url"])),
        ("bmc user", text(&node["bmc_username"])),
        ("bmc password from", text(&node["bmc_credential"])),
        ("bmc tls", text(&node["bmc_tls"])),
        ("boot mac", text(&node["boot_mac"])),
        ("serial", text(&node["serial"])),
        ("profile", text(&node["matched_profile"])),
        ("plan", plan_summary(&node["plan"], &node["plan_error"])),
        ("profile override", text(&node["profile_override"])),
        ("role override", text(&node["role_override"])),
        (
            "inventory",
            if node["has_inventory"].as_bool() == Some(true) {
                "stored".into()
            } else {
                "none".into()
            },
        ),
        ("generation", text(&node["generation"])),
    ]);
    for (key, value) in rows {
        println!("{key:>16}  {value}");
    }
    Ok(())
}

/// A node's progress (`GET /api/v1/nodes/{name}/progress`) as text rows: the
/// boot steps seen in its state, and the BMC actions still queued with their
/// attempts, next try and last error.
fn print_progress(progress: &Value) {
    let steps: Vec<String> = progress["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| format!("{} {}", text(&s["step"]), text(&s["at"])))
        .collect();
    if !steps.is_empty() {
        println!("{:>16}  {}", "boot progress", steps.join(", "));
    }
    let job = &progress["bmc_job"];
    if job.is_object() {
        let attempts = job["attempts"].as_u64().unwrap_or(0);
        let state = if attempts == 0 {
            format!(
                "queued, not tried yet (not before {})",
                text(&job["next_attempt_at"])
            )
        } else {
            format!(
                "{attempts} attempt(s) failed, next at {}: {}",
                text(&job["next_attempt_at"]),
                text(&job["last_error"])
            )
        };
        println!("{:>16}  {}: {state}", "bmc actions", text(&job["actions"]));
    }
}

/// A node's apply status (`GET /api/v1/nodes/{name}/apply`) as text: the
/// pending request, then the last report item by item.
fn print_apply(status: &Value) {
    if status["requested_at"].is_string() {
        println!(
            "{:>16}  requested at {}, waiting for the agent",
            "apply",
            text(&status["requested_at"])
        );
    }
    let last = &status["last"];
    if last.is_null() {
        if status["requested_at"].is_null() {
            println!(
                "{:>16}  never (`provisioner node apply NAME`)",
                "last apply"
            );
        }
        return;
    }
    let when = format!(
        "{} by the agent of {}",
        text(&last["received_at"]),
        text(&last["mac"])
    );
    match serde_json::from_value::<ApplyReport>(last["report"].clone()) {
        Ok(report) => {
            println!("{:>16}  {when}: {}", "last apply", report.summary());
            // The item lines; the summary line is printed above.
            let text = report.to_string();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[..lines.len().saturating_sub(1)] {
                println!("{:>16}    {line}", "");
            }
        }
        Err(_) if last["report"].is_null() => {
            println!(
                "{:>16}  {when}: FAILED: {}",
                "last apply",
                text(&last["error"])
            )
        }
        Err(err) => println!(
            "{:>16}  {when}: unreadable report ({err}): are the CLI and the daemon the same version?",
            "last apply"
        ),
    }
}

/// One line for a node's host plan ([`model::plan::HostPlan::summary`]), or why there is none.
fn plan_summary(plan: &Value, error: &Value) -> String {
    if let Some(error) = error.as_str() {
        return format!("none: {error}");
    }
    match serde_json::from_value::<model::plan::HostPlan>(plan.clone()) {
        Ok(plan) => plan.summary(),
        Err(_) if plan.is_null() => "none (no inventory yet)".into(),
        Err(err) => format!("unreadable ({err}): are the CLI and the daemon the same version?"),
    }
}

/// A stored inventory as text: identity, CPUs, NUMA nodes, NICs, disks, warnings.
fn print_inventory(stored: &Value) -> anyhow::Result<()> {
    let inv: model::inventory::Inventory = serde_json::from_value(stored["inventory"].clone())
        .context("the daemon sent an inventory this CLI cannot read: are both the same version?")?;
    let gib = |bytes: u64| format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64);
    let sys = &inv.system;
    println!(
        "{} from {} at {}",
        text(&stored["node"]),
        text(&stored["mac"]),
        text(&stored["received_at"])
    );
    println!(
        "system: {} {} serial {} uuid {} firmware {:?} secure boot {}",
        sys.vendor,
        sys.product,
        sys.serial.as_deref().unwrap_or("-"),
        sys.uuid.as_deref().unwrap_or("-"),
        sys.firmware,
        sys.secure_boot.map_or("-".to_owned(), |b| b.to_string())
    );
    println!(
        "cpus: {} ({}), {} sockets, {} cores, {} threads; memory {}",
        inv.cpus.model,
        inv.cpus.vendor,
        inv.cpus.sockets,
        inv.cpus.cores,
        inv.cpus.threads,
        gib(inv.memory_bytes)
    );
    let mut numa = new_table(&["numa node", "cpus", "memory"]);
    for node in &inv.numa_nodes {
        numa.add_row([
            node.id.to_string(),
            model::plan::format_cpulist(&node.cpus),
            gib(node.memory_bytes),
        ]);
    }
    println!("{numa}");
    let mut nics = new_table(&["nic", "mac", "pci", "numa", "driver", "link", "vfs (total)"]);
    for nic in &inv.nics {
        nics.add_row([
            nic.name.clone(),
            nic.mac.clone(),
            nic.pci_address.clone().unwrap_or_default(),
            nic.numa_node.map(|n| n.to_string()).unwrap_or_default(),
            nic.driver.clone().unwrap_or_default(),
            if nic.link { "up".into() } else { "down".into() },
            format!("{} ({})", nic.sriov_numvfs, nic.sriov_totalvfs),
        ]);
    }
    println!("{nics}");
    let mut disks = new_table(&["disk", "kind", "size", "model", "serial"]);
    for disk in &inv.disks {
        disks.add_row([
            disk.path.clone(),
            disk.kind.as_str().to_owned(),
            gib(disk.size_bytes),
            disk.model.clone().unwrap_or_default(),
            disk.serial.clone().unwrap_or_default(),
        ]);
    }
    println!("{disks}");
    for warning in &inv.warnings {
        println!("warning: {warning}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// `provisioner bmc ...`: one BMC, no daemon.

/// Which BMC and how to log in.
#[derive(Debug, Args)]
struct BmcTarget {
    /// The BMC: redfish://host[:port][/redfish/v1/Systems/ID] or redfish+http://...
    #[arg(long, value_name = "URL")]
    bmc: String,
    /// The BMC account.
    #[arg(short, long, value_name = "USER")]
    username: Option<String>,
    /// Read the password from this environment variable.
    #[arg(long, value_name = "VAR", conflicts_with = "password_file")]
    password_env: Option<String>,
    /// Read the password from this file (its first line).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Do not verify the BMC's TLS certificate (labs only; the BMC can then be impersonated).
    #[arg(long, conflicts_with = "ca_file")]
    insecure: bool,
    /// Verify the BMC's certificate against this CA certificate (PEM) instead of the web PKI.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Time limit for each request to the BMC.
    #[arg(long, value_name = "SECONDS", default_value_t = 20)]
    timeout: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PowerCommand {
    /// Show the power state.
    Status,
    /// Power on.
    On,
    /// Power off: cut power (or ask the OS with --graceful).
    Off,
    /// Hard reset.
    Reset,
    /// Power off, then on.
    Cycle,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BootDeviceArg {
    /// Network boot (PXE).
    Pxe,
    /// The local disk.
    Disk,
    /// UEFI HTTP boot.
    Http,
}

#[derive(Debug, Subcommand)]
enum BmcCommand {
    /// Show or change the power state.
    Power {
        #[arg(value_name = "status|on|off|reset|cycle")]
        action: PowerCommand,
        #[command(flatten)]
        target: BmcTarget,
        /// With `off`: ask the operating system to shut down instead of cutting power.
        #[arg(long)]
        graceful: bool,
        /// Wait until the new state is reached (BMCs accept a change before it lands).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        wait_timeout: u64,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Set the device for the next boot (every boot with --persistent).
    BootDevice {
        #[arg(value_name = "pxe|disk|http")]
        device: BootDeviceArg,
        #[command(flatten)]
        target: BmcTarget,
        /// Every boot, not only the next one.
        #[arg(long)]
        persistent: bool,
        /// Legacy BIOS boot instead of UEFI.
        #[arg(long)]
        legacy: bool,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Read the system's identity and hardware as the BMC sees it.
    Inventory {
        #[command(flatten)]
        target: BmcTarget,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

impl BmcTarget {
    fn config(&self) -> anyhow::Result<crate::bmc::BmcConfig> {
        use crate::bmc::{BmcConfig, Credentials, Secret, TlsPolicy};
        let url: site::BmcUrl = self.bmc.parse()?;
        let password = match (&self.password_env, &self.password_file) {
            (Some(var), _) => Some(std::env::var(var).map_err(|_| {
                anyhow::anyhow!("--password-env {var}: the environment variable {var} is not set")
            })?),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--password-file: cannot read {}", path.display()))?;
                Some(text.lines().next().unwrap_or_default().to_owned())
            }
            (None, None) => None,
        };
        let credentials = match (&self.username, password) {
            (Some(username), Some(password)) => Some(Credentials {
                username: username.clone(),
                password: Secret::new(password),
            }),
            (Some(username), None) => bail!(
                "no password for {username}: give --password-env VAR or --password-file FILE \
                 (never the password itself)"
            ),
            (None, Some(_)) => bail!("a password without a user: add --username"),
            (None, None) => None,
        };
        let mut config = BmcConfig::new(url, credentials);
        config.timeout = std::time::Duration::from_secs(self.timeout.max(1));
        config.tls = match (&self.ca_file, self.insecure) {
            (Some(path), _) => TlsPolicy::CaFile(path.clone()),
            (None, true) => TlsPolicy::Insecure,
            (None, false) => TlsPolicy::WebPki,
        };
        Ok(config)
    }
}

async fn bmc_command(command: BmcCommand) -> anyhow::Result<()> {
    use crate::bmc::{self, Bmc as _};
    let target = match &command {
        BmcCommand::Power { target, .. }
        | BmcCommand::BootDevice { target, .. }
        | BmcCommand::Inventory { target, .. } => target,
    };
    let bmc = bmc::connect(target.config()?).await?;
    let result = bmc_run(&bmc, command).await;
    if let Err(e) = bmc.close().await {
        eprintln!("warning: {e}");
    }
    result
}

async fn bmc_run(bmc: &crate::bmc::AnyBmc, command: BmcCommand) -> anyhow::Result<()> {
    use crate::bmc::{Bmc as _, BootDevice, BootMode, BootOverride, PowerAction, wait_for_power};
    let url = bmc.url().to_string();
    match command {
        BmcCommand::Power {
            action,
            graceful,
            wait,
            wait_timeout,
            output,
            ..
        } => {
            let action = match action {
                PowerCommand::Status => None,
                PowerCommand::On => Some(PowerAction::On),
                PowerCommand::Off if graceful => Some(PowerAction::GracefulOff),
                PowerCommand::Off => Some(PowerAction::ForceOff),
                PowerCommand::Reset => Some(PowerAction::Reset),
                PowerCommand::Cycle => Some(PowerAction::Cycle),
            };
            if let Some(action) = action {
                bmc.power(action).await?;
                if wait {
                    wait_for_power(
                        bmc,
                        action.target_state(),
                        std::time::Duration::from_secs(wait_timeout),
                        std::time::Duration::from_millis(500),
                    )
                    .await?;
                }
            }
            let state = bmc.power_state().await?;
            match output {
                Output::Json => print_json(&json!({
                    "bmc": url,
                    "action": action,
                    "power_state": state,
                }))?,
                Output::Table => match action {
                    None => println!("{state}"),
                    Some(action) => println!(
                        "{action:?} accepted by {url}; power is now {state}{}",
                        if wait || state == action.target_state() {
                            ""
                        } else {
                            " (the change can take a while: --wait waits for it)"
                        }
                    ),
                },
            }
        }
        BmcCommand::BootDevice {
            device,
            persistent,
            legacy,
            output,
            ..
        } => {
            let boot = BootOverride {
                device: match device {
                    BootDeviceArg::Pxe => BootDevice::Pxe,
                    BootDeviceArg::Disk => BootDevice::Disk,
                    BootDeviceArg::Http => BootDevice::Http,
                },
                persistent,
                mode: if legacy {
                    BootMode::Legacy
                } else {
                    BootMode::Uefi
                },
            };
            bmc.set_boot(boot).await?;
            match output {
                Output::Json => print_json(&json!({"bmc": url, "boot": boot}))?,
                Output::Table => println!(
                    "{url}: boot from {} ({}, {})",
                    serde_json::to_value(boot.device)?
                        .as_str()
                        .unwrap_or_default(),
                    if persistent {
                        "every boot"
                    } else {
                        "next boot only"
                    },
                    if legacy { "legacy BIOS" } else { "UEFI" }
                ),
            }
        }
        BmcCommand::Inventory { output, .. } => {
            let inventory = bmc.inventory().await?;
            match output {
                Output::Json => {
                    let mut value = serde_json::to_value(&inventory)?;
                    value["bmc"] = json!(url);
                    print_json(&value)?;
                }
                Output::Table => print!("{}", render_inventory(&url, &inventory)),
            }
            for warning in &inventory.warnings {
                eprintln!("warning: {warning}");
            }
        }
    }
    Ok(())
}

/// The inventory as aligned `key  value` lines.
fn render_inventory(url: &str, inv: &crate::bmc::Inventory) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let memory_gib = inv.memory_gib.or_else(|| {
        let mib: u64 = inv.memory.iter().filter_map(|m| m.capacity_mib).sum();
        (mib > 0).then(|| mib as f64 / 1024.0)
    });
    let rows = [
        ("bmc", url.to_owned()),
        ("system", inv.system.clone()),
        ("vendor", opt(&inv.vendor)),
        ("model", opt(&inv.model)),
        ("serial", opt(&inv.serial)),
        ("uuid", opt(&inv.uuid)),
        ("bios", opt(&inv.bios_version)),
        (
            "power",
            inv.power_state.map_or("-".to_owned(), |p| p.to_string()),
        ),
        (
            "cpus",
            inv.processor_count
                .map_or("-".to_owned(), |n| n.to_string()),
        ),
        (
            "memory",
            memory_gib.map_or("-".to_owned(), |g| format!("{g} GiB")),
        ),
    ];
    for (key, value) in rows {
        let _ = writeln!(out, "{key:>8}  {value}");
    }
    for p in &inv.processors {
        let _ = writeln!(
            out,
            "{:>8}  {} {} ({} cores, {} threads)",
            "cpu",
            p.socket.as_deref().unwrap_or(&p.id),
            p.model.as_deref().unwrap_or("-"),
            p.cores.map_or("-".to_owned(), |n| n.to_string()),
            p.threads.map_or("-".to_owned(), |n| n.to_string())
        );
    }
    for m in &inv.memory {
        let _ = writeln!(
            out,
            "{:>8}  {} {} MiB {}",
            "dimm",
            m.id,
            m.capacity_mib.map_or("-".to_owned(), |n| n.to_string()),
            m.memory_type.as_deref().unwrap_or("")
        );
    }
    for n in &inv.nics {
        let _ = writeln!(
            out,
            "{:>8}  {} {}",
            "nic",
            n.mac.as_deref().unwrap_or("-"),
            n.id
        );
    }
    for d in &inv.drives {
        let _ = writeln!(
            out,
            "{:>8}  {} {} {} bytes",
            "drive",
            d.model.as_deref().unwrap_or("-"),
            d.serial.as_deref().unwrap_or("-"),
            d.capacity_bytes.map_or("-".to_owned(), |n| n.to_string())
        );
    }
    for d in &inv.pcie_devices {
        let _ = writeln!(
            out,
            "{:>8}  {} {} {}",
            "pcie",
            d.name.as_deref().unwrap_or(&d.id),
            d.vendor.as_deref().unwrap_or("-"),
            d.model.as_deref().unwrap_or("-")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_table_shows_identity_cpus_memory_and_macs() {
        use crate::bmc::{Inventory, Nic, PowerState};
        let inventory = Inventory {
            system: "/redfish/v1/Systems/1".into(),
            vendor: Some("Fake Computers".into()),
            serial: Some("SN1".into()),
            uuid: Some("00000000-0000-4000-8000-000000000001".into()),
            power_state: Some(PowerState::On),
            processor_count: Some(2),
            memory_gib: Some(64.0),
            nics: vec![Nic {
                id: "NIC0".into(),
                mac: Some("52:54:00:00:01:00".into()),
                ..Nic::default()
            }],
            ..Inventory::default()
        };
        insta::assert_snapshot!(render_inventory("redfish://bmc:443", &inventory), @r"
             bmc  redfish://bmc:443
          system  /redfish/v1/Systems/1
          vendor  Fake Computers
           model  -
          serial  SN1
            uuid  00000000-0000-4000-8000-000000000001
            bios  -
           power  on
            cpus  2
          memory  64 GiB
             nic  52:54:00:00:01:00 NIC0
        ");
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
