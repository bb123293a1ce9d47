//! The ConfigMap holding the job configuration, and the hash that rolls the pods when it changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use sha2::{Digest, Sha256};
use tributary_crds::StreamingEnrichment;
use tributary_crds::job_config::{CONFIG_FILE, JobConfig};

use super::labels::child_meta;
use super::{BuildError, names};

pub fn build(
    _se: &StreamingEnrichment,
    name: &str,
    namespace: &str,
    owner: &OwnerReference,
    job_config: &JobConfig,
) -> Result<(ConfigMap, String), BuildError> {
    let yaml = job_config.to_yaml()?;
    let hash = hex::encode(&Sha256::digest(yaml.as_bytes())[..8]);
    let cm = ConfigMap {
        metadata: child_meta(names::config_map(name), namespace, name, "config", owner),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), yaml)])),
        ..Default::default()
    };
    Ok((cm, hash))
}
