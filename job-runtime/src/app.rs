//! Wiring of a job process: state, engine thread, Kinesis sources, reference loader, sinks,
//! admin server, and the shutdown order.
//!
//! Shutdown (SIGTERM or SIGINT): the sources stop reading; the engine applies what it already
//! received and commits it (state, positions and outputs together); the sinks deliver what was
//! committed (bounded by `drain_timeout`: what they cannot deliver stays in the outbox for the
//! next start); then the process exits 0. A kill -9 at any point loses only uncommitted work,
//! which the sources read again.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use prometheus::Registry;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tributary_crds::document_id::DocumentIdTemplate;
use tributary_crds::job_config::JobConfig;

use crate::admin::{self, ControlPlane, Health};
use crate::engine::{self, Committed, Control, Core, EngineConfig, Inputs, Streams};
use crate::join::JoinRules;
use crate::metrics::Metrics;
use crate::reference::loader::{Loader, Table};
use crate::s3uri::S3Uri;
use crate::savepoint::control::{SavepointControl, Wiring};
use crate::savepoint::restore;
use crate::sink::dead_letter::{DeadLetterSink, DeadLetterWriter};
use crate::sink::opensearch::{OpenSearchConfig, OpenSearchSink};
use crate::sink::s3::S3Sink;
use crate::sink::{self, Batching, Drain};
use tributary_crds::secret::Secret;

use crate::source::assign::Assignment;
use crate::source::coordination::Coordination;
use crate::source::kinesis::{self, SourceContext, SourceSettings, StreamConfig};
use crate::source::metrics::SourceMetrics;
use crate::source::{Position, Positions, StreamRole};
use crate::state::RocksState;
use crate::state::volume::{Replacement, Start, Volume, start_kind};
use tributary_crds::job_config::StateConfig;

/// Batches waiting in each input channel (dimensions, sales).
const INPUT_BATCHES: usize = 4;

/// Process settings that are not part of the resource (flags / environment).
#[derive(Clone, Debug)]
pub struct Settings {
    pub state_dir: PathBuf,
    pub admin_addr: SocketAddr,
    /// This replica's StatefulSet ordinal.
    pub ordinal: u32,
    pub opensearch_username: Option<String>,
    pub opensearch_password: Option<Secret>,
    /// How long the sinks may take to deliver at shutdown (and each step of a savepoint).
    pub drain_timeout: Duration,
    /// The control API's token (`TRIBUTARY_CONTROL_TOKEN`); without it nothing is accepted.
    pub control_token: Option<Secret>,
    pub source: SourceSettings,
}

