//! What the pipeline knows about itself, served as a [`PipelineReport`] at `GET /status` and
//! read by the operator for the resource's `SourcesHealthy`, `SinksHealthy` and `Ready`.
//!
//! - **Sources**: each shard reader records its successful reads (with `MillisBehindLatest`) and
//!   its failures with a reason; a stream is unhealthy while any of its shards (or its shard
//!   listing) last failed for a reason that needs a human (`StreamNotFound`, `AccessDenied`,
//!   `KinesisUnreachable` after repeated failures). Throttling and expired iterators are the
//!   normal life of a reader and never count.
//! - **Sinks**: the delivery loop records each write's outcome; a sink is unhealthy from its
//!   first failed attempt until a write succeeds, with the reason its error carries
//!   (`OpenSearchForbidden`, `S3AccessDenied`, ...).
//! - **Ended tasks**: a source or sink task that returns while the job runs is recorded, and
//!   `/healthz` fails from then on (the kubelet restarts the pod).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tributary_crds::control::{ComponentReport, PipelineReport};

/// One failure, kept until the next success of the same component.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fault {
    reason: &'static str,
    message: String,
    since: String,
}

#[derive(Default, Debug)]
struct Inner {
    /// Source role -> shard (or `*` for the stream's listing) -> its fault.
    source_faults: BTreeMap<String, BTreeMap<String, Fault>>,
    /// Source role -> shard -> MillisBehindLatest of its last read.
    behind_ms: BTreeMap<String, BTreeMap<String, i64>>,
    sink_faults: BTreeMap<String, Option<Fault>>,
    ended: Vec<String>,
    last_commit: Option<String>,
}

/// Shared by the sources, the sinks and the admin server.
#[derive(Clone, Default, Debug)]
pub struct Report(Arc<Mutex<Inner>>);

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Report {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut inner)
    }

    /// The source roles and sink names the report lists even before they did anything.
    pub fn expect(&self, sources: &[&str], sinks: &[&str]) {
        self.with(|i| {
            for s in sources {
                i.source_faults.entry((*s).to_string()).or_default();
            }
            for s in sinks {
                i.sink_faults.entry((*s).to_string()).or_default();
            }
        });
    }

    /// A shard (or the listing, `shard = "*"`) of a source read successfully.
    pub fn source_ok(&self, role: &str, shard: &str, behind_ms: Option<i64>) {
        self.with(|i| {
            if let Some(f) = i.source_faults.get_mut(role) {
                f.remove(shard);
            }
            if let Some(ms) = behind_ms {
                i.behind_ms
                    .entry(role.to_string())
                    .or_default()
                    .insert(shard.to_string(), ms);
            }
        });
    }

    /// A shard (or the listing) of a source failed for `reason`.
    pub fn source_failed(&self, role: &str, shard: &str, reason: &'static str, message: String) {
        self.with(|i| {
            let faults = i.source_faults.entry(role.to_string()).or_default();
            let since = faults
                .get(shard)
                .filter(|f| f.reason == reason)
                .map_or_else(now, |f| f.since.clone());
            faults.insert(
                shard.to_string(),
                Fault {
                    reason,
                    message,
                    since,
                },
            );
        });
    }

    /// A shard this replica no longer reads (finished): its lag is no longer reported.
    pub fn source_shard_done(&self, role: &str, shard: &str) {
        self.with(|i| {
            if let Some(b) = i.behind_ms.get_mut(role) {
                b.remove(shard);
            }
            if let Some(f) = i.source_faults.get_mut(role) {
                f.remove(shard);
            }
        });
    }

    pub fn sink_ok(&self, sink: &str) {
        self.with(|i| {
            i.sink_faults.insert(sink.to_string(), None);
        });
    }

    pub fn sink_failed(&self, sink: &str, reason: &'static str, message: String) {
        self.with(|i| {
            let since = i
                .sink_faults
                .get(sink)
                .and_then(Option::as_ref)
                .filter(|f| f.reason == reason)
                .map_or_else(now, |f| f.since.clone());
            i.sink_faults.insert(
                sink.to_string(),
                Some(Fault {
                    reason,
                    message,
                    since,
                }),
            );
        });
    }

    /// A task that should run as long as the job ended.
    pub fn ended(&self, what: String) {
        tracing::error!(task = %what, "a task of the job ended");
        self.with(|i| i.ended.push(what));
    }

    pub fn has_ended(&self) -> Option<String> {
        self.with(|i| i.ended.first().cloned())
    }

    pub fn committed(&self) {
        let t = now();
        self.with(|i| i.last_commit = Some(t));
    }

    /// The report, with the dead letters counted so far.
    pub fn snapshot(&self, dead_letters: BTreeMap<String, u64>) -> PipelineReport {
        self.with(|i| {
            let component = |name: &str, fault: Option<&Fault>| ComponentReport {
                name: name.to_string(),
                healthy: fault.is_none(),
                reason: fault.map(|f| f.reason.to_string()),
                message: fault.map(|f| f.message.clone()),
                since: fault.map(|f| f.since.clone()),
            };
            PipelineReport {
                sources: i
                    .source_faults
                    .iter()
                    .map(|(role, faults)| {
                        // The oldest fault speaks for the stream.
                        component(role, faults.values().min_by(|a, b| a.since.cmp(&b.since)))
                    })
                    .collect(),
                sinks: i
                    .sink_faults
                    .iter()
                    .map(|(name, f)| component(name, f.as_ref()))
                    .collect(),
                ended: i.ended.clone(),
                dead_letters,
                behind_latest_seconds: i
                    .behind_ms
                    .iter()
                    .filter_map(|(role, shards)| {
                        let max = shards.values().max()?;
                        #[allow(clippy::cast_precision_loss)]
                        Some((role.clone(), *max as f64 / 1000.0))
                    })
                    .collect(),
                last_commit: i.last_commit.clone(),
            }
        })
    }
}

