//! `provisioner serve`: wires the site, the store, the lifecycle and the API
//! together, and runs the background loops (site watcher, wait-state timers).
//!
//! Invariants:
//! - The active site is always one that validated: an invalid change is
//!   refused, reported (log, `/api/v1/site`, metrics) and the last good site stays.
//! - Every lifecycle change goes through [`App::fire`]: read, pure transition,
//!   compare-and-swap write, then actions. A lost race is retried on fresh data.
//! - Wait-state deadlines live in the database, so a restart (even after
//!   `kill -9`) resumes every timer: an overdue node times out on the first sweep.
//! - Lifecycle BMC actions (boot device, power) are queued with their transition and
//!   carried out by [`crate::executor`] (not in `--api-only` mode, which only records
//!   them); the wait-state timer still guarantees no node waits forever. Operators
//!   can drive power by hand ([`App::node_power`]), and a periodic sync
//!   ([`App::sync_power`]) records every power change a BMC reports.
//! - BMC passwords are read from their references (`env:`, `file:`) when a BMC is
//!   contacted, held in a `bmc::Secret` and never logged or stored.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{error, info, warn};

use crate::bmc::{self, Bmc as _, BmcConfig, BmcError, Credentials, PowerAction, PowerState};
use crate::lifecycle::{self, Action, Event, TransitionError, WaitKind};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::site::{self, Site};
use crate::store::{
    EnrollSpec, NodeConfig, NodeRecord, StatusChange, Store, StoreError, SyncReport,
};

mod agent;

/// The API token file inside the state directory (mode 0600).
pub const TOKEN_FILE: &str = "api-token";
/// The daemon writes its API base URL here so the CLI finds the local daemon.
pub const URL_FILE: &str = "api-url";
/// How often overdue wait states are looked for.
const SWEEP: Duration = Duration::from_secs(1);

/// Options of `provisioner serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub site: PathBuf,
    pub state: PathBuf,
    /// Overrides `api.listen` from site.yaml (tests use port 0).
    pub listen: Option<SocketAddr>,
    /// Run without DHCP, TFTP and the executor (lifecycle BMC actions are recorded,
    /// not performed); HTTP boot is still served on the API listener.
    pub api_only: bool,
    /// How often the site files are checked for changes; `None`: only on
    /// `provisioner site reload`.
    pub site_poll: Option<Duration>,
    /// How often every node's power state is read from its BMC; `None`: never.
    pub power_sync: Option<Duration>,
}

/// How many BMCs the power sync talks to at once.
const POWER_SYNC_CONCURRENCY: usize = 16;

/// How long a wait state may last before the node fails (site.yaml `lifecycle`).
pub(crate) fn timeout_of(config: &site::LifecycleConfig, kind: WaitKind) -> Duration {
    match kind {
        WaitKind::Inspect => config.inspect_timeout,
        WaitKind::Deploy => config.deploy_timeout,
        WaitKind::Clean => config.clean_timeout,
    }
}

/// Why a daemon operation failed; mapped to HTTP in `api`.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("the site change was refused; the last good site stays active")]
    SiteInvalid(#[source] site::SiteErrors),
    #[error("{0}")]
    BadRequest(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("node `{0}` has no BMC: add a `bmc:` section for it in nodes.yaml")]
    NoBmc(String),
    #[error(transparent)]
    Bmc(#[from] BmcError),
    /// An agent request without a valid per-boot token.
    #[error("{0}")]
    AgentToken(&'static str),
    /// An unknown machine's agent reported and the site does not allow discovery.
    #[error(
        "machine {0} is not in nodes.yaml and discovery is off: list its boot MAC in nodes.yaml, \
         or set `discovery: {{enabled: true}}` in site.yaml"
    )]
    DiscoveryOff(String),
    #[error(
        "node `{0}` has no inventory yet: its inspection agent has not reported \
         (`provisioner node event {0} inspect` starts an inspection)"
    )]
    NoInventory(String),
    /// An agent asked for a plan its node does not have.
    #[error("{0}")]
    NoPlan(String),
    /// `node apply` refused: the message says why and what to do.
    #[error("{0}")]
    ApplyRefused(String),
}

/// What `provisioner node power` reports.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PowerReport {
    pub node: String,
    pub bmc: String,
    /// The change asked for, if any (none: a reading only).
    pub action: Option<PowerAction>,
    /// The power state read from the BMC after the action was accepted (a change can take
    /// a while to land).
    pub power_state: PowerState,
}

