//! `provisioner node ...`: show and change nodes through the daemon. Every
//! answer is decoded into its view ([`crate::views`]) and printed from typed
//! fields.

use anyhow::bail;
use clap::{Subcommand, ValueEnum};

use super::bmc::PowerCommand;
use super::client::{Client, node_path};
use super::output::{Output, new_table, or_dash, print_json, time, time_or_dash};
use crate::bmc::PowerAction;
use crate::lifecycle::{Event, State};
use crate::views::{
    self, DeployRequest, EventRequest, MaintenanceRequest, PowerRequest, UndeployRequest,
};
use model::deploy::{DeployPhase, EraseMode};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ManualEvent {
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
    fn event(self) -> Event {
        match self {
            ManualEvent::Inspect => Event::Inspect,
            ManualEvent::Deploy => Event::Deploy,
            ManualEvent::Undeploy => Event::Undeploy,
            ManualEvent::Clean => Event::Clean,
            ManualEvent::Abort => Event::Abort,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
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
    /// Deploy a host image: the node network-boots its agent, which writes the
    /// image (`host:` in site.yaml `images`) to the plan's root disk with the
    /// node's sealed config; the node then boots it from disk and becomes
    /// active when the installed host reports the version deployed. Allowed
    /// when available (or failed while deploying), with a host plan and UEFI
    /// firmware.
    #[command(
        after_help = "Examples:\n  provisioner node deploy lab-compute-0                 the node's (or its profile's) image\n  provisioner node deploy lab-compute-0 --image host-2  this image\n  provisioner node deploy lab-compute-0 --wait          a progress bar, then each phase until active\n\nWith --wait the exit status is 1 when the node fails (the reason is printed)."
    )]
    Deploy {
        name: String,
        /// A `host:` image of site.yaml `images` [default: the node's `image`
        /// in nodes.yaml, else its profile's].
        #[arg(long, value_name = "NAME")]
        image: Option<String>,
        /// Follow the deploy until the node is active (exit 0) or failed (exit 1).
        #[arg(long)]
        wait: bool,
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Take a node out of service and erase its disks: an active node is
    /// undeployed, an available or failed one cleaned; its agent erases every
    /// disk, then the node is available (and powered off).
    #[command(
        after_help = "Examples:\n  provisioner node undeploy lab-compute-0         partition tables and signatures (fast)\n  provisioner node undeploy lab-compute-0 --full  every byte of every disk\n  provisioner node undeploy lab-compute-0 --wait  until available (exit 0) or failed (exit 1)"
    )]
    Undeploy {
        name: String,
        /// Erase every byte of every disk, not only partition tables and signatures.
        #[arg(long)]
        full: bool,
        /// Follow until the node is available (exit 0) or failed (exit 1).
        #[arg(long)]
        wait: bool,
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

pub(crate) async fn run(client: &Client, command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::List { output } => {
            let nodes: Vec<views::Node> = client.get("/api/v1/nodes").await?;
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
            let stored: views::StoredInventory = client
                .get(&format!("{}/inventory", node_path(&name)))
                .await?;
            match output {
                Output::Json => print_json(&stored)?,
                Output::Table => print_inventory(&stored),
            }
        }
        NodeCommand::Show {
            name,
            inventory: false,
            output,
        } => {
            let node: views::Node = client.get(&node_path(&name)).await?;
            print_node(&node, output)?;
            if let Output::Table = output {
                let progress: views::Progress = client
                    .get(&format!("{}/progress", node_path(&name)))
                    .await?;
                print_progress(&progress);
                let apply: views::ApplyStatus =
                    client.get(&format!("{}/apply", node_path(&name))).await?;
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
            let requested: views::ApplyStatus = client.post(&path).await?;
            if !wait {
                match output {
                    Output::Json => print_json(&requested)?,
                    Output::Table => println!(
                        "{name}: apply requested at {}; its agent applies the plan with its next \
                         heartbeat (`provisioner node show {name}` shows the report)",
                        time_or_dash(requested.requested_at.as_ref())
                    ),
                }
                return Ok(());
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
            let (status, last) = loop {
                let status: views::ApplyStatus = client.get(&path).await?;
                if status.requested_at.is_none()
                    && let Some(last) = status.last.clone()
                {
                    break (status, last);
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
            if let Some(error) = &last.error {
                bail!("{name}: the agent could not apply the plan: {error}");
            }
            if let Some(report) = &last.report
                && report.failed()
            {
                bail!(
                    "{name}: {} item(s) of the plan failed (see above)",
                    report.count(model::apply::Status::Failed)
                );
            }
        }
        NodeCommand::History { name, output } => {
            let history: Vec<views::HistoryEntry> =
                client.get(&format!("{}/history", node_path(&name))).await?;
            match output {
                Output::Json => print_json(&history)?,
                Output::Table => {
                    let mut table = new_table(&["time", "from", "to", "event", "reason"]);
                    for entry in &history {
                        table.add_row([
                            time(&entry.at),
                            or_dash(entry.from.as_ref()),
                            entry.to.to_string(),
                            entry.event.clone(),
                            or_dash(entry.reason.as_ref()),
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
            let request = MaintenanceRequest {
                maintenance: matches!(switch, OnOff::On),
                reason,
            };
            let node: views::Node = client
                .send(
                    reqwest::Method::PUT,
                    &format!("{}/maintenance", node_path(&name)),
                    &request,
                )
                .await?;
            print_node(&node, output)?;
        }
        NodeCommand::Inspect {
            name,
            reason,
            output,
        } => {
            let node = send_event(client, &name, Event::Inspect, reason).await?;
            print_node(&node, output)?;
        }
        NodeCommand::Event {
            name,
            event,
            reason,
            output,
        } => {
            let node = send_event(client, &name, event.event(), reason).await?;
            print_node(&node, output)?;
        }
        NodeCommand::Power {
            name,
            action,
            graceful,
            output,
        } => {
            let action = action.action(graceful);
            let path = format!("{}/power", node_path(&name));
            let report: views::PowerReport = match action {
                None => client.get(&path).await?,
                Some(action) => {
                    client
                        .send(reqwest::Method::POST, &path, &PowerRequest { action })
                        .await?
                }
            };
            match output {
                Output::Json => print_json(&report)?,
                Output::Table => match action {
                    None => println!("{}", report.power_state),
                    Some(action) => println!(
                        "{name}: {} accepted by {}; power is now {}",
                        action_name(action),
                        report.bmc,
                        report.power_state
                    ),
                },
            }
        }
        NodeCommand::Deploy {
            name,
            image,
            wait,
            output,
        } => {
            let node: views::Node = client
                .send(
                    reqwest::Method::POST,
                    &format!("{}/deploy", node_path(&name)),
                    &DeployRequest { image },
                )
                .await?;
            if !wait {
                return print_node(&node, output);
            }
            follow(client, &name, State::Active).await?;
        }
        NodeCommand::Undeploy {
            name,
            full,
            wait,
            output,
        } => {
            let erase = if full {
                EraseMode::Full
            } else {
                EraseMode::Metadata
            };
            let node: views::Node = client
                .send(
                    reqwest::Method::POST,
                    &format!("{}/undeploy", node_path(&name)),
                    &UndeployRequest { erase },
                )
                .await?;
            if !wait {
                return print_node(&node, output);
            }
            follow(client, &name, State::Available).await?;
        }
        NodeCommand::Delete { name } => {
            client.delete(&node_path(&name)).await?;
            println!("deleted {name}");
        }
    }
    Ok(())
}

/// Polls node `name` until it reaches `goal` (Ok) or fails (an error with
/// its reason), showing the agent's progress as a bar (bytes of the phase,
/// rate, time left) and each new phase and history line as it comes.
async fn follow(client: &Client, name: &str, goal: State) -> anyhow::Result<()> {
    use indicatif::{ProgressBar, ProgressStyle};
    let style = ProgressStyle::with_template(
        "{prefix:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta} left",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    let mut bar: Option<(DeployPhase, ProgressBar)> = None;
    let mut seen_history = 0;
    loop {
        let node: views::Node = client.get(&node_path(name)).await?;
        let history: Vec<views::HistoryEntry> =
            client.get(&format!("{}/history", node_path(name))).await?;
        let progress = node.deploy.as_ref().and_then(|d| d.progress);
        if let Some(p) = progress.filter(|_| node.state.is_waiting()) {
            if bar.as_ref().is_none_or(|(phase, _)| *phase != p.phase) {
                if let Some((_, old)) = bar.take() {
                    old.finish();
                }
                let new = ProgressBar::new(p.total_bytes).with_style(style.clone());
                new.set_prefix(phase_name(p.phase));
                bar = Some((p.phase, new));
            }
            if let Some((_, b)) = &bar {
                b.set_length(p.total_bytes);
                b.set_position(p.done_bytes);
            }
        }
        if seen_history == 0 {
            // Only what happens from now on.
            seen_history = history.len().saturating_sub(1);
        }
        for entry in history.iter().skip(seen_history) {
            let line = format!(
                "{} {} -> {}: {}",
                time(&entry.at),
                entry.event,
                entry.to,
                or_dash(entry.reason.as_ref())
            );
            match &bar {
                Some((_, b)) => b.println(line),
                None => println!("{line}"),
            }
        }
        seen_history = seen_history.max(history.len());
        if node.state == goal && !node.maintenance {
            if let Some((_, b)) = bar.take() {
                b.finish();
            }
            if let Some(host) = node.deploy.as_ref().and_then(|d| d.host.as_ref())
                && goal == State::Active
            {
                println!(
                    "{name}: active, version {} slot {} root {}",
                    host.version,
                    host.slot.letter(),
                    host.root_hash
                );
            } else {
                println!("{name}: {goal}");
            }
            return Ok(());
        }
        if node.state == State::Failed {
            if let Some((_, b)) = bar.take() {
                b.abandon();
            }
            bail!(
                "{name} failed: {} (`provisioner node show {name}`)",
                or_dash(node.last_error.as_ref())
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

fn phase_name(phase: DeployPhase) -> &'static str {
    match phase {
        DeployPhase::Writing => "writing",
        DeployPhase::Verifying => "verifying",
        DeployPhase::Finishing => "finishing",
        DeployPhase::Erasing => "erasing",
    }
}

/// The rate (bytes/s) and seconds left of a progress report, when known.
fn rate_and_eta(p: &views::DeployProgress) -> Option<(f64, f64)> {
    let secs = (p.at - p.started_at).num_milliseconds() as f64 / 1000.0;
    if secs <= 0.0 || p.done_bytes == 0 {
        return None;
    }
    let rate = p.done_bytes as f64 / secs;
    Some((
        rate,
        p.total_bytes.saturating_sub(p.done_bytes) as f64 / rate,
    ))
}

/// A node's deploy as text rows: image, progress while deploying or
/// cleaning, what was written, the installed host's last report.
fn deploy_rows(node: &views::Node) -> Vec<(&'static str, String)> {
    let Some(d) = &node.deploy else {
        return vec![];
    };
    let mut rows = vec![];
    if let Some(image) = &d.image {
        rows.push((
            "image",
            format!("{image} version {}", or_dash(d.version.as_ref())),
        ));
    }
    if let Some(p) = d.progress.as_ref().filter(|_| node.state.is_waiting()) {
        let pct = (100 * p.done_bytes).checked_div(p.total_bytes).unwrap_or(0);
        let mib = |b: u64| b / (1 << 20);
        let mut text = format!(
            "{} {} of {} MiB ({pct}%)",
            phase_name(p.phase),
            mib(p.done_bytes),
            mib(p.total_bytes)
        );
        if let Some((rate, eta)) = rate_and_eta(p) {
            text.push_str(&format!(
                ", {:.1} MiB/s, {:.0} s left",
                rate / (1 << 20) as f64,
                eta
            ));
        }
        text.push_str(&format!(" (at {})", time(&p.at)));
        rows.push(("progress", text));
    }
    if let Some(written) = &d.written {
        rows.push(("written", written.clone()));
    }
    if let Some(h) = &d.host {
        rows.push((
            "deployed",
            format!(
                "version {} slot {}{}{} (reported {})",
                h.version,
                h.slot.letter(),
                if h.trial { ", trial" } else { "" },
                if h.blessed { ", blessed" } else { "" },
                time(&h.at)
            ),
        ));
        rows.push(("root hash", h.root_hash.clone()));
        rows.push(("cmdline", h.cmdline.clone()));
        if let Some(from) = &h.rolled_back_from {
            rows.push(("rolled back from", from.clone()));
        }
        rows.push((
            "applied",
            format!(
                "{}{}",
                if h.apply_failed { "FAILED: " } else { "" },
                or_dash(h.apply.as_ref())
            ),
        ));
    }
    rows
}

/// A power action as the API names it.
fn action_name(action: PowerAction) -> &'static str {
    match action {
        PowerAction::On => "on",
        PowerAction::GracefulOff => "graceful_off",
        PowerAction::ForceOff => "force_off",
        PowerAction::Reset => "reset",
        PowerAction::Cycle => "cycle",
    }
}

fn state_text(node: &views::Node) -> String {
    match node.failed_from {
        Some(from) => format!("{} (from {from})", node.state),
        None => node.state.to_string(),
    }
}

/// Sends a lifecycle event to a node through the daemon; returns the node after it.
async fn send_event(
    client: &Client,
    name: &str,
    event: Event,
    reason: Option<String>,
) -> anyhow::Result<views::Node> {
    client
        .send(
            reqwest::Method::POST,
            &format!("{}/events", node_path(name)),
            &EventRequest { event, reason },
        )
        .await
}

fn print_node_table(nodes: &[views::Node]) {
    let mut table = new_table(&[
        "name",
        "state",
        "maint",
        "since",
        "boot mac",
        "bmc",
        "last error",
    ]);
    for node in nodes {
        table.add_row([
            node.name.clone(),
            state_text(node),
            if node.maintenance {
                "yes".into()
            } else {
                "".into()
            },
            time(&node.state_since),
            or_dash(node.boot_mac.as_ref()),
            or_dash(node.bmc_url.as_ref()),
            or_dash(node.last_error.as_ref()),
        ]);
    }
    println!("{table}");
}

fn print_node(node: &views::Node, output: Output) -> anyhow::Result<()> {
    if let Output::Json = output {
        return print_json(node);
    }
    print!("{}", node_text(node));
    Ok(())
}

/// A node as aligned `key  value` lines.
fn node_text(node: &views::Node) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("name", node.name.clone()),
        ("state", state_text(node)),
        ("since", time(&node.state_since)),
    ];
    if let Some(error) = &node.last_error {
        rows.push(("why", error.clone()));
    }
    if let Some(deadline) = &node.deadline {
        rows.push(("times out at", time(deadline)));
    }
    if node.maintenance {
        rows.push((
            "maintenance",
            format!("on: {}", or_dash(node.maintenance_reason.as_ref())),
        ));
    }
    rows.extend([
        ("source", node.source.to_string()),
        ("in nodes.yaml", node.in_site.to_string()),
        ("bmc", or_dash(node.bmc_url.as_ref())),
        ("bmc user", or_dash(node.bmc_username.as_ref())),
        ("bmc password from", or_dash(node.bmc_credential.as_ref())),
        ("bmc tls", or_dash(node.bmc_tls.as_ref())),
        ("boot mac", or_dash(node.boot_mac.as_ref())),
        ("serial", or_dash(node.serial.as_ref())),
        ("profile", or_dash(node.matched_profile.as_ref())),
        ("plan", plan_summary(node)),
        ("profile override", or_dash(node.profile_override.as_ref())),
        ("role override", or_dash(node.role_override.as_ref())),
        (
            "inventory",
            if node.has_inventory {
                "stored".into()
            } else {
                "none".into()
            },
        ),
        ("generation", node.generation.to_string()),
    ]);
    rows.extend(deploy_rows(node));
    rows.iter()
        .map(|(key, value)| format!("{key:>16}  {value}\n"))
        .collect()
}

/// A node's progress (`GET /api/v1/nodes/{name}/progress`) as text rows: the
/// boot steps seen in its state, and the BMC actions still queued with their
/// attempts, next try and last error.
fn print_progress(progress: &views::Progress) {
    let steps: Vec<String> = progress
        .steps
        .iter()
        .map(|s| format!("{} {}", s.step, time(&s.at)))
        .collect();
    if !steps.is_empty() {
        println!("{:>16}  {}", "boot progress", steps.join(", "));
    }
    if let Some(job) = &progress.bmc_job {
        let state = if job.attempts == 0 {
            format!(
                "queued, not tried yet (not before {})",
                time(&job.next_attempt_at)
            )
        } else {
            format!(
                "{} attempt(s) failed, next at {}: {}",
                job.attempts,
                time(&job.next_attempt_at),
                or_dash(job.last_error.as_ref())
            )
        };
        println!("{:>16}  {}: {state}", "bmc actions", job.actions);
    }
}

/// A node's apply status (`GET /api/v1/nodes/{name}/apply`) as text: the
/// pending request, then the last report item by item.
fn print_apply(status: &views::ApplyStatus) {
    if let Some(requested_at) = &status.requested_at {
        println!(
            "{:>16}  requested at {}, waiting for the agent",
            "apply",
            time(requested_at)
        );
    }
    let Some(last) = &status.last else {
        if status.requested_at.is_none() {
            println!(
                "{:>16}  never (`provisioner node apply NAME`)",
                "last apply"
            );
        }
        return;
    };
    let when = format!("{} by the agent of {}", time(&last.received_at), last.mac);
    match &last.report {
        Some(report) => {
            println!("{:>16}  {when}: {}", "last apply", report.summary());
            // The item lines; the summary line is printed above.
            let text = report.to_string();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[..lines.len().saturating_sub(1)] {
                println!("{:>16}    {line}", "");
            }
        }
        None => println!(
            "{:>16}  {when}: FAILED: {}",
            "last apply",
            or_dash(last.error.as_ref())
        ),
    }
}

/// One line for a node's host plan ([`model::plan::HostPlan::summary`]), or why there is none.
fn plan_summary(node: &views::Node) -> String {
    match (&node.plan_error, &node.plan) {
        (Some(error), _) => format!("none: {error}"),
        (None, Some(plan)) => plan.summary(),
        (None, None) => "none (no inventory yet)".into(),
    }
}

/// A stored inventory as text: identity, CPUs, NUMA nodes, NICs, disks, warnings.
fn print_inventory(stored: &views::StoredInventory) {
    let inv = &stored.inventory;
    let gib = |bytes: u64| format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64);
    let sys = &inv.system;
    println!(
        "{} from {} at {}",
        stored.node,
        or_dash(stored.mac.as_ref()),
        time(&stored.received_at)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    #[test]
    fn a_node_prints_as_aligned_rows_from_its_view() {
        let at = chrono::Utc.with_ymd_and_hms(2026, 12, 2, 8, 0, 0).unwrap();
        let node = views::Node {
            name: "node-001".into(),
            source: views::NodeSource::Site,
            in_site: true,
            bmc_url: Some("redfish://10.0.0.5".into()),
            bmc_username: Some("admin".into()),
            bmc_credential: Some("env:PW".into()),
            bmc_tls: None,
            boot_mac: Some("52:54:00:00:00:01".into()),
            serial: None,
            profile_override: None,
            role_override: None,
            state: crate::lifecycle::State::Failed,
            failed_from: Some(crate::lifecycle::State::Inspecting),
            generation: 5,
            maintenance: true,
            maintenance_reason: Some("swap DIMM".into()),
            last_error: Some("wrong rack".into()),
            matched_profile: None,
            plan: None,
            plan_error: None,
            has_inventory: false,
            deadline: None,
            created_at: at,
            updated_at: at,
            state_since: at + chrono::Duration::milliseconds(250),
            deploy: None,
        };
        insta::assert_snapshot!(node_text(&node), @r"
                    name  node-001
                   state  failed (from inspecting)
                   since  2026-12-02T08:00:00.250Z
                     why  wrong rack
             maintenance  on: swap DIMM
                  source  site
           in nodes.yaml  true
                     bmc  redfish://10.0.0.5
                bmc user  admin
        bmc password from  env:PW
                 bmc tls  -
                boot mac  52:54:00:00:00:01
                  serial  -
                 profile  -
                    plan  none (no inventory yet)
        profile override  -
           role override  -
               inventory  none
              generation  5
        ");
    }

    #[test]
    fn a_deploy_prints_its_progress_and_the_host_report() {
        let at = chrono::Utc.with_ymd_and_hms(2026, 12, 2, 8, 0, 0).unwrap();
        let deploy = views::Deploy {
            image: Some("host".into()),
            version: Some("2".into()),
            root_hash: Some("ab".into()),
            requested_at: Some(at),
            ordered_at: Some(at),
            written_at: None,
            written: Some("image host 2 written to /dev/vda (1362 MiB in 41 s)".into()),
            erase: None,
            progress: Some(views::DeployProgress {
                phase: DeployPhase::Writing,
                done_bytes: 512 << 20,
                total_bytes: 1024 << 20,
                started_at: at,
                at: at + chrono::Duration::seconds(16),
            }),
            host: Some(views::HostStatus {
                at,
                version: "2".into(),
                slot: model::host::Slot::A,
                root_hash: "ab".into(),
                cmdline: "host.version=2".into(),
                trial: false,
                blessed: true,
                rolled_back_from: None,
                apply: Some("3 ok, 0 changed, 0 failed".into()),
                apply_failed: false,
                uptime_s: 5,
            }),
        };
        let json = serde_json::json!({
            "name": "n", "source": "site", "in_site": true, "bmc_url": null,
            "bmc_username": null, "bmc_credential": null, "bmc_tls": null, "boot_mac": null,
            "serial": null, "profile_override": null, "role_override": null,
            "state": "deploying", "failed_from": null, "generation": 1, "maintenance": false,
            "maintenance_reason": null, "last_error": null, "matched_profile": null,
            "plan": null, "plan_error": null, "has_inventory": true, "deadline": null,
            "created_at": at, "updated_at": at, "state_since": at, "deploy": deploy,
        });
        let node: views::Node = serde_json::from_value(json).unwrap();
        let rows: Vec<String> = deploy_rows(&node)
            .into_iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        assert_eq!(
            rows,
            [
                "image: host version 2",
                "progress: writing 512 of 1024 MiB (50%), 32.0 MiB/s, 16 s left (at 2026-12-02T08:00:16Z)",
                "written: image host 2 written to /dev/vda (1362 MiB in 41 s)",
                "deployed: version 2 slot a, blessed (reported 2026-12-02T08:00:00Z)",
                "root hash: ab",
                "cmdline: host.version=2",
                "applied: 3 ok, 0 changed, 0 failed",
            ]
        );
    }

    #[test]
    fn power_actions_print_as_the_api_names_them() {
        for action in [
            PowerAction::On,
            PowerAction::GracefulOff,
            PowerAction::ForceOff,
            PowerAction::Reset,
            PowerAction::Cycle,
        ] {
            assert_eq!(
                serde_json::to_value(action).unwrap(),
                serde_json::json!(action_name(action))
            );
        }
    }

    #[test]
    fn manual_events_are_the_ones_the_daemon_accepts() {
        for event in [
            ManualEvent::Inspect,
            ManualEvent::Deploy,
            ManualEvent::Undeploy,
            ManualEvent::Clean,
            ManualEvent::Abort,
        ] {
            assert!(event.event().is_manual(), "{:?}", event.event());
        }
    }
}
