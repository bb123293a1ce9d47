//! The savepoint format: where each object lives, the part manifest, and its checks.
//!
//! ```text
//! <savepoints.uri>/<id>/part-<ordinal>/<family>-<nnnnn>.jsonl   data, one stored value a line
//! <savepoints.uri>/<id>/part-<ordinal>/manifest.json            written last
//! ```
//!
//! Every replica writes one part. Part 0 carries the dimension and reference state
//! (`customers`, `addresses`, `items`, `promos`: every replica reads the dimension streams in
//! full, so one replica's state is a whole, consistent cut of them); every part carries its
//! waiting sales (`pending`) and its positions (in the manifest). A line is the JSON form of
//! one event as the runtime stores it (a customer version, an address version, an item or
//! promo row, a waiting sale with its arrival, deadline and missing piece).
//!
//! The manifest lists every data file with its size, line count and SHA-256, holds the
//! positions, and ends with the SHA-256 of its own canonical body. It is written after every
//! data file, so a part without a manifest is incomplete, and a savepoint is complete when the
//! manifests of parts `0..replicas` all exist, name the same savepoint and replica count, and
//! verify.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::state::export::Family;

/// `format` of every manifest.
pub const FORMAT: &str = "tributary-savepoint";
/// The manifest version this binary writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Data files are cut at this size (one object each).
pub const FILE_BYTES: usize = 32 * 1024 * 1024;

/// Errors of reading a savepoint's manifests and files.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{key}: not a savepoint manifest: {reason}")]
    NotAManifest { key: String, reason: String },
    #[error(
        "{key}: savepoint format version {found} is newer than this binary reads \
         ({FORMAT_VERSION}); restore with a newer runtime"
    )]
    NewerFormat { key: String, found: u32 },
    #[error("{key}: the manifest's checksum does not match its content (damaged or edited)")]
    ManifestChecksum { key: String },
    #[error("{key}: {what} is {found}, the savepoint's part 0 says {expected}")]
    Inconsistent {
        key: String,
        what: &'static str,
        found: String,
        expected: String,
    },
    #[error(
        "{key}: expected {expected} bytes with SHA-256 {sha256}, found {found} bytes{mismatch}"
    )]
    FileChecksum {
        key: String,
        expected: u64,
        found: u64,
        sha256: String,
        mismatch: &'static str,
    },
}

/// One data file of a part.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DataFile {
    /// The object name inside the part's folder.
    pub name: String,
    /// `customers`, `addresses`, `items`, `promos` or `pending`.
    pub family: String,
    pub bytes: u64,
    pub lines: u64,
    pub sha256: String,
}

/// The manifest of one replica's part.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartManifest {
    pub format: String,
    pub format_version: u32,
    pub savepoint_id: String,
    /// `namespace/name` of the resource.
    pub pipeline: String,
    pub ordinal: u32,
    /// The replica count that wrote the savepoint (the number of parts).
    pub replicas: u32,
    /// The state layout version of the writer (for diagnosis: the data is logical).
    pub state_layout: u32,
    /// The writer's state lineage, and the state id it ran on.
    pub lineage: String,
    pub state_id: String,
    /// The savepoint the writer's state was restored from, if any: the chain of lineage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<String>,
    /// When the part was completed, RFC 3339.
    pub created_at: String,
    /// Whether this part carries the dimension and reference state (part 0 does).
    pub dimension_cut: bool,
    /// Committed positions: stream -> shard -> encoded position.
    pub positions: BTreeMap<String, BTreeMap<String, String>>,
    pub files: Vec<DataFile>,
    /// SHA-256 of this manifest serialised without this field.
    #[serde(default)]
    pub sha256: String,
}

/// `part-<ordinal>`, the folder of one replica's part.
pub fn part_dir(ordinal: u32) -> String {
    format!("part-{ordinal}")
}

/// The object name of a part's `n`-th file of `family`.
pub fn data_file_name(family: Family, n: usize) -> String {
    format!("{}-{n:05}.jsonl", family.as_str())
}

