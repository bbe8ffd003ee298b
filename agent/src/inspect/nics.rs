//! Network interfaces backed by a device (`/sys/class/net/*/device`), with
//! their PCI function, NUMA node, driver, link and SR-IOV capability.

use std::path::Path;

use model::inventory::Nic;

use super::pci::{self, PCI};
use super::{Scan, hex_id, is_pci_address};

const NET: &str = "/sys/class/net";

pub(super) fn scan(s: &mut Scan, numa_nodes: usize) -> Vec<Nic> {
    let mut nics = Vec::new();
    for name in s.list(NET) {
        let dir = format!("{NET}/{name}");
        // Bridges, bonds, VLANs, loopback, tunnels: no device behind them.
        if !s.exists(&format!("{dir}/device")) {
            continue;
        }
        let pci_address = pci_address_of(s, &dir);
        let Some(mac) = s.read(&format!("{dir}/address")).filter(|m| !m.is_empty()) else {
            s.warn(format!(
                "{dir}/address is unreadable: interface {name} left out"
            ));
            continue;
        };
        let driver = s.link_name(&format!("{dir}/device/driver"));
        if driver.is_none() {
            s.warn(format!("{name}: no driver bound to its device"));
        }
        // `speed` is refused (EINVAL) without link, -1 when unknown.
        let speed_mbps = s
            .read(&format!("{dir}/speed"))
            .and_then(|t| t.parse::<i64>().ok())
            .filter(|&v| v > 0 && v < i64::from(u32::MAX))
            .map(|v| v as u32);
        // `carrier` is refused while the interface is down: no link known.
        let link = s.read(&format!("{dir}/carrier")).as_deref() == Some("1");
        let mut nic = Nic {
            name: name.clone(),
            mac: mac.to_ascii_lowercase(),
            pci_address: pci_address.clone(),
            numa_node: None,
            driver,
            vendor_id: None,
            device_id: None,
            speed_mbps,
            link,
            sriov_totalvfs: 0,
            sriov_numvfs: 0,
            is_virtual_function: false,
        };
        if let Some(addr) = &pci_address {
            let pdir = format!("{PCI}/{addr}");
            nic.numa_node = pci::numa_node(s, addr);
            if nic.numa_node.is_none() && numa_nodes > 1 {
                s.warn(format!(
                    "{name} ({addr}): the platform does not say which NUMA node the device \
                     is on (numa_node -1 or missing): CPUs for its VFs cannot be chosen by locality"
                ));
            }
            nic.vendor_id = s.read(&format!("{pdir}/vendor")).map(|v| hex_id(&v));
            nic.device_id = s.read(&format!("{pdir}/device")).map(|v| hex_id(&v));
            nic.sriov_totalvfs = s
                .read_u64(&format!("{pdir}/sriov_totalvfs"))
                .map_or(0, |v| v as u32);
            nic.sriov_numvfs = s
                .read_u64(&format!("{pdir}/sriov_numvfs"))
                .map_or(0, |v| v as u32);
            nic.is_virtual_function = s.exists(&format!("{pdir}/physfn"));
        }
        nics.push(nic);
    }
    nics
}

/// The PCI function behind an interface or block device: the last PCI
/// address in the sysfs path its class entry links to (a virtio device sits
/// below its PCI function: `.../0000:01:00.0/virtio0/net/eth0`), else the
/// name of its `device` link.
pub(crate) fn pci_address_of(s: &mut Scan, class_entry: &str) -> Option<String> {
    let from_class = s.link(class_entry).and_then(|t| last_pci(&t));
    from_class.or_else(|| {
        s.link_name(&format!("{class_entry}/device"))
            .filter(|n| is_pci_address(n))
    })
}

fn last_pci(path: &Path) -> Option<String> {
    path.iter()
        .rev()
        .map(|c| c.to_string_lossy())
        .find(|c| is_pci_address(c))
        .map(|c| c.into_owned())
}
