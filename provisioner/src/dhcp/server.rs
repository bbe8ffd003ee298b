//! The DHCP server's UDP edge: sockets on the provisioning interface, the
//! lease table restored from the store, group commit of lease changes, and
//! the replies sent where [`Destination`] says.
//!
//! Invariants:
//! - An ACK leaves only after the changes of its decision, and every change
//!   made before it, are committed to `dhcp_leases` (one `BEGIN IMMEDIATE`
//!   transaction per batch of packets, replies after the commit), so a
//!   restart (even `kill -9`) never hands one address to two MACs: the
//!   restored table holds every lease a client was told it has. Changes that
//!   promise nothing (OFFERs: the client must still REQUEST; RELEASE,
//!   DECLINE, expiry) do not wait: they are written with the next commit, or
//!   after 500 ms without traffic. Losing them in a crash only keeps an
//!   address held longer.
//! - Changes reach the committer in the order the lease table made them (they
//!   are queued while the table's lock is held); a failed commit drops the
//!   batch's replies and keeps its changes for the next attempt.
//! - A datagram we cannot read is counted (`provisioner_dhcp_malformed`) and
//!   dropped; nothing a client sends can panic the server.
//! - Sockets are bound to the site's `network.interface` (SO_BINDTODEVICE):
//!   the server never answers on another network.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use model::net::Mac;
use prometheus_client::metrics::counter::Counter;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::{
    AnswerPolicy, BootConfig, ClientMessage, Config, Decision, Destination, Lease, LeaseChange,
    Leases, Mode, NetworkOptions, PoolConfig, Port, ReplyType, Secs, UefiLoader, codec,
};
use crate::metrics::DhcpMetrics;
use crate::site::{self, DhcpAnswer, DhcpMode, Site};
use crate::store::{Store, StoreError};

/// The DHCP server port.
pub(crate) const DHCP_PORT: u16 = 67;
/// The client port.
pub(crate) const CLIENT_PORT: u16 = 68;
/// The PXE boot-server port (proxy mode REQUESTs).
pub(crate) const PXE_PORT: u16 = 4011;
/// How long an offered address is held for the client.
const OFFER_SECS: u32 = 60;
/// How long a declined address stays out of offers.
const DECLINE_SECS: u32 = 600;
/// How often expired leases are removed.
const EXPIRE_EVERY: Duration = Duration::from_secs(30);
/// Most packets' changes in one commit.
const MAX_BATCH: usize = 4096;
/// Changes that need no commit before their reply are written at the latest
/// after this much quiet time.
const LAZY_FLUSH: Duration = Duration::from_millis(500);

/// Why the DHCP server did not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DhcpError {
    #[error(
        "cannot listen for DHCP on {interface} port {port} (network.interface in site.yaml): \
         check that the interface exists, that no other DHCP server runs on it, and that \
         the provisioner runs as root (or has CAP_NET_BIND_SERVICE and CAP_NET_RAW)"
    )]
    Bind {
        interface: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("network.dhcp in site.yaml: {0}")]
    Pool(#[from] super::leases::PoolError),
    #[error("cannot read or write the DHCP leases in the store")]
    Store(#[from] StoreError),
}

/// What the server needs from the site, converted.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub interface: String,
    pub config: Config,
    /// The pool of full mode.
    pub pool: Option<PoolConfig>,
    pub reservations: Vec<(Mac, Ipv4Addr)>,
}

impl Settings {
    /// The DHCP settings of a site, or `None` when `network.dhcp.mode` is
    /// `off`. `http` is where booting machines reach our HTTP server (the
    /// API listener).
    pub(crate) fn from_site(site: &Site, http: SocketAddrV4) -> Option<Settings> {
        let network = &site.config.network;
        let dhcp = &network.dhcp;
        let server_id = network.address.addr();
        let mode = match dhcp.mode {
            DhcpMode::Off => return None,
            DhcpMode::Proxy => Mode::Proxy,
            DhcpMode::Full => Mode::Full(NetworkOptions {
                routers: dhcp.router.into_iter().collect(),
                dns_servers: dhcp.dns.clone(),
                domain_name: None,
            }),
        };
        let pool = match (dhcp.mode, dhcp.range) {
            (DhcpMode::Full, Some(range)) => Some(PoolConfig {
                subnet: network.address.trunc(),
                first: range.first,
                last: range.last,
                lease_secs: dhcp.lease_time,
                offer_secs: OFFER_SECS,
                decline_secs: DECLINE_SECS,
            }),
            _ => None,
        };
        let uefi_loader = match site.config.boot.uefi_loader {
            site::UefiLoaderWire::Snponly => UefiLoader::SnpOnly,
            site::UefiLoaderWire::Ipxe => UefiLoader::Ipxe,
        };
        Some(Settings {
            interface: network.interface.clone(),
            config: Config {
                server_id,
                mode,
                policy: policy_of(site),
                boot: BootConfig {
                    tftp_server: server_id,
                    http,
                    uefi_loader,
                },
            },
            pool,
            reservations: reservations_of(site),
        })
    }
}

