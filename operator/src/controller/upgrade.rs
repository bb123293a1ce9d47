//! How a change reaches a running job without reading a sales shard twice or skipping one.
//!
//! [`decide`] is a pure function from what the spec asks, what the status recorded and what the
//! executor observed (pods, their savepoint and state reports) to the next step: what to record
//! in the status first, and what to do after that. It never calls anything; the controller
//! observes, calls it, writes the status, then acts. Every step is idempotent (savepoint
//! requests are idempotent per id, children are server-side applied), so a restarted operator,
//! or a standby that takes the leader Lease, repeats the recorded phase and converges.
//!
//! What a change needs, in the model of the Flink Kubernetes Operator:
//! - nothing has run yet, or the job is scaled to zero (suspend, `replicas: 0`): apply it;
//! - the same replica count with another configuration: `LastState` rolls the pods on their
//!   volumes, `Stateless` gives them a new, empty state (same count, so old and new pods never
//!   share a shard), `Savepoint` takes the savepoint flow;
//! - another replica count of a running job: the savepoint flow, whatever `upgradeMode` says,
//!   because only a savepoint can re-cut the shards between replica counts. Without
//!   `spec.savepoints` (or without the operator's control key) the rescale is refused and the
//!   StatefulSet keeps its count. A job resumed from zero at another count first comes back at
//!   the count its volumes were cut for, then rescales.
//!
//! The savepoint flow: `Savepointing` (every running replica writes its part and stops reading;
//! then one replica reads the whole savepoint back) -> `ScaledDown` (the StatefulSet at zero with its old template until no job pod exists) ->
//! `Restoring` (the new template and count, with the savepoint to restore under a new state id,
//! until every replica reports that state committed). A failed or timed-out savepoint goes to
//! `Aborting` instead: the replicas read again, nothing rolls, and the next attempt waits out a
//! backoff.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use tributary_crds::control::{SavepointCheck, SavepointReport, SavepointState, StateReport};
use tributary_crds::job_config::{SavepointLocation, StateConfig};
use tributary_crds::{
    OperationKind, OperationPhase, OperationRetry, PendingOperation, SavepointRef,
    StreamingEnrichmentStatus, UpgradeMode,
};

/// How often an operation in flight is looked at again.
pub const POLL: Duration = Duration::from_secs(2);
/// How often a change waiting for the replicas to be ready is looked at again (pod changes
/// also wake the controller).
const WAIT_FOR_PODS: Duration = Duration::from_secs(10);
/// A restore still running after this long is reported as Degraded (it keeps going: the
/// savepoint is the state, there is nothing to go back to).
pub const RESTORE_SLOW_AFTER: Duration = Duration::from_secs(15 * 60);
/// The first wait after a failed savepoint operation; it doubles with each failure in a row.
const RETRY_FIRST: Duration = Duration::from_secs(30);
const RETRY_MAX: Duration = Duration::from_secs(600);

/// What the spec asks for. `None` in [`Input`] when the spec is invalid.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// Hash of the job configuration and pod template (without replicas and state).
    pub config_hash: String,
    /// The replica count to run: resolved from the scaling mode, ignoring `suspend`.
    pub replicas: i32,
    /// `suspend`, or zero replicas: the StatefulSet goes to zero and the volumes are kept.
    pub stopped: bool,
    pub upgrade_mode: UpgradeMode,
    /// `spec.savepoints.uri`.
    pub savepoints_uri: Option<String>,
    /// `metadata.generation`, part of new ids so they can be traced to a spec.
    pub generation: i64,
}

/// The operator's settings the flow depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Whether the operator has a control key (no key: no savepoint can be asked for).
    pub control_key: bool,
    /// How long every replica has to complete its part of a savepoint.
    pub savepoint_timeout: Duration,
}

/// The status fields this flow owns.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Recorded {
    pub config_hash: Option<String>,
    pub running_replicas: Option<i32>,
    pub state_id: Option<String>,
    pub pending: Option<PendingOperation>,
    pub last_savepoint: Option<SavepointRef>,
    pub retry: Option<OperationRetry>,
}

impl Recorded {
    pub fn from_status(s: &StreamingEnrichmentStatus) -> Self {
        Self {
            config_hash: s.config_hash.clone(),
            running_replicas: s.running_replicas,
            state_id: s.state_id.clone(),
            pending: s.pending_operation.clone(),
            last_savepoint: s.last_savepoint.clone(),
            retry: s.operation_retry.clone(),
        }
    }

    pub fn write_into(&self, s: &mut StreamingEnrichmentStatus) {
        s.config_hash.clone_from(&self.config_hash);
        s.running_replicas = self.running_replicas;
        s.state_id.clone_from(&self.state_id);
        s.pending_operation.clone_from(&self.pending);
        s.last_savepoint.clone_from(&self.last_savepoint);
        s.operation_retry.clone_from(&self.retry);
    }

    /// The state the job runs on when no restore is under way.
    fn state(&self) -> StateConfig {
        StateConfig {
            id: self.state_id.clone().unwrap_or_default(),
            restore: None,
        }
    }
}

