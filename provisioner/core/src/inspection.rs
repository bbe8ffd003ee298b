//! Decisions of the inspection flow, pure: which command answers an agent,
//! which lifecycle events its inventory report fires, whether the operator
//! may ask a node's agent to apply its host plan, and how a discovered
//! machine is named. The daemon (`daemon::agent`) reads the store, asks
//! these functions, and performs the result.
//!
//! Invariants: no I/O, no clock, no tokio. The agent never decides a
//! node's lifecycle: it reports, and the answer is computed here from the
//! node's status.

use chrono::{DateTime, Utc};
use model::agent::{AgentState, Command};
use model::net::Mac;

use crate::lifecycle::{Event, NodeStatus, State};
use crate::site::{AfterInspection, LifecycleConfig};

/// How long after the agent was last heard from (heartbeat or inventory)
/// it still counts as up: three heartbeat intervals, at least 30 s.
pub fn agent_alive_s(heartbeat_interval_s: u32) -> i64 {
    (3 * i64::from(heartbeat_interval_s)).max(30)
}

/// The command answering an agent whose node is in `status`.
/// `reported_this_boot`: the node's stored inventory came from this boot
/// (after its token was issued). `apply_requested`: the operator asked to
/// apply the node's host plan and no report came since. `wait` answers
/// carry site.yaml's `lifecycle.heartbeat_interval`.
pub fn next_command(
    status: NodeStatus,
    reported_this_boot: bool,
    lifecycle: &LifecycleConfig,
    apply_requested: bool,
) -> Command {
    let wait = Command::Wait {
        interval_s: lifecycle.heartbeat_interval_s,
    };
    if status.maintenance {
        // Frozen: the agent keeps heartbeating, nothing changes under it.
        return wait;
    }
    match status.state {
        State::Enrolled | State::Inspecting => Command::Inspect,
        // Deploy and clean orders go to an agent whose inventory of this boot
        // was accepted (see [`agent_work`]); before that it inspects.
        State::Available | State::Deploying | State::Cleaning if !reported_this_boot => {
            Command::Inspect
        }
        State::Available if apply_requested => Command::Apply,
        State::Available => match lifecycle.after_inspection {
            AfterInspection::Poweroff => Command::Poweroff,
            AfterInspection::Wait => wait,
        },
        // Busy writing or erasing (or done, waiting for the BMC to reset it):
        // [`agent_work`] decides when there is an order to give.
        State::Deploying | State::Active | State::Cleaning | State::Failed => wait,
    }
}

/// An order the daemon must make for a node's ramdisk agent (it builds the
/// deploy order: credential, sealed config; it reads the erase mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentWork {
    /// Answer [`Command::Deploy`] with a fresh order.
    Deploy,
    /// Answer [`Command::Clean`] with the mode the operator asked for.
    Clean,
}

/// Whether the agent of a node in `status` gets a deploy or clean order now,
/// rather than [`next_command`]'s answer. `reported_this_boot`: its inventory
/// of this boot was accepted (the daemon also requires the boot to have begun
/// after the node entered its state); `agent_state`: what its last heartbeat of this
/// boot said (`None`: none yet); `image_written`: the image of the current
/// deploy was reported written (the node now waits for the BMC to boot it
/// from disk). An agent already deploying (or cleaning) is left to its work.
pub fn agent_work(
    status: NodeStatus,
    reported_this_boot: bool,
    agent_state: Option<AgentState>,
    image_written: bool,
) -> Option<AgentWork> {
    if status.maintenance || !reported_this_boot {
        return None;
    }
    match status.state {
        State::Deploying if !image_written && agent_state != Some(AgentState::Deploying) => {
            Some(AgentWork::Deploy)
        }
        State::Cleaning if agent_state != Some(AgentState::Cleaning) => Some(AgentWork::Clean),
        _ => None,
    }
}

