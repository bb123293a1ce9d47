//! The Kinesis source of one configured stream.
//!
//! A controller task lists the stream's shards (ListShards, paginated) at start and then every
//! [`SourceSettings::relist_interval`], decides which shards to read with the pure
//! [`plan::plan`], and runs one reader task per shard: [`polling`] (GetRecords) or [`efo`]
//! (SubscribeToShard). Readers send [`ShardBatch`]es into the engine's bounded channel; awaiting
//! the send is the backpressure. The controller re-plans whenever the engine publishes new
//! committed positions (the `positions` watch), a reader ends, the stream is re-listed, or a
//! foreign parent's finished marker appears, so a child starts as soon as its parents' ends are
//! committed. Stopping: cancel the token given in [`SourceContext`] (all sources) or call
//! [`SourceHandle::stop`] (this one); readers stop at their next await point and nothing more is
//! sent.

pub mod efo;
pub mod plan;
pub mod polling;
pub mod retry;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tributary_crds::spec::{ReaderKind, StartPosition, StreamSource};

use self::plan::{PlanInput, Readers, ShardInfo, ShardPlan, StartAt};
use self::retry::{Backoff, ErrorClass, classify};
use super::assign::Assignment;
use super::coordination::Coordination;
use super::metrics::{Outcome, SourceMetrics};
use super::{Position, Positions, ShardBatch, SourceRecord, StreamRole};
use crate::report::Report;

#[derive(Debug, thiserror::Error)]
pub enum KinesisError {
    #[error(
        "stream {stream}: startPosition AtTimestamp needs a valid RFC 3339 startTimestamp, got {value:?}"
    )]
    StartTimestamp {
        stream: String,
        value: Option<String>,
    },
    #[error("stream {0}: reader EnhancedFanOut needs consumerName")]
    ConsumerName(String),
    #[error("stream {0}: the sales stream needs this replica's assignment")]
    NoAssignment(String),
    #[error(
        "stream {0}: with more than one replica the sales stream needs the S3 coordination (finished markers)"
    )]
    NoCoordination(String),
    #[error("stream {stream}: a shard reader panicked: {message}")]
    ReaderPanicked { stream: String, message: String },
    #[error("stream {stream}: the source task failed: {message}")]
    Task { stream: String, message: String },
}

/// Tunables of a source; the defaults suit production.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    /// How often ListShards runs to discover new shards after resharding.
    pub relist_interval: Duration,
    /// GetRecords `Limit` (at most 10,000).
    pub get_records_limit: i32,
    /// Minimum time between two GetRecords calls of one shard (Kinesis allows 5 per second).
    pub min_poll_interval: Duration,
    /// Time between polls of a shard that returned nothing or is caught up.
    pub idle_interval: Duration,
    /// How often a foreign parent's finished marker is checked while a child waits for it.
    pub marker_check_interval: Duration,
    /// First and largest backoff after throttling or an error.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Enhanced fan-out: end a subscription after this long and resubscribe (Kinesis ends them
    /// after 5 minutes itself; a shorter value is for tests).
    pub subscription_max: Option<Duration>,
    /// Enhanced fan-out: how long to wait for a registered consumer to become ACTIVE.
    pub consumer_active_timeout: Duration,
}

impl Default for SourceSettings {
    fn default() -> Self {
        Self {
            relist_interval: Duration::from_secs(30),
            get_records_limit: 10_000,
            min_poll_interval: Duration::from_millis(200),
            idle_interval: Duration::from_secs(1),
            marker_check_interval: Duration::from_secs(5),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            subscription_max: None,
            consumer_active_timeout: Duration::from_secs(120),
        }
    }
}

/// Kinesis' limit of GetRecords calls per second and shard, shared by every reader of the shard.
pub const GET_RECORDS_PER_SHARD_PER_SECOND: u32 = 5;

