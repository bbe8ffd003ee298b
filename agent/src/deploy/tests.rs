//! The deploy and the clean on temp files as disks (under `/var/tmp`, so
//! `O_DIRECT` is exercised where the file system has it), the image from a
//! Range-capable HTTP server on 127.0.0.1 that can cut a transfer, serve
//! altered bytes, ignore Range or serve a truncated file.

use std::io::{BufRead as _, BufReader, Cursor, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use gptman::{GPT, GPTPartitionEntry};
use model::deploy::PAYLOAD_OFFSET;

use super::*;

const MIB: u64 = 1 << 20;
/// The image: esp 1-3 MiB, config 3-19 MiB (two 8 MiB slots), data 19-23 MiB.
const IMAGE_MIB: u64 = 24;
const DISK_MIB: u64 = 64;

/// A host-like image: protective MBR, GPT (esp, config, data), a pattern in
/// the partitions (zeros in config), the backup GPT at its end.
fn image() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..IMAGE_MIB * MIB)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    bytes[(3 * MIB) as usize..(19 * MIB) as usize].fill(0);
    plan::write_test_gpt(&mut bytes, plan::DATA);
    bytes
}

fn sha(bytes: &[u8]) -> String {
    hex(&crate::upgrade::stream::sha256(bytes))
}

/// A sealed slot's bytes (the signature is the host's to check: zeros here).
fn sealed(generation: u64) -> Vec<u8> {
    let payload = br#"{"format":1}"#;
    let mut s = plan::CONFIG_MAGIC.to_vec();
    s.extend_from_slice(&generation.to_le_bytes());
    s.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    s.resize(PAYLOAD_OFFSET, 0);
    s.extend_from_slice(payload);
    s
}

/// What the server does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The first answer stops after this many body bytes (connection closed).
    CutOnceAt(usize),
    /// The first answer is cut after this many body bytes; every answer is
    /// the whole file with 200, ranged request or not.
    CutThenIgnoreRange(usize),
    /// One byte of the body is flipped.
    Altered,
    /// The file has this many bytes fewer than the order says.
    Truncated(usize),
    /// Every answer after the first stops after its headers (the network
    /// went away and stays away).
    DeadAfterCutAt(usize),
}

/// Serves `body` at `/host.raw.zst` with Range; the URL and the number of
/// requests with a `Range` header.
fn serve(body: Vec<u8>, fault: Fault) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/host.raw.zst", listener.local_addr().unwrap());
    let ranged = Arc::new(AtomicUsize::new(0));
    let counter = ranged.clone();
    let mut body = body;
    match fault {
        Fault::Altered => {
            let middle = body.len() / 2;
            body[middle] ^= 0x40;
        }
        Fault::Truncated(n) => body.truncate(body.len() - n),
        _ => {}
    }
    std::thread::spawn(move || {
        let mut first = true;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let mut from = None;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) <= 2 {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    from = v.trim().trim_end_matches('-').parse::<usize>().ok();
                }
            }
            if from.is_some() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            if matches!(fault, Fault::CutThenIgnoreRange(_)) {
                from = None;
            }
            let (head, part) = match from {
                Some(f) if f >= body.len() => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    continue;
                }
                Some(f) => (
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {f}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len() - 1,
                        body.len(),
                        body.len() - f
                    ),
                    &body[f..],
                ),
                None => (
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    ),
                    &body[..],
                ),
            };
            let sent = match fault {
                Fault::CutOnceAt(n) | Fault::CutThenIgnoreRange(n) | Fault::DeadAfterCutAt(n)
                    if first =>
                {
                    n.min(part.len())
                }
                Fault::DeadAfterCutAt(_) => 0,
                _ => part.len(),
            };
            first = false;
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&part[..sent]);
        }
    });
    (url, ranged)
}

/// A fast retry policy for tests.
fn quick() -> Retry {
    Retry {
        budget: Duration::from_secs(2),
        first_pause: Duration::from_millis(20),
        max_pause: Duration::from_millis(200),
        read_timeout: Duration::from_secs(5),
    }
}

/// A machine under a temp root in /var/tmp: `dev/vda`, a file of
/// [`DISK_MIB`] MiB holding garbage and an old backup GPT at its end.
struct Machine {
    root: tempfile::TempDir,
}