/// A job pod as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobPod {
    /// The StatefulSet ordinal (the pod name's suffix).
    pub ordinal: u32,
    /// `status.podIP`, once it has one.
    pub ip: Option<String>,
    /// The Ready condition is True.
    pub ready: bool,
    /// It has a deletion timestamp.
    pub terminating: bool,
}

/// One replica's part of a savepoint, as observed by `GET /savepoints/<id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Report(SavepointReport),
    /// 404: this process has not heard of the savepoint (never asked, or restarted since).
    Unknown,
    /// No pod with this ordinal, or it has no IP yet.
    NoPod,
    /// The replica refused the request (401/403: it does not have this token).
    Refused {
        status: u16,
        message: String,
    },
    /// Not reachable, or an unexpected answer.
    Unreachable(String),
}

/// The whole savepoint as one replica verified it (`GET /savepoints/<id>/check`: every part's
/// manifest and data files in the store), asked once every part reports completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckSeen {
    Report(SavepointCheck),
    Unreachable(String),
}

/// One replica's state, as observed by `GET /state`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateSeen {
    Report(StateReport),
    NoPod,
    Unreachable(String),
}

/// What the executor observed before deciding.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Observed {
    /// `spec.replicas` of the StatefulSet on the server; `None`: there is none.
    pub statefulset_replicas: Option<i32>,
    /// Every job pod that exists, terminating or not.
    pub pods: Vec<JobPod>,
    /// The savepoint parts, by ordinal (filled when [`needs`] asks for them).
    pub savepoints: BTreeMap<u32, Part>,
    /// The replicas' states, by ordinal (filled when [`needs`] asks for them).
    pub states: BTreeMap<u32, StateSeen>,
    /// The check of the whole savepoint, once every part of it reports completed.
    pub check: Option<CheckSeen>,
}

/// Whether every part of savepoint `id` among `parts` reports completed: the point at which
/// the whole savepoint is worth checking.
pub fn all_completed(parts: &BTreeMap<u32, Part>, id: &str, replicas: i32) -> bool {
    ordinals(replicas).iter().all(|o| {
        matches!(parts.get(o), Some(Part::Report(r)) if r.id == id && r.state == SavepointState::Completed)
    })
}

/// What the executor must observe for the recorded phase, beyond the StatefulSet and pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// `GET /savepoints/<id>` on these ordinals.
    Savepoints {
        id: String,
        ordinals: Vec<u32>,
    },
    /// `GET /state` on these ordinals.
    States {
        ordinals: Vec<u32>,
    },
}

pub fn needs(recorded: &Recorded) -> Needs {
    let Some(op) = &recorded.pending else {
        return Needs::Nothing;
    };
    match op.phase {
        OperationPhase::Savepointing | OperationPhase::Aborting => Needs::Savepoints {
            id: op.savepoint_id.clone(),
            ordinals: ordinals(op.from_replicas),
        },
        OperationPhase::Restoring => Needs::States {
            ordinals: ordinals(op.target_replicas),
        },
        OperationPhase::ScaledDown => Needs::Nothing,
    }
}

fn ordinals(replicas: i32) -> Vec<u32> {
    (0..u32::try_from(replicas).unwrap_or(0)).collect()
}

/// The replica counts and state the StatefulSet and ConfigMap are built for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// `spec.replicas` of the StatefulSet.
    pub statefulset_replicas: i32,
    /// The replica count the job configuration splits the shards among.
    pub job_replicas: i32,
    pub state: StateConfig,
}

/// What to do to the job after the status is recorded. The Services, the PodDisruptionBudget
/// and the control Secret are applied whatever the action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Apply the ConfigMap and StatefulSet built from the spec for this run.
    Apply(Run),
    /// Leave the ConfigMap and StatefulSet as they are.
    Keep,
    /// Set the StatefulSet's replicas to zero, leaving its template (and the ConfigMap) alone.
    ScaleToZero,
    /// `POST /savepoints {id, stopAfter: true}` to these ordinals.
    RequestSavepoints { id: String, ordinals: Vec<u32> },
    /// `POST /resume` to these ordinals.
    Resume { ordinals: Vec<u32> },
}

/// A condition's reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub reason: &'static str,
    pub message: String,
}

fn note(reason: &'static str, message: impl Into<String>) -> Note {
    Note {
        reason,
        message: message.into(),
    }
}

/// An event to publish: one per step taken, with its inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

fn normal(reason: &'static str, note: impl Into<String>) -> Notice {
    Notice {
        warning: false,
        reason,
        note: note.into(),
    }
}

fn warning(reason: &'static str, note: impl Into<String>) -> Notice {
    Notice {
        warning: true,
        reason,
        note: note.into(),
    }
}

/// What the status step shows of the flow.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Report {
    /// The replica count the StatefulSet is being brought to (the rollout is measured by it).
    pub replicas: i32,
    /// An operation (or the wait before one) is under way: Progressing=True, Ready=False.
    pub busy: Option<Note>,
    /// A change is held until a human acts: Progressing=False.
    pub held: Option<Note>,
    /// Degraded=True with this reason.
    pub degraded: Option<Note>,
    /// SavepointReady, when this step changed it.
    pub savepoint_ready: Option<(bool, Note)>,
    pub notices: Vec<Notice>,
}

