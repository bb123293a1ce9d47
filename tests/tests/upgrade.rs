//! The savepoint and upgrade flow of a running job, live: `helm install` the operator (as a pod
//! the node agent runs), apply a `StreamingEnrichment`, put generated data into kinesis-mock,
//! and while it arrives change the job the way a user does (`kubectl patch` of the spec, `kubectl
//! scale`). Every test ends with every document in OpenSearch and every Parquet row in S3
//! (versitygw) checked against the generator's oracle, and the pods of the job watched all along
//! (every add, change and delete the API server sends): pods of two state ids never exist at the
//! same time.
//!
//! - an upgrade in `upgradeMode: Savepoint` with the leading operator replica force-deleted
//!   twice mid-operation ([`a_savepoint_upgrade_survives_two_operator_leaders_killed_mid_operation`]);
//! - an upgrade in `upgradeMode: Stateless`: a new empty state that reads the whole retention
//!   again ([`a_stateless_upgrade_starts_on_fresh_state_and_reads_everything_again`]);
//! - S3 unreachable during the savepoint of a rescale
//!   ([`s3_down_during_a_savepoint_aborts_the_rescale_and_the_retry_completes_it`]);
//! - a savepoint manifest corrupted on its way back from S3
//!   ([`a_corrupt_savepoint_manifest_aborts_the_rescale_before_any_roll`]).
//!
//! Each test has its own fixture (namespace, streams, bucket, index) and its own operator
//! release watching that namespace only, so they can run at the same time
//! (`RUST_TEST_THREADS=2`). Data sizes are the rescale test's: 3,000 sales put paced, so that
//! operations happen while they arrive. `malformed_share: 0.0`: every replica reads the
//! dimension streams whole, so with two replicas each would dead-letter a malformed dimension
//! record again (a separate, known issue), and the dead-letter part of the oracle would not hold.
//!
//! The tests run on a multi-threaded runtime: kubectl, helm and curl are run as blocking child
//! processes, and the fault proxies in the test process must keep serving the pods meanwhile.
//!
//! Needs `cargo xtask stack up` (with the node agent) and the binaries `cargo xtask test` builds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tributary_crds::OperationPhase;
use tributary_crds::control::SavepointState;
use tributary_runtime::r#gen::GenConfig;
use tributary_runtime::savepoint::format::{MANIFEST, PartManifest};
use tributary_tests::faults::{ManifestCorruptingProxy, TcpProxy, flip_last_checksum};
use tributary_tests::flow::{
    LiveJob, converged, describe_condition, events, force_delete_pod, lease_transitions,
    operator_pods, phase, printer_columns, reasons, replica_savepoint, replica_state, se_column,
    statefulset_replicas,
};
use tributary_tests::pipeline::{Fixture, small};
use tributary_tests::{eventually, stack_var};

/// How long one operation (savepoint, scale down, restore, every replica committed) may take,
/// operator fail-overs included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(240);
/// The pause after every 100 records put: the stream lasts about a minute.
const PACE: Duration = Duration::from_millis(1500);
/// A change of the job configuration that changes its hash (so the pods restart): the S3
/// sink's roll interval, 2 s in the fixture.
const SPEC_CHANGE: &str = r#"{"spec":{"sinks":{"s3":{"rollInterval":"3s"}}}}"#;

fn data() -> GenConfig {
    GenConfig {
        sales: 3000,
        malformed_share: 0.0,
        ..small()
    }
}

/// `upgradeMode` and a savepoint location under the fixture's bucket.
fn spec(fx: &Fixture, mode: &str) -> String {
    format!(
        "  upgradeMode: {mode}\n  savepoints: {{ uri: \"s3://{}/savepoints\" }}\n",
        fx.name
    )
}

/// Wait until more than 100 documents are searchable, and not yet all of them: the point at
/// which a test changes the running job. How many there are.
async fn mid_stream(job: &LiveJob) -> Result<u64> {
    let expected = job.fx.data.expected.len() as u64;
    let at = job
        .documents_at_least(101, Duration::from_secs(180))
        .await?;
    ensure!(
        at < expected,
        "the change came after the last document: make the dataset larger"
    );
    Ok(at)
}

