//! `nodes.yaml`: the machines the site expects. Wire types and the
//! validated [`NodeSpec`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use model::net::Mac;
use model::profile::Role;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::bmc_url::BmcUrl;
use super::diag::{At, FileCtx, PLAINTEXT_PASSWORD};

// ---------------------------------------------------------------- wire types

/// `nodes.yaml`: the machines this site expects.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Expected machines (nodes.yaml)")]
pub struct NodesFile {
    /// The machines. Each needs a `bmc` or a `boot_mac` (or both).
    pub nodes: Vec<NodeWire>,
}

/// One expected machine.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeWire {
    /// Node name, unique in the site: lowercase letters, digits and `-`, at
    /// most 63 characters (it appears in URLs and host names).
    #[schemars(pattern(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// The machine's BMC, for power and boot control.
    #[serde(default)]
    pub bmc: Option<BmcWire>,
    /// MAC address of the NIC the machine network-boots from, e.g.
    /// `52:54:00:0d:00:01`.
    #[serde(default)]
    pub boot_mac: Option<String>,
    /// IPv4 address the provisioner's DHCP server (full mode) reserves for
    /// `boot_mac`, inside the subnet of site.yaml `network.address`, e.g.
    /// `10.213.0.21`. Optional: without it the node gets an address from the
    /// range. Needs `boot_mac`.
    #[serde(default)]
    pub ip: Option<String>,
    /// System serial number (DMI), used to recognise the machine when it
    /// boots the inspection ramdisk.
    #[serde(default)]
    pub serial: Option<String>,
    /// Force this hardware profile (by name) instead of matching. Not with
    /// `role`.
    #[serde(default)]
    pub profile: Option<String>,
    /// Override the role of the matched profile. Not with `profile`.
    #[serde(default)]
    pub role: Option<Role>,
    /// The host image `provisioner node deploy` writes to this node (a
    /// `host:` image of site.yaml `images`), instead of its profile's `image`.
    #[serde(default)]
    pub image: Option<String>,
}

/// A BMC and the reference to its credentials. Plaintext passwords are
/// refused: secrets never go in git.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BmcWire {
    /// `redfish://host[:port][/redfish/v1/Systems/ID]` (HTTPS, port 443),
    /// `redfish+http://...` (plain HTTP, port 80; labs only) or
    /// `ipmi://host[:port]` (port 623).
    pub url: String,
    /// BMC user name.
    pub username: String,
    /// Name of the environment variable of the provisioner daemon that holds
    /// the password. Exactly one of `password_env`, `password_file`.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (mode 0600, outside the repository;
    /// relative paths are relative to the site directory). Exactly one of
    /// `password_env`, `password_file`.
    #[serde(default)]
    pub password_file: Option<String>,
    /// PEM file of the CA that signed this BMC's HTTPS certificate (relative
    /// paths are relative to the site directory); the certificate is checked
    /// against it instead of the public web PKI. `redfish://` only; not with
    /// `insecure`.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Do not check this BMC's HTTPS certificate at all (labs only: anyone on
    /// the path can then pose as the BMC). `redfish://` only; not with
    /// `ca_file`.
    #[serde(default)]
    pub insecure: bool,
}

// -------------------------------------------------------------- domain types

/// A validated expected machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Unique, DNS-label-like name.
    pub name: String,
    /// BMC, if the machine has one the provisioner may drive.
    pub bmc: Option<BmcSpec>,
    /// Boot NIC's MAC; at least one of `bmc` and `boot_mac` is set.
    pub boot_mac: Option<Mac>,
    /// The address DHCP reserves for `boot_mac` (full mode); in the
    /// provisioning subnet, never the provisioner's own address, unique.
    pub ip: Option<std::net::Ipv4Addr>,
    /// DMI serial number.
    pub serial: Option<String>,
    /// Forced profile name (exists in the site).
    pub profile: Option<String>,
    /// Role override (never together with `profile`).
    pub role: Option<Role>,
    /// The image to deploy instead of the profile's (exists in the catalog).
    pub image: Option<String>,
}

/// A validated BMC reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcSpec {
    /// Where and how to reach it.
    pub url: BmcUrl,
    /// User name.
    pub username: String,
    /// Where the password is.
    pub credential: Credential,
    /// How its HTTPS certificate is checked.
    pub tls: BmcTls,
}

/// How a BMC's HTTPS certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BmcTls {
    /// Against the public web PKI (also: not HTTPS at all).
    #[default]
    Verify,
    /// Against this CA certificate (relative paths already joined to the site directory).
    CaFile(PathBuf),
    /// Not at all (`insecure: true`).
    Insecure,
}

