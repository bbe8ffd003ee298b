//! Per-boot agent tokens (`boot_tokens`, migration 0004): issued when a node's
//! iPXE script is rendered, handed to the agent on the kernel command line,
//! presented back as a bearer token.
//!
//! Invariants: one token per MAC (a new one replaces the previous); only the
//! SHA-256 of a token is stored; verification looks the hash up (an index
//! probe, no secret-dependent early exit in Rust code).

use chrono::{DateTime, Utc};
use model::net::Mac;
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;

use super::{Store, StoreError, parse_time, timestamp};

/// Who a valid per-boot token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSession {
    /// The MAC the script was rendered for.
    pub mac: Mac,
    /// The node that MAC belonged to at that time (`None`: an unknown machine).
    pub node: Option<String>,
    pub issued_at: DateTime<Utc>,
}

/// Lowercase hex SHA-256 of a token, as stored.
fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Store {
    /// Issues a fresh random token for `mac` (256 bits, hex), replacing the
    /// previous token of that MAC. Returns the token; only its hash is stored.
    pub async fn issue_boot_token(
        &self,
        mac: Mac,
        node: Option<&str>,
    ) -> Result<String, StoreError> {
        self.issue_boot_token_at(mac, node, Utc::now()).await
    }

    /// [`Store::issue_boot_token`] with the time given (tests).
    pub async fn issue_boot_token_at(
        &self,
        mac: Mac,
        node: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let bytes: [u8; 32] = rand::random();
        let token = hex::encode(bytes);
        sqlx::query(
            "INSERT INTO boot_tokens (mac, token_sha256, node, issued_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (mac) DO UPDATE SET token_sha256 = excluded.token_sha256, \
             node = excluded.node, issued_at = excluded.issued_at",
        )
        .bind(mac.to_string())
        .bind(digest(&token))
        .bind(node)
        .bind(timestamp(now))
        .execute(&self.pool)
        .await?;
        Ok(token)
    }

    /// The boot session a token belongs to, or `None` when it is unknown or was
    /// replaced by a newer token of the same MAC.
    pub async fn verify_boot_token(&self, token: &str) -> Result<Option<BootSession>, StoreError> {
        let row =
            sqlx::query("SELECT mac, node, issued_at FROM boot_tokens WHERE token_sha256 = ?")
                .bind(digest(token.trim()))
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mac_text: String = row.try_get("mac")?;
        let mac = mac_text.parse::<Mac>().map_err(|_| StoreError::Corrupt {
            name: mac_text.clone(),
            column: "boot_tokens.mac",
            value: mac_text.clone(),
        })?;
        let issued_at: String = row.try_get("issued_at")?;
        Ok(Some(BootSession {
            mac,
            node: row.try_get("node")?,
            issued_at: parse_time(&mac_text, "boot_tokens.issued_at", &issued_at)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x52, 0x54, 0, 0xaa, 0, 1]);

    #[tokio::test]
    async fn a_new_token_replaces_the_previous_one_of_the_mac() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let first = store.issue_boot_token(MAC, Some("lab-0")).await.unwrap();
        assert_eq!(first.len(), 64);
        let session = store.verify_boot_token(&first).await.unwrap().unwrap();
        assert_eq!(session.mac, MAC);
        assert_eq!(session.node.as_deref(), Some("lab-0"));

        let second = store.issue_boot_token(MAC, None).await.unwrap();
        assert_ne!(first, second);
        assert_eq!(store.verify_boot_token(&first).await.unwrap(), None);
        let session = store.verify_boot_token(&second).await.unwrap().unwrap();
        assert_eq!(session.node, None);

        // Another MAC's token lives next to it.
        let other = Mac([0x52, 0x54, 0, 0xaa, 0, 2]);
        let third = store.issue_boot_token(other, None).await.unwrap();
        assert_eq!(
            store.verify_boot_token(&third).await.unwrap().unwrap().mac,
            other
        );
        assert!(store.verify_boot_token(&second).await.unwrap().is_some());
        assert_eq!(store.verify_boot_token("").await.unwrap(), None);
        assert_eq!(
            store.verify_boot_token(&"0".repeat(64)).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn only_the_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let token = store.issue_boot_token(MAC, None).await.unwrap();
        let stored: String = sqlx::query_scalar("SELECT token_sha256 FROM boot_tokens")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_ne!(stored, token);
        assert_eq!(stored, digest(&token));
    }
}
