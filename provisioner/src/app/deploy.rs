//! Deploying host images and cleaning disks, the daemon's side: the
//! operator's `deploy` and `undeploy` (checked by
//! [`crate::inspection::deploy_refusal`], then fired), the deploy order for a
//! node's ramdisk agent (a fresh node credential, the node config sealed with
//! the config-signing key), the agent's `deployed` and `cleaned` reports, and
//! the installed host's reports (`/api/host/v1/report`, node credential).
//!
//! Invariants: every state change goes through [`App::fire`]; the node
//! credential leaves the daemon only inside the sealed config of an order and
//! is stored only as its SHA-256; a host report moves a `deploying` node to
//! `active` only when it booted exactly the version and root hash ordered.

use base64::Engine as _;
use chrono::Utc;
use model::agent::Command;
use model::deploy::{
    CleanedReport, DeployOrder, DeployedReport, EraseMode, HostCommand, HostReport, NodeConfig,
};
use model::host::HostManifest;
use tracing::{info, warn};

use super::{App, AppError};
use crate::inspection;
use crate::lifecycle::{self, Event, State};
use crate::site::{ImageSource, Site};
use crate::store::{BootSession, NodeRecord};

/// The image a deploy of `node` writes: `requested`, else the node's
/// `image:` in nodes.yaml, else its matched profile's `image:`.
fn deploy_image(site: &Site, node: &NodeRecord, requested: Option<String>) -> Option<String> {
    requested
        .or_else(|| site.node(&node.name).and_then(|n| n.image.clone()))
        .or_else(|| {
            let profile = node.matched_profile.as_deref()?;
            site.profiles
                .iter()
                .find(|p| p.name == profile)
                .and_then(|p| p.image.clone())
        })
}

/// The manifest of catalog image `name`, if it is a host image.
fn host_manifest<'a>(site: &'a Site, name: &str) -> Option<&'a HostManifest> {
    match &site.image(name)?.source {
        ImageSource::Host { manifest, .. } => Some(manifest),
        _ => None,
    }
}

fn mib(bytes: u64) -> u64 {
    bytes / (1 << 20)
}

impl App {
    /// `POST /api/v1/nodes/{name}/deploy` (and the `deploy` event): checks
    /// that the node can take the image, records it, fires `deploy`.
    pub(crate) async fn deploy(
        &self,
        name: &str,
        image: Option<String>,
    ) -> Result<NodeRecord, AppError> {
        let node = self.store.node(name).await?;
        let site = self.site();
        let image = deploy_image(&site, &node, image);
        let manifest = image.as_deref().and_then(|i| host_manifest(&site, i));
        let is_host = image
            .as_deref()
            .and_then(|i| site.image(i))
            .map(|_| manifest.is_some());
        let firmware = self
            .store
            .inventory(name)
            .await?
            .map(|stored| stored.inventory.system.firmware);
        // A refused transition says so before anything is recorded.
        lifecycle::transition(
            node.status(),
            Event::Deploy,
            &site.config.lifecycle.policy(),
        )?;
        if let Some(why) = inspection::deploy_refusal(
            name,
            node.plan.is_some(),
            node.plan_error.as_deref(),
            image.as_deref(),
            is_host,
            firmware,
        ) {
            return Err(AppError::DeployRefused(why));
        }
        let (Some(image), Some(manifest)) = (image, manifest) else {
            return Err(AppError::Internal(format!(
                "node `{name}`: deploy check passed without a host image"
            )));
        };
        let root_hash = &manifest.root.verity.root_hash;
        self.store
            .request_deploy(name, &image, &manifest.version, root_hash, Utc::now())
            .await?;
        self.fire(
            name,
            Event::Deploy,
            Some(format!(
                "deploy of image {image} version {} requested",
                manifest.version
            )),
        )
        .await
    }

    /// `POST /api/v1/nodes/{name}/undeploy`: an active node is undeployed,
    /// an available or failed one cleaned; the agent erases with `erase`.
    pub(crate) async fn undeploy(
        &self,
        name: &str,
        erase: EraseMode,
    ) -> Result<NodeRecord, AppError> {
        let node = self.store.node(name).await?;
        let event = if node.state == State::Active {
            Event::Undeploy
        } else {
            Event::Clean
        };
        self.start_clean(name, event, erase, None).await
    }

