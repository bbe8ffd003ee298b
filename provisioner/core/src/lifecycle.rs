//! The node lifecycle: a pure state machine `(status, event) -> (next status, actions)`.
//!
//! Invariants:
//! - No I/O, no clock, no tokio: the daemon reads the node, calls [`transition`],
//!   persists the result with a compare-and-swap on the generation, then an
//!   executor performs the returned [`Action`]s.
//! - `failed_from` is `Some` exactly when the state is [`State::Failed`].
//! - While `maintenance` is on, every event except the maintenance events is
//!   refused: maintenance freezes the node, automation and manual provisioning alike.
//! - Every wait state ([`State::is_waiting`]) is entered with a `StartTimer`
//!   action, so no node can wait forever.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use serde::{Deserialize, Serialize};

/// Where a node is in its life. `failed` keeps the state it failed from in
/// [`NodeStatus::failed_from`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Known (from `nodes.yaml`, the API or discovery), never inspected.
    Enrolled,
    /// Booting the inspection ramdisk; waiting for its inventory.
    Inspecting,
    /// Inspected and matched; ready to be deployed.
    Available,
    /// Writing the host image; waiting for the agent to report completion.
    Deploying,
    /// Running its installed host image.
    Active,
    /// Wiping disks and resetting configuration before becoming available again.
    Cleaning,
    /// A step failed; `failed_from` and the last error say which and why.
    Failed,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 7] = [
        State::Enrolled,
        State::Inspecting,
        State::Available,
        State::Deploying,
        State::Active,
        State::Cleaning,
        State::Failed,
    ];

    /// The lower-case name used in the API, the database and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Enrolled => "enrolled",
            State::Inspecting => "inspecting",
            State::Available => "available",
            State::Deploying => "deploying",
            State::Active => "active",
            State::Cleaning => "cleaning",
            State::Failed => "failed",
        }
    }

    /// States that wait for something outside the provisioner (a booting
    /// node, an agent) and therefore always run under a timeout.
    pub fn is_waiting(self) -> bool {
        self.wait_kind().is_some()
    }

    /// The timer that guards this state, if it is a wait state.
    pub fn wait_kind(self) -> Option<WaitKind> {
        match self {
            State::Inspecting => Some(WaitKind::Inspect),
            State::Deploying => Some(WaitKind::Deploy),
            State::Cleaning => Some(WaitKind::Clean),
            State::Enrolled | State::Available | State::Active | State::Failed => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for State {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "state",
                name: s.to_owned(),
            })
    }
}

/// A name that is not a known state or event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{name}`")]
pub struct UnknownName {
    pub kind: &'static str,
    pub name: String,
}

/// Something that happened to a node.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Operator (or discovery): inspect the node's hardware.
    Inspect,
    /// Operator: write the host image and start the node's roles.
    Deploy,
    /// Operator: take an active node out of service and clean it.
    Undeploy,
    /// Operator: clean an available or failed node.
    Clean,
    /// Operator: stop the current wait and mark the node failed.
    Abort,
    /// Agent: the inventory arrived.
    InventoryReceived,
    /// Ramdisk agent: the host image is written and verified; the node must
    /// boot it from its disk.
    ImageWritten,
    /// The installed host reported what was deployed: the node is in service.
    DeployComplete,
    /// Agent: cleaning finished.
    CleanComplete,
    /// The wait state's timer expired.
    Timeout,
    /// An action failed (BMC refused, agent reported an error, ...).
    Error,
    /// Operator: freeze the node.
    MaintenanceOn,
    /// Operator: unfreeze the node.
    MaintenanceOff,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 13] = [
        Event::Inspect,
        Event::Deploy,
        Event::Undeploy,
        Event::Clean,
        Event::Abort,
        Event::InventoryReceived,
        Event::ImageWritten,
        Event::DeployComplete,
        Event::CleanComplete,
        Event::Timeout,
        Event::Error,
        Event::MaintenanceOn,
        Event::MaintenanceOff,
    ];

    /// The snake_case name used in the API, the history and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Inspect => "inspect",
            Event::Deploy => "deploy",
            Event::Undeploy => "undeploy",
            Event::Clean => "clean",
            Event::Abort => "abort",
            Event::InventoryReceived => "inventory_received",
            Event::ImageWritten => "image_written",
            Event::DeployComplete => "deploy_complete",
            Event::CleanComplete => "clean_complete",
            Event::Timeout => "timeout",
            Event::Error => "error",
            Event::MaintenanceOn => "maintenance_on",
            Event::MaintenanceOff => "maintenance_off",
        }
    }

    /// Events an operator may send through the API (`POST .../events`).
    /// Agent reports and timers come from inside the daemon only.
    pub fn is_manual(self) -> bool {
        matches!(
            self,
            Event::Inspect | Event::Deploy | Event::Undeploy | Event::Clean | Event::Abort
        )
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Event {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Event::ALL
            .into_iter()
            .find(|event| event.as_str() == s)
            .ok_or_else(|| UnknownName {
                kind: "event",
                name: s.to_owned(),
            })
    }
}

