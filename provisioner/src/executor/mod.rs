//! The lifecycle executor: carries out the BMC actions of committed transitions.
//!
//! [`crate::app::App::fire`] writes each transition's BMC actions (boot device,
//! power) to the `node_jobs` outbox in the transition's own transaction; this loop
//! drains the outbox. So a `kill -9` between the commit and the BMC call loses
//! nothing: the restarted daemon finds the job and carries it out, and a node whose
//! actions never succeed still leaves its wait state through the timeout sweep.
//!
//! Invariants:
//! - Only the latest transition's actions run: a newer transition replaces or removes
//!   the job, and a job is finished or rescheduled only while it is still the node's.
//! - At most `lifecycle.max_concurrent_boots` nodes boot at once; a node waiting for
//!   its turn keeps its job, and its wait-state timeout is armed again when the BMC
//!   accepts the power-on (time in the queue does not count).
//! - Transient BMC failures are retried with back-off ([`retry`]); the last failure
//!   fails the node with the BMC's message, which says what to check.
//! - Zero-touch (`lifecycle.auto_inspect`, default on): an enrolled node with a BMC
//!   is inspected without anyone asking, within the boot limit.
//! - A node without a BMC is powered by hand: its job is dropped with a log line, and
//!   the wait state's timeout still applies.

pub(crate) mod retry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tracing::{error, info, warn};

use crate::app::{App, AppError};
use crate::bmc::{self, Bmc as _, BootMode, BootOverride, PowerAction, PowerState};
use crate::lifecycle::{Action, BootDevice, Event};
use crate::progress::Step;
use crate::store::Job;
use retry::{RetryPolicy, Verdict};

/// How often the outbox is looked at when nothing wakes the loop.
const TICK: Duration = Duration::from_secs(1);

/// Nodes whose job is running, and whether that job powers the node on.
type Running = Arc<Mutex<HashMap<String, bool>>>;

