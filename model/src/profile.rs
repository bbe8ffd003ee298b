//! Hardware profiles: selectors over a machine's inventory plus the roles the
//! machine takes when it matches. One profile per file in a site's
//! `profiles/` directory.
//!
//! The types here are the wire format (serde + schemars, unknown fields
//! refused). [`Profile::validate`] checks what serde cannot (names, regexes,
//! PCI ids) and returns every problem with the JSON pointer of the field, so
//! the caller can point at a file, line and column. The layout sections
//! (`cpu`, `hugepages`, `iommu`, `sriov`, `disks`, `kernel`) say what the
//! provisioner's planner derives from the machine's topology; field names
//! follow the PerformanceProfile and sriov-network-operator where they exist.
//!
//! This module does no I/O.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cpulist::parse_cpulist;
pub use crate::inventory::DiskKind;

/// A hardware profile: which machines it applies to (`match`) and what they
/// become (`roles`, `image`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Hardware profile")]
pub struct Profile {
    /// Profile name, unique in the site: lowercase letters, digits and `-`,
    /// at most 63 characters (it appears in URLs and node records).
    #[schemars(pattern(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// Tie breaker when several profiles match a machine: the higher priority
    /// wins. Default 0.
    #[serde(default)]
    pub priority: i32,
    /// Selectors over the machine's inventory. Every selector given must hold
    /// for the profile to match; `match: {}` matches every machine.
    #[serde(rename = "match")]
    pub selectors: Selectors,
    /// Roles of a matching machine (at least one).
    #[schemars(length(min = 1))]
    pub roles: Vec<Role>,
    /// Name of the image from the site's image catalog (`site.yaml`
    /// `images`) that matching machines are deployed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU isolation: housekeeping (reserved) and isolated CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuLayout>,
    /// Hugepages per size and per NUMA node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<HugepagesLayout>,
    /// Turn the IOMMU on in pass-through mode (`intel_iommu=on iommu=pt` or
    /// `amd_iommu=on iommu=pt`). Implied by any `vfio-pci` SR-IOV entry.
    #[serde(default, skip_serializing_if = "is_false")]
    pub iommu: bool,
    /// SR-IOV virtual functions per physical function (sriov-network-operator's
    /// `SriovNetworkNodePolicy`, in snake_case).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sriov: Vec<SriovPolicy>,
    /// Root disk hints and data disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<DiskLayout>,
    /// Kernel command line additions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelLayout>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The role of a machine in the edge cloud.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs tenant workloads (VMs, containers), usually with SR-IOV and hugepages.
    Compute,
    /// Network functions (routers, gateways, load balancers).
    Network,
    /// Storage services on local disks.
    Storage,
}

impl Role {
    /// The lowercase name used in YAML and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Compute => "compute",
            Role::Network => "network",
            Role::Storage => "storage",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Selectors over inventory. All given selectors must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Selectors {
    /// System (DMI) vendor and product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemSelector>,
    /// CPU model and size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuSelector>,
    /// Installed memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemorySelector>,
    /// Network interfaces: each entry must be satisfied by the machine's NICs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<NicSelector>,
    /// Disks: each entry must be satisfied by the machine's disks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskSelector>,
}

/// System (DMI) identity. Strings are compared exactly (case-sensitive) with
/// `/sys/class/dmi/id/sys_vendor` and `product_name`, trimmed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemSelector {
    /// System vendor, e.g. `Dell Inc.`, `QEMU`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Product name, e.g. `PowerEdge R750`, `Standard PC (Q35 + ICH9, 2009)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
}

/// CPU selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CpuSelector {
    /// Regular expression (Rust `regex` syntax) searched in the CPU model name
    /// (`/proc/cpuinfo` "model name"), unanchored: use `^...$` to anchor.
    /// Escape literal parentheses: `Xeon\(R\) Gold 63`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Minimum number of physical cores over all sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_cores: Option<u32>,
}

impl CpuSelector {
    /// Whether `model` (the inventory's CPU model name) contains a match for
    /// the `model` regex; `true` without one, `false` when it is invalid
    /// (validation reports that).
    pub fn model_matches(&self, model: &str) -> bool {
        match &self.model {
            None => true,
            Some(re) => regex::Regex::new(re).is_ok_and(|re| re.is_match(model)),
        }
    }
}

