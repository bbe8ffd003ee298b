//! rtnetlink requests the agent needs to configure its boot NIC: set the
//! link up, add an IPv4 address, add a default route; and the kernel's
//! acknowledgement. Pure byte encoding (native endian, as the kernel
//! expects) so the layouts are unit-tested; [`super::link`] sends them.

use std::net::Ipv4Addr;

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;

const AF_INET: u8 = 2;
const IFF_UP: u32 = 0x1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
/// `RTPROT_DHCP`: the route came from a DHCP client.
const RTPROT_DHCP: u8 = 16;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

fn attr(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(body);
    out
}

/// `ip link set dev INDEX up`.
pub fn link_up(seq: u32, index: u32) -> Vec<u8> {
    let mut body = vec![0u8, 0]; // family AF_UNSPEC, pad
    body.extend_from_slice(&0u16.to_ne_bytes()); // type
    body.extend_from_slice(&index.to_ne_bytes());
    body.extend_from_slice(&IFF_UP.to_ne_bytes()); // flags
    body.extend_from_slice(&IFF_UP.to_ne_bytes()); // change mask
    message(RTM_NEWLINK, 0, seq, &body)
}

/// `ip addr replace ADDRESS/PREFIX brd + dev INDEX`.
pub fn add_address(seq: u32, index: u32, address: Ipv4Addr, prefix_len: u8) -> Vec<u8> {
    let mut body = vec![AF_INET, prefix_len, 0, RT_SCOPE_UNIVERSE];
    body.extend_from_slice(&index.to_ne_bytes());
    attr(&mut body, IFA_LOCAL, &address.octets());
    attr(&mut body, IFA_ADDRESS, &address.octets());
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0);
    let broadcast = Ipv4Addr::from(u32::from(address) | !mask);
    attr(&mut body, IFA_BROADCAST, &broadcast.octets());
    message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq, &body)
}

/// `ip route replace default via GATEWAY dev INDEX proto dhcp`.
pub fn default_route(seq: u32, index: u32, gateway: Ipv4Addr) -> Vec<u8> {
    let mut body = vec![
        AF_INET,
        0, // dst_len: default route
        0, // src_len
        0, // tos
        RT_TABLE_MAIN,
        RTPROT_DHCP,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
    ];
    body.extend_from_slice(&0u32.to_ne_bytes()); // flags
    attr(&mut body, RTA_GATEWAY, &gateway.octets());
    attr(&mut body, RTA_OIF, &index.to_ne_bytes());
    message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, seq, &body)
}

/// The kernel's answer to request `seq`: `Some(0)` done, `Some(-errno)`
/// refused, `None` when `reply` holds no acknowledgement of `seq`.
pub fn ack_of(reply: &[u8], seq: u32) -> Option<i32> {
    let mut rest = reply;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes(rest[0..4].try_into().ok()?) as usize;
        if len < 16 || len > rest.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(rest[4..6].try_into().ok()?);
        let msg_seq = u32::from_ne_bytes(rest[8..12].try_into().ok()?);
        if kind == NLMSG_ERROR && msg_seq == seq && len >= 20 {
            return Some(i32::from_ne_bytes(rest[16..20].try_into().ok()?));
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes(b[at..at + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn requests_have_the_kernel_layout() {
        let up = link_up(1, 3);
        assert_eq!(up.len(), 32);
        assert_eq!(u32_at(&up, 0), 32);
        assert_eq!(u16_at(&up, 4), RTM_NEWLINK);
        assert_eq!(u16_at(&up, 6), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(u32_at(&up, 8), 1);
        assert_eq!(u32_at(&up, 20), 3); // ifi_index
        assert_eq!((u32_at(&up, 24), u32_at(&up, 28)), (IFF_UP, IFF_UP));

        let addr = add_address(2, 3, Ipv4Addr::new(10, 213, 0, 100), 24);
        // header 16 + ifaddrmsg 8 + three 8-byte attributes
        assert_eq!(addr.len(), 48);
        assert_eq!(u32_at(&addr, 0), 48);
        assert_eq!(u16_at(&addr, 4), RTM_NEWADDR);
        assert_eq!(&addr[16..20], &[AF_INET, 24, 0, 0]);
        assert_eq!(u32_at(&addr, 20), 3);
        assert_eq!((u16_at(&addr, 24), u16_at(&addr, 26)), (8, IFA_LOCAL));
        assert_eq!(&addr[28..32], &[10, 213, 0, 100]);
        assert_eq!(u16_at(&addr, 34), IFA_ADDRESS);
        assert_eq!(u16_at(&addr, 42), IFA_BROADCAST);
        assert_eq!(&addr[44..48], &[10, 213, 0, 255]);

        let route = default_route(3, 3, Ipv4Addr::new(10, 213, 0, 1));
        assert_eq!(route.len(), 16 + 12 + 8 + 8);
        assert_eq!(u16_at(&route, 4), RTM_NEWROUTE);
        assert_eq!(
            &route[16..24],
            &[AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_DHCP, 0, RTN_UNICAST]
        );
        assert_eq!(u16_at(&route, 30), RTA_GATEWAY);
        assert_eq!(&route[32..36], &[10, 213, 0, 1]);
        assert_eq!(u16_at(&route, 38), RTA_OIF);
        assert_eq!(u32_at(&route, 40), 3);
    }

    #[test]
    fn acknowledgements_are_matched_by_sequence() {
        let ack = |seq: u32, errno: i32| {
            let mut body = errno.to_ne_bytes().to_vec();
            body.extend_from_slice(&[0; 16]); // the echoed request header
            let mut m = message(NLMSG_ERROR, 0, seq, &body);
            m[6..8].copy_from_slice(&0u16.to_ne_bytes());
            m
        };
        let mut two = ack(4, 0);
        two.extend(ack(5, -17));
        assert_eq!(ack_of(&two, 4), Some(0));
        assert_eq!(ack_of(&two, 5), Some(-17));
        assert_eq!(ack_of(&two, 6), None);
        assert_eq!(ack_of(&two[..10], 4), None);
        assert_eq!(ack_of(&[0xff; 40], 4), None);
    }
}
