//! The lab rack: the virtual servers behind the lab site, described in one YAML file
//! (`sites/lab/rack.yaml`, schema `schemas/rack.schema.json`) and turned into QEMU
//! command lines.
//!
//! Each VM is a q35 machine with SeaBIOS or OVMF, NUMA nodes with their own CPUs and
//! memory, NICs (virtio for boot, `igb` for SR-IOV, optionally on a NUMA node through
//! a `pxb-pcie` bus), virtio/NVMe/SATA disks with serials, and a virtual BMC (Redfish or
//! IPMI) on the lab bridge. VMs start powered off (`-S -no-shutdown`): their BMC powers
//! them on.
//!
//! A rack grows by copies of its VMs with new identities ([`Rack::scaled`], with the
//! matching `nodes.yaml` entries from [`scale::scaled_nodes`]): `cargo xtask demo --vms N`.
//!
//! Invariants: loading is pure apart from reading the file, and every problem is
//! reported as `file:line:column: message`; [`qemu_args`], scaling and [`to_yaml`] are
//! pure (paths come in, arguments go out) so the command lines are tested without QEMU.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use provisioner::site::yaml;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod scale;

/// The lab bridge address the virtual BMCs listen on (nodes.yaml's BMC URLs).
pub const BMC_ADDRESS: &str = "10.213.0.1";

/// `rack.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rack {
    /// The virtual servers, one per node of the lab site's `nodes.yaml`.
    pub vms: Vec<VmSpec>,
}

/// One virtual server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// The node name in `nodes.yaml`.
    pub name: String,
    /// `bios` (SeaBIOS) or `uefi` (OVMF).
    pub firmware: Firmware,
    /// SMBIOS system serial number.
    pub serial: String,
    /// NUMA nodes, each with its own CPUs and memory (at least one).
    pub numa: Vec<NumaSpec>,
    /// Threads per core (1 or 2); every NUMA node's CPU count must divide by it.
    #[serde(default = "one")]
    pub threads_per_core: u32,
    /// NICs; exactly one has `boot: true` (the node's `boot_mac`).
    pub nics: Vec<NicSpec>,
    /// Disks; the first `virtio` or `sata` disk is the boot disk.
    pub disks: Vec<DiskSpec>,
    /// The VM's virtual BMC.
    pub bmc: BmcSpec,
    /// Adds QEMU's `intel-iommu` (VFs for vfio-pci need an IOMMU).
    #[serde(default)]
    pub iommu: bool,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
}

/// A NUMA node of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NumaSpec {
    /// Logical CPUs on this node (0 for a CPU-less node).
    pub cpus: u32,
    /// Memory on this node, MiB (0 for a memory-less node).
    pub memory_mib: u64,
}

/// A NIC of the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NicSpec {
    /// `virtio` (virtio-net, boots with iPXE's ROM), `e1000e` or `igb` (82576, 7 VFs).
    pub model: NicModel,
    /// MAC address, lowercase colon form.
    pub mac: String,
    /// The NIC the node network-boots from.
    #[serde(default)]
    pub boot: bool,
    /// Put the NIC on this NUMA node (through a `pxb-pcie` bus); default: the root bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NicModel {
    Virtio,
    E1000e,
    Igb,
}

/// A disk of the VM (a sparse raw file made by the harness).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    pub kind: DiskKind,
    /// Size in GiB (sparse: costs no space until written).
    pub size_gib: u64,
    /// The serial number the guest sees (at most 20 characters).
    pub serial: String,
    /// Fault injection: every write that touches this offset (MiB) fails with
    /// EIO (QEMU `blkdebug`, its rules in `<disk>.blkdebug` next to the disk).
    #[serde(default)]
    pub eio_at_mib: Option<u64>,
}

impl DiskSpec {
    /// The `blkdebug` rules of a disk with [`DiskSpec::eio_at_mib`].
    pub fn blkdebug_rules(&self) -> Option<String> {
        self.eio_at_mib.map(|mib| {
            format!(
                "[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\nsector = \"{}\"\nonce = \"off\"\n",
                mib * 2048
            )
        })
    }
}

