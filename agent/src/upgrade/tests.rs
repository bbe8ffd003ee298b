//! The whole upgrade on a fake host: a temp root holding `run/host/status.json`,
//! a sysfs tree with the host disk's partitions, temp files as the slots'
//! devices and a temp directory as the ESP; the image from a directory or
//! from an HTTP server on 127.0.0.1.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use model::host::Slot;

use super::*;

/// Each slot's partition size in the fake host.
const CAPACITY: u64 = 8 << 20;
/// root.img's data blocks: 5 MiB, so it spans two write chunks.
const DATA_BLOCKS: u64 = 1280;

/// A fake installed host running `running`.
struct Host {
    root: tempfile::TempDir,
}

impl Host {
    fn new(running: Slot) -> Host {
        let root = tempfile::tempdir().unwrap();
        testing::fake_host(root.path(), running, CAPACITY);
        Host { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn slot_bytes(&self, slot: Slot, len: usize) -> Vec<u8> {
        let mut bytes =
            std::fs::read(self.path(&format!("dev/{}", testing::dev_name(slot)))).unwrap();
        bytes.truncate(len);
        bytes
    }

    fn entries(&self) -> Vec<String> {
        esp::UkiDir::open(self.path("efi/EFI/Linux"))
            .unwrap()
            .names()
            .unwrap()
    }

    fn upgrade(&self, image: &str) -> (Result<Upgraded, UpgradeError>, Vec<String>) {
        let mut lines = Vec::new();
        let options = Options {
            image: image.to_owned(),
            sysroot: self.root.path().to_owned(),
        };
        let result = upgrade(&options, &mut |l: &str| lines.push(l.to_owned()));
        (result, lines)
    }
}

/// A fake image and the directory it is written to.
struct Image {
    dir: tempfile::TempDir,
    fake: testing::FakeImage,
}

impl Image {
    fn new(version: &str) -> Image {
        Image {
            dir: tempfile::tempdir().unwrap(),
            fake: testing::FakeImage::new(version, DATA_BLOCKS),
        }
    }

    /// Writes the files; the manifest's path.
    fn write(&self) -> String {
        self.fake.write(self.dir.path()).display().to_string()
    }
}

impl std::ops::Deref for Image {
    type Target = testing::FakeImage;
    fn deref(&self) -> &testing::FakeImage {
        &self.fake
    }
}

impl std::ops::DerefMut for Image {
    fn deref_mut(&mut self) -> &mut testing::FakeImage {
        &mut self.fake
    }
}

#[test]
fn a_good_image_goes_into_the_other_slot_with_a_fresh_entry() {
    let host = Host::new(Slot::A);
    let image = Image::new("2");
    let (result, lines) = host.upgrade(&image.write());
    let done = result.unwrap();
    assert_eq!(
        done,
        Upgraded {
            slot: Slot::B,
            version: "2".into(),
            entry: "host-b-2+3.efi".into(),
            removed: vec!["host-b-0+0-3.efi".into()],
        }
    );
    assert!(host.slot_bytes(Slot::B, image.root.len()) == image.root);
    assert!(
        host.slot_bytes(Slot::A, 4096).iter().all(|&b| b == 0),
        "the running slot was written"
    );
    assert_eq!(host.entries(), ["host-a-1.efi", "host-b-2+3.efi"]);
    assert_eq!(
        std::fs::read(host.path("efi/EFI/Linux/host-b-2+3.efi")).unwrap(),
        image.uki
    );
    assert!(
        lines.contains(&"writing slot b: 100 % (5.0 of 5.0 MiB)".to_owned()),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("verifying slot b: 100 %")),
        "{lines:#?}"
    );
    // The same upgrade again: the fresh entry is replaced, not duplicated.
    let (again, _) = host.upgrade(&image.write());
    assert_eq!(again.unwrap().removed, ["host-b-2+3.efi"]);
    assert_eq!(host.entries(), ["host-a-1.efi", "host-b-2+3.efi"]);
}

#[test]
fn from_slot_b_the_target_is_a() {
    let host = Host::new(Slot::B);
    let image = Image::new("3");
    let (result, _) = host.upgrade(image.dir.path().to_str().unwrap_or_default());
    // The directory itself names manifest.json (written here first).
    assert!(matches!(
        result,
        Err(UpgradeError::Read { .. } | UpgradeError::Io { .. })
    ));
    image.write();
    let (result, _) = host.upgrade(image.dir.path().to_str().unwrap());
    assert_eq!(result.unwrap().entry, "host-a-3+3.efi");
    assert!(host.slot_bytes(Slot::A, image.root.len()) == image.root);
    assert_eq!(host.entries(), ["host-a-3+3.efi", "host-b-0+0-3.efi"]);
}

#[test]
fn a_root_hash_mismatch_leaves_no_entry_for_the_slot() {
    let host = Host::new(Slot::A);
    let mut image = Image::new("2");
    image.root[100] ^= 0xff; // corrupt after the manifest was made
    let (result, _) = host.upgrade(&image.write());
    let err = result.unwrap_err();
    assert!(
        matches!(err, UpgradeError::Hash { slot: Slot::B, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("root.img: SHA-256"), "{err}");
    assert_eq!(host.entries(), ["host-a-1.efi"]);
}

#[test]
fn a_truncated_root_img_fails() {
    let host = Host::new(Slot::A);
    let image = Image::new("2");
    let manifest = image.write();
    let root = image.dir.path().join("root.img");
    std::fs::write(&root, &image.root[..image.root.len() - 5000]).unwrap();
    let (result, _) = host.upgrade(&manifest);
    let err = result.unwrap_err();
    assert!(
        matches!(err, UpgradeError::Short { got, expected, .. } if got == expected - 5000),
        "{err}"
    );
    assert_eq!(host.entries(), ["host-a-1.efi"]);
}

#[test]
fn a_cmdline_from_another_build_fails_before_anything_changes() {
    let host = Host::new(Slot::A);
    let mut image = Image::new("2");
    let other = image
        .cmdline()
        .replace(&image.manifest.root.verity.root_hash, &"cd".repeat(32));
    image.set_uki(&other);
    let (result, _) = host.upgrade(&image.write());
    let err = result.unwrap_err();
    assert!(matches!(err, UpgradeError::Cmdline { .. }), "{err}");
    assert!(err.to_string().contains(&"cd".repeat(32)), "{err}");
    assert_eq!(host.entries(), ["host-a-1.efi", "host-b-0+0-3.efi"]);
    assert!(host.slot_bytes(Slot::B, 4096).iter().all(|&b| b == 0));
}

#[test]
fn a_uki_hash_mismatch_fails_before_anything_changes() {
    let host = Host::new(Slot::A);
    let mut image = Image::new("2");
    image.manifest.uki.sha256 = "00".repeat(32);
    let (result, _) = host.upgrade(&image.write());
    assert!(matches!(result, Err(UpgradeError::Hash { .. })));
    assert_eq!(host.entries(), ["host-a-1.efi", "host-b-0+0-3.efi"]);
}

#[test]
fn a_top_block_that_misses_the_root_hash_fails_after_the_read_back() {
    let host = Host::new(Slot::A);
    let mut image = Image::new("2");
    // A consistent UKI and manifest, but root.img's tree is not that root hash.
    image.manifest.root.verity.root_hash = "ee".repeat(32);
    let cmdline = image.cmdline();
    image.set_uki(&cmdline);
    let (result, _) = host.upgrade(&image.write());
    let err = result.unwrap_err();
    assert!(matches!(err, UpgradeError::ReadBack { .. }), "{err}");
    assert!(err.to_string().contains("top block"), "{err}");
    assert_eq!(host.entries(), ["host-a-1.efi"]);
}

#[test]
fn the_running_slot_is_refused() {
    // status.json says A runs, but a device-mapper device holds B's partition.
    let host = Host::new(Slot::A);
    host.write("sys/class/block/vda3/holders/dm-1", b"");
    let image = Image::new("2");
    let (result, _) = host.upgrade(&image.write());
    let err = result.unwrap_err();
    assert!(
        matches!(err, UpgradeError::Held { slot: Slot::B, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("the running slot is never written"),
        "{err}"
    );
    assert_eq!(host.entries(), ["host-a-1.efi", "host-b-0+0-3.efi"]);
}

#[test]
fn a_boot_on_trial_keeps_its_fallback() {
    let host = Host::new(Slot::B);
    let mut status: model::host::HostStatus =
        serde_json::from_slice(&std::fs::read(host.path("run/host/status.json")).unwrap()).unwrap();
    (status.trial, status.blessed) = (true, false);
    std::fs::write(
        host.path("run/host/status.json"),
        serde_json::to_vec(&status).unwrap(),
    )
    .unwrap();
    let (result, _) = host.upgrade(&Image::new("2").write());
    let err = result.unwrap_err();
    assert!(
        matches!(err, UpgradeError::OnTrial { other: Slot::A, .. }),
        "{err}"
    );
    assert_eq!(host.entries(), ["host-a-1.efi", "host-b-0+0-3.efi"]);
}

#[test]
fn without_a_host_status_nothing_is_done() {
    let host = Host::new(Slot::A);
    std::fs::remove_file(host.path("run/host/status.json")).unwrap();
    let (result, _) = host.upgrade(&Image::new("2").write());
    let err = result.unwrap_err().to_string();
    assert!(
        err.starts_with("not running an installed host image (no "),
        "{err}"
    );
    assert!(err.contains("/run/host/status.json)"), "{err}");
}

#[test]
fn two_names_of_one_entry_stop_the_upgrade_before_writing() {
    let host = Host::new(Slot::A);
    host.write("efi/EFI/Linux/host-b-0+1-2.efi", b"spent UKI");
    let (result, _) = host.upgrade(&Image::new("2").write());
    assert!(matches!(result, Err(UpgradeError::TwoNames { .. })));
    assert_eq!(
        host.entries(),
        ["host-a-1.efi", "host-b-0+0-3.efi", "host-b-0+1-2.efi"]
    );
    assert!(host.slot_bytes(Slot::B, 4096).iter().all(|&b| b == 0));
}

#[test]
fn manifests_that_do_not_fit_are_refused() {
    let host = Host::new(Slot::A);
    let mut image = Image::new("2");
    image.manifest.root.image.size = CAPACITY + 4096;
    let (result, _) = host.upgrade(&image.write());
    let err = result.unwrap_err();
    assert!(
        matches!(&err, UpgradeError::TooBig { partition, .. } if partition == "vda3"),
        "{err}"
    );
    let mut image = Image::new("2");
    image.manifest.format = 2;
    let (result, _) = host.upgrade(&image.write());
    assert!(result.unwrap_err().to_string().contains("format 2"));
    let mut image = Image::new("2");
    image.manifest.root.verity.hash_start_block = DATA_BLOCKS + 5;
    let (result, _) = host.upgrade(&image.write());
    assert!(result.unwrap_err().to_string().contains("hash_start_block"));
    let mut image = Image::new("2");
    image.manifest.uki.size = 1 << 30;
    let (result, _) = host.upgrade(&image.write());
    assert!(result.unwrap_err().to_string().contains("fits the"));
    // A UKI longer than the manifest says.
    let image = Image::new("2");
    let manifest = image.write();
    let mut longer = image.uki.clone();
    longer.push(0);
    std::fs::write(image.dir.path().join("uki.efi"), longer).unwrap();
    let (result, _) = host.upgrade(&manifest);
    assert!(matches!(result, Err(UpgradeError::Long { .. })));
    assert_eq!(host.entries(), ["host-a-1.efi", "host-b-0+0-3.efi"]);
}

/// Serves `dir` over HTTP on 127.0.0.1 (one request per connection); with
/// `cut`, that file's body stops that many bytes short of its
/// `Content-Length`. The base URL.
fn serve(dir: &Path, cut: Option<(&'static str, usize)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/img/", listener.local_addr().unwrap());
    let dir = dir.to_owned();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = request.split(' ').nth(1).unwrap_or("");
            let name = path.strip_prefix("/img/").unwrap_or("");
            let Ok(body) = std::fs::read(dir.join(name)) else {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            };
            let sent = match cut {
                Some((file, short)) if file == name => body.len() - short,
                _ => body.len(),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body[..sent]);
        }
    });
    url
}

#[test]
fn an_http_source_streams_the_same_files() {
    let host = Host::new(Slot::A);
    let image = Image::new("2");
    image.write();
    let url = serve(image.dir.path(), None);
    let (result, _) = host.upgrade(&format!("{url}manifest.json"));
    assert_eq!(result.unwrap().entry, "host-b-2+3.efi");
    assert!(host.slot_bytes(Slot::B, image.root.len()) == image.root);

    let (result, _) = host.upgrade(&format!("{url}missing.json"));
    let err = result.unwrap_err().to_string();
    assert!(err.contains("missing.json answered HTTP 404"), "{err}");
}

#[test]
fn an_http_body_cut_short_fails() {
    let host = Host::new(Slot::A);
    let image = Image::new("2");
    image.write();
    let url = serve(image.dir.path(), Some(("root.img", 10_000)));
    let (result, _) = host.upgrade(&url);
    let err = result.unwrap_err();
    // ureq reports the closed connection before Content-Length as a read error.
    assert!(
        matches!(err, UpgradeError::Read { .. } | UpgradeError::Short { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("root.img"), "{err}");
    assert_eq!(host.entries(), ["host-a-1.efi"]);
}
