use super::*;

fn lab() -> Rack {
    load(&lab_rack_file()).unwrap_or_else(|e| panic!("the lab rack is invalid:\n{e}"))
}

#[test]
fn the_lab_rack_matches_the_lab_sites_nodes() {
    let site = provisioner::site::load(&crate::lab_site_dir())
        .unwrap_or_else(|e| panic!("the lab site is invalid:\n{e}"));
    assert_nodes_match(&lab(), &site.nodes);
}

/// One node per VM, with the VM's name, boot MAC and BMC URL.
pub(crate) fn assert_nodes_match(rack: &Rack, nodes: &[provisioner::site::NodeSpec]) {
    assert_eq!(rack.vms.len(), nodes.len(), "one VM per node");
    for vm in &rack.vms {
        let node = nodes
            .iter()
            .find(|n| n.name == vm.name)
            .unwrap_or_else(|| panic!("VM {} has no node in nodes.yaml", vm.name));
        assert_eq!(
            node.boot_mac.map(|m| m.to_string()).as_deref(),
            Some(vm.boot_nic().mac.as_str()),
            "{}: boot MAC",
            vm.name
        );
        let bmc = node
            .bmc
            .as_ref()
            .expect("lab nodes have BMCs")
            .url
            .to_string();
        assert_eq!(bmc, bmc_url(vm), "{}: BMC URL", vm.name);
    }
}

#[test]
fn the_lab_rack_has_the_topologies_the_scenarios_need() {
    let rack = lab();
    let compute = &rack.vms[0];
    assert_eq!(compute.numa.len(), 2);
    let igb = compute
        .nics
        .iter()
        .find(|n| n.model == NicModel::Igb)
        .unwrap();
    assert_eq!(igb.numa_node, Some(1));
    // The host image is UEFI only: every VM the demo deploys boots OVMF.
    assert!(rack.vms.iter().all(|v| v.firmware == Firmware::Uefi));
    let storage = rack.vms.iter().find(|v| v.name == "lab-storage-0").unwrap();
    assert_eq!(
        storage
            .disks
            .iter()
            .filter(|d| d.kind == DiskKind::Nvme)
            .count(),
        3
    );
}

fn paths(vm: &VmSpec) -> VmPaths {
    VmPaths {
        taps: (0..vm.nics.len()).map(|i| format!("tap{i}")).collect(),
        disks: (0..vm.disks.len())
            .map(|i| PathBuf::from(format!("/lab/d{i}.raw")))
            .collect(),
        serial_log: "/lab/serial.log".into(),
        qmp: vec!["/lab/bmc.qmp".into()],
        ovmf: (vm.firmware == Firmware::Uefi)
            .then(|| ("/ovmf/CODE.fd".into(), "/lab/VARS.fd".into())),
        accel: "tcg".into(),
    }
}

/// The value following `flag` whose text contains `needle`.
fn arg_with<'a>(args: &'a [String], flag: &str, needle: &str) -> Option<&'a str> {
    args.windows(2)
        .find(|w| w[0] == flag && w[1].contains(needle))
        .map(|w| w[1].as_str())
}