/// The next step.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The flow's status fields after this step: written before the action.
    pub recorded: Recorded,
    pub action: Action,
    /// When to look again; `None`: the controller's usual interval.
    pub requeue: Option<Duration>,
    pub report: Report,
}

pub struct Input<'a> {
    pub desired: Option<&'a Desired>,
    pub recorded: &'a Recorded,
    pub observed: &'a Observed,
    pub settings: &'a Settings,
    pub now: Timestamp,
}

/// The next step of the flow.
pub fn decide(input: &Input<'_>) -> Decision {
    match input.recorded.pending.clone() {
        None => idle(input),
        Some(op) => match op.phase {
            OperationPhase::Savepointing => savepointing(input, op),
            OperationPhase::Aborting => aborting(input, op),
            OperationPhase::ScaledDown => scaled_down(input, op),
            OperationPhase::Restoring => restoring(input, op),
        },
    }
}

fn decision(recorded: Recorded, action: Action, replicas: i32) -> Decision {
    Decision {
        recorded,
        action,
        requeue: None,
        report: Report {
            replicas,
            ..Default::default()
        },
    }
}

/// Apply a run, recording `recorded`.
fn apply(recorded: Recorded, run: Run) -> Decision {
    let replicas = run.statefulset_replicas;
    decision(recorded, Action::Apply(run), replicas)
}

