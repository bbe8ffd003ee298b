//! The agent's DHCPv4 client, pure: bytes in, bytes (or a lease) out, with
//! `dhcproto` as the codec. The edge ([`super::net`]) owns the socket, the
//! clock and the retransmissions.
//!
//! RFC 2131 as a ramdisk needs it: DISCOVER -> OFFER -> REQUEST -> ACK
//! (the first OFFER wins), NAK starts over, and the broadcast flag is set
//! because the interface has no address yet. A bound lease is renewed at T1
//! (half the lease: a REQUEST from the address, unicast to its server) and
//! rebound at T2 (7/8: the same REQUEST, broadcast to any server); when it
//! expires the agent starts over ([`due`]). Replies that are not ours (other
//! xid or MAC, BOOTREQUESTs, garbage) are ignored.

use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, MessageType, OptionCode};
use dhcproto::{Decodable as _, Decoder, Encodable as _, Encoder};

/// An address lease, as the ACK gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    /// From the subnet mask option (24 when the server sent none).
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub server: Ipv4Addr,
    /// Seconds (option 51); `u32::MAX` is infinite.
    pub lease_s: u32,
}

/// What the edge does after a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Not for us, or not now: keep waiting.
    Ignore,
    /// Send this datagram (broadcast to port 67).
    Send(Vec<u8>),
    /// The address is ours.
    Bound(Lease),
    /// The server refused (NAK): start over with a new DISCOVER.
    Restart(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Selecting,
    Requesting {
        offered: Ipv4Addr,
        server: Ipv4Addr,
    },
    /// Extending `lease` (RENEWING or REBINDING: the same REQUEST).
    Extending {
        lease: Lease,
    },
    Bound,
}

/// What a bound lease needs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing before T1.
    Nothing,
    /// T1 passed: ask the lease's server (unicast).
    Renew,
    /// T2 passed: ask any server (broadcast).
    Rebind,
    /// The lease ran out: the address is no longer ours; start over.
    Expired,
}

/// What a lease of `lease_s` seconds, bound `elapsed_s` ago, needs (RFC 2131
/// 4.4.5: T1 = 1/2, T2 = 7/8 of the lease; `u32::MAX` is infinite).
pub fn due(lease_s: u32, elapsed_s: u64) -> Due {
    if lease_s == u32::MAX {
        return Due::Nothing;
    }
    let lease = u64::from(lease_s);
    if elapsed_s >= lease {
        Due::Expired
    } else if elapsed_s >= lease * 7 / 8 {
        Due::Rebind
    } else if elapsed_s >= lease / 2 {
        Due::Renew
    } else {
        Due::Nothing
    }
}

/// One client exchange on one interface.
#[derive(Debug, Clone)]
pub struct Client {
    mac: [u8; 6],
    xid: u32,
    phase: Phase,
    last: Vec<u8>,
}

impl Client {
    /// A client for the NIC with `mac`; `xid` should be random per exchange.
    pub fn new(mac: [u8; 6], xid: u32) -> Client {
        Client {
            mac,
            xid,
            phase: Phase::Selecting,
            last: Vec::new(),
        }
    }

    /// Starts (or restarts) the exchange: the DISCOVER to broadcast.
    pub fn discover(&mut self, xid: u32) -> Vec<u8> {
        self.xid = xid;
        self.phase = Phase::Selecting;
        self.last = self.message(MessageType::Discover, None, None, None);
        self.last.clone()
    }

    /// Starts extending `lease` (RENEWING or REBINDING): a REQUEST with the
    /// address in `ciaddr`, no requested address or server identifier, and
    /// no broadcast flag (the interface has its address).
    pub fn extend(&mut self, lease: Lease, xid: u32) -> Vec<u8> {
        self.xid = xid;
        self.phase = Phase::Extending { lease };
        self.last = self.message(MessageType::Request, None, None, Some(lease.address));
        self.last.clone()
    }