#[test]
fn the_compute_vm_has_two_numa_nodes_and_its_igb_on_node_1() {
    let rack = lab();
    let vm = &rack.vms[0];
    let args = qemu_args(vm, &paths(vm));
    assert_eq!(
        arg_with(&args, "-smp", "cpus="),
        Some("cpus=4,sockets=2,cores=2,threads=1")
    );
    assert_eq!(
        arg_with(&args, "-numa", "nodeid=0"),
        Some("node,nodeid=0,cpus=0-1,memdev=mem0")
    );
    assert_eq!(
        arg_with(&args, "-numa", "nodeid=1"),
        Some("node,nodeid=1,cpus=2-3,memdev=mem1")
    );
    assert_eq!(arg_with(&args, "-m", "M"), Some("3072M"));
    assert!(
        arg_with(&args, "-device", "pxb-pcie,id=pxb1")
            .unwrap()
            .contains("numa_node=1")
    );
    let igb = arg_with(&args, "-device", "igb,").unwrap();
    assert!(igb.contains("mac=52:54:00:0d:01:01"), "{igb}");
    assert!(igb.contains("bus=rp1"), "{igb}");
    assert!(
        arg_with(&args, "-device", "bus=pxb1")
            .unwrap()
            .starts_with("pcie-root-port,id=rp1")
    );
    let boot = arg_with(&args, "-device", "virtio-net-pci").unwrap();
    assert!(
        boot.contains(&format!("bootindex={NIC_BOOTINDEX}")),
        "{boot}"
    );
    assert!(
        arg_with(&args, "-drive", "if=pflash,format=raw,unit=0")
            .unwrap()
            .contains("readonly=on")
    );
    // The compute VM has QEMU's IOMMU (for vfio-pci VFs); without `iommu` none.
    assert!(vm.iommu);
    assert!(arg_with(&args, "-device", "intel-iommu").is_some());
    assert!(
        arg_with(&args, "-machine", "q35")
            .unwrap()
            .contains("kernel-irqchip=split")
    );
    let mut without = vm.clone();
    without.iommu = false;
    let plain = qemu_args(&without, &paths(&without));
    assert!(arg_with(&plain, "-device", "intel-iommu").is_none());
    assert_eq!(arg_with(&plain, "-machine", "q35").unwrap(), "q35");
    assert_eq!(
        args[..2],
        ["-S".to_owned(), "-no-shutdown".to_owned()],
        "starts powered off"
    );
}

#[test]
fn disks_carry_serials_and_only_the_first_boot_disk_has_a_boot_index() {
    let rack = lab();
    let vm = rack.vms.iter().find(|v| v.name == "lab-storage-0").unwrap();
    let args = qemu_args(vm, &paths(vm));
    let root = arg_with(&args, "-device", "virtio-blk-pci").unwrap();
    assert!(
        root.contains("serial=LABS0-ROOT") && root.contains("bootindex=1"),
        "{root}"
    );
    let nvmes: Vec<_> = args.iter().filter(|a| a.starts_with("nvme,")).collect();
    assert_eq!(nvmes.len(), 3);
    assert!(nvmes.iter().all(|d| !d.contains("bootindex")));
    assert!(nvmes[2].contains("serial=LABS0-NVME2"));
    assert!(
        arg_with(&args, "-drive", "if=pflash").is_some(),
        "every lab rack VM boots OVMF (the host image is UEFI only)"
    );
}

#[test]
fn sata_disks_get_one_ahci_controller_and_consecutive_ports() {
    let yaml = "vms:\n  - name: s\n    firmware: bios\n    serial: S\n    numa: [{cpus: 1, memory_mib: 512}]\n    nics: [{model: e1000e, mac: \"52:54:00:00:00:09\"}, {model: virtio, mac: \"52:54:00:00:00:0a\", boot: true}]\n    disks: [{kind: sata, size_gib: 1, serial: A}, {kind: nvme, size_gib: 1, serial: N}, {kind: sata, size_gib: 1, serial: B}]\n    bmc: {kind: ipmi, port: 6231}\n";
    let rack = parse("rack.yaml", yaml).unwrap();
    let vm = &rack.vms[0];
    let args = qemu_args(vm, &paths(vm));
    assert_eq!(args.iter().filter(|a| a.starts_with("ahci")).count(), 1);
    assert!(
        arg_with(&args, "-device", "serial=A")
            .unwrap()
            .contains("bus=ahci0.0,")
    );
    assert!(
        arg_with(&args, "-device", "serial=B")
            .unwrap()
            .contains("bus=ahci0.1,")
    );
    assert!(
        !arg_with(&args, "-device", "serial=B")
            .unwrap()
            .contains("bootindex")
    );
    assert!(
        arg_with(&args, "-device", "e1000e")
            .unwrap()
            .contains("romfile=")
    );
}