/// Where a disk's `blkdebug` rules are written (next to the disk image).
pub fn blkdebug_file(disk: &Path) -> PathBuf {
    let mut name = disk.as_os_str().to_owned();
    name.push(".blkdebug");
    PathBuf::from(name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskKind {
    Virtio,
    Nvme,
    Sata,
}

/// The VM's virtual BMC, on the lab bridge address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BmcSpec {
    pub kind: BmcKind,
    /// TCP port (Redfish) or UDP port (IPMI).
    pub port: u16,
    /// Fault injection (Redfish only): the BMC answers `500 InternalError` to
    /// its first N requests, as a BMC busy after its own reboot does.
    #[serde(default)]
    pub fail_first: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BmcKind {
    Redfish,
    Ipmi,
}

/// Problems in a rack file, each as `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RackErrors(pub Vec<String>);

impl fmt::Display for RackErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl VmSpec {
    /// Logical CPUs in all.
    pub fn cpus(&self) -> u32 {
        self.numa.iter().map(|n| n.cpus).sum()
    }

    /// Memory in all, MiB.
    pub fn memory_mib(&self) -> u64 {
        self.numa.iter().map(|n| n.memory_mib).sum()
    }

    /// The NIC the node boots from.
    pub fn boot_nic(&self) -> &NicSpec {
        self.nics
            .iter()
            .find(|n| n.boot)
            .expect("validated: one boot NIC")
    }

    /// A stable SMBIOS UUID derived from the name (the same VM keeps its UUID).
    pub fn uuid(&self) -> String {
        // FNV-1a over the name, twice with different seeds: stable and dependency-free.
        let fnv = |seed: u64| {
            self.name.bytes().fold(seed, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
        };
        let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x84222325_cbf29ce4));
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }
}

/// The URL the site's `nodes.yaml` gives for `vm`'s virtual BMC on the lab bridge.
pub fn bmc_url(vm: &VmSpec) -> String {
    match vm.bmc.kind {
        BmcKind::Redfish => format!(
            "redfish+http://{BMC_ADDRESS}:{}/redfish/v1/Systems/{}",
            vm.bmc.port, vm.name
        ),
        BmcKind::Ipmi => format!("ipmi://{BMC_ADDRESS}:{}", vm.bmc.port),
    }
}

/// YAML text of a JSON value (a rack or a nodes file to write; block style, `name`
/// first, then the other keys in the value's order).
pub fn to_yaml(value: &Value) -> String {
    fn convert(value: &Value) -> yaml_rust2::Yaml {
        use yaml_rust2::Yaml;
        match value {
            Value::Null => Yaml::Null,
            Value::Bool(b) => Yaml::Boolean(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Yaml::Integer(i),
                None => Yaml::Real(n.to_string()),
            },
            Value::String(s) => Yaml::String(s.clone()),
            Value::Array(items) => Yaml::Array(items.iter().map(convert).collect()),
            // `name` first, so each VM or node starts with what it is.
            Value::Object(map) => Yaml::Hash(
                map.iter()
                    .filter(|(k, _)| *k == "name")
                    .chain(map.iter().filter(|(k, _)| *k != "name"))
                    .map(|(k, v)| (Yaml::String(k.clone()), convert(v)))
                    .collect(),
            ),
        }
    }
    let mut text = String::new();
    yaml_rust2::YamlEmitter::new(&mut text)
        .dump(&convert(value))
        .expect("writing YAML to a String cannot fail");
    text.push('\n');
    text
}

/// Reads and checks a rack file.
pub fn load(path: &Path) -> Result<Rack, RackErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| RackErrors(vec![format!("{file}: cannot read the rack file: {e}")]))?;
    parse(&file, &text)
}

