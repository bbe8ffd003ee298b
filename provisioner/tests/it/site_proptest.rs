//! `site::load` never panics, whatever nodes.yaml holds.

use proptest::prelude::*;

const SITE: &str = "network: {interface: br0, address: 10.213.0.1/24}\n";

fn yamlish() -> impl Strategy<Value = String> {
    // Mostly YAML-shaped text built from the pieces that matter, plus raw noise.
    let piece = prop_oneof![
        Just("nodes:\n".to_owned()),
        Just("  - name: a\n".to_owned()),
        Just("    bmc:\n".to_owned()),
        Just("      url: redfish://10.0.0.1\n".to_owned()),
        Just("      username: x\n".to_owned()),
        Just("      password_env: P\n".to_owned()),
        Just("    boot_mac: 52:54:00:00:00:01\n".to_owned()),
        Just("    serial: 1\n".to_owned()),
        Just("    role: compute\n".to_owned()),
        Just("[{".to_owned()),
        Just("&a *a ! !! % @ ` | > ' \"".to_owned()),
        Just("---\n".to_owned()),
        Just("\t".to_owned()),
        "[ -~\n]{0,20}",
        ".{0,10}",
    ];
    proptest::collection::vec(piece, 0..30).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn load_never_panics(nodes in yamlish()) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("site.yaml"), SITE).expect("write");
        std::fs::write(dir.path().join("nodes.yaml"), &nodes).expect("write");
        match provisioner::site::load(dir.path()) {
            Ok(site) => prop_assert!(site.nodes.len() <= 30),
            Err(errors) => {
                prop_assert!(!errors.0.is_empty());
                for d in &errors.0 {
                    prop_assert!(d.line >= 1 && d.column >= 1, "{d}");
                }
            }
        }
    }

    #[test]
    fn yaml_parse_never_panics(text in ".{0,200}") {
        let _ = provisioner::site::yaml::parse(&text);
    }
}
