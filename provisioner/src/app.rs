//! The application state: the active site, the store, metrics and the API
//! token ([`App`]), and the one way a node changes state ([`App::fire`]).
//! API handlers, HTTP boot, DHCP, the executor and the timers all act
//! through it; `crate::daemon` builds it and wires them together.
//!
//! Invariants:
//! - The active site is always one that validated: an invalid change is
//!   refused, reported (log, `/api/v1/site`, metrics) and the last good site stays.
//! - Every lifecycle change goes through [`App::fire`]: read, pure transition
//!   (which decides the policy: deadlines, reasons, power-off), compare-and-swap
//!   write with the transition's BMC actions queued in the same transaction,
//!   then the inline actions. A lost race is retried on fresh data.
//! - Wait-state deadlines live in the database, so a restart (even after
//!   `kill -9`) resumes every timer: an overdue node times out on the first sweep.
//! - Operators can drive power by hand (`App::node_power`), and a periodic sync
//!   (`App::sync_power`) records every power change a BMC reports.
//! - BMC passwords are read from their references (`env:`, `file:`) when a BMC is
//!   contacted, held in a `bmc::Secret` and never logged or stored.
//! - Nothing here imports the executor, the API, HTTP boot or the daemon wiring.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{error, info, warn};

use crate::bmc::{self, Bmc as _, BmcConfig, BmcError, Credentials, PowerAction, PowerState};
use crate::lifecycle::{self, Action, Event, TransitionError};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::outcome::Outcome;
use crate::site::{self, Site};
use crate::store::{
    EnrollSpec, Job, NodeConfig, NodeRecord, StatusChange, Store, StoreError, SyncReport,
};

mod agent;
mod deploy;

/// How many BMCs the power sync talks to at once.
const POWER_SYNC_CONCURRENCY: usize = 16;

/// Why a daemon operation failed; mapped to HTTP in `api`.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
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
    /// `node deploy` refused (no plan, no host image, BIOS firmware): the
    /// message says why and what to do.
    #[error("{0}")]
    DeployRefused(String),
    /// A host API request without the node's current credential.
    #[error("{0}")]
    HostCredential(&'static str),
}

/// What `provisioner node power` reports.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub(crate) struct PowerReport {
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
pub(crate) struct RefusedReload {
    pub at: DateTime<Utc>,
    /// `file:line:column: message`, one per problem.
    pub errors: Vec<String>,
}

/// What `GET /api/v1/site` reports.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub(crate) struct SiteStatus {
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
    pub(crate) metrics: Metrics,
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
    pub(crate) boot_mac_labels: crate::metrics::MacLabels,
    /// The DHCP server, when it runs (site reloads update it).
    dhcp: std::sync::OnceLock<crate::dhcp::server::Handle>,
    /// Seals each node's config at deploy (`STATE/config-signing.key`).
    signing_key: ed25519_dalek::SigningKey,
}

/// The node as the store should hold it, from the site's declaration.
pub(crate) fn enroll_spec(node: &site::NodeSpec) -> EnrollSpec {
    let bmc = node.bmc.as_ref();
    EnrollSpec {
        name: node.name.clone(),
        config: NodeConfig {
            bmc_url: bmc.map(|b| b.url.to_string()),
            bmc_username: bmc.map(|b| b.username.clone()),
            bmc_credential: bmc.map(|b| b.credential.reference()),
            bmc_tls: bmc.map(|b| b.tls.clone()).unwrap_or_default(),
            boot_mac: node.boot_mac.map(|mac| mac.to_string()),
            serial: node.serial.clone(),
            profile_override: node.profile.clone(),
            role_override: node.role.map(|role| role.to_string()),
        },
    }
}

