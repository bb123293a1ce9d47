//! Shards mode: the replica count from the sales stream's open shards, with a stabilisation
//! window against scaling in on a passing dip and a cooldown between two rescales.
//!
//! [`decide`] is pure: from the spec, the latest observed open shard count, the previous
//! decision (`status.scaling`) and the time, the next decision and the event that states its
//! inputs. Its count is what the upgrade flow receives as the desired replicas; every change of
//! it is a rescale through a savepoint.
//!
//! - The recommendation is `clamp(ceil(open / shardsPerReplica), minReplicas, maxReplicas)`.
//! - Out: a recommendation above the current count is taken at once (a split is a lasting
//!   change), once the cooldown since the last change has passed.
//! - In: a recommendation below the current count is taken only after every recommendation for
//!   `stabilizationWindow` has been below it, and then to the highest of them (as the
//!   HorizontalPodAutoscaler's scale-down stabilisation does), and after the cooldown.
//! - A `minReplicas`/`maxReplicas` change that puts the current count outside the bounds is
//!   applied at once: it is the user's explicit decision.
//! - Without an observation (the stream cannot be listed) the count stays as it was.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tributary_crds::{ScalingSpec, ScalingStatus};

/// The next decision, and its event (reason, note) when it changed something worth telling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub status: ScalingStatus,
    pub event: Option<(&'static str, String)>,
}

pub fn recommend(spec: &ScalingSpec, open: i32) -> i32 {
    let per = spec.shards_per_replica.max(1);
    let wanted = (open.max(0) + per - 1) / per;
    wanted.clamp(spec.min_replicas, spec.max_replicas.max(spec.min_replicas))
}

fn elapsed(now: Timestamp, since: &Time) -> std::time::Duration {
    now.duration_since(since.0).unsigned_abs()
}

