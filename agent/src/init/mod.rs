//! `node-agent` as PID 1 of the inspection ramdisk (`/init`, or
//! `node-agent init`): mounts the kernel file systems; when the kernel
//! command line has `host.*` words (a UKI of the host image) hands over to
//! [`crate::host::boot`]; otherwise loads the modules of
//! `/lib/modules/load-order`, brings up the boot NIC with its own DHCP
//! client, then posts the inventory to the provisioner, heartbeats and
//! obeys its commands (including `apply`: fetch the node's host plan, apply
//! it to this machine with [`crate::apply`], post the report; `deploy` and
//! `clean`: [`crate::deploy`] on a worker thread while this loop sends a
//! heartbeat with the progress every 5 s, then the report, posted until
//! accepted and never redone).
//!
//! Invariants:
//! - [`run`] never returns: PID 1 exiting panics the kernel. A fatal error
//!   is printed and the machine reboots after a pause (it network-boots
//!   again); a panic is caught the same way.
//! - Every failure is printed on the console with what to check; nothing
//!   is retried silently, nothing is given up silently.
//! - The decisions are pure and unit-tested ([`cmdline`], [`session`], and
//!   the network's in [`crate::net`]); this file is the thin side-effecting
//!   edge.

pub mod cmdline;
pub mod session;

use std::time::{Duration, Instant};

use model::agent::{AppliedReport, Command, Heartbeat, InventoryReport};
use model::deploy::{CleanedReport, DeployOrder, DeployProgress, DeployedReport, EraseMode};
use model::inventory::Disk;
use model::inventory::Inventory;
use model::plan::HostPlan;

use crate::pid1::{load_modules, say};
use crate::sysroot::SysRoot;

use crate::net::{bring_up, keep_lease, wait_for_nic};
use cmdline::BootParams;
use session::{Action, Failure, Request, Session};

/// How long a fatal error is shown before the machine reboots.
const FATAL_PAUSE: Duration = Duration::from_secs(30);

/// Runs the agent as init. `inspect` reads this machine's inventory.
pub fn run(inspect: &dyn Fn() -> Inventory) -> ! {
    let started = Instant::now();
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| main_loop(inspect, started)));
    let message = match outcome {
        Ok(Err(message)) => message,
        Err(panic) => format!(
            "internal error (panic): {}; please report it with this console log",
            crate::pid1::panic_message(&*panic)
        ),
    };
    say(&format!(
        "FATAL: {message}; rebooting in {} s",
        FATAL_PAUSE.as_secs()
    ));
    std::thread::sleep(FATAL_PAUSE);
    power(Action::Reboot)
}

/// Mounts, loads modules, brings the network up and talks to the
/// provisioner. Returns only on an error that needs a reboot.
fn main_loop(
    inspect: &dyn Fn() -> Inventory,
    started: Instant,
) -> Result<std::convert::Infallible, String> {
    mount_kernel_filesystems();
    say("started");
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| format!("cannot read /proc/cmdline: {e}"))?;
    // A UKI of the host image carries `host.*` words: boot the installed host.
    if let Some(boot) = model::host::HostBoot::from_cmdline(&cmdline).map_err(|e| e.to_string())? {
        return crate::host::boot::run(&boot);
    }
    let params = cmdline::parse(&cmdline).map_err(|e| e.to_string())?;
    say(&format!(
        "provisioner {}, boot MAC {}",
        params.url, params.mac
    ));
    load_modules();
    let nic = wait_for_nic(params.mac)?;
    let (mut lease, mut bound_at) = bring_up(&nic, params.mac);
    let http = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build(),
    );
    let mut session = Session::new(&params.url);
    // An apply report whose post failed: posted again rather than applying twice.
    let mut unsent_report: Option<AppliedReport> = None;
    // A deploy or clean report whose post failed: posted again, never redone.
    let mut unsent_work: Option<WorkReport> = None;
    loop {
        (lease, bound_at) = keep_lease(&nic, params.mac, lease, bound_at);
        let request = session.next_request();
        let result = match &request {
            Request::Inventory => {
                say("inspecting the hardware");
                let report = InventoryReport {
                    mac: params.mac.to_string(),
                    inventory: inspect(),
                };
                post(&http, &params, "inventory", &report)
            }
            Request::Heartbeat => heartbeat(&http, &params, &session, started, None),
            Request::Apply => {
                let made = match unsent_report.take() {
                    Some(report) => Ok(report),
                    None => apply_plan(&http, &params),
                };
                made.and_then(|report| {
                    post(&http, &params, "applied", &report).inspect_err(|_| {
                        unsent_report = Some(report);
                    })
                })
            }
            Request::Deploy(_) | Request::Clean(_) => {
                let report = match unsent_work.take() {
                    Some(report) => report,
                    None => {
                        let disks = inspect().disks;
                        let mut beat = |progress| {
                            (lease, bound_at) = keep_lease(&nic, params.mac, lease, bound_at);
                            work_heartbeat(&http, &params, &session, started, progress);
                        };
                        do_work(&params, &request, &disks, &mut beat)
                    }
                };
                let posted = match &report {
                    WorkReport::Deployed(r) => post(&http, &params, "deployed", r),
                    WorkReport::Cleaned(r) => post(&http, &params, "cleaned", r),
                };
                posted.inspect_err(|_| unsent_work = Some(report))
            }
        };
        let (action, message) = match result {
            Ok(command) => {
                if request == Request::Inventory {
                    say("inventory accepted");
                }
                session.on_command(request, command)
            }
            Err(failure) => session.on_failure(request, &failure),
        };
        if !message.is_empty() {
            say(&message);
        }
        match action {
            Action::Sleep(pause) => std::thread::sleep(pause),
            Action::Renetwork => (lease, bound_at) = bring_up(&nic, params.mac),
            Action::PowerOff | Action::Reboot => power(action),
        }
    }
}

