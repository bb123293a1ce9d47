//! `StreamingEnrichment`: one declarative streaming enrichment pipeline.
//!
//! Validation lives in the schema wherever the API server can apply it (enums, ranges, patterns,
//! required fields, CEL rules), so `kubectl apply` refuses an invalid resource with a readable
//! message; what only the operator can check (for example a referenced Secret's keys) is reported
//! through the Degraded condition.

// clippy reads the repeated `printcolumn(type_ = ...)` arguments of the derive as duplicated
// attributes; they are distinct columns.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;
use crate::status::StreamingEnrichmentStatus;

/// The default job runtime image; the operator may be configured with another default.
pub const DEFAULT_IMAGE: &str = "ghcr.io/tributary-dev/tributary-runtime:0.1.0";

/// A streaming enrichment pipeline: three Kinesis streams joined on event time, enriched with
/// reference data from S3, written to an S3 curated bucket and to OpenSearch.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tributary.dev",
    version = "v1alpha1",
    kind = "StreamingEnrichment",
    plural = "streamingenrichments",
    shortname = "se",
    category = "tributary",
    namespaced,
    status = "StreamingEnrichmentStatus",
    derive = "PartialEq",
    doc = "A streaming enrichment pipeline run by the Tributary operator",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Shards", type_ = "integer", json_path = ".status.shards"),
    printcolumn(
        name = "Last Savepoint",
        type_ = "date",
        json_path = ".status.lastSavepoint.completedAt"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.scaling.mode != 'Manual' || has(self.replicas)").message("scaling.mode Manual needs spec.replicas"))]
#[x_kube(validation = Rule::new("self.upgradeMode != 'Savepoint' || has(self.savepoints)").message("upgradeMode Savepoint needs spec.savepoints.uri"))]
#[serde(rename_all = "camelCase")]
pub struct StreamingEnrichmentSpec {
    /// Job runtime image. Defaults to the operator's configured runtime image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Image pull policy of the job pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// CPU and memory of each job pod. Absent: requests of 500m CPU and 1Gi memory and a 2Gi
    /// memory limit (RocksDB's caches and the outbox live within it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The persistent volume holding each replica's RocksDB state.
    #[serde(default)]
    pub storage: StorageSpec,

    /// Labels, annotations and scheduling fields merged into the job pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_overrides: Option<PodOverrides>,

    /// AWS region, endpoints and credentials shared by the Kinesis and S3 clients.
    #[serde(default)]
    pub aws: AwsSpec,

    /// The three input streams.
    pub sources: SourcesSpec,

    /// Slowly changing reference data in S3.
    pub reference: ReferenceSpec,

    /// Event-time join settings.
    #[serde(default)]
    pub join: JoinSpec,

    /// Where enriched sales are written.
    pub sinks: SinksSpec,

    /// Where records that cannot be processed are written, with their reason.
    pub dead_letter: DeadLetterSpec,

    /// How the job is brought to a new version or configuration.
    #[serde(default)]
    pub upgrade_mode: UpgradeMode,

    /// Where savepoints go (taken before every `Savepoint` upgrade and every rescale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoints: Option<SavepointsSpec>,

    /// How the number of replicas is chosen.
    #[serde(default)]
    pub scaling: ScalingSpec,

    /// Number of job replicas when `scaling.mode` is Manual (also the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1024))]
    pub replicas: Option<i32>,

    /// Scale the job to zero while keeping its state volumes; set back to false to resume.
    #[serde(default)]
    pub suspend: bool,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// The per-replica volume for RocksDB state.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each replica's state volume.
    #[serde(default = "default_storage_size")]
    pub size: Quantity,
    /// Storage class; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

fn default_storage_size() -> Quantity {
    Quantity("10Gi".into())
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

/// Fields merged into the job pod template.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra labels of the job pods (the operator's own labels win on a clash).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations of the job pods (the operator's own annotations win on a clash).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node selector of the job pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the job pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Service account of the job pods (for IRSA or workload identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Mount the service account token; off unless the job needs it (IRSA does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
}

/// A key of a Secret in the resource's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the resource's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// AWS access shared by the Kinesis and S3 clients of the job.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSpec {
    /// Region of the streams and buckets unless a source overrides it.
    #[serde(default = "default_region")]
    pub region: String,
    /// Static credentials from a Secret; absent means the default chain (IRSA, instance role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AwsCredentials>,
    /// Kinesis endpoint override (for example a VPC endpoint or a local server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url)]
    pub kinesis_endpoint: Option<String>,
    /// S3 endpoint override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url)]
    pub s3_endpoint: Option<String>,
    /// Path-style S3 addressing (needed by most S3-compatible servers).
    #[serde(default)]
    pub s3_force_path_style: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

impl Default for AwsSpec {
    fn default() -> Self {
        Self {
            region: default_region(),
            credentials: None,
            kinesis_endpoint: None,
            s3_endpoint: None,
            s3_force_path_style: false,
        }
    }
}

/// Static AWS credentials, each from a Secret key.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsCredentials {
    pub access_key_id: SecretKeyRef,
    pub secret_access_key: SecretKeyRef,
}

/// The three input streams.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourcesSpec {
    /// Customer created/updated events (partition key `customer_id`).
    pub customers: StreamSource,
    /// Address created/updated events (partition key `address_id`).
    pub addresses: StreamSource,
    /// Sale lines (partition key `bill_customer_id`); its shards are split among replicas.
    pub sales: StreamSource,
}

