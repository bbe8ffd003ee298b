//! The executor's tables (`node_jobs`, `node_progress`, migration 0006): the outbox of
//! BMC actions written with each transition, and the boot progress of a wait state.
//!
//! Invariant: a job carries the generation of the transition that queued it; it is
//! finished or rescheduled only while the node is still at that generation (a newer
//! transition replaced or removed it).

use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite, Transaction};

use super::{Store, StoreError, parse_time, timestamp};
use crate::lifecycle::{Action, State};
use crate::progress::{PendingJob, Step};

/// One queued job: the BMC actions of a node's latest transition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Job {
    pub node: String,
    pub generation: i64,
    pub actions: Vec<Action>,
    /// Attempts already made.
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl Job {
    /// The job as [`crate::progress::explain_timeout`] reads it.
    pub(crate) fn pending(&self) -> PendingJob<'_> {
        PendingJob {
            actions: &self.actions,
            attempts: self.attempts,
            last_error: self.last_error.as_deref(),
        }
    }
}

/// `GET /api/v1/nodes/{name}/progress`: what a node did during its current
/// state and what the executor still has to do for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub(crate) struct NodeProgress {
    /// Boot steps seen since the node entered its state, in boot order
    /// (`powered_on`, `dhcp`, `script`, `agent`).
    pub steps: Vec<ProgressStep>,
    /// The BMC actions queued for the executor (waiting for a boot slot, or
    /// retrying after a failure); `null` when none.
    pub bmc_job: Option<QueuedBmcJob>,
}

/// A boot step and when it was first seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub(crate) struct ProgressStep {
    pub step: String,
    pub at: DateTime<Utc>,
}

/// BMC actions the executor has not carried out yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
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

