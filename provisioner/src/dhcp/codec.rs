//! DHCPv4 datagrams: bytes in, a typed [`Request`] out; a typed [`Reply`] in,
//! bytes out (RFC 2131, options RFC 2132, PXE options RFC 4578).
//!
//! Invariant: pure. No sockets, no tokio, no clock; decoding never panics on
//! any input (proptest).
//!
//! The fixed header is read by `dhcproto`; the options area is walked here,
//! TLV by TLV, because `dhcproto` silently stops at the first option it cannot
//! read and returns the options before it: a request whose options were cut
//! short must be refused as [`DecodeError::Malformed`], never half-read.
//! Replies are encoded by `dhcproto`. Its `sname`/`file` quirks: decoding
//! keeps the terminating NUL in `fname()`/`sname()` and drops a field that
//! fills all 128/64 bytes without a NUL, so [`encode`] refuses names that
//! leave no room for a NUL, and [`decode_reply`] strips the NUL.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Flags, Message, Opcode, OptionCode, UnknownOption};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

/// The DHCP magic cookie (RFC 2131 section 3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Offset of the options area: 236 bytes of fixed header, then the cookie.
const OPTIONS_OFFSET: usize = 240;
/// Offset and size of the `sname` and `file` header fields.
const SNAME: (usize, usize) = (44, 64);
const FILE: (usize, usize) = (108, 128);

/// Option codes read or written here.
pub mod opt {
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const RENEWAL: u8 = 58;
    pub const REBINDING: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const BOOTFILE: u8 = 67;
    pub const USER_CLASS: u8 = 77;
    pub const RELAY_AGENT_INFO: u8 = 82;
    pub const CLIENT_ARCH: u8 = 93;
    /// iPXE's encapsulated options.
    pub const IPXE_ENCAP: u8 = 175;
    /// iPXE sub-option of 175: skip the ProxyDHCP wait.
    pub const IPXE_NO_PXEDHCP: u8 = 176;
}

/// An Ethernet hardware address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    /// Lower-case, colon-separated: `52:54:00:aa:00:01` (the form of
    /// `nodes.yaml` and of the per-node iPXE script URL).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// DHCP message types a client sends (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMessage {
    Discover,
    Request,
    Decline,
    Release,
    Inform,
    /// A type a client does not send to a server (OFFER, ACK, ...), by value.
    Other(u8),
}

impl ClientMessage {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Discover,
            3 => Self::Request,
            4 => Self::Decline,
            7 => Self::Release,
            8 => Self::Inform,
            other => Self::Other(other),
        }
    }
}

/// A client's request, every field the server looks at, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub message_type: ClientMessage,
    pub xid: u32,
    pub secs: u16,
    /// The client asked for broadcast replies (flags bit 0).
    pub broadcast: bool,
    pub hops: u8,
    pub mac: Mac,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 93, the first architecture listed (RFC 4578).
    pub client_arch: Option<u16>,
    /// Option 60, e.g. `PXEClient:Arch:00007:UNDI:003016`, `HTTPClient:...`.
    pub vendor_class: Option<Vec<u8>>,
    /// Option 77, e.g. `iPXE`.
    pub user_class: Option<Vec<u8>>,
    /// Option 61.
    pub client_id: Option<Vec<u8>>,
    /// Option 12 (lossy UTF-8).
    pub hostname: Option<String>,
    /// Option 55.
    pub parameter_request_list: Vec<u8>,
    /// Option 82, echoed verbatim in replies (RFC 3046).
    pub relay_agent_info: Option<Vec<u8>>,
}

impl Request {
    /// Vendor class starts with `prefix` (`PXEClient`, `HTTPClient`).
    pub fn vendor_class_is(&self, prefix: &str) -> bool {
        self.vendor_class
            .as_deref()
            .is_some_and(|v| v.starts_with(prefix.as_bytes()))
    }

    /// User class is `iPXE`. iPXE sends it as a bare string; RFC 3004 form
    /// (length-prefixed instances) is accepted too.
    pub fn is_ipxe(&self) -> bool {
        match self.user_class.as_deref() {
            Some(b"iPXE") => true,
            Some([4, rest @ ..]) => rest.starts_with(b"iPXE"),
            _ => false,
        }
    }
}

