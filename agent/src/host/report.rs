//! Host mode with a node config ([`super::config`]): on a thread of its own
//! (PID 1 keeps the console shell and reaps zombies), it loads the root's
//! modules, applies the config's plan ([`crate::apply`]: hugepages per NUMA
//! node, VFs and their driver; the kernel arguments are checked, see
//! [`super::kexec`]), brings up the NIC of `boot_mac` with the ramdisk's
//! DHCP client ([`crate::init`]) and keeps its lease, then posts a
//! [`HostReport`] to `{provisioner_url}/api/host/v1/report` with the node
//! credential, again after each [`HostCommand::Wait`], retrying with
//! back-off and saying on the console what to check.
//!
//! Invariants: only a verified config gets here; the report body
//! ([`host_report`]) and the console messages ([`failure_message`]) are pure;
//! [`run`] never returns.

use std::time::{Duration, Instant};

use model::apply::ApplyReport;
use model::deploy::{HostCommand, HostReport, NodeConfig};
use model::host::HostStatus;
use model::net::Mac;

use crate::net::Failure;
use crate::net::backoff::Backoff;
use crate::pid1::say;
use crate::sysroot::SysRoot;

/// The route of the host report.
pub const ROUTE: &str = "/api/host/v1/report";
/// The longest sleep between lease checks.
const LEASE_CHECK: Duration = Duration::from_secs(30);

/// The report of this boot.
pub fn host_report(
    config: &NodeConfig,
    status: &HostStatus,
    cmdline: &str,
    applied: &Result<ApplyReport, String>,
    uptime_s: u64,
) -> HostReport {
    HostReport {
        node: config.node.clone(),
        version: status.version.clone(),
        slot: status.slot,
        root_hash: status.root_hash.clone(),
        cmdline: cmdline.trim().to_owned(),
        trial: status.trial,
        blessed: status.blessed,
        rolled_back_from: status.rolled_back_from.clone(),
        apply: applied.as_ref().ok().cloned(),
        apply_error: applied.as_ref().err().cloned(),
        uptime_s,
    }
}

/// The console message of a failed report (without `host: `).
pub fn failure_message(url: &str, mac: Mac, failure: &Failure, retry: Duration) -> String {
    let retry = format!("retrying in {} s", retry.as_secs());
    match failure {
        Failure::Unreachable(err) => format!(
            "reporting to the provisioner failed: {err}; check the cable and switch port of the \
             NIC {mac}, that the provisioner runs, and that {url} is reachable from this \
             network; {retry}"
        ),
        Failure::Status {
            status: 401 | 403,
            error,
        } => format!(
            "the provisioner refuses this node's credential ({error}): the node was deleted or \
             deployed again there since this disk was written; redeploy it; {retry}"
        ),
        Failure::Status { status, error } => format!(
            "reporting to the provisioner: it answered {status} ({error}); see its log; {retry}"
        ),
        Failure::BadAnswer(err) => format!(
            "reporting to the provisioner: the answer is not a host command ({err}); is {url} a \
             provisioner of the same version? {retry}"
        ),
    }
}

/// What one report attempt gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted: report again after `next`; `say` when it is the first
    /// success (or the first after failures), to be said on the console.
    Sent { next: Duration, say: bool },
    /// Failed: the console message, and the pause before the next attempt.
    Failed { retry: Duration, message: String },
}

