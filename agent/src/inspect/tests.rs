//! The inspection on small hand-made trees laid out like the kernel's
//! sysfs (class entries are symlinks into `/sys/devices`), one odd case
//! per test, and a proptest that random damage never panics.

use std::path::Path;

use model::inventory::{DiskKind, Firmware, Inventory};
use proptest::prelude::*;

use super::{cpulist, cpumask, inspect, inspect_logged, memory, record};
use crate::sysroot::SysRoot;

fn file(root: &Path, path: &str, value: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, value).expect("write");
}

fn link(root: &Path, path: &str, target: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::os::unix::fs::symlink(target, p).expect("symlink");
}

const IGB: &str = "sys/devices/pci0000:00/0000:00:1c.0/0000:05:00.0";
const NVME: &str = "sys/devices/pci0000:00/0000:00:03.0";
const VIRTIO: &str = "sys/devices/pci0000:00/0000:00:04.0";

/// A 2-node machine: CPUs 0-3 (SMT pairs 0,2 and 1,3) on node 0, 4-7 on
/// node 1; an igb NIC on node 1 with SR-IOV, a virtio-net NIC with no NUMA
/// node, an NVMe and a virtio disk, plus a bridge, loop, zram and a
/// partition that must be left out.
fn machine() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path();
    let dmi = "sys/class/dmi/id";
    file(r, &format!("{dmi}/sys_vendor"), "QEMU\n");
    file(
        r,
        &format!("{dmi}/product_name"),
        "Standard PC (Q35 + ICH9, 2009)\n",
    );
    file(
        r,
        &format!("{dmi}/product_serial"),
        "To Be Filled By O.E.M.\n",
    );
    file(
        r,
        &format!("{dmi}/product_uuid"),
        "5C2F0000-AAAA-BBBB-CCCC-000000000001\n",
    );
    let mut cpuinfo = String::new();
    for cpu in 0..8 {
        cpuinfo.push_str(&format!(
            "processor\t: {cpu}\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\n\
             physical id\t: {}\ncore id\t\t: {}\nflags\t\t: fpu pse pdpe1gb\n\n",
            cpu / 4,
            cpu % 2
        ));
        let topo = format!("sys/devices/system/cpu/cpu{cpu}/topology");
        file(
            r,
            &format!("{topo}/physical_package_id"),
            &format!("{}\n", cpu / 4),
        );
        let base = cpu / 4 * 4 + cpu % 2;
        file(
            r,
            &format!("{topo}/thread_siblings_list"),
            &format!("{},{}\n", base, base + 2),
        );
    }
    file(r, "proc/cpuinfo", &cpuinfo);
    file(r, "sys/devices/system/cpu/online", "0-7\n");
    for node in 0..2u32 {
        let n = format!("sys/devices/system/node/node{node}");
        file(
            r,
            &format!("{n}/cpulist"),
            &format!("{}-{}\n", node * 4, node * 4 + 3),
        );
        file(
            r,
            &format!("{n}/meminfo"),
            &format!("Node {node} MemTotal:     2097152 kB\nNode {node} MemFree: 1 kB\n"),
        );
        file(
            r,
            &format!("{n}/distance"),
            if node == 0 { "10 21\n" } else { "21 10\n" },
        );
        for size in ["2048", "1048576"] {
            let h = format!("{n}/hugepages/hugepages-{size}kB");
            file(r, &format!("{h}/nr_hugepages"), "4\n");
            file(r, &format!("{h}/free_hugepages"), "3\n");
        }
    }
    file(r, "sys/devices/system/memory/block_size_bytes", "8000000\n");
    for block in 0..32 {
        file(
            r,
            &format!("sys/devices/system/memory/memory{block}/state"),
            "online\n",
        );
    }
    file(r, "proc/meminfo", "MemTotal:        4000000 kB\n");

    // PCI functions.
    for (dev, class, vendor, device, numa) in [
        (IGB, "0x020000", "0x8086", "0x10c9", "1"),
        (NVME, "0x010802", "0x1b36", "0x0010", "-1"),
        (VIRTIO, "0x010000", "0x1af4", "0x1042", "-1"),
        (
            "sys/devices/pci0000:00/0000:00:02.0",
            "0x020000",
            "0x1af4",
            "0x1041",
            "-1",
        ),
    ] {
        file(r, &format!("{dev}/class"), class);
        file(r, &format!("{dev}/vendor"), vendor);
        file(r, &format!("{dev}/device"), device);
        file(r, &format!("{dev}/numa_node"), numa);
        let addr = dev.rsplit('/').next().expect("address");
        link(
            r,
            &format!("sys/bus/pci/devices/{addr}"),
            &format!("../../../{}", &dev[4..]),
        );
    }
    file(r, &format!("{IGB}/sriov_totalvfs"), "7\n");
    file(r, &format!("{IGB}/sriov_numvfs"), "0\n");
    link(
        r,
        &format!("{IGB}/driver"),
        "../../../../bus/pci/drivers/igb",
    );

    // NICs: igb (PCI device directly), virtio (below virtio0), a bridge.
    let igb_net = format!("{IGB}/net/enp5s0");
    file(r, &format!("{igb_net}/address"), "52:54:00:AA:00:01\n");
    file(r, &format!("{igb_net}/speed"), "1000\n");
    file(r, &format!("{igb_net}/carrier"), "1\n");
    link(r, &format!("{igb_net}/device"), "../../../0000:05:00.0");
    link(
        r,
        "sys/class/net/enp5s0",
        &format!("../../{}", &igb_net[4..]),
    );
    let vnet = "sys/devices/pci0000:00/0000:00:02.0/virtio0";
    file(
        r,
        &format!("{vnet}/net/eth0/address"),
        "52:54:00:aa:00:02\n",
    );
    link(r, &format!("{vnet}/net/eth0/device"), "../../../virtio0");
    link(
        r,
        &format!("{vnet}/driver"),
        "../../../../bus/virtio/drivers/virtio_net",
    );
    link(
        r,
        "sys/class/net/eth0",
        &format!("../../{}/net/eth0", &vnet[4..]),
    );
    file(
        r,
        "sys/devices/virtual/net/br0/address",
        "02:00:00:00:00:01\n",
    );
    link(r, "sys/class/net/br0", "../../devices/virtual/net/br0");

    // Disks.
    let nvme_ctrl = format!("{NVME}/nvme/nvme0");
    file(
        r,
        &format!("{nvme_ctrl}/model"),
        "QEMU NVMe Ctrl                          \n",
    );
    file(r, &format!("{nvme_ctrl}/serial"), "nvme-serial-1   \n");
    let ns = format!("{nvme_ctrl}/nvme0n1");
    file(r, &format!("{ns}/size"), "2097152\n");
    file(r, &format!("{ns}/queue/rotational"), "0\n");
    file(r, &format!("{ns}/removable"), "0\n");
    file(r, &format!("{ns}/wwid"), "eui.0123456789abcdef\n");
    link(r, &format!("{ns}/device"), "../../nvme0");
    file(r, &format!("{ns}/nvme0n1p1/partition"), "1\n");
    link(r, "sys/block/nvme0n1", &format!("../{}", &ns[4..]));
    let vda = format!("{VIRTIO}/virtio1/block/vda");
    file(r, &format!("{vda}/size"), "41943040\n");
    file(r, &format!("{vda}/serial"), "lab-root\n");
    file(r, &format!("{vda}/queue/rotational"), "1\n");
    file(r, &format!("{vda}/removable"), "0\n");
    link(r, &format!("{vda}/device"), "../../../virtio1");
    link(r, "sys/block/vda", &format!("../{}", &vda[4..]));
    for virt in ["loop0", "zram0", "ram0", "dm-0"] {
        file(r, &format!("sys/devices/virtual/block/{virt}/size"), "8\n");
        link(
            r,
            &format!("sys/block/{virt}"),
            &format!("../devices/virtual/block/{virt}"),
        );
    }
    file(
        r,
        "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c",
        "",
    );
    std::fs::write(
        r.join("sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"),
        [6, 0, 0, 0, 1],
    )
    .expect("efivar");
    dir
}

