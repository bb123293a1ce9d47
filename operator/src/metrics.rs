//! The operator's metrics, in one registry the admin server exposes:
//!
//! * `tributary_operator_*`: reconciles, their errors and duration, the leader Lease;
//! * `tributary_pipeline_*{namespace,name}`: the state of each StreamingEnrichment, read from
//!   the controller's cache at every scrape (so a deleted resource's series go with it, and a
//!   standby replica, which caches nothing, reports none);
//! * `tributary_build_info` and the process collector's `process_*`.
//!
//! Every metric is listed in `docs/metrics.md` (a test below fails when the two differ).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use tributary_crds::StreamingEnrichment;
use tributary_crds::conditions::ConditionType;

/// `result` label values of `tributary_operator_reconciles_total`.
const RESULTS: [&str; 2] = ["ok", "error"];
/// `category` label values of `tributary_operator_reconcile_errors_total` (the controller's
/// `Error::category`).
const ERROR_CATEGORIES: [&str; 2] = ["internal", "external"];

pub struct Metrics {
    pub registry: Registry,
    reconciles: IntCounterVec,
    errors: IntCounterVec,
    duration: Histogram,
    pub leader: IntGauge,
    build_info: IntGaugeVec,
    pipelines: PipelineCollector,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "tributary_operator_reconciles_total",
                "Reconciles by result (ok, error)",
            ),
            &["result"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "tributary_operator_reconcile_errors_total",
                "Failed reconciles by error category",
            ),
            &["category"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "tributary_operator_reconcile_duration_seconds",
                "Time of one reconcile",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let leader = IntGauge::new(
            "tributary_operator_leader",
            "1 while this replica holds the leader Lease",
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "tributary_build_info",
                "Always 1: the version of the binary that runs",
            ),
            &["version", "binary"],
        )?;
        let m = Self {
            registry,
            reconciles,
            errors,
            duration,
            leader,
            build_info,
            pipelines: PipelineCollector::new()?,
        };
        for c in m.collectors() {
            m.registry.register(c)?;
        }
        m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), "tributary-operator"])
            .set(1);
        // Zeros from the start, so rates and dashboards have a series before the first error.
        for r in RESULTS {
            m.reconciles.with_label_values(&[r]);
        }
        for c in ERROR_CATEGORIES {
            m.errors.with_label_values(&[c]);
        }
        Ok(m)
    }

    /// Every metric but the process collector's, for registration (and the documentation test).
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.reconciles.clone()),
            Box::new(self.errors.clone()),
            Box::new(self.duration.clone()),
            Box::new(self.leader.clone()),
            Box::new(self.build_info.clone()),
            Box::new(self.pipelines.clone()),
        ]
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

    /// Report the `tributary_pipeline_*` metrics of the resources in these caches (the
    /// controllers' own, one per watched scope).
    pub fn watch_pipelines(&self, stores: Vec<Store<StreamingEnrichment>>) {
        let mut s = self
            .pipelines
            .stores
            .write()
            .unwrap_or_else(|p| p.into_inner());
        *s = stores;
    }
}

/// The `tributary_pipeline_*` gauges, computed from the cached resources at each collect.
#[derive(Clone)]
struct PipelineCollector {
    stores: Arc<RwLock<Vec<Store<StreamingEnrichment>>>>,
    descs: Vec<Desc>,
}

/// One gauge of [`PipelineCollector`]: name, help, labels beyond `namespace` and `name`.
const PIPELINE_GAUGES: [(&str, &str, &[&str]); 5] = [
    (
        "tributary_pipeline_ready",
        "1 while the resource's Ready condition is True, else 0; reason is the condition's",
        &["reason"],
    ),
    (
        "tributary_pipeline_replicas",
        "Job replicas the StatefulSet runs (status.replicas)",
        &[],
    ),
    (
        "tributary_pipeline_ready_replicas",
        "Job replicas that are ready (status.readyReplicas)",
        &[],
    ),
    (
        "tributary_pipeline_last_savepoint_timestamp_seconds",
        "When the latest complete savepoint finished (status.lastSavepoint.completedAt), \
         Unix time; absent before the first one",
        &[],
    ),
    (
        "tributary_pipeline_savepoint_failures",
        "Failed savepoint operations in a row at the current target (status.operationRetry)",
        &[],
    ),
];

