//! BMC addresses as written in `nodes.yaml`: `redfish://host[:port][/redfish/v1/Systems/ID]`
//! (HTTPS), `redfish+http://...` (plain HTTP, labs only) and `ipmi://host[:port]`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Which protocol talks to the BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BmcKind {
    /// Redfish over HTTPS (`tls: true`) or plain HTTP.
    Redfish {
        /// HTTPS when true.
        tls: bool,
    },
    /// IPMI 2.0 over LAN (RMCP+).
    Ipmi,
}

/// A parsed, normalized BMC address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BmcUrl {
    /// Protocol.
    pub kind: BmcKind,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port; defaults: 443 (redfish), 80 (redfish+http), 623 (ipmi).
    pub port: u16,
    /// Redfish system resource, e.g. `/redfish/v1/Systems/1`; `None` means
    /// "the only system of this BMC".
    pub system_path: Option<String>,
}

/// Why a BMC address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BmcUrlError {
    /// Unknown or missing scheme.
    #[error(
        "unknown BMC scheme in {0:?}: use redfish:// (HTTPS), redfish+http:// (plain HTTP) or ipmi://"
    )]
    Scheme(String),
    /// Anything else, with the reason.
    #[error("invalid BMC URL {url:?}: {reason}")]
    Invalid {
        /// The URL as written.
        url: String,
        /// What is wrong and what to do.
        reason: String,
    },
}

impl BmcUrl {
    /// The scheme as written in `nodes.yaml`.
    pub fn scheme(&self) -> &'static str {
        match self.kind {
            BmcKind::Redfish { tls: true } => "redfish",
            BmcKind::Redfish { tls: false } => "redfish+http",
            BmcKind::Ipmi => "ipmi",
        }
    }

    /// `https://host:port` or `http://host:port` for Redfish, `None` for IPMI.
    pub fn http_base(&self) -> Option<String> {
        match self.kind {
            BmcKind::Redfish { tls } => {
                let scheme = if tls { "https" } else { "http" };
                Some(format!(
                    "{scheme}://{}:{}",
                    bracketed(&self.host),
                    self.port
                ))
            }
            BmcKind::Ipmi => None,
        }
    }
}

fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

