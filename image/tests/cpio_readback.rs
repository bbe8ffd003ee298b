//! Our newc writer read back by GNU cpio (Debian `cpio`), a reader we did not write.

use std::io::Write as _;
use std::process::{Command, Stdio};

use image::cpio::Archive;

fn cpio(args: &[&str], dir: &std::path::Path, input: &[u8]) -> String {
    let mut child = Command::new("cpio")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`cpio` not found: run `cargo xtask deps` (Debian package cpio)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "cpio {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sample(with_device: bool) -> Archive {
    let mut a = Archive::new();
    a.add_file("init", 0o755, b"\x7fELF not really".to_vec())
        .unwrap();
    a.add_file(
        "lib/modules/6.1.0-56-amd64/kernel/drivers/net/virtio_net.ko",
        0o644,
        vec![0xab; 4099],
    )
    .unwrap();
    a.add_file(
        "lib/modules/load-order",
        0o644,
        b"kernel/drivers/net/virtio_net.ko\n".to_vec(),
    )
    .unwrap();
    a.add_file("empty", 0o600, vec![]).unwrap();
    a.add_symlink("sbin/init", "../init").unwrap();
    if with_device {
        a.add_char_device("dev/console", 0o600, 5, 1).unwrap();
    }
    a.add_dir("proc", 0o555).unwrap();
    a
}

#[test]
fn gnu_cpio_lists_every_entry_with_its_mode_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    let listing = cpio(
        &["-t", "-v", "--numeric-uid-gid", "--quiet"],
        dir.path(),
        &sample(true).to_bytes(),
    );
    // Each line: mode, links, uid, gid, size (or "major, minor"), date, name [-> target].
    let summary: Vec<String> = listing
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let name_at = f.iter().position(|w| *w == "1970").unwrap() + 1;
            format!("{} {} {} {}", f[0], f[2], f[3], f[name_at..].join(" "))
        })
        .collect();
    let expected = [
        "drwxr-xr-x 0 0 dev",
        "crw------- 0 0 dev/console",
        "-rw------- 0 0 empty",
        "-rwxr-xr-x 0 0 init",
        "drwxr-xr-x 0 0 lib",
        "drwxr-xr-x 0 0 lib/modules",
        "drwxr-xr-x 0 0 lib/modules/6.1.0-56-amd64",
        "drwxr-xr-x 0 0 lib/modules/6.1.0-56-amd64/kernel",
        "drwxr-xr-x 0 0 lib/modules/6.1.0-56-amd64/kernel/drivers",
        "drwxr-xr-x 0 0 lib/modules/6.1.0-56-amd64/kernel/drivers/net",
        "-rw-r--r-- 0 0 lib/modules/6.1.0-56-amd64/kernel/drivers/net/virtio_net.ko",
        "-rw-r--r-- 0 0 lib/modules/load-order",
        "dr-xr-xr-x 0 0 proc",
        "drwxr-xr-x 0 0 sbin",
        "lrwxrwxrwx 0 0 sbin/init -> ../init",
    ];
    assert_eq!(summary, expected);
    let console = listing
        .lines()
        .find(|l| l.ends_with("dev/console"))
        .unwrap();
    let fields: Vec<&str> = console.split_whitespace().collect();
    assert_eq!(fields[4..6], ["5,", "1"], "major 5, minor 1: {console}");
}

#[test]
fn gnu_cpio_extracts_the_same_contents() {
    // Device nodes need root to extract; the listing test covers them.
    let a = sample(false);
    let dir = tempfile::tempdir().unwrap();
    cpio(
        &["-i", "-d", "--no-absolute-filenames", "--quiet"],
        dir.path(),
        &a.to_bytes(),
    );
    let read = |p: &str| std::fs::read(dir.path().join(p)).unwrap();
    assert_eq!(read("init"), b"\x7fELF not really");
    assert_eq!(
        read("lib/modules/6.1.0-56-amd64/kernel/drivers/net/virtio_net.ko"),
        vec![0xab; 4099]
    );
    assert_eq!(read("empty"), b"");
    assert_eq!(
        std::fs::read_link(dir.path().join("sbin/init")).unwrap(),
        std::path::Path::new("../init")
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &str| {
        std::fs::symlink_metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("init"), 0o755);
    assert_eq!(mode("empty"), 0o600);
}