impl SourceSettings {
    /// The settings for a stream whose every shard `readers` processes poll (the dimension
    /// streams: every replica reads them in full). The intervals between two GetRecords calls of
    /// one shard grow with the readers, so all of them together stay within
    /// [`GET_RECORDS_PER_SHARD_PER_SECOND`]: with N readers each waits at least N/5 s between
    /// calls, and at least that long when idle.
    pub fn for_readers(&self, readers: u32) -> Self {
        let readers = readers.max(1);
        let fair = Duration::from_secs(1) * readers / GET_RECORDS_PER_SHARD_PER_SECOND;
        Self {
            min_poll_interval: self.min_poll_interval.max(fair),
            idle_interval: self.idle_interval.max(fair),
            ..self.clone()
        }
    }
}

/// How a stream is named in API calls: by name, or by ARN when configured as one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamRef {
    Name(String),
    Arn(String),
}

impl StreamRef {
    pub fn parse(configured: &str) -> Self {
        if configured.starts_with("arn:") {
            Self::Arn(configured.to_string())
        } else {
            Self::Name(configured.to_string())
        }
    }
    pub fn name(&self) -> Option<String> {
        match self {
            Self::Name(n) => Some(n.clone()),
            Self::Arn(_) => None,
        }
    }
    pub fn arn(&self) -> Option<String> {
        match self {
            Self::Arn(a) => Some(a.clone()),
            Self::Name(_) => None,
        }
    }
}

/// The configured start position as a [`StartAt`].
pub fn configured_start(source: &StreamSource) -> Result<StartAt, KinesisError> {
    Ok(match source.start_position {
        StartPosition::TrimHorizon => StartAt::TrimHorizon,
        StartPosition::Latest => StartAt::Latest,
        StartPosition::AtTimestamp => {
            let err = || KinesisError::StartTimestamp {
                stream: source.stream.clone(),
                value: source.start_timestamp.clone(),
            };
            let text = source.start_timestamp.as_deref().ok_or_else(err)?;
            let ts = DateTime::parse_from_rfc3339(text).map_err(|_| err())?;
            StartAt::AtTimestamp(ts.with_timezone(&Utc))
        }
    })
}

/// One stream to read.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    pub role: StreamRole,
    pub source: StreamSource,
    pub readers: Readers,
}

impl StreamConfig {
    /// Dimension roles read every shard; sales reads the shards `assignment` owns.
    pub fn new(
        role: StreamRole,
        source: StreamSource,
        assignment: Option<Assignment>,
    ) -> Result<Self, KinesisError> {
        let readers = if role.is_dimension() {
            Readers::All
        } else {
            Readers::Owned(
                assignment.ok_or_else(|| KinesisError::NoAssignment(source.stream.clone()))?,
            )
        };
        Ok(Self {
            role,
            source,
            readers,
        })
    }
}

/// What a source shares with the engine.
#[derive(Clone, Debug)]
pub struct SourceContext {
    /// Committed positions by (configured stream, shard); the initial value is what the engine
    /// restored, and the engine sends the map again after each commit.
    pub positions: watch::Receiver<Positions>,
    /// The engine's bounded input channel.
    pub batches: mpsc::Sender<ShardBatch>,
    pub metrics: SourceMetrics,
    /// Finished-shard markers; required for sales with more than one replica.
    pub coordination: Option<Arc<Coordination>>,
    /// Cancelling it stops every source started with it.
    pub cancel: CancellationToken,
    /// Receives, after each planning, the shards being read or waiting to be read (not the
    /// finished ones, not other replicas'): the engine's barrier waits for all of them.
    pub active: Option<watch::Sender<Option<BTreeSet<String>>>>,
    /// Where the readers' health and lag go (`GET /status`).
    pub report: Report,
}

/// A running source.
#[derive(Debug)]
pub struct SourceHandle {
    stream: String,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), KinesisError>>,
}

