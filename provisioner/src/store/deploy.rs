//! Deploying host images (`node_deploy`, migration 0009): the image the
//! operator asked for, the last order's credential hash and config
//! generation, the agent's progress and report, the erase mode of a pending
//! clean, and the installed host's last report.
//!
//! Invariants: the node credential is stored only as its SHA-256 (like boot
//! tokens); the config generation only grows (a later order always seals a
//! higher generation, so the host's reader takes the newest slot).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use model::deploy::{DeployPhase, DeployProgress, EraseMode, HostReport};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;

use super::{Store, StoreError, parse_time, timestamp};

/// A node's deploy record (`node show`, the node view's `deploy`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub(crate) struct DeployStatus {
    /// The image of the last deploy asked for.
    pub image: Option<String>,
    /// Its version and verity root hash (of the manifest when last ordered).
    pub version: Option<String>,
    pub root_hash: Option<String>,
    pub requested_at: Option<DateTime<Utc>>,
    /// When the last order went to the node's agent.
    pub ordered_at: Option<DateTime<Utc>>,
    /// When the agent reported this deploy's image written, and what it said.
    pub written_at: Option<DateTime<Utc>>,
    pub written: Option<String>,
    /// The erase mode of the pending (or last) clean.
    pub erase: Option<EraseMode>,
    /// The agent's last progress report.
    pub progress: Option<StoredProgress>,
    /// The installed host's last report.
    pub host: Option<StoredHostReport>,
}

/// The agent's last deploy or clean progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub(crate) struct StoredProgress {
    pub phase: DeployPhase,
    pub done_bytes: u64,
    pub total_bytes: u64,
    /// When the agent first reported this phase.
    pub since: DateTime<Utc>,
    /// When it last reported.
    pub at: DateTime<Utc>,
}

/// The installed host's last report and when it came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub(crate) struct StoredHostReport {
    pub at: DateTime<Utc>,
    pub report: HostReport,
}

/// What a new deploy order is given: the node credential (only its hash is
/// stored) and the generation to seal the config with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IssuedOrder {
    pub credential: String,
    pub generation: u64,
}

/// Lowercase hex SHA-256 of a credential, as stored.
pub(crate) fn credential_digest(credential: &str) -> String {
    hex::encode(Sha256::digest(credential.trim().as_bytes()))
}

fn enum_text<T: Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn enum_parse<T: serde::de::DeserializeOwned>(
    name: &str,
    column: &'static str,
    text: String,
) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.clone())).map_err(|_| {
        StoreError::Corrupt {
            name: name.to_owned(),
            column,
            value: text,
        }
    })
}

const DEPLOY_COLUMNS: &str = "n.name, d.image, d.version, d.root_hash, d.requested_at, \
    d.ordered_at, d.written_at, d.written, d.erase, d.progress_phase, d.progress_done, \
    d.progress_total, d.progress_since, d.progress_at, d.host_report, d.host_report_at";

fn deploy_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<(String, DeployStatus), StoreError> {
    let name: String = row.try_get("name")?;
    let time = |column: &'static str| -> Result<Option<DateTime<Utc>>, StoreError> {
        let text: Option<String> = row.try_get(column)?;
        text.map(|t| parse_time(&name, column, &t)).transpose()
    };
    let erase: Option<String> = row.try_get("erase")?;
    let phase: Option<String> = row.try_get("progress_phase")?;
    let progress = match (phase, time("progress_since")?, time("progress_at")?) {
        (Some(phase), Some(since), Some(at)) => Some(StoredProgress {
            phase: enum_parse(&name, "node_deploy.progress_phase", phase)?,
            done_bytes: row
                .try_get::<Option<i64>, _>("progress_done")?
                .unwrap_or(0)
                .max(0) as u64,
            total_bytes: row
                .try_get::<Option<i64>, _>("progress_total")?
                .unwrap_or(0)
                .max(0) as u64,
            since,
            at,
        }),
        _ => None,
    };
    let report: Option<String> = row.try_get("host_report")?;
    let host = match (report, time("host_report_at")?) {
        (Some(json), Some(at)) => Some(StoredHostReport {
            at,
            report: serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                name: name.clone(),
                column: "node_deploy.host_report",
                value: e.to_string(),
            })?,
        }),
        _ => None,
    };
    let status = DeployStatus {
        image: row.try_get("image")?,
        version: row.try_get("version")?,
        root_hash: row.try_get("root_hash")?,
        requested_at: time("requested_at")?,
        ordered_at: time("ordered_at")?,
        written_at: time("written_at")?,
        written: row.try_get("written")?,
        erase: erase
            .map(|e| enum_parse(&name, "node_deploy.erase", e))
            .transpose()?,
        progress,
        host,
    };
    Ok((name, status))
}

