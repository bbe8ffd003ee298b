//! The agent's DHCPv4 client, pure: bytes in, bytes (or a lease) out. The
//! wire format is `model::dhcp`, the codec the provisioner's DHCP server
//! uses: requests are built with [`dhcp::encode_request`] and replies read
//! with [`dhcp::decode_reply`], which walks the options itself and never
//! panics (proptest there), so PID 1 needs no `catch_unwind`. The edge
//! ([`super::link`]) owns the socket, the clock and the retransmissions.
//!
//! RFC 2131 as a ramdisk needs it: DISCOVER -> OFFER -> REQUEST -> ACK
//! (the first OFFER wins), NAK starts over, and the broadcast flag is set
//! because the interface has no address yet. A bound lease is renewed at T1
//! (half the lease: a REQUEST from the address, unicast to its server) and
//! rebound at T2 (7/8: the same REQUEST, broadcast to any server); when it
//! expires the agent starts over ([`due`]). Replies that are not ours (other
//! xid or MAC, BOOTREQUESTs, replies without a server identifier, garbage)
//! are ignored.

use std::net::Ipv4Addr;

use model::dhcp::{self, ClientMessage, Reply, ReplyType, opt};
use model::net::Mac;

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
    mac: Mac,
    xid: u32,
    phase: Phase,
    last: Vec<u8>,
}

impl Client {
    /// A client for the NIC with `mac`; `xid` should be random per exchange.
    pub fn new(mac: Mac, xid: u32) -> Client {
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
        self.last = self.message(ClientMessage::Discover, None, None, None);
        self.last.clone()
    }

    /// Starts extending `lease` (RENEWING or REBINDING): a REQUEST with the
    /// address in `ciaddr`, no requested address or server identifier, and
    /// no broadcast flag (the interface has its address).
    pub fn extend(&mut self, lease: Lease, xid: u32) -> Vec<u8> {
        self.xid = xid;
        self.phase = Phase::Extending { lease };
        self.last = self.message(ClientMessage::Request, None, None, Some(lease.address));
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
        kind: ClientMessage,
        requested: Option<Ipv4Addr>,
        server: Option<Ipv4Addr>,
        ciaddr: Option<Ipv4Addr>,
    ) -> Vec<u8> {
        let mut request = dhcp::Request::new(kind, self.xid, self.mac);
        match ciaddr {
            Some(address) => request.ciaddr = address,
            None => request.broadcast = true,
        }
        request.parameter_request_list = vec![opt::SUBNET_MASK, opt::ROUTER, opt::LEASE_TIME];
        request.vendor_class = Some(b"node-agent".to_vec());
        request.requested_ip = requested;
        request.server_id = server;
        // Only over-long or empty options fail to encode, and these are fixed
        // and short: a failure is a bug in this function (every message kind
        // is encoded by the unit tests), never something to send empty.
        dhcp::encode_request(&request).expect("the agent's fixed DHCP options encode")
    }