/// Parses and checks rack YAML; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Rack, RackErrors> {
    let at = |pos: yaml::Pos, msg: &str| format!("{file}:{}:{}: {msg}", pos.line, pos.column);
    let (doc, errors) = yaml::parse(text);
    if !errors.is_empty() {
        return Err(RackErrors(
            errors.iter().map(|e| at(e.pos, &e.message)).collect(),
        ));
    }
    let doc = doc.expect("no syntax errors");
    let rack: Rack = serde_path_to_error::deserialize(&doc.value).map_err(|err| {
        let mut pointer = String::new();
        for seg in err.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => {
                    pointer = format!("{pointer}/{index}")
                }
                serde_path_to_error::Segment::Map { key } => pointer = yaml::child(&pointer, key),
                _ => {}
            }
        }
        RackErrors(vec![at(
            doc.locs.value_pos(&pointer),
            &err.inner().to_string(),
        )])
    })?;
    let problems = check(&rack);
    if problems.is_empty() {
        Ok(rack)
    } else {
        Err(RackErrors(
            problems
                .into_iter()
                .map(|(pointer, msg)| at(doc.locs.value_pos(&pointer), &msg))
                .collect(),
        ))
    }
}

/// Semantic checks: (JSON pointer, message) for each problem.
fn check(rack: &Rack) -> Vec<(String, String)> {
    let mut problems = vec![];
    let mut names = HashSet::new();
    let mut macs = HashSet::new();
    let mut ports = HashSet::new();
    if rack.vms.is_empty() {
        problems.push((
            "/vms".into(),
            "the rack has no VMs: add at least one".into(),
        ));
    }
    for (i, vm) in rack.vms.iter().enumerate() {
        let p = |rest: &str| format!("/vms/{i}{rest}");
        if !names.insert(vm.name.as_str()) {
            problems.push((p("/name"), format!("VM name `{}` is used twice", vm.name)));
        }
        if vm.numa.is_empty() {
            problems.push((p("/numa"), "give at least one NUMA node".into()));
        }
        if vm.cpus() == 0 || vm.memory_mib() < 256 {
            problems.push((
                p("/numa"),
                format!(
                    "the VM has {} CPUs and {} MiB: it needs at least 1 CPU and 256 MiB",
                    vm.cpus(),
                    vm.memory_mib()
                ),
            ));
        }
        if !matches!(vm.threads_per_core, 1 | 2) {
            problems.push((p("/threads_per_core"), "threads_per_core is 1 or 2".into()));
        }
        for (n, node) in vm.numa.iter().enumerate() {
            if node.cpus % vm.threads_per_core.max(1) != 0 {
                problems.push((
                    format!("/vms/{i}/numa/{n}/cpus"),
                    format!(
                        "{} CPUs do not make whole cores of {} threads",
                        node.cpus, vm.threads_per_core
                    ),
                ));
            }
        }
        if vm.nics.iter().filter(|n| n.boot).count() != 1 {
            problems.push((p("/nics"), "exactly one NIC needs `boot: true`".into()));
        }
        for (n, nic) in vm.nics.iter().enumerate() {
            let valid_mac = nic.mac.len() == 17
                && nic.mac.split(':').count() == 6
                && nic.mac.split(':').all(|b| {
                    b.len() == 2
                        && b.bytes()
                            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
                });
            if !valid_mac {
                problems.push((
                    format!("/vms/{i}/nics/{n}/mac"),
                    format!("`{}` is not a lowercase colon-separated MAC", nic.mac),
                ));
            }
            if !macs.insert(nic.mac.as_str()) {
                problems.push((
                    format!("/vms/{i}/nics/{n}/mac"),
                    format!("MAC {} is used twice", nic.mac),
                ));
            }
            if let Some(node) = nic.numa_node
                && node as usize >= vm.numa.len()
            {
                problems.push((
                    format!("/vms/{i}/nics/{n}/numa_node"),
                    format!(
                        "NUMA node {node} does not exist (the VM has {})",
                        vm.numa.len()
                    ),
                ));
            }
            if nic.boot && nic.model != NicModel::Virtio {
                problems.push((
                    format!("/vms/{i}/nics/{n}/model"),
                    "the boot NIC must be virtio (its iPXE ROM ships with QEMU)".into(),
                ));
            }
        }
        if !vm
            .disks
            .iter()
            .any(|d| matches!(d.kind, DiskKind::Virtio | DiskKind::Sata))
        {
            problems.push((p("/disks"), "add a virtio or sata boot disk".into()));
        }
        for (d, disk) in vm.disks.iter().enumerate() {
            if disk.serial.is_empty() || disk.serial.len() > 20 {
                problems.push((
                    format!("/vms/{i}/disks/{d}/serial"),
                    "a disk serial has 1 to 20 characters".into(),
                ));
            }
            if disk.size_gib == 0 {
                problems.push((
                    format!("/vms/{i}/disks/{d}/size_gib"),
                    "size_gib is at least 1".into(),
                ));
            }
        }
        if vm.bmc.fail_first > 0 && vm.bmc.kind != BmcKind::Redfish {
            problems.push((
                p("/bmc/fail_first"),
                "fault injection is for redfish BMCs only (ipmi_sim has none)".into(),
            ));
        }
        if !ports.insert(vm.bmc.port) {
            problems.push((
                p("/bmc/port"),
                format!("BMC port {} is used twice", vm.bmc.port),
            ));
        }
    }
    problems
}

