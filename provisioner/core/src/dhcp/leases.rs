//! Lease state of *full* mode: one pool inside one subnet, reservations
//! (MAC -> IP, from the site's nodes), leases, declined addresses; the RFC
//! 2131 server rules for choosing, binding, extending and freeing addresses.
//!
//! Invariants: pure (time is passed in as Unix seconds); one address is never
//! leased to two MACs and one MAC holds at most one lease (proptest over
//! random event sequences); every change to the lease table is returned as
//! [`LeaseChange`]s, in order, so the edge can persist them (`dhcp_leases`:
//! mac primary key, ip unique): applying them in order never violates either
//! key. No ping before an offer (it costs clients 3 s).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use model::net::Mac;

/// Unix time in seconds.
pub type Secs = u64;

/// Pool and timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub subnet: Ipv4Net,
    /// First and last address handed out dynamically, inside `subnet`.
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    /// Lease time of a bound address.
    pub lease_secs: u32,
    /// How long an offered address stays held for the client.
    pub offer_secs: u32,
    /// How long a declined address is not handed out.
    pub decline_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("pool {first}..={last} is not inside subnet {subnet}")]
    OutsideSubnet {
        first: Ipv4Addr,
        last: Ipv4Addr,
        subnet: Ipv4Net,
    },
    #[error("pool first {first} is after last {last}")]
    Empty { first: Ipv4Addr, last: Ipv4Addr },
    #[error("reservation {ip} for {mac} is outside subnet {subnet}")]
    ReservationOutside {
        mac: Mac,
        ip: Ipv4Addr,
        subnet: Ipv4Net,
    },
    #[error("address {ip} is reserved for both {a} and {b}")]
    DuplicateReservation { ip: Ipv4Addr, a: Mac, b: Mac },
    #[error("restored lease {ip} for {mac} conflicts with the lease of {other}")]
    Conflict { mac: Mac, ip: Ipv4Addr, other: Mac },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Offered,
    Bound,
}

impl LeaseState {
    /// The `dhcp_leases.state` text.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Offered => "offered",
            LeaseState::Bound => "bound",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub mac: Mac,
    pub ip: Ipv4Addr,
    pub expires_at: Secs,
    pub state: LeaseState,
    pub hostname: Option<String>,
}

/// A change of the lease table, to persist in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseChange {
    /// Insert or replace the row of `lease.mac`.
    Upsert(Lease),
    /// Delete the row of `mac`.
    Remove { mac: Mac, ip: Ipv4Addr },
    /// A client DECLINEd `ip` (someone else answers on it): keep it out of
    /// offers until `until`, across restarts too.
    Declined { ip: Ipv4Addr, until: Secs },
    /// The decline mark of `ip` ended.
    DeclineEnded { ip: Ipv4Addr },
}

/// Why a REQUEST is refused (the reason goes into the NAK's option 56).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nak {
    WrongSubnet,
    Taken,
    Declined,
    NotInPool,
    /// The client has a reservation elsewhere.
    Reserved,
}

impl Nak {
    pub fn message(self) -> &'static str {
        match self {
            Nak::WrongSubnet => "address not in this network",
            Nak::Taken => "address leased to another client",
            Nak::Declined => "address declined recently",
            Nak::NotInPool => "address not served here",
            Nak::Reserved => "client has another reserved address",
        }
    }
}

/// The lease table.
#[derive(Debug, Clone)]
pub struct Leases {
    config: PoolConfig,
    reservations: BTreeMap<Mac, Ipv4Addr>,
    /// The reservations by address (the same pairs).
    reserved_ips: BTreeMap<Ipv4Addr, Mac>,
    by_mac: BTreeMap<Mac, Lease>,
    by_ip: BTreeMap<Ipv4Addr, Mac>,
    /// Declined addresses and when they become usable again.
    declined: BTreeMap<Ipv4Addr, Secs>,
    /// Low-water mark of the never-used scan: every pool address below it
    /// is leased, reserved or declined, so offers need not look there.
    /// Lowered whenever an address is freed; it keeps `offer` O(log n) on a
    /// filling pool instead of a scan from the first address.
    low: u32,
}

