//! Every case of the decision, then a simulated cluster driven by it (with the operator killed
//! between recording a step and carrying it out) that must converge without two replica
//! counts ever reading at once.

use super::*;
use tributary_crds::control::{SavepointCheck, SavepointFigures};

const H1: &str = "hash-1";
const H2: &str = "hash-2";
const URI: &str = "s3://ara-savepoints/sales";

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_767_225_600 + s).unwrap()
}

fn desired(hash: &str, replicas: i32, mode: UpgradeMode) -> Desired {
    Desired {
        config_hash: hash.into(),
        replicas,
        stopped: false,
        upgrade_mode: mode,
        savepoints_uri: Some(URI.into()),
        generation: 3,
    }
}

fn settings() -> Settings {
    Settings {
        control_key: true,
        savepoint_timeout: Duration::from_secs(300),
    }
}

fn running(hash: &str, n: i32) -> Recorded {
    Recorded {
        config_hash: Some(hash.into()),
        running_replicas: Some(n),
        ..Default::default()
    }
}

fn pods(n: u32) -> Vec<JobPod> {
    (0..n)
        .map(|o| JobPod {
            ordinal: o,
            ip: Some(format!("10.0.0.{o}")),
            ready: true,
            terminating: false,
        })
        .collect()
}

fn world(sts: i32, pod_count: u32) -> Observed {
    Observed {
        statefulset_replicas: Some(sts),
        pods: pods(pod_count),
        ..Default::default()
    }
}

fn at(d: Option<&Desired>, rec: &Recorded, obs: &Observed, s: &Settings, now: i64) -> Decision {
    decide(&Input {
        desired: d,
        recorded: rec,
        observed: obs,
        settings: s,
        now: t(now),
    })
}

fn go(d: &Desired, rec: &Recorded, obs: &Observed, now: i64) -> Decision {
    at(Some(d), rec, obs, &settings(), now)
}

fn run(sts: i32, job: i32, state: &str) -> Action {
    Action::Apply(Run {
        statefulset_replicas: sts,
        job_replicas: job,
        state: StateConfig {
            id: state.into(),
            restore: None,
        },
    })
}

fn report(id: &str, o: u32, n: u32, state: SavepointState, stopped: bool) -> Part {
    Part::Report(SavepointReport {
        id: id.into(),
        state,
        ordinal: o,
        replicas: n,
        manifest: None,
        error: (state == SavepointState::Failed).then(|| "S3 said no".into()),
        figures: (state == SavepointState::Completed).then(|| SavepointFigures {
            bytes: 100,
            waiting_sales: 2,
            sales_shards: 1,
            ..Default::default()
        }),
        stopped,
    })
}

/// A recorded operation in `phase`, from 2 to 3 replicas.
fn op(phase: OperationPhase, started: i64) -> PendingOperation {
    PendingOperation {
        kind: OperationKind::Rescale,
        phase,
        savepoint_id: "sp-1".into(),
        savepoint_uri: format!("{URI}/sp-1/"),
        from_replicas: 2,
        target_config_hash: H1.into(),
        target_replicas: 3,
        started_at: Time(t(started)),
        phase_started_at: Time(t(started)),
        abort_reason: None,
        abort_message: None,
    }
}

fn with_op(rec: Recorded, op: PendingOperation) -> Recorded {
    Recorded {
        pending: Some(op),
        ..rec
    }
}

fn phase(d: &Decision) -> Option<OperationPhase> {
    d.recorded.pending.as_ref().map(|p| p.phase)
}

// --- no operation in flight ------------------------------------------------------------

#[test]
fn a_new_resource_applies_what_it_asks() {
    let d = desired(H1, 3, UpgradeMode::Savepoint);
    let out = go(&d, &Recorded::default(), &Observed::default(), 0);
    // The first state is named at once (a later Stateless change then replaces it).
    let first = out.recorded.state_id.clone().unwrap_or_default();
    assert!(first.starts_with("st-"), "{first}");
    assert_eq!(out.action, run(3, 3, &first));
    assert_eq!(out.recorded.running_replicas, Some(3));
    assert_eq!(out.recorded.config_hash.as_deref(), Some(H1));
    assert_eq!(out.recorded.pending, None);
    assert!(out.report.notices.is_empty());

    // Created suspended: nothing split yet, so no count is recorded.
    let stopped = Desired {
        stopped: true,
        ..d.clone()
    };
    let out = go(&stopped, &Recorded::default(), &Observed::default(), 0);
    let named = out.recorded.state_id.clone().unwrap_or_default();
    assert_eq!(out.action, run(0, 3, &named));
    assert_eq!(out.recorded.running_replicas, None);
    // ... and resuming it at another count is still a plain apply.
    let resumed = go(
        &desired(H1, 5, UpgradeMode::Savepoint),
        &out.recorded,
        &world(0, 0),
        10,
    );
    assert_eq!(resumed.action, run(5, 5, &named), "the name is kept");
}

#[test]
fn a_job_running_its_spec_is_kept_as_it_should_be() {
    for mode in [
        UpgradeMode::LastState,
        UpgradeMode::Stateless,
        UpgradeMode::Savepoint,
    ] {
        let rec = Recorded {
            state_id: Some("st-a".into()),
            ..running(H1, 2)
        };
        let out = go(&desired(H1, 2, mode), &rec, &world(2, 2), 0);
        assert_eq!(out.action, run(2, 2, "st-a"), "{mode:?}");
        assert_eq!(out.recorded, rec, "{mode:?}: nothing new to record");
        assert_eq!(
            out.report,
            Report {
                replicas: 2,
                ..Default::default()
            }
        );
    }
}

#[test]
fn last_state_rolls_on_the_volumes() {
    let out = go(
        &desired(H2, 2, UpgradeMode::LastState),
        &running(H1, 2),
        &world(2, 2),
        0,
    );
    assert_eq!(out.action, run(2, 2, ""));
    assert_eq!(out.recorded.config_hash.as_deref(), Some(H2));
    assert_eq!(out.report.notices[0].reason, "ConfigurationChanged");
    assert!(out.report.notices[0].note.contains("hash-1 -> hash-2"));
}