/// Why a datagram is not a request we can read. Every variant is a dropped
/// packet (counted by the edge), never a crash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {len} bytes is shorter than a DHCP message (240)")]
    TooShort { len: usize },
    #[error("op {op} is not BOOTREQUEST (1)")]
    NotRequest { op: u8 },
    #[error("magic cookie {found:?} is not {MAGIC_COOKIE:?}")]
    BadCookie { found: [u8; 4] },
    #[error("hardware type {htype} length {hlen}: only Ethernet (1, 6) is served")]
    UnsupportedHardware { htype: u8, hlen: u8 },
    #[error("malformed options at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
    #[error("option {code} has length {len}, expected {expected}")]
    BadOption {
        code: u8,
        len: usize,
        expected: &'static str,
    },
    #[error("no message type (option 53)")]
    NoMessageType,
    #[error("header: {0}")]
    Header(String),
}

/// Walks one options area (RFC 2131 section 4.1: pad 0, end 255, else code,
/// length, value) and appends every option's value to `out`, concatenating
/// repeated codes (RFC 3396). A value that runs past the area is malformed;
/// an area without End is accepted when it ends on an option boundary.
fn walk_options(
    bytes: &[u8],
    base: usize,
    out: &mut BTreeMap<u8, Vec<u8>>,
) -> Result<(), DecodeError> {
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes[i];
        match code {
            0 => i += 1,
            255 => return Ok(()),
            _ => {
                let Some(&len) = bytes.get(i + 1) else {
                    return Err(DecodeError::Malformed {
                        offset: base + i,
                        reason: format!("option {code} has no length byte"),
                    });
                };
                let start = i + 2;
                let end = start + usize::from(len);
                let Some(value) = bytes.get(start..end) else {
                    return Err(DecodeError::Malformed {
                        offset: base + i,
                        reason: format!(
                            "option {code} of length {len} runs past the end ({} bytes left)",
                            bytes.len() - start
                        ),
                    });
                };
                out.entry(code).or_default().extend_from_slice(value);
                i = end;
            }
        }
    }
    Ok(())
}

/// All options of a message: the options area, then `file` and `sname` when
/// option 52 (overload) says they carry options.
fn read_options(datagram: &[u8]) -> Result<BTreeMap<u8, Vec<u8>>, DecodeError> {
    let mut options = BTreeMap::new();
    walk_options(&datagram[OPTIONS_OFFSET..], OPTIONS_OFFSET, &mut options)?;
    if let Some(overload) = options.get(&opt::OVERLOAD).cloned() {
        let [flag] = overload[..] else {
            return Err(DecodeError::BadOption {
                code: opt::OVERLOAD,
                len: overload.len(),
                expected: "1",
            });
        };
        if flag & 1 != 0 {
            walk_options(&datagram[FILE.0..FILE.0 + FILE.1], FILE.0, &mut options)?;
        }
        if flag & 2 != 0 {
            walk_options(&datagram[SNAME.0..SNAME.0 + SNAME.1], SNAME.0, &mut options)?;
        }
    }
    Ok(options)
}

fn ip_option(options: &BTreeMap<u8, Vec<u8>>, code: u8) -> Result<Option<Ipv4Addr>, DecodeError> {
    match options.get(&code) {
        None => Ok(None),
        Some(v) => match <[u8; 4]>::try_from(v.as_slice()) {
            Ok(a) => Ok(Some(Ipv4Addr::from(a))),
            Err(_) => Err(DecodeError::BadOption {
                code,
                len: v.len(),
                expected: "4",
            }),
        },
    }
}

fn u32_option(options: &BTreeMap<u8, Vec<u8>>, code: u8) -> Result<Option<u32>, DecodeError> {
    match options.get(&code) {
        None => Ok(None),
        Some(v) => match <[u8; 4]>::try_from(v.as_slice()) {
            Ok(a) => Ok(Some(u32::from_be_bytes(a))),
            Err(_) => Err(DecodeError::BadOption {
                code,
                len: v.len(),
                expected: "4",
            }),
        },
    }
}

fn nonempty(options: &BTreeMap<u8, Vec<u8>>, code: u8) -> Result<Option<Vec<u8>>, DecodeError> {
    match options.get(&code) {
        Some(v) if v.is_empty() => Err(DecodeError::BadOption {
            code,
            len: 0,
            expected: "at least 1",
        }),
        other => Ok(other.cloned()),
    }
}

