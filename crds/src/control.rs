//! The control API of a job pod: what the operator asks of a running replica (take a savepoint,
//! optionally stop reading after it; resume) and what the replica answers. Both sides use these
//! types, so they cannot disagree.
//!
//! # Authentication
//!
//! Every request that changes a replica carries `Authorization: Bearer <token>`. The token is
//! [`control_token`] of the operator's control key and the resource's UID; the operator writes
//! it into the resource's control Secret, and the job pods get it as [`env::CONTROL_TOKEN`]. A pod
//! that can reach the admin port but cannot read that Secret cannot trigger anything. Reads
//! (`GET`) need no token: they only report progress.
//!
//! # Endpoints (on the admin port)
//!
//! * `POST /savepoints` with a [`SavepointRequest`]: `202` and a [`SavepointReport`] in
//!   `InProgress` (or the report of the same id when it was asked before: the request is
//!   idempotent); `409` while another savepoint of another id runs.
//! * `GET /savepoints/<id>`: its [`SavepointReport`]; `404` when this process never heard of it.
//! * `GET /savepoints/<id>/check`: a [`SavepointCheck`] of the whole savepoint (every part's
//!   manifest read and verified, every data file present with its size): what the operator
//!   asks before it stops the old replicas, so a savepoint that cannot be restored never
//!   leads to a roll.
//! * `POST /resume`: read again after a savepoint taken with `stopAfter` (an abandoned upgrade).
//! * `GET /state`: a [`StateReport`]: which state the replica runs on, and whether it has
//!   committed on it (a restored replica that has committed is done restoring).
//! * `GET /status`: a [`PipelineReport`]: the health of the replica's sources and sinks, its
//!   dead letters and lag, read by the operator for the resource's conditions.
//!
//! [`env::CONTROL_TOKEN`]: crate::job_config::env::CONTROL_TOKEN

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Path of the savepoint endpoints.
pub const SAVEPOINTS_PATH: &str = "/savepoints";
/// Path of the resume endpoint.
pub const RESUME_PATH: &str = "/resume";
/// Path of the state report.
pub const STATE_PATH: &str = "/state";
/// Path of the pipeline report.
pub const STATUS_PATH: &str = "/status";
/// Key of the token in the resource's control Secret.
pub const CONTROL_SECRET_KEY: &str = "token";

/// The control Secret of a resource (owned by it).
pub fn control_secret_name(resource: &str) -> String {
    format!("{resource}-control")
}

/// The bearer token of one resource: HMAC-SHA256 of its UID under the operator's control key,
/// in hex. Deterministic, so every operator replica (and a restarted one) computes the same
/// token without reading the Secret back.
pub fn control_token(key: &[u8], resource_uid: &str) -> String {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(resource_uid.as_bytes())
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `presented` equals `expected`, in time independent of where they differ.
pub fn token_matches(expected: &str, presented: &str) -> bool {
    let (a, b) = (expected.as_bytes(), presented.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Ask a replica for a savepoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SavepointRequest {
    /// The savepoint's id: a folder under `savepoints.uri`, shared by every replica's part.
    pub id: String,
    /// Stop reading once the savepoint is written (before an upgrade or rescale: nothing the
    /// replica does afterwards may be lost when the new pods restore it). `POST /resume` undoes
    /// it.
    #[serde(default)]
    pub stop_after: bool,
}

/// Where a savepoint is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SavepointState {
    InProgress,
    Completed,
    Failed,
}

/// A replica's answer about one savepoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SavepointReport {
    pub id: String,
    pub state: SavepointState,
    /// The replica's ordinal and the replica count it ran with (its part is `part-<ordinal>`).
    pub ordinal: u32,
    pub replicas: u32,
    /// `s3://...` of this replica's part manifest, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Figures of a completed part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<SavepointFigures>,
    /// Whether the replica has stopped reading (after a `stopAfter` savepoint).
    #[serde(default)]
    pub stopped: bool,
}

/// What one replica's part holds and what it cost.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SavepointFigures {
    pub bytes: u64,
    pub files: u64,
    pub customer_versions: u64,
    pub address_versions: u64,
    pub waiting_sales: u64,
    pub sales_shards: u64,
    pub duration_ms: u64,
}