#[test]
fn stateless_starts_new_empty_state_at_the_same_count() {
    let rec = Recorded {
        state_id: Some("st-old".into()),
        ..running(H1, 2)
    };
    let out = go(
        &desired(H2, 2, UpgradeMode::Stateless),
        &rec,
        &world(2, 2),
        0,
    );
    let id = "st-20260101-000000-g3";
    assert_eq!(out.action, run(2, 2, id));
    assert_eq!(
        out.recorded.state_id.as_deref(),
        Some(id),
        "recorded before it is applied"
    );
    assert_eq!(out.recorded.config_hash.as_deref(), Some(H2));
    assert_eq!(out.recorded.pending, None, "one step: no operation");
    assert_eq!(out.report.notices[0].reason, "StatelessUpgrade");
    // Applied again (the operator died after recording), it is the same run: no second id.
    let again = go(
        &desired(H2, 2, UpgradeMode::Stateless),
        &out.recorded,
        &world(2, 2),
        60,
    );
    assert_eq!(again.action, run(2, 2, id));
    assert!(again.report.notices.is_empty());
}

#[test]
fn savepoint_mode_starts_the_savepoint_flow_recording_it_first() {
    let d = desired(H2, 2, UpgradeMode::Savepoint);
    let out = go(&d, &running(H1, 2), &world(2, 2), 0);
    let op = out.recorded.pending.clone().expect("operation recorded");
    assert_eq!(op.kind, OperationKind::Upgrade);
    assert_eq!(op.phase, OperationPhase::Savepointing);
    assert_eq!(op.savepoint_id, "sp-20260101-000000-g3");
    assert_eq!(op.savepoint_uri, format!("{URI}/sp-20260101-000000-g3/"));
    assert_eq!((op.from_replicas, op.target_replicas), (2, 2));
    assert_eq!(op.target_config_hash, H2);
    assert_eq!(op.started_at, Time(t(0)));
    assert_eq!(
        out.action,
        Action::RequestSavepoints {
            id: op.savepoint_id.clone(),
            ordinals: vec![0, 1]
        }
    );
    assert_eq!(
        out.recorded.config_hash.as_deref(),
        Some(H1),
        "the pods still run H1"
    );
    assert_eq!(out.requeue, Some(POLL));
    assert_eq!(out.report.busy.as_ref().unwrap().reason, "Savepointing");
    assert_eq!(out.report.notices[0].reason, "SavepointStarted");
    assert!(out.report.notices[0].note.contains("timeout 300s"));
}

#[test]
fn savepoint_mode_without_running_pods_just_applies() {
    let out = go(
        &desired(H2, 2, UpgradeMode::Savepoint),
        &running(H1, 2),
        &world(2, 0),
        0,
    );
    assert_eq!(out.action, run(2, 2, ""));
    assert_eq!(out.recorded.pending, None);
}

#[test]
fn any_rescale_of_a_running_job_takes_a_savepoint_whatever_the_mode() {
    for mode in [
        UpgradeMode::LastState,
        UpgradeMode::Stateless,
        UpgradeMode::Savepoint,
    ] {
        for target in [1, 3] {
            let out = go(&desired(H1, target, mode), &running(H1, 2), &world(2, 2), 0);
            let op = out.recorded.pending.clone().expect("operation");
            assert_eq!(op.kind, OperationKind::Rescale, "{mode:?}");
            assert_eq!((op.from_replicas, op.target_replicas), (2, target));
            assert!(
                matches!(out.action, Action::RequestSavepoints { ref ordinals, .. } if *ordinals == [0, 1])
            );
        }
    }
}

#[test]
fn a_rescale_without_savepoints_is_refused_and_the_count_kept() {
    let d = Desired {
        savepoints_uri: None,
        ..desired(H1, 3, UpgradeMode::LastState)
    };
    let out = go(&d, &running(H1, 2), &world(2, 2), 0);
    assert_eq!(out.action, Action::Keep, "the StatefulSet keeps 2 replicas");
    assert_eq!(out.report.replicas, 2);
    assert_eq!(out.recorded, running(H1, 2));
    let held = out.report.held.unwrap();
    assert_eq!(held.reason, "SavepointsNotConfigured");
    assert!(
        held.message.contains("from 2 to 3 replicas"),
        "{}",
        held.message
    );
    assert!(held.message.contains("spec.savepoints"), "{}", held.message);
    assert_eq!(
        out.report.degraded.unwrap().reason,
        "SavepointsNotConfigured"
    );
}

#[test]
fn without_a_control_key_savepoint_operations_are_refused_naming_the_setting() {
    let s = Settings {
        control_key: false,
        ..settings()
    };
    for (d, what) in [
        (desired(H1, 3, UpgradeMode::LastState), "rescale"),
        (desired(H2, 2, UpgradeMode::Savepoint), "upgrade"),
    ] {
        let out = at(Some(&d), &running(H1, 2), &world(2, 2), &s, 0);
        assert_eq!(out.action, Action::Keep, "{what}");
        let held = out.report.held.unwrap();
        assert_eq!(held.reason, "ControlKeyNotConfigured");
        assert!(
            held.message.contains("TRIBUTARY_CONTROL_KEY_FILE"),
            "{}",
            held.message
        );
    }
    // Nothing else needs the key.
    let out = at(
        Some(&desired(H2, 2, UpgradeMode::LastState)),
        &running(H1, 2),
        &world(2, 2),
        &s,
        0,
    );
    assert_eq!(out.action, run(2, 2, ""));
}

#[test]
fn the_savepoint_waits_for_every_replica_to_be_ready() {
    let mut obs = world(2, 2);
    obs.pods[1].ready = false;
    let out = go(
        &desired(H2, 2, UpgradeMode::Savepoint),
        &running(H1, 2),
        &obs,
        0,
    );
    assert_eq!(out.action, Action::Keep);
    assert_eq!(out.recorded.pending, None);
    let busy = out.report.busy.unwrap();
    assert_eq!(busy.reason, "WaitingForReplicas");
    assert!(busy.message.contains("1/2 ready"));
    assert!(
        busy.message.contains("LastState"),
        "names the way out: {}",
        busy.message
    );
    obs.pods[1].ready = true;
    obs.pods[1].terminating = true;
    let out = go(
        &desired(H1, 3, UpgradeMode::Savepoint),
        &running(H1, 2),
        &obs,
        0,
    );
    assert_eq!(out.report.busy.unwrap().reason, "WaitingForReplicas");
}

