//! The status step: what the job is doing, computed purely from the resource and the observed
//! StatefulSet, then written by server-side apply on the status subresource.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tributary_crds::conditions::{ConditionType, ConditionUpdate, set_condition};
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
