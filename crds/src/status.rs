//! What the operator reports on a `StreamingEnrichment`.
//!
//! Multi-step actions (savepoint, upgrade, rescale) record their intent in `pendingOperation`
//! before their first step, so an operator that restarts half-way resumes them instead of
//! starting over or forgetting them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamingEnrichmentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded, and the domain conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Replicas the StatefulSet runs (the scale subresource reads this).
    #[serde(default)]
    pub replicas: i32,
    /// Replicas that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the job pods, as a string (for the scale subresource and HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Open shards of the sales stream, as last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<i32>,
    /// Hash of the job configuration the running pods were given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// The latest completed savepoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_savepoint: Option<SavepointRef>,
    /// A multi-step action in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_operation: Option<PendingOperation>,
}

/// A completed savepoint.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointRef {
    /// `s3://...` of the savepoint's manifest.
    pub uri: String,
    pub completed_at: Time,
    /// Replicas that wrote it.
    pub replicas: i32,
}

/// An action the operator has started and must finish.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingOperation {
    pub kind: OperationKind,
    /// Where the action is: free text per kind, e.g. `SavepointRequested`, `Restoring`.
    pub phase: String,
    /// The configuration hash the action leads to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_config_hash: Option<String>,
    /// The replica count the action leads to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_replicas: Option<i32>,
    pub started_at: Time,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationKind {
    Savepoint,
    Upgrade,
    Rescale,
}