/// Every job pod watched: no two state ids at once, and the state ids in `want` order with the
/// ordinals each ran.
fn check_epochs(job: &LiveJob, want: &[(String, BTreeSet<u32>)]) -> Result<()> {
    let (epochs, overlaps) = job.pod_log();
    println!("job pods by state, in order: {epochs:?}");
    ensure!(
        overlaps.is_empty(),
        "pods of two states existed together: {overlaps:?}"
    );
    let seen: Vec<(String, BTreeSet<u32>)> = epochs
        .iter()
        .map(|(id, o, _)| (id.clone(), o.clone()))
        .collect();
    // An empty id in `want` stands for the first state, which the operator names at the first
    // apply (`st-<time>-g<generation>`).
    let mut want = want.to_vec();
    if let (Some(w), Some((first, _))) = (want.first_mut(), seen.first())
        && w.0.is_empty()
    {
        ensure!(
            first.starts_with("st-"),
            "the first state is not named: {first:?}"
        );
        w.0.clone_from(first);
    }
    ensure!(seen == want, "job pods {seen:?}, expected {want:?}");
    Ok(())
}

/// The pod UIDs the watch saw run the first state: one, when the pod was never
/// replaced before the operation that succeeded.
fn first_epoch_uids(job: &LiveJob) -> BTreeSet<String> {
    job.pod_log()
        .0
        .first()
        .map(|(_, _, uids)| uids.clone())
        .unwrap_or_default()
}

