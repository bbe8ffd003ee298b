//! The operator API's JSON bodies: what `/api/v1` answers and accepts, shared by
//! the daemon (which serializes them) and the CLI (which deserializes them), and
//! the source of the OpenAPI schemas (`crate::api::openapi`). The conversions
//! from store rows and daemon reports live here, next to the views.
//!
//! Invariants:
//! - No store row (`crate::store::NodeRecord` and friends) is an API body: a
//!   column can be added, renamed or split without changing the API, and a
//!   renamed view field breaks the CLI's build instead of printing a blank.
//! - Requests deny unknown fields (a typo is a 400 naming the field); answers
//!   do not, so an older CLI keeps reading a newer daemon.
//! - Serialized, a view is the JSON the API has always sent (the field names
//!   and shapes of the rows it replaced).
//! - Agent-protocol bodies (`InventoryReport`, `Heartbeat`, `Command`,
//!   `HostPlan`, `AppliedReport`) are in `model::agent` and `model::plan`, not here:
//!   the agent does not depend on the provisioner.

use std::fmt;

use chrono::{DateTime, Utc};
use model::apply::ApplyReport;
use model::deploy::{DeployPhase, EraseMode};
use model::host::Slot;
use model::inventory::Inventory;
use model::plan::HostPlan;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bmc::PowerAction;
use crate::lifecycle::{Event, State};
use crate::{app, store};

/// Body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct ErrorBody {
    pub error: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Site validation problems, `file:line:column: message`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// How a node entered the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeSource {
    /// Listed in nodes.yaml.
    Site,
    /// Created through the API.
    Api,
    /// An unknown machine whose agent reported (site.yaml `discovery.enabled`).
    Discovered,
}

impl NodeSource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NodeSource::Site => "site",
            NodeSource::Api => "api",
            NodeSource::Discovered => "discovered",
        }
    }
}

impl fmt::Display for NodeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<store::Source> for NodeSource {
    fn from(source: store::Source) -> Self {
        match source {
            store::Source::Site => NodeSource::Site,
            store::Source::Api => NodeSource::Api,
            store::Source::Discovered => NodeSource::Discovered,
        }
    }
}

/// A node: `GET /api/v1/nodes` (a list of these, by name), `GET /api/v1/nodes/{name}`,
/// and the answer to maintenance and events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Node {
    pub name: String,
    pub(crate) source: NodeSource,
    /// False when the node came from nodes.yaml and is no longer listed there.
    pub(crate) in_site: bool,
    pub(crate) bmc_url: Option<String>,
    pub(crate) bmc_username: Option<String>,
    /// Reference to the BMC password: `env:VAR` or `file:PATH` (never the password).
    pub(crate) bmc_credential: Option<String>,
    /// How the BMC's HTTPS certificate is checked: `ca:PATH`, `insecure`, or
    /// absent for the web PKI.
    pub(crate) bmc_tls: Option<String>,
    pub(crate) boot_mac: Option<String>,
    pub(crate) serial: Option<String>,
    pub(crate) profile_override: Option<String>,
    pub(crate) role_override: Option<String>,
    pub(crate) state: State,
    /// The state a failed node failed from.
    pub(crate) failed_from: Option<State>,
    /// Bumped by every status change.
    pub(crate) generation: i64,
    pub(crate) maintenance: bool,
    pub(crate) maintenance_reason: Option<String>,
    pub(crate) last_error: Option<String>,
    pub(crate) matched_profile: Option<String>,
    /// The host plan computed from the inventory and the matched profile.
    pub(crate) plan: Option<HostPlan>,
    /// Why there is no plan (no profile matched, a tie, an impossible request).
    pub(crate) plan_error: Option<String>,
    pub(crate) has_inventory: bool,
    /// When the current wait state times out.
    pub(crate) deadline: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) state_since: DateTime<Utc>,
    /// The last deploy (image, version, progress) and the installed host's
    /// last report; absent when the node was never deployed nor cleaned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deploy: Option<Deploy>,
}

impl Node {
    /// The view with the node's deploy record.
    pub(crate) fn with_deploy(mut self, deploy: Option<store::DeployStatus>) -> Node {
        self.deploy = deploy.map(Deploy::from);
        self
    }
}