/// The timers guarding wait states; their durations are site settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitKind {
    Inspect,
    Deploy,
    Clean,
}

/// Which device the node boots from next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootDevice {
    Network,
    Disk,
}

/// What the executor must do after a transition was persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// Set the BMC boot override (one-time unless `persistent`).
    SetBootDevice {
        device: BootDevice,
        persistent: bool,
    },
    /// Power the node on, or reset it when it is already on.
    PowerOnOrReset,
    /// Power the node off.
    PowerOff,
    /// Arm the wait state's timer (a deadline persisted with the node).
    StartTimer { kind: WaitKind },
    /// Disarm the timer of the state being left.
    CancelTimer,
    /// Match the stored inventory against the site's profiles and compute the host plan.
    MatchProfile,
}

impl Action {
    /// Whether the executor carries it out through the node's BMC (boot device,
    /// power); the others are done inline with the transition.
    pub fn is_bmc(&self) -> bool {
        matches!(
            self,
            Action::SetBootDevice { .. } | Action::PowerOnOrReset | Action::PowerOff
        )
    }
}

/// Actions in words, comma-separated (`boot network (once), power on/reset`).
pub fn describe_actions(actions: &[Action]) -> String {
    let parts: Vec<String> = actions.iter().map(ToString::to_string).collect();
    parts.join(", ")
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::SetBootDevice { device, persistent } => {
                let device = match device {
                    BootDevice::Network => "network",
                    BootDevice::Disk => "disk",
                };
                let how = if *persistent { "persistent" } else { "once" };
                write!(f, "boot {device} ({how})")
            }
            Action::PowerOnOrReset => f.write_str("power on/reset"),
            Action::PowerOff => f.write_str("power off"),
            Action::StartTimer { kind } => write!(f, "start {} timer", wait_name(*kind)),
            Action::CancelTimer => f.write_str("cancel timer"),
            Action::MatchProfile => f.write_str("match profile"),
        }
    }
}

fn wait_name(kind: WaitKind) -> &'static str {
    match kind {
        WaitKind::Inspect => "inspect",
        WaitKind::Deploy => "deploy",
        WaitKind::Clean => "clean",
    }
}

/// The part of a node the state machine decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeStatus {
    pub state: State,
    /// The state the node failed from; `Some` exactly when `state` is `failed`.
    pub failed_from: Option<State>,
    pub maintenance: bool,
}

impl NodeStatus {
    /// A node just enrolled.
    pub const fn enrolled() -> Self {
        NodeStatus {
            state: State::Enrolled,
            failed_from: None,
            maintenance: false,
        }
    }

    fn with_state(self, state: State) -> Self {
        NodeStatus {
            state,
            failed_from: None,
            ..self
        }
    }