fn pipeline_opts(i: usize) -> (Opts, Vec<&'static str>) {
    let (name, help, extra) = PIPELINE_GAUGES[i];
    let mut labels = vec!["namespace", "name"];
    labels.extend_from_slice(extra);
    (Opts::new(name, help), labels)
}

impl PipelineCollector {
    fn new() -> Result<Self, prometheus::Error> {
        let mut descs = Vec::new();
        for i in 0..PIPELINE_GAUGES.len() {
            let (opts, labels) = pipeline_opts(i);
            let vec = GaugeVec::new(opts, &labels)?;
            descs.extend(vec.desc().into_iter().cloned());
        }
        Ok(Self {
            stores: Arc::default(),
            descs,
        })
    }

    fn families(resources: &[Arc<StreamingEnrichment>]) -> Vec<MetricFamily> {
        let vecs: Vec<GaugeVec> = (0..PIPELINE_GAUGES.len())
            .filter_map(|i| {
                let (opts, labels) = pipeline_opts(i);
                GaugeVec::new(opts, &labels).ok()
            })
            .collect();
        let [
            ready,
            replicas,
            ready_replicas,
            last_savepoint,
            savepoint_failures,
        ] = vecs.as_slice()
        else {
            return Vec::new();
        };
        for se in resources {
            let ns = se.namespace().unwrap_or_default();
            let name = se.name_any();
            let at = [ns.as_str(), name.as_str()];
            let status = se.status.clone().unwrap_or_default();
            let condition = status
                .conditions
                .iter()
                .find(|c| c.type_ == ConditionType::Ready.as_str());
            let (is_ready, reason) = match condition {
                Some(c) => (c.status == "True", c.reason.as_str()),
                None => (false, "NoStatus"),
            };
            ready
                .with_label_values(&[ns.as_str(), name.as_str(), reason])
                .set(if is_ready { 1.0 } else { 0.0 });
            replicas
                .with_label_values(&at)
                .set(f64::from(status.replicas));
            ready_replicas
                .with_label_values(&at)
                .set(f64::from(status.ready_replicas));
            if let Some(sp) = &status.last_savepoint {
                last_savepoint
                    .with_label_values(&at)
                    .set(sp.completed_at.0.as_millisecond() as f64 / 1000.0);
            }
            savepoint_failures.with_label_values(&at).set(
                status
                    .operation_retry
                    .map_or(0.0, |r| f64::from(r.attempts)),
            );
        }
        vecs.iter().flat_map(Collector::collect).collect()
    }
}

