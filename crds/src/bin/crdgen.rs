//! Prints every Tributary CRD as YAML. `cargo xtask generate` writes it to `crds/yaml/` and to the
//! chart; a test fails when those files drift from the Rust types.

fn main() -> Result<(), serde_yaml::Error> {
    print!("{}", tributary_crds::crds_yaml()?);
    Ok(())
}
