//! The `node-agent apply` binary on a fake sysfs tree: exit codes, JSON
//! report, idempotence, and a helpful error for a file that is not a plan.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_node-agent");

const NR: &str = "sys/devices/system/node/node1/hugepages/hugepages-1048576kB/nr_hugepages";

fn plan_json(count: u64) -> String {
    serde_json::json!({
        "profile": "t", "roles": ["compute"], "kernel_args": [],
        "hugepages": [{"node": 1, "size_kb": 1048576, "count": count}],
        "reserved_cpus": [], "isolated_cpus": [], "sriov": [],
        "root_disk": {"name": "vda", "by_path": null, "serial": null, "size_bytes": 1},
        "data_disks": [], "warnings": []
    })
    .to_string()
}

fn apply(dir: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["apply", "--plan"])
        .arg(dir.join("plan.json"))
        .arg("--sysroot")
        .arg(dir.join("root"))
        .args(extra)
        .output()
        .expect("run node-agent")
}

#[test]
fn apply_is_idempotent_and_reports_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nr = dir.path().join("root").join(NR);
    std::fs::create_dir_all(nr.parent().expect("parent")).expect("mkdir");
    std::fs::write(&nr, "0\n").expect("write");
    std::fs::write(dir.path().join("plan.json"), plan_json(4)).expect("write plan");

    let first = apply(dir.path(), &["-o", "json"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).expect("JSON");
    assert_eq!(report["items"][0]["status"], "changed");
    assert_eq!(report["writes"][0]["path"], format!("/{NR}"));
    assert_eq!(std::fs::read_to_string(&nr).expect("read"), "4");

    let second = apply(dir.path(), &["-o", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&second.stdout).expect("JSON");
    assert_eq!(report["items"][0]["status"], "unchanged");
    assert_eq!(report["writes"], serde_json::json!([]));
}

#[test]
fn failures_exit_non_zero_and_bad_plans_say_what_to_give() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("root")).expect("mkdir");
    std::fs::write(dir.path().join("plan.json"), plan_json(4)).expect("write plan");
    let out = apply(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAILED       hugepages node 1"), "{text}");

    std::fs::write(dir.path().join("plan.json"), "{\"name\": \"x\"}").expect("write");
    let out = apply(dir.path(), &["--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not a host plan: give the JSON of `provisioner profile plan -o json`"),
        "{err}"
    );
}
