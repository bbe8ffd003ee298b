//! The node store: nodes, their history, DHCP leases, per-boot agent tokens
//! (`boot_tokens`), what agents reported (`inventory`, `apply`), deploys and
//! the installed hosts' reports (`deploy`) and the
//! executor's outbox and boot progress (`jobs`) in an embedded SQLite
//! database (`STATE/provisioner.db`) through sqlx. All SQL of the daemon is here.
//!
//! Invariants:
//! - Every status write is a compare-and-swap on the node's `generation`, and
//!   writes its history row in the same transaction: a node's history always
//!   explains its current state.
//! - The database runs in WAL mode with `synchronous = FULL`: a write that
//!   returned `Ok` survives `kill -9` of the daemon (and a power cut).
//! - The store holds references to BMC secrets (`env:VAR`, `file:PATH`), never
//!   the secrets.
//! - Write transactions start with `BEGIN IMMEDIATE`: a deferred transaction
//!   that reads and then writes fails with SQLITE_BUSY when another writer
//!   committed in between, whatever the busy timeout.
//! - No lifecycle decisions here: callers compute the next status with
//!   [`crate::lifecycle::transition`] and hand it over.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::lifecycle::{Action, NodeStatus, State};
use crate::power::PowerState;
use crate::site::BmcTls;

mod apply;
mod boot_tokens;
mod deploy;
mod inventory;
pub(crate) mod jobs;

pub(crate) use apply::{ApplyStatus, LastApply};
pub use boot_tokens::BootSession;
pub(crate) use deploy::{DeployStatus, StoredHostReport, StoredProgress, credential_digest};
pub use inventory::StoredInventory;
pub(crate) use jobs::Job;

/// The database file inside the state directory.
pub(crate) const DB_FILE: &str = "provisioner.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the node database {path}: check that the state directory is writable")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create the state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot apply the database migrations to {path}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("no node named `{0}`")]
    NotFound(String),
    #[error("node `{name}` was changed concurrently (expected generation {expected}); retry")]
    Conflict { name: String, expected: i64 },
    #[error("a node named `{0}` already exists")]
    Duplicate(String),
    #[error("node `{name}` has a corrupt `{column}` value `{value}` in the database")]
    Corrupt {
        name: String,
        column: &'static str,
        value: String,
    },
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
}

/// How a node entered the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Site,
    Api,
    Discovered,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Site => "site",
            Source::Api => "api",
            Source::Discovered => "discovered",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        [Source::Site, Source::Api, Source::Discovered]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// The configuration of a node as the site (or the API) declares it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct NodeConfig {
    pub(crate) bmc_url: Option<String>,
    pub(crate) bmc_username: Option<String>,
    /// Reference to the BMC password: `env:VAR` or `file:PATH`.
    pub(crate) bmc_credential: Option<String>,
    /// How the BMC's HTTPS certificate is checked: `ca:PATH`, `insecure`, or
    /// absent for the web PKI.
    #[serde(serialize_with = "serialize_tls")]
    #[schemars(with = "Option<String>")]
    pub(crate) bmc_tls: BmcTls,
    pub boot_mac: Option<String>,
    pub serial: Option<String>,
    pub(crate) profile_override: Option<String>,
    pub(crate) role_override: Option<String>,
}

/// The TLS policy as stored and shown: `null` (web PKI), `"ca:PATH"` or `"insecure"`.
fn serialize_tls<S: serde::Serializer>(tls: &BmcTls, serializer: S) -> Result<S::Ok, S::Error> {
    tls.reference().serialize(serializer)
}

/// The `bmc_tls` column: NULL is the web PKI; any text but `ca:PATH` or `insecure` is
/// corrupt.
fn parse_tls(name: &str, value: Option<String>) -> Result<BmcTls, StoreError> {
    match value {
        None => Ok(BmcTls::Verify),
        Some(text) => BmcTls::from_reference(&text).ok_or_else(|| StoreError::Corrupt {
            name: name.to_owned(),
            column: "bmc_tls",
            value: text,
        }),
    }
}

/// The `node_power.state` column: `on`, `off`, `powering_on` or `powering_off`.
fn parse_power(name: &str, value: String) -> Result<PowerState, StoreError> {
    PowerState::parse(&value).ok_or_else(|| StoreError::Corrupt {
        name: name.to_owned(),
        column: "node_power.state",
        value,
    })
}

/// A node to enroll or update from the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnrollSpec {
    pub name: String,
    pub config: NodeConfig,
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct NodeRecord {
    pub(crate) name: String,
    pub source: Source,
    /// False when the node came from nodes.yaml and is no longer listed there.
    pub(crate) in_site: bool,
    #[serde(flatten)]
    pub config: NodeConfig,
    pub state: State,
    pub failed_from: Option<State>,
    pub(crate) generation: i64,
    pub(crate) maintenance: bool,
    pub(crate) maintenance_reason: Option<String>,
    pub last_error: Option<String>,
    pub matched_profile: Option<String>,
    /// The host plan computed from the inventory and the matched profile.
    pub plan: Option<model::plan::HostPlan>,
    /// Why there is no plan (no profile matched, a tie, an impossible request).
    pub plan_error: Option<String>,
    pub has_inventory: bool,
    pub deadline: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub state_since: DateTime<Utc>,
}

