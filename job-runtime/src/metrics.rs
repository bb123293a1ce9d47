//! The runtime's Prometheus metrics (`tributary_*`), registered in one registry that the admin
//! server exposes. The sources register theirs (`tributary_source_*`) in the same registry.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::events::DecodeError;
use crate::join::DeadLetterReason;

/// Errors registering metrics (a duplicate name is a programming error, reported at start).
pub type MetricsError = prometheus::Error;

#[derive(Clone, Debug)]
pub struct Metrics {
    /// Records applied, by stream role.
    pub records_in: IntCounterVec,
    /// Enriched documents committed to the outbox.
    pub documents_out: IntCounter,
    /// Documents emitted with a `*_after_sale` flag.
    pub documents_flagged: IntCounter,
    /// Dead-letter records, by reason.
    pub dead_letters: IntCounterVec,
    /// Sales waiting in state for a missing piece.
    pub join_waiting: IntGauge,
    /// Sales read but held back by the barrier (not yet joined).
    pub barrier_held: IntGauge,
    /// Versions compacted away.
    pub versions_compacted: IntCounter,
    /// State commits and their duration.
    pub commit_seconds: Histogram,
    /// Outbox entries not yet delivered by the slowest sink.
    pub outbox_lag: IntGauge,
    /// 1 while input is paused because the outbox is full (a sink is slow or down).
    pub backpressure: IntGauge,
    /// Per sink: entries delivered, delivery attempts that failed, write duration.
    pub sink_delivered: IntCounterVec,
    pub sink_failures: IntCounterVec,
    pub sink_write_seconds: HistogramVec,
    /// Reference data: rows in the current snapshot, loads by outcome, rows rejected.
    pub reference_rows: IntGaugeVec,
    pub reference_loads: IntCounterVec,
    pub reference_rejected_rows: IntCounterVec,
    /// RocksDB properties, refreshed periodically.
    pub rocksdb: IntGaugeVec,
    /// Peak resident memory of the process (VmHWM), refreshed periodically.
    pub peak_rss: IntGauge,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Self, MetricsError> {
        let m = Self {
            records_in: IntCounterVec::new(
                Opts::new(
                    "tributary_records_in_total",
                    "Input records applied, by stream",
                ),
                &["stream"],
            )?,
            documents_out: IntCounter::new(
                "tributary_documents_out_total",
                "Enriched documents committed for the sinks",
            )?,
            documents_flagged: IntCounter::new(
                "tributary_documents_flagged_total",
                "Documents joined with a dimension version later than the sale",
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "tributary_dead_letters_total",
                    "Records written to dead-letter, by reason",
                ),
                &["reason"],
            )?,
            join_waiting: IntGauge::new(
                "tributary_join_waiting",
                "Sales waiting in state for a missing customer, address, item or promo",
            )?,
            barrier_held: IntGauge::new(
                "tributary_barrier_held",
                "Sales read but held until the dimension streams have caught up with them",
            )?,
            versions_compacted: IntCounter::new(
                "tributary_join_versions_compacted_total",
                "Dimension versions removed as older than allowedLateness",
            )?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "tributary_commit_seconds",
                    "Duration of a state commit (state, offsets and outputs in one batch)",
                )
                .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
            )?,
            outbox_lag: IntGauge::new(
                "tributary_outbox_lag",
                "Committed outputs not yet delivered by the slowest sink",
            )?,
            backpressure: IntGauge::new(
                "tributary_backpressure",
                "1 while reading is paused because the sinks are behind",
            )?,
            sink_delivered: IntCounterVec::new(
                Opts::new(
                    "tributary_sink_delivered_total",
                    "Outbox entries delivered, by sink",
                ),
                &["sink"],
            )?,
            sink_failures: IntCounterVec::new(
                Opts::new(
                    "tributary_sink_failures_total",
                    "Failed delivery attempts (retried), by sink",
                ),
                &["sink"],
            )?,
            sink_write_seconds: HistogramVec::new(
                HistogramOpts::new("tributary_sink_write_seconds", "Duration of a sink write"),
                &["sink"],
            )?,
            reference_rows: IntGaugeVec::new(
                Opts::new(
                    "tributary_reference_rows",
                    "Rows in the reference snapshot in use",
                ),
                &["table"],
            )?,
            reference_loads: IntCounterVec::new(
                Opts::new(
                    "tributary_reference_loads_total",
                    "Reference scans, by table and outcome",
                ),
                &["table", "outcome"],
            )?,
            reference_rejected_rows: IntCounterVec::new(
                Opts::new(
                    "tributary_reference_rejected_rows_total",
                    "Reference rows rejected, by table",
                ),
                &["table"],
            )?,
            rocksdb: IntGaugeVec::new(
                Opts::new("tributary_rocksdb", "RocksDB properties of the state"),
                &["property"],
            )?,
            peak_rss: IntGauge::new(
                "tributary_process_peak_rss_bytes",
                "Peak resident memory of the job process (VmHWM)",
            )?,
        };
        registry.register(Box::new(m.records_in.clone()))?;
        registry.register(Box::new(m.documents_out.clone()))?;
        registry.register(Box::new(m.documents_flagged.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.join_waiting.clone()))?;
        registry.register(Box::new(m.barrier_held.clone()))?;
        registry.register(Box::new(m.versions_compacted.clone()))?;
        registry.register(Box::new(m.commit_seconds.clone()))?;
        registry.register(Box::new(m.outbox_lag.clone()))?;
        registry.register(Box::new(m.backpressure.clone()))?;
        registry.register(Box::new(m.sink_delivered.clone()))?;
        registry.register(Box::new(m.sink_failures.clone()))?;
        registry.register(Box::new(m.sink_write_seconds.clone()))?;
        registry.register(Box::new(m.reference_rows.clone()))?;
        registry.register(Box::new(m.reference_loads.clone()))?;
        registry.register(Box::new(m.reference_rejected_rows.clone()))?;
        registry.register(Box::new(m.rocksdb.clone()))?;
        registry.register(Box::new(m.peak_rss.clone()))?;
        // Pre-create the bounded label sets so dashboards see zeros, not gaps.
        for reason in DecodeError::REASONS {
            m.dead_letters.with_label_values(&[reason]);
        }
        for reason in DeadLetterReason::ALL {
            m.dead_letters.with_label_values(&[reason.as_str()]);
        }
        for reason in crate::sink::opensearch::DEAD_LETTER_REASONS {
            m.dead_letters.with_label_values(&[reason]);
        }
        for stream in crate::source::StreamRole::ALL {
            m.records_in.with_label_values(&[stream.as_str()]);
        }
        Ok(m)
    }

    /// Read the process's peak resident memory (Linux `/proc/self/status`).
    pub fn refresh_peak_rss(&self) {
        let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
            return;
        };
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok());
        if let Some(kb) = kb {
            self.peak_rss.set(kb.saturating_mul(1024));
        }
    }

    /// Metrics in a private registry (tests, benchmarks).
    pub fn unregistered() -> Self {
        match Self::new(&Registry::new()) {
            Ok(m) => m,
            // Registration into a fresh registry cannot collide.
            Err(e) => unreachable!("fresh registry: {e}"),
        }
    }
}
