//! `site.yaml`: the provisioning network, DHCP, the API listener and the
//! image catalog. Wire types (what the operator writes, with JSON Schema)
//! and the validated domain types the daemon uses.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::diag::{At, FileCtx};
use super::yaml::child;

// ---------------------------------------------------------------- wire types

/// `site.yaml`: the provisioning network, the API listener and the image
/// catalog of a site.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Site configuration (site.yaml)")]
pub struct SiteFile {
    /// The provisioning network: the interface the provisioner serves DHCP,
    /// TFTP and HTTP boot on.
    pub network: NetworkWire,
    /// The REST API.
    #[serde(default)]
    pub api: ApiWire,
    /// Images that profiles can deploy (and the inspection ramdisk).
    #[serde(default)]
    pub images: Vec<ImageWire>,
    /// How long nodes may wait in each lifecycle step.
    #[serde(default)]
    pub lifecycle: Option<LifecycleWire>,
    /// Network-boot services: the boot files and the TFTP server.
    #[serde(default)]
    pub boot: Option<BootWire>,
    /// Discovery of machines that are not in nodes.yaml.
    #[serde(default)]
    pub discovery: Option<DiscoveryWire>,
}

/// Discovery: what happens when a machine that is not in nodes.yaml boots
/// the inspection ramdisk (DHCP answer policy `pxe` or `all`) and its agent
/// reports.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryWire {
    /// Enroll such a machine as a discovered node (named `discovered-` plus
    /// its serial number, or its MAC when it has none), store its inventory
    /// and make it `available`. Default false: its report is refused and
    /// logged, and the node stays unknown.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Network-boot services.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootWire {
    /// Directory of boot files served over TFTP (iPXE binaries:
    /// `undionly.kpxe`, `ipxe.efi`, `snponly.efi`). Default `/usr/lib/ipxe`
    /// (Debian's `ipxe` package). Relative paths are taken from the site directory.
    #[serde(default)]
    pub files: Option<String>,
    /// The TFTP server (read-only) on the provisioning address.
    #[serde(default)]
    pub tftp: Option<TftpWire>,
    /// The catalog image (a ramdisk: `kernel` + `initramfs`) that unknown,
    /// enrolled and inspecting machines boot to be inspected. Without it,
    /// those machines get a script that says so and retries.
    #[serde(default)]
    pub inspect_image: Option<String>,
    /// The iPXE build DHCP hands to UEFI x64 PXE firmware: `snponly`
    /// (`snponly.efi`, drives the NIC through the firmware; works on any
    /// NIC; the default) or `ipxe` (`ipxe.efi`, iPXE's own NIC drivers).
    #[serde(default)]
    pub uefi_loader: Option<UefiLoaderWire>,
}

/// The iPXE build for UEFI x64 PXE clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UefiLoaderWire {
    /// `snponly.efi`.
    #[default]
    Snponly,
    /// `ipxe.efi`.
    Ipxe,
}

/// TFTP server settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TftpWire {
    /// Serve TFTP. Default: on when `network.dhcp.mode` is `full` or `proxy`
    /// (PXE firmware fetches its first file over TFTP), off otherwise.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// UDP port. Default 69, the port PXE firmware uses.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// Transfers served at once at most; more requests get a "busy" error
    /// and the client retries. Default 256.
    #[serde(default)]
    #[schemars(range(min = 1, max = 65536))]
    pub max_transfers: Option<usize>,
    /// Largest block size granted (RFC 2348). Default 1468, which fits a
    /// 1500-byte MTU without IP fragmentation.
    #[serde(default)]
    #[schemars(range(min = 512, max = 65464))]
    pub max_blksize: Option<u16>,
}

/// The section names of `site.yaml`, in the order of [`SiteFile`].
pub(crate) const SITE_SECTIONS: &[&str] =
    &["network", "api", "images", "lifecycle", "boot", "discovery"];

/// Lifecycle settings. Every wait has a timeout: a node that does not get
/// through a step in time is marked `failed` with a reason saying what to check.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LifecycleWire {
    /// Seconds a node may spend `inspecting` (booting the ramdisk and
    /// reporting its inventory). Default 1200 (20 minutes); at least 10.
    #[serde(default)]
    #[schemars(range(min = 10, max = 604800))]
    pub inspect_timeout: Option<u64>,
    /// Seconds a node may spend `deploying`. Default 3600; at least 10.
    #[serde(default)]
    #[schemars(range(min = 10, max = 604800))]
    pub deploy_timeout: Option<u64>,
    /// Seconds a node may spend `cleaning`. Default 3600; at least 10.
    #[serde(default)]
    #[schemars(range(min = 10, max = 604800))]
    pub clean_timeout: Option<u64>,
    /// How many nodes may be booting (powered on and not yet through their wait
    /// state) at once; the others wait their turn, and their timeout starts when
    /// they are powered on. Default 8; 1 to 1000.
    #[serde(default)]
    #[schemars(range(min = 1, max = 1000))]
    pub max_concurrent_boots: Option<usize>,
    /// Attempts at a BMC call (boot device, power) before the node fails; transient
    /// failures only (unreachable, timeout, the BMC's 5xx), with exponential back-off
    /// from 1 s to 30 s. Default 6; 1 to 20.
    #[serde(default)]
    #[schemars(range(min = 1, max = 20))]
    pub bmc_attempts: Option<u32>,
    /// Zero-touch: inspect every enrolled node that has a BMC as soon as it is
    /// enrolled (one-time network boot and power on). Default true; false leaves
    /// enrolled nodes alone until `provisioner node inspect NAME`.
    #[serde(default)]
    pub auto_inspect: Option<bool>,
    /// What the inspection agent does once the node's inventory is stored:
    /// `poweroff` (default; the node waits powered off until it is deployed)
    /// or `wait` (the agent keeps running and heartbeating, handy to watch a
    /// lab machine's console).
    #[serde(default)]
    pub after_inspection: Option<AfterInspection>,
    /// Seconds between the heartbeats of an idle inspection agent (how long
    /// it pauses after a `wait` answer); `provisioner node apply` reaches a
    /// waiting agent within this time. Default 10; 1 to 300.
    #[serde(default)]
    #[schemars(range(min = 1, max = 300))]
    pub heartbeat_interval: Option<u32>,
}

