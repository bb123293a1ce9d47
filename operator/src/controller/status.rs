//! The status step: what the job is doing, computed purely from the resource and the observed
//! StatefulSet, then written by server-side apply on the status subresource.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;

use tributary_crds::conditions::{ConditionType, ConditionUpdate, get_condition, set_condition};
use tributary_crds::control::{ComponentReport, PipelineReport};
use tributary_crds::{StreamingEnrichment, StreamingEnrichmentStatus};

use super::build::{labels::MANAGER, selector_string};
use super::upgrade::{Decision, Note};
use super::validate::InvalidSpec;

fn rollout_state(sts: &StatefulSet, desired: i32) -> (i32, i32, Option<&'static str>) {
    let st = sts.status.clone().unwrap_or_default();
    let replicas = st.replicas;
    let ready = st.ready_replicas.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let observed_current =
        st.observed_generation.unwrap_or(0) >= sts.metadata.generation.unwrap_or(0);
    let revisions_match = st.current_revision == st.update_revision;
    // The first reason that keeps the rollout from being complete, if any.
    let pending = if !observed_current {
        Some("Applying")
    } else if replicas != desired {
        Some("Scaling")
    } else if desired > 0 && (updated < desired || !revisions_match) {
        Some("RollingUpdate")
    } else if ready < desired {
        Some("WaitingForPods")
    } else {
        None
    };
    (replicas, ready, pending)
}

/// The status to record: the flow's fields as the decision left them, the rollout of the
/// StatefulSet, and the conditions. Conditions keep their transition time unless they flip.
pub fn compute(
    se: &StreamingEnrichment,
    invalid: Option<&InvalidSpec>,
    decision: &Decision,
    sts: Option<&StatefulSet>,
    now: &Time,
) -> StreamingEnrichmentStatus {
    let previous = se.status.clone().unwrap_or_default();
    let generation = se.metadata.generation;
    let mut status = StreamingEnrichmentStatus {
        observed_generation: generation,
        selector: Some(selector_string(&se.name_any())),
        ..previous.clone()
    };
    decision.recorded.write_into(&mut status);
    let flow = &decision.report;
    let desired_replicas = flow.replicas;
    let (replicas, ready, pending) = match sts {
        Some(sts) => rollout_state(sts, desired_replicas),
        None => (0, 0, Some("Applying")),
    };
    if sts.is_some() || invalid.is_none() {
        status.replicas = replicas;
        status.ready_replicas = ready;
    }
    let mut set = |u: ConditionUpdate| {
        set_condition(&mut status.conditions, u, generation, now);
    };
    let set_busy = |set: &mut dyn FnMut(ConditionUpdate), busy: &Note| {
        set(ConditionUpdate::new(
            ConditionType::Ready,
            false,
            busy.reason,
            busy.message.clone(),
        ));
        set(ConditionUpdate::new(
            ConditionType::Progressing,
            true,
            busy.reason,
            busy.message.clone(),
        ));
    };

    if let Some(err) = invalid {
        set(ConditionUpdate::new(
            ConditionType::Degraded,
            true,
            "InvalidSpec",
            err.to_string(),
        ));
        match &flow.busy {
            Some(busy) => set_busy(&mut set, busy),
            None => set(ConditionUpdate::new(
                ConditionType::Progressing,
                false,
                "InvalidSpec",
                "waiting for a corrected spec; the job keeps its previous configuration",
            )),
        }
    } else {
        match &flow.degraded {
            Some(d) => set(ConditionUpdate::new(
                ConditionType::Degraded,
                true,
                d.reason,
                d.message.clone(),
            )),
            None => set(ConditionUpdate::new(
                ConditionType::Degraded,
                false,
                "AsExpected",
                "",
            )),
        }
        let hash = decision.recorded.config_hash.as_deref().unwrap_or("none");
        if let Some(busy) = &flow.busy {
            set_busy(&mut set, busy);
        } else if se.spec.suspend {
            let done = pending.is_none();
            set(ConditionUpdate::new(
                ConditionType::Ready,
                false,
                "Suspended",
                "spec.suspend is true: the job is scaled to zero and its state volumes are kept",
            ));
            set(ConditionUpdate::new(
                ConditionType::Progressing,
                !done,
                if done { "Suspended" } else { "Suspending" },
                format!("{replicas} replica(s) still running"),
            ));
        } else {
            match pending {
                None => {
                    set(ConditionUpdate::new(
                        ConditionType::Ready,
                        true,
                        "Running",
                        format!("{ready}/{desired_replicas} replicas ready"),
                    ));
                    set(ConditionUpdate::new(
                        ConditionType::Progressing,
                        false,
                        "Stable",
                        "the job runs the current configuration",
                    ));
                }
                Some(reason) => {
                    set(ConditionUpdate::new(
                        ConditionType::Ready,
                        false,
                        reason,
                        format!("{ready}/{desired_replicas} replicas ready"),
                    ));
                    set(ConditionUpdate::new(
                        ConditionType::Progressing,
                        true,
                        reason,
                        format!("{ready}/{desired_replicas} replicas ready, configuration {hash}"),
                    ));
                }
            }
        }
        // A held change: the job runs as it was, and nothing moves until a human acts (or
        // the retry time comes).
        if let Some(held) = &flow.held
            && flow.busy.is_none()
        {
            set(ConditionUpdate::new(
                ConditionType::Progressing,
                false,
                held.reason,
                held.message.clone(),
            ));
        }
    }
    if let Some((ok, n)) = &flow.savepoint_ready {
        set(ConditionUpdate::new(
            ConditionType::SavepointReady,
            *ok,
            n.reason,
            n.message.clone(),
        ));
    }
    status
}

