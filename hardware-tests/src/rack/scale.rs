//! A bigger rack from a small one: `cargo xtask demo --vms N` takes the rack's VMs in
//! turn (compute, network, storage, compute, ...) and gives the copies new identities,
//! with the matching `nodes.yaml` entries.
//!
//! Copy `k` (1, 2, ...) of a VM gets every identity the lab and the provisioner key on
//! renumbered, so nothing clashes with the original or another copy:
//! - name and system serial: the first run of digits plus `k` (`lab-compute-0` ->
//!   `lab-compute-1`, `LAB-COMPUTE-0` -> `LAB-COMPUTE-1`); the SMBIOS UUID follows
//!   from the name;
//! - disk serials the same way (`LABC0-ROOT` -> `LABC1-ROOT`);
//! - each MAC's last byte plus `k` times the rack's size, and the BMC port likewise
//!   (with three VMs: `52:54:00:0d:00:01` -> `…:00:04`, port 8101 -> 8104), so the
//!   boot MACs of the scaled lab rack are `…:00:01` to `…:00:06` in rack order.
//!
//! Taps are numbered by the harness as it starts VMs, so they never clash.
//!
//! The nodes of copies are the original VM's `nodes.yaml` entry with the copy's name,
//! boot MAC, serial (when the entry has one) and BMC URL ([`super::bmc_url`]); an
//! `ip` reservation is dropped (the copy gets an address from the DHCP range).
//! The first `len` VMs and their entries are returned unchanged.
//!
//! Invariant: pure (values in, values out); the result passes the rack's own checks
//! or the call fails.

use serde_json::Value;

use super::{Rack, VmSpec, check};

/// Why a rack cannot be scaled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScaleError {
    #[error("ask for at least one VM")]
    NoVms,
    #[error("the rack has no VMs to copy")]
    EmptyRack,
    #[error("copy {copy} of {vm}: its {what} would be out of range; ask for fewer VMs")]
    OutOfRange {
        vm: String,
        copy: usize,
        what: &'static str,
    },
    #[error("the scaled rack fails the rack's own checks: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("nodes.yaml is not valid YAML: {0} (`provisioner site validate` says more)")]
    NodesYaml(String),
    #[error("nodes.yaml has no `nodes` list")]
    NoNodes,
    #[error("nodes.yaml has no node named {0} (each rack VM needs one)")]
    MissingNode(String),
}

impl Rack {
    /// The first `n` VMs of the rack repeated (see the module doc): the first
    /// `self.vms.len()` unchanged, then copy 1 of each VM in order, then copy 2, ...
    pub fn scaled(&self, n: usize) -> Result<Rack, ScaleError> {
        if n == 0 {
            return Err(ScaleError::NoVms);
        }
        if self.vms.is_empty() {
            return Err(ScaleError::EmptyRack);
        }
        let len = self.vms.len();
        let vms = (0..n)
            .map(|i| copy(&self.vms[i % len], i / len, len))
            .collect::<Result<Vec<_>, _>>()?;
        let rack = Rack { vms };
        let problems = check(&rack);
        if problems.is_empty() {
            Ok(rack)
        } else {
            Err(ScaleError::Invalid(
                problems
                    .into_iter()
                    .map(|(pointer, msg)| format!("{pointer}: {msg}"))
                    .collect(),
            ))
        }
    }
}

/// The `nodes.yaml` document (as parsed by `provisioner::site::yaml`) for a rack made by
/// `original.scaled(n)`: for each of its VMs, the entry of the original VM it was copied
/// from, renamed and re-addressed for copies.
pub fn scaled_nodes(original: &Rack, scaled: &Rack, nodes: &Value) -> Result<Value, ScaleError> {
    let entries = nodes["nodes"].as_array().ok_or(ScaleError::NoNodes)?;
    let len = original.vms.len();
    let mut out = vec![];
    for (i, vm) in scaled.vms.iter().enumerate() {
        let source = &original.vms[i % len];
        let mut entry = entries
            .iter()
            .find(|e| e["name"] == source.name.as_str())
            .cloned()
            .ok_or_else(|| ScaleError::MissingNode(source.name.clone()))?;
        if i >= len {
            let fields = entry.as_object_mut().ok_or(ScaleError::NoNodes)?;
            fields.insert("name".into(), vm.name.clone().into());
            fields.insert("boot_mac".into(), vm.boot_nic().mac.clone().into());
            fields.remove("ip");
            if fields.contains_key("serial") {
                fields.insert("serial".into(), vm.serial.clone().into());
            }
            if let Some(bmc) = fields.get_mut("bmc").and_then(Value::as_object_mut) {
                bmc.insert("url".into(), super::bmc_url(vm).into());
            }
        }
        out.push(entry);
    }
    let mut doc = nodes.clone();
    doc["nodes"] = Value::Array(out);
    Ok(doc)
}

