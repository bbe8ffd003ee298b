//! The demo's node table and summaries: pure text from the CLI's JSON, so they are
//! tested without a lab.

use std::time::Duration;

use serde_json::Value;

/// One row of the live table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub node: String,
    pub state: String,
    /// Seconds in the current state.
    pub in_state: u64,
    pub last_event: String,
    /// While deploying or cleaning: the agent's phase and bytes (`writing 512/1362 MiB`).
    pub progress: String,
}

/// Rows from `provisioner node list -o json` and each node's last history entry
/// (`node history NAME -o json`), at `now` (RFC 3339 times in the JSON).
pub fn rows(nodes: &Value, last_events: &[(String, Value)], now: chrono_like::Now) -> Vec<Row> {
    nodes
        .as_array()
        .into_iter()
        .flatten()
        .map(|node| {
            let name = node["name"].as_str().unwrap_or("?").to_owned();
            let last = last_events.iter().find(|(n, _)| *n == name).map(|(_, e)| e);
            // The list and the history are two reads: a transition between them shows in
            // the history only. Then the history's entry is the node's state.
            let newer = last.filter(|e| {
                e["generation"].as_i64() > node["generation"].as_i64() && e["to"].is_string()
            });
            let (state, since) = match newer {
                Some(e) => (&e["to"], &e["at"]),
                None => (&node["state"], &node["state_since"]),
            };
            let mut state = state.as_str().unwrap_or("?").to_owned();
            if node["maintenance"].as_bool() == Some(true) {
                state.push_str(" (maintenance)");
            }
            let in_state = since
                .as_str()
                .and_then(chrono_like::parse_rfc3339)
                .map_or(0, |since| now.0.saturating_sub(since));
            let last_event = last.map(describe_event).unwrap_or_default();
            let progress = if state == "deploying" && node["deploy"]["written_at"].is_string() {
                // The agent's last progress is stale: the node boots its disk now.
                "written; booting from disk".to_owned()
            } else if state == "deploying" || state == "cleaning" {
                describe_progress(&node["deploy"]["progress"])
            } else {
                String::new()
            };
            Row {
                node: name,
                state,
                in_state,
                last_event,
                progress,
            }
        })
        .collect()
}

/// `writing 512/1362 MiB, 45 MiB/s` from the node view's `deploy.progress`.
fn describe_progress(progress: &Value) -> String {
    let (Some(phase), Some(done), Some(total)) = (
        progress["phase"].as_str(),
        progress["done_bytes"].as_u64(),
        progress["total_bytes"].as_u64(),
    ) else {
        return String::new();
    };
    let mut text = format!("{phase} {}/{} MiB", done >> 20, total >> 20);
    let elapsed = match (
        progress["started_at"]
            .as_str()
            .and_then(chrono_like::parse_rfc3339),
        progress["at"].as_str().and_then(chrono_like::parse_rfc3339),
    ) {
        (Some(start), Some(at)) => at.saturating_sub(start),
        _ => 0,
    };
    if let Some(rate) = (done >> 20).checked_div(elapsed) {
        text.push_str(&format!(", {rate} MiB/s"));
    }
    text
}

fn describe_event(entry: &Value) -> String {
    let event = entry["event"].as_str().unwrap_or("?");
    match entry["reason"].as_str() {
        Some(reason) if !reason.is_empty() => format!("{event}: {reason}"),
        _ => event.to_owned(),
    }
}

/// The table, one line per node under a header, each line cut to `width` columns.
pub fn render(rows: &[Row], elapsed: Duration, width: usize) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<16} {:<12} {:>7}  {:<30} {}",
        "NODE", "STATE", "IN STATE", "PROGRESS", "LAST EVENT"
    )];
    for row in rows {
        lines.push(format!(
            "{:<16} {:<12} {:>7}s  {:<30} {}",
            row.node, row.state, row.in_state, row.progress, row.last_event
        ));
    }
    lines.push(format!("elapsed {:.0} s", elapsed.as_secs_f64()));
    lines
        .into_iter()
        .map(|l| l.chars().take(width.max(20)).collect())
        .collect()
}

/// Whether the demo is over: every node active or failed.
pub fn settled(rows: &[Row]) -> bool {
    !rows.is_empty()
        && rows
            .iter()
            .all(|r| r.state == "active" || r.state.starts_with("failed"))
}