/// One Kinesis stream.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.startPosition != 'AtTimestamp' || has(self.startTimestamp)").message("startPosition AtTimestamp needs startTimestamp"))]
#[x_kube(validation = Rule::new("self.reader != 'EnhancedFanOut' || has(self.consumerName)").message("reader EnhancedFanOut needs consumerName"))]
#[serde(rename_all = "camelCase")]
pub struct StreamSource {
    /// Stream name or ARN.
    #[schemars(length(min = 1, max = 2048))]
    pub stream: String,
    /// Region override for this stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint override for this stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url)]
    pub endpoint: Option<String>,
    /// Where to start when no checkpoint exists.
    #[serde(default)]
    pub start_position: StartPosition,
    /// RFC 3339 timestamp, for `startPosition: AtTimestamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub start_timestamp: Option<String>,
    /// Polling with GetRecords, or enhanced fan-out with SubscribeToShard.
    #[serde(default)]
    pub reader: ReaderKind,
    /// Consumer name prefix, for `reader: EnhancedFanOut`. Each replica registers and reads
    /// through its own consumer, `<consumerName>-<ordinal>` (a second subscription to a shard
    /// through one consumer would take over the first); the operator deregisters the consumers
    /// of ordinals a rescale removed, and all of them when the resource is deleted. A stream has
    /// at most 20 consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 118), regex(pattern = r"^[a-zA-Z0-9_.-]+$"))]
    pub consumer_name: Option<String>,
}

impl StreamSource {
    /// The enhanced fan-out consumer of replica `ordinal` (`None` for a polling reader).
    pub fn replica_consumer(&self, ordinal: u32) -> Option<String> {
        match self.reader {
            ReaderKind::Polling => None,
            ReaderKind::EnhancedFanOut => self
                .consumer_name
                .as_ref()
                .map(|c| format!("{c}-{ordinal}")),
        }
    }
}

impl AwsSpec {
    /// The region and endpoint `source` is reached at: its overrides, else the shared ones.
    pub fn kinesis_target<'a>(&'a self, source: &'a StreamSource) -> (&'a str, Option<&'a str>) {
        let region = source.region.as_deref().unwrap_or(&self.region);
        let endpoint = source
            .endpoint
            .as_deref()
            .or(self.kinesis_endpoint.as_deref());
        (region, endpoint)
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum StartPosition {
    #[default]
    TrimHorizon,
    Latest,
    AtTimestamp,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ReaderKind {
    #[default]
    Polling,
    EnhancedFanOut,
}

/// Reference data sets.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceSpec {
    pub items: ReferenceSource,
    pub promos: ReferenceSource,
}

/// Files under one S3 prefix, re-scanned on an interval.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceSource {
    /// `s3://bucket/prefix/`.
    #[schemars(regex(pattern = r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$"))]
    pub uri: String,
    /// File format of the objects under `uri`: `Csv` (with a header line) or `Parquet`.
    #[serde(default)]
    pub format: ReferenceFormat,
    /// How often the prefix is re-scanned for changed files.
    #[serde(default = "default_refresh")]
    pub refresh_interval: Duration,
}

fn default_refresh() -> Duration {
    Duration::from_secs(60)
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ReferenceFormat {
    #[default]
    Csv,
    Parquet,
}

/// Event-time join settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinSpec {
    /// How long a sale may wait for a missing customer, address, item or promo before it goes
    /// to dead-letter with the reason.
    #[serde(default = "default_max_wait")]
    pub max_wait: Duration,
    /// How late a dimension update may arrive and still be joined as of its event time; older
    /// versions are compacted away (the latest is always kept).
    #[serde(default = "default_lateness")]
    pub allowed_lateness: Duration,
}