impl Machine {
    fn new() -> Machine {
        let root = tempfile::Builder::new()
            .prefix("agent-deploy-test-")
            .tempdir_in("/var/tmp")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        std::fs::create_dir_all(root.path().join("dev")).unwrap();
        let mut old = vec![0x5au8; (DISK_MIB * MIB) as usize];
        // An old disk's table at both ends.
        let mut cursor = Cursor::new(std::mem::take(&mut old));
        let mut gpt = GPT::new_from(&mut cursor, 512, [3; 16]).unwrap();
        gpt[1] = GPTPartitionEntry {
            partition_type_guid: [1; 16],
            unique_partition_guid: [4; 16],
            starting_lba: 2048,
            ending_lba: DISK_MIB * 2048 - 2048 - 1,
            attribute_bits: 0,
            partition_name: "old".into(),
        };
        gpt.write_into(&mut cursor).unwrap();
        std::fs::write(root.path().join("dev/vda"), cursor.into_inner()).unwrap();
        Machine { root }
    }

    fn sys(&self) -> SysRoot {
        SysRoot::new(self.root.path(), false)
    }

    fn disk_path(&self) -> PathBuf {
        self.root.path().join("dev/vda")
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(self.disk_path()).unwrap()
    }
}

fn disk(serial: &str) -> Disk {
    serde_json::from_value(serde_json::json!({
        "name": "vda", "path": "/dev/vda", "size_bytes": DISK_MIB * MIB,
        "rotational": false, "model": null, "serial": serial, "wwn": null,
        "by_path": null, "kind": "virtio"
    }))
    .unwrap()
}

fn order(url: &str, img: &[u8], zst: &[u8]) -> DeployOrder {
    serde_json::from_value(serde_json::json!({
        "image": "host", "version": "2", "url": url,
        "compressed_size": zst.len(), "compressed_sha256": sha(zst),
        "raw_size": img.len(), "raw_sha256": sha(img), "root_hash": "ab".repeat(32),
        "root_disk": {"name": "vda", "by_path": null, "serial": "S1", "size_bytes": 1},
        "config": base64::engine::general_purpose::STANDARD.encode(sealed(7)),
    }))
    .unwrap()
}

/// Runs a deploy; its result, the console lines and the last progress.
fn run(machine: &Machine, order: &DeployOrder) -> (Deployed, Vec<String>, Option<DeployProgress>) {
    let lines = Mutex::new(Vec::new());
    let progress = Progress::default();
    let result = deploy(
        order,
        &[disk("S1"), disk("S2")],
        &machine.sys(),
        quick(),
        &progress,
        &|l| lines.lock().unwrap().push(l.to_owned()),
    );
    (result, lines.into_inner().unwrap(), progress.snapshot())
}

fn compressed(img: &[u8]) -> Vec<u8> {
    zstd::encode_all(img, 3).unwrap()
}

#[test]
fn a_cut_download_resumes_and_the_disk_gets_image_table_and_config() {
    let img = image();
    let zst = compressed(&img);
    let (url, ranged) = serve(zst.clone(), Fault::CutOnceAt(zst.len() / 3));
    let machine = Machine::new();
    let (result, lines, progress) = run(&machine, &order(&url, &img, &zst));
    let (name, written) = result.unwrap();
    assert_eq!(name, "/dev/vda");
    assert_eq!(written.raw_bytes, img.len() as u64);
    assert_eq!(written.resumes, 1, "{lines:?}");
    assert_eq!(ranged.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(written.data_bytes, (DISK_MIB - 1 - 19) * MIB);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("download interrupted at byte")),
        "{lines:?}"
    );
    assert_eq!(
        progress.map(|p| p.phase),
        Some(DeployPhase::Finishing),
        "{progress:?}"
    );

    let bytes = machine.bytes();
    // The body is the image's but for the config slot, and so is the head past the GPT.
    assert!(bytes[MIB as usize..3 * MIB as usize] == img[MIB as usize..3 * MIB as usize]);
    assert!(bytes[4 * MIB as usize..img.len()] == img[4 * MIB as usize..]);
    assert!(bytes[34 * 512..MIB as usize] == img[34 * 512..MIB as usize]);
    // The table: backup at the disk's end, data grown to the last aligned LBA.
    let mut file = std::fs::File::open(machine.disk_path()).unwrap();
    let gpt = GPT::find_from(&mut file).unwrap();
    assert_eq!(gpt.header.backup_lba, DISK_MIB * 2048 - 1);
    assert_eq!(gpt[3].partition_name.as_str(), "data");
    assert_eq!(gpt[3].ending_lba, (DISK_MIB - 1) * 2048 - 1);
    let last = &bytes[(bytes.len() - 512)..];
    assert_eq!(
        &last[..8],
        b"EFI PART",
        "backup GPT header at the last sector"
    );
    assert_eq!(&bytes[510..512], &[0x55, 0xaa], "protective MBR");
    // The config in slot 0 of the config partition, zero-padded.
    let slot0 = &bytes[(3 * MIB) as usize..(3 * MIB) as usize + 8192];
    let config = sealed(7);
    assert!(slot0[..config.len()] == config[..]);
    assert!(slot0[config.len()..].iter().all(|&b| b == 0));
}

