//! Loading whole site directories: the lab site, a site with errors planted
//! in every kind of file, and single-file problems (syntax, duplicate keys,
//! plaintext passwords).

use std::fs;
use std::path::{Path, PathBuf};

use provisioner::site::{self, BmcKind, BmcTls, Credential, DhcpAnswer, DhcpMode, ImageSource};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Writes a site into a temporary directory from (relative path, text) pairs.
fn site_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (rel, text) in files {
        let path = dir.path().join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }
    dir
}

const GOOD_SITE: &str = "network: {interface: br0, address: 10.213.0.1/24}\n";
const GOOD_NODES: &str = "nodes: []\n";

fn errors(dir: &Path) -> Vec<String> {
    match site::load(dir) {
        Ok(site) => panic!("expected errors, got {}", site.summary()),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn lab_site_validates() {
    let dir = repo_root().join("hardware-tests/sites/lab");
    for (file, schema) in [("site.yaml", "site"), ("nodes.yaml", "nodes")] {
        let text = fs::read_to_string(dir.join(file)).expect("read lab file");
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            format!(
                "# yaml-language-server: $schema=../../../provisioner/schemas/{schema}.schema.json"
            )
        );
        assert!(
            dir.join("../../../provisioner/schemas")
                .join(format!("{schema}.schema.json"))
                .is_file()
        );
    }
    let site = site::load(&dir).unwrap_or_else(|e| panic!("lab site is invalid:\n{e}"));
    assert_eq!(
        site.summary(),
        "site OK: 3 nodes, 3 profiles, 1 image, dhcp full on br0"
    );
    let net = &site.config.network;
    assert_eq!(net.address.to_string(), "10.213.0.1/24");
    assert_eq!(net.dhcp.mode, DhcpMode::Full);
    assert_eq!(net.dhcp.answer, DhcpAnswer::Pxe);
    let range = net.dhcp.range.expect("range");
    assert_eq!(
        (range.first.to_string(), range.last.to_string()),
        ("10.213.0.100".into(), "10.213.0.199".into())
    );
    assert_eq!(site.config.api.listen.to_string(), "10.213.0.1:8080");
    let image = site
        .image("inspect-ramdisk")
        .expect("inspection ramdisk in the catalog");
    assert_eq!(
        image.source,
        ImageSource::Ramdisk {
            kernel: dir.join("assets/inspect/vmlinuz"),
            initramfs: dir.join("assets/inspect/initramfs"),
        }
    );
    assert_eq!(
        site.config.boot.inspect_image.as_deref(),
        Some("inspect-ramdisk")
    );
    let names: Vec<_> = site.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["lab-compute-0", "lab-network-0", "lab-storage-0"]);
    let macs: Vec<_> = site
        .nodes
        .iter()
        .map(|n| n.boot_mac.expect("mac").to_string())
        .collect();
    assert_eq!(
        macs,
        [
            "52:54:00:0d:00:01",
            "52:54:00:0d:00:02",
            "52:54:00:0d:00:03"
        ]
    );
    let storage_bmc = site
        .node("lab-storage-0")
        .and_then(|n| n.bmc.as_ref())
        .expect("bmc");
    assert_eq!(storage_bmc.url.kind, BmcKind::Ipmi);
    assert_eq!(storage_bmc.url.port, 6230);
    assert_eq!(
        storage_bmc.credential,
        Credential::Env("LAB_BMC_PASSWORD".into())
    );
    let compute_bmc = site
        .node("lab-compute-0")
        .and_then(|n| n.bmc.as_ref())
        .expect("bmc");
    assert_eq!(compute_bmc.url.kind, BmcKind::Redfish { tls: false });
    assert_eq!(
        compute_bmc.url.http_base().as_deref(),
        Some("http://10.213.0.1:8101")
    );
    let profiles: Vec<_> = site.profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(profiles, ["lab-compute", "lab-network", "lab-storage"]);
}

