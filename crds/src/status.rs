//! What the operator reports on a `StreamingEnrichment`.
//!
//! Multi-step actions (a savepoint upgrade or rescale) record their intent in `pendingOperation`
//! before their first step, so an operator that restarts half-way, or a standby that takes the
//! leader Lease, resumes them from the recorded phase instead of starting over or forgetting them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator observed of the pipeline and what it is doing to it.
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
    /// Open shards of the sales stream, as last observed (ListShards, every
    /// `--sources-check-interval-secs` and after each spec change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<i32>,
    /// Closed shards of the sales stream still within its retention (parents of a resharding),
    /// as last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_shards: Option<i32>,
    /// When the streams were last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources_observed_at: Option<Time>,
    /// Dead letters by reason, summed over the replicas since they started (as last read from
    /// them, every `--sources-check-interval-secs`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dead_letters: std::collections::BTreeMap<String, u64>,
    /// How far behind the tip of each source stream the replicas read (the largest
    /// `MillisBehindLatest` of its shards, in whole seconds), as last read from them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub behind_latest_seconds: std::collections::BTreeMap<String, i64>,
    /// What Shards mode decided, and the inputs of its stabilisation window and cooldown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingStatus>,
    /// Hash of the job configuration and pod template the job pods were given (without the
    /// replica count and the state id, which are `runningReplicas` and `stateId`). A spec whose
    /// hash differs is a change that restarts the pods, brought in as `upgradeMode` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// The replica count the job's state is cut for: the pods split the sales shards among this
    /// many, and while the job is suspended the state volumes still hold that split. It changes
    /// only through a savepoint (or before any pod has run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_replicas: Option<i32>,
    /// The state the job runs on (`state.id` of the job configuration). A replica whose volume
    /// holds another state replaces it before reading: from the savepoint being restored, or
    /// with empty state. Absent: whatever the volumes hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_id: Option<String>,
    /// The latest savepoint every replica completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_savepoint: Option<SavepointRef>,
    /// A multi-step action in flight, recorded before its first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_operation: Option<PendingOperation>,
    /// The last savepoint operation that failed, and when the next attempt may start. Cleared
    /// once the job runs the spec again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_retry: Option<OperationRetry>,
}

/// Shards mode's memory: the replica count it decided and what it is waiting out.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingStatus {
    /// The replica count Shards mode runs (what `spec.replicas` is in Manual mode).
    pub replicas: i32,
    /// What the latest shard count asks for: clamp(ceil(open shards / shardsPerReplica),
    /// minReplicas, maxReplicas).
    pub recommended: i32,
    /// Since when every recommendation has been below `replicas` (the stabilisation window
    /// counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below_since: Option<Time>,
    /// The highest recommendation since `belowSince`: the count a scale-in goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below_max: Option<i32>,
    /// When `replicas` last changed (the cooldown counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<Time>,
}

/// A completed savepoint.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointRef {
    /// The savepoint's id (its folder under `spec.savepoints.uri`).
    pub id: String,
    /// `s3://...` of the savepoint's folder: every replica's part is `part-<ordinal>/` in it.
    pub uri: String,
    /// When the last replica reported its part completed.
    pub completed_at: Time,
    /// Replicas that wrote it (one part each).
    pub replicas: i32,
}

/// An action the operator has started and must finish.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingOperation {
    /// What the action is for.
    pub kind: OperationKind,
    /// The step the action is at.
    pub phase: OperationPhase,
    /// The savepoint the action takes and restores; the restored state gets the same id.
    pub savepoint_id: String,
    /// `s3://...` of the savepoint's folder (`<spec.savepoints.uri>/<savepointId>/`).
    pub savepoint_uri: String,
    /// The replica count that writes the savepoint (the count running when the action started).
    pub from_replicas: i32,
    /// The configuration hash the action leads to (the spec's latest, once restoring).
    pub target_config_hash: String,
    /// The replica count the action leads to.
    pub target_replicas: i32,
    /// When the action was recorded.
    pub started_at: Time,
    /// When the action entered its current phase (the savepoint timeout counts from here).
    pub phase_started_at: Time,
    /// Why the action is being abandoned (phase `Aborting`), machine-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    /// Why the action is being abandoned, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_message: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationKind {
    /// A change of image or configuration at the same replica count (`upgradeMode: Savepoint`).
    Upgrade,
    /// A change of the replica count of a running job (any `upgradeMode`).
    Rescale,
}

impl OperationKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Upgrade => "Upgrade",
            Self::Rescale => "Rescale",
        }
    }
}

/// The steps of a savepoint upgrade or rescale, in order (`Aborting` replaces the later ones
/// when the savepoint fails).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationPhase {
    /// Every running replica was asked for its part of the savepoint, and to stop reading after
    /// it; the operator polls until every part is completed and the whole savepoint reads back
    /// complete, one fails, or the timeout passes.
    Savepointing,
    /// The savepoint failed or timed out: the replicas are told to read again, the StatefulSet
    /// keeps its configuration, and the action is cleared.
    Aborting,
    /// The savepoint is complete: the StatefulSet is scaled to zero with its old template, and
    /// the operator waits until no job pod exists (old and new pods never read at once).
    ScaledDown,
    /// The new template and replica count run with the savepoint to restore under a new state
    /// id; the operator waits until every new replica reports that state, committed.
    Restoring,
}

impl OperationPhase {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Savepointing => "Savepointing",
            Self::Aborting => "Aborting",
            Self::ScaledDown => "ScaledDown",
            Self::Restoring => "Restoring",
        }
    }
}

/// A failed savepoint operation, kept to space out the attempts.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationRetry {
    /// Failed attempts in a row at this target.
    pub attempts: i32,
    /// No new attempt at the same target starts before this time.
    pub not_before: Time,
    /// Why the last attempt failed, machine-readable (`SavepointFailed`, `SavepointTimeout`, ...).
    pub reason: String,
    /// Why the last attempt failed, for humans.
    pub message: String,
    /// The configuration hash the failed attempt led to.
    pub target_config_hash: String,
    /// The replica count the failed attempt led to.
    pub target_replicas: i32,
}
