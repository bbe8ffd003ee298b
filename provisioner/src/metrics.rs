//! Prometheus metrics served at `/metrics`: nodes per state (read from the
//! store at scrape time, so they never drift), API requests and latencies.
//!
//! Invariant: label values come from fixed sets (route templates, methods,
//! status codes, states), never from request paths, so cardinality is bounded.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::lifecycle::State;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BootScriptLabels {
    /// The machine's MAC, or `other` past `MAX_MAC_LABELS` distinct MACs.
    pub mac: String,
    pub script: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabels {
    pub state: String,
    pub maintenance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TypeLabels {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub reason: String,
}

/// The DHCP server's metrics (handles shared with the server's tasks).
#[derive(Debug, Clone)]
pub(crate) struct DhcpMetrics {
    /// Requests by message type (discover, request, decline, release, inform, other).
    pub requests: Family<TypeLabels, Counter>,
    /// Replies sent by type (offer, ack, nak).
    pub replies: Family<TypeLabels, Counter>,
    /// Requests not answered, by reason.
    pub ignored: Family<ReasonLabels, Counter>,
    pub malformed: Counter,
    pub send_errors: Counter,
    /// Leases in the table (offered or bound).
    pub leases: Gauge,
    /// Packets whose lease changes went into one commit.
    pub batch_packets: Histogram,
    pub commit_seconds: Histogram,
    pub commit_failures: Counter,
}

impl DhcpMetrics {
    fn new(registry: &mut Registry) -> DhcpMetrics {
        let m = DhcpMetrics {
            requests: Family::default(),
            replies: Family::default(),
            ignored: Family::default(),
            malformed: Counter::default(),
            send_errors: Counter::default(),
            leases: Gauge::default(),
            batch_packets: Histogram::new([
                1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 4096.0,
            ]),
            commit_seconds: latency_histogram(),
            commit_failures: Counter::default(),
        };
        registry.register(
            "dhcp_requests",
            "DHCP requests received by message type",
            m.requests.clone(),
        );
        registry.register(
            "dhcp_replies",
            "DHCP replies sent by type (offer, ack, nak)",
            m.replies.clone(),
        );
        registry.register(
            "dhcp_ignored",
            "DHCP requests not answered, by reason",
            m.ignored.clone(),
        );
        registry.register(
            "dhcp_malformed",
            "Malformed DHCP datagrams dropped",
            m.malformed.clone(),
        );
        registry.register(
            "dhcp_send_errors",
            "DHCP replies the kernel refused to send",
            m.send_errors.clone(),
        );
        registry.register(
            "dhcp_leases",
            "DHCP leases in the table (offered or bound)",
            m.leases.clone(),
        );
        registry.register(
            "dhcp_commit_batch_packets",
            "Packets whose lease changes were committed together (group commit)",
            m.batch_packets.clone(),
        );
        registry.register(
            "dhcp_commit_duration_seconds",
            "Time to commit one batch of lease changes",
            m.commit_seconds.clone(),
        );
        registry.register(
            "dhcp_commit_failures",
            "Lease commits that failed (their replies were dropped)",
            m.commit_failures.clone(),
        );
        m
    }
}

/// Every metric of the daemon.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub nodes: Family<StateLabels, Gauge>,
    pub site_reloads: Family<OutcomeLabels, Counter>,
    pub timeouts: Counter,
    pub tftp_transfers: Family<OutcomeLabels, Counter>,
    pub tftp_malformed: Counter,
    pub tftp_bytes: Counter,
    pub boot_scripts: Family<BootScriptLabels, Counter>,
    pub boot_token_refusals: Counter,
    pub dhcp: DhcpMetrics,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("provisioner");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let nodes = Family::<StateLabels, Gauge>::default();
        let site_reloads = Family::<OutcomeLabels, Counter>::default();
        let timeouts = Counter::default();
        let tftp_transfers = Family::<OutcomeLabels, Counter>::default();
        let tftp_malformed = Counter::default();
        let tftp_bytes = Counter::default();
        let boot_scripts = Family::<BootScriptLabels, Counter>::default();
        registry.register(
            "boot_scripts",
            "iPXE scripts served, by MAC and script (inspect, local-disk, wait)",
            boot_scripts.clone(),
        );
        registry.register(
            "api_requests",
            "API requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "API request latency by route",
            latency.clone(),
        );
        registry.register(
            "nodes",
            "Nodes per lifecycle state and maintenance flag",
            nodes.clone(),
        );
        registry.register(
            "site_reloads",
            "Site reloads by outcome (applied, refused)",
            site_reloads.clone(),
        );
        registry.register(
            "wait_timeouts",
            "Wait states that timed out",
            timeouts.clone(),
        );
        registry.register(
            "tftp_transfers",
            "TFTP transfers by outcome (completed, aborted_by_client, failed, refused)",
            tftp_transfers.clone(),
        );
        registry.register(
            "tftp_malformed_packets",
            "Malformed TFTP packets dropped",
            tftp_malformed.clone(),
        );
        registry.register(
            "tftp_sent_bytes",
            "File bytes sent over TFTP",
            tftp_bytes.clone(),
        );
        let boot_token_refusals = Counter::default();
        registry.register(
            "boot_token_refusals",
            "iPXE scripts asked for from another address than the MAC's DHCP lease: \
             answered with a wait script, without a boot token",
            boot_token_refusals.clone(),
        );
        let dhcp = DhcpMetrics::new(&mut registry);
        Metrics {
            boot_token_refusals,
            dhcp,
            registry,
            requests,
            latency,
            nodes,
            site_reloads,
            timeouts,
            tftp_transfers,
            tftp_malformed,
            tftp_bytes,
            boot_scripts,
        }
    }
}

