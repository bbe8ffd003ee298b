//! Test support (feature `testing`): a fake installed host under a root
//! directory and a fake host image (files in memory), for the upgrade's unit
//! tests, its CLI test and its slow tier on a loop device. Writes only below
//! the directories it is given.

use std::path::{Path, PathBuf};

use model::host::{
    DiskInfo, FileInfo, HostBoot, HostManifest, HostStatus, RootInfo, Slot, VERITY_BLOCK,
    VerityParams,
};

use super::stream::{hex, sha256};
use crate::pe;

/// A host image in memory: `root.img` (`data_blocks` of data, then a
/// one-block "hash tree" whose block hashes with the salt to the root hash,
/// enough for the top-block check), `uki.efi` (a PE with the matching
/// `.cmdline`) and the manifest describing both.
#[derive(Debug, Clone)]
pub struct FakeImage {
    pub manifest: HostManifest,
    pub root: Vec<u8>,
    pub uki: Vec<u8>,
}

impl FakeImage {
    pub fn new(version: &str, data_blocks: u64) -> FakeImage {
        let mut root: Vec<u8> = (0..data_blocks * VERITY_BLOCK)
            .map(|i| (i % 253) as u8)
            .collect();
        let top: Vec<u8> = (0..VERITY_BLOCK).map(|i| (i % 7) as u8).collect();
        root.extend_from_slice(&top);
        let mut salted = vec![0x5a; 32];
        salted.extend_from_slice(&top);
        let verity = VerityParams {
            data_blocks,
            hash_start_block: data_blocks,
            root_hash: hex(&sha256(&salted)),
            salt: "5a".repeat(32),
        };
        let mut image = FakeImage {
            manifest: HostManifest {
                format: 1,
                version: version.into(),
                kernel_release: "6.1.0-test-amd64".into(),
                root: RootInfo {
                    image: file_info("root.img", &root),
                    filesystem: "erofs".into(),
                    verity,
                },
                uki: file_info("uki.efi", &[]),
                disk: DiskInfo {
                    compressed: file_info("host.raw.zst", &[]),
                    raw_size: 0,
                    raw_sha256: String::new(),
                    partitions: Vec::new(),
                },
            },
            root,
            uki: Vec::new(),
        };
        image.set_uki(&image.cmdline());
        image
    }

    /// The `.cmdline` the manifest implies.
    pub fn cmdline(&self) -> String {
        HostBoot {
            version: self.manifest.version.clone(),
            verity: self.manifest.root.verity.clone(),
        }
        .cmdline()
    }

    /// Replaces the UKI by one with this `.cmdline`, and its manifest entry.
    pub fn set_uki(&mut self, cmdline: &str) {
        self.uki = pe::fake_image(&[
            (".osrel", b"ID=host\nVERSION_ID=2\n"),
            (".cmdline", format!("{cmdline}\n").as_bytes()),
            (".linux", &[0x90; 3000]),
        ]);
        self.manifest.uki = file_info("uki.efi", &self.uki);
    }

    /// Writes root.img, uki.efi and manifest.json into `dir`; the manifest's path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        std::fs::write(dir.join("root.img"), &self.root).expect("write root.img");
        std::fs::write(dir.join("uki.efi"), &self.uki).expect("write uki.efi");
        let manifest = dir.join("manifest.json");
        std::fs::write(
            &manifest,
            serde_json::to_vec_pretty(&self.manifest).expect("json"),
        )
        .expect("write manifest.json");
        manifest
    }
}

/// A manifest's entry for a file with these bytes.
pub fn file_info(file: &str, bytes: &[u8]) -> FileInfo {
    FileInfo {
        file: file.into(),
        size: bytes.len() as u64,
        sha256: hex(&sha256(bytes)),
    }
}

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
