//! Hardware profiles: selectors over a machine's inventory plus the roles the
//! machine takes when it matches. One profile per file in a site's
//! `profiles/` directory.
//!
//! The types here are the wire format (serde + schemars, unknown fields
//! refused). [`Profile::validate`] checks what serde cannot (names, regexes,
//! PCI ids) and returns every problem with the JSON pointer of the field, so
//! the caller can point at a file, line and column. Layout sections (`cpu`,
//! `hugepages`, `iommu`, `sriov`, `disks`, `kernel`) will be added to
//! [`Profile`] as new optional fields.
//!
//! This module does no I/O.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// Memory selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemorySelector {
    /// Minimum installed memory in GiB (2^30 bytes).
    #[schemars(range(min = 1))]
    pub min_gib: u64,
}

/// NIC selector: at least `min_count` NICs with these properties. An entry
/// with only `min_count` counts every NIC.
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSelector {
    /// Disk kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DiskKind>,
    /// Minimum size of each counted disk in GB (10^9 bytes, as disks are sold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_size_gb: Option<u64>,
    /// Minimum number of matching disks (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub min_count: u32,
}

/// Kind of disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskKind {
    /// NVMe namespace.
    Nvme,
    /// Non-rotational SATA/SAS disk.
    Ssd,
    /// Rotational disk.
    Hdd,
}

fn one() -> u32 {
    1
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
        issues
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
    fn unknown_fields_and_layout_sections_are_refused_for_now() {
        let err = serde_json::from_value::<Profile>(serde_json::json!({
            "name": "x", "match": {}, "roles": ["compute"], "sriov": []
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `sriov`"), "{err}");
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