impl SourceHandle {
    /// Stops reading (graceful: readers stop at their next await; nothing more is sent).
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Waits for the source to end: after [`Self::stop`], after the context's token was cancelled,
    /// when the engine dropped its channel or its positions watch, or on a reader's panic.
    pub async fn join(self) -> Result<(), KinesisError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(KinesisError::Task {
                stream: self.stream,
                message: e.to_string(),
            }),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts reading one stream. Must be called within a Tokio runtime.
pub fn spawn(
    client: Client,
    config: StreamConfig,
    settings: SourceSettings,
    ctx: SourceContext,
) -> Result<SourceHandle, KinesisError> {
    let configured = configured_start(&config.source)?;
    let stream = config.source.stream.clone();
    let consumer = match config.source.reader {
        ReaderKind::Polling => None,
        ReaderKind::EnhancedFanOut => Some(
            config
                .source
                .consumer_name
                .clone()
                .ok_or_else(|| KinesisError::ConsumerName(stream.clone()))?,
        ),
    };
    if let Readers::Owned(a) = config.readers
        && a.replicas() > 1
        && ctx.coordination.is_none()
    {
        return Err(KinesisError::NoCoordination(stream));
    }
    let cancel = ctx.cancel.child_token();
    let controller = Controller {
        client,
        stream_ref: StreamRef::parse(&stream),
        label: stream.clone(),
        role: config.role,
        readers_rule: config.readers,
        configured,
        consumer,
        consumer_arn: None,
        settings: Arc::new(settings),
        positions: ctx.positions,
        batches: ctx.batches,
        metrics: ctx.metrics,
        report: ctx.report.clone(),
        coordination: ctx.coordination,
        active_tx: ctx.active,
        cancel: cancel.clone(),
        shards: Vec::new(),
        listed: false,
        initial: BTreeSet::new(),
        foreign_finished: BTreeSet::new(),
        running: BTreeSet::new(),
        ended: BTreeSet::new(),
        tasks: JoinSet::new(),
    };
    let report = ctx.report;
    let watched = cancel.clone();
    let role = config.role;
    let task = tokio::spawn(async move {
        let result = controller.run().await;
        // Ending without being stopped leaves the stream unread: the pod is not healthy.
        if !watched.is_cancelled() {
            let why = match &result {
                Ok(()) => "ended".to_string(),
                Err(e) => e.to_string(),
            };
            report.ended(format!("source {}: {why}", role.as_str()));
        }
        result
    });
    Ok(SourceHandle {
        stream,
        cancel,
        task,
    })
}

/// How a shard reader ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReaderExit {
    /// Sent the batch with `shard_end: true`.
    ShardEnd,
    Cancelled,
    /// The engine dropped its receiver.
    ChannelClosed,
}

/// What a shard reader needs.
#[derive(Clone, Debug)]
pub struct ReaderCtx {
    pub client: Client,
    pub stream_ref: StreamRef,
    pub label: String,
    pub role: StreamRole,
    pub shard_id: String,
    pub start: StartAt,
    pub batches: mpsc::Sender<ShardBatch>,
    pub metrics: SourceMetrics,
    pub cancel: CancellationToken,
    pub settings: Arc<SourceSettings>,
    pub report: Report,
}

impl ReaderCtx {
    fn batch(
        &self,
        records: Vec<SourceRecord>,
        millis_behind_latest: Option<i64>,
        requested_at: std::time::Instant,
        shard_end: bool,
    ) -> ShardBatch {
        ShardBatch {
            role: self.role,
            stream: self.label.clone(),
            shard_id: self.shard_id.clone(),
            records,
            millis_behind_latest,
            requested_at,
            shard_end,
        }
    }

