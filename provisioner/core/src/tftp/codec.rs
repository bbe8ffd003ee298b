//! TFTP packets: bytes in, typed values out, and back (RFC 1350, option
//! extension RFC 2347 with blksize 2348, timeout/tsize 2349, windowsize 7440).
//!
//! Invariant: pure. No sockets, no tokio, no files; decoding never panics on
//! any input (proptest) and never allocates more than the packet's size.

use std::fmt;

/// Largest block size a client may ask for (RFC 2348).
pub const MAX_BLKSIZE: u16 = 65464;
/// Smallest block size a client may ask for (RFC 2348).
pub const MIN_BLKSIZE: u16 = 8;
/// Block size without the option (RFC 1350).
pub const DEFAULT_BLKSIZE: u16 = 512;

/// TFTP opcodes.
mod op {
    pub const RRQ: u16 = 1;
    pub const WRQ: u16 = 2;
    pub const DATA: u16 = 3;
    pub const ACK: u16 = 4;
    pub const ERROR: u16 = 5;
    pub const OACK: u16 = 6;
}

/// Error codes of RFC 1350 and RFC 2347.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotDefined,
    FileNotFound,
    AccessViolation,
    DiskFull,
    IllegalOperation,
    UnknownTransferId,
    FileExists,
    NoSuchUser,
    /// The client refused the options (RFC 2347), e.g. after a tsize probe.
    OptionsRefused,
    Other(u16),
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTransferId => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionsRefused => 8,
            ErrorCode::Other(code) => code,
        }
    }

    pub fn from_code(code: u16) -> Self {
        match code {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionsRefused,
            other => ErrorCode::Other(other),
        }
    }
}

/// Transfer mode of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Octet,
    /// `netascii`: served as octets too (boot files are binary; RFC 1350
    /// conversion is not done). Kept so the server can refuse or log it.
    Netascii,
    Mail,
}

/// The options a client asked for (RFC 2347), as far as the server knows them.
/// Unknown options are dropped, as RFC 2347 requires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOptions {
    pub blksize: Option<u16>,
    /// Seconds (1..=255).
    pub timeout: Option<u8>,
    /// The client sends 0 in a read request to ask for the file size.
    pub tsize: Option<u64>,
    pub windowsize: Option<u16>,
}

impl RequestOptions {
    pub fn is_empty(&self) -> bool {
        *self == RequestOptions::default()
    }
}

/// The options a server acknowledges in its OACK: the same four, with the
/// values granted (RFC 2347 lets the server answer a smaller blksize).
pub type AckedOptions = RequestOptions;

/// A decoded packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Read {
        filename: String,
        mode: Mode,
        options: RequestOptions,
    },
    Write {
        filename: String,
        mode: Mode,
    },
    Data {
        block: u16,
        data: &'a [u8],
    },
    Ack {
        block: u16,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    Oack(AckedOptions),
}

/// Why a datagram is not a valid TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("packet shorter than its opcode")]
    TooShort,
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("{0} field is not NUL-terminated")]
    Unterminated(&'static str),
    #[error("{0} field is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("unknown transfer mode {0:?}")]
    BadMode(String),
    #[error("option {name:?} has an invalid value {value:?}")]
    BadOption { name: String, value: String },
    #[error("an option name has no value")]
    OptionWithoutValue,
    #[error("DATA or ACK packet has a truncated block number")]
    TruncatedBlock,
    #[error("empty file name")]
    EmptyFilename,
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u16(&mut self) -> Option<u16> {
        if self.rest.len() < 2 {
            return None;
        }
        let value = u16::from_be_bytes([self.rest[0], self.rest[1]]);
        self.rest = &self.rest[2..];
        Some(value)
    }

    fn cstr(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let end = self
            .rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(DecodeError::Unterminated(field))?;
        let text =
            std::str::from_utf8(&self.rest[..end]).map_err(|_| DecodeError::NotUtf8(field))?;
        self.rest = &self.rest[end + 1..];
        Ok(text)
    }
}

fn parse_mode(text: &str) -> Result<Mode, DecodeError> {
    match text.to_ascii_lowercase().as_str() {
        "octet" => Ok(Mode::Octet),
        "netascii" => Ok(Mode::Netascii),
        "mail" => Ok(Mode::Mail),
        _ => Err(DecodeError::BadMode(text.to_owned())),
    }
}