/// Savepoint upgrade mid-stream, with the leading operator replica force-deleted twice.
///
/// The chart is installed with `replicaCount=2`: two operator pods, one leading through the
/// Lease `tributary-operator-leader` of the release namespace (its `holderIdentity` is the
/// leader's pod name). The resource runs 2 replicas with `upgradeMode: Savepoint`. Once
/// documents are searchable, `kubectl patch` changes the S3 sink's roll interval (a new
/// configuration hash: the pods must restart, through a savepoint). When
/// `status.pendingOperation.phase` is Savepointing the leader's pod is force-deleted
/// (`kubectl delete pod --grace-period=0 --force`); when it is Restoring (or ScaledDown, if
/// Restoring was missed; the test prints which it hit), the then-leader's pod is force-deleted
/// too. The standby (and then the Deployment's replacement pod) must take the Lease and carry the
/// recorded phase on: the operation converges (nothing pending, the state is the new savepoint's,
/// `kubectl get se` shows LAST SAVEPOINT), the Lease holder has changed, pods of the old and the
/// new state never existed together, and the oracle holds exactly once.
///
/// No fake: real API server, real Lease, real pods. A force-deleted pod (grace period 0) is
/// gone from the API at once and the node agent kills its process at once (SIGKILL, exit code
/// 137), as a kubelet does with a zero grace period: the leader cannot release the Lease, so the
/// next one takes it only once it expires (15 s after the last renewal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savepoint_upgrade_survives_two_operator_leaders_killed_mid_operation() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let job = LiveJob::new(Fixture::new("upg-leader", &data()).await?).await?;
    let result = async {
        let extra = format!("  replicas: 2\n{}", spec(&job.fx, "Savepoint"));
        job.install(&["--set", "replicaCount=2"], &extra)?;
        let op_ns = job.operator_ns.clone();
        let first_leader = job.leader(Duration::from_secs(60)).await?;
        let operators = operator_pods(&job.client, &op_ns).await?;
        println!("operator pods {operators:?}; leader {first_leader}");
        ensure!(operators.len() == 2, "operator pods {operators:?}");
        let transitions_before = lease_transitions(&job.client, &op_ns).await?;

        let writer = async {
            job.fx.put_all_paced(PACE).await?;
            println!("writer: every record put");
            anyhow::Ok(())
        };
        let upgrade = async {
            job.ready_pod(0, Duration::from_secs(180)).await?;
            job.ready_pod(1, Duration::from_secs(180)).await?;
            let at = mid_stream(&job).await?;
            let before = job.status.latest.borrow().clone().unwrap_or_default();
            println!(
                "patching the roll interval at {at} documents (state {:?}, config {:?})",
                before.state_id, before.config_hash
            );
            job.patch(SPEC_CHANGE)?;
            let started = Instant::now();

            // First kill: while the replicas write their parts.
            let s = job
                .status
                .wait_for("phase Savepointing", Duration::from_secs(120), |s| {
                    phase(s) == Some(OperationPhase::Savepointing)
                })
                .await?;
            let savepoint = s
                .pending_operation
                .as_ref()
                .map(|o| o.savepoint_id.clone())
                .unwrap_or_default();
            let leader1 = job.leader(Duration::from_secs(30)).await?;
            let phase1 = phase(&job.status.latest.borrow().clone().unwrap_or_default());
            force_delete_pod(&op_ns, &leader1)?;
            println!(
                "{:?}: savepoint {savepoint}; force-deleted leader {leader1} in phase {phase1:?}",
                started.elapsed()
            );

            // Second kill: while the new pods restore (or, if that was missed, while the old
            // ones stop), once another replica holds the Lease.
            let s = job
                .status
                .wait_for("phase ScaledDown or Restoring", OPERATION_TIMEOUT, |s| {
                    matches!(
                        phase(s),
                        Some(OperationPhase::ScaledDown | OperationPhase::Restoring)
                    )
                })
                .await?;
            if phase(&s) == Some(OperationPhase::ScaledDown) {
                let _ = job
                    .status
                    .wait_for("phase Restoring", Duration::from_secs(60), |s| {
                        phase(s) != Some(OperationPhase::ScaledDown)
                    })
                    .await;
            }
            let leader2 = eventually("a new leader", Duration::from_secs(90), || async {
                Ok(tributary_tests::flow::lease_holder(&job.client, &op_ns)
                    .await?
                    .filter(|h| *h != leader1))
            })
            .await?;
            let phase2 = phase(&job.status.latest.borrow().clone().unwrap_or_default());
            force_delete_pod(&op_ns, &leader2)?;
            println!(
                "{:?}: force-deleted the next leader {leader2} in phase {phase2:?}",
                started.elapsed()
            );
            ensure!(
                matches!(
                    phase2,
                    Some(OperationPhase::ScaledDown | OperationPhase::Restoring)
                ),
                "the second leader was killed in phase {phase2:?}, not during the restore"
            );

            let s = job
                .status
                .wait_for("the upgrade to converge", OPERATION_TIMEOUT, |s| {
                    converged(
                        s,
                        2,
                        before.last_savepoint.as_ref().map(|sp| sp.id.as_str()),
                    )
                })
                .await?;
            println!(
                "{:?}: converged on state {:?}, savepoint {:?}",
                started.elapsed(),
                s.state_id,
                s.last_savepoint
            );
            anyhow::Ok((s, leader1, phase1, leader2, phase2, savepoint))
        };
        let ((), (s, leader1, phase1, leader2, phase2, savepoint)) =
            tokio::try_join!(writer, upgrade)?;

        job.fx.assert_complete().await?;

        let sp = s.last_savepoint.clone().context("no savepoint")?;
        ensure!(
            sp.id == savepoint,
            "savepoint {} recorded, {savepoint} taken",
            sp.id
        );
        ensure!(
            s.state_id.as_deref() == Some(sp.id.as_str()),
            "state {:?}",
            s.state_id
        );
        ensure!(s.operation_retry.is_none(), "retry {:?}", s.operation_retry);
        let phases = job.status.distinct_phases();
        ensure!(
            !phases.contains(&OperationPhase::Aborting),
            "the upgrade aborted: {:?}",
            job.status.phases()
        );

        let holder = job.leader(Duration::from_secs(60)).await?;
        let transitions = lease_transitions(&job.client, &op_ns).await?;
        println!(
            "leaders: {first_leader} -> killed {leader1} ({phase1:?}) -> killed {leader2} \
             ({phase2:?}) -> {holder}; leaseTransitions {transitions_before} -> {transitions}; \
             phases {phases:?}; operator pods now {:?}",
            operator_pods(&job.client, &op_ns).await?
        );
        ensure!(
            holder != first_leader && holder != leader1 && holder != leader2,
            "the Lease is still held by {holder}"
        );

        let columns = printer_columns()?;
        ensure!(
            columns.iter().any(|c| c == "Last Savepoint"),
            "the CRD has no Last Savepoint column: {columns:?}"
        );
        let (cell, out) = se_column(&job.ns, "LAST SAVEPOINT")?;
        println!("kubectl get se sales:\n{out}");
        ensure!(
            !cell.is_empty() && cell != "<none>" && cell != "<unknown>",
            "LAST SAVEPOINT is {cell:?}:\n{out}"
        );

        check_epochs(
            &job,
            &[
                (String::new(), BTreeSet::from([0, 1])),
                (sp.id.clone(), BTreeSet::from([0, 1])),
            ],
        )?;
        Ok(())
    }
    .await;
    job.finish(result).await
}

/// The documents of the fixture's alias with their `_version`: (id, version, source).
async fn versioned_documents(fx: &Fixture) -> Result<Vec<(String, u64, Value)>> {
    let url = format!(
        "{}/{}/_search",
        stack_var("OPENSEARCH_URL")?.trim_end_matches('/'),
        fx.config.sinks.opensearch.spec.write_alias
    );
    let body = json!({"size": 10000, "version": true, "query": {"match_all": {}}});
    let client = reqwest::Client::builder().no_proxy().build()?;
    let text = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?
        .text()
        .await?;
    let v: Value = serde_json::from_str(&text)?;
    let hits = v["hits"]["hits"].as_array().context("hits")?;
    Ok(hits
        .iter()
        .map(|h| {
            (
                h["_id"].as_str().unwrap_or_default().to_string(),
                h["_version"].as_u64().unwrap_or(0),
                h["_source"].clone(),
            )
        })
        .collect())
}

