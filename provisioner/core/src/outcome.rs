//! The `match profile` decision: the stored inventory against the site's profiles
//! (or the node's `profile:` override from nodes.yaml), then the host plan of the
//! winner. A machine no profile fits, a tie or an impossible plan is an
//! [`Outcome`] too (stored as `plan_error`, shown by `provisioner node show`): the
//! node is still `available`, its hardware known, and the operator fixes the
//! profiles. Pure; the daemon stores the outcome in the transition's transaction.

use tracing::{info, warn};

use model::inventory::Inventory;

use crate::plan::{self, matching};
use crate::site::Site;

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

/// Matches and plans a node from its inventory: the node's `profile:` override from
/// nodes.yaml, else the most specific matching profile of the site.
pub fn decide(site: &Site, profile_override: Option<&str>, inventory: &Inventory) -> Outcome {
    let chosen = match profile_override {
        Some(wanted) => site
            .profiles
            .iter()
            .find(|p| p.name == wanted)
            .ok_or_else(|| {
                format!("nodes.yaml names profile `{wanted}` for this node, but the site has no such profile")
            }),
        None => {
            let report = matching::select(inventory, &site.profiles);
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
    match chosen {
        Err(why) => Outcome::NoProfile(why),
        Ok(profile) => match plan::plan(inventory, profile) {
            Ok(plan) => Outcome::Planned {
                profile: profile.name.clone(),
                plan: Box::new(plan),
            },
            Err(err) => Outcome::PlanFailed {
                profile: profile.name.clone(),
                error: err.to_string(),
            },
        },
    }
}

/// Logs a committed outcome.
pub fn log(name: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Planned { profile, .. } => {
            info!(node = %name, %profile, "profile matched, host plan stored")
        }
        Outcome::PlanFailed { profile, error } => {
            warn!(node = %name, %profile, %error, "profile matched, but its plan is impossible on this machine")
        }
        Outcome::NoProfile(why) => warn!(node = %name, %why, "no profile for this machine"),
    }
}

impl Outcome {
    /// The node columns it sets: (`matched_profile`, `plan` as JSON, `plan_error`).
    pub fn columns(&self) -> (Option<&str>, Option<String>, Option<String>) {
        match self {
            Outcome::Planned { profile, plan } => (
                Some(profile.as_str()),
                Some(serde_json::to_string(plan).expect("plans serialize")),
                None,
            ),
            Outcome::PlanFailed { profile, error } => {
                (Some(profile.as_str()), None, Some(error.clone()))
            }
            Outcome::NoProfile(why) => (None, None, Some(why.clone())),
        }
    }
}