/// Why node `name` cannot be deployed with `image`, or `None` when it can:
/// it needs a host plan, a host image of the catalog (`image_is_host`:
/// `None` when the catalog has no such image), and UEFI firmware (the host
/// image boots UEFI only). `firmware`: the stored inventory's, if any.
pub fn deploy_refusal(
    name: &str,
    has_plan: bool,
    plan_error: Option<&str>,
    image: Option<&str>,
    image_is_host: Option<bool>,
    firmware: Option<model::inventory::Firmware>,
) -> Option<String> {
    if !has_plan {
        return Some(format!(
            "node `{name}` has no host plan ({}): inspect it (`provisioner node inspect {name}`) \
             and give it a profile that matches",
            plan_error.unwrap_or("it was not matched to a profile yet")
        ));
    }
    let Some(image) = image else {
        return Some(format!(
            "no image to deploy on node `{name}`: pass `--image NAME`, or set `image:` on the \
             node in nodes.yaml or on its profile"
        ));
    };
    match image_is_host {
        None => {
            return Some(format!(
                "no image `{image}` in site.yaml `images` (node `{name}`): add it as \
                 `- name: {image}` with `host: PATH/manifest.json`"
            ));
        }
        Some(false) => {
            return Some(format!(
                "image `{image}` is not a host image (node `{name}`): only a `host:` image \
                 (a manifest.json of `provisioner image build host`) can be deployed"
            ));
        }
        Some(true) => {}
    }
    if firmware == Some(model::inventory::Firmware::Bios) {
        return Some(format!(
            "the host image boots UEFI only; switch node {name}'s firmware to UEFI (its \
             inventory says legacy BIOS), inspect it again, then deploy"
        ));
    }
    None
}

/// The answer to an agent's apply report: `inspect` when the apply changed
/// the machine (`changed`), so the stored inventory shows what it made (the
/// PF's `sriov_numvfs`, the VFs), else [`next_command`].
pub fn after_apply(
    status: NodeStatus,
    reported_this_boot: bool,
    lifecycle: &LifecycleConfig,
    changed: bool,
) -> Command {
    let next = next_command(status, reported_this_boot, lifecycle, false);
    if changed && status.state == State::Available && !status.maintenance {
        Command::Inspect
    } else {
        next
    }
}

/// Why `provisioner node apply` is refused for node `name`, or `None` when
/// its agent can be asked: the node must be available, out of maintenance,
/// with a host plan, and its agent heard from within [`agent_alive_s`].
pub fn apply_refusal(
    name: &str,
    status: NodeStatus,
    has_plan: bool,
    plan_error: Option<&str>,
    last_heard: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    heartbeat_interval_s: u32,
) -> Option<String> {
    if status.maintenance {
        return Some(format!(
            "node `{name}` is in maintenance: nothing is applied to it until              `provisioner node maintenance {name} off`"
        ));
    }
    if status.state != State::Available {
        return Some(format!(
            "node `{name}` is {}: the host plan is applied by the agent of the inspection              ramdisk, which runs while the node is available after an inspection",
            status.state
        ));
    }
    if !has_plan {
        return Some(format!(
            "node `{name}` has no host plan: {}",
            plan_error.unwrap_or("it was not matched to a profile yet")
        ));
    }
    let alive = last_heard
        .is_some_and(|at| (now - at).num_seconds() <= agent_alive_s(heartbeat_interval_s));
    if !alive {
        let heard = last_heard.map_or_else(|| "never".to_owned(), |at| at.to_rfc3339());
        return Some(format!(
            "the agent of node `{name}` is not running (last heard from: {heard}): set              `lifecycle.after_inspection: wait` in site.yaml so the agent stays up after              inspection, reload the site, run `provisioner node inspect {name}`, then apply"
        ));
    }
    None
}

/// The lifecycle events an accepted inventory fires on a node in `status`,
/// in order, with the reason recorded in the history. An enrolled node
/// that reports on its own (booted by hand, or just discovered) is inspected
/// first; an inspecting node becomes available; in any other state the
/// inventory is stored and the state left alone.
pub fn events_for_inventory(status: NodeStatus) -> Vec<Event> {
    if status.maintenance {
        return vec![];
    }
    match status.state {
        State::Enrolled => vec![Event::Inspect, Event::InventoryReceived],
        State::Inspecting => vec![Event::InventoryReceived],
        State::Available | State::Deploying | State::Active | State::Cleaning | State::Failed => {
            vec![]
        }
    }
}

/// The name of a discovered machine: `discovered-` plus its serial number
/// (lowercase; anything but letters and digits becomes `-`) when it has a
/// usable one, else plus its MAC's twelve hex digits.
pub fn discovered_name(mac: Mac, serial: Option<&str>) -> String {
    let from_mac = || {
        let hex: String = mac.octets().iter().map(|b| format!("{b:02x}")).collect();
        format!("discovered-{hex}")
    };
    let Some(serial) = serial else {
        return from_mac();
    };
    let mut slug = String::new();
    for c in serial.trim().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    let name = format!("discovered-{slug}");
    if slug.is_empty() || !model::profile::is_valid_name(&name) {
        from_mac()
    } else {
        name
    }
}