/// The answer policy: `known` is the site's boot MACs.
fn policy_of(site: &Site) -> AnswerPolicy {
    match site.config.network.dhcp.answer {
        DhcpAnswer::Known => {
            AnswerPolicy::Known(site.nodes.iter().filter_map(|n| n.boot_mac).collect())
        }
        DhcpAnswer::Pxe => AnswerPolicy::Pxe,
        DhcpAnswer::All => AnswerPolicy::All,
    }
}

/// nodes.yaml `boot_mac` + `ip` pairs.
fn reservations_of(site: &Site) -> Vec<(Mac, Ipv4Addr)> {
    site.nodes
        .iter()
        .filter_map(|n| Some((n.boot_mac?, n.ip?)))
        .collect()
}

/// Where booting machines reach the provisioner's HTTP server: the API
/// listener's address, or the provisioning address when the API listens on
/// every address (or on loopback, which a machine cannot reach), with the
/// listener's port.
pub(crate) fn http_address(network: Ipv4Net, listen: SocketAddr) -> SocketAddrV4 {
    match listen {
        SocketAddr::V4(v4) if !v4.ip().is_unspecified() && !v4.ip().is_loopback() => v4,
        _ => SocketAddrV4::new(network.addr(), listen.port()),
    }
}

/// The lease table and the configuration, behind one lock.
#[derive(Debug)]
struct Core {
    config: Config,
    leases: Option<Leases>,
}

/// A reply waiting for its changes to be committed.
#[derive(Debug)]
struct Job {
    changes: Vec<LeaseChange>,
    reply: Option<(Arc<UdpSocket>, Vec<u8>, SocketAddr, ReplyType)>,
}

/// The running server, as the daemon holds it.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    core: Arc<Mutex<Core>>,
    interface: String,
    http: SocketAddrV4,
}

impl Handle {
    /// Applies a reloaded site (see [`Handle::reconfigure`]); a site whose
    /// DHCP is now `off` keeps the running server until a restart.
    pub(crate) fn apply_site(&self, site: &Site) -> Result<(), DhcpError> {
        match Settings::from_site(site, self.http) {
            Some(settings) => self.reconfigure(&settings),
            None => {
                warn!("network.dhcp.mode is now off: restart `provisioner serve` to stop DHCP");
                Ok(())
            }
        }
    }