#[test]
fn suspend_scales_to_zero_keeping_the_count_the_volumes_hold() {
    let d = Desired {
        stopped: true,
        ..desired(H1, 2, UpgradeMode::Savepoint)
    };
    let out = go(&d, &running(H1, 2), &world(2, 2), 0);
    assert_eq!(out.action, run(0, 2, ""));
    assert_eq!(out.recorded.running_replicas, Some(2));
    // A change made while suspended applies (nothing runs to save), even a count.
    let d = Desired {
        stopped: true,
        ..desired(H2, 5, UpgradeMode::Savepoint)
    };
    let out = go(&d, &running(H1, 2), &world(0, 0), 0);
    assert_eq!(
        out.action,
        run(0, 2, ""),
        "the configuration stays cut for 2"
    );
    assert_eq!(out.recorded.config_hash.as_deref(), Some(H2));
    // Stateless changed while suspended: new empty state for the resume.
    let d = Desired {
        stopped: true,
        ..desired(H2, 2, UpgradeMode::Stateless)
    };
    let out = go(&d, &running(H1, 2), &world(0, 0), 0);
    assert_eq!(out.action, run(0, 2, "st-20260101-000000-g3"));
}

#[test]
fn resuming_at_another_count_comes_back_at_the_old_one_then_rescales() {
    let rec = running(H1, 2);
    let d = desired(H1, 4, UpgradeMode::LastState);
    let out = go(&d, &rec, &world(0, 0), 0);
    assert_eq!(out.action, run(2, 2, ""));
    assert_eq!(out.report.notices[0].reason, "ResumingAtStateReplicas");
    assert_eq!(out.recorded.pending, None);
    // Once they run and are ready, the rescale takes the savepoint flow.
    let out = go(&d, &out.recorded, &world(2, 2), 30);
    assert_eq!(phase(&out), Some(OperationPhase::Savepointing));
    assert_eq!(out.recorded.pending.unwrap().target_replicas, 4);
}

#[test]
fn a_status_from_before_the_flow_is_adopted_from_the_statefulset() {
    // No runningReplicas recorded, a StatefulSet of 2: it runs 2.
    let rec = Recorded {
        config_hash: Some("old-format".into()),
        ..Default::default()
    };
    let out = go(
        &desired(H1, 2, UpgradeMode::Savepoint),
        &rec,
        &world(2, 2),
        0,
    );
    assert_eq!(
        out.action,
        run(2, 2, ""),
        "rolled on the volumes, as before"
    );
    assert_eq!(out.recorded.running_replicas, Some(2));
    let out = go(
        &desired(H1, 3, UpgradeMode::Savepoint),
        &rec,
        &world(2, 2),
        0,
    );
    assert_eq!(
        phase(&out),
        Some(OperationPhase::Savepointing),
        "a rescale is still one"
    );
}

#[test]
fn an_invalid_spec_changes_nothing() {
    let out = at(None, &running(H1, 2), &world(2, 2), &settings(), 0);
    assert_eq!(out.action, Action::Keep);
    assert_eq!(out.recorded, running(H1, 2));
}

// --- Savepointing ----------------------------------------------------------------------

fn savepointing_at(parts: Vec<Part>, now: i64) -> Decision {
    checked_at(parts, None, now)
}

fn checked_at(parts: Vec<Part>, check: Option<CheckSeen>, now: i64) -> Decision {
    let rec = with_op(running(H1, 2), op(OperationPhase::Savepointing, 0));
    let mut obs = world(2, 2);
    obs.savepoints = parts
        .into_iter()
        .enumerate()
        .map(|(o, p)| (o as u32, p))
        .collect();
    obs.check = check;
    go(&desired(H1, 3, UpgradeMode::LastState), &rec, &obs, now)
}

fn check(complete: bool, parts: u32) -> Option<CheckSeen> {
    Some(CheckSeen::Report(SavepointCheck {
        id: "sp-1".into(),
        complete,
        parts,
        bytes: 180,
        error: (!complete).then(|| "part-1/manifest.json: checksum mismatch".into()),
    }))
}

fn both_completed() -> Vec<Part> {
    vec![
        report("sp-1", 0, 2, SavepointState::Completed, true),
        report("sp-1", 1, 2, SavepointState::Completed, true),
    ]
}

#[test]
fn savepointing_polls_and_asks_again_only_who_never_heard() {
    let out = savepointing_at(
        vec![
            report("sp-1", 0, 2, SavepointState::Completed, true),
            Part::Unknown,
        ],
        10,
    );
    assert_eq!(
        out.action,
        Action::RequestSavepoints {
            id: "sp-1".into(),
            ordinals: vec![1]
        }
    );
    assert_eq!(phase(&out), Some(OperationPhase::Savepointing));
    assert_eq!(out.requeue, Some(POLL));
    assert!(out.report.busy.unwrap().message.contains("1/2 parts"));

    let out = savepointing_at(
        vec![
            report("sp-1", 0, 2, SavepointState::InProgress, false),
            Part::Unreachable("connection refused".into()),
        ],
        10,
    );
    assert_eq!(
        out.action,
        Action::Keep,
        "in progress or unreachable: just wait"
    );
}

#[test]
fn every_part_written_is_not_enough_until_the_whole_savepoint_reads_back() {
    for seen in [None, Some(CheckSeen::Unreachable("timed out".into()))] {
        let out = checked_at(both_completed(), seen, 20);
        assert_eq!(out.action, Action::Keep);
        assert_eq!(phase(&out), Some(OperationPhase::Savepointing));
        assert!(out.report.busy.unwrap().message.contains("verifying it"));
    }
    // Still unverified at the timeout: abandoned, naming the check.
    let out = checked_at(
        both_completed(),
        Some(CheckSeen::Unreachable("503".into())),
        301,
    );
    let op = out.recorded.pending.unwrap();
    assert_eq!(op.abort_reason.as_deref(), Some("SavepointTimeout"));
    assert!(
        op.abort_message
            .unwrap()
            .contains("whole-savepoint check: 503")
    );
}

#[test]
fn a_savepoint_that_does_not_read_back_complete_aborts_before_anything_stops() {
    for (seen, why) in [
        (check(false, 2), "checksum mismatch"),
        (check(true, 1), "1 part(s) found, 2 written"),
    ] {
        let out = checked_at(both_completed(), seen, 20);
        let op = out.recorded.pending.clone().unwrap();
        assert_eq!(op.phase, OperationPhase::Aborting);
        assert_eq!(op.abort_reason.as_deref(), Some("SavepointIncomplete"));
        assert!(op.abort_message.unwrap().contains(why));
        assert_eq!(
            out.action,
            Action::Resume {
                ordinals: vec![0, 1]
            }
        );
        assert_eq!(out.report.degraded.unwrap().reason, "SavepointIncomplete");
        assert_eq!(out.recorded.last_savepoint, None);
    }
}