impl Leases {
    pub fn new(config: PoolConfig) -> Result<Self, PoolError> {
        let (first, last, subnet) = (config.first, config.last, config.subnet);
        if first > last {
            return Err(PoolError::Empty { first, last });
        }
        if !subnet.contains(&first) || !subnet.contains(&last) {
            return Err(PoolError::OutsideSubnet {
                first,
                last,
                subnet,
            });
        }
        Ok(Leases {
            config,
            reservations: BTreeMap::new(),
            reserved_ips: BTreeMap::new(),
            by_mac: BTreeMap::new(),
            by_ip: BTreeMap::new(),
            declined: BTreeMap::new(),
            low: u32::from(first),
        })
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// Replaces the reservations (the site's nodes). A reservation may lie
    /// outside the pool but must be inside the subnet. Existing leases are
    /// kept; an address now reserved for another MAC is not extended.
    pub fn set_reservations(
        &mut self,
        reservations: impl IntoIterator<Item = (Mac, Ipv4Addr)>,
    ) -> Result<(), PoolError> {
        let mut map = BTreeMap::new();
        let mut seen: BTreeMap<Ipv4Addr, Mac> = BTreeMap::new();
        for (mac, ip) in reservations {
            if !self.config.subnet.contains(&ip) {
                return Err(PoolError::ReservationOutside {
                    mac,
                    ip,
                    subnet: self.config.subnet,
                });
            }
            if let Some(&a) = seen.get(&ip)
                && a != mac
            {
                return Err(PoolError::DuplicateReservation { ip, a, b: mac });
            }
            seen.insert(ip, mac);
            map.insert(mac, ip);
        }
        self.reservations = map;
        self.reserved_ips = seen;
        self.low = u32::from(self.config.first);
        Ok(())
    }

    /// Restores a lease from the store at start.
    pub fn restore(&mut self, lease: Lease) -> Result<(), PoolError> {
        if let Some(&other) = self.by_ip.get(&lease.ip)
            && other != lease.mac
        {
            return Err(PoolError::Conflict {
                mac: lease.mac,
                ip: lease.ip,
                other,
            });
        }
        if let Some(old) = self.by_mac.remove(&lease.mac) {
            self.by_ip.remove(&old.ip);
            self.freed(old.ip);
        }
        self.by_ip.insert(lease.ip, lease.mac);
        self.by_mac.insert(lease.mac, lease);
        Ok(())
    }

    /// Leases held (offered or bound, expired ones until `expire`).
    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }

    pub fn lease_of(&self, mac: Mac) -> Option<&Lease> {
        self.by_mac.get(&mac)
    }

    pub fn holder_of(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.by_ip.get(&ip).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.by_mac.values()
    }