/// Memory selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemorySelector {
    /// Minimum installed memory in GiB (2^30 bytes).
    #[schemars(range(min = 1))]
    pub min_gib: u64,
}

/// NIC selector: at least `min_count` NICs with these properties. An entry
/// with only `min_count` counts every NIC. SR-IOV virtual functions are
/// never counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NicSelector {
    /// PCI vendor id, 4 hex digits, quoted (e.g. `"8086"` Intel, `"15b3"` Mellanox/NVIDIA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9a-fA-F]{4}$"))]
    pub vendor_id: Option<String>,
    /// PCI device id of the physical function, 4 hex digits, quoted (e.g. `"159b"` E810).
    /// Needs `vendor_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9a-fA-F]{4}$"))]
    pub device_id: Option<String>,
    /// Kernel driver name, e.g. `ice`, `mlx5_core`, `igb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Minimum number of matching NICs (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_count: u32,
}

/// Disk selector: at least `min_count` disks with these properties.
/// Removable disks (USB sticks, card readers) are never counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSelector {
    /// Bus of the disk: nvme, sata, sas, virtio, scsi, usb, unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DiskKind>,
    /// `true` for spinning disks, `false` for flash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    /// Minimum size of each counted disk in GB (10^9 bytes, as disks are sold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_size_gb: Option<u64>,
    /// Minimum number of matching disks (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_count: u32,
}

fn one() -> u32 {
    1
}

fn rest() -> String {
    "rest".to_owned()
}

fn default_host_reserve_mib() -> u64 {
    2048
}

/// Which driver virtual functions are bound to (sriov-network-operator's `deviceType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DeviceType {
    /// `vfio-pci`: handed to VMs or DPDK in user space; needs the IOMMU.
    #[serde(rename = "vfio-pci")]
    VfioPci,
    /// The NIC's own VF driver: kernel network interfaces.
    #[serde(rename = "netdevice")]
    Netdevice,
}

impl DeviceType {
    /// The name used in YAML and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::VfioPci => "vfio-pci",
            DeviceType::Netdevice => "netdevice",
        }
    }
}

fn default_device_type() -> DeviceType {
    DeviceType::Netdevice
}

/// CPU isolation (PerformanceProfile `cpu.reserved` / `cpu.isolated`). Give
/// either `reserved_per_numa_node` or `reserved`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CpuLayout {
    /// Housekeeping cores to reserve on every NUMA node that has CPUs: the
    /// lowest-numbered physical cores of the node, each with all its
    /// hyperthread siblings (so 2 reserves 4 CPUs with SMT on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub reserved_per_numa_node: Option<u32>,
    /// Explicit housekeeping CPUs as a kernel cpulist, e.g. `"0-1,32-33"`.
    /// Must keep hyperthread siblings together and leave every NUMA node
    /// with CPUs both reserved and isolated CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<String>,
    /// Isolated CPUs: `rest` (default: every online CPU not reserved) or a
    /// cpulist such as `"2-31,34-63"`.
    #[serde(default = "rest")]
    pub isolated: String,
}

/// Hugepages (PerformanceProfile `hugepages`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HugepagesLayout {
    /// Default hugepage size (`default_hugepagesz`); must be the size of one
    /// of `pages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_size: Option<PageSize>,
    /// Memory of each NUMA node kept out of hugepages for the host, in MiB
    /// (default 2048). `percent` is taken of the node's memory minus this.
    #[serde(default = "default_host_reserve_mib")]
    pub host_reserve_mib: u64,
    /// Pages to allocate (at least one entry).
    #[schemars(length(min = 1))]
    pub pages: Vec<HugepageRequest>,
}

/// Hugepages of one size: a `count` per node or a `percent` of each node's
/// memory after the host reserve (rounded down to whole pages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HugepageRequest {
    /// Page size: `2M` or `1G` (1G needs the `pdpe1gb` CPU flag).
    pub size: PageSize,
    /// Number of pages on each selected node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<u64>,
    /// Percentage (1-100) of each selected node's memory after the host reserve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub percent: Option<u8>,
    /// NUMA node id, or `all` (default) for every node with memory.
    #[serde(default)]
    pub node: HugepageNode,
}

