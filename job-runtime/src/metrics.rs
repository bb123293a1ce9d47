//! The runtime's Prometheus metrics (`tributary_*`), registered in one registry that the admin
//! server exposes. The sources register theirs (`tributary_source_*`) in the same registry, and
//! the process collector adds `process_*`. Every metric is listed in `docs/metrics.md` (a test
//! below fails when the two differ).
//!
//! Conventions: base units (seconds, bytes) in the name's last word, one unit per name, `_total`
//! on counters, and bounded labels only (stream, sink, table, reason, outcome; the per-shard
//! gauge of the sources is bounded by the stream's shard count and dropped with the shard).

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::events::DecodeError;
use crate::join::DeadLetterReason;

/// Errors registering metrics (a duplicate name is a programming error, reported at start).
pub type MetricsError = prometheus::Error;

/// `sink` label values: the names of the sinks the job runs ([`crate::sink::Sink::name`]).
pub const SINKS: [&str; 3] = ["opensearch", "s3", "dead-letter"];

/// `table` label values of the reference data.
pub const REFERENCE_TABLES: [&str; 2] = ["items", "promos"];

/// `outcome` label values of `tributary_reference_loads_total`.
pub const REFERENCE_OUTCOMES: [&str; 4] = ["loaded", "unreachable", "bad_file", "too_large"];

#[derive(Clone, Debug)]
pub struct Metrics {
    /// `tributary_build_info{version,binary}`: always 1.
    pub build_info: IntGaugeVec,
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
    /// Per sink: seconds from a sale's `sale_datetime` to the acknowledgement of its document.
    pub sink_freshness: HistogramVec,
    /// Reference data: rows in the current snapshot, loads by outcome, rows rejected.
    pub reference_rows: IntGaugeVec,
    pub reference_loads: IntCounterVec,
    pub reference_rejected_rows: IntCounterVec,
    /// RocksDB and outbox properties ([`crate::state::RocksState::properties`]), refreshed
    /// periodically: one gauge per property, each in one unit.
    pub rocksdb_estimated_keys: IntGauge,
    pub rocksdb_live_sst_files_size: IntGauge,
    pub rocksdb_memtables_size: IntGauge,
    pub rocksdb_pending_compaction: IntGauge,
    pub rocksdb_block_cache_usage: IntGauge,
    pub outbox_segments: IntGauge,
    pub outbox_size: IntGauge,
    /// Peak resident memory of the process (VmHWM), refreshed periodically.
    pub peak_rss: IntGauge,
}

/// Buckets of the freshness histogram: a second to a day (a replay of old data lands in +Inf).
const FRESHNESS_BUCKETS: [f64; 16] = [
    0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0,
    86400.0,
];

