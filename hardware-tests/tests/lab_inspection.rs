//! Inspection in the lab: lab-compute-0 (UEFI, 2 NUMA nodes, an igb NIC on node 1
//! behind a pxb-pcie, a virtio and an NVMe disk with serials) is powered on by the
//! provisioner through its virtual BMC, PXE-boots the real inspection ramdisk through
//! our DHCP, TFTP and HTTP, and its agent's inventory reaches the provisioner: the
//! node becomes `available`, the inventory matches the rack's definition of the VM,
//! and the lab-compute profile's host plan puts the igb's 7 VFs on node 1's CPUs.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use hardware_tests::lab::{Lab, RackSetup, assets};
use hardware_tests::rack::{self, DiskKind};
use model::inventory::DiskKind as Kind;

const PASSWORD: (&str, &str) = ("LAB_BMC_PASSWORD", "lab-inspection-secret");
const NODE: &str = "lab-compute-0";

#[test]
fn a_numa_vm_is_inspected_through_our_boot_services() -> Result<()> {
    let ramdisk = assets::inspection_ramdisk()?;
    let mut lab = Lab::start_rack(RackSetup {
        nodes: Some(&[NODE]),
        ..RackSetup::new(&ramdisk, PASSWORD)
    })?;
    let rack = rack::load(&rack::lab_rack_file())?;
    let spec = rack
        .vms
        .iter()
        .find(|v| v.name == NODE)
        .context("lab-compute-0 in rack.yaml")?;
    let started = lab.rack_vm(NODE).context("started")?.started;

    let node = lab.wait_matched(NODE, Duration::from_secs(300))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let store = runtime.block_on(provisioner::store::Store::open(&lab.dir().join("state")))?;
    eprintln!(
        "{NODE}: inventory stored, node available {:.1} s after QEMU started",
        started.elapsed().as_secs_f64()
    );
    let stored = runtime
        .block_on(store.inventory(NODE))?
        .context("no inventory stored")?;
    let inv = &stored.inventory;

    // NUMA: the rack's nodes, their CPUs and (all but what firmware and kernel keep) memory.
    ensure!(
        inv.numa_nodes.len() == spec.numa.len(),
        "{:?}",
        inv.numa_nodes
    );
    let mut first_cpu = 0;
    for (node, want) in inv.numa_nodes.iter().zip(&spec.numa) {
        let cpus: Vec<u32> = (first_cpu..first_cpu + want.cpus).collect();
        first_cpu += want.cpus;
        ensure!(
            node.cpus == cpus,
            "node {}: CPUs {:?}, want {cpus:?}",
            node.id,
            node.cpus
        );
        let want_bytes = want.memory_mib << 20;
        ensure!(
            // A node's MemTotal leaves out what firmware and kernel keep (OVMF, the
            // kernel image, the unpacked ramdisk): 141 MiB on node 1 was seen.
            node.memory_bytes <= want_bytes && node.memory_bytes + (192 << 20) >= want_bytes,
            "node {}: {} bytes of memory, the VM gives it {want_bytes}",
            node.id,
            node.memory_bytes
        );
    }
    // The igb NIC on node 1, with its 7 VFs' worth of SR-IOV.
    let igb_mac = &spec
        .nics
        .iter()
        .find(|n| n.model == rack::NicModel::Igb)
        .context("an igb in the rack")?
        .mac;
    let igb = inv
        .nics
        .iter()
        .find(|n| &n.mac == igb_mac)
        .with_context(|| format!("no NIC {igb_mac} in {:?}", inv.nics))?;
    ensure!(igb.driver.as_deref() == Some("igb"), "{igb:?}");
    ensure!(igb.numa_node == Some(1), "{igb:?}");
    ensure!(igb.sriov_totalvfs == 7, "{igb:?}");
    // Disks: serials, sizes and kinds as the rack made them.
    for want in &spec.disks {
        let disk = inv
            .disks
            .iter()
            .find(|d| d.serial.as_deref() == Some(want.serial.as_str()))
            .with_context(|| format!("no disk with serial {} in {:?}", want.serial, inv.disks))?;
        ensure!(disk.size_bytes == want.size_gib << 30, "{disk:?}");
        let kind = match want.kind {
            DiskKind::Virtio => Kind::Virtio,
            DiskKind::Nvme => Kind::Nvme,
            DiskKind::Sata => Kind::Sata,
        };
        ensure!(disk.kind == kind, "{disk:?}");
    }

    // Matched and planned: the VFs get node 1's isolated CPUs.
    ensure!(
        node.matched_profile.as_deref() == Some("lab-compute"),
        "{node:?}"
    );
    let plan = node.plan.as_ref().context("no host plan")?;
    let sriov = plan.sriov.first().context("no SR-IOV in the plan")?;
    ensure!(sriov.num_vfs == 7, "{sriov:?}");
    // vfio-pci VFs on an Intel platform (the VM's CPU vendor and its intel-iommu).
    ensure!(
        plan.kernel_args.iter().any(|a| a == "intel_iommu=on")
            && !plan.kernel_args.iter().any(|a| a.starts_with("amd_iommu")),
        "kernel args {:?}",
        plan.kernel_args
    );
    let node1 = &inv.numa_nodes[1].cpus;
    ensure!(
        !sriov.local_cpus.is_empty() && sriov.local_cpus.iter().all(|c| node1.contains(c)),
        "VF CPUs {:?} are not node 1's {node1:?}",
        sriov.local_cpus
    );
    runtime.block_on(store.close());
    lab.pass();
    Ok(())
}
