//! The TFTP server against clients we did not write (curl, atftp) on
//! loopback, plus raw-packet checks for what those clients cannot provoke:
//! the PXE tsize probe followed by an ERROR, the transfer cap, path escapes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use provisioner::tftp::codec::{self, ErrorCode, Packet, RequestOptions};
use provisioner::tftp::{TftpConfig, TftpServer, TftpStats};

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    big: Vec<u8>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("boot");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    // 3 MiB + a bit: not a multiple of any block size used here.
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 777u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::write(root.join("sub/small.txt"), b"hello pxe\n").unwrap();
    std::fs::write(dir.path().join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).unwrap();
    Fixture {
        root,
        big,
        _dir: dir,
    }
}

async fn start(config: TftpConfig) -> (SocketAddr, Arc<TftpStats>) {
    let server = TftpServer::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let stats = Arc::clone(&server.stats);
    tokio::spawn(server.run());
    (addr, stats)
}

fn config(root: &std::path::Path) -> TftpConfig {
    let mut files = HashMap::new();
    files.insert(
        "memory/boot.ipxe".to_owned(),
        Arc::<[u8]>::from(&b"#!ipxe\necho in memory\n"[..]),
    );
    TftpConfig {
        root: Some(root.to_owned()),
        files,
        ..TftpConfig::default()
    }
}

async fn run(cmd: &mut Command) -> std::process::Output {
    let mut cmd = std::mem::replace(cmd, Command::new("true"));
    tokio::task::spawn_blocking(move || {
        cmd.output()
            .expect("run the client (installed by `cargo xtask deps`)")
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_atftp_fetch_files_byte_for_byte() {
    let f = fixture();
    let (addr, stats) = start(config(&f.root)).await;
    let out_dir = tempfile::tempdir().unwrap();

    // curl with blksize (curl does not do windowsize).
    let got = out_dir.path().join("curl.bin");
    let out = run(Command::new("curl")
        .args(["-sS", "--tftp-blksize", "1468", "-o"])
        .arg(&got)
        .arg(format!("tftp://{addr}/big.bin")))
    .await;
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&got).unwrap() == f.big,
        "curl got different bytes"
    );

    // atftp with blksize and windowsize (RFC 7440).
    let got = out_dir.path().join("atftp.bin");
    let out = run(Command::new("atftp")
        .args([
            "--option",
            "blksize 1468",
            "--option",
            "windowsize 8",
            "--option",
            "tsize",
            "-g",
            "-r",
            "big.bin",
            "-l",
        ])
        .arg(&got)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string()))
    .await;
    assert!(
        out.status.success(),
        "atftp: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&got).unwrap() == f.big,
        "atftp got different bytes"
    );

    // Plain RFC 1350 (512-byte blocks), a nested path, and an in-memory file.
    let got = out_dir.path().join("small.txt");
    let out = run(Command::new("curl")
        .args(["-sS", "--tftp-no-options", "-o"])
        .arg(&got)
        .arg(format!("tftp://{addr}/sub/small.txt")))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&got).unwrap(), b"hello pxe\n");
    let got = out_dir.path().join("boot.ipxe");
    let out = run(Command::new("curl")
        .args(["-sS", "-o"])
        .arg(&got)
        .arg(format!("tftp://{addr}/memory/boot.ipxe")))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&got).unwrap(), b"#!ipxe\necho in memory\n");

    // Refusals: missing file, traversal, a symlink out of the root.
    for name in ["nope.bin", "../secret", "sub/../../secret", "escape"] {
        let out = run(Command::new("curl")
            .args(["-sS", "-o", "/dev/null"])
            .arg(format!("tftp://{addr}/{name}")))
        .await;
        assert!(!out.status.success(), "{name} was served");
    }
    assert_eq!(stats.completed.load(Ordering::Relaxed), 4);
}