/// What the inspection agent does once the node's inventory is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AfterInspection {
    /// Power the machine off.
    #[default]
    Poweroff,
    /// Keep the agent running, heartbeating.
    Wait,
}

/// The provisioning network.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkWire {
    /// Interface name on the provisioner host, e.g. `br0` or `eno2`.
    pub interface: String,
    /// The provisioner's own IPv4 address on that interface with the prefix
    /// length, e.g. `10.213.0.1/24`. The subnet bounds the DHCP range.
    pub address: String,
    /// DHCP service. Absent means `mode: off` (another DHCP server hands out
    /// addresses and points machines at the provisioner).
    #[serde(default)]
    pub dhcp: Option<DhcpWire>,
}

/// DHCP service on the provisioning network.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DhcpWire {
    /// `full`: lease addresses from `range`; `proxy`: answer PXE clients
    /// with boot information only (proxyDHCP) while another server leases
    /// addresses; `off`: no DHCP at all.
    pub mode: DhcpMode,
    /// First and last address to lease, inclusive, inside the subnet of
    /// `network.address`. Required in `full` mode.
    #[serde(default)]
    #[schemars(length(min = 2, max = 2))]
    pub range: Option<Vec<String>>,
    /// Default gateway handed to clients (inside the subnet). Optional.
    #[serde(default)]
    pub router: Option<String>,
    /// DNS servers handed to clients (IPv4).
    #[serde(default)]
    pub dns: Vec<String>,
    /// Lease time in seconds (default 3600, at least 60).
    #[serde(default)]
    #[schemars(range(min = 60))]
    pub lease_time: Option<u32>,
    /// Which clients get an answer: `known` (only machines in nodes.yaml,
    /// by boot MAC; the default), `pxe` (any PXE/HTTP-boot client, so new
    /// machines can be discovered), `all` (any DHCP client).
    #[serde(default)]
    pub answer: DhcpAnswer,
}

/// DHCP mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// Lease addresses and send boot information.
    Full,
    /// Send boot information only (proxyDHCP, port 4011 and 67).
    Proxy,
    /// No DHCP service.
    Off,
}

/// Which DHCP clients the provisioner answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DhcpAnswer {
    /// Only machines listed in nodes.yaml (matched by boot MAC).
    #[default]
    Known,
    /// Any client that asks for a network boot (PXE or UEFI HTTP boot).
    Pxe,
    /// Any DHCP client.
    All,
}

/// The REST API listener.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiWire {
    /// Socket address to listen on, e.g. `0.0.0.0:8080` (default
    /// `127.0.0.1:8080`). Booting machines reach the API through the
    /// provisioning network address.
    #[serde(default)]
    pub listen: Option<String>,
}

/// One image in the catalog: exactly one of `url`, `path`, `host`, or the
/// pair `kernel` + `initramfs` (a ramdisk booted over the network, such as
/// the inspection ramdisk of `boot.inspect_image`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageWire {
    /// Image name, referred to by profiles: lowercase letters, digits and
    /// `-`, at most 63 characters.
    #[schemars(pattern(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// Where to download the image (http:// or https://). Needs `sha256`.
    #[serde(default)]
    pub url: Option<String>,
    /// Image file on the provisioner host, relative to the site directory
    /// or absolute.
    #[serde(default)]
    pub path: Option<String>,
    /// Ramdisk images: the Linux kernel (`vmlinuz`) on the provisioner host,
    /// relative to the site directory or absolute. Needs `initramfs`.
    #[serde(default)]
    pub kernel: Option<String>,
    /// Ramdisk images: the initramfs (cpio archive) for `kernel`.
    #[serde(default)]
    pub initramfs: Option<String>,
    /// Host images (what `deploy` writes to a node's disk): the
    /// `manifest.json` of `provisioner image build host`, relative to the
    /// site directory or absolute; its `host.raw.zst` must be next to it.
    #[serde(default)]
    pub host: Option<String>,
    /// SHA-256 of the image, 64 hex digits. Required with `url`; optional
    /// with `path`, for images built locally (e.g. by `provisioner image
    /// build`) whose digest is not known when the site is written.
    #[serde(default)]
    #[schemars(pattern(r"^[0-9a-fA-F]{64}$"))]
    pub sha256: Option<String>,
}