/// The name to fall back on when [`discovered_name`] is taken by another
/// machine (two machines with one serial happen with white-box boards).
pub fn discovered_name_by_mac(mac: Mac) -> String {
    discovered_name(mac, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: State, maintenance: bool) -> NodeStatus {
        NodeStatus {
            state,
            failed_from: (state == State::Failed).then_some(State::Inspecting),
            maintenance,
        }
    }

    #[test]
    fn the_answer_follows_the_node_state() {
        let wait = Command::Wait { interval_s: 10 };
        let p = AfterInspection::Poweroff;
        let cases = [
            (State::Enrolled, false, false, p, Command::Inspect),
            (State::Inspecting, false, false, p, Command::Inspect),
            (State::Available, false, true, p, Command::Poweroff),
            (
                State::Available,
                false,
                true,
                AfterInspection::Wait,
                wait.clone(),
            ),
            // An available node that boots the ramdisk again refreshes its inventory.
            (State::Available, false, false, p, Command::Inspect),
            (State::Available, true, true, p, wait.clone()),
            (State::Inspecting, true, false, p, wait.clone()),
            (State::Failed, false, false, p, wait.clone()),
            (State::Active, false, false, p, wait.clone()),
        ];
        let lifecycle = |after_inspection| LifecycleConfig {
            after_inspection,
            ..LifecycleConfig::default()
        };
        for (state, maintenance, this_boot, after, expected) in cases {
            assert_eq!(
                next_command(
                    status(state, maintenance),
                    this_boot,
                    &lifecycle(after),
                    false
                ),
                expected,
                "{state} maintenance={maintenance} this_boot={this_boot} {after:?}"
            );
        }
        // A requested apply goes to an available node's agent of this boot only.
        let w = lifecycle(AfterInspection::Wait);
        let apply = |state, maintenance, this_boot| {
            next_command(status(state, maintenance), this_boot, &w, true)
        };
        assert_eq!(apply(State::Available, false, true), Command::Apply);
        assert_eq!(apply(State::Available, false, false), Command::Inspect);
        assert_eq!(apply(State::Available, true, true), wait);
        assert_eq!(apply(State::Inspecting, false, true), Command::Inspect);
        assert_eq!(apply(State::Active, false, true), wait);
        // The site's heartbeat interval is what `wait` carries.
        let quick = LifecycleConfig {
            heartbeat_interval_s: 2,
            ..w
        };
        assert_eq!(
            next_command(status(State::Available, false), true, &quick, false),
            Command::Wait { interval_s: 2 }
        );
    }

    #[test]
    fn deploying_and_cleaning_agents_get_orders_once_inspected_and_not_while_busy() {
        let deploying = status(State::Deploying, false);
        let cleaning = status(State::Cleaning, false);
        let lifecycle = LifecycleConfig::default();
        // Before its inventory of this boot, the agent inspects.
        assert_eq!(
            next_command(deploying, false, &lifecycle, false),
            Command::Inspect
        );
        assert_eq!(agent_work(deploying, false, None, false), None);
        assert_eq!(
            agent_work(deploying, true, None, false),
            Some(AgentWork::Deploy)
        );
        assert_eq!(
            agent_work(deploying, true, Some(AgentState::Idle), false),
            Some(AgentWork::Deploy)
        );
        // Writing already, or written and waiting for the reset: no new order.
        assert_eq!(
            agent_work(deploying, true, Some(AgentState::Deploying), false),
            None
        );
        assert_eq!(
            agent_work(deploying, true, Some(AgentState::Idle), true),
            None
        );
        assert_eq!(
            next_command(deploying, true, &lifecycle, false),
            Command::Wait { interval_s: 10 }
        );
        assert_eq!(
            agent_work(cleaning, true, Some(AgentState::Idle), true),
            Some(AgentWork::Clean)
        );
        assert_eq!(
            agent_work(cleaning, true, Some(AgentState::Cleaning), false),
            None
        );
        // Frozen or elsewhere: nothing.
        assert_eq!(
            agent_work(status(State::Deploying, true), true, None, false),
            None
        );
        for state in [State::Available, State::Active, State::Failed] {
            assert_eq!(agent_work(status(state, false), true, None, false), None);
        }
    }

    #[test]
    fn deploy_is_refused_without_plan_image_host_image_or_uefi() {
        use model::inventory::Firmware;
        let ok = deploy_refusal(
            "n",
            true,
            None,
            Some("host"),
            Some(true),
            Some(Firmware::Uefi),
        );
        assert_eq!(ok, None);
        let cases = [
            (
                deploy_refusal(
                    "n",
                    false,
                    Some("no profile matched"),
                    Some("host"),
                    Some(true),
                    None,
                ),
                "no host plan (no profile matched)",
            ),
            (
                deploy_refusal("n", true, None, None, None, None),
                "pass `--image NAME`",
            ),
            (
                deploy_refusal("n", true, None, Some("x"), None, None),
                "no image `x`",
            ),
            (
                deploy_refusal("n", true, None, Some("ramdisk"), Some(false), None),
                "not a host image",
            ),
            (
                deploy_refusal(
                    "n",
                    true,
                    None,
                    Some("host"),
                    Some(true),
                    Some(Firmware::Bios),
                ),
                "the host image boots UEFI only; switch node n's firmware to UEFI",
            ),
        ];
        for (why, expected) in cases {
            let why = why.expect("refused");
            assert!(why.contains(expected), "{why}");
        }
    }

    #[test]
    fn a_changing_apply_is_followed_by_a_fresh_inventory() {
        let lifecycle = LifecycleConfig {
            after_inspection: AfterInspection::Wait,
            ..LifecycleConfig::default()
        };
        let available = status(State::Available, false);
        assert_eq!(
            after_apply(available, true, &lifecycle, true),
            Command::Inspect
        );
        assert_eq!(
            after_apply(available, true, &lifecycle, false),
            Command::Wait { interval_s: 10 }
        );
        let frozen = status(State::Available, true);
        assert_eq!(
            after_apply(frozen, true, &lifecycle, true),
            Command::Wait { interval_s: 10 }
        );
    }

    #[test]
    fn apply_is_refused_with_what_to_do() {
        let now: DateTime<Utc> = "2026-11-21T18:00:00Z".parse().unwrap();
        let ago = |s| Some(now - chrono::Duration::seconds(s));
        let ok = status(State::Available, false);
        let alive = agent_alive_s(10);
        assert_eq!((alive, agent_alive_s(2), agent_alive_s(60)), (30, 30, 180));
        assert_eq!(apply_refusal("n", ok, true, None, ago(5), now, 10), None);
        assert_eq!(
            apply_refusal("n", ok, true, None, ago(alive), now, 10),
            None
        );
        let cases = [
            (
                status(State::Available, true),
                true,
                ago(1),
                "maintenance n off",
            ),
            (status(State::Active, false), true, ago(1), "is active"),
            (ok, false, ago(1), "no host plan: no profile"),
            (ok, true, ago(alive + 1), "after_inspection: wait"),
            (ok, true, None, "last heard from: never"),
        ];
        for (s, has_plan, heard, expected) in cases {
            let why = apply_refusal("n", s, has_plan, Some("no profile"), heard, now, 10)
                .expect("refused");
            assert!(why.contains(expected), "{why}");
        }
    }

    #[test]
    fn an_inventory_moves_enrolled_and_inspecting_nodes_only() {
        assert_eq!(
            events_for_inventory(status(State::Enrolled, false)),
            [Event::Inspect, Event::InventoryReceived]
        );
        assert_eq!(
            events_for_inventory(status(State::Inspecting, false)),
            [Event::InventoryReceived]
        );
        for state in [State::Available, State::Active, State::Failed] {
            assert_eq!(events_for_inventory(status(state, false)), []);
        }
        assert_eq!(events_for_inventory(status(State::Inspecting, true)), []);
        // Every event sequence it returns is one the state machine accepts.
        for state in State::ALL {
            let mut s = status(state, false);
            for event in events_for_inventory(s) {
                s = crate::lifecycle::transition(s, event, &Default::default())
                    .unwrap()
                    .next;
            }
        }
    }

    #[test]
    fn discovered_names_come_from_the_serial_or_the_mac() {
        let mac: Mac = "52:54:00:AA:00:01".parse().unwrap();
        let cases = [
            (None, "discovered-525400aa0001"),
            (Some("CZ20 39/0ABC "), "discovered-cz20-39-0abc"),
            (Some("  "), "discovered-525400aa0001"),
            (Some("---"), "discovered-525400aa0001"),
            (Some(&"x".repeat(80)[..]), "discovered-525400aa0001"),
        ];
        for (serial, expected) in cases {
            let name = discovered_name(mac, serial);
            assert_eq!(name, expected, "{serial:?}");
            assert!(model::profile::is_valid_name(&name));
        }
    }
}