/// Hugepage size.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum PageSize {
    /// 2 MiB pages (needs the `pse` CPU flag).
    #[serde(rename = "2M")]
    Size2M,
    /// 1 GiB pages (needs the `pdpe1gb` CPU flag).
    #[serde(rename = "1G")]
    Size1G,
}

impl PageSize {
    /// Page size in KiB, as in sysfs `hugepages-<N>kB`.
    pub fn kib(self) -> u64 {
        match self {
            PageSize::Size2M => 2048,
            PageSize::Size1G => 1024 * 1024,
        }
    }

    /// The kernel's spelling (`2M`, `1G`).
    pub fn as_str(self) -> &'static str {
        match self {
            PageSize::Size2M => "2M",
            PageSize::Size1G => "1G",
        }
    }

    /// The CPU flag the size needs.
    pub fn cpu_flag(self) -> &'static str {
        match self {
            PageSize::Size2M => "pse",
            PageSize::Size1G => "pdpe1gb",
        }
    }
}

/// Which NUMA nodes a hugepage entry applies to: a node id or `all`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum HugepageNode {
    /// Every NUMA node that has memory.
    #[default]
    All,
    /// One node.
    Id(u32),
}

impl Serialize for HugepageNode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HugepageNode::All => s.serialize_str("all"),
            HugepageNode::Id(id) => s.serialize_u32(*id),
        }
    }
}

impl<'de> Deserialize<'de> for HugepageNode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HugepageNode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a NUMA node id (0, 1, ...) or \"all\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HugepageNode, E> {
                u32::try_from(v)
                    .map(HugepageNode::Id)
                    .map_err(|_| E::custom(format!("NUMA node id {v} is too large")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HugepageNode, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("a NUMA node id is 0 or more (or use \"all\")"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HugepageNode, E> {
                match v {
                    "all" => Ok(HugepageNode::All),
                    _ => Err(E::custom(format!(
                        "unknown node {v:?}: write a NUMA node id (0, 1, ...) or \"all\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for HugepageNode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "HugepageNode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A NUMA node id, or \"all\" for every node with memory.",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"const": "all"}
            ]
        })
    }
}

impl fmt::Display for HugepageNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HugepageNode::All => f.write_str("all"),
            HugepageNode::Id(id) => write!(f, "{id}"),
        }
    }
}

/// Virtual functions on the physical functions a selector picks
/// (sriov-network-operator `SriovNetworkNodePolicy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SriovPolicy {
    /// Which physical functions get VFs. Every given field must hold.
    pub nic_selector: SriovNicSelector,
    /// VFs per selected physical function (at most its `sriov_totalvfs`).
    #[schemars(range(min = 1))]
    pub num_vfs: u32,
    /// VF driver: `netdevice` (default, kernel interfaces) or `vfio-pci`
    /// (user space; turns the IOMMU on).
    #[serde(default = "default_device_type")]
    pub device_type: DeviceType,
    /// MTU of the physical function (68-9710).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 68, max = 9710))]
    pub mtu: Option<u32>,
    /// When true, a selector that matches no NIC is a warning, not an error.
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
}

/// Physical function selector (sriov-network-operator `nicSelector`:
/// `vendor`, `deviceID`, `pfNames`, `rootDevices`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SriovNicSelector {
    /// PCI vendor id, 4 hex digits, quoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9a-fA-F]{4}$"))]
    pub vendor_id: Option<String>,
    /// PCI device id of the physical function, 4 hex digits, quoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9a-fA-F]{4}$"))]
    pub device_id: Option<String>,
    /// Kernel driver of the physical function, e.g. `ice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Interface names of the physical functions, e.g. `ens1f0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pf_names: Vec<String>,
    /// PCI addresses of the physical functions, e.g. `0000:17:00.0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pci_addresses: Vec<String>,
}

/// Disks: where the host image goes and which disks the storage role gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskLayout {
    /// Root device hints (Ironic style). Without them the root disk is the
    /// smallest non-removable disk of at least 4 GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<RootDiskHints>,
    /// Data disk rules, applied in order to the disks left after the root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<DataDiskRule>,
}

