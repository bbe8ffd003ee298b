//! The `node-agent inspect` binary: JSON that parses as the inventory
//! contract, a recording that replays to the same inventory, and a run on
//! the machine the tests run on.

use std::path::Path;
use std::process::Command;

use model::inventory::Inventory;

const BIN: &str = env!("CARGO_BIN_EXE_node-agent");

fn inspect_json(sysroot: &Path, extra: &[&str]) -> Inventory {
    let out = Command::new(BIN)
        .args(["inspect", "-o", "json", "--sysroot"])
        .arg(sysroot)
        .args(extra)
        .output()
        .expect("run node-agent");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the output is an Inventory")
}

#[test]
fn a_recording_of_a_fixture_replays_to_the_same_inventory() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/numa2-igb-uefi/tree");
    let rec = tempfile::tempdir().expect("tempdir");
    let first = inspect_json(&fixture, &["--record", rec.path().to_str().expect("utf-8")]);
    assert_eq!(inspect_json(rec.path(), &[]), first);
    assert_eq!(first.numa_nodes.len(), 2);
}

#[test]
fn the_machine_running_the_tests_has_cpus_memory_and_a_node() {
    let inv = inspect_json(Path::new("/"), &[]);
    assert!(inv.cpus.threads >= 1, "{:?}", inv.cpus);
    assert_eq!(inv.cpus.threads as usize, inv.cpus.online.len());
    assert!(!inv.numa_nodes.is_empty());
    assert!(inv.memory_bytes > 0);
    // Every online CPU is in exactly one node (or the gap is warned about).
    let in_nodes: usize = inv.numa_nodes.iter().map(|n| n.cpus.len()).sum();
    assert!(
        in_nodes == inv.cpus.online.len()
            || inv.warnings.iter().any(|w| w.contains("no NUMA node")),
        "{inv:?}"
    );
}

#[test]
fn the_summary_names_the_parts() {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/e1000e-sata-bios/tree");
    let out = Command::new(BIN)
        .args(["inspect", "--sysroot"])
        .arg(&fixture)
        .output()
        .expect("run node-agent");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    for part in [
        "(BIOS)",
        "1 sockets, 1 cores, 1 threads, online 0",
        "driver e1000e",
        "disk     sda sata",
        "serial fx-sata-0 by-path pci-0000:00:1f.2-ata-1.0",
        "warning: offline CPUs 1:",
    ] {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }
}
