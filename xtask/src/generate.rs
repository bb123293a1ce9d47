//! `cargo xtask generate`: every generated file, from the Rust types. The drift tests in
//! `crds/tests/drift.rs` fail until this has been run and committed.

use anyhow::Result;

use crate::stack::Ctx;

/// Files holding the CRD YAML, relative to the repository root.
pub const CRD_FILES: &[&str] = &[
    "crds/yaml/streamingenrichments.yaml",
    "charts/tributary/crds/streamingenrichments.yaml",
];

/// The resource reference rendered from the CRD's schema, relative to the repository root.
pub const REFERENCE_FILE: &str = "docs/reference.md";

pub fn run(ctx: &Ctx) -> Result<()> {
    let yaml = tributary_crds::crds_yaml()?;
    let reference = tributary_crds::reference_md();
    let files = CRD_FILES
        .iter()
        .map(|rel| (*rel, yaml.as_str()))
        .chain([(REFERENCE_FILE, reference.as_str())]);
    for (rel, text) in files {
        let path = ctx.repo.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, text)?;
        println!("wrote {rel}");
    }
    Ok(())
}
