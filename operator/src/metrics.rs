//! Operator metrics, named `tributary_operator_<name>_<unit>` with bounded labels.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: Histogram,
    pub leader: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("tributary_operator".into()), None)?;
        let reconciles = IntCounterVec::new(
            Opts::new("reconciles_total", "Reconciles by result (ok, error)"),
            &["result"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "reconcile_errors_total",
                "Failed reconciles by error category",
            ),
            &["category"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new("reconcile_duration_seconds", "Time of one reconcile").buckets(
                vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
        )?;
        let leader = IntGauge::new("leader", "1 while this replica holds the leader Lease")?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
        })
    }

    pub fn observe_reconcile(&self, took: Duration, error_category: Option<&str>) {
        self.duration.observe(took.as_secs_f64());
        match error_category {
            None => self.reconciles.with_label_values(&["ok"]).inc(),
            Some(c) => {
                self.reconciles.with_label_values(&["error"]).inc();
                self.errors.with_label_values(&[c]).inc();
            }
        }
    }
}