/// Leave the job as it is.
fn keep(input: &Input<'_>, recorded: Recorded) -> Decision {
    let replicas = input.observed.statefulset_replicas.unwrap_or(0);
    decision(recorded, Action::Keep, replicas)
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn since(now: Timestamp, t: &Time) -> Duration {
    now.duration_since(t.0).unsigned_abs()
}

fn later(now: Timestamp, d: Duration) -> Timestamp {
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
    Timestamp::from_second(now.as_second().saturating_add(secs)).unwrap_or(now)
}

/// An id for a new savepoint or state: `<prefix>-<UTC date>-<time>-g<generation>`, so it sorts
/// by time and names the spec it was made for.
pub fn new_id(prefix: &str, now: Timestamp, generation: i64) -> String {
    format!("{prefix}-{}-g{generation}", now.strftime("%Y%m%d-%H%M%S"))
}

/// The folder of savepoint `id` under `spec.savepoints.uri`.
pub fn savepoint_folder(uri: &str, id: &str) -> String {
    format!("{}/{id}/", uri.trim_end_matches('/'))
}

/// The wait before attempt `attempts + 1`.
fn retry_delay(attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(10);
    RETRY_FIRST.saturating_mul(1 << doublings).min(RETRY_MAX)
}

fn short(hash: Option<&str>) -> &str {
    hash.unwrap_or("none")
}

/// No operation in flight: what does the spec need?
fn idle(input: &Input<'_>) -> Decision {
    let rec = input.recorded;
    let obs = input.observed;
    // An invalid spec changes nothing: the job keeps its previous configuration.
    let Some(d) = input.desired else {
        return keep(input, rec.clone());
    };
    let config_changed = rec.config_hash.as_deref() != Some(d.config_hash.as_str());
    // A status written before these fields existed: the StatefulSet says what runs.
    let adopting = rec.running_replicas.is_none();
    let running = rec
        .running_replicas
        .or(obs.statefulset_replicas.filter(|n| *n > 0));
    let mut next = rec.clone();
    next.config_hash = Some(d.config_hash.clone());

    // Nothing has run: a new resource (or one created stopped). Whatever it asks can apply.
    let Some(n) = running else {
        next.retry = None;
        let job_replicas = d.replicas.max(1);
        let statefulset_replicas = if d.stopped { 0 } else { d.replicas };
        // Stopped, it has not split anything yet: the count is recorded once pods run.
        next.running_replicas = (!d.stopped).then_some(job_replicas);
        // The first state is named at once, so a later Stateless change (a new id) replaces
        // it: a volume without a name is adopted as it is, never emptied.
        if next.state_id.is_none() {
            next.state_id = Some(new_id("st", input.now, d.generation));
        }
        let state = next.state();
        return apply(
            next,
            Run {
                statefulset_replicas,
                job_replicas,
                state,
            },
        );
    };
    next.running_replicas = Some(n);

    // A Stateless job changed while not running (stopping, stopped, resuming) starts on new,
    // empty state as well: that is the mode's meaning, and nothing runs to lose.
    let stateless_change =
        |next: &mut Recorded, notices: &mut Vec<Notice>| -> Option<StateConfig> {
            (config_changed && !adopting && d.upgrade_mode == UpgradeMode::Stateless).then(|| {
                let id = new_id("st", input.now, d.generation);
                notices.push(normal(
                    "StatelessUpgrade",
                    format!(
                        "configuration {} -> {} with upgradeMode Stateless: the replicas start on \
                         new empty state {id}, reading from each source's startPosition",
                        short(rec.config_hash.as_deref()),
                        d.config_hash
                    ),
                ));
                next.state_id = Some(id.clone());
                StateConfig { id, restore: None }
            })
        };

    if d.stopped {
        next.retry = None;
        let mut notices = Vec::new();
        let state = stateless_change(&mut next, &mut notices).unwrap_or_else(|| rec.state());
        let mut out = apply(
            next,
            Run {
                statefulset_replicas: 0,
                job_replicas: n,
                state,
            },
        );
        out.report.notices = notices;
        return out;
    }

    let pods_exist = !obs.pods.is_empty();
    if d.replicas != n {
        if !pods_exist {
            // Coming back from zero at another count: first at the count the volumes hold,
            // then the rescale goes through a savepoint like any other.
            let mut notices = vec![normal(
                "ResumingAtStateReplicas",
                format!(
                    "starting {n} replica(s), the count the state volumes were cut for; the \
                     rescale to {} follows through a savepoint once they are ready",
                    d.replicas
                ),
            )];
            let state = stateless_change(&mut next, &mut notices).unwrap_or_else(|| rec.state());
            let mut out = apply(
                next,
                Run {
                    statefulset_replicas: n,
                    job_replicas: n,
                    state,
                },
            );
            out.report.notices = notices;
            return out;
        }
        return needs_savepoint(input, d, n, OperationKind::Rescale);
    }

    if config_changed {
        let mode = if adopting {
            // What the previous operator did with every change: roll on the volumes.
            UpgradeMode::LastState
        } else {
            d.upgrade_mode
        };
        match mode {
            UpgradeMode::Savepoint if pods_exist => {
                return needs_savepoint(input, d, n, OperationKind::Upgrade);
            }
            UpgradeMode::Stateless => {
                next.retry = None;
                let mut notices = Vec::new();
                let state =
                    stateless_change(&mut next, &mut notices).unwrap_or_else(|| rec.state());
                let mut out = apply(
                    next,
                    Run {
                        statefulset_replicas: n,
                        job_replicas: n,
                        state,
                    },
                );
                out.report.notices = notices;
                return out;
            }
            UpgradeMode::LastState | UpgradeMode::Savepoint => {
                next.retry = None;
                let how = if pods_exist {
                    "rolling the pods on their state volumes"
                } else {
                    "no job pod runs: applied as it is, on the state volumes"
                };
                let mut out = apply(
                    next,
                    Run {
                        statefulset_replicas: n,
                        job_replicas: n,
                        state: rec.state(),
                    },
                );
                if !adopting {
                    out.report.notices.push(normal(
                        "ConfigurationChanged",
                        format!(
                            "configuration {} -> {} (upgradeMode {mode:?}): {how}",
                            short(rec.config_hash.as_deref()),
                            d.config_hash
                        ),
                    ));
                }
                return out;
            }
        }
    }

    // The job runs the spec: keep the children as they should be.
    next.retry = None;
    apply(
        next,
        Run {
            statefulset_replicas: n,
            job_replicas: n,
            state: rec.state(),
        },
    )
}

/// A change that only a savepoint can bring in: start the flow, or say what holds it.
fn needs_savepoint(input: &Input<'_>, d: &Desired, n: i32, kind: OperationKind) -> Decision {
    let rec = input.recorded;
    let what = match kind {
        OperationKind::Rescale => format!(
            "rescaling from {n} to {} replicas re-cuts the sales shards and needs a savepoint",
            d.replicas
        ),
        OperationKind::Upgrade => format!(
            "configuration {} -> {} with upgradeMode Savepoint needs a savepoint",
            short(rec.config_hash.as_deref()),
            d.config_hash
        ),
    };
    let held = |reason: &'static str, message: String| {
        let mut out = keep(input, rec.clone());
        out.report.held = Some(note(reason, message.clone()));
        out.report.degraded = Some(note(reason, message));
        out
    };
    let Some(uri) = &d.savepoints_uri else {
        return held(
            "SavepointsNotConfigured",
            format!(
                "{what}, and spec.savepoints is not set: the StatefulSet keeps {n} replica(s); \
                 set spec.savepoints.uri, or set the replicas back to {n}"
            ),
        );
    };
    if !input.settings.control_key {
        return held(
            "ControlKeyNotConfigured",
            format!(
                "{what}, and the operator has no control key to ask the replicas for one \
                 (--control-key-file / TRIBUTARY_CONTROL_KEY_FILE, or TRIBUTARY_CONTROL_KEY); \
                 the job keeps running as it is"
            ),
        );
    }
    if let Some(r) = &rec.retry {
        let same_target = r.target_config_hash == d.config_hash && r.target_replicas == d.replicas;
        if same_target && input.now < r.not_before.0 {
            let mut out = keep(input, rec.clone());
            let message = format!(
                "{} (attempt {}); the next attempt starts after {}",
                r.message, r.attempts, r.not_before.0
            );
            out.report.held = Some(note("WaitingToRetry", message.clone()));
            out.report.degraded = Some(Note {
                reason: retry_reason(&r.reason),
                message,
            });
            out.requeue = Some(since(input.now, &r.not_before).max(Duration::from_secs(1)));
            return out;
        }
    }
    // Every replica must be up to write its part.
    let ready = (0..u32::try_from(n).unwrap_or(0))
        .filter(|o| {
            input
                .observed
                .pods
                .iter()
                .any(|p| p.ordinal == *o && p.ready && !p.terminating && p.ip.is_some())
        })
        .count();
    if ready < usize::try_from(n).unwrap_or(0) {
        let mut out = keep(input, rec.clone());
        let escape = match kind {
            OperationKind::Upgrade => {
                "; upgradeMode LastState would restart them on their volumes without one"
            }
            OperationKind::Rescale => "",
        };
        out.report.busy = Some(note(
            "WaitingForReplicas",
            format!(
                "{what}: waiting for every replica to be ready to write its part \
                 ({ready}/{n} ready){escape}"
            ),
        ));
        out.requeue = Some(WAIT_FOR_PODS);
        return out;
    }

    let id = new_id("sp", input.now, d.generation);
    let folder = savepoint_folder(uri, &id);
    let now = time(input.now);
    let op = PendingOperation {
        kind,
        phase: OperationPhase::Savepointing,
        savepoint_id: id.clone(),
        savepoint_uri: folder.clone(),
        from_replicas: n,
        target_config_hash: d.config_hash.clone(),
        target_replicas: d.replicas,
        started_at: now.clone(),
        phase_started_at: now,
        abort_reason: None,
        abort_message: None,
    };
    let mut next = rec.clone();
    next.pending = Some(op);
    let mut out = keep(input, next);
    out.action = Action::RequestSavepoints {
        id: id.clone(),
        ordinals: ordinals(n),
    };
    out.requeue = Some(POLL);
    out.report.busy = Some(note(
        "Savepointing",
        format!("{}: savepoint {id}, 0/{n} parts completed", kind.as_str()),
    ));
    out.report.notices.push(normal(
        "SavepointStarted",
        format!(
            "{what}: asked {n} replica(s) for savepoint {id} into {folder}, each to stop \
             reading after its part (timeout {}s)",
            input.settings.savepoint_timeout.as_secs()
        ),
    ));
    out
}