pub fn decide(
    spec: &ScalingSpec,
    open: Option<i32>,
    previous: Option<&ScalingStatus>,
    now: Timestamp,
) -> Decision {
    let max = spec.max_replicas.max(spec.min_replicas);
    let inputs = |open: i32, r: i32| {
        format!(
            "{open} open sales shard(s), shardsPerReplica {}, minReplicas {}, maxReplicas {max}: \
             {r} recommended",
            spec.shards_per_replica, spec.min_replicas
        )
    };
    let Some(prev) = previous else {
        // The first decision: the recommendation, or the least count until the shards are known.
        let replicas = open.map_or(spec.min_replicas, |o| recommend(spec, o));
        let event = Some((
            "ShardsScalingStarted",
            match open {
                Some(o) => format!(
                    "{}; starting with {replicas} replica(s)",
                    inputs(o, replicas)
                ),
                None => format!(
                    "the sales stream's shards are not known yet; starting with minReplicas \
                     {replicas}"
                ),
            },
        ));
        return Decision {
            status: ScalingStatus {
                replicas,
                recommended: replicas,
                below_since: None,
                below_max: None,
                changed_at: Some(Time(now)),
            },
            event,
        };
    };
    let mut next = prev.clone();
    // Bounds the user changed win at once.
    let bounded = prev.replicas.clamp(spec.min_replicas, max);
    if bounded != prev.replicas {
        next.replicas = bounded;
        next.changed_at = Some(Time(now));
        next.below_since = None;
        next.below_max = None;
        let note = format!(
            "minReplicas {} / maxReplicas {max} bound the count: {} -> {bounded} replica(s)",
            spec.min_replicas, prev.replicas
        );
        return Decision {
            status: next,
            event: Some(("ShardsScalingBounded", note)),
        };
    }
    let Some(open) = open else {
        return Decision {
            status: next,
            event: None,
        };
    };
    let r = recommend(spec, open);
    next.recommended = r;
    let cooled = prev
        .changed_at
        .as_ref()
        .is_none_or(|t| elapsed(now, t) >= spec.cooldown.std());
    let mut event = None;
    if r > prev.replicas {
        next.below_since = None;
        next.below_max = None;
        if cooled {
            next.replicas = r;
            next.changed_at = Some(Time(now));
            event = Some((
                "ShardsScaledOut",
                format!(
                    "{}; scaling out {} -> {r} replica(s)",
                    inputs(open, r),
                    prev.replicas
                ),
            ));
        } else if prev.recommended != r {
            event = Some((
                "ShardsScalingDelayed",
                format!(
                    "{}; scaling out after the cooldown of {} since the last rescale",
                    inputs(open, r),
                    spec.cooldown
                ),
            ));
        }
    } else if r < prev.replicas {
        let since = prev.below_since.clone().unwrap_or(Time(now));
        let highest = prev.below_max.map_or(r, |m| m.max(r));
        let waited = elapsed(now, &since) >= spec.stabilization_window.std();
        if waited && cooled {
            next.replicas = highest;
            next.changed_at = Some(Time(now));
            next.below_since = None;
            next.below_max = None;
            event = Some((
                "ShardsScaledIn",
                format!(
                    "{}; below {} for the stabilization window of {}: scaling in {} -> {highest} \
                     replica(s) (the highest count recommended in the window)",
                    inputs(open, r),
                    prev.replicas,
                    spec.stabilization_window,
                    prev.replicas
                ),
            ));
        } else {
            if prev.below_since.is_none() {
                event = Some((
                    "ShardsScalingDelayed",
                    format!(
                        "{}; scaling in once the shards have asked for fewer than {} replicas for \
                         the stabilization window of {}",
                        inputs(open, r),
                        prev.replicas,
                        spec.stabilization_window
                    ),
                ));
            }
            next.below_since = Some(since);
            next.below_max = Some(highest);
        }
    } else {
        next.below_since = None;
        next.below_max = None;
    }
    Decision {
        status: next,
        event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_crds::Duration;

    fn spec() -> ScalingSpec {
        ScalingSpec {
            mode: tributary_crds::ScalingMode::Shards,
            shards_per_replica: 2,
            min_replicas: 1,
            max_replicas: 4,
            stabilization_window: Duration::from_secs(300),
            cooldown: Duration::from_secs(60),
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    /// Feed observations `(second, open shards)`; the replica count after each.
    fn run(spec: &ScalingSpec, steps: &[(i64, Option<i32>)]) -> Vec<i32> {
        let mut status: Option<ScalingStatus> = None;
        steps
            .iter()
            .map(|&(t, open)| {
                let d = decide(spec, open, status.as_ref(), at(t));
                status = Some(d.status);
                status.as_ref().unwrap().replicas
            })
            .collect()
    }

    #[test]
    fn recommendation_is_ceil_of_shards_per_replica_within_bounds() {
        let s = spec();
        assert_eq!(recommend(&s, 0), 1);
        assert_eq!(recommend(&s, 1), 1);
        assert_eq!(recommend(&s, 3), 2);
        assert_eq!(recommend(&s, 4), 2);
        assert_eq!(recommend(&s, 40), 4);
    }

    #[test]
    fn out_at_once_after_the_cooldown_in_after_the_window() {
        let s = spec();
        let replicas = run(
            &s,
            &[
                (0, Some(2)),   // start: 1
                (10, Some(4)),  // split, but within the cooldown of the start
                (61, Some(4)),  // cooled: out to 2
                (100, Some(2)), // merge: the window starts
                (200, Some(2)), // still waiting
                (401, Some(2)), // window over: in to 1
            ],
        );
        assert_eq!(replicas, vec![1, 1, 2, 2, 2, 1]);
    }

    #[test]
    fn a_dip_shorter_than_the_window_changes_nothing() {
        let s = spec();
        let replicas = run(
            &s,
            &[
                (0, Some(4)),   // 2
                (100, Some(2)), // dip: window starts
                (200, Some(4)), // back up: window reset
                (450, Some(2)), // a new window starts here
                (700, Some(2)), // 250 s into it: still 2
            ],
        );
        assert_eq!(replicas, vec![2, 2, 2, 2, 2]);
    }

    #[test]
    fn scale_in_goes_to_the_highest_recommendation_of_the_window() {
        let s = ScalingSpec {
            shards_per_replica: 1,
            max_replicas: 8,
            ..spec()
        };
        let replicas = run(
            &s,
            &[
                (0, Some(6)),   // 6
                (100, Some(2)), // window starts
                (200, Some(4)), // highest in the window so far: 4
                (401, Some(2)), // window over: to 4, not 2
            ],
        );
        assert_eq!(replicas, vec![6, 6, 6, 4]);
    }

    #[test]
    fn without_an_observation_the_count_stays_and_bounds_apply_at_once() {
        let s = spec();
        assert_eq!(run(&s, &[(0, None)]), vec![1]);
        assert_eq!(run(&s, &[(0, Some(8)), (500, None)]), vec![4, 4]);
        let first = decide(&s, Some(8), None, at(0)).status;
        let lower = ScalingSpec {
            max_replicas: 2,
            ..spec()
        };
        let d = decide(&lower, Some(8), Some(&first), at(1));
        assert_eq!(d.status.replicas, 2);
        assert!(d.event.unwrap().1.contains("4 -> 2"));
    }

    #[test]
    fn every_change_is_an_event_stating_its_inputs() {
        let s = spec();
        let first = decide(&s, Some(2), None, at(0));
        let out = decide(&s, Some(4), Some(&first.status), at(61));
        let (reason, note) = out.event.unwrap();
        assert_eq!(reason, "ShardsScaledOut");
        assert!(
            note.contains(
                "4 open sales shard(s), shardsPerReplica 2, minReplicas 1, maxReplicas 4"
            ),
            "{note}"
        );
        assert!(note.contains("1 -> 2"), "{note}");
        // A steady state publishes nothing.
        let steady = decide(&s, Some(4), Some(&out.status), at(120));
        assert_eq!(steady.event, None);
        assert_eq!(
            steady.status,
            ScalingStatus {
                recommended: 2,
                ..out.status
            }
        );
    }
}