    /// The last message sent, to send again when no answer came in time.
    pub fn retransmit(&self) -> Vec<u8> {
        self.last.clone()
    }

    /// A BOOTREQUEST; with `ciaddr` (a held address) it goes without the
    /// broadcast flag, since replies can reach the address.
    fn message(
        &self,
        kind: MessageType,
        requested: Option<Ipv4Addr>,
        server: Option<Ipv4Addr>,
        ciaddr: Option<Ipv4Addr>,
    ) -> Vec<u8> {
        let mut msg = v4::Message::default();
        msg.set_opcode(v4::Opcode::BootRequest)
            .set_xid(self.xid)
            .set_chaddr(&self.mac);
        match ciaddr {
            Some(address) => {
                msg.set_ciaddr(address);
            }
            None => {
                msg.set_flags(v4::Flags::default().set_broadcast());
            }
        }
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::AddressLeaseTime,
        ]));
        opts.insert(DhcpOption::ClassIdentifier(b"node-agent".to_vec()));
        if let Some(ip) = requested {
            opts.insert(DhcpOption::RequestedIpAddress(ip));
        }
        if let Some(ip) = server {
            opts.insert(DhcpOption::ServerIdentifier(ip));
        }
        let mut buf = Vec::with_capacity(300);
        // Encoding a message we built from valid values cannot fail.
        let _ = msg.encode(&mut Encoder::new(&mut buf));
        buf
    }

    /// Handles one datagram received on port 68.
    pub fn handle(&mut self, datagram: &[u8]) -> Step {
        let Some(reply) = decode(datagram) else {
            return Step::Ignore;
        };
        if reply.opcode() != v4::Opcode::BootReply
            || reply.xid() != self.xid
            || reply.chaddr().get(..6) != Some(&self.mac[..])
        {
            return Step::Ignore;
        }
        let kind = match reply.opts().get(OptionCode::MessageType) {
            Some(DhcpOption::MessageType(kind)) => *kind,
            _ => return Step::Ignore,
        };
        let server = match reply.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        };
        match (self.phase.clone(), kind) {
            (Phase::Selecting, MessageType::Offer) => {
                let (Some(server), offered) = (server, reply.yiaddr()) else {
                    return Step::Ignore;
                };
                if offered.is_unspecified() {
                    return Step::Ignore;
                }
                self.phase = Phase::Requesting { offered, server };
                self.last = self.message(MessageType::Request, Some(offered), Some(server), None);
                Step::Send(self.last.clone())
            }
            (
                Phase::Requesting {
                    offered,
                    server: chosen,
                },
                MessageType::Ack,
            ) if reply.yiaddr() == offered && server.is_none_or(|s| s == chosen) => {
                self.phase = Phase::Bound;
                Step::Bound(lease_of(&reply, offered, chosen))
            }
            // The same address again, from whichever server answered (a
            // rebinding client may hear another one).
            (Phase::Extending { lease }, MessageType::Ack) if reply.yiaddr() == lease.address => {
                self.phase = Phase::Bound;
                Step::Bound(lease_of(
                    &reply,
                    lease.address,
                    server.unwrap_or(lease.server),
                ))
            }
            (Phase::Extending { lease }, MessageType::Nak) => {
                let why = nak_reason(&reply);
                self.phase = Phase::Selecting;
                Step::Restart(format!(
                    "DHCP server refused to extend the lease of {}: {why}",
                    lease.address
                ))
            }
            (Phase::Requesting { server: chosen, .. }, MessageType::Nak)
                if server.is_none_or(|s| s == chosen) =>
            {
                let why = nak_reason(&reply);
                self.phase = Phase::Selecting;
                Step::Restart(format!("DHCP server {chosen} refused the address: {why}"))
            }
            _ => Step::Ignore,
        }
    }
}

