//! Sinks: each delivers the committed outbox ([`crate::state::OutboxReader`]) from its own
//! cursor, in ranges of outbox sequence numbers.
//!
//! [`run`] is the one delivery loop: it reads committed entries after the sink's cursor,
//! gathers them until the sink's size or time bound, records the range as the sink's *intent*,
//! calls [`Sink::write`] (retried with exponential backoff while it fails: a sink that is down
//! only stops the cursor, the outbox keeps the data and the engine stops reading once the
//! outbox is too far ahead), then moves the cursor. After a crash the intent is written again
//! with the same range, and [`Sink::write`] must give the same effect (deterministic object
//! keys, document ids), so a retry or a restart never duplicates.
//!
//! * [`opensearch`]: `_bulk` to the write alias, ids from the resource's template;
//! * [`s3`]: Parquet files partitioned by the sale's day;
//! * [`dead_letter`]: JSON lines to the dead-letter location.

pub mod dead_letter;
pub mod opensearch;
pub mod parquet;
pub mod s3;

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::output::{OutputError, OutputRecord};
use crate::report::Report;
use crate::state::{OutboxReader, SinkCursor, StateError};

/// Errors of a sink write; the loop retries them all (a write is idempotent per range).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("state: {0}")]
    State(#[from] StateError),
    #[error("outbox entry: {0}")]
    Output(#[from] OutputError),
    #[error("{0}")]
    Write(String),
    /// A write the destination refused or could not take, with why (machine-readable).
    #[error("{message}")]
    Refused {
        reason: &'static str,
        message: String,
    },
    #[error("the outbox reader task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl SinkError {
    /// Why, machine-readable (`SinksHealthy`'s reason): `OpenSearchForbidden`,
    /// `S3AccessDenied`, ... for errors of the destination, `WriteFailed` otherwise.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Refused { reason, .. } => reason,
            Self::State(_) => "StateError",
            Self::Output(_) => "OutboxUnreadable",
            Self::Write(_) => "WriteFailed",
            Self::Join(_) => "TaskFailed",
        }
    }
}

impl From<crate::objects::ObjectError> for SinkError {
    fn from(e: crate::objects::ObjectError) -> Self {
        Self::Refused {
            reason: e.reason,
            message: e.to_string(),
        }
    }
}

/// A range of outbox sequence numbers, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub first: u64,
    pub last: u64,
}

/// How much a sink gathers before it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// Write when the gathered entries reach this many bytes (encoded outbox entries).
    pub max_bytes: usize,
    /// Write at the latest this long after the first gathered entry was committed.
    pub max_interval: Duration,
}

/// What the sinks are asked to do beyond their batching.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Drain {
    /// Deliver by size and interval.
    #[default]
    Normal,
    /// Deliver everything committed now, without waiting for a batch to fill (a savepoint
    /// waits for the outbox to be empty), then go on.
    Flush,
    /// Deliver everything committed, then end (shutdown).
    Stop,
}

pub trait Sink: Send + 'static {
    /// Names the cursor (and the metrics); never change it for an existing state.
    fn name(&self) -> &'static str;
    fn batching(&self) -> Batching;
    /// Deliver the records of `range` (those this sink handles; it ignores the others). Must
    /// have the same effect when called again with the same range.
    fn write(
        &mut self,
        range: Range,
        records: Vec<OutputRecord>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Backoff between failed attempts: 100 ms doubling to 30 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1u64 << attempt.min(9)))
        .min(Duration::from_secs(30))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, SinkError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

