//! Prometheus metrics of the Kinesis sources. One [`SourceMetrics`] is registered once and cloned
//! into every source and shard reader (prometheus metrics are shared handles).

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// `outcome` label values of `tributary_source_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Throttled,
    ExpiredIterator,
    Error,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Throttled => "throttled",
            Self::ExpiredIterator => "expired_iterator",
            Self::Error => "error",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SourceMetrics {
    /// `tributary_source_behind_latest_seconds{stream,shard}` (Kinesis' `MillisBehindLatest`
    /// in seconds).
    pub behind_latest: GaugeVec,
    /// `tributary_source_records_total{stream}`.
    pub records_total: IntCounterVec,
    /// `tributary_source_requests_total{stream,outcome}`.
    pub requests_total: IntCounterVec,
    /// `tributary_source_shards_finished_total{stream}`.
    pub shards_finished_total: IntCounterVec,
    /// `tributary_source_shards_reading{stream}`.
    pub shards_reading: IntGaugeVec,
}

impl SourceMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            behind_latest: GaugeVec::new(
                Opts::new(
                    "tributary_source_behind_latest_seconds",
                    "How far the last read of a shard was behind the tip of the stream",
                ),
                &["stream", "shard"],
            )?,
            records_total: IntCounterVec::new(
                Opts::new("tributary_source_records_total", "Records read"),
                &["stream"],
            )?,
            requests_total: IntCounterVec::new(
                Opts::new(
                    "tributary_source_requests_total",
                    "Kinesis requests of the sources by outcome",
                ),
                &["stream", "outcome"],
            )?,
            shards_finished_total: IntCounterVec::new(
                Opts::new(
                    "tributary_source_shards_finished_total",
                    "Closed shards read to their end",
                ),
                &["stream"],
            )?,
            shards_reading: IntGaugeVec::new(
                Opts::new(
                    "tributary_source_shards_reading",
                    "Shards this replica is reading now",
                ),
                &["stream"],
            )?,
        };
        registry.register(Box::new(metrics.behind_latest.clone()))?;
        registry.register(Box::new(metrics.records_total.clone()))?;
        registry.register(Box::new(metrics.requests_total.clone()))?;
        registry.register(Box::new(metrics.shards_finished_total.clone()))?;
        registry.register(Box::new(metrics.shards_reading.clone()))?;
        Ok(metrics)
    }

    pub(crate) fn request(&self, stream: &str, outcome: Outcome) {
        self.requests_total
            .with_label_values(&[stream, outcome.as_str()])
            .inc();
    }

    pub(crate) fn records(&self, stream: &str, n: usize) {
        self.records_total
            .with_label_values(&[stream])
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    pub(crate) fn behind(&self, stream: &str, shard: &str, millis: Option<i64>) {
        if let Some(ms) = millis {
            self.behind_latest
                .with_label_values(&[stream, shard])
                .set(ms as f64 / 1000.0);
        }
    }

    pub(crate) fn shard_finished(&self, stream: &str, shard: &str) {
        self.shards_finished_total
            .with_label_values(&[stream])
            .inc();
        // A finished shard is never read again: drop its series.
        let _ = self.behind_latest.remove_label_values(&[stream, shard]);
    }

    pub(crate) fn set_reading(&self, stream: &str, n: usize) {
        // A zero for the stream before its first closed shard, so rates have a series.
        self.shards_finished_total.with_label_values(&[stream]);
        self.shards_reading
            .with_label_values(&[stream])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_the_documented_names() {
        let registry = Registry::new();
        let m = SourceMetrics::register(&registry).unwrap();
        m.request("sales", Outcome::Throttled);
        m.records("sales", 3);
        m.behind("sales", "shardId-0", Some(12));
        m.set_reading("sales", 2);
        m.shard_finished("sales", "shardId-1");
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for want in [
            "tributary_source_behind_latest_seconds",
            "tributary_source_records_total",
            "tributary_source_requests_total",
            "tributary_source_shards_finished_total",
            "tributary_source_shards_reading",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert_eq!(
            m.requests_total
                .with_label_values(&["sales", "throttled"])
                .get(),
            1
        );
        assert_eq!(m.records_total.with_label_values(&["sales"]).get(), 3);
        // Registering twice in one registry is refused, not silently duplicated.
        assert!(SourceMetrics::register(&registry).is_err());
    }
}