/// Stateless upgrade: a new empty state, read from `startPosition` (TrimHorizon, the default:
/// the whole retention again).
///
/// One replica with `upgradeMode: Stateless` (and `spec.savepoints` set, so that a savepoint
/// *could* be taken: the test proves none is). Every record is put, and the oracle must hold
/// exactly once; then `kubectl patch` changes the roll interval. The operator must give the pod a
/// new state id without a savepoint (`status.stateId` changes, `status.lastSavepoint` stays
/// unset, no Savepoint* event, no object under `savepoints/`, a StatelessUpgrade event), and the
/// new state reads every stream from its trim horizon and joins everything again from scratch:
/// every Parquet row of the oracle ends up exactly twice across the Parquet objects (the new
/// state has a new lineage, so its files have other keys), every document in OpenSearch is
/// written again (each `_version` goes up) and OpenSearch still holds exactly the oracle's
/// documents (ids are deterministic), and every expected dead letter is there twice.
///
/// No fake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_upgrade_starts_on_fresh_state_and_reads_everything_again() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let job = LiveJob::new(Fixture::new("upg-stateless", &data()).await?).await?;
    let result = async {
        job.install(&[], &spec(&job.fx, "Stateless"))?;
        let fx = &job.fx;
        let expected = fx.data.expected.len();
        job.ready_pod(0, Duration::from_secs(180)).await?;
        fx.put_all().await?;
        eventually("the oracle once", Duration::from_secs(360), || async {
            fx.assert_complete().await.map(Some)
        })
        .await?;
        let first_pass = versioned_documents(fx).await?;
        let mut versions_before: BTreeMap<u64, usize> = BTreeMap::new();
        for (_, v, _) in &first_pass {
            *versions_before.entry(*v).or_default() += 1;
        }
        let before = job.status.latest.borrow().clone().unwrap_or_default();
        let pod_before = job.pod(0).await?.context("no pod sales-0")?;
        println!(
            "first pass complete: {expected} documents, _version counts {versions_before:?}; \
             state {:?}, pod {}",
            before.state_id, pod_before.uid
        );

        job.patch(SPEC_CHANGE)?;
        let started = Instant::now();
        let s = job
            .status
            .wait_for("a new state id", Duration::from_secs(120), |s| {
                s.state_id.is_some() && s.state_id != before.state_id
            })
            .await?;
        let state = s.state_id.clone().unwrap_or_default();
        println!("{:?}: new state {state}", started.elapsed());
        ensure!(state.starts_with("st-"), "state id {state}");
        let pod = eventually("the pod on the new state", OPERATION_TIMEOUT, || async {
            Ok(job
                .pod(0)
                .await?
                .filter(|p| p.ready && p.state_id == state && p.uid != pod_before.uid))
        })
        .await?;
        println!(
            "{:?}: pod {} runs state {state}",
            started.elapsed(),
            pod.uid
        );

        // The whole retention read again and joined again: every row twice.
        let keys = eventually("every Parquet row twice", OPERATION_TIMEOUT, || async {
            let keys = fx.parquet_keys().await?;
            ensure!(
                keys.len() >= 2 * expected,
                "{} Parquet rows so far, {} wanted",
                keys.len(),
                2 * expected
            );
            Ok(Some(keys))
        })
        .await?;
        let mut counts: BTreeMap<(i64, i64), usize> = BTreeMap::new();
        for k in &keys {
            *counts.entry(*k).or_default() += 1;
        }
        let objects = fx.objects("curated/").await?.len();
        println!(
            "{:?}: {} Parquet rows in {objects} objects for {expected} oracle rows",
            started.elapsed(),
            keys.len()
        );
        let unknown: Vec<&(i64, i64)> = counts
            .keys()
            .filter(|k| !fx.data.expected.contains_key(k))
            .collect();
        ensure!(unknown.is_empty(), "rows not in the oracle: {unknown:?}");
        let wrong: Vec<(&(i64, i64), usize)> = fx
            .data
            .expected
            .keys()
            .map(|k| (k, counts.get(k).copied().unwrap_or(0)))
            .filter(|(_, n)| *n != 2)
            .collect();
        ensure!(
            wrong.is_empty(),
            "{} oracle rows not exactly twice in S3, e.g. {:?}",
            wrong.len(),
            wrong.iter().take(10).collect::<Vec<_>>()
        );

        // OpenSearch: the same documents, each written again.
        let docs = eventually(
            "every document written again",
            OPERATION_TIMEOUT,
            || async {
                let docs = versioned_documents(fx).await?;
                let before: BTreeMap<&String, u64> =
                    first_pass.iter().map(|(id, v, _)| (id, *v)).collect();
                let again = docs
                    .iter()
                    .all(|(id, v, _)| before.get(id).is_some_and(|b| v > b));
                Ok((docs.len() == expected && again).then_some(docs))
            },
        )
        .await?;
        let mut versions_after: BTreeMap<u64, usize> = BTreeMap::new();
        for (_, v, _) in &docs {
            *versions_after.entry(*v).or_default() += 1;
        }
        println!("documents re-written: _version counts {versions_after:?}");
        let by_id: BTreeMap<&str, &Value> =
            docs.iter().map(|(id, _, s)| (id.as_str(), s)).collect();
        ensure!(by_id.len() == expected, "{} documents", by_id.len());
        for ((order, item), want) in &fx.data.expected {
            let id = format!("{order}:{item}");
            let got = by_id
                .get(id.as_str())
                .with_context(|| format!("document {id} missing"))?;
            ensure!(*got == want, "document {id}:\n got {got}\nwant {want}");
        }

        // The dead letters of the oracle, once per pass.
        let twice: BTreeMap<String, u64> = fx
            .data
            .expected_dead_letters
            .iter()
            .map(|(r, n)| (r.clone(), 2 * n))
            .collect();
        let dead = eventually(
            "the dead letters twice",
            Duration::from_secs(120),
            || async {
                let d = fx.dead_letters().await?;
                Ok((d.values().sum::<u64>() >= twice.values().sum()).then_some(d))
            },
        )
        .await?;
        println!(
            "dead letters {dead:?} (oracle per pass {:?})",
            fx.data.expected_dead_letters
        );
        ensure!(dead == twice, "dead letters {dead:?}, expected {twice:?}");

        // No savepoint at any point.
        let s = job.status.latest.borrow().clone().unwrap_or_default();
        ensure!(
            s.last_savepoint.is_none() && s.pending_operation.is_none(),
            "savepoint {:?}, pending {:?}",
            s.last_savepoint,
            s.pending_operation
        );
        ensure!(
            job.status.phases().iter().all(|p| p.phase.is_none()),
            "an operation was recorded: {:?}",
            job.status.phases()
        );
        let savepoint_objects = fx.objects("savepoints/").await?;
        ensure!(
            savepoint_objects.is_empty(),
            "objects under savepoints/: {:?}",
            savepoint_objects.iter().map(|(k, _)| k).collect::<Vec<_>>()
        );
        let all = events(&job.ns)?;
        println!("events: {:?}", reasons(&all));
        let savepointy: Vec<&str> = reasons(&all)
            .into_iter()
            .filter(|r| r.starts_with("Savepoint") || r.starts_with("Restore"))
            .collect();
        ensure!(savepointy.is_empty(), "savepoint events: {savepointy:?}");
        ensure!(
            all.iter()
                .any(|e| e.reason == "StatelessUpgrade" && e.message.contains(&state)),
            "no StatelessUpgrade event naming {state}"
        );
        check_epochs(
            &job,
            &[
                (String::new(), BTreeSet::from([0])),
                (state.clone(), BTreeSet::from([0])),
            ],
        )?;
        Ok(())
    }
    .await;
    job.finish(result).await
}