/// Root device hints: every given hint must hold. When several disks
/// qualify, the smallest wins, then the first by `by_path`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RootDiskHints {
    /// Minimum size in GiB (2^30 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_size_gib: Option<u64>,
    /// Bus of the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DiskKind>,
    /// `false` for flash, `true` for spinning disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    /// Exact model string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Exact serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Exact World Wide Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// Exact `/dev/disk/by-path/` name, e.g. `pci-0000:5e:00.0-nvme-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_path: Option<String>,
}

/// Data disks: the disks (other than the root and those taken by earlier
/// rules) that match every given field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataDiskRule {
    /// Bus of the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DiskKind>,
    /// `false` for flash, `true` for spinning disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    /// Minimum size in GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_size_gib: Option<u64>,
    /// `all-remaining` (default): every matching disk; `one`: the first.
    #[serde(rename = "use", default)]
    pub take: DataDiskUse,
    /// Fewer matching disks than this is a plan error (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_count: u32,
}

/// How many disks a data rule takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DataDiskUse {
    /// Every matching disk left.
    #[default]
    #[serde(rename = "all-remaining")]
    AllRemaining,
    /// The first matching disk (smallest, then by path).
    #[serde(rename = "one")]
    One,
}

/// Kernel command line additions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KernelLayout {
    /// Extra arguments appended after the generated ones, one per item
    /// (`nosoftlockup`, `tsc=reliable`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

/// Kernel arguments the planner generates; `kernel.extra_args` may not set them.
pub const GENERATED_KERNEL_ARGS: &[&str] = &[
    "default_hugepagesz",
    "hugepagesz",
    "hugepages",
    "isolcpus",
    "nohz_full",
    "rcu_nocbs",
    "irqaffinity",
    "intel_iommu",
    "amd_iommu",
    "iommu",
];

fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
    b.len() == 12
        && hex(0..4)
        && b[4] == b':'
        && hex(5..7)
        && b[7] == b':'
        && hex(8..10)
        && b[10] == b'.'
        && (b'0'..=b'7').contains(&b[11])
}

/// One problem found by [`Profile::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileIssue {
    /// JSON pointer of the offending field inside the profile document,
    /// e.g. `/match/nics/0/vendor_id`.
    pub pointer: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// Whether `name` is a valid profile (or node, image) name: a DNS label in