/// Fetches the node's host plan and applies it to this machine. A plan the
/// provisioner cannot give (none stored, unreadable) becomes a report with
/// the error, so the operator sees it; a network failure or a refused token
/// is a [`Failure`] (retried, with the session's back-off).
fn apply_plan(http: &ureq::Agent, params: &BootParams) -> Result<AppliedReport, Failure> {
    let mac = params.mac.to_string();
    let failed = |error: String| {
        say(&format!("apply: {error}"));
        AppliedReport {
            mac: mac.clone(),
            report: None,
            error: Some(error),
        }
    };
    let url = format!("{}/api/agent/v1/plan", params.url);
    let mut response = http
        .get(&url)
        .header("Authorization", &format!("Bearer {}", params.token))
        .call()
        .map_err(|e| Failure::Unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| Failure::Unreachable(format!("reading the plan: {e}")))?;
    if status == 401 {
        return Err(Failure::Status {
            status,
            error: error_of(&text),
        });
    }
    if status != 200 {
        return Ok(failed(format!(
            "the provisioner gave no plan (HTTP {status}: {})",
            error_of(&text)
        )));
    }
    let plan: HostPlan = match serde_json::from_str(&text) {
        Ok(plan) => plan,
        Err(e) => {
            return Ok(failed(format!(
                "the plan from {url} is not a host plan ({e}): are the agent and the provisioner \
                 the same version?"
            )));
        }
    };
    say(&format!(
        "applying the host plan of profile {}",
        plan.profile
    ));
    let started = Instant::now();
    let report = crate::apply::apply(&plan, &mut SysRoot::new("/", false));
    for line in report.to_string().lines() {
        say(&format!("apply: {line}"));
    }
    say(&format!(
        "apply: done in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(AppliedReport {
        mac,
        report: Some(report),
        error: None,
    })
}

/// How often a deploy or clean sends a heartbeat with its progress.
const WORK_BEAT: Duration = Duration::from_secs(5);

/// Runs `job` on a worker thread with a shared [`crate::deploy::Progress`];
/// meanwhile calls `beat` with the progress every [`WORK_BEAT`].
fn with_heartbeats<T: Send>(
    job: impl FnOnce(&crate::deploy::Progress) -> T + Send,
    beat: &mut dyn FnMut(Option<DeployProgress>),
) -> T {
    let progress = crate::deploy::Progress::default();
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let progress = &progress;
        let worker = scope.spawn(move || {
            let result = job(progress);
            let _ = done_tx.send(());
            result
        });
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(WORK_BEAT)
        {
            beat(progress.snapshot());
        }
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Posts a heartbeat with the session's state (and a deploy's progress).
fn heartbeat(
    http: &ureq::Agent,
    params: &BootParams,
    session: &Session,
    started: Instant,
    progress: Option<DeployProgress>,
) -> Result<Command, Failure> {
    let (state, last_error) = session.report();
    let beat = Heartbeat {
        mac: params.mac.to_string(),
        state,
        uptime_s: started.elapsed().as_secs(),
        last_error,
        progress,
    };
    post(http, params, "heartbeat", &beat)
}

/// A heartbeat while deploying or cleaning; its answer is not obeyed (the
/// work finishes first), a failure is only said.
fn work_heartbeat(
    http: &ureq::Agent,
    params: &BootParams,
    session: &Session,
    started: Instant,
    progress: Option<DeployProgress>,
) {
    if let Err(failure) = heartbeat(http, params, session, started, progress) {
        say(&format!(
            "heartbeat during the work failed ({failure:?}); the work goes on"
        ));
    }
}

