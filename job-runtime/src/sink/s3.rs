//! The curated S3 sink: Parquet files partitioned by the sale's day,
//! `<uri>/<sales stream>/YYYY-MM-DD/part-<lineage>-<first>-<last>.parquet`.
//!
//! A file holds the documents of one outbox range (`first`..`last`, the outbox sequence
//! numbers) for one day. The range is fixed before anything is written (the sink's intent),
//! so a replay after a crash writes the same keys with the same rows: objects are replaced,
//! never added. `lineage` is the state directory's random id: two replicas, or a restored
//! copy, never write the same key. Files roll by size (the gathered rows' JSON size, bounded
//! by `rollSize`; the Parquet file is several times smaller) or by `rollInterval`. Objects
//! larger than [`crate::objects::MULTIPART_THRESHOLD`] are uploaded in parts.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::Client;

use super::parquet;
use super::{Batching, Range, Sink, SinkError};
use crate::output::{DeadLetterRecord, OutputRecord};
use crate::s3uri::S3Uri;

/// Put an object (in parts when it is large; see [`crate::objects::put`]).
pub async fn put_object(
    client: &Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Result<(), SinkError> {
    Ok(crate::objects::put(client, bucket, key, body, content_type).await?)
}

/// The curated Parquet sink.
pub struct S3Sink {
    client: Client,
    location: S3Uri,
    /// The folder under the location (the sales stream's name).
    stream: String,
    lineage: String,
    batching: Batching,
    /// Where rows that do not fit the schema go.
    dead_letter: super::dead_letter::DeadLetterWriter,
}

impl S3Sink {
    pub fn new(
        client: Client,
        location: S3Uri,
        stream: &str,
        lineage: &str,
        roll_bytes: usize,
        roll_interval: Duration,
        dead_letter: super::dead_letter::DeadLetterWriter,
    ) -> Self {
        Self {
            client,
            location,
            stream: stream.rsplit('/').next().unwrap_or(stream).to_string(),
            lineage: lineage.to_string(),
            batching: Batching {
                max_bytes: roll_bytes.max(1),
                max_interval: roll_interval,
            },
            dead_letter,
        }
    }

    /// The object key of one day's file of a range.
    pub fn key(&self, day: &str, range: Range) -> String {
        self.location.key(&format!(
            "{}/{day}/part-{}-{:020}-{:020}.parquet",
            self.stream, self.lineage, range.first, range.last
        ))
    }
}

impl Sink for S3Sink {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn batching(&self) -> Batching {
        self.batching
    }

    async fn write(&mut self, range: Range, records: Vec<OutputRecord>) -> Result<(), SinkError> {
        let mut days: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for r in records {
            if let OutputRecord::Document(d) = r {
                days.entry(d.day).or_default().push(d.json);
            }
        }
        let mut rejected = Vec::new();
        for (day, docs) in days {
            let batch = match parquet::to_batch(docs.iter().map(Vec::as_slice)) {
                Ok(b) => b,
                Err(_) => {
                    // Find the rows that do not fit; write the others.
                    let (good, bad): (Vec<_>, Vec<_>) =
                        docs.into_iter().partition(|d| parquet::fits(d).is_ok());
                    for doc in bad {
                        let detail = parquet::fits(&doc)
                            .err()
                            .map(|e| e.to_string())
                            .unwrap_or_default();
                        rejected.push(DeadLetterRecord {
                            reason: "s3_schema_mismatch".into(),
                            detail,
                            document: serde_json::from_slice(&doc).ok(),
                            ..DeadLetterRecord::default()
                        });
                    }
                    if good.is_empty() {
                        continue;
                    }
                    parquet::to_batch(good.iter().map(Vec::as_slice))
                        .map_err(|e| SinkError::Write(e.to_string()))?
                }
            };
            let file = parquet::encode(&batch).map_err(|e| SinkError::Write(e.to_string()))?;
            let key = self.key(&day, range);
            put_object(
                &self.client,
                &self.location.bucket,
                &key,
                file,
                "application/vnd.apache.parquet",
            )
            .await?;
        }
        if !rejected.is_empty() {
            self.dead_letter
                .write("s3-rejected", range, &rejected)
                .await?;
        }
        Ok(())
    }
}