fn bad(name: &str, value: &str) -> DecodeError {
    DecodeError::BadOption {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

/// Reads `name\0value\0` pairs until the end of the packet.
fn read_options<'a>(reader: &mut Reader<'a>) -> Result<Vec<(&'a str, &'a str)>, DecodeError> {
    let mut pairs = vec![];
    while !reader.rest.is_empty() {
        let name = reader.cstr("option name")?;
        if reader.rest.is_empty() {
            return Err(DecodeError::OptionWithoutValue);
        }
        let value = reader.cstr("option value")?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

fn request_options(pairs: &[(&str, &str)]) -> Result<RequestOptions, DecodeError> {
    let mut options = RequestOptions::default();
    for (name, value) in pairs {
        match name.to_ascii_lowercase().as_str() {
            "blksize" => {
                // RFC 2348: a server may answer a smaller size than asked; a
                // value below the minimum is an error.
                let size: u32 = value.parse().map_err(|_| bad(name, value))?;
                if size < u32::from(MIN_BLKSIZE) {
                    return Err(bad(name, value));
                }
                options.blksize = Some(size.min(u32::from(MAX_BLKSIZE)) as u16);
            }
            "timeout" => {
                let secs: u8 = value.parse().map_err(|_| bad(name, value))?;
                if secs == 0 {
                    return Err(bad(name, value));
                }
                options.timeout = Some(secs);
            }
            "tsize" => options.tsize = Some(value.parse().map_err(|_| bad(name, value))?),
            "windowsize" => {
                let size: u16 = value.parse().map_err(|_| bad(name, value))?;
                if size == 0 {
                    return Err(bad(name, value));
                }
                options.windowsize = Some(size);
            }
            // RFC 2347: options the server does not know are ignored.
            _ => {}
        }
    }
    Ok(options)
}

/// Decodes one datagram.
pub fn decode(bytes: &[u8]) -> Result<Packet<'_>, DecodeError> {
    let mut reader = Reader { rest: bytes };
    let opcode = reader.u16().ok_or(DecodeError::TooShort)?;
    match opcode {
        op::RRQ | op::WRQ => {
            let filename = reader.cstr("file name")?.to_owned();
            if filename.is_empty() {
                return Err(DecodeError::EmptyFilename);
            }
            let mode = parse_mode(reader.cstr("mode")?)?;
            let pairs = read_options(&mut reader)?;
            if opcode == op::RRQ {
                Ok(Packet::Read {
                    filename,
                    mode,
                    options: request_options(&pairs)?,
                })
            } else {
                Ok(Packet::Write { filename, mode })
            }
        }
        op::DATA => {
            let block = reader.u16().ok_or(DecodeError::TruncatedBlock)?;
            Ok(Packet::Data {
                block,
                data: reader.rest,
            })
        }
        op::ACK => {
            let block = reader.u16().ok_or(DecodeError::TruncatedBlock)?;
            // Trailing bytes after an ACK are tolerated (some clients pad).
            Ok(Packet::Ack { block })
        }
        op::ERROR => {
            let code = ErrorCode::from_code(reader.u16().ok_or(DecodeError::TruncatedBlock)?);
            // Some clients omit the terminating NUL of the message; accept it.
            let message = match reader.rest.iter().position(|b| *b == 0) {
                Some(end) => String::from_utf8_lossy(&reader.rest[..end]).into_owned(),
                None => String::from_utf8_lossy(reader.rest).into_owned(),
            };
            Ok(Packet::Error { code, message })
        }
        op::OACK => Ok(Packet::Oack(request_options(&read_options(&mut reader)?)?)),
        other => Err(DecodeError::UnknownOpcode(other)),
    }
}

fn push_cstr(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(0);
}

fn push_option(out: &mut Vec<u8>, name: &str, value: impl fmt::Display) {
    push_cstr(out, name);
    push_cstr(out, &value.to_string());
}

fn push_options(out: &mut Vec<u8>, options: &RequestOptions) {
    if let Some(v) = options.blksize {
        push_option(out, "blksize", v);
    }
    if let Some(v) = options.timeout {
        push_option(out, "timeout", v);
    }
    if let Some(v) = options.tsize {
        push_option(out, "tsize", v);
    }
    if let Some(v) = options.windowsize {
        push_option(out, "windowsize", v);
    }
}

/// Encodes a packet into `out` (cleared first), reusing its allocation.
pub fn encode_into(packet: &Packet<'_>, out: &mut Vec<u8>) {
    out.clear();
    match packet {
        Packet::Read {
            filename,
            mode,
            options,
        } => {
            out.extend_from_slice(&op::RRQ.to_be_bytes());
            push_cstr(out, filename);
            push_cstr(out, mode_name(*mode));
            push_options(out, options);
        }
        Packet::Write { filename, mode } => {
            out.extend_from_slice(&op::WRQ.to_be_bytes());
            push_cstr(out, filename);
            push_cstr(out, mode_name(*mode));
        }
        Packet::Data { block, data } => {
            out.reserve(4 + data.len());
            out.extend_from_slice(&op::DATA.to_be_bytes());
            out.extend_from_slice(&block.to_be_bytes());
            out.extend_from_slice(data);
        }
        Packet::Ack { block } => {
            out.extend_from_slice(&op::ACK.to_be_bytes());
            out.extend_from_slice(&block.to_be_bytes());
        }
        Packet::Error { code, message } => {
            out.extend_from_slice(&op::ERROR.to_be_bytes());
            out.extend_from_slice(&code.code().to_be_bytes());
            push_cstr(out, &message.replace('\0', " "));
        }
        Packet::Oack(options) => {
            out.extend_from_slice(&op::OACK.to_be_bytes());
            push_options(out, options);
        }
    }
}

/// Encodes a packet into a new buffer.
pub fn encode(packet: &Packet<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(packet, &mut out);
    out
}

/// Writes the 4-byte DATA header for `block` in front of a payload that the
/// caller reads straight into `buf[4..]` (no copy of file data).
pub fn data_header(block: u16) -> [u8; 4] {
    let [a, b] = op::DATA.to_be_bytes();
    let [c, d] = block.to_be_bytes();
    [a, b, c, d]
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Octet => "octet",
        Mode::Netascii => "netascii",
        Mode::Mail => "mail",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_a_pxe_read_request_with_options() {
        let bytes = b"\x00\x01undionly.kpxe\x00octet\x00tsize\x000\x00blksize\x001468\x00windowsize\x008\x00x-unknown\x00y\x00";
        let packet = decode(bytes).unwrap();
        assert_eq!(
            packet,
            Packet::Read {
                filename: "undionly.kpxe".into(),
                mode: Mode::Octet,
                options: RequestOptions {
                    blksize: Some(1468),
                    timeout: None,
                    tsize: Some(0),
                    windowsize: Some(8)
                },
            }
        );
    }

    #[test]
    fn option_names_and_modes_are_case_insensitive() {
        let bytes = b"\x00\x01f\x00OCTET\x00BlkSize\x00100000\x00";
        match decode(bytes).unwrap() {
            Packet::Read { mode, options, .. } => {
                assert_eq!(mode, Mode::Octet);
                // Larger than the RFC maximum: answered with the maximum.
                assert_eq!(options.blksize, Some(MAX_BLKSIZE));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_malformed_requests() {
        assert_eq!(decode(b""), Err(DecodeError::TooShort));
        assert_eq!(decode(b"\x00"), Err(DecodeError::TooShort));
        assert_eq!(decode(b"\x00\x09"), Err(DecodeError::UnknownOpcode(9)));
        assert_eq!(
            decode(b"\x00\x01file"),
            Err(DecodeError::Unterminated("file name"))
        );
        assert_eq!(
            decode(b"\x00\x01\x00octet\x00"),
            Err(DecodeError::EmptyFilename)
        );
        assert!(matches!(
            decode(b"\x00\x01f\x00binary\x00"),
            Err(DecodeError::BadMode(_))
        ));
        assert!(matches!(
            decode(b"\x00\x01f\x00octet\x00blksize\x004\x00"),
            Err(DecodeError::BadOption { .. })
        ));
        assert!(matches!(
            decode(b"\x00\x01f\x00octet\x00timeout\x000\x00"),
            Err(DecodeError::BadOption { .. })
        ));
        assert_eq!(
            decode(b"\x00\x01f\x00octet\x00tsize\x00"),
            Err(DecodeError::OptionWithoutValue)
        );
        assert_eq!(decode(b"\x00\x04\x00"), Err(DecodeError::TruncatedBlock));
    }

    #[test]
    fn error_without_terminator_is_accepted() {
        assert_eq!(
            decode(b"\x00\x05\x00\x08tsize probe").unwrap(),
            Packet::Error {
                code: ErrorCode::OptionsRefused,
                message: "tsize probe".into()
            }
        );
    }

    #[test]
    fn data_header_matches_encoding() {
        let encoded = encode(&Packet::Data {
            block: 0x1234,
            data: b"abc",
        });
        assert_eq!(&encoded[..4], &data_header(0x1234));
        assert_eq!(&encoded[4..], b"abc");
    }

    fn any_options() -> impl Strategy<Value = RequestOptions> {
        (
            proptest::option::of(MIN_BLKSIZE..=MAX_BLKSIZE),
            proptest::option::of(1u8..=255),
            proptest::option::of(any::<u64>()),
            proptest::option::of(1u16..=u16::MAX),
        )
            .prop_map(|(blksize, timeout, tsize, windowsize)| RequestOptions {
                blksize,
                timeout,
                tsize,
                windowsize,
            })
    }

    fn any_packet() -> impl Strategy<Value = (u8, String, RequestOptions, u16, Vec<u8>, u16)> {
        (
            0u8..6,
            "[a-zA-Z0-9_./-]{1,40}",
            any_options(),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..600),
            0u16..9,
        )
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn encode_then_decode_round_trips((kind, name, options, block, data, code) in any_packet()) {
            let packet = match kind {
                0 => Packet::Read { filename: name, mode: Mode::Octet, options },
                1 => Packet::Write { filename: name, mode: Mode::Netascii },
                2 => Packet::Data { block, data: &data },
                3 => Packet::Ack { block },
                4 => Packet::Error { code: ErrorCode::from_code(code), message: name },
                _ => Packet::Oack(options),
            };
            let bytes = encode(&packet);
            prop_assert_eq!(decode(&bytes).unwrap(), packet);
        }
    }
}
