//! Pure builders of every child object a `StreamingEnrichment` owns. No client here: each builder
//! takes the resource (and resolved facts such as the replica count) and returns the object to
//! server-side apply. Unit-tested from the resources in `examples/`.

mod config_map;
pub mod labels;
mod pdb;
mod services;
mod statefulset;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use tributary_crds::StreamingEnrichment;
use tributary_crds::job_config::JobConfig;

pub use labels::{selector_labels, selector_string};

/// Facts the builders need beyond the resource itself.
#[derive(Clone, Debug)]
pub struct BuildInputs {
    /// Image used when the resource names none.
    pub default_image: String,
    /// Replicas the StatefulSet should run (already resolved from suspend, mode and shards).
    pub replicas: i32,
}

/// Every child object, as it should be.
#[derive(Clone, Debug)]
pub struct Children {
    pub config_map: ConfigMap,
    pub headless_service: Service,
    pub metrics_service: Service,
    pub statefulset: StatefulSet,
    pub pdb: PodDisruptionBudget,
    /// Hash of the rendered job configuration (also on the pod template).
    pub config_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the resource has no {0}")]
    MissingMetadata(&'static str),
    #[error("rendering the job configuration: {0}")]
    RenderConfig(#[from] serde_yaml::Error),
}

/// Names of the children, derived from the resource name (one place, so tests and the status
/// step agree with the builders).
pub mod names {
    pub fn config_map(se: &str) -> String {
        format!("{se}-config")
    }
    pub fn headless_service(se: &str) -> String {
        se.to_string()
    }
    pub fn metrics_service(se: &str) -> String {
        format!("{se}-metrics")
    }
    pub fn statefulset(se: &str) -> String {
        se.to_string()
    }
    pub fn pdb(se: &str) -> String {
        se.to_string()
    }
}

/// Build every child of `se`.
pub fn build(se: &StreamingEnrichment, inputs: &BuildInputs) -> Result<Children, BuildError> {
    let name = se
        .metadata
        .name
        .as_deref()
        .ok_or(BuildError::MissingMetadata("name"))?;
    let namespace = se
        .metadata
        .namespace
        .as_deref()
        .ok_or(BuildError::MissingMetadata("namespace"))?;
    let owner = labels::owner_reference(se)?;

    // The job sees the replica count it runs at; a suspended job renders the count it will
    // resume at, so suspending does not change the configuration hash.
    let config_replicas = inputs.replicas.max(1);
    let job_config = JobConfig::from_spec(namespace, name, &se.spec, config_replicas);
    let (config_map, config_hash) = config_map::build(se, name, namespace, &owner, &job_config)?;

    Ok(Children {
        headless_service: services::headless(name, namespace, &owner),
        metrics_service: services::metrics(name, namespace, &owner),
        statefulset: statefulset::build(se, name, namespace, &owner, inputs, &config_hash),
        pdb: pdb::build(name, namespace, &owner),
        config_map,
        config_hash,
    })
}

#[cfg(test)]
pub(crate) mod fixtures {
    use tributary_crds::StreamingEnrichment;

    /// Load a resource from `examples/`, as a user would apply it, with the metadata the API
    /// server would add.
    pub fn example(file: &str) -> StreamingEnrichment {
        let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut se: StreamingEnrichment = serde_yaml::from_str(&body).expect("example parses");
        se.metadata.namespace.get_or_insert_with(|| "default".into());
        se.metadata.uid = Some("0b3c2a3e-1111-4222-8333-444455556666".into());
        se.metadata.generation = Some(1);
        se
    }
}