/// Deliver `range` until it succeeds (or `stop` is set: then the intent stays for the next
/// run). Returns whether it was delivered.
async fn deliver<S: Sink>(
    sink: &mut S,
    reader: &OutboxReader,
    range: Range,
    entries: Vec<(u64, Vec<u8>)>,
    metrics: &Metrics,
    report: &Report,
    stop: &watch::Receiver<Drain>,
) -> Result<bool, SinkError> {
    let name = sink.name();
    let r = reader.clone();
    blocking(move || {
        r.set_cursor(
            name,
            &SinkCursor {
                next: range.first,
                intent: Some((range.first, range.last)),
            },
        )
    })
    .await?;
    let count = entries.len() as u64;
    let records = entries
        .iter()
        .map(|(_, bytes)| OutputRecord::decode(bytes))
        .collect::<Result<Vec<_>, _>>()?;
    drop(entries);
    let mut attempt = 0;
    loop {
        let started = Instant::now();
        match sink.write(range, records.clone()).await {
            Ok(()) => {
                report.sink_ok(name);
                metrics
                    .sink_write_seconds
                    .with_label_values(&[name])
                    .observe(started.elapsed().as_secs_f64());
                break;
            }
            Err(e) => {
                report.sink_failed(name, e.reason(), e.to_string());
                metrics.sink_failures.with_label_values(&[name]).inc();
                tracing::warn!(sink = name, first = range.first, last = range.last, attempt,
                    error = %e, "sink write failed; retrying");
                if *stop.borrow() == Drain::Stop && attempt >= 2 {
                    return Ok(false);
                }
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
        }
    }
    let r = reader.clone();
    blocking(move || {
        r.set_cursor(
            name,
            &SinkCursor {
                next: range.last + 1,
                intent: None,
            },
        )
    })
    .await?;
    metrics
        .sink_delivered
        .with_label_values(&[name])
        .inc_by(count);
    Ok(true)
}

/// The delivery loop of one sink. `committed` carries the outbox's next sequence number after
/// each commit; `cursor` publishes this sink's cursor (for trimming and backpressure). Returns
/// after `stop` is set and everything committed by then is delivered (or could not be).
pub async fn run<S: Sink>(
    mut sink: S,
    reader: OutboxReader,
    mut committed: watch::Receiver<u64>,
    cursor: watch::Sender<u64>,
    metrics: Metrics,
    report: Report,
    mut stop: watch::Receiver<Drain>,
) -> Result<(), SinkError> {
    let name = sink.name();
    let r = reader.clone();
    let start = blocking(move || {
        Ok(match r.cursor(name)? {
            Some(c) => c,
            None => SinkCursor {
                next: r.first()?.unwrap_or(0),
                intent: None,
            },
        })
    })
    .await?;
    let mut next = start.next;
    if let Some((first, last)) = start.intent {
        tracing::info!(
            sink = name,
            first,
            last,
            "redelivering the range of an interrupted write"
        );
        let r = reader.clone();
        let entries = blocking(move || r.range(first, last)).await?;
        let range = Range { first, last };
        if !deliver(&mut sink, &reader, range, entries, &metrics, &report, &stop).await? {
            return Ok(());
        }
        next = last + 1;
    }
    cursor.send_replace(next);
    let batching = sink.batching();
    let mut buffer: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut bytes = 0usize;
    let mut since: Option<Instant> = None;
    let mut stop_closed = false;
    loop {
        let drain = *stop.borrow();
        let stopping = stop_closed || drain == Drain::Stop;
        let available = *committed.borrow_and_update();
        let loaded_to = buffer.last().map_or(next, |(s, _)| s + 1);
        if loaded_to < available && bytes < batching.max_bytes {
            let r = reader.clone();
            let room = batching.max_bytes - bytes;
            let more = blocking(move || r.read(loaded_to, 50_000, room)).await?;
            for (seq, v) in more {
                if seq >= available {
                    break;
                }
                bytes += v.len();
                buffer.push((seq, v));
            }
            since.get_or_insert_with(Instant::now);
            continue;
        }
        let due = bytes >= batching.max_bytes
            || since.is_some_and(|t| t.elapsed() >= batching.max_interval)
            || stopping
            || drain == Drain::Flush;
        if due && let (Some(&(first, _)), Some(&(last, _))) = (buffer.first(), buffer.last()) {
            let range = Range { first, last };
            let entries = std::mem::take(&mut buffer);
            bytes = 0;
            since = None;
            if !deliver(&mut sink, &reader, range, entries, &metrics, &report, &stop).await? {
                return Ok(());
            }
            next = last + 1;
            cursor.send_replace(next);
            continue;
        }
        if stopping {
            return Ok(());
        }
        let wait = since.map_or(Duration::from_secs(3600), |t| {
            batching.max_interval.saturating_sub(t.elapsed())
        });
        tokio::select! {
            r = committed.changed() => if r.is_err() {
                // The engine is gone: deliver what is buffered, then stop.
                let (first, last) = match (buffer.first(), buffer.last()) {
                    (Some(f), Some(l)) => (f.0, l.0),
                    _ => return Ok(()),
                };
                let entries = std::mem::take(&mut buffer);
                deliver(&mut sink, &reader, Range { first, last }, entries, &metrics, &report, &stop).await?;
                cursor.send_replace(last + 1);
                return Ok(());
            },
            r = stop.changed(), if !stop_closed => stop_closed = r.is_err(),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests;
