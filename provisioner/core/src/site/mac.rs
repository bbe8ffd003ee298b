//! Ethernet MAC addresses, shown in lowercase colon form.

use std::fmt;
use std::str::FromStr;

/// A unicast Ethernet MAC address. Parses `52:54:00:0D:00:01`,
/// `52-54-00-0d-00-01` and `5254.000d.0001`; displays `52:54:00:0d:00:01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

/// Why a string is not a usable MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacAddrError {
    /// Not six hex octets.
    #[error(
        "invalid MAC address {0:?}: write six hex octets separated by ':', e.g. 52:54:00:0d:00:01"
    )]
    Syntax(String),
    /// Group (multicast/broadcast) address: no NIC boots from it.
    #[error("{0} is a multicast/broadcast address, not a NIC's MAC: check the value")]
    Multicast(String),
    /// All zeros.
    #[error("00:00:00:00:00:00 is not a NIC's MAC: check the value")]
    Zero,
}

impl MacAddr {
    /// The six octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl FromStr for MacAddr {
    type Err = MacAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || MacAddrError::Syntax(s.to_owned());
        let hex: String = if s.len() == 17 {
            let sep = s.as_bytes()[2];
            if sep != b':' && sep != b'-' {
                return Err(syntax());
            }
            let parts: Vec<&str> = s.split(sep as char).collect();
            if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
                return Err(syntax());
            }
            parts.concat()
        } else if s.len() == 14 {
            let parts: Vec<&str> = s.split('.').collect();
            if parts.len() != 3 || parts.iter().any(|p| p.len() != 4) {
                return Err(syntax());
            }
            parts.concat()
        } else {
            return Err(syntax());
        };
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(syntax());
        }
        let mut octets = [0u8; 6];
        for (i, o) in octets.iter_mut().enumerate() {
            *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| syntax())?;
        }
        let mac = MacAddr(octets);
        if octets == [0; 6] {
            return Err(MacAddrError::Zero);
        }
        if octets[0] & 1 == 1 {
            return Err(MacAddrError::Multicast(mac.to_string()));
        }
        Ok(mac)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        for input in [
            "52:54:00:0d:00:01",
            "52:54:00:0D:00:01",
            "52-54-00-0d-00-01",
            "5254.000d.0001",
        ] {
            let mac: MacAddr = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(mac.to_string(), "52:54:00:0d:00:01", "{input}");
            assert_eq!(mac.octets(), [0x52, 0x54, 0, 0x0d, 0, 1]);
        }
    }

    #[test]
    fn refuses_bad_values() {
        let cases = [
            ("", "invalid MAC"),
            ("52:54:00:0d:00", "invalid MAC"),
            ("52:54:00:0d:00:01:02", "invalid MAC"),
            ("52:54:00:0d:00:0g", "invalid MAC"),
            ("52:54-00:0d:00:01", "invalid MAC"),
            ("5:254:00:0d:00:01", "invalid MAC"),
            ("+2:54:00:0d:00:01", "invalid MAC"),
            ("52:54:00:0d:00:é", "invalid MAC"),
            ("01:00:5e:00:00:01", "multicast"),
            ("ff:ff:ff:ff:ff:ff", "multicast"),
            ("00:00:00:00:00:00", "00:00:00:00:00:00 is not"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<MacAddr>().unwrap_err().to_string();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let mac: MacAddr = serde_json::from_str("\"52:54:00:0D:00:03\"").unwrap();
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"52:54:00:0d:00:03\""
        );
    }
}
