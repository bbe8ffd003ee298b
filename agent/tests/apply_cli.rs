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

/// The plan the provisioner's planner makes for the lab compute VM (its
/// committed snapshot) applies on a fake tree of that VM: the planner's
/// output is what the agent reads.
#[test]
fn the_planners_lab_compute_plan_applies() {
    let snap = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../provisioner/core/src/plan/snapshots/provisioner_core__plan__tests__plan-lab-compute.snap");
    let text = std::fs::read_to_string(&snap).expect("read the planner snapshot");
    // An insta snapshot is a `---` header block, then the JSON.
    let json = text.splitn(3, "---\n").nth(2).expect("snapshot body");
    let plan: model::plan::HostPlan = serde_json::from_str(json).expect("a host plan");
    assert_eq!(plan.sriov[0].num_vfs, 7);

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("plan.json"), json).expect("write plan");
    let root = dir.path().join("root");
    let put = |path: &str, value: &str| {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, value).expect("write");
    };
    let pf = &plan.sriov[0].pci_address;
    put(&format!("sys/bus/pci/devices/{pf}/sriov_totalvfs"), "7\n");
    put(&format!("sys/bus/pci/devices/{pf}/sriov_numvfs"), "0\n");
    for i in 0..7 {
        let vf = format!("0000:02:10.{i}");
        std::os::unix::fs::symlink(
            format!("../{vf}"),
            root.join(format!("sys/bus/pci/devices/{pf}/virtfn{i}")),
        )
        .expect("symlink");
        put(
            &format!("sys/bus/pci/devices/{vf}/driver_override"),
            "(null)\n",
        );
    }
    put("sys/bus/pci/drivers_probe", "");
    put(
        "sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages",
        "0\n",
    );

    let out = apply(dir.path(), &["-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let overrides = report["writes"]
        .as_array()
        .expect("writes")
        .iter()
        .filter(|w| {
            w["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("driver_override"))
        })
        .count();
    assert_eq!(overrides, 7);
    assert_eq!(
        std::fs::read_to_string(root.join(format!("sys/bus/pci/devices/{pf}/sriov_numvfs")))
            .expect("read"),
        "7"
    );
}