// -------------------------------------------------------------- domain types

/// Validated `site.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// The provisioning network.
    pub network: NetworkConfig,
    /// The REST API.
    pub api: ApiConfig,
    /// The image catalog, in file order; names are unique.
    pub images: Vec<ImageSpec>,
    /// Lifecycle timeouts.
    pub lifecycle: LifecycleConfig,
    /// Network-boot services.
    pub boot: BootConfig,
    /// Discovery of machines not in nodes.yaml.
    pub discovery: DiscoveryConfig,
}

/// Validated discovery settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Enroll unknown machines whose agent reports.
    pub enabled: bool,
}

/// Validated network-boot settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// Boot-files directory (absolute, or joined to the site directory).
    pub files: PathBuf,
    /// TFTP server, when enabled.
    pub tftp: Option<TftpConfigSpec>,
    /// The ramdisk image inspection boots (a [`ImageSource::Ramdisk`] of the catalog).
    pub inspect_image: Option<String>,
    /// The iPXE build for UEFI x64 PXE clients.
    pub uefi_loader: UefiLoaderWire,
}

/// Validated TFTP settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TftpConfigSpec {
    pub port: u16,
    pub max_transfers: usize,
    pub max_blksize: u16,
}

/// Validated lifecycle settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleConfig {
    pub inspect_timeout: Duration,
    pub deploy_timeout: Duration,
    pub clean_timeout: Duration,
    pub max_concurrent_boots: usize,
    pub bmc_attempts: u32,
    pub auto_inspect: bool,
    pub after_inspection: AfterInspection,
    /// Seconds an idle agent waits between heartbeats.
    pub heartbeat_interval_s: u32,
}

impl LifecycleConfig {
    /// The part the state machine decides with.
    pub fn policy(&self) -> crate::lifecycle::Policy {
        crate::lifecycle::Policy {
            inspect_timeout: self.inspect_timeout,
            deploy_timeout: self.deploy_timeout,
            clean_timeout: self.clean_timeout,
            power_off_after_inspection: self.after_inspection == AfterInspection::Poweroff,
        }
    }
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        // The timeouts are the state machine's documented defaults, stated once.
        let policy = crate::lifecycle::Policy::default();
        LifecycleConfig {
            inspect_timeout: policy.inspect_timeout,
            deploy_timeout: policy.deploy_timeout,
            clean_timeout: policy.clean_timeout,
            max_concurrent_boots: 8,
            bmc_attempts: 6,
            auto_inspect: true,
            after_inspection: AfterInspection::default(),
            heartbeat_interval_s: 10,
        }
    }
}

/// The provisioning network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Interface name.
    pub interface: String,
    /// The provisioner's address and subnet (`addr()` is the provisioner,
    /// `network()` the subnet).
    pub address: Ipv4Net,
    /// DHCP service.
    pub dhcp: DhcpConfig,
}

/// DHCP service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// Mode.
    pub mode: DhcpMode,
    /// Lease range, inclusive; `Some` in `full` mode.
    pub range: Option<DhcpRange>,
    /// Default gateway for clients.
    pub router: Option<Ipv4Addr>,
    /// DNS servers for clients.
    pub dns: Vec<Ipv4Addr>,
    /// Lease time in seconds.
    pub lease_time: u32,
    /// Which clients get an answer.
    pub answer: DhcpAnswer,
}

/// An inclusive address range inside the provisioning subnet, `first <= last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpRange {
    /// First address leased.
    pub first: Ipv4Addr,
    /// Last address leased.
    pub last: Ipv4Addr,
}

impl DhcpRange {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.first <= ip && ip <= self.last
    }

    /// Number of addresses in the range.
    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Default DHCP lease time (seconds).
pub const DEFAULT_LEASE_TIME: u32 = 3600;
/// Default API listen address.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:8080";

/// The REST API listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Listen address.
    pub listen: SocketAddr,
}

/// One image of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Unique name.
    pub name: String,
    /// Where the image comes from.
    pub source: ImageSource,
    /// Lowercase hex SHA-256; always `Some` for URL images.
    pub sha256: Option<String>,
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Downloaded from this http(s) URL.
    Url(String),
    /// A file on the provisioner host (relative paths already joined to
    /// the site directory).
    Path(PathBuf),
    /// A network-booted ramdisk: kernel and initramfs files on the
    /// provisioner host (relative paths already joined to the site directory).
    Ramdisk { kernel: PathBuf, initramfs: PathBuf },
    /// A host image (deployable): its manifest as read at load time, and
    /// the manifest file and compressed disk (`host.raw.zst`) next to it.
    Host {
        manifest_path: PathBuf,
        disk: PathBuf,
        manifest: Box<model::host::HostManifest>,
    },
}

// ---------------------------------------------------------------- checking