/// The reasons a retry record may carry, as the static strings conditions take.
fn retry_reason(reason: &str) -> &'static str {
    match reason {
        "SavepointTimeout" => "SavepointTimeout",
        "SavepointIncomplete" => "SavepointIncomplete",
        "ControlUnauthorized" => "ControlUnauthorized",
        _ => "SavepointFailed",
    }
}

fn savepointing(input: &Input<'_>, op: PendingOperation) -> Decision {
    let obs = input.observed;
    let from = op.from_replicas;
    let id = op.savepoint_id.clone();
    let parts: Vec<(u32, &Part)> = ordinals(from)
        .into_iter()
        .map(|o| (o, obs.savepoints.get(&o).unwrap_or(&Part::NoPod)))
        .collect();

    for (o, p) in &parts {
        if let Some(r) = part_report(p, &id) {
            if r.state == SavepointState::Failed {
                let why = r.error.as_deref().unwrap_or("no reason given");
                return abort(
                    input,
                    op,
                    "SavepointFailed",
                    format!("replica {o} failed its part of savepoint {id}: {why}"),
                );
            }
            if r.state == SavepointState::Completed && i64::from(r.replicas) != i64::from(from) {
                return abort(
                    input,
                    op,
                    "SavepointFailed",
                    format!(
                        "replica {o} wrote its part of savepoint {id} for {} replicas, the job \
                         runs {from}",
                        r.replicas
                    ),
                );
            }
        }
        if let Part::Refused { status, message } = p {
            return abort(
                input,
                op,
                "ControlUnauthorized",
                format!(
                    "replica {o} refused the control token ({status}: {message}): pods that \
                     started before the control Secret held this token need a restart"
                ),
            );
        }
    }
    match input.desired {
        None => {
            return abort(
                input,
                op,
                "InvalidSpec",
                "the spec became invalid during the savepoint".to_string(),
            );
        }
        Some(d)
            if !d.stopped
                && d.replicas == from
                && input.recorded.config_hash.as_deref() == Some(d.config_hash.as_str()) =>
        {
            return abort(
                input,
                op,
                "Cancelled",
                "the spec went back to what the job runs".to_string(),
            );
        }
        Some(_) => {}
    }

    let done: Vec<&SavepointReport> = parts
        .iter()
        .filter_map(|(_, p)| part_report(p, &id))
        .filter(|r| r.state == SavepointState::Completed)
        .collect();
    let total = usize::try_from(from).unwrap_or(0);
    // Every part says it is written; the whole savepoint must also read back complete before
    // the old replicas go: a savepoint that cannot be restored never leads to a roll.
    let verified = match (&obs.check, done.len() == total) {
        (_, false) => None,
        (Some(CheckSeen::Report(c)), true) if c.id == id => {
            if c.complete && i64::from(c.parts) == i64::from(from) {
                Some(c.bytes)
            } else {
                let why = c
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("{} part(s) found, {from} written", c.parts));
                return abort(
                    input,
                    op,
                    "SavepointIncomplete",
                    format!("savepoint {id} does not read back complete: {why}"),
                );
            }
        }
        (_, true) => None,
    };
    if let Some(checked_bytes) = verified {
        let figures = done.iter().filter_map(|r| r.figures.as_ref());
        let (bytes, waiting, shards) = figures.fold((0u64, 0u64, 0u64), |(b, w, s), f| {
            (b + f.bytes, w + f.waiting_sales, s + f.sales_shards)
        });
        let now = time(input.now);
        let mut next = input.recorded.clone();
        next.last_savepoint = Some(SavepointRef {
            id: id.clone(),
            uri: op.savepoint_uri.clone(),
            completed_at: now.clone(),
            replicas: from,
        });
        let uri = op.savepoint_uri.clone();
        let kind = op.kind;
        next.pending = Some(PendingOperation {
            phase: OperationPhase::ScaledDown,
            phase_started_at: now,
            ..op
        });
        let mut out = keep(input, next);
        out.action = Action::ScaleToZero;
        out.report.replicas = 0;
        out.requeue = Some(POLL);
        out.report.busy = Some(note(
            "ScaledDown",
            format!(
                "{}: savepoint {id} complete; scaling to zero before restoring",
                kind.as_str()
            ),
        ));
        out.report.savepoint_ready = Some((
            true,
            note(
                "SavepointCompleted",
                format!("savepoint {id} of {from} replica(s) at {uri}"),
            ),
        ));
        out.report.notices.push(normal(
            "SavepointCompleted",
            format!(
                "savepoint {id} complete and verified at {uri}: {from} part(s), {bytes} bytes \
                 written ({checked_bytes} read back), {shards} sales shard(s), {waiting} waiting \
                 sale(s); scaling the StatefulSet to zero"
            ),
        ));
        return out;
    }

    let waited = since(input.now, &op.phase_started_at);
    if waited > input.settings.savepoint_timeout {
        let pending: Vec<String> = parts
            .iter()
            .filter(|(_, p)| {
                part_report(p, &id).is_none_or(|r| r.state != SavepointState::Completed)
            })
            .map(|(o, p)| format!("replica {o}: {}", describe(p)))
            .collect();
        let waiting_on = if pending.is_empty() {
            match &obs.check {
                Some(CheckSeen::Unreachable(e)) => format!("the whole-savepoint check: {e}"),
                _ => "the whole-savepoint check".to_string(),
            }
        } else {
            pending.join(", ")
        };
        return abort(
            input,
            op,
            "SavepointTimeout",
            format!(
                "savepoint {id} not complete after {}s ({}/{total} parts; {})",
                input.settings.savepoint_timeout.as_secs(),
                done.len(),
                waiting_on
            ),
        );
    }

    // Ask again whoever has not heard of it (never asked, or restarted since): idempotent.
    let ask: Vec<u32> = parts
        .iter()
        .filter(|(_, p)| matches!(p, Part::Unknown))
        .map(|(o, _)| *o)
        .collect();
    let kind = op.kind;
    let mut out = keep(input, input.recorded.clone());
    let verifying = match (&obs.check, done.len() == total) {
        (Some(CheckSeen::Unreachable(e)), true) => format!("; verifying it: {e}"),
        (_, true) => "; verifying it".to_string(),
        (_, false) => String::new(),
    };
    if !ask.is_empty() {
        out.action = Action::RequestSavepoints {
            id: id.clone(),
            ordinals: ask,
        };
    }
    out.requeue = Some(POLL);
    out.report.busy = Some(note(
        "Savepointing",
        format!(
            "{}: savepoint {id}, {}/{total} parts completed{verifying}",
            kind.as_str(),
            done.len()
        ),
    ));
    out
}