impl App {
    /// Builds the daemon state from a valid site, an open store, the operator
    /// token and the config-signing key ([`crate::keys::ensure_signing_key`]).
    pub fn new(
        site: Site,
        store: Store,
        token: String,
        signing_key: ed25519_dalek::SigningKey,
    ) -> App {
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
            signing_key,
        }
    }

    /// Hands site reloads to a running DHCP server.
    pub(crate) fn attach_dhcp(&self, handle: crate::dhcp::server::Handle) {
        let _ = self.dhcp.set(handle);
    }

    /// Reports the counters of a running TFTP server in `/metrics`.
    pub(crate) fn with_tftp(mut self, stats: Arc<crate::tftp::TftpStats>) -> App {
        self.tftp = Some(stats);
        self
    }

    /// Checks a bearer token in constant time.
    pub(crate) fn token_matches(&self, presented: &str) -> bool {
        constant_time_eq(presented, &self.token)
    }

    /// The active site.
    pub(crate) fn site(&self) -> Arc<Site> {
        Arc::clone(
            &self
                .site
                .read()
                .unwrap_or_else(|poison| poison.into_inner()),
        )
    }

    pub(crate) fn site_status(&self) -> SiteStatus {
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
    pub(crate) async fn reload(&self) -> Result<SyncReport, AppError> {
        let _serial = self.reload_lock.lock().await;
        let fingerprint = site_fingerprint(&self.site_dir);
        let dir = self.site_dir.clone();
        let loaded = tokio::task::spawn_blocking(move || site::load(&dir))
            .await
            .map_err(|e| AppError::BadRequest(format!("site loader crashed: {e}")))?;
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
                Err(AppError::SiteInvalid(errors))
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
    ) -> Result<NodeRecord, AppError> {
        self.fire_with(name, event, reason, true).await
    }

    /// [`App::fire`] for a node that is already doing what the transition's BMC
    /// actions would make it do (an agent that booted on its own reports): the
    /// transition is recorded and its BMC actions are not queued.
    pub(crate) async fn fire_recorded(
        &self,
        name: &str,
        event: Event,
        reason: Option<String>,
    ) -> Result<NodeRecord, AppError> {
        self.fire_with(name, event, reason, false).await
    }

    async fn fire_with(
        &self,
        name: &str,
        event: Event,
        reason: Option<String>,
        queue_bmc: bool,
    ) -> Result<NodeRecord, AppError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let node = self.store.node(name).await?;
            let policy = self.site().config.lifecycle.policy();
            let transition = lifecycle::transition(node.status(), event, &policy)?;
            let now = Utc::now();
            let notes = transition.notes(
                &lifecycle::Notes {
                    deadline: node.deadline,
                    last_error: node.last_error.clone(),
                    maintenance_reason: node.maintenance_reason.clone(),
                },
                reason.as_deref(),
                now,
            );
            let bmc_actions: Vec<Action> = transition
                .actions
                .iter()
                .filter(|a| queue_bmc && a.is_bmc())
                .copied()
                .collect();
            let queued = !bmc_actions.is_empty();
            let matched = if transition.actions.contains(&Action::MatchProfile) {
                self.outcome_for(&node).await?
            } else {
                None
            };
            let change = StatusChange {
                status: transition.next,
                maintenance_reason: notes.maintenance_reason,
                last_error: notes.last_error,
                deadline: notes.deadline,
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
                        crate::outcome::log(name, outcome);
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
    pub(crate) fn bmc_config(&self, node: &NodeRecord) -> Result<BmcConfig, AppError> {
        let url = node
            .config
            .bmc_url
            .as_deref()
            .ok_or_else(|| AppError::NoBmc(node.name.clone()))?;
        let url: site::BmcUrl = url.parse().map_err(|e: site::BmcUrlError| {
            AppError::BadRequest(format!("node `{}`: {e}", node.name))
        })?;
        let credentials = match (&node.config.bmc_username, &node.config.bmc_credential) {
            (Some(username), Some(reference)) => Some(Credentials {
                username: username.clone(),
                password: bmc::password_from_reference(&url.to_string(), reference)?,
            }),
            _ => None,
        };
        let mut config = BmcConfig::new(url, credentials);
        config.tls = bmc::TlsPolicy::from(&node.config.bmc_tls);
        Ok(config)
    }

    /// Reads (and with `action`, changes) a node's power through its BMC, and records
    /// the reading.
    pub(crate) async fn node_power(
        &self,
        name: &str,
        action: Option<PowerAction>,
    ) -> Result<PowerReport, AppError> {
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
            .record_power(name, power_state, Utc::now())
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
    pub(crate) async fn sync_power(app: &Arc<App>) -> usize {
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
                        let changed = before.map(|(state, _)| state) != Some(report.power_state);
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
    pub(crate) async fn sweep_timeouts(&self) -> Result<usize, StoreError> {
        self.sweep_timeouts_at(Utc::now()).await
    }

    /// The `match profile` action of a transition about to commit: the outcome for the
    /// node's stored inventory, written in the transition's own transaction (so the
    /// node is never `available` without its plan or the reason it has none). `None`
    /// when no inventory is stored.
    async fn outcome_for(&self, node: &NodeRecord) -> Result<Option<Outcome>, StoreError> {
        let Some(stored) = self.store.inventory(&node.name).await? else {
            warn!(node = %node.name, "match profile: no inventory stored");
            return Ok(None);
        };
        Ok(Some(crate::outcome::decide(
            &self.site(),
            node.config.profile_override.as_deref(),
            &stored.inventory,
        )))
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
            let waited = humantime(self.site().config.lifecycle.policy().timeout(kind));
            let steps = self.store.progress(&name).await?;
            let pending = self.store.job_of(&name).await?;
            let reason = crate::progress::explain_timeout(
                kind,
                &waited,
                &steps,
                node.config.boot_mac.as_deref(),
                pending.as_ref().map(Job::pending),
            );
            match self.fire(&name, Event::Timeout, Some(reason)).await {
                Ok(_) => {
                    failed += 1;
                    self.metrics.timeouts.inc();
                }
                // Another writer moved the node first (an agent report, maintenance).
                Err(AppError::Transition(_)) => {}
                Err(AppError::Store(err)) => return Err(err),
                Err(err) => warn!(node = %name, %err, "timeout not applied"),
            }
        }
        Ok(failed)
    }

    /// Reloads the site when its files changed on disk.
    pub(crate) async fn poll_site(&self) {
        let now = site_fingerprint(&self.site_dir);
        let changed = *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) != now;
        if changed {
            info!(dir = %self.site_dir.display(), "site files changed; reloading");
            // A refused change is logged and kept in the status by `reload`.
            let _ = self.reload().await;
        }
    }

    /// Refreshes the node gauges (called at scrape time).
    pub(crate) async fn refresh_metrics(&self) -> Result<(), StoreError> {
        let counts = self.store.count_by_state().await?;
        self.metrics.set_nodes(&counts);
        if let Some(stats) = &self.tftp {
            self.metrics.set_tftp(stats);
        }
        Ok(())
    }
}

/// Equality of two secrets (or their digests) without an early exit on
/// the first differing byte.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
