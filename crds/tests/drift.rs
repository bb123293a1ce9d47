//! The CRD YAML in the repository is generated from the Rust types; these tests fail when it
//! drifts. Regenerate with `cargo xtask generate`.

use std::path::Path;

fn check(rel: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    let on_disk = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask generate`", path.display()));
    let generated = tributary_crds::crds_yaml().unwrap_or_else(|e| panic!("CRDs serialise: {e}"));
    assert!(
        on_disk == generated,
        "{rel} differs from the Rust types: run `cargo xtask generate` and commit the result"
    );
}

#[test]
fn crd_yaml_matches_types() {
    check("crds/yaml/streamingenrichments.yaml");
}

#[test]
fn chart_crd_copy_matches_types() {
    check("charts/tributary/crds/streamingenrichments.yaml");
}
