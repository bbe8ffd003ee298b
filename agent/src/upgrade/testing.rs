//! Test support (feature `testing`): a fake installed host under a root
//! directory, for the upgrade's unit tests and its slow tier on a loop
//! device. Writes only below the root it is given.

use std::path::Path;

use model::host::{HostStatus, Slot};

/// The kernel name of a slot's partition in the fake host (`vda2`, `vda3`).
pub fn dev_name(slot: Slot) -> &'static str {
    match slot {
        Slot::A => "vda2",
        Slot::B => "vda3",
    }
}

/// Lays out an installed host running version 1 from `running` below
/// `root`: `run/host/status.json`; `sys/class/block/vda{1,2,3}` (esp, root-a,
/// root-b; `size` = `capacity`, the running slot held by `dm-0`);
/// `dev/vda{1,2,3}` as zero-filled files of `capacity` bytes; and
/// `efi/EFI/Linux` with `host-a-1.efi` and a spent `host-b-0+0-3.efi`.
pub fn fake_host(root: &Path, running: Slot, capacity: u64) {
    let write = |rel: &str, bytes: &[u8]| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("a relative path")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write");
    };
    let status = HostStatus {
        version: "1".into(),
        slot: running,
        root_hash: "ab".repeat(32),
        trial: false,
        blessed: true,
        rolled_back_from: None,
    };
    write(
        "run/host/status.json",
        &serde_json::to_vec(&status).expect("json"),
    );
    std::fs::create_dir_all(root.join("sys/class/block")).expect("mkdir");
    for (number, label) in [(1, "esp"), (2, "root-a"), (3, "root-b")] {
        let name = format!("vda{number}");
        let real = format!("sys/devices/virtual/block/vda/{name}");
        write(
            &format!("{real}/uevent"),
            format!(
                "MAJOR=254\nMINOR={number}\nDEVNAME={name}\nDEVTYPE=partition\nPARTN={number}\nPARTNAME={label}\n"
            )
            .as_bytes(),
        );
        write(
            &format!("{real}/size"),
            format!("{}\n", capacity / 512).as_bytes(),
        );
        std::fs::create_dir_all(root.join(&real).join("holders")).expect("mkdir");
        std::os::unix::fs::symlink(root.join(&real), root.join("sys/class/block").join(&name))
            .expect("symlink");
        write(&format!("dev/{name}"), b"");
        std::fs::OpenOptions::new()
            .write(true)
            .open(root.join("dev").join(&name))
            .and_then(|f| f.set_len(capacity))
            .expect("set_len");
    }
    // The running root's verity device holds the running slot's partition.
    write(
        &format!("sys/class/block/{}/holders/dm-0", dev_name(running)),
        b"",
    );
    write("efi/EFI/Linux/host-a-1.efi", b"running UKI");
    write("efi/EFI/Linux/host-b-0+0-3.efi", b"spent UKI");
}