#[test]
fn altered_truncated_or_unresumable_downloads_fail_and_leave_no_table() {
    let img = image();
    let zst = compressed(&img);
    let mut other = zst.clone();
    other[zst.len() / 2] ^= 0x40;
    for (fault, sha_of, expect) in [
        // zstd finds the damage while decoding.
        (Fault::Altered, &zst, "Data corruption"),
        // The order is for other bytes: the compressed SHA-256 tells.
        (Fault::None, &other, "SHA-256"),
        (Fault::Truncated(100), &zst, "416"),
        // No byte gets through for the retry budget (2 s in tests, 3 min for real).
        (
            Fault::DeadAfterCutAt(zst.len() / 2),
            &zst,
            "did not resume within 2 s",
        ),
    ] {
        let (url, _) = serve(zst.clone(), fault);
        let machine = Machine::new();
        let mut o = order(&url, &img, &zst);
        o.compressed_sha256 = sha(sha_of);
        let (result, lines, _) = run(&machine, &o);
        let (disk, failure) = result.unwrap_err();
        assert_eq!(disk.as_deref(), Some("/dev/vda"));
        assert_eq!(failure.step, "download", "{fault:?}: {failure}");
        assert!(
            failure.message.contains(expect),
            "{fault:?}: {failure}\n{lines:?}"
        );
        let mut file = std::fs::File::open(machine.disk_path()).unwrap();
        assert!(
            GPT::find_from(&mut file).is_err(),
            "{fault:?}: a table was left"
        );
        let bytes = machine.bytes();
        assert!(bytes[..MIB as usize].iter().all(|&b| b == 0));
        assert!(bytes[bytes.len() - MIB as usize..].iter().all(|&b| b == 0));
    }
}

#[test]
fn a_server_ignoring_range_after_a_cut_is_a_failure_with_that_reason() {
    let img = image();
    let zst = compressed(&img);
    let (url, ranged) = serve(zst.clone(), Fault::CutThenIgnoreRange(zst.len() / 2));
    let machine = Machine::new();
    let (result, _, _) = run(&machine, &order(&url, &img, &zst));
    let (_, failure) = result.unwrap_err();
    assert_eq!(failure.step, "download");
    assert!(failure.message.contains("ignores Range"), "{failure}");
    assert_eq!(ranged.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn no_matching_disk_fails_at_select_disk_with_the_candidates() {
    let img = image();
    let zst = compressed(&img);
    let machine = Machine::new();
    let mut o = order("http://127.0.0.1:9/none", &img, &zst);
    o.root_disk.serial = Some("S9".into());
    let (result, _, progress) = run(&machine, &o);
    let (disk, failure) = result.unwrap_err();
    assert_eq!((disk, failure.step), (None, "select disk"));
    assert!(failure.message.contains("vda (serial S1"), "{failure}");
    assert_eq!(progress, None);
}

#[test]
fn a_disk_too_small_for_the_image_is_refused_before_any_write() {
    let img = image();
    let zst = compressed(&img);
    let machine = Machine::new();
    std::fs::OpenOptions::new()
        .write(true)
        .open(machine.disk_path())
        .unwrap()
        .set_len(IMAGE_MIB * MIB)
        .unwrap();
    let before = machine.bytes();
    let (result, _, _) = run(&machine, &order("http://127.0.0.1:9/x", &img, &zst));
    let (_, failure) = result.unwrap_err();
    assert_eq!(failure.step, "write");
    assert!(failure.message.contains("larger disk"), "{failure}");
    assert!(machine.bytes() == before);
}

#[test]
fn config_slots_alternate_and_a_bad_config_is_refused() {
    let img = image();
    let machine = Machine::new();
    std::fs::write(machine.disk_path(), {
        let mut d = img.clone();
        d.resize((DISK_MIB * MIB) as usize, 0);
        d
    })
    .unwrap();
    let dev = open_disk(&machine.sys(), "/dev/vda", &|_| {}).unwrap();
    let (gpt, _) = write_table(&dev, &img[..HEAD], &|_| {}).unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    assert_eq!(write_config(&dev, &gpt, &b64(&sealed(1))), Ok(0));
    assert_eq!(write_config(&dev, &gpt, &b64(&sealed(2))), Ok(1));
    assert_eq!(write_config(&dev, &gpt, &b64(&sealed(3))), Ok(0));
    let bytes = machine.bytes();
    let slot = |i: u64| &bytes[(3 * MIB + i * SLOT_BYTES as u64) as usize..][..20];
    assert_eq!(slot(0)[8], 3);
    assert_eq!(slot(1)[8], 2);
    let err = write_config(&dev, &gpt, &b64(b"not a config")).unwrap_err();
    assert_eq!(err.step, "config");
    assert!(err.message.contains("PROVCFG1"), "{err}");
    let err = write_config(&dev, &gpt, "@@@").unwrap_err();
    assert!(err.message.contains("base64"), "{err}");
}

#[test]
fn clean_metadata_erases_tables_signatures_and_config_and_full_erases_all() {
    let img = image();
    let zst = compressed(&img);
    let (url, _) = serve(zst.clone(), Fault::None);
    let machine = Machine::new();
    run(&machine, &order(&url, &img, &zst)).0.unwrap();
    let progress = Progress::default();
    let lines = Mutex::new(Vec::new());
    let say = |l: &str| lines.lock().unwrap().push(l.to_owned());
    let mut usb = disk("U1");
    usb.removable = true;
    usb.path = "/dev/sdz".into();
    let erased = clean(
        EraseMode::Metadata,
        &[disk("S1"), usb.clone()],
        &machine.sys(),
        &progress,
        &say,
    )
    .unwrap();
    assert_eq!(erased, ["/dev/vda"]);
    let bytes = machine.bytes();
    let mut file = std::fs::File::open(machine.disk_path()).unwrap();
    assert!(GPT::find_from(&mut file).is_err());
    let zero = |from: u64, to: u64| bytes[from as usize..to as usize].iter().all(|&b| b == 0);
    assert!(zero(0, MIB) && zero((DISK_MIB - 1) * MIB, DISK_MIB * MIB));
    // esp's and data's first and last MiB; config's slots (its first MiB).
    assert!(zero(MIB, 2 * MIB) && zero(19 * MIB, 20 * MIB) && zero(3 * MIB, 4 * MIB));
    assert!(zero((DISK_MIB - 2) * MIB, (DISK_MIB - 1) * MIB));
    // Metadata only: the middle of data is still the image's.
    assert!(
        bytes[(21 * MIB) as usize..(22 * MIB) as usize]
            == img[(21 * MIB) as usize..(22 * MIB) as usize]
    );
    let p = progress.snapshot().unwrap();
    assert_eq!(p.phase, DeployPhase::Erasing);
    assert_eq!(p.done_bytes, p.total_bytes);

    clean(
        EraseMode::Full,
        &[disk("S1")],
        &machine.sys(),
        &progress,
        &say,
    )
    .unwrap();
    assert!(machine.bytes().iter().all(|&b| b == 0));
    let lines = lines.into_inner().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("Full, writes of zeros")),
        "{lines:?}"
    );
}

