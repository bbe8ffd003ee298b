//! The DHCP server of `provisioner serve` against clients we did not write,
//! each test in its own pair of network namespaces joined by a veth pair
//! (names `dh<pid><tag>...`, removed on Drop): busybox `udhcpc` (DORA, a
//! reserved address, renew, release), hand-built PXE packets sent by a small
//! Python UDP client (proxy mode on ports 67 and 4011, malformed datagrams),
//! and Kea's `perfdhcp` with two `kill -9` restarts of the server in the
//! middle of its run, every ACK captured by `tcpdump` on the client side and
//! decoded with our codec: no address is ever ACKed to two MACs.
//!
//! Needs root and the Debian packages `cargo xtask deps` installs
//! (busybox-static, kea-admin, tcpdump, curl, sqlite3, python3).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hardware_tests::lab::VethPair;
use model::net::Mac;
use provisioner::dhcp::codec::{self, ReplyType};

const BIN: &str = env!("CARGO_BIN_EXE_provisioner");
const SERVER: &str = "10.77.0.1";

/// Fails (never skips) when a tool is missing, saying how to get it.
fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` not found: install the test dependencies with `cargo xtask deps` (Debian package {package})"
    );
}

/// A site with DHCP on the server end of `pair`.
fn write_site(dir: &Path, pair: &VethPair, dhcp: &str, nodes: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("site.yaml"),
        format!(
            "network:\n  interface: {}\n  address: {SERVER}/16\n  dhcp:\n{dhcp}\napi:\n  listen: 127.0.0.1:0\nboot:\n  tftp:\n    enabled: false\n",
            pair.server_if
        ),
    )
    .unwrap();
    std::fs::write(dir.join("nodes.yaml"), format!("nodes:\n{nodes}")).unwrap();
}

const FULL: &str = "    mode: full\n    range: [10.77.1.0, 10.77.255.254]\n    router: 10.77.0.1\n    dns: [10.77.0.53]\n    lease_time: 3600\n    answer: all";

/// `provisioner serve` in the server namespace, SIGKILLed on drop.
struct Server {
    child: Child,
    log: PathBuf,
    state: PathBuf,
}

impl Server {
    fn start(pair: &VethPair, site: &Path, state: &Path, log: &Path) -> Server {
        Server::start_polling(pair, site, state, log, 0)
    }

    /// With the site files checked for changes every `poll` seconds (0: never).
    fn start_polling(pair: &VethPair, site: &Path, state: &Path, log: &Path, poll: u32) -> Server {
        let _ = std::fs::remove_file(state.join("api-url"));
        let before = std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("DHCP listening")
            .count();
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = pair
            .in_server(BIN)
            .args(["serve", "--site"])
            .arg(site)
            .arg("--state")
            .arg(state)
            .args(["--site-poll-interval", &poll.to_string()])
            .args(["--power-sync-interval", "0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start provisioner serve");
        let mut server = Server {
            child,
            log: log.to_owned(),
            state: state.to_owned(),
        };
        server.wait_ready(before);
        server
    }

    /// Waits for the `before + 1`-th "DHCP listening" line of the log.
    fn wait_ready(&mut self, before: usize) {
        let started = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let listening = log.matches("DHCP listening").count();
            if listening > before && self.state.join("api-url").exists() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("provisioner serve exited with {status}:\n{log}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "provisioner serve not ready after 20 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `/metrics`, fetched with curl inside the server namespace.
    fn metrics(&self, pair: &VethPair) -> String {
        let url = std::fs::read_to_string(self.state.join("api-url")).unwrap();
        let out = pair
            .in_server("curl")
            .args(["-sf", &format!("{}/metrics", url.trim())])
            .output()
            .unwrap();
        assert!(out.status.success(), "curl /metrics failed");
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The value of one sample line (`name{labels} value`), 0 when absent.
fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Rows of `dhcp_leases` as (mac, ip, state).
fn stored_leases(state: &Path) -> Vec<(String, String, String)> {
    let out = Command::new("sqlite3")
        .arg(state.join("provisioner.db"))
        .arg("SELECT mac, ip, state FROM dhcp_leases ORDER BY mac")
        .output()
        .expect("run sqlite3");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut f = l.split('|').map(str::to_owned);
            (f.next().unwrap(), f.next().unwrap(), f.next().unwrap())
        })
        .collect()
}

/// A udhcpc event script that appends `event ip serverid lease router dns` lines to a file.
fn event_script(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let script = dir.join("udhcpc.sh");
    let events = dir.join("events");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 ip=$ip server=$serverid lease=$lease router=$router dns=$dns\" >> {}\n\
             case $1 in\n\
               bound|renew) busybox ip addr flush dev $interface; busybox ip addr add $ip/$mask dev $interface ;;\n\
               deconfig) busybox ip addr flush dev $interface ;;\n\
             esac\n",
            events.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, events)
}

fn wait_for_event(events: &Path, prefix: &str, count: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(events).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no `{prefix}` event from udhcpc after 15 s; events so far:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// udhcpc, foreground, until killed.
struct Udhcpc(Child);

impl Udhcpc {
    fn start(pair: &VethPair, script: &Path, extra: &[&str]) -> Udhcpc {
        let child = pair
            .in_client("busybox")
            .args([
                "udhcpc",
                "-f",
                "-i",
                &pair.client_if,
                "-t",
                "5",
                "-T",
                "1",
                "-s",
            ])
            .arg(script)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start busybox udhcpc");
        Udhcpc(child)
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Udhcpc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn udhcpc_dora_renew_release_and_a_reservation() {
    require("busybox", "busybox-static");
    require("sqlite3", "sqlite3");
    require("curl", "curl");
    let tmp = tempfile::tempdir().unwrap();
    let pair = VethPair::create("dh", "u", &format!("{SERVER}/16"), None).unwrap();
    let nodes = "  - name: known-0\n    boot_mac: 52:54:00:77:00:01\n    ip: 10.77.0.21\n";
    write_site(&tmp.path().join("site"), &pair, FULL, nodes);
    let server = Server::start(
        &pair,
        &tmp.path().join("site"),
        &tmp.path().join("state"),
        &tmp.path().join("serve.log"),
    );
    let (script, events) = event_script(tmp.path());

    // An unknown MAC under `answer: all` gets the lowest address of the range,
    // with the router, DNS and lease time of site.yaml.
    pair.set_client_mac("02:00:00:77:00:09").unwrap();
    let client = Udhcpc::start(&pair, &script, &[]);
    let bound = wait_for_event(&events, "bound", 1);
    assert_eq!(
        bound[0],
        "bound ip=10.77.1.0 server=10.77.0.1 lease=3600 router=10.77.0.1 dns=10.77.0.53"
    );
    // Renew (SIGUSR1): a unicast REQUEST with ciaddr, ACKed with the same address.
    client.signal("-USR1");
    let renewed = wait_for_event(&events, "renew", 1);
    assert!(renewed[0].starts_with("renew ip=10.77.1.0 "), "{renewed:?}");
    assert_eq!(
        stored_leases(&server.state),
        vec![(
            "02:00:00:77:00:09".into(),
            "10.77.1.0".into(),
            "bound".into()
        )]
    );
    // Release (SIGUSR2): the row leaves the store.
    client.signal("-USR2");
    wait_for_event(&events, "deconfig", 2);
    let started = Instant::now();
    while !stored_leases(&server.state).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "RELEASE not persisted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(client);

    // The node's boot MAC gets its reserved address (outside the range).
    pair.set_client_mac("52:54:00:77:00:01").unwrap();
    let _ = std::fs::remove_file(&events);
    let client = Udhcpc::start(&pair, &script, &["-q"]);
    let bound = wait_for_event(&events, "bound", 1);
    assert!(bound[0].starts_with("bound ip=10.77.0.21 "), "{bound:?}");
    drop(client);

    let m = server.metrics(&pair);
    assert!(metric(&m, "provisioner_dhcp_requests_total{type=\"discover\"}") >= 2.0);
    assert!(metric(&m, "provisioner_dhcp_replies_total{type=\"ack\"}") >= 3.0);
    assert_eq!(
        metric(&m, "provisioner_dhcp_requests_total{type=\"release\"}"),
        1.0
    );
    assert_eq!(metric(&m, "provisioner_dhcp_malformed_total"), 0.0);
}

#[test]
fn answer_known_follows_nodes_yaml_on_reload() {
    require("busybox", "busybox-static");
    let tmp = tempfile::tempdir().unwrap();
    let pair = VethPair::create("dh", "r", &format!("{SERVER}/16"), None).unwrap();
    let site = tmp.path().join("site");
    let known = FULL.replace("answer: all", "answer: known");
    write_site(&site, &pair, &known, "  []\n");
    let log = tmp.path().join("serve.log");
    let _server = Server::start_polling(&pair, &site, &tmp.path().join("state"), &log, 1);
    let (script, events) = event_script(tmp.path());
    pair.set_client_mac("52:54:00:77:00:05").unwrap();

    // Not in nodes.yaml: no answer (udhcpc gives up after 2 tries).
    let out = pair
        .in_client("busybox")
        .args([
            "udhcpc",
            "-f",
            "-q",
            "-n",
            "-i",
            &pair.client_if,
            "-t",
            "2",
            "-T",
            "1",
            "-s",
        ])
        .arg(&script)
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown MAC got a lease");
    assert!(
        !std::fs::read_to_string(&events)
            .unwrap_or_default()
            .contains("bound")
    );

    // Added with a reservation: the running server picks it up on reload.
    std::fs::write(
        site.join("nodes.yaml"),
        "nodes:\n  - name: new-0\n    boot_mac: 52:54:00:77:00:05\n    ip: 10.77.0.40\n",
    )
    .unwrap();
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("site reloaded")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "site not reloaded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _client = Udhcpc::start(&pair, &script, &["-q"]);
    let bound = wait_for_event(&events, "bound", 1);
    assert!(bound[0].starts_with("bound ip=10.77.0.40 "), "{bound:?}");
}

// ------------------------------------------------------------ raw packets

/// A BOOTREQUEST from `mac` with the given options (53 first).
fn request_packet(msg: u8, mac: [u8; 6], ciaddr: Ipv4Addr, options: &[(u8, &[u8])]) -> Vec<u8> {
    let mut p = vec![1u8, 1, 6, 0];
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x80, 0]); // secs, broadcast flag
    p.extend_from_slice(&ciaddr.octets());
    p.extend_from_slice(&[0; 12]); // yiaddr, siaddr, giaddr
    p.extend_from_slice(&mac);
    p.extend_from_slice(&[0; 10 + 64 + 128]);
    p.extend_from_slice(&[99, 130, 83, 99]);
    p.extend_from_slice(&[53, 1, msg]);
    for (code, value) in options {
        p.push(*code);
        p.push(value.len() as u8);
        p.extend_from_slice(value);
    }
    p.push(255);
    p
}

/// Sends `packet` from the client namespace (UDP, bound to the veth, from
/// `src_port`) and returns the first datagram that comes back from port
/// 67/4011, or `None` after `wait`.
fn exchange(
    pair: &VethPair,
    packet: &[u8],
    dest: &str,
    src_port: u16,
    wait: Duration,
) -> Option<Vec<u8>> {
    const CLIENT: &str = r#"
import socket, sys, binascii
iface, dest, port, sport, hexpkt, wait = sys.argv[1:7]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, 25, iface.encode())
s.bind(("0.0.0.0", int(sport)))
s.settimeout(float(wait))
s.sendto(binascii.unhexlify(hexpkt), (dest, int(port)))
try:
    while True:
        data, addr = s.recvfrom(4096)
        if addr[1] in (67, 4011):
            print(binascii.hexlify(data).decode())
            break
except socket.timeout:
    print("timeout")
"#;
    let (dest, port) = dest.split_once(':').unwrap();
    let hex: String = packet.iter().map(|b| format!("{b:02x}")).collect();
    let out = pair
        .in_client("python3")
        .args(["-c", CLIENT, &pair.client_if, dest, port])
        .arg(src_port.to_string())
        .arg(hex)
        .arg(wait.as_secs_f64().to_string())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let text = text.trim();
    (text != "timeout").then(|| {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    })
}

const PXE_BIOS: &[u8] = b"PXEClient:Arch:00000:UNDI:002001";

#[test]
fn proxy_mode_answers_pxe_on_67_and_4011_only_with_boot_information() {
    require("python3", "python3");
    let tmp = tempfile::tempdir().unwrap();
    let pair = VethPair::create("dh", "p", &format!("{SERVER}/16"), Some("10.77.0.50/16")).unwrap();
    write_site(
        &tmp.path().join("site"),
        &pair,
        "    mode: proxy\n    answer: pxe",
        "  []\n",
    );
    let _server = Server::start(
        &pair,
        &tmp.path().join("site"),
        &tmp.path().join("state"),
        &tmp.path().join("serve.log"),
    );
    let mac = [0x02, 0, 0, 0x77, 0, 0x10];
    let arch: &[u8] = &[0, 0];
    let discover = request_packet(1, mac, Ipv4Addr::UNSPECIFIED, &[(60, PXE_BIOS), (93, arch)]);
    let offer = exchange(
        &pair,
        &discover,
        "255.255.255.255:67",
        68,
        Duration::from_secs(3),
    )
    .expect("no proxy OFFER on port 67");
    let offer = codec::decode_reply(&offer).unwrap();
    assert_eq!(offer.message_type, ReplyType::Offer);
    assert_eq!(
        offer.yiaddr,
        Ipv4Addr::UNSPECIFIED,
        "a proxy never gives an address"
    );
    assert_eq!(offer.file.as_deref(), Some("undionly.kpxe"));
    assert_eq!(offer.vendor_class.as_deref(), Some("PXEClient"));
    assert_eq!(offer.server_id, SERVER.parse::<Ipv4Addr>().unwrap());

    // The PXE client then asks the boot server on port 4011 (unicast, from its address).
    let request = request_packet(
        3,
        mac,
        "10.77.0.50".parse().unwrap(),
        &[(60, PXE_BIOS), (93, arch)],
    );
    let ack = exchange(
        &pair,
        &request,
        &format!("{SERVER}:4011"),
        68,
        Duration::from_secs(3),
    )
    .expect("no ACK on port 4011");
    let ack = codec::decode_reply(&ack).unwrap();
    assert_eq!(ack.message_type, ReplyType::Ack);
    assert_eq!(ack.file.as_deref(), Some("undionly.kpxe"));
    assert_eq!(ack.yiaddr, Ipv4Addr::UNSPECIFIED);

    // An ordinary client gets nothing from a proxy.
    let ordinary = request_packet(1, [0x02, 0, 0, 0x77, 0, 0x11], Ipv4Addr::UNSPECIFIED, &[]);
    assert_eq!(
        exchange(
            &pair,
            &ordinary,
            "255.255.255.255:67",
            68,
            Duration::from_millis(700)
        ),
        None
    );
}

#[test]
fn malformed_datagrams_are_counted_and_dropped() {
    require("python3", "python3");
    require("curl", "curl");
    let tmp = tempfile::tempdir().unwrap();
    let pair = VethPair::create("dh", "m", &format!("{SERVER}/16"), None).unwrap();
    write_site(&tmp.path().join("site"), &pair, FULL, "  []\n");
    let server = Server::start(
        &pair,
        &tmp.path().join("site"),
        &tmp.path().join("state"),
        &tmp.path().join("serve.log"),
    );
    let mac = [0x02, 0, 0, 0x77, 0, 0x20];
    let good = request_packet(1, mac, Ipv4Addr::UNSPECIFIED, &[(12, b"host")]);
    // Too short; a truncated option in the middle (the case dhcproto would
    // read half of); a BOOTREPLY.
    let mut truncated = good[..good.len() - 1].to_vec();
    truncated.truncate(243);
    truncated.extend_from_slice(&[12, 40, b'x']);
    let mut reply_op = good.clone();
    reply_op[0] = 2;
    for bad in [&good[..100], &truncated[..], &reply_op[..]] {
        assert_eq!(
            exchange(
                &pair,
                bad,
                "255.255.255.255:67",
                68,
                Duration::from_millis(500)
            ),
            None
        );
    }
    // The server still answers.
    let offer = exchange(
        &pair,
        &good,
        "255.255.255.255:67",
        68,
        Duration::from_secs(3),
    )
    .expect("no OFFER after the malformed datagrams");
    assert_eq!(
        codec::decode_reply(&offer).unwrap().message_type,
        ReplyType::Offer
    );
    let m = server.metrics(&pair);
    assert_eq!(metric(&m, "provisioner_dhcp_malformed_total"), 3.0);
    assert_eq!(
        metric(&m, "provisioner_dhcp_replies_total{type=\"offer\"}"),
        1.0
    );
}

// ---------------------------------------------------- restarts under load

/// (MAC, yiaddr) of every DHCPACK in a pcap file (Ethernet, IPv4, UDP from port 67).
fn acks_in_pcap(path: &Path) -> Vec<(Mac, Ipv4Addr)> {
    let data = std::fs::read(path).unwrap();
    assert!(data.len() >= 24, "pcap file too short");
    let le = match &data[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        other => panic!("not a pcap file: magic {other:02x?}"),
    };
    let u32_at = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    assert_eq!(u32_at(&data[20..24]), 1, "pcap link type is not Ethernet");
    let mut acks = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32_at(&data[at + 8..at + 12]) as usize;
        let frame = &data[at + 16..(at + 16 + caplen).min(data.len())];
        at += 16 + caplen;
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[9] != 17 || ip.len() < ihl + 8 {
            continue;
        }
        let udp = &ip[ihl..];
        if u16::from_be_bytes([udp[0], udp[1]]) != 67 {
            continue;
        }
        if let Ok(reply) = codec::decode_reply(&udp[8..])
            && reply.message_type == ReplyType::Ack
        {
            acks.push((reply.mac, reply.yiaddr));
        }
    }
    acks
}

#[test]
fn perfdhcp_with_two_kill9_restarts_never_acks_one_address_to_two_macs() {
    require("perfdhcp", "kea-admin");
    require("tcpdump", "tcpdump");
    require("sqlite3", "sqlite3");
    require("curl", "curl");
    let tmp = tempfile::tempdir().unwrap();
    let pair = VethPair::create("dh", "k", &format!("{SERVER}/16"), Some("10.77.0.2/16")).unwrap();
    let site = tmp.path().join("site");
    let state = tmp.path().join("state");
    let log = tmp.path().join("serve.log");
    write_site(&site, &pair, FULL, "  []\n");
    let mut server = Server::start(&pair, &site, &state, &log);

    let pcap = tmp.path().join("acks.pcap");
    let tcpdump = pair
        .in_client("tcpdump")
        .args([
            "-i",
            &pair.client_if,
            "-n",
            "-s",
            "1500",
            "-B",
            "32768",
            "-U",
            "-w",
        ])
        .arg(&pcap)
        .arg("udp and src port 67")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcpdump");
    // tcpdump is ready when the file exists (written with the header at start).
    let started = Instant::now();
    while !pcap.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "tcpdump did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));

    // 1500 exchanges/s for 9 s from up to 60,000 random MACs.
    let perfdhcp = pair
        .in_client("perfdhcp")
        .args([
            "-4",
            "-l",
            &pair.client_if,
            "-r",
            "1500",
            "-p",
            "9",
            "-R",
            "60000",
            SERVER,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start perfdhcp");
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(3));
        server.kill9();
        server = Server::start(&pair, &site, &state, &log);
    }
    let perf = perfdhcp.wait_with_output().unwrap();
    let perf_out = String::from_utf8_lossy(&perf.stdout).into_owned();
    // perfdhcp exits 3 when it saw drops, which the restarts cause.
    assert!(
        matches!(perf.status.code(), Some(0 | 3)),
        "perfdhcp failed ({}): {}{}",
        perf.status,
        perf_out,
        String::from_utf8_lossy(&perf.stderr)
    );
    std::thread::sleep(Duration::from_secs(1));
    Command::new("kill")
        .args(["-INT", &tcpdump.id().to_string()])
        .status()
        .unwrap();
    let dump = tcpdump.wait_with_output().unwrap();
    let dump_err = String::from_utf8_lossy(&dump.stderr).into_owned();
    assert!(
        dump_err.lines().any(|l| l == "0 packets dropped by kernel"),
        "tcpdump lost packets, so the check would be incomplete: {dump_err}"
    );

    let acks = acks_in_pcap(&pcap);
    eprintln!("{} ACKs captured; tcpdump: {dump_err}", acks.len());
    let mut macs_of_ip: BTreeMap<Ipv4Addr, BTreeSet<Mac>> = BTreeMap::new();
    let mut ips_of_mac: BTreeMap<Mac, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for (mac, ip) in &acks {
        macs_of_ip.entry(*ip).or_default().insert(*mac);
        ips_of_mac.entry(*mac).or_default().insert(*ip);
    }
    let shared: Vec<_> = macs_of_ip.iter().filter(|(_, m)| m.len() > 1).collect();
    assert!(shared.is_empty(), "addresses ACKed to two MACs: {shared:?}");
    // Leases outlive the restarts: a client asking again keeps its address.
    let moved: Vec<_> = ips_of_mac.iter().filter(|(_, i)| i.len() > 1).collect();
    assert!(moved.is_empty(), "MACs ACKed two addresses: {moved:?}");
    assert!(
        acks.len() > 3000,
        "only {} ACKs captured; perfdhcp said:\n{perf_out}",
        acks.len()
    );

    // The third server (after the second kill -9) answered too, and the
    // store agrees with what clients were told.
    let m = server.metrics(&pair);
    assert!(
        metric(&m, "provisioner_dhcp_replies_total{type=\"ack\"}") > 0.0,
        "the server started after the second kill -9 sent no ACK"
    );
    drop(server);
    // Every address a client was told it has is in the store, for that client.
    let rows: BTreeSet<(String, String)> = stored_leases(&state)
        .into_iter()
        .filter(|(_, _, st)| st == "bound")
        .map(|(mac, ip, _)| (mac, ip))
        .collect();
    let lost: Vec<_> = acks
        .iter()
        .filter(|(mac, ip)| !rows.contains(&(mac.to_string(), ip.to_string())))
        .collect();
    assert!(
        lost.is_empty(),
        "ACKed leases missing from the store: {lost:?}"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(log.matches("DHCP listening").count(), 3, "{log}");
}

/// A script with a boot token goes only to the address our DHCP leased to the
/// MAC: the client that holds the lease gets the inspection script with a token;
/// the same request from another address (the server's own) gets a `wait`
/// script without one, and `/metrics` counts the refusal.
#[test]
fn a_boot_token_goes_only_to_the_address_leased_to_the_mac() {
    require("busybox", "busybox-static");
    require("curl", "curl");
    let tmp = tempfile::tempdir().unwrap();
    let pair = VethPair::create("dh", "t", &format!("{SERVER}/16"), None).unwrap();
    let site = tmp.path().join("site");
    std::fs::create_dir_all(site.join("ramdisk")).unwrap();
    std::fs::write(site.join("ramdisk/vmlinuz"), b"kernel").unwrap();
    std::fs::write(site.join("ramdisk/initramfs"), b"initramfs").unwrap();
    std::fs::write(
        site.join("site.yaml"),
        format!(
            "network:\n  interface: {}\n  address: {SERVER}/16\n  dhcp:\n{FULL}\n\
             api:\n  listen: {SERVER}:0\n\
             images:\n  - name: inspect\n    kernel: ramdisk/vmlinuz\n    initramfs: ramdisk/initramfs\n\
             boot:\n  inspect_image: inspect\n  tftp:\n    enabled: false\n",
            pair.server_if
        ),
    )
    .unwrap();
    let mac = "52:54:00:77:00:01";
    std::fs::write(
        site.join("nodes.yaml"),
        format!("nodes:\n  - name: known-0\n    boot_mac: {mac}\n    ip: 10.77.0.21\n"),
    )
    .unwrap();
    let server = Server::start(
        &pair,
        &site,
        &tmp.path().join("state"),
        &tmp.path().join("serve.log"),
    );
    let url = std::fs::read_to_string(server.state.join("api-url")).unwrap();
    let script_url = format!("{}/boot/{mac}.ipxe", url.trim());

    // Before any lease: no token, whoever asks.
    let fetch = |cmd: Command| -> String {
        let mut cmd = cmd;
        let out = cmd.args(["-sf", &script_url]).output().unwrap();
        assert!(out.status.success(), "curl {script_url} failed");
        String::from_utf8(out.stdout).unwrap()
    };
    let early = fetch(pair.in_server("curl"));
    assert!(!early.contains("provisioner.token="), "{early}");
    assert!(early.contains("holds no lease"), "{early}");

    // The machine takes its lease and asks from its leased address.
    pair.set_client_mac(mac).unwrap();
    let (script, events) = event_script(tmp.path());
    let client = Udhcpc::start(&pair, &script, &["-q"]);
    let bound = wait_for_event(&events, "bound", 1);
    assert!(bound[0].starts_with("bound ip=10.77.0.21 "), "{bound:?}");
    drop(client);
    pair.client
        .ip(&["addr", "replace", "10.77.0.21/16", "dev", &pair.client_if])
        .unwrap();
    let leased = fetch(pair.in_client("curl"));
    assert!(leased.contains("provisioner.token="), "{leased}");

    // Anyone else asking for that MAC's script gets no token.
    let other = fetch(pair.in_server("curl"));
    assert!(!other.contains("provisioner.token="), "{other}");
    assert!(
        other.contains("but our DHCP leased 10.77.0.21 to 52:54:00:77:00:01"),
        "{other}"
    );
    let m = server.metrics(&pair);
    assert_eq!(metric(&m, "provisioner_boot_token_refusals_total"), 2.0);
}