/// Builds the domain config from a parsed `site.yaml`, reporting every
/// problem into `ctx`. Returns `None` when anything is wrong.
pub(crate) fn check(ctx: &mut FileCtx<'_>, root: &Value, dir: &Path) -> Option<SiteConfig> {
    let before = ctx.diags.len();
    let map = ctx.top_mapping(
        root,
        "site.yaml needs `network:` and may have `api:`, `images:`, `lifecycle:`, `boot:` and `discovery:`",
    )?;
    for key in map.keys().filter(|k| !SITE_SECTIONS.contains(&k.as_str())) {
        ctx.report(
            &child("", key),
            At::Key,
            format!(
                "unknown section `{key}`; expected one of `network`, `api`, `images`, `lifecycle`, `boot`, `discovery`"
            ),
        );
    }
    let network = match map.get("network") {
        None => {
            ctx.report(
                "",
                At::Value,
                "missing section `network` (required): give `interface` and `address`",
            );
            None
        }
        Some(v) => ctx
            .de::<NetworkWire>(v, "/network")
            .and_then(|w| check_network(ctx, w)),
    };
    let api = match map.get("api") {
        None => Some(ApiConfig {
            listen: DEFAULT_API_LISTEN.parse().expect("valid default"),
        }),
        Some(v) => ctx.de::<ApiWire>(v, "/api").and_then(|w| check_api(ctx, w)),
    };
    let images = match map.get("images") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => check_images(ctx, items, dir),
        Some(_) => {
            ctx.report(
                "/images",
                At::Value,
                "expected a list of images (`- name: ...`)",
            );
            None
        }
    };
    let lifecycle = match map.get("lifecycle") {
        None | Some(Value::Null) => Some(LifecycleConfig::default()),
        Some(v) => ctx
            .de::<LifecycleWire>(v, "/lifecycle")
            .and_then(|w| check_lifecycle(ctx, w)),
    };
    let boot = match map.get("boot") {
        None | Some(Value::Null) => Some(BootWire::default()),
        Some(v) => ctx.de::<BootWire>(v, "/boot"),
    }
    .and_then(|w| check_boot(ctx, w, dir, network.as_ref()));
    if let (Some(boot), Some(images)) = (&boot, &images) {
        check_inspect_image(ctx, boot, images);
    }
    let discovery = match map.get("discovery") {
        None | Some(Value::Null) => Some(DiscoveryWire::default()),
        Some(v) => ctx.de::<DiscoveryWire>(v, "/discovery"),
    }
    .map(|w| DiscoveryConfig {
        enabled: w.enabled.unwrap_or(false),
    });
    if ctx.diags.len() > before {
        return None;
    }
    Some(SiteConfig {
        boot: boot?,
        network: network?,
        api: api?,
        images: images?,
        lifecycle: lifecycle?,
        discovery: discovery?,
    })
}

/// Parses an IPv4 address field, reporting a failure.
fn ipv4(ctx: &mut FileCtx<'_>, pointer: &str, text: &str) -> Option<Ipv4Addr> {
    match text.parse::<Ipv4Addr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            ctx.report(
                pointer,
                At::Value,
                format!("invalid IPv4 address {text:?}: write it as 10.213.0.1"),
            );
            None
        }
    }
}

fn check_network(ctx: &mut FileCtx<'_>, w: NetworkWire) -> Option<NetworkConfig> {
    let mut ok = true;
    let iface = w.interface.as_str();
    if iface.is_empty()
        || iface.len() > 15
        || iface.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
    {
        ctx.report(
            "/network/interface",
            At::Value,
            format!("invalid interface name {iface:?}: 1-15 characters, no '/', ':' or spaces"),
        );
        ok = false;
    }
    let address = parse_cidr(&w.address);
    if let Err(msg) = &address {
        ctx.report("/network/address", At::Value, msg);
    }
    let dhcp = match w.dhcp {
        None => Some(DhcpConfig {
            mode: DhcpMode::Off,
            range: None,
            router: None,
            dns: Vec::new(),
            lease_time: DEFAULT_LEASE_TIME,
            answer: DhcpAnswer::Known,
        }),
        Some(d) => check_dhcp(ctx, d, address.as_ref().ok().copied()),
    };
    match (ok, address, dhcp) {
        (true, Ok(address), Some(dhcp)) => Some(NetworkConfig {
            interface: w.interface,
            address,
            dhcp,
        }),
        _ => None,
    }
}

/// Parses the provisioner's `address/prefix`, refusing the subnet's network
/// and broadcast addresses.
pub(crate) fn parse_cidr(text: &str) -> Result<Ipv4Net, String> {
    let Some((ip, prefix)) = text.split_once('/') else {
        return Err(format!(
            "{text:?} has no prefix length: write the provisioner's address with its subnet, \
             e.g. 10.213.0.1/24"
        ));
    };
    let ip: Ipv4Addr = ip.parse().map_err(|_| {
        format!("invalid IPv4 address {ip:?} in {text:?}: write e.g. 10.213.0.1/24")
    })?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("invalid prefix length in {text:?}: use 0 to 32, e.g. /24"))?;
    let net = Ipv4Net::new(ip, prefix).map_err(|e| format!("invalid address {text:?}: {e}"))?;
    if prefix < 31 && (ip == net.network() || ip == net.broadcast()) {
        let which = if ip == net.network() {
            "network"
        } else {
            "broadcast"
        };
        return Err(format!(
            "{ip} is the {which} address of {}: give the provisioner's own host address, e.g. {}/{prefix}",
            net.trunc(),
            Ipv4Addr::from(u32::from(net.network()) + 1)
        ));
    }
    Ok(net)
}