impl fmt::Display for BmcUrl {
    /// The normalized form: scheme, host and explicit port, then the path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:{}",
            self.scheme(),
            bracketed(&self.host),
            self.port
        )?;
        if let Some(p) = &self.system_path {
            f.write_str(p)?;
        }
        Ok(())
    }
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl FromStr for BmcUrl {
    type Err = BmcUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| BmcUrlError::Invalid {
            url: s.to_owned(),
            reason: reason.into(),
        };
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| BmcUrlError::Scheme(s.to_owned()))?;
        let (kind, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "redfish" | "redfish+https" => (BmcKind::Redfish { tls: true }, 443),
            "redfish+http" => (BmcKind::Redfish { tls: false }, 80),
            "ipmi" => (BmcKind::Ipmi, 623),
            _ => return Err(BmcUrlError::Scheme(s.to_owned())),
        };
        if rest.contains(['?', '#']) {
            return Err(invalid("query strings and fragments are not allowed"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        if authority.contains('@') {
            return Err(invalid(
                "credentials do not belong in the URL: use `username` and `password_env` or \
                 `password_file`",
            ));
        }
        let (host, port) = if let Some(after) = authority.strip_prefix('[') {
            let (h, tail) = after
                .split_once(']')
                .ok_or_else(|| invalid("unclosed '[' in IPv6 host"))?;
            if h.parse::<Ipv6Addr>().is_err() {
                return Err(invalid("the bracketed host is not an IPv6 address"));
            }
            let port = match tail {
                "" => None,
                t => Some(
                    t.strip_prefix(':')
                        .ok_or_else(|| invalid("expected ':port' after ']'"))?,
                ),
            };
            (h.to_ascii_lowercase(), port)
        } else {
            let (h, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if h.is_empty() {
                return Err(invalid("missing host"));
            }
            let looks_numeric = h.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            if looks_numeric && h.parse::<Ipv4Addr>().is_err() {
                return Err(invalid("the host is not a valid IPv4 address"));
            }
            if !valid_hostname(h) {
                return Err(invalid(
                    "the host is not a valid host name or IP address (IPv6 goes in [brackets])",
                ));
            }
            (h.to_ascii_lowercase(), port)
        };
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(invalid("the port must be a number from 1 to 65535")),
            },
        };
        let system_path = match (kind, path) {
            (_, None) | (_, Some("/")) => None,
            (BmcKind::Ipmi, Some(_)) => {
                return Err(invalid(
                    "ipmi:// URLs take no path: write ipmi://host[:port]",
                ));
            }
            (BmcKind::Redfish { .. }, Some(p)) => {
                let p = p.strip_suffix('/').unwrap_or(p);
                let id = p.strip_prefix("/redfish/v1/Systems/").unwrap_or_default();
                if id.is_empty() || id.contains('/') {
                    return Err(invalid(
                        "the only path allowed is the system resource, /redfish/v1/Systems/<ID>",
                    ));
                }
                Some(p.to_owned())
            }
        };
        Ok(BmcUrl {
            kind,
            host,
            port,
            system_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        let cases = [
            (
                "redfish://bmc1.example.com",
                BmcKind::Redfish { tls: true },
                "bmc1.example.com",
                443,
                None,
                "redfish://bmc1.example.com:443",
            ),
            (
                "redfish+http://10.213.0.1:8101/redfish/v1/Systems/1/",
                BmcKind::Redfish { tls: false },
                "10.213.0.1",
                8101,
                Some("/redfish/v1/Systems/1"),
                "redfish+http://10.213.0.1:8101/redfish/v1/Systems/1",
            ),
            (
                "ipmi://10.213.0.1:6230",
                BmcKind::Ipmi,
                "10.213.0.1",
                6230,
                None,
                "ipmi://10.213.0.1:6230",
            ),
            (
                "IPMI://BMC-7",
                BmcKind::Ipmi,
                "bmc-7",
                623,
                None,
                "ipmi://bmc-7:623",
            ),
            (
                "redfish://[fd00::1]:8443",
                BmcKind::Redfish { tls: true },
                "fd00::1",
                8443,
                None,
                "redfish://[fd00::1]:8443",
            ),
        ];
        for (input, kind, host, port, path, shown) in cases {
            let url: BmcUrl = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(url.kind, kind, "{input}");
            assert_eq!(url.host, host, "{input}");
            assert_eq!(url.port, port, "{input}");
            assert_eq!(url.system_path.as_deref(), path, "{input}");
            assert_eq!(url.to_string(), shown, "{input}");
        }
        let url: BmcUrl = "redfish+http://10.213.0.1:8101".parse().unwrap();
        assert_eq!(url.http_base().as_deref(), Some("http://10.213.0.1:8101"));
        let url: BmcUrl = "ipmi://h".parse().unwrap();
        assert_eq!(url.http_base(), None);
    }

    #[test]
    fn refuses_bad_urls() {
        let cases = [
            ("https://10.0.0.1", "unknown BMC scheme"),
            ("10.0.0.1", "unknown BMC scheme"),
            ("redfish://", "missing host"),
            ("redfish://admin:pw@10.0.0.1", "credentials do not belong"),
            ("redfish://10.0.0.1:0", "port must be"),
            ("redfish://10.0.0.1:99999", "port must be"),
            ("redfish://10.0.0.1:", "port must be"),
            ("redfish://10.0.0.300", "not a valid IPv4"),
            ("redfish://bad_host", "not a valid host name"),
            (
                "redfish://10.0.0.1/redfish/v1/Managers/1",
                "/redfish/v1/Systems/<ID>",
            ),
            (
                "redfish://10.0.0.1/redfish/v1/Systems/",
                "/redfish/v1/Systems/<ID>",
            ),
            ("ipmi://10.0.0.1/x", "take no path"),
            ("redfish://[fd00::1", "unclosed"),
            ("redfish://[nope]", "not an IPv6"),
            ("redfish://10.0.0.1?x=1", "query"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<BmcUrl>().unwrap_err().to_string();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
    }
}
