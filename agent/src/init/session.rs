//! The agent's conversation with the provisioner, as a pure state machine:
//! which request to send next, and what to do with its answer or failure
//! (the next command, a pause with back-off, a console message saying what
//! to check). The edge ([`super::run`]) performs the requests and actions.

use std::time::Duration;

use model::agent::{AgentState, Command};
use model::deploy::{DeployOrder, EraseMode};

use crate::net::backoff::Backoff;

/// The next request to the provisioner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Inspect and `POST /api/agent/v1/inventory`.
    Inventory,
    /// `POST /api/agent/v1/heartbeat`.
    Heartbeat,
    /// `GET /api/agent/v1/plan`, apply it, `POST /api/agent/v1/applied`.
    Apply,
    /// Write the host image, `POST /api/agent/v1/deployed`.
    Deploy(Box<DeployOrder>),
    /// Erase the disks, `POST /api/agent/v1/cleaned`.
    Clean(EraseMode),
}

/// What the edge does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Pause, then send [`Session::next_request`].
    Sleep(Duration),
    /// Get a new address (DHCP again), then go on.
    Renetwork,
    PowerOff,
    Reboot,
}

pub use crate::net::Failure;

/// After this many network failures in a row, the address is renewed.
const RENETWORK_AFTER: u32 = 6;
/// After this many refused tokens in a row, the machine reboots: only a new
/// network boot gets a new token.
const REBOOT_AFTER_401: u32 = 5;

/// The conversation's state.
#[derive(Debug, Clone)]
pub struct Session {
    url: String,
    need_inventory: bool,
    need_apply: bool,
    /// A deploy or clean to do (or whose report is still to be accepted).
    work: Option<Request>,
    state: AgentState,
    last_error: Option<String>,
    backoff: Backoff,
    refused_tokens: u32,
}

impl Session {
    pub fn new(url: &str) -> Session {
        Session {
            url: url.to_owned(),
            need_inventory: true,
            need_apply: false,
            work: None,
            state: AgentState::Starting,
            last_error: None,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            refused_tokens: 0,
        }
    }

    pub fn next_request(&self) -> Request {
        if self.need_inventory {
            Request::Inventory
        } else if let Some(work) = &self.work {
            work.clone()
        } else if self.need_apply {
            Request::Apply
        } else {
            Request::Heartbeat
        }
    }

    /// The state and last error to report in a heartbeat.
    pub fn report(&self) -> (AgentState, Option<String>) {
        (self.state, self.last_error.clone())
    }

    /// The provisioner answered `request` with `command`.
    pub fn on_command(&mut self, request: Request, command: Command) -> (Action, String) {
        self.backoff.reset();
        self.refused_tokens = 0;
        if request == Request::Inventory {
            self.need_inventory = false;
            self.state = AgentState::Idle;
            self.last_error = None;
        }
        if request == Request::Apply {
            // The report was accepted.
            self.need_apply = false;
        }
        if matches!(request, Request::Deploy(_) | Request::Clean(_)) {
            // The report was accepted.
            self.work = None;
            self.state = AgentState::Idle;
        }
        match command {
            Command::Wait { interval_s } => (
                Action::Sleep(Duration::from_secs(u64::from(interval_s.max(1)))),
                String::new(),
            ),
            Command::Inspect => {
                self.need_inventory = true;
                (
                    Action::Sleep(Duration::ZERO),
                    "provisioner asks for the inventory: inspecting".to_owned(),
                )
            }
            Command::Poweroff => (
                Action::PowerOff,
                "provisioner: inspection done, powering off".to_owned(),
            ),
            Command::Reboot => (Action::Reboot, "provisioner: rebooting".to_owned()),
            Command::Apply => {
                self.need_apply = true;
                (
                    Action::Sleep(Duration::ZERO),
                    "provisioner asks to apply the host plan".to_owned(),
                )
            }
            Command::Deploy(order) => {
                let message = format!(
                    "provisioner asks to deploy image {} version {} ({} bytes raw)",
                    order.image, order.version, order.raw_size
                );
                self.work = Some(Request::Deploy(order));
                self.state = AgentState::Deploying;
                (Action::Sleep(Duration::ZERO), message)
            }
            Command::Clean { mode } => {
                self.work = Some(Request::Clean(mode));
                self.state = AgentState::Cleaning;
                (
                    Action::Sleep(Duration::ZERO),
                    format!("provisioner asks to erase the disks ({mode:?})"),
                )
            }
        }
    }

