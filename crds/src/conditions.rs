//! Status conditions: the types Tributary reports and the rule that keeps `lastTransitionTime`
//! unless a condition's status actually flips (so `kubectl wait` and alerting see real transitions).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types a `StreamingEnrichment` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// The job runs with every replica ready on the current configuration.
    Ready,
    /// The operator is changing something: first rollout, a configuration roll, scaling.
    Progressing,
    /// Something needs a human: invalid spec, a failed rollout, a refused credential.
    Degraded,
    /// The OpenSearch index template, ISM policy and aliases are in place.
    IndexTemplateReady,
    /// The latest savepoint completed.
    SavepointReady,
    /// Every source stream exists and is readable (the operator's look and the replicas').
    SourcesHealthy,
    /// Every replica's sinks deliver (OpenSearch, the S3 Parquet files, the dead letters).
    SinksHealthy,
}

impl ConditionType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::Progressing => "Progressing",
            Self::Degraded => "Degraded",
            Self::IndexTemplateReady => "IndexTemplateReady",
            Self::SavepointReady => "SavepointReady",
            Self::SourcesHealthy => "SourcesHealthy",
            Self::SinksHealthy => "SinksHealthy",
        }
    }
}

/// A condition's status: `Unknown` when the operator could not find out (for example, it may not
/// read the credentials it would need to look).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b { Self::True } else { Self::False }
    }
}

/// A condition to record, without its transition time (that is decided by [`set_condition`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    pub type_: ConditionType,
    pub status: ConditionStatus,
    /// CamelCase, machine-readable (`InvalidSpec`, `RollingUpdate`, `Running`).
    pub reason: String,
    /// For humans; never secrets.
    pub message: String,
}

impl ConditionUpdate {
    pub fn new(
        type_: ConditionType,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// A condition whose status could not be found out.
    pub fn unknown(
        type_: ConditionType,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status: ConditionStatus::Unknown,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Insert or update one condition. `lastTransitionTime` becomes `now` only when the condition is
/// new or its status flips; reason, message and observedGeneration always follow the update.
/// Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate,
    observed_generation: Option<i64>,
    now: &Time,
) -> bool {
    let status = update.status.as_str();
    match conditions
        .iter_mut()
        .find(|c| c.type_ == update.type_.as_str())
    {
        Some(c) => {
            let before = c.clone();
            if c.status != status {
                c.last_transition_time = now.clone();
                c.status = status.to_string();
            }
            c.reason = update.reason;
            c.message = update.message;
            c.observed_generation = observed_generation;
            *c != before
        }
        None => {
            conditions.push(Condition {
                type_: update.type_.as_str().to_string(),
                status: status.to_string(),
                reason: update.reason,
                message: update.message,
                observed_generation,
                last_transition_time: now.clone(),
            });
            true
        }
    }
}

/// Find a condition by type.
pub fn get_condition(conditions: &[Condition], type_: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// Whether a condition is present and `True`.
pub fn is_true(conditions: &[Condition], type_: ConditionType) -> bool {
    get_condition(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let mut conds = vec![];
        let up = |s: bool, r: &str| ConditionUpdate::new(ConditionType::Ready, s, r, "m");
        assert!(set_condition(
            &mut conds,
            up(false, "Pending"),
            Some(1),
            &t(100)
        ));
        assert_eq!(conds[0].last_transition_time, t(100));

        // Same status, new reason and generation: time kept, fields updated.
        assert!(set_condition(
            &mut conds,
            up(false, "Starting"),
            Some(2),
            &t(200)
        ));
        assert_eq!(conds[0].last_transition_time, t(100));
        assert_eq!(conds[0].reason, "Starting");
        assert_eq!(conds[0].observed_generation, Some(2));

        // Nothing different: no change reported.
        assert!(!set_condition(
            &mut conds,
            up(false, "Starting"),
            Some(2),
            &t(300)
        ));
        assert_eq!(conds[0].last_transition_time, t(100));

        // Flip: time moves.
        assert!(set_condition(
            &mut conds,
            up(true, "Running"),
            Some(2),
            &t(400)
        ));
        assert_eq!(conds[0].last_transition_time, t(400));
        assert_eq!(conds[0].status, "True");
        assert!(is_true(&conds, ConditionType::Ready));
        assert_eq!(conds.len(), 1);
    }

    #[test]
    fn conditions_of_other_types_are_independent() {
        let mut conds = vec![];
        set_condition(
            &mut conds,
            ConditionUpdate::new(ConditionType::Ready, true, "Running", ""),
            Some(1),
            &t(1),
        );
        set_condition(
            &mut conds,
            ConditionUpdate::new(ConditionType::Degraded, false, "AsExpected", ""),
            Some(1),
            &t(2),
        );
        assert_eq!(conds.len(), 2);
        assert!(is_true(&conds, ConditionType::Ready));
        assert!(!is_true(&conds, ConditionType::Degraded));
        assert!(get_condition(&conds, ConditionType::SavepointReady).is_none());
    }
}
