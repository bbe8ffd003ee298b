//! `apply` on a fake sysfs tree in a tempdir. Writing `sriov_numvfs` on a
//! fake tree cannot create VFs, so the tree holds the `virtfnN` links the
//! kernel would create, and a test "rebinds" VFs as the kernel would.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use model::plan::{DeviceType, HostPlan, NodeHugepages, PlannedDisk, SriovPlan};

use super::{Status, apply, numvfs_sequence};
use crate::sysroot::SysRoot;

const PF: &str = "0000:02:00.0";

fn vf_addr(i: u32) -> String {
    format!("0000:02:10.{i}")
}

fn file(root: &Path, path: &str, value: &str) {
    let p = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(p, value).expect("write");
}

fn link(root: &Path, path: &str, target: &str) {
    let p = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    let _ = fs::remove_file(&p);
    symlink(target, p).expect("symlink");
}

fn read(root: &Path, path: &str) -> String {
    fs::read_to_string(root.join(path.trim_start_matches('/'))).expect("read")
}

/// The lab compute VM: an igb PF with 7 VFs (bound to igbvf), node 0 with
/// 2M pages, and the running kernel's command line.
fn fake_host(numvfs: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let dev = format!("/sys/bus/pci/devices/{PF}");
    file(root, &format!("{dev}/sriov_totalvfs"), "7\n");
    file(root, &format!("{dev}/sriov_numvfs"), &format!("{numvfs}\n"));
    link(
        root,
        "/sys/class/net/enp2s0/device",
        &format!("../../../bus/pci/devices/{PF}"),
    );
    file(root, "/sys/class/net/enp2s0/mtu", "1500\n");
    for i in 0..7 {
        link(
            root,
            &format!("{dev}/virtfn{i}"),
            &format!("../{}", vf_addr(i)),
        );
        let vf = format!("/sys/bus/pci/devices/{}", vf_addr(i));
        file(root, &format!("{vf}/driver_override"), "(null)\n");
        link(
            root,
            &format!("{vf}/driver"),
            "../../../bus/pci/drivers/igbvf",
        );
    }
    file(root, "/sys/bus/pci/drivers/igbvf/unbind", "");
    file(root, "/sys/bus/pci/drivers/vfio-pci/unbind", "");
    file(root, "/sys/bus/pci/drivers_probe", "");
    file(
        root,
        "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages",
        "0\n",
    );
    file(
        root,
        "/proc/cmdline",
        "BOOT_IMAGE=/vmlinuz root=/dev/vda2 ro quiet\n",
    );
    dir
}

fn plan(num_vfs: u32, device_type: DeviceType) -> HostPlan {
    HostPlan {
        profile: "lab-compute".into(),
        roles: vec![model::profile::Role::Compute],
        kernel_args: vec!["intel_iommu=on".into(), "iommu=pt".into()],
        hugepages: vec![NodeHugepages {
            node: 0,
            size_kb: 2048,
            count: 512,
        }],
        reserved_cpus: vec![0, 1],
        isolated_cpus: vec![2, 3],
        sriov: vec![SriovPlan {
            pci_address: PF.into(),
            pf_name: "enp2s0".into(),
            num_vfs,
            device_type,
            mtu: Some(9000),
            local_cpus: vec![2, 3],
        }],
        root_disk: PlannedDisk {
            name: "vda".into(),
            by_path: None,
            serial: None,
            size_bytes: 20 << 30,
        },
        data_disks: Vec::new(),
        warnings: Vec::new(),
    }
}

fn writes(report: &super::Report) -> Vec<(String, String)> {
    report
        .writes
        .iter()
        .map(|w| (w.path.clone(), w.value.clone()))
        .collect()
}

#[test]
fn first_run_applies_everything_and_a_second_run_changes_nothing() {
    let host = fake_host(0);
    let root = host.path();
    let plan = plan(7, DeviceType::VfioPci);

    let report = apply(&plan, &mut SysRoot::new(root, false));
    assert!(!report.failed(), "{report}");
    insta::assert_snapshot!("first-run", report.to_string());
    let w = writes(&report);
    assert_eq!(
        w[0],
        (
            format!("/sys/bus/pci/devices/{PF}/sriov_numvfs"),
            "7".into()
        )
    );
    assert_eq!(w[1], ("/sys/class/net/enp2s0/mtu".into(), "9000".into()));
    // Each VF: override, unbind from igbvf, probe.
    for i in 0..7u32 {
        let vf = vf_addr(i);
        let at = 2 + 3 * i as usize;
        assert_eq!(
            w[at..at + 3],
            [
                (
                    format!("/sys/bus/pci/devices/{vf}/driver_override"),
                    "vfio-pci".into()
                ),
                ("/sys/bus/pci/drivers/igbvf/unbind".into(), vf.clone()),
                ("/sys/bus/pci/drivers_probe".into(), vf.clone()),
            ]
        );
        assert_eq!(
            read(root, &format!("/sys/bus/pci/devices/{vf}/driver_override")),
            "vfio-pci"
        );
    }
    assert_eq!(w.len(), 2 + 21 + 1);
    assert_eq!(
        read(root, &format!("/sys/bus/pci/devices/{PF}/sriov_numvfs")),
        "7"
    );
    assert_eq!(
        read(
            root,
            "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"
        ),
        "512"
    );

    // What the kernel does after drivers_probe: the VFs bind to vfio-pci.
    for i in 0..7 {
        link(
            root,
            &format!("/sys/bus/pci/devices/{}/driver", vf_addr(i)),
            "../../../bus/pci/drivers/vfio-pci",
        );
    }
    let again = apply(&plan, &mut SysRoot::new(root, false));
    assert!(again.writes.is_empty(), "{:?}", again.writes);
    assert_eq!(again.count(Status::Changed), 0);
    assert_eq!(again.count(Status::Failed), 0);
    // Only the kernel arguments remain, until the host reboots with them.
    assert_eq!(again.count(Status::Pending), 1);
    insta::assert_snapshot!("second-run", again.to_string());
}