/// The reason a NAK gives (option 56).
fn nak_reason(reply: &v4::Message) -> String {
    match reply.opts().get(OptionCode::Message) {
        Some(DhcpOption::Message(text)) => text.clone(),
        _ => "no reason given".to_owned(),
    }
}

/// The lease an ACK gives for `address` from `server`.
fn lease_of(reply: &v4::Message, address: Ipv4Addr, server: Ipv4Addr) -> Lease {
    let prefix_len = match reply.opts().get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => u32::from(*mask).leading_ones() as u8,
        _ => 24,
    };
    let router = match reply.opts().get(OptionCode::Router) {
        Some(DhcpOption::Router(routers)) => routers.first().copied(),
        _ => None,
    };
    let lease_s = match reply.opts().get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(s)) => *s,
        _ => 3600,
    };
    Lease {
        address,
        prefix_len,
        router,
        server,
        lease_s,
    }
}

/// Decodes a datagram; `None` for anything dhcproto cannot read. dhcproto
/// can panic on some malformed options, and a panic in PID 1 stops the
/// machine, so the decoder runs under `catch_unwind`.
fn decode(datagram: &[u8]) -> Option<v4::Message> {
    std::panic::catch_unwind(|| v4::Message::decode(&mut Decoder::new(datagram)).ok())
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0xaa, 0, 1];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
    const OFFERED: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 100);

    /// A server's reply to `request`, built independently with dhcproto.
    fn reply(request: &[u8], kind: MessageType, yiaddr: Ipv4Addr, extra: &[DhcpOption]) -> Vec<u8> {
        let req = v4::Message::decode(&mut Decoder::new(request)).unwrap();
        let mut msg = v4::Message::default();
        msg.set_opcode(v4::Opcode::BootReply)
            .set_xid(req.xid())
            .set_yiaddr(yiaddr)
            .set_chaddr(&req.chaddr()[..6]);
        msg.opts_mut().insert(DhcpOption::MessageType(kind));
        msg.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
        for opt in extra {
            msg.opts_mut().insert(opt.clone());
        }
        let mut buf = Vec::new();
        msg.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    }

    #[test]
    fn discover_offer_request_ack_gives_the_lease() {
        let mut client = Client::new(MAC, 0);
        let discover = client.discover(0x1234);
        let sent = v4::Message::decode(&mut Decoder::new(&discover)).unwrap();
        assert_eq!(sent.xid(), 0x1234);
        assert!(sent.flags().broadcast());
        assert_eq!(
            sent.opts().get(OptionCode::MessageType),
            Some(&DhcpOption::MessageType(MessageType::Discover))
        );
        // An ACK before any OFFER is not for this phase.
        assert_eq!(
            client.handle(&reply(&discover, MessageType::Ack, OFFERED, &[])),
            Step::Ignore
        );

        let Step::Send(request) =
            client.handle(&reply(&discover, MessageType::Offer, OFFERED, &[]))
        else {
            panic!("an OFFER must be answered with a REQUEST");
        };
        let req = v4::Message::decode(&mut Decoder::new(&request)).unwrap();
        assert_eq!(
            req.opts().get(OptionCode::MessageType),
            Some(&DhcpOption::MessageType(MessageType::Request))
        );
        assert_eq!(
            req.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(OFFERED))
        );
        assert_eq!(
            req.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert_eq!(client.retransmit(), request);

        let ack = reply(
            &request,
            MessageType::Ack,
            OFFERED,
            &[
                DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
                DhcpOption::Router(vec![SERVER]),
                DhcpOption::AddressLeaseTime(600),
            ],
        );
        assert_eq!(
            client.handle(&ack),
            Step::Bound(Lease {
                address: OFFERED,
                prefix_len: 24,
                router: Some(SERVER),
                server: SERVER,
                lease_s: 600,
            })
        );
    }

    #[test]
    fn a_nak_restarts_and_foreign_or_broken_replies_are_ignored() {
        let mut client = Client::new(MAC, 0);
        let discover = client.discover(7);
        // Another client's exchange (other xid), a BOOTREQUEST, garbage.
        let mut foreign = Client::new([2, 0, 0, 0, 0, 9], 0);
        let other = foreign.discover(8);
        assert_eq!(
            client.handle(&reply(&other, MessageType::Offer, OFFERED, &[])),
            Step::Ignore
        );
        assert_eq!(client.handle(&discover), Step::Ignore);
        assert_eq!(client.handle(&[0xff; 20]), Step::Ignore);
        assert_eq!(client.handle(&[]), Step::Ignore);

        let Step::Send(request) =
            client.handle(&reply(&discover, MessageType::Offer, OFFERED, &[]))
        else {
            panic!("expected a REQUEST");
        };
        // An ACK for another address is not the one we asked for.
        assert_eq!(
            client.handle(&reply(
                &request,
                MessageType::Ack,
                Ipv4Addr::new(10, 213, 0, 7),
                &[]
            )),
            Step::Ignore
        );
        let nak = reply(
            &request,
            MessageType::Nak,
            Ipv4Addr::UNSPECIFIED,
            &[DhcpOption::Message("address in use".into())],
        );
        assert_eq!(
            client.handle(&nak),
            Step::Restart("DHCP server 10.213.0.1 refused the address: address in use".into())
        );
    }

    #[test]
    fn renewal_times_follow_rfc_2131() {
        assert_eq!(due(600, 0), Due::Nothing);
        assert_eq!(due(600, 299), Due::Nothing);
        assert_eq!(due(600, 300), Due::Renew);
        assert_eq!(due(600, 524), Due::Renew);
        assert_eq!(due(600, 525), Due::Rebind);
        assert_eq!(due(600, 600), Due::Expired);
        assert_eq!(due(u32::MAX, u64::MAX), Due::Nothing);
    }

    #[test]
    fn a_lease_is_extended_from_its_address_and_a_nak_starts_over() {
        let bound = Lease {
            address: OFFERED,
            prefix_len: 24,
            router: Some(SERVER),
            server: SERVER,
            lease_s: 600,
        };
        let mut client = Client::new(MAC, 0);
        let request = client.extend(bound, 0x55);
        let sent = v4::Message::decode(&mut Decoder::new(&request)).unwrap();
        assert_eq!(sent.xid(), 0x55);
        assert_eq!(sent.ciaddr(), OFFERED);
        assert!(!sent.flags().broadcast());
        assert_eq!(
            sent.opts().get(OptionCode::MessageType),
            Some(&DhcpOption::MessageType(MessageType::Request))
        );
        // RFC 2131 4.3.2: RENEWING/REBINDING carry neither option 50 nor 54.
        assert!(sent.opts().get(OptionCode::RequestedIpAddress).is_none());
        assert!(sent.opts().get(OptionCode::ServerIdentifier).is_none());
        assert_eq!(client.retransmit(), request);
        // Another address is not the lease we hold.
        assert_eq!(
            client.handle(&reply(
                &request,
                MessageType::Ack,
                Ipv4Addr::new(10, 213, 0, 7),
                &[]
            )),
            Step::Ignore
        );
        let ack = reply(
            &request,
            MessageType::Ack,
            OFFERED,
            &[DhcpOption::AddressLeaseTime(900)],
        );
        assert_eq!(
            client.handle(&ack),
            Step::Bound(Lease {
                lease_s: 900,
                router: None,
                ..bound
            })
        );

        let request = client.extend(bound, 0x56);
        let nak = reply(&request, MessageType::Nak, Ipv4Addr::UNSPECIFIED, &[]);
        assert_eq!(
            client.handle(&nak),
            Step::Restart(
                "DHCP server refused to extend the lease of 10.213.0.100: no reason given".into()
            )
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..600))| {
            let mut client = Client::new(MAC, 0);
            client.discover(1);
            let _ = client.handle(&bytes);
        });
    }
}
