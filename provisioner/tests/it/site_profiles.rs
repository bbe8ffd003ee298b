//! Every example profile in the repository parses and validates.

use std::path::Path;

#[test]
fn every_example_profile_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let mut checked = Vec::new();
    for dir in ["profiles", "hardware-tests/sites/lab/profiles"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        entries.sort();
        for path in entries {
            let text = std::fs::read_to_string(&path).expect("read");
            assert!(
                text.starts_with("# yaml-language-server: $schema="),
                "{} must start with its schema comment",
                path.display()
            );
            let profile = provisioner::site::load_profile(&path)
                .unwrap_or_else(|e| panic!("{} is invalid:\n{e}", path.display()));
            checked.push(profile.name);
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "compute-e810",
            "lab-compute",
            "lab-network",
            "lab-storage",
            "network-epyc-cx6",
            "storage-nvme12"
        ]
    );
}