    /// Applies a reloaded site: answer policy (known MACs), reservations,
    /// router/DNS and boot settings. Mode, interface, range and lease time
    /// need a restart (logged).
    pub(crate) fn reconfigure(&self, settings: &Settings) -> Result<(), DhcpError> {
        let mut core = lock(&self.core);
        if settings.interface != self.interface
            || std::mem::discriminant(&settings.config.mode)
                != std::mem::discriminant(&core.config.mode)
            || settings.pool.as_ref() != core.leases.as_ref().map(Leases::config)
        {
            warn!(
                "network.interface or network.dhcp mode, range or lease_time changed: restart \
                 `provisioner serve` to apply them (answer policy, reservations, router, DNS and \
                 boot settings are applied now)"
            );
        }
        if let Some(leases) = core.leases.as_mut() {
            leases.set_reservations(settings.reservations.iter().copied())?;
        }
        core.config.policy = settings.config.policy.clone();
        core.config.boot = settings.config.boot.clone();
        if let (Mode::Full(now), Mode::Full(new)) = (&mut core.config.mode, &settings.config.mode) {
            *now = new.clone();
        }
        Ok(())
    }
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> Secs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Opens a UDP socket on `interface`, port `port`, for broadcasts.
fn bind(interface: &str, port: u16) -> Result<UdpSocket, DhcpError> {
    let err = |source| DhcpError::Bind {
        interface: interface.to_owned(),
        port,
        source,
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_broadcast(true).map_err(err)?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(err)?;
    // Bursts of thousands of clients: let the kernel queue them rather than drop.
    let _ = socket.set_recv_buffer_size(8 << 20);
    let _ = socket.set_send_buffer_size(8 << 20);
    socket.set_nonblocking(true).map_err(err)?;
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    socket.bind(&addr.into()).map_err(err)?;
    UdpSocket::from_std(socket.into()).map_err(err)
}

/// Restores the leases, binds the sockets and runs the server in the
/// background. Returns the handle for site reloads.
pub(crate) async fn start(
    settings: Settings,
    store: Store,
    metrics: DhcpMetrics,
) -> Result<Handle, DhcpError> {
    let now = unix_now();
    let mut leases = match &settings.pool {
        Some(pool) => {
            let mut leases = Leases::new(pool.clone())?;
            leases.set_reservations(settings.reservations.iter().copied())?;
            let stored = store.dhcp_leases().await?;
            // Addresses a client declined stay out of offers across restarts.
            for (ip, until) in store.dhcp_declined().await? {
                leases.restore_decline(ip, until);
            }
            let mut dropped = 0usize;
            for lease in stored {
                // A lease outside today's subnet (the site changed) is dropped.
                if !leases.in_subnet(lease.ip) {
                    dropped += 1;
                    continue;
                }
                leases.restore(lease)?;
            }
            if dropped > 0 {
                warn!(
                    dropped,
                    "stored DHCP leases outside the subnet were dropped"
                );
            }
            Some(leases)
        }
        None => None,
    };
    // Expired leases go before any client is answered.
    if let Some(leases) = leases.as_mut() {
        let removed = leases.expire(now);
        if !removed.is_empty() {
            Pending::of(&removed).write(&store).await?;
        }
        info!(
            leases = leases.len(),
            interface = %settings.interface,
            "DHCP leases restored"
        );
        metrics.leases.set(leases.len() as i64);
    }
    let mut sockets = vec![(Port::Dhcp, Arc::new(bind(&settings.interface, DHCP_PORT)?))];
    if settings.config.mode == Mode::Proxy {
        sockets.push((
            Port::PxeService,
            Arc::new(bind(&settings.interface, PXE_PORT)?),
        ));
    }
    let core = Arc::new(Mutex::new(Core {
        config: settings.config.clone(),
        leases,
    }));
    let (tx, rx) = mpsc::unbounded_channel();
    let counters = Arc::new(Counters::new(&metrics));
    let progress_store = store.clone();
    tokio::spawn(committer(
        rx,
        store,
        Arc::clone(&core),
        metrics.clone(),
        Arc::clone(&counters),
    ));
    for (port, socket) in sockets {
        let (core, tx, counters) = (Arc::clone(&core), tx.clone(), Arc::clone(&counters));
        let store = progress_store.clone();
        tokio::spawn(async move {
            receive(port, socket, core, tx, counters, store).await;
        });
    }
    if settings.pool.is_some() {
        let core = Arc::clone(&core);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXPIRE_EVERY);
            loop {
                tick.tick().await;
                let mut core = lock(&core);
                if let Some(leases) = core.leases.as_mut() {
                    let changes = leases.expire(unix_now());
                    if !changes.is_empty()
                        && tx
                            .send(Job {
                                changes,
                                reply: None,
                            })
                            .is_err()
                    {
                        return;
                    }
                }
            }
        });
    }
    let mode = match settings.config.mode {
        Mode::Full(_) => "full",
        Mode::Proxy => "proxy",
    };
    info!(interface = %settings.interface, mode, "DHCP listening");
    Ok(Handle {
        core,
        interface: settings.interface,
        http: settings.config.boot.http,
    })
}

/// Counters of the fast path, resolved once.
#[derive(Debug)]
struct Counters {
    malformed: Counter,
    requests: [Counter; 6],
    replies: [Counter; 3],
    ignored: BTreeMap<&'static str, Counter>,
    send_errors: Counter,
}