    /// `request` failed: what to do, and the console message (what happened
    /// and what to check).
    pub fn on_failure(&mut self, request: Request, failure: &Failure) -> (Action, String) {
        let what = match request {
            Request::Inventory => "posting the inventory",
            Request::Heartbeat => "sending a heartbeat",
            Request::Apply => "applying the host plan",
            Request::Deploy(_) => "deploying the host image",
            Request::Clean(_) => "erasing the disks",
        };
        let delay = self.backoff.fail();
        let retry = format!("retrying in {} s", delay.as_secs());
        let (action, message) = match failure {
            Failure::Unreachable(err) => {
                let check = format!(
                    "check the cable and switch port, that the provisioner runs, and that {} is reachable from this network",
                    self.url
                );
                if self.backoff.failures().is_multiple_of(RENETWORK_AFTER) {
                    (
                        Action::Renetwork,
                        format!("{what} failed: {err}; {check}; asking DHCP for an address again"),
                    )
                } else {
                    (
                        Action::Sleep(delay),
                        format!("{what} failed: {err}; {check}; {retry}"),
                    )
                }
            }
            Failure::Status { status: 401, error } => {
                self.refused_tokens += 1;
                if self.refused_tokens >= REBOOT_AFTER_401 {
                    (
                        Action::Reboot,
                        format!(
                            "{what}: the provisioner refuses this boot's token ({error}); a newer network \
                             boot of this MAC replaced it: rebooting to get a fresh one"
                        ),
                    )
                } else {
                    (
                        Action::Sleep(delay),
                        format!(
                            "{what}: the provisioner refuses this boot's token ({error}); {retry}"
                        ),
                    )
                }
            }
            Failure::Status { status: 403, error } => (
                Action::Sleep(delay),
                format!(
                    "{what}: refused ({error}); the operator must list this machine in nodes.yaml or \
                     enable discovery in site.yaml; {retry}"
                ),
            ),
            Failure::Status { status, error } => (
                Action::Sleep(delay),
                format!(
                    "{what}: the provisioner answered {status} ({error}); see its log; {retry}"
                ),
            ),
            Failure::BadAnswer(err) => (
                Action::Sleep(delay),
                format!(
                    "{what}: the answer is not a command ({err}); is {} a provisioner of the same version? {retry}",
                    self.url
                ),
            ),
        };
        self.state = AgentState::Error;
        self.last_error = Some(message.clone());
        (action, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://10.213.0.1:8080";

    #[test]
    fn inventory_first_then_heartbeats_as_commanded() {
        let mut s = Session::new(URL);
        assert_eq!(s.next_request(), Request::Inventory);
        assert_eq!(s.report(), (AgentState::Starting, None));
        let (action, _) = s.on_command(Request::Inventory, Command::Wait { interval_s: 10 });
        assert_eq!(action, Action::Sleep(Duration::from_secs(10)));
        assert_eq!(s.next_request(), Request::Heartbeat);
        assert_eq!(s.report(), (AgentState::Idle, None));
        // "inspect" sends the inventory again at once.
        let (action, _) = s.on_command(Request::Heartbeat, Command::Inspect);
        assert_eq!(action, Action::Sleep(Duration::ZERO));
        assert_eq!(s.next_request(), Request::Inventory);
        assert_eq!(
            s.on_command(Request::Inventory, Command::Poweroff).0,
            Action::PowerOff
        );
        assert_eq!(
            s.on_command(Request::Heartbeat, Command::Reboot).0,
            Action::Reboot
        );
    }

    #[test]
    fn apply_is_one_request_until_its_report_is_accepted() {
        let mut s = Session::new(URL);
        s.on_command(Request::Inventory, Command::Wait { interval_s: 10 });
        let (action, message) = s.on_command(Request::Heartbeat, Command::Apply);
        assert_eq!(action, Action::Sleep(Duration::ZERO));
        assert!(message.contains("apply"), "{message}");
        assert_eq!(s.next_request(), Request::Apply);
        // A failed post is retried (the edge keeps the report it made).
        let down = Failure::Unreachable("connection refused".into());
        let (action, message) = s.on_failure(Request::Apply, &down);
        assert_eq!(action, Action::Sleep(Duration::from_secs(1)));
        assert!(
            message.starts_with("applying the host plan failed"),
            "{message}"
        );
        assert_eq!(s.next_request(), Request::Apply);
        // The report accepted with `inspect` as the answer: inventory next, nothing owed.
        s.on_command(Request::Apply, Command::Inspect);
        assert_eq!(s.next_request(), Request::Inventory);
        s.on_command(Request::Inventory, Command::Wait { interval_s: 10 });
        assert_eq!(s.next_request(), Request::Heartbeat);
        // Accepted: back to heartbeats.
        s.on_command(Request::Heartbeat, Command::Apply);
        s.on_command(Request::Apply, Command::Wait { interval_s: 10 });
        assert_eq!(s.next_request(), Request::Heartbeat);
    }

    #[test]
    fn network_loss_backs_off_says_what_to_check_and_renews_the_address() {
        let mut s = Session::new(URL);
        let down = Failure::Unreachable("connection refused".into());
        let mut actions = vec![];
        for _ in 0..RENETWORK_AFTER {
            let (action, message) = s.on_failure(Request::Inventory, &down);
            assert!(
                message.contains(URL) && message.contains("check"),
                "{message}"
            );
            actions.push(action);
        }
        let secs = |n| Action::Sleep(Duration::from_secs(n));
        assert_eq!(
            actions,
            [
                secs(1),
                secs(2),
                secs(4),
                secs(8),
                secs(16),
                Action::Renetwork
            ]
        );
        let (state, error) = s.report();
        assert_eq!(state, AgentState::Error);
        assert!(error.unwrap().contains("connection refused"));
        // The inventory is still owed; a success resets the back-off.
        assert_eq!(s.next_request(), Request::Inventory);
        s.on_command(Request::Inventory, Command::Wait { interval_s: 5 });
        assert_eq!(s.on_failure(Request::Heartbeat, &down).0, secs(1));
    }

    #[test]
    fn a_refused_token_ends_in_a_reboot_and_other_errors_retry() {
        let mut s = Session::new(URL);
        let refused = Failure::Status {
            status: 401,
            error: "unknown or superseded boot token".into(),
        };
        for _ in 1..REBOOT_AFTER_401 {
            assert!(matches!(
                s.on_failure(Request::Inventory, &refused).0,
                Action::Sleep(_)
            ));
        }
        let (action, message) = s.on_failure(Request::Inventory, &refused);
        assert_eq!(action, Action::Reboot);
        assert!(message.contains("fresh"), "{message}");

        let mut s = Session::new(URL);
        let off = Failure::Status {
            status: 403,
            error: "discovery is off".into(),
        };
        for _ in 0..20 {
            let (action, message) = s.on_failure(Request::Inventory, &off);
            assert!(matches!(action, Action::Sleep(d) if d <= Duration::from_secs(60)));
            assert!(message.contains("nodes.yaml"), "{message}");
        }
        let (_, message) = s.on_failure(Request::Heartbeat, &Failure::BadAnswer("eof".into()));
        assert!(message.contains("not a command"), "{message}");
    }
}