    /// Sends a batch, unless cancelled first; updates the metrics.
    async fn send(&self, batch: ShardBatch) -> Result<(), ReaderExit> {
        let n = batch.records.len();
        let behind = batch.millis_behind_latest;
        let end = batch.shard_end;
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Err(ReaderExit::Cancelled),
            sent = self.batches.send(batch) => sent.map_err(|_| ReaderExit::ChannelClosed)?,
        }
        self.metrics.records(&self.label, n);
        if end {
            self.metrics.shard_finished(&self.label, &self.shard_id);
            self.report
                .source_shard_done(self.role.as_str(), &self.shard_id);
        } else {
            self.metrics.behind(&self.label, &self.shard_id, behind);
            self.report
                .source_ok(self.role.as_str(), &self.shard_id, behind);
        }
        Ok(())
    }

    /// Sleeps unless cancelled first.
    async fn sleep(&self, d: Duration) -> Result<(), ReaderExit> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(ReaderExit::Cancelled),
            () = tokio::time::sleep(d) => Ok(()),
        }
    }

    async fn sleep_until(&self, t: Instant) -> Result<(), ReaderExit> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(ReaderExit::Cancelled),
            () = tokio::time::sleep_until(t) => Ok(()),
        }
    }

    /// Records a failed call: metric, log, and the class.
    fn failed<E>(&self, op: &str, err: &aws_sdk_kinesis::error::SdkError<E>) -> ErrorClass
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let class = classify(err.code());
        if let Some(reason) = fault_reason(class, err) {
            self.report.source_failed(
                self.role.as_str(),
                &self.shard_id,
                reason,
                format!(
                    "{op} on {}: {}",
                    self.label,
                    aws_sdk_kinesis::error::DisplayErrorContext(err)
                ),
            );
        }
        let outcome = match class {
            ErrorClass::Throttled => Outcome::Throttled,
            ErrorClass::ExpiredIterator => Outcome::ExpiredIterator,
            _ => Outcome::Error,
        };
        self.metrics.request(&self.label, outcome);
        let detail = aws_sdk_kinesis::error::DisplayErrorContext(err);
        match class {
            ErrorClass::Throttled | ErrorClass::ExpiredIterator => tracing::debug!(
                stream = %self.label, shard = %self.shard_id, op, ?class, "{detail}"
            ),
            _ => tracing::warn!(
                stream = %self.label, shard = %self.shard_id, op, ?class, "{detail}"
            ),
        }
        class
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.settings.backoff_base, self.settings.backoff_max)
    }
}

/// What a failed call says about the stream's health (`GET /status`): `None` for the normal
/// life of a reader (throttling, expired iterators, a subscription in use).
fn fault_reason<E, R>(
    class: ErrorClass,
    err: &aws_sdk_kinesis::error::SdkError<E, R>,
) -> Option<&'static str>
where
    E: ProvideErrorMetadata,
{
    use aws_sdk_kinesis::error::SdkError;
    match class {
        ErrorClass::Throttled | ErrorClass::ExpiredIterator | ErrorClass::InUse => None,
        ErrorClass::NotFound => Some("StreamNotFound"),
        ErrorClass::Denied => Some("AccessDenied"),
        ErrorClass::Transient => Some(match err {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => "KinesisUnreachable",
            _ => "KinesisError",
        }),
    }
}

/// An SDK record as a [`SourceRecord`] (no copy of the data).
pub fn source_record(r: aws_sdk_kinesis::types::Record) -> SourceRecord {
    SourceRecord {
        arrival_ms: r
            .approximate_arrival_timestamp
            .and_then(|t| t.to_millis().ok()),
        sequence: r.sequence_number,
        partition_key: r.partition_key.unwrap_or_default(),
        data: Bytes::from(r.data.into_inner()),
    }
}

/// The iterator type (and its argument) of a start position.
pub fn iterator_type(start: &StartAt) -> ShardIteratorType {
    match start {
        StartAt::AfterSequence(_) => ShardIteratorType::AfterSequenceNumber,
        StartAt::TrimHorizon => ShardIteratorType::TrimHorizon,
        StartAt::Latest => ShardIteratorType::Latest,
        StartAt::AtTimestamp(_) => ShardIteratorType::AtTimestamp,
    }
}

fn smithy_time(ts: &DateTime<Utc>) -> aws_sdk_kinesis::primitives::DateTime {
    aws_sdk_kinesis::primitives::DateTime::from_millis(ts.timestamp_millis())
}

/// Lists every shard of a stream (paginated).
pub async fn list_shards(
    client: &Client,
    stream: &StreamRef,
) -> Result<
    Vec<aws_sdk_kinesis::types::Shard>,
    aws_sdk_kinesis::error::SdkError<aws_sdk_kinesis::operation::list_shards::ListShardsError>,
> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match &token {
            // The stream must not be named together with a continuation token.
            Some(t) => client.list_shards().next_token(t),
            None => client
                .list_shards()
                .set_stream_name(stream.name())
                .set_stream_arn(stream.arn()),
        };
        let out = req.send().await?;
        shards.extend(out.shards.unwrap_or_default());
        match out.next_token {
            Some(t) => token = Some(t),
            None => return Ok(shards),
        }
    }
}

