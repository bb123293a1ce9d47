//! Prints every Tributary CRD as YAML, or with the argument `reference` the resource reference
//! (`docs/reference.md`) rendered from them. `cargo xtask generate` writes both where they belong
//! (`crds/yaml/`, the chart, `docs/`); a test fails when those files drift from the Rust types.

fn main() -> Result<(), serde_yaml::Error> {
    match std::env::args().nth(1).as_deref() {
        Some("reference") => print!("{}", tributary_crds::reference_md()),
        _ => print!("{}", tributary_crds::crds_yaml()?),
    }
    Ok(())
}