/// lowercase, 1 to 63 characters of `a-z`, `0-9` and `-`, not starting or
/// ending with `-`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_pci_id(s: &str) -> bool {
    s.len() == 4 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Profile {
    /// Checks what serde cannot: name syntax, roles, CPU regex, PCI ids,
    /// counts. Returns every problem found (empty when valid). Whether
    /// `image` exists in the site catalog is the site loader's business.
    pub fn validate(&self) -> Vec<ProfileIssue> {
        let mut issues = Vec::new();
        let mut issue =
            |pointer: String, message: String| issues.push(ProfileIssue { pointer, message });
        if !is_valid_name(&self.name) {
            issue(
                "/name".into(),
                format!(
                    "invalid profile name {:?}: use 1-63 lowercase letters, digits and '-', \
                     not starting or ending with '-'",
                    self.name
                ),
            );
        }
        if self.roles.is_empty() {
            issue(
                "/roles".into(),
                "no roles: list at least one of compute, network, storage".into(),
            );
        }
        for (i, role) in self.roles.iter().enumerate() {
            if self.roles[..i].contains(role) {
                issue(
                    format!("/roles/{i}"),
                    format!("role {role} is listed twice; remove one"),
                );
            }
        }
        if let Some(image) = self.image.as_ref().filter(|i| !is_valid_name(i)) {
            issue(
                "/image".into(),
                format!("invalid image name {image:?}: use the name of an image in site.yaml"),
            );
        }
        let sel = &self.selectors;
        if let Some(system) = &sel.system {
            for (field, value) in [("vendor", &system.vendor), ("product", &system.product)] {
                if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    issue(
                        format!("/match/system/{field}"),
                        format!("empty system {field}: remove it or give the DMI value"),
                    );
                }
            }
        }
        if let Some(cpu) = &sel.cpu {
            if let Some((model, Err(e))) = cpu.model.as_ref().map(|m| (m, regex::Regex::new(m))) {
                // The regex error is multi-line (it draws the pattern); keep the last line.
                let detail = e.to_string();
                let detail = detail.lines().last().unwrap_or_default().trim().to_owned();
                issue(
                    "/match/cpu/model".into(),
                    format!("invalid regular expression {model:?}: {detail}"),
                );
            }
            if cpu.min_cores == Some(0) {
                issue(
                    "/match/cpu/min_cores".into(),
                    "min_cores must be at least 1".into(),
                );
            }
        }
        if sel.memory.as_ref().is_some_and(|m| m.min_gib == 0) {
            issue(
                "/match/memory/min_gib".into(),
                "min_gib must be at least 1".into(),
            );
        }
        for (i, nic) in sel.nics.iter().enumerate() {
            for (field, value) in [("vendor_id", &nic.vendor_id), ("device_id", &nic.device_id)] {
                if let Some(v) = value.as_ref().filter(|v| !is_pci_id(v)) {
                    issue(
                        format!("/match/nics/{i}/{field}"),
                        format!(
                            "invalid PCI {field} {v:?}: write 4 hex digits in quotes, e.g. \"8086\""
                        ),
                    );
                }
            }
            if nic.device_id.is_some() && nic.vendor_id.is_none() {
                issue(
                    format!("/match/nics/{i}/device_id"),
                    "device_id without vendor_id: add the vendor_id of the NIC".into(),
                );
            }
            if nic.driver.as_deref().is_some_and(|d| d.trim().is_empty()) {
                issue(
                    format!("/match/nics/{i}/driver"),
                    "empty driver name: remove it".into(),
                );
            }
            if nic.min_count == 0 {
                issue(
                    format!("/match/nics/{i}/min_count"),
                    "min_count must be at least 1".into(),
                );
            }
        }
        for (i, disk) in sel.disks.iter().enumerate() {
            if disk.min_count == 0 {
                issue(
                    format!("/match/disks/{i}/min_count"),
                    "min_count must be at least 1".into(),
                );
            }
            if disk.min_size_gb == Some(0) {
                issue(
                    format!("/match/disks/{i}/min_size_gb"),
                    "min_size_gb must be at least 1 (or leave it out)".into(),
                );
            }
        }
        self.validate_layout(&mut issue);
        issues
    }

    /// Checks the layout sections (`cpu`, `hugepages`, `sriov`, `disks`,
    /// `kernel`) on their own; what depends on the machine is the planner's.
    fn validate_layout(&self, issue: &mut impl FnMut(String, String)) {
        if let Some(cpu) = &self.cpu {
            let mut reserved = None;
            match (&cpu.reserved_per_numa_node, &cpu.reserved) {
                (None, None) => issue(
                    "/cpu".into(),
                    "no reserved CPUs: set `reserved_per_numa_node` (cores per NUMA node) or \
                     `reserved` (a cpulist such as \"0-1\")"
                        .into(),
                ),
                (Some(_), Some(_)) => issue(
                    "/cpu/reserved".into(),
                    "both `reserved` and `reserved_per_numa_node` are set: keep one".into(),
                ),
                (Some(0), None) => issue(
                    "/cpu/reserved_per_numa_node".into(),
                    "reserved_per_numa_node must be at least 1 (the host needs a \
                     housekeeping core on each node)"
                        .into(),
                ),
                (Some(_), None) => {}
                (None, Some(list)) => match parse_cpulist(list) {
                    Ok(ids) => reserved = Some(ids),
                    Err(e) => issue("/cpu/reserved".into(), e),
                },
            }
            if cpu.isolated != "rest" {
                match parse_cpulist(&cpu.isolated) {
                    Ok(isolated) => {
                        let both: Vec<_> = reserved
                            .iter()
                            .flatten()
                            .filter(|c| isolated.contains(c))
                            .copied()
                            .collect();
                        if !both.is_empty() {
                            issue(
                                "/cpu/isolated".into(),
                                format!(
                                    "CPUs {} are both reserved and isolated: remove them from one",
                                    crate::cpulist::format_cpulist(&both)
                                ),
                            );
                        }
                    }
                    Err(e) => issue(
                        "/cpu/isolated".into(),
                        format!("{e} (or write `rest` for every CPU not reserved)"),
                    ),
                }
            }
        }
        if let Some(hp) = &self.hugepages {
            if hp.pages.is_empty() {
                issue(
                    "/hugepages/pages".into(),
                    "no pages: add an entry such as {size: 1G, percent: 50} or remove `hugepages`"
                        .into(),
                );
            }
            for (i, page) in hp.pages.iter().enumerate() {
                match (page.count, page.percent) {
                    (None, None) => issue(
                        format!("/hugepages/pages/{i}"),
                        "give `count` (pages per node) or `percent` (of each node's memory)".into(),
                    ),
                    (Some(_), Some(_)) => issue(
                        format!("/hugepages/pages/{i}/percent"),
                        "both `count` and `percent` are set: keep one".into(),
                    ),
                    (Some(0), None) => issue(
                        format!("/hugepages/pages/{i}/count"),
                        "count must be at least 1 (or remove the entry)".into(),
                    ),
                    (None, Some(p)) if p == 0 || p > 100 => issue(
                        format!("/hugepages/pages/{i}/percent"),
                        format!("percent {p} is out of range: use 1 to 100"),
                    ),
                    _ => {}
                }
            }
            if let Some(size) = hp.default_size
                && !hp.pages.iter().any(|p| p.size == size)
            {
                issue(
                    "/hugepages/default_size".into(),
                    format!(
                        "default_size {} has no pages: add a pages entry of size {} or \
                         change default_size",
                        size.as_str(),
                        size.as_str()
                    ),
                );
            }
        }
        for (i, policy) in self.sriov.iter().enumerate() {
            let sel = &policy.nic_selector;
            let at = |f: &str| format!("/sriov/{i}/nic_selector/{f}");
            if sel == &SriovNicSelector::default() {
                issue(
                    format!("/sriov/{i}/nic_selector"),
                    "empty nic_selector: give vendor_id/device_id, driver, pf_names or \
                     pci_addresses"
                        .into(),
                );
            }
            for (field, value) in [("vendor_id", &sel.vendor_id), ("device_id", &sel.device_id)] {
                if let Some(v) = value.as_ref().filter(|v| !is_pci_id(v)) {
                    issue(
                        at(field),
                        format!(
                            "invalid PCI {field} {v:?}: write 4 hex digits in quotes, e.g. \"8086\""
                        ),
                    );
                }
            }
            if sel.device_id.is_some() && sel.vendor_id.is_none() {
                issue(
                    at("device_id"),
                    "device_id without vendor_id: add the vendor_id of the NIC".into(),
                );
            }
            for (j, name) in sel.pf_names.iter().enumerate() {
                if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
                    issue(
                        format!("{}/{j}", at("pf_names")),
                        format!(
                            "invalid interface name {name:?}: 1-15 characters, no '/' or spaces"
                        ),
                    );
                }
            }
            for (j, addr) in sel.pci_addresses.iter().enumerate() {
                if !is_pci_address(addr) {
                    issue(
                        format!("{}/{j}", at("pci_addresses")),
                        format!(
                            "invalid PCI address {addr:?}: write domain:bus:device.function, \
                             e.g. \"0000:17:00.0\""
                        ),
                    );
                }
            }
            if policy.num_vfs == 0 {
                issue(
                    format!("/sriov/{i}/num_vfs"),
                    "num_vfs must be at least 1 (remove the entry for no VFs)".into(),
                );
            }
            if let Some(mtu) = policy.mtu.filter(|m| !(68..=9710).contains(m)) {
                issue(
                    format!("/sriov/{i}/mtu"),
                    format!("mtu {mtu} is out of range: use 68 to 9710"),
                );
            }
        }
        if let Some(disks) = &self.disks {
            if let Some(root) = &disks.root {
                if root.min_size_gib == Some(0) {
                    issue(
                        "/disks/root/min_size_gib".into(),
                        "min_size_gib must be at least 1 (or leave it out)".into(),
                    );
                }
                for (field, value) in [
                    ("model", &root.model),
                    ("serial", &root.serial),
                    ("wwn", &root.wwn),
                    ("by_path", &root.by_path),
                ] {
                    if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                        issue(
                            format!("/disks/root/{field}"),
                            format!("empty {field}: remove it or give the exact value"),
                        );
                    }
                }
            }
            for (i, rule) in disks.data.iter().enumerate() {
                if rule.min_size_gib == Some(0) {
                    issue(
                        format!("/disks/data/{i}/min_size_gib"),
                        "min_size_gib must be at least 1 (or leave it out)".into(),
                    );
                }
                if rule.min_count == 0 {
                    issue(
                        format!("/disks/data/{i}/min_count"),
                        "min_count must be at least 1".into(),
                    );
                }
            }
        }
        if let Some(kernel) = &self.kernel {
            for (i, arg) in kernel.extra_args.iter().enumerate() {
                let key = arg.split('=').next().unwrap_or_default();
                if arg.is_empty() || arg.chars().any(char::is_whitespace) {
                    issue(
                        format!("/kernel/extra_args/{i}"),
                        format!(
                            "invalid kernel argument {arg:?}: one argument per item, no spaces"
                        ),
                    );
                } else if GENERATED_KERNEL_ARGS.contains(&key) {
                    issue(
                        format!("/kernel/extra_args/{i}"),
                        format!(
                            "`{key}` is generated by the planner from the cpu, hugepages, iommu \
                             and sriov sections: set it there instead"
                        ),
                    );
                } else if kernel.extra_args[..i].contains(arg) {
                    issue(
                        format!("/kernel/extra_args/{i}"),
                        format!("{arg:?} is listed twice: remove one"),
                    );
                }
            }
        }
    }

    /// Whether the profile needs the IOMMU on: `iommu: true` or any
    /// `vfio-pci` SR-IOV entry.
    pub fn needs_iommu(&self) -> bool {
        self.iommu
            || self
                .sriov
                .iter()
                .any(|p| p.device_type == DeviceType::VfioPci)
    }
}