impl NodeRecord {
    /// The part the state machine decides on.
    pub(crate) fn status(&self) -> NodeStatus {
        NodeStatus {
            state: self.state,
            failed_from: self.failed_from,
            maintenance: self.maintenance,
        }
    }
}

/// One line of a node's history.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct HistoryEntry {
    pub(crate) at: DateTime<Utc>,
    pub(crate) from: Option<State>,
    pub(crate) to: State,
    pub event: String,
    pub reason: Option<String>,
    pub(crate) generation: i64,
}

/// A status change computed by the caller, written with compare-and-swap.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatusChange {
    pub status: NodeStatus,
    pub maintenance_reason: Option<String>,
    pub last_error: Option<String>,
    pub deadline: Option<DateTime<Utc>>,
    /// The event name recorded in the history.
    pub event: String,
    pub reason: Option<String>,
    /// The transition's BMC actions, queued for the executor in the same transaction
    /// (replacing whatever the node had queued; empty: nothing queued).
    pub bmc_actions: Vec<Action>,
    /// The outcome of the transition's `match profile` action, stored in the same
    /// transaction (`None`: matched profile and plan are left as they are).
    pub matched: Option<crate::outcome::Outcome>,
}

/// What a site sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SyncReport {
    /// Nodes enrolled by this sync.
    pub(crate) added: Vec<String>,
    /// Nodes whose configuration changed.
    pub(crate) updated: Vec<String>,
    /// Site nodes no longer in nodes.yaml (kept, flagged `in_site: false`).
    pub(crate) missing: Vec<String>,
    pub(crate) unchanged: usize,
}

/// Unix seconds as stored (RFC 3339, UTC, whole seconds).
fn unix_rfc3339(secs: u64) -> String {
    DateTime::<Utc>::from_timestamp(i64::try_from(secs).unwrap_or(i64::MAX / 2), 0)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn parse_time(
    name: &str,
    column: &'static str,
    value: &str,
) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| StoreError::Corrupt {
            name: name.to_owned(),
            column,
            value: value.to_owned(),
        })
}

fn parse_state(name: &str, column: &'static str, value: &str) -> Result<State, StoreError> {
    State::from_str(value).map_err(|_| StoreError::Corrupt {
        name: name.to_owned(),
        column,
        value: value.to_owned(),
    })
}

const NODE_COLUMNS: &str = "name, source, in_site, bmc_url, bmc_username, bmc_credential, bmc_tls, boot_mac, \
    serial, profile_override, role_override, state, failed_from, generation, maintenance, \
    maintenance_reason, last_error, matched_profile, inventory IS NOT NULL AS has_inventory, \
    deadline, created_at, updated_at, state_since, plan, plan_error";

fn node_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<NodeRecord, StoreError> {
    let name: String = row.try_get("name")?;
    let source: String = row.try_get("source")?;
    let state: String = row.try_get("state")?;
    let failed_from: Option<String> = row.try_get("failed_from")?;
    let deadline: Option<String> = row.try_get("deadline")?;
    let created_at: String = row.try_get("created_at")?;
    let updated_at: String = row.try_get("updated_at")?;
    let state_since: String = row.try_get("state_since")?;
    let plan: Option<String> = row.try_get("plan")?;
    let plan = plan
        .map(|json| {
            serde_json::from_str(&json).map_err(|_| StoreError::Corrupt {
                name: name.clone(),
                column: "plan",
                value: json.chars().take(80).collect(),
            })
        })
        .transpose()?;
    Ok(NodeRecord {
        source: Source::parse(&source).ok_or_else(|| StoreError::Corrupt {
            name: name.clone(),
            column: "source",
            value: source.clone(),
        })?,
        in_site: row.try_get("in_site")?,
        config: NodeConfig {
            bmc_url: row.try_get("bmc_url")?,
            bmc_username: row.try_get("bmc_username")?,
            bmc_credential: row.try_get("bmc_credential")?,
            bmc_tls: parse_tls(&name, row.try_get("bmc_tls")?)?,
            boot_mac: row.try_get("boot_mac")?,
            serial: row.try_get("serial")?,
            profile_override: row.try_get("profile_override")?,
            role_override: row.try_get("role_override")?,
        },
        state: parse_state(&name, "state", &state)?,
        failed_from: failed_from
            .map(|s| parse_state(&name, "failed_from", &s))
            .transpose()?,
        generation: row.try_get("generation")?,
        maintenance: row.try_get("maintenance")?,
        maintenance_reason: row.try_get("maintenance_reason")?,
        last_error: row.try_get("last_error")?,
        matched_profile: row.try_get("matched_profile")?,
        plan,
        plan_error: row.try_get("plan_error")?,
        has_inventory: row.try_get("has_inventory")?,
        deadline: deadline
            .map(|s| parse_time(&name, "deadline", &s))
            .transpose()?,
        created_at: parse_time(&name, "created_at", &created_at)?,
        updated_at: parse_time(&name, "updated_at", &updated_at)?,
        state_since: parse_time(&name, "state_since", &state_since)?,
        name,
    })
}

