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
use super::validate::InvalidSpec;

/// What the reconcile decided, as input to the status.
pub enum Outcome<'a> {
    /// The spec was refused; children were left as they were.
    Invalid(&'a InvalidSpec),
    /// Children were applied with this replica count and configuration hash.
    Applied {
        desired_replicas: i32,
        config_hash: &'a str,
    },
}

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

/// The status to record. Conditions keep their transition time unless they flip.
pub fn compute(
    se: &StreamingEnrichment,
    outcome: Outcome<'_>,
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
    let mut set = |u: ConditionUpdate| {
        set_condition(&mut status.conditions, u, generation, now);
    };

    match outcome {
        Outcome::Invalid(err) => {
            set(ConditionUpdate::new(
                ConditionType::Degraded,
                true,
                "InvalidSpec",
                err.to_string(),
            ));
            set(ConditionUpdate::new(
                ConditionType::Progressing,
                false,
                "InvalidSpec",
                "waiting for a corrected spec; the job keeps its previous configuration",
            ));
        }
        Outcome::Applied {
            desired_replicas,
            config_hash,
        } => {
            status.config_hash = Some(config_hash.to_string());
            let (replicas, ready, pending) = match sts {
                Some(sts) => rollout_state(sts, desired_replicas),
                None => (0, 0, Some("Applying")),
            };
            status.replicas = replicas;
            status.ready_replicas = ready;
            set(ConditionUpdate::new(
                ConditionType::Degraded,
                false,
                "AsExpected",
                "",
            ));
            if se.spec.suspend {
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
                            format!(
                                "{ready}/{desired_replicas} replicas ready, configuration {config_hash}"
                            ),
                        ));
                    }
                }
            }
        }
    }
    status
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

    fn applied(h: &str) -> Outcome<'_> {
        Outcome::Applied {
            desired_replicas: 2,
            config_hash: h,
        }
    }

    #[test]
    fn ready_when_every_replica_runs_the_current_revision() {
        let se = example("minimal.yaml");
        let s = compute(&se, applied("h1"), Some(&sts(2, 2, 2, true)), &t(10));
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
        let first = compute(&se, applied("h1"), Some(&sts(2, 2, 2, true)), &t(10));
        se.status = Some(first);
        let rolling = compute(&se, applied("h2"), Some(&sts(2, 1, 1, false)), &t(20));
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
            applied("h1"),
            Some(&sts(2, 2, 2, true)),
            &t(10),
        ));
        let err = InvalidSpec {
            problems: vec!["join.maxWait must be greater than 0".into()],
        };
        let s = compute(&se, Outcome::Invalid(&err), None, &t(30));
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
    fn suspended_job_reports_suspended() {
        let mut se = example("minimal.yaml");
        se.spec.suspend = true;
        let s = compute(
            &se,
            Outcome::Applied {
                desired_replicas: 0,
                config_hash: "h",
            },
            Some(&sts(0, 0, 0, true)),
            &t(1),
        );
        let r = get_condition(&s.conditions, ConditionType::Ready).unwrap();
        assert_eq!(r.reason, "Suspended");
        assert!(!is_true(&s.conditions, ConditionType::Progressing));
    }
}
