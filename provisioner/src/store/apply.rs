//! Applying a node's host plan through its running agent (`node_apply`,
//! migration 0007): the operator's pending request and the agent's last
//! report.

use chrono::{DateTime, Utc};
use model::agent::AppliedReport;
use model::apply::ApplyReport;
use serde::Serialize;
use sqlx::Row as _;

use super::{Store, StoreError, parse_time, timestamp};

/// A node's apply request and last report (`GET /api/v1/nodes/{name}/apply`).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ApplyStatus {
    pub(crate) node: String,
    /// When the operator asked for an apply that the agent has not reported yet.
    pub requested_at: Option<DateTime<Utc>>,
    /// The agent's last report, if it ever sent one.
    pub last: Option<LastApply>,
}

/// What the agent reported the last time it applied the node's plan.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct LastApply {
    pub(crate) received_at: DateTime<Utc>,
    /// The boot MAC of the agent that reported.
    pub mac: String,
    /// Item by item (absent when the agent could not get the plan).
    pub report: Option<ApplyReport>,
    /// Why there is no report.
    pub(crate) error: Option<String>,
}

impl Store {
    /// Records the operator's request to apply the node's plan (replacing an
    /// earlier one still pending).
    pub async fn request_apply(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<ApplyStatus, StoreError> {
        let id = self.node_id(name).await?;
        sqlx::query(
            "INSERT INTO node_apply (node_id, requested_at) VALUES (?, ?) \
             ON CONFLICT (node_id) DO UPDATE SET requested_at = excluded.requested_at",
        )
        .bind(id)
        .bind(timestamp(now))
        .execute(&self.pool)
        .await?;
        self.apply_status(name).await
    }

    /// Stores the agent's report and clears the pending request.
    pub(crate) async fn store_applied(
        &self,
        name: &str,
        applied: &AppliedReport,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = self.node_id(name).await?;
        let report = applied
            .report
            .as_ref()
            .map(|r| serde_json::to_string(r).expect("reports serialize"));
        sqlx::query(
            "INSERT INTO node_apply (node_id, requested_at, reported_at, mac, report, error) \
             VALUES (?, NULL, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET \
             requested_at = NULL, reported_at = excluded.reported_at, mac = excluded.mac, \
             report = excluded.report, error = excluded.error",
        )
        .bind(id)
        .bind(timestamp(now))
        .bind(&applied.mac)
        .bind(report)
        .bind(&applied.error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The node's pending request and last report.
    pub async fn apply_status(&self, name: &str) -> Result<ApplyStatus, StoreError> {
        let id = self.node_id(name).await?;
        let row = sqlx::query(
            "SELECT requested_at, reported_at, mac, report, error FROM node_apply WHERE node_id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let mut status = ApplyStatus {
            node: name.to_owned(),
            requested_at: None,
            last: None,
        };
        let Some(row) = row else {
            return Ok(status);
        };
        let requested: Option<String> = row.try_get("requested_at")?;
        status.requested_at = requested
            .map(|at| parse_time(name, "node_apply.requested_at", &at))
            .transpose()?;
        let reported: Option<String> = row.try_get("reported_at")?;
        if let Some(at) = reported {
            let report: Option<String> = row.try_get("report")?;
            let report = report
                .map(|json| {
                    serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                        name: name.to_owned(),
                        column: "node_apply.report",
                        value: e.to_string(),
                    })
                })
                .transpose()?;
            status.last = Some(LastApply {
                received_at: parse_time(name, "node_apply.reported_at", &at)?,
                mac: row.try_get::<Option<String>, _>("mac")?.unwrap_or_default(),
                report,
                error: row.try_get("error")?,
            });
        }
        Ok(status)
    }
}
