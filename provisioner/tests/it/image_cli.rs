//! `provisioner image build ramdisk` and `... host` (the binary): what an operator sees when
//! the agent, the version or SOURCE_DATE_EPOCH is wrong. The builds themselves are tested in
//! image/tests/ramdisk.rs and image/tests/host_image.rs.

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

/// `provisioner image build host` with `args` after the agent, an empty cache and output.
fn build_host(agent: &std::path::Path, args: &[&str], epoch: Option<&str>) -> (bool, String) {
    let out_dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["image", "build", "host", "--agent"])
        .arg(agent)
        .arg("--out")
        .arg(out_dir.path().join("host"))
        .arg("--cache")
        .arg(cache.path())
        .args(args);
    match epoch {
        Some(e) => command.env("SOURCE_DATE_EPOCH", e),
        None => command.env_remove("SOURCE_DATE_EPOCH"),
    };
    let out = command.output().unwrap();
    // Bad input is refused before anything is downloaded or written.
    assert!(std::fs::read_dir(cache.path()).unwrap().next().is_none());
    assert!(std::fs::read_dir(out_dir.path()).unwrap().next().is_none());
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_host_image_refuses_bad_versions_agents_and_epochs_first() {
    let bin = std::path::Path::new(BIN);
    let (ok, stderr) = build_host(bin, &["--version", "1-rc1"], None);
    assert!(!ok);
    assert!(
        stderr.contains("version \"1-rc1\"") && stderr.contains("no '-' or '+'"),
        "{stderr}"
    );
    let (ok, stderr) = build_host(bin, &[], None);
    assert!(!ok);
    assert!(stderr.contains("dynamically linked"), "{stderr}");
    let (ok, stderr) = build_host(bin, &[], Some("yesterday"));
    assert!(!ok);
    assert!(
        stderr.contains("SOURCE_DATE_EPOCH=\"yesterday\""),
        "{stderr}"
    );
}