#[test]
fn a_complete_savepoint_scales_to_zero_with_the_old_template() {
    let out = checked_at(both_completed(), check(true, 2), 20);
    assert_eq!(out.action, Action::ScaleToZero);
    assert_eq!(out.report.replicas, 0);
    let op = out.recorded.pending.clone().unwrap();
    assert_eq!(
        (op.phase, op.phase_started_at.clone()),
        (OperationPhase::ScaledDown, Time(t(20)))
    );
    let sp = out.recorded.last_savepoint.clone().unwrap();
    assert_eq!(sp.id, "sp-1");
    assert_eq!(sp.uri, format!("{URI}/sp-1/"));
    assert_eq!((sp.replicas, sp.completed_at), (2, Time(t(20))));
    assert_eq!(
        out.recorded.config_hash.as_deref(),
        Some(H1),
        "nothing new runs yet"
    );
    let (ok, n) = out.report.savepoint_ready.clone().unwrap();
    assert!(ok && n.reason == "SavepointCompleted");
    assert_eq!(out.report.notices[0].reason, "SavepointCompleted");
    assert!(
        out.report.notices[0]
            .note
            .contains("200 bytes written (180 read back)"),
        "{}",
        out.report.notices[0].note
    );
}

#[test]
fn a_failed_part_aborts_resumes_the_stopped_and_rolls_nothing() {
    let out = savepointing_at(
        vec![
            report("sp-1", 0, 2, SavepointState::Completed, true),
            report("sp-1", 1, 2, SavepointState::Failed, false),
        ],
        20,
    );
    assert_eq!(out.action, Action::Resume { ordinals: vec![0] });
    let op = out.recorded.pending.clone().unwrap();
    assert_eq!(op.phase, OperationPhase::Aborting);
    assert_eq!(op.abort_reason.as_deref(), Some("SavepointFailed"));
    assert!(op.abort_message.unwrap().contains("replica 1 failed"));
    assert!(out.report.notices[0].warning);
    assert_eq!(out.report.notices[0].reason, "SavepointFailed");
    assert_eq!(out.report.degraded.unwrap().reason, "SavepointFailed");
    assert_eq!(out.recorded.config_hash.as_deref(), Some(H1));
}

#[test]
fn a_savepoint_that_times_out_is_abandoned() {
    let parts = || {
        vec![
            report("sp-1", 0, 2, SavepointState::Completed, true),
            Part::Unreachable("timed out".into()),
        ]
    };
    let out = savepointing_at(parts(), 300);
    assert_eq!(phase(&out), Some(OperationPhase::Savepointing), "not yet");
    let out = savepointing_at(parts(), 301);
    let op = out.recorded.pending.clone().unwrap();
    assert_eq!(op.abort_reason.as_deref(), Some("SavepointTimeout"));
    let msg = op.abort_message.unwrap();
    assert!(
        msg.contains("1/2 parts") && msg.contains("replica 1: unreachable"),
        "{msg}"
    );
    assert_eq!(out.action, Action::Resume { ordinals: vec![0] });
}

#[test]
fn a_refused_token_aborts_at_once_saying_why() {
    let out = savepointing_at(
        vec![
            Part::Refused {
                status: 401,
                message: "bad token".into(),
            },
            report("sp-1", 1, 2, SavepointState::InProgress, false),
        ],
        4,
    );
    let op = out.recorded.pending.clone().unwrap();
    assert_eq!(op.abort_reason.as_deref(), Some("ControlUnauthorized"));
    assert!(op.abort_message.unwrap().contains("need a restart"));
    // Replica 1 will stop once its part is written: wait for it, to resume it.
    assert_eq!(out.action, Action::Keep);
    assert_eq!(phase(&out), Some(OperationPhase::Aborting));
}

#[test]
fn a_part_written_for_another_count_fails_the_savepoint() {
    let out = savepointing_at(
        vec![
            report("sp-1", 0, 3, SavepointState::Completed, true),
            report("sp-1", 1, 2, SavepointState::Completed, true),
        ],
        4,
    );
    assert_eq!(
        out.recorded.pending.unwrap().abort_reason.as_deref(),
        Some("SavepointFailed")
    );
}

#[test]
fn reverting_the_spec_cancels_the_savepoint_without_penalty() {
    let rec = with_op(running(H1, 2), op(OperationPhase::Savepointing, 0));
    let mut obs = world(2, 2);
    obs.savepoints = BTreeMap::from([
        (0, report("sp-1", 0, 2, SavepointState::Completed, true)),
        (1, report("sp-1", 1, 2, SavepointState::Completed, false)),
    ]);
    let out = go(&desired(H1, 2, UpgradeMode::LastState), &rec, &obs, 5);
    assert_eq!(out.action, Action::Resume { ordinals: vec![0] });
    assert_eq!(out.report.notices[0].reason, "SavepointCancelled");
    assert!(!out.report.notices[0].warning);
    assert_eq!(out.report.degraded, None);
    // Once nobody is stopped, the operation is cleared with no retry record.
    obs.savepoints
        .insert(0, report("sp-1", 0, 2, SavepointState::Completed, false));
    let done = go(
        &desired(H1, 2, UpgradeMode::LastState),
        &out.recorded,
        &obs,
        7,
    );
    assert_eq!(done.recorded.pending, None);
    assert_eq!(done.recorded.retry, None);
}

#[test]
fn an_invalid_spec_during_the_savepoint_abandons_it() {
    let rec = with_op(running(H1, 2), op(OperationPhase::Savepointing, 0));
    let out = at(None, &rec, &world(2, 2), &settings(), 5);
    // Nobody reported stopped: abandoned and cleared in one step.
    assert_eq!(out.recorded.pending, None);
    assert_eq!(out.recorded.retry, None);
    assert_eq!(out.report.notices[0].reason, "SavepointCancelled");
}

// --- Aborting and the retry -----------------------------------------------------------

fn aborting_rec(reason: &str, retry: Option<OperationRetry>) -> Recorded {
    let mut op = op(OperationPhase::Aborting, 100);
    op.abort_reason = Some(reason.into());
    op.abort_message = Some("replica 1 failed".into());
    Recorded {
        retry,
        ..with_op(running(H1, 2), op)
    }
}