/// Runs the executor until the task is aborted.
pub(crate) async fn run(app: Arc<App>) {
    let running: Running = Arc::default();
    loop {
        if let Err(err) = tick(&app, &running).await {
            error!(%err, "executor: cannot read the job queue; retrying");
        }
        tokio::select! {
            () = app.wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Zero-touch (`lifecycle.auto_inspect`): starts the inspection of every enrolled
/// node that has a BMC. Returns how many were started.
pub(crate) async fn inspect_enrolled(app: &Arc<App>) -> Result<usize, AppError> {
    if !app.site().config.lifecycle.auto_inspect {
        return Ok(0);
    }
    let mut started = 0;
    for name in app.store.enrolled_with_bmc().await? {
        match app
            .fire(
                &name,
                Event::Inspect,
                Some("zero-touch: enrolled with a BMC".into()),
            )
            .await
        {
            Ok(_) => started += 1,
            // Moved on meanwhile (an operator's event): nothing to do.
            Err(AppError::Transition(_)) => {}
            Err(err) => warn!(node = %name, %err, "zero-touch inspection not started"),
        }
    }
    Ok(started)
}

/// Starts every due job that may start now; returns how many started.
pub(crate) async fn tick(app: &Arc<App>, running: &Running) -> Result<usize, AppError> {
    inspect_enrolled(app).await?;
    let now = Utc::now();
    let jobs = app.store.due_jobs(now).await?;
    if jobs.is_empty() {
        return Ok(0);
    }
    let lifecycle = app.site().config.lifecycle;
    let mut booting = usize::try_from(app.store.booting().await?).unwrap_or(usize::MAX);
    let mut started = 0;
    let mut held_back = vec![];
    {
        let mut guard = running.lock().unwrap_or_else(|p| p.into_inner());
        booting += guard.values().filter(|powers_on| **powers_on).count();
        for job in jobs {
            if guard.contains_key(&job.node) {
                continue;
            }
            let powers_on = job.actions.contains(&Action::PowerOnOrReset);
            if powers_on && booting >= lifecycle.max_concurrent_boots {
                held_back.push(job);
                continue;
            }
            booting += usize::from(powers_on);
            guard.insert(job.node.clone(), powers_on);
            started += 1;
            let (app, running) = (Arc::clone(app), Arc::clone(running));
            tokio::spawn(async move {
                let name = job.node.clone();
                if let Err(err) = carry_out(&app, job).await {
                    error!(node = %name, %err, "executor: job failed unexpectedly; it stays queued");
                }
                running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&name);
                app.wake.notify_one();
            });
        }
    }
    // Time spent waiting for a turn does not count against the wait state.
    for job in held_back {
        restart_timeout(app, &job).await;
    }
    Ok(started)
}

/// One attempt at a job: every action in order, then finish, reschedule or fail.
async fn carry_out(app: &Arc<App>, job: Job) -> Result<(), AppError> {
    let node = app.store.node(&job.node).await?;
    let config = match app.bmc_config(&node) {
        Ok(config) => config,
        Err(AppError::NoBmc(_)) => {
            info!(node = %node.name, actions = %crate::lifecycle::describe_actions(&job.actions),
                "node has no BMC: power it on by hand (network boot); its timeout still applies");
            app.store.drop_job(&job.node, job.generation).await?;
            return Ok(());
        }
        Err(err) => return fail(app, &job, format!("cannot reach the BMC: {err}")).await,
    };
    let attempt = job.attempts + 1;
    let outcome = async {
        let driver = bmc::connect(config).await?;
        let result = perform(app, &driver, &job).await;
        if let Err(err) = driver.close().await {
            warn!(node = %job.node, %err, "closing the BMC session failed");
        }
        result
    }
    .await;
    match outcome {
        Ok(()) => {
            if app.store.finish_job(&job.node, job.generation).await? {
                info!(node = %job.node, actions = %crate::lifecycle::describe_actions(&job.actions), attempt, "BMC actions done");
            }
            Ok(())
        }
        Err(err) => {
            let policy = RetryPolicy {
                max_attempts: app.site().config.lifecycle.bmc_attempts,
                ..RetryPolicy::default()
            };
            match retry::after_failure(&policy, attempt, &err) {
                Verdict::RetryAfter(delay) => {
                    warn!(node = %job.node, attempt, retry_in = ?delay, %err, "BMC call failed; will retry");
                    app.store
                        .reschedule_job(
                            &job.node,
                            job.generation,
                            attempt,
                            Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default(),
                            &err.to_string(),
                        )
                        .await?;
                    Ok(())
                }
                Verdict::GiveUp(reason) => fail(app, &job, reason).await,
            }
        }
    }
}

/// The job's actions against a connected BMC.
async fn perform(app: &Arc<App>, driver: &bmc::AnyBmc, job: &Job) -> Result<(), bmc::BmcError> {
    for action in &job.actions {
        match action {
            Action::SetBootDevice { device, persistent } => {
                driver
                    .set_boot(BootOverride {
                        device: match device {
                            BootDevice::Network => bmc::BootDevice::Pxe,
                            BootDevice::Disk => bmc::BootDevice::Disk,
                        },
                        persistent: *persistent,
                        mode: BootMode::Uefi,
                    })
                    .await?;
            }
            Action::PowerOnOrReset => {
                let power = if driver.power_state().await? == PowerState::Off {
                    PowerAction::On
                } else {
                    PowerAction::Reset
                };
                driver.power(power).await?;
                powered_on(app, job).await;
            }
            Action::PowerOff => driver.power(PowerAction::ForceOff).await?,
            Action::StartTimer { .. } | Action::CancelTimer | Action::MatchProfile => {}
        }
    }
    Ok(())
}

/// The node is booting now: record it and start its timeout from here.
async fn powered_on(app: &Arc<App>, job: &Job) {
    if let Err(err) = app
        .store
        .record_progress(&job.node, Step::PoweredOn, Utc::now())
        .await
    {
        warn!(node = %job.node, %err, "cannot record the power-on");
    }
    restart_timeout(app, job).await;
}

/// Arms the node's wait-state timeout again from now (same generation only).
async fn restart_timeout(app: &Arc<App>, job: &Job) {
    let now = Utc::now();
    let store = &app.store;
    let Ok(node) = store.node(&job.node).await else {
        return;
    };
    if let Some(kind) = node.state.wait_kind() {
        let timeout = app.site().config.lifecycle.policy().timeout(kind);
        let deadline = now + chrono::Duration::from_std(timeout).unwrap_or(chrono::TimeDelta::MAX);
        if let Err(err) = store
            .rearm_deadline(&job.node, job.generation, deadline)
            .await
        {
            warn!(node = %job.node, %err, "cannot re-arm the timeout after power-on");
        }
    }
}

/// The job cannot be done: drop it and fail the node with `reason`.
async fn fail(app: &Arc<App>, job: &Job, reason: String) -> Result<(), AppError> {
    app.store.drop_job(&job.node, job.generation).await?;
    let reason = format!(
        "{} ({})",
        reason,
        crate::lifecycle::describe_actions(&job.actions)
    );
    match app
        .fire(&job.node, Event::Error, Some(reason.clone()))
        .await
    {
        Ok(_) => {
            warn!(node = %job.node, %reason, "node failed: its BMC actions could not be done");
            Ok(())
        }
        // The node is somewhere an error means nothing (e.g. `available` after a
        // failed power-off): the log is the record.
        Err(AppError::Transition(_)) => {
            warn!(node = %job.node, %reason, "BMC actions failed");
            Ok(())
        }
        Err(err) => Err(err),
    }
}