/// The per-node summary from `provisioner node show NAME -o json`.
pub fn summary(node: &Value) -> String {
    let name = node["name"].as_str().unwrap_or("?");
    let state = node["state"].as_str().unwrap_or("?");
    let mut out = format!("{name}: {state}");
    if let Some(profile) = node["matched_profile"].as_str() {
        out.push_str(&format!(", profile {profile}"));
    }
    if let Ok(plan) = serde_json::from_value::<model::plan::HostPlan>(node["plan"].clone()) {
        out.push_str(&format!("\n    {}", plan.summary()));
    }
    if let Some(error) = node["plan_error"].as_str() {
        out.push_str(&format!("\n    no host plan: {error}"));
    }
    let host = &node["deploy"]["host"];
    if let (Some(version), Some(slot), Some(root)) = (
        host["version"].as_str(),
        host["slot"].as_str(),
        host["root_hash"].as_str(),
    ) {
        out.push_str(&format!(
            "\n    host: version {version}, slot {slot}, root hash {root}"
        ));
        if let Some(apply) = host["apply"].as_str() {
            out.push_str(&format!("\n    applied: {apply}"));
        }
    }
    if let Some(error) = node["last_error"].as_str() {
        out.push_str(&format!("\n    why: {error}"));
    }
    out
}

/// Seconds since the Unix epoch, without a date crate: the CLI prints RFC 3339 UTC
/// (`2026-11-21T15:40:00.123Z` or `+00:00`).
pub mod chrono_like {
    /// "Now" in seconds since the epoch.
    #[derive(Debug, Clone, Copy)]
    pub struct Now(pub u64);