impl Store {
    /// Opens (and creates or migrates) the database in `state_dir`.
    pub async fn open(state_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = state_dir.join(DB_FILE);
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate {
                path: path.clone(),
                source,
            })?;
        Ok(Store { pool })
    }

    /// Every DHCP lease in the table (restored into the lease table at start).
    pub(crate) async fn dhcp_leases(
        &self,
    ) -> Result<Vec<provisioner_core::dhcp::Lease>, StoreError> {
        use model::net::Mac;
        use provisioner_core::dhcp::{Lease, LeaseState};
        let rows = sqlx::query("SELECT mac, ip, expires_at, hostname, state FROM dhcp_leases")
            .fetch_all(&self.pool)
            .await?;
        let mut leases = Vec::with_capacity(rows.len());
        for row in rows {
            let mac_text: String = row.try_get("mac")?;
            let name = format!("dhcp lease of {mac_text}");
            let corrupt = |column: &'static str, value: String| StoreError::Corrupt {
                name: name.clone(),
                column,
                value,
            };
            let mac: Mac = mac_text
                .parse()
                .map_err(|_| corrupt("mac", mac_text.clone()))?;
            let ip: String = row.try_get("ip")?;
            let ip = ip.parse().map_err(|_| corrupt("ip", ip.clone()))?;
            let expires: String = row.try_get("expires_at")?;
            let expires_at = parse_time(&name, "expires_at", &expires)?
                .timestamp()
                .max(0) as u64;
            let state: String = row.try_get("state")?;
            let state = match state.as_str() {
                "offered" => LeaseState::Offered,
                "bound" => LeaseState::Bound,
                _ => return Err(corrupt("state", state)),
            };
            leases.push(Lease {
                mac,
                ip,
                expires_at,
                state,
                hostname: row.try_get("hostname")?,
            });
        }
        Ok(leases)
    }

    /// The address of `mac`'s lease when it is bound and not expired at
    /// `now` (what a script with a boot token is checked against).
    pub(crate) async fn dhcp_bound_ip(
        &self,
        mac: model::net::Mac,
        now: DateTime<Utc>,
    ) -> Result<Option<std::net::Ipv4Addr>, StoreError> {
        let mac_text = mac.to_string();
        let row =
            sqlx::query("SELECT ip, expires_at FROM dhcp_leases WHERE mac = ? AND state = 'bound'")
                .bind(&mac_text)
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let name = format!("dhcp lease of {mac_text}");
        let ip: String = row.try_get("ip")?;
        let ip = ip.parse().map_err(|_| StoreError::Corrupt {
            name: name.clone(),
            column: "ip",
            value: ip.clone(),
        })?;
        let expires: String = row.try_get("expires_at")?;
        let expires_at = parse_time(&name, "expires_at", &expires)?;
        Ok((expires_at > now).then_some(ip))
    }

    /// Every stored decline mark: (address, end as Unix seconds).
    pub(crate) async fn dhcp_declined(&self) -> Result<Vec<(std::net::Ipv4Addr, u64)>, StoreError> {
        let rows = sqlx::query("SELECT ip, until FROM dhcp_declined")
            .fetch_all(&self.pool)
            .await?;
        let mut marks = Vec::with_capacity(rows.len());
        for row in rows {
            let ip_text: String = row.try_get("ip")?;
            let name = format!("dhcp decline of {ip_text}");
            let ip = ip_text.parse().map_err(|_| StoreError::Corrupt {
                name: name.clone(),
                column: "ip",
                value: ip_text.clone(),
            })?;
            let until: String = row.try_get("until")?;
            let until = parse_time(&name, "until", &until)?.timestamp().max(0) as u64;
            marks.push((ip, until));
        }
        Ok(marks)
    }

    /// Writes the final state of every MAC a batch of lease changes touched,
    /// and of every decline mark, in one transaction: the rows of those MACs
    /// are deleted, then the leases they hold now are inserted. When the table
    /// held the lease table's state before the batch, it holds it after
    /// (untouched rows did not change, so the unique `ip` cannot collide).
    /// One commit (one fsync) for the whole batch: this is the DHCP server's
    /// group commit.
    pub(crate) async fn write_dhcp_leases(
        &self,
        finals: &[(model::net::Mac, Option<provisioner_core::dhcp::Lease>)],
        declined: &[(std::net::Ipv4Addr, Option<u64>)],
    ) -> Result<(), StoreError> {
        // SQLite allows 32766 bound values per statement; stay well below.
        const CHUNK: usize = 1000;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (ip, until) in declined {
            match until {
                Some(until) => {
                    sqlx::query("INSERT OR REPLACE INTO dhcp_declined (ip, until) VALUES (?, ?)")
                        .bind(ip.to_string())
                        .bind(unix_rfc3339(*until))
                        .execute(&mut *tx)
                        .await?;
                }
                None => {
                    sqlx::query("DELETE FROM dhcp_declined WHERE ip = ?")
                        .bind(ip.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        for chunk in finals.chunks(CHUNK) {
            let mut delete =
                sqlx::QueryBuilder::<sqlx::Sqlite>::new("DELETE FROM dhcp_leases WHERE mac IN (");
            let mut list = delete.separated(", ");
            for (mac, _) in chunk {
                list.push_bind(mac.to_string());
            }
            delete.push(")");
            delete.build().execute(&mut *tx).await?;
            let leases: Vec<&provisioner_core::dhcp::Lease> =
                chunk.iter().filter_map(|(_, l)| l.as_ref()).collect();
            if leases.is_empty() {
                continue;
            }
            let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO dhcp_leases (mac, ip, expires_at, hostname, state) ",
            );
            insert.push_values(leases, |mut row, lease| {
                row.push_bind(lease.mac.to_string())
                    .push_bind(lease.ip.to_string())
                    .push_bind(unix_rfc3339(lease.expires_at))
                    .push_bind(lease.hostname.clone())
                    .push_bind(lease.state.as_str());
            });
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The connection pool, for the store extensions of other modules
    /// (`store::jobs`).
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// `PRAGMA integrity_check`: "ok" when the database is sound (the tests' check).
    #[cfg(test)]
    async fn integrity_check(&self) -> Result<String, StoreError> {
        let rows = sqlx::query("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await?;
        let lines: Result<Vec<String>, _> =
            rows.iter().map(|r| r.try_get::<String, _>(0)).collect();
        Ok(lines?.join("\n"))
    }

    /// Makes the stored site nodes match `specs` in one transaction: enrolls new
    /// ones, updates changed configuration (never the lifecycle state), and
    /// flags the ones no longer listed without deleting them.
    pub(crate) async fn sync_site(
        &self,
        specs: &[EnrollSpec],
        now: DateTime<Utc>,
    ) -> Result<SyncReport, StoreError> {
        let now_s = timestamp(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(&format!("SELECT id, {NODE_COLUMNS} FROM nodes"))
            .fetch_all(&mut *tx)
            .await?;
        let mut existing: HashMap<String, (i64, NodeRecord)> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let record = node_from_row(row)?;
            existing.insert(record.name.clone(), (row.try_get("id")?, record));
        }
        let mut report = SyncReport::default();
        let mut listed = std::collections::HashSet::with_capacity(specs.len());
        for spec in specs {
            listed.insert(spec.name.as_str());
            let c = &spec.config;
            match existing.get(&spec.name) {
                None => {
                    insert_node(&mut tx, spec, Source::Site, &now_s, "listed in nodes.yaml")
                        .await?
                        .ok_or_else(|| StoreError::Duplicate(spec.name.clone()))?;
                    report.added.push(spec.name.clone());
                }
                Some((id, record)) if record.config != *c || !record.in_site => {
                    let generation = record.generation + 1;
                    let reason = if record.in_site {
                        "configuration changed in nodes.yaml"
                    } else {
                        "listed in nodes.yaml again"
                    };
                    sqlx::query(
                        "UPDATE nodes SET in_site = 1, bmc_url = ?, bmc_username = ?, bmc_credential = ?, \
                         bmc_tls = ?, boot_mac = ?, serial = ?, profile_override = ?, role_override = ?, \
                         generation = ?, updated_at = ? WHERE id = ?",
                    )
                    .bind(&c.bmc_url)
                    .bind(&c.bmc_username)
                    .bind(&c.bmc_credential)
                    .bind(c.bmc_tls.reference())
                    .bind(&c.boot_mac)
                    .bind(&c.serial)
                    .bind(&c.profile_override)
                    .bind(&c.role_override)
                    .bind(generation)
                    .bind(&now_s)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    insert_history(
                        &mut tx,
                        *id,
                        &now_s,
                        Some(record.state),
                        record.state,
                        "site_update",
                        Some(reason),
                        generation,
                    )
                    .await?;
                    report.updated.push(spec.name.clone());
                }
                Some(_) => report.unchanged += 1,
            }
        }
        for (name, (id, record)) in &existing {
            if record.source != Source::Site || listed.contains(name.as_str()) {
                continue;
            }
            report.missing.push(name.clone());
            if record.in_site {
                let generation = record.generation + 1;
                sqlx::query(
                    "UPDATE nodes SET in_site = 0, generation = ?, updated_at = ? WHERE id = ?",
                )
                .bind(generation)
                .bind(&now_s)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                let reason = "no longer listed in nodes.yaml; kept until deleted with `provisioner node delete`";
                insert_history(
                    &mut tx,
                    *id,
                    &now_s,
                    Some(record.state),
                    record.state,
                    "site_removed",
                    Some(reason),
                    generation,
                )
                .await?;
            }
        }
        tx.commit().await?;
        report.missing.sort();
        Ok(report)
    }

    /// Enrolls one node outside the site (API or discovery).
    pub(crate) async fn enroll(
        &self,
        spec: &EnrollSpec,
        source: Source,
        now: DateTime<Utc>,
    ) -> Result<NodeRecord, StoreError> {
        let now_s = timestamp(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let reason = format!("enrolled through {}", source.as_str());
        if insert_node(&mut tx, spec, source, &now_s, &reason)
            .await?
            .is_none()
        {
            return Err(StoreError::Duplicate(spec.name.clone()));
        }
        tx.commit().await?;
        self.node(&spec.name).await
    }

    /// Every node, ordered by name.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        use futures_util::TryStreamExt as _;
        // Rows are converted as they stream in, so a large site never holds
        // every raw row and every record at once.
        let query = format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY name");
        let mut rows = sqlx::query(&query).fetch(&self.pool);
        let mut nodes = Vec::new();
        while let Some(row) = rows.try_next().await? {
            nodes.push(node_from_row(&row)?);
        }
        Ok(nodes)
    }

    /// One node by name.
    pub async fn node(&self, name: &str) -> Result<NodeRecord, StoreError> {
        let row = sqlx::query(&format!("SELECT {NODE_COLUMNS} FROM nodes WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        node_from_row(&row)
    }

    /// The node whose boot MAC is `mac` (lowercase colon form), if any.
    pub(crate) async fn node_by_mac(&self, mac: &str) -> Result<Option<NodeRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {NODE_COLUMNS} FROM nodes WHERE boot_mac = ? ORDER BY name LIMIT 1"
        ))
        .bind(mac)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(node_from_row).transpose()
    }

    /// Number of nodes per state (for metrics).
    pub(crate) async fn count_by_state(&self) -> Result<Vec<(State, bool, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, maintenance, COUNT(*) AS n FROM nodes GROUP BY state, maintenance",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok((
                    parse_state("*", "state", &state)?,
                    row.try_get("maintenance")?,
                    row.try_get("n")?,
                ))
            })
            .collect()
    }

    /// A node's history, oldest first.
    pub async fn history(&self, name: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let id = self.node_id(name).await?;
        let rows = sqlx::query(
            "SELECT at, from_state, to_state, event, reason, generation FROM node_history \
             WHERE node_id = ? ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let at: String = row.try_get("at")?;
                let from: Option<String> = row.try_get("from_state")?;
                let to: String = row.try_get("to_state")?;
                Ok(HistoryEntry {
                    at: parse_time(name, "history.at", &at)?,
                    from: from
                        .map(|s| parse_state(name, "history.from_state", &s))
                        .transpose()?,
                    to: parse_state(name, "history.to_state", &to)?,
                    event: row.try_get("event")?,
                    reason: row.try_get("reason")?,
                    generation: row.try_get("generation")?,
                })
            })
            .collect()
    }

    async fn node_id(&self, name: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT id FROM nodes WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))
    }

    /// Writes a status change if the node is still at `expected_generation`,
    /// with its history row, in one transaction. Returns the updated node.
    pub(crate) async fn commit_status(
        &self,
        name: &str,
        expected_generation: i64,
        change: &StatusChange,
        now: DateTime<Utc>,
    ) -> Result<NodeRecord, StoreError> {
        let now_s = timestamp(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let current = sqlx::query("SELECT id, state FROM nodes WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        let id: i64 = current.try_get("id")?;
        let from_s: String = current.try_get("state")?;
        let from = parse_state(name, "state", &from_s)?;
        let to = change.status.state;
        let generation = expected_generation + 1;
        let updated = sqlx::query(
            "UPDATE nodes SET state = ?, failed_from = ?, maintenance = ?, maintenance_reason = ?, \
             last_error = ?, deadline = ?, generation = ?, updated_at = ?, \
             state_since = CASE WHEN state = ? THEN state_since ELSE ? END \
             WHERE id = ? AND generation = ?",
        )
        .bind(to.as_str())
        .bind(change.status.failed_from.map(State::as_str))
        .bind(change.status.maintenance)
        .bind(&change.maintenance_reason)
        .bind(&change.last_error)
        .bind(change.deadline.map(timestamp))
        .bind(generation)
        .bind(&now_s)
        .bind(to.as_str())
        .bind(&now_s)
        .bind(id)
        .bind(expected_generation)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::Conflict {
                name: name.to_owned(),
                expected: expected_generation,
            });
        }
        insert_history(
            &mut tx,
            id,
            &now_s,
            Some(from),
            to,
            &change.event,
            change.reason.as_deref(),
            generation,
        )
        .await?;
        jobs::replace_in(&mut tx, id, generation, &change.bmc_actions, &now_s).await?;
        if let Some(outcome) = &change.matched {
            let (profile, plan, error) = outcome.columns();
            sqlx::query(
                "UPDATE nodes SET matched_profile = ?, plan = ?, plan_error = ? WHERE id = ?",
            )
            .bind(profile)
            .bind(plan)
            .bind(error)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        if from != to {
            sqlx::query("DELETE FROM node_progress WHERE node_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.node(name).await
    }

    /// Records the power state just read from a node's BMC. When it differs from the last
    /// reading (or is the first), a history row (event `power`, the node's state unchanged)
    /// is written in the same transaction and the previous reading is returned as
    /// `Some(previous)`; `None` means unchanged.
    pub(crate) async fn record_power(
        &self,
        name: &str,
        power: PowerState,
        now: DateTime<Utc>,
    ) -> Result<Option<Option<PowerState>>, StoreError> {
        let now_s = timestamp(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let node = sqlx::query("SELECT id, state, generation FROM nodes WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        let id: i64 = node.try_get("id")?;
        let state_s: String = node.try_get("state")?;
        let state = parse_state(name, "state", &state_s)?;
        let generation: i64 = node.try_get("generation")?;
        let previous: Option<String> =
            sqlx::query_scalar("SELECT state FROM node_power WHERE node_id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let previous = previous.map(|p| parse_power(name, p)).transpose()?;
        sqlx::query(
            "INSERT INTO node_power (node_id, state, checked_at) VALUES (?, ?, ?) \
             ON CONFLICT (node_id) DO UPDATE SET state = excluded.state, \
             checked_at = excluded.checked_at",
        )
        .bind(id)
        .bind(power.as_str())
        .bind(&now_s)
        .execute(&mut *tx)
        .await?;
        let changed = previous != Some(power);
        if changed {
            let after = power.as_str();
            let reason = match previous {
                Some(before) => format!("power {} -> {after} (read from the BMC)", before.as_str()),
                None => format!("power {after} (first reading from the BMC)"),
            };
            insert_history(
                &mut tx,
                id,
                &now_s,
                Some(state),
                state,
                "power",
                Some(&reason),
                generation,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(changed.then_some(previous))
    }

    /// The last power reading of a node: state and when, if any.
    pub(crate) async fn power(
        &self,
        name: &str,
    ) -> Result<Option<(PowerState, DateTime<Utc>)>, StoreError> {
        let id = self.node_id(name).await?;
        let row = sqlx::query("SELECT state, checked_at FROM node_power WHERE node_id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let at: String = row.try_get("checked_at")?;
                Ok(Some((
                    parse_power(name, row.try_get("state")?)?,
                    parse_time(name, "node_power.checked_at", &at)?,
                )))
            }
        }
    }

    /// Names of nodes whose wait-state deadline has passed, outside maintenance.
    pub(crate) async fn overdue(&self, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT name FROM nodes WHERE deadline IS NOT NULL AND deadline <= ? AND maintenance = 0 \
             ORDER BY deadline",
        )
        .bind(timestamp(now))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes a node and its history.
    pub(crate) async fn delete(&self, name: &str) -> Result<(), StoreError> {
        let deleted = sqlx::query("DELETE FROM nodes WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound(name.to_owned()));
        }
        Ok(())
    }
}

/// Inserts a node in `enrolled` with its first history row; `None` when the
/// name is taken.
async fn insert_node(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    spec: &EnrollSpec,
    source: Source,
    now: &str,
    reason: &str,
) -> Result<Option<i64>, StoreError> {
    let c = &spec.config;
    let id = sqlx::query_scalar::<_, i64>(
        "INSERT INTO nodes (name, source, in_site, bmc_url, bmc_username, bmc_credential, bmc_tls, \
         boot_mac, serial, profile_override, role_override, state, generation, created_at, updated_at, \
         state_since) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'enrolled', 1, ?, ?, ?) \
         ON CONFLICT (name) DO NOTHING RETURNING id",
    )
    .bind(&spec.name)
    .bind(source.as_str())
    .bind(source == Source::Site)
    .bind(&c.bmc_url)
    .bind(&c.bmc_username)
    .bind(&c.bmc_credential)
    .bind(c.bmc_tls.reference())
    .bind(&c.boot_mac)
    .bind(&c.serial)
    .bind(&c.profile_override)
    .bind(&c.role_override)
    .bind(now)
    .bind(now)
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(id) = id {
        insert_history(
            tx,
            id,
            now,
            None,
            State::Enrolled,
            "enroll",
            Some(reason),
            1,
        )
        .await?;
    }
    Ok(id)
}

#[allow(clippy::too_many_arguments)]
async fn insert_history(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    node_id: i64,
    at: &str,
    from: Option<State>,
    to: State,
    event: &str,
    reason: Option<&str>,
    generation: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO node_history (node_id, at, from_state, to_state, event, reason, generation) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(node_id)
    .bind(at)
    .bind(from.map(State::as_str))
    .bind(to.as_str())
    .bind(event)
    .bind(reason)
    .bind(generation)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, mac: &str) -> EnrollSpec {
        EnrollSpec {
            name: name.to_owned(),
            config: NodeConfig {
                bmc_url: Some(format!("redfish://bmc-{name}")),
                bmc_username: Some("admin".into()),
                bmc_credential: Some("env:BMC_PASSWORD".into()),
                boot_mac: Some(mac.to_owned()),
                ..NodeConfig::default()
            },
        }
    }

    #[tokio::test]
    async fn sync_enrolls_updates_and_flags_missing_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let now = Utc::now();
        let a = spec("a", "52:54:00:00:00:01");
        let b = spec("b", "52:54:00:00:00:02");
        let report = store.sync_site(&[a.clone(), b.clone()], now).await.unwrap();
        assert_eq!(report.added, ["a", "b"]);

        let mut b2 = b.clone();
        b2.config.serial = Some("SN2".into());
        let report = store.sync_site(&[b2], now).await.unwrap();
        assert_eq!(report.updated, ["b"]);
        assert_eq!(report.missing, ["a"]);
        let a_now = store.node("a").await.unwrap();
        assert!(!a_now.in_site);
        assert_eq!(a_now.state, State::Enrolled);
        let history = store.history("a").await.unwrap();
        assert_eq!(history.last().unwrap().event, "site_removed");

        // Reported again on the next sync, but recorded in the history once.
        let report = store
            .sync_site(&[spec("b", "52:54:00:00:00:02")], now)
            .await
            .unwrap();
        assert_eq!(report.missing, ["a"]);
        assert_eq!(store.history("a").await.unwrap().len(), history.len());
        assert_eq!(store.integrity_check().await.unwrap(), "ok");
    }

    #[tokio::test]
    async fn bmc_tls_settings_are_stored_and_updated() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let now = Utc::now();
        let mut a = spec("a", "52:54:00:00:00:01");
        a.config.bmc_tls = BmcTls::Insecure;
        store
            .sync_site(std::slice::from_ref(&a), now)
            .await
            .unwrap();
        assert_eq!(
            store.node("a").await.unwrap().config.bmc_tls,
            BmcTls::Insecure
        );
        let stored: Option<String> =
            sqlx::query_scalar("SELECT bmc_tls FROM nodes WHERE name = 'a'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(stored.as_deref(), Some("insecure"));
        a.config.bmc_tls = BmcTls::CaFile("/etc/site/ca.pem".into());
        let report = store
            .sync_site(std::slice::from_ref(&a), now)
            .await
            .unwrap();
        assert_eq!(report.updated, ["a"]);
        assert_eq!(store.node("a").await.unwrap().config, a.config);
        let stored: Option<String> =
            sqlx::query_scalar("SELECT bmc_tls FROM nodes WHERE name = 'a'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(stored.as_deref(), Some("ca:/etc/site/ca.pem"));
        a.config.bmc_tls = BmcTls::Verify;
        let report = store
            .sync_site(std::slice::from_ref(&a), now)
            .await
            .unwrap();
        assert_eq!(report.updated, ["a"]);
        assert_eq!(
            store.node("a").await.unwrap().config.bmc_tls,
            BmcTls::Verify
        );
    }

    #[tokio::test]
    async fn unknown_bmc_tls_and_power_values_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let now = Utc::now();
        store
            .sync_site(&[spec("a", "52:54:00:00:00:01")], now)
            .await
            .unwrap();
        store
            .record_power("a", PowerState::PoweringOn, now)
            .await
            .unwrap();
        let stored: String = sqlx::query_scalar("SELECT state FROM node_power")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(stored, "powering_on");
        sqlx::query("UPDATE node_power SET state = 'standby'")
            .execute(&store.pool)
            .await
            .unwrap();
        let err = store.power("a").await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { name, column: "node_power.state", value }
                if name == "a" && value == "standby"),
            "{err:?}"
        );
        let err = store
            .record_power("a", PowerState::On, now)
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                StoreError::Corrupt {
                    column: "node_power.state",
                    ..
                }
            ),
            "{err:?}"
        );
        sqlx::query("UPDATE nodes SET bmc_tls = 'verify' WHERE name = 'a'")
            .execute(&store.pool)
            .await
            .unwrap();
        let err = store.node("a").await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { name, column: "bmc_tls", value }
                if name == "a" && value == "verify"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn power_readings_enter_the_history_only_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let now = Utc::now();
        store
            .sync_site(&[spec("n1", "52:54:00:00:00:01")], now)
            .await
            .unwrap();
        let before = store.history("n1").await.unwrap().len();
        assert_eq!(store.power("n1").await.unwrap(), None);
        assert_eq!(
            store
                .record_power("n1", PowerState::Off, now)
                .await
                .unwrap(),
            Some(None)
        );
        assert_eq!(
            store
                .record_power("n1", PowerState::Off, now)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store.record_power("n1", PowerState::On, now).await.unwrap(),
            Some(Some(PowerState::Off))
        );
        let history = store.history("n1").await.unwrap();
        assert_eq!(history.len(), before + 2);
        let last = history.last().unwrap();
        assert_eq!(last.event, "power");
        assert_eq!(last.from, Some(State::Enrolled));
        assert_eq!(last.to, State::Enrolled);
        assert_eq!(
            last.reason.as_deref(),
            Some("power off -> on (read from the BMC)")
        );
        assert_eq!(store.power("n1").await.unwrap().unwrap().0, PowerState::On);
        assert!(matches!(
            store.record_power("nope", PowerState::On, now).await,
            Err(StoreError::NotFound(_))
        ));
        // The node's status is untouched: same generation.
        assert_eq!(store.node("n1").await.unwrap().generation, last.generation);
    }

    #[tokio::test]
    async fn status_writes_are_compare_and_swap_with_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let now = Utc::now();
        store
            .sync_site(&[spec("n1", "52:54:00:00:00:01")], now)
            .await
            .unwrap();
        let node = store.node("n1").await.unwrap();
        let change = StatusChange {
            status: NodeStatus {
                state: State::Inspecting,
                failed_from: None,
                maintenance: false,
            },
            maintenance_reason: None,
            last_error: None,
            deadline: Some(now),
            event: "inspect".into(),
            reason: Some("operator".into()),
            bmc_actions: vec![],
            matched: None,
        };
        let after = store
            .commit_status("n1", node.generation, &change, now)
            .await
            .unwrap();
        assert_eq!(after.state, State::Inspecting);
        assert_eq!(after.generation, node.generation + 1);
        // The same expected generation again loses the race.
        let err = store
            .commit_status("n1", node.generation, &change, now)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        assert_eq!(store.overdue(now).await.unwrap(), ["n1"]);
        let history = store.history("n1").await.unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].from, Some(State::Enrolled));
        assert_eq!(history[1].to, State::Inspecting);

        // A match outcome rides with its transition; a transition without one keeps it.
        let matched = StatusChange {
            event: "inventory_received".into(),
            matched: Some(crate::outcome::Outcome::PlanFailed {
                profile: "p".into(),
                error: "no disk".into(),
            }),
            ..change.clone()
        };
        let after = store
            .commit_status("n1", after.generation, &matched, now)
            .await
            .unwrap();
        assert_eq!(after.matched_profile.as_deref(), Some("p"));
        assert_eq!(after.plan_error.as_deref(), Some("no disk"));
        let after = store
            .commit_status("n1", after.generation, &change, now)
            .await
            .unwrap();
        assert_eq!(after.plan_error.as_deref(), Some("no disk"));
    }

    #[tokio::test]
    async fn dhcp_leases_and_decline_marks_survive_a_reopen() {
        use model::net::Mac;
        use provisioner_core::dhcp::{Lease, LeaseState};
        let dir = tempfile::tempdir().unwrap();
        let lease = Lease {
            mac: Mac([2, 0, 0, 0, 0, 1]),
            ip: "10.0.0.10".parse().unwrap(),
            expires_at: 1_800_000_000,
            state: LeaseState::Bound,
            hostname: Some("n1".into()),
        };
        let declined: std::net::Ipv4Addr = "10.0.0.11".parse().unwrap();
        let ended: std::net::Ipv4Addr = "10.0.0.12".parse().unwrap();
        {
            let store = Store::open(dir.path()).await.unwrap();
            store
                .write_dhcp_leases(
                    &[(lease.mac, Some(lease.clone()))],
                    &[
                        (declined, Some(1_800_000_600)),
                        (ended, Some(1_800_000_100)),
                    ],
                )
                .await
                .unwrap();
            store
                .write_dhcp_leases(&[], &[(ended, None)])
                .await
                .unwrap();
            store.close().await;
        }
        let store = Store::open(dir.path()).await.unwrap();
        assert_eq!(store.dhcp_leases().await.unwrap(), vec![lease]);
        assert_eq!(
            store.dhcp_declined().await.unwrap(),
            vec![(declined, 1_800_000_600)]
        );
    }

    #[tokio::test]
    async fn enroll_refuses_duplicates_and_delete_removes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let now = Utc::now();
        let node = store
            .enroll(&spec("x", "52:54:00:00:00:09"), Source::Api, now)
            .await
            .unwrap();
        assert_eq!(node.source, Source::Api);
        assert!(matches!(
            store
                .enroll(&spec("x", "52:54:00:00:00:09"), Source::Api, now)
                .await,
            Err(StoreError::Duplicate(_))
        ));
        store.delete("x").await.unwrap();
        assert!(matches!(
            store.node("x").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.delete("x").await,
            Err(StoreError::NotFound(_))
        ));
    }
}
