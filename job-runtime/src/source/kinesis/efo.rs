//! The enhanced fan-out shard reader: SubscribeToShard and its event stream.
//!
//! - The consumer is registered once per source ([`ensure_consumer`]: DescribeStreamConsumer,
//!   RegisterStreamConsumer when missing, then DescribeStreamConsumer until ACTIVE). Each replica
//!   has its own consumer (`<consumerName>-<ordinal>`, see
//!   [`tributary_crds::spec::StreamSource::replica_consumer`]): a second SubscribeToShard of one
//!   shard through one consumer would take over the first. A restarted replica finds its consumer
//!   registered (ResourceInUse while it is still being registered); the operator deregisters the
//!   consumers of ordinals a rescale removed.
//! - A subscription starts at the planned position, and after the first one at
//!   AFTER_SEQUENCE_NUMBER of the last `ContinuationSequenceNumber` seen (or the last record sent),
//!   so resubscribing neither skips nor repeats records. Kinesis ends subscriptions after five
//!   minutes; the reader then resubscribes (at most one SubscribeToShard per second and shard).
//! - Each event is one batch; `requested_at` is the instant the event was received (there is no
//!   request per event). Kinesis sends an event at least every five seconds, empty or not, so
//!   idle shards keep reporting `millis_behind_latest`.
//! - The shard's end: an event with child shards or without a continuation sequence number. That
//!   batch has `shard_end: true` and the reader stops.
//! - Errors (of the call or of the stream): logged, counted, backed off, resubscribed.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::{
    ConsumerStatus, StartingPosition, SubscribeToShardEvent, SubscribeToShardEventStream,
};
use tokio::time::Instant;

use super::plan::StartAt;
use super::retry::{ErrorClass, classify};
use super::{ReaderCtx, ReaderExit, StreamRef, iterator_type, smithy_time, source_record};
use crate::source::metrics::Outcome;

/// Kinesis allows one SubscribeToShard per second per shard and consumer.
const SUBSCRIBE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum EfoError {
    #[error("{op} for stream {stream:?}, consumer {consumer:?}: {message}")]
    Call {
        op: &'static str,
        stream: String,
        consumer: String,
        message: String,
    },
    #[error("consumer {consumer:?} of stream {stream:?} not ACTIVE after {waited:?}")]
    NotActive {
        stream: String,
        consumer: String,
        waited: Duration,
    },
    #[error("starting position {0:?} cannot be expressed for SubscribeToShard")]
    StartingPosition(String),
}

fn call_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &'static str,
    stream: &str,
    consumer: &str,
    e: &SdkError<E>,
) -> EfoError {
    EfoError::Call {
        op,
        stream: stream.to_string(),
        consumer: consumer.to_string(),
        message: DisplayErrorContext(e).to_string(),
    }
}

/// The stream's ARN (DescribeStreamSummary unless configured as an ARN).
async fn stream_arn(client: &Client, stream: &StreamRef) -> Result<String, EfoError> {
    match stream {
        StreamRef::Arn(a) => Ok(a.clone()),
        StreamRef::Name(n) => {
            let out = client
                .describe_stream_summary()
                .stream_name(n)
                .send()
                .await
                .map_err(|e| call_error("DescribeStreamSummary", n, "", &e))?;
            out.stream_description_summary
                .map(|d| d.stream_arn)
                .ok_or_else(|| EfoError::Call {
                    op: "DescribeStreamSummary",
                    stream: n.clone(),
                    consumer: String::new(),
                    message: "no stream description".into(),
                })
        }
    }
}