/// Sends one datagram and waits for the answer.
async fn exchange(
    socket: &tokio::net::UdpSocket,
    to: SocketAddr,
    packet: &Packet<'_>,
) -> (Vec<u8>, SocketAddr) {
    socket.send_to(&codec::encode(packet), to).await.unwrap();
    let mut buf = vec![0u8; 70_000];
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    buf.truncate(len);
    (buf, from)
}

#[tokio::test]
async fn a_tsize_probe_ended_by_an_error_frees_the_transfer_at_once() {
    let f = fixture();
    let (addr, stats) = start(config(&f.root)).await;
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let request = Packet::Read {
        filename: "big.bin".into(),
        mode: codec::Mode::Octet,
        options: RequestOptions {
            tsize: Some(0),
            blksize: Some(1456),
            ..RequestOptions::default()
        },
    };
    let (answer, tid) = exchange(&client, addr, &request).await;
    assert_ne!(tid, addr, "the transfer answers from its own port");
    match codec::decode(&answer).unwrap() {
        Packet::Oack(options) => {
            assert_eq!(options.tsize, Some(f.big.len() as u64));
            assert_eq!(options.blksize, Some(1456));
        }
        other => panic!("expected an OACK, got {other:?}"),
    }
    // What PXE ROMs do after learning the size: refuse the options.
    client
        .send_to(
            &codec::encode(&Packet::Error {
                code: ErrorCode::OptionsRefused,
                message: "tsize".into(),
            }),
            tid,
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while stats.aborted_by_client.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the transfer did not end on the client's ERROR"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn transfers_beyond_the_cap_are_refused_and_writes_are_refused() {
    let f = fixture();
    let (addr, stats) = start(TftpConfig {
        max_transfers: 1,
        ..config(&f.root)
    })
    .await;
    let first = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let second = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let read = Packet::Read {
        filename: "big.bin".into(),
        mode: codec::Mode::Octet,
        options: RequestOptions::default(),
    };
    let (answer, _) = exchange(&first, addr, &read).await;
    assert!(matches!(
        codec::decode(&answer).unwrap(),
        Packet::Data { block: 1, .. }
    ));
    // The first transfer waits for its ACK: the cap is reached.
    let (answer, from) = exchange(&second, addr, &read).await;
    assert_eq!(from, addr);
    assert!(
        matches!(codec::decode(&answer).unwrap(), Packet::Error { .. }),
        "{answer:?}"
    );
    assert_eq!(stats.refused.load(Ordering::Relaxed), 1);

    let write = Packet::Write {
        filename: "x".into(),
        mode: codec::Mode::Octet,
    };
    let (answer, _) = exchange(&second, addr, &write).await;
    assert!(matches!(
        codec::decode(&answer).unwrap(),
        Packet::Error {
            code: ErrorCode::AccessViolation,
            ..
        }
    ));

    // Garbage is counted and dropped, and the server keeps answering.
    second.send_to(b"\x00\x07garbage", addr).await.unwrap();
    let (answer, _) = exchange(&second, addr, &write).await;
    assert!(matches!(
        codec::decode(&answer).unwrap(),
        Packet::Error { .. }
    ));
    assert_eq!(stats.malformed.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn an_unanswered_transfer_retransmits_then_gives_up() {
    let f = fixture();
    let limits = provisioner::tftp::transfer::Limits {
        default_timeout: Duration::from_millis(100),
        max_retries: 2,
        ..TftpConfig::default().limits
    };
    let (addr, stats) = start(TftpConfig {
        limits,
        ..config(&f.root)
    })
    .await;
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let read = Packet::Read {
        filename: "sub/small.txt".into(),
        mode: codec::Mode::Octet,
        options: RequestOptions::default(),
    };
    let (first, _) = exchange(&client, addr, &read).await;
    let mut buf = vec![0u8; 2048];
    // Two retransmissions of the same block, then an ERROR.
    for _ in 0..2 {
        let len = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..len], &first[..]);
    }
    let len = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        codec::decode(&buf[..len]).unwrap(),
        Packet::Error { .. }
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(stats.failed.load(Ordering::Relaxed), 1);
}