/// A node's deploy: what was asked, how far the agent is, what the
/// installed host reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Deploy {
    /// The catalog image of the last deploy.
    pub image: Option<String>,
    /// Its version and verity root hash.
    pub version: Option<String>,
    pub root_hash: Option<String>,
    pub requested_at: Option<DateTime<Utc>>,
    /// When the last deploy order went to the node's agent.
    pub ordered_at: Option<DateTime<Utc>>,
    /// When the agent reported the image written, and what it wrote.
    pub written_at: Option<DateTime<Utc>>,
    pub written: Option<String>,
    /// How much the pending (or last) clean erases.
    pub erase: Option<EraseMode>,
    /// The agent's last progress report (while deploying or cleaning).
    pub progress: Option<DeployProgress>,
    /// The installed host's last report.
    pub host: Option<HostStatus>,
}

/// The agent's progress in a deploy or clean phase; the rate is
/// `done_bytes / (at - started_at)`, the time left `(total - done) / rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct DeployProgress {
    pub phase: DeployPhase,
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// When the agent first reported this phase.
    pub started_at: DateTime<Utc>,
    /// When it last reported.
    pub at: DateTime<Utc>,
}

/// What the installed host last reported (`POST /api/host/v1/report`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct HostStatus {
    pub at: DateTime<Utc>,
    pub version: String,
    pub slot: Slot,
    pub root_hash: String,
    /// The host's kernel command line.
    pub cmdline: String,
    /// This boot is a trial of a new UKI; blessed: marked good.
    pub trial: bool,
    pub blessed: bool,
    /// The version it rolled back from, if it did (`VERSION (slot S)`).
    pub rolled_back_from: Option<String>,
    /// One line: what applying the host plan did, or why it could not.
    pub apply: Option<String>,
    /// An item of the plan failed, or the plan could not be applied.
    pub apply_failed: bool,
    pub uptime_s: u64,
}

impl From<store::DeployStatus> for Deploy {
    fn from(status: store::DeployStatus) -> Self {
        let store::DeployStatus {
            image,
            version,
            root_hash,
            requested_at,
            ordered_at,
            written_at,
            written,
            erase,
            progress,
            host,
        } = status;
        Deploy {
            image,
            version,
            root_hash,
            requested_at,
            ordered_at,
            written_at,
            written,
            erase,
            progress: progress.map(
                |store::StoredProgress {
                     phase,
                     done_bytes,
                     total_bytes,
                     since,
                     at,
                 }| DeployProgress {
                    phase,
                    done_bytes,
                    total_bytes,
                    started_at: since,
                    at,
                },
            ),
            host: host.map(|store::StoredHostReport { at, report }| {
                let (apply, apply_failed) = match (&report.apply, &report.apply_error) {
                    (_, Some(error)) => (Some(format!("not applied: {error}")), true),
                    (Some(apply), None) => (Some(apply.summary()), apply.failed()),
                    (None, None) => (None, false),
                };
                HostStatus {
                    at,
                    version: report.version,
                    slot: report.slot,
                    root_hash: report.root_hash,
                    cmdline: report.cmdline,
                    trial: report.trial,
                    blessed: report.blessed,
                    rolled_back_from: report
                        .rolled_back_from
                        .map(|r| format!("{} (slot {})", r.version, r.slot.letter())),
                    apply,
                    apply_failed,
                    uptime_s: report.uptime_s,
                }
            }),
        }
    }
}

/// `POST /api/v1/nodes/{name}/deploy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeployRequest {
    /// A `host:` image of site.yaml; default: the node's `image` in
    /// nodes.yaml, else its profile's.
    #[serde(default)]
    pub image: Option<String>,
}

/// `POST /api/v1/nodes/{name}/undeploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UndeployRequest {
    /// `metadata` (default: partition tables and signatures) or `full`
    /// (every byte of every disk).
    #[serde(default = "metadata")]
    pub erase: EraseMode,
}

fn metadata() -> EraseMode {
    EraseMode::Metadata
}

impl From<store::NodeRecord> for Node {
    fn from(record: store::NodeRecord) -> Self {
        let store::NodeRecord {
            name,
            source,
            in_site,
            config,
            state,
            failed_from,
            generation,
            maintenance,
            maintenance_reason,
            last_error,
            matched_profile,
            plan,
            plan_error,
            has_inventory,
            deadline,
            created_at,
            updated_at,
            state_since,
        } = record;
        let store::NodeConfig {
            bmc_url,
            bmc_username,
            bmc_credential,
            bmc_tls,
            boot_mac,
            serial,
            profile_override,
            role_override,
        } = config;
        Node {
            name,
            source: source.into(),
            in_site,
            bmc_url,
            bmc_username,
            bmc_credential,
            bmc_tls: bmc_tls.reference(),
            boot_mac,
            serial,
            profile_override,
            role_override,
            state,
            failed_from,
            generation,
            maintenance,
            maintenance_reason,
            last_error,
            matched_profile,
            plan,
            plan_error,
            has_inventory,
            deadline,
            created_at,
            updated_at,
            state_since,
            deploy: None,
        }
    }
}