/// The last site change that was refused.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RefusedReload {
    pub at: DateTime<Utc>,
    /// `file:line:column: message`, one per problem.
    pub errors: Vec<String>,
}

/// What `GET /api/v1/site` reports.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SiteStatus {
    pub dir: PathBuf,
    /// When the active site was loaded.
    pub loaded_at: DateTime<Utc>,
    /// One-line summary of the active site.
    pub summary: String,
    /// Site nodes no longer in nodes.yaml, kept until deleted.
    pub missing_nodes: Vec<String>,
    /// The last refused change, if it came after the active site was loaded.
    pub refused: Option<RefusedReload>,
}

/// Shared daemon state, handed to every API handler and background loop.
#[derive(Debug)]
pub struct App {
    pub store: Store,
    pub metrics: Metrics,
    token: String,
    site_dir: PathBuf,
    site: RwLock<Arc<Site>>,
    status: Mutex<SiteStatus>,
    fingerprint: Mutex<Vec<(PathBuf, u64, SystemTime)>>,
    reload_lock: tokio::sync::Mutex<()>,
    /// Counters of the TFTP server, when it runs.
    tftp: Option<Arc<crate::tftp::TftpStats>>,
    /// Wakes the lifecycle executor when a transition queued BMC actions.
    pub(crate) wake: tokio::sync::Notify,
    /// Which MACs get their own label in the boot-script counter.
    pub boot_mac_labels: crate::boot::MacLabels,
    /// The DHCP server, when it runs (site reloads update it).
    dhcp: std::sync::OnceLock<crate::dhcp::server::Handle>,
}

/// The node as the store should hold it, from the site's declaration.
pub fn enroll_spec(node: &site::NodeSpec) -> EnrollSpec {
    let bmc = node.bmc.as_ref();
    EnrollSpec {
        name: node.name.clone(),
        config: NodeConfig {
            bmc_url: bmc.map(|b| b.url.to_string()),
            bmc_username: bmc.map(|b| b.username.clone()),
            bmc_credential: bmc.map(|b| b.credential.reference()),
            bmc_tls: bmc.and_then(|b| b.tls.reference()),
            boot_mac: node.boot_mac.map(|mac| mac.to_string()),
            serial: node.serial.clone(),
            profile_override: node.profile.clone(),
            role_override: node.role.map(|role| role.to_string()),
        },
    }
}

impl App {
    /// Builds the daemon state from a valid site and an open store.
    pub fn new(site: Site, store: Store, token: String) -> App {
        let status = SiteStatus {
            dir: site.dir.clone(),
            loaded_at: Utc::now(),
            summary: site.summary(),
            missing_nodes: vec![],
            refused: None,
        };
        App {
            store,
            metrics: Metrics::default(),
            token,
            fingerprint: Mutex::new(site_fingerprint(&site.dir)),
            site_dir: site.dir.clone(),
            site: RwLock::new(Arc::new(site)),
            status: Mutex::new(status),
            reload_lock: tokio::sync::Mutex::new(()),
            tftp: None,
            wake: tokio::sync::Notify::new(),
            boot_mac_labels: Default::default(),
            dhcp: std::sync::OnceLock::new(),
        }
    }

    /// Hands site reloads to a running DHCP server.
    pub fn attach_dhcp(&self, handle: crate::dhcp::server::Handle) {
        let _ = self.dhcp.set(handle);
    }

    /// Reports the counters of a running TFTP server in `/metrics`.
    pub fn with_tftp(mut self, stats: Arc<crate::tftp::TftpStats>) -> App {
        self.tftp = Some(stats);
        self
    }