    /// Handles one datagram received on port 68.
    pub fn handle(&mut self, datagram: &[u8]) -> Step {
        // Anything the codec refuses (a BOOTREQUEST, a reply without a
        // server identifier, garbage) is not an answer to us.
        let Ok(reply) = dhcp::decode_reply(datagram) else {
            return Step::Ignore;
        };
        if reply.xid != self.xid || reply.mac != self.mac {
            return Step::Ignore;
        }
        let server = reply.server_id;
        match (self.phase.clone(), reply.message_type) {
            (Phase::Selecting, ReplyType::Offer) => {
                let offered = reply.yiaddr;
                if offered.is_unspecified() {
                    return Step::Ignore;
                }
                self.phase = Phase::Requesting { offered, server };
                self.last = self.message(ClientMessage::Request, Some(offered), Some(server), None);
                Step::Send(self.last.clone())
            }
            (
                Phase::Requesting {
                    offered,
                    server: chosen,
                },
                ReplyType::Ack,
            ) if reply.yiaddr == offered && server == chosen => {
                self.phase = Phase::Bound;
                Step::Bound(lease_of(&reply, offered, chosen))
            }
            // The same address again, from whichever server answered (a
            // rebinding client may hear another one).
            (Phase::Extending { lease }, ReplyType::Ack) if reply.yiaddr == lease.address => {
                self.phase = Phase::Bound;
                Step::Bound(lease_of(&reply, lease.address, server))
            }
            (Phase::Extending { lease }, ReplyType::Nak) => {
                let why = nak_reason(&reply);
                self.phase = Phase::Selecting;
                Step::Restart(format!(
                    "DHCP server refused to extend the lease of {}: {why}",
                    lease.address
                ))
            }
            (Phase::Requesting { server: chosen, .. }, ReplyType::Nak) if server == chosen => {
                let why = nak_reason(&reply);
                self.phase = Phase::Selecting;
                Step::Restart(format!("DHCP server {chosen} refused the address: {why}"))
            }
            _ => Step::Ignore,
        }
    }
}

/// The reason a NAK gives (option 56).
fn nak_reason(reply: &Reply) -> String {
    reply
        .message
        .clone()
        .unwrap_or_else(|| "no reason given".to_owned())
}

