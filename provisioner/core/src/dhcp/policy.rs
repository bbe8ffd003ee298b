//! Whom the server answers at all.
//!
//! Invariant: pure; an ordinary (non-boot) client is answered only under
//! policy `all` or when its MAC is known: never fight another DHCP server
//! for clients that are not ours.

use std::collections::BTreeSet;

use model::net::Mac;

use super::boot::ClientKind;

/// site.yaml's DHCP answer policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerPolicy {
    /// Only these MACs (the site's nodes).
    Known(BTreeSet<Mac>),
    /// Any PXE, UEFI HTTP-boot or iPXE client.
    Pxe,
    /// Every client (a network the provisioner owns, such as the lab's).
    All,
}

/// Why a request gets no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoreReason {
    UnknownMac,
    NotABootClient,
    /// Proxy mode answers boot clients only, and only with boot options.
    NoBootFile,
    /// A REQUEST for another server (SELECTING with its server id).
    OtherServer,
    /// A message type we do not answer (or not on this port/mode).
    NotForUs(&'static str),
    /// The relay's network is not ours.
    ForeignRelay,
    /// The pool has no free address.
    PoolExhausted,
    /// A request missing what its state needs (e.g. SELECTING without option 50).
    Incomplete(&'static str),
    /// INIT-REBOOT or RENEWING from a client we have no record of and cannot serve.
    NoRecord,
    /// A configuration problem made the reply unencodable.
    Config(String),
}

impl IgnoreReason {
    /// Every [`label`](Self::label), for metrics.
    pub const LABELS: &[&str] = &[
        "unknown_mac",
        "not_a_boot_client",
        "no_boot_file",
        "other_server",
        "not_for_us",
        "foreign_relay",
        "pool_exhausted",
        "incomplete",
        "no_record",
        "config",
    ];

    /// A fixed metric label for the reason (no free text).
    pub fn label(&self) -> &'static str {
        match self {
            IgnoreReason::UnknownMac => "unknown_mac",
            IgnoreReason::NotABootClient => "not_a_boot_client",
            IgnoreReason::NoBootFile => "no_boot_file",
            IgnoreReason::OtherServer => "other_server",
            IgnoreReason::NotForUs(_) => "not_for_us",
            IgnoreReason::ForeignRelay => "foreign_relay",
            IgnoreReason::PoolExhausted => "pool_exhausted",
            IgnoreReason::Incomplete(_) => "incomplete",
            IgnoreReason::NoRecord => "no_record",
            IgnoreReason::Config(_) => "config",
        }
    }
}

/// Answer or not.
pub fn decide(policy: &AnswerPolicy, mac: Mac, kind: ClientKind) -> Result<(), IgnoreReason> {
    match policy {
        AnswerPolicy::Known(macs) if macs.contains(&mac) => Ok(()),
        AnswerPolicy::Known(_) => Err(IgnoreReason::UnknownMac),
        AnswerPolicy::Pxe if kind == ClientKind::Ordinary => Err(IgnoreReason::NotABootClient),
        AnswerPolicy::Pxe | AnswerPolicy::All => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_is_listed() {
        let all = [
            IgnoreReason::UnknownMac,
            IgnoreReason::NotABootClient,
            IgnoreReason::NoBootFile,
            IgnoreReason::OtherServer,
            IgnoreReason::NotForUs(""),
            IgnoreReason::ForeignRelay,
            IgnoreReason::PoolExhausted,
            IgnoreReason::Incomplete(""),
            IgnoreReason::NoRecord,
            IgnoreReason::Config(String::new()),
        ];
        let labels: Vec<&str> = all.iter().map(IgnoreReason::label).collect();
        assert_eq!(labels, IgnoreReason::LABELS);
    }

    #[test]
    fn table() {
        let a = Mac([0x52, 0x54, 0, 0xaa, 0, 1]);
        let b = Mac([0x52, 0x54, 0, 0xaa, 0, 2]);
        let known = AnswerPolicy::Known([a].into());
        let cases = [
            (&known, a, ClientKind::Ordinary, Ok(())),
            (&known, a, ClientKind::Pxe, Ok(())),
            (&known, b, ClientKind::Pxe, Err(IgnoreReason::UnknownMac)),
            (
                &known,
                b,
                ClientKind::Ordinary,
                Err(IgnoreReason::UnknownMac),
            ),
            (&AnswerPolicy::Pxe, b, ClientKind::Pxe, Ok(())),
            (&AnswerPolicy::Pxe, b, ClientKind::HttpBoot, Ok(())),
            (&AnswerPolicy::Pxe, b, ClientKind::Ipxe, Ok(())),
            (
                &AnswerPolicy::Pxe,
                b,
                ClientKind::Ordinary,
                Err(IgnoreReason::NotABootClient),
            ),
            (&AnswerPolicy::All, b, ClientKind::Ordinary, Ok(())),
        ];
        for (policy, mac, kind, want) in cases {
            assert_eq!(decide(policy, mac, kind), want, "{policy:?} {mac} {kind:?}");
        }
    }
}