#[test]
fn aborting_resumes_until_nobody_is_stopped_then_backs_off() {
    let rec = aborting_rec("SavepointFailed", None);
    let d = desired(H1, 3, UpgradeMode::LastState);
    let mut obs = world(2, 2);
    obs.savepoints = BTreeMap::from([
        (0, report("sp-1", 0, 2, SavepointState::Completed, true)),
        (1, Part::Unknown),
    ]);
    let out = go(&d, &rec, &obs, 102);
    assert_eq!(out.action, Action::Resume { ordinals: vec![0] });
    assert_eq!(phase(&out), Some(OperationPhase::Aborting));

    obs.savepoints
        .insert(0, report("sp-1", 0, 2, SavepointState::Completed, false));
    let out = go(&d, &rec, &obs, 104);
    assert_eq!(out.action, Action::Keep);
    assert_eq!(out.recorded.pending, None);
    let retry = out.recorded.retry.clone().unwrap();
    assert_eq!(retry.attempts, 1);
    assert_eq!(
        retry.not_before,
        Time(t(134)),
        "30 s after the first failure"
    );
    assert_eq!(
        (retry.target_config_hash.as_str(), retry.target_replicas),
        (H1, 3)
    );
    assert_eq!(retry.reason, "SavepointFailed");
    assert_eq!(out.report.degraded.unwrap().reason, "SavepointFailed");
    assert!(!out.report.savepoint_ready.unwrap().0);
    assert_eq!(out.report.held.unwrap().reason, "WaitingToRetry");
    assert_eq!(out.requeue, Some(Duration::from_secs(30)));

    // Before the time: held, no new savepoint (no hot loop).
    let wait = go(&d, &out.recorded, &world(2, 2), 120);
    assert_eq!(wait.action, Action::Keep);
    assert_eq!(wait.recorded.pending, None);
    assert_eq!(wait.report.held.unwrap().reason, "WaitingToRetry");
    assert_eq!(wait.report.degraded.unwrap().reason, "SavepointFailed");
    assert_eq!(wait.requeue, Some(Duration::from_secs(14)));
    // After it: a new attempt with a new id, the failure count kept.
    let again = go(&d, &out.recorded, &world(2, 2), 134);
    let op = again.recorded.pending.clone().unwrap();
    assert_eq!(op.phase, OperationPhase::Savepointing);
    assert_ne!(op.savepoint_id, "sp-1");
    assert_eq!(again.recorded.retry.unwrap().attempts, 1);
    // Another target does not wait.
    let other = go(
        &desired(H1, 4, UpgradeMode::LastState),
        &out.recorded,
        &world(2, 2),
        120,
    );
    assert_eq!(phase(&other), Some(OperationPhase::Savepointing));
}

#[test]
fn failures_in_a_row_double_the_wait_up_to_ten_minutes() {
    assert_eq!(retry_delay(1), Duration::from_secs(30));
    assert_eq!(retry_delay(2), Duration::from_secs(60));
    assert_eq!(retry_delay(3), Duration::from_secs(120));
    assert_eq!(retry_delay(6), Duration::from_secs(600));
    assert_eq!(retry_delay(60), Duration::from_secs(600));
    let before = OperationRetry {
        attempts: 2,
        not_before: Time(t(0)),
        reason: "SavepointTimeout".into(),
        message: "m".into(),
        target_config_hash: H1.into(),
        target_replicas: 3,
    };
    let out = go(
        &desired(H1, 3, UpgradeMode::LastState),
        &aborting_rec("SavepointTimeout", Some(before)),
        &world(2, 2),
        200,
    );
    let retry = out.recorded.retry.unwrap();
    assert_eq!(retry.attempts, 3);
    assert_eq!(retry.not_before, Time(t(320)));
}

#[test]
fn a_replica_that_never_confirms_does_not_hold_the_abort_forever() {
    let rec = aborting_rec("SavepointFailed", None);
    let mut obs = world(2, 2);
    obs.savepoints = BTreeMap::from([(0, report("sp-1", 0, 2, SavepointState::Completed, true))]);
    let d = desired(H1, 3, UpgradeMode::LastState);
    assert_eq!(
        go(&d, &rec, &obs, 400).action,
        Action::Resume { ordinals: vec![0] }
    );
    let out = go(&d, &rec, &obs, 401);
    assert_eq!(out.recorded.pending, None);
    assert!(
        out.report
            .notices
            .iter()
            .any(|n| n.reason == "ResumeUnconfirmed" && n.warning)
    );
}

#[test]
fn once_the_job_runs_its_spec_the_retry_record_goes() {
    let rec = Recorded {
        retry: Some(OperationRetry {
            attempts: 2,
            not_before: Time(t(1000)),
            reason: "SavepointFailed".into(),
            message: "m".into(),
            target_config_hash: H1.into(),
            target_replicas: 3,
        }),
        ..running(H1, 2)
    };
    let out = go(
        &desired(H1, 2, UpgradeMode::LastState),
        &rec,
        &world(2, 2),
        0,
    );
    assert_eq!(out.recorded.retry, None);
    assert_eq!(out.report.degraded, None);
}

// --- ScaledDown ------------------------------------------------------------------------

#[test]
fn scaled_down_waits_until_no_job_pod_exists_then_restores() {
    let rec = with_op(running(H1, 2), op(OperationPhase::ScaledDown, 0));
    let d = desired(H2, 3, UpgradeMode::LastState);
    let mut obs = world(0, 1);
    obs.pods[0].terminating = true;
    let out = go(&d, &rec, &obs, 2);
    assert_eq!(out.action, Action::ScaleToZero, "one pod is still stopping");
    assert_eq!(out.recorded, rec);
    let out = go(&d, &rec, &world(2, 0), 2);
    assert_eq!(
        out.action,
        Action::ScaleToZero,
        "the StatefulSet is not at zero yet"
    );

    let out = go(&d, &rec, &world(0, 0), 4);
    assert_eq!(
        out.action,
        Action::Apply(Run {
            statefulset_replicas: 3,
            job_replicas: 3,
            state: StateConfig {
                id: "sp-1".into(),
                restore: Some(SavepointLocation {
                    id: "sp-1".into(),
                    uri: format!("{URI}/sp-1/"),
                }),
            },
        })
    );
    let op = out.recorded.pending.clone().unwrap();
    assert_eq!(op.phase, OperationPhase::Restoring);
    assert_eq!(
        (op.target_replicas, op.target_config_hash.as_str()),
        (3, H2)
    );
    assert_eq!(out.recorded.running_replicas, Some(3));
    assert_eq!(out.recorded.state_id.as_deref(), Some("sp-1"));
    assert_eq!(out.recorded.config_hash.as_deref(), Some(H2));
    assert_eq!(out.report.notices[0].reason, "RestoreStarted");
}