fn message_type(options: &BTreeMap<u8, Vec<u8>>) -> Result<u8, DecodeError> {
    match options.get(&opt::MESSAGE_TYPE) {
        None => Err(DecodeError::NoMessageType),
        Some(v) => match v[..] {
            [t] => Ok(t),
            _ => Err(DecodeError::BadOption {
                code: opt::MESSAGE_TYPE,
                len: v.len(),
                expected: "1",
            }),
        },
    }
}

/// Checks the parts of the header both directions share and returns the
/// `dhcproto` view of it.
fn decode_header(datagram: &[u8]) -> Result<Message, DecodeError> {
    if datagram.len() < OPTIONS_OFFSET {
        return Err(DecodeError::TooShort {
            len: datagram.len(),
        });
    }
    let cookie: [u8; 4] = [datagram[236], datagram[237], datagram[238], datagram[239]];
    if cookie != MAGIC_COOKIE {
        return Err(DecodeError::BadCookie { found: cookie });
    }
    // dhcproto reads the fixed header; its options are walked again below.
    Message::decode(&mut Decoder::new(datagram)).map_err(|e| DecodeError::Header(e.to_string()))
}

fn mac_of(datagram: &[u8]) -> Result<Mac, DecodeError> {
    let (htype, hlen) = (datagram[1], datagram[2]);
    if htype != 1 || hlen != 6 {
        return Err(DecodeError::UnsupportedHardware { htype, hlen });
    }
    let mut mac = [0; 6];
    mac.copy_from_slice(&datagram[28..34]);
    Ok(Mac(mac))
}

/// Decodes a client's datagram into a [`Request`].
pub fn decode(datagram: &[u8]) -> Result<Request, DecodeError> {
    let header = decode_header(datagram)?;
    if header.opcode() != Opcode::BootRequest {
        return Err(DecodeError::NotRequest { op: datagram[0] });
    }
    let mac = mac_of(datagram)?;
    let options = read_options(datagram)?;
    let message_type = ClientMessage::from_u8(message_type(&options)?);
    let client_arch = match options.get(&opt::CLIENT_ARCH) {
        None => None,
        Some(v) if v.len() >= 2 && v.len() % 2 == 0 => Some(u16::from_be_bytes([v[0], v[1]])),
        Some(v) => {
            return Err(DecodeError::BadOption {
                code: opt::CLIENT_ARCH,
                len: v.len(),
                expected: "a non-zero multiple of 2",
            });
        }
    };
    Ok(Request {
        message_type,
        xid: header.xid(),
        secs: header.secs(),
        broadcast: header.flags().broadcast(),
        hops: header.hops(),
        mac,
        ciaddr: header.ciaddr(),
        giaddr: header.giaddr(),
        requested_ip: ip_option(&options, opt::REQUESTED_IP)?,
        server_id: ip_option(&options, opt::SERVER_ID)?,
        client_arch,
        vendor_class: nonempty(&options, opt::VENDOR_CLASS)?,
        user_class: nonempty(&options, opt::USER_CLASS)?,
        client_id: nonempty(&options, opt::CLIENT_ID)?,
        hostname: nonempty(&options, opt::HOSTNAME)?
            .map(|h| String::from_utf8_lossy(&h).into_owned()),
        parameter_request_list: options
            .get(&opt::PARAMETER_REQUEST_LIST)
            .cloned()
            .unwrap_or_default(),
        relay_agent_info: options.get(&opt::RELAY_AGENT_INFO).cloned(),
    })
}

/// Server message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyType {
    Offer,
    Ack,
    Nak,
}

