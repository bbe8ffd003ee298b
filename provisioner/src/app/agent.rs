//! The daemon's side of the agent protocol: checks a report against its
//! per-boot token, finds (or, with discovery, enrolls) the node, stores what
//! the agent sent, fires the lifecycle events and answers the next command.
//! The decisions are [`crate::inspection`]'s; this file does the I/O.

use chrono::Utc;
use model::agent::{AgentState, AppliedReport, Command, Heartbeat, InventoryReport};
use model::net::Mac;
use model::plan::HostPlan;
use tracing::{info, warn};

use super::{App, AppError};
use crate::inspection;
use crate::lifecycle::Event;
use crate::store::{
    ApplyStatus, BootSession, EnrollSpec, NodeConfig, NodeRecord, Source, StoreError,
};

impl App {
    /// The boot a bearer token was issued for, if the token is current.
    pub(crate) async fn agent_session(&self, token: &str) -> Result<BootSession, AppError> {
        self.store
            .verify_boot_token(token)
            .await?
            .ok_or(AppError::AgentToken(
                "unknown or superseded boot token (each iPXE script issues a new one)",
            ))
    }

    /// Checks that a message's MAC is the one the token was issued for.
    pub(super) fn check_mac(session: &BootSession, mac: &str) -> Result<Mac, AppError> {
        let reported =
            Mac::parse_nic(mac).map_err(|e| AppError::BadRequest(format!("field `mac`: {e}")))?;
        if reported != session.mac {
            return Err(AppError::AgentToken(
                "the boot token was issued for another MAC than the one reported",
            ));
        }
        Ok(reported)
    }