#[test]
fn scaled_down_holds_while_suspended_or_invalid() {
    let rec = with_op(running(H1, 2), op(OperationPhase::ScaledDown, 0));
    let stopped = Desired {
        stopped: true,
        ..desired(H1, 3, UpgradeMode::LastState)
    };
    let out = go(&stopped, &rec, &world(0, 0), 4);
    assert_eq!(out.action, Action::Keep);
    assert_eq!(out.recorded, rec, "the restore waits for the resume");
    let out = at(None, &rec, &world(0, 0), &settings(), 4);
    assert_eq!(out.action, Action::Keep);
    assert_eq!(out.recorded, rec);
}

// --- Restoring -------------------------------------------------------------------------

fn restoring_rec() -> Recorded {
    Recorded {
        state_id: Some("sp-1".into()),
        ..with_op(running(H1, 3), op(OperationPhase::Restoring, 0))
    }
}

fn state(id: &str, committed: bool) -> StateSeen {
    StateSeen::Report(StateReport {
        state_id: id.into(),
        restored_from: Some("sp-1".into()),
        committed,
        stopped: false,
    })
}

fn restore_run(sts: i32) -> Action {
    Action::Apply(Run {
        statefulset_replicas: sts,
        job_replicas: 3,
        state: StateConfig {
            id: "sp-1".into(),
            restore: Some(SavepointLocation {
                id: "sp-1".into(),
                uri: format!("{URI}/sp-1/"),
            }),
        },
    })
}

#[test]
fn restoring_waits_for_every_replica_to_commit_on_the_new_state() {
    let d = desired(H1, 3, UpgradeMode::LastState);
    let mut obs = world(3, 3);
    obs.states = BTreeMap::from([
        (0, state("sp-1", true)),
        (1, state("sp-1", false)),
        (2, state("", true)),
    ]);
    let out = go(&d, &restoring_rec(), &obs, 10);
    assert_eq!(out.action, restore_run(3), "applied again: idempotent");
    assert_eq!(phase(&out), Some(OperationPhase::Restoring));
    assert!(
        out.report
            .busy
            .unwrap()
            .message
            .contains("1/3 replicas committed")
    );

    obs.states.insert(1, state("sp-1", true));
    obs.states.insert(2, state("sp-1", true));
    let out = go(&d, &restoring_rec(), &obs, 12);
    assert_eq!(out.recorded.pending, None);
    assert_eq!(
        out.action,
        run(3, 3, "sp-1"),
        "the savepoint is no longer needed to start"
    );
    assert_eq!(out.recorded.state_id.as_deref(), Some("sp-1"));
    let (ok, n) = out.report.savepoint_ready.unwrap();
    assert!(ok && n.reason == "SavepointRestored");
    assert_eq!(out.report.notices[0].reason, "RestoreCompleted");
}

#[test]
fn a_slow_restore_degrades_but_goes_on() {
    let d = desired(H1, 3, UpgradeMode::LastState);
    let mut obs = world(3, 3);
    obs.states = BTreeMap::from([(0, state("sp-1", true)), (1, StateSeen::NoPod)]);
    let out = go(&d, &restoring_rec(), &obs, 901);
    assert_eq!(out.action, restore_run(3));
    let deg = out.report.degraded.unwrap();
    assert_eq!(deg.reason, "RestoreSlow");
    assert!(deg.message.contains("replica 1: no pod") && deg.message.contains("replica 2"));
}

#[test]
fn restoring_follows_suspend_and_configuration_changes_but_not_counts() {
    let rec = restoring_rec();
    let stopped = Desired {
        stopped: true,
        ..desired(H1, 3, UpgradeMode::LastState)
    };
    let out = go(&stopped, &rec, &world(3, 3), 10);
    assert_eq!(
        out.action,
        restore_run(0),
        "suspended: zero pods, the restore kept"
    );
    assert_eq!(phase(&out), Some(OperationPhase::Restoring));

    let out = go(
        &desired(H2, 5, UpgradeMode::LastState),
        &rec,
        &world(3, 3),
        10,
    );
    assert_eq!(out.action, restore_run(3), "still 3 until restored");
    assert_eq!(out.recorded.config_hash.as_deref(), Some(H2));
    assert_eq!(out.recorded.pending.unwrap().target_config_hash, H2);

    let out = at(None, &rec, &world(3, 3), &settings(), 10);
    assert_eq!(out.action, Action::Keep, "an invalid spec is not applied");
}

// --- every phase resumes from the status alone -----------------------------------------

#[test]
fn a_restarted_operator_repeats_the_recorded_phase() {
    let d = desired(H1, 3, UpgradeMode::LastState);
    let cases = [
        (
            with_op(running(H1, 2), op(OperationPhase::Savepointing, 0)),
            {
                let mut o = world(2, 2);
                o.savepoints = BTreeMap::from([(0, Part::Unknown), (1, Part::Unknown)]);
                o
            },
        ),
        (aborting_rec("SavepointFailed", None), {
            let mut o = world(2, 2);
            o.savepoints = BTreeMap::from([
                (0, report("sp-1", 0, 2, SavepointState::Completed, true)),
                (1, report("sp-1", 1, 2, SavepointState::Completed, true)),
            ]);
            o
        }),
        (
            with_op(running(H1, 2), op(OperationPhase::ScaledDown, 0)),
            world(2, 2),
        ),
        (restoring_rec(), world(3, 3)),
    ];
    for (rec, obs) in cases {
        let first = go(&d, &rec, &obs, 10);
        let second = go(&d, &rec, &obs, 10);
        assert_eq!(first, second, "pure");
        assert_eq!(
            first.recorded,
            rec,
            "{:?}: nothing new to record",
            phase(&first)
        );
        assert_ne!(first.action, Action::Keep, "{:?} acts again", phase(&first));
        assert_eq!(
            needs(&rec) == Needs::Nothing,
            phase(&first) == Some(OperationPhase::ScaledDown)
        );
    }
}