#[test]
fn mistakes_are_reported_with_their_line_and_column() {
    let yaml = "vms:\n  - name: a\n    firmware: bios\n    serial: S\n    numa: [{cpus: 2, memory_mib: 1024}]\n    nics: [{model: igb, mac: \"52:54:00:00:00:01\", boot: true, numa_node: 3}]\n    disks: [{kind: nvme, size_gib: 1, serial: N}]\n    bmc: {kind: redfish, port: 8101}\n";
    let err = parse("rack.yaml", yaml).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("rack.yaml:6:") && text.contains("NUMA node 3 does not exist"),
        "{text}"
    );
    assert!(text.contains("the boot NIC must be virtio"), "{text}");
    assert!(
        text.contains("rack.yaml:7:") && text.contains("add a virtio or sata boot disk"),
        "{text}"
    );

    let ipmi_fault = "vms:\n  - name: a\n    firmware: bios\n    serial: S\n    numa: [{cpus: 1, memory_mib: 512}]\n    nics: [{model: virtio, mac: \"52:54:00:00:00:01\", boot: true}]\n    disks: [{kind: virtio, size_gib: 1, serial: R}]\n    bmc: {kind: ipmi, port: 6230, fail_first: 2}\n";
    let err = parse("rack.yaml", ipmi_fault).unwrap_err().to_string();
    assert!(
        err.contains("rack.yaml:8:") && err.contains("fault injection is for redfish BMCs only"),
        "{err}"
    );
    let redfish_fault = ipmi_fault.replace("kind: ipmi", "kind: redfish");
    let rack = parse("rack.yaml", &redfish_fault).unwrap();
    assert_eq!(rack.vms[0].bmc.fail_first, 2);

    let typo = "vms:\n  - name: a\n    firmware: coreboot\n";
    let err = parse("rack.yaml", typo).unwrap_err().to_string();
    assert!(
        err.starts_with("rack.yaml:3:15: unknown variant `coreboot`"),
        "{err}"
    );
}

#[test]
fn uuids_are_stable_and_distinct() {
    let rack = lab();
    let uuids: HashSet<String> = rack.vms.iter().map(VmSpec::uuid).collect();
    assert_eq!(uuids.len(), rack.vms.len());
    assert_eq!(rack.vms[0].uuid(), lab().vms[0].uuid());
    assert_eq!(rack.vms[0].uuid().len(), 36);
}

#[test]
fn the_committed_schema_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/rack.schema.json");
    let fresh = serde_json::to_string_pretty(&schema()).unwrap() + "\n";
    if std::env::var_os("UPDATE_SCHEMAS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "stale {}: regenerate with UPDATE_SCHEMAS=1 cargo test -p hardware-tests rack",
        path.display()
    );
}

#[test]
fn a_disk_with_eio_at_gets_blkdebug_rules_and_drive() {
    let yaml = "vms:\n  - name: a\n    firmware: uefi\n    serial: S\n    numa: [{cpus: 1, memory_mib: 512}]\n    nics: [{model: virtio, mac: \"52:54:00:00:00:01\", boot: true}]\n    disks: [{kind: virtio, size_gib: 1, serial: R, eio_at_mib: 600}]\n    bmc: {kind: redfish, port: 8101}\n";
    let rack = parse("rack.yaml", yaml).unwrap();
    let disk = &rack.vms[0].disks[0];
    let rules = disk.blkdebug_rules().unwrap();
    assert!(
        rules.contains("errno = \"5\"") && rules.contains("sector = \"1228800\""),
        "{rules}"
    );
    let paths = paths(&rack.vms[0]);
    let args = qemu_args(&rack.vms[0], &paths).join(" ");
    let expected = format!(
        "file=blkdebug:{}:{},if=none",
        blkdebug_file(&paths.disks[0]).display(),
        paths.disks[0].display()
    );
    assert!(args.contains(&expected), "{args}");
}
