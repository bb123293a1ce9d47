//! The polling shard reader: GetShardIterator, then GetRecords in a loop.
//!
//! - At most one GetRecords call per [`SourceSettings::min_poll_interval`] (Kinesis allows five
//!   per second and shard); a poll that returned nothing, or is caught up (`MillisBehindLatest`
//!   0), waits [`SourceSettings::idle_interval`] before the next one. Every poll is reported as a
//!   batch, empty or not, so the engine sees caught-up shards; `requested_at` is the instant the
//!   GetRecords call started.
//! - Throttling (ProvisionedThroughputExceeded, LimitExceeded): exponential backoff with jitter.
//! - ExpiredIterator (the engine held a batch for more than five minutes): a new iterator
//!   AFTER_SEQUENCE_NUMBER of the last record *sent*, so nothing is read twice or skipped.
//! - A null NextShardIterator: the shard is closed and fully read; that batch has
//!   `shard_end: true` and the reader stops.
//! - Anything else (a missing stream included): logged, counted, backed off and retried; never a
//!   panic. A missing stream or shard also renews the iterator.
//!
//! [`SourceSettings::min_poll_interval`]: super::SourceSettings::min_poll_interval
//! [`SourceSettings::idle_interval`]: super::SourceSettings::idle_interval

use tokio::time::Instant;

use super::plan::StartAt;
use super::retry::ErrorClass;
use super::{ReaderCtx, ReaderExit, iterator_type, smithy_time, source_record};
use crate::source::metrics::Outcome;

/// Where the reader is to (re)start: after the last record sent, else the planned start.
pub fn restart_position(planned: &StartAt, last_sent: Option<&str>) -> StartAt {
    match last_sent {
        Some(seq) => StartAt::AfterSequence(seq.to_string()),
        None => planned.clone(),
    }
}

/// How long after a GetRecords call started the next may start.
pub fn next_poll_delay(
    records: usize,
    millis_behind_latest: Option<i64>,
    min_poll: std::time::Duration,
    idle: std::time::Duration,
) -> std::time::Duration {
    if records == 0 || millis_behind_latest == Some(0) {
        idle.max(min_poll)
    } else {
        min_poll
    }
}

async fn get_iterator(ctx: &ReaderCtx, start: &StartAt) -> Result<Option<String>, ErrorClass> {
    let mut req = ctx
        .client
        .get_shard_iterator()
        .set_stream_name(ctx.stream_ref.name())
        .set_stream_arn(ctx.stream_ref.arn())
        .shard_id(&ctx.shard_id)
        .shard_iterator_type(iterator_type(start));
    match start {
        StartAt::AfterSequence(seq) => req = req.starting_sequence_number(seq),
        StartAt::AtTimestamp(ts) => req = req.timestamp(smithy_time(ts)),
        StartAt::TrimHorizon | StartAt::Latest => {}
    }
    match req.send().await {
        Ok(out) => Ok(out.shard_iterator),
        Err(e) => Err(ctx.failed("GetShardIterator", &e)),
    }
}

/// Reads the shard until its end, cancellation, or the engine's channel closing.
pub async fn run(ctx: ReaderCtx) -> ReaderExit {
    match read(&ctx).await {
        Ok(()) => ReaderExit::ShardEnd,
        Err(exit) => exit,
    }
}

async fn read(ctx: &ReaderCtx) -> Result<(), ReaderExit> {
    let settings = ctx.settings.clone();
    let mut backoff = ctx.backoff();
    let mut last_sent: Option<String> = None;
    let mut iterator: Option<String> = None;
    let mut next_call = Instant::now();
    loop {
        let current = match iterator.take() {
            Some(it) => it,
            None => {
                let start = restart_position(&ctx.start, last_sent.as_deref());
                match get_iterator(ctx, &start).await {
                    Ok(Some(it)) => it,
                    Ok(None) => {
                        tracing::warn!(stream = %ctx.label, shard = %ctx.shard_id, "GetShardIterator returned no iterator");
                        ctx.metrics.request(&ctx.label, Outcome::Error);
                        ctx.sleep(backoff.next_delay()).await?;
                        continue;
                    }
                    Err(_) => {
                        ctx.sleep(backoff.next_delay()).await?;
                        continue;
                    }
                }
            }
        };
        ctx.sleep_until(next_call).await?;
        let started = Instant::now();
        let requested_at = std::time::Instant::now();
        next_call = started + settings.min_poll_interval;
        let result = ctx
            .client
            .get_records()
            .shard_iterator(&current)
            .limit(settings.get_records_limit)
            .send()
            .await;
        match result {
            Ok(out) => {
                ctx.metrics.request(&ctx.label, Outcome::Ok);
                backoff.reset();
                let records: Vec<_> = out.records.into_iter().map(source_record).collect();
                let shard_end = out.next_shard_iterator.is_none();
                next_call = started
                    + next_poll_delay(
                        records.len(),
                        out.millis_behind_latest,
                        settings.min_poll_interval,
                        settings.idle_interval,
                    );
                let last = records.last().map(|r| r.sequence.clone());
                ctx.send(ctx.batch(records, out.millis_behind_latest, requested_at, shard_end))
                    .await?;
                if last.is_some() {
                    last_sent = last;
                }
                if shard_end {
                    tracing::info!(stream = %ctx.label, shard = %ctx.shard_id, "shard read to its end");
                    return Ok(());
                }
                iterator = out.next_shard_iterator;
            }
            Err(e) => match ctx.failed("GetRecords", &e) {
                ErrorClass::ExpiredIterator => {} // renewed from the last record sent
                ErrorClass::Throttled | ErrorClass::InUse => {
                    iterator = Some(current);
                    ctx.sleep(backoff.next_delay()).await?;
                }
                ErrorClass::NotFound | ErrorClass::Denied => {
                    ctx.sleep(backoff.next_delay()).await?
                }
                ErrorClass::Transient => {
                    // The iterator stays valid for five minutes; a renewal on the next failure
                    // would be as good, but keeping it avoids a GetShardIterator per blip.
                    iterator = Some(current);
                    ctx.sleep(backoff.next_delay()).await?;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn restarts_after_the_last_record_sent() {
        assert_eq!(restart_position(&StartAt::Latest, None), StartAt::Latest);
        assert_eq!(
            restart_position(&StartAt::TrimHorizon, Some("17")),
            StartAt::AfterSequence("17".into())
        );
        assert_eq!(
            restart_position(&StartAt::AfterSequence("3".into()), Some("9")),
            StartAt::AfterSequence("9".into())
        );
    }

    #[test]
    fn poll_pacing() {
        let min = Duration::from_millis(200);
        let idle = Duration::from_secs(1);
        assert_eq!(next_poll_delay(0, Some(5_000), min, idle), idle);
        assert_eq!(next_poll_delay(10, Some(0), min, idle), idle);
        assert_eq!(next_poll_delay(10, Some(5_000), min, idle), min);
        assert_eq!(next_poll_delay(10, None, min, idle), min);
        // Never faster than the per-shard limit, even with a tiny idle interval.
        assert_eq!(
            next_poll_delay(0, None, min, Duration::from_millis(10)),
            min
        );
    }
}