/// A server's reply, every field the server sets, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub message_type: ReplyType,
    pub xid: u32,
    pub broadcast: bool,
    pub mac: Mac,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    /// Next server (TFTP) address.
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// `sname` header field: at most 63 bytes, no NUL.
    pub sname: Option<String>,
    /// `file` header field: at most 127 bytes, no NUL. Also sent as option
    /// 67 (UEFI HTTP boot reads the URL from there).
    pub file: Option<String>,
    /// Option 54.
    pub server_id: Ipv4Addr,
    /// Options 51, 58, 59 (seconds).
    pub lease_time: Option<u32>,
    pub renewal_time: Option<u32>,
    pub rebinding_time: Option<u32>,
    pub subnet_mask: Option<Ipv4Addr>,
    pub routers: Vec<Ipv4Addr>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub domain_name: Option<String>,
    /// Option 60 (`PXEClient`, `HTTPClient`).
    pub vendor_class: Option<String>,
    /// Option 175.176 = 1: iPXE skips its ProxyDHCP wait.
    pub ipxe_no_pxedhcp: bool,
    /// Option 56: why a NAK.
    pub message: Option<String>,
    /// Option 82, echoed.
    pub relay_agent_info: Option<Vec<u8>>,
}

impl Reply {
    /// A reply to `request` with nothing but the header fields it echoes.
    pub fn to(request: &Request, message_type: ReplyType, server_id: Ipv4Addr) -> Self {
        Reply {
            message_type,
            xid: request.xid,
            broadcast: request.broadcast,
            mac: request.mac,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: request.giaddr,
            sname: None,
            file: None,
            server_id,
            lease_time: None,
            renewal_time: None,
            rebinding_time: None,
            subnet_mask: None,
            routers: Vec::new(),
            dns_servers: Vec::new(),
            domain_name: None,
            vendor_class: None,
            ipxe_no_pxedhcp: false,
            message: None,
            relay_agent_info: request.relay_agent_info.clone(),
        }
    }
}

/// Why a reply cannot be encoded (a configuration problem: a boot file name
/// or URL too long for its field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{field} {value:?} is longer than {max} bytes or contains a NUL")]
    Field {
        field: &'static str,
        value: String,
        max: usize,
    },
    #[error("option {code} value is {len} bytes, more than 255")]
    OptionTooLong { code: u8, len: usize },
    #[error("dhcproto: {0}")]
    Dhcproto(String),
}

fn checked_field<'a>(
    field: &'static str,
    value: &'a str,
    size: usize,
) -> Result<&'a [u8], EncodeError> {
    // One byte stays for the NUL: dhcproto's decoder (and many clients) drop a
    // field without one.
    if value.len() >= size || value.as_bytes().contains(&0) {
        return Err(EncodeError::Field {
            field,
            value: value.to_owned(),
            max: size - 1,
        });
    }
    Ok(value.as_bytes())
}

fn bytes_option(code: u8, data: Vec<u8>) -> Result<DhcpOption, EncodeError> {
    if data.len() > 255 {
        return Err(EncodeError::OptionTooLong {
            code,
            len: data.len(),
        });
    }
    Ok(DhcpOption::Unknown(UnknownOption::new(
        OptionCode::from(code),
        data,
    )))
}

/// Encodes a reply with `dhcproto`.
pub fn encode(reply: &Reply) -> Result<Vec<u8>, EncodeError> {
    let mut msg = Message::new_with_id(
        reply.xid,
        reply.ciaddr,
        reply.yiaddr,
        reply.siaddr,
        reply.giaddr,
        &reply.mac.0,
    );
    msg.set_opcode(Opcode::BootReply);
    msg.set_flags(if reply.broadcast {
        Flags::default().set_broadcast()
    } else {
        Flags::default()
    });
    if let Some(sname) = &reply.sname {
        msg.set_sname(checked_field("sname", sname, SNAME.1)?);
    }
    if let Some(file) = &reply.file {
        msg.set_fname(checked_field("file", file, FILE.1)?);
    }
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(match reply.message_type {
        ReplyType::Offer => v4::MessageType::Offer,
        ReplyType::Ack => v4::MessageType::Ack,
        ReplyType::Nak => v4::MessageType::Nak,
    }));
    opts.insert(DhcpOption::ServerIdentifier(reply.server_id));
    if let Some(t) = reply.lease_time {
        opts.insert(DhcpOption::AddressLeaseTime(t));
    }
    if let Some(t) = reply.renewal_time {
        opts.insert(DhcpOption::Renewal(t));
    }
    if let Some(t) = reply.rebinding_time {
        opts.insert(DhcpOption::Rebinding(t));
    }
    if let Some(mask) = reply.subnet_mask {
        opts.insert(DhcpOption::SubnetMask(mask));
    }
    if !reply.routers.is_empty() {
        opts.insert(DhcpOption::Router(reply.routers.clone()));
    }
    if !reply.dns_servers.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(reply.dns_servers.clone()));
    }
    if let Some(d) = &reply.domain_name {
        opts.insert(bytes_option(opt::DOMAIN_NAME, d.as_bytes().to_vec())?);
    }
    if let Some(file) = &reply.file {
        opts.insert(bytes_option(opt::BOOTFILE, file.as_bytes().to_vec())?);
    }
    if let Some(v) = &reply.vendor_class {
        opts.insert(bytes_option(opt::VENDOR_CLASS, v.as_bytes().to_vec())?);
    }
    if reply.ipxe_no_pxedhcp {
        opts.insert(bytes_option(
            opt::IPXE_ENCAP,
            vec![opt::IPXE_NO_PXEDHCP, 1, 1],
        )?);
    }
    if let Some(m) = &reply.message {
        opts.insert(bytes_option(opt::MESSAGE, m.as_bytes().to_vec())?);
    }
    if let Some(r) = &reply.relay_agent_info {
        opts.insert(bytes_option(opt::RELAY_AGENT_INFO, r.clone())?);
    }
    let mut buf = Vec::with_capacity(548);
    msg.encode(&mut Encoder::new(&mut buf))
        .map_err(|e| EncodeError::Dhcproto(e.to_string()))?;
    Ok(buf)
}