/// Where a VM's files are and how it connects: what [`qemu_args`] needs besides the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPaths {
    /// Tap device for each NIC, in `nics` order (created on the lab bridge).
    pub taps: Vec<String>,
    /// Raw image for each disk, in `disks` order.
    pub disks: Vec<PathBuf>,
    /// The serial console's log file.
    pub serial_log: PathBuf,
    /// QMP sockets (the BMC's, the harness's).
    pub qmp: Vec<PathBuf>,
    /// OVMF code and this VM's copy of the variables (UEFI only).
    pub ovmf: Option<(PathBuf, PathBuf)>,
    /// `-accel` value: `tcg` unless a probe showed KVM works.
    pub accel: String,
}

/// QEMU device id of NIC `i` (the virtual BMC sets its `bootindex`).
pub fn nic_id(i: usize) -> String {
    format!("nic{i}")
}

/// QEMU device id of disk `i`.
pub fn disk_id(i: usize) -> String {
    format!("disk{i}")
}

/// `bootindex` of the boot disk; the boot NIC gets the next one, so the VM boots from
/// disk unless its BMC overrides it (`qom-set ... bootindex 0`).
pub const DISK_BOOTINDEX: i64 = 1;
pub const NIC_BOOTINDEX: i64 = 2;

/// The QEMU command line of a VM (without the program name).
pub fn qemu_args(vm: &VmSpec, paths: &VmPaths) -> Vec<String> {
    let mut a: Vec<String> = vec![];
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| (*s).to_owned()));
    let iommu = if vm.iommu {
        ",kernel-irqchip=split"
    } else {
        ""
    };
    push(&["-S", "-no-shutdown", "-nodefaults", "-nographic"]);
    push(&[
        "-machine",
        &format!("q35{iommu}"),
        "-accel",
        &paths.accel,
        "-cpu",
        // An Intel CPU, as the machine's IOMMU (intel-iommu) and the recorded
        // fixtures are: TCG's `max` alone says AuthenticAMD, and the planner
        // then asks `amd_iommu=on` of an Intel platform.
        "max,vendor=GenuineIntel",
    ]);
    let threads = vm.threads_per_core.max(1);
    let sockets = vm.numa.iter().filter(|n| n.cpus > 0).count().max(1) as u32;
    let cores = vm.cpus() / threads / sockets;
    push(&[
        "-smp",
        &format!(
            "cpus={},sockets={sockets},cores={},threads={threads}",
            vm.cpus(),
            cores.max(1)
        ),
    ]);
    push(&["-m", &format!("{}M", vm.memory_mib())]);
    let mut next_cpu = 0;
    for (n, node) in vm.numa.iter().enumerate() {
        if node.memory_mib > 0 {
            push(&[
                "-object",
                &format!("memory-backend-ram,id=mem{n},size={}M", node.memory_mib),
            ]);
        }
        let mut spec = format!("node,nodeid={n}");
        if node.cpus > 0 {
            spec.push_str(&format!(",cpus={next_cpu}-{}", next_cpu + node.cpus - 1));
            next_cpu += node.cpus;
        }
        if node.memory_mib > 0 {
            spec.push_str(&format!(",memdev=mem{n}"));
        }
        push(&["-numa", &spec]);
    }
    push(&["-uuid", &vm.uuid()]);
    push(&["-smbios", &format!("type=1,serial={}", vm.serial)]);
    if let Some((code, vars)) = &paths.ovmf {
        push(&[
            "-drive",
            &format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                code.display()
            ),
            "-drive",
            &format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
        ]);
    }
    push(&["-serial", &format!("file:{}", paths.serial_log.display())]);
    for qmp in &paths.qmp {
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", qmp.display()),
        ]);
    }
    if vm.iommu {
        push(&["-device", "intel-iommu,intremap=on,caching-mode=on"]);
    }
    // One pxb-pcie expander per NUMA node that has a NIC on it, with a root port per NIC.
    let mut expanders: Vec<u32> = vm.nics.iter().filter_map(|n| n.numa_node).collect();
    expanders.sort_unstable();
    expanders.dedup();
    for node in &expanders {
        push(&[
            "-device",
            &format!(
                "pxb-pcie,id=pxb{node},bus_nr={},numa_node={node},bus=pcie.0",
                0x40 + node * 0x20
            ),
        ]);
    }
    let mut boot_disk_seen = false;
    for (i, nic) in vm.nics.iter().enumerate() {
        let tap = paths
            .taps
            .get(i)
            .map(String::as_str)
            .unwrap_or("missing-tap");
        push(&[
            "-netdev",
            &format!("tap,id=net{i},ifname={tap},script=no,downscript=no"),
        ]);
        let model = match nic.model {
            NicModel::Virtio => "virtio-net-pci",
            NicModel::E1000e => "e1000e",
            NicModel::Igb => "igb",
        };
        let mut dev = format!("{model},netdev=net{i},id={},mac={}", nic_id(i), nic.mac);
        if nic.boot {
            dev.push_str(&format!(",bootindex={NIC_BOOTINDEX}"));
        } else {
            // Only the boot NIC runs an option ROM: the others must not try to boot.
            dev.push_str(",romfile=");
        }
        if let Some(node) = nic.numa_node {
            push(&[
                "-device",
                &format!(
                    "pcie-root-port,id=rp{i},bus=pxb{node},chassis={},slot=0",
                    10 + i
                ),
            ]);
            dev.push_str(&format!(",bus=rp{i}"));
        } else {
            // Explicit: QEMU would otherwise put it on the last bus created (a pxb).
            dev.push_str(",bus=pcie.0");
        }
        push(&["-device", &dev]);
    }
    let mut ahci = false;
    let mut sata_port = 0;
    for (i, disk) in vm.disks.iter().enumerate() {
        let file = paths
            .disks
            .get(i)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let file = match (disk.eio_at_mib, paths.disks.get(i)) {
            (Some(_), Some(path)) => {
                format!("blkdebug:{}:{file}", blkdebug_file(path).display())
            }
            _ => file,
        };
        push(&[
            "-drive",
            &format!("file={file},if=none,id=drive{i},format=raw"),
        ]);
        let boots = !boot_disk_seen && matches!(disk.kind, DiskKind::Virtio | DiskKind::Sata);
        boot_disk_seen |= boots;
        let index = if boots {
            format!(",bootindex={DISK_BOOTINDEX}")
        } else {
            String::new()
        };
        let dev = match disk.kind {
            DiskKind::Virtio => format!(
                "virtio-blk-pci,drive=drive{i},bus=pcie.0,id={},serial={}{index}",
                disk_id(i),
                disk.serial
            ),
            DiskKind::Nvme => format!(
                "nvme,drive=drive{i},bus=pcie.0,id={},serial={}",
                disk_id(i),
                disk.serial
            ),
            DiskKind::Sata => {
                if !ahci {
                    ahci = true;
                    push(&["-device", "ahci,id=ahci0,bus=pcie.0"]);
                }
                sata_port += 1;
                format!(
                    "ide-hd,drive=drive{i},bus=ahci0.{},id={},serial={}{index}",
                    sata_port - 1,
                    disk_id(i),
                    disk.serial
                )
            }
        };
        push(&["-device", &dev]);
    }
    a
}

/// The JSON Schema of `rack.yaml`.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Rack)).expect("schema serializes")
}

/// The lab rack next to the lab site.
pub fn lab_rack_file() -> PathBuf {
    crate::lab_site_dir().join("rack.yaml")
}

#[cfg(test)]
mod tests;