impl Metrics {
    /// Sets the node gauges from a fresh count; states absent from `counts` read 0.
    pub(crate) fn set_nodes(&self, counts: &[(State, bool, i64)]) {
        for state in State::ALL {
            for maintenance in [false, true] {
                let n = counts
                    .iter()
                    .filter(|(s, m, _)| *s == state && *m == maintenance)
                    .map(|(_, _, n)| *n)
                    .sum::<i64>();
                self.nodes
                    .get_or_create(&StateLabels {
                        state: state.to_string(),
                        maintenance: maintenance.to_string(),
                    })
                    .set(n);
            }
        }
    }

    /// Brings the TFTP counters up to the server's own atomic counts.
    pub(crate) fn set_tftp(&self, stats: &crate::tftp::TftpStats) {
        use std::sync::atomic::Ordering::Relaxed;
        let catch_up = |counter: &Counter, now: u64| {
            let seen = counter.get();
            if now > seen {
                counter.inc_by(now - seen);
            }
        };
        for (outcome, value) in [
            ("completed", &stats.completed),
            ("aborted_by_client", &stats.aborted_by_client),
            ("failed", &stats.failed),
            ("refused", &stats.refused),
        ] {
            catch_up(
                &self.tftp_transfers.get_or_create(&OutcomeLabels {
                    outcome: outcome.into(),
                }),
                value.load(Relaxed),
            );
        }
        catch_up(&self.tftp_malformed, stats.malformed.load(Relaxed));
        catch_up(&self.tftp_bytes, stats.bytes_sent.load(Relaxed));
    }

    /// Counts one iPXE script served.
    pub(crate) fn count_boot_script(&self, mac: String, script: &str) {
        self.boot_scripts
            .get_or_create(&BootScriptLabels {
                mac,
                script: script.to_owned(),
            })
            .inc();
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        encode(&mut out, &self.registry).expect("encode metrics into a String");
        out
    }
}

/// Distinct MACs counted under their own label; the rest count as `other`.
pub(crate) const MAX_MAC_LABELS: usize = 4096;

/// The MACs that have their own metrics label.
#[derive(Debug, Default)]
pub(crate) struct MacLabels(std::sync::Mutex<std::collections::HashSet<model::net::Mac>>);

impl MacLabels {
    /// The label for `mac`: itself while fewer than [`MAX_MAC_LABELS`] are known.
    pub(crate) fn label(&self, mac: model::net::Mac) -> String {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&mac) || seen.len() < MAX_MAC_LABELS {
            seen.insert(mac);
            mac.to_string()
        } else {
            "other".to_owned()
        }
    }
}