    /// Checks a bearer token in constant time.
    pub fn token_matches(&self, presented: &str) -> bool {
        let (a, b) = (presented.as_bytes(), self.token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The active site.
    pub fn site(&self) -> Arc<Site> {
        Arc::clone(
            &self
                .site
                .read()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    pub fn site_status(&self) -> SiteStatus {
        self.status
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Enrolls and updates the active site's nodes in the store.
    pub async fn sync_nodes(&self) -> Result<SyncReport, StoreError> {
        let site = self.site();
        let specs: Vec<EnrollSpec> = site.nodes.iter().map(enroll_spec).collect();
        let report = self.store.sync_site(&specs, Utc::now()).await?;
        for name in &report.missing {
            warn!(node = %name, "node is no longer in nodes.yaml; kept until `provisioner node delete {name}`");
        }
        if !report.added.is_empty() || !report.updated.is_empty() {
            info!(
                added = report.added.len(),
                updated = report.updated.len(),
                "site nodes synced"
            );
        }
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .missing_nodes = report.missing.clone();
        Ok(report)
    }

    /// Loads the site directory again; applies it only if it validates.
    pub async fn reload(&self) -> Result<SyncReport, DaemonError> {
        let _serial = self.reload_lock.lock().await;
        let fingerprint = site_fingerprint(&self.site_dir);
        let dir = self.site_dir.clone();
        let loaded = tokio::task::spawn_blocking(move || site::load(&dir))
            .await
            .map_err(|e| DaemonError::BadRequest(format!("site loader crashed: {e}")))?;
        *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = fingerprint;
        match loaded {
            Ok(site) => {
                let summary = site.summary();
                *self.site.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(site);
                {
                    let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
                    status.loaded_at = Utc::now();
                    status.summary = summary.clone();
                    status.refused = None;
                }
                let report = self.sync_nodes().await?;
                if let Some(dhcp) = self.dhcp.get()
                    && let Err(err) = dhcp.apply_site(&self.site())
                {
                    error!(%err, "DHCP kept its previous reservations");
                }
                self.metrics
                    .site_reloads
                    .get_or_create(&outcome("applied"))
                    .inc();
                info!(%summary, "site reloaded");
                Ok(report)
            }
            Err(errors) => {
                self.metrics
                    .site_reloads
                    .get_or_create(&outcome("refused"))
                    .inc();
                let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                error!(errors = %lines.join("; "), "site change refused; the last good site stays active");
                self.status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .refused = Some(RefusedReload {
                    at: Utc::now(),
                    errors: lines,
                });
                Err(DaemonError::SiteInvalid(errors))
            }
        }
    }

    /// Applies one lifecycle event to a node: pure transition, compare-and-swap
    /// write with history, then the actions. Retries when another writer won.
    pub async fn fire(
        &self,
        name: &str,
        event: Event,
        reason: Option<String>,
    ) -> Result<NodeRecord, DaemonError> {
        self.fire_with(name, event, reason, true).await
    }

    /// [`App::fire`] for a node that is already doing what the transition's BMC
    /// actions would make it do (an agent that booted on its own reports): the
    /// transition is recorded and its BMC actions are not queued.
    pub async fn fire_recorded(
        &self,
        name: &str,
        event: Event,
        reason: Option<String>,
    ) -> Result<NodeRecord, DaemonError> {
        self.fire_with(name, event, reason, false).await
    }

    async fn fire_with(
        &self,
        name: &str,
        event: Event,
        reason: Option<String>,
        queue_bmc: bool,
    ) -> Result<NodeRecord, DaemonError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let node = self.store.node(name).await?;
            let transition = lifecycle::transition(node.status(), event)?;
            let now = Utc::now();
            let mut deadline = node.deadline;
            for action in &transition.actions {
                match action {
                    Action::StartTimer { kind } => {
                        deadline = Some(
                            now + chrono::Duration::from_std(timeout_of(
                                &self.site().config.lifecycle,
                                *kind,
                            ))
                            .unwrap_or(chrono::TimeDelta::MAX),
                        );
                    }
                    Action::CancelTimer => deadline = None,
                    _ => {}
                }
            }
            let next = transition.next;
            let last_error = if next.failed_from.is_some() && node.failed_from.is_none() {
                reason
                    .clone()
                    .or_else(|| Some(format!("{event} in state {}", node.state)))
            } else if next.state != node.state {
                None
            } else {
                node.last_error.clone()
            };
            let maintenance_reason = match event {
                Event::MaintenanceOn => reason.clone(),
                Event::MaintenanceOff => None,
                _ => node.maintenance_reason.clone(),
            };
            let lifecycle_config = self.site().config.lifecycle;
            let bmc_actions: Vec<Action> = transition
                .actions
                .iter()
                .filter(|a| queue_bmc && crate::executor::is_bmc_action(a))
                .filter(|a| {
                    !(event == Event::InventoryReceived
                        && **a == Action::PowerOff
                        && lifecycle_config.after_inspection == site::AfterInspection::Wait)
                })
                .copied()
                .collect();
            let queued = !bmc_actions.is_empty();
            let matched = if transition.actions.contains(&Action::MatchProfile) {
                crate::executor::plan::outcome_for(self, &node).await?
            } else {
                None
            };
            let change = StatusChange {
                status: next,
                maintenance_reason,
                last_error,
                deadline,
                event: event.as_str().to_owned(),
                reason: reason.clone(),
                bmc_actions,
                matched,
            };
            match self
                .store
                .commit_status(name, node.generation, &change, now)
                .await
            {
                Ok(updated) => {
                    info!(node = %name, %event, from = %node.state, to = %updated.state, "transition");
                    if queued {
                        self.wake.notify_one();
                    }
                    if let Some(outcome) = &change.matched {
                        crate::executor::plan::log(name, outcome);
                    }
                    return Ok(updated);
                }
                Err(StoreError::Conflict { .. }) if attempts < 10 => continue,
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// How to reach a node's BMC, from the node's configuration; the password is read
    /// from its reference now.
    pub(crate) fn bmc_config(&self, node: &NodeRecord) -> Result<BmcConfig, DaemonError> {
        let url = node
            .config
            .bmc_url
            .as_deref()
            .ok_or_else(|| DaemonError::NoBmc(node.name.clone()))?;
        let url: site::BmcUrl = url.parse().map_err(|e: site::BmcUrlError| {
            DaemonError::BadRequest(format!("node `{}`: {e}", node.name))
        })?;
        let credentials = match (&node.config.bmc_username, &node.config.bmc_credential) {
            (Some(username), Some(reference)) => Some(Credentials {
                username: username.clone(),
                password: bmc::password_from_reference(&url.to_string(), reference)?,
            }),
            _ => None,
        };
        let mut config = BmcConfig::new(url, credentials);
        config.tls = match node.config.bmc_tls.as_deref() {
            None => bmc::TlsPolicy::WebPki,
            Some("insecure") => bmc::TlsPolicy::Insecure,
            Some(other) => match other.strip_prefix("ca:") {
                Some(path) => bmc::TlsPolicy::CaFile(path.into()),
                None => {
                    return Err(DaemonError::BadRequest(format!(
                        "node `{}` has an unknown BMC TLS setting {other:?} in the store",
                        node.name
                    )));
                }
            },
        };
        Ok(config)
    }

    /// Reads (and with `action`, changes) a node's power through its BMC, and records
    /// the reading.
    pub async fn node_power(
        &self,
        name: &str,
        action: Option<PowerAction>,
    ) -> Result<PowerReport, DaemonError> {
        let node = self.store.node(name).await?;
        let config = self.bmc_config(&node)?;
        let bmc_url = config.url.to_string();
        let driver = bmc::connect(config).await?;
        let result = async {
            if let Some(action) = action {
                driver.power(action).await?;
                info!(node = %name, bmc = %bmc_url, ?action, "power action accepted by the BMC");
            }
            driver.power_state().await
        }
        .await;
        if let Err(err) = driver.close().await {
            warn!(node = %name, %err, "closing the BMC session failed");
        }
        let power_state = result?;
        self.store
            .record_power(name, power_state.as_str(), Utc::now())
            .await?;
        Ok(PowerReport {
            node: name.to_owned(),
            bmc: bmc_url,
            action,
            power_state,
        })
    }

    /// Reads the power state of every node with a BMC (a few at a time) and records each
    /// change in the node's history. Returns how many changed; failures are logged.
    pub async fn sync_power(app: &Arc<App>) -> usize {
        let nodes = match app.store.nodes().await {
            Ok(nodes) => nodes,
            Err(err) => {
                error!(%err, "power sync: cannot list nodes");
                return 0;
            }
        };
        let limit = Arc::new(tokio::sync::Semaphore::new(POWER_SYNC_CONCURRENCY));
        let mut tasks = tokio::task::JoinSet::new();
        for node in nodes.into_iter().filter(|n| n.config.bmc_url.is_some()) {
            let (app, limit) = (Arc::clone(app), Arc::clone(&limit));
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let before = app.store.power(&node.name).await.ok().flatten();
                match app.node_power(&node.name, None).await {
                    Ok(report) => {
                        let changed = before.map(|(state, _)| state)
                            != Some(report.power_state.as_str().to_owned());
                        if changed {
                            info!(node = %node.name, power = %report.power_state, "power state changed");
                        }
                        changed
                    }
                    Err(err) => {
                        warn!(node = %node.name, %err, "power sync: BMC not read");
                        false
                    }
                }
            });
        }
        let mut changed = 0;
        while let Some(result) = tasks.join_next().await {
            changed += usize::from(result.unwrap_or(false));
        }
        changed
    }

    /// Fails every node whose wait-state deadline has passed.
    pub async fn sweep_timeouts(&self) -> Result<usize, StoreError> {
        self.sweep_timeouts_at(Utc::now()).await
    }

    /// Fails every node whose deadline is at or before `now`; returns how many.
    pub async fn sweep_timeouts_at(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let overdue = self.store.overdue(now).await?;
        let mut failed = 0;
        for name in overdue {
            let node = self.store.node(&name).await?;
            let Some(kind) = node.state.wait_kind() else {
                continue;
            };
            let waited = humantime(timeout_of(&self.site().config.lifecycle, kind));
            let steps = self.store.progress(&name).await?;
            let pending = self.store.job_of(&name).await?;
            let reason = crate::executor::explain_timeout(
                kind,
                &waited,
                &steps,
                node.config.boot_mac.as_deref(),
                pending.as_ref(),
            );
            match self.fire(&name, Event::Timeout, Some(reason)).await {
                Ok(_) => {
                    failed += 1;
                    self.metrics.timeouts.inc();
                }
                // Another writer moved the node first (an agent report, maintenance).
                Err(DaemonError::Transition(_)) => {}
                Err(DaemonError::Store(err)) => return Err(err),
                Err(err) => warn!(node = %name, %err, "timeout not applied"),
            }
        }
        Ok(failed)
    }

    /// Reloads the site when its files changed on disk.
    async fn poll_site(&self) {
        let now = site_fingerprint(&self.site_dir);
        let changed = *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) != now;
        if changed {
            info!(dir = %self.site_dir.display(), "site files changed; reloading");
            // A refused change is logged and kept in the status by `reload`.
            let _ = self.reload().await;
        }
    }

    /// Refreshes the node gauges (called at scrape time).
    pub async fn refresh_metrics(&self) -> Result<(), StoreError> {
        let counts = self.store.count_by_state().await?;
        self.metrics.set_nodes(&counts);
        if let Some(stats) = &self.tftp {
            self.metrics.set_tftp(stats);
        }
        Ok(())
    }
}

fn outcome(outcome: &str) -> OutcomeLabels {
    OutcomeLabels {
        outcome: outcome.to_owned(),
    }
}

fn humantime(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, (secs % 3600) / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// Size and modification time of every site file, to notice changes cheaply.
fn site_fingerprint(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let mut files = vec![dir.join("site.yaml"), dir.join("nodes.yaml")];
    if let Ok(entries) = std::fs::read_dir(dir.join("profiles")) {
        files.extend(entries.filter_map(Result::ok).map(|e| e.path()));
    }
    let mut out: Vec<_> = files
        .into_iter()
        .filter_map(|path| {
            let meta = std::fs::metadata(&path).ok()?;
            Some((path, meta.len(), meta.modified().ok()?))
        })
        .collect();
    out.sort();
    out
}

/// Reads the API token from `STATE/api-token`, creating it (mode 0600) on first start.
pub fn ensure_token(state: &Path) -> anyhow::Result<String> {
    let path = state.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) => {
            let mode = std::fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "API token file was readable by others; setting mode 0600");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            let token = token.trim().to_owned();
            anyhow::ensure!(
                token.len() >= 32,
                "{} holds a token shorter than 32 characters; delete the file and restart to get a new one",
                path.display()
            );
            Ok(token)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let bytes: [u8; 32] = rand::random();
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot create the API token file {}", path.display()))?;
            writeln!(file, "{token}")?;
            file.sync_all()?;
            info!(path = %path.display(), "created a new API token");
            Ok(token)
        }
        Err(err) => {
            Err(err).with_context(|| format!("cannot read the API token file {}", path.display()))
        }
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let site_dir = options.site.clone();
    let site = tokio::task::spawn_blocking(move || site::load(&site_dir)).await?.map_err(|errors| {
        anyhow::anyhow!(
            "the site at {} is invalid; fix these and start again (`provisioner site validate {}`):\n{errors}",
            options.site.display(),
            options.site.display()
        )
    })?;
    let listen = options.listen.unwrap_or(site.config.api.listen);
    let tftp = if options.api_only {
        None
    } else {
        start_tftp(&site).await?
    };
    let store = Store::open(&options.state).await?;
    let token = ensure_token(&options.state)?;
    let mut app = App::new(site, store, token);
    if let Some(stats) = tftp {
        app = app.with_tftp(stats);
    }
    let app = Arc::new(app);
    let report = app.sync_nodes().await?;
    info!(
        nodes = report.added.len() + report.updated.len() + report.unchanged,
        added = report.added.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        summary = %app.site_status().summary,
        "site loaded"
    );

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {listen} (api.listen in site.yaml); is another daemon running?"
            )
        })?;
    let local = listener.local_addr()?;
    // Written whole then renamed: the CLI and the tests poll for this file and must
    // never read it half-written.
    let url_file = options.state.join(URL_FILE);
    let partial = options.state.join(format!("{URL_FILE}.partial"));
    std::fs::write(&partial, format!("http://{local}\n"))
        .and_then(|()| std::fs::rename(&partial, &url_file))
        .with_context(|| format!("cannot write {}", url_file.display()))?;
    info!(%local, "API listening");
    if !options.api_only {
        start_dhcp(&app, local).await?;
    }

    // The executor carries out BMC actions; an API-only daemon only records them.
    let executor =
        (!options.api_only).then(|| tokio::spawn(crate::executor::run(Arc::clone(&app))));
    let sweeper = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP);
            loop {
                tick.tick().await;
                if let Err(err) = app.sweep_timeouts().await {
                    error!(%err, "timeout sweep failed");
                }
            }
        })
    };
    let site_watcher = options.site_poll.map(|period| {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                app.poll_site().await;
            }
        })
    });

    let power_sync = options.power_sync.map(|period| {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            // The first reading comes one period after start, not during it.
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                App::sync_power(&app).await;
            }
        })
    });

    axum::serve(listener, crate::api::router(Arc::clone(&app)))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("API server failed")?;
    sweeper.abort();
    for task in [site_watcher, power_sync, executor].into_iter().flatten() {
        task.abort();
    }
    app.store.close().await;
    info!("stopped");
    Ok(())
}

