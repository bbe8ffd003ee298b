//! Slow tier, root: `node-agent write-image` onto a loop device (O_DIRECT on
//! a real block device, BLKRRPART accepted; where the kernel makes loop
//! partitions, `data` appears grown), `sgdisk -v` on the result, then a
//! metadata clean (no GPT left). The loop device is detached on every exit.

use std::path::{Path, PathBuf};
use std::process::Command;

use agent::deploy::{Progress, clean};
use agent::sysroot::SysRoot;
use gptman::GPT;
use model::deploy::EraseMode;
use model::inventory::Disk;
use sha2::{Digest as _, Sha256};

const MIB: u64 = 1 << 20;

/// A loop device over a file, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path) -> Loop {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--partscan"])
            .arg(file)
            .output()
            .expect("losetup");
        assert!(out.status.success(), "losetup: {out:?}");
        Loop(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 40 MiB host-like image: esp 1-3, config 3-19, data 19-39 MiB.
fn image() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..40 * MIB).map(|i| (i % 251) as u8).collect();
    bytes[(3 * MIB) as usize..(19 * MIB) as usize].fill(0);
    agent::deploy::plan::write_test_gpt(&mut bytes, "data");
    bytes
}

fn sectors(dev: &str) -> u64 {
    let name = Path::new(dev).file_name().unwrap().to_str().unwrap();
    std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
        .unwrap_or_else(|e| panic!("{dev}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn write_image_onto_a_loop_device_then_clean_it() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let img = image();
    let zst = zstd::encode_all(img.as_slice(), 3).unwrap();
    let zst_path = dir.path().join("host.raw.zst");
    std::fs::write(&zst_path, &zst).unwrap();
    let disk_file: PathBuf = dir.path().join("disk");
    std::fs::write(&disk_file, vec![0x77u8; (96 * MIB) as usize]).unwrap();
    let lo = Loop::attach(&disk_file);

    let out = Command::new(env!("CARGO_BIN_EXE_node-agent"))
        .args(["write-image", "--url"])
        .arg(&zst_path)
        .args(["--disk", &lo.0, "--json"])
        .args(["--compressed-size", &zst.len().to_string()])
        .args(["--compressed-sha256", &hex(&Sha256::digest(&zst))])
        .args(["--raw-size", &img.len().to_string()])
        .args(["--raw-sha256", &hex(&Sha256::digest(&img))])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("refuses O_DIRECT"), "{stderr}");
    assert!(!stderr.contains("did not re-read"), "{stderr}");
    let figures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(figures["direct"], true);
    assert_eq!(figures["data_bytes"], 76 * MIB);
    // The table on the device: data (3) grown to 1 MiB before the end.
    let read_gpt = || GPT::find_from(&mut std::fs::File::open(&lo.0).unwrap());
    let gpt = read_gpt().unwrap();
    assert_eq!(gpt[3].ending_lba, 95 * 2048 - 1);
    assert_eq!(gpt.header.backup_lba, 96 * 2048 - 1);
    // Where the kernel makes loop partitions (not in every sandbox), it re-read it.
    let p3 = format!("{}p3", lo.0);
    let p3_in_sys = Path::new("/sys/class/block").join(Path::new(&p3).file_name().unwrap());
    if p3_in_sys.exists() {
        assert_eq!(sectors(&p3) * 512, 76 * MIB);
    }
    if let Ok(out) = Command::new("sgdisk").args(["-v", &lo.0]).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("No problems found"), "sgdisk -v: {text}");
    }

    let disk: Disk = serde_json::from_value(serde_json::json!({
        "name": Path::new(&lo.0).file_name().unwrap().to_str().unwrap(),
        "path": lo.0, "size_bytes": 96 * MIB, "rotational": false, "model": null,
        "serial": null, "wwn": null, "by_path": null, "kind": "unknown"
    }))
    .unwrap();
    let erased = clean(
        EraseMode::Metadata,
        &[disk],
        &SysRoot::new("/", false),
        &Progress::default(),
        &|_| {},
    )
    .unwrap();
    assert_eq!(erased.as_slice(), std::slice::from_ref(&lo.0));
    assert!(read_gpt().is_err(), "a GPT is left after the clean");
    assert!(!p3_in_sys.exists(), "{p3} still there after the clean");
}