/// The report of savepoint `id` in an observation, if that is what it holds.
fn part_report<'a>(p: &'a Part, id: &str) -> Option<&'a SavepointReport> {
    match p {
        Part::Report(r) if r.id == id => Some(r),
        _ => None,
    }
}

fn describe(p: &Part) -> String {
    match p {
        Part::Report(r) => format!("{:?}", r.state),
        Part::Unknown => "has not heard of it".into(),
        Part::NoPod => "no pod".into(),
        Part::Refused { status, .. } => format!("refused ({status})"),
        Part::Unreachable(e) => format!("unreachable ({e})"),
    }
}

/// Give the savepoint up: record why, then tell the replicas to read again.
fn abort(
    input: &Input<'_>,
    op: PendingOperation,
    reason: &'static str,
    message: String,
) -> Decision {
    let op = PendingOperation {
        phase: OperationPhase::Aborting,
        phase_started_at: time(input.now),
        abort_reason: Some(reason.to_string()),
        abort_message: Some(message.clone()),
        ..op
    };
    let mut next = input.recorded.clone();
    next.pending = Some(op.clone());
    let id = op.savepoint_id.clone();
    let mut out = aborting(
        &Input {
            recorded: &next,
            ..*input
        },
        op,
    );
    let failure = !matches!(reason, "Cancelled" | "InvalidSpec");
    let event = if failure {
        warning(
            reason,
            format!("{message}; the replicas are told to read again and nothing rolls"),
        )
    } else {
        normal(
            "SavepointCancelled",
            format!("savepoint {id} abandoned: {message}; the replicas are told to read again"),
        )
    };
    out.report.notices.insert(0, event);
    out
}