    /// Fires `undeploy` or `clean` (`event`) after recording how much the
    /// agent erases; `reason` defaults to the event and the mode.
    pub(crate) async fn start_clean(
        &self,
        name: &str,
        event: Event,
        erase: EraseMode,
        reason: Option<String>,
    ) -> Result<NodeRecord, AppError> {
        let node = self.store.node(name).await?;
        lifecycle::transition(node.status(), event, &self.site().config.lifecycle.policy())?;
        self.store.request_clean(name, erase, Utc::now()).await?;
        let mode = match erase {
            EraseMode::Metadata => "metadata",
            EraseMode::Full => "full",
        };
        let reason = reason.map_or_else(
            || format!("{event} requested (erase: {mode})"),
            |r| format!("{r} (erase: {mode})"),
        );
        self.fire(name, event, Some(reason)).await
    }

    /// A new deploy order for the agent of deploying `node`, which reached
    /// us at `base_url`. When the order cannot be made (the image left the
    /// catalog, the plan is gone), the node fails saying why and the agent waits.
    pub(super) async fn deploy_order(
        &self,
        node: &NodeRecord,
        session: &BootSession,
        base_url: &str,
    ) -> Result<Command, AppError> {
        let site = self.site();
        let wait = Command::Wait {
            interval_s: site.config.lifecycle.heartbeat_interval_s,
        };
        let image = self
            .store
            .deploy_status(&node.name)
            .await?
            .and_then(|d| d.image);
        let manifest = image.as_deref().and_then(|i| host_manifest(&site, i));
        let (Some(image), Some(manifest), Some(plan)) = (image.clone(), manifest, &node.plan)
        else {
            let why = match (&image, &node.plan) {
                (_, None) => "the node has no host plan any more".to_owned(),
                (None, _) => "no image was recorded for this deploy".to_owned(),
                (Some(image), _) => {
                    format!("image `{image}` is no longer a host image in site.yaml")
                }
            };
            warn!(node = %node.name, %why, "deploy order not issued");
            self.fire(
                &node.name,
                Event::Error,
                Some(format!(
                    "deploy order not issued: {why}; fix the site and deploy again"
                )),
            )
            .await?;
            return Ok(wait);
        };
        let root_hash = manifest.root.verity.root_hash.clone();
        let issued = self
            .store
            .issue_deploy_order(&node.name, &manifest.version, &root_hash, Utc::now())
            .await?;
        let config = NodeConfig {
            format: 1,
            node: node.name.clone(),
            boot_mac: node
                .config
                .boot_mac
                .clone()
                .unwrap_or_else(|| session.mac.to_string()),
            provisioner_url: base_url.to_owned(),
            credential: issued.credential,
            image: image.clone(),
            version: manifest.version.clone(),
            root_hash: root_hash.clone(),
            plan: plan.clone(),
        };
        let sealed = model::deploy::seal(&config, issued.generation, &self.signing_key);
        let disk = &manifest.disk;
        info!(node = %node.name, %image, version = %manifest.version, generation = issued.generation, "deploy order issued");
        Ok(Command::Deploy(Box::new(DeployOrder {
            url: format!("{base_url}/images/{image}/{}", disk.compressed.file),
            image,
            version: manifest.version.clone(),
            compressed_size: disk.compressed.size,
            compressed_sha256: disk.compressed.sha256.clone(),
            raw_size: disk.raw_size,
            raw_sha256: disk.raw_sha256.clone(),
            root_hash,
            root_disk: plan.root_disk.clone(),
            config: base64::engine::general_purpose::STANDARD.encode(sealed),
        })))
    }

    /// `POST /api/agent/v1/deployed`: the image is written (the node boots it
    /// from disk: `image_written`) or the deploy failed (`error`, saying at
    /// which step).
    pub(crate) async fn agent_deployed(
        &self,
        session: &BootSession,
        report: &DeployedReport,
        base_url: &str,
    ) -> Result<Command, AppError> {
        let mac = Self::check_mac(session, &report.mac)?;
        let node = self.known_node(session, mac).await?;
        if node.state != State::Deploying {
            warn!(node = %node.name, state = %node.state, "deploy report for a node that is not deploying; ignored");
            return self.agent_answer(&node, session, mac, base_url).await;
        }
        let node = match &report.error {
            Some(error) => {
                let step = report.step.as_deref().unwrap_or("unknown");
                warn!(node = %node.name, %mac, %step, %error, "deploy failed");
                self.fire(
                    &node.name,
                    Event::Error,
                    Some(format!("deploy failed at step {step}: {error}")),
                )
                .await?
            }
            None => {
                let deploy = self.store.deploy_status(&node.name).await?;
                let (image, version) = deploy
                    .map(|d| (d.image.unwrap_or_default(), d.version.unwrap_or_default()))
                    .unwrap_or_default();
                let what = format!(
                    "image {image} {version} written to {} ({} MiB in {} s)",
                    report.disk.as_deref().unwrap_or("the root disk"),
                    mib(report.written_bytes),
                    report.elapsed_ms / 1000
                );
                info!(node = %node.name, %mac, %what, "image written; booting it from disk");
                self.store
                    .record_written(&node.name, &what, Utc::now())
                    .await?;
                self.fire(&node.name, Event::ImageWritten, Some(what))
                    .await?
            }
        };
        self.agent_answer(&node, session, mac, base_url).await
    }