    pub fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        self.config.subnet.contains(&ip)
    }

    fn in_pool(&self, ip: Ipv4Addr) -> bool {
        self.config.first <= ip && ip <= self.config.last
    }

    fn reserved_for_other(&self, ip: Ipv4Addr, mac: Mac) -> bool {
        self.reserved_ips.get(&ip).is_some_and(|&m| m != mac)
    }

    /// `ip` became free: the never-used scan must look at it again.
    fn freed(&mut self, ip: Ipv4Addr) {
        self.low = self.low.min(u32::from(ip));
    }

    fn is_declined(&self, ip: Ipv4Addr, now: Secs) -> bool {
        self.declined.get(&ip).is_some_and(|&until| now < until)
    }

    /// Held by another MAC's unexpired lease.
    fn held_by_other(&self, ip: Ipv4Addr, mac: Mac, now: Secs) -> bool {
        match self.by_ip.get(&ip) {
            Some(&m) if m != mac => self.by_mac.get(&m).is_some_and(|l| l.expires_at > now),
            _ => false,
        }
    }

    /// May `mac` have `ip` now? `None` when yes.
    fn refusal(&self, mac: Mac, ip: Ipv4Addr, now: Secs) -> Option<Nak> {
        if !self.in_subnet(ip) {
            return Some(Nak::WrongSubnet);
        }
        if let Some(&r) = self.reservations.get(&mac) {
            if r != ip {
                return Some(Nak::Reserved);
            }
            return self.held_by_other(ip, mac, now).then_some(Nak::Taken);
        }
        if self.reserved_for_other(ip, mac) || self.held_by_other(ip, mac, now) {
            return Some(Nak::Taken);
        }
        if self.is_declined(ip, now) {
            return Some(Nak::Declined);
        }
        // Outside the pool only a reservation (above) or the client's own
        // lease: the rest of the subnet may be routers and static hosts.
        let own = self.by_mac.get(&mac).is_some_and(|l| l.ip == ip);
        if !self.in_pool(ip) && !own {
            return Some(Nak::NotInPool);
        }
        None
    }

    /// Gives `ip` to `mac`, removing whatever stood in the way (the client's
    /// other lease, an expired lease of another client).
    fn assign(
        &mut self,
        mac: Mac,
        ip: Ipv4Addr,
        state: LeaseState,
        expires_at: Secs,
        hostname: Option<String>,
    ) -> Vec<LeaseChange> {
        let mut changes = Vec::new();
        if let Some(&other) = self.by_ip.get(&ip)
            && other != mac
        {
            // Only expired leases get here (callers check `refusal`).
            self.by_ip.remove(&ip);
            self.by_mac.remove(&other);
            changes.push(LeaseChange::Remove { mac: other, ip });
        }
        if let Some(old) = self.by_mac.get(&mac)
            && old.ip != ip
        {
            let old_ip = old.ip;
            self.by_ip.remove(&old_ip);
            self.by_mac.remove(&mac);
            self.freed(old_ip);
            // The row is replaced by the upsert below (same MAC), but the old
            // address must be free first for the UNIQUE ip column.
            changes.push(LeaseChange::Remove { mac, ip: old_ip });
        }
        let hostname = hostname.or_else(|| self.by_mac.get(&mac).and_then(|l| l.hostname.clone()));
        let lease = Lease {
            mac,
            ip,
            expires_at,
            state,
            hostname,
        };
        self.by_ip.insert(ip, mac);
        self.by_mac.insert(mac, lease.clone());
        changes.push(LeaseChange::Upsert(lease));
        changes
    }

    /// DISCOVER: the address to offer, held for `offer_secs`. Order: the
    /// client's reservation, its previous lease, the address it asked for,
    /// the lowest free address of the pool. `None`: nothing free.
    pub fn offer(
        &mut self,
        mac: Mac,
        requested: Option<Ipv4Addr>,
        hostname: Option<String>,
        now: Secs,
    ) -> Option<(Ipv4Addr, Vec<LeaseChange>)> {
        let ip = self.pick(mac, requested, now)?;
        let (state, expires_at) = match self.by_mac.get(&mac) {
            // A bound client that asks again keeps its binding (INIT after a
            // reboot without INIT-REBOOT): never shorten it.
            Some(l) if l.ip == ip && l.state == LeaseState::Bound && l.expires_at > now => {
                (LeaseState::Bound, l.expires_at)
            }
            _ => (LeaseState::Offered, now + u64::from(self.config.offer_secs)),
        };
        let changes = self.assign(mac, ip, state, expires_at, hostname);
        self.raise_low();
        Some((ip, changes))
    }

    /// Moves the low-water mark past addresses that are not free.
    fn raise_low(&mut self) {
        let last = u32::from(self.config.last);
        while self.low <= last {
            let ip = Ipv4Addr::from(self.low);
            if !(self.by_ip.contains_key(&ip)
                || self.reserved_ips.contains_key(&ip)
                || self.declined.contains_key(&ip))
            {
                break;
            }
            self.low += 1;
        }
    }

    fn pick(&self, mac: Mac, requested: Option<Ipv4Addr>, now: Secs) -> Option<Ipv4Addr> {
        if let Some(&r) = self.reservations.get(&mac) {
            // A reserved address held by a live lease of another MAC (given
            // out before the reservation existed) waits for that lease to end.
            return (!self.held_by_other(r, mac, now)).then_some(r);
        }
        let usable = |ip: Ipv4Addr| self.refusal(mac, ip, now).is_none();
        if let Some(l) = self.by_mac.get(&mac)
            && usable(l.ip)
        {
            return Some(l.ip);
        }
        if let Some(ip) = requested
            && self.in_pool(ip)
            && usable(ip)
        {
            return Some(ip);
        }
        let (first, last) = (u32::from(self.config.first), u32::from(self.config.last));
        (self.low.max(first)..=last)
            .map(Ipv4Addr::from)
            .find(|&ip| {
                !self.by_ip.contains_key(&ip)
                    && !self.reserved_for_other(ip, mac)
                    && !self.is_declined(ip, now)
            })
            .or_else(|| {
                // No never-used address left: reuse the lowest expired one.
                (first..=last).map(Ipv4Addr::from).find(|&ip| usable(ip))
            })
    }

    /// REQUEST (SELECTING, INIT-REBOOT, RENEWING, REBINDING): bind `ip` to
    /// `mac` for `lease_secs`, or say why not.
    pub fn request(
        &mut self,
        mac: Mac,
        ip: Ipv4Addr,
        hostname: Option<String>,
        now: Secs,
    ) -> Result<Vec<LeaseChange>, Nak> {
        if let Some(nak) = self.refusal(mac, ip, now) {
            return Err(nak);
        }
        let expires_at = now + u64::from(self.config.lease_secs);
        Ok(self.assign(mac, ip, LeaseState::Bound, expires_at, hostname))
    }

    /// RELEASE: frees the client's lease on `ip` (nothing if it holds none).
    pub fn release(&mut self, mac: Mac, ip: Ipv4Addr) -> Vec<LeaseChange> {
        match self.by_mac.get(&mac) {
            Some(l) if l.ip == ip => {
                self.by_mac.remove(&mac);
                self.by_ip.remove(&ip);
                self.freed(ip);
                vec![LeaseChange::Remove { mac, ip }]
            }
            _ => Vec::new(),
        }
    }

    /// DECLINE: the client found `ip` in use; free its lease and keep the
    /// address out of offers for `decline_secs`.
    pub fn decline(&mut self, mac: Mac, ip: Ipv4Addr, now: Secs) -> Vec<LeaseChange> {
        if self.by_mac.get(&mac).is_none_or(|l| l.ip != ip) {
            return Vec::new();
        }
        let until = now + u64::from(self.config.decline_secs);
        self.declined.insert(ip, until);
        let mut changes = vec![LeaseChange::Declined { ip, until }];
        changes.extend(self.release(mac, ip));
        changes
    }

    /// Restores a stored decline mark at start (an address outside the
    /// subnet is ignored: the site changed).
    pub fn restore_decline(&mut self, ip: Ipv4Addr, until: Secs) {
        if self.in_subnet(ip) {
            self.declined.insert(ip, until);
        }
    }

    /// Removes expired leases and decline marks; returns the removals.
    pub fn expire(&mut self, now: Secs) -> Vec<LeaseChange> {
        let mut low = self.low;
        let mut ended = Vec::new();
        self.declined.retain(|&ip, &mut until| {
            let keep = now < until;
            if !keep {
                low = low.min(u32::from(ip));
                ended.push(LeaseChange::DeclineEnded { ip });
            }
            keep
        });
        self.low = low;
        let expired: Vec<(Mac, Ipv4Addr)> = self
            .by_mac
            .values()
            .filter(|l| l.expires_at <= now)
            .map(|l| (l.mac, l.ip))
            .collect();
        ended.extend(
            expired
                .into_iter()
                .flat_map(|(mac, ip)| self.release(mac, ip)),
        );
        ended
    }

    /// Checks the table's internal consistency (tests and debug builds).
    pub fn check(&self) -> Result<(), String> {
        if self.by_mac.len() != self.by_ip.len() {
            return Err(format!(
                "{} MACs but {} addresses",
                self.by_mac.len(),
                self.by_ip.len()
            ));
        }
        for (mac, lease) in &self.by_mac {
            if lease.mac != *mac {
                return Err(format!("lease of {mac} says {}", lease.mac));
            }
            if self.by_ip.get(&lease.ip) != Some(mac) {
                return Err(format!("{} of {mac} is not indexed to it", lease.ip));
            }
        }
        // The low-water mark never hides a free address from offers.
        for n in u32::from(self.config.first)..self.low.min(u32::from(self.config.last) + 1) {
            let ip = Ipv4Addr::from(n);
            if !(self.by_ip.contains_key(&ip)
                || self.reserved_ips.contains_key(&ip)
                || self.declined.contains_key(&ip))
            {
                return Err(format!("{ip} is free but below the offer scan's start"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mac(n: u8) -> Mac {
        Mac([0x52, 0x54, 0, 0, 0, n])
    }

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    fn config() -> PoolConfig {
        PoolConfig {
            subnet: "10.0.0.0/24".parse().unwrap(),
            first: ip(10),
            last: ip(13),
            lease_secs: 3600,
            offer_secs: 60,
            decline_secs: 600,
        }
    }

    /// Pool .10-.13; mac 1 reserved .11 (in the pool), mac 2 reserved .50.
    fn leases() -> Leases {
        let mut l = Leases::new(config()).unwrap();
        l.set_reservations([(mac(1), ip(11)), (mac(2), ip(50))])
            .unwrap();
        l
    }

    #[test]
    fn refuses_bad_pools_and_reservations() {
        let outside = PoolConfig {
            last: Ipv4Addr::new(10, 0, 1, 1),
            ..config()
        };
        assert!(matches!(
            Leases::new(outside),
            Err(PoolError::OutsideSubnet { .. })
        ));
        let empty = PoolConfig {
            first: ip(20),
            ..config()
        };
        assert!(matches!(Leases::new(empty), Err(PoolError::Empty { .. })));
        let mut l = Leases::new(config()).unwrap();
        let foreign = l.set_reservations([(mac(1), Ipv4Addr::new(192, 168, 0, 1))]);
        assert!(matches!(foreign, Err(PoolError::ReservationOutside { .. })));
        let twice = l.set_reservations([(mac(1), ip(11)), (mac(2), ip(11))]);
        assert!(matches!(twice, Err(PoolError::DuplicateReservation { .. })));
    }

    #[test]
    fn offer_order() {
        let mut l = leases();
        // Reservations first, even outside the pool.
        assert_eq!(l.offer(mac(1), Some(ip(12)), None, 0).unwrap().0, ip(11));
        assert_eq!(l.offer(mac(2), None, None, 0).unwrap().0, ip(50));
        // Then the requested address when free and in the pool.
        assert_eq!(l.offer(mac(3), Some(ip(13)), None, 0).unwrap().0, ip(13));
        // Else the lowest free one, skipping .11 (reserved).
        assert_eq!(l.offer(mac(4), Some(ip(13)), None, 0).unwrap().0, ip(10));
        assert_eq!(l.offer(mac(5), Some(ip(99)), None, 0).unwrap().0, ip(12));
        // The pool is full: nothing for mac 6.
        assert_eq!(l.offer(mac(6), None, None, 0), None);
        // A client's previous lease comes before what it asks for.
        assert_eq!(l.offer(mac(3), Some(ip(10)), None, 1).unwrap().0, ip(13));
        // Offers expire; the expired address is reclaimed for another client.
        let (got, changes) = l.offer(mac(6), None, None, 100).unwrap();
        assert_eq!(got, ip(10));
        assert_eq!(
            changes[0],
            LeaseChange::Remove {
                mac: mac(4),
                ip: ip(10)
            }
        );
        assert!(matches!(&changes[1], LeaseChange::Upsert(lease) if lease.mac == mac(6)));
        l.check().unwrap();
    }

    #[test]
    fn request_binds_renews_and_refuses() {
        let mut l = leases();
        let (offered, _) = l.offer(mac(3), None, Some("n3".into()), 0).unwrap();
        let changes = l.request(mac(3), offered, None, 10).unwrap();
        let bound = Lease {
            mac: mac(3),
            ip: offered,
            expires_at: 3610,
            state: LeaseState::Bound,
            hostname: Some("n3".into()),
        };
        assert_eq!(changes, vec![LeaseChange::Upsert(bound)]);
        // Renewing extends.
        l.request(mac(3), offered, None, 2000).unwrap();
        assert_eq!(l.lease_of(mac(3)).unwrap().expires_at, 5600);
        let cases = [
            (mac(4), Ipv4Addr::new(192, 168, 1, 5), Nak::WrongSubnet),
            (mac(4), offered, Nak::Taken),
            (mac(4), ip(11), Nak::Taken),
            (mac(1), ip(12), Nak::Reserved),
            (mac(4), ip(1), Nak::NotInPool),
        ];
        for (m, a, nak) in cases {
            assert_eq!(l.request(m, a, None, 2000), Err(nak), "{m} {a}");
        }
        // INIT-REBOOT with a free pool address: granted.
        assert!(l.request(mac(4), ip(13), None, 2000).is_ok());
        l.check().unwrap();
    }

    #[test]
    fn release_decline_expire() {
        let mut l = leases();
        l.request(mac(3), ip(10), None, 0).unwrap();
        // Releasing another's address does nothing.
        assert_eq!(l.release(mac(4), ip(10)), vec![]);
        assert_eq!(
            l.release(mac(3), ip(10)),
            vec![LeaseChange::Remove {
                mac: mac(3),
                ip: ip(10)
            }]
        );
        assert_eq!(l.holder_of(ip(10)), None);

        l.request(mac(3), ip(10), None, 0).unwrap();
        assert_eq!(
            l.decline(mac(3), ip(10), 0),
            vec![
                LeaseChange::Declined {
                    ip: ip(10),
                    until: 600
                },
                LeaseChange::Remove {
                    mac: mac(3),
                    ip: ip(10)
                }
            ]
        );
        assert_eq!(l.request(mac(4), ip(10), None, 10), Err(Nak::Declined));
        assert_eq!(l.offer(mac(4), None, None, 10).unwrap().0, ip(12));
        // After decline_secs the address is usable again.
        assert!(l.request(mac(5), ip(10), None, 600).is_ok());

        let removed = l.expire(600 + 3600);
        // The decline mark ended; mac 4's offer of .12 expired long ago, mac
        // 5's lease just now.
        let want = vec![
            LeaseChange::DeclineEnded { ip: ip(10) },
            LeaseChange::Remove {
                mac: mac(4),
                ip: ip(12),
            },
            LeaseChange::Remove {
                mac: mac(5),
                ip: ip(10),
            },
        ];
        assert_eq!(removed, want);
        assert!(l.iter().all(|lease| lease.mac != mac(5)));
        l.check().unwrap();
    }

    #[test]
    fn offers_take_the_lowest_free_address_again_after_a_release() {
        let mut l = Leases::new(config()).unwrap();
        let got: Vec<Ipv4Addr> = (1..=4)
            .map(|m| l.offer(mac(m), None, None, 0).unwrap().0)
            .collect();
        assert_eq!(got, [ip(10), ip(11), ip(12), ip(13)]);
        assert_eq!(l.offer(mac(5), None, None, 0), None, "pool full");
        l.release(mac(2), ip(11));
        assert_eq!(l.offer(mac(5), None, None, 0).unwrap().0, ip(11));
        l.check().unwrap();
    }

    #[test]
    fn restore_refuses_a_second_holder() {
        let mut l = leases();
        let lease = |m| Lease {
            mac: m,
            ip: ip(10),
            expires_at: 10,
            state: LeaseState::Bound,
            hostname: None,
        };
        l.restore(lease(mac(3))).unwrap();
        assert!(matches!(
            l.restore(lease(mac(4))),
            Err(PoolError::Conflict { .. })
        ));
    }

    #[derive(Debug, Clone)]
    enum Event {
        Offer(u8, Option<u8>),
        Request(u8, u8),
        Release(u8, u8),
        Decline(u8, u8),
        Expire,
        Advance(u64),
    }

    fn event() -> impl Strategy<Value = Event> {
        let m = 1..7u8;
        // Addresses around the pool: .9 (outside), .10-.13 (pool), .50 (mac 2's).
        let a = prop_oneof![Just(9u8), 10..14u8, Just(50u8)];
        prop_oneof![
            (m.clone(), proptest::option::of(a.clone())).prop_map(|(m, a)| Event::Offer(m, a)),
            (m.clone(), a.clone()).prop_map(|(m, a)| Event::Request(m, a)),
            (m.clone(), a.clone()).prop_map(|(m, a)| Event::Release(m, a)),
            (m, a).prop_map(|(m, a)| Event::Decline(m, a)),
            Just(Event::Expire),
            (0..2000u64).prop_map(Event::Advance),
        ]
    }

    proptest! {
        /// Whatever clients do, one address is never held by two MACs, and
        /// the changes, applied in order to a table with `mac` primary key
        /// and `ip` unique, never violate either key and end equal to the
        /// lease table.
        #[test]
        fn one_address_one_mac(events in proptest::collection::vec(event(), 1..80)) {
            let mut l = leases();
            let mut table: BTreeMap<Mac, Lease> = BTreeMap::new();
            // The decline marks the changes describe (a restart restores them).
            let mut declined: BTreeMap<Ipv4Addr, Secs> = BTreeMap::new();
            let mut now = 0;
            for e in events {
                let changes = match e {
                    Event::Offer(m, a) => {
                        l.offer(mac(m), a.map(ip), None, now).map(|(_, c)| c).unwrap_or_default()
                    }
                    Event::Request(m, a) => match l.request(mac(m), ip(a), None, now) {
                        Ok(c) => {
                            // Never an address reserved for someone else, never
                            // outside the pool unless it is the client's own.
                            let own = [(1, 11), (2, 50)].contains(&(m, a));
                            prop_assert!(own || ((10..14).contains(&a) && a != 11));
                            c
                        }
                        Err(_) => Vec::new(),
                    },
                    Event::Release(m, a) => l.release(mac(m), ip(a)),
                    Event::Decline(m, a) => l.decline(mac(m), ip(a), now),
                    Event::Expire => l.expire(now),
                    Event::Advance(s) => {
                        now += s;
                        Vec::new()
                    }
                };
                for change in changes {
                    match change {
                        LeaseChange::Upsert(lease) => {
                            let clash = table
                                .values()
                                .any(|other| other.ip == lease.ip && other.mac != lease.mac);
                            prop_assert!(!clash, "UNIQUE ip violated by {:?}", lease);
                            table.insert(lease.mac, lease);
                        }
                        LeaseChange::Remove { mac, ip } => {
                            let row = table.remove(&mac);
                            prop_assert_eq!(row.map(|r| r.ip), Some(ip));
                        }
                        LeaseChange::Declined { ip, until } => {
                            prop_assert!(until > now);
                            declined.insert(ip, until);
                        }
                        LeaseChange::DeclineEnded { ip } => {
                            prop_assert!(declined.remove(&ip).is_some_and(|u| u <= now));
                        }
                    }
                }
                prop_assert_eq!(l.check(), Ok(()));
                let mine: Vec<&Lease> = l.iter().collect();
                let theirs: Vec<&Lease> = table.values().collect();
                prop_assert_eq!(mine, theirs);
                prop_assert_eq!(&l.declined, &declined);
            }
        }
    }
}