/// Checks that a range lies in `net`, is ordered and leaves out the
/// provisioner's address. Returns one message per problem.
pub(crate) fn check_range(net: Ipv4Net, first: Ipv4Addr, last: Ipv4Addr) -> Vec<(usize, String)> {
    let subnet = net.trunc();
    let mut problems = Vec::new();
    for (i, ip) in [(0, first), (1, last)] {
        if !subnet.contains(&ip) {
            problems.push((
                i,
                format!("{ip} is outside the subnet {subnet} of network.address"),
            ));
        } else if subnet.prefix_len() < 31 && (ip == subnet.network() || ip == subnet.broadcast()) {
            problems.push((
                i,
                format!("{ip} is the network or broadcast address of {subnet}"),
            ));
        }
    }
    if first > last {
        problems.push((
            0,
            format!("the range is reversed: first {first} is after last {last}"),
        ));
    } else if problems.is_empty() && first <= net.addr() && net.addr() <= last {
        problems.push((
            0,
            format!(
                "the range {first}-{last} includes the provisioner's own address {}: leave it out",
                net.addr()
            ),
        ));
    }
    problems
}

fn check_dhcp(ctx: &mut FileCtx<'_>, d: DhcpWire, net: Option<Ipv4Net>) -> Option<DhcpConfig> {
    let before = ctx.diags.len();
    if d.mode == DhcpMode::Proxy {
        let full_only = [
            ("range", d.range.is_some()),
            ("router", d.router.is_some()),
            ("dns", !d.dns.is_empty()),
            ("lease_time", d.lease_time.is_some()),
        ];
        for (field, present) in full_only {
            if present {
                ctx.report(
                    &format!("/network/dhcp/{field}"),
                    At::Key,
                    "only used in `mode: full`; in proxy mode the other DHCP server hands out \
                     addresses: remove it",
                );
            }
        }
    }
    let mut range = None;
    match &d.range {
        None if d.mode == DhcpMode::Full => ctx.report(
            "/network/dhcp",
            At::Key,
            "`mode: full` needs `range: [first, last]`, e.g. [10.213.0.100, 10.213.0.199]",
        ),
        None => {}
        Some(r) if r.len() != 2 => ctx.report(
            "/network/dhcp/range",
            At::Value,
            format!("expected two addresses [first, last], found {}", r.len()),
        ),
        Some(r) => {
            let first = ipv4(ctx, "/network/dhcp/range/0", &r[0]);
            let last = ipv4(ctx, "/network/dhcp/range/1", &r[1]);
            if let (Some(first), Some(last)) = (first, last) {
                let problems = net.map(|n| check_range(n, first, last)).unwrap_or_default();
                for (i, msg) in &problems {
                    ctx.report(&format!("/network/dhcp/range/{i}"), At::Value, msg);
                }
                if problems.is_empty() {
                    range = Some(DhcpRange { first, last });
                }
            }
        }
    }
    let router = d
        .router
        .as_deref()
        .and_then(|r| ipv4(ctx, "/network/dhcp/router", r));
    if let (Some(router), Some(net)) = (router, net)
        && !net.trunc().contains(&router)
    {
        ctx.report(
                "/network/dhcp/router",
                At::Value,
                format!("router {router} is outside the subnet {} of network.address: clients could not reach it", net.trunc()),
            );
    }
    let mut dns = Vec::new();
    for (i, s) in d.dns.iter().enumerate() {
        dns.extend(ipv4(ctx, &format!("/network/dhcp/dns/{i}"), s));
    }
    let lease_time = d.lease_time.unwrap_or(DEFAULT_LEASE_TIME);
    if lease_time < 60 {
        ctx.report(
            "/network/dhcp/lease_time",
            At::Value,
            format!("lease_time {lease_time} s is too short: use at least 60"),
        );
    }
    if ctx.diags.len() > before {
        return None;
    }
    Some(DhcpConfig {
        mode: d.mode,
        range,
        router,
        dns,
        lease_time,
        answer: d.answer,
    })
}