fn is_failure(op: &PendingOperation) -> bool {
    !matches!(
        op.abort_reason.as_deref(),
        Some("Cancelled") | Some("InvalidSpec")
    )
}

fn aborting(input: &Input<'_>, op: PendingOperation) -> Decision {
    let obs = input.observed;
    let reason = op.abort_reason.clone().unwrap_or_default();
    let message = op.abort_message.clone().unwrap_or_default();
    let failure = is_failure(&op);
    // Who still is, or will be, stopped by this savepoint. A replica that has not heard of it
    // (it restarted) or cannot be reached has no savepoint to stop after.
    let stopped: Vec<u32> = ordinals(op.from_replicas)
        .into_iter()
        .filter(|o| {
            matches!(obs.savepoints.get(o), Some(Part::Report(r))
                if r.id == op.savepoint_id && (r.stopped || r.state == SavepointState::InProgress))
        })
        .collect();
    let resume: Vec<u32> = ordinals(op.from_replicas)
        .into_iter()
        .filter(|o| matches!(obs.savepoints.get(o), Some(Part::Report(r)) if r.id == op.savepoint_id && r.stopped))
        .collect();
    let grace = input.settings.savepoint_timeout;
    let overdue = since(input.now, &op.phase_started_at) > grace;

    let degraded = failure.then(|| Note {
        reason: retry_reason(&reason),
        message: message.clone(),
    });
    if stopped.is_empty() || overdue {
        let mut next = input.recorded.clone();
        next.pending = None;
        let mut out;
        if failure {
            let same = next.retry.as_ref().filter(|r| {
                r.target_config_hash == op.target_config_hash
                    && r.target_replicas == op.target_replicas
            });
            let attempts = same.map_or(0, |r| r.attempts).saturating_add(1);
            let not_before = later(input.now, retry_delay(attempts));
            next.retry = Some(OperationRetry {
                attempts,
                not_before: time(not_before),
                reason: reason.clone(),
                message: message.clone(),
                target_config_hash: op.target_config_hash.clone(),
                target_replicas: op.target_replicas,
            });
            out = keep(input, next);
            out.report.degraded = degraded.clone();
            out.report.savepoint_ready = degraded.clone().map(|n| (false, n));
            out.report.held = Some(note(
                "WaitingToRetry",
                format!("{message}; the next attempt starts after {not_before}"),
            ));
            out.requeue = Some(retry_delay(attempts));
        } else {
            out = keep(input, next);
        }
        let tail = if overdue && !stopped.is_empty() {
            let list: Vec<String> = stopped.iter().map(u32::to_string).collect();
            out.report.notices.push(warning(
                "ResumeUnconfirmed",
                format!(
                    "replica(s) {} did not confirm reading again within {}s; they read again \
                     when they restart",
                    list.join(", "),
                    grace.as_secs()
                ),
            ));
            " (not all confirmed)"
        } else {
            ""
        };
        out.report.notices.push(normal(
            "SavepointAbandoned",
            format!(
                "savepoint {} abandoned ({reason}); the replicas read again at the \
                 configuration they run{tail}",
                op.savepoint_id
            ),
        ));
        return out;
    }
    let mut out = keep(input, input.recorded.clone());
    if !resume.is_empty() {
        out.action = Action::Resume { ordinals: resume };
    }
    out.requeue = Some(POLL);
    out.report.degraded = degraded;
    out.report.busy = Some(note(
        "Aborting",
        format!(
            "savepoint {} abandoned ({reason}): waiting for {} replica(s) to read again",
            op.savepoint_id,
            stopped.len()
        ),
    ));
    out
}

