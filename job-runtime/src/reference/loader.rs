//! Loads items and promos from their S3 prefixes and re-scans them on the refresh interval.
//!
//! A scan lists the prefix (ListObjectsV2); when the set of `(key, ETag)` differs from the
//! snapshot in use, every file is fetched and parsed, and the new snapshot is handed to the
//! engine whole ([`Control::Items`] / [`Control::Promos`]), which applies the changed rows in
//! one commit. A bad file (unreadable, missing column) fails the scan: it is logged, counted
//! (`tributary_reference_loads_total{outcome="bad_file"}`) and the previous snapshot stays in
//! use. A table whose files hold more than [`MAX_TABLE_BYTES`] together is refused the same
//! way (`outcome="too_large"`), before anything is read. Bad rows are counted and written to dead-letter (`reference-rejected/...`, one object
//! per file version, so a re-scan rewrites it); the rest of the file loads. An empty prefix is
//! a valid, empty snapshot (sales then wait for their item and dead-letter as `missing_item`).
//! Rows that disappear from the files keep their last version in the state (a sale referencing
//! a withdrawn item still joins); documented as a limitation.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::Client;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tributary_crds::spec::ReferenceFormat;

use super::{ReferenceError, ReferenceRow, Snapshot, parse_file};
use crate::engine::Control;
use crate::metrics::Metrics;
use crate::output::DeadLetterRecord;
use crate::s3uri::S3Uri;
use crate::sink::dead_letter::DeadLetterWriter;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("listing {location}: {message}")]
    List { location: String, message: String },
    #[error("reading s3://{bucket}/{key}: {message}")]
    Get {
        bucket: String,
        key: String,
        message: String,
    },
    #[error(
        "{location}: {bytes} bytes of files, more than the {limit} bytes a reference table may \
         hold in memory (split the data or filter it before it lands here)"
    )]
    TooLarge {
        location: String,
        bytes: u64,
        limit: u64,
    },
    #[error(transparent)]
    File(#[from] ReferenceError),
}

/// The most a table's files may hold together: each is read whole and parsed in memory.
pub const MAX_TABLE_BYTES: u64 = 1 << 30;

impl LoadError {
    fn outcome(&self) -> &'static str {
        match self {
            Self::List { .. } | Self::Get { .. } => "unreachable",
            Self::TooLarge { .. } => "too_large",
            Self::File(_) => "bad_file",
        }
    }
}

/// One table's location.
#[derive(Clone, Debug)]
pub struct Table {
    pub location: S3Uri,
    pub format: ReferenceFormat,
    pub refresh: Duration,
}

/// `(key, etag)` of every file under a prefix, sorted.
type Listing = Vec<(String, String)>;

async fn list(client: &Client, t: &Table) -> Result<Listing, LoadError> {
    let prefix = if t.location.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", t.location.prefix)
    };
    let mut out = Vec::new();
    let mut bytes: u64 = 0;
    let mut pages = client
        .list_objects_v2()
        .bucket(&t.location.bucket)
        .prefix(&prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| LoadError::List {
            location: t.location.to_string(),
            message: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
        })?;
        for o in page.contents() {
            let Some(key) = o.key() else { continue };
            if key.ends_with('/') || o.size() == Some(0) && key.ends_with("_SUCCESS") {
                continue;
            }
            bytes = bytes.saturating_add(o.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0));
            if bytes > MAX_TABLE_BYTES {
                return Err(LoadError::TooLarge {
                    location: t.location.to_string(),
                    bytes,
                    limit: MAX_TABLE_BYTES,
                });
            }
            out.push((key.to_string(), o.e_tag().unwrap_or_default().to_string()));
        }
    }
    out.sort();
    Ok(out)
}

async fn get(client: &Client, bucket: &str, key: &str) -> Result<Bytes, LoadError> {
    let err = |message: String| LoadError::Get {
        bucket: bucket.into(),
        key: key.into(),
        message,
    };
    let resp = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| err(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))?;
    let body = resp.body.collect().await.map_err(|e| err(e.to_string()))?;
    Ok(body.into_bytes())
}