/// Errors planted in site.yaml, nodes.yaml and three profiles are all
/// reported, each at its place, sorted by file, line and column.
#[test]
fn every_error_in_every_file_is_reported() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/site-errors");
    let got = errors(&dir);
    let expected: &[&str] = &[
        "nodes.yaml:10:11: nodes[1].name: duplicate node name \"n1\", first defined at nodes.yaml:3:5",
        "nodes.yaml:12:12: nodes[1].bmc.url: unknown BMC scheme in \"https://10.0.0.12\": use redfish:// (HTTPS), redfish+http:// (plain HTTP) or ipmi://",
        "nodes.yaml:14:7: nodes[1].bmc.password: a plaintext `password` is not allowed",
        "nodes.yaml:17:15: nodes[2].boot_mac: boot MAC 52:54:00:00:00:01 is already used by the node at nodes.yaml:3:5",
        "nodes.yaml:18:13: nodes[2].serial: serial \"SN1\" is already used by the node at nodes.yaml:3:5",
        "nodes.yaml:19:14: nodes[2].profile: unknown profile \"nope\": add profiles/nope.yaml or use one of: good, unquoted",
        "nodes.yaml:22:12: nodes[3].bmc.url: BMC redfish://10.0.0.11:443 is already used by the node at nodes.yaml:3:5",
        "nodes.yaml:25:15: nodes[3].boot_mac: invalid MAC address \"52:54:00:zz:00:04\"",
        "nodes.yaml:27:5: nodes[3].role: give either `profile`",
        "nodes.yaml:28:11: nodes[4].name: invalid node name \"N5\"",
        "nodes.yaml:29:5: nodes[4].colour: unknown field `colour`; expected one of",
        "nodes.yaml:30:5: nodes[5]: node \"n6\" has neither `bmc` nor `boot_mac`",
        "profiles/bad.yaml:4:16: match.cpu.model: invalid regular expression \"Xeon(R\"",
        "profiles/bad.yaml:5:22: match.nics[0].vendor_id: invalid PCI vendor_id \"80861\"",
        "profiles/dup.yaml:2:7: name: duplicate profile name \"good\", first defined at profiles/bad.yaml:2:1",
        "profiles/dup.yaml:5:8: image: unknown image \"missing\": add it to `images` in site.yaml or use one of: ramdisk, host, both",
        "profiles/unquoted.yaml:4:22: match.nics[0].vendor_id: invalid type: integer `8086`, expected a string; put the value in quotes",
        "site.yaml:7:13: network.dhcp.range[0]: 10.213.1.100 is outside the subnet 10.213.0.0/24 of network.address",
        "site.yaml:7:13: network.dhcp.range[0]: the range is reversed: first 10.213.1.100 is after last 10.213.0.50",
        "site.yaml:8:13: network.dhcp.router: router 10.9.9.9 is outside the subnet 10.213.0.0/24",
        "site.yaml:11:11: api.listen: invalid listen address \"localhost\"",
        "site.yaml:17:13: images[1].sha256: invalid sha256 \"abc123\"",
        "site.yaml:20:5: images[2].path: give either `url` or `path`, not both",
    ];
    let mismatch =
        got.len() != expected.len() || got.iter().zip(expected).any(|(g, e)| !g.starts_with(e));
    assert!(
        !mismatch,
        "diagnostics differ.\n--- got:\n{}\n--- expected (prefixes):\n{}",
        got.join("\n"),
        expected.join("\n")
    );
}

#[test]
fn yaml_syntax_error_has_its_position_and_other_files_are_still_checked() {
    let dir = site_dir(&[
        ("site.yaml", GOOD_SITE),
        (
            "nodes.yaml",
            "nodes:\n  - name: a\n    boot_mac: [52:54:00:00:00:01\n  - name: b\n",
        ),
        ("profiles/p.yaml", "name: p\nmatch: {}\nroles: []\n"),
    ]);
    let got = errors(dir.path());
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[0].starts_with("nodes.yaml:4:"), "{got:#?}");
    assert!(got[0].contains("YAML syntax error"), "{got:#?}");
    assert_eq!(
        got[1],
        "profiles/p.yaml:3:8: roles: no roles: list at least one of compute, network, storage"
    );
}

