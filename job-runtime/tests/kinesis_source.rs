//! The Kinesis source against the local stack's kinesis-mock (`KINESIS_ENDPOINT`) and versitygw
//! (`S3_ENDPOINT`, for the finished markers). The test plays the engine: it receives batches,
//! commits positions into the watch the sources read, and publishes finished markers for sales
//! shards. Needs `cargo xtask stack up`; fails (does not skip) without it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use aws_credential_types::Credentials;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ScalingType, StreamStatus};
use prometheus::Registry;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tributary_crds::spec::{AwsSpec, ReaderKind, StartPosition, StreamSource};
use tributary_runtime::aws::{kinesis_client_with, s3_client_with};
use tributary_runtime::source::assign::Assignment;
use tributary_runtime::source::coordination::Coordination;
use tributary_runtime::source::kinesis::{
    self, SourceContext, SourceHandle, SourceSettings, StreamConfig, list_shards,
};
use tributary_runtime::source::metrics::SourceMetrics;
use tributary_runtime::source::{Position, Positions, ShardBatch, StreamRole};

const TIMEOUT: Duration = Duration::from_secs(45);
const TOP: u128 = u128::MAX;

// ---------------------------------------------------------------------------------------------
// The stack

fn stack_env() -> Result<HashMap<String, String>> {
    let home = std::env::var("TRIBUTARY_HOME").unwrap_or_else(|_| {
        format!(
            "{}/.cache/tributary",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let path = format!("{home}/stack/stack.env");
    let body = std::fs::read_to_string(&path)
        .with_context(|| format!("{path} missing: run `cargo xtask stack up` first"))?;
    let mut vars: HashMap<String, String> = body
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in vars.iter_mut() {
        if let Ok(over) = std::env::var(k) {
            *v = over;
        }
    }
    Ok(vars)
}

fn var(env: &HashMap<String, String>, name: &str) -> Result<String> {
    env.get(name)
        .cloned()
        .with_context(|| format!("{name} is not in stack.env"))
}

fn install_crypto() {
    // `RUST_LOG=tributary_runtime=debug` shows the sources' logs.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    // kube (elsewhere in the workspace) links ring and the AWS SDK aws-lc-rs: pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}

fn source(stream: &str, start: StartPosition) -> StreamSource {
    StreamSource {
        stream: stream.into(),
        region: None,
        endpoint: None,
        start_position: start,
        start_timestamp: None,
        reader: ReaderKind::Polling,
        consumer_name: None,
    }
}

struct Stack {
    env: HashMap<String, String>,
    kinesis: Client,
}

impl Stack {
    async fn new() -> Result<Self> {
        install_crypto();
        let env = stack_env()?;
        let aws = AwsSpec {
            region: var(&env, "AWS_REGION")?,
            kinesis_endpoint: Some(var(&env, "KINESIS_ENDPOINT")?),
            ..AwsSpec::default()
        };
        let creds = Credentials::new(
            var(&env, "AWS_ACCESS_KEY_ID")?,
            var(&env, "AWS_SECRET_ACCESS_KEY")?,
            None,
            None,
            "tributary-stack",
        );
        let kinesis = kinesis_client_with(
            &aws,
            &source("unused", StartPosition::TrimHorizon),
            Some(creds),
        )
        .await;
        Ok(Self { env, kinesis })
    }

    /// Finished markers under a fresh prefix of a test bucket in versitygw.
    async fn coordination(&self) -> Result<Arc<Coordination>> {
        let aws = AwsSpec {
            region: var(&self.env, "S3_REGION")?,
            s3_endpoint: Some(var(&self.env, "S3_ENDPOINT")?),
            s3_force_path_style: true,
            ..AwsSpec::default()
        };
        let creds = Credentials::new(
            var(&self.env, "S3_ACCESS_KEY_ID")?,
            var(&self.env, "S3_SECRET_ACCESS_KEY")?,
            None,
            None,
            "tributary-stack",
        );
        let s3 = s3_client_with(&aws, Some(creds)).await;
        let bucket = "tributary-source-tests";
        if let Err(e) = s3.create_bucket().bucket(bucket).send().await {
            let owned = e.as_service_error().is_some_and(|s| {
                s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
            });
            ensure!(
                owned,
                "CreateBucket: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            );
        }
        Ok(Arc::new(Coordination::new(
            s3,
            &format!("s3://{bucket}/{}", unique("dl")),
        )?))
    }

    async fn create(&self, shards: i32) -> Result<String> {
        let stream = unique("source-test");
        self.kinesis
            .create_stream()
            .stream_name(&stream)
            .shard_count(shards)
            .send()
            .await
            .context("CreateStream")?;
        self.wait_active(&stream).await?;
        Ok(stream)
    }

    async fn wait_active(&self, stream: &str) -> Result<()> {
        let start = Instant::now();
        loop {
            let s = self
                .kinesis
                .describe_stream_summary()
                .stream_name(stream)
                .send()
                .await?;
            let status = s
                .stream_description_summary()
                .map(|d| d.stream_status().clone());
            if status == Some(StreamStatus::Active) {
                return Ok(());
            }
            ensure!(start.elapsed() < TIMEOUT, "{stream} not ACTIVE: {status:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn delete(&self, stream: &str) {
        let _ = self
            .kinesis
            .delete_stream()
            .stream_name(stream)
            .enforce_consumer_deletion(true)
            .send()
            .await;
    }

    /// Puts `n` records spread over the hash key space; returns (shard, sequence) of each, in order.
    async fn put(&self, stream: &str, tag: &str, n: usize) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for chunk_start in (0..n).step_by(100) {
            let entries = (chunk_start..n.min(chunk_start + 100))
                .map(|i| {
                    // Evenly spread keys (with an odd offset so no key sits on a boundary).
                    let key = (TOP / (n as u128 + 1)) * (i as u128 + 1) - 12_345;
                    PutRecordsRequestEntry::builder()
                        .partition_key(format!("{tag}-{i}"))
                        .explicit_hash_key(key.to_string())
                        .data(Blob::new(format!("{tag}-{i}").into_bytes()))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            let put = self
                .kinesis
                .put_records()
                .stream_name(stream)
                .set_records(Some(entries))
                .send()
                .await
                .context("PutRecords")?;
            ensure!(
                put.failed_record_count().unwrap_or(0) == 0,
                "failed records: {put:?}"
            );
            for r in put.records() {
                out.push((
                    r.shard_id().context("no shard id")?.to_string(),
                    r.sequence_number().context("no sequence")?.to_string(),
                ));
            }
        }
        Ok(out)
    }

    async fn reshard(&self, stream: &str, target: i32) -> Result<()> {
        self.kinesis
            .update_shard_count()
            .stream_name(stream)
            .target_shard_count(target)
            .scaling_type(ScalingType::UniformScaling)
            .send()
            .await
            .context("UpdateShardCount")?;
        self.wait_active(stream).await
    }
}

fn fast_settings() -> SourceSettings {
    SourceSettings {
        relist_interval: Duration::from_millis(500),
        min_poll_interval: Duration::from_millis(100),
        idle_interval: Duration::from_millis(150),
        marker_check_interval: Duration::from_millis(250),
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_secs(2),
        ..SourceSettings::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The test's engine

/// Receives batches like the engine: checks order and uniqueness, commits positions.
struct Engine {
    name: &'static str,
    positions: watch::Sender<Positions>,
    batches: mpsc::Receiver<ShardBatch>,
    coordination: Option<Arc<Coordination>>,
    metrics: SourceMetrics,
    cancel: CancellationToken,
    active: watch::Sender<Option<BTreeSet<String>>>,
    /// Received sequence numbers by shard, in order.
    received: BTreeMap<String, Vec<String>>,
    /// When each shard's first batch and its end arrived.
    first_batch: BTreeMap<String, Instant>,
    ended: BTreeMap<String, Instant>,
    batches_seen: usize,
}

impl Engine {
    fn new(
        name: &'static str,
        initial: Positions,
        coordination: Option<Arc<Coordination>>,
    ) -> (Self, mpsc::Sender<ShardBatch>) {
        let (tx, rx) = mpsc::channel(4);
        let (positions, _) = watch::channel(initial);
        let engine = Self {
            name,
            positions,
            batches: rx,
            coordination,
            metrics: SourceMetrics::register(&Registry::new()).unwrap(),
            cancel: CancellationToken::new(),
            active: watch::channel(None).0,
            received: BTreeMap::new(),
            first_batch: BTreeMap::new(),
            ended: BTreeMap::new(),
            batches_seen: 0,
        };
        (engine, tx)
    }

    fn spawn(
        &self,
        tx: mpsc::Sender<ShardBatch>,
        stack: &Stack,
        config: StreamConfig,
        settings: SourceSettings,
    ) -> Result<SourceHandle> {
        Ok(kinesis::spawn(
            stack.kinesis.clone(),
            config,
            settings,
            SourceContext {
                positions: self.positions.subscribe(),
                batches: tx,
                metrics: self.metrics.clone(),
                coordination: self.coordination.clone(),
                cancel: self.cancel.clone(),
                active: Some(self.active.clone()),
                report: Default::default(),
            },
        )?)
    }

    async fn apply(&mut self, b: ShardBatch) -> Result<()> {
        self.batches_seen += 1;
        let now = Instant::now();
        self.first_batch.entry(b.shard_id.clone()).or_insert(now);
        ensure!(
            !self.ended.contains_key(&b.shard_id),
            "{}: batch for {} after its end",
            self.name,
            b.shard_id
        );
        ensure!(
            b.millis_behind_latest.is_some(),
            "batch without millis_behind_latest"
        );
        let seen = self.received.entry(b.shard_id.clone()).or_default();
        for r in &b.records {
            ensure!(
                !seen.contains(&r.sequence),
                "{}: duplicate {} in {}",
                self.name,
                r.sequence,
                b.shard_id
            );
            seen.push(r.sequence.clone());
        }
        let key = (b.stream.clone(), b.shard_id.clone());
        if b.shard_end {
            self.ended.insert(b.shard_id.clone(), now);
            self.positions.send_modify(|p| {
                p.insert(key, Position::Finished);
            });
            if let (Some(c), StreamRole::Sales) = (&self.coordination, b.role) {
                c.publish_finished(&b.stream, &b.shard_id).await?;
            }
        } else if let Some(last) = b.records.last() {
            let pos = Position::After(last.sequence.clone());
            self.positions.send_modify(|p| {
                p.insert(key, pos);
            });
        }
        Ok(())
    }

    fn total(&self) -> usize {
        self.received.values().map(Vec::len).sum()
    }

    /// Applies batches until `done`, failing after [`TIMEOUT`].
    async fn run_until(&mut self, done: impl Fn(&Self) -> bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while !done(self) {
            tokio::select! {
                b = self.batches.recv() => match b {
                    Some(b) => self.apply(b).await?,
                    None => bail!("{}: all sources stopped", self.name),
                },
                () = tokio::time::sleep_until(deadline) => bail!(
                    "{}: timed out with {} records in {:?}, ended {:?}",
                    self.name, self.total(),
                    self.received.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>(),
                    self.ended.keys().collect::<Vec<_>>()
                ),
            }
        }
        Ok(())
    }

    /// Keeps applying for `d` (to catch late duplicates).
    async fn drain_for(&mut self, d: Duration) -> Result<()> {
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                b = self.batches.recv() => match b {
                    Some(b) => self.apply(b).await?,
                    None => return Ok(()),
                },
                () = tokio::time::sleep_until(until) => return Ok(()),
            }
        }
    }
}

/// Expected sequence numbers by shard, in put order.
fn by_shard(puts: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (shard, seq) in puts {
        m.entry(shard.clone()).or_default().push(seq.clone());
    }
    m
}

fn received_non_empty(e: &Engine) -> BTreeMap<String, Vec<String>> {
    e.received
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Every shard read with parents was first read after all its parents' ends (in any engine).
/// Returns how many children were checked.
async fn assert_parents_first(stack: &Stack, stream: &str, engines: &[&Engine]) -> Result<usize> {
    let mut ended = BTreeMap::new();
    let mut first = BTreeMap::new();
    for e in engines {
        ended.extend(e.ended.iter().map(|(k, v)| (k.clone(), *v)));
        first.extend(e.first_batch.iter().map(|(k, v)| (k.clone(), *v)));
    }
    let shards = list_shards(
        &stack.kinesis,
        &kinesis::StreamRef::Name(stream.to_string()),
    )
    .await?;
    let mut checked = 0;
    for shard in &shards {
        let Some(t) = first.get(shard.shard_id()) else {
            continue;
        };
        for parent in shard
            .parent_shard_id()
            .into_iter()
            .chain(shard.adjacent_parent_shard_id())
        {
            let end = ended.get(parent).with_context(|| {
                format!("{} read, its parent {parent} never ended", shard.shard_id())
            })?;
            ensure!(
                t >= end,
                "{} read before its parent {parent} ended",
                shard.shard_id()
            );
            checked += 1;
        }
    }
    Ok(checked)
}

async fn with_stream<F, Fut>(shards: i32, f: F) -> Result<()>
where
    F: FnOnce(Arc<Stack>, String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let stack = Arc::new(Stack::new().await?);
    let stream = stack.create(shards).await?;
    let result = f(stack.clone(), stream.clone()).await;
    stack.delete(&stream).await;
    result
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_once_in_shard_order() -> Result<()> {
    with_stream(3, |stack, stream| async move {
        let puts = stack.put(&stream, "a", 90).await?;
        let (mut engine, tx) = Engine::new("engine", Positions::new(), None);
        let config = StreamConfig::new(
            StreamRole::Customers,
            source(&stream, StartPosition::TrimHorizon),
            None,
        )?;
        let handle = engine.spawn(tx, &stack, config, fast_settings())?;
        engine.run_until(|e| e.total() >= 90).await?;
        // Records written while reading arrive too.
        let more = stack.put(&stream, "b", 30).await?;
        engine.run_until(|e| e.total() >= 120).await?;
        engine.drain_for(Duration::from_millis(800)).await?;
        let want = by_shard(&[puts, more].concat());
        ensure!(want.len() == 3, "records landed on {} shards", want.len());
        assert_eq!(received_non_empty(&engine), want);
        assert_eq!(
            engine
                .metrics
                .records_total
                .with_label_values(&[&stream])
                .get(),
            120
        );
        assert!(
            engine
                .metrics
                .requests_total
                .with_label_values(&[&stream, "ok"])
                .get()
                > 3
        );
        assert_eq!(
            engine
                .metrics
                .shards_reading
                .with_label_values(&[&stream])
                .get(),
            3
        );
        let active = engine.active.borrow().clone();
        assert_eq!(active, Some(want.keys().cloned().collect()));
        // Graceful stop.
        handle.stop();
        tokio::time::timeout(Duration::from_secs(5), handle.join()).await??;
        assert_eq!(
            engine
                .metrics
                .shards_reading
                .with_label_values(&[&stream])
                .get(),
            0
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_the_committed_position() -> Result<()> {
    with_stream(1, |stack, stream| async move {
        let puts = stack.put(&stream, "a", 20).await?;
        let (shard, tenth) = puts[9].clone();
        let initial: Positions = [((stream.clone(), shard.clone()), Position::After(tenth))].into();
        let (mut engine, tx) = Engine::new("engine", initial, None);
        // Latest is configured, but a committed position wins.
        let config = StreamConfig::new(
            StreamRole::Addresses,
            source(&stream, StartPosition::Latest),
            None,
        )?;
        let handle = engine.spawn(tx, &stack, config, fast_settings())?;
        engine.run_until(|e| e.total() >= 10).await?;
        engine.drain_for(Duration::from_millis(600)).await?;
        let want: Vec<String> = puts[10..].iter().map(|(_, s)| s.clone()).collect();
        assert_eq!(received_non_empty(&engine), BTreeMap::from([(shard, want)]));
        engine.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), handle.join()).await??;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_reads_the_parent_to_its_end_before_the_children() -> Result<()> {
    with_stream(1, |stack, stream| async move {
        let before = stack.put(&stream, "before", 40).await?;
        let (mut engine, tx) = Engine::new("engine", Positions::new(), None);
        let config = StreamConfig::new(
            StreamRole::Customers,
            source(&stream, StartPosition::TrimHorizon),
            None,
        )?;
        let _handle = engine.spawn(tx, &stack, config, fast_settings())?;
        engine.run_until(|e| e.total() >= 10).await?;
        // Split mid-stream: the parent still has records to deliver when it closes.
        stack.reshard(&stream, 2).await?;
        let after = stack.put(&stream, "after", 40).await?;
        let parent = before[0].0.clone();
        ensure!(
            after.iter().all(|(s, _)| *s != parent),
            "records after the split landed on the parent"
        );
        engine.run_until(|e| e.total() >= 80).await?;
        engine.drain_for(Duration::from_millis(800)).await?;
        assert_eq!(
            received_non_empty(&engine),
            by_shard(&[before, after].concat())
        );
        assert_eq!(assert_parents_first(&stack, &stream, &[&engine]).await?, 2);
        assert_eq!(
            engine
                .metrics
                .shards_finished_total
                .with_label_values(&[&stream])
                .get(),
            1
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_read_every_sales_shard_once_across_a_merge() -> Result<()> {
    with_stream(4, |stack, stream| async move {
        let coordination = stack.coordination().await?;
        let before = stack.put(&stream, "before", 80).await?;
        let mut engines = Vec::new();
        let mut handles = Vec::new();
        for (ordinal, name) in [(0, "replica-0"), (1, "replica-1")] {
            let (engine, tx) = Engine::new(name, Positions::new(), Some(coordination.clone()));
            let config = StreamConfig::new(
                StreamRole::Sales,
                source(&stream, StartPosition::TrimHorizon),
                Some(Assignment::new(ordinal, 2)?),
            )?;
            handles.push(engine.spawn(tx, &stack, config, fast_settings())?);
            engines.push(engine);
        }
        let [mut e0, mut e1]: [Engine; 2] = engines
            .try_into()
            .map_err(|_| anyhow::anyhow!("two engines"))?;

        // Each reads the two shards it owns.
        let deadline = Instant::now() + TIMEOUT;
        while e0.total() + e1.total() < 80 {
            ensure!(
                Instant::now() < deadline,
                "timed out: {} + {}",
                e0.total(),
                e1.total()
            );
            e0.drain_for(Duration::from_millis(50)).await?;
            e1.drain_for(Duration::from_millis(50)).await?;
        }
        if e0.total() != 40 || e1.total() != 40 {
            let shards =
                list_shards(&stack.kinesis, &kinesis::StreamRef::Name(stream.clone())).await?;
            let ranges: Vec<_> = shards
                .iter()
                .map(|s| (s.shard_id().to_string(), s.hash_key_range().cloned()))
                .collect();
            bail!("split {} / {} over {ranges:?}", e0.total(), e1.total());
        }

        // Merge the second shard (replica 0's) with the third (replica 1's): whichever replica
        // owns the child reads it only after its own parent's committed end and the other
        // replica's finished marker.
        let mut shards =
            list_shards(&stack.kinesis, &kinesis::StreamRef::Name(stream.clone())).await?;
        shards.sort_by_key(|s| {
            s.hash_key_range()
                .map(|r| r.starting_hash_key().parse::<u128>().unwrap_or_default())
        });
        let (lower, upper) = (
            shards[1].shard_id().to_string(),
            shards[2].shard_id().to_string(),
        );
        stack
            .kinesis
            .merge_shards()
            .stream_name(&stream)
            .shard_to_merge(&lower)
            .adjacent_shard_to_merge(&upper)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "MergeShards: {}",
                    aws_sdk_kinesis::error::DisplayErrorContext(&e)
                )
            })?;
        stack.wait_active(&stream).await?;
        let after = stack.put(&stream, "after", 80).await?;
        let deadline = Instant::now() + TIMEOUT;
        while e0.total() + e1.total() < 160 {
            ensure!(
                Instant::now() < deadline,
                "timed out: {} + {}",
                e0.total(),
                e1.total()
            );
            e0.drain_for(Duration::from_millis(50)).await?;
            e1.drain_for(Duration::from_millis(50)).await?;
        }
        e0.drain_for(Duration::from_millis(500)).await?;
        e1.drain_for(Duration::from_millis(500)).await?;

        let mut all = received_non_empty(&e0);
        for (shard, seqs) in received_non_empty(&e1) {
            ensure!(
                all.insert(shard.clone(), seqs).is_none(),
                "{shard} read by both replicas"
            );
        }
        assert_eq!(all, by_shard(&[before, after].concat()));
        // The merged child (two parents) and nothing else had parents.
        assert_eq!(assert_parents_first(&stack, &stream, &[&e0, &e1]).await?, 2);
        ensure!(e1.ended.contains_key(&upper) && e0.ended.contains_key(&lower));
        assert!(coordination.is_finished(&stream, &upper).await?);
        for h in handles {
            h.stop();
            tokio::time::timeout(Duration::from_secs(5), h.join()).await??;
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_timestamp_and_latest_start_positions() -> Result<()> {
    with_stream(1, |stack, stream| async move {
        let old = stack.put(&stream, "old", 10).await?;
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let t = chrono::Utc::now();
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let new = stack.put(&stream, "new", 10).await?;

        let mut at = source(&stream, StartPosition::AtTimestamp);
        at.start_timestamp = Some(t.to_rfc3339());
        let (mut engine, tx) = Engine::new("at-timestamp", Positions::new(), None);
        let _h = engine.spawn(
            tx,
            &stack,
            StreamConfig::new(StreamRole::Customers, at, None)?,
            fast_settings(),
        )?;
        engine.run_until(|e| e.total() >= 10).await?;
        engine.drain_for(Duration::from_millis(500)).await?;
        assert_eq!(received_non_empty(&engine), by_shard(&new));

        let (mut engine, tx) = Engine::new("latest", Positions::new(), None);
        let config = StreamConfig::new(
            StreamRole::Customers,
            source(&stream, StartPosition::Latest),
            None,
        )?;
        let _h = engine.spawn(tx, &stack, config, fast_settings())?;
        // The first (empty) batch means the LATEST iterator exists.
        engine.run_until(|e| e.batches_seen >= 1).await?;
        let newest = stack.put(&stream, "newest", 10).await?;
        engine.run_until(|e| e.total() >= 10).await?;
        engine.drain_for(Duration::from_millis(500)).await?;
        assert_eq!(received_non_empty(&engine), by_shard(&newest));
        ensure!(old.len() == 10);
        Ok(())
    })
    .await
}

/// kinesis-mock 0.6.2 serves SubscribeToShard (an event per second, subscriptions of five
/// minutes), but never ends a closed shard's subscription (no ChildShards, always a continuation)
/// and keeps a subscription registered after the client disconnects: shard ends and
/// resubscriptions over enhanced fan-out are unit-tested only (`efo::tests`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_fan_out_reads_every_record_once() -> Result<()> {
    with_stream(2, |stack, stream| async move {
        let first = stack.put(&stream, "first", 40).await?;
        let mut efo = source(&stream, StartPosition::TrimHorizon);
        efo.reader = ReaderKind::EnhancedFanOut;
        efo.consumer_name = Some("tributary-test".into());
        let (mut engine, tx) = Engine::new("efo", Positions::new(), None);
        let config = StreamConfig::new(StreamRole::Customers, efo, None)?;
        let handle = engine.spawn(tx, &stack, config, fast_settings())?;
        engine.run_until(|e| e.total() >= 40).await?;
        // Records written while subscribed arrive on the open subscriptions.
        let second = stack.put(&stream, "second", 40).await?;
        engine.run_until(|e| e.total() >= 80).await?;
        engine.drain_for(Duration::from_millis(1_500)).await?;
        assert_eq!(
            received_non_empty(&engine),
            by_shard(&[first, second].concat())
        );
        // The consumer was registered by the source.
        let arn = stack
            .kinesis
            .describe_stream_summary()
            .stream_name(&stream)
            .send()
            .await?
            .stream_description_summary()
            .map(|d| d.stream_arn().to_string())
            .context("no stream ARN")?;
        let consumer = stack
            .kinesis
            .describe_stream_consumer()
            .stream_arn(arn)
            .consumer_name("tributary-test")
            .send()
            .await?;
        ensure!(consumer.consumer_description().is_some());
        handle.stop();
        tokio::time::timeout(Duration::from_secs(5), handle.join()).await??;
        Ok(())
    })
    .await
}