/// Queues `actions` for node `node_id` at `generation`, replacing whatever was queued;
/// no actions: removes the queued job. Runs inside the transition's transaction.
pub(crate) async fn replace_in(
    tx: &mut Transaction<'_, Sqlite>,
    node_id: i64,
    generation: i64,
    actions: &[Action],
    now: &str,
) -> Result<(), StoreError> {
    if actions.is_empty() {
        sqlx::query("DELETE FROM node_jobs WHERE node_id = ?")
            .bind(node_id)
            .execute(&mut **tx)
            .await?;
        return Ok(());
    }
    let json = serde_json::to_string(actions).expect("actions serialize");
    sqlx::query(
        "INSERT INTO node_jobs (node_id, generation, actions, attempts, next_at, last_error, created_at) \
         VALUES (?, ?, ?, 0, ?, NULL, ?) \
         ON CONFLICT (node_id) DO UPDATE SET generation = excluded.generation, \
         actions = excluded.actions, attempts = 0, next_at = excluded.next_at, last_error = NULL, \
         created_at = excluded.created_at",
    )
    .bind(node_id)
    .bind(generation)
    .bind(json)
    .bind(now)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn job_from_row(node: String, row: &sqlx::sqlite::SqliteRow) -> Result<Job, StoreError> {
    let actions: String = row.try_get("actions")?;
    let actions = serde_json::from_str(&actions).map_err(|_| StoreError::Corrupt {
        name: node.clone(),
        column: "node_jobs.actions",
        value: actions.clone(),
    })?;
    Ok(Job {
        generation: row.try_get("generation")?,
        actions,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
        last_error: row.try_get("last_error")?,
        node,
    })
}

const WAIT_STATES: &str = "('inspecting', 'deploying', 'cleaning')";

impl Store {
    /// Jobs whose time has come, oldest first, of nodes not in maintenance.
    pub(crate) async fn due_jobs(&self, now: DateTime<Utc>) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "SELECT n.name, j.generation, j.actions, j.attempts, j.last_error FROM node_jobs j \
             JOIN nodes n ON n.id = j.node_id \
             WHERE j.next_at <= ? AND n.maintenance = 0 ORDER BY j.created_at, n.name",
        )
        .bind(timestamp(now))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| job_from_row(row.try_get("name")?, row))
            .collect()
    }

    /// What a node is doing during its wait state, for the operator: the boot
    /// steps seen and the BMC actions still queued.
    pub(crate) async fn node_progress(&self, name: &str) -> Result<NodeProgress, StoreError> {
        // Also answers NotFound for an unknown node.
        self.node(name).await?;
        let steps = self
            .progress(name)
            .await?
            .into_iter()
            .map(|(step, at)| ProgressStep {
                step: step.as_str().to_owned(),
                at,
            })
            .collect();
        let row = sqlx::query(
            "SELECT j.generation, j.actions, j.attempts, j.last_error, j.next_at FROM node_jobs j \
             JOIN nodes n ON n.id = j.node_id WHERE n.name = ?",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        let bmc_job = match row {
            None => None,
            Some(row) => {
                let job = job_from_row(name.to_owned(), &row)?;
                let next: String = row.try_get("next_at")?;
                Some(QueuedBmcJob {
                    actions: crate::lifecycle::describe_actions(&job.actions),
                    attempts: job.attempts,
                    next_attempt_at: parse_time(name, "node_jobs.next_at", &next)?,
                    last_error: job.last_error,
                })
            }
        };
        Ok(NodeProgress { steps, bmc_job })
    }

    /// The job queued for a node, if any.
    pub(crate) async fn job_of(&self, node: &str) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(
            "SELECT j.generation, j.actions, j.attempts, j.last_error FROM node_jobs j \
             JOIN nodes n ON n.id = j.node_id WHERE n.name = ?",
        )
        .bind(node)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| job_from_row(node.to_owned(), &row))
            .transpose()
    }

    /// Removes a job that was carried out (only if it is still the node's current one).
    pub(crate) async fn finish_job(&self, node: &str, generation: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM node_jobs WHERE generation = ? \
             AND node_id = (SELECT id FROM nodes WHERE name = ? AND generation = ?)",
        )
        .bind(generation)
        .bind(node)
        .bind(generation)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a job whatever its state (the node failed or moved on).
    pub(crate) async fn drop_job(&self, node: &str, generation: i64) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM node_jobs WHERE generation = ? \
             AND node_id = (SELECT id FROM nodes WHERE name = ?)",
        )
        .bind(generation)
        .bind(node)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a failed attempt and when to try again.
    pub(crate) async fn reschedule_job(
        &self,
        node: &str,
        generation: i64,
        attempts: u32,
        next_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE node_jobs SET attempts = ?, next_at = ?, last_error = ? WHERE generation = ? \
             AND node_id = (SELECT id FROM nodes WHERE name = ?)",
        )
        .bind(i64::from(attempts))
        .bind(timestamp(next_at))
        .bind(error)
        .bind(generation)
        .bind(node)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Enrolled nodes with a BMC, not in maintenance: the ones zero-touch inspects.
    pub(crate) async fn enrolled_with_bmc(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT name FROM nodes WHERE state = 'enrolled' AND maintenance = 0 \
             AND bmc_url IS NOT NULL ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?)
    }

    /// Nodes in a wait state whose power-on is done (no job queued): the ones booting.
    pub(crate) async fn booting(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM nodes WHERE state IN {WAIT_STATES} AND maintenance = 0 \
             AND id NOT IN (SELECT node_id FROM node_jobs)"
        ))
        .fetch_one(self.pool())
        .await?)
    }

    /// Moves a node's wait-state deadline (the executor arms it again once the node
    /// is really powered on, so time queued behind the boot limit does not count).
    pub(crate) async fn rearm_deadline(
        &self,
        node: &str,
        generation: i64,
        deadline: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE nodes SET deadline = ? WHERE name = ? AND generation = ? AND deadline IS NOT NULL",
        )
        .bind(timestamp(deadline))
        .bind(node)
        .bind(generation)
        .execute(self.pool())
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Records that `step` happened for the node whose boot MAC is `mac` (lowercase,
    /// colon form), the first time only; returns the node's name and state when the MAC
    /// is known.
    pub(crate) async fn record_progress_by_mac(
        &self,
        mac: &str,
        step: Step,
        at: DateTime<Utc>,
    ) -> Result<Option<(String, State)>, StoreError> {
        let row = sqlx::query("SELECT id, name, state FROM nodes WHERE lower(boot_mac) = lower(?)")
            .bind(mac)
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let (id, name): (i64, String) = (row.try_get("id")?, row.try_get("name")?);
        let state: String = row.try_get("state")?;
        self.insert_progress(id, step, at).await?;
        let state = state.parse().map_err(|_| StoreError::Corrupt {
            name: name.clone(),
            column: "state",
            value: state.clone(),
        })?;
        Ok(Some((name, state)))
    }

    /// Records that `step` happened for node `name` (first time only).
    pub(crate) async fn record_progress(
        &self,
        name: &str,
        step: Step,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id: i64 = sqlx::query_scalar("SELECT id FROM nodes WHERE name = ?")
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        self.insert_progress(id, step, at).await
    }

    async fn insert_progress(
        &self,
        id: i64,
        step: Step,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT OR IGNORE INTO node_progress (node_id, step, at) VALUES (?, ?, ?)")
            .bind(id)
            .bind(step.as_str())
            .bind(timestamp(at))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The steps seen during the node's current state, in boot order.
    pub async fn progress(&self, name: &str) -> Result<Vec<(Step, DateTime<Utc>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.step, p.at FROM node_progress p JOIN nodes n ON n.id = p.node_id \
             WHERE n.name = ?",
        )
        .bind(name)
        .fetch_all(self.pool())
        .await?;
        let mut steps = rows
            .iter()
            .map(|row| {
                let step: String = row.try_get("step")?;
                let at: String = row.try_get("at")?;
                let parsed = Step::parse(&step).ok_or_else(|| StoreError::Corrupt {
                    name: name.to_owned(),
                    column: "node_progress.step",
                    value: step.clone(),
                })?;
                Ok((parsed, parse_time(name, "node_progress.at", &at)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        steps.sort();
        Ok(steps)
    }
}