/// The positions of one stream, by shard.
pub fn stream_positions(all: &Positions, stream: &str) -> BTreeMap<String, Position> {
    all.iter()
        .filter(|((s, _), _)| s == stream)
        .map(|((_, shard), p)| (shard.clone(), p.clone()))
        .collect()
}

struct Controller {
    client: Client,
    stream_ref: StreamRef,
    label: String,
    role: StreamRole,
    readers_rule: Readers,
    configured: StartAt,
    consumer: Option<String>,
    consumer_arn: Option<String>,
    settings: Arc<SourceSettings>,
    positions: watch::Receiver<Positions>,
    batches: mpsc::Sender<ShardBatch>,
    metrics: SourceMetrics,
    report: Report,
    coordination: Option<Arc<Coordination>>,
    cancel: CancellationToken,
    active_tx: Option<watch::Sender<Option<BTreeSet<String>>>>,
    shards: Vec<ShardInfo>,
    listed: bool,
    /// Shards of the first listing when the stream had no committed position.
    initial: BTreeSet<String>,
    foreign_finished: BTreeSet<String>,
    running: BTreeSet<String>,
    /// Readers that sent their shard's end, until the engine commits it.
    ended: BTreeSet<String>,
    tasks: JoinSet<(String, ReaderExit)>,
}