    /// `POST /api/agent/v1/cleaned`: the disks are erased (`clean_complete`)
    /// or the clean failed (`error`).
    pub(crate) async fn agent_cleaned(
        &self,
        session: &BootSession,
        report: &CleanedReport,
        base_url: &str,
    ) -> Result<Command, AppError> {
        let mac = Self::check_mac(session, &report.mac)?;
        let node = self.known_node(session, mac).await?;
        if node.state != State::Cleaning {
            warn!(node = %node.name, state = %node.state, "clean report for a node that is not cleaning; ignored");
            return self.agent_answer(&node, session, mac, base_url).await;
        }
        let mode = match report.mode {
            EraseMode::Metadata => "metadata",
            EraseMode::Full => "full",
        };
        let node = match &report.error {
            Some(error) => {
                warn!(node = %node.name, %mac, %error, "clean failed");
                self.fire(
                    &node.name,
                    Event::Error,
                    Some(format!("clean ({mode}) failed: {error}")),
                )
                .await?
            }
            None => {
                let disks = if report.disks.is_empty() {
                    "no disks".to_owned()
                } else {
                    report.disks.join(", ")
                };
                self.fire(
                    &node.name,
                    Event::CleanComplete,
                    Some(format!("erased {disks} ({mode})")),
                )
                .await?
            }
        };
        self.agent_answer(&node, session, mac, base_url).await
    }

    /// The node an installed host is, from its bearer credential: the node
    /// its report names (`claimed`) when that node's current credential
    /// hashes the same (compared in constant time), else (a report that did
    /// not parse) the node whose credential it is.
    pub(crate) async fn host_node(
        &self,
        credential: &str,
        claimed: Option<&str>,
    ) -> Result<String, AppError> {
        const UNKNOWN: &str = "unknown or revoked node credential";
        let digest = crate::store::credential_digest(credential);
        match claimed {
            Some(name) => {
                let stored = match self.store.credential_sha256(name).await {
                    Ok(stored) => stored,
                    Err(crate::store::StoreError::NotFound(_)) => None,
                    Err(err) => return Err(err.into()),
                };
                match stored {
                    Some(stored) if super::constant_time_eq(&stored, &digest) => {
                        Ok(name.to_owned())
                    }
                    _ => Err(AppError::HostCredential(UNKNOWN)),
                }
            }
            None => self
                .store
                .node_of_credential(&digest)
                .await?
                .ok_or(AppError::HostCredential(UNKNOWN)),
        }
    }

    /// `POST /api/host/v1/report`: stores the report; a deploying node
    /// becomes `active` when the host booted what was deployed and applied
    /// its plan, and fails saying what differs otherwise.
    pub(crate) async fn host_report(
        &self,
        name: &str,
        report: &HostReport,
    ) -> Result<HostCommand, AppError> {
        let interval_s = self.site().config.lifecycle.heartbeat_interval_s;
        self.store
            .record_host_report(name, report, Utc::now())
            .await?;
        let node = self.store.node(name).await?;
        let slot = report.slot.letter();
        info!(node = %name, version = %report.version, %slot, root = %report.root_hash, "host report");
        if node.state == State::Deploying && !node.maintenance {
            let deploy = self.store.deploy_status(name).await?.unwrap_or_default();
            let version = deploy.version.unwrap_or_default();
            let root_hash = deploy.root_hash.unwrap_or_default();
            let apply_failed = match (&report.apply, &report.apply_error) {
                (_, Some(error)) => Some(error.clone()),
                (Some(apply), None) if apply.failed() => Some(apply.summary()),
                _ => None,
            };
            let (event, reason) = if report.version != version || report.root_hash != root_hash {
                (
                    Event::Error,
                    format!(
                        "the host booted version {} root {}, but {version} root {root_hash} was \
                         deployed",
                        report.version, report.root_hash
                    ),
                )
            } else if let Some(why) = apply_failed {
                (
                    Event::Error,
                    format!(
                        "the host booted version {} but applying its plan failed: {why}",
                        report.version
                    ),
                )
            } else {
                (
                    Event::DeployComplete,
                    format!(
                        "host booted version {} slot {slot} root {}",
                        report.version, report.root_hash
                    ),
                )
            };
            self.fire(name, event, Some(reason)).await?;
        }
        Ok(HostCommand::Wait { interval_s })
    }
}