impl BmcTls {
    /// How the store and the API show it: `None` (web PKI), `ca:PATH` or `insecure`.
    pub fn reference(&self) -> Option<String> {
        match self {
            BmcTls::Verify => None,
            BmcTls::CaFile(path) => Some(format!("ca:{}", path.display())),
            BmcTls::Insecure => Some("insecure".to_owned()),
        }
    }

    /// The inverse of [`BmcTls::reference`] for a present value (`ca:PATH` or
    /// `insecure`); `None` for any other text.
    pub fn from_reference(reference: &str) -> Option<BmcTls> {
        if reference == "insecure" {
            return Some(BmcTls::Insecure);
        }
        reference
            .strip_prefix("ca:")
            .map(|path| BmcTls::CaFile(path.into()))
    }
}

/// Where a BMC password is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// In this environment variable of the daemon.
    Env(String),
    /// In this file (relative paths already joined to the site directory).
    File(PathBuf),
}

impl Credential {
    /// How the store and the API show it: `env:VAR` or `file:PATH`, never the secret.
    pub fn reference(&self) -> String {
        match self {
            Credential::Env(var) => format!("env:{var}"),
            Credential::File(path) => format!("file:{}", path.display()),
        }
    }
}

// ---------------------------------------------------------------- checking

fn valid_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Checks `nodes.yaml`. `profiles` holds the profile names known in the site,
/// or `None` when some profile file could not be read (then references are
/// not checked, to avoid one error cascading into many). Every node that is
/// valid on its own is returned along with the problems.
pub(crate) fn check(
    ctx: &mut FileCtx<'_>,
    root: &Value,
    dir: &Path,
    profiles: Option<&HashMap<String, String>>,
    images: Option<&[String]>,
    subnet: Option<ipnet::Ipv4Net>,
) -> Vec<NodeSpec> {
    let Some(map) = ctx.top_mapping(
        root,
        "nodes.yaml holds `nodes:` followed by a list (`nodes: []` for none)",
    ) else {
        return Vec::new();
    };
    for key in map.keys().filter(|k| *k != "nodes") {
        ctx.report(
            &super::yaml::child("", key),
            At::Key,
            format!("unknown section `{key}`; expected `nodes`"),
        );
    }
    let items = match map.get("nodes") {
        Some(Value::Array(items)) => items.as_slice(),
        Some(Value::Null) => &[],
        Some(_) => {
            ctx.report(
                "/nodes",
                At::Value,
                "expected a list of nodes (`- name: ...`)",
            );
            return Vec::new();
        }
        None => {
            ctx.report(
                "",
                At::Value,
                "missing `nodes:` (required; `nodes: []` for none)",
            );
            return Vec::new();
        }
    };
    // Value -> where it was first seen, for duplicate checks.
    let mut names: HashMap<String, String> = HashMap::new();
    let mut macs: HashMap<Mac, String> = HashMap::new();
    let mut serials: HashMap<String, String> = HashMap::new();
    let mut bmcs: HashMap<String, String> = HashMap::new();
    let mut ips: HashMap<std::net::Ipv4Addr, String> = HashMap::new();
    let mut nodes = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let ptr = format!("/nodes/{i}");
        let before = ctx.diags.len();
        // A plaintext password is reported on its own and dropped, so the
        // rest of the node is still checked.
        let mut item = item.clone();
        let mut plaintext = false;
        if let Some(bmc) = item.get_mut("bmc").and_then(Value::as_object_mut)
            && bmc.remove("password").is_some()
        {
            ctx.report(&format!("{ptr}/bmc/password"), At::Key, PLAINTEXT_PASSWORD);
            plaintext = true;
        }
        // The name is checked before the rest so that a duplicate is found
        // even when the node has other problems.
        let name_ptr = format!("{ptr}/name");
        if let Some(name) = item.get("name").and_then(Value::as_str) {
            if !model::profile::is_valid_name(name) {
                ctx.report(
                    &name_ptr,
                    At::Value,
                    format!(
                        "invalid node name {name:?}: use 1-63 lowercase letters, digits and \
                         '-', not starting or ending with '-' (it appears in URLs)"
                    ),
                );
            } else if let Some(first) = names.get(name) {
                ctx.report(
                    &name_ptr,
                    At::Value,
                    format!("duplicate node name {name:?}, first defined at {first}: rename one"),
                );
            } else {
                names.insert(name.to_owned(), ctx.where_is(&name_ptr));
            }
        }
        let Some(w) = ctx.de::<NodeWire>(&item, &ptr) else {
            continue;
        };
        let bmc = w
            .bmc
            .as_ref()
            .and_then(|b| check_bmc(ctx, b, &format!("{ptr}/bmc"), dir, plaintext));
        if let Some(b) = &bmc {
            let key = b.url.to_string();
            let url_ptr = format!("{ptr}/bmc/url");
            if let Some(first) = bmcs.get(&key) {
                ctx.report(&url_ptr, At::Value, format!("BMC {key} is already used by the node at {first}: each node has its own BMC (or Redfish system path)"));
            } else {
                bmcs.insert(key, ctx.where_is(&name_ptr));
            }
        }
        let mac_ptr = format!("{ptr}/boot_mac");
        let boot_mac = match w.boot_mac.as_deref().map(Mac::parse_nic) {
            None => None,
            Some(Err(e)) => {
                ctx.report(&mac_ptr, At::Value, e);
                None
            }
            Some(Ok(mac)) => {
                if let Some(first) = macs.get(&mac) {
                    ctx.report(
                        &mac_ptr,
                        At::Value,
                        format!("boot MAC {mac} is already used by the node at {first}"),
                    );
                } else {
                    macs.insert(mac, ctx.where_is(&name_ptr));
                }
                Some(mac)
            }
        };
        if w.bmc.is_none() && w.boot_mac.is_none() {
            ctx.report(
                &ptr,
                At::Value,
                format!(
                    "node {:?} has neither `bmc` nor `boot_mac`: give at least one so the \
                     provisioner can recognise or power it",
                    w.name
                ),
            );
        }
        let ip = w.ip.as_deref().and_then(|text| {
            check_ip(ctx, &format!("{ptr}/ip"), text, subnet, &mut ips, &name_ptr)
        });
        if w.ip.is_some() && w.boot_mac.is_none() {
            ctx.report(
                &format!("{ptr}/ip"),
                At::Key,
                "`ip` is the DHCP reservation of the boot NIC: add `boot_mac` or remove `ip`",
            );
        }
        if let Some(serial) = &w.serial {
            let serial_ptr = format!("{ptr}/serial");
            if serial.trim().is_empty() {
                ctx.report(
                    &serial_ptr,
                    At::Value,
                    "empty serial: remove it or give the DMI serial number",
                );
            } else if let Some(first) = serials.get(serial) {
                ctx.report(
                    &serial_ptr,
                    At::Value,
                    format!("serial {serial:?} is already used by the node at {first}"),
                );
            } else {
                serials.insert(serial.clone(), ctx.where_is(&name_ptr));
            }
        }
        if w.profile.is_some() && w.role.is_some() {
            ctx.report(
                &format!("{ptr}/role"),
                At::Key,
                "give either `profile` (forces a profile) or `role` (overrides the matched profile's roles), not both",
            );
        }
        if let (Some(p), Some(known)) = (&w.profile, profiles)
            && !known.contains_key(p)
        {
            let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
            names.sort_unstable();
            let list = if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            };
            ctx.report(
                &format!("{ptr}/profile"),
                At::Value,
                format!("unknown profile {p:?}: add profiles/{p}.yaml or use one of: {list}"),
            );
        }
        if let (Some(image), Some(known)) = (&w.image, images)
            && !known.contains(image)
        {
            let list = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            ctx.report(
                &format!("{ptr}/image"),
                At::Value,
                format!(
                    "unknown image {image:?}: add it to `images` in site.yaml (`host: \
                     DIR/manifest.json`) or use one of: {list}"
                ),
            );
        }
        if ctx.diags.len() == before {
            nodes.push(NodeSpec {
                name: w.name,
                bmc,
                boot_mac,
                ip,
                serial: w.serial,
                profile: w.profile,
                role: w.role,
                image: w.image,
            });
        }
    }
    nodes
}

