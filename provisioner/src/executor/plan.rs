//! The `match profile` action: the stored inventory against the site's profiles (or
//! the node's `profile:` override from nodes.yaml), then the host plan of the winner,
//! both stored with the node. A machine no profile fits, a tie or an impossible plan
//! is stored as `plan_error` (shown by `provisioner node show`): the node is still
//! `available`, its hardware known, and the operator fixes the profiles.

use tracing::{info, warn};

use crate::daemon::App;
use crate::plan::{self, matching};
use crate::store::{Store, StoreError};

/// What matching gave for a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Planned {
        profile: String,
        plan: Box<model::plan::HostPlan>,
    },
    /// A profile matched but its plan is impossible on this machine.
    PlanFailed { profile: String, error: String },
    /// No profile (or an ambiguous choice).
    NoProfile(String),
}

/// Matches and plans a node from its stored inventory, and stores the outcome.
/// `Ok(None)` when the node has no inventory.
pub async fn match_profile(app: &App, name: &str) -> Result<Option<Outcome>, StoreError> {
    let Some(stored) = app.store.inventory(name).await? else {
        warn!(node = %name, "match profile: no inventory stored");
        return Ok(None);
    };
    let node = app.store.node(name).await?;
    let site = app.site();
    let chosen = match &node.config.profile_override {
        Some(wanted) => site
            .profiles
            .iter()
            .find(|p| &p.name == wanted)
            .ok_or_else(|| {
                format!("nodes.yaml names profile `{wanted}` for this node, but the site has no such profile")
            }),
        None => {
            let report = matching::select(&stored.inventory, &site.profiles);
            match report.result() {
                Ok(winner) => site
                    .profiles
                    .iter()
                    .find(|p| p.name == winner)
                    .ok_or_else(|| format!("profile `{winner}` vanished during a site reload")),
                Err(err) => Err(err.to_string()),
            }
        }
    };
    let outcome = match chosen {
        Err(why) => Outcome::NoProfile(why),
        Ok(profile) => match plan::plan(&stored.inventory, profile) {
            Ok(plan) => Outcome::Planned {
                profile: profile.name.clone(),
                plan: Box::new(plan),
            },
            Err(err) => Outcome::PlanFailed {
                profile: profile.name.clone(),
                error: err.to_string(),
            },
        },
    };
    app.store.set_match(name, &outcome).await?;
    match &outcome {
        Outcome::Planned { profile, .. } => {
            info!(node = %name, %profile, "profile matched, host plan stored")
        }
        Outcome::PlanFailed { profile, error } => {
            warn!(node = %name, %profile, %error, "profile matched, but its plan is impossible on this machine")
        }
        Outcome::NoProfile(why) => warn!(node = %name, %why, "no profile for this machine"),
    }
    Ok(Some(outcome))
}

impl Store {
    /// Stores what matching gave: the profile, the plan or why there is none.
    pub async fn set_match(&self, name: &str, outcome: &Outcome) -> Result<(), StoreError> {
        let (profile, plan, error) = match outcome {
            Outcome::Planned { profile, plan } => (
                Some(profile.as_str()),
                Some(serde_json::to_string(plan).expect("plans serialize")),
                None,
            ),
            Outcome::PlanFailed { profile, error } => {
                (Some(profile.as_str()), None, Some(error.clone()))
            }
            Outcome::NoProfile(why) => (None, None, Some(why.clone())),
        };
        let updated = sqlx::query(
            "UPDATE nodes SET matched_profile = ?, plan = ?, plan_error = ? WHERE name = ?",
        )
        .bind(profile)
        .bind(plan)
        .bind(error)
        .bind(name)
        .execute(self.pool())
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(name.to_owned()));
        }
        Ok(())
    }
}