/// The stack's S3 endpoint as a socket address (for the TCP proxy).
fn s3_addr() -> Result<SocketAddr> {
    let url = stack_var("S3_ENDPOINT")?;
    let hostport = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    hostport
        .parse()
        .with_context(|| format!("S3_ENDPOINT {url} is not http://<ip>:<port>"))
}

/// What a failed savepoint attempt must leave: the abort recorded and finished (nothing pending,
/// a retry planned), Degraded=True and SavepointReady=False with a reason, a Warning event with
/// that reason, and the job as it was (one replica, the same pod on the same state).
async fn check_failed_attempt(
    job: &LiveJob,
    aborted: &tributary_crds::StreamingEnrichmentStatus,
    pod_before: &tributary_tests::flow::PodNow,
    reasons_ok: &[&str],
) -> Result<tributary_crds::StreamingEnrichmentStatus> {
    let op = aborted
        .pending_operation
        .clone()
        .context("no pending operation")?;
    let reason = op.abort_reason.clone().unwrap_or_default();
    ensure!(
        reasons_ok.contains(&reason.as_str()),
        "abort reason {reason:?} ({:?}), expected one of {reasons_ok:?}",
        op.abort_message
    );
    ensure!(
        op.abort_message.as_deref().is_some_and(|m| !m.is_empty()),
        "no abort message"
    );
    // The flow's fields are written before the conditions (a status write each).
    let s = job
        .status
        .wait_for(
            "the abort to finish (retry planned, Degraded, SavepointReady False)",
            Duration::from_secs(120),
            |s| {
                let is = |t: &str, v: &str| {
                    tributary_tests::flow::condition(s, t).is_some_and(|c| c.status == v)
                };
                s.pending_operation.is_none()
                    && s.operation_retry.is_some()
                    && is("Degraded", "True")
                    && is("SavepointReady", "False")
            },
        )
        .await?;
    println!(
        "abort finished: retry {:?}; {}; {}; {}",
        s.operation_retry,
        describe_condition(&s, "Degraded"),
        describe_condition(&s, "SavepointReady"),
        describe_condition(&s, "Progressing"),
    );
    let degraded = tributary_tests::flow::condition(&s, "Degraded").context("no Degraded")?;
    ensure!(
        degraded.status == "True" && degraded.reason == reason,
        "Degraded {} {} (abort reason {reason})",
        degraded.status,
        degraded.reason
    );
    let ready =
        tributary_tests::flow::condition(&s, "SavepointReady").context("no SavepointReady")?;
    ensure!(
        ready.status == "False" && ready.reason == reason,
        "SavepointReady {} {}",
        ready.status,
        ready.reason
    );
    let warning = eventually("the Warning event", Duration::from_secs(30), || async {
        Ok(events(&job.ns)?
            .into_iter()
            .find(|e| e.type_ == "Warning" && e.reason == reason))
    })
    .await?;
    println!("warning event {}: {}", warning.reason, warning.message);

    ensure!(
        statefulset_replicas(&job.ns)? == 1,
        "the StatefulSet left 1 replica"
    );
    let pod = job.pod(0).await?.context("no pod sales-0")?;
    ensure!(
        pod.uid == pod_before.uid && pod.state_id == pod_before.state_id,
        "the pod was replaced: {pod_before:?} -> {pod:?}"
    );
    ensure!(job.pod(1).await?.is_none(), "a pod sales-1 exists");
    println!(
        "no roll: pod {} on state {:?}, restarts {} -> {}",
        pod.uid, pod.state_id, pod_before.restarts, pod.restarts
    );
    Ok(s)
}

