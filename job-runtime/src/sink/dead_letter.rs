//! Dead-letter records as JSON lines in S3:
//! `<deadLetter.uri>/<kind>/part-<lineage>-<first>-<last>.jsonl`, where `kind` is `records`
//! for what the engine rejected (undecodable input, expired joins) and `<sink>-rejected` for
//! documents a sink refused. Keys come from the outbox range, so a replay replaces the object.

use aws_sdk_s3::Client;

use super::s3::put_object;
use super::{Batching, Range, Sink, SinkError};
use crate::output::{DeadLetterRecord, OutputRecord};
use crate::s3uri::S3Uri;

/// Writes dead-letter objects; shared by the dead-letter sink and the sinks' own rejects.
#[derive(Clone, Debug)]
pub struct DeadLetterWriter {
    client: Client,
    location: S3Uri,
    lineage: String,
}

impl DeadLetterWriter {
    pub fn new(client: Client, location: S3Uri, lineage: &str) -> Self {
        Self {
            client,
            location,
            lineage: lineage.to_string(),
        }
    }

    /// A key under the dead-letter location.
    pub fn location_key(&self, part: &str) -> String {
        self.location.key(part)
    }

    pub fn key(&self, kind: &str, range: Range) -> String {
        self.location.key(&format!(
            "{kind}/part-{}-{:020}-{:020}.jsonl",
            self.lineage, range.first, range.last
        ))
    }

    pub async fn write(
        &self,
        kind: &str,
        range: Range,
        records: &[DeadLetterRecord],
    ) -> Result<(), SinkError> {
        self.write_object(&self.key(kind, range), records).await
    }

    /// Write records under a key of the caller's (deterministic) choosing.
    pub async fn write_object(
        &self,
        key: &str,
        records: &[DeadLetterRecord],
    ) -> Result<(), SinkError> {
        let mut body = Vec::new();
        for r in records {
            serde_json::to_writer(&mut body, r)
                .map_err(|e| SinkError::Write(format!("dead-letter JSON: {e}")))?;
            body.push(b'\n');
        }
        put_object(
            &self.client,
            &self.location.bucket,
            key,
            body,
            "application/x-ndjson",
        )
        .await
    }
}

/// Delivers the engine's dead-letter records.
pub struct DeadLetterSink {
    writer: DeadLetterWriter,
    batching: Batching,
}

impl DeadLetterSink {
    pub fn new(writer: DeadLetterWriter, batching: Batching) -> Self {
        Self { writer, batching }
    }
}

impl Sink for DeadLetterSink {
    fn name(&self) -> &'static str {
        "dead-letter"
    }

    fn batching(&self) -> Batching {
        self.batching
    }

    async fn write(&mut self, range: Range, records: Vec<OutputRecord>) -> Result<(), SinkError> {
        let records: Vec<DeadLetterRecord> = records
            .into_iter()
            .filter_map(|r| match r {
                OutputRecord::DeadLetter(d) => Some(d),
                OutputRecord::Document(_) => None,
            })
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        self.writer.write("records", range, &records).await
    }
}