#[test]
fn an_image_from_a_local_file_is_written_too() {
    let img = image();
    let zst = compressed(&img);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("host.raw.zst");
    std::fs::write(&file, &zst).unwrap();
    let machine = Machine::new();
    let (result, _, _) = run(&machine, &order(file.to_str().unwrap(), &img, &zst));
    result.unwrap();
    assert!(machine.bytes()[4 * MIB as usize..img.len()] == img[4 * MIB as usize..]);
    // A short local file fails, it is not waited for.
    std::fs::write(&file, &zst[..zst.len() - 10]).unwrap();
    let (result, _, _) = run(&Machine::new(), &order(file.to_str().unwrap(), &img, &zst));
    assert_eq!(result.unwrap_err().1.step, "download");
}

/// The test's own check that [`Path`] joins keep the fake root.
#[test]
fn the_disk_is_opened_below_the_sysroot() {
    let machine = Machine::new();
    let dev = open_disk(&machine.sys(), "/dev/vda", &|_| {}).unwrap();
    assert_eq!(dev.path, machine.disk_path());
    assert_eq!(dev.name, "/dev/vda");
    assert!(Path::new(&dev.path).starts_with(machine.root.path()));
}

#[test]
fn two_buffers_overlap_and_the_consumer_error_wins() {
    // Every buffer produced is consumed, in order.
    let mut next = 0u64;
    let mut seen = Vec::new();
    two_buffers(
        |buf| {
            next += 1;
            buf.as_mut_slice()[0] = next as u8;
            Ok((next <= 5).then_some((1, next)))
        },
        |buf, len, at| {
            seen.push((buf.as_slice()[0], len, at));
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(seen, (1..=5).map(|i| (i as u8, 1, i)).collect::<Vec<_>>());
    // A write error mid-image is what is reported, not the stop it causes.
    let err = two_buffers(
        |_| Ok(Some((1, 0))),
        |_, _, _| {
            Err(fail(
                "write",
                "write at byte 4194304 of /dev/vda: Input/output error",
            ))
        },
    )
    .unwrap_err();
    assert_eq!(err.step, "write");
    // A producer error with a healthy consumer is reported as is.
    let err = two_buffers(|_| Err(fail("download", "cut")), |_, _, _| Ok(())).unwrap_err();
    assert_eq!((err.step, err.message.as_str()), ("download", "cut"));
}