/// The dead letters counted in `registry` (`tributary_dead_letters_total{reason}`), by reason.
pub fn dead_letters(registry: &prometheus::Registry) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for family in registry.gather() {
        if family.name() != "tributary_dead_letters_total" {
            continue;
        }
        for m in family.get_metric() {
            let reason = m
                .get_label()
                .iter()
                .find(|l| l.name() == "reason")
                .map(|l| l.value().to_string())
                .unwrap_or_default();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let n = m.get_counter().get_value() as u64;
            *out.entry(reason).or_default() += n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_is_unhealthy_from_its_failure_to_its_next_success() {
        let r = Report::default();
        r.expect(&["customers", "sales"], &["opensearch", "s3"]);
        let s = r.snapshot(BTreeMap::new());
        assert!(s.sources.iter().chain(&s.sinks).all(|c| c.healthy), "{s:?}");

        r.sink_failed("opensearch", "OpenSearchForbidden", "403".into());
        r.source_failed("sales", "shard-1", "StreamNotFound", "gone".into());
        r.source_ok("sales", "shard-0", Some(2500));
        let s = r.snapshot(BTreeMap::from([("missing_item".to_string(), 3)]));
        let os = s.sinks.iter().find(|c| c.name == "opensearch").unwrap();
        assert_eq!(
            (os.healthy, os.reason.as_deref()),
            (false, Some("OpenSearchForbidden"))
        );
        assert!(os.since.is_some());
        let sales = s.sources.iter().find(|c| c.name == "sales").unwrap();
        assert_eq!(sales.reason.as_deref(), Some("StreamNotFound"));
        assert_eq!(s.behind_latest_seconds.get("sales"), Some(&2.5));
        assert_eq!(s.dead_letters.get("missing_item"), Some(&3));

        r.sink_ok("opensearch");
        r.source_ok("sales", "shard-1", Some(0));
        let s = r.snapshot(BTreeMap::new());
        assert!(s.sources.iter().chain(&s.sinks).all(|c| c.healthy), "{s:?}");
        assert_eq!(s.behind_latest_seconds.get("sales"), Some(&2.5));
        r.source_shard_done("sales", "shard-0");
        let s = r.snapshot(BTreeMap::new());
        assert_eq!(s.behind_latest_seconds.get("sales"), Some(&0.0));
    }

    #[test]
    fn ended_tasks_are_listed() {
        let r = Report::default();
        assert_eq!(r.has_ended(), None);
        r.ended("sink opensearch: boom".into());
        assert_eq!(r.has_ended().as_deref(), Some("sink opensearch: boom"));
        assert_eq!(r.snapshot(BTreeMap::new()).ended.len(), 1);
    }
}