/// Starts the DHCP server when site.yaml `network.dhcp.mode` is not `off`.
async fn start_dhcp(app: &App, api: SocketAddr) -> anyhow::Result<()> {
    use crate::dhcp::server;
    let site = app.site();
    let http = server::http_address(site.config.network.address, api);
    let Some(settings) = server::Settings::from_site(&site, http) else {
        info!("DHCP off (network.dhcp.mode in site.yaml)");
        return Ok(());
    };
    let handle = server::start(settings, app.store.clone(), app.metrics.dhcp.clone()).await?;
    app.attach_dhcp(handle);
    Ok(())
}

/// Starts the TFTP server on the provisioning address when the site enables it.
/// Boot settings are read at start: changing them needs a restart.
async fn start_tftp(site: &Site) -> anyhow::Result<Option<Arc<crate::tftp::TftpStats>>> {
    use crate::tftp::{TftpConfig, TftpServer, transfer::Limits};
    let Some(spec) = site.config.boot.tftp else {
        return Ok(None);
    };
    let files = &site.config.boot.files;
    anyhow::ensure!(
        files.is_dir(),
        "boot.files: {} is not a directory; install Debian's `ipxe` package or set boot.files in site.yaml",
        files.display()
    );
    let config = TftpConfig {
        root: Some(files.clone()),
        files: Default::default(),
        limits: Limits {
            max_blksize: spec.max_blksize,
            ..Limits::default()
        },
        max_transfers: spec.max_transfers,
    };
    let addr = SocketAddr::new(site.config.network.address.addr().into(), spec.port);
    let server = TftpServer::bind(addr, config).await.with_context(|| {
        format!("cannot listen for TFTP on {addr} (boot.tftp in site.yaml): is another TFTP server running?")
    })?;
    let stats = Arc::clone(&server.stats);
    info!(%addr, files = %files.display(), "TFTP listening");
    tokio::spawn(async move {
        if let Err(err) = server.run().await {
            error!(%err, "TFTP server stopped");
        }
    });
    Ok(Some(stats))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
}
