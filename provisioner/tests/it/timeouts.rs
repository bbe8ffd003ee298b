//! Wait-state timeouts: a node that does not get through a step in time is
//! failed with a reason; deadlines survive a restart; maintenance freezes them.

use crate::common;

use std::time::{Duration, Instant};

use chrono::Utc;
use provisioner::app::App;
use provisioner::lifecycle::{Event, State};
use provisioner::store::Store;

fn site_with_timeout(dir: &std::path::Path, seconds: u64) {
    common::write_site(dir, 2);
    let site = std::fs::read_to_string(dir.join("site.yaml")).unwrap();
    std::fs::write(
        dir.join("site.yaml"),
        format!("{site}lifecycle:\n  inspect_timeout: {seconds}\n"),
    )
    .unwrap();
}

async fn app(site: &std::path::Path, state: &std::path::Path) -> App {
    let site = provisioner::site::load(site).expect("valid site");
    let store = Store::open(state).await.unwrap();
    let (key, _) = provisioner::keys::ensure_signing_key(state).unwrap();
    let app = App::new(site, store, "t".repeat(64), key);
    app.sync_nodes().await.unwrap();
    app
}

#[tokio::test]
async fn overdue_nodes_fail_with_a_reason_and_deadlines_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (site, state) = (dir.path().join("site"), dir.path().join("state"));
    site_with_timeout(&site, 600);

    let first = app(&site, &state).await;
    let node = first.fire("node-001", Event::Inspect, None).await.unwrap();
    let deadline = node.deadline.expect("inspecting has a deadline");
    let expected = node.state_since + chrono::Duration::seconds(600);
    assert!(
        (deadline - expected).num_milliseconds().abs() < 1000,
        "{deadline} vs {expected}"
    );
    // Not yet overdue.
    assert_eq!(
        first
            .sweep_timeouts_at(deadline - chrono::Duration::seconds(1))
            .await
            .unwrap(),
        0
    );
    first.store.close().await;
    drop(first);

    // A new daemon on the same state resumes the timer and fires it.
    let second = app(&site, &state).await;
    assert_eq!(
        second.store.node("node-001").await.unwrap().deadline,
        Some(deadline)
    );
    assert_eq!(second.sweep_timeouts_at(deadline).await.unwrap(), 1);
    let node = second.store.node("node-001").await.unwrap();
    assert_eq!(node.state, State::Failed);
    assert_eq!(node.failed_from, Some(State::Inspecting));
    assert!(node.deadline.is_none());
    let why = node.last_error.unwrap();
    assert!(
        why.starts_with("inspection timed out after 10m: the node was never powered on"),
        "{why}"
    );
    let history = second.store.history("node-001").await.unwrap();
    assert_eq!(history.last().unwrap().event, "timeout");
}

#[tokio::test]
async fn maintenance_freezes_the_timer_and_restarts_it_in_full() {
    let dir = tempfile::tempdir().unwrap();
    let (site, state) = (dir.path().join("site"), dir.path().join("state"));
    site_with_timeout(&site, 600);
    let app = app(&site, &state).await;
    let node = app.fire("node-002", Event::Inspect, None).await.unwrap();
    let deadline = node.deadline.unwrap();
    app.fire("node-002", Event::MaintenanceOn, Some("cabling".into()))
        .await
        .unwrap();
    // Frozen: not failed even long after the deadline.
    assert_eq!(
        app.sweep_timeouts_at(deadline + chrono::Duration::hours(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        app.store.node("node-002").await.unwrap().state,
        State::Inspecting
    );
    let before = Utc::now();
    let thawed = app
        .fire("node-002", Event::MaintenanceOff, None)
        .await
        .unwrap();
    let restarted = thawed.deadline.unwrap();
    assert!(
        restarted >= before + chrono::Duration::seconds(599),
        "{restarted}"
    );
}

#[test]
fn the_running_daemon_fails_a_node_that_never_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (site, state) = (dir.path().join("site"), dir.path().join("state"));
    site_with_timeout(&site, 10);
    let daemon = common::Daemon::start(&site, &state);
    let started = Instant::now();
    let out = daemon.cli(&["node", "event", "node-001", "inspect"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let token = Some(daemon.token.as_str());
    let url = format!("{}/api/v1/nodes/node-001", daemon.base);
    loop {
        let (_, node, _) = common::http("GET", &url, token, None);
        if node["state"] == "failed" {
            assert_eq!(node["failed_from"], "inspecting");
            assert!(
                node["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("timed out after 10s"),
                "{node}"
            );
            assert!(started.elapsed() >= Duration::from_secs(10));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no timeout after 30 s: {node}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, metrics, _) = common::http("GET", &format!("{}/metrics", daemon.base), None, None);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("provisioner_wait_timeouts_total 1"),
        "{metrics}"
    );
}
