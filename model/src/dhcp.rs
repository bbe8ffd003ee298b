//! DHCPv4 datagrams, both sides: the server decodes a client's bytes into a
//! typed [`Request`] ([`decode`]) and encodes a typed [`Reply`] ([`encode`]);
//! a client (the agent in the ramdisk) encodes its [`Request`]
//! ([`encode_request`]) and decodes the server's OFFER/ACK/NAK
//! ([`decode_reply`]). RFC 2131, options RFC 2132, PXE options RFC 4578.
//! `provisioner-core` re-exports this module as `dhcp::codec`.
//!
//! Invariant: pure. No sockets, no tokio, no clock; decoding never panics on
//! any input, and both directions round-trip (proptests).
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
use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Flags, Message, Opcode, OptionCode, UnknownOption};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use crate::net::Mac;

/// The DHCP magic cookie (RFC 2131 section 3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Offset of the options area: 236 bytes of fixed header, then the cookie.
const OPTIONS_OFFSET: usize = 240;
/// Offset and size of the `sname` and `file` header fields.
const SNAME: (usize, usize) = (44, 64);
const FILE: (usize, usize) = (108, 128);
/// Messages are padded to this size (BOOTP, RFC 1542).
const MIN_MESSAGE: usize = 300;

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

    fn to_u8(self) -> u8 {
        match self {
            Self::Discover => 1,
            Self::Request => 3,
            Self::Decline => 4,
            Self::Release => 7,
            Self::Inform => 8,
            Self::Other(other) => other,
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
    /// A client's message of `message_type` from `mac` with nothing else set
    /// (the agent's client fills in what its state needs).
    pub fn new(message_type: ClientMessage, xid: u32, mac: Mac) -> Self {
        Request {
            message_type,
            xid,
            secs: 0,
            broadcast: false,
            hops: 0,
            mac,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            requested_ip: None,
            server_id: None,
            client_arch: None,
            vendor_class: None,
            user_class: None,
            client_id: None,
            hostname: None,
            parameter_request_list: Vec::new(),
            relay_agent_info: None,
        }
    }

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
    #[error("op {op} is not BOOTREPLY (2)")]
    NotReply { op: u8 },
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
    // dhcproto reads the fixed header only: its option decoder panics on some
    // inputs (a `debug_assert!` on option 152's length, `len - 1` on option
    // 151), so it never sees the options; they are walked here.
    Message::decode(&mut Decoder::new(&datagram[..OPTIONS_OFFSET]))
        .map_err(|e| DecodeError::Header(e.to_string()))
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

fn put_option(buf: &mut Vec<u8>, code: u8, value: &[u8]) -> Result<(), EncodeError> {
    let len = u8::try_from(value.len()).map_err(|_| EncodeError::OptionTooLong {
        code,
        len: value.len(),
    })?;
    buf.extend_from_slice(&[code, len]);
    buf.extend_from_slice(value);
    Ok(())
}

/// Encodes a client's [`Request`] (the agent's DHCP client): the inverse of
/// [`decode`]. Written here, not by `dhcproto`, so that every field
/// [`decode`] reads comes back as it was (proptest). Options that [`decode`]
/// refuses empty (12, 60, 61, 77) are refused empty here too.
pub fn encode_request(request: &Request) -> Result<Vec<u8>, EncodeError> {
    let mut buf = Vec::with_capacity(MIN_MESSAGE);
    // op BOOTREQUEST, htype Ethernet, hlen 6.
    buf.extend_from_slice(&[1, 1, 6, request.hops]);
    buf.extend_from_slice(&request.xid.to_be_bytes());
    buf.extend_from_slice(&request.secs.to_be_bytes());
    let flags: u16 = if request.broadcast { 0x8000 } else { 0 };
    buf.extend_from_slice(&flags.to_be_bytes());
    buf.extend_from_slice(&request.ciaddr.octets());
    // yiaddr and siaddr: the server's to fill.
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(&request.giaddr.octets());
    buf.extend_from_slice(&request.mac.octets());
    // The rest of chaddr, sname and file stay zero.
    buf.resize(OPTIONS_OFFSET - MAGIC_COOKIE.len(), 0);
    buf.extend_from_slice(&MAGIC_COOKIE);

    put_option(&mut buf, opt::MESSAGE_TYPE, &[request.message_type.to_u8()])?;
    let nonempty = [
        (opt::CLIENT_ID, &request.client_id),
        (opt::VENDOR_CLASS, &request.vendor_class),
        (opt::USER_CLASS, &request.user_class),
    ];
    let hostname = request.hostname.as_ref().map(|h| h.as_bytes().to_vec());
    for (code, value) in nonempty.into_iter().chain([(opt::HOSTNAME, &hostname)]) {
        match value.as_deref() {
            None => {}
            Some([]) => return Err(EncodeError::EmptyOption { code }),
            Some(v) => put_option(&mut buf, code, v)?,
        }
    }
    if let Some(ip) = request.requested_ip {
        put_option(&mut buf, opt::REQUESTED_IP, &ip.octets())?;
    }
    if let Some(ip) = request.server_id {
        put_option(&mut buf, opt::SERVER_ID, &ip.octets())?;
    }
    if !request.parameter_request_list.is_empty() {
        put_option(
            &mut buf,
            opt::PARAMETER_REQUEST_LIST,
            &request.parameter_request_list,
        )?;
    }
    if let Some(arch) = request.client_arch {
        put_option(&mut buf, opt::CLIENT_ARCH, &arch.to_be_bytes())?;
    }
    // Option 82 last (RFC 3046).
    if let Some(r) = &request.relay_agent_info {
        put_option(&mut buf, opt::RELAY_AGENT_INFO, r)?;
    }
    buf.push(255);
    if buf.len() < MIN_MESSAGE {
        buf.resize(MIN_MESSAGE, 0);
    }
    Ok(buf)
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

/// Why a message cannot be encoded (for a reply, a configuration problem: a
/// boot file name or URL too long for its field).
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
    #[error("option {code} is empty: leave it out or give it a value")]
    EmptyOption { code: u8 },
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
    let mut buf = Vec::with_capacity(548);
    msg.encode(&mut Encoder::new(&mut buf))
        .map_err(|e| EncodeError::Dhcproto(e.to_string()))?;
    // Option 82 is appended here, last as RFC 3046 wants: dhcproto 0.15
    // writes an option 82 given as raw bytes twice.
    if let Some(r) = &reply.relay_agent_info {
        let len = u8::try_from(r.len()).map_err(|_| EncodeError::OptionTooLong {
            code: opt::RELAY_AGENT_INFO,
            len: r.len(),
        })?;
        if buf.last() == Some(&255) {
            buf.pop();
        }
        buf.extend_from_slice(&[opt::RELAY_AGENT_INFO, len]);
        buf.extend_from_slice(r);
        buf.push(255);
    }
    // BOOTP's minimum message size (RFC 1542 section 2.1): some relays and
    // old PXE ROMs drop shorter messages. Pad bytes after End.
    if buf.len() < MIN_MESSAGE {
        buf.resize(MIN_MESSAGE, 0);
    }
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
        return Err(DecodeError::NotReply { op: datagram[0] });
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

/// Hand-built request datagrams for tests (here and, with the `testing`
/// feature, in `provisioner-core`'s DHCP server tests).
#[cfg(any(test, feature = "testing"))]
pub mod build {
    use std::net::Ipv4Addr;

    pub const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0x00, 0x01];

    /// A BOOTREQUEST: header fields, then `options` as raw TLVs (or raw bytes
    /// when the code is `None`), then End.
    #[derive(Debug, Clone)]
    pub struct Packet {
        pub op: u8,
        pub htype: u8,
        pub hlen: u8,
        pub hops: u8,
        pub xid: u32,
        pub flags: u16,
        pub ciaddr: Ipv4Addr,
        pub giaddr: Ipv4Addr,
        pub mac: [u8; 6],
        pub file: [u8; 128],
        pub options: Vec<u8>,
    }

    impl Packet {
        /// A request of `message_type` (option 53) from [`MAC`].
        pub fn new(message_type: u8) -> Self {
            Packet {
                op: 1,
                htype: 1,
                hlen: 6,
                hops: 0,
                xid: 0x1234_5678,
                flags: 0,
                ciaddr: Ipv4Addr::UNSPECIFIED,
                giaddr: Ipv4Addr::UNSPECIFIED,
                mac: MAC,
                file: [0; 128],
                options: Vec::new(),
            }
            .opt(53, &[message_type])
        }

        pub fn opt(mut self, code: u8, value: &[u8]) -> Self {
            self.options.push(code);
            self.options.push(value.len() as u8);
            self.options.extend_from_slice(value);
            self
        }

        pub fn raw(mut self, bytes: &[u8]) -> Self {
            self.options.extend_from_slice(bytes);
            self
        }

        pub fn bytes(&self) -> Vec<u8> {
            let mut b = vec![self.op, self.htype, self.hlen, self.hops];
            b.extend_from_slice(&self.xid.to_be_bytes());
            b.extend_from_slice(&[0, 4]); // secs
            b.extend_from_slice(&self.flags.to_be_bytes());
            b.extend_from_slice(&self.ciaddr.octets());
            b.extend_from_slice(&[0; 8]); // yiaddr, siaddr
            b.extend_from_slice(&self.giaddr.octets());
            b.extend_from_slice(&self.mac);
            b.extend_from_slice(&[0; 10]);
            b.extend_from_slice(&[0; 64]);
            b.extend_from_slice(&self.file);
            b.extend_from_slice(&super::MAGIC_COOKIE);
            b.extend_from_slice(&self.options);
            b.push(255);
            b
        }
    }

    pub const PRL: &[u8] = &[1, 3, 6, 12, 15, 43, 60, 66, 67, 93, 175];

    pub fn bios_pxe() -> Packet {
        Packet::new(1)
            .opt(57, &[5, 192])
            .opt(93, &[0, 0])
            .opt(94, &[1, 2, 1])
            .opt(97, &[0; 17])
            .opt(55, PRL)
            .opt(60, b"PXEClient:Arch:00000:UNDI:002001")
    }

    pub fn uefi_pxe() -> Packet {
        Packet::new(1)
            .opt(55, PRL)
            .opt(93, &[0, 7])
            .opt(94, &[1, 3, 16])
            .opt(60, b"PXEClient:Arch:00007:UNDI:003016")
    }

    pub fn http_boot() -> Packet {
        Packet::new(1)
            .opt(55, PRL)
            .opt(93, &[0, 16])
            .opt(60, b"HTTPClient:Arch:00016:UNDI:003001")
    }

    pub fn ipxe() -> Packet {
        Packet::new(1)
            .opt(61, &[1, 0x52, 0x54, 0x00, 0xaa, 0x00, 0x01])
            .opt(12, b"node1")
            .opt(175, &[177, 5, 1, 0x10, 0xec, 0x81, 0x39, 19, 1, 1])
            .opt(77, b"iPXE")
            .opt(93, &[0, 0])
            .opt(60, b"PXEClient:Arch:00000:UNDI:002001")
            .opt(55, PRL)
    }

    /// Ordinary Linux dhclient-like DISCOVER.
    pub fn ordinary() -> Packet {
        Packet::new(1)
            .opt(55, &[1, 3, 6, 15, 28])
            .opt(12, b"laptop")
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use proptest::prelude::*;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);

    #[test]
    fn decodes_the_boot_clients() {
        struct Case {
            name: &'static str,
            packet: Packet,
            arch: Option<u16>,
            vendor: Option<&'static [u8]>,
            ipxe: bool,
        }
        let cases = [
            Case {
                name: "BIOS PXE",
                packet: bios_pxe(),
                arch: Some(0),
                vendor: Some(b"PXEClient:Arch:00000:UNDI:002001"),
                ipxe: false,
            },
            Case {
                name: "UEFI PXE",
                packet: uefi_pxe(),
                arch: Some(7),
                vendor: Some(b"PXEClient:Arch:00007:UNDI:003016"),
                ipxe: false,
            },
            Case {
                name: "HTTP boot",
                packet: http_boot(),
                arch: Some(16),
                vendor: Some(b"HTTPClient:Arch:00016:UNDI:003001"),
                ipxe: false,
            },
            Case {
                name: "iPXE",
                packet: ipxe(),
                arch: Some(0),
                vendor: Some(b"PXEClient:Arch:00000:UNDI:002001"),
                ipxe: true,
            },
            Case {
                name: "ordinary",
                packet: ordinary(),
                arch: None,
                vendor: None,
                ipxe: false,
            },
        ];
        for case in cases {
            let r = decode(&case.packet.bytes()).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(r.message_type, ClientMessage::Discover, "{}", case.name);
            assert_eq!(r.xid, 0x1234_5678, "{}", case.name);
            assert_eq!(r.mac, Mac(MAC), "{}", case.name);
            assert_eq!(r.client_arch, case.arch, "{}", case.name);
            assert_eq!(r.vendor_class.as_deref(), case.vendor, "{}", case.name);
            assert_eq!(r.is_ipxe(), case.ipxe, "{}", case.name);
            assert!(!r.parameter_request_list.is_empty(), "{}", case.name);
        }
        let r = decode(&ipxe().bytes()).unwrap();
        assert_eq!(r.hostname.as_deref(), Some("node1"));
        assert_eq!(
            r.client_id.as_deref(),
            Some(&[1, 0x52, 0x54, 0x00, 0xaa, 0x00, 0x01][..])
        );
        assert_eq!(r.mac.to_string(), "52:54:00:aa:00:01");
    }

    #[test]
    fn decodes_a_relayed_request() {
        let mut p = Packet::new(3)
            .opt(50, &[10, 213, 1, 20])
            .opt(54, &[10, 213, 0, 1])
            .opt(82, &[1, 4, b'e', b't', b'h', b'0']);
        p.giaddr = Ipv4Addr::new(10, 213, 1, 1);
        p.hops = 1;
        p.flags = 0x8000;
        let r = decode(&p.bytes()).unwrap();
        assert_eq!(r.message_type, ClientMessage::Request);
        assert_eq!(r.giaddr, Ipv4Addr::new(10, 213, 1, 1));
        assert_eq!(r.hops, 1);
        assert!(r.broadcast);
        assert_eq!(r.requested_ip, Some(Ipv4Addr::new(10, 213, 1, 20)));
        assert_eq!(r.server_id, Some(SERVER));
        assert_eq!(
            r.relay_agent_info.as_deref(),
            Some(&[1, 4, b'e', b't', b'h', b'0'][..])
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let mut not_request = bios_pxe();
        not_request.op = 2;
        let mut token_ring = bios_pxe();
        token_ring.htype = 6;
        let mut bad_cookie = bios_pxe().bytes();
        bad_cookie[236] = 0;
        type Check = fn(&DecodeError) -> bool;
        let cases: Vec<(&str, Vec<u8>, Check)> = vec![
            ("empty", vec![], |e| {
                matches!(e, DecodeError::TooShort { len: 0 })
            }),
            ("header only", vec![1; 239], |e| {
                matches!(e, DecodeError::TooShort { .. })
            }),
            ("bad cookie", bad_cookie, |e| {
                matches!(e, DecodeError::BadCookie { .. })
            }),
            ("op 2", not_request.bytes(), |e| {
                matches!(e, DecodeError::NotRequest { op: 2 })
            }),
            ("token ring", token_ring.bytes(), |e| {
                matches!(e, DecodeError::UnsupportedHardware { htype: 6, hlen: 6 })
            }),
            (
                "no type",
                Packet {
                    options: vec![],
                    ..bios_pxe()
                }
                .bytes(),
                |e| *e == DecodeError::NoMessageType,
            ),
            (
                "type of 2 bytes",
                Packet {
                    options: vec![53, 2, 1, 1],
                    ..bios_pxe()
                }
                .bytes(),
                |e| {
                    matches!(
                        e,
                        DecodeError::BadOption {
                            code: 53,
                            len: 2,
                            ..
                        }
                    )
                },
            ),
            ("arch of 3 bytes", bios_pxe().opt(93, &[0]).bytes(), |e| {
                // 93 repeated: concatenated to 3 bytes (RFC 3396), not a list of u16.
                matches!(
                    e,
                    DecodeError::BadOption {
                        code: 93,
                        len: 3,
                        ..
                    }
                )
            }),
            (
                "option without length",
                Packet {
                    options: vec![53, 1, 1, 60],
                    ..bios_pxe()
                }
                .bytes()[..=243]
                    .to_vec(),
                |e| matches!(e, DecodeError::Malformed { .. }),
            ),
        ];
        for (name, bytes, want) in cases {
            let got = decode(&bytes);
            assert!(got.as_ref().is_err_and(want), "{name}: {got:?}");
        }
    }

    /// An option whose length runs past the end, in the middle of the
    /// options: dhcproto returns the options before it and nothing after;
    /// we refuse the packet.
    #[test]
    fn a_malformed_option_in_the_middle_is_refused() {
        let mut bytes = Packet::new(1).opt(93, &[0, 7]).bytes();
        bytes.pop(); // End
        bytes.extend_from_slice(&[60, 200, b'P', b'X', b'E']);
        let dhcproto = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert!(
            dhcproto
                .opts()
                .get(OptionCode::ClientSystemArchitecture)
                .is_some()
        );
        assert!(dhcproto.opts().get(OptionCode::ClassIdentifier).is_none());
        let err = decode(&bytes).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Malformed {
                offset: 247,
                reason: "option 60 of length 200 runs past the end (3 bytes left)".into()
            }
        );

        // A well-formed TLV that dhcproto cannot read (option 50 of 3 bytes)
        // also makes it drop every later option (here 60 and 93); we name it.
        let bytes = Packet::new(1)
            .opt(50, &[10, 0, 0])
            .opt(60, b"PXEClient")
            .opt(93, &[0, 7])
            .bytes();
        let dhcproto = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert!(dhcproto.opts().get(OptionCode::ClassIdentifier).is_none());
        assert_eq!(
            decode(&bytes).unwrap_err(),
            DecodeError::BadOption {
                code: 50,
                len: 3,
                expected: "4"
            }
        );
    }

    /// dhcproto's option decoder panics on this (debug builds): it must never
    /// see a client's options.
    #[test]
    fn options_dhcproto_panics_on_are_read_here() {
        let bytes = Packet::new(1).opt(152, &[1]).opt(151, &[]).bytes();
        let r = decode(&bytes).unwrap();
        assert_eq!(r.message_type, ClientMessage::Discover);
        let dhcproto = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(&bytes)));
        // The panic is a `debug_assert!`: only debug builds (tests) see it.
        assert_eq!(dhcproto.is_err(), cfg!(debug_assertions));
    }

    #[test]
    fn reads_options_overloaded_into_file() {
        let mut p = Packet::new(1).opt(52, &[1]);
        p.file[..6].copy_from_slice(&[93, 2, 0, 9, 255, 0]);
        let r = decode(&p.bytes()).unwrap();
        assert_eq!(r.client_arch, Some(9));
    }

    fn offer() -> Reply {
        let request = decode(&bios_pxe().bytes()).unwrap();
        let mut reply = Reply::to(&request, ReplyType::Offer, SERVER);
        reply.yiaddr = Ipv4Addr::new(10, 213, 0, 100);
        reply.siaddr = SERVER;
        reply.file = Some("undionly.kpxe".into());
        reply.sname = Some("provisioner".into());
        reply.lease_time = Some(3600);
        reply.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
        reply.vendor_class = Some("PXEClient".into());
        reply.ipxe_no_pxedhcp = true;
        reply
    }

    #[test]
    fn encodes_file_and_sname_without_the_nul_dhcproto_keeps() {
        let reply = offer();
        let bytes = encode(&reply).unwrap();
        assert_eq!(&bytes[108..121], b"undionly.kpxe");
        assert!(bytes[121..236].iter().all(|&b| b == 0));
        assert_eq!(&bytes[44..55], b"provisioner");
        // dhcproto's own view keeps the NUL; decode_reply strips it.
        let dhcproto = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(dhcproto.fname(), Some(&b"undionly.kpxe\0"[..]));
        assert_eq!(decode_reply(&bytes).unwrap(), reply);
        // Option 67 carries the same name, option 175 the no-pxedhcp flag.
        let needle = [67, 13];
        let at = bytes.windows(2).position(|w| w == needle).unwrap();
        assert_eq!(&bytes[at + 2..at + 15], b"undionly.kpxe");
        assert!(bytes[240..].windows(5).any(|w| w == [175, 3, 176, 1, 1]));
        // A short NAK is padded to BOOTP's 300 bytes.
        let nak = Reply::to(
            &decode(&bios_pxe().bytes()).unwrap(),
            ReplyType::Nak,
            SERVER,
        );
        let bytes = encode(&nak).unwrap();
        assert_eq!(bytes.len(), 300);
        assert_eq!(decode_reply(&bytes).unwrap(), nak);
    }

    #[test]
    fn refuses_names_that_leave_no_room_for_the_nul() {
        let mut reply = offer();
        reply.file = Some("f".repeat(127));
        assert!(encode(&reply).is_ok());
        reply.file = Some("f".repeat(128));
        assert!(matches!(
            encode(&reply),
            Err(EncodeError::Field {
                field: "file",
                max: 127,
                ..
            })
        ));
        reply.file = Some("a\0b".into());
        assert!(matches!(
            encode(&reply),
            Err(EncodeError::Field { field: "file", .. })
        ));
        let mut reply = offer();
        reply.sname = Some("s".repeat(64));
        assert!(matches!(
            encode(&reply),
            Err(EncodeError::Field {
                field: "sname",
                max: 63,
                ..
            })
        ));
    }

    /// The client side against the server side: a DISCOVER built with
    /// [`Request::new`] + [`encode_request`] reads back with the server's
    /// [`decode`]; the server's OFFER/ACK (options 1, 3, 6, 51, 54, 58, 59)
    /// and NAK read back with [`decode_reply`].
    #[test]
    fn a_client_exchange_round_trips_through_both_sides() {
        let mac = Mac([0x52, 0x54, 0, 0xaa, 0, 1]);
        let mut discover = Request::new(ClientMessage::Discover, 0x1234, mac);
        discover.broadcast = true;
        discover.vendor_class = Some(b"node-agent".to_vec());
        discover.parameter_request_list = vec![1, 3, 6, 51, 58, 59];
        let bytes = encode_request(&discover).unwrap();
        assert_eq!(bytes.len(), MIN_MESSAGE);
        let seen = decode(&bytes).unwrap();
        assert_eq!(seen, discover);
        assert!(seen.vendor_class_is("node-agent"));

        let offered = Ipv4Addr::new(10, 213, 0, 100);
        let mut offer = Reply::to(&seen, ReplyType::Offer, SERVER);
        offer.yiaddr = offered;
        offer.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
        offer.routers = vec![SERVER];
        offer.dns_servers = vec![Ipv4Addr::new(10, 213, 0, 53), SERVER];
        offer.lease_time = Some(600);
        offer.renewal_time = Some(300);
        offer.rebinding_time = Some(525);
        let got = decode_reply(&encode(&offer).unwrap()).unwrap();
        assert_eq!(got, offer);
        assert_eq!(got.mac, mac);
        assert!(got.broadcast);

        let mut request = Request::new(ClientMessage::Request, 0x1234, mac);
        request.broadcast = true;
        request.requested_ip = Some(offered);
        request.server_id = Some(SERVER);
        let seen = decode(&encode_request(&request).unwrap()).unwrap();
        assert_eq!(seen, request);
        let ack = Reply {
            message_type: ReplyType::Ack,
            ..offer.clone()
        };
        assert_eq!(decode_reply(&encode(&ack).unwrap()).unwrap(), ack);
        let mut nak = Reply::to(&seen, ReplyType::Nak, SERVER);
        nak.message = Some("address in use".into());
        assert_eq!(decode_reply(&encode(&nak).unwrap()).unwrap(), nak);

        // Each side refuses the other's direction, by name.
        assert_eq!(
            decode_reply(&encode_request(&request).unwrap()),
            Err(DecodeError::NotReply { op: 1 })
        );
        assert_eq!(
            decode(&encode(&nak).unwrap()),
            Err(DecodeError::NotRequest { op: 2 })
        );
    }

    #[test]
    fn encode_request_refuses_what_decode_would() {
        let mac = Mac(MAC);
        let mut empty = Request::new(ClientMessage::Discover, 1, mac);
        empty.hostname = Some(String::new());
        assert_eq!(
            encode_request(&empty),
            Err(EncodeError::EmptyOption {
                code: opt::HOSTNAME
            })
        );
        let mut long = Request::new(ClientMessage::Discover, 1, mac);
        long.client_id = Some(vec![1; 256]);
        assert_eq!(
            encode_request(&long),
            Err(EncodeError::OptionTooLong {
                code: opt::CLIENT_ID,
                len: 256
            })
        );
    }

    fn ip() -> impl Strategy<Value = Ipv4Addr> {
        any::<u32>().prop_map(Ipv4Addr::from)
    }

    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[a-zA-Z0-9:/._-]{{1,{max}}}")).unwrap()
    }

    prop_compose! {
        fn reply()(
            message_type in prop_oneof![Just(ReplyType::Offer), Just(ReplyType::Ack), Just(ReplyType::Nak)],
            xid in any::<u32>(), broadcast in any::<bool>(), mac in any::<[u8; 6]>(),
            (ciaddr, yiaddr, siaddr, giaddr, server_id) in (ip(), ip(), ip(), ip(), ip()),
            sname in proptest::option::of(text(63)), file in proptest::option::of(text(127)),
            times in proptest::option::of((any::<u32>(), any::<u32>(), any::<u32>())),
            subnet_mask in proptest::option::of(ip()),
            routers in proptest::collection::vec(ip(), 0..4),
            dns_servers in proptest::collection::vec(ip(), 0..4),
            domain_name in proptest::option::of(text(60)),
            vendor_class in proptest::option::of(text(40)),
            ipxe_no_pxedhcp in any::<bool>(),
            message in proptest::option::of(text(60)),
            relay_agent_info in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..40)),
        ) -> Reply {
            Reply {
                message_type, xid, broadcast, mac: Mac(mac), ciaddr, yiaddr, siaddr, giaddr,
                sname, file, server_id,
                lease_time: times.map(|t| t.0), renewal_time: times.map(|t| t.1),
                rebinding_time: times.map(|t| t.2),
                subnet_mask, routers, dns_servers, domain_name, vendor_class, ipxe_no_pxedhcp,
                message, relay_agent_info,
            }
        }
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 1..max)
    }

    prop_compose! {
        fn request()(
            message_type in any::<u8>().prop_map(ClientMessage::from_u8),
            xid in any::<u32>(), secs in any::<u16>(), broadcast in any::<bool>(),
            hops in any::<u8>(), mac in any::<[u8; 6]>(), (ciaddr, giaddr) in (ip(), ip()),
            requested_ip in proptest::option::of(ip()), server_id in proptest::option::of(ip()),
            client_arch in proptest::option::of(any::<u16>()),
            vendor_class in proptest::option::of(bytes(40)),
            user_class in proptest::option::of(bytes(20)),
            client_id in proptest::option::of(bytes(20)),
            hostname in proptest::option::of(text(60)),
            parameter_request_list in proptest::collection::vec(any::<u8>(), 0..20),
            relay_agent_info in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        ) -> Request {
            Request {
                message_type, xid, secs, broadcast, hops, mac: Mac(mac), ciaddr, giaddr,
                requested_ip, server_id, client_arch, vendor_class, user_class, client_id,
                hostname, parameter_request_list, relay_agent_info,
            }
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
            let _ = decode_reply(&bytes);
        }

        /// Arbitrary options after a valid header: the interesting part.
        #[test]
        fn decode_never_panics_on_random_options(
            options in proptest::collection::vec(any::<u8>(), 0..400),
            file in proptest::collection::vec(any::<u8>(), 128),
        ) {
            let mut p = Packet::new(1).raw(&options);
            p.file.copy_from_slice(&file);
            let _ = decode(&p.bytes());
        }

        #[test]
        fn replies_round_trip(reply in reply()) {
            let bytes = encode(&reply).unwrap();
            prop_assert_eq!(decode_reply(&bytes).unwrap(), reply);
        }

        /// What a client encodes, the server decodes unchanged.
        #[test]
        fn requests_round_trip(request in request()) {
            let bytes = encode_request(&request).unwrap();
            prop_assert_eq!(decode(&bytes).unwrap(), request);
        }
    }
}