fn check_boot(
    ctx: &mut FileCtx<'_>,
    w: BootWire,
    dir: &Path,
    network: Option<&NetworkConfig>,
) -> Option<BootConfig> {
    let files = match w.files.as_deref() {
        None => PathBuf::from("/usr/lib/ipxe"),
        Some("") => {
            ctx.report(
                "/boot/files",
                At::Value,
                "empty path: give the boot-files directory, e.g. /usr/lib/ipxe",
            );
            return None;
        }
        Some(path) => dir.join(path),
    };
    let tftp = w.tftp.unwrap_or_default();
    let serves_pxe = network.is_some_and(|n| n.dhcp.mode != DhcpMode::Off);
    let enabled = tftp.enabled.unwrap_or(serves_pxe);
    let mut ok = true;
    if tftp.port == Some(0) {
        ctx.report(
            "/boot/tftp/port",
            At::Value,
            "port 0: give a UDP port (69 for PXE firmware)",
        );
        ok = false;
    }
    if let Some(n) = tftp.max_transfers.filter(|n| !(1..=65536).contains(n)) {
        ctx.report(
            "/boot/tftp/max_transfers",
            At::Value,
            format!("{n} transfers: give 1 to 65536"),
        );
        ok = false;
    }
    if let Some(n) = tftp.max_blksize.filter(|n| !(512..=65464).contains(n)) {
        ctx.report(
            "/boot/tftp/max_blksize",
            At::Value,
            format!("block size {n}: give 512 to 65464 (1468 fits a 1500-byte MTU)"),
        );
        ok = false;
    }
    if let Some(name) = w
        .inspect_image
        .as_deref()
        .filter(|n| !model::profile::is_valid_name(n))
    {
        ctx.report(
            "/boot/inspect_image",
            At::Value,
            format!("invalid image name {name:?}: give the `name` of a ramdisk image in `images`"),
        );
        ok = false;
    }
    ok.then(|| BootConfig {
        inspect_image: w.inspect_image,
        files,
        uefi_loader: w.uefi_loader.unwrap_or_default(),
        tftp: enabled.then(|| TftpConfigSpec {
            port: tftp.port.unwrap_or(69),
            max_transfers: tftp.max_transfers.unwrap_or(256),
            max_blksize: tftp.max_blksize.unwrap_or(1468),
        }),
    })
}

