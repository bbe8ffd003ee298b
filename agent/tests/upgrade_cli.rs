//! The `node-agent upgrade` binary on a fake host (`--sysroot`): its output
//! lines and exit codes. With a root other than `/` it never reboots.

use std::process::{Command, Output};

use agent::upgrade::testing::{FakeImage, fake_host};
use model::host::Slot;

const BIN: &str = env!("CARGO_BIN_EXE_node-agent");

fn upgrade(image: &std::path::Path, root: &std::path::Path) -> Output {
    Command::new(BIN)
        .arg("upgrade")
        .arg("--image")
        .arg(image)
        .arg("--sysroot")
        .arg(root)
        .output()
        .expect("run node-agent")
}

#[test]
fn upgrade_prints_its_steps_and_the_slot_it_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, image) = (tmp.path().join("host"), tmp.path().join("image"));
    std::fs::create_dir_all(&image).unwrap();
    fake_host(&root, Slot::A, 4 << 20);
    let manifest = FakeImage::new("2", 64).write(&image);

    let out = upgrade(&manifest, &root);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.iter().all(|l| l.starts_with("node-agent: upgrade: ")),
        "{stdout}"
    );
    assert!(
        lines.contains(&"node-agent: upgrade: writing slot b: 100 % (0.3 of 0.3 MiB)"),
        "{stdout}"
    );
    assert_eq!(
        lines.last(),
        Some(&"node-agent: upgrade: slot b holds version 2; it boots at the next reboot (3 tries)")
    );
    assert!(root.join("efi/EFI/Linux/host-b-2+3.efi").is_file());
}

#[test]
fn upgrade_off_a_host_image_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out = upgrade(&tmp.path().join("manifest.json"), tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: not running an installed host image (no "),
        "{stderr}"
    );
}
