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
/// Where the job pod mounts the key `sinks.opensearch.caCert` names (a folder of its own: the
/// ConfigMap mounted at [`CONFIG_DIR`] is read-only and cannot hold a nested mount point).
pub const OPENSEARCH_CA_DIR: &str = "/etc/tributary-opensearch-ca";
/// File name of the CA bundle inside [`OPENSEARCH_CA_DIR`].
pub const OPENSEARCH_CA_FILE: &str = "ca.crt";

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
    /// The bearer token of the control API ([`crate::control`]), from the resource's control
    /// Secret. Without it the replica refuses every control request.
    pub const CONTROL_TOKEN: &str = "TRIBUTARY_CONTROL_TOKEN";
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
    /// Which state the replicas run on.
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub runtime: RuntimeSettings,
}

/// The state lineage the replicas run on, and where a replica takes it from when its volume
/// holds another one.
///
/// A replica records the id of the state it runs on in the state itself. At start it compares
/// that with [`StateConfig::id`]: equal (or `id` empty), it runs on the volume as it is (a
/// restart, or an upgrade in `LastState` mode); different, it replaces the volume's state before
/// reading anything: with its share of [`StateConfig::restore`] when set (a savepoint upgrade or
/// rescale), else with an empty state that reads from `startPosition` (`Stateless`). A crash
/// after the replacement finds the new id and does not replace again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StateConfig {
    /// Empty: whatever the volume holds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<SavepointLocation>,
}

/// A complete savepoint: `uri` is its folder (`<savepoints.uri>/<id>/`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SavepointLocation {
    pub id: String,
    pub uri: String,
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
    pub opensearch: OpenSearchSinkConfig,
}

/// The resource's OpenSearch sink, plus what the pod adds to it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OpenSearchSinkConfig {
    #[serde(flatten)]
    pub spec: OpenSearchSinkSpec,
    /// Path of the PEM CA bundle (`spec.caCert`, mounted from its Secret) the job trusts for the
    /// endpoint's TLS certificate; absent: the system's trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_file: Option<String>,
}

impl OpenSearchSinkConfig {
    /// The sink as the operator's pod runs it: the CA, when the resource names one, at
    /// [`OPENSEARCH_CA_DIR`]/[`OPENSEARCH_CA_FILE`].
    pub fn from_spec(spec: &OpenSearchSinkSpec) -> Self {
        Self {
            spec: spec.clone(),
            ca_cert_file: spec
                .ca_cert
                .as_ref()
                .map(|_| format!("{OPENSEARCH_CA_DIR}/{OPENSEARCH_CA_FILE}")),
        }
    }
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
                opensearch: OpenSearchSinkConfig::from_spec(&spec.sinks.opensearch),
            },
            dead_letter: spec.dead_letter.clone(),
            upgrade_mode: spec.upgrade_mode,
            savepoints: spec.savepoints.clone(),
            state: StateConfig::default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StreamingEnrichment;

    fn example(file: &str) -> StreamingEnrichment {
        let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn round_trips_with_the_ca_file_beside_the_sink_fields() {
        let se = example("full.yaml");
        let cfg = JobConfig::from_spec("analytics", "sales-enrichment", &se.spec, 2);
        assert_eq!(
            cfg.sinks.opensearch.ca_cert_file.as_deref(),
            Some("/etc/tributary-opensearch-ca/ca.crt")
        );
        let yaml = cfg.to_yaml().unwrap();
        let tree: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
        let os = &tree["sinks"]["opensearch"];
        assert_eq!(os["caCertFile"], "/etc/tributary-opensearch-ca/ca.crt");
        assert_eq!(os["endpoint"], "https://search.example.internal:9200");
        assert_eq!(os["caCert"]["key"], "ca.crt");
        assert!(os.get("spec").is_none(), "the sink fields are flattened");
        assert_eq!(JobConfig::from_yaml(&yaml).unwrap(), cfg);

        let minimal = example("minimal.yaml");
        let cfg = JobConfig::from_spec("default", "sales-minimal", &minimal.spec, 1);
        assert_eq!(cfg.sinks.opensearch.ca_cert_file, None);
        let yaml = cfg.to_yaml().unwrap();
        assert!(!yaml.contains("caCertFile"), "{yaml}");
        assert_eq!(JobConfig::from_yaml(&yaml).unwrap(), cfg);
    }
}