#[test]
fn a_count_change_goes_through_zero() {
    assert_eq!(numvfs_sequence(0, 7), [7]);
    assert_eq!(numvfs_sequence(4, 7), [0, 7]);
    assert_eq!(numvfs_sequence(7, 0), [0]);
    assert!(numvfs_sequence(7, 7).is_empty());

    let host = fake_host(4);
    let report = apply(
        &plan(7, DeviceType::Netdevice),
        &mut SysRoot::new(host.path(), false),
    );
    let numvfs = format!("/sys/bus/pci/devices/{PF}/sriov_numvfs");
    let to_numvfs: Vec<String> = report
        .writes
        .iter()
        .filter(|w| w.path == numvfs)
        .map(|w| w.value.clone())
        .collect();
    assert_eq!(to_numvfs, ["0", "7"]);
    assert_eq!(read(host.path(), &numvfs), "7");
    // netdevice VFs keep their own driver: no override, no rebinding.
    assert!(
        report.writes.iter().all(|w| !w.path.contains("driver")),
        "{:?}",
        report.writes
    );
}

#[test]
fn dry_run_writes_nothing_but_lists_the_writes() {
    let host = fake_host(0);
    let report = apply(
        &plan(7, DeviceType::VfioPci),
        &mut SysRoot::new(host.path(), true),
    );
    assert!(report.dry_run);
    assert_eq!(report.count(Status::WouldChange), 1 + 1 + 7 + 1);
    assert_eq!(report.writes.len(), 24);
    assert_eq!(
        read(
            host.path(),
            &format!("/sys/bus/pci/devices/{PF}/sriov_numvfs")
        ),
        "0\n"
    );
    assert_eq!(
        read(
            host.path(),
            &format!("/sys/bus/pci/devices/{}/driver_override", vf_addr(0))
        ),
        "(null)\n"
    );
    assert!(report.to_string().ends_with("(dry run: nothing written)"));
}

#[test]
fn what_cannot_be_applied_fails_with_the_reason() {
    let host = fake_host(0);
    let mut bad = plan(8, DeviceType::VfioPci);
    bad.hugepages[0].size_kb = 1048576;
    bad.sriov.push(SriovPlan {
        pci_address: "0000:03:00.0".into(),
        pf_name: "enp3s0".into(),
        ..bad.sriov[0].clone()
    });
    let report = apply(&bad, &mut SysRoot::new(host.path(), false));
    assert!(report.failed());
    let failed: Vec<(&str, &str)> = report
        .items
        .iter()
        .filter(|i| i.status == Status::Failed)
        .map(|i| (i.what.as_str(), i.detail.as_deref().unwrap_or_default()))
        .collect();
    assert_eq!(failed.len(), 3, "{report}");
    assert!(failed[0].1.contains("supports 7 VFs"), "{failed:?}");
    assert!(
        failed[1].1.contains("no PCI device 0000:03:00.0"),
        "{failed:?}"
    );
    assert!(
        failed[2].1.contains("1048576 kB pages on node 0"),
        "{failed:?}"
    );
    assert!(report.writes.is_empty(), "{:?}", report.writes);
}

#[test]
fn missing_vfs_after_the_write_are_a_failure() {
    let host = fake_host(0);
    let root = host.path();
    for i in 3..7 {
        fs::remove_file(root.join(format!("sys/bus/pci/devices/{PF}/virtfn{i}"))).expect("rm");
    }
    let report = apply(
        &plan(7, DeviceType::VfioPci),
        &mut SysRoot::new(root, false),
    );
    let item = report
        .items
        .iter()
        .find(|i| i.what.ends_with("VFs present"))
        .expect("VF count item");
    assert_eq!(item.status, Status::Failed);
    assert!(item.detail.as_deref().unwrap_or_default().contains("dmesg"));
    // The VFs that exist are still bound.
    assert_eq!(
        report
            .items
            .iter()
            .filter(|i| i.what.contains(" vf") && i.status == Status::Changed)
            .count(),
        3
    );
}

