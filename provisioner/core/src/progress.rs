//! The boot progress of a wait state (`inspecting`, `deploying`, `cleaning`):
//! the steps a node's boot goes through, and why a wait that timed out did so.
//!
//! The store records each [`Step`] the first time it is seen; DHCP, HTTP boot
//! and the agent API report them. [`explain_timeout`] is pure: the steps seen
//! and the BMC job still queued in, the reason an operator reads out.

use chrono::{DateTime, Utc};

use crate::lifecycle::{Action, WaitKind, describe_actions};

/// A step of a node's boot, recorded the first time it is seen during a wait state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// The executor's power on/reset was accepted by the BMC.
    PoweredOn,
    /// A DHCP request came from the node's boot MAC.
    Dhcp,
    /// The node's iPXE script was fetched.
    Script,
    /// The agent on the node reported.
    Agent,
}

impl Step {
    pub const ALL: [Step; 4] = [Step::PoweredOn, Step::Dhcp, Step::Script, Step::Agent];

    /// The name stored in the database and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::PoweredOn => "powered_on",
            Step::Dhcp => "dhcp",
            Step::Script => "script",
            Step::Agent => "agent",
        }
    }

    /// The inverse of [`Step::as_str`].
    pub fn parse(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.as_str() == s)
    }
}

/// The BMC job still queued for a node when its wait timed out.
#[derive(Debug, Clone, Copy)]
pub struct PendingJob<'a> {
    pub actions: &'a [Action],
    /// Attempts already made (0: never tried, e.g. the daemon runs `--api-only`).
    pub attempts: u32,
    pub last_error: Option<&'a str>,
}

/// Why a wait state timed out, from what the node did during it: the first step that
/// never happened names what to check.
pub fn explain_timeout(
    kind: WaitKind,
    waited: &str,
    steps: &[(Step, DateTime<Utc>)],
    boot_mac: Option<&str>,
    pending: Option<PendingJob<'_>>,
) -> String {
    let seen = |step: Step| steps.iter().any(|(s, _)| *s == step);
    let what = match kind {
        WaitKind::Inspect => "inspection",
        WaitKind::Deploy => "deployment",
        WaitKind::Clean => "cleaning",
    };
    let mac = boot_mac.unwrap_or("its boot MAC (none in nodes.yaml)");
    // What the node itself did comes first: it booted, whatever its BMC job says (a
    // node powered by hand under --api-only still fetches its script).
    let why = if seen(Step::Agent) {
        match kind {
            WaitKind::Inspect => "the agent started but its inventory never arrived; check the node's console for the agent's errors".to_owned(),
            _ => "the agent started but never reported completion; check the node's console for the agent's errors".to_owned(),
        }
    } else if seen(Step::Script) {
        format!(
            "the iPXE script was fetched but the agent never reported; check that the node downloads and boots the ramdisk (console), and that it reaches the provisioner's API from {mac}"
        )
    } else if seen(Step::Dhcp) {
        format!(
            "DHCP answered {mac} but its iPXE script was never fetched; check TFTP and HTTP reachability and the firmware's boot mode"
        )
    } else if let Some(job) = pending {
        match job.last_error {
            Some(err) => format!(
                "the BMC never carried out {} ({} attempts); last error: {err}",
                describe_actions(job.actions),
                job.attempts
            ),
            None => format!(
                "the node was never powered on: nothing carried out {} (is the daemon running \
                 with --api-only?)",
                describe_actions(job.actions)
            ),
        }
    } else {
        format!(
            "no DHCP request was seen from {mac}; check that this NIC is cabled to the provisioning network, network boot is enabled in the firmware, and the boot MAC in nodes.yaml is right"
        )
    };
    format!("{what} timed out after {waited}: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn steps_round_trip_through_their_names() {
        for step in Step::ALL {
            assert_eq!(Step::parse(step.as_str()), Some(step));
        }
        assert_eq!(Step::parse("booted"), None);
    }

    #[test]
    fn the_timeout_reason_names_the_first_missing_step() {
        let mac = Some("52:54:00:0d:00:01");
        let none = explain_timeout(
            WaitKind::Inspect,
            "5m",
            &[(Step::PoweredOn, at(0))],
            mac,
            None,
        );
        assert!(
            none.starts_with(
                "inspection timed out after 5m: no DHCP request was seen from 52:54:00:0d:00:01"
            ),
            "{none}"
        );
        let dhcp = explain_timeout(
            WaitKind::Inspect,
            "5m",
            &[(Step::PoweredOn, at(0)), (Step::Dhcp, at(3))],
            mac,
            None,
        );
        assert!(dhcp.contains("iPXE script was never fetched"), "{dhcp}");
        let script = explain_timeout(
            WaitKind::Inspect,
            "5m",
            &[(Step::Dhcp, at(3)), (Step::Script, at(5))],
            mac,
            None,
        );
        assert!(script.contains("agent never reported"), "{script}");
        let agent = explain_timeout(
            WaitKind::Deploy,
            "1h",
            &[
                (Step::Dhcp, at(3)),
                (Step::Script, at(5)),
                (Step::Agent, at(9)),
            ],
            mac,
            None,
        );
        assert!(
            agent.starts_with("deployment timed out after 1h: the agent started"),
            "{agent}"
        );
    }

    #[test]
    fn a_bmc_that_never_powered_the_node_on_is_the_reason() {
        let actions = [Action::PowerOnOrReset];
        let mut job = PendingJob {
            actions: &actions,
            attempts: 3,
            last_error: Some("redfish://10.0.0.9: unreachable (connection refused)"),
        };
        let reason = explain_timeout(WaitKind::Inspect, "5m", &[], None, Some(job));
        assert!(
            reason.contains("BMC never carried out power on/reset (3 attempts)"),
            "{reason}"
        );
        assert!(reason.contains("connection refused"), "{reason}");
        job.attempts = 0;
        job.last_error = None;
        let reason = explain_timeout(WaitKind::Inspect, "5m", &[], None, Some(job));
        assert!(reason.contains("never powered on"), "{reason}");
        assert!(reason.contains("--api-only"), "{reason}");
    }
}
