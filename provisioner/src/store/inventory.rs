//! What the inspection agent reported: each node's inventory (`nodes.inventory`,
//! `inventory_at`, `inventory_mac`) and the last heartbeat per boot MAC
//! (`agent_heartbeats`, migration 0005).

use chrono::{DateTime, Utc};
use model::agent::Heartbeat;
use model::inventory::Inventory;
use serde::Serialize;
use sqlx::Row as _;

use super::{Store, StoreError, parse_time, timestamp};

/// A node's stored inventory (`GET /api/v1/nodes/{name}/inventory`).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct StoredInventory {
    pub(crate) node: String,
    /// The boot MAC of the agent that reported it.
    pub mac: Option<String>,
    pub(crate) received_at: DateTime<Utc>,
    pub inventory: Inventory,
}

/// The last heartbeat of the agent booted from one MAC.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct AgentHeartbeat {
    pub(crate) mac: String,
    pub node: Option<String>,
    pub(crate) state: String,
    pub uptime_s: i64,
    pub(crate) last_error: Option<String>,
    pub(crate) at: DateTime<Utc>,
}

impl Store {
    /// Stores a node's inventory, replacing the previous one. The node's
    /// status is untouched: the caller fires `inventory_received`.
    pub(crate) async fn store_inventory(
        &self,
        name: &str,
        mac: &str,
        inventory: &Inventory,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(inventory).map_err(|e| StoreError::Corrupt {
            name: name.to_owned(),
            column: "inventory",
            value: e.to_string(),
        })?;
        let updated = sqlx::query(
            "UPDATE nodes SET inventory = ?, inventory_at = ?, inventory_mac = ?, updated_at = ? \
             WHERE name = ?",
        )
        .bind(json)
        .bind(timestamp(now))
        .bind(mac)
        .bind(timestamp(now))
        .bind(name)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(name.to_owned()));
        }
        Ok(())
    }

    /// A node's inventory, `None` when it was never inspected.
    pub async fn inventory(&self, name: &str) -> Result<Option<StoredInventory>, StoreError> {
        let row =
            sqlx::query("SELECT inventory, inventory_at, inventory_mac FROM nodes WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        let json: Option<String> = row.try_get("inventory")?;
        let Some(json) = json else {
            return Ok(None);
        };
        let inventory = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
            name: name.to_owned(),
            column: "inventory",
            value: e.to_string(),
        })?;
        let at: Option<String> = row.try_get("inventory_at")?;
        // Inventories written before migration 0005 have no time: the epoch says "unknown".
        let received_at = match at {
            Some(at) => parse_time(name, "inventory_at", &at)?,
            None => DateTime::<Utc>::UNIX_EPOCH,
        };
        Ok(Some(StoredInventory {
            node: name.to_owned(),
            mac: row.try_get("inventory_mac")?,
            received_at,
            inventory,
        }))
    }

    /// Records the last heartbeat of the agent booted from `beat.mac`.
    pub(crate) async fn record_heartbeat(
        &self,
        node: Option<&str>,
        beat: &Heartbeat,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let state = serde_json::to_value(beat.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        sqlx::query(
            "INSERT INTO agent_heartbeats (mac, node, state, uptime_s, last_error, at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (mac) DO UPDATE SET node = excluded.node, \
             state = excluded.state, uptime_s = excluded.uptime_s, \
             last_error = excluded.last_error, at = excluded.at",
        )
        .bind(&beat.mac)
        .bind(node)
        .bind(state)
        .bind(i64::try_from(beat.uptime_s).unwrap_or(i64::MAX))
        .bind(&beat.last_error)
        .bind(timestamp(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The last heartbeat from the agent booted from `mac`, if any.
    pub async fn heartbeat(&self, mac: &str) -> Result<Option<AgentHeartbeat>, StoreError> {
        let row = sqlx::query(
            "SELECT mac, node, state, uptime_s, last_error, at FROM agent_heartbeats WHERE mac = ?",
        )
        .bind(mac)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let at: String = row.try_get("at")?;
            Ok(AgentHeartbeat {
                mac: row.try_get("mac")?,
                node: row.try_get("node")?,
                state: row.try_get("state")?,
                uptime_s: row.try_get("uptime_s")?,
                last_error: row.try_get("last_error")?,
                at: parse_time(mac, "agent_heartbeats.at", &at)?,
            })
        })
        .transpose()
    }
}