#[test]
fn a_renamed_interface_is_refused() {
    let host = fake_host(0);
    link(
        host.path(),
        "/sys/class/net/enp2s0/device",
        "../../../bus/pci/devices/0000:05:00.0",
    );
    let report = apply(
        &plan(7, DeviceType::VfioPci),
        &mut SysRoot::new(host.path(), false),
    );
    assert!(report.failed());
    assert!(
        report.to_string().contains("interface names changed"),
        "{report}"
    );
}

#[test]
fn kernel_args_already_booted_are_unchanged() {
    let host = fake_host(0);
    file(
        host.path(),
        "/proc/cmdline",
        "ro quiet intel_iommu=on iommu=pt\n",
    );
    let report = apply(
        &plan(7, DeviceType::VfioPci),
        &mut SysRoot::new(host.path(), true),
    );
    let item = report.items.last().expect("kernel item");
    assert_eq!(
        (item.what.as_str(), item.status),
        ("kernel args", Status::Unchanged)
    );
}

/// The VF state at the start: driver override and bound driver.
#[derive(Debug, Clone, Copy)]
enum VfState {
    Unbound,
    OwnDriver,
    Vfio,
    OverrideOnlyVfio,
}

/// What the kernel does after the writes: it creates `sriov_numvfs` VFs;
/// VFs with a `vfio-pci` override bind to vfio-pci, others to igbvf.
fn kernel_binds(root: &Path) {
    // The kernel creates exactly sriov_numvfs VFs.
    let dev = format!("/sys/bus/pci/devices/{PF}");
    let n: u32 = read(root, &format!("{dev}/sriov_numvfs"))
        .trim()
        .parse()
        .expect("count");
    for i in 0..7 {
        let path = root.join(format!("{}/virtfn{i}", &dev[1..]));
        let _ = fs::remove_file(&path);
        if i < n {
            symlink(format!("../{}", vf_addr(i)), &path).expect("symlink");
        }
    }
    for i in 0..7 {
        let vf = format!("/sys/bus/pci/devices/{}", vf_addr(i));
        let over = read(root, &format!("{vf}/driver_override"));
        let driver = if over.trim() == "vfio-pci" {
            "vfio-pci"
        } else {
            "igbvf"
        };
        link(
            root,
            &format!("{vf}/driver"),
            &format!("../../../bus/pci/drivers/{driver}"),
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// From any starting state: the count goes through 0 when it changes
    /// between non-zero values, and once the kernel has done its part a
    /// second run writes nothing.
    #[test]
    fn apply_converges_from_any_state(
        numvfs in 0u32..=7,
        wanted in 1u32..=7,
        vfio in proptest::bool::ANY,
        pages in 0u64..2048,
        states in proptest::collection::vec(0u8..4, 7),
    ) {
        let host = fake_host(numvfs);
        let root = host.path();
        for (i, s) in (0u32..).zip(&states) {
            let vf = format!("/sys/bus/pci/devices/{}", vf_addr(i));
            let state = [VfState::Unbound, VfState::OwnDriver, VfState::Vfio, VfState::OverrideOnlyVfio][*s as usize];
            match state {
                VfState::Unbound => { let _ = fs::remove_file(root.join(format!("{}/driver", &vf[1..]))); }
                VfState::OwnDriver => {}
                VfState::Vfio => {
                    file(root, &format!("{vf}/driver_override"), "vfio-pci\n");
                    link(root, &format!("{vf}/driver"), "../../../bus/pci/drivers/vfio-pci");
                }
                VfState::OverrideOnlyVfio => file(root, &format!("{vf}/driver_override"), "vfio-pci\n"),
            }
        }
        file(root, "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages", &format!("{pages}\n"));
        let kind = if vfio { DeviceType::VfioPci } else { DeviceType::Netdevice };
        let plan = plan(wanted, kind);

        let first = apply(&plan, &mut SysRoot::new(root, false));
        let numvfs_path = format!("/sys/bus/pci/devices/{PF}/sriov_numvfs");
        let counts: Vec<&str> = first.writes.iter().filter(|w| w.path == numvfs_path).map(|w| w.value.as_str()).collect();
        if numvfs == wanted {
            proptest::prop_assert!(counts.is_empty());
        } else if numvfs == 0 {
            proptest::prop_assert_eq!(counts, [wanted.to_string()]);
        } else {
            proptest::prop_assert_eq!(counts, ["0".to_owned(), wanted.to_string()]);
        }
        let now = read(root, &numvfs_path);
        proptest::prop_assert_eq!(now.trim(), wanted.to_string());

        kernel_binds(root);
        let second = apply(&plan, &mut SysRoot::new(root, false));
        proptest::prop_assert!(second.writes.is_empty(), "second run wrote {:?}", second.writes);
        proptest::prop_assert_eq!(second.count(Status::Failed), 0, "{}", second);
    }
}