pub const MANIFEST: &str = "manifest.json";

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl PartManifest {
    fn body_digest(&self) -> String {
        let mut body = self.clone();
        body.sha256 = String::new();
        // Field order is the struct's and maps are ordered: the serialisation is canonical.
        sha256_hex(&serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The manifest as written: with its checksum, pretty-printed for people who look.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut m = self.clone();
        m.sha256 = m.body_digest();
        serde_json::to_vec_pretty(&m)
    }

    /// Parse and check a manifest read from `key`.
    pub fn parse(key: &str, bytes: &[u8]) -> Result<Self, FormatError> {
        let not = |reason: String| FormatError::NotAManifest {
            key: key.to_string(),
            reason,
        };
        // The version first, so that a newer manifest is reported as such even when its
        // fields differ.
        let head: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| not(e.to_string()))?;
        if head.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(not(format!("no \"format\": \"{FORMAT}\"")));
        }
        let version = head
            .get("formatVersion")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| not("no formatVersion".into()))?;
        if version > u64::from(FORMAT_VERSION) {
            return Err(FormatError::NewerFormat {
                key: key.to_string(),
                found: u32::try_from(version).unwrap_or(u32::MAX),
            });
        }
        let m: Self = serde_json::from_value(head).map_err(|e| not(e.to_string()))?;
        if m.sha256 != m.body_digest() {
            return Err(FormatError::ManifestChecksum {
                key: key.to_string(),
            });
        }
        Ok(m)
    }

    /// Check that `self` (read from `key`) belongs with `first`, part 0 of the savepoint.
    pub fn check_against(&self, key: &str, first: &Self) -> Result<(), FormatError> {
        let bad = |what: &'static str, found: String, expected: String| {
            Err(FormatError::Inconsistent {
                key: key.to_string(),
                what,
                found,
                expected,
            })
        };
        if self.savepoint_id != first.savepoint_id {
            return bad(
                "savepointId",
                self.savepoint_id.clone(),
                first.savepoint_id.clone(),
            );
        }
        if self.replicas != first.replicas {
            return bad(
                "replicas",
                self.replicas.to_string(),
                first.replicas.to_string(),
            );
        }
        if self.pipeline != first.pipeline {
            return bad("pipeline", self.pipeline.clone(), first.pipeline.clone());
        }
        Ok(())
    }

    /// The files of one family, in order.
    pub fn files_of(&self, family: Family) -> impl Iterator<Item = &DataFile> {
        self.files
            .iter()
            .filter(move |f| f.family == family.as_str())
    }
}

/// Check a data file's bytes against its manifest entry.
pub fn verify_file(key: &str, entry: &DataFile, bytes: &[u8]) -> Result<(), FormatError> {
    let found = bytes.len() as u64;
    let size_ok = found == entry.bytes;
    let sum_ok = size_ok && sha256_hex(bytes) == entry.sha256;
    if sum_ok {
        return Ok(());
    }
    Err(FormatError::FileChecksum {
        key: key.to_string(),
        expected: entry.bytes,
        found,
        sha256: entry.sha256.clone(),
        mismatch: if size_ok { " and another checksum" } else { "" },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> PartManifest {
        PartManifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            savepoint_id: "sp-1".into(),
            pipeline: "ns/p".into(),
            ordinal: 0,
            replicas: 2,
            state_layout: 3,
            lineage: "abc".into(),
            state_id: "s1".into(),
            restored_from: None,
            created_at: "2026-12-04T00:00:00Z".into(),
            dimension_cut: true,
            positions: BTreeMap::from([(
                "sales".to_string(),
                BTreeMap::from([("shardId-0".to_string(), "42".to_string())]),
            )]),
            files: vec![DataFile {
                name: data_file_name(Family::Customers, 0),
                family: "customers".into(),
                bytes: 3,
                lines: 1,
                sha256: sha256_hex(b"{}\n"),
            }],
            sha256: String::new(),
        }
    }

    #[test]
    fn a_written_manifest_reads_back_and_any_edit_is_caught() {
        let m = manifest();
        let bytes = m.to_bytes().unwrap();
        let back = PartManifest::parse("k", &bytes).unwrap();
        assert_eq!(back.sha256.len(), 64);
        assert_eq!(
            PartManifest {
                sha256: String::new(),
                ..back
            },
            m
        );
        let edited = String::from_utf8(bytes)
            .unwrap()
            .replace("\"42\"", "\"43\"");
        assert!(matches!(
            PartManifest::parse("k", edited.as_bytes()),
            Err(FormatError::ManifestChecksum { .. })
        ));
    }

    #[test]
    fn damaged_newer_and_foreign_manifests_are_refused_by_name() {
        let bytes = manifest().to_bytes().unwrap();
        let cut = &bytes[..bytes.len() / 2];
        let e = PartManifest::parse("sp/part-0/manifest.json", cut).unwrap_err();
        assert!(e.to_string().contains("sp/part-0/manifest.json"), "{e}");
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["formatVersion"] = 2.into();
        v["somethingNew"] = true.into();
        let e = PartManifest::parse("k", &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            matches!(e, FormatError::NewerFormat { found: 2, .. }),
            "{e}"
        );
        assert!(matches!(
            PartManifest::parse("k", br#"{"hello":1}"#),
            Err(FormatError::NotAManifest { .. })
        ));
    }

    #[test]
    fn parts_must_agree_with_part_zero() {
        let first = manifest();
        let mut other = manifest();
        other.ordinal = 1;
        other.check_against("k", &first).unwrap();
        other.replicas = 3;
        assert!(other.check_against("k", &first).is_err());
        other.replicas = 2;
        other.savepoint_id = "sp-2".into();
        assert!(other.check_against("k", &first).is_err());
    }

    #[test]
    fn files_are_checked_by_size_and_digest() {
        let m = manifest();
        let entry = &m.files[0];
        verify_file("k", entry, b"{}\n").unwrap();
        let e = verify_file("k", entry, b"{}").unwrap_err().to_string();
        assert!(
            e.contains("expected 3 bytes") && e.contains("found 2 bytes"),
            "{e}"
        );
        let e = verify_file("k", entry, b"[]\n").unwrap_err().to_string();
        assert!(e.contains("another checksum"), "{e}");
    }
}