impl Collector for PipelineCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let stores = self.stores.read().unwrap_or_else(|p| p.into_inner());
        let resources: Vec<Arc<StreamingEnrichment>> =
            stores.iter().flat_map(Store::state).collect();
        Self::families(&resources)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use kube::runtime::{reflector, watcher};
    use prometheus::Encoder;
    use tributary_crds::{OperationRetry, SavepointRef, StreamingEnrichmentStatus};

    use super::*;
    use crate::controller::build::fixtures::example;

    /// The metric names of one section (`## <title>`) of `docs/metrics.md`: the first
    /// backquoted word of each table row.
    fn documented(section: &str) -> BTreeSet<String> {
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

    fn text(m: &Metrics) -> String {
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&m.registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn every_metric_is_documented_and_every_documented_one_exists() {
        let m = Metrics::new().unwrap();
        let process = prometheus::process_collector::ProcessCollector::for_self();
        let registered: BTreeSet<String> = m
            .collectors()
            .iter()
            .chain(std::iter::once(&(Box::new(process) as Box<dyn Collector>)))
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect();
        let documented = documented("Operator");
        let missing: Vec<_> = registered.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&registered).collect();
        assert!(
            missing.is_empty(),
            "registered but not in docs/metrics.md (Operator): {missing:?}"
        );
        assert!(
            stale.is_empty(),
            "in docs/metrics.md (Operator) but not registered: {stale:?}"
        );
        // What a scrape shows is what is registered (no prefix added on the way).
        for f in m.registry.gather() {
            assert!(registered.contains(f.name()), "{} exposed", f.name());
        }
    }

    #[test]
    fn exposes_build_info_process_metrics_and_zeros() {
        let m = Metrics::new().unwrap();
        let t = text(&m);
        let version = env!("CARGO_PKG_VERSION");
        for want in [
            format!(
                "tributary_build_info{{binary=\"tributary-operator\",version=\"{version}\"}} 1"
            ),
            "tributary_operator_reconciles_total{result=\"error\"} 0".into(),
            "tributary_operator_reconcile_errors_total{category=\"external\"} 0".into(),
            "process_resident_memory_bytes ".into(),
            "process_cpu_seconds_total ".into(),
        ] {
            assert!(t.contains(&want), "{want} in:\n{t}");
        }
        assert!(!t.contains("tributary_pipeline_"), "no cache, no pipelines");
    }

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn pipeline_gauges_follow_the_cached_status() {
        let m = Metrics::new().unwrap();
        let mut writer = reflector::store::Writer::<StreamingEnrichment>::default();
        m.watch_pipelines(vec![writer.as_reader()]);

        let mut running = example("minimal.yaml");
        running.metadata.name = Some("sales".into());
        running.metadata.namespace = Some("analytics".into());
        let completed: k8s_openapi::jiff::Timestamp = "2026-01-02T03:04:05.5Z".parse().unwrap();
        running.status = Some(StreamingEnrichmentStatus {
            conditions: vec![
                condition("Progressing", "False", "Stable"),
                condition("Ready", "True", "Running"),
            ],
            replicas: 2,
            ready_replicas: 2,
            last_savepoint: Some(SavepointRef {
                id: "sp-1".into(),
                uri: "s3://b/sp-1/".into(),
                completed_at: Time(completed),
                replicas: 2,
            }),
            ..Default::default()
        });
        let mut suspended = example("minimal.yaml");
        suspended.metadata.name = Some("old".into());
        suspended.metadata.namespace = Some("analytics".into());
        suspended.status = Some(StreamingEnrichmentStatus {
            conditions: vec![condition("Ready", "False", "Suspended")],
            operation_retry: Some(OperationRetry {
                attempts: 3,
                not_before: Time(completed),
                reason: "SavepointTimeout".into(),
                message: String::new(),
                target_config_hash: "h".into(),
                target_replicas: 1,
            }),
            ..Default::default()
        });
        let mut fresh = example("minimal.yaml");
        fresh.metadata.name = Some("new".into());
        fresh.metadata.namespace = Some("analytics".into());
        fresh.status = None;
        for se in [&running, &suspended, &fresh] {
            writer.apply_watcher_event(&watcher::Event::Apply(se.clone()));
        }

        let t = text(&m);
        for want in [
            r#"tributary_pipeline_ready{name="sales",namespace="analytics",reason="Running"} 1"#,
            r#"tributary_pipeline_ready{name="old",namespace="analytics",reason="Suspended"} 0"#,
            r#"tributary_pipeline_ready{name="new",namespace="analytics",reason="NoStatus"} 0"#,
            r#"tributary_pipeline_replicas{name="sales",namespace="analytics"} 2"#,
            r#"tributary_pipeline_ready_replicas{name="old",namespace="analytics"} 0"#,
            r#"tributary_pipeline_last_savepoint_timestamp_seconds{name="sales",namespace="analytics"} 1767323045.5"#,
            r#"tributary_pipeline_savepoint_failures{name="old",namespace="analytics"} 3"#,
            r#"tributary_pipeline_savepoint_failures{name="sales",namespace="analytics"} 0"#,
        ] {
            assert!(t.contains(want), "{want} in:\n{t}");
        }
        assert!(
            !t.contains(r#"tributary_pipeline_last_savepoint_timestamp_seconds{name="old""#),
            "no savepoint, no series"
        );

        // A deleted resource's series go with it.
        writer.apply_watcher_event(&watcher::Event::Delete(suspended));
        let t = text(&m);
        assert!(!t.contains(r#"name="old""#), "{t}");
        assert!(t.contains(r#"name="sales""#), "{t}");
    }
}