    fn failed(self) -> Self {
        NodeStatus {
            state: State::Failed,
            failed_from: Some(self.state),
            ..self
        }
    }
}

/// The site's lifecycle policy as the state machine reads it (site.yaml
/// `lifecycle`): how long each wait state may last, and whether a node powers
/// off once inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub inspect_timeout: Duration,
    pub deploy_timeout: Duration,
    pub clean_timeout: Duration,
    /// `after_inspection: poweroff` (true, the default) or `wait` (false: the
    /// agent stays up for `provisioner node apply`).
    pub power_off_after_inspection: bool,
}

impl Default for Policy {
    /// site.yaml's defaults: 20 min to inspect, an hour to deploy or clean, power off.
    fn default() -> Self {
        Policy {
            inspect_timeout: Duration::from_secs(20 * 60),
            deploy_timeout: Duration::from_secs(60 * 60),
            clean_timeout: Duration::from_secs(60 * 60),
            power_off_after_inspection: true,
        }
    }
}

impl Policy {
    /// How long a wait state may last before the node fails.
    pub fn timeout(&self, kind: WaitKind) -> Duration {
        match kind {
            WaitKind::Inspect => self.inspect_timeout,
            WaitKind::Deploy => self.deploy_timeout,
            WaitKind::Clean => self.clean_timeout,
        }
    }
}

/// What a transition does to one of the node's notes (`last_error`,
/// `maintenance_reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Left as it was.
    Keep,
    /// Removed.
    Clear,
    /// Set to the event's reason; to this text when the event has none
    /// (`None`: left empty).
    Reason(Option<String>),
}

/// What a transition does to the wait-state deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    Keep,
    Clear,
    /// Now plus this long (the policy's timeout of the wait state entered or thawed).
    Start(Duration),
}

/// The outcome of an accepted event: the next status, the actions, and what
/// the node record's deadline and notes become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub next: NodeStatus,
    pub actions: Vec<Action>,
    pub deadline: Deadline,
    pub last_error: Note,
    pub maintenance_reason: Note,
}

/// The record fields a transition writes besides the status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notes {
    pub deadline: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub maintenance_reason: Option<String>,
}

impl Transition {
    /// The node's deadline and notes after this transition, from those before it,
    /// the event's reason (operator text, timeout explanation) and the time.
    pub fn notes(&self, before: &Notes, reason: Option<&str>, now: DateTime<Utc>) -> Notes {
        let note = |change: &Note, old: &Option<String>| match change {
            Note::Keep => old.clone(),
            Note::Clear => None,
            Note::Reason(fallback) => reason.map(str::to_owned).or_else(|| fallback.clone()),
        };
        Notes {
            deadline: match self.deadline {
                Deadline::Keep => before.deadline,
                Deadline::Clear => None,
                Deadline::Start(after) => {
                    Some(now + chrono::Duration::from_std(after).unwrap_or(chrono::TimeDelta::MAX))
                }
            },
            last_error: note(&self.last_error, &before.last_error),
            maintenance_reason: note(&self.maintenance_reason, &before.maintenance_reason),
        }
    }
}

/// Why an event was refused. The node is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error(
        "node is in maintenance: `{event}` is refused until maintenance is turned off \
         (`provisioner node maintenance NAME off`)"
    )]
    InMaintenance { event: Event },
    #[error("`{event}` is not allowed in state `{state}`{}", allowed_hint(*state))]
    NotAllowed { state: State, event: Event },
}

fn allowed_hint(state: State) -> String {
    let allowed: Vec<&str> = Event::ALL
        .into_iter()
        .filter(|event| event.is_manual())
        .filter(|event| {
            let probe = NodeStatus {
                state,
                failed_from: Some(State::Deploying),
                maintenance: false,
            };
            let probe = if state == State::Failed {
                probe
            } else {
                probe.with_state(state)
            };
            transition(probe, *event, &Policy::default()).is_ok()
        })
        .map(Event::as_str)
        .collect();
    if allowed.is_empty() {
        String::new()
    } else {
        format!(" (operator events allowed there: {})", allowed.join(", "))
    }
}

