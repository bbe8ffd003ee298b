//! `provisioner profile match` and `profile plan` on every example: the real
//! binary, run from the repository root, without a daemon.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_provisioner");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(root())
        .output()
        .expect("run provisioner")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// (profile name, where its profiles come from).
const EXAMPLES: &[(&str, &str, &str)] = &[
    ("compute-e810", "--profiles", "profiles"),
    ("network-epyc-cx6", "--profiles", "profiles"),
    ("storage-nvme12", "--profiles", "profiles"),
    ("lab-compute", "--site", "hardware-tests/sites/lab"),
    ("lab-network", "--site", "hardware-tests/sites/lab"),
    ("lab-storage", "--site", "hardware-tests/sites/lab"),
];

#[test]
fn match_and_plan_work_on_every_example() {
    for (name, flag, dir) in EXAMPLES {
        let inventory = format!("profiles/inventories/{name}.json");
        let out = run(&["profile", "match", "--inventory", &inventory, flag, dir]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert!(
            stdout(&out).ends_with(&format!("chosen: {name}\n")),
            "{}",
            stdout(&out)
        );

        let out = run(&["profile", "plan", "--inventory", &inventory, flag, dir]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        insta::assert_snapshot!(format!("plan-text-{name}"), stdout(&out));

        // JSON: the same plan as --profile FILE gives, with the contract's fields.
        let json = run(&[
            "profile",
            "plan",
            "--inventory",
            &inventory,
            flag,
            dir,
            "-o",
            "json",
        ]);
        assert!(json.status.success(), "{name}: {}", stderr(&json));
        let plan: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON plan");
        for field in [
            "kernel_args",
            "hugepages",
            "reserved_cpus",
            "isolated_cpus",
            "sriov",
            "root_disk",
            "data_disks",
            "warnings",
        ] {
            assert!(plan.get(field).is_some(), "{name}: no {field}");
        }
        assert_eq!(plan["profile"], *name);
    }
}

#[test]
fn match_explains_every_other_profile() {
    let out = run(&[
        "profile",
        "match",
        "--inventory",
        "profiles/inventories/lab-network.json",
        "--site",
        "hardware-tests/sites/lab",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!(stdout(&out));

    let out = run(&[
        "profile",
        "match",
        "--inventory",
        "profiles/inventories/lab-network.json",
        "--profiles",
        "profiles",
        "-o",
        "json",
    ]);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["chosen"], serde_json::Value::Null, "{report}");
    assert_eq!(report["error"]["kind"], "no_match", "{report}");
    assert_eq!(report["results"].as_array().map(Vec::len), Some(3));
}

#[test]
fn plan_errors_point_into_the_profile_file() {
    let out = run(&[
        "profile",
        "plan",
        "--inventory",
        "profiles/inventories/lab-network.json",
        "--profile",
        "hardware-tests/sites/lab/profiles/lab-compute.yaml",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    // The profile's `match` does not hold: a warning, and the plan is tried anyway.
    assert!(
        lines[0].starts_with(
            "warning: hardware-tests/sites/lab/profiles/lab-compute.yaml:8:10: match.nics[0]: \
             wants at least 1 NIC(s) (8086:10c9), the machine has 0"
        ),
        "{err}"
    );
    assert!(
        lines[1].starts_with(
            "hardware-tests/sites/lab/profiles/lab-compute.yaml:23:19: sriov[0].nic_selector: \
             matches no physical function on this machine"
        ),
        "{err}"
    );
    assert!(
        err.contains("error: profile lab-compute cannot be planned"),
        "{err}"
    );
}

#[test]
fn a_bad_inventory_names_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("inv.json");
    let mut inv: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("profiles/inventories/lab-compute.json"))
            .expect("read"),
    )
    .expect("json");
    inv["cpus"]["online"][1] = "one".into();
    std::fs::write(&path, inv.to_string()).expect("write");
    let out = run(&[
        "profile",
        "match",
        "--inventory",
        path.to_str().expect("utf-8"),
        "--profiles",
        "profiles",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("at cpus.online[1]: invalid type: string \"one\""),
        "{}",
        stderr(&out)
    );
}