impl From<&store::NodeRecord> for Node {
    fn from(record: &store::NodeRecord) -> Self {
        Node::from(record.clone())
    }
}

/// One line of a node's history (`GET /api/v1/nodes/{name}/history`, oldest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct HistoryEntry {
    pub at: DateTime<Utc>,
    /// The state before (none for the enrollment).
    pub from: Option<State>,
    pub to: State,
    /// A lifecycle event (`inspect`, `timeout`, ...) or a record of the store
    /// (`enroll`, `power`, ...).
    pub event: String,
    pub reason: Option<String>,
    /// The node's generation after this line.
    pub generation: i64,
}

impl From<store::HistoryEntry> for HistoryEntry {
    fn from(entry: store::HistoryEntry) -> Self {
        let store::HistoryEntry {
            at,
            from,
            to,
            event,
            reason,
            generation,
        } = entry;
        HistoryEntry {
            at,
            from,
            to,
            event,
            reason,
            generation,
        }
    }
}

/// `GET /api/v1/nodes/{name}/progress`: what a node did during its current
/// state and what the executor still has to do for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Progress {
    /// Boot steps seen since the node entered its state, in boot order
    /// (`powered_on`, `dhcp`, `script`, `agent`).
    pub steps: Vec<ProgressStep>,
    /// The BMC actions queued for the executor (waiting for a boot slot, or
    /// retrying after a failure); `null` when none.
    pub bmc_job: Option<QueuedBmcJob>,
}

/// A boot step and when it was first seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct ProgressStep {
    pub step: String,
    pub at: DateTime<Utc>,
}

/// BMC actions the executor has not carried out yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct QueuedBmcJob {
    /// The actions, in words (`boot network (once), power on/reset`).
    pub actions: String,
    /// Attempts made so far (0: not tried yet, e.g. waiting for a boot slot).
    pub attempts: u32,
    /// Not before this time (back-off after a failure).
    pub next_attempt_at: DateTime<Utc>,
    /// The last attempt's error.
    pub last_error: Option<String>,
}

impl From<store::jobs::NodeProgress> for Progress {
    fn from(progress: store::jobs::NodeProgress) -> Self {
        let store::jobs::NodeProgress { steps, bmc_job } = progress;
        Progress {
            steps: steps
                .into_iter()
                .map(|store::jobs::ProgressStep { step, at }| ProgressStep { step, at })
                .collect(),
            bmc_job: bmc_job.map(
                |store::jobs::QueuedBmcJob {
                     actions,
                     attempts,
                     next_attempt_at,
                     last_error,
                 }| QueuedBmcJob {
                    actions,
                    attempts,
                    next_attempt_at,
                    last_error,
                },
            ),
        }
    }
}

/// A node's stored inventory (`GET /api/v1/nodes/{name}/inventory`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct StoredInventory {
    pub node: String,
    /// The boot MAC of the agent that reported it.
    pub mac: Option<String>,
    pub received_at: DateTime<Utc>,
    pub inventory: Inventory,
}

impl From<store::StoredInventory> for StoredInventory {
    fn from(stored: store::StoredInventory) -> Self {
        let store::StoredInventory {
            node,
            mac,
            received_at,
            inventory,
        } = stored;
        StoredInventory {
            node,
            mac,
            received_at,
            inventory,
        }
    }
}

/// A node's apply request and last report (`GET|POST /api/v1/nodes/{name}/apply`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct ApplyStatus {
    pub node: String,
    /// When the operator asked for an apply that the agent has not reported yet.
    pub requested_at: Option<DateTime<Utc>>,
    /// The agent's last report, if it ever sent one.
    pub last: Option<LastApply>,
}

/// What the agent reported the last time it applied the node's plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct LastApply {
    pub received_at: DateTime<Utc>,
    /// The boot MAC of the agent that reported.
    pub mac: String,
    /// Item by item (absent when the agent could not get the plan).
    pub report: Option<ApplyReport>,
    /// Why there is no report.
    pub error: Option<String>,
}

impl From<store::ApplyStatus> for ApplyStatus {
    fn from(status: store::ApplyStatus) -> Self {
        let store::ApplyStatus {
            node,
            requested_at,
            last,
        } = status;
        ApplyStatus {
            node,
            requested_at,
            last: last.map(
                |store::LastApply {
                     received_at,
                     mac,
                     report,
                     error,
                 }| LastApply {
                    received_at,
                    mac,
                    report,
                    error,
                },
            ),
        }
    }
}