/// The report of a deploy or a clean.
#[derive(Debug)]
enum WorkReport {
    Deployed(DeployedReport),
    Cleaned(CleanedReport),
}

/// Does the deploy or clean `request` asks for (with heartbeats); its report.
fn do_work(
    params: &BootParams,
    request: &Request,
    disks: &[Disk],
    beat: &mut dyn FnMut(Option<DeployProgress>),
) -> WorkReport {
    match request {
        Request::Clean(mode) => WorkReport::Cleaned(clean_disks(params, *mode, disks, beat)),
        Request::Deploy(order) => WorkReport::Deployed(deploy_disk(params, order, disks, beat)),
        Request::Inventory | Request::Heartbeat | Request::Apply => {
            unreachable!("only deploy and clean are work")
        }
    }
}

/// Writes the ordered image ([`crate::deploy::deploy`]); the report to post.
fn deploy_disk(
    params: &BootParams,
    order: &DeployOrder,
    disks: &[Disk],
    beat: &mut dyn FnMut(Option<DeployProgress>),
) -> DeployedReport {
    let started = Instant::now();
    let result = with_heartbeats(
        |progress| {
            let sys = SysRoot::new("/", false);
            let retry = crate::deploy::fetch::Retry::default();
            crate::deploy::deploy(order, disks, &sys, retry, progress, &|l| {
                say(&format!("deploy: {l}"));
            })
        },
        beat,
    );
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let (disk, written_bytes, error, step) = match result {
        Ok((disk, written)) => {
            say(&format!(
                "deploy: done in {:.1} s; reporting to the provisioner",
                elapsed_ms as f64 / 1000.0
            ));
            (Some(disk), written.raw_bytes, None, None)
        }
        Err((disk, failure)) => {
            say(&format!("deploy FAILED at step {failure}"));
            (
                disk,
                0,
                Some(failure.message),
                Some(failure.step.to_owned()),
            )
        }
    };
    DeployedReport {
        mac: params.mac.to_string(),
        disk,
        written_bytes,
        elapsed_ms,
        error,
        step,
    }
}

/// Erases the disks ([`crate::deploy::clean`]); the report to post.
fn clean_disks(
    params: &BootParams,
    mode: EraseMode,
    disks: &[Disk],
    beat: &mut dyn FnMut(Option<DeployProgress>),
) -> CleanedReport {
    let result = with_heartbeats(
        |progress| {
            let sys = SysRoot::new("/", false);
            crate::deploy::clean(mode, disks, &sys, progress, &|l| {
                say(&format!("clean: {l}"));
            })
        },
        beat,
    );
    let (disks, error) = match result {
        Ok(disks) => (disks, None),
        Err((disks, failure)) => {
            say(&format!("clean FAILED: {failure}"));
            (disks, Some(failure.to_string()))
        }
    };
    CleanedReport {
        mac: params.mac.to_string(),
        disks,
        mode,
        error,
    }
}

/// The `error` of an error answer's JSON body, else the body itself.
fn error_of(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.to_owned())
}

fn post<T: serde::Serialize>(
    http: &ureq::Agent,
    params: &BootParams,
    path: &str,
    body: &T,
) -> Result<Command, Failure> {
    let url = format!("{}/api/agent/v1/{path}", params.url);
    let mut response = http
        .post(&url)
        .header("Authorization", &format!("Bearer {}", params.token))
        .send_json(body)
        .map_err(|e| Failure::Unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    if status != 200 {
        let text = response.body_mut().read_to_string().unwrap_or_default();
        return Err(Failure::Status {
            status,
            error: error_of(&text),
        });
    }
    response
        .body_mut()
        .read_json::<Command>()
        .map_err(|e| Failure::BadAnswer(e.to_string()))
}

/// Mounts proc, sys, dev (devtmpfs) and run; one already mounted is fine.
fn mount_kernel_filesystems() {
    use nix::mount::{MsFlags, mount};
    for (source, target, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tmpfs", "/run", "tmpfs"),
    ] {
        let _ = std::fs::create_dir_all(target);
        match mount(
            Some(source),
            target,
            Some(fstype),
            MsFlags::MS_NOSUID,
            None::<&str>,
        ) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(err) => say(&format!(
                "cannot mount {fstype} on {target}: {err}; the kernel may lack it (check its config)"
            )),
        }
    }
}

/// Powers off or reboots ([`crate::pid1`]).
fn power(action: Action) -> ! {
    match action {
        Action::PowerOff => crate::pid1::power_off(),
        _ => crate::pid1::reboot(),
    }
}