fn default_max_wait() -> Duration {
    Duration::from_secs(600)
}

fn default_lateness() -> Duration {
    Duration::from_secs(86_400)
}

impl Default for JoinSpec {
    fn default() -> Self {
        Self {
            max_wait: default_max_wait(),
            allowed_lateness: default_lateness(),
        }
    }
}

/// Output sinks.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SinksSpec {
    pub s3: S3SinkSpec,
    pub opensearch: OpenSearchSinkSpec,
}

/// Parquet files partitioned by the sale's day: `<uri>/<sales stream>/YYYY-MM-DD/`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3SinkSpec {
    /// `s3://bucket/prefix`.
    #[schemars(regex(pattern = r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$"))]
    pub uri: String,
    /// Roll a file when it reaches this size.
    #[serde(default = "default_roll_size")]
    pub roll_size: Quantity,
    /// Roll a file at least this often.
    #[serde(default = "default_roll_interval")]
    pub roll_interval: Duration,
}

fn default_roll_size() -> Quantity {
    Quantity("128Mi".into())
}

fn default_roll_interval() -> Duration {
    Duration::from_secs(300)
}

/// OpenSearch bulk indexing and the index template the operator manages.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenSearchSinkSpec {
    /// `https://host:port`.
    #[schemars(url)]
    pub endpoint: String,
    /// How the job authenticates; with the security plugin, the operator maps the writer role to
    /// this user.
    #[serde(default)]
    pub auth: OpenSearchAuth,
    /// PEM CA certificate(s) the endpoint's TLS certificate chains to; absent means the system's
    /// trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<SecretKeyRef>,
    /// Send the Basic credentials (`auth`, `template.adminCredentials`) to an `http://`
    /// endpoint, in clear text. Refused unless this is true: only for a local or test cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials_over_plain_http: bool,
    /// Indices are `<indexPrefix>-000001`, `-000002`, ...
    #[serde(default = "default_index_prefix")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_\-]{0,200}$"))]
    pub index_prefix: String,
    /// The alias the job writes through (rolled over to a new index by the operator).
    #[serde(default = "default_write_alias")]
    pub write_alias: String,
    /// The alias over every index of the pipeline, for readers.
    #[serde(default = "default_read_alias")]
    pub read_alias: String,
    /// Document `_id` template over the sale's fields; deterministic so replays overwrite.
    #[serde(default = "default_document_id")]
    #[schemars(length(min = 1))]
    pub document_id: String,
    /// Bulk request size bound.
    #[serde(default = "default_bulk_size")]
    pub bulk_max_bytes: Quantity,
    /// Bulk request time bound.
    #[serde(default = "default_bulk_interval")]
    pub bulk_flush_interval: Duration,
    #[serde(default)]
    pub template: IndexTemplateSpec,
    /// What deleting the resource does to the indices: Retain (default) keeps the user's data.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_index_prefix() -> String {
    "ara".into()
}
fn default_write_alias() -> String {
    "ara-write".into()
}
fn default_read_alias() -> String {
    "ara-sales".into()
}
fn default_document_id() -> String {
    "{order_id}:{item_id}".into()
}
fn default_bulk_size() -> Quantity {
    Quantity("10Mi".into())
}
fn default_bulk_interval() -> Duration {
    Duration::from_secs(1)
}

/// Authentication to OpenSearch.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("self.type != 'Basic' || (has(self.username) && has(self.password))").message("auth type Basic needs username and password secret references"))]
#[x_kube(validation = Rule::new("self.type == 'Basic' || (!has(self.username) && !has(self.password))").message("username and password are only valid with auth type Basic"))]
#[x_kube(validation = Rule::new("self.type == 'SigV4' || !has(self.region)").message("region is only valid with auth type SigV4"))]
#[serde(rename_all = "camelCase")]
pub struct OpenSearchAuth {
    /// `None` or `Basic` (username and password from Secret keys); `SigV4` is refused by the
    /// operator as not supported yet.
    #[serde(default, rename = "type")]
    pub kind: OpenSearchAuthKind,
    /// For `Basic`: the username's Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<SecretKeyRef>,
    /// For `Basic`: the password's Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretKeyRef>,
    /// Signing region for SigV4 (defaults to `aws.region`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum OpenSearchAuthKind {
    #[default]
    None,
    Basic,
    SigV4,
}