/// [`scaled_nodes`] from and to YAML text (the text of the original `nodes.yaml`).
pub fn scaled_nodes_yaml(
    original: &Rack,
    scaled: &Rack,
    nodes: &str,
) -> Result<String, ScaleError> {
    let (doc, errors) = provisioner::site::yaml::parse(nodes);
    let doc = match (doc, errors.first()) {
        (Some(doc), None) => doc,
        (_, error) => {
            return Err(ScaleError::NodesYaml(error.map_or_else(
                || "empty".to_owned(),
                |e| format!("{}:{}: {}", e.pos.line, e.pos.column, e.message),
            )));
        }
    };
    Ok(super::to_yaml(&scaled_nodes(original, scaled, &doc.value)?))
}

/// Copy `k` of `vm` in a rack of `len` VMs (copy 0 is `vm` itself).
fn copy(vm: &VmSpec, k: usize, len: usize) -> Result<VmSpec, ScaleError> {
    if k == 0 {
        return Ok(vm.clone());
    }
    let out_of_range = |what| ScaleError::OutOfRange {
        vm: vm.name.clone(),
        copy: k,
        what,
    };
    let step = k * len;
    let mut c = vm.clone();
    c.name = renumber(&vm.name, k);
    c.serial = renumber(&vm.serial, k);
    for disk in &mut c.disks {
        disk.serial = renumber(&disk.serial, k);
    }
    for nic in &mut c.nics {
        nic.mac = shift_mac(&nic.mac, step).ok_or_else(|| out_of_range("MAC"))?;
    }
    c.bmc.port = u16::try_from(step)
        .ok()
        .and_then(|s| vm.bmc.port.checked_add(s))
        .ok_or_else(|| out_of_range("BMC port"))?;
    Ok(c)
}