/// Load one table: the snapshot and the rows rejected.
async fn load<T: ReferenceRow>(
    client: &Client,
    t: &Table,
    listing: &Listing,
) -> Result<(Snapshot<T>, Vec<(String, String, Vec<DeadLetterRecord>)>), LoadError> {
    let mut files = Vec::new();
    let mut rejected = Vec::new();
    for (key, etag) in listing {
        let bytes = get(client, &t.location.bucket, key).await?;
        let load = parse_file::<T>(t.format, key, bytes)?;
        if !load.rejected.is_empty() {
            let records = load
                .rejected
                .iter()
                .map(|r| DeadLetterRecord {
                    reason: r.error.reason().into(),
                    detail: format!("{} row {}: {}", r.file, r.row, r.error),
                    stream: Some(T::NAME.into()),
                    ..DeadLetterRecord::default()
                })
                .collect();
            rejected.push((key.clone(), etag.clone(), records));
        }
        files.push((key.clone(), load));
    }
    Ok((Snapshot::from_files(files), rejected))
}

/// Scans both tables until cancelled; sends each new snapshot to the engine.
pub struct Loader {
    pub client: Client,
    pub items: Table,
    pub promos: Table,
    pub metrics: Metrics,
    pub dead_letter: DeadLetterWriter,
}

impl Loader {
    async fn scan<T: ReferenceRow>(
        &self,
        t: &Table,
        last: &mut Option<Listing>,
    ) -> Result<Option<BTreeMap<T::Id, T>>, LoadError> {
        let listing = list(&self.client, t).await?;
        if last.as_ref() == Some(&listing) {
            return Ok(None);
        }
        let (snapshot, rejected) = load::<T>(&self.client, t, &listing).await?;
        for (key, etag, records) in rejected {
            self.metrics
                .reference_rejected_rows
                .with_label_values(&[T::NAME])
                .inc_by(records.len() as u64);
            let name = format!(
                "reference-rejected/{}/{}-{}.jsonl",
                T::NAME,
                key.replace('/', "_"),
                etag.trim_matches('"')
            );
            if let Err(e) = self
                .dead_letter
                .write_object(&self.dead_letter.location_key(&name), &records)
                .await
            {
                tracing::warn!(error = %e, "could not write rejected reference rows to dead-letter");
            }
        }
        *last = Some(listing);
        Ok(Some(snapshot.rows().clone()))
    }

    /// Scan one table and hand a changed snapshot to the engine; `false` once the engine is
    /// gone.
    async fn refresh<T: ReferenceRow>(
        &self,
        t: &Table,
        last: &mut Option<Listing>,
        control: &mpsc::Sender<Control>,
        wrap: fn(BTreeMap<T::Id, T>) -> Control,
    ) -> bool {
        match self.scan::<T>(t, last).await {
            Ok(Some(rows)) => {
                tracing::info!(table = T::NAME, rows = rows.len(), location = %t.location, "loaded");
                self.metrics
                    .reference_loads
                    .with_label_values(&[T::NAME, "loaded"])
                    .inc();
                control.send(wrap(rows)).await.is_ok()
            }
            Ok(None) => true,
            Err(e) => {
                tracing::error!(table = T::NAME, error = %e,
                    "not reloaded; the previous snapshot stays in use");
                self.metrics
                    .reference_loads
                    .with_label_values(&[T::NAME, e.outcome()])
                    .inc();
                true
            }
        }
    }

    /// Run until `cancel`; the first successful load of both tables unblocks the sales.
    pub async fn run(self, control: mpsc::Sender<Control>, cancel: CancellationToken) {
        let mut last_items = None;
        let mut last_promos = None;
        let interval = self
            .items
            .refresh
            .min(self.promos.refresh)
            .max(Duration::from_secs(1));
        loop {
            if !self
                .refresh(&self.items, &mut last_items, &control, Control::Items)
                .await
                || !self
                    .refresh(&self.promos, &mut last_promos, &control, Control::Promos)
                    .await
            {
                return;
            }
            // Until both loaded once, retry sooner.
            let wait = if last_items.is_none() || last_promos.is_none() {
                Duration::from_secs(2).min(interval)
            } else {
                interval
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
