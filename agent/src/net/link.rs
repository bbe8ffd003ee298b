//! The edge of the network bring-up: finds the NIC with the boot MAC in
//! sysfs, sets it up and configures the DHCP lease through rtnetlink, and
//! runs the [`super::dhcp`] exchange on a UDP socket bound to that NIC
//! (`SO_BINDTODEVICE`, `SO_BROADCAST`). Thin: every decision is in the
//! pure modules.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::time::{Duration, Instant};

use model::net::Mac;
use nix::sys::socket::{
    self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, SockaddrIn,
    sockopt,
};

use super::dhcp::{Client, Lease, Step};
use super::netlink;

/// The boot NIC: kernel name and interface index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub index: u32,
}

/// The interface in `sys_class_net` (`/sys/class/net`) whose address is `mac`.
pub fn find_nic(sys_class_net: &Path, mac: Mac) -> Option<Nic> {
    let mut entries: Vec<_> = std::fs::read_dir(sys_class_net).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let dir = entry.path();
        let address = std::fs::read_to_string(dir.join("address")).unwrap_or_default();
        if address.trim().parse::<Mac>() == Ok(mac) {
            let index = std::fs::read_to_string(dir.join("ifindex"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            return Some(Nic {
                name: entry.file_name().to_string_lossy().into_owned(),
                index,
            });
        }
    }
    None
}

/// The names and MACs of every interface, for a message when the boot NIC is missing.
pub fn list_nics(sys_class_net: &Path) -> String {
    let mut found: Vec<String> = std::fs::read_dir(sys_class_net)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let mac = std::fs::read_to_string(e.path().join("address")).unwrap_or_default();
                    format!("{} {}", e.file_name().to_string_lossy(), mac.trim())
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    if found.is_empty() {
        "none".to_owned()
    } else {
        found.join(", ")
    }
}

/// Sends rtnetlink requests, one at a time, each acknowledged.
struct Rtnl {
    fd: std::os::fd::OwnedFd,
    seq: u32,
}

impl Rtnl {
    fn open() -> Result<Rtnl, String> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )
        .map_err(|e| format!("cannot open a netlink socket: {e}"))?;
        socket::setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(5, 0),
        )
        .map_err(|e| format!("netlink socket: {e}"))?;
        Ok(Rtnl { fd, seq: 0 })
    }

    fn request(&mut self, what: &str, build: impl FnOnce(u32) -> Vec<u8>) -> Result<(), String> {
        self.seq += 1;
        let seq = self.seq;
        let message = build(seq);
        socket::sendto(
            self.fd.as_raw_fd(),
            &message,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map_err(|e| format!("{what}: cannot send to the kernel: {e}"))?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(|e| format!("{what}: no answer from the kernel: {e}"))?;
            match netlink::ack_of(&buf[..n], seq) {
                Some(0) => return Ok(()),
                Some(errno) => {
                    return Err(format!(
                        "{what}: the kernel refused: {}",
                        nix::errno::Errno::from_raw(-errno)
                    ));
                }
                None => continue,
            }
        }
    }
}

/// Sets the NIC up.
pub fn link_up(nic: &Nic) -> Result<(), String> {
    Rtnl::open()?.request(&format!("setting {} up", nic.name), |seq| {
        netlink::link_up(seq, nic.index)
    })
}

/// Puts the lease's address and default route on the NIC.
pub fn configure(nic: &Nic, lease: &Lease) -> Result<(), String> {
    let mut rtnl = Rtnl::open()?;
    rtnl.request(
        &format!(
            "adding {}/{} to {}",
            lease.address, lease.prefix_len, nic.name
        ),
        |seq| netlink::add_address(seq, nic.index, lease.address, lease.prefix_len),
    )?;
    if let Some(router) = lease.router {
        rtnl.request(&format!("adding the default route via {router}"), |seq| {
            netlink::default_route(seq, nic.index, router)
        })?;
    }
    Ok(())
}

fn dhcp_socket(nic: &Nic) -> Result<UdpSocket, String> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let opts = || -> nix::Result<()> {
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        socket::setsockopt(&fd, sockopt::Broadcast, &true)?;
        socket::setsockopt(
            &fd,
            sockopt::BindToDevice,
            &std::ffi::OsString::from(&nic.name),
        )?;
        socket::bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, 68))
    };
    opts().map_err(|e| format!("cannot bind the DHCP client to {} port 68: {e}", nic.name))?;
    Ok(UdpSocket::from(fd))
}