/// `text` with its first run of ASCII digits increased by `k`, or `-k` appended when
/// it has none.
fn renumber(text: &str, k: usize) -> String {
    let Some(start) = text.find(|c: char| c.is_ascii_digit()) else {
        return format!("{text}-{k}");
    };
    let end = text[start..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(text.len(), |e| start + e);
    let digits = &text[start..end];
    let number = digits
        .parse::<u128>()
        .map_or_else(|_| format!("{digits}{k}"), |d| (d + k as u128).to_string());
    format!("{}{number}{}", &text[..start], &text[end..])
}

/// `mac` (lowercase, colon form) with its last byte increased by `step`, or `None` past
/// `ff` or when `mac` is not a MAC.
fn shift_mac(mac: &str, step: usize) -> Option<String> {
    let (head, last) = mac.rsplit_once(':')?;
    let byte = usize::from(u8::from_str_radix(last, 16).ok()?) + step;
    (byte <= 0xff).then(|| format!("{head}:{byte:02x}"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::rack::tests::assert_nodes_match;
    use crate::rack::{lab_rack_file, load, parse, to_yaml};

    fn lab() -> Rack {
        load(&lab_rack_file()).unwrap()
    }

    fn lab_nodes() -> Value {
        let text = std::fs::read_to_string(crate::lab_site_dir().join("nodes.yaml")).unwrap();
        provisioner::site::yaml::parse(&text).0.unwrap().value
    }

    #[test]
    fn six_vms_take_the_rack_in_turn_with_new_identities() {
        let rack = lab();
        let six = rack.scaled(6).unwrap();
        let names: Vec<&str> = six.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "lab-compute-0",
                "lab-network-0",
                "lab-storage-0",
                "lab-compute-1",
                "lab-network-1",
                "lab-storage-1"
            ]
        );
        assert_eq!(six.vms[..3], rack.vms[..], "the first three are unchanged");
        let c1 = &six.vms[3];
        assert_eq!(c1.serial, "LAB-COMPUTE-1");
        assert_eq!(c1.boot_nic().mac, "52:54:00:0d:00:04");
        assert_eq!(c1.nics[1].mac, "52:54:00:0d:01:04");
        assert_eq!(c1.disks[0].serial, "LABC1-ROOT");
        assert_eq!(c1.bmc.port, 8104);
        assert_eq!(six.vms[5].bmc.port, 6233);
        assert_eq!(
            six.vms[5]
                .disks
                .iter()
                .map(|d| d.serial.as_str())
                .collect::<Vec<_>>(),
            ["LABS1-ROOT", "LABS1-NVME0", "LABS1-NVME1", "LABS1-NVME2"]
        );
        // Everything but the identities is the original's.
        assert_eq!(c1.numa, rack.vms[0].numa);
        assert_eq!(c1.firmware, rack.vms[0].firmware);
        assert_eq!(c1.nics[1].numa_node, Some(1));
    }

    #[test]
    fn identities_are_unique_at_any_size() {
        let rack = lab();
        for n in [1, 2, 3, 4, 6, 9, 20] {
            let scaled = rack.scaled(n).unwrap();
            assert_eq!(scaled.vms.len(), n);
            let unique = |items: Vec<String>| {
                let count = items.len();
                assert_eq!(
                    items.into_iter().collect::<HashSet<_>>().len(),
                    count,
                    "{n} VMs"
                );
            };
            unique(scaled.vms.iter().map(|v| v.name.clone()).collect());
            unique(scaled.vms.iter().map(|v| v.serial.clone()).collect());
            unique(scaled.vms.iter().map(VmSpec::uuid).collect());
            unique(
                scaled
                    .vms
                    .iter()
                    .flat_map(|v| v.nics.iter().map(|n| n.mac.clone()))
                    .collect(),
            );
            unique(scaled.vms.iter().map(|v| v.bmc.port.to_string()).collect());
            unique(
                scaled
                    .vms
                    .iter()
                    .flat_map(|v| v.disks.iter().map(|d| d.serial.clone()))
                    .collect(),
            );
        }
    }

    #[test]
    fn scaled_files_round_trip_and_agree_with_each_other() {
        let rack = lab();
        let six = rack.scaled(6).unwrap();
        let text = to_yaml(&serde_json::to_value(&six).unwrap());
        assert_eq!(parse("rack.yaml", &text).unwrap(), six, "{text}");
        assert!(text.contains("vms:\n  - name: lab-compute-0\n"), "{text}");

        let nodes = scaled_nodes(&rack, &six, &lab_nodes()).unwrap();
        let entries = nodes["nodes"].as_array().unwrap();
        assert_eq!(entries[..3], lab_nodes()["nodes"].as_array().unwrap()[..]);
        assert_eq!(entries[3]["ip"], Value::Null, "no duplicate reservation");
        assert_eq!(
            entries[5]["bmc"]["url"], "ipmi://10.213.0.1:6233",
            "{nodes:#}"
        );
        // The provisioner's own site loader accepts the result, and each node
        // names its VM's boot MAC and BMC.
        let site = tempfile::tempdir().unwrap();
        for file in ["site.yaml", "profiles"] {
            copy_tree(&crate::lab_site_dir().join(file), &site.path().join(file));
        }
        let text = std::fs::read_to_string(crate::lab_site_dir().join("nodes.yaml")).unwrap();
        assert_eq!(
            scaled_nodes_yaml(&rack, &six, &text).unwrap(),
            to_yaml(&nodes)
        );
        assert!(matches!(
            scaled_nodes_yaml(&rack, &six, "nodes: [a"),
            Err(ScaleError::NodesYaml(_))
        ));
        std::fs::write(site.path().join("nodes.yaml"), to_yaml(&nodes)).unwrap();
        let loaded = provisioner::site::load(site.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_nodes_match(&six, &loaded.nodes);
    }

    fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
        if from.is_dir() {
            std::fs::create_dir_all(to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                copy_tree(&entry.path(), &to.join(entry.file_name()));
            }
        } else {
            std::fs::copy(from, to).unwrap();
        }
    }

    #[test]
    fn copies_that_would_clash_or_overflow_are_refused() {
        let rack = lab();
        assert_eq!(rack.scaled(0), Err(ScaleError::NoVms));
        assert_eq!(Rack { vms: vec![] }.scaled(2), Err(ScaleError::EmptyRack));
        // 300 VMs: copy 99 of the compute VM would need MAC byte 0x01 + 297.
        assert!(matches!(
            rack.scaled(300),
            Err(ScaleError::OutOfRange { what: "MAC", .. })
        ));
        // A rack whose copy would take the name of another VM.
        let mut clash = rack.clone();
        clash.vms[1].name = "lab-compute-1".into();
        let err = clash.scaled(4).unwrap_err();
        assert!(
            err.to_string()
                .contains("VM name `lab-compute-1` is used twice"),
            "{err}"
        );
    }

    #[test]
    fn renumbering_shifts_the_first_number() {
        assert_eq!(renumber("lab-compute-0", 2), "lab-compute-2");
        assert_eq!(renumber("LABS0-NVME2", 1), "LABS1-NVME2");
        assert_eq!(renumber("rack9", 1), "rack10");
        assert_eq!(renumber("storage", 3), "storage-3");
        assert_eq!(
            shift_mac("52:54:00:0d:00:03", 3).unwrap(),
            "52:54:00:0d:00:06"
        );
        assert_eq!(shift_mac("52:54:00:0d:00:fe", 2), None);
    }
}