impl Controller {
    async fn run(mut self) -> Result<(), KinesisError> {
        let result = self.control().await;
        // Graceful stop: every reader stops at its next await point.
        self.cancel.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Err(e) = joined
                && e.is_panic()
            {
                tracing::error!(stream = %self.label, "shard reader panicked: {e}");
            }
        }
        self.metrics.set_reading(&self.label, 0);
        result
    }

    async fn control(&mut self) -> Result<(), KinesisError> {
        let fresh = {
            let positions = self.positions.borrow();
            !positions.keys().any(|(s, _)| *s == self.label)
        };
        let mut list_backoff = Backoff::new(self.settings.backoff_base, self.settings.backoff_max);
        let mut next_list = Instant::now();
        let mut next_marker_check = Instant::now();
        let mut waiting_foreign = BTreeSet::new();
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Ok(()),
                changed = self.positions.changed() => {
                    if changed.is_err() {
                        tracing::info!(stream = %self.label, "positions watch closed: stopping");
                        return Ok(());
                    }
                }
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match joined {
                        Ok((shard, exit)) => {
                            self.running.remove(&shard);
                            match exit {
                                ReaderExit::ShardEnd => {
                                    self.ended.insert(shard);
                                }
                                ReaderExit::Cancelled => {}
                                ReaderExit::ChannelClosed => {
                                    tracing::info!(stream = %self.label, "engine channel closed: stopping");
                                    return Ok(());
                                }
                            }
                        }
                        Err(e) => {
                            return Err(KinesisError::ReaderPanicked {
                                stream: self.label.clone(),
                                message: e.to_string(),
                            });
                        }
                    }
                }
                () = tokio::time::sleep_until(next_list) => {
                    match list_shards(&self.client, &self.stream_ref).await {
                        Ok(shards) => {
                            self.metrics.request(&self.label, Outcome::Ok);
                            self.report.source_ok(self.role.as_str(), "*", None);
                            list_backoff.reset();
                            next_list = Instant::now() + self.settings.relist_interval;
                            self.shards = shards
                                .iter()
                                .filter_map(|s| match ShardInfo::from_sdk(s) {
                                    Ok(info) => Some(info),
                                    Err(e) => {
                                        tracing::warn!(stream = %self.label, "skipping shard: {e}");
                                        None
                                    }
                                })
                                .collect();
                            if !self.listed && fresh {
                                self.initial =
                                    self.shards.iter().map(|s| s.shard_id.clone()).collect();
                            }
                            self.listed = true;
                            // Newly waiting children get their markers checked right away.
                            next_marker_check = Instant::now();
                        }
                        Err(e) => {
                            self.metrics.request(&self.label, Outcome::Error);
                            if let Some(reason) = fault_reason(classify(e.code()), &e) {
                                self.report.source_failed(
                                    self.role.as_str(),
                                    "*",
                                    reason,
                                    format!(
                                        "ListShards on {}: {}",
                                        self.label,
                                        aws_sdk_kinesis::error::DisplayErrorContext(&e)
                                    ),
                                );
                            }
                            tracing::error!(
                                stream = %self.label,
                                "ListShards failed (is the stream there?): {}",
                                aws_sdk_kinesis::error::DisplayErrorContext(&e)
                            );
                            next_list = Instant::now() + list_backoff.next_delay();
                        }
                    }
                }
                () = tokio::time::sleep_until(next_marker_check), if !waiting_foreign.is_empty() => {
                    self.check_markers(&waiting_foreign).await;
                    next_marker_check = Instant::now() + self.settings.marker_check_interval;
                }
            }
            if self.listed {
                waiting_foreign = self.plan_and_start().await?;
            }
        }
    }

    /// Re-plans and starts readers; returns the foreign parents still awaited.
    async fn plan_and_start(&mut self) -> Result<BTreeSet<String>, KinesisError> {
        let positions = stream_positions(&self.positions.borrow(), &self.label);
        self.ended
            .retain(|s| positions.get(s) != Some(&Position::Finished));
        let active: BTreeSet<String> = self.running.union(&self.ended).cloned().collect();
        let plan = plan::plan(&PlanInput {
            shards: &self.shards,
            positions: &positions,
            readers: self.readers_rule,
            foreign_finished: &self.foreign_finished,
            initial: &self.initial,
            configured: &self.configured,
            active: &active,
        });
        let to_start: Vec<(String, StartAt)> = plan
            .iter()
            .filter_map(|(id, p)| match p {
                ShardPlan::Start(at) => Some((id.clone(), at.clone())),
                _ => None,
            })
            .collect();
        if !to_start.is_empty() && self.consumer.is_some() && self.consumer_arn.is_none() {
            match self.ensure_consumer().await {
                Some(arn) => self.consumer_arn = Some(arn),
                None => return Ok(plan::foreign_waits(&plan)), // cancelled
            }
        }
        if let Some(tx) = &self.active_tx {
            let reading: BTreeSet<String> = plan
                .iter()
                .filter(|(_, p)| {
                    matches!(
                        p,
                        ShardPlan::Active | ShardPlan::Start(_) | ShardPlan::Wait { .. }
                    )
                })
                .map(|(id, _)| id.clone())
                .collect();
            tx.send_if_modified(|current| {
                let changed = current.as_ref() != Some(&reading);
                if changed {
                    *current = Some(reading);
                }
                changed
            });
        }
        for (shard, start) in to_start {
            self.start_reader(shard, start);
        }
        self.metrics.set_reading(&self.label, self.running.len());
        Ok(plan::foreign_waits(&plan))
    }

    /// Registers the enhanced fan-out consumer if needed, retrying until it is ACTIVE or the
    /// source is stopped (`None`).
    async fn ensure_consumer(&self) -> Option<String> {
        let name = self.consumer.as_deref()?;
        let mut backoff = Backoff::new(self.settings.backoff_base, self.settings.backoff_max);
        loop {
            let attempt = efo::ensure_consumer(
                &self.client,
                &self.stream_ref,
                name,
                self.settings.consumer_active_timeout,
            );
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return None,
                r = attempt => match r {
                    Ok(arn) => {
                        tracing::info!(stream = %self.label, consumer = name, %arn, "consumer active");
                        return Some(arn);
                    }
                    Err(e) => {
                        self.metrics.request(&self.label, Outcome::Error);
                        tracing::error!(stream = %self.label, consumer = name, "{e}");
                    }
                }
            }
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return None,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    fn start_reader(&mut self, shard: String, start: StartAt) {
        tracing::info!(stream = %self.label, %shard, ?start, "starting shard reader");
        let ctx = ReaderCtx {
            client: self.client.clone(),
            stream_ref: self.stream_ref.clone(),
            label: self.label.clone(),
            role: self.role,
            shard_id: shard.clone(),
            start,
            batches: self.batches.clone(),
            metrics: self.metrics.clone(),
            cancel: self.cancel.child_token(),
            settings: self.settings.clone(),
            report: self.report.clone(),
        };
        self.running.insert(shard.clone());
        match self.consumer_arn.clone() {
            Some(arn) => self
                .tasks
                .spawn(async move { (shard, efo::run(ctx, arn).await) }),
            None => self
                .tasks
                .spawn(async move { (shard, polling::run(ctx).await) }),
        };
    }

    async fn check_markers(&mut self, parents: &BTreeSet<String>) {
        let Some(coordination) = self.coordination.clone() else {
            return;
        };
        for parent in parents {
            if self.foreign_finished.contains(parent) {
                continue;
            }
            match coordination.is_finished(&self.label, parent).await {
                Ok(true) => {
                    tracing::info!(stream = %self.label, %parent, "foreign parent finished");
                    self.foreign_finished.insert(parent.clone());
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(stream = %self.label, %parent, "{e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tributary_crds::spec::{ReaderKind, StartPosition};

    use super::*;

    fn source(start: StartPosition, ts: Option<&str>) -> StreamSource {
        StreamSource {
            stream: "s".into(),
            region: None,
            endpoint: None,
            start_position: start,
            start_timestamp: ts.map(str::to_string),
            reader: ReaderKind::Polling,
            consumer_name: None,
        }
    }

    #[test]
    fn configured_start_positions() {
        assert_eq!(
            configured_start(&source(StartPosition::TrimHorizon, None)).unwrap(),
            StartAt::TrimHorizon
        );
        assert_eq!(
            configured_start(&source(StartPosition::Latest, None)).unwrap(),
            StartAt::Latest
        );
        let StartAt::AtTimestamp(ts) = configured_start(&source(
            StartPosition::AtTimestamp,
            Some("2026-01-01T01:00:00+01:00"),
        ))
        .unwrap() else {
            panic!("not a timestamp");
        };
        assert_eq!(ts.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert!(configured_start(&source(StartPosition::AtTimestamp, None)).is_err());
        assert!(configured_start(&source(StartPosition::AtTimestamp, Some("yesterday"))).is_err());
    }

    #[test]
    fn streams_by_name_or_arn() {
        assert_eq!(StreamRef::parse("sales"), StreamRef::Name("sales".into()));
        let arn = "arn:aws:kinesis:eu-west-1:1:stream/sales";
        assert_eq!(StreamRef::parse(arn).arn().as_deref(), Some(arn));
        assert_eq!(StreamRef::parse(arn).name(), None);
    }

    #[test]
    fn the_sales_stream_needs_an_assignment() {
        let s = source(StartPosition::TrimHorizon, None);
        assert!(StreamConfig::new(StreamRole::Sales, s.clone(), None).is_err());
        assert_eq!(
            StreamConfig::new(StreamRole::Customers, s.clone(), None)
                .unwrap()
                .readers,
            Readers::All
        );
        let a = Assignment::new(1, 2).unwrap();
        assert_eq!(
            StreamConfig::new(StreamRole::Sales, s, Some(a))
                .unwrap()
                .readers,
            Readers::Owned(a)
        );
    }

    #[test]
    fn positions_are_filtered_by_stream() {
        let all: Positions = [
            (("a".to_string(), "s1".to_string()), Position::Finished),
            (
                ("b".to_string(), "s1".to_string()),
                Position::After("3".into()),
            ),
        ]
        .into();
        assert_eq!(
            stream_positions(&all, "b"),
            [("s1".to_string(), Position::After("3".into()))].into()
        );
    }

    #[test]
    fn sdk_records_convert_without_loss() {
        let r = aws_sdk_kinesis::types::Record::builder()
            .sequence_number("49")
            .partition_key("k")
            .data(aws_sdk_kinesis::primitives::Blob::new(b"{}".to_vec()))
            .approximate_arrival_timestamp(aws_sdk_kinesis::primitives::DateTime::from_millis(
                1_700_000_000_123,
            ))
            .build()
            .unwrap();
        assert_eq!(
            source_record(r),
            SourceRecord {
                sequence: "49".into(),
                partition_key: "k".into(),
                data: Bytes::from_static(b"{}"),
                arrival_ms: Some(1_700_000_000_123),
            }
        );
    }
}