fn scaled_down(input: &Input<'_>, op: PendingOperation) -> Decision {
    let obs = input.observed;
    let kind = op.kind.as_str();
    let id = op.savepoint_id.clone();
    if !obs.pods.is_empty() || obs.statefulset_replicas.unwrap_or(0) != 0 {
        let mut out = keep(input, input.recorded.clone());
        out.action = Action::ScaleToZero;
        out.report.replicas = 0;
        out.requeue = Some(POLL);
        out.report.busy = Some(note(
            "ScaledDown",
            format!(
                "{kind}: savepoint {id} complete; waiting for {} job pod(s) to stop",
                obs.pods.len()
            ),
        ));
        return out;
    }
    let d = match input.desired {
        None => {
            let mut out = keep(input, input.recorded.clone());
            out.report.busy = Some(note(
                "ScaledDown",
                format!("{kind}: savepoint {id} complete; waiting for a valid spec to restore it"),
            ));
            return out;
        }
        Some(d) if d.stopped => {
            let mut out = keep(input, input.recorded.clone());
            out.report.busy = Some(note(
                "ScaledDown",
                format!(
                    "{kind}: savepoint {id} complete; the job is suspended, it is restored on resume"
                ),
            ));
            return out;
        }
        Some(d) => d,
    };
    let target = d.replicas;
    let now = time(input.now);
    let mut next = input.recorded.clone();
    next.config_hash = Some(d.config_hash.clone());
    next.running_replicas = Some(target);
    next.state_id = Some(id.clone());
    let uri = op.savepoint_uri.clone();
    let from = op.from_replicas;
    next.pending = Some(PendingOperation {
        phase: OperationPhase::Restoring,
        phase_started_at: now,
        target_config_hash: d.config_hash.clone(),
        target_replicas: target,
        ..op
    });
    let mut out = apply(
        next,
        Run {
            statefulset_replicas: target,
            job_replicas: target,
            state: StateConfig {
                id: id.clone(),
                restore: Some(SavepointLocation {
                    id: id.clone(),
                    uri: uri.clone(),
                }),
            },
        },
    );
    out.requeue = Some(POLL);
    out.report.busy = Some(note(
        "Restoring",
        format!("{kind}: restoring savepoint {id}, 0/{target} replicas committed"),
    ));
    out.report.notices.push(normal(
        "RestoreStarted",
        format!(
            "no job pod runs; starting {target} replica(s) with configuration {} on state {id}, \
             restored from savepoint {id} ({from} part(s) at {uri})",
            d.config_hash
        ),
    ));
    out
}

fn restoring(input: &Input<'_>, op: PendingOperation) -> Decision {
    let obs = input.observed;
    let id = op.savepoint_id.clone();
    let target = op.target_replicas;
    let kind = op.kind.as_str();
    let committed = ordinals(target)
        .into_iter()
        .filter(|o| {
            matches!(obs.states.get(o), Some(StateSeen::Report(r)) if r.state_id == id && r.committed)
        })
        .count();
    let total = usize::try_from(target).unwrap_or(0);
    let mut next = input.recorded.clone();
    let stopped = input.desired.is_some_and(|d| d.stopped);
    if let Some(d) = input.desired {
        // A configuration changed while restoring applies at once (same state, same count);
        // another replica count waits for the next operation.
        next.config_hash = Some(d.config_hash.clone());
        if let Some(p) = next.pending.as_mut() {
            p.target_config_hash.clone_from(&d.config_hash);
        }
    }
    let restore = Some(SavepointLocation {
        id: id.clone(),
        uri: op.savepoint_uri.clone(),
    });

    if committed == total && !stopped {
        next.pending = None;
        next.retry = None;
        let run = Run {
            statefulset_replicas: target,
            job_replicas: target,
            // Every replica runs on its restored state now: the savepoint is not needed to
            // start any more.
            state: StateConfig {
                id: id.clone(),
                restore: None,
            },
        };
        let mut out = match input.desired {
            Some(_) => apply(next, run),
            None => keep(input, next),
        };
        out.report.savepoint_ready = Some((
            true,
            note(
                "SavepointRestored",
                format!("savepoint {id} restored at {target} replica(s)"),
            ),
        ));
        out.report.notices.push(normal(
            "RestoreCompleted",
            format!(
                "{kind} done: {target} replica(s) run state {id} restored from savepoint {id} \
                 and have committed on it"
            ),
        ));
        return out;
    }

    let run = Run {
        statefulset_replicas: if stopped { 0 } else { target },
        job_replicas: target,
        state: StateConfig {
            id: id.clone(),
            restore,
        },
    };
    let mut out = match input.desired {
        Some(_) => apply(next, run),
        None => keep(input, next),
    };
    out.requeue = Some(POLL);
    let waiting = if stopped {
        "; the job is suspended, the restore goes on when it resumes".to_string()
    } else {
        String::new()
    };
    out.report.busy = Some(note(
        "Restoring",
        format!(
            "{kind}: restoring savepoint {id}, {committed}/{total} replicas committed{waiting}"
        ),
    ));
    if !stopped && since(input.now, &op.phase_started_at) > RESTORE_SLOW_AFTER {
        let behind: Vec<String> = ordinals(target)
            .into_iter()
            .filter_map(|o| match obs.states.get(&o) {
                Some(StateSeen::Report(r)) if r.state_id == id && r.committed => None,
                Some(StateSeen::Report(r)) => Some(format!(
                    "replica {o}: state {:?}, committed {}",
                    r.state_id, r.committed
                )),
                Some(StateSeen::Unreachable(e)) => Some(format!("replica {o}: unreachable ({e})")),
                Some(StateSeen::NoPod) | None => Some(format!("replica {o}: no pod")),
            })
            .collect();
        out.report.degraded = Some(note(
            "RestoreSlow",
            format!(
                "restoring savepoint {id} takes more than {} minutes: {}",
                RESTORE_SLOW_AFTER.as_secs() / 60,
                behind.join(", ")
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