fn run(root: &Path) -> Inventory {
    inspect(&SysRoot::new(root, true))
}

fn has_warning(inv: &Inventory, part: &str) -> bool {
    inv.warnings.iter().any(|w| w.contains(part))
}

#[test]
fn a_complete_machine_reads_every_field() {
    let dir = machine();
    let inv = run(dir.path());
    // The only odd thing: the virtio NIC has no NUMA node on a 2-node machine.
    assert_eq!(inv.warnings.len(), 1, "{:?}", inv.warnings);
    assert!(has_warning(
        &inv,
        "eth0 (0000:00:02.0): the platform does not say"
    ));
    assert_eq!(inv.system.vendor, "QEMU");
    assert_eq!(
        inv.system.serial, None,
        "placeholder serials are not identities"
    );
    assert_eq!(
        inv.system.uuid.as_deref(),
        Some("5c2f0000-aaaa-bbbb-cccc-000000000001")
    );
    assert_eq!(inv.system.firmware, Firmware::Uefi);
    assert_eq!(inv.system.secure_boot, Some(true));

    assert_eq!(inv.cpus.model, "Test CPU");
    assert_eq!(
        (inv.cpus.sockets, inv.cpus.cores, inv.cpus.threads),
        (2, 4, 8)
    );
    assert_eq!(inv.cpus.siblings, [[0, 2], [1, 3], [4, 6], [5, 7]]);
    assert!(inv.has_cpu_flag("pdpe1gb"));

    assert_eq!(inv.numa_nodes.len(), 2);
    assert_eq!(inv.numa_nodes[1].cpus, [4, 5, 6, 7]);
    assert_eq!(inv.numa_nodes[1].memory_bytes, 2 << 30);
    assert_eq!(inv.numa_nodes[1].distances, [21, 10]);
    assert_eq!(inv.numa_nodes[0].hugepages.len(), 2);
    assert_eq!(inv.numa_nodes[0].hugepages[1].size_kb, 1_048_576);
    assert_eq!(
        (
            inv.numa_nodes[0].hugepages[1].total,
            inv.numa_nodes[0].hugepages[1].free
        ),
        (4, 3)
    );
    assert_eq!(inv.memory_bytes, 32 * 0x800_0000, "32 blocks of 128 MiB");

    let names: Vec<&str> = inv.nics.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["enp5s0", "eth0"], "the bridge is left out");
    let igb = &inv.nics[0];
    assert_eq!(igb.pci_address.as_deref(), Some("0000:05:00.0"));
    assert_eq!(igb.numa_node, Some(1));
    assert_eq!(igb.driver.as_deref(), Some("igb"));
    assert_eq!(igb.mac, "52:54:00:aa:00:01");
    assert_eq!(
        (igb.vendor_id.as_deref(), igb.device_id.as_deref()),
        (Some("8086"), Some("10c9"))
    );
    assert_eq!((igb.speed_mbps, igb.link), (Some(1000), true));
    assert_eq!((igb.sriov_totalvfs, igb.sriov_numvfs), (7, 0));
    assert!(!igb.is_virtual_function);
    let virtio = &inv.nics[1];
    assert_eq!(virtio.pci_address.as_deref(), Some("0000:00:02.0"));
    assert_eq!(virtio.driver.as_deref(), Some("virtio_net"));
    assert_eq!(virtio.numa_node, None);
    assert_eq!((virtio.speed_mbps, virtio.link), (None, false));

    let disks: Vec<(&str, DiskKind)> = inv
        .disks
        .iter()
        .map(|d| (d.name.as_str(), d.kind))
        .collect();
    assert_eq!(
        disks,
        [("nvme0n1", DiskKind::Nvme), ("vda", DiskKind::Virtio)]
    );
    let nvme = &inv.disks[0];
    assert_eq!(nvme.size_bytes, 1 << 30);
    assert_eq!(nvme.model.as_deref(), Some("QEMU NVMe Ctrl"));
    assert_eq!(nvme.serial.as_deref(), Some("nvme-serial-1"));
    assert_eq!(nvme.wwn.as_deref(), Some("eui.0123456789abcdef"));
    assert_eq!(nvme.by_path.as_deref(), Some("pci-0000:00:03.0-nvme-1"));
    assert!(!nvme.rotational);
    let vda = &inv.disks[1];
    assert_eq!(vda.path, "/dev/vda");
    assert_eq!(vda.serial.as_deref(), Some("lab-root"));
    assert_eq!(vda.by_path.as_deref(), Some("pci-0000:00:04.0"));
    assert!(vda.rotational);

    assert_eq!(inv.pci_devices.len(), 4);
    let nvme_pci = inv
        .pci_devices
        .iter()
        .find(|d| d.address == "0000:00:03.0")
        .expect("nvme");
    assert_eq!(
        (nvme_pci.class.as_str(), nvme_pci.numa_node),
        ("010802", None)
    );
}

