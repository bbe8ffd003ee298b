//! Ethernet MAC addresses: the one type the provisioner (DHCP, site,
//! store, boot scripts) and the agent share.
//!
//! Parsing accepts any address a NIC or a client can put on the wire; the
//! places that need a NIC's own address (nodes.yaml `boot_mac`, the boot
//! script URL, the agent API) use [`Mac::parse_nic`], which also refuses
//! group and all-zero addresses.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// The JSON Schema pattern of a MAC in text form: colon- or dash-separated
/// octets, any case (or Cisco's `5254.000d.0001`).
pub const MAC_PATTERN: &str = concat!(
    "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$",
    "|^[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2}){5}$",
    "|^[0-9A-Fa-f]{4}\\.[0-9A-Fa-f]{4}\\.[0-9A-Fa-f]{4}$"
);

/// An Ethernet hardware address. Parses `52:54:00:0D:00:01`,
/// `52-54-00-0d-00-01` and `5254.000d.0001`; displays (and serializes as)
/// `52:54:00:0d:00:01`, the form of `nodes.yaml`, the store and the per-MAC
/// iPXE script URL.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

/// Why a string is not a usable MAC address; the message says what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// Not six hex octets.
    #[error(
        "invalid MAC address {0:?}: write six hex octets separated by ':', e.g. 52:54:00:0d:00:01"
    )]
    Syntax(String),
    /// A group (multicast or broadcast) address where a NIC's is needed.
    #[error("{0} is a multicast/broadcast address, not a NIC's MAC: check the value")]
    Multicast(Mac),
    /// All zeros where a NIC's address is needed.
    #[error("00:00:00:00:00:00 is not a NIC's MAC: check the value")]
    Zero,
}

impl Mac {
    /// The all-zero address.
    pub const ZERO: Mac = Mac([0; 6]);

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The group bit (I/G, bit 0 of the first octet) is set: a multicast or
    /// broadcast address, never a NIC's own.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// Parses `text` and refuses what cannot be a NIC's own address (a group
    /// address, all zeros).
    pub fn parse_nic(text: &str) -> Result<Mac, MacError> {
        let mac: Mac = text.parse()?;
        if mac == Mac::ZERO {
            return Err(MacError::Zero);
        }
        if mac.is_multicast() {
            return Err(MacError::Multicast(mac));
        }
        Ok(mac)
    }
}

impl From<[u8; 6]> for Mac {
    fn from(octets: [u8; 6]) -> Self {
        Mac(octets)
    }
}

impl FromStr for Mac {
    type Err = MacError;

    /// Any address, group bit included (what a client sends is what the
    /// store keeps); see [`Mac::parse_nic`] for a NIC's own.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || MacError::Syntax(s.to_owned());
        let bytes = s.as_bytes();
        let hex: Vec<u8> = match bytes.len() {
            17 => {
                let sep = bytes[2];
                if sep != b':' && sep != b'-' {
                    return Err(syntax());
                }
                let parts: Vec<&[u8]> = bytes.split(|&b| b == sep).collect();
                if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
                    return Err(syntax());
                }
                parts.concat()
            }
            14 => {
                let parts: Vec<&[u8]> = bytes.split(|&b| b == b'.').collect();
                if parts.len() != 3 || parts.iter().any(|p| p.len() != 4) {
                    return Err(syntax());
                }
                parts.concat()
            }
            _ => return Err(syntax()),
        };
        let digit = |b: u8| (b as char).to_digit(16).ok_or_else(syntax);
        let mut octets = [0u8; 6];
        for (octet, pair) in octets.iter_mut().zip(hex.chunks_exact(2)) {
            // Two hex digits make at most 0xff.
            *octet = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(Mac(octets))
    }
}

