//! The job configuration: rendered by the operator into a ConfigMap (`job.yaml`), read by the
//! runtime at start. One type for both sides, so they cannot disagree; a change of it changes the
//! hash the operator puts on the pod template, which rolls the StatefulSet.
//!
//! Secrets never appear here: the operator wires them into the pod as environment variables
//! from Secret references, under the names in [`env`].

use serde::{Deserialize, Serialize};

use crate::spec::{
    AwsSpec, DeadLetterSpec, JoinSpec, OpenSearchSinkSpec, ReferenceSpec, S3SinkSpec,
    SavepointsSpec, SourcesSpec, StreamingEnrichmentSpec, UpgradeMode,
};

/// File name of the configuration inside the ConfigMap and the mounted folder.
pub const CONFIG_FILE: &str = "job.yaml";
/// Where the job pod mounts the ConfigMap.
pub const CONFIG_DIR: &str = "/etc/tributary";
/// Where the job pod mounts its state volume.
pub const STATE_DIR: &str = "/var/lib/tributary";
/// Admin HTTP port of the runtime: /metrics, /healthz, /readyz.
pub const ADMIN_PORT: u16 = 9249;

/// Environment variables the operator sets on job pods (values from the downward API or from
/// Secret references).
pub mod env {
    /// Pod name, from the downward API; the StatefulSet ordinal is its numeric suffix.
    pub const POD_NAME: &str = "TRIBUTARY_POD_NAME";
    /// Pod IP, from the downward API; the admin server listens on it (all interfaces if unset).
    pub const POD_IP: &str = "TRIBUTARY_POD_IP";
    pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
    pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
    pub const OPENSEARCH_USERNAME: &str = "TRIBUTARY_OPENSEARCH_USERNAME";
    pub const OPENSEARCH_PASSWORD: &str = "TRIBUTARY_OPENSEARCH_PASSWORD";
    /// Path of the configuration file (default `/etc/tributary/job.yaml`).
    pub const CONFIG_PATH: &str = "TRIBUTARY_CONFIG";
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobConfig {
    /// Namespace and name of the owning resource (labels metrics and dead-letter keys).
    pub pipeline: PipelineId,
    /// Number of replicas the sales shards are split among; every replica must agree on it.
    pub replicas: i32,
    pub aws: AwsSpec,
    pub sources: SourcesSpec,
    pub reference: ReferenceSpec,
    pub join: JoinSpec,
    pub sinks: SinksConfig,
    pub dead_letter: DeadLetterSpec,
    pub upgrade_mode: UpgradeMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoints: Option<SavepointsSpec>,
    #[serde(default)]
    pub runtime: RuntimeSettings,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PipelineId {
    pub namespace: String,
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SinksConfig {
    pub s3: S3SinkSpec,
    pub opensearch: OpenSearchSinkSpec,
}

/// Process-level settings with defaults matching the pod the operator builds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSettings {
    pub state_dir: String,
    pub admin_port: u16,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            state_dir: format!("{STATE_DIR}/state"),
            admin_port: ADMIN_PORT,
        }
    }
}

impl JobConfig {
    /// The configuration a resource's job runs with, at a given replica count.
    pub fn from_spec(
        namespace: &str,
        name: &str,
        spec: &StreamingEnrichmentSpec,
        replicas: i32,
    ) -> Self {
        Self {
            pipeline: PipelineId {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
            replicas,
            aws: spec.aws.clone(),
            sources: spec.sources.clone(),
            reference: spec.reference.clone(),
            join: spec.join.clone(),
            sinks: SinksConfig {
                s3: spec.sinks.s3.clone(),
                opensearch: spec.sinks.opensearch.clone(),
            },
            dead_letter: spec.dead_letter.clone(),
            upgrade_mode: spec.upgrade_mode,
            savepoints: spec.savepoints.clone(),
            runtime: RuntimeSettings::default(),
        }
    }

    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(self)
    }

    pub fn from_yaml(s: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(s)
    }
}