#[test]
fn needs_asks_for_what_the_phase_waits_on() {
    assert_eq!(needs(&running(H1, 2)), Needs::Nothing);
    assert_eq!(
        needs(&with_op(
            running(H1, 2),
            op(OperationPhase::Savepointing, 0)
        )),
        Needs::Savepoints {
            id: "sp-1".into(),
            ordinals: vec![0, 1]
        }
    );
    assert_eq!(
        needs(&restoring_rec()),
        Needs::States {
            ordinals: vec![0, 1, 2]
        }
    );
}

#[test]
fn ids_sort_by_time_and_name_the_generation() {
    assert_eq!(new_id("sp", t(3_723), 7), "sp-20260101-010203-g7");
    assert_eq!(savepoint_folder("s3://b/p/", "sp-1"), "s3://b/p/sp-1/");
    assert_eq!(savepoint_folder("s3://b/p", "sp-1"), "s3://b/p/sp-1/");
}

// --- a simulated cluster ---------------------------------------------------------------

/// One job pod of the simulation: what it was started with and what it has done.
#[derive(Clone, Debug)]
struct SimPod {
    ordinal: u32,
    job_replicas: i32,
    state_id: String,
    config: String,
    ready: bool,
    terminating: bool,
    /// Ticks until a terminating pod is gone.
    gone_in: u8,
    committed: bool,
    savepoint: Option<(String, SavepointState, bool)>,
}

/// The StatefulSet controller, the pods and the runtime, one small move per tick.
struct Sim {
    sts_replicas: i32,
    sts_run: Option<(String, Run)>,
    pods: Vec<SimPod>,
    /// Whether savepoints fail (the runtime cannot write to S3).
    failing: bool,
    status: Recorded,
}

impl Sim {
    fn observe(&self, rec: &Recorded) -> Observed {
        let mut obs = Observed {
            statefulset_replicas: self.sts_run.as_ref().map(|_| self.sts_replicas),
            pods: self
                .pods
                .iter()
                .map(|p| JobPod {
                    ordinal: p.ordinal,
                    ip: Some(format!("10.0.0.{}", p.ordinal)),
                    ready: p.ready,
                    terminating: p.terminating,
                })
                .collect(),
            ..Default::default()
        };
        let pod = |o: u32| self.pods.iter().find(|p| p.ordinal == o && !p.terminating);
        match needs(rec) {
            Needs::Nothing => {}
            Needs::Savepoints { id, ordinals } => {
                for o in ordinals {
                    let part = match pod(o) {
                        None => Part::NoPod,
                        Some(p) => match &p.savepoint {
                            Some((sid, st, stopped)) if *sid == id => {
                                Part::Report(SavepointReport {
                                    id: id.clone(),
                                    state: *st,
                                    ordinal: o,
                                    replicas: p.job_replicas as u32,
                                    manifest: None,
                                    error: None,
                                    figures: None,
                                    stopped: *stopped,
                                })
                            }
                            _ => Part::Unknown,
                        },
                    };
                    obs.savepoints.insert(o, part);
                }
                let from = rec.pending.as_ref().map_or(0, |p| p.from_replicas);
                if all_completed(&obs.savepoints, &id, from) {
                    obs.check = Some(CheckSeen::Report(SavepointCheck {
                        id: id.clone(),
                        complete: true,
                        parts: from as u32,
                        bytes: 0,
                        error: None,
                    }));
                }
            }
            Needs::States { ordinals } => {
                for o in ordinals {
                    let seen = match pod(o) {
                        None => StateSeen::NoPod,
                        Some(p) => StateSeen::Report(StateReport {
                            state_id: p.state_id.clone(),
                            restored_from: None,
                            committed: p.committed,
                            stopped: false,
                        }),
                    };
                    obs.states.insert(o, seen);
                }
            }
        }
        obs
    }

    fn act(&mut self, d: &Desired, action: &Action) {
        match action {
            Action::Apply(run) => {
                self.sts_replicas = run.statefulset_replicas;
                self.sts_run = Some((d.config_hash.clone(), run.clone()));
            }
            Action::Keep => {}
            Action::ScaleToZero => self.sts_replicas = 0,
            Action::RequestSavepoints { id, ordinals } => {
                for p in &mut self.pods {
                    if ordinals.contains(&p.ordinal) && !p.terminating {
                        p.savepoint = Some((id.clone(), SavepointState::InProgress, false));
                    }
                }
            }
            Action::Resume { ordinals } => {
                for p in &mut self.pods {
                    if ordinals.contains(&p.ordinal)
                        && let Some(sp) = p.savepoint.as_mut()
                    {
                        sp.2 = false;
                    }
                }
            }
        }
    }

    /// The cluster moves on: pods stop, start, restore, commit, write their parts; a pod
    /// whose template is outdated is replaced (one at a time, as a rolling update does).
    fn tick(&mut self) {
        for p in &mut self.pods {
            if p.terminating {
                continue;
            }
            if !p.ready {
                p.ready = true;
            } else if !p.committed {
                p.committed = true;
            }
            if let Some(sp) = p.savepoint.as_mut()
                && sp.1 == SavepointState::InProgress
            {
                sp.1 = if self.failing {
                    SavepointState::Failed
                } else {
                    SavepointState::Completed
                };
                sp.2 = !self.failing;
            }
        }
        // A stopping pod takes a while to go (it commits and delivers first), and keeps its
        // name meanwhile: its ordinal is not created again until it is gone.
        for p in self.pods.iter_mut().filter(|p| p.terminating) {
            p.gone_in = p.gone_in.saturating_sub(1);
        }
        self.pods.retain(|p| !(p.terminating && p.gone_in == 0));
        let Some((config, run)) = self.sts_run.clone() else {
            return;
        };
        let want = u32::try_from(self.sts_replicas).unwrap_or(0);
        // Parallel pod management: missing ordinals are created at once, extra ones stopped
        // at once; a rolling update replaces one outdated pod at a time.
        for p in self
            .pods
            .iter_mut()
            .filter(|p| p.ordinal >= want && !p.terminating)
        {
            p.terminating = true;
            p.gone_in = 2;
        }
        for o in 0..want {
            if !self.pods.iter().any(|p| p.ordinal == o) {
                self.pods.push(SimPod {
                    ordinal: o,
                    job_replicas: run.job_replicas,
                    state_id: run.state.id.clone(),
                    config: config.clone(),
                    ready: false,
                    terminating: false,
                    committed: false,
                    savepoint: None,
                    gone_in: 0,
                });
            }
        }
        let outdated = |p: &SimPod| {
            p.config != config || p.job_replicas != run.job_replicas || p.state_id != run.state.id
        };
        if !self.pods.iter().any(|p| p.terminating)
            && let Some(p) = self.pods.iter_mut().find(|p| outdated(p))
        {
            p.terminating = true;
            p.gone_in = 2;
        }
    }

