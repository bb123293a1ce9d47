//! The generated files in the repository (the CRD YAML and its chart copy, the resource
//! reference `docs/reference.md`) come from the Rust types; these tests fail when one drifts.
//! Regenerate with `cargo xtask generate`.

use std::path::{Path, PathBuf};

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn check(rel: &str, generated: &str) {
    let path = repo_file(rel);
    let on_disk = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask generate`", path.display()));
    assert!(
        on_disk == generated,
        "{rel} differs from the Rust types: run `cargo xtask generate` and commit the result"
    );
}

fn crd_yaml() -> String {
    tributary_crds::crds_yaml().unwrap_or_else(|e| panic!("CRDs serialise: {e}"))
}

#[test]
fn crd_yaml_matches_types() {
    check("crds/yaml/streamingenrichments.yaml", &crd_yaml());
}

#[test]
fn chart_crd_copy_matches_types() {
    check(
        "charts/tributary/crds/streamingenrichments.yaml",
        &crd_yaml(),
    );
}

#[test]
fn resource_reference_matches_types() {
    check("docs/reference.md", &tributary_crds::reference_md());
}

/// `docs/resource.md` shows `examples/full.yaml` as it is (the file unit tests parse and
/// validate), so the example in the docs is one the API server and the operator accept.
#[test]
fn resource_overview_embeds_the_full_example() {
    let read = |rel: &str| {
        std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    let doc = read("docs/resource.md");
    let example = read("examples/full.yaml");
    assert!(
        doc.contains(&format!("```yaml\n{example}```\n")),
        "docs/resource.md must embed examples/full.yaml verbatim in a ```yaml block"
    );
}