/// `boot.inspect_image` must name a ramdisk image of the catalog.
fn check_inspect_image(ctx: &mut FileCtx<'_>, boot: &BootConfig, images: &[ImageSpec]) {
    let Some(name) = &boot.inspect_image else {
        return;
    };
    match images.iter().find(|i| &i.name == name) {
        Some(ImageSpec {
            source: ImageSource::Ramdisk { .. },
            ..
        }) => {}
        Some(_) => ctx.report(
            "/boot/inspect_image",
            At::Value,
            format!(
                "image {name:?} is not a ramdisk: give it `kernel:` and `initramfs:` instead of \
                 `url`/`path`, or name another image"
            ),
        ),
        None => {
            let known: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
            ctx.report(
                "/boot/inspect_image",
                At::Value,
                format!(
                    "no image named {name:?} in `images` (known: {}): add it with `kernel:` and \
                     `initramfs:`, or fix the name",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
    }
}

fn check_lifecycle(ctx: &mut FileCtx<'_>, w: LifecycleWire) -> Option<LifecycleConfig> {
    let defaults = LifecycleConfig::default();
    let mut ok = true;
    let mut seconds = |field: &str, value: Option<u64>, default: Duration| match value {
        None => default,
        Some(s) if (10..=604_800).contains(&s) => Duration::from_secs(s),
        Some(s) => {
            ctx.report(
                &format!("/lifecycle/{field}"),
                At::Value,
                format!(
                    "{field} is {s} s: give a number of seconds between 10 and 604800 (7 days)"
                ),
            );
            ok = false;
            default
        }
    };
    let config = LifecycleConfig {
        inspect_timeout: seconds(
            "inspect_timeout",
            w.inspect_timeout,
            defaults.inspect_timeout,
        ),
        deploy_timeout: seconds("deploy_timeout", w.deploy_timeout, defaults.deploy_timeout),
        clean_timeout: seconds("clean_timeout", w.clean_timeout, defaults.clean_timeout),
        max_concurrent_boots: w
            .max_concurrent_boots
            .unwrap_or(defaults.max_concurrent_boots),
        bmc_attempts: w.bmc_attempts.unwrap_or(defaults.bmc_attempts),
        auto_inspect: w.auto_inspect.unwrap_or(defaults.auto_inspect),
        after_inspection: w.after_inspection.unwrap_or_default(),
        heartbeat_interval_s: w
            .heartbeat_interval
            .unwrap_or(defaults.heartbeat_interval_s),
    };
    if !(1..=300).contains(&config.heartbeat_interval_s) {
        ctx.report(
            "/lifecycle/heartbeat_interval",
            At::Value,
            format!(
                "heartbeat_interval is {} s: give a number of seconds between 1 and 300",
                config.heartbeat_interval_s
            ),
        );
        ok = false;
    }
    if !(1..=1000).contains(&config.max_concurrent_boots) {
        ctx.report(
            "/lifecycle/max_concurrent_boots",
            At::Value,
            format!(
                "max_concurrent_boots is {}: give a number of nodes between 1 and 1000",
                config.max_concurrent_boots
            ),
        );
        ok = false;
    }
    if !(1..=20).contains(&config.bmc_attempts) {
        ctx.report(
            "/lifecycle/bmc_attempts",
            At::Value,
            format!(
                "bmc_attempts is {}: give a number of attempts between 1 and 20",
                config.bmc_attempts
            ),
        );
        ok = false;
    }
    ok.then_some(config)
}

fn check_api(ctx: &mut FileCtx<'_>, w: ApiWire) -> Option<ApiConfig> {
    let text = w.listen.as_deref().unwrap_or(DEFAULT_API_LISTEN);
    match text.parse::<SocketAddr>() {
        Ok(listen) => Some(ApiConfig { listen }),
        Err(_) => {
            ctx.report(
                "/api/listen",
                At::Value,
                format!("invalid listen address {text:?}: write ADDRESS:PORT, e.g. 0.0.0.0:8080 or [::]:8080"),
            );
            None
        }
    }
}

fn check_images(ctx: &mut FileCtx<'_>, items: &[Value], dir: &Path) -> Option<Vec<ImageSpec>> {
    let before = ctx.diags.len();
    let mut images = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let ptr = format!("/images/{i}");
        let Some(w) = ctx.de::<ImageWire>(item, &ptr) else {
            continue;
        };
        let mut ok = true;
        if !model::profile::is_valid_name(&w.name) {
            ctx.report(
                &format!("{ptr}/name"),
                At::Value,
                format!(
                    "invalid image name {:?}: use 1-63 lowercase letters, digits and '-'",
                    w.name
                ),
            );
            ok = false;
        } else if let Some(first) = seen.get(&w.name) {
            ctx.report(
                &format!("{ptr}/name"),
                At::Value,
                format!(
                    "duplicate image name {:?} (first at {first}): rename one",
                    w.name
                ),
            );
            ok = false;
        } else {
            seen.insert(w.name.clone(), ctx.where_is(&format!("{ptr}/name")));
        }
        let source = match (&w.url, &w.path, &w.kernel, &w.initramfs) {
            _ if w.host.is_some() => {
                if w.url.is_some()
                    || w.path.is_some()
                    || w.kernel.is_some()
                    || w.initramfs.is_some()
                {
                    ctx.report(
                        &format!("{ptr}/host"),
                        At::Key,
                        "give one source: `url`, `path`, `host`, or `kernel` + `initramfs`, not several",
                    );
                    None
                } else {
                    host_image(ctx, &ptr, w.host.as_deref().unwrap_or_default(), dir)
                }
            }
            (None, None, None, None) => {
                ctx.report(
                    &ptr,
                    At::Value,
                    "no image source: add `url: https://...`, `path: FILE`, `host: \
                     DIR/manifest.json` for a host image, or `kernel: FILE` with \
                     `initramfs: FILE` for a ramdisk",
                );
                None
            }
            (Some(url), None, None, None) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 9 {
                    ctx.report(
                        &format!("{ptr}/url"),
                        At::Value,
                        format!("invalid image URL {url:?}: use http:// or https://"),
                    );
                    None
                } else {
                    Some(ImageSource::Url(url.clone()))
                }
            }
            (None, Some(p), None, None) => {
                image_file(ctx, &ptr, "path", p, dir).map(ImageSource::Path)
            }
            (None, None, Some(kernel), Some(initramfs)) => {
                let kernel = image_file(ctx, &ptr, "kernel", kernel, dir);
                let initramfs = image_file(ctx, &ptr, "initramfs", initramfs, dir);
                kernel
                    .zip(initramfs)
                    .map(|(kernel, initramfs)| ImageSource::Ramdisk { kernel, initramfs })
            }
            (None, None, Some(_), None) => {
                ctx.report(
                    &format!("{ptr}/kernel"),
                    At::Key,
                    "a ramdisk image needs `initramfs: FILE` next to `kernel`",
                );
                None
            }
            (None, None, None, Some(_)) => {
                ctx.report(
                    &format!("{ptr}/initramfs"),
                    At::Key,
                    "a ramdisk image needs `kernel: FILE` next to `initramfs`",
                );
                None
            }
            (url, path, kernel, _) => {
                let (field, message) = if url.is_some() && path.is_some() {
                    ("path", "give either `url` or `path`, not both")
                } else {
                    (
                        if kernel.is_some() {
                            "kernel"
                        } else {
                            "initramfs"
                        },
                        "give one source: `url`, `path`, or `kernel` + `initramfs`, not several",
                    )
                };
                ctx.report(&format!("{ptr}/{field}"), At::Key, message);
                None
            }
        };
        let sha256 = match &w.sha256 {
            Some(s) if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                ctx.report(
                    &format!("{ptr}/sha256"),
                    At::Value,
                    format!(
                        "invalid sha256 {s:?}: write the 64 hex digits printed by `sha256sum FILE`"
                    ),
                );
                ok = false;
                None
            }
            Some(s) => Some(s.to_ascii_lowercase()),
            None => {
                if matches!(source, Some(ImageSource::Url(_))) {
                    ctx.report(
                        &ptr,
                        At::Value,
                        "`url` images need `sha256` (64 hex digits) so a tampered or truncated \
                         download is refused",
                    );
                    ok = false;
                }
                None
            }
        };
        if let (true, Some(source)) = (ok, source) {
            images.push(ImageSpec {
                name: w.name,
                source,
                sha256,
            });
        }
    }
    if ctx.diags.len() > before {
        None
    } else {
        Some(images)
    }
}