#[test]
fn duplicate_keys_are_reported_where_the_second_one_is() {
    let dir = site_dir(&[
        (
            "site.yaml",
            "network:\n  interface: br0\n  address: 10.0.0.1/24\n  interface: br1\n",
        ),
        ("nodes.yaml", GOOD_NODES),
    ]);
    assert_eq!(
        errors(dir.path()),
        ["site.yaml:4:3: duplicate key `interface` (first at line 2, column 3): remove one"]
    );
}

#[test]
fn plaintext_password_is_refused_with_a_hint() {
    let nodes = "nodes:\n  - name: a\n    bmc:\n      url: ipmi://10.0.0.5\n      username: root\n      password: calvin\n";
    let dir = site_dir(&[("site.yaml", GOOD_SITE), ("nodes.yaml", nodes)]);
    let got = errors(dir.path());
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with(
            "nodes.yaml:6:7: nodes[0].bmc.password: a plaintext `password` is not allowed"
        ),
        "{got:#?}"
    );
    assert!(
        got[0].contains("password_env") && got[0].contains("password_file"),
        "{got:#?}"
    );
}

#[test]
fn missing_files_and_sections() {
    let dir = site_dir(&[("profiles/README.md", "not a profile")]);
    let got = errors(dir.path());
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("nodes.yaml:1:1: missing file"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with("site.yaml:1:1: missing file"),
        "{got:#?}"
    );

    let dir = site_dir(&[("site.yaml", "api: {}\nextra: 1\n"), ("nodes.yaml", "")]);
    let got = errors(dir.path());
    assert_eq!(
        got,
        [
            "nodes.yaml:1:1: the file is empty: nodes.yaml holds `nodes:` followed by a list (`nodes: []` for none)",
            "site.yaml:1:1: missing section `network` (required): give `interface` and `address`",
            "site.yaml:2:1: extra: unknown section `extra`; expected one of `network`, `api`, `images`, `lifecycle`, `boot`, `discovery`",
        ]
    );
}

#[test]
fn defaults_and_proxy_mode() {
    let dir = site_dir(&[("site.yaml", GOOD_SITE), ("nodes.yaml", GOOD_NODES)]);
    let site = site::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(site.config.api.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(site.config.network.dhcp.mode, DhcpMode::Off);
    assert_eq!(
        site.summary(),
        "site OK: 0 nodes, 0 profiles, 0 images, dhcp off on br0"
    );

    let proxy = "network:\n  interface: eno1\n  address: 192.168.10.5/24\n  dhcp:\n    mode: proxy\n    range: [192.168.10.100, 192.168.10.110]\n";
    let dir = site_dir(&[("site.yaml", proxy), ("nodes.yaml", GOOD_NODES)]);
    let got = errors(dir.path());
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("site.yaml:6:5: network.dhcp.range: only used in `mode: full`"),
        "{got:#?}"
    );

    let full_no_range =
        "network:\n  interface: eno1\n  address: 192.168.10.5/24\n  dhcp: {mode: full}\n";
    let dir = site_dir(&[("site.yaml", full_no_range), ("nodes.yaml", GOOD_NODES)]);
    let got = errors(dir.path());
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("site.yaml:4:3: network.dhcp: `mode: full` needs `range"),
        "{got:#?}"
    );
}