impl Selectors {
    /// How specific the selectors are: one point for each of system vendor,
    /// system product, CPU model, CPU cores and memory that is given, and one
    /// per `nics` and `disks` entry. The most specific matching profile wins.
    pub fn specificity(&self) -> u32 {
        let flags = [
            self.system.as_ref().is_some_and(|s| s.vendor.is_some()),
            self.system.as_ref().is_some_and(|s| s.product.is_some()),
            self.cpu.as_ref().is_some_and(|c| c.model.is_some()),
            self.cpu.as_ref().is_some_and(|c| c.min_cores.is_some()),
            self.memory.is_some(),
        ];
        let n = flags.iter().filter(|f| **f).count() + self.nics.len() + self.disks.len();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: serde_json::Value) -> Profile {
        serde_json::from_value(json).expect("profile parses")
    }

    #[test]
    fn valid_profile_has_no_issues() {
        let p = profile(serde_json::json!({
            "name": "compute-e810",
            "priority": 0,
            "match": {
                "system": {"vendor": "Dell Inc.", "product": "PowerEdge R750"},
                "cpu": {"model": "Xeon\\(R\\) Gold 63.*", "min_cores": 32},
                "memory": {"min_gib": 256},
                "nics": [{"vendor_id": "8086", "device_id": "159b", "min_count": 2}],
                "disks": [{"kind": "nvme", "min_count": 1}]
            },
            "roles": ["compute"]
        }));
        assert_eq!(p.validate(), vec![]);
        assert_eq!(p.selectors.nics[0].min_count, 2);
    }