impl Store {
    /// Records the operator's deploy of `image` (`version`, `root_hash` from
    /// its manifest): forgets the previous deploy's written report and progress.
    pub(crate) async fn request_deploy(
        &self,
        name: &str,
        image: &str,
        version: &str,
        root_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = self.node_id(name).await?;
        sqlx::query(
            "INSERT INTO node_deploy (node_id, image, version, root_hash, requested_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET image = excluded.image, \
             version = excluded.version, root_hash = excluded.root_hash, \
             requested_at = excluded.requested_at, ordered_at = NULL, written_at = NULL, \
             written = NULL, host_report = NULL, host_report_at = NULL, progress_phase = NULL, progress_done = NULL, \
             progress_total = NULL, progress_since = NULL, progress_at = NULL",
        )
        .bind(id)
        .bind(image)
        .bind(version)
        .bind(root_hash)
        .bind(timestamp(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Issues a deploy order: a fresh random node credential (256 bits, hex;
    /// only its hash is stored, replacing the previous one) and the next config
    /// generation, with the version and root hash the order carries.
    pub(crate) async fn issue_deploy_order(
        &self,
        name: &str,
        version: &str,
        root_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<IssuedOrder, StoreError> {
        let id = self.node_id(name).await?;
        let credential = hex::encode(rand::random::<[u8; 32]>());
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let generation: i64 = sqlx::query_scalar(
            "INSERT INTO node_deploy (node_id, version, root_hash, ordered_at, \
             credential_sha256, config_generation) VALUES (?, ?, ?, ?, ?, 1) \
             ON CONFLICT (node_id) DO UPDATE SET version = excluded.version, \
             root_hash = excluded.root_hash, ordered_at = excluded.ordered_at, \
             credential_sha256 = excluded.credential_sha256, \
             config_generation = node_deploy.config_generation + 1 \
             RETURNING config_generation",
        )
        .bind(id)
        .bind(version)
        .bind(root_hash)
        .bind(timestamp(now))
        .bind(credential_digest(&credential))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(IssuedOrder {
            credential,
            generation: generation.max(1) as u64,
        })
    }

    /// Records the agent's report that the image of this deploy is written.
    pub(crate) async fn record_written(
        &self,
        name: &str,
        what: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = self.node_id(name).await?;
        sqlx::query(
            "INSERT INTO node_deploy (node_id, written_at, written) VALUES (?, ?, ?) \
             ON CONFLICT (node_id) DO UPDATE SET written_at = excluded.written_at, \
             written = excluded.written",
        )
        .bind(id)
        .bind(timestamp(now))
        .bind(what)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the erase mode of a clean (undeploy), revokes the node
    /// credential (the erased host must not report any more) and forgets
    /// what was deployed and what the host reported.
    pub(crate) async fn request_clean(
        &self,
        name: &str,
        erase: EraseMode,
        _now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = self.node_id(name).await?;
        sqlx::query(
            "INSERT INTO node_deploy (node_id, erase) VALUES (?, ?) \
             ON CONFLICT (node_id) DO UPDATE SET erase = excluded.erase, \
             credential_sha256 = NULL, image = NULL, version = NULL, root_hash = NULL, \
             written_at = NULL, written = NULL, host_report = NULL, host_report_at = NULL, \
             progress_phase = NULL, progress_done = NULL, progress_total = NULL, \
             progress_since = NULL, progress_at = NULL",
        )
        .bind(id)
        .bind(enum_text(erase))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records an agent's deploy or clean progress (from a heartbeat).
    pub(crate) async fn record_deploy_progress(
        &self,
        name: &str,
        progress: &DeployProgress,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = self.node_id(name).await?;
        let now_s = timestamp(now);
        sqlx::query(
            "INSERT INTO node_deploy (node_id, progress_phase, progress_done, progress_total, \
             progress_since, progress_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (node_id) DO UPDATE SET \
             progress_since = CASE WHEN node_deploy.progress_phase IS excluded.progress_phase \
             THEN node_deploy.progress_since ELSE excluded.progress_since END, \
             progress_phase = excluded.progress_phase, progress_done = excluded.progress_done, \
             progress_total = excluded.progress_total, progress_at = excluded.progress_at",
        )
        .bind(id)
        .bind(enum_text(progress.phase))
        .bind(i64::try_from(progress.done_bytes).unwrap_or(i64::MAX))
        .bind(i64::try_from(progress.total_bytes).unwrap_or(i64::MAX))
        .bind(&now_s)
        .bind(&now_s)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores the installed host's last report.
    pub(crate) async fn record_host_report(
        &self,
        name: &str,
        report: &HostReport,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = self.node_id(name).await?;
        let json = serde_json::to_string(report).expect("host reports serialize");
        sqlx::query(
            "INSERT INTO node_deploy (node_id, host_report, host_report_at) VALUES (?, ?, ?) \
             ON CONFLICT (node_id) DO UPDATE SET host_report = excluded.host_report, \
             host_report_at = excluded.host_report_at",
        )
        .bind(id)
        .bind(json)
        .bind(timestamp(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stored credential hash of node `name` (`None`: no current credential).
    pub(crate) async fn credential_sha256(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT d.credential_sha256 FROM node_deploy d JOIN nodes n ON n.id = d.node_id \
             WHERE n.name = ?",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }

    /// The node whose current credential hashes to `digest`, if any.
    pub(crate) async fn node_of_credential(
        &self,
        digest: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT n.name FROM node_deploy d JOIN nodes n ON n.id = d.node_id \
             WHERE d.credential_sha256 = ?",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A node's deploy record (`None`: never deployed nor cleaned).
    pub(crate) async fn deploy_status(
        &self,
        name: &str,
    ) -> Result<Option<DeployStatus>, StoreError> {
        self.node_id(name).await?;
        let row = sqlx::query(&format!(
            "SELECT {DEPLOY_COLUMNS} FROM node_deploy d JOIN nodes n ON n.id = d.node_id \
             WHERE n.name = ?"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(deploy_from_row)
            .transpose()
            .map(|r| r.map(|(_, status)| status))
    }

    /// Every node's deploy record, by node name (for the node list).
    pub(crate) async fn deploy_statuses(
        &self,
    ) -> Result<HashMap<String, DeployStatus>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOY_COLUMNS} FROM node_deploy d JOIN nodes n ON n.id = d.node_id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(deploy_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EnrollSpec, NodeConfig, Source};

    async fn store_with_node() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let spec = EnrollSpec {
            name: "n1".into(),
            config: NodeConfig::default(),
        };
        store.enroll(&spec, Source::Api, Utc::now()).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn orders_get_fresh_credentials_stored_as_hashes_and_growing_generations() {
        let (_dir, store) = store_with_node().await;
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        store
            .request_deploy("n1", "host", "1", "ab", now)
            .await
            .unwrap();
        let first = store
            .issue_deploy_order("n1", "1", "ab", now)
            .await
            .unwrap();
        let second = store
            .issue_deploy_order("n1", "2", "cd", now)
            .await
            .unwrap();
        assert_eq!((first.generation, second.generation), (1, 2));
        assert_ne!(first.credential, second.credential);
        assert_eq!(second.credential.len(), 64);
        let stored = store.credential_sha256("n1").await.unwrap().unwrap();
        assert_eq!(stored, credential_digest(&second.credential));
        assert_ne!(stored, second.credential);
        assert_eq!(
            store.node_of_credential(&stored).await.unwrap().as_deref(),
            Some("n1")
        );
        assert_eq!(
            store
                .node_of_credential(&credential_digest(&first.credential))
                .await
                .unwrap(),
            None
        );
        let status = store.deploy_status("n1").await.unwrap().unwrap();
        assert_eq!(
            (status.image.as_deref(), status.version.as_deref()),
            (Some("host"), Some("2"))
        );
        // A clean revokes the credential and keeps the generation growing.
        store
            .request_clean("n1", EraseMode::Full, now)
            .await
            .unwrap();
        assert_eq!(store.credential_sha256("n1").await.unwrap(), None);
        let third = store
            .issue_deploy_order("n1", "2", "cd", now)
            .await
            .unwrap();
        assert_eq!(third.generation, 3);
        let status = store.deploy_status("n1").await.unwrap().unwrap();
        assert_eq!(status.erase, Some(EraseMode::Full));
        assert_eq!((status.image, status.host), (None, None));
    }

    #[tokio::test]
    async fn progress_keeps_when_its_phase_started() {
        let (_dir, store) = store_with_node().await;
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let t1 = t0 + chrono::Duration::seconds(10);
        let beat = |phase, done| DeployProgress {
            phase,
            done_bytes: done,
            total_bytes: 100,
        };
        store
            .record_deploy_progress("n1", &beat(DeployPhase::Writing, 10), t0)
            .await
            .unwrap();
        store
            .record_deploy_progress("n1", &beat(DeployPhase::Writing, 60), t1)
            .await
            .unwrap();
        let p = store
            .deploy_status("n1")
            .await
            .unwrap()
            .unwrap()
            .progress
            .unwrap();
        assert_eq!((p.done_bytes, p.since, p.at), (60, t0, t1));
        store
            .record_deploy_progress("n1", &beat(DeployPhase::Verifying, 5), t1)
            .await
            .unwrap();
        let p = store.deploy_statuses().await.unwrap()["n1"]
            .progress
            .unwrap();
        assert_eq!((p.phase, p.since), (DeployPhase::Verifying, t1));
    }
}