/// Posts reports with the node credential, backing off on failures.
pub struct Reporter {
    http: ureq::Agent,
    url: String,
    credential: String,
    mac: Mac,
    backoff: Backoff,
    quiet: bool,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credential is a secret: never formatted.
        f.debug_struct("Reporter")
            .field("url", &self.url)
            .field("mac", &self.mac)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    pub fn new(config: &NodeConfig, mac: Mac) -> Reporter {
        Reporter {
            http: ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(30)))
                    .timeout_connect(Some(Duration::from_secs(10)))
                    .http_status_as_error(false)
                    .build(),
            ),
            url: config.provisioner_url.trim_end_matches('/').to_owned(),
            credential: config.credential.clone(),
            mac,
            backoff: Backoff::new(Duration::from_secs(2), Duration::from_secs(120)),
            quiet: false,
        }
    }

    /// One attempt.
    pub fn report(&mut self, report: &HostReport) -> Outcome {
        match self.post(report) {
            Ok(HostCommand::Wait { interval_s }) => {
                self.backoff.reset();
                let say = !self.quiet;
                self.quiet = true;
                Outcome::Sent {
                    next: Duration::from_secs(u64::from(interval_s.max(1))),
                    say,
                }
            }
            Err(failure) => {
                self.quiet = false;
                let retry = self.backoff.fail();
                Outcome::Failed {
                    retry,
                    message: failure_message(&self.url, self.mac, &failure, retry),
                }
            }
        }
    }

    fn post(&self, report: &HostReport) -> Result<HostCommand, Failure> {
        let url = format!("{}{ROUTE}", self.url);
        let mut response = self
            .http
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.credential))
            .send_json(report)
            .map_err(|e| Failure::Unreachable(format!("{url}: {e}")))?;
        let status = response.status().as_u16();
        if status != 200 {
            let text = response.body_mut().read_to_string().unwrap_or_default();
            let error = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            return Err(Failure::Status { status, error });
        }
        response
            .body_mut()
            .read_json::<HostCommand>()
            .map_err(|e| Failure::BadAnswer(e.to_string()))
    }
}

/// Applies the plan to this host; a panic of the apply code becomes the
/// report's `apply_error` rather than the end of the reporting thread.
pub fn apply(config: &NodeConfig) -> Result<ApplyReport, String> {
    let plan = config.plan.clone();
    std::panic::catch_unwind(move || crate::apply::apply(&plan, &mut SysRoot::new("/", false)))
        .map_err(|panic| {
            format!(
                "internal error applying the plan (panic: {}); please report it with the console log",
                crate::pid1::panic_message(&*panic)
            )
        })
}

/// The configured host's work; never returns (a thread of host mode).
pub fn run(config: NodeConfig, status: HostStatus) -> ! {
    let mac = match config.boot_mac.parse::<Mac>() {
        Ok(mac) => mac,
        Err(e) => {
            say(&format!(
                "host: the config's boot_mac {:?} is not a MAC ({e}): not reporting; redeploy \
                 the node",
                config.boot_mac
            ));
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    };
    crate::pid1::load_modules();
    let started = Instant::now();
    let applied = apply(&config);
    match &applied {
        Ok(report) => {
            say(&format!(
                "host: applied the plan: {} in {:.1} s",
                report.summary(),
                started.elapsed().as_secs_f64()
            ));
            let summary = report.summary();
            for line in report.to_string().lines().filter(|l| *l != summary) {
                say(&format!("host: apply: {line}"));
            }
        }
        Err(e) => say(&format!("host: applying the plan FAILED: {e}")),
    }
    let nic = loop {
        match crate::net::wait_for_nic(mac) {
            Ok(nic) => break nic,
            Err(e) => say(&format!("host: {e}; still waiting")),
        }
    };
    let (mut lease, mut bound_at) = crate::net::bring_up(&nic, mac);
    let mut reporter = Reporter::new(&config, mac);
    loop {
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let report = host_report(&config, &status, &cmdline, &applied, uptime_s());
        let pause = match reporter.report(&report) {
            Outcome::Sent { next, say: first } => {
                if first {
                    say(&format!(
                        "host: reported to the provisioner ({}); next report in {} s",
                        reporter.url,
                        next.as_secs()
                    ));
                }
                next
            }
            Outcome::Failed { retry, message } => {
                say(&format!("host: {message}"));
                retry
            }
        };
        // Sleep in short steps so the lease is renewed in time.
        let until = Instant::now() + pause;
        loop {
            (lease, bound_at) = crate::net::keep_lease(&nic, mac, lease, bound_at);
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(LEASE_CHECK));
        }
    }
}