    /// The invariant: pods that split the shards for two different counts never exist at
    /// once. Stopped pods count (one that restarts reads again), and so do terminating ones
    /// (they still commit and deliver until they are gone).
    fn check(&self) {
        let counts: std::collections::BTreeSet<i32> =
            self.pods.iter().map(|p| p.job_replicas).collect();
        assert!(
            counts.len() <= 1,
            "pods of counts {counts:?} exist at once: {:?}",
            self.pods
        );
    }

    /// Drive the operator `steps` times; `crash(step)` drops the action after the status was
    /// recorded (the operator died between the two).
    fn drive(&mut self, d: &Desired, steps: i64, start: i64, crash: impl Fn(i64) -> bool) -> i64 {
        let mut now = start;
        for step in 0..steps {
            let obs = self.observe(&self.status);
            let out = go(d, &self.status, &obs, now);
            self.status = out.recorded.clone();
            if !crash(step) {
                self.act(d, &out.action);
            }
            self.check();
            self.tick();
            self.check();
            now += 2;
        }
        now
    }

    fn converged(&self, d: &Desired) -> bool {
        self.status.pending.is_none()
            && self.status.running_replicas == Some(d.replicas)
            && self.status.config_hash.as_deref() == Some(d.config_hash.as_str())
            && self.pods.len() == usize::try_from(d.replicas).unwrap_or(0)
            && self.pods.iter().all(|p| {
                p.ready
                    && p.job_replicas == d.replicas
                    && p.config == d.config_hash
                    && p.savepoint.as_ref().is_none_or(|s| !s.2)
            })
    }
}

fn started(d: &Desired) -> Sim {
    let mut sim = Sim {
        sts_replicas: 0,
        sts_run: None,
        pods: Vec::new(),
        failing: false,
        status: Recorded::default(),
    };
    sim.drive(d, 10, 0, |_| false);
    assert!(
        sim.converged(d),
        "the first rollout converges: {:?}",
        sim.status
    );
    sim
}

#[test]
fn simulated_rescales_and_upgrades_converge_even_with_the_operator_killed() {
    for crash_every in [0, 2, 3, 5] {
        let crash = |step: i64| crash_every != 0 && step % crash_every == 1;
        let d1 = desired(H1, 2, UpgradeMode::Savepoint);
        let mut sim = started(&d1);

        let d2 = desired(H1, 5, UpgradeMode::Savepoint);
        let now = sim.drive(&d2, 60, 100, crash);
        assert!(
            sim.converged(&d2),
            "rescale, crash every {crash_every}: {:?}",
            sim.status
        );
        assert_eq!(
            sim.status.last_savepoint.as_ref().map(|s| s.replicas),
            Some(2)
        );
        assert!(
            sim.pods
                .iter()
                .all(|p| p.state_id == sim.status.state_id.clone().unwrap())
        );

        let d3 = desired(H2, 5, UpgradeMode::Savepoint);
        let now = sim.drive(&d3, 60, now, crash);
        assert!(
            sim.converged(&d3),
            "upgrade, crash every {crash_every}: {:?}",
            sim.status
        );
        assert_eq!(
            sim.status.last_savepoint.as_ref().map(|s| s.replicas),
            Some(5)
        );

        let d4 = desired(H2, 1, UpgradeMode::LastState);
        sim.drive(&d4, 60, now, crash);
        assert!(
            sim.converged(&d4),
            "scale in, crash every {crash_every}: {:?}",
            sim.status
        );
    }
}

#[test]
fn a_simulated_failing_savepoint_keeps_the_job_running_and_retries_later() {
    let d1 = desired(H1, 2, UpgradeMode::LastState);
    let mut sim = started(&d1);
    sim.failing = true;
    let d2 = desired(H1, 3, UpgradeMode::LastState);
    let now = sim.drive(&d2, 10, 100, |_| false);
    assert_eq!(sim.status.pending, None);
    assert_eq!(sim.status.retry.as_ref().map(|r| r.attempts), Some(1));
    assert!(
        sim.converged(&d1),
        "still 2 replicas, all reading: {:?}",
        sim.pods
    );
    // Fixed: the next attempt after the backoff goes through.
    sim.failing = false;
    let _ = sim.drive(&d2, 40, now, |_| false);
    assert!(sim.converged(&d2), "{:?}", sim.status);
    assert_eq!(sim.status.retry, None);
}

#[test]
fn a_simulated_suspend_and_resume_at_another_count_goes_through_the_old_count() {
    let d1 = desired(H1, 2, UpgradeMode::Savepoint);
    let mut sim = started(&d1);
    let stopped = Desired {
        stopped: true,
        ..desired(H1, 4, UpgradeMode::Savepoint)
    };
    let now = sim.drive(&stopped, 10, 100, |_| false);
    assert!(sim.pods.is_empty());
    assert_eq!(sim.status.running_replicas, Some(2));
    let d2 = desired(H1, 4, UpgradeMode::Savepoint);
    sim.drive(&d2, 60, now, |_| false);
    assert!(sim.converged(&d2), "{:?}", sim.status);
    assert_eq!(
        sim.status.last_savepoint.as_ref().map(|s| s.replicas),
        Some(2)
    );
}

#[test]
fn a_simulated_stateless_and_last_state_upgrade_roll_at_one_count() {
    for mode in [UpgradeMode::Stateless, UpgradeMode::LastState] {
        let d1 = desired(H1, 3, mode);
        let mut sim = started(&d1);
        let first = sim.status.state_id.clone();
        assert!(first.is_some(), "{mode:?}: the first state is named");
        let d2 = desired(H2, 3, mode);
        sim.drive(&d2, 30, 100, |_| false);
        assert!(sim.converged(&d2), "{mode:?}: {:?}", sim.status);
        assert_eq!(sim.status.last_savepoint, None, "{mode:?}: no savepoint");
        let fresh = sim.status.state_id != first;
        assert_eq!(fresh, mode == UpgradeMode::Stateless);
    }
}
