//! `cargo xtask generate`: every generated file, from the Rust types. The drift tests in
//! `crds/tests/drift.rs` fail until this has been run and committed.

use anyhow::Result;

use crate::stack::Ctx;

/// Files holding the CRD YAML, relative to the repository root.
pub const CRD_FILES: &[&str] = &[
    "crds/yaml/streamingenrichments.yaml",
    "charts/tributary/crds/streamingenrichments.yaml",
];

pub fn run(ctx: &Ctx) -> Result<()> {
    let yaml = tributary_crds::crds_yaml()?;
    for rel in CRD_FILES {
        let path = ctx.repo.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, &yaml)?;
        println!("wrote {rel}");
    }
    Ok(())
}