#[test]
fn bad_cidr_and_url_images_without_digest() {
    let text = "network: {interface: br0, address: 10.0.0.1}\nimages:\n  - name: os\n    url: https://example.com/os.img\n";
    let dir = site_dir(&[("site.yaml", text), ("nodes.yaml", GOOD_NODES)]);
    let got = errors(dir.path());
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("site.yaml:1:36: network.address: \"10.0.0.1\" has no prefix length"),
        "{got:#?}"
    );
    assert!(
        got[1].starts_with("site.yaml:3:5: images[0]: `url` images need `sha256`"),
        "{got:#?}"
    );
}

#[test]
fn ramdisk_images_and_the_inspect_image() {
    let text = "network: {interface: br0, address: 10.0.0.1/24}
images:
  - name: rd
    kernel: rd/vmlinuz
    initramfs: rd/initramfs
  - name: half
    kernel: k
  - name: disk
    path: disk.img
  - name: mixed
    path: a
    kernel: b
    initramfs: c
boot:
  inspect_image: disk
";
    let dir = site_dir(&[("site.yaml", text), ("nodes.yaml", GOOD_NODES)]);
    let got = errors(dir.path());
    let expected = [
        "site.yaml:7:5: images[1].kernel: a ramdisk image needs `initramfs: FILE` next to `kernel`",
        "site.yaml:12:5: images[3].kernel: give one source: `url`, `path`, or `kernel` + `initramfs`, not several",
    ];
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (got, expected) in got.iter().zip(expected) {
        assert!(got.starts_with(expected), "{got}\nexpected: {expected}");
    }

    let text = "network: {interface: br0, address: 10.0.0.1/24}
images:
  - name: disk
    path: disk.img
boot:
  inspect_image: disk
";
    let dir = site_dir(&[("site.yaml", text), ("nodes.yaml", GOOD_NODES)]);
    let got = errors(dir.path());
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("site.yaml:6:18: boot.inspect_image: image \"disk\" is not a ramdisk"),
        "{got:#?}"
    );

    let text = "network: {interface: br0, address: 10.0.0.1/24}
images:
  - name: rd
    kernel: rd/vmlinuz
    initramfs: rd/initramfs
boot:
  inspect_image: nope
";
    let dir = site_dir(&[("site.yaml", text), ("nodes.yaml", GOOD_NODES)]);
    let got = errors(dir.path());
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with(
            "site.yaml:7:18: boot.inspect_image: no image named \"nope\" in `images` (known: rd)"
        ),
        "{got:#?}"
    );

    let text = text.replace("inspect_image: nope", "inspect_image: rd");
    let dir = site_dir(&[("site.yaml", &text), ("nodes.yaml", GOOD_NODES)]);
    let site = provisioner::site::load(dir.path()).expect("valid");
    assert_eq!(
        site.image("rd").unwrap().source,
        ImageSource::Ramdisk {
            kernel: dir.path().join("rd/vmlinuz"),
            initramfs: dir.path().join("rd/initramfs"),
        }
    );
}

#[test]
fn node_fields_convert_to_domain_types() {
    let nodes = "nodes:\n  - name: r1\n    bmc:\n      url: redfish://10.0.0.7/redfish/v1/Systems/System.Embedded.1\n      username: root\n      password_file: secrets/r1\n    boot_mac: 0C-42-A1-00-00-07\n    serial: ABC123\n    role: storage\n";
    let dir = site_dir(&[("site.yaml", GOOD_SITE), ("nodes.yaml", nodes)]);
    let site = site::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let n = &site.nodes[0];
    assert_eq!(
        n.boot_mac.map(|m| m.to_string()).as_deref(),
        Some("0c:42:a1:00:00:07")
    );
    assert_eq!(n.serial.as_deref(), Some("ABC123"));
    assert_eq!(n.role, Some(model::profile::Role::Storage));
    let bmc = n.bmc.as_ref().expect("bmc");
    assert_eq!(
        bmc.url.to_string(),
        "redfish://10.0.0.7:443/redfish/v1/Systems/System.Embedded.1"
    );
    assert_eq!(
        bmc.credential,
        Credential::File(dir.path().join("secrets/r1"))
    );
}

