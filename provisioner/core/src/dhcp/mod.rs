//! The DHCPv4 server's pure core: a decoded [`Request`] in, a [`Decision`]
//! out (the reply and where to send it, or why nothing is sent), for *full*
//! mode (addresses from [`Leases`]) and *proxy* mode (PXE boot options only,
//! next to another DHCP server).
//!
//! Invariants: no sockets, no tokio, no clock (time is passed in); an
//! ordinary (non-boot) client is answered only under policy `all`, when its
//! MAC is known, or (full mode) when it holds a lease it got by network-booting
//! from us, and never in proxy mode; nothing here emits router
//! advertisements; one address is leased to one MAC at a time.
//! The UDP edge (ports 67 and 4011, persisting [`LeaseChange`]s in
//! `dhcp_leases`) is the provisioner crate's `dhcp::server`.

pub mod boot;
pub mod leases;
pub mod policy;

use std::net::Ipv4Addr;

use model::net::Mac;

/// The DHCPv4 codec lives in `model` (the agent's client uses it too); it is
/// re-exported here under its old path.
pub use model::dhcp as codec;

pub use boot::{BootAnswer, BootConfig, ClientKind, UefiLoader};
pub use codec::{ClientMessage, DecodeError, Reply, ReplyType, Request};
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
        // A machine that network-booted from us (it holds our lease) keeps being
        // answered when the system it booted (our inspection agent, an installer)
        // asks again as an ordinary client: it is ours, not a stranger's.
        let booted_here = reason == IgnoreReason::NotABootClient
            && matches!(config.mode, Mode::Full(_))
            && leases
                .as_ref()
                .is_some_and(|l| l.lease_of(request.mac).is_some());
        if !booted_here {
            return Decision::Ignore(reason);
        }
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddrV4;

    use super::codec::build::{self, Packet};
    use super::*;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
    const RELAY: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 254);

    fn config(mode: Mode, policy: AnswerPolicy) -> Config {
        Config {
            server_id: SERVER,
            mode,
            policy,
            boot: BootConfig {
                tftp_server: SERVER,
                http: SocketAddrV4::new(SERVER, 8080),
                uefi_loader: UefiLoader::SnpOnly,
            },
        }
    }

    fn full(policy: AnswerPolicy) -> Config {
        let options = NetworkOptions {
            routers: vec![RELAY],
            dns_servers: vec![SERVER],
            domain_name: Some("lab".into()),
        };
        config(Mode::Full(options), policy)
    }

    fn leases() -> Leases {
        Leases::new(PoolConfig {
            subnet: "10.213.0.0/24".parse().unwrap(),
            first: Ipv4Addr::new(10, 213, 0, 100),
            last: Ipv4Addr::new(10, 213, 0, 101),
            lease_secs: 3600,
            offer_secs: 60,
            decline_secs: 600,
        })
        .unwrap()
    }

    fn run(
        packet: &Packet,
        port: Port,
        config: &Config,
        leases: &mut Leases,
        now: Secs,
    ) -> Decision {
        let request = codec::decode(&packet.bytes()).unwrap();
        let decision = handle(&request, port, config, Some(leases), now);
        if let Decision::Send { reply, .. } = &decision {
            // Every reply decided here is encodable and reads back the same.
            let bytes = codec::encode(reply).unwrap();
            assert_eq!(&codec::decode_reply(&bytes).unwrap(), reply);
        }
        decision
    }

    fn sent(decision: Decision) -> (Reply, Destination, Vec<LeaseChange>) {
        match decision {
            Decision::Send { reply, to, changes } => (reply, to, changes),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, 0, n)
    }

    #[test]
    fn full_mode_pxe_exchange() {
        let config = full(AnswerPolicy::Pxe);
        let mut l = leases();
        let (offer, to, changes) = sent(run(&build::bios_pxe(), Port::Dhcp, &config, &mut l, 0));
        assert_eq!(offer.message_type, ReplyType::Offer);
        assert_eq!(offer.yiaddr, ip(100));
        assert_eq!(offer.siaddr, SERVER);
        assert_eq!(offer.file.as_deref(), Some("undionly.kpxe"));
        // Not `PXEClient`: UEFI would then ask port 4011 (see `boot::choose`).
        assert_eq!(offer.vendor_class, None);
        assert!(offer.ipxe_no_pxedhcp);
        assert_eq!(offer.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(offer.lease_time, Some(3600));
        assert_eq!(
            (offer.renewal_time, offer.rebinding_time),
            (Some(1800), Some(3150))
        );
        assert_eq!(
            to,
            Destination::UnicastHardware {
                ip: ip(100),
                mac: offer.mac
            }
        );
        assert!(matches!(&changes[..], [LeaseChange::Upsert(l)] if l.state == LeaseState::Offered));

        // SELECTING: our server id, the offered address.
        let mut request = build::bios_pxe()
            .opt(50, &ip(100).octets())
            .opt(54, &SERVER.octets());
        request.options[2] = 3;
        request.flags = 0x8000;
        let (ack, to, changes) = sent(run(&request, Port::Dhcp, &config, &mut l, 5));
        assert_eq!(
            (ack.message_type, ack.yiaddr, to),
            (ReplyType::Ack, ip(100), Destination::Broadcast)
        );
        assert!(
            matches!(&changes[..], [LeaseChange::Upsert(l)] if l.state == LeaseState::Bound && l.expires_at == 3605)
        );

        // RENEWING: ciaddr, no 50/54; unicast to the client.
        let mut renew = Packet::new(3).opt(60, b"PXEClient:Arch:00000");
        renew.ciaddr = ip(100);
        let (ack, to, _) = sent(run(&renew, Port::Dhcp, &config, &mut l, 1000));
        assert_eq!(
            (ack.message_type, ack.ciaddr, to),
            (ReplyType::Ack, ip(100), Destination::Unicast(ip(100)))
        );
        assert_eq!(l.lease_of(ack.mac).unwrap().expires_at, 4600);

        // SELECTING another server: ignored, the lease untouched.
        let other = Packet::new(3)
            .opt(60, b"PXEClient")
            .opt(50, &ip(100).octets())
            .opt(54, &[10, 213, 0, 2]);
        assert_eq!(
            run(&other, Port::Dhcp, &config, &mut l, 1001),
            Decision::Ignore(IgnoreReason::OtherServer)
        );

        // RELEASE frees the address.
        let mut release = Packet::new(7)
            .opt(60, b"PXEClient")
            .opt(54, &SERVER.octets());
        release.ciaddr = ip(100);
        let decision = run(&release, Port::Dhcp, &config, &mut l, 1002);
        assert_eq!(
            decision,
            Decision::Recorded {
                changes: vec![LeaseChange::Remove {
                    mac: ack.mac,
                    ip: ip(100)
                }]
            }
        );
        assert_eq!(l.holder_of(ip(100)), None);
    }

    #[test]
    fn init_reboot_nak_and_ack() {
        let config = full(AnswerPolicy::All);
        let mut l = leases();
        let wrong = Packet::new(3).opt(50, &[192, 168, 1, 7]);
        let (nak, to, changes) = sent(run(&wrong, Port::Dhcp, &config, &mut l, 0));
        assert_eq!(
            (nak.message_type, to),
            (ReplyType::Nak, Destination::Broadcast)
        );
        assert_eq!(nak.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(nak.message.as_deref(), Some("address not in this network"));
        assert!(changes.is_empty());

        let free = Packet::new(3).opt(50, &ip(101).octets());
        let (ack, _, _) = sent(run(&free, Port::Dhcp, &config, &mut l, 0));
        assert_eq!((ack.message_type, ack.yiaddr), (ReplyType::Ack, ip(101)));

        // Another MAC asking for the same address is refused.
        let mut taken = free.clone();
        taken.mac[5] = 9;
        let (nak, _, _) = sent(run(&taken, Port::Dhcp, &config, &mut l, 1));
        assert_eq!(
            nak.message.as_deref(),
            Some("address leased to another client")
        );
    }

    #[test]
    fn relayed_requests_go_back_to_the_relay() {
        let config = full(AnswerPolicy::Pxe);
        let mut l = leases();
        let mut discover = build::uefi_pxe().opt(82, &[1, 3, b'p', b'1', b'0']);
        discover.giaddr = RELAY;
        discover.hops = 1;
        let (offer, to, _) = sent(run(&discover, Port::Dhcp, &config, &mut l, 0));
        assert_eq!(to, Destination::Relay(RELAY));
        assert_eq!(offer.giaddr, RELAY);
        assert_eq!(offer.file.as_deref(), Some("snponly.efi"));
        assert_eq!(
            offer.relay_agent_info.as_deref(),
            Some(&[1, 3, b'p', b'1', b'0'][..])
        );

        let mut nak = Packet::new(3)
            .opt(60, b"PXEClient")
            .opt(50, &[192, 168, 1, 7]);
        nak.giaddr = RELAY;
        let (reply, to, _) = sent(run(&nak, Port::Dhcp, &config, &mut l, 0));
        assert_eq!(
            (reply.message_type, to, reply.broadcast),
            (ReplyType::Nak, Destination::Relay(RELAY), true)
        );

        let mut foreign = build::uefi_pxe();
        foreign.giaddr = Ipv4Addr::new(172, 16, 0, 1);
        assert_eq!(
            run(&foreign, Port::Dhcp, &config, &mut l, 0),
            Decision::Ignore(IgnoreReason::ForeignRelay)
        );
    }

    #[test]
    fn whom_full_mode_answers() {
        let known = AnswerPolicy::Known([Mac(build::MAC)].into());
        let mut stranger = build::bios_pxe();
        stranger.mac[5] = 0x77;
        let cases = [
            (
                "ordinary, policy pxe",
                AnswerPolicy::Pxe,
                build::ordinary(),
                Some(IgnoreReason::NotABootClient),
            ),
            (
                "ordinary, policy all",
                AnswerPolicy::All,
                build::ordinary(),
                None,
            ),
            ("ordinary but known", known.clone(), build::ordinary(), None),
            (
                "PXE but unknown",
                known,
                stranger,
                Some(IgnoreReason::UnknownMac),
            ),
            ("iPXE, policy pxe", AnswerPolicy::Pxe, build::ipxe(), None),
            (
                "HTTP boot, policy pxe",
                AnswerPolicy::Pxe,
                build::http_boot(),
                None,
            ),
        ];
        for (name, policy, packet, want) in cases {
            let decision = run(&packet, Port::Dhcp, &full(policy), &mut leases(), 0);
            match (want, decision) {
                (Some(reason), decision) => {
                    assert_eq!(decision, Decision::Ignore(reason), "{name}")
                }
                (None, decision) => {
                    assert_eq!(sent(decision).0.message_type, ReplyType::Offer, "{name}")
                }
            }
        }
        // Under `pxe`, a machine that network-booted from us is still answered
        // when its booted system asks as an ordinary client: same address.
        let mut l = leases();
        let (offer, _, _) = sent(run(
            &build::bios_pxe(),
            Port::Dhcp,
            &full(AnswerPolicy::Pxe),
            &mut l,
            0,
        ));
        let (again, _, _) = sent(run(
            &build::ordinary(),
            Port::Dhcp,
            &full(AnswerPolicy::Pxe),
            &mut l,
            30,
        ));
        assert_eq!(
            (again.message_type, again.yiaddr),
            (ReplyType::Offer, offer.yiaddr)
        );
        assert_eq!(again.file, None, "no boot file for the booted system");
        // An ordinary client gets an address but no boot file.
        let (offer, _, _) = sent(run(
            &build::ordinary(),
            Port::Dhcp,
            &full(AnswerPolicy::All),
            &mut leases(),
            0,
        ));
        assert_eq!(
            (offer.file, offer.siaddr, offer.ipxe_no_pxedhcp),
            (None, Ipv4Addr::UNSPECIFIED, false)
        );
    }

    #[test]
    fn ipxe_gets_its_script_and_http_boot_its_url() {
        let config = full(AnswerPolicy::Pxe);
        let (offer, _, _) = sent(run(&build::ipxe(), Port::Dhcp, &config, &mut leases(), 0));
        assert_eq!(
            offer.file.as_deref(),
            Some("http://10.213.0.1:8080/boot/52:54:00:aa:00:01.ipxe")
        );
        assert!(offer.ipxe_no_pxedhcp);
        let (offer, _, _) = sent(run(
            &build::http_boot(),
            Port::Dhcp,
            &config,
            &mut leases(),
            0,
        ));
        assert_eq!(
            offer.file.as_deref(),
            Some("http://10.213.0.1:8080/boot/snponly.efi")
        );
        assert_eq!(offer.vendor_class.as_deref(), Some("HTTPClient"));
    }

    #[test]
    fn pool_exhausted_decline_inform() {
        let config = full(AnswerPolicy::All);
        let mut l = leases();
        for n in 1..=2 {
            let mut p = build::ordinary();
            p.mac[5] = n;
            sent(run(&p, Port::Dhcp, &config, &mut l, 0));
        }
        let mut third = build::ordinary();
        third.mac[5] = 3;
        assert_eq!(
            run(&third, Port::Dhcp, &config, &mut l, 0),
            Decision::Ignore(IgnoreReason::PoolExhausted)
        );

        // mac ..:01 declines .100: freed and not offered for a while.
        let mut decline = Packet::new(4)
            .opt(50, &ip(100).octets())
            .opt(54, &SERVER.octets());
        decline.mac[5] = 1;
        let decision = run(&decline, Port::Dhcp, &config, &mut l, 1);
        // The decline mark (persisted) and the freed lease.
        assert!(
            matches!(decision, Decision::Recorded { changes } if matches!(
                changes.as_slice(),
                [LeaseChange::Declined { .. }, LeaseChange::Remove { .. }]
            ))
        );
        assert_eq!(
            run(&third, Port::Dhcp, &config, &mut l, 2),
            Decision::Ignore(IgnoreReason::PoolExhausted)
        );

        // INFORM: configuration, no address, no lease time.
        let mut inform = Packet::new(8);
        inform.ciaddr = ip(50);
        let (ack, to, changes) = sent(run(&inform, Port::Dhcp, &config, &mut l, 2));
        assert_eq!(
            (ack.message_type, ack.yiaddr, ack.lease_time),
            (ReplyType::Ack, Ipv4Addr::UNSPECIFIED, None)
        );
        assert_eq!(
            (ack.routers.clone(), to),
            (vec![RELAY], Destination::Unicast(ip(50)))
        );
        assert!(changes.is_empty());
    }

    #[test]
    fn proxy_mode_gives_boot_options_only() {
        let config = config(Mode::Proxy, AnswerPolicy::All);
        let mut l = leases();
        let (offer, to, changes) = sent(run(&build::bios_pxe(), Port::Dhcp, &config, &mut l, 0));
        assert_eq!(offer.message_type, ReplyType::Offer);
        assert_eq!(offer.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!((offer.lease_time, offer.subnet_mask), (None, None));
        assert_eq!(offer.file.as_deref(), Some("undionly.kpxe"));
        assert_eq!(offer.vendor_class.as_deref(), Some("PXEClient"));
        assert_eq!(to, Destination::Broadcast);
        assert!(changes.is_empty());

        // The REQUEST to port 4011: ACK back to its source.
        let mut request = build::uefi_pxe();
        request.options[2] = 3;
        request.ciaddr = ip(23);
        let (ack, to, _) = sent(run(&request, Port::PxeService, &config, &mut l, 0));
        assert_eq!(
            (ack.message_type, to, ack.yiaddr),
            (ReplyType::Ack, Destination::Source, Ipv4Addr::UNSPECIFIED)
        );
        assert_eq!(ack.file.as_deref(), Some("snponly.efi"));

        // iPXE in proxy mode: its script, and the PXEClient class.
        let (offer, _, _) = sent(run(&build::ipxe(), Port::Dhcp, &config, &mut l, 0));
        assert!(
            offer
                .file
                .unwrap()
                .ends_with("/boot/52:54:00:aa:00:01.ipxe")
        );
        assert_eq!(offer.vendor_class.as_deref(), Some("PXEClient"));

        let ignored = [
            ("REQUEST on 67", request, Port::Dhcp),
            ("ordinary, even policy all", build::ordinary(), Port::Dhcp),
            (
                "unknown arch",
                Packet::new(1).opt(60, b"PXEClient:Arch:00011"),
                Port::Dhcp,
            ),
            ("DISCOVER on 4011", build::bios_pxe(), Port::PxeService),
        ];
        for (name, packet, port) in ignored {
            assert!(
                matches!(run(&packet, port, &config, &mut l, 0), Decision::Ignore(_)),
                "{name}"
            );
        }
        assert_eq!(l.iter().count(), 0);
    }

    #[test]
    fn full_mode_without_a_table_answers_nothing() {
        let request = codec::decode(&build::bios_pxe().bytes()).unwrap();
        let decision = handle(&request, Port::Dhcp, &full(AnswerPolicy::All), None, 0);
        assert!(matches!(
            decision,
            Decision::Ignore(IgnoreReason::Config(_))
        ));
    }
}