#[test]
fn offline_cpus_are_left_out_with_a_warning() {
    let dir = machine();
    let r = dir.path();
    file(r, "sys/devices/system/cpu/online", "0-5\n");
    file(r, "sys/devices/system/node/node1/cpulist", "4-5\n");
    let inv = run(r);
    assert_eq!(inv.cpus.online, [0, 1, 2, 3, 4, 5]);
    assert_eq!(inv.cpus.threads, 6);
    assert_eq!(
        inv.cpus.siblings,
        vec![vec![0, 2], vec![1, 3], vec![4], vec![5]]
    );
    assert!(
        has_warning(&inv, "CPUs 6-7 are offline"),
        "{:?}",
        inv.warnings
    );
}

#[test]
fn cpu_less_and_memory_less_nodes_are_kept_with_warnings() {
    let dir = machine();
    let r = dir.path();
    file(r, "sys/devices/system/node/node1/cpulist", "\n");
    file(r, "sys/devices/system/node/node0/cpulist", "0-7\n");
    file(
        r,
        "sys/devices/system/node/node0/meminfo",
        "Node 0 MemTotal:       0 kB\n",
    );
    let inv = run(r);
    assert_eq!(inv.numa_nodes[1].cpus, Vec::<u32>::new());
    assert_eq!(inv.numa_nodes[0].memory_bytes, 0);
    assert!(
        has_warning(&inv, "NUMA node 1 has no CPUs"),
        "{:?}",
        inv.warnings
    );
    assert!(
        has_warning(&inv, "NUMA node 0 has no memory"),
        "{:?}",
        inv.warnings
    );
}