impl Counters {
    fn new(metrics: &DhcpMetrics) -> Counters {
        let request = |t: &str| metrics.requests.get_or_create(&label(t)).clone();
        let reply = |t: &str| metrics.replies.get_or_create(&label(t)).clone();
        Counters {
            malformed: metrics.malformed.clone(),
            requests: [
                request("discover"),
                request("request"),
                request("decline"),
                request("release"),
                request("inform"),
                request("other"),
            ],
            replies: [reply("offer"), reply("ack"), reply("nak")],
            ignored: super::IgnoreReason::LABELS
                .iter()
                .map(|&r| (r, metrics.ignored.get_or_create(&reason(r)).clone()))
                .collect(),
            send_errors: metrics.send_errors.clone(),
        }
    }

    fn request(&self, t: ClientMessage) -> &Counter {
        &self.requests[match t {
            ClientMessage::Discover => 0,
            ClientMessage::Request => 1,
            ClientMessage::Decline => 2,
            ClientMessage::Release => 3,
            ClientMessage::Inform => 4,
            ClientMessage::Other(_) => 5,
        }]
    }

    fn reply(&self, t: ReplyType) -> &Counter {
        &self.replies[match t {
            ReplyType::Offer => 0,
            ReplyType::Ack => 1,
            ReplyType::Nak => 2,
        }]
    }

    fn ignored(&self, r: &'static str) {
        if let Some(c) = self.ignored.get(r) {
            c.inc();
        }
    }
}

fn label(t: &str) -> crate::metrics::TypeLabels {
    crate::metrics::TypeLabels { r#type: t.into() }
}

fn reason(r: &str) -> crate::metrics::ReasonLabels {
    crate::metrics::ReasonLabels { reason: r.into() }
}

/// Where a reply goes, as a socket address.
fn target(to: Destination, source: SocketAddr) -> SocketAddr {
    let client = |ip| SocketAddr::from((ip, CLIENT_PORT));
    match to {
        Destination::Broadcast => client(Ipv4Addr::BROADCAST),
        Destination::Unicast(ip) => client(ip),
        // RFC 2131 wants a unicast to the new address and the client's MAC,
        // without ARP (the client cannot answer ARP yet). That needs an ARP
        // entry or a raw socket; RFC 2131 4.1 allows the broadcast instead,
        // and every client listens for it.
        Destination::UnicastHardware { .. } => client(Ipv4Addr::BROADCAST),
        Destination::Relay(giaddr) => SocketAddr::from((giaddr, DHCP_PORT)),
        Destination::Source => source,
    }
}

async fn receive(
    port: Port,
    socket: Arc<UdpSocket>,
    core: Arc<Mutex<Core>>,
    tx: mpsc::UnboundedSender<Job>,
    counters: Arc<Counters>,
    store: Store,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, source) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(err) => {
                // ICMP errors of earlier sends surface here; keep serving.
                debug!(%err, "DHCP receive error");
                continue;
            }
        };
        let request = match codec::decode(&buf[..len]) {
            Ok(r) => r,
            Err(err) => {
                counters.malformed.inc();
                debug!(%source, %err, "malformed DHCP packet dropped");
                continue;
            }
        };
        counters.request(request.message_type).inc();
        // A network-boot client: note it for the node with that boot MAC (a timeout
        // can then say DHCP was seen). Boot clients are few; ordinary ones (and load
        // generators) cost nothing here.
        if super::boot::classify(&request) != super::ClientKind::Ordinary {
            let (store, mac) = (store.clone(), request.mac.to_string());
            tokio::spawn(async move {
                let step = crate::progress::Step::Dhcp;
                if let Err(err) = store
                    .record_progress_by_mac(&mac, step, chrono::Utc::now())
                    .await
                {
                    debug!(%mac, %err, "DHCP progress not recorded");
                }
            });
        }
        let immediate = {
            let mut guard = lock(&core);
            let core = &mut *guard;
            let decision = super::handle(
                &request,
                port,
                &core.config,
                core.leases.as_mut(),
                unix_now(),
            );
            match decision {
                Decision::Ignore(why) => {
                    counters.ignored(why.label());
                    debug!(mac = %request.mac, ?why, "DHCP request ignored");
                    None
                }
                Decision::Recorded { changes } => {
                    if !changes.is_empty() {
                        let _ = tx.send(Job {
                            changes,
                            reply: None,
                        });
                    }
                    None
                }
                Decision::Send { reply, to, changes } => match codec::encode(&reply) {
                    Err(err) => {
                        // The lease table already moved: persist it anyway.
                        error!(mac = %request.mac, %err, "DHCP reply not encodable; dropped");
                        counters.ignored("config");
                        if !changes.is_empty() {
                            let _ = tx.send(Job {
                                changes,
                                reply: None,
                            });
                        }
                        None
                    }
                    Ok(bytes) => {
                        let dest = target(to, source);
                        if changes.is_empty() {
                            Some((bytes, dest, reply.message_type))
                        } else if reply.message_type == ReplyType::Offer {
                            // An offer promises nothing (the client must
                            // REQUEST it, and that ACK waits for a commit):
                            // it goes now, its changes ride with the next commit.
                            let _ = tx.send(Job {
                                changes,
                                reply: None,
                            });
                            Some((bytes, dest, reply.message_type))
                        } else {
                            let _ = tx.send(Job {
                                changes,
                                reply: Some((Arc::clone(&socket), bytes, dest, reply.message_type)),
                            });
                            None
                        }
                    }
                },
            }
        };
        if let Some((bytes, dest, t)) = immediate {
            send(&socket, &bytes, dest, t, &counters).await;
        }
    }
}