    /// The node a boot belongs to: the one named when the token was issued,
    /// else the one whose boot MAC it is.
    async fn node_of(&self, session: &BootSession) -> Result<Option<NodeRecord>, AppError> {
        if let Some(name) = &session.node {
            match self.store.node(name).await {
                Ok(node) => return Ok(Some(node)),
                Err(StoreError::NotFound(_)) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(self.store.node_by_mac(&session.mac.to_string()).await?)
    }

    /// Enrolls an unknown machine whose agent reported, when the site allows it.
    async fn discover(&self, mac: Mac, report: &InventoryReport) -> Result<NodeRecord, AppError> {
        if !self.site().config.discovery.enabled {
            warn!(
                %mac,
                "inventory from an unknown machine refused: discovery is off; list its boot MAC in \
                 nodes.yaml or set `discovery: {{enabled: true}}` in site.yaml"
            );
            return Err(AppError::DiscoveryOff(mac.to_string()));
        }
        let serial = report.inventory.system.serial.clone();
        let spec = |name: String| EnrollSpec {
            name,
            config: NodeConfig {
                boot_mac: Some(mac.to_string()),
                serial: serial.clone(),
                ..NodeConfig::default()
            },
        };
        let now = Utc::now();
        let preferred = inspection::discovered_name(mac, serial.as_deref());
        let node = match self
            .store
            .enroll(&spec(preferred.clone()), Source::Discovered, now)
            .await
        {
            Err(StoreError::Duplicate(_)) => {
                let by_mac = inspection::discovered_name_by_mac(mac);
                warn!(%mac, taken = %preferred, name = %by_mac, "discovered machine's serial name is taken; naming it by MAC");
                self.store
                    .enroll(&spec(by_mac), Source::Discovered, now)
                    .await?
            }
            other => other?,
        };
        info!(node = %node.name, %mac, serial = ?serial, "discovered a new machine; enrolled it");
        Ok(node)
    }

    /// The known node of a boot whose agent reports on a job it was given.
    pub(super) async fn known_node(
        &self,
        session: &BootSession,
        mac: Mac,
    ) -> Result<NodeRecord, AppError> {
        self.node_of(session).await?.ok_or_else(|| {
            AppError::BadRequest(format!(
                "machine {mac} is not a known node: nothing was asked of it"
            ))
        })
    }

    /// The command answering the agent of `node` booted from `mac` (this
    /// boot: `session`), which reached us at `base_url`: a deploy or clean
    /// order when [`inspection::agent_work`] says so, else
    /// [`inspection::next_command`].
    pub(super) async fn agent_answer(
        &self,
        node: &NodeRecord,
        session: &BootSession,
        mac: Mac,
        base_url: &str,
    ) -> Result<Command, AppError> {
        let reported_this_boot = self.reported_this_boot(&node.name, session, mac).await?;
        let agent_state = self
            .store
            .heartbeat(&mac.to_string())
            .await?
            .filter(|beat| beat.at >= session.issued_at)
            .and_then(|beat| {
                serde_json::from_value::<AgentState>(serde_json::Value::String(beat.state)).ok()
            });
        let deploy = self.store.deploy_status(&node.name).await?;
        let written = deploy.as_ref().is_some_and(|d| d.written_at.is_some());
        // Only a boot that began after the node entered its state (the reset
        // of the deploy or clean) gets an order: an agent still up from before
        // would be reset under its work.
        let booted_for_it = reported_this_boot && session.issued_at >= node.state_since;
        match inspection::agent_work(node.status(), booted_for_it, agent_state, written) {
            Some(inspection::AgentWork::Deploy) => self.deploy_order(node, session, base_url).await,
            Some(inspection::AgentWork::Clean) => Ok(Command::Clean {
                mode: deploy
                    .and_then(|d| d.erase)
                    .unwrap_or(model::deploy::EraseMode::Metadata),
            }),
            None => {
                let apply_requested = self.apply_requested(&node.name).await?;
                Ok(inspection::next_command(
                    node.status(),
                    reported_this_boot,
                    &self.site().config.lifecycle,
                    apply_requested,
                ))
            }
        }
    }

    /// `POST /api/agent/v1/inventory`.
    pub(crate) async fn agent_inventory(
        &self,
        session: &BootSession,
        report: &InventoryReport,
        base_url: &str,
    ) -> Result<Command, AppError> {
        let mac = Self::check_mac(session, &report.mac)?;
        let node = match self.node_of(session).await? {
            Some(node) => node,
            None => self.discover(mac, report).await?,
        };
        self.store
            .store_inventory(&node.name, &mac.to_string(), &report.inventory, Utc::now())
            .await?;
        info!(node = %node.name, %mac, "inventory stored");
        let mut node = node;
        for event in inspection::events_for_inventory(node.status()) {
            let reason = match event {
                Event::Inspect => {
                    format!("its agent (boot MAC {mac}) reported without an inspect request")
                }
                _ => format!("inventory from the agent booted from {mac}"),
            };
            // The machine is already up and inspecting: record `inspect` without
            // resetting it through its BMC.
            node = if event == Event::Inspect {
                self.fire_recorded(&node.name, event, Some(reason)).await?
            } else {
                self.fire(&node.name, event, Some(reason)).await?
            };
        }
        self.agent_answer(&node, session, mac, base_url).await
    }

    /// Whether the operator asked to apply the node's plan and no report came since.
    async fn apply_requested(&self, name: &str) -> Result<bool, AppError> {
        Ok(self.store.apply_status(name).await?.requested_at.is_some())
    }

    /// `GET /api/agent/v1/plan`: the host plan of the boot's node.
    pub(crate) async fn agent_plan(&self, session: &BootSession) -> Result<HostPlan, AppError> {
        let node = self.node_of(session).await?.ok_or_else(|| {
            AppError::NoPlan(format!(
                "machine {} is not a known node: it has no plan",
                session.mac
            ))
        })?;
        match node.plan {
            Some(plan) => Ok(plan),
            None => Err(AppError::NoPlan(format!(
                "node `{}` has no host plan ({})",
                node.name,
                node.plan_error
                    .as_deref()
                    .unwrap_or("it has not been inspected and matched yet")
            ))),
        }
    }

    /// `POST /api/agent/v1/applied`: stores what applying the plan did; when it
    /// changed the machine, the answer asks for a fresh inventory.
    pub(crate) async fn agent_applied(
        &self,
        session: &BootSession,
        applied: &AppliedReport,
    ) -> Result<Command, AppError> {
        let mac = Self::check_mac(session, &applied.mac)?;
        let node = self.known_node(session, mac).await?;
        self.store
            .store_applied(&node.name, applied, Utc::now())
            .await?;
        match (&applied.report, &applied.error) {
            (Some(report), _) if report.failed() => {
                warn!(node = %node.name, %mac, summary = %report.summary(), "host plan applied with failures")
            }
            (Some(report), _) => {
                info!(node = %node.name, %mac, summary = %report.summary(), "host plan applied")
            }
            (None, error) => {
                warn!(node = %node.name, %mac, error = ?error, "the agent could not apply the host plan")
            }
        }
        let reported_this_boot = self.reported_this_boot(&node.name, session, mac).await?;
        let changed = applied
            .report
            .as_ref()
            .is_some_and(|r| r.count(model::apply::Status::Changed) > 0);
        Ok(inspection::after_apply(
            node.status(),
            reported_this_boot,
            &self.site().config.lifecycle,
            changed,
        ))
    }

    /// Whether the node's stored inventory came from this boot.
    async fn reported_this_boot(
        &self,
        name: &str,
        session: &BootSession,
        mac: Mac,
    ) -> Result<bool, AppError> {
        Ok(self.store.inventory(name).await?.is_some_and(|inv| {
            inv.received_at >= session.issued_at && inv.mac.as_deref() == Some(&*mac.to_string())
        }))
    }

    /// `POST /api/v1/nodes/{name}/apply`: asks the node's running agent to
    /// apply its host plan (answered with the next heartbeat). Refused, saying
    /// what to do, unless the node is available with a plan and its agent up.
    pub(crate) async fn request_apply(&self, name: &str) -> Result<ApplyStatus, AppError> {
        let node = self.store.node(name).await?;
        let now = Utc::now();
        let inventory = self.store.inventory(name).await?;
        let mac = inventory
            .as_ref()
            .and_then(|inv| inv.mac.clone())
            .or_else(|| node.config.boot_mac.clone());
        let heard = match &mac {
            Some(mac) => self.store.heartbeat(mac).await?.map(|beat| beat.at),
            None => None,
        };
        let inventory_at = inventory.map(|inv| inv.received_at);
        let last_heard = heard.max(inventory_at);
        if let Some(why) = inspection::apply_refusal(
            name,
            node.status(),
            node.plan.is_some(),
            node.plan_error.as_deref(),
            last_heard,
            now,
            self.site().config.lifecycle.heartbeat_interval_s,
        ) {
            return Err(AppError::ApplyRefused(why));
        }
        let status = self.store.request_apply(name, now).await?;
        info!(node = %name, "apply of the host plan requested; the agent gets it with its next heartbeat");
        Ok(status)
    }

    /// `POST /api/agent/v1/heartbeat`.
    pub(crate) async fn agent_heartbeat(
        &self,
        session: &BootSession,
        beat: &Heartbeat,
        base_url: &str,
    ) -> Result<Command, AppError> {
        let mac = Self::check_mac(session, &beat.mac)?;
        let node = self.node_of(session).await?;
        self.store
            .record_heartbeat(node.as_ref().map(|n| n.name.as_str()), beat, Utc::now())
            .await?;
        if let Some(error) = &beat.last_error {
            warn!(node = ?node.as_ref().map(|n| &n.name), %mac, %error, "agent reports an error");
        }
        let Some(node) = node else {
            // Unknown machine: with discovery it should send its inventory;
            // without, it waits (its inventory would be refused).
            return Ok(if self.site().config.discovery.enabled {
                Command::Inspect
            } else {
                Command::Wait {
                    interval_s: 6 * Command::DEFAULT_INTERVAL_S,
                }
            });
        };
        if let Some(progress) = &beat.progress {
            self.store
                .record_deploy_progress(&node.name, progress, Utc::now())
                .await?;
        }
        self.agent_answer(&node, session, mac, base_url).await
    }
}