const NETBOOT_ONCE: Action = Action::SetBootDevice {
    device: BootDevice::Network,
    persistent: false,
};

/// The lifecycle: decides what an event does to a node under the site's
/// policy. Pure and total: every `(status, event)` pair gives either a
/// transition or a refusal. The transition says everything the daemon writes:
/// next status, actions (BMC and inline), deadline, `last_error` and
/// `maintenance_reason`.
pub fn transition(
    status: NodeStatus,
    event: Event,
    policy: &Policy,
) -> Result<Transition, TransitionError> {
    let (next, actions) = next_and_actions(status, event, policy)?;
    let deadline = actions.iter().fold(Deadline::Keep, |d, a| match a {
        Action::StartTimer { kind } => Deadline::Start(policy.timeout(*kind)),
        Action::CancelTimer => Deadline::Clear,
        _ => d,
    });
    // Entering `failed` records why (the event's reason, else which event in which
    // state); any other change of state clears the old error.
    let last_error = if next.failed_from.is_some() && status.failed_from.is_none() {
        Note::Reason(Some(format!("{event} in state {}", status.state)))
    } else if next.state != status.state {
        Note::Clear
    } else {
        Note::Keep
    };
    let maintenance_reason = match event {
        Event::MaintenanceOn => Note::Reason(None),
        Event::MaintenanceOff => Note::Clear,
        _ => Note::Keep,
    };
    Ok(Transition {
        next,
        actions,
        deadline,
        last_error,
        maintenance_reason,
    })
}

fn next_and_actions(
    status: NodeStatus,
    event: Event,
    policy: &Policy,
) -> Result<(NodeStatus, Vec<Action>), TransitionError> {
    use Action::*;
    use State::*;

    match event {
        Event::MaintenanceOn => {
            let next = NodeStatus {
                maintenance: true,
                ..status
            };
            return Ok((next, vec![]));
        }
        Event::MaintenanceOff => {
            // The wait state's timer restarts in full: time spent frozen must not
            // count against the node.
            let actions = match status.state.wait_kind() {
                Some(kind) if status.maintenance => vec![StartTimer { kind }],
                _ => vec![],
            };
            let next = NodeStatus {
                maintenance: false,
                ..status
            };
            return Ok((next, actions));
        }
        _ if status.maintenance => return Err(TransitionError::InMaintenance { event }),
        _ => {}
    }

    let boot = |kind| vec![NETBOOT_ONCE, PowerOnOrReset, StartTimer { kind }];
    let (next, actions) = match (status.state, event) {
        (Enrolled | Available | Failed, Event::Inspect) => {
            (status.with_state(Inspecting), boot(WaitKind::Inspect))
        }
        (Inspecting, Event::InventoryReceived) => {
            let mut actions = vec![CancelTimer, MatchProfile];
            if policy.power_off_after_inspection {
                actions.push(PowerOff);
            }
            (status.with_state(Available), actions)
        }
        (Available, Event::Deploy) => (status.with_state(Deploying), boot(WaitKind::Deploy)),
        // A failed deployment may be retried as it is; any other failure must be
        // inspected or cleaned first.
        (Failed, Event::Deploy) if status.failed_from == Some(Deploying) => {
            (status.with_state(Deploying), boot(WaitKind::Deploy))
        }
        // The image is on the disk: boot it from there for good. The deploy
        // timer keeps running until the installed host reports.
        (Deploying, Event::ImageWritten) => (
            status,
            vec![
                SetBootDevice {
                    device: BootDevice::Disk,
                    persistent: true,
                },
                PowerOnOrReset,
            ],
        ),
        // The boot device was set when the image was written.
        (Deploying, Event::DeployComplete) => (status.with_state(Active), vec![CancelTimer]),
        (Active, Event::Undeploy) | (Available | Failed, Event::Clean) => {
            (status.with_state(Cleaning), boot(WaitKind::Clean))
        }
        (Cleaning, Event::CleanComplete) => {
            (status.with_state(Available), vec![CancelTimer, PowerOff])
        }
        (Inspecting | Deploying | Cleaning, Event::Timeout | Event::Error | Event::Abort) => {
            (status.failed(), vec![CancelTimer, PowerOff])
        }
        (state, event) => return Err(TransitionError::NotAllowed { state, event }),
    };
    Ok((next, actions))
}