/// `PUT /api/v1/nodes/{name}/maintenance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MaintenanceRequest {
    pub maintenance: bool,
    /// Why (shown in `node show` and recorded in the history).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/v1/nodes/{name}/events`: a manual lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventRequest {
    /// One of inspect, deploy, undeploy, clean, abort.
    pub event: Event,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /api/v1/nodes/{name}/power`: a power change through the node's BMC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PowerRequest {
    /// on, graceful_off, force_off, reset or cycle.
    pub action: PowerAction,
}

/// The power state is the core's own type: it already serializes as the API
/// always answered (`on`, `off`, `powering_on`, `powering_off`).
pub(crate) use crate::power::PowerState;

/// `GET|POST /api/v1/nodes/{name}/power`: the node's power as its BMC reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct PowerReport {
    pub node: String,
    pub bmc: String,
    /// The change asked for, if any (none: a reading only).
    pub action: Option<PowerAction>,
    /// The power state read from the BMC after the action was accepted (a change can take
    /// a while to land).
    pub power_state: PowerState,
}

impl From<app::PowerReport> for PowerReport {
    fn from(report: app::PowerReport) -> Self {
        let app::PowerReport {
            node,
            bmc,
            action,
            power_state,
        } = report;
        PowerReport {
            node,
            bmc,
            action,
            power_state,
        }
    }
}

/// `GET /api/v1/site`: the active site and the last refused change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct SiteStatus {
    /// The site directory.
    pub dir: String,
    /// When the active site was loaded.
    pub loaded_at: DateTime<Utc>,
    /// One-line summary of the active site.
    pub summary: String,
    /// Site nodes no longer in nodes.yaml, kept until deleted.
    pub missing_nodes: Vec<String>,
    /// The last refused change, if it came after the active site was loaded.
    pub refused: Option<RefusedReload>,
}

/// The last site change that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct RefusedReload {
    pub at: DateTime<Utc>,
    /// `file:line:column: message`, one per problem.
    pub errors: Vec<String>,
}

impl From<app::SiteStatus> for SiteStatus {
    fn from(status: app::SiteStatus) -> Self {
        let app::SiteStatus {
            dir,
            loaded_at,
            summary,
            missing_nodes,
            refused,
        } = status;
        SiteStatus {
            dir: dir.display().to_string(),
            loaded_at,
            summary,
            missing_nodes,
            refused: refused.map(|app::RefusedReload { at, errors }| RefusedReload { at, errors }),
        }
    }
}

/// `POST /api/v1/site/reload`: what the reload changed in the node store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct ReloadReport {
    /// Nodes enrolled by this reload.
    pub added: Vec<String>,
    /// Nodes whose configuration changed.
    pub updated: Vec<String>,
    /// Site nodes no longer in nodes.yaml (kept, flagged `in_site: false`).
    pub missing: Vec<String>,
    pub unchanged: usize,
}

impl From<store::SyncReport> for ReloadReport {
    fn from(report: store::SyncReport) -> Self {
        let store::SyncReport {
            added,
            updated,
            missing,
            unchanged,
        } = report;
        ReloadReport {
            added,
            updated,
            missing,
            unchanged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn record() -> store::NodeRecord {
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 8, 0, 0).unwrap();
        store::NodeRecord {
            name: "node-001".into(),
            source: store::Source::Site,
            in_site: true,
            config: store::NodeConfig {
                bmc_url: Some("redfish://10.0.0.5".into()),
                bmc_username: Some("admin".into()),
                bmc_credential: Some("env:PW".into()),
                bmc_tls: crate::site::BmcTls::Verify,
                boot_mac: Some("52:54:00:00:00:01".into()),
                serial: Some("SN1".into()),
                profile_override: None,
                role_override: Some("compute".into()),
            },
            state: State::Failed,
            failed_from: Some(State::Inspecting),
            generation: 7,
            maintenance: true,
            maintenance_reason: Some("swap DIMM".into()),
            last_error: Some("timed out".into()),
            matched_profile: None,
            plan: None,
            plan_error: Some("no profile matched".into()),
            has_inventory: false,
            deadline: None,
            created_at: at,
            updated_at: at,
            state_since: at + chrono::Duration::microseconds(1500),
        }
    }

    /// The view is the JSON the API sent before views existed: the store row
    /// serialized, with its configuration flattened.
    #[test]
    fn a_node_serializes_as_its_row_did() {
        let record = record();
        let row = serde_json::to_value(&record).unwrap();
        let view = serde_json::to_value(Node::from(&record)).unwrap();
        assert_eq!(view, row);
        let back: Node = serde_json::from_value(view).unwrap();
        assert_eq!(back, Node::from(record));
    }

    /// The typed TLS policy reaches the JSON as the text the store holds.
    #[test]
    fn a_node_shows_its_bmc_tls_as_before() {
        use crate::site::BmcTls;
        for (tls, shown) in [
            (BmcTls::Verify, serde_json::Value::Null),
            (BmcTls::Insecure, "insecure".into()),
            (
                BmcTls::CaFile("/etc/site/ca.pem".into()),
                "ca:/etc/site/ca.pem".into(),
            ),
        ] {
            let mut record = record();
            record.config.bmc_tls = tls;
            let row = serde_json::to_value(&record).unwrap();
            let view = serde_json::to_value(Node::from(&record)).unwrap();
            assert_eq!(view, row);
            assert_eq!(view["bmc_tls"], shown);
        }
    }

    #[test]
    fn history_progress_inventory_apply_and_reload_serialize_as_before() {
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 8, 0, 0).unwrap();
        let entry = store::HistoryEntry {
            at,
            from: Some(State::Enrolled),
            to: State::Inspecting,
            event: "inspect".into(),
            reason: None,
            generation: 2,
        };
        assert_eq!(
            serde_json::to_value(HistoryEntry::from(entry.clone())).unwrap(),
            serde_json::to_value(&entry).unwrap()
        );
        let progress = store::jobs::NodeProgress {
            steps: vec![store::jobs::ProgressStep {
                step: "dhcp".into(),
                at,
            }],
            bmc_job: Some(store::jobs::QueuedBmcJob {
                actions: "power on/reset".into(),
                attempts: 2,
                next_attempt_at: at,
                last_error: Some("BMC unreachable".into()),
            }),
        };
        assert_eq!(
            serde_json::to_value(Progress::from(progress.clone())).unwrap(),
            serde_json::to_value(&progress).unwrap()
        );
        let apply = store::ApplyStatus {
            node: "node-001".into(),
            requested_at: Some(at),
            last: Some(store::LastApply {
                received_at: at,
                mac: "52:54:00:00:00:01".into(),
                report: None,
                error: Some("the plan is not a host plan".into()),
            }),
        };
        assert_eq!(
            serde_json::to_value(ApplyStatus::from(apply.clone())).unwrap(),
            serde_json::to_value(&apply).unwrap()
        );
        let report = store::SyncReport {
            added: vec!["node-004".into()],
            updated: vec![],
            missing: vec!["node-002".into()],
            unchanged: 3,
        };
        assert_eq!(
            serde_json::to_value(ReloadReport::from(report.clone())).unwrap(),
            serde_json::to_value(&report).unwrap()
        );
    }

    #[test]
    fn power_and_site_status_serialize_as_before() {
        use crate::bmc::PowerState as Bmc;
        for state in [Bmc::On, Bmc::Off, Bmc::PoweringOn, Bmc::PoweringOff] {
            let report = app::PowerReport {
                node: "node-001".into(),
                bmc: "redfish://10.0.0.5".into(),
                action: Some(PowerAction::Cycle),
                power_state: state,
            };
            let view = PowerReport::from(report.clone());
            assert_eq!(view.power_state.to_string(), state.to_string());
            assert_eq!(
                serde_json::to_value(&view).unwrap(),
                serde_json::to_value(&report).unwrap()
            );
        }
        let status = app::SiteStatus {
            dir: "/srv/site".into(),
            loaded_at: Utc.with_ymd_and_hms(2026, 12, 2, 8, 0, 0).unwrap(),
            summary: "3 nodes".into(),
            missing_nodes: vec!["node-002".into()],
            refused: Some(app::RefusedReload {
                at: Utc.with_ymd_and_hms(2026, 12, 2, 9, 0, 0).unwrap(),
                errors: vec!["nodes.yaml:1:1: bad".into()],
            }),
        };
        assert_eq!(
            serde_json::to_value(SiteStatus::from(status.clone())).unwrap(),
            serde_json::to_value(&status).unwrap()
        );
    }

    #[test]
    fn requests_name_an_unknown_field() {
        let err = serde_json::from_str::<MaintenanceRequest>(r#"{"maintenance":true,"reson":"x"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `reson`"), "{err}");
        let err = serde_json::from_str::<EventRequest>(r#"{"event":"inspect","force":true}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `force`"), "{err}");
        let err = serde_json::from_str::<PowerRequest>(r#"{"action":"on","now":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `now`"), "{err}");
    }
}
