//! PCI devices from `/sys/bus/pci/devices`: class, ids and NUMA node.

use model::inventory::PciDevice;

use super::{Scan, hex_id, is_pci_address};

pub(crate) const PCI: &str = "/sys/bus/pci/devices";

pub(super) fn scan(s: &mut Scan) -> Vec<PciDevice> {
    let mut devices = Vec::new();
    for address in s.list(PCI) {
        if !is_pci_address(&address) {
            continue;
        }
        let dir = format!("{PCI}/{address}");
        let class = s.read(&format!("{dir}/class")).map(|c| hex_id(&c));
        let vendor = s.read(&format!("{dir}/vendor")).map(|c| hex_id(&c));
        let device = s.read(&format!("{dir}/device")).map(|c| hex_id(&c));
        let (Some(class), Some(vendor_id), Some(device_id)) = (class, vendor, device) else {
            s.warn(format!(
                "{dir}: class, vendor or device unreadable: device left out"
            ));
            continue;
        };
        let numa_node = numa_node(s, &address);
        devices.push(PciDevice {
            address,
            class,
            vendor_id,
            device_id,
            numa_node,
        });
    }
    devices
}

/// The NUMA node of PCI device `address`: `None` when the platform does not
/// say (`-1`), the file is missing or unreadable (a warning for the last).
pub(crate) fn numa_node(s: &mut Scan, address: &str) -> Option<u32> {
    let path = format!("{PCI}/{address}/numa_node");
    let text = s.read(&path)?;
    match text.parse::<i64>() {
        Ok(n) if n >= 0 => u32::try_from(n).ok(),
        Ok(_) => None,
        Err(_) => {
            s.warn(format!("{path}: expected a node number, found {text:?}"));
            None
        }
    }
}
