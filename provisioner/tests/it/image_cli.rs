//! `provisioner image build ramdisk` (the binary): what an operator sees when the agent is
//! wrong. The build itself is tested in image/tests/ramdisk.rs.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_provisioner");

fn build_with_agent(agent: &std::path::Path) -> (bool, String) {
    let out_dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["image", "build", "ramdisk", "--agent"])
        .arg(agent)
        .arg("--out")
        .arg(out_dir.path())
        .arg("--cache")
        .arg(cache.path())
        .output()
        .unwrap();
    // Nothing is downloaded or written for a bad agent: it is checked first.
    assert!(std::fs::read_dir(cache.path()).unwrap().next().is_none());
    assert!(std::fs::read_dir(out_dir.path()).unwrap().next().is_none());
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_dynamically_linked_agent_is_refused_with_the_build_command() {
    // The provisioner binary of this test build is dynamically linked.
    let (ok, stderr) = build_with_agent(std::path::Path::new(BIN));
    assert!(!ok);
    assert!(
        stderr.contains("dynamically linked") && stderr.contains("cargo xtask ramdisk"),
        "{stderr}"
    );
    assert!(stderr.contains("target-feature=+crt-static"), "{stderr}");
}

#[test]
fn a_missing_agent_names_the_path() {
    let (ok, stderr) = build_with_agent(std::path::Path::new("/nonexistent/node-agent"));
    assert!(!ok);
    assert!(
        stderr.contains("/nonexistent/node-agent: reading the agent"),
        "{stderr}"
    );
}
