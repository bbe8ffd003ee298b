//! Whole disks from `/sys/block`: size, identity (model, serial, WWN),
//! transport and a stable `by-path` name. Loop, RAM, zram, optical and
//! other device-less block devices (device-mapper, md) are left out.

use std::collections::BTreeMap;
use std::path::Path;

use model::inventory::{Disk, DiskKind};

use super::Scan;
use super::nics::pci_address_of;

const BLOCK: &str = "/sys/block";
const BY_PATH: &str = "/dev/disk/by-path";

pub(super) fn scan(s: &mut Scan) -> Vec<Disk> {
    let udev = udev_by_path(s);
    let mut disks = Vec::new();
    for name in s.list(BLOCK) {
        if ["loop", "ram", "zram", "sr"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let dir = format!("{BLOCK}/{name}");
        if !s.exists(&format!("{dir}/device")) || s.exists(&format!("{dir}/partition")) {
            continue;
        }
        // SCSI type 5: CD/DVD.
        if s.read(&format!("{dir}/device/type")).as_deref() == Some("5") {
            continue;
        }
        let Some(sectors) = s.read_u64(&format!("{dir}/size")) else {
            s.warn(format!("{dir}/size is unreadable: disk {name} left out"));
            continue;
        };
        let sys_path = s
            .link(&dir)
            .or_else(|| s.link(&format!("{dir}/device")))
            .unwrap_or_default();
        let kind = kind_of(&name, &sys_path);
        let rotational = match s.read(&format!("{dir}/queue/rotational")).as_deref() {
            Some("1") => true,
            Some("0") => false,
            _ => {
                s.warn(format!(
                    "{dir}/queue/rotational is unreadable: disk {name} reported as not rotational"
                ));
                false
            }
        };
        let pci = pci_address_of(s, &dir);
        let by_path = udev
            .get(&name)
            .cloned()
            .or_else(|| derive_by_path(&name, kind, pci.as_deref()));
        let model = nonempty(s.read(&format!("{dir}/device/model")));
        let serial = nonempty(s.read(&format!("{dir}/serial")))
            .or_else(|| nonempty(s.read(&format!("{dir}/device/serial"))))
            .or_else(|| {
                s.read_bytes(&format!("{dir}/device/vpd_pg80"))
                    .and_then(|b| vpd_serial(&b))
            });
        let wwn = s
            .read(&format!("{dir}/wwid"))
            .or_else(|| s.read(&format!("{dir}/device/wwid")))
            .and_then(|w| wwn(&w));
        let removable = s.read(&format!("{dir}/removable")).as_deref() == Some("1");
        disks.push(Disk {
            path: format!("/dev/{name}"),
            name,
            by_path,
            size_bytes: sectors.saturating_mul(512),
            model,
            serial,
            wwn,
            rotational,
            kind,
            removable,
        });
    }
    disks
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|v| !v.is_empty())
}

/// `/dev/disk/by-path` names of whole disks, by kernel name (udev's view,
/// when udev runs; the inspection ramdisk has none).
fn udev_by_path(s: &mut Scan) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for entry in s.list(BY_PATH) {
        if entry.contains("-part") {
            continue;
        }
        if let Some(dev) = s.link_name(&format!("{BY_PATH}/{entry}")) {
            map.entry(dev).or_insert(entry);
        }
    }
    map
}

/// The transport of a disk from its sysfs device path.
pub(crate) fn kind_of(name: &str, sys_path: &Path) -> DiskKind {
    let parts: Vec<String> = sys_path
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let numbered = |prefix: &str| {
        parts.iter().any(|p| {
            p.strip_prefix(prefix)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    if name.starts_with("nvme") || numbered("nvme") {
        DiskKind::Nvme
    } else if numbered("usb") {
        DiskKind::Usb
    } else if numbered("ata") {
        DiskKind::Sata
    } else if parts
        .iter()
        .any(|p| p.starts_with("end_device-") || p.starts_with("expander-"))
    {
        DiskKind::Sas
    } else if numbered("host") {
        DiskKind::Scsi
    } else if numbered("virtio") || name.starts_with("vd") {
        DiskKind::Virtio
    } else {
        DiskKind::Unknown
    }
}

/// udev's `path_id` name for the shapes it is certain of without udev:
/// virtio-blk (`pci-ADDR`) and NVMe namespaces (`pci-ADDR-nvme-NSID`).
fn derive_by_path(name: &str, kind: DiskKind, pci: Option<&str>) -> Option<String> {
    let pci = pci?;
    match kind {
        DiskKind::Virtio => Some(format!("pci-{pci}")),
        DiskKind::Nvme => {
            let nsid = name.rsplit_once('n')?.1;
            nsid.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| format!("pci-{pci}-nvme-{nsid}"))
        }
        _ => None,
    }
}

/// The serial number in a SCSI VPD page 0x80 (4-byte header, then ASCII).
fn vpd_serial(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x80 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([page[2], page[3]]));
    let body = page.get(4..4 + len).unwrap_or(&page[4..]);
    let text = String::from_utf8_lossy(body).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// A World Wide Name from a `wwid` attribute: `eui.` ids as they are, NAA
/// ids as `0x...`; other forms (`t10.`, QEMU's synthetic `nvme.`) are not
/// WWNs.
fn wwn(wwid: &str) -> Option<String> {
    let wwid = wwid.trim();
    if let Some(naa) = wwid.strip_prefix("naa.") {
        Some(format!("0x{}", naa.to_ascii_lowercase()))
    } else if wwid.starts_with("eui.") {
        Some(wwid.to_ascii_lowercase())
    } else {
        None
    }
}
