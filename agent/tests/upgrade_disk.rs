//! `node-agent upgrade` onto a real block device: a loop device as slot B,
//! `root.img` whose verity tree is made by `veritysetup` (cryptsetup-bin),
//! and a UKI whose `.cmdline` section `objcopy` (binutils) added to a real
//! PE image (Debian's `ipxe.efi`). Afterwards `veritysetup verify` checks the
//! slot against the root hash the UKI carries. Needs root (loop devices).

use std::path::PathBuf;
use std::process::Command;

use agent::upgrade::testing::{FakeImage, dev_name, fake_host, file_info};
use model::host::{Slot, VERITY_BLOCK, VerityParams};

const CAPACITY: u64 = 16 << 20;
/// Enough data blocks for a two-level hash tree (the top block first).
const DATA_BLOCKS: u64 = 2000;
const PE_INPUT: &str = "/usr/lib/ipxe/ipxe.efi";

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}); run `cargo xtask deps`"));
    assert!(
        out.status.success(),
        "{cmd:?} failed (losetup needs root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device over a file, detached on drop.
struct Loop(PathBuf);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn upgrade_writes_a_loop_device_that_veritysetup_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    std::fs::create_dir(&image).unwrap();

    // root.img: data blocks, then veritysetup's hash tree at hash_start_block.
    let root_img = tmp.path().join("root.img");
    let data: Vec<u8> = (0..DATA_BLOCKS * VERITY_BLOCK)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&root_img, &data).unwrap();
    let salt = "5a".repeat(32);
    let out = run(Command::new("veritysetup")
        .arg("format")
        .arg("--no-superblock")
        .arg(format!("--hash-offset={}", DATA_BLOCKS * VERITY_BLOCK))
        .arg(format!("--data-blocks={DATA_BLOCKS}"))
        .arg(format!("--salt={salt}"))
        .arg(&root_img)
        .arg(&root_img));
    let root_hash = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .expect("veritysetup prints the root hash")
        .trim()
        .to_owned();
    // The manifest and a UKI (a real PE) with the .cmdline it implies.
    let mut fake = FakeImage::new("2", DATA_BLOCKS);
    fake.root = std::fs::read(&root_img).unwrap();
    fake.manifest.root.image = file_info("root.img", &fake.root);
    fake.manifest.root.verity = VerityParams {
        data_blocks: DATA_BLOCKS,
        hash_start_block: DATA_BLOCKS,
        root_hash: root_hash.clone(),
        salt: salt.clone(),
    };
    std::fs::write(tmp.path().join("cmdline"), format!("{}\n", fake.cmdline())).unwrap();
    let uki = tmp.path().join("uki.efi");
    run(Command::new("objcopy")
        .arg(format!(
            "--add-section=.cmdline={}",
            tmp.path().join("cmdline").display()
        ))
        .arg("--change-section-vma=.cmdline=0x30000000")
        .arg(PE_INPUT)
        .arg(&uki));
    fake.uki = std::fs::read(&uki).unwrap();
    fake.manifest.uki = file_info("uki.efi", &fake.uki);
    let manifest = fake.write(&image);

    // The host: slot B's device is a loop device.
    let host = tmp.path().join("host");
    fake_host(&host, Slot::A, CAPACITY);
    let backing = tmp.path().join("slot-b");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(CAPACITY)
        .unwrap();
    let device = Loop(PathBuf::from(
        run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&backing))
        .trim(),
    ));
    let dev_b = host.join("dev").join(dev_name(Slot::B));
    std::fs::remove_file(&dev_b).unwrap();
    std::os::unix::fs::symlink(&device.0, &dev_b).unwrap();

    // While something holds the device exclusively (as a mount would), the
    // kernel refuses the upgrade's exclusive open.
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let _held = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_EXCL.bits())
            .open(&device.0)
            .expect("an exclusive open of the loop device");
        let out = Command::new(env!("CARGO_BIN_EXE_node-agent"))
            .arg("upgrade")
            .arg("--image")
            .arg(&manifest)
            .arg("--sysroot")
            .arg(&host)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("slot b") && stderr.contains("is in use"),
            "{stderr}"
        );
        // Refused before anything changed: slot b's old entry is still there.
        assert!(host.join("efi/EFI/Linux/host-b-0+0-3.efi").is_file());
    }

    let out = run(Command::new(env!("CARGO_BIN_EXE_node-agent"))
        .arg("upgrade")
        .arg("--image")
        .arg(&manifest)
        .arg("--sysroot")
        .arg(&host));
    assert!(
        out.contains("node-agent: upgrade: writing slot b: 100 %"),
        "{out}"
    );
    assert!(
        out.contains("node-agent: upgrade: slot b holds version 2; it boots at the next reboot"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(host.join("efi/EFI/Linux/host-b-2+3.efi")).unwrap(),
        fake.uki
    );
    // The slot, read through the loop device, is the verity volume of the UKI's root hash.
    run(Command::new("veritysetup")
        .arg("verify")
        .arg("--no-superblock")
        .arg(format!("--hash-offset={}", DATA_BLOCKS * VERITY_BLOCK))
        .arg(format!("--data-blocks={DATA_BLOCKS}"))
        .arg(format!("--salt={salt}"))
        .arg(&device.0)
        .arg(&device.0)
        .arg(&root_hash));
}