/// S3 unreachable during the savepoint of a rescale 1 -> 2.
///
/// The job's S3 endpoint is a TCP proxy in the test process (the pods are local processes, so
/// loopback reaches it); the operator runs with `savepointTimeoutSeconds=20`. Mid-stream the
/// proxy goes down (new connections refused, open ones cut: S3 down, or a partition) and
/// `kubectl scale se/sales --replicas=2` asks for the rescale. The replica cannot deliver its
/// Parquet outbox nor write its part, so the savepoint must be given up: the operation goes to
/// Aborting with a reason, Degraded=True and SavepointReady=False name the savepoint failure, a
/// Warning event says so, and nothing rolls (the StatefulSet stays at 1, the same pod on the
/// same state). Once the replica's own attempt has ended (it reports Failed and reads again:
/// its drain step is bounded at 60 s), the proxy comes back: the pipeline resumes, and after
/// the operator's retry backoff (30 s, `RETRY_FIRST`) the rescale completes at 2 replicas; the
/// oracle holds exactly once.
///
/// Fake: the TCP proxy stands in for an S3 outage (versitygw cannot be made unreachable for one
/// job without stopping it for every test); every byte it passes is versitygw's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_down_during_a_savepoint_aborts_the_rescale_and_the_retry_completes_it() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let proxy = TcpProxy::start(s3_addr()?).await?;
    let fx = Fixture::with_endpoints("upg-s3down", &data(), Some(proxy.url()), None).await?;
    let job = LiveJob::new(fx).await?;
    let result = async {
        job.install(
            &["--set", "savepointTimeoutSeconds=20"],
            &spec(&job.fx, "LastState"),
        )?;
        let writer = async {
            job.fx.put_all_paced(PACE).await?;
            println!("writer: every record put");
            anyhow::Ok(())
        };
        let scenario = async {
            job.ready_pod(0, Duration::from_secs(180)).await?;
            let at = mid_stream(&job).await?;
            let pod_before = job.pod(0).await?.context("no pod sales-0")?;
            proxy.set_down(true).await;
            job.kubectl(&["scale", "se/sales", "--replicas=2"])?;
            let started = Instant::now();
            println!("S3 down and scaled to 2 at {at} documents; pod {pod_before:?}");

            let aborted = job
                .status
                .wait_for("phase Aborting", Duration::from_secs(120), |s| {
                    phase(s) == Some(OperationPhase::Aborting)
                })
                .await?;
            let op = aborted.pending_operation.clone().context("no operation")?;
            println!(
                "{:?}: Aborting, {:?}: {:?}",
                started.elapsed(),
                op.abort_reason,
                op.abort_message
            );
            check_failed_attempt(
                &job,
                &aborted,
                &pod_before,
                &["SavepointTimeout", "SavepointFailed"],
            )
            .await?;
            println!("{:?}: the abort is done", started.elapsed());

            // The replica's own attempt ends by itself (its drain step is bounded); only then does
            // S3 come back, so that the attempt cannot complete late.
            let ip = pod_before.ip.clone().context("no pod IP")?;
            let report = eventually(
                "the replica's attempt to end",
                Duration::from_secs(120),
                || async {
                    Ok(replica_savepoint(&ip, &op.savepoint_id)
                        .await?
                        .filter(|r| r.state != SavepointState::InProgress))
                },
            )
            .await?;
            println!(
                "{:?}: the replica reports {:?}: {:?}",
                started.elapsed(),
                report.state,
                report.error
            );
            ensure!(
                report.state == SavepointState::Failed,
                "the replica's part: {report:?}"
            );
            let state = replica_state(&ip).await?;
            ensure!(!state.stopped, "the replica stays stopped: {state:?}");
            println!(
                "proxy: {} connections refused while down",
                proxy.refused.load(std::sync::atomic::Ordering::SeqCst)
            );
            proxy.set_down(false).await;
            let resumed = Instant::now();
            let count_up = job.fx.count().await?;
            println!(
                "{:?}: S3 up again at {count_up} documents",
                started.elapsed()
            );

            let s = job
                .status
                .wait_for("the retried rescale", OPERATION_TIMEOUT, |s| {
                    converged(s, 2, None)
                })
                .await?;
            println!(
                "{:?} ({:?} after S3 came back): at 2 replicas on savepoint {:?}",
                started.elapsed(),
                resumed.elapsed(),
                s.last_savepoint.as_ref().map(|sp| &sp.id)
            );
            ensure!(
                s.last_savepoint.as_ref().map(|sp| &sp.id) != Some(&op.savepoint_id),
                "the failed savepoint was used"
            );
            anyhow::Ok((s, pod_before))
        };
        let ((), (s, pod_before)) = tokio::try_join!(writer, scenario)?;
        job.fx.assert_complete().await?;
        ensure!(statefulset_replicas(&job.ns)? == 2, "StatefulSet replicas");
        let uids = first_epoch_uids(&job);
        ensure!(
            uids == BTreeSet::from([pod_before.uid.clone()]),
            "the first state ran in pods {uids:?}"
        );
        let sp = s.last_savepoint.context("no savepoint")?;
        check_epochs(
            &job,
            &[
                (String::new(), BTreeSet::from([0])),
                (sp.id, BTreeSet::from([0, 1])),
            ],
        )?;
        println!("phases {:?}", job.status.distinct_phases());
        Ok(())
    }
    .await;
    let result = job.finish(result).await;
    drop(proxy);
    result
}