/// Checks a node's reserved address against the provisioning subnet
/// (`None` when site.yaml could not be read) and the other nodes'.
fn check_ip(
    ctx: &mut FileCtx<'_>,
    ptr: &str,
    text: &str,
    subnet: Option<ipnet::Ipv4Net>,
    seen: &mut HashMap<std::net::Ipv4Addr, String>,
    name_ptr: &str,
) -> Option<std::net::Ipv4Addr> {
    let Ok(ip) = text.parse::<std::net::Ipv4Addr>() else {
        ctx.report(
            ptr,
            At::Value,
            format!("invalid IPv4 address {text:?}: write it as 10.213.0.21"),
        );
        return None;
    };
    if let Some(net) = subnet {
        let trunc = net.trunc();
        let problem = if !trunc.contains(&ip) {
            Some(format!(
                "{ip} is outside the provisioning subnet {trunc} (site.yaml network.address)"
            ))
        } else if ip == trunc.network() || ip == trunc.broadcast() {
            Some(format!(
                "{ip} is the network or broadcast address of {trunc}"
            ))
        } else if ip == net.addr() {
            Some(format!(
                "{ip} is the provisioner's own address: give the node another one"
            ))
        } else {
            None
        };
        if let Some(msg) = problem {
            ctx.report(ptr, At::Value, msg);
            return None;
        }
    }
    if let Some(first) = seen.get(&ip) {
        ctx.report(
            ptr,
            At::Value,
            format!("address {ip} is already reserved for the node at {first}"),
        );
        return None;
    }
    seen.insert(ip, ctx.where_is(name_ptr));
    Some(ip)
}