/// The index template, rollover policy and aliases the operator maintains.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexTemplateSpec {
    /// Let the operator own the template, policy and first index.
    #[serde(default = "default_true")]
    pub managed: bool,
    /// Take over an existing template of the same name that the operator did not create.
    #[serde(default)]
    pub adopt: bool,
    /// Primary shards of each index.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 1024))]
    pub shards: i32,
    /// Replica shards of each primary.
    #[serde(default = "default_one")]
    #[schemars(range(min = 0, max = 16))]
    pub replicas: i32,
    /// Roll over when the primary shards reach this size.
    #[serde(default = "default_rollover_size")]
    pub rollover_size: Quantity,
    /// Roll over at least this often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollover_age: Option<Duration>,
    /// Delete indices older than this; absent keeps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_after: Option<Duration>,
    /// The operator's own credentials (templates, indices, aliases, roles). Separate from `auth`,
    /// which is the job's and only gets the writer role. Absent: the operator sends none (a
    /// cluster without the security plugin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_credentials: Option<BasicCredentials>,
    /// A read-only role over the read alias with field-level security; absent: no reader role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<ReaderRoleSpec>,
}

/// A username and password, each from a Secret key.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicCredentials {
    pub username: SecretKeyRef,
    pub password: SecretKeyRef,
}

/// The reader role the operator maintains when the cluster runs the security plugin.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReaderRoleSpec {
    /// Dotted document paths the reader must not see, match, sort or aggregate on (for example
    /// `bill_customer.email_address`); their sub-fields are hidden with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden_fields: Vec<String>,
    /// Internal users mapped to the reader role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Backend roles (for example LDAP groups) mapped to the reader role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_roles: Vec<String>,
}

fn default_true() -> bool {
    true
}
fn default_one() -> i32 {
    1
}
fn default_rollover_size() -> Quantity {
    Quantity("50Gi".into())
}

impl Default for IndexTemplateSpec {
    fn default() -> Self {
        Self {
            managed: true,
            adopt: false,
            shards: 1,
            replicas: 1,
            rollover_size: default_rollover_size(),
            rollover_age: None,
            delete_after: None,
            admin_credentials: None,
            reader: None,
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// Dead-letter location.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterSpec {
    /// `s3://bucket/prefix`.
    #[schemars(regex(pattern = r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$"))]
    pub uri: String,
}

/// How a change of image or configuration reaches the running job.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum UpgradeMode {
    /// Restart from the sources' start position with empty state.
    Stateless,
    /// Take a savepoint, then restart from it (portable across replica counts; needs
    /// `savepoints`).
    Savepoint,
    /// Restart on the state volumes as they are (the default: nothing to configure, same
    /// replica count only).
    #[default]
    LastState,
}

/// Where savepoints go. The operator takes one before every upgrade in `Savepoint` mode and
/// before every rescale of a running job; it neither takes periodic ones nor deletes old ones.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointsSpec {
    /// `s3://bucket/prefix`: savepoint `<id>` is written under `<uri>/<id>/`.
    #[schemars(regex(pattern = r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$"))]
    pub uri: String,
}

/// How the replica count is chosen.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("scaling.minReplicas must not exceed scaling.maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct ScalingSpec {
    /// `Manual`: `replicas` (or the scale subresource) decides; `Shards`: the operator follows
    /// the sales stream's open shard count.
    #[serde(default)]
    pub mode: ScalingMode,
    /// In Shards mode: one replica per this many open sales shards.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 10000))]
    pub shards_per_replica: i32,
    /// In Shards mode: the fewest replicas to run.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 1024))]
    pub min_replicas: i32,
    /// In Shards mode: the most replicas to run.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_replicas: i32,
    /// In Shards mode: a lower replica count is taken only after the shard count has asked for
    /// fewer replicas for this long (the highest count asked for in the window wins), so a
    /// merge followed by a split does not rescale twice.
    #[serde(default = "default_stabilization_window")]
    pub stabilization_window: Duration,
    /// In Shards mode: the least time between two rescales.
    #[serde(default = "default_cooldown")]
    pub cooldown: Duration,
}

fn default_stabilization_window() -> Duration {
    Duration::from_secs(300)
}

fn default_cooldown() -> Duration {
    Duration::from_secs(60)
}

fn default_max_replicas() -> i32 {
    16
}

impl Default for ScalingSpec {
    fn default() -> Self {
        Self {
            mode: ScalingMode::Manual,
            shards_per_replica: 1,
            min_replicas: 1,
            max_replicas: default_max_replicas(),
            stabilization_window: default_stabilization_window(),
            cooldown: default_cooldown(),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ScalingMode {
    /// `spec.replicas` (or the scale subresource) decides.
    #[default]
    Manual,
    /// The operator follows the open shard count of the sales stream.
    Shards,
}