/// Seconds since the kernel booted (`/proc/uptime`).
fn uptime_s() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split('.').next()?.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    use std::net::TcpListener;
    use std::sync::mpsc;

    use model::host::Slot;

    fn status() -> HostStatus {
        HostStatus {
            version: "2".into(),
            slot: Slot::B,
            root_hash: "cd".repeat(32),
            trial: true,
            blessed: true,
            rolled_back_from: None,
        }
    }

    fn config(url: &str) -> NodeConfig {
        let mut c = super::super::config::tests::config();
        c.provisioner_url = url.to_owned();
        c
    }

    fn mac() -> Mac {
        "52:54:00:0c:00:01".parse().unwrap()
    }

    #[test]
    fn the_report_says_what_booted_and_what_applying_did() {
        let c = config("http://p");
        let report = host_report(&c, &status(), "a b\n", &Err("boom".into()), 42);
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::json!({
                "node": "lab-host-0", "version": "2", "slot": "b", "root_hash": "cd".repeat(32),
                "cmdline": "a b", "trial": true, "blessed": true, "rolled_back_from": null,
                "apply": null, "apply_error": "boom", "uptime_s": 42
            })
        );
    }

    /// An HTTP server on 127.0.0.1 answering each request with the next of
    /// `answers` (status, body); every request's head and body are sent on
    /// the channel.
    fn serve(answers: Vec<(u16, &'static str)>) -> (String, mpsc::Receiver<(String, String)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for ((status, body), stream) in answers.into_iter().zip(listener.incoming()) {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let mut request = vec![0u8; length];
                reader.read_exact(&mut request).unwrap();
                tx.send((head, String::from_utf8(request).unwrap()))
                    .unwrap();
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        (url, rx)
    }

    #[test]
    fn reports_with_the_credential_back_off_and_follow_wait() {
        let (url, requests) = serve(vec![
            (503, r#"{"error":"starting"}"#),
            (200, r#"{"command":"wait","interval_s":7}"#),
            (200, r#"{"command":"wait","interval_s":0}"#),
            (401, r#"{"error":"unknown credential"}"#),
            (200, r#"{"command":"reboot"}"#),
        ]);
        let c = config(&format!("{url}/"));
        let mut reporter = Reporter::new(&c, mac());
        let report = host_report(&c, &status(), "x", &Err("e".into()), 1);
        let Outcome::Failed { retry, message } = reporter.report(&report) else {
            panic!("503 must fail")
        };
        assert_eq!(retry, Duration::from_secs(2));
        assert!(message.contains("answered 503 (starting)"), "{message}");
        let (head, body) = requests.recv().unwrap();
        assert!(
            head.starts_with("POST /api/host/v1/report HTTP/1.1"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("authorization: bearer {}", "c".repeat(64))),
            "{head}"
        );
        assert_eq!(serde_json::from_str::<HostReport>(&body).unwrap(), report);
        assert_eq!(
            reporter.report(&report),
            Outcome::Sent {
                next: Duration::from_secs(7),
                say: true
            }
        );
        assert_eq!(
            reporter.report(&report),
            Outcome::Sent {
                next: Duration::from_secs(1),
                say: false
            }
        );
        let Outcome::Failed { retry, message } = reporter.report(&report) else {
            panic!("401 must fail")
        };
        assert_eq!(
            retry,
            Duration::from_secs(2),
            "the back-off restarts after a success"
        );
        assert!(message.contains("redeploy it"), "{message}");
        let Outcome::Failed { message, .. } = reporter.report(&report) else {
            panic!("an unknown command must fail")
        };
        assert!(message.contains("not a host command"), "{message}");
    }

    #[test]
    fn an_unreachable_provisioner_says_what_to_check() {
        // A port nothing listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let c = config(&url);
        let mut reporter = Reporter::new(&c, mac());
        let report = host_report(&c, &status(), "x", &Err("e".into()), 1);
        let Outcome::Failed { retry, message } = reporter.report(&report) else {
            panic!("nothing listens")
        };
        assert_eq!(retry, Duration::from_secs(2));
        assert!(
            message.starts_with("reporting to the provisioner failed: ")
                && message.contains("check the cable and switch port of the NIC 52:54:00:0c:00:01")
                && message.contains(&format!("that {url} is reachable")),
            "{message}"
        );
        let Outcome::Failed { retry, .. } = reporter.report(&report) else {
            panic!("nothing listens")
        };
        assert_eq!(retry, Duration::from_secs(4));
    }
}