fn ip_list(v: &[u8]) -> Vec<Ipv4Addr> {
    v.chunks_exact(4)
        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        .collect()
}

fn string_field(v: Option<&[u8]>) -> Option<String> {
    // dhcproto keeps the NUL that ends the field: strip it.
    v.map(|b| {
        let b = b.strip_suffix(&[0]).unwrap_or(b);
        String::from_utf8_lossy(b).into_owned()
    })
}

/// Decodes a server's reply (tests, and the lab's checks of what was sent).
pub fn decode_reply(datagram: &[u8]) -> Result<Reply, DecodeError> {
    let header = decode_header(datagram)?;
    if header.opcode() != Opcode::BootReply {
        return Err(DecodeError::NotRequest { op: datagram[0] });
    }
    let mac = mac_of(datagram)?;
    let options = read_options(datagram)?;
    let message_type = match message_type(&options)? {
        2 => ReplyType::Offer,
        5 => ReplyType::Ack,
        6 => ReplyType::Nak,
        other => {
            return Err(DecodeError::BadOption {
                code: opt::MESSAGE_TYPE,
                len: usize::from(other),
                expected: "OFFER, ACK or NAK",
            });
        }
    };
    let text = |code| {
        options
            .get(&code)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    Ok(Reply {
        message_type,
        xid: header.xid(),
        broadcast: header.flags().broadcast(),
        mac,
        ciaddr: header.ciaddr(),
        yiaddr: header.yiaddr(),
        siaddr: header.siaddr(),
        giaddr: header.giaddr(),
        sname: string_field(header.sname()),
        file: string_field(header.fname()),
        server_id: ip_option(&options, opt::SERVER_ID)?.ok_or(DecodeError::BadOption {
            code: opt::SERVER_ID,
            len: 0,
            expected: "4",
        })?,
        lease_time: u32_option(&options, opt::LEASE_TIME)?,
        renewal_time: u32_option(&options, opt::RENEWAL)?,
        rebinding_time: u32_option(&options, opt::REBINDING)?,
        subnet_mask: ip_option(&options, opt::SUBNET_MASK)?,
        routers: options
            .get(&opt::ROUTER)
            .map(|v| ip_list(v))
            .unwrap_or_default(),
        dns_servers: options
            .get(&opt::DNS)
            .map(|v| ip_list(v))
            .unwrap_or_default(),
        domain_name: text(opt::DOMAIN_NAME),
        vendor_class: text(opt::VENDOR_CLASS),
        ipxe_no_pxedhcp: options
            .get(&opt::IPXE_ENCAP)
            .is_some_and(|v| v.as_slice() == [opt::IPXE_NO_PXEDHCP, 1, 1]),
        message: text(opt::MESSAGE),
        relay_agent_info: options.get(&opt::RELAY_AGENT_INFO).cloned(),
    })
}