/// The transition table as Markdown, rendered from [`transition`] itself so
/// the documentation cannot drift (a test compares it with ARCHITECTURE.md).
pub fn render_table() -> String {
    let mut out = String::from("| from | event | to | actions |\n|---|---|---|---|\n");
    let mut starts: Vec<(String, NodeStatus)> = State::ALL
        .into_iter()
        .filter(|state| *state != State::Failed)
        .map(|state| (state.to_string(), NodeStatus::enrolled().with_state(state)))
        .collect();
    for from in State::ALL.into_iter().filter(|state| state.is_waiting()) {
        let failed = NodeStatus {
            state: State::Failed,
            failed_from: Some(from),
            maintenance: false,
        };
        starts.push((format!("failed (from {from})"), failed));
    }
    let standard = Policy::default();
    let keep_up = Policy {
        power_off_after_inspection: false,
        ..standard
    };
    let row = |label: &str, event: String, t: &Transition| {
        let to = match t.next.failed_from {
            Some(from) => format!("failed (from {from})"),
            None => t.next.state.to_string(),
        };
        let actions: Vec<String> = t.actions.iter().map(ToString::to_string).collect();
        format!("| {label} | {event} | {to} | {} |\n", actions.join(", "))
    };
    for (label, status) in starts {
        for event in Event::ALL {
            if matches!(event, Event::MaintenanceOn | Event::MaintenanceOff) {
                continue;
            }
            if let Ok(t) = transition(status, event, &standard) {
                out.push_str(&row(&label, event.to_string(), &t));
                // A row of its own wherever the site's policy changes the outcome.
                if let Ok(other) = transition(status, event, &keep_up)
                    && other != t
                {
                    out.push_str(&row(
                        &label,
                        format!("{event} (`after_inspection: wait`)"),
                        &other,
                    ));
                }
            }
        }
    }
    out.push_str(
        "| any | maintenance_on | same state, frozen | (none) |\n\
         | any, frozen | maintenance_off | same state | restart the wait state's timer |\n\
         | any, frozen | any other event | refused | (none) |\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(state: State) -> NodeStatus {
        NodeStatus::enrolled().with_state(state)
    }

    #[test]
    fn table_of_the_main_path() {
        let cases = [
            (State::Enrolled, Event::Inspect, State::Inspecting),
            (
                State::Inspecting,
                Event::InventoryReceived,
                State::Available,
            ),
            (State::Available, Event::Deploy, State::Deploying),
            (State::Deploying, Event::ImageWritten, State::Deploying),
            (State::Deploying, Event::DeployComplete, State::Active),
            (State::Active, Event::Undeploy, State::Cleaning),
            (State::Cleaning, Event::CleanComplete, State::Available),
            (State::Available, Event::Inspect, State::Inspecting),
            (State::Available, Event::Clean, State::Cleaning),
            (State::Inspecting, Event::Timeout, State::Failed),
            (State::Deploying, Event::Error, State::Failed),
            (State::Cleaning, Event::Abort, State::Failed),
        ];
        for (from, event, to) in cases {
            let t = transition(at(from), event, &Policy::default())
                .unwrap_or_else(|e| panic!("{from} + {event}: {e}"));
            assert_eq!(t.next.state, to, "{from} + {event}");
        }
    }

    #[test]
    fn refused_events() {
        let refused = [
            (State::Enrolled, Event::Deploy),
            (State::Active, Event::Inspect),
            (State::Available, Event::Timeout),
            (State::Active, Event::Timeout),
            (State::Enrolled, Event::InventoryReceived),
            (State::Deploying, Event::Deploy),
            (State::Available, Event::ImageWritten),
            (State::Active, Event::ImageWritten),
            (State::Active, Event::DeployComplete),
        ];
        for (from, event) in refused {
            assert_eq!(
                transition(at(from), event, &Policy::default()),
                Err(TransitionError::NotAllowed { state: from, event }),
                "{from} + {event}"
            );
        }
    }

    #[test]
    fn entering_a_wait_state_boots_from_network_and_arms_its_timer() {
        let t = transition(at(State::Enrolled), Event::Inspect, &Policy::default()).unwrap();
        assert_eq!(
            t.actions,
            vec![
                NETBOOT_ONCE,
                Action::PowerOnOrReset,
                Action::StartTimer {
                    kind: WaitKind::Inspect
                }
            ]
        );
    }

    #[test]
    fn a_written_image_boots_from_disk_and_the_host_report_ends_the_wait() {
        let policy = Policy::default();
        let written = transition(at(State::Deploying), Event::ImageWritten, &policy).unwrap();
        assert_eq!(written.next, at(State::Deploying));
        assert_eq!(
            written.actions,
            [
                Action::SetBootDevice {
                    device: BootDevice::Disk,
                    persistent: true
                },
                Action::PowerOnOrReset
            ]
        );
        assert_eq!(
            written.deadline,
            Deadline::Keep,
            "the deploy timer keeps running"
        );
        assert_eq!(written.last_error, Note::Keep);
        let done = transition(written.next, Event::DeployComplete, &policy).unwrap();
        assert_eq!(done.next.state, State::Active);
        assert_eq!(done.actions, [Action::CancelTimer]);
        assert_eq!(done.deadline, Deadline::Clear);
    }

    #[test]
    fn failed_remembers_where_it_failed_and_a_deploy_retry_needs_a_failed_deploy() {
        let failed = transition(at(State::Deploying), Event::Timeout, &Policy::default())
            .unwrap()
            .next;
        assert_eq!(failed.failed_from, Some(State::Deploying));
        assert_eq!(
            transition(failed, Event::Deploy, &Policy::default())
                .unwrap()
                .next
                .state,
            State::Deploying
        );

        let failed = transition(at(State::Inspecting), Event::Timeout, &Policy::default())
            .unwrap()
            .next;
        assert_eq!(failed.failed_from, Some(State::Inspecting));
        assert!(transition(failed, Event::Deploy, &Policy::default()).is_err());
        assert_eq!(
            transition(failed, Event::Inspect, &Policy::default())
                .unwrap()
                .next
                .failed_from,
            None
        );
    }

    #[test]
    fn maintenance_freezes_and_restarts_the_timer() {
        let frozen = transition(
            at(State::Inspecting),
            Event::MaintenanceOn,
            &Policy::default(),
        )
        .unwrap()
        .next;
        assert_eq!(
            transition(frozen, Event::Timeout, &Policy::default()),
            Err(TransitionError::InMaintenance {
                event: Event::Timeout
            })
        );
        let thawed = transition(frozen, Event::MaintenanceOff, &Policy::default()).unwrap();
        assert_eq!(thawed.next.state, State::Inspecting);
        assert_eq!(
            thawed.actions,
            vec![Action::StartTimer {
                kind: WaitKind::Inspect
            }]
        );
        // Turning off a maintenance that was not on does not touch the timer.
        assert!(
            transition(
                at(State::Inspecting),
                Event::MaintenanceOff,
                &Policy::default()
            )
            .unwrap()
            .actions
            .is_empty()
        );
    }

    #[test]
    fn only_boot_and_power_actions_go_to_the_bmc() {
        assert!(Action::PowerOnOrReset.is_bmc());
        assert!(Action::PowerOff.is_bmc());
        assert!(
            Action::SetBootDevice {
                device: BootDevice::Network,
                persistent: false
            }
            .is_bmc()
        );
        assert!(!Action::MatchProfile.is_bmc());
        assert!(!Action::CancelTimer.is_bmc());
        assert_eq!(
            describe_actions(&[
                Action::SetBootDevice {
                    device: BootDevice::Network,
                    persistent: false
                },
                Action::PowerOnOrReset
            ]),
            "boot network (once), power on/reset"
        );
    }

    #[test]
    fn the_policy_decides_power_off_after_inspection_and_the_timeouts() {
        let keep_up = Policy {
            power_off_after_inspection: false,
            inspect_timeout: Duration::from_secs(75),
            ..Policy::default()
        };
        let t = transition(at(State::Inspecting), Event::InventoryReceived, &keep_up).unwrap();
        assert_eq!(t.actions, [Action::CancelTimer, Action::MatchProfile]);
        assert_eq!(t.deadline, Deadline::Clear);
        let t = transition(
            at(State::Inspecting),
            Event::InventoryReceived,
            &Policy::default(),
        )
        .unwrap();
        assert!(t.actions.contains(&Action::PowerOff));
        let t = transition(at(State::Enrolled), Event::Inspect, &keep_up).unwrap();
        assert_eq!(t.deadline, Deadline::Start(Duration::from_secs(75)));
    }

    #[test]
    fn notes_record_why_a_node_failed_and_forget_it_when_it_moves_on() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let policy = Policy::default();
        let before = Notes {
            deadline: Some(now),
            ..Notes::default()
        };
        let t = transition(at(State::Inspecting), Event::Timeout, &policy).unwrap();
        let failed = t.notes(&before, Some("no DHCP request was seen"), now);
        assert_eq!(
            failed.last_error.as_deref(),
            Some("no DHCP request was seen")
        );
        assert_eq!(failed.deadline, None);
        let failed = t.notes(&before, None, now);
        assert_eq!(
            failed.last_error.as_deref(),
            Some("timeout in state inspecting")
        );
        let retry = transition(t.next, Event::Inspect, &policy).unwrap();
        let retried = retry.notes(&failed, None, now);
        assert_eq!(
            retried.last_error, None,
            "a new attempt clears the old error"
        );
        assert_eq!(
            retried.deadline,
            Some(now + chrono::Duration::seconds(20 * 60))
        );
        let frozen = transition(retry.next, Event::MaintenanceOn, &policy).unwrap();
        let notes = frozen.notes(&retried, Some("new DIMMs"), now);
        assert_eq!(notes.maintenance_reason.as_deref(), Some("new DIMMs"));
        assert_eq!(
            notes.deadline, retried.deadline,
            "freezing keeps the deadline"
        );
        let thawed = transition(frozen.next, Event::MaintenanceOff, &policy).unwrap();
        let later = now + chrono::Duration::seconds(600);
        let notes = thawed.notes(&notes, None, later);
        assert_eq!(notes.maintenance_reason, None);
        assert_eq!(
            notes.deadline,
            Some(later + chrono::Duration::seconds(20 * 60)),
            "thawing restarts the timer in full"
        );
    }

    #[test]
    fn names_round_trip() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>(), Ok(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        for event in Event::ALL {
            assert_eq!(event.as_str().parse::<Event>(), Ok(event));
            assert_eq!(serde_json::to_value(event).unwrap(), event.as_str());
        }
        assert!("broken".parse::<State>().is_err());
    }

    #[test]
    fn refusal_names_what_is_allowed() {
        let err = transition(at(State::Enrolled), Event::Deploy, &Policy::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`deploy` is not allowed in state `enrolled` (operator events allowed there: inspect)"
        );
    }

    /// ARCHITECTURE.md carries the table rendered from the code; regenerate it
    /// with `UPDATE_DOCS=1 cargo test -p provisioner-core lifecycle`.
    #[test]
    fn architecture_md_has_the_current_transition_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ARCHITECTURE.md");
        let doc = std::fs::read_to_string(path).expect("read ARCHITECTURE.md");
        let (start, end) = (
            "<!-- lifecycle-table:start -->\n",
            "<!-- lifecycle-table:end -->",
        );
        let begin = doc
            .find(start)
            .expect("ARCHITECTURE.md lacks the lifecycle-table:start marker")
            + start.len();
        let finish = doc
            .find(end)
            .expect("ARCHITECTURE.md lacks the lifecycle-table:end marker");
        let table = render_table();
        if doc[begin..finish] != table {
            if std::env::var_os("UPDATE_DOCS").is_some() {
                let updated = format!("{}{}{}", &doc[..begin], table, &doc[finish..]);
                std::fs::write(path, updated).expect("write ARCHITECTURE.md");
            } else {
                panic!(
                    "the transition table in ARCHITECTURE.md is stale; run \
                     `UPDATE_DOCS=1 cargo test -p provisioner-core lifecycle` and commit it"
                );
            }
        }
    }

    fn any_event() -> impl Strategy<Value = Event> {
        proptest::sample::select(Event::ALL.to_vec())
    }

    proptest! {
        /// Random event sequences from `enrolled` keep every invariant.
        #[test]
        fn random_sequences_keep_the_invariants(
            events in proptest::collection::vec(any_event(), 0..200),
            power_off in any::<bool>(),
        ) {
            let policy = Policy { power_off_after_inspection: power_off, ..Policy::default() };
            let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
            let mut status = NodeStatus::enrolled();
            let mut notes = Notes::default();
            for event in events {
                let before = status;
                match transition(status, event, &policy) {
                    Ok(t) => {
                        notes = t.notes(&notes, None, now);
                        // A failed node says why; a node out of `failed` carries no error.
                        prop_assert_eq!(notes.last_error.is_some(), t.next.state == State::Failed);
                        // A deadline exactly while waiting (frozen or not).
                        prop_assert_eq!(notes.deadline.is_some(), t.next.state.is_waiting());
                        // The policy, and only it, decides the power-off after inspection.
                        if event == Event::InventoryReceived {
                            prop_assert_eq!(t.actions.contains(&Action::PowerOff), power_off);
                        }
                        // `failed` and only `failed` carries where it came from,
                        // and that is the state the node was in.
                        prop_assert_eq!(t.next.failed_from.is_some(), t.next.state == State::Failed);
                        if t.next.state == State::Failed && before.state != State::Failed {
                            prop_assert_eq!(t.next.failed_from, Some(before.state));
                            prop_assert!(before.state.is_waiting());
                        }
                        // Maintenance freezes: only maintenance events pass, and
                        // they never change the state.
                        if before.maintenance || matches!(event, Event::MaintenanceOn | Event::MaintenanceOff) {
                            prop_assert!(matches!(event, Event::MaintenanceOn | Event::MaintenanceOff));
                            prop_assert_eq!(t.next.state, before.state);
                            prop_assert_eq!(t.next.failed_from, before.failed_from);
                        }
                        // Entering a wait state always arms its timer.
                        if let Some(kind) = t.next.state.wait_kind()
                            && t.next.state != before.state
                        {
                            let arms = t.actions.contains(&Action::StartTimer { kind });
                            prop_assert!(arms, "entering a wait state must arm its timer");
                        }
                        // Leaving a wait state always disarms it.
                        if before.state.is_waiting() && t.next.state != before.state {
                            let disarms = t.actions.contains(&Action::CancelTimer);
                            prop_assert!(disarms, "leaving a wait state must disarm its timer");
                        }
                        status = t.next;
                    }
                    Err(TransitionError::InMaintenance { .. }) => prop_assert!(before.maintenance),
                    Err(TransitionError::NotAllowed { state, .. }) => prop_assert_eq!(state, before.state),
                }
                prop_assert!(State::ALL.contains(&status.state));
            }
        }
    }
}
