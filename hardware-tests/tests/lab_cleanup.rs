//! The lab removes what it created on every exit path: a normal drop and a
//! panic both kill its processes and delete its network namespace; a lab
//! that did not pass keeps its directory.

use std::process::Command;

use anyhow::Result;
use hardware_tests::lab::{Lab, LabOptions};

fn namespaces() -> Result<String> {
    Ok(String::from_utf8(
        Command::new("ip").args(["netns", "list"]).output()?.stdout,
    )?)
}

#[test]
fn namespace_and_processes_go_on_drop_and_on_panic() -> Result<()> {
    // Passed: everything goes, the directory too.
    let mut lab = Lab::start(LabOptions::default())?;
    let name = lab.netns().name().to_owned();
    let dir = lab.dir().to_owned();
    assert!(namespaces()?.contains(&name));
    let state = std::fs::read_to_string(dir.join("state/api-url"))?;
    assert_eq!(state.trim(), "http://10.213.0.1:8080");
    lab.pass();
    drop(lab);
    assert!(!namespaces()?.contains(&name), "{name} left behind");
    assert!(!dir.exists());

    // A panic in the middle of a test: the namespace goes, the logs stay.
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let lab = Lab::start(LabOptions::default()).expect("lab");
        tx.send((lab.netns().name().to_owned(), lab.dir().to_owned()))
            .expect("send");
        panic!("a lab test failing on purpose");
    })
    .join();
    assert!(outcome.is_err());
    let (name, dir) = rx.recv()?;
    assert!(
        !namespaces()?.contains(&name),
        "{name} left behind after a panic"
    );
    assert!(dir.join("provisioner.log").is_file(), "logs not kept");
    let log = std::fs::read_to_string(dir.join("provisioner.log"))?;
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