    #[test]
    fn every_problem_is_reported_with_its_pointer() {
        let p = profile(serde_json::json!({
            "name": "Bad_Name",
            "match": {
                "cpu": {"model": "Xeon(", "min_cores": 0},
                "nics": [{"vendor_id": "80861"}, {"device_id": "159b", "min_count": 0}]
            },
            "roles": ["compute", "compute"]
        }));
        let pointers: Vec<_> = p.validate().into_iter().map(|i| i.pointer).collect();
        assert_eq!(
            pointers,
            [
                "/name",
                "/roles/1",
                "/match/cpu/model",
                "/match/cpu/min_cores",
                "/match/nics/0/vendor_id",
                "/match/nics/1/device_id",
                "/match/nics/1/min_count",
            ]
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<Profile>(serde_json::json!({
            "name": "x", "match": {}, "roles": ["compute"], "numa": {}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `numa`"), "{err}");
    }

    #[test]
    fn layout_sections_parse_as_in_the_issue() {
        let p = profile(serde_json::json!({
            "name": "compute-e810", "match": {}, "roles": ["compute"],
            "cpu": {"reserved_per_numa_node": 2, "isolated": "rest"},
            "hugepages": {"default_size": "1G", "pages": [{"size": "1G", "percent": 75, "node": "all"},
                                                         {"size": "2M", "count": 512, "node": 1}]},
            "iommu": true,
            "sriov": [{"nic_selector": {"vendor_id": "8086", "device_id": "159b",
                                        "pf_names": ["ens1f0"], "pci_addresses": []},
                       "num_vfs": 16, "device_type": "vfio-pci", "mtu": 9000}],
            "disks": {"root": {"min_size_gib": 200, "kind": "nvme", "rotational": false},
                      "data": [{"kind": "nvme", "use": "all-remaining"}]},
            "kernel": {"extra_args": ["nosoftlockup"]}
        }));
        assert_eq!(p.validate(), vec![]);
        let hp = p.hugepages.as_ref().expect("hugepages");
        assert_eq!(hp.pages[0].node, HugepageNode::All);
        assert_eq!(hp.pages[1].node, HugepageNode::Id(1));
        assert_eq!(hp.host_reserve_mib, 2048);
        assert!(p.needs_iommu());
        // Serializing and parsing back gives the same profile.
        let back: Profile = serde_json::from_value(serde_json::to_value(&p).expect("to json"))
            .expect("parses back");
        assert_eq!(back, p);
    }

    #[test]
    fn layout_problems_name_the_field() {
        let p = profile(serde_json::json!({
            "name": "x", "match": {}, "roles": ["compute"],
            "cpu": {"reserved": "0-1", "isolated": "1-7"},
            "hugepages": {"default_size": "2M", "pages": [{"size": "1G"}, {"size": "1G", "percent": 101}]},
            "sriov": [{"nic_selector": {"device_id": "159b", "pci_addresses": ["17:00.0"]},
                       "num_vfs": 0, "mtu": 20000}],
            "disks": {"root": {"serial": " "}, "data": [{"min_count": 0}]},
            "kernel": {"extra_args": ["isolcpus=1", "a b", "quiet", "quiet"]}
        }));
        let pointers: Vec<_> = p.validate().into_iter().map(|i| i.pointer).collect();
        assert_eq!(
            pointers,
            [
                "/cpu/isolated",
                "/hugepages/pages/0",
                "/hugepages/pages/1/percent",
                "/hugepages/default_size",
                "/sriov/0/nic_selector/device_id",
                "/sriov/0/nic_selector/pci_addresses/0",
                "/sriov/0/num_vfs",
                "/sriov/0/mtu",
                "/disks/root/serial",
                "/disks/data/0/min_count",
                "/kernel/extra_args/0",
                "/kernel/extra_args/1",
                "/kernel/extra_args/3",
            ]
        );
        let no_reserved = profile(serde_json::json!({
            "name": "x", "match": {}, "roles": ["compute"], "cpu": {"isolated": "rest"}
        }));
        assert_eq!(no_reserved.validate()[0].pointer, "/cpu");
    }

    #[test]
    fn hugepage_node_errors_say_what_to_write() {
        let err = serde_json::from_value::<HugepageRequest>(
            serde_json::json!({"size": "1G", "count": 1, "node": "both"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("write a NUMA node id"), "{err}");
        let err = serde_json::from_value::<HugepageRequest>(
            serde_json::json!({"size": "1G", "count": 1, "node": -1}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("0 or more"), "{err}");
    }

    #[test]
    fn specificity_counts_selectors() {
        let p = profile(serde_json::json!({
            "name": "x", "roles": ["compute"],
            "match": {"system": {"vendor": "QEMU"}, "cpu": {"min_cores": 2},
                      "nics": [{"min_count": 1}, {"vendor_id": "8086"}], "disks": [{}]}
        }));
        assert_eq!(p.selectors.specificity(), 5);
        assert_eq!(Selectors::default().specificity(), 0);
        assert!(is_pci_address("0000:17:00.0"));
        assert!(!is_pci_address("0000:17:00.8"));
    }

    #[test]
    fn names() {
        assert!(is_valid_name("lab-compute-0"));
        assert!(!is_valid_name("-x"));
        assert!(!is_valid_name("x-"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("Upper"));
        assert!(!is_valid_name(&"a".repeat(64)));
        assert!(is_valid_name(&"a".repeat(63)));
    }
}
