//! The agent protocol: the JSON messages between `node-agent` (in the
//! inspection ramdisk) and the provisioner's agent API.
//!
//! The contract, over plain HTTP on the provisioner's API listener:
//!
//! | request | body | answer |
//! |---|---|---|
//! | `POST /api/agent/v1/inventory` | [`InventoryReport`] | [`Command`] |
//! | `POST /api/agent/v1/heartbeat` | [`Heartbeat`] | [`Command`] |
//! | `GET /api/agent/v1/plan` | none | the node's [`HostPlan`] |
//! | `POST /api/agent/v1/applied` | [`AppliedReport`] | [`Command`] |
//! | `POST /api/agent/v1/deployed` | [`DeployedReport`] | [`Command`] |
//! | `POST /api/agent/v1/cleaned` | [`CleanedReport`] | [`Command`] |
//! | `POST /api/host/v1/report` (installed host, node credential) | [`HostReport`] | [`HostCommand`] |
//!
//! Every request carries `Authorization: Bearer TOKEN`, the per-boot token
//! the provisioner put on the kernel command line (`provisioner.token=`)
//! when it rendered this boot's iPXE script. A token is good for the boot
//! (MAC) it was issued for, until the next script for that MAC replaces it;
//! anything else is answered with 401. Error answers have the body
//! `{"error": ..., "hint": ...}` of the operator API.
//!
//! The answer is always the next thing the agent must do ([`Command`]): the
//! agent never decides the node's lifecycle, it reports and obeys.
//!
//! Applying a plan (`provisioner node apply NAME`): the provisioner answers a
//! heartbeat with [`Command::Apply`]; the agent fetches the node's stored
//! plan (`GET /api/agent/v1/plan`, 404 when the node has none), applies it to
//! the running machine and posts what it did ([`AppliedReport`]), also when it
//! could not fetch the plan (then `report` is absent and `error` says why).
//! When the apply changed the machine, the answer is [`Command::Inspect`], so
//! the stored inventory shows what it made (VFs). Applying is idempotent, so
//! an agent that retries after a lost answer changes nothing twice.
//!
//! Deploying and cleaning ([`crate::deploy`]): a deploying node's agent is
//! answered [`Command::Deploy`]; it writes the image, reporting
//! [`DeployProgress`] in its heartbeats, then posts a [`DeployedReport`].
//! A cleaning node's agent is answered [`Command::Clean`] and posts a
//! [`CleanedReport`]. The installed host authenticates with the node
//! credential from its sealed config, not a per-boot token.
//!
//! This module does no I/O.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::apply::ApplyReport;
#[cfg(doc)]
use crate::deploy::{CleanedReport, DeployedReport, HostCommand, HostReport};
use crate::deploy::{DeployOrder, DeployProgress, EraseMode};
use crate::inventory::Inventory;
#[cfg(doc)]
use crate::plan::HostPlan;

/// `POST /api/agent/v1/inventory`: what inspection found on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Agent inventory report")]
pub struct InventoryReport {
    /// The MAC the machine booted from (`provisioner.mac=` on the kernel
    /// command line), lowercase colon form `52:54:00:aa:00:01`.
    pub mac: String,
    /// The hardware inventory.
    pub inventory: Inventory,
}

/// What the agent is doing, as it reports in each heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Booted, not yet inspected (or inspecting now).
    Starting,
    /// The inventory was accepted; waiting for commands.
    Idle,
    /// The last step failed (see `last_error`); retrying.
    Error,
    /// Writing a host image ([`Command::Deploy`]).
    Deploying,
    /// Erasing disks ([`Command::Clean`]).
    Cleaning,
}

/// `POST /api/agent/v1/heartbeat`: the agent is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Agent heartbeat")]
pub struct Heartbeat {
    /// The MAC the machine booted from, lowercase colon form.
    pub mac: String,
    pub state: AgentState,
    /// Seconds since the agent started (`/proc/uptime` of the ramdisk).
    pub uptime_s: u64,
    /// The last failure the agent met, in words, if any since it started.
    #[serde(default)]
    pub last_error: Option<String>,
    /// While deploying or cleaning: how far it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<DeployProgress>,
}

/// The provisioner's answer to every agent request: what to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
#[schemars(title = "Agent command")]
pub enum Command {
    /// Nothing to do: send the next heartbeat after `interval_s` seconds.
    Wait {
        /// Seconds until the next heartbeat.
        interval_s: u32,
    },
    /// Inspect again and post the inventory.
    Inspect,
    /// Power the machine off (the inspection is over).
    Poweroff,
    /// Reboot the machine (it network-boots again).
    Reboot,
    /// Fetch the node's host plan (`GET /api/agent/v1/plan`), apply it to
    /// this machine and post the report (`POST /api/agent/v1/applied`).
    Apply,
    /// Write this host image to the root disk, then post
    /// `POST /api/agent/v1/deployed` and wait for the answer.
    Deploy(Box<DeployOrder>),
    /// Erase every disk, then post `POST /api/agent/v1/cleaned`.
    Clean { mode: EraseMode },
}

/// `POST /api/agent/v1/applied`: what applying the node's host plan did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Agent apply report")]
pub struct AppliedReport {
    /// The MAC the machine booted from, lowercase colon form.
    pub mac: String,
    /// What applying the plan did, item by item; absent when the plan could
    /// not be fetched or read.
    #[serde(default)]
    pub report: Option<ApplyReport>,
    /// Why there is no report (the plan could not be fetched or read).
    #[serde(default)]
    pub error: Option<String>,
}

impl Command {
    /// The default pause between heartbeats (the provisioner's site.yaml
    /// `lifecycle.heartbeat_interval` sets the one it sends).
    pub const DEFAULT_INTERVAL_S: u32 = 10;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_have_the_documented_json_form() {
        let cases = [
            (
                Command::Wait { interval_s: 10 },
                r#"{"command":"wait","interval_s":10}"#,
            ),
            (Command::Inspect, r#"{"command":"inspect"}"#),
            (Command::Poweroff, r#"{"command":"poweroff"}"#),
            (Command::Reboot, r#"{"command":"reboot"}"#),
            (Command::Apply, r#"{"command":"apply"}"#),
            (
                Command::Clean {
                    mode: EraseMode::Metadata,
                },
                r#"{"command":"clean","mode":"metadata"}"#,
            ),
        ];
        for (command, json) in cases {
            assert_eq!(serde_json::to_string(&command).unwrap(), json);
            assert_eq!(serde_json::from_str::<Command>(json).unwrap(), command);
        }
        assert!(serde_json::from_str::<Command>(r#"{"command":"format_disks"}"#).is_err());
    }

    #[test]
    fn heartbeat_json_round_trips_and_refuses_unknown_fields() {
        let beat = Heartbeat {
            mac: "52:54:00:aa:00:01".into(),
            state: AgentState::Idle,
            uptime_s: 42,
            last_error: None,
            progress: None,
        };
        let json = serde_json::to_string(&beat).unwrap();
        assert_eq!(
            json,
            r#"{"mac":"52:54:00:aa:00:01","state":"idle","uptime_s":42,"last_error":null}"#
        );
        assert_eq!(serde_json::from_str::<Heartbeat>(&json).unwrap(), beat);
        assert!(
            serde_json::from_str::<Heartbeat>(
                r#"{"mac":"x","state":"idle","uptime_s":1,"extra":1}"#
            )
            .is_err()
        );
    }
}
