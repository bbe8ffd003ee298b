//! The DHCPv4 server's pure core: a decoded [`Request`] in, a [`Decision`]
//! out (the reply and where to send it, or why nothing is sent), for *full*
//! mode (addresses from [`Leases`]) and *proxy* mode (PXE boot options only,
//! next to another DHCP server).
//!
//! Invariants: no sockets, no tokio, no clock (time is passed in); an
//! ordinary (non-boot) client is answered only under policy `all` or when
//! its MAC is known, and never in proxy mode; nothing here emits router
//! advertisements; one address is leased to one MAC at a time.
//! Not wired into `provisioner serve` yet: the UDP edge (ports 67 and 4011,
//! persisting [`LeaseChange`]s in `dhcp_leases`) comes next.

pub mod boot;
pub mod codec;
pub mod leases;
pub mod policy;

use std::net::Ipv4Addr;

pub use boot::{BootAnswer, BootConfig, ClientKind, UefiLoader};
pub use codec::{ClientMessage, DecodeError, Mac, Reply, ReplyType, Request};
pub use leases::{Lease, LeaseChange, LeaseState, Leases, Nak, PoolConfig, Secs};
pub use policy::{AnswerPolicy, IgnoreReason};

/// What full mode tells clients besides their address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkOptions {
    pub routers: Vec<Ipv4Addr>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub domain_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Addresses, leases and boot options.
    Full(NetworkOptions),
    /// Boot options only; another server gives addresses.
    Proxy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Our address: option 54, and what SELECTING clients name.
    pub server_id: Ipv4Addr,
    pub mode: Mode,
    pub policy: AnswerPolicy,
    pub boot: BootConfig,
}

/// The port a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// 67.
    Dhcp,
    /// 4011: the PXE boot server port, where a PXE client sends its REQUEST
    /// to a proxy server.
    PxeService,
}

/// Where to send a reply (RFC 2131 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:68.
    Broadcast,
    /// To a client that has an address (`ciaddr`), port 68.
    Unicast(Ipv4Addr),
    /// To the client's new address and hardware address, port 68, without
    /// ARP (the client cannot answer ARP yet); an edge that cannot do that
    /// broadcasts instead.
    UnicastHardware { ip: Ipv4Addr, mac: Mac },
    /// To the relay agent (`giaddr`), port 67.
    Relay(Ipv4Addr),
    /// Back to the datagram's source address and port (port 4011 requests).
    Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Send {
        reply: Reply,
        to: Destination,
        changes: Vec<LeaseChange>,
    },
    /// Nothing to send, but the lease table changed (RELEASE, DECLINE).
    Recorded {
        changes: Vec<LeaseChange>,
    },
    Ignore(IgnoreReason),
}

/// Decides the answer to one request. `leases` is needed in full mode only
/// (full mode without it ignores everything).
pub fn handle(
    request: &Request,
    port: Port,
    config: &Config,
    leases: Option<&mut Leases>,
    now: Secs,
) -> Decision {
    let kind = boot::classify(request);
    if let Err(reason) = policy::decide(&config.policy, request.mac, kind) {
        return Decision::Ignore(reason);
    }
    match &config.mode {
        Mode::Proxy => proxy(request, port, config),
        Mode::Full(options) => match leases {
            Some(leases) => full(request, port, config, options, leases, now),
            None => Decision::Ignore(IgnoreReason::Config(
                "full mode without a lease table".into(),
            )),
        },
    }
}

fn with_boot(reply: &mut Reply, boot: &BootAnswer) {
    reply.file = Some(boot.file.clone());
    reply.siaddr = boot.next_server.unwrap_or(Ipv4Addr::UNSPECIFIED);
    reply.vendor_class = boot.vendor_class.map(str::to_owned);
    reply.ipxe_no_pxedhcp = boot.ipxe_no_pxedhcp;
}

/// RFC 2131 section 4.1, for OFFER and ACK.
fn destination(request: &Request, yiaddr: Ipv4Addr) -> Destination {
    if !request.giaddr.is_unspecified() {
        Destination::Relay(request.giaddr)
    } else if !request.ciaddr.is_unspecified() {
        Destination::Unicast(request.ciaddr)
    } else if request.broadcast || yiaddr.is_unspecified() {
        Destination::Broadcast
    } else {
        Destination::UnicastHardware {
            ip: yiaddr,
            mac: request.mac,
        }
    }
}

fn proxy(request: &Request, port: Port, config: &Config) -> Decision {
    let Some(boot) = boot::choose(request, &config.boot) else {
        return Decision::Ignore(IgnoreReason::NoBootFile);
    };
    let (message_type, to) = match (port, request.message_type) {
        (Port::Dhcp, ClientMessage::Discover) => (
            ReplyType::Offer,
            destination(request, Ipv4Addr::UNSPECIFIED),
        ),
        (Port::PxeService, ClientMessage::Request | ClientMessage::Inform) => {
            (ReplyType::Ack, Destination::Source)
        }
        (Port::Dhcp, _) => {
            return Decision::Ignore(IgnoreReason::NotForUs(
                "proxy mode answers only DISCOVER on port 67",
            ));
        }
        (Port::PxeService, _) => {
            return Decision::Ignore(IgnoreReason::NotForUs(
                "proxy mode answers only REQUEST on port 4011",
            ));
        }
    };
    let mut reply = Reply::to(request, message_type, config.server_id);
    reply.ciaddr = request.ciaddr;
    with_boot(&mut reply, &boot);
    // A proxy offer names itself (PXE spec 2.1: vendor class PXEClient).
    if reply.vendor_class.is_none() {
        reply.vendor_class = Some("PXEClient".into());
    }
    Decision::Send {
        reply,
        to,
        changes: Vec::new(),
    }
}