#[test]
fn single_profile_file() {
    let dir = site_dir(&[(
        "p.yaml",
        "name: p\nmatch: {memory: {min_gib: 0}}\nroles: [network]\nimage: os\n",
    )]);
    let err = site::load_profile(&dir.path().join("p.yaml")).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(
        err.0[0]
            .to_string()
            .ends_with("p.yaml:2:27: match.memory.min_gib: min_gib must be at least 1"),
        "{err}"
    );
}

#[test]
fn profile_layout_errors_and_certain_ties_have_positions() {
    let dir = site_dir(&[
        ("site.yaml", GOOD_SITE),
        ("nodes.yaml", GOOD_NODES),
        (
            "profiles/a.yaml",
            "name: a\nmatch: {system: {vendor: QEMU}}\nroles: [compute]\n\
             cpu: {reserved: \"0-\"}\nhugepages: {pages: [{size: 1G, percent: 150}]}\n\
             sriov:\n  - nic_selector: {vendor_id: \"8086\"}\n    num_vfs: 4\n    device_type: dpdk\n",
        ),
        (
            "profiles/b.yaml",
            "name: b\nmatch: {system: {vendor: QEMU}}\nroles: [storage]\n",
        ),
        (
            "profiles/c.yaml",
            "name: c\nmatch: {system: {vendor: QEMU}}\nroles: [storage]\n\
             hugepages: {pages: [{size: 2M, count: 1, node: both}]}\n",
        ),
        (
            "profiles/d.yaml",
            "name: d\nmatch: {system: {vendor: QEMU}}\nroles: [network]\n",
        ),
    ]);
    assert_eq!(
        errors(dir.path()),
        [
            "profiles/a.yaml:9:18: sriov[0].device_type: unknown variant `dpdk`, expected `vfio-pci` or `netdevice`",
            "profiles/c.yaml:4:48: hugepages.pages[0].node: unknown node \"both\": write a NUMA node id (0, 1, ...) or \"all\"",
            "profiles/d.yaml:2:1: match: profile \"d\" has the same selectors and priority as profile \"b\" (profiles/b.yaml:2:1), so no machine matching them could choose: change the `priority` of one or make its `match` more specific",
        ]
    );
    // Once the type errors are fixed, validate() finds the value problems.
    let dir = site_dir(&[(
        "p.yaml",
        "name: p\nmatch: {}\nroles: [compute]\n\
         cpu: {reserved: \"0-\"}\nhugepages: {pages: [{size: 1G, percent: 150}]}\n",
    )]);
    let err = site::load_profile(&dir.path().join("p.yaml")).unwrap_err();
    let text: Vec<String> = err.0.iter().map(|d| d.to_string()).collect();
    assert!(text[0].ends_with("p.yaml:4:17: cpu.reserved: \"0-\" is not a CPU id or range: write ids and ranges like \"0-3,8\""), "{text:?}");
    assert!(
        text[1].ends_with(
            "p.yaml:5:41: hugepages.pages[0].percent: percent 150 is out of range: use 1 to 100"
        ),
        "{text:?}"
    );
}

