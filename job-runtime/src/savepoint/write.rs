//! Writing one replica's part of a savepoint (see [`super::format`] for the layout).
//!
//! The state is scanned on a blocking thread into files of at most [`FILE_BYTES`], each with
//! its SHA-256, and handed to the async side through a small bounded channel, which uploads
//! them while the next is being filled (so memory stays at a few files). The manifest goes last.

use std::collections::BTreeMap;
use std::time::Instant;

use aws_sdk_s3::Client;
use tokio::sync::mpsc;
use tributary_crds::control::SavepointFigures;

use super::format::{
    DataFile, FILE_BYTES, FORMAT, FORMAT_VERSION, MANIFEST, PartManifest, data_file_name, part_dir,
    sha256_hex,
};
use super::{SavepointError, count};
use crate::objects;
use crate::s3uri::S3Uri;
use crate::state::LAYOUT_VERSION;
use crate::state::export::{Family, StateExport};

/// Who writes the part, and where.
#[derive(Clone, Debug)]
pub struct PartInfo {
    pub savepoint_id: String,
    pub pipeline: String,
    pub ordinal: u32,
    pub replicas: u32,
    pub state_id: String,
    pub restored_from: Option<String>,
    /// `savepoints.uri`: the part goes under `<uri>/<savepoint_id>/part-<ordinal>/`.
    pub location: S3Uri,
    /// The sales stream's configured name (its shards are counted in the figures).
    pub sales_stream: String,
}

impl PartInfo {
    /// The key of an object of this part.
    pub fn key(&self, name: &str) -> String {
        self.location.key(&format!(
            "{}/{}/{name}",
            self.savepoint_id,
            part_dir(self.ordinal)
        ))
    }
}

/// A file ready to upload.
pub(crate) struct Chunk {
    pub family: Family,
    pub name: String,
    pub body: Vec<u8>,
    pub lines: u64,
    pub sha256: String,
}

/// Scan `families` of the state into chunks (blocking).
pub(crate) fn scan(
    export: &StateExport,
    families: &[Family],
    tx: &mpsc::Sender<Chunk>,
) -> Result<(), SavepointError> {
    for &family in families {
        let mut n = 0;
        let mut body = Vec::new();
        let mut lines = 0u64;
        let mut flush = |body: &mut Vec<u8>, lines: &mut u64| -> Result<(), SavepointError> {
            let chunk = Chunk {
                family,
                name: data_file_name(family, n),
                sha256: sha256_hex(body),
                body: std::mem::take(body),
                lines: std::mem::take(lines),
            };
            n += 1;
            tx.blocking_send(chunk)
                .map_err(|_| SavepointError::Config("the upload side stopped".into()))
        };
        export.for_each(family, |value: &[u8]| -> Result<(), SavepointError> {
            body.extend_from_slice(value);
            body.push(b'\n');
            lines += 1;
            if body.len() >= FILE_BYTES {
                flush(&mut body, &mut lines)?;
            }
            Ok(())
        })?;
        if lines > 0 {
            flush(&mut body, &mut lines)?;
        }
    }
    Ok(())
}

/// Write this replica's part: data files, then the manifest. Call with the engine paused and
/// the outbox delivered (see [`super`]).
pub async fn write_part(
    client: &Client,
    export: StateExport,
    info: &PartInfo,
) -> Result<(PartManifest, SavepointFigures), SavepointError> {
    let started = Instant::now();
    let families: Vec<Family> = if info.ordinal == 0 {
        Family::ALL.to_vec()
    } else {
        vec![Family::Pending]
    };
    let (tx, mut rx) = mpsc::channel::<Chunk>(2);
    let scanner = {
        let export = export.clone();
        let families = families.clone();
        tokio::task::spawn_blocking(move || scan(&export, &families, &tx))
    };
    let mut files = Vec::new();
    let mut figures = SavepointFigures::default();
    while let Some(chunk) = rx.recv().await {
        let key = info.key(&chunk.name);
        let bytes = chunk.body.len() as u64;
        objects::put(
            client,
            &info.location.bucket,
            &key,
            chunk.body,
            "application/x-ndjson",
        )
        .await?;
        count(&mut figures, chunk.family, chunk.lines);
        figures.bytes += bytes;
        figures.files += 1;
        files.push(DataFile {
            name: chunk.name,
            family: chunk.family.as_str().to_string(),
            bytes,
            lines: chunk.lines,
            sha256: chunk.sha256,
        });
    }
    scanner.await??;

    let (positions, lineage) = tokio::task::spawn_blocking(move || {
        Ok::<_, SavepointError>((export.offsets()?, export.lineage()?))
    })
    .await??;
    let mut by_stream: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for ((stream, shard), p) in positions {
        by_stream.entry(stream).or_default().insert(shard, p);
    }
    let manifest = PartManifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        savepoint_id: info.savepoint_id.clone(),
        pipeline: info.pipeline.clone(),
        ordinal: info.ordinal,
        replicas: info.replicas,
        state_layout: LAYOUT_VERSION,
        lineage: lineage.unwrap_or_default(),
        state_id: info.state_id.clone(),
        restored_from: info.restored_from.clone(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        dimension_cut: info.ordinal == 0,
        positions: by_stream,
        files,
        sha256: String::new(),
    };
    let body = manifest
        .to_bytes()
        .map_err(|e| SavepointError::Config(format!("encoding the manifest: {e}")))?;
    figures.bytes += body.len() as u64;
    objects::put(
        client,
        &info.location.bucket,
        &info.key(MANIFEST),
        body,
        "application/json",
    )
    .await?;
    figures.sales_shards = manifest
        .positions
        .get(&info.sales_stream)
        .map_or(0, |shards| shards.len() as u64);
    figures.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok((manifest, figures))
}