/// A replica's check of a whole savepoint (all parts, not only its own).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SavepointCheck {
    pub id: String,
    /// Every part's manifest verifies and every data file is there with its size.
    pub complete: bool,
    /// The replica count that wrote it (the number of parts).
    #[serde(default)]
    pub parts: u32,
    /// Total size of its data files and manifests.
    #[serde(default)]
    pub bytes: u64,
    /// Why it is not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A replica's answer about the state it runs on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StateReport {
    /// The state id it runs on (`JobConfig.state.id`; empty when the configuration names none).
    pub state_id: String,
    /// The savepoint it was restored from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// It has committed at least once since it started on this state (reading and writing).
    pub committed: bool,
    /// It is paused after a `stopAfter` savepoint.
    #[serde(default)]
    pub stopped: bool,
}

/// What a replica knows about its own pipeline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PipelineReport {
    /// One per source stream (`customers`, `addresses`, `sales`).
    pub sources: Vec<ComponentReport>,
    /// One per sink (`opensearch`, `s3`, `dead-letter`).
    pub sinks: Vec<ComponentReport>,
    /// Tasks that ended while the job runs (a source or a sink that stopped for good): the
    /// replica is not healthy (`/healthz` fails) and needs a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ended: Vec<String>,
    /// Dead letters written since the process started, by reason.
    #[serde(default)]
    pub dead_letters: std::collections::BTreeMap<String, u64>,
    /// The largest `MillisBehindLatest` of the shards this replica reads, in seconds, by source.
    #[serde(default)]
    pub behind_latest_seconds: std::collections::BTreeMap<String, f64>,
    /// RFC 3339 time of the last commit of the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit: Option<String>,
}

/// The health of one source or sink.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComponentReport {
    pub name: String,
    pub healthy: bool,
    /// Why not, machine-readable (`OpenSearchForbidden`, `S3AccessDenied`, `StreamNotFound`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last error, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// RFC 3339 time since when it has been failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            control_token(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            control_token(
                &[0xaa; 131],
                "Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn tokens_compare_whole() {
        let t = control_token(b"k", "uid-1");
        assert!(token_matches(&t, &t));
        assert!(!token_matches(&t, &control_token(b"k", "uid-2")));
        assert!(!token_matches(&t, &t[..t.len() - 1]));
        assert!(!token_matches(&t, ""));
    }

    #[test]
    fn reports_round_trip_in_camel_case() {
        let r = SavepointReport {
            id: "sp-1".into(),
            state: SavepointState::Completed,
            ordinal: 1,
            replicas: 3,
            manifest: Some("s3://b/sp/sp-1/part-1/manifest.json".into()),
            error: None,
            figures: Some(SavepointFigures {
                bytes: 10,
                ..Default::default()
            }),
            stopped: true,
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["figures"]["customerVersions"], 0);
        assert_eq!(json["state"], "Completed");
        assert_eq!(serde_json::from_value::<SavepointReport>(json).unwrap(), r);
        let req: SavepointRequest = serde_json::from_str(r#"{"id":"x"}"#).unwrap();
        assert!(!req.stop_after);
    }

    #[test]
    fn state_reports_have_the_agreed_shape() {
        // The operator reads what the runtime writes: camelCase, `restoredFrom` null or absent,
        // fields it does not know ignored.
        let r: StateReport =
            serde_json::from_str(r#"{"stateId":"sp-1","restoredFrom":null,"committed":false}"#)
                .unwrap();
        assert_eq!(
            (r.state_id.as_str(), r.restored_from, r.committed),
            ("sp-1", None, false)
        );
        let extra: StateReport = serde_json::from_str(
            r#"{"stateId":"sp-2","restoredFrom":"sp-2","committed":true,"later":1}"#,
        )
        .unwrap();
        assert_eq!(extra.restored_from.as_deref(), Some("sp-2"));
        assert!(extra.committed);
    }
}