impl fmt::Display for Mac {
    /// Lowercase, colon-separated: `52:54:00:aa:00:01`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Mac {
    fn schema_name() -> Cow<'static, str> {
        "Mac".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An Ethernet MAC address, e.g. 52:54:00:0d:00:01 (any case; '-' separators accepted).",
            "type": "string",
            "pattern": MAC_PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_displays_lowercase_colons() {
        for input in [
            "52:54:00:0d:00:01",
            "52:54:00:0D:00:01",
            "52-54-00-0d-00-01",
            "52-54-00-0D-00-01",
            "5254.000d.0001",
        ] {
            let mac: Mac = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(mac.to_string(), "52:54:00:0d:00:01", "{input}");
            assert_eq!(format!("{mac:?}"), "52:54:00:0d:00:01", "{input}");
            assert_eq!(mac.octets(), [0x52, 0x54, 0, 0x0d, 0, 1]);
        }
    }

    #[test]
    fn refuses_what_is_not_six_octets() {
        for input in [
            "",
            "52:54:00:0d:00",
            "52:54:00:0d:00:01:02",
            "52:54:00:0d:00:0g",
            "52:54-00:0d:00:01",
            "5:254:00:0d:00:01",
            "+2:54:00:0d:00:01",
            "52:54:00:0d:00:é",
            "5254.000d.000g",
            " 52:54:00:0d:00:01",
        ] {
            let err = input.parse::<Mac>().unwrap_err();
            assert_eq!(err, MacError::Syntax(input.to_owned()));
            assert!(
                err.to_string().contains("write six hex octets"),
                "{input:?}: {err}"
            );
        }
    }

    #[test]
    fn group_and_zero_addresses_parse_but_are_not_a_nics() {
        let cases = [
            ("01:00:5e:00:00:01", "multicast"),
            ("ff:ff:ff:ff:ff:ff", "multicast"),
            ("00:00:00:00:00:00", "00:00:00:00:00:00 is not"),
        ];
        for (input, expected) in cases {
            assert!(input.parse::<Mac>().is_ok(), "{input}");
            let err = Mac::parse_nic(input).unwrap_err().to_string();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
        assert!(Mac([1, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!Mac([0x52, 0x54, 0, 0, 0, 1]).is_multicast());
        assert_eq!(
            Mac::parse_nic("52:54:00:AA:00:01"),
            Ok(Mac([0x52, 0x54, 0, 0xaa, 0, 1]))
        );
    }

    #[test]
    fn serde_is_the_lowercase_string_and_the_schema_has_its_pattern() {
        let mac: Mac = serde_json::from_str("\"52-54-00-0D-00-03\"").unwrap();
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"52:54:00:0d:00:03\""
        );
        let err = serde_json::from_str::<Mac>("\"52:54\"").unwrap_err();
        assert!(err.to_string().contains("invalid MAC address"), "{err}");

        let schema = serde_json::to_value(schemars::schema_for!(Mac)).unwrap();
        assert_eq!(schema["type"], "string");
        let pattern = regex::Regex::new(schema["pattern"].as_str().unwrap()).unwrap();
        for ok in ["52:54:00:0d:00:01", "52-54-00-0D-00-01", "5254.000d.0001"] {
            assert!(pattern.is_match(ok), "{ok}");
            assert!(ok.parse::<Mac>().is_ok(), "{ok}");
        }
        for bad in ["52:54:00:0d:00", "52:54:00:0d:00:0g", "52:54-00:0d:00:01"] {
            assert!(!pattern.is_match(bad), "{bad}");
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn display_parses_back(octets in proptest::prelude::any::<[u8; 6]>()) {
            let mac = Mac(octets);
            proptest::prop_assert_eq!(mac.to_string().parse::<Mac>(), Ok(mac));
            proptest::prop_assert_eq!(mac.to_string().to_uppercase().replace(':', "-").parse::<Mac>(), Ok(mac));
        }

        /// The parser and the schema's pattern accept the same strings.
        #[test]
        fn parser_agrees_with_the_schema_pattern(text in "[0-9a-gA-G:.-]{0,18}|\\PC{0,20}") {
            let pattern = regex::Regex::new(MAC_PATTERN).unwrap();
            proptest::prop_assert_eq!(text.parse::<Mac>().is_ok(), pattern.is_match(&text), "{:?}", text);
        }
    }
}
