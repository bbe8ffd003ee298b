//! `kill -9` of the daemon in the middle of a burst of maintenance changes:
//! every change the CLI reported as done is still there after a restart, and
//! SQLite's integrity check passes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::{self, Daemon, http, write_site};

/// One CLI call of the burst and what the CLI said about it.
#[derive(Debug, Clone)]
struct Change {
    node: String,
    on: bool,
    reason: String,
    acknowledged: bool,
    /// What the CLI printed when it failed.
    error: String,
}

fn integrity_check(db: &std::path::Path) -> String {
    // The sqlite3 shell is an independent reader of the file (installed by `cargo xtask deps`).
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg("PRAGMA integrity_check;")
        .output()
        .expect("run sqlite3 (install it with `cargo xtask deps`)");
    assert!(
        out.status.success(),
        "sqlite3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn acknowledged_changes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (site, state) = (dir.path().join("site"), dir.path().join("state"));
    write_site(&site, 8);
    let mut daemon = Daemon::start(&site, &state);
    let (base, token) = (daemon.base.clone(), daemon.token.clone());

    // Four writers, each toggling maintenance on its own two nodes as fast as the CLI goes.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (base, token, stop) = (base.clone(), token.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut changes = vec![];
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let node = format!("node-{:03}", 2 * w + 1 + i % 2);
                    let on = (i / 2) % 2 == 0;
                    let reason = format!("burst-{w}-{i}");
                    let out = std::process::Command::new(common::BIN)
                        .args(["node", "maintenance", &node, if on { "on" } else { "off" }])
                        .args(["--reason", &reason, "--api", &base])
                        .env("PROVISIONER_TOKEN", &token)
                        .output()
                        .unwrap();
                    let acknowledged = out.status.success();
                    let error = String::from_utf8_lossy(&out.stderr).into_owned();
                    changes.push(Change {
                        node,
                        on,
                        reason,
                        acknowledged,
                        error,
                    });
                    if !acknowledged {
                        break; // the daemon is gone
                    }
                    i += 1;
                }
                changes
            })
        })
        .collect();

    // Let the burst run, then kill -9 while requests are in flight.
    std::thread::sleep(Duration::from_millis(1500));
    daemon.kill9();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let changes: Vec<Change> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let acknowledged = changes.iter().filter(|c| c.acknowledged).count();
    for change in changes.iter().filter(|c| !c.acknowledged) {
        eprintln!("in flight at the kill: {change:?}");
        // The only acceptable failure is the daemon going away.
        assert!(
            change.error.contains("cannot reach") || change.error.contains("request to"),
            "{change:?}"
        );
    }
    assert!(
        acknowledged >= 20,
        "the burst was too short to mean anything: {acknowledged} changes"
    );

    assert_eq!(integrity_check(&state.join("provisioner.db")), "ok");

    let daemon = Daemon::start(&site, &state);
    let token = Some(daemon.token.as_str());
    let mut per_node: HashMap<String, Vec<&Change>> = HashMap::new();
    for change in &changes {
        per_node
            .entry(change.node.clone())
            .or_default()
            .push(change);
    }
    for (node, changes) in per_node {
        let (status, history, _) = http(
            "GET",
            &format!("{}/api/v1/nodes/{node}/history", daemon.base),
            token,
            None,
        );
        assert_eq!(status, 200);
        let reasons: Vec<&str> = history
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["reason"].as_str())
            .collect();
        // Every acknowledged change is in the history, in the order it was made.
        let mut position = 0;
        for change in changes.iter().filter(|c| c.acknowledged) {
            let found = reasons[position..].iter().position(|r| *r == change.reason);
            assert!(
                found.is_some(),
                "{node}: acknowledged change {} lost; history: {reasons:?}",
                change.reason
            );
            position += found.unwrap() + 1;
        }
        // The node ends as the last acknowledged change left it, or as the one in flight at the kill.
        let (_, shown, _) = http(
            "GET",
            &format!("{}/api/v1/nodes/{node}", daemon.base),
            token,
            None,
        );
        let last_acked = changes
            .iter()
            .rev()
            .find(|c| c.acknowledged)
            .is_some_and(|c| c.on);
        let in_flight = changes.iter().find(|c| !c.acknowledged);
        let allowed: Vec<bool> = std::iter::once(last_acked)
            .chain(in_flight.map(|c| c.on))
            .collect();
        {
            let maintenance = shown["maintenance"].as_bool().unwrap();
            assert!(
                allowed.contains(&maintenance),
                "{node}: maintenance {maintenance}, expected one of {allowed:?}\nchanges: {changes:?}\nhistory: {history}"
            );
        }
    }
    let (_, nodes, _) = http("GET", &format!("{}/api/v1/nodes", daemon.base), token, None);
    assert_eq!(nodes.as_array().unwrap().len(), 8);
}