#[test]
fn an_unknown_numa_node_is_null_and_warned_on_a_numa_machine() {
    let dir = machine();
    file(dir.path(), &format!("{IGB}/numa_node"), "-1\n");
    let inv = run(dir.path());
    assert_eq!(inv.nics[0].numa_node, None);
    assert!(has_warning(
        &inv,
        "enp5s0 (0000:05:00.0): the platform does not say"
    ));
    // The virtio NIC had -1 all along: only the node count makes it matter,
    // so one warning per NIC, none for plain PCI devices.
    assert_eq!(inv.warnings.len(), 2, "{:?}", inv.warnings);
}

#[test]
fn missing_files_are_warnings_not_guesses() {
    let dir = machine();
    let r = dir.path();
    for gone in [
        "sys/class/dmi/id/sys_vendor",
        "sys/devices/system/cpu/online",
        "sys/devices/system/node/node1/distance",
        "sys/devices/system/node/node1/meminfo",
        "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c",
    ] {
        std::fs::remove_file(r.join(gone)).expect(gone);
    }
    std::fs::remove_dir_all(r.join("sys/devices/system/memory")).expect("memory");
    std::fs::remove_dir_all(r.join("sys/devices/system/cpu/cpu5/topology")).expect("topology");
    let inv = run(r);
    assert_eq!(inv.system.vendor, "");
    assert_eq!(inv.system.secure_boot, None);
    assert_eq!(
        inv.cpus.online,
        (0..8).collect::<Vec<_>>(),
        "from cpuN directories"
    );
    assert_eq!(inv.numa_nodes[1].distances, Vec::<u32>::new());
    assert_eq!(inv.numa_nodes[1].memory_bytes, 0);
    assert_eq!(inv.memory_bytes, 4_000_000 * 1024, "MemTotal, said so");
    // CPU 5 falls back to /proc/cpuinfo's physical and core ids (1, 1),
    // the same core as CPU 7 whose sysfs says so too.
    assert!(inv.cpus.siblings.contains(&vec![5]) || inv.cpus.siblings.contains(&vec![5, 7]));
    for part in [
        "sys_vendor is missing",
        "cpu/online is missing",
        "node1/distance is missing",
        "node1/meminfo has no readable MemTotal",
        "secure boot state unknown",
        "reporting /proc/meminfo MemTotal",
        "topology is missing or unreadable for CPUs 5",
    ] {
        assert!(
            has_warning(&inv, part),
            "no warning {part:?} in {:?}",
            inv.warnings
        );
    }
}

#[test]
fn garbage_in_numbers_is_named() {
    let dir = machine();
    let r = dir.path();
    file(r, &format!("{IGB}/sriov_totalvfs"), "seven\n");
    file(r, "sys/devices/system/node/node0/distance", "10 far\n");
    let inv = run(r);
    assert_eq!(inv.nics[0].sriov_totalvfs, 0);
    assert!(has_warning(
        &inv,
        "sriov_totalvfs: expected a number, found \"seven\""
    ));
    assert!(has_warning(&inv, "node0/distance: not a list of numbers"));
}

