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

use model::inventory::Inventory;
use model::profile::Profile;

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

#[derive(Debug, Args)]
struct ServeArgs {
    /// The site directory (site.yaml, nodes.yaml, profiles/).
    #[arg(long, value_name = "DIR")]
    site: PathBuf,
    /// Listen here instead of site.yaml's api.listen (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Run only the API, the store and the timers: no boot services on the
    /// provisioning network (to try the CLI on a site away from its network).
    #[arg(long)]
    api_only: bool,
    /// Log lines as human text or as JSON objects (one per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
    /// Show one node: state, why, since when, BMC, profile.
    Show {
        name: String,
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
    /// Send a lifecycle event by hand (the daemon refuses one that the node's state does not allow).
    Event {
        name: String,
        event: ManualEvent,
        #[arg(long)]
        reason: Option<String>,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Delete a node and its history (only at rest or in maintenance).
    Delete { name: String },
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
        NodeCommand::Show { name, output } => {
            let node = client.get(&node_path(&name)).await?;
            print_node(&node, output)?;
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
        NodeCommand::Event {
            name,
            event,
            reason,
            output,
        } => {
            let body = json!({"event": event.as_str(), "reason": reason});
            let node = client
                .call(
                    reqwest::Method::POST,
                    &format!("{}/events", node_path(&name)),
                    Some(body),
                )
                .await?;
            print_node(&node, output)?;
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
        ("boot mac", text(&node["boot_mac"])),
        ("serial", text(&node["serial"])),
        ("profile", text(&node["matched_profile"])),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