/// How long a replica's source or sink must have been failing before the resource reports it:
/// a write that fails once and succeeds on its retry is the normal life of a pipeline.
pub const FAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// What a look at the streams found, written when the operator looked in this pass:
/// `shards`, `closedShards`, `sourcesObservedAt`.
pub fn streams(
    status: &mut StreamingEnrichmentStatus,
    seen: Option<&crate::kinesis::Observation>,
    now: &Time,
) {
    let Some(seen) = seen else { return };
    if let Some(c) = seen.shards {
        status.shards = Some(c.open);
        status.closed_shards = Some(c.closed);
    }
    status.sources_observed_at = Some(now.clone());
}

/// A fault a replica reported, once it is older than [`FAULT_GRACE`].
fn lasting(c: &ComponentReport, now: &Time) -> bool {
    if c.healthy {
        return false;
    }
    let since = c
        .since
        .as_deref()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    since.is_none_or(|t| now.0.duration_since(t).unsigned_abs() >= FAULT_GRACE)
}

/// The replicas' health: `SourcesHealthy` (the operator's own look at the streams first, then
/// what the replicas hit), `SinksHealthy`, and `Ready` only while both hold. With `volatile`,
/// also the figures that change with the data (`deadLetters`, `behindLatestSeconds`), which are
/// written at the streams' pace so a busy pipeline does not rewrite its status on every pass.
pub fn pipeline(
    status: &mut StreamingEnrichmentStatus,
    se: &StreamingEnrichment,
    operator_view: Option<&crate::kinesis::Health>,
    reports: &BTreeMap<u32, Result<PipelineReport, String>>,
    volatile: bool,
    now: &Time,
) {
    use crate::kinesis::Health;
    let generation = se.metadata.generation;
    // Faults that lasted, as (replica, component, reason, message).
    let faults = |pick: fn(&PipelineReport) -> &Vec<ComponentReport>| {
        reports
            .iter()
            .filter_map(|(o, r)| Some((o, r.as_ref().ok()?)))
            .flat_map(|(o, r)| pick(r).iter().map(move |c| (*o, c)))
            .filter(|(_, c)| lasting(c, now))
            .map(|(o, c)| {
                (
                    c.reason.clone().unwrap_or_else(|| "Failing".into()),
                    format!(
                        "replica {o}, {}: {}",
                        c.name,
                        c.message.clone().unwrap_or_default()
                    ),
                )
            })
            .collect::<Vec<_>>()
    };
    let source_faults = faults(|r| &r.sources);
    let sink_faults = faults(|r| &r.sinks);
    let ended: Vec<String> = reports
        .iter()
        .filter_map(|(o, r)| Some((o, r.as_ref().ok()?)))
        .flat_map(|(o, r)| r.ended.iter().map(move |e| format!("replica {o}: {e}")))
        .collect();
    let answered = reports.values().filter(|r| r.is_ok()).count();

    let sources = match (operator_view, source_faults.first()) {
        (Some(Health::Unhealthy { reason, message }), _) => ConditionUpdate::new(
            ConditionType::SourcesHealthy,
            false,
            *reason,
            message.clone(),
        ),
        (_, Some((reason, message))) => ConditionUpdate::new(
            ConditionType::SourcesHealthy,
            false,
            reason.clone(),
            message.clone(),
        ),
        (Some(Health::Unknown { reason, message }), None) => {
            ConditionUpdate::unknown(ConditionType::SourcesHealthy, *reason, message.clone())
        }
        (Some(Health::Healthy), None) => ConditionUpdate::new(
            ConditionType::SourcesHealthy,
            true,
            "StreamsActive",
            match status.shards {
                Some(n) => format!(
                    "every stream exists and is active; the sales stream has {n} open shard(s)"
                ),
                None => "every stream exists and is active".to_string(),
            },
        ),
        (None, None) => ConditionUpdate::unknown(
            ConditionType::SourcesHealthy,
            "NotObserved",
            "the operator has not looked at the streams yet",
        ),
    };
    let sources_ok = sources.status == tributary_crds::conditions::ConditionStatus::True;
    set_condition(&mut status.conditions, sources, generation, now);

    let sinks = if let Some(task) = ended.first() {
        ConditionUpdate::new(
            ConditionType::SinksHealthy,
            false,
            "TaskEnded",
            format!("{task} (the pod's /healthz fails until it restarts)"),
        )
    } else if let Some((reason, message)) = sink_faults.first() {
        ConditionUpdate::new(
            ConditionType::SinksHealthy,
            false,
            reason.clone(),
            message.clone(),
        )
    } else if answered == 0 {
        ConditionUpdate::unknown(
            ConditionType::SinksHealthy,
            "NoReplicaReports",
            if reports.is_empty() {
                "no job pod runs".to_string()
            } else {
                format!(
                    "no replica answered GET /status: {}",
                    reports
                        .values()
                        .filter_map(|r| r.as_ref().err())
                        .next()
                        .cloned()
                        .unwrap_or_default()
                )
            },
        )
    } else {
        ConditionUpdate::new(
            ConditionType::SinksHealthy,
            true,
            "Delivering",
            format!("{answered} replica(s) deliver to every sink"),
        )
    };
    let sinks_ok = sinks.status != tributary_crds::conditions::ConditionStatus::False;
    let sink_reason = (!sinks_ok).then(|| (sinks.reason.clone(), sinks.message.clone()));
    set_condition(&mut status.conditions, sinks, generation, now);

    // Ready means the pipeline works, not only that its pods run.
    let ready =
        get_condition(&status.conditions, ConditionType::Ready).is_some_and(|c| c.status == "True");
    if ready {
        let source_fault = source_faults.first().cloned().or(match operator_view {
            Some(Health::Unhealthy { reason, message }) => {
                Some(((*reason).to_string(), message.clone()))
            }
            _ => None,
        });
        let why = match (sink_reason.clone(), source_fault) {
            (Some((r, m)), _) => Some((format!("Sinks{r}"), m)),
            (None, Some((r, m))) if !sources_ok => Some((format!("Sources{r}"), m)),
            _ => None,
        };
        if let Some((reason, message)) = why {
            overrule(
                status,
                se,
                ConditionUpdate::new(ConditionType::Ready, false, reason, message),
                now,
            );
        }
    }
    // A fault that lasts needs a human (a denied policy, a missing bucket or stream, a sink that
    // cannot be reached): Degraded says so, unless the flow already reports something.
    let degraded_already = get_condition(&status.conditions, ConditionType::Degraded)
        .is_some_and(|c| c.status == "True");
    if !degraded_already {
        let lasting_fault = sink_reason.clone().or_else(|| {
            (!sources_ok).then(|| {
                get_condition(&status.conditions, ConditionType::SourcesHealthy)
                    .filter(|c| c.status == "False")
                    .map(|c| (c.reason.clone(), c.message.clone()))
            })?
        });
        if let Some((reason, message)) = lasting_fault {
            overrule(
                status,
                se,
                ConditionUpdate::new(ConditionType::Degraded, true, reason, message),
                now,
            );
        }
    }

    if volatile && answered > 0 {
        let mut dead: BTreeMap<String, u64> = BTreeMap::new();
        let mut behind: BTreeMap<String, i64> = BTreeMap::new();
        for r in reports.values().filter_map(|r| r.as_ref().ok()) {
            for (k, v) in &r.dead_letters {
                *dead.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &r.behind_latest_seconds {
                #[allow(clippy::cast_possible_truncation)]
                let secs = v.round() as i64;
                let e = behind.entry(k.clone()).or_default();
                *e = (*e).max(secs);
            }
        }
        status.dead_letters = dead;
        status.behind_latest_seconds = behind;
    }
}

/// Set a condition the status step computed a moment before in this pass: when the resource's
/// previous status had it at the same status, its transition time is kept (the status step's
/// value in between was never written).
fn overrule(
    status: &mut StreamingEnrichmentStatus,
    se: &StreamingEnrichment,
    update: ConditionUpdate,
    now: &Time,
) {
    let type_ = update.type_;
    let wanted = update.status.as_str();
    set_condition(&mut status.conditions, update, se.metadata.generation, now);
    let before = se
        .status
        .as_ref()
        .and_then(|s| get_condition(&s.conditions, type_))
        .filter(|c| c.status == wanted)
        .map(|c| c.last_transition_time.clone());
    if let (Some(t), Some(c)) = (
        before,
        status
            .conditions
            .iter_mut()
            .find(|c| c.type_ == type_.as_str()),
    ) {
        c.last_transition_time = t;
    }
}

/// The IndexTemplateReady condition from the OpenSearch pass (`None`: not managed), and
/// Degraded when the failure needs a human (401/403, a template owned by someone else).
pub fn opensearch(
    status: &mut StreamingEnrichmentStatus,
    se: &StreamingEnrichment,
    pass: Option<&Result<crate::opensearch::Report, crate::opensearch::Error>>,
    now: &Time,
) {
    let generation = se.metadata.generation;
    let Some(pass) = pass else {
        status
            .conditions
            .retain(|c| c.type_ != ConditionType::IndexTemplateReady.as_str());
        return;
    };
    let os = &se.spec.sinks.opensearch;
    match pass {
        Ok(r) => {
            let rollover = if r.ism {
                "rollover by the ISM policy"
            } else {
                "rollover by the operator (core _rollover API)"
            };
            let roles = if r.security {
                ", writer/reader roles in place"
            } else {
                ""
            };
            set_condition(
                &mut status.conditions,
                ConditionUpdate::new(
                    ConditionType::IndexTemplateReady,
                    true,
                    "TemplateApplied",
                    format!(
                        "template {} in place; {} -> {}; {rollover}{roles}",
                        crate::opensearch::template::template_name(os),
                        os.write_alias,
                        r.write_index.as_deref().unwrap_or("?"),
                    ),
                ),
                generation,
                now,
            );
        }
        Err(e) => {
            set_condition(
                &mut status.conditions,
                ConditionUpdate::new(
                    ConditionType::IndexTemplateReady,
                    false,
                    e.reason(),
                    e.to_string(),
                ),
                generation,
                now,
            );
            if e.degrades() {
                set_condition(
                    &mut status.conditions,
                    ConditionUpdate::new(ConditionType::Degraded, true, e.reason(), e.to_string()),
                    generation,
                    now,
                );
                // `compute` reset Degraded to False first: keep the transition time of a
                // Degraded that was already True before this pass.
                let was = se.status.as_ref().and_then(|st| {
                    st.conditions
                        .iter()
                        .find(|c| c.type_ == ConditionType::Degraded.as_str() && c.status == "True")
                });
                if let (Some(was), Some(c)) = (
                    was,
                    status
                        .conditions
                        .iter_mut()
                        .find(|c| c.type_ == ConditionType::Degraded.as_str()),
                ) {
                    c.last_transition_time = was.last_transition_time.clone();
                }
            }
        }
    }
}

/// Condition flips between two statuses, for events: (type, new status, reason, message).
pub fn flips<'a>(
    before: &'a StreamingEnrichmentStatus,
    after: &'a StreamingEnrichmentStatus,
) -> Vec<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    after
        .conditions
        .iter()
        .filter(|c| {
            before
                .conditions
                .iter()
                .find(|b| b.type_ == c.type_)
                .is_none_or(|b| b.status != c.status || b.reason != c.reason)
        })
        .collect()
}