/// The lease an ACK gives for `address` from `server`.
fn lease_of(reply: &Reply, address: Ipv4Addr, server: Ipv4Addr) -> Lease {
    Lease {
        address,
        prefix_len: reply
            .subnet_mask
            .map_or(24, |mask| u32::from(mask).leading_ones() as u8),
        router: reply.routers.first().copied(),
        server,
        lease_s: reply.lease_time.unwrap_or(3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::dhcp::Request;

    const MAC: Mac = Mac([0x52, 0x54, 0, 0xaa, 0, 1]);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
    const OFFERED: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 100);

    /// What the provisioner's DHCP server reads from a datagram the client sent.
    fn sent(datagram: &[u8]) -> Request {
        dhcp::decode(datagram).unwrap()
    }

    /// The server's reply to `request`, encoded by the server's encoder;
    /// `set` fills in the options.
    fn reply(
        request: &[u8],
        kind: ReplyType,
        yiaddr: Ipv4Addr,
        set: impl FnOnce(&mut Reply),
    ) -> Vec<u8> {
        let mut reply = Reply::to(&sent(request), kind, SERVER);
        reply.yiaddr = yiaddr;
        set(&mut reply);
        dhcp::encode(&reply).unwrap()
    }

    #[test]
    fn discover_offer_request_ack_gives_the_lease() {
        let mut client = Client::new(MAC, 0);
        let discover = client.discover(0x1234);
        let seen = sent(&discover);
        assert_eq!(seen.xid, 0x1234);
        assert_eq!(seen.mac, MAC);
        assert!(seen.broadcast);
        assert_eq!(seen.message_type, ClientMessage::Discover);
        assert!(seen.vendor_class_is("node-agent"));
        assert_eq!(seen.parameter_request_list, [1, 3, 51]);
        // An ACK before any OFFER is not for this phase.
        assert_eq!(
            client.handle(&reply(&discover, ReplyType::Ack, OFFERED, |_| {})),
            Step::Ignore
        );

        let Step::Send(request) =
            client.handle(&reply(&discover, ReplyType::Offer, OFFERED, |_| {}))
        else {
            panic!("an OFFER must be answered with a REQUEST");
        };
        let seen = sent(&request);
        assert_eq!(seen.message_type, ClientMessage::Request);
        assert_eq!(seen.requested_ip, Some(OFFERED));
        assert_eq!(seen.server_id, Some(SERVER));
        assert!(seen.broadcast);
        assert_eq!(client.retransmit(), request);

        let ack = reply(&request, ReplyType::Ack, OFFERED, |r| {
            r.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
            r.routers = vec![SERVER];
            r.dns_servers = vec![SERVER];
            r.lease_time = Some(600);
            r.renewal_time = Some(300);
            r.rebinding_time = Some(525);
        });
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
        let mut foreign = Client::new(Mac([2, 0, 0, 0, 0, 9]), 0);
        let other = foreign.discover(8);
        assert_eq!(
            client.handle(&reply(&other, ReplyType::Offer, OFFERED, |_| {})),
            Step::Ignore
        );
        // Our xid, another MAC.
        assert_eq!(
            client.handle(&reply(&discover, ReplyType::Offer, OFFERED, |r| {
                r.mac = Mac([2, 0, 0, 0, 0, 9]);
            })),
            Step::Ignore
        );
        assert_eq!(client.handle(&discover), Step::Ignore);
        assert_eq!(client.handle(&[0xff; 20]), Step::Ignore);
        assert_eq!(client.handle(&[]), Step::Ignore);

        let Step::Send(request) =
            client.handle(&reply(&discover, ReplyType::Offer, OFFERED, |_| {}))
        else {
            panic!("expected a REQUEST");
        };
        // An ACK for another address is not the one we asked for.
        assert_eq!(
            client.handle(&reply(
                &request,
                ReplyType::Ack,
                Ipv4Addr::new(10, 213, 0, 7),
                |_| {}
            )),
            Step::Ignore
        );
        // A NAK from a server we did not choose is not about our request.
        assert_eq!(
            client.handle(&reply(
                &request,
                ReplyType::Nak,
                Ipv4Addr::UNSPECIFIED,
                |r| {
                    r.server_id = Ipv4Addr::new(10, 213, 0, 2);
                }
            )),
            Step::Ignore
        );
        let nak = reply(&request, ReplyType::Nak, Ipv4Addr::UNSPECIFIED, |r| {
            r.message = Some("address in use".into());
        });
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
        let seen = sent(&request);
        assert_eq!(seen.xid, 0x55);
        assert_eq!(seen.ciaddr, OFFERED);
        assert!(!seen.broadcast);
        assert_eq!(seen.message_type, ClientMessage::Request);
        // RFC 2131 4.3.2: RENEWING/REBINDING carry neither option 50 nor 54.
        assert_eq!(seen.requested_ip, None);
        assert_eq!(seen.server_id, None);
        assert_eq!(client.retransmit(), request);
        // Another address is not the lease we hold.
        assert_eq!(
            client.handle(&reply(
                &request,
                ReplyType::Ack,
                Ipv4Addr::new(10, 213, 0, 7),
                |_| {}
            )),
            Step::Ignore
        );
        let ack = reply(&request, ReplyType::Ack, OFFERED, |r| {
            r.lease_time = Some(900);
        });
        assert_eq!(
            client.handle(&ack),
            Step::Bound(Lease {
                lease_s: 900,
                router: None,
                ..bound
            })
        );

        let request = client.extend(bound, 0x56);
        let nak = reply(&request, ReplyType::Nak, Ipv4Addr::UNSPECIFIED, |_| {});
        assert_eq!(
            client.handle(&nak),
            Step::Restart(
                "DHCP server refused to extend the lease of 10.213.0.100: no reason given".into()
            )
        );
    }

    #[test]
    fn arbitrary_bytes_are_ignored_or_answered_never_a_panic() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..600))| {
            let mut client = Client::new(MAC, 0);
            client.discover(1);
            let step = client.handle(&bytes);
            // Only a decodable OFFER of an address, for our xid and MAC,
            // moves a selecting client on.
            let offer = dhcp::decode_reply(&bytes).ok().filter(|r| {
                r.message_type == ReplyType::Offer
                    && r.xid == 1
                    && r.mac == MAC
                    && !r.yiaddr.is_unspecified()
            });
            prop_assert_eq!(step != Step::Ignore, offer.is_some());
        });
    }
}
