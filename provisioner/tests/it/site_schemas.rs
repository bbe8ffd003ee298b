//! The committed JSON Schemas under `provisioner/schemas/` equal the ones
//! generated from the Rust types. Regenerate with
//! `UPDATE_SCHEMAS=1 cargo test -p provisioner --test it site_schemas`.

use std::path::Path;

#[test]
fn committed_schemas_are_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (name, schema) in provisioner::site::schemas() {
        let text = serde_json::to_string_pretty(&schema).expect("schema serializes") + "\n";
        let path = dir.join(name);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != text {
            if update {
                std::fs::create_dir_all(&dir).expect("mkdir schemas");
                std::fs::write(&path, text).expect("write schema");
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale JSON Schemas: {}\nregenerate them with: UPDATE_SCHEMAS=1 cargo test -p provisioner --test it site_schemas",
        stale.join(", ")
    );
}

#[test]
fn site_schema_sections_match_the_loader() {
    let schemas = provisioner::site::schemas();
    let site = &schemas[0].1;
    let mut keys: Vec<_> = site["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["api", "boot", "discovery", "images", "lifecycle", "network"]
    );
    assert_eq!(site["additionalProperties"], serde_json::Value::Bool(false));
}