    impl Now {
        pub fn system() -> Now {
            Now(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()))
        }
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00)`; other offsets are refused.
    pub fn parse_rfc3339(s: &str) -> Option<u64> {
        let (date, time) = s.split_once('T')?;
        let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
        let (y, m, day) = (d.next()??, d.next()??, d.next()??);
        let time = time
            .strip_suffix('Z')
            .or_else(|| time.strip_suffix("+00:00"))?;
        let time = time.split('.').next()?;
        let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
        let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
        // Days from civil (Howard Hinnant's algorithm).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc3339_times_parse_to_epoch_seconds() {
        assert_eq!(chrono_like::parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            chrono_like::parse_rfc3339("2026-11-21T15:40:00.123456Z"),
            Some(1_795_275_600)
        );
        assert_eq!(
            chrono_like::parse_rfc3339("2000-03-01T00:00:01+00:00"),
            Some(951_868_801)
        );
        assert_eq!(
            chrono_like::parse_rfc3339("2026-11-21T15:40:00+02:00"),
            None
        );
        assert_eq!(chrono_like::parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn rows_show_state_time_in_state_and_the_last_event() {
        let nodes = json!([
            {"name": "lab-compute-0", "state": "inspecting", "state_since": "2026-11-21T15:40:00Z", "maintenance": false},
            {"name": "lab-storage-0", "state": "available", "state_since": "2026-11-21T15:40:30Z", "maintenance": true},
        ]);
        let events = vec![(
            "lab-compute-0".to_owned(),
            json!({"event": "inspect", "reason": "zero-touch: enrolled with a BMC"}),
        )];
        let now = chrono_like::Now(chrono_like::parse_rfc3339("2026-11-21T15:40:42Z").unwrap());
        let rows = rows(&nodes, &events, now);
        assert_eq!(rows[0].in_state, 42);
        assert_eq!(
            rows[0].last_event,
            "inspect: zero-touch: enrolled with a BMC"
        );
        assert_eq!(rows[1].state, "available (maintenance)");
        let lines = render(&rows, Duration::from_secs(50), 200);
        assert_eq!(lines.len(), 4);
        assert!(
            lines[1].starts_with("lab-compute-0    inspecting"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("42s"), "{}", lines[1]);
        assert_eq!(lines[3], "elapsed 50 s");
        assert!(
            render(&rows, Duration::ZERO, 30)
                .iter()
                .all(|l| l.chars().count() <= 30)
        );
        assert!(!settled(&rows), "maintenance is not available");
    }

    #[test]
    fn a_transition_between_the_list_and_the_history_shows_the_historys_state() {
        let nodes = json!([
            {"name": "lab-compute-1", "state": "inspecting", "state_since": "2026-11-21T15:40:00Z", "generation": 2},
            {"name": "lab-storage-0", "state": "inspecting", "state_since": "2026-11-21T15:40:00Z", "generation": 2},
        ]);
        let events = vec![
            (
                "lab-compute-1".to_owned(),
                json!({"event": "inventory_received", "from": "inspecting", "to": "available",
                       "at": "2026-11-21T15:40:40Z", "generation": 3}),
            ),
            (
                "lab-storage-0".to_owned(),
                json!({"event": "inspect", "from": "enrolled", "to": "inspecting",
                       "at": "2026-11-21T15:40:00Z", "generation": 2}),
            ),
        ];
        let now = chrono_like::Now(chrono_like::parse_rfc3339("2026-11-21T15:40:42Z").unwrap());
        let rows = rows(&nodes, &events, now);
        assert_eq!((rows[0].state.as_str(), rows[0].in_state), ("available", 2));
        assert_eq!(
            (rows[1].state.as_str(), rows[1].in_state),
            ("inspecting", 42)
        );
    }

    #[test]
    fn the_demo_settles_when_every_node_is_active_or_failed() {
        let row = |state: &str| Row {
            node: "n".into(),
            state: state.into(),
            in_state: 0,
            last_event: String::new(),
            progress: String::new(),
        };
        assert!(settled(&[row("active"), row("failed")]));
        assert!(!settled(&[row("active"), row("deploying")]));
        assert!(!settled(&[row("available"), row("active")]));
        assert!(!settled(&[]));
    }

    #[test]
    fn the_summary_names_profile_cpus_hugepages_vfs_and_root_disk() {
        let plan = json!({
            "profile": "lab-compute", "roles": ["compute"], "kernel_args": [],
            "reserved_cpus": [0, 2], "isolated_cpus": [1, 3],
            "hugepages": [{"node": 0, "size_kb": 2048, "count": 512}, {"node": 1, "size_kb": 2048, "count": 512}],
            "sriov": [{"pci_address": "0000:61:00.0", "pf_name": "eth1", "num_vfs": 7,
                       "device_type": "vfio-pci", "mtu": null, "local_cpus": [3]}],
            "root_disk": {"name": "vda", "by_path": null, "serial": "LABC0-ROOT", "size_bytes": 17179869184_u64},
            "data_disks": [], "warnings": []
        });
        let node = json!({"name": "lab-compute-0", "state": "available", "matched_profile": "lab-compute", "plan": plan});
        let text = summary(&node);
        assert!(
            text.starts_with("lab-compute-0: available, profile lab-compute"),
            "{text}"
        );
        assert!(text.contains("CPUs 2 reserved / 2 isolated"), "{text}");
        assert!(
            text.contains("512 x 2048 KiB on node 0, 512 x 2048 KiB on node 1"),
            "{text}"
        );
        assert!(text.contains("7 VFs; root disk vda"), "{text}");
        let failed = json!({"name": "n", "state": "failed", "last_error": "no DHCP"});
        assert_eq!(summary(&failed), "n: failed\n    why: no DHCP");
    }

    #[test]
    fn deploying_rows_show_phase_bytes_and_rate_and_the_summary_the_host() {
        let nodes = json!([{"name": "n", "state": "deploying", "state_since": "2026-12-02T10:00:00Z",
            "deploy": {"progress": {"phase": "writing", "done_bytes": 512u64 << 20,
                "total_bytes": 1362u64 << 20, "started_at": "2026-12-02T10:00:10Z",
                "at": "2026-12-02T10:00:42Z"}}}]);
        let now = chrono_like::Now(chrono_like::parse_rfc3339("2026-12-02T10:01:00Z").unwrap());
        let rows = rows(&nodes, &[], now);
        assert_eq!(rows[0].progress, "writing 512/1362 MiB, 16 MiB/s");
        let mut written = nodes.clone();
        written[0]["deploy"]["written_at"] = json!("2026-12-02T10:00:50Z");
        assert_eq!(
            super::rows(&written, &[], now)[0].progress,
            "written; booting from disk"
        );
        let active = json!({"name": "n", "state": "active", "deploy": {"host": {
            "version": "1", "slot": "a", "root_hash": "ab12", "apply": "3 items, all done"}}});
        let text = summary(&active);
        assert!(
            text.contains("host: version 1, slot a, root hash ab12"),
            "{text}"
        );
        assert!(text.contains("applied: 3 items, all done"), "{text}");
    }
}