/// A `host:` image: reads and parses its manifest and checks that the
/// compressed disk it names is next to it with the size it gives.
fn host_image(ctx: &mut FileCtx<'_>, ptr: &str, value: &str, dir: &Path) -> Option<ImageSource> {
    let manifest_path = image_file(ctx, ptr, "host", value, dir)?;
    let field = format!("{ptr}/host");
    let text = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => text,
        Err(err) => {
            ctx.report(
                &field,
                At::Value,
                format!(
                    "cannot read the host image manifest {}: {err}; build it with `provisioner \
                     image build host --out DIR` and give DIR/manifest.json",
                    manifest_path.display()
                ),
            );
            return None;
        }
    };
    let manifest: model::host::HostManifest = match serde_json::from_str(&text) {
        Ok(manifest) => manifest,
        Err(err) => {
            ctx.report(
                &field,
                At::Value,
                format!(
                    "{} is not a host image manifest: {err}; give the manifest.json written \
                     by `provisioner image build host`",
                    manifest_path.display()
                ),
            );
            return None;
        }
    };
    let file = &manifest.disk.compressed.file;
    let disk = match (manifest_path.parent(), Path::new(file).file_name()) {
        (Some(parent), Some(name)) if name == std::ffi::OsStr::new(file) => parent.join(name),
        _ => {
            ctx.report(
                &field,
                At::Value,
                format!(
                    "{}: disk file {file:?} is not a plain file name next to the manifest",
                    manifest_path.display()
                ),
            );
            return None;
        }
    };
    match std::fs::metadata(&disk) {
        Ok(meta) if meta.is_file() && meta.len() == manifest.disk.compressed.size => {
            Some(ImageSource::Host {
                manifest_path,
                disk,
                manifest: Box::new(manifest),
            })
        }
        Ok(meta) => {
            ctx.report(
                &field,
                At::Value,
                format!(
                    "{} is {} bytes but {} says {}: the image and its manifest are from \
                     different builds; build the host image again",
                    disk.display(),
                    meta.len(),
                    manifest_path.display(),
                    manifest.disk.compressed.size
                ),
            );
            None
        }
        Err(err) => {
            ctx.report(
                &field,
                At::Value,
                format!(
                    "{} (named by {}) cannot be read: {err}; copy the whole output directory \
                     of `provisioner image build host`",
                    disk.display(),
                    manifest_path.display()
                ),
            );
            None
        }
    }
}

/// A file field of an image (`path`, `kernel`, `initramfs`, `host`): not
/// empty, joined to the site directory.
fn image_file(
    ctx: &mut FileCtx<'_>,
    ptr: &str,
    field: &str,
    value: &str,
    dir: &Path,
) -> Option<PathBuf> {
    if value.is_empty() {
        ctx.report(
            &format!("{ptr}/{field}"),
            At::Value,
            format!("empty `{field}`: give the file, relative to the site directory or absolute"),
        );
        return None;
    }
    Some(dir.join(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        parse_cidr(s).unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr() {
        let n = net("10.213.0.1/24");
        assert_eq!(n.addr(), ip("10.213.0.1"));
        assert_eq!(n.trunc().to_string(), "10.213.0.0/24");
        assert_eq!(net("192.168.1.0/31").prefix_len(), 31);
        let cases = [
            ("10.213.0.1", "no prefix length"),
            ("10.213.0.1/33", "invalid prefix length"),
            ("10.213.0.1/x", "invalid prefix length"),
            ("10.213.0/24", "invalid IPv4 address"),
            (
                "10.213.0.0/24",
                "the network address of 10.213.0.0/24: give the provisioner's own host address, e.g. 10.213.0.1/24",
            ),
            ("10.213.0.255/24", "broadcast address"),
        ];
        for (input, expected) in cases {
            let err = parse_cidr(input).unwrap_err();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }

    #[test]
    fn ranges() {
        let n = net("10.213.0.1/24");
        assert_eq!(
            check_range(n, ip("10.213.0.100"), ip("10.213.0.199")),
            vec![]
        );
        let msgs = |a, b| -> Vec<(usize, String)> { check_range(n, ip(a), ip(b)) };
        assert_eq!(msgs("10.213.1.100", "10.213.0.199")[0].0, 0);
        assert!(
            msgs("10.213.1.100", "10.213.0.199")[0]
                .1
                .contains("outside the subnet 10.213.0.0/24")
        );
        let m = msgs("10.213.0.100", "10.213.1.5");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0, 1);
        assert!(
            msgs("10.213.0.199", "10.213.0.100")[0]
                .1
                .contains("reversed")
        );
        assert!(
            msgs("10.213.0.0", "10.213.0.10")[0]
                .1
                .contains("network or broadcast")
        );
        assert!(
            msgs("10.213.0.1", "10.213.0.10")[0]
                .1
                .contains("provisioner's own address")
        );
        let r = DhcpRange {
            first: ip("10.213.0.100"),
            last: ip("10.213.0.199"),
        };
        assert_eq!(r.len(), 100);
        assert!(r.contains(ip("10.213.0.150")));
        assert!(!r.contains(ip("10.213.0.200")));
    }
}