fn gauge(name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    IntGauge::new(name, help)
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Self, MetricsError> {
        let m = Self {
            build_info: IntGaugeVec::new(
                Opts::new(
                    "tributary_build_info",
                    "Always 1: the version of the binary that runs",
                ),
                &["version", "binary"],
            )?,
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
            join_waiting: gauge(
                "tributary_join_waiting_sales",
                "Sales waiting in state for a missing customer, address, item or promo",
            )?,
            barrier_held: gauge(
                "tributary_join_barrier_held_sales",
                "Sales read but held until the dimension streams have caught up with them",
            )?,
            versions_compacted: IntCounter::new(
                "tributary_join_versions_compacted_total",
                "Dimension versions removed as older than allowedLateness",
            )?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "tributary_state_commit_duration_seconds",
                    "Duration of a state commit (state, offsets and outputs in one batch)",
                )
                .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
            )?,
            outbox_lag: gauge(
                "tributary_outbox_pending_entries",
                "Committed outputs not yet delivered by the slowest sink",
            )?,
            backpressure: gauge(
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
                HistogramOpts::new(
                    "tributary_sink_write_duration_seconds",
                    "Duration of a successful sink write of one outbox range",
                ),
                &["sink"],
            )?,
            sink_freshness: HistogramVec::new(
                HistogramOpts::new(
                    "tributary_sink_freshness_seconds",
                    "Seconds from a sale's sale_datetime to the sink's acknowledgement of its document",
                )
                .buckets(FRESHNESS_BUCKETS.to_vec()),
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
            rocksdb_estimated_keys: gauge(
                "tributary_rocksdb_estimated_keys",
                "RocksDB's estimate of the keys in the state, over its column families",
            )?,
            rocksdb_live_sst_files_size: gauge(
                "tributary_rocksdb_live_sst_files_size_bytes",
                "Size of the state's live SST files",
            )?,
            rocksdb_memtables_size: gauge(
                "tributary_rocksdb_memtables_size_bytes",
                "Size of the state's memtables",
            )?,
            rocksdb_pending_compaction: gauge(
                "tributary_rocksdb_pending_compaction_bytes",
                "Bytes RocksDB estimates compaction still has to rewrite",
            )?,
            rocksdb_block_cache_usage: gauge(
                "tributary_rocksdb_block_cache_usage_bytes",
                "Memory held by RocksDB's block cache",
            )?,
            outbox_segments: gauge(
                "tributary_outbox_segments",
                "Segment files of the outbox on the state volume",
            )?,
            outbox_size: gauge(
                "tributary_outbox_size_bytes",
                "Size of the outbox's segment files on the state volume",
            )?,
            peak_rss: gauge(
                "tributary_process_peak_rss_bytes",
                "Peak resident memory of the job process (VmHWM)",
            )?,
        };
        for c in m.collectors() {
            registry.register(c)?;
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), "tributary-runtime"])
            .set(1);
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
        for sink in SINKS {
            m.sink_delivered.with_label_values(&[sink]);
            m.sink_failures.with_label_values(&[sink]);
            m.sink_write_seconds.with_label_values(&[sink]);
        }
        m.sink_freshness.with_label_values(&["opensearch"]);
        for table in REFERENCE_TABLES {
            m.reference_rows.with_label_values(&[table]);
            m.reference_rejected_rows.with_label_values(&[table]);
            for outcome in REFERENCE_OUTCOMES {
                m.reference_loads.with_label_values(&[table, outcome]);
            }
        }
        Ok(m)
    }

    /// Every metric of this struct, for registration (and for the documentation test).
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.build_info.clone()),
            Box::new(self.records_in.clone()),
            Box::new(self.documents_out.clone()),
            Box::new(self.documents_flagged.clone()),
            Box::new(self.dead_letters.clone()),
            Box::new(self.join_waiting.clone()),
            Box::new(self.barrier_held.clone()),
            Box::new(self.versions_compacted.clone()),
            Box::new(self.commit_seconds.clone()),
            Box::new(self.outbox_lag.clone()),
            Box::new(self.backpressure.clone()),
            Box::new(self.sink_delivered.clone()),
            Box::new(self.sink_failures.clone()),
            Box::new(self.sink_write_seconds.clone()),
            Box::new(self.sink_freshness.clone()),
            Box::new(self.reference_rows.clone()),
            Box::new(self.reference_loads.clone()),
            Box::new(self.reference_rejected_rows.clone()),
            Box::new(self.rocksdb_estimated_keys.clone()),
            Box::new(self.rocksdb_live_sst_files_size.clone()),
            Box::new(self.rocksdb_memtables_size.clone()),
            Box::new(self.rocksdb_pending_compaction.clone()),
            Box::new(self.rocksdb_block_cache_usage.clone()),
            Box::new(self.outbox_segments.clone()),
            Box::new(self.outbox_size.clone()),
            Box::new(self.peak_rss.clone()),
        ]
    }

    /// The gauge of one state property ([`crate::state::RocksState::properties`]' names).
    fn property_gauge(&self, name: &str) -> Option<&IntGauge> {
        Some(match name {
            "estimate_num_keys" => &self.rocksdb_estimated_keys,
            "live_sst_files_size_bytes" => &self.rocksdb_live_sst_files_size,
            "memtables_size_bytes" => &self.rocksdb_memtables_size,
            "pending_compaction_bytes" => &self.rocksdb_pending_compaction,
            "block_cache_usage_bytes" => &self.rocksdb_block_cache_usage,
            "outbox_segments" => &self.outbox_segments,
            "outbox_bytes" => &self.outbox_size,
            _ => return None,
        })
    }

    /// Set the gauges of the state's properties (`(name, value)` pairs).
    pub fn set_state_properties(&self, properties: &[(&str, i64)]) {
        for (name, value) in properties {
            if let Some(g) = self.property_gauge(name) {
                g.set(*value);
            }
        }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::source::metrics::{Outcome, SourceMetrics};

    /// The metric names of one section (`## <title>`) of `docs/metrics.md`: the first
    /// backquoted word of each table row.
    pub(crate) fn documented(section: &str) -> BTreeSet<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let heading = format!("## {section}");
        let body = doc
            .split("\n## ")
            .find(|s| format!("## {s}").starts_with(&heading))
            .unwrap_or_else(|| panic!("no section {heading:?} in docs/metrics.md"));
        body.lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_string)
            .collect()
    }

    /// Every metric the runtime's registry exposes, as the job's `run` builds it: these
    /// metrics, the sources', and the process collector's.
    fn registered() -> BTreeSet<String> {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        let process = prometheus::process_collector::ProcessCollector::for_self();
        let mut names: BTreeSet<String> = m
            .collectors()
            .iter()
            .chain(std::iter::once(&(Box::new(process) as Box<dyn Collector>)))
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect();
        // The sources' vectors show in a gather once each has a child.
        let s = SourceMetrics::register(&registry).unwrap();
        s.request("sales", Outcome::Ok);
        s.records("sales", 1);
        s.behind("sales", "shardId-0", Some(1));
        s.set_reading("sales", 1);
        s.shard_finished("sales", "shardId-1");
        names.extend(registry.gather().iter().map(|f| f.name().to_string()));
        names
    }

    #[test]
    fn every_metric_is_documented_and_every_documented_one_exists() {
        let registered = registered();
        let documented = documented("Job runtime");
        let missing: Vec<_> = registered.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&registered).collect();
        assert!(
            missing.is_empty(),
            "registered but not in docs/metrics.md (Job runtime): {missing:?}"
        );
        assert!(
            stale.is_empty(),
            "in docs/metrics.md (Job runtime) but not registered: {stale:?}"
        );
    }

    #[test]
    fn names_follow_the_conventions() {
        let registry = Registry::new();
        let _m = Metrics::new(&registry).unwrap();
        for f in registry.gather() {
            let name = f.name();
            let counter = f.get_field_type() == prometheus::proto::MetricType::COUNTER;
            assert_eq!(
                counter,
                name.ends_with("_total"),
                "{name}: _total on counters only"
            );
            assert!(!name.contains("millis"), "{name}: base units");
        }
    }

    #[test]
    fn build_info_and_zeros_before_the_first_event() {
        let registry = Registry::new();
        let _m = Metrics::new(&registry).unwrap();
        let text = {
            use prometheus::Encoder;
            let mut buf = Vec::new();
            prometheus::TextEncoder::new()
                .encode(&registry.gather(), &mut buf)
                .unwrap();
            String::from_utf8(buf).unwrap()
        };
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!(
                "tributary_build_info{{binary=\"tributary-runtime\",version=\"{version}\"}} 1"
            )),
            "{text}"
        );
        for sink in SINKS {
            assert!(
                text.contains(&format!(
                    "tributary_sink_failures_total{{sink=\"{sink}\"}} 0"
                )),
                "{sink}: {text}"
            );
        }
        assert!(text.contains("tributary_sink_freshness_seconds_count{sink=\"opensearch\"} 0"));
    }

    #[test]
    fn every_state_property_has_its_gauge() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::state::RocksState::open(dir.path()).unwrap();
        let properties = state.properties();
        assert!(!properties.is_empty());
        let m = Metrics::unregistered();
        for (name, _) in &properties {
            assert!(m.property_gauge(name).is_some(), "no gauge for {name}");
        }
        m.set_state_properties(&[("outbox_bytes", 42), ("unknown", 1)]);
        assert_eq!(m.outbox_size.get(), 42);
    }
}