/// Registers `consumer` on the stream if it is not, waits until it is ACTIVE, returns its ARN.
pub async fn ensure_consumer(
    client: &Client,
    stream: &StreamRef,
    consumer: &str,
    active_timeout: Duration,
) -> Result<String, EfoError> {
    let arn = stream_arn(client, stream).await?;
    let started = Instant::now();
    let mut registered = false;
    loop {
        let described = client
            .describe_stream_consumer()
            .stream_arn(&arn)
            .consumer_name(consumer)
            .send()
            .await;
        match described {
            Ok(out) => {
                if let Some(d) = out.consumer_description {
                    if d.consumer_status == ConsumerStatus::Active {
                        return Ok(d.consumer_arn);
                    }
                    tracing::debug!(stream = %arn, consumer, status = ?d.consumer_status, "waiting for the consumer");
                }
            }
            Err(e) if classify(e.code()) == ErrorClass::NotFound && !registered => {
                match client
                    .register_stream_consumer()
                    .stream_arn(&arn)
                    .consumer_name(consumer)
                    .send()
                    .await
                {
                    Ok(_) => tracing::info!(stream = %arn, consumer, "registered the consumer"),
                    // Another replica registers it at the same time.
                    Err(e) if classify(e.code()) == ErrorClass::InUse => {}
                    Err(e) => return Err(call_error("RegisterStreamConsumer", &arn, consumer, &e)),
                }
                registered = true;
            }
            Err(e) if classify(e.code()) == ErrorClass::NotFound => {} // registered, not visible yet
            Err(e) => return Err(call_error("DescribeStreamConsumer", &arn, consumer, &e)),
        }
        if started.elapsed() > active_timeout {
            return Err(EfoError::NotActive {
                stream: arn,
                consumer: consumer.to_string(),
                waited: active_timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The SubscribeToShard starting position of a start position.
pub fn starting_position(start: &StartAt) -> Result<StartingPosition, EfoError> {
    let mut b = StartingPosition::builder().r#type(iterator_type(start));
    match start {
        StartAt::AfterSequence(seq) => b = b.sequence_number(seq),
        StartAt::AtTimestamp(ts) => b = b.timestamp(smithy_time(ts)),
        StartAt::TrimHorizon | StartAt::Latest => {}
    }
    b.build()
        .map_err(|e| EfoError::StartingPosition(format!("{start:?}: {e}")))
}

/// Whether an event ends the shard: child shards, or no continuation.
pub fn is_shard_end(event: &SubscribeToShardEvent) -> bool {
    event.continuation_sequence_number.is_empty()
        || event.child_shards.as_ref().is_some_and(|c| !c.is_empty())
}

/// Where to resume after this event: its continuation, else the last record, else unchanged.
pub fn resume_after(event: &SubscribeToShardEvent, previous: Option<String>) -> Option<String> {
    if !event.continuation_sequence_number.is_empty() {
        Some(event.continuation_sequence_number.clone())
    } else if let Some(r) = event.records.last() {
        Some(r.sequence_number.clone())
    } else {
        previous
    }
}

/// Reads the shard through subscriptions until its end, cancellation or the channel closing.
pub async fn run(ctx: ReaderCtx, consumer_arn: String) -> ReaderExit {
    match read(&ctx, &consumer_arn).await {
        Ok(()) => ReaderExit::ShardEnd,
        Err(exit) => exit,
    }
}

enum SubscriptionEnd {
    /// Closed normally (5 minutes) or by `subscription_max`: resubscribe now.
    Expired,
    /// An error on the stream: back off, then resubscribe.
    Failed,
    ShardEnd,
}

async fn read(ctx: &ReaderCtx, consumer_arn: &str) -> Result<(), ReaderExit> {
    let mut backoff = ctx.backoff();
    let mut resume: Option<String> = None;
    let mut last_subscribe: Option<Instant> = None;
    loop {
        if let Some(t) = last_subscribe {
            ctx.sleep_until(t + SUBSCRIBE_INTERVAL).await?;
        }
        last_subscribe = Some(Instant::now());
        let start = super::polling::restart_position(&ctx.start, resume.as_deref());
        let position = match starting_position(&start) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(stream = %ctx.label, shard = %ctx.shard_id, "{e}");
                ctx.metrics.request(&ctx.label, Outcome::Error);
                ctx.sleep(backoff.next_delay()).await?;
                continue;
            }
        };
        let call = ctx
            .client
            .subscribe_to_shard()
            .consumer_arn(consumer_arn)
            .shard_id(&ctx.shard_id)
            .starting_position(position)
            .send();
        let subscribed = tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => return Err(ReaderExit::Cancelled),
            r = call => r,
        };
        let mut out = match subscribed {
            Ok(out) => out,
            Err(e) => {
                ctx.failed("SubscribeToShard", &e);
                ctx.sleep(backoff.next_delay()).await?;
                continue;
            }
        };
        ctx.metrics.request(&ctx.label, Outcome::Ok);
        let deadline = ctx.settings.subscription_max.map(|d| Instant::now() + d);
        let end = loop {
            let next = tokio::select! {
                biased;
                () = ctx.cancel.cancelled() => return Err(ReaderExit::Cancelled),
                () = sleep_until_opt(deadline) => break SubscriptionEnd::Expired,
                ev = out.event_stream.recv() => ev,
            };
            match next {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event))) => {
                    backoff.reset();
                    let received = std::time::Instant::now();
                    let shard_end = is_shard_end(&event);
                    resume = resume_after(&event, resume);
                    let behind = Some(event.millis_behind_latest);
                    let records: Vec<_> = event.records.into_iter().map(source_record).collect();
                    ctx.send(ctx.batch(records, behind, received, shard_end))
                        .await?;
                    if shard_end {
                        break SubscriptionEnd::ShardEnd;
                    }
                }
                Ok(Some(other)) => {
                    tracing::debug!(stream = %ctx.label, shard = %ctx.shard_id, ?other, "unknown event");
                }
                Ok(None) => break SubscriptionEnd::Expired,
                Err(e) => {
                    ctx.metrics.request(&ctx.label, Outcome::Error);
                    tracing::warn!(
                        stream = %ctx.label, shard = %ctx.shard_id,
                        "subscription failed: {}", DisplayErrorContext(&e)
                    );
                    break SubscriptionEnd::Failed;
                }
            }
        };
        match end {
            SubscriptionEnd::ShardEnd => {
                tracing::info!(stream = %ctx.label, shard = %ctx.shard_id, "shard read to its end");
                return Ok(());
            }
            SubscriptionEnd::Expired => {}
            SubscriptionEnd::Failed => ctx.sleep(backoff.next_delay()).await?,
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::types::{ChildShard, HashKeyRange, Record, ShardIteratorType};

    use super::*;

    fn event(continuation: &str, records: &[&str], children: bool) -> SubscribeToShardEvent {
        let mut b = SubscribeToShardEvent::builder()
            .set_records(Some(
                records
                    .iter()
                    .map(|s| {
                        Record::builder()
                            .sequence_number(*s)
                            .data(aws_sdk_kinesis::primitives::Blob::new(vec![]))
                            .build()
                            .unwrap()
                    })
                    .collect(),
            ))
            .continuation_sequence_number(continuation)
            .millis_behind_latest(0);
        if children {
            b = b.child_shards(
                ChildShard::builder()
                    .shard_id("shardId-2")
                    .parent_shards("shardId-1")
                    .hash_key_range(
                        HashKeyRange::builder()
                            .starting_hash_key("0")
                            .ending_hash_key("1")
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            );
        }
        b.build().unwrap()
    }

    #[test]
    fn shard_end_and_resume_points() {
        let e = event("30", &["10", "20"], false);
        assert!(!is_shard_end(&e));
        assert_eq!(resume_after(&e, None), Some("30".into()));
        let end = event("", &["40"], true);
        assert!(is_shard_end(&end));
        assert_eq!(resume_after(&end, Some("30".into())), Some("40".into()));
        assert!(is_shard_end(&event("", &[], false)));
        assert!(is_shard_end(&event("50", &[], true)));
        assert_eq!(
            resume_after(&event("", &[], false), Some("7".into())),
            Some("7".into())
        );
    }

    #[test]
    fn starting_positions() {
        let p = starting_position(&StartAt::AfterSequence("5".into())).unwrap();
        assert_eq!(p.r#type(), &ShardIteratorType::AfterSequenceNumber);
        assert_eq!(p.sequence_number(), Some("5"));
        let p = starting_position(&StartAt::TrimHorizon).unwrap();
        assert_eq!(p.r#type(), &ShardIteratorType::TrimHorizon);
        let ts = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let p = starting_position(&StartAt::AtTimestamp(ts)).unwrap();
        assert_eq!(p.timestamp().map(|t| t.secs()), Some(1_700_000_000));
    }
}