async fn send(
    socket: &UdpSocket,
    bytes: &[u8],
    dest: SocketAddr,
    t: ReplyType,
    counters: &Counters,
) {
    match socket.send_to(bytes, dest).await {
        Ok(_) => {
            counters.reply(t).inc();
        }
        Err(err) => {
            counters.send_errors.inc();
            debug!(%dest, %err, "DHCP reply not sent");
        }
    }
}

/// Lease changes not yet committed: the final state of every MAC they touched
/// (in MAC order), and of every decline mark (`None`: ended).
#[derive(Debug, Default, PartialEq)]
struct Pending {
    leases: BTreeMap<Mac, Option<Lease>>,
    declined: BTreeMap<Ipv4Addr, Option<Secs>>,
}

impl Pending {
    fn of(changes: &[LeaseChange]) -> Pending {
        let mut pending = Pending::default();
        pending.merge(changes);
        pending
    }

    fn merge(&mut self, changes: &[LeaseChange]) {
        for change in changes {
            match change {
                LeaseChange::Upsert(lease) => {
                    self.leases.insert(lease.mac, Some(lease.clone()));
                }
                LeaseChange::Remove { mac, .. } => {
                    self.leases.insert(*mac, None);
                }
                LeaseChange::Declined { ip, until } => {
                    self.declined.insert(*ip, Some(*until));
                }
                LeaseChange::DeclineEnded { ip } => {
                    self.declined.insert(*ip, None);
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.leases.len() + self.declined.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn clear(&mut self) {
        self.leases.clear();
        self.declined.clear();
    }

    async fn write(&self, store: &Store) -> Result<(), crate::store::StoreError> {
        let leases: Vec<(Mac, Option<Lease>)> =
            self.leases.iter().map(|(m, l)| (*m, l.clone())).collect();
        let declined: Vec<(Ipv4Addr, Option<Secs>)> =
            self.declined.iter().map(|(ip, u)| (*ip, *u)).collect();
        store.write_dhcp_leases(&leases, &declined).await
    }
}

/// Group commit: takes every job queued, commits their changes in one
/// transaction, then sends their replies.
async fn committer(
    mut rx: mpsc::UnboundedReceiver<Job>,
    store: Store,
    core: Arc<Mutex<Core>>,
    metrics: DhcpMetrics,
    counters: Arc<Counters>,
) {
    // Changes of a failed commit, retried with the next batch.
    let mut pending = Pending::default();
    let mut batch = Vec::new();
    loop {
        match tokio::time::timeout(LAZY_FLUSH, rx.recv_many(&mut batch, MAX_BATCH)).await {
            Ok(0) => return,
            Ok(_) => {}
            // Quiet: write what offers, releases and expiry left pending.
            Err(_) if pending.is_empty() => continue,
            Err(_) => {}
        }
        for job in &batch {
            pending.merge(&job.changes);
        }
        let durable = batch.iter().any(|job| job.reply.is_some()) || pending.len() >= MAX_BATCH;
        if !durable && !batch.is_empty() {
            // Only changes that need no commit before a reply (offers,
            // RELEASE/DECLINE, expiry): they wait for the next ACK's commit
            // or the quiet-time flush.
            batch.clear();
            continue;
        }
        let started = Instant::now();
        let result = pending.write(&store).await;
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.batch_packets.observe(batch.len() as f64);
        match result {
            Ok(()) => {
                pending.clear();
                for job in batch.drain(..) {
                    if let Some((socket, bytes, dest, t)) = job.reply {
                        send(&socket, &bytes, dest, t, &counters).await;
                    }
                }
            }
            Err(err) => {
                metrics.commit_failures.inc();
                error!(%err, packets = batch.len(), "DHCP lease commit failed; replies dropped, clients will retry");
                batch.clear();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if let Some(leases) = lock(&core).leases.as_ref() {
            metrics.leases.set(leases.len() as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::LeaseState;

    fn lease(mac: u8, ip: u8) -> Lease {
        Lease {
            mac: Mac([2, 0, 0, 0, 0, mac]),
            ip: Ipv4Addr::new(10, 0, 0, ip),
            expires_at: 100,
            state: LeaseState::Bound,
            hostname: None,
        }
    }

    #[test]
    fn pending_keeps_the_last_change_of_each_mac_and_each_decline() {
        let changes = vec![
            LeaseChange::Upsert(lease(1, 10)),
            LeaseChange::Upsert(lease(2, 11)),
            LeaseChange::Remove {
                mac: lease(1, 10).mac,
                ip: lease(1, 10).ip,
            },
            LeaseChange::Upsert(lease(1, 12)),
            LeaseChange::Remove {
                mac: lease(2, 11).mac,
                ip: lease(2, 11).ip,
            },
            LeaseChange::Declined {
                ip: lease(2, 11).ip,
                until: 700,
            },
            LeaseChange::Declined {
                ip: lease(1, 10).ip,
                until: 600,
            },
            LeaseChange::DeclineEnded {
                ip: lease(1, 10).ip,
            },
        ];
        let pending = Pending::of(&changes);
        assert_eq!(
            pending.leases.into_iter().collect::<Vec<_>>(),
            vec![
                (lease(1, 12).mac, Some(lease(1, 12))),
                (lease(2, 11).mac, None)
            ]
        );
        assert_eq!(
            pending.declined.into_iter().collect::<Vec<_>>(),
            vec![(lease(1, 10).ip, None), (lease(2, 11).ip, Some(700))]
        );
    }

    #[test]
    fn replies_go_where_rfc_2131_says() {
        let src: SocketAddr = "10.0.0.5:4011".parse().unwrap();
        let bcast: SocketAddr = "255.255.255.255:68".parse().unwrap();
        assert_eq!(target(Destination::Broadcast, src), bcast);
        assert_eq!(
            target(
                Destination::UnicastHardware {
                    ip: Ipv4Addr::new(10, 0, 0, 9),
                    mac: Mac([2; 6])
                },
                src
            ),
            bcast
        );
        assert_eq!(
            target(Destination::Unicast(Ipv4Addr::new(10, 0, 0, 9)), src),
            "10.0.0.9:68".parse().unwrap()
        );
        assert_eq!(
            target(Destination::Relay(Ipv4Addr::new(10, 1, 0, 1)), src),
            "10.1.0.1:67".parse().unwrap()
        );
        assert_eq!(target(Destination::Source, src), src);
    }

    #[test]
    fn http_address_is_reachable_from_the_network() {
        let net: Ipv4Net = "10.213.0.1/24".parse().unwrap();
        assert_eq!(
            http_address(net, "0.0.0.0:8080".parse().unwrap()),
            "10.213.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            http_address(net, "127.0.0.1:9000".parse().unwrap()),
            "10.213.0.1:9000".parse().unwrap()
        );
        assert_eq!(
            http_address(net, "10.213.0.1:8080".parse().unwrap()),
            "10.213.0.1:8080".parse().unwrap()
        );
    }
}