/// Write the status by server-side apply (one field manager for the whole status).
pub async fn apply(
    api: &Api<StreamingEnrichment>,
    name: &str,
    status: &StreamingEnrichmentStatus,
) -> Result<(), kube::Error> {
    let patch = json!({
        "apiVersion": "tributary.dev/v1alpha1",
        "kind": "StreamingEnrichment",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// A reconcile that failed: `Degraded=True` with reason `ReconcileFailed` and the error, on the
/// server's latest conditions (never a cached status: the upgrade flow's fields must not be
/// overwritten with older ones). A merge patch of the conditions alone, guarded by the
/// resourceVersion it was computed from; the next successful pass computes Degraded again.
pub async fn failed(
    api: &Api<StreamingEnrichment>,
    name: &str,
    message: &str,
    now: &Time,
) -> Result<(), kube::Error> {
    let Some(fresh) = api.get_opt(name).await? else {
        return Ok(());
    };
    let mut conditions = fresh.status.clone().unwrap_or_default().conditions;
    set_condition(
        &mut conditions,
        ConditionUpdate::new(ConditionType::Degraded, true, "ReconcileFailed", message),
        fresh.metadata.generation,
        now,
    );
    let patch = json!({
        "metadata": { "resourceVersion": fresh.metadata.resource_version },
        "status": { "conditions": conditions },
    });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::example;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use k8s_openapi::jiff::Timestamp;
    use tributary_crds::conditions::{get_condition, is_true};

    use crate::controller::upgrade::{Action, Recorded, Report};

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn sts(replicas: i32, ready: i32, updated: i32, same_rev: bool) -> StatefulSet {
        let mut s = StatefulSet::default();
        s.metadata.generation = Some(2);
        s.status = Some(StatefulSetStatus {
            observed_generation: Some(2),
            replicas,
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            current_revision: Some("a".into()),
            update_revision: Some(if same_rev { "a" } else { "b" }.into()),
            ..Default::default()
        });
        s
    }

    /// A decision that applied `replicas` replicas of configuration `h`.
    fn applied(h: &str) -> Decision {
        applied_n(h, 2)
    }

    fn applied_n(h: &str, replicas: i32) -> Decision {
        Decision {
            recorded: Recorded {
                config_hash: Some(h.into()),
                running_replicas: Some(2),
                ..Default::default()
            },
            action: Action::Keep,
            requeue: None,
            report: Report {
                replicas,
                ..Default::default()
            },
        }
    }

    fn component(name: &str, fault: Option<(&str, i64)>) -> ComponentReport {
        ComponentReport {
            name: name.into(),
            healthy: fault.is_none(),
            reason: fault.map(|(r, _)| r.to_string()),
            message: fault.map(|(r, _)| format!("{r} happened")),
            since: fault.map(|(_, at)| t(at).0.to_string()),
        }
    }

    fn replica(
        sink_fault: Option<(&str, i64)>,
        source_fault: Option<(&str, i64)>,
    ) -> PipelineReport {
        PipelineReport {
            sources: vec![component("sales", source_fault)],
            sinks: vec![component("opensearch", sink_fault), component("s3", None)],
            dead_letters: BTreeMap::from([("missing_item".to_string(), 2)]),
            behind_latest_seconds: BTreeMap::from([("sales".to_string(), 3.4)]),
            ..Default::default()
        }
    }

    /// The status step, then the pipeline step, as a reconcile runs them at time 100.
    fn with_reports(
        reports: BTreeMap<u32, Result<PipelineReport, String>>,
        view: Option<&crate::kinesis::Health>,
    ) -> StreamingEnrichmentStatus {
        let se = example("minimal.yaml");
        let mut s = compute(
            &se,
            None,
            &applied("h1"),
            Some(&sts(2, 2, 2, true)),
            &t(100),
        );
        pipeline(&mut s, &se, view, &reports, true, &t(100));
        s
    }

    #[test]
    fn ready_only_while_the_sinks_and_sources_work() {
        use crate::kinesis::Health;
        let healthy = Health::Healthy;
        // Both replicas healthy: Ready, and the figures summed.
        let s = with_reports(
            BTreeMap::from([(0, Ok(replica(None, None))), (1, Ok(replica(None, None)))]),
            Some(&healthy),
        );
        assert!(is_true(&s.conditions, ConditionType::Ready));
        assert!(is_true(&s.conditions, ConditionType::SinksHealthy));
        assert!(is_true(&s.conditions, ConditionType::SourcesHealthy));
        assert_eq!(s.dead_letters.get("missing_item"), Some(&4));
        assert_eq!(s.behind_latest_seconds.get("sales"), Some(&3));

        // A sink refused for longer than the grace: SinksHealthy=False with its reason, not
        // Ready; a fresh failure (inside the grace) does not count yet.
        let s = with_reports(
            BTreeMap::from([
                (0, Ok(replica(Some(("OpenSearchForbidden", 10)), None))),
                (1, Ok(replica(Some(("S3AccessDenied", 95)), None))),
            ]),
            Some(&healthy),
        );
        let sinks = get_condition(&s.conditions, ConditionType::SinksHealthy).unwrap();
        assert_eq!(
            (sinks.status.as_str(), sinks.reason.as_str()),
            ("False", "OpenSearchForbidden")
        );
        assert!(
            sinks.message.contains("replica 0, opensearch"),
            "{}",
            sinks.message
        );
        let ready = get_condition(&s.conditions, ConditionType::Ready).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "SinksOpenSearchForbidden")
        );
        let degraded = get_condition(&s.conditions, ConditionType::Degraded).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "OpenSearchForbidden")
        );

        // The operator's view of the streams wins; a replica's source fault counts too.
        let missing = Health::Unhealthy {
            reason: "StreamNotFound",
            message: "sources.customers stream x does not exist".into(),
        };
        let s = with_reports(
            BTreeMap::from([(0, Ok(replica(None, None)))]),
            Some(&missing),
        );
        let src = get_condition(&s.conditions, ConditionType::SourcesHealthy).unwrap();
        assert_eq!(
            (src.status.as_str(), src.reason.as_str()),
            ("False", "StreamNotFound")
        );
        assert!(!is_true(&s.conditions, ConditionType::Ready));
        let s = with_reports(
            BTreeMap::from([(0, Ok(replica(None, Some(("AccessDenied", 0)))))]),
            Some(&healthy),
        );
        let src = get_condition(&s.conditions, ConditionType::SourcesHealthy).unwrap();
        assert_eq!(
            (src.status.as_str(), src.reason.as_str()),
            ("False", "AccessDenied")
        );
        let ready = get_condition(&s.conditions, ConditionType::Ready).unwrap();
        assert_eq!(ready.reason, "SourcesAccessDenied");

        // An ended task is a failed sink; no answer at all is Unknown and does not block Ready.
        let mut ended = replica(None, None);
        ended.ended = vec!["sink opensearch: ended".into()];
        let s = with_reports(BTreeMap::from([(0, Ok(ended))]), Some(&healthy));
        let sinks = get_condition(&s.conditions, ConditionType::SinksHealthy).unwrap();
        assert_eq!(sinks.reason, "TaskEnded");
        let s = with_reports(BTreeMap::from([(0, Err("refused".into()))]), Some(&healthy));
        let sinks = get_condition(&s.conditions, ConditionType::SinksHealthy).unwrap();
        assert_eq!(
            (sinks.status.as_str(), sinks.reason.as_str()),
            ("Unknown", "NoReplicaReports")
        );
        assert!(is_true(&s.conditions, ConditionType::Ready));
    }

    #[test]
    fn a_lasting_fault_keeps_its_transition_times_across_passes() {
        use crate::kinesis::Health;
        let mut se = example("minimal.yaml");
        let reports = BTreeMap::from([(0, Ok(replica(Some(("S3AccessDenied", 10)), None)))]);
        let pass = |se: &StreamingEnrichment, at: i64| {
            let mut s = compute(se, None, &applied("h1"), Some(&sts(2, 2, 2, true)), &t(at));
            pipeline(&mut s, se, Some(&Health::Healthy), &reports, true, &t(at));
            s
        };
        let first = pass(&se, 100);
        se.status = Some(first.clone());
        let second = pass(&se, 200);
        for type_ in [
            ConditionType::Ready,
            ConditionType::Degraded,
            ConditionType::SinksHealthy,
        ] {
            let a = get_condition(&first.conditions, type_).unwrap();
            let b = get_condition(&second.conditions, type_).unwrap();
            assert_eq!(a.last_transition_time, t(100), "{type_:?}");
            assert_eq!(
                b.last_transition_time,
                t(100),
                "{type_:?} moved without a flip"
            );
        }
    }

    #[test]
    fn ready_when_every_replica_runs_the_current_revision() {
        let se = example("minimal.yaml");
        let s = compute(&se, None, &applied("h1"), Some(&sts(2, 2, 2, true)), &t(10));
        assert!(is_true(&s.conditions, ConditionType::Ready));
        assert!(!is_true(&s.conditions, ConditionType::Progressing));
        assert!(!is_true(&s.conditions, ConditionType::Degraded));
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(s.replicas, 2);
        assert_eq!(s.config_hash.as_deref(), Some("h1"));
        assert_eq!(
            s.selector.as_deref(),
            Some("app.kubernetes.io/instance=sales-minimal,app.kubernetes.io/name=tributary-job")
        );
    }

    #[test]
    fn rolling_update_is_progressing_and_keeps_transition_times() {
        let mut se = example("minimal.yaml");
        let first = compute(&se, None, &applied("h1"), Some(&sts(2, 2, 2, true)), &t(10));
        se.status = Some(first);
        let rolling = compute(
            &se,
            None,
            &applied("h2"),
            Some(&sts(2, 1, 1, false)),
            &t(20),
        );
        let ready = get_condition(&rolling.conditions, ConditionType::Ready).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "RollingUpdate")
        );
        assert_eq!(ready.last_transition_time, t(20));
        let degraded = get_condition(&rolling.conditions, ConditionType::Degraded).unwrap();
        assert_eq!(
            degraded.last_transition_time,
            t(10),
            "Degraded did not flip"
        );
        assert!(is_true(&rolling.conditions, ConditionType::Progressing));
    }

    #[test]
    fn invalid_spec_degrades_without_touching_ready() {
        let mut se = example("minimal.yaml");
        se.status = Some(compute(
            &se,
            None,
            &applied("h1"),
            Some(&sts(2, 2, 2, true)),
            &t(10),
        ));
        let err = InvalidSpec {
            problems: vec!["join.maxWait must be greater than 0".into()],
        };
        let s = compute(&se, Some(&err), &applied("h1"), None, &t(30));
        let d = get_condition(&s.conditions, ConditionType::Degraded).unwrap();
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert!(d.message.contains("join.maxWait"));
        assert!(
            is_true(&s.conditions, ConditionType::Ready),
            "the old job still runs"
        );
        assert_eq!(flips(se.status.as_ref().unwrap(), &s).len(), 2);
    }

    #[test]
    fn opensearch_pass_sets_index_template_ready_and_degraded_on_auth() {
        use crate::opensearch::{Error, Report};
        let mut se = example("minimal.yaml");
        let mut s = compute(&se, None, &applied("h1"), Some(&sts(2, 2, 2, true)), &t(10));
        let ok: Result<Report, Error> = Ok(Report {
            template: "Created",
            write_index: Some("ara-000001".into()),
            ..Default::default()
        });
        opensearch(&mut s, &se, Some(&ok), &t(10));
        let c = get_condition(&s.conditions, ConditionType::IndexTemplateReady).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "TemplateApplied")
        );
        assert!(
            c.message.contains("ara-write -> ara-000001"),
            "{}",
            c.message
        );
        assert!(!is_true(&s.conditions, ConditionType::Degraded));

        let down: Result<Report, Error> = Err(Error::Unreachable {
            endpoint: "https://x".into(),
            message: "connection refused".into(),
        });
        opensearch(&mut s, &se, Some(&down), &t(20));
        let c = get_condition(&s.conditions, ConditionType::IndexTemplateReady).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "OpenSearchUnreachable")
        );
        assert!(
            !is_true(&s.conditions, ConditionType::Degraded),
            "transient: no Degraded"
        );
        assert!(
            is_true(&s.conditions, ConditionType::Ready),
            "the job is not blocked"
        );

        let denied: Result<Report, Error> = Err(Error::Unauthorized {
            what: "GET /_cat/plugins".into(),
        });
        opensearch(&mut s, &se, Some(&denied), &t(30));
        let d = get_condition(&s.conditions, ConditionType::Degraded).unwrap();
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "OpenSearchUnauthorized")
        );
        assert!(d.message.contains("401"));
        assert_eq!(d.last_transition_time, t(30));
        se.status = Some(s.clone());
        let mut again = compute(&se, None, &applied("h1"), Some(&sts(2, 2, 2, true)), &t(50));
        opensearch(&mut again, &se, Some(&denied), &t(50));
        let d = get_condition(&again.conditions, ConditionType::Degraded).unwrap();
        assert_eq!(d.last_transition_time, t(30), "no flap while still denied");

        opensearch(&mut s, &se, None, &t(40));
        assert!(get_condition(&s.conditions, ConditionType::IndexTemplateReady).is_none());
    }

    #[test]
    fn suspended_job_reports_suspended() {
        let mut se = example("minimal.yaml");
        se.spec.suspend = true;
        let s = compute(
            &se,
            None,
            &applied_n("h", 0),
            Some(&sts(0, 0, 0, true)),
            &t(1),
        );
        let r = get_condition(&s.conditions, ConditionType::Ready).unwrap();
        assert_eq!(r.reason, "Suspended");
        assert!(!is_true(&s.conditions, ConditionType::Progressing));
    }

    #[test]
    fn an_operation_in_flight_is_progressing_and_not_ready() {
        let mut se = example("minimal.yaml");
        se.status = Some(compute(
            &se,
            None,
            &applied("h1"),
            Some(&sts(2, 2, 2, true)),
            &t(10),
        ));
        let mut d = applied_n("h1", 0);
        d.report.busy = Some(Note {
            reason: "Savepointing",
            message: "Rescale: savepoint sp-1, 1/2 parts completed".into(),
        });
        let s = compute(&se, None, &d, Some(&sts(2, 2, 2, true)), &t(20));
        let ready = get_condition(&s.conditions, ConditionType::Ready).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Savepointing")
        );
        let p = get_condition(&s.conditions, ConditionType::Progressing).unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("True", "Savepointing")
        );
        assert!(p.message.contains("1/2 parts"));
        assert_eq!(
            s.running_replicas,
            Some(2),
            "the flow's fields come from the decision"
        );
    }

    #[test]
    fn a_held_change_is_not_progressing_and_degrades_while_the_job_runs() {
        let se = example("minimal.yaml");
        let mut d = applied("h1");
        let why = Note {
            reason: "SavepointsNotConfigured",
            message: "rescaling from 2 to 3 replicas ... spec.savepoints is not set".into(),
        };
        d.report.held = Some(why.clone());
        d.report.degraded = Some(why);
        d.report.savepoint_ready = Some((
            false,
            Note {
                reason: "SavepointFailed",
                message: "replica 1 failed".into(),
            },
        ));
        let s = compute(&se, None, &d, Some(&sts(2, 2, 2, true)), &t(20));
        assert!(
            is_true(&s.conditions, ConditionType::Ready),
            "the old job still runs"
        );
        let p = get_condition(&s.conditions, ConditionType::Progressing).unwrap();
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("False", "SavepointsNotConfigured")
        );
        let g = get_condition(&s.conditions, ConditionType::Degraded).unwrap();
        assert_eq!(
            (g.status.as_str(), g.reason.as_str()),
            ("True", "SavepointsNotConfigured")
        );
        let sp = get_condition(&s.conditions, ConditionType::SavepointReady).unwrap();
        assert_eq!(
            (sp.status.as_str(), sp.reason.as_str()),
            ("False", "SavepointFailed")
        );
    }
}