/// A corrupt savepoint manifest, during a rescale 1 -> 2.
///
/// The job's S3 endpoint is [`ManifestCorruptingProxy`] in front of versitygw. With corruption
/// on, `kubectl scale se/sales --replicas=2`: the replica writes its part (manifest included,
/// untouched in the store), and the operator, before scaling anything down, has one replica
/// read the whole savepoint back (`GET /savepoints/<id>/check`: every part's manifest). The
/// manifest it reads has one hex digit of its checksum flipped, so the check must fail: the
/// operation aborts with a reason and a message naming the manifest's checksum, Degraded=True,
/// and nothing rolls (the same pod on the same state, the StatefulSet at 1). Then corruption is
/// turned off: the retried rescale (after the 30 s backoff) completes at 2 replicas and the
/// oracle holds exactly once.
///
/// Fake: the proxy stands in for corruption at rest (a damaged object), which the real server
/// cannot produce; the object in versitygw stays intact, only what the reader receives differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_savepoint_manifest_aborts_the_rescale_before_any_roll() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let proxy =
        ManifestCorruptingProxy::start(&stack_var("S3_ENDPOINT")?, "savepoints", MANIFEST).await?;
    let fx = Fixture::with_endpoints("upg-corrupt", &data(), Some(proxy.url()), None).await?;
    let job = LiveJob::new(fx).await?;
    let result = async {
        job.install(&[], &spec(&job.fx, "LastState"))?;
        let writer = async {
            job.fx.put_all_paced(PACE).await?;
            println!("writer: every record put");
            anyhow::Ok(())
        };
        let scenario = async {
            job.ready_pod(0, Duration::from_secs(180)).await?;
            let at = mid_stream(&job).await?;
            let pod_before = job.pod(0).await?.context("no pod sales-0")?;
            proxy.set_corrupt(true);
            job.kubectl(&["scale", "se/sales", "--replicas=2"])?;
            let started = Instant::now();
            println!("corruption on and scaled to 2 at {at} documents; pod {pod_before:?}");

            let aborted = job
                .status
                .wait_for("phase Aborting", Duration::from_secs(120), |s| {
                    phase(s) == Some(OperationPhase::Aborting)
                })
                .await?;
            let op = aborted.pending_operation.clone().context("no operation")?;
            let message = op.abort_message.clone().unwrap_or_default();
            println!(
                "{:?}: Aborting, {:?}: {message}",
                started.elapsed(),
                op.abort_reason
            );
            ensure!(
                message.contains(MANIFEST) && message.contains("checksum"),
                "the abort message names neither the manifest nor its checksum: {message}"
            );
            check_failed_attempt(&job, &aborted, &pod_before, &["SavepointIncomplete"]).await?;
            let corrupted = proxy
                .faults
                .corrupted
                .load(std::sync::atomic::Ordering::SeqCst);
            ensure!(corrupted > 0, "no manifest was corrupted");
            let ip = pod_before.ip.clone().context("no pod IP")?;
            let state = eventually(
                "the replica to read again",
                Duration::from_secs(60),
                || async { Ok(Some(replica_state(&ip).await?).filter(|s| !s.stopped)) },
            )
            .await?;
            println!(
                "{:?}: {corrupted} manifest read(s) corrupted; the replica reads again: {state:?}",
                started.elapsed()
            );
            // The data in the store was never damaged: the manifest reads back intact directly.
            let intact = job
                .fx
                .objects(&format!("savepoints/{}/", op.savepoint_id))
                .await?;
            let (key, stored) = intact
                .iter()
                .find(|(k, _)| k.ends_with(MANIFEST))
                .with_context(|| format!("no manifest stored for {}", op.savepoint_id))?;
            PartManifest::parse(key, stored)
                .with_context(|| format!("the stored {key} does not verify"))?;
            let altered = flip_last_checksum(stored).context("no checksum to flip")?;
            ensure!(
                altered.len() == stored.len() && PartManifest::parse(key, &altered).is_err(),
                "the proxy's alteration of {key} is not caught by the manifest check"
            );
            println!("{key} is intact in the store; what the proxy served does not verify");

            proxy.set_corrupt(false);
            let cleared = Instant::now();
            let s = job
                .status
                .wait_for("the retried rescale", OPERATION_TIMEOUT, |s| {
                    converged(s, 2, None)
                })
                .await?;
            println!(
                "{:?} ({:?} after corruption off): at 2 replicas on savepoint {:?}",
                started.elapsed(),
                cleared.elapsed(),
                s.last_savepoint.as_ref().map(|sp| &sp.id)
            );
            ensure!(
                s.last_savepoint.as_ref().map(|sp| &sp.id) != Some(&op.savepoint_id),
                "the corrupt savepoint was used"
            );
            anyhow::Ok((s, pod_before))
        };
        let ((), (s, pod_before)) = tokio::try_join!(writer, scenario)?;
        job.fx.assert_complete().await?;
        ensure!(statefulset_replicas(&job.ns)? == 2, "StatefulSet replicas");
        let uids = first_epoch_uids(&job);
        ensure!(
            uids == BTreeSet::from([pod_before.uid.clone()]),
            "the first state ran in pods {uids:?}"
        );
        let sp = s.last_savepoint.context("no savepoint")?;
        check_epochs(
            &job,
            &[
                (String::new(), BTreeSet::from([0])),
                (sp.id, BTreeSet::from([0, 1])),
            ],
        )?;
        println!(
            "phases {:?}; proxy: {} requests, {} manifests corrupted, {} passed clean",
            job.status.distinct_phases(),
            proxy
                .faults
                .requests
                .load(std::sync::atomic::Ordering::SeqCst),
            proxy
                .faults
                .corrupted
                .load(std::sync::atomic::Ordering::SeqCst),
            proxy
                .faults
                .manifests_clean
                .load(std::sync::atomic::Ordering::SeqCst),
        );
        Ok(())
    }
    .await;
    let result = job.finish(result).await;
    drop(proxy);
    result
}