/// Checks a BMC. `plaintext` says a `password` was already reported (and
/// removed), so a missing credential reference is not reported twice.
fn check_bmc(
    ctx: &mut FileCtx<'_>,
    b: &BmcWire,
    ptr: &str,
    dir: &Path,
    plaintext: bool,
) -> Option<BmcSpec> {
    let url = match b.url.parse::<BmcUrl>() {
        Ok(u) => Some(u),
        Err(e) => {
            ctx.report(&format!("{ptr}/url"), At::Value, e);
            None
        }
    };
    if b.username.is_empty() {
        ctx.report(
            &format!("{ptr}/username"),
            At::Value,
            "empty username: give the BMC user",
        );
    }
    let credential = match (&b.password_env, &b.password_file) {
        (Some(_), Some(_)) => {
            ctx.report(
                &format!("{ptr}/password_file"),
                At::Key,
                "give either `password_env` or `password_file`, not both",
            );
            None
        }
        (None, None) if plaintext => None,
        (None, None) => {
            ctx.report(
                ptr,
                At::Key,
                "no credentials: add `password_env: VAR` (environment variable of the daemon) or \
                 `password_file: PATH` (a 0600 file outside the repository)",
            );
            None
        }
        (Some(var), None) if !valid_env_name(var) => {
            ctx.report(
                &format!("{ptr}/password_env"),
                At::Value,
                format!("invalid environment variable name {var:?}: use letters, digits and '_', e.g. BMC_PASSWORD"),
            );
            None
        }
        (Some(var), None) => Some(Credential::Env(var.clone())),
        (None, Some(f)) if f.is_empty() => {
            ctx.report(
                &format!("{ptr}/password_file"),
                At::Value,
                "empty path: give the password file",
            );
            None
        }
        (None, Some(f)) => Some(Credential::File(dir.join(f))),
    };
    let https = matches!(
        url.as_ref().map(|u| u.kind),
        Some(super::BmcKind::Redfish { tls: true }) | None
    );
    let tls = match (&b.ca_file, b.insecure) {
        (Some(_), true) => {
            ctx.report(
                &format!("{ptr}/insecure"),
                At::Key,
                "give either `ca_file` or `insecure: true`, not both",
            );
            None
        }
        (Some(_), _) | (None, true) if !https => {
            let key = if b.insecure { "insecure" } else { "ca_file" };
            ctx.report(
                &format!("{ptr}/{key}"),
                At::Key,
                "certificate settings apply to redfish:// (HTTPS) only: remove this key",
            );
            None
        }
        (Some(f), false) if f.is_empty() => {
            ctx.report(
                &format!("{ptr}/ca_file"),
                At::Value,
                "empty path: give the CA certificate (PEM)",
            );
            None
        }
        (Some(f), false) => Some(BmcTls::CaFile(dir.join(f))),
        (None, true) => Some(BmcTls::Insecure),
        (None, false) => Some(BmcTls::Verify),
    };
    if b.username.is_empty() {
        return None;
    }
    Some(BmcSpec {
        url: url?,
        username: b.username.clone(),
        credential: credential?,
        tls: tls?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_reference_reads_back() {
        for tls in [BmcTls::Insecure, BmcTls::CaFile("/etc/site/ca.pem".into())] {
            let reference = tls.reference().unwrap();
            assert_eq!(BmcTls::from_reference(&reference), Some(tls));
        }
        assert_eq!(BmcTls::Verify.reference(), None);
        for other in ["", "verify", "Insecure", "/etc/site/ca.pem"] {
            assert_eq!(BmcTls::from_reference(other), None, "{other}");
        }
    }

    #[test]
    fn env_names() {
        assert!(valid_env_name("LAB_BMC_PASSWORD"));
        assert!(valid_env_name("_x1"));
        assert!(!valid_env_name("1X"));
        assert!(!valid_env_name("A-B"));
        assert!(!valid_env_name(""));
    }
}
