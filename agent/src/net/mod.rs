//! The boot NIC of a PID 1 mode (the ramdisk's [`crate::init`] and the
//! installed host's [`crate::host::report`]): our own DHCP client
//! ([`dhcp`], pure RFC 2131 on `model::dhcp`), the netlink messages that set
//! links and addresses ([`netlink`], pure layouts), the socket edge
//! ([`link`]), retry back-off ([`backoff`]), and the loops that find the
//! NIC, get an address and keep the lease.

pub mod backoff;
pub mod dhcp;
pub(crate) mod link;
pub mod netlink;

use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

use model::net::Mac;

use crate::pid1::say;
use dhcp::{Due, Lease};

/// Why a request to the provisioner failed (the ramdisk's session, the
/// host's report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No HTTP answer (connection refused, timeout, no route).
    Unreachable(String),
    /// The provisioner answered with an error status.
    Status { status: u16, error: String },
    /// The answer was not a command.
    BadAnswer(String),
}

/// How long to wait for the boot NIC to appear after the modules loaded.
const NIC_WAIT: Duration = Duration::from_secs(30);
/// How long one DHCP exchange may take before it is started again.
const DHCP_ROUND: Duration = Duration::from_secs(60);
/// How long one attempt to extend the lease waits for an answer (the agent's
/// requests wait meanwhile, so this stays short; a failed attempt is tried
/// again on the next round, until T2 and expiry).
const LEASE_EXTEND_WAIT: Duration = Duration::from_secs(8);

/// Waits for the NIC with the boot MAC to appear (drivers probe in the background).
pub(crate) fn wait_for_nic(mac: Mac) -> Result<link::Nic, String> {
    let class = Path::new("/sys/class/net");
    let started = Instant::now();
    loop {
        if let Some(nic) = link::find_nic(class, mac) {
            say(&format!("boot NIC is {} (index {})", nic.name, nic.index));
            return Ok(nic);
        }
        if started.elapsed() > NIC_WAIT {
            return Err(format!(
                "no network interface has the boot MAC {} after {} s (interfaces: {}); check that \
                 the ramdisk carries the NIC's driver (/lib/modules/load-order)",
                mac,
                NIC_WAIT.as_secs(),
                link::list_nics(class)
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sets the NIC up and gets an address, retrying until it works; the lease
/// and when it was bound. Also host mode's ([`crate::host::report`]).
pub(crate) fn bring_up(nic: &link::Nic, mac: Mac) -> (Lease, Instant) {
    let mut backoff = backoff::Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
    loop {
        let result = link::link_up(nic).and_then(|()| {
            let lease = link::acquire(nic, mac, random_u32(), DHCP_ROUND)?;
            link::configure(nic, &lease)?;
            Ok(lease)
        });
        match result {
            Ok(lease) => {
                say(&format!(
                    "address {}/{} on {} (router {}, from DHCP server {}, lease {} s)",
                    lease.address,
                    lease.prefix_len,
                    nic.name,
                    lease.router.map_or("none".to_owned(), |r| r.to_string()),
                    lease.server,
                    lease.lease_s
                ));
                return (lease, Instant::now());
            }
            Err(err) => {
                let pause = backoff.fail();
                say(&format!(
                    "network: {err}; retrying in {} s",
                    pause.as_secs()
                ));
                std::thread::sleep(pause);
            }
        }
    }
}

/// Renews the lease at T1, rebinds it at T2 and starts over when it ran out
/// (RFC 2131 4.4.5); the lease and when it was bound, as they are now. A
/// failed attempt is said on the console and tried again on the next round.
pub(crate) fn keep_lease(
    nic: &link::Nic,
    mac: Mac,
    lease: Lease,
    bound_at: Instant,
) -> (Lease, Instant) {
    let rebind = match dhcp::due(lease.lease_s, bound_at.elapsed().as_secs()) {
        Due::Nothing => return (lease, bound_at),
        Due::Renew => false,
        Due::Rebind => true,
        Due::Expired => {
            say(&format!(
                "DHCP: the lease of {} ran out without an answer from a DHCP server; asking for an address again",
                lease.address
            ));
            return bring_up(nic, mac);
        }
    };
    let asked = Instant::now();
    match link::extend(nic, mac, lease, random_u32(), rebind, LEASE_EXTEND_WAIT) {
        Ok(link::Extended::Bound(extended)) => {
            if let Err(err) = link::configure(nic, &extended) {
                say(&format!("DHCP: lease extended but not configured: {err}"));
            }
            say(&format!(
                "DHCP: lease of {} extended for {} s by {}",
                extended.address, extended.lease_s, extended.server
            ));
            (extended, asked)
        }
        Ok(link::Extended::Refused(why)) => {
            say(&format!("DHCP: {why}; asking for an address again"));
            bring_up(nic, mac)
        }
        Err(err) => {
            say(&format!(
                "DHCP: {err}; check that the DHCP server still runs; trying again on the next round"
            ));
            (lease, bound_at)
        }
    }
}

fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // Without /dev/urandom the time still makes clashes unlikely.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        bytes = nanos.to_ne_bytes();
    }
    u32::from_ne_bytes(bytes)
}
