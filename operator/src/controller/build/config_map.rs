//! The ConfigMap holding the job configuration (`job.yaml`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use tributary_crds::job_config::{CONFIG_FILE, JobConfig};

use super::labels::child_meta;
use super::{BuildError, names};

pub fn build(
    name: &str,
    namespace: &str,
    owner: &OwnerReference,
    job_config: &JobConfig,
) -> Result<ConfigMap, BuildError> {
    Ok(ConfigMap {
        metadata: child_meta(names::config_map(name), namespace, name, "config", owner),
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_string(),
            job_config.to_yaml()?,
        )])),
        ..Default::default()
    })
}