impl Settings {
    /// The admin address: the pod IP when known, else every interface.
    pub fn admin_addr(pod_ip: Option<&str>, port: u16) -> SocketAddr {
        let ip = pod_ip
            .and_then(|s| s.parse::<IpAddr>().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        SocketAddr::new(ip, port)
    }
}

fn quantity_bytes(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Result<usize> {
    let b =
        tributary_crds::quantity::bytes(q).with_context(|| format!("invalid size {:?}", q.0))?;
    Ok(usize::try_from(b).unwrap_or(usize::MAX))
}

/// Open the state the configuration asks for: the active one, or a replacement (activated
/// here for a fresh start; for a restore, by the caller once the restore is complete).
fn open_state(
    dir: &std::path::Path,
    wanted: &StateConfig,
) -> Result<(RocksState, Start, Option<Replacement>)> {
    let volume = Volume::new(dir);
    let state = volume.open_active()?;
    let found = state.identity()?;
    let start = start_kind(&found, wanted);
    match &start {
        Start::AsIs => return Ok((state, start, None)),
        Start::Adopt => {
            state.complete_identity(&wanted.id, None)?;
            return Ok((state, start, None));
        }
        Start::Fresh | Start::Restore(_) => {}
    }
    tracing::info!(found = ?found, wanted = %wanted.id, restore = ?wanted.restore.as_ref().map(|r| &r.id),
        "replacing the state on the volume (the old one stays until the new one is complete)");
    drop(state);
    let (state, replacement) = volume.begin_replacement()?;
    if start == Start::Fresh {
        state.complete_identity(&wanted.id, None)?;
        volume.activate(replacement)?;
        return Ok((state, start, None));
    }
    Ok((state, start, Some(replacement)))
}

/// Where the restored waiting sales go: the open sales shards as listed now.
async fn sales_router(config: &JobConfig, replicas: u32) -> Result<restore::Router> {
    let source = &config.sources.sales;
    let client = crate::aws::kinesis_client(&config.aws, source).await;
    let listed = kinesis::list_shards(&client, &kinesis::StreamRef::parse(&source.stream))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "listing the shards of {}: {}",
                source.stream,
                aws_sdk_kinesis::error::DisplayErrorContext(e)
            )
        })?;
    let shards = listed
        .iter()
        .map(kinesis::plan::ShardInfo::from_sdk)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(restore::Router::new(&shards, replicas))
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Run the job until a shutdown signal.
pub async fn run(config: JobConfig, settings: Settings) -> Result<()> {
    let registry = Registry::new();
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .context("registering the process metrics")?;
    let metrics = Metrics::new(&registry).context("registering metrics")?;
    let source_metrics = SourceMetrics::register(&registry).context("registering metrics")?;
    let health = Health::default();
    let report = health.report.clone();
    report.expect(
        &["customers", "addresses", "sales"],
        &["s3", "opensearch", "dead-letter"],
    );
    let control_plane = Arc::new(std::sync::OnceLock::<ControlPlane>::new());

    let replicas = i64::from(config.replicas.max(1));
    let assignment = Assignment::new(settings.ordinal, replicas)
        .with_context(|| format!("ordinal {} of {replicas} replicas", settings.ordinal))?;

    let listener = admin::bind(settings.admin_addr)
        .await
        .with_context(|| format!("binding the admin server to {}", settings.admin_addr))?;
    let cancel = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        listener,
        registry.clone(),
        health.clone(),
        Arc::clone(&control_plane),
        cancel.clone().cancelled_owned(),
    ));
    tracing::info!(addr = %settings.admin_addr, ordinal = settings.ordinal, replicas,
        pipeline = %format!("{}/{}", config.pipeline.namespace, config.pipeline.name), "starting");

    // State: the volume's, or a replacement the configuration asks for.
    let dir = settings.state_dir.clone();
    let wanted = config.state.clone();
    let (state, start, replacement) =
        tokio::task::spawn_blocking(move || open_state(&dir, &wanted)).await??;
    let lineage = state.lineage()?;
    let reader = state.outbox_reader();
    let export = state.export();

    // Clients.
    let s3 = crate::aws::s3_client(&config.aws).await;
    let dlq_location = S3Uri::parse(&config.dead_letter.uri)?;
    let dead_letter = DeadLetterWriter::new(s3.clone(), dlq_location, &lineage);
    // Before the engine starts: a CA file that is missing or invalid stops the job here.
    let os = &config.sinks.opensearch;
    let os_sink = OpenSearchSink::new(
        &OpenSearchConfig {
            endpoint: os.spec.endpoint.clone(),
            username: settings.opensearch_username.clone(),
            password: settings.opensearch_password.clone(),
            write_alias: os.spec.write_alias.clone(),
            bulk_max_bytes: quantity_bytes(&os.spec.bulk_max_bytes)?,
            flush_interval: os.spec.bulk_flush_interval.std(),
            ca_cert_file: os.ca_cert_file.as_ref().map(PathBuf::from),
        },
        dead_letter.clone(),
    )
    .context("the OpenSearch sink")?
    .counting_dead_letters(metrics.dead_letters.clone())
    .measuring_freshness(metrics.sink_freshness.with_label_values(&["opensearch"]));

    // Engine.
    let streams = Streams {
        customers: config.sources.customers.stream.clone(),
        addresses: config.sources.addresses.stream.clone(),
        sales: config.sources.sales.stream.clone(),
    };
    let ids = DocumentIdTemplate::parse(&config.sinks.opensearch.spec.document_id)
        .map_err(|e| anyhow::anyhow!("sinks.opensearch.documentId: {e}"))?;
    let mut engine_cfg = EngineConfig::new(streams.clone(), JoinRules::from(&config.join), ids);
    engine_cfg.dimension_dead_letters = settings.ordinal == 0;
    let mut core = Core::new(state, engine_cfg, metrics.clone())?;
    if let Start::Restore(sp) = &start {
        let folder = S3Uri::parse(&sp.uri)?;
        let started = std::time::Instant::now();
        let loaded = restore::load(&s3, &folder)
            .await
            .with_context(|| format!("restoring savepoint {}", sp.id))?;
        let router = sales_router(&config, u32::try_from(replicas).unwrap_or(1))
            .await
            .with_context(|| format!("restoring savepoint {}", sp.id))?;
        let (restored, figures) =
            restore::restore(core, &s3, &loaded, settings.ordinal, &router, &streams)
                .await
                .with_context(|| format!("restoring savepoint {}", sp.id))?;
        core = restored;
        core.state()
            .complete_identity(&config.state.id, Some(&sp.id))?;
        if let Some(r) = replacement {
            Volume::new(&settings.state_dir).activate(r)?;
        }
        tracing::info!(savepoint = %sp.id, parts = figures.parts, bytes = figures.bytes,
            customer_versions = figures.customer_versions, address_versions = figures.address_versions,
            waiting_sales_taken = figures.waiting_sales_taken, waiting_sales_seen = figures.waiting_sales_seen,
            positions = figures.positions, ms = started.elapsed().as_millis() as u64,
            "restored this replica's share of the savepoint");
    }
    let restored_from = core.state().restored_from()?;
    let initial_positions: Positions = core.committed_positions().clone();
    let initial_outbox = core.state().outbox_next();

    // Bounded in batches of at most GetRecords' limit (10,000 records): a few batches per
    // channel keep every reader busy and bound the memory of records read but not applied.
    let (dims_tx, dims_rx) = mpsc::channel(INPUT_BATCHES);
    let (sales_tx, sales_rx) = mpsc::channel(INPUT_BATCHES);
    let (control_tx, control_rx) = mpsc::channel(64);
    let (delivered_tx, delivered_rx) = watch::channel(reader.first()?.unwrap_or(initial_outbox));
    let (engine_stop_tx, engine_stop_rx) = watch::channel(false);
    let (pause_tx, pause_rx) = watch::channel(false);
    let (paused_tx, paused_rx) = watch::channel(false);
    let (committed_tx, mut committed_rx) = watch::channel(Committed {
        outbox_next: initial_outbox,
        positions: initial_positions.clone(),
    });
    let inputs = Inputs {
        dimensions: dims_rx,
        sales: sales_rx,
        control: control_rx,
        delivered: delivered_rx,
        stop: engine_stop_rx,
        pause: pause_rx,
        paused: paused_tx,
    };
    let delivered_watch = delivered_tx.subscribe();
    let handle = tokio::runtime::Handle::current();
    let alive = Arc::clone(&health.alive);
    admin::set(&alive, true);
    let engine_thread = std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || {
            let r = engine::run(core, inputs, &committed_tx, &handle);
            admin::set(&alive, false);
            r.map(|_| ())
        })
        .context("starting the engine thread")?;

    // Followers of the commits: positions for the sources, the outbox end for the sinks, and
    // finished-shard markers for the other replicas.
    let (positions_tx, positions_rx) = watch::channel(initial_positions.clone());
    let (outbox_tx, outbox_rx) = watch::channel(initial_outbox);
    let coordination = Arc::new(Coordination::new(s3.clone(), &config.dead_letter.uri)?);
    let committed_outbox = outbox_rx.clone();
    {
        let coordination = Arc::clone(&coordination);
        let committed_flag = Arc::clone(&health.committed);
        let commit_report = report.clone();
        let sales = streams.sales.clone();
        let mut published: BTreeSet<String> = initial_positions
            .iter()
            .filter(|((s, _), p)| *s == sales && **p == Position::Finished)
            .map(|((_, shard), _)| shard.clone())
            .collect();
        tokio::spawn(async move {
            while committed_rx.changed().await.is_ok() {
                let c = committed_rx.borrow_and_update().clone();
                admin::set(&committed_flag, true);
                commit_report.committed();
                outbox_tx.send_replace(c.outbox_next);
                for ((stream, shard), p) in &c.positions {
                    if *stream == sales && *p == Position::Finished && !published.contains(shard) {
                        match coordination.publish_finished(stream, shard).await {
                            Ok(()) => {
                                published.insert(shard.clone());
                            }
                            Err(e) => tracing::warn!(shard, error = %e,
                                "could not publish the finished marker; will retry"),
                        }
                    }
                }
                positions_tx.send_replace(c.positions);
            }
        });
    }

    // Sources.
    let mut sources = Vec::new();
    for (role, source) in [
        (StreamRole::Customers, &config.sources.customers),
        (StreamRole::Addresses, &config.sources.addresses),
        (StreamRole::Sales, &config.sources.sales),
    ] {
        let client = crate::aws::kinesis_client(&config.aws, source).await;
        // Enhanced fan-out: this replica's own consumer (a second subscription to a shard
        // through one consumer would take over the first).
        let mut source = source.clone();
        source.consumer_name = source.replica_consumer(settings.ordinal);
        // Every replica polls every dimension shard: their GetRecords calls share one budget.
        let readers = if role.is_dimension() {
            u32::try_from(replicas).unwrap_or(1)
        } else {
            1
        };
        let source_settings = settings.source.for_readers(readers);
        let stream = source.stream.clone();
        let cfg = StreamConfig::new(role, source, Some(assignment))?;
        let (active_tx, mut active_rx) = watch::channel(None::<BTreeSet<String>>);
        let ctx = SourceContext {
            positions: positions_rx.clone(),
            batches: if role.is_dimension() {
                dims_tx.clone()
            } else {
                sales_tx.clone()
            },
            metrics: source_metrics.clone(),
            coordination: Some(Arc::clone(&coordination)),
            cancel: cancel.clone(),
            active: role.is_dimension().then_some(active_tx),
            report: report.clone(),
        };
        if role.is_dimension() {
            let control = control_tx.clone();
            tokio::spawn(async move {
                while active_rx.changed().await.is_ok() {
                    let shards = active_rx.borrow_and_update().clone();
                    if let Some(shards) = shards
                        && control
                            .send(Control::ActiveShards {
                                stream: stream.clone(),
                                shards,
                            })
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
        sources.push(kinesis::spawn(client, cfg, source_settings, ctx)?);
    }
    drop((dims_tx, sales_tx));

    // Reference data.
    let table = |r: &tributary_crds::spec::ReferenceSource| -> Result<Table> {
        Ok(Table {
            location: S3Uri::parse(&r.uri)?,
            format: r.format,
            refresh: r.refresh_interval.std(),
        })
    };
    let loader = Loader {
        client: s3.clone(),
        items: table(&config.reference.items)?,
        promos: table(&config.reference.promos)?,
        metrics: metrics.clone(),
        dead_letter: dead_letter.clone(),
    };
    tokio::spawn(loader.run(control_tx.clone(), cancel.clone()));
    drop(control_tx);

    // Sinks, and the slowest cursor for trimming and backpressure.
    let (sinks_stop_tx, sinks_stop_rx) = watch::channel(Drain::Normal);
    let sinks_stop_tx = Arc::new(sinks_stop_tx);
    let mut sink_tasks = Vec::new();
    let mut cursors = Vec::new();
    let s3_location = S3Uri::parse(&config.sinks.s3.uri)?;
    let s3_sink = S3Sink::new(
        s3.clone(),
        s3_location,
        &streams.sales,
        &lineage,
        quantity_bytes(&config.sinks.s3.roll_size)?,
        config.sinks.s3.roll_interval.std(),
        dead_letter.clone(),
    );
    let dlq_sink = DeadLetterSink::new(
        dead_letter.clone(),
        Batching {
            max_bytes: 64 * 1024 * 1024,
            max_interval: Duration::from_secs(5),
        },
    );
    macro_rules! start_sink {
        ($sink:expr) => {{
            let (tx, rx) = watch::channel(0u64);
            cursors.push(rx);
            let s = $sink;
            let name = crate::sink::Sink::name(&s);
            let task = sink::run(
                s,
                reader.clone(),
                outbox_rx.clone(),
                tx,
                metrics.clone(),
                report.clone(),
                sinks_stop_rx.clone(),
            );
            let report = report.clone();
            let stopping = sinks_stop_rx.clone();
            sink_tasks.push(tokio::spawn(async move {
                let result = task.await;
                // A sink that returns before the job stops delivers nothing more.
                if *stopping.borrow() != Drain::Stop {
                    let why = match &result {
                        Ok(()) => "ended".to_string(),
                        Err(e) => e.to_string(),
                    };
                    report.ended(format!("sink {name}: {why}"));
                }
                result
            }));
        }};
    }
    start_sink!(s3_sink);
    start_sink!(os_sink);
    start_sink!(dlq_sink);
    {
        let reader = reader.clone();
        let mut cursors = cursors;
        tokio::spawn(async move {
            let mut trimmed = 0;
            loop {
                let min = cursors.iter().map(|c| *c.borrow()).min().unwrap_or(0);
                delivered_tx.send_replace(min);
                if min > trimmed {
                    let r = reader.clone();
                    if let Ok(Ok(())) = tokio::task::spawn_blocking(move || r.trim(min)).await {
                        trimmed = min;
                    }
                }
                let changed =
                    futures::future::select_all(cursors.iter_mut().map(|c| Box::pin(c.changed())))
                        .await;
                if changed.0.is_err() {
                    return;
                }
            }
        });
    }

    // The control API: savepoints of this replica's state.
    let savepoints = SavepointControl::new(
        settings.control_token.clone(),
        Wiring {
            client: s3.clone(),
            export,
            location: config
                .savepoints
                .as_ref()
                .map(|sp| S3Uri::parse(&sp.uri))
                .transpose()?,
            pipeline: format!("{}/{}", config.pipeline.namespace, config.pipeline.name),
            ordinal: settings.ordinal,
            replicas: u32::try_from(replicas).unwrap_or(1),
            state_id: config.state.id.clone(),
            restored_from: restored_from.clone(),
            sales_stream: streams.sales.clone(),
            pause: pause_tx,
            paused: paused_rx,
            drain: Arc::clone(&sinks_stop_tx),
            committed_outbox,
            delivered: delivered_watch,
            step_timeout: settings.drain_timeout.max(Duration::from_secs(60)),
        },
    );
    let _ = control_plane.set(ControlPlane {
        savepoints,
        state_id: config.state.id.clone(),
        restored_from,
    });

    // Ready once both reference tables are in (the engine then releases sales).
    {
        let ready = Arc::clone(&health.ready);
        let metrics = metrics.clone();
        tokio::spawn(async move {
            loop {
                let loaded = ["items", "promos"].iter().all(|t| {
                    metrics
                        .reference_loads
                        .with_label_values(&[t, "loaded"])
                        .get()
                        > 0
                });
                if loaded {
                    admin::set(&ready, true);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    // Wait for a signal, or for the engine to fail.
    let engine_done = {
        let alive = Arc::clone(&health.alive);
        async move {
            while alive.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    tokio::select! {
        () = shutdown_signal() => tracing::info!("shutdown requested: stop reading, commit, deliver"),
        () = engine_done => tracing::error!("the engine stopped"),
    }
    for s in &sources {
        s.stop();
    }
    engine_stop_tx.send_replace(true);
    let engine_result = tokio::task::spawn_blocking(move || engine_thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the engine thread panicked"))?;
    sinks_stop_tx.send_replace(Drain::Stop);
    let drain = futures::future::join_all(sink_tasks);
    match tokio::time::timeout(settings.drain_timeout, drain).await {
        Ok(results) => {
            for r in results {
                if let Err(e) = r? {
                    tracing::warn!(error = %e, "a sink stopped with an error");
                }
            }
        }
        Err(_) => {
            tracing::warn!("sinks did not finish delivering in time; the rest stays in the outbox")
        }
    }
    cancel.cancel();
    let _ = admin_task.await;
    engine_result.context("engine")?;
    tracing::info!("stopped");
    Ok(())
}