#[test]
fn bios_machines_have_no_secure_boot_state() {
    let dir = machine();
    std::fs::remove_dir_all(dir.path().join("sys/firmware/efi")).expect("rm efi");
    let inv = run(dir.path());
    assert_eq!(
        (inv.system.firmware, inv.system.secure_boot),
        (Firmware::Bios, None)
    );
}

#[test]
fn no_numa_directory_means_one_node_with_a_warning() {
    let dir = machine();
    std::fs::remove_dir_all(dir.path().join("sys/devices/system/node")).expect("rm node");
    let inv = run(dir.path());
    assert_eq!(inv.numa_nodes.len(), 1);
    assert_eq!(inv.numa_nodes[0].cpus, (0..8).collect::<Vec<_>>());
    assert_eq!(inv.numa_nodes[0].memory_bytes, 4_000_000 * 1024);
    assert!(has_warning(&inv, "has no nodes"));
}

#[test]
fn an_empty_root_gives_an_inventory_full_of_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inv = run(dir.path());
    assert_eq!(inv.cpus.threads, 0);
    assert_eq!(inv.numa_nodes.len(), 1);
    assert!(inv.nics.is_empty() && inv.disks.is_empty());
    assert!(has_warning(&inv, "/proc/cpuinfo is missing"));
    assert!(has_warning(&inv, "no CPU found"));
}

#[test]
fn a_recording_replays_to_the_same_inventory_and_holds_only_what_was_read() {
    let dir = machine();
    file(
        dir.path(),
        "sys/devices/system/cpu/cpu0/cache/index0/size",
        "32K\n",
    );
    let (inv, accesses) = inspect_logged(&SysRoot::new(dir.path(), true));
    let out = tempfile::tempdir().expect("tempdir");
    record::record(dir.path(), out.path(), &accesses).expect("record");
    assert_eq!(run(out.path()), inv);
    // Class entries stay symlinks into /sys/devices.
    assert!(out.path().join("sys/class/net/enp5s0").is_symlink());
    assert!(
        !out.path()
            .join("sys/devices/system/cpu/cpu0/cache/index0/size")
            .exists()
    );
}

#[test]
fn smbios_memory_devices_are_summed() {
    // Type 17 (MB units, 4096), type 17 (KB units: 0x8000 | 512), type 17
    // with the extended size (0x7fff, then 32768 MB), type 17 empty (0),
    // then the end-of-table marker. Each with an empty string set.
    let mut t = Vec::new();
    for size in [4096u16, 0x8000 | 512, 0x7fff, 0] {
        let mut s = vec![0u8; 0x22];
        s[0] = 17;
        s[1] = 0x22;
        s[0x0c..0x0e].copy_from_slice(&size.to_le_bytes());
        s[0x1c..0x20].copy_from_slice(&32768u32.to_le_bytes());
        t.extend(s);
        t.extend([0, 0]);
    }
    t.extend([127, 4, 0, 0, 0, 0]);
    assert_eq!(
        memory::smbios_memory_bytes(&t),
        Some((4096u64 << 20) + (512 << 10) + (32768u64 << 20))
    );
    assert_eq!(
        memory::smbios_memory_bytes(&t[..10]),
        None,
        "cut in a structure"
    );
}

#[test]
fn cpu_masks_and_lists() {
    assert_eq!(cpumask("00000000,00000011").expect("mask"), [0, 4]);
    assert_eq!(cpumask("1,80000000").expect("mask"), [31, 32]);
    assert!(cpumask("xyz").is_err());
    assert_eq!(cpulist("\n").expect("empty"), Vec::<u32>::new());
}

/// Every file of the full machine, for the proptest to damage.
fn all_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_symlink() {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Removing random files and filling others with random bytes never
    /// panics, and every NIC, disk and node still reported has sane ids.
    #[test]
    fn random_damage_never_panics(
        damage in proptest::collection::vec((any::<proptest::sample::Index>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..24)), 0..40)
    ) {
        let dir = machine();
        let files = all_files(dir.path());
        for (index, remove, bytes) in damage {
            let f = index.get(&files);
            if remove {
                let _ = std::fs::remove_file(f);
            } else if f.exists() {
                std::fs::write(f, &bytes).expect("write");
            }
        }
        let inv = run(dir.path());
        for n in &inv.numa_nodes {
            prop_assert!(n.cpus.windows(2).all(|w| w[0] < w[1]));
        }
        prop_assert!(inv.cpus.online.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(inv.cpus.threads as usize == inv.cpus.online.len());
    }
}