fn full(
    request: &Request,
    port: Port,
    config: &Config,
    options: &NetworkOptions,
    leases: &mut Leases,
    now: Secs,
) -> Decision {
    if port == Port::PxeService {
        return Decision::Ignore(IgnoreReason::NotForUs("full mode does not serve port 4011"));
    }
    if !request.giaddr.is_unspecified() && !leases.in_subnet(request.giaddr) {
        return Decision::Ignore(IgnoreReason::ForeignRelay);
    }
    let mac = request.mac;
    let ours = request.server_id.is_none_or(|s| s == config.server_id);
    match request.message_type {
        ClientMessage::Discover => {
            let Some((ip, changes)) =
                leases.offer(mac, request.requested_ip, request.hostname.clone(), now)
            else {
                return Decision::Ignore(IgnoreReason::PoolExhausted);
            };
            let reply = address_reply(request, ReplyType::Offer, ip, config, options, leases);
            let to = destination(request, ip);
            Decision::Send { reply, to, changes }
        }
        ClientMessage::Request => {
            if !ours {
                // SELECTING with another server's id: the client chose it.
                // Our offer simply expires.
                return Decision::Ignore(IgnoreReason::OtherServer);
            }
            let ip = match (request.server_id, request.requested_ip) {
                // SELECTING and INIT-REBOOT name the address in option 50.
                (_, Some(ip)) => ip,
                (Some(_), None) => {
                    return Decision::Ignore(IgnoreReason::Incomplete(
                        "SELECTING without a requested address",
                    ));
                }
                // RENEWING / REBINDING: the address in use is ciaddr.
                (None, None) if !request.ciaddr.is_unspecified() => request.ciaddr,
                (None, None) => {
                    return Decision::Ignore(IgnoreReason::Incomplete(
                        "REQUEST without an address",
                    ));
                }
            };
            match leases.request(mac, ip, request.hostname.clone(), now) {
                Ok(changes) => {
                    let reply = address_reply(request, ReplyType::Ack, ip, config, options, leases);
                    let to = destination(request, ip);
                    Decision::Send { reply, to, changes }
                }
                Err(nak) => {
                    let mut reply = Reply::to(request, ReplyType::Nak, config.server_id);
                    reply.message = Some(nak.message().into());
                    let to = if request.giaddr.is_unspecified() {
                        Destination::Broadcast
                    } else {
                        // RFC 2131 4.3.2: the relay must broadcast a NAK.
                        reply.broadcast = true;
                        Destination::Relay(request.giaddr)
                    };
                    Decision::Send {
                        reply,
                        to,
                        changes: Vec::new(),
                    }
                }
            }
        }
        ClientMessage::Decline => match request.requested_ip {
            Some(ip) if ours => Decision::Recorded {
                changes: leases.decline(mac, ip, now),
            },
            Some(_) => Decision::Ignore(IgnoreReason::OtherServer),
            None => Decision::Ignore(IgnoreReason::Incomplete("DECLINE without an address")),
        },
        ClientMessage::Release if ours => Decision::Recorded {
            changes: leases.release(mac, request.ciaddr),
        },
        ClientMessage::Release => Decision::Ignore(IgnoreReason::OtherServer),
        ClientMessage::Inform => {
            if request.ciaddr.is_unspecified() {
                return Decision::Ignore(IgnoreReason::Incomplete("INFORM without ciaddr"));
            }
            let mut reply = Reply::to(request, ReplyType::Ack, config.server_id);
            reply.ciaddr = request.ciaddr;
            network_options(&mut reply, options, leases);
            if let Some(boot) = boot::choose(request, &config.boot) {
                with_boot(&mut reply, &boot);
            }
            let to = destination(request, Ipv4Addr::UNSPECIFIED);
            Decision::Send {
                reply,
                to,
                changes: Vec::new(),
            }
        }
        ClientMessage::Other(_) => {
            Decision::Ignore(IgnoreReason::NotForUs("not a client message type"))
        }
    }
}

fn network_options(reply: &mut Reply, options: &NetworkOptions, leases: &Leases) {
    reply.subnet_mask = Some(leases.config().subnet.netmask());
    reply.routers = options.routers.clone();
    reply.dns_servers = options.dns_servers.clone();
    reply.domain_name = options.domain_name.clone();
}

fn address_reply(
    request: &Request,
    message_type: ReplyType,
    ip: Ipv4Addr,
    config: &Config,
    options: &NetworkOptions,
    leases: &Leases,
) -> Reply {
    let mut reply = Reply::to(request, message_type, config.server_id);
    reply.ciaddr = request.ciaddr;
    reply.yiaddr = ip;
    let lease_time = leases.config().lease_secs;
    reply.lease_time = Some(lease_time);
    reply.renewal_time = Some(lease_time / 2);
    reply.rebinding_time = Some(lease_time / 8 * 7);
    network_options(&mut reply, options, leases);
    if let Some(boot) = boot::choose(request, &config.boot) {
        with_boot(&mut reply, &boot);
    }
    reply
}