#[test]
fn bmc_certificate_settings() {
    let nodes = "nodes:
  - name: a
    bmc: {url: redfish://10.0.0.5, username: root, password_env: PW, ca_file: pki/site-ca.pem}
  - name: b
    bmc: {url: redfish://10.0.0.6, username: root, password_env: PW, insecure: true}
  - name: c
    bmc: {url: redfish://10.0.0.7, username: root, password_env: PW}
";
    let dir = site_dir(&[("site.yaml", GOOD_SITE), ("nodes.yaml", nodes)]);
    let site = site::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let tls: Vec<_> = site
        .nodes
        .iter()
        .map(|n| n.bmc.as_ref().unwrap().tls.clone())
        .collect();
    assert_eq!(
        tls,
        [
            BmcTls::CaFile(dir.path().join("pki/site-ca.pem")),
            BmcTls::Insecure,
            BmcTls::Verify
        ]
    );
    assert_eq!(BmcTls::Insecure.reference().as_deref(), Some("insecure"));
    assert_eq!(BmcTls::Verify.reference(), None);

    let nodes = "nodes:
  - name: a
    bmc: {url: redfish://10.0.0.5, username: root, password_env: PW, ca_file: ca.pem, insecure: true}
  - name: b
    bmc: {url: ipmi://10.0.0.6, username: root, password_env: PW, insecure: true}
  - name: c
    bmc: {url: redfish+http://10.0.0.7, username: root, password_env: PW, ca_file: ca.pem}
  - name: d
    bmc: {url: redfish://10.0.0.8, username: root, password_env: PW, ca_file: ''}
";
    let dir = site_dir(&[("site.yaml", GOOD_SITE), ("nodes.yaml", nodes)]);
    let got = errors(dir.path());
    assert_eq!(got.len(), 4, "{got:#?}");
    assert!(
        got[0]
            .contains("nodes[0].bmc.insecure: give either `ca_file` or `insecure: true`, not both"),
        "{got:#?}"
    );
    assert!(
        got[1].contains(
            "nodes[1].bmc.insecure: certificate settings apply to redfish:// (HTTPS) only"
        ),
        "{got:#?}"
    );
    assert!(
        got[2].contains(
            "nodes[2].bmc.ca_file: certificate settings apply to redfish:// (HTTPS) only"
        ),
        "{got:#?}"
    );
    assert!(
        got[3].contains("nodes[3].bmc.ca_file: empty path"),
        "{got:#?}"
    );
}

#[test]
fn dhcp_reservations_and_uefi_loader() {
    let site = "network: {interface: br0, address: 10.213.0.1/24}\nboot: {uefi_loader: ipxe, tftp: {enabled: false}}\n";
    let nodes = "nodes:\n  - name: a\n    boot_mac: 52:54:00:00:00:01\n    ip: 10.213.0.21\n";
    let dir = site_dir(&[("site.yaml", site), ("nodes.yaml", nodes)]);
    let loaded = site::load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.nodes[0].ip, Some("10.213.0.21".parse().unwrap()));
    assert_eq!(
        loaded.config.boot.uefi_loader,
        provisioner::site::UefiLoaderWire::Ipxe
    );

    let nodes = "nodes:\n  - name: a\n    boot_mac: 52:54:00:00:00:01\n    ip: 10.9.0.21\n  - name: b\n    boot_mac: 52:54:00:00:00:02\n    ip: 10.213.0.1\n  - name: c\n    bmc: {url: ipmi://10.0.0.9, username: u, password_env: P}\n    ip: 10.213.0.30\n  - name: d\n    boot_mac: 52:54:00:00:00:04\n    ip: 10.213.0.30\n";
    let dir = site_dir(&[("site.yaml", site), ("nodes.yaml", nodes)]);
    let got = errors(dir.path());
    assert_eq!(got.len(), 4, "{got:#?}");
    assert!(
        got[0].starts_with("nodes.yaml:4:9: nodes[0].ip: 10.9.0.21 is outside the provisioning subnet 10.213.0.0/24"),
        "{got:#?}"
    );
    assert!(
        got[1].contains("10.213.0.1 is the provisioner's own address"),
        "{got:#?}"
    );
    assert!(got[2].contains("add `boot_mac` or remove `ip`"), "{got:#?}");
    assert!(
        got[3].contains("address 10.213.0.30 is already reserved for the node at"),
        "{got:#?}"
    );

    let bad = "network: {interface: br0, address: 10.213.0.1/24}\nboot: {uefi_loader: grub}\n";
    let dir = site_dir(&[("site.yaml", bad), ("nodes.yaml", GOOD_NODES)]);
    let got = errors(dir.path());
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].contains("uefi_loader"), "{got:#?}");
}