/// One DHCP exchange on `nic`: DISCOVER, retransmitted every 4 s (then 8 s,
/// at most 16 s), until a lease is bound or `give_up` passes.
pub fn acquire(nic: &Nic, mac: Mac, xid: u32, give_up: Duration) -> Result<Lease, String> {
    let socket = dhcp_socket(nic)?;
    let server = SocketAddr::from((Ipv4Addr::BROADCAST, 67));
    let mut client = Client::new(mac, xid);
    let started = Instant::now();
    let mut datagram = client.discover(xid);
    let mut wait = Duration::from_secs(4);
    let mut buf = vec![0u8; 1500];
    loop {
        socket
            .send_to(&datagram, server)
            .map_err(|e| format!("cannot send a DHCP request on {}: {e}", nic.name))?;
        let deadline = Instant::now() + wait;
        while let Some(step) = next_step(&socket, &mut client, &mut buf, deadline) {
            match step {
                Step::Ignore => {}
                Step::Send(next) => {
                    datagram = next;
                    socket
                        .send_to(&datagram, server)
                        .map_err(|e| format!("cannot send a DHCP request on {}: {e}", nic.name))?;
                }
                Step::Bound(lease) => return Ok(lease),
                Step::Restart(why) => {
                    super::say(&format!("DHCP: {why}; starting over"));
                    // Sent below as the "retransmission" of the new DISCOVER.
                    client.discover(xid.wrapping_add(1));
                    wait = Duration::from_secs(2);
                    break;
                }
            }
        }
        if started.elapsed() >= give_up {
            return Err(format!(
                "no DHCP answer on {} ({}) after {} s: check the cable and switch port, and that the \
                 provisioner's DHCP (network.dhcp in site.yaml) or another DHCP server serves this segment",
                nic.name,
                mac,
                started.elapsed().as_secs()
            ));
        }
        datagram = client.retransmit();
        wait = (wait * 2).min(Duration::from_secs(16));
    }
}

/// The client's next step for a datagram received before `deadline` (ignored
/// ones included); `None` when the deadline passed or the socket failed.
fn next_step(
    socket: &UdpSocket,
    client: &mut Client,
    buf: &mut [u8],
    deadline: Instant,
) -> Option<Step> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return None;
    }
    socket.set_read_timeout(Some(left)).ok();
    let (n, _) = socket.recv_from(buf).ok()?;
    Some(client.handle(&buf[..n]))
}

/// What extending a lease gave.
#[derive(Debug)]
pub enum Extended {
    /// The server extended it (the lease as the ACK gives it now).
    Bound(Lease),
    /// A server refused it (NAK): the address is no longer ours.
    Refused(String),
}

/// Extends `lease` on `nic` (RFC 2131 RENEWING, or REBINDING when `rebind`):
/// a REQUEST from the lease's address, unicast to its server (broadcast when
/// rebinding), sent again every 4 s until an answer or `give_up`.
pub fn extend(
    nic: &Nic,
    mac: Mac,
    lease: Lease,
    xid: u32,
    rebind: bool,
    give_up: Duration,
) -> Result<Extended, String> {
    let socket = dhcp_socket(nic)?;
    let to = if rebind {
        SocketAddr::from((Ipv4Addr::BROADCAST, 67))
    } else {
        SocketAddr::from((lease.server, 67))
    };
    let mut client = Client::new(mac, xid);
    let datagram = client.extend(lease, xid);
    let started = Instant::now();
    let mut buf = vec![0u8; 1500];
    while started.elapsed() < give_up {
        socket
            .send_to(&datagram, to)
            .map_err(|e| format!("cannot send a DHCP request to {to} on {}: {e}", nic.name))?;
        let deadline = (Instant::now() + Duration::from_secs(4)).min(started + give_up);
        while let Some(step) = next_step(&socket, &mut client, &mut buf, deadline) {
            match step {
                Step::Bound(lease) => return Ok(Extended::Bound(lease)),
                Step::Restart(why) => return Ok(Extended::Refused(why)),
                Step::Ignore | Step::Send(_) => {}
            }
        }
    }
    Err(format!(
        "no DHCP answer to extending the lease of {} on {} ({}) after {} s",
        lease.address,
        nic.name,
        if rebind {
            "broadcast to any server".to_owned()
        } else {
            format!("asked of {}", lease.server)
        },
        started.elapsed().as_secs()
    ))
}
