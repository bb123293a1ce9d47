//! Rescaling a running job, as a user does it: `helm install` the operator (the chart generates
//! the control key), apply a `StreamingEnrichment` with `replicas: 1`, `spec.savepoints` and
//! `upgradeMode: LastState`, put generated data into Kinesis, and while it arrives
//! `kubectl scale se/sales --replicas=3` (the scale subresource), then `kubectl patch` the
//! spec to 2 replicas. Each replica change goes through the operator's savepoint flow
//! (`status.pendingOperation`: Savepointing -> ScaledDown -> Restoring); afterwards every
//! document and every Parquet row of the oracle must be there exactly once.
//!
//! No two pods ever read one sales shard: a watch on the job pods (every add, change and
//! delete the API server sends, not a sample) checks that the pods that exist at any moment
//! all carry one `tributary.dev/state-id` annotation. The state id changes with every restore
//! (the first run has the id the operator gave it at the first apply, each rescale runs on its savepoint's id), and so does the shard
//! split, so pods of the old and of the new replica count never exist at the same time. The
//! API server's view is conservative: the node agent, like a kubelet, removes a pod only after
//! its process has exited, and a pod exists in the API before its process starts. The test
//! also checks that the epochs come in order (the first state, then the first savepoint's on
//! ordinals 0..3, then the second's on 0..2) and that each ran every ordinal of its count.
//!
//! The events the operator published on the resource are checked as well: for each rescale,
//! SavepointStarted, SavepointCompleted, RestoreStarted and RestoreCompleted naming its
//! savepoint, and no failure event. One run (`kubectl get events`, by creation time) recorded:
//! IndexWithoutAlias, Applying, IndexTemplateWritten, IndexBootstrapped, AsExpected, Applying,
//! AsExpected, TemplateApplied, WaitingForPods, TemplateApplied, Running, Stable, Running, Stable,
//! then for the two rescales SavepointStarted x2, Savepointing x2, SavepointCompleted x2,
//! ScaledDown x2, RestoreStarted x2, Restoring x2, RestoreCompleted, RollingUpdate,
//! SavepointRestored, RollingUpdate, WaitingForReplicas x2, RestoreCompleted, SavepointRestored
//! (the condition reasons among them are the events of conditions flipping). Each rescale took
//! about 7 s on the local stack.
//!
//! `malformed_share: 0.0`: every replica reads the dimension streams whole, so each would
//! dead-letter a malformed dimension record again (a separate, known issue).
//!
//! Needs `cargo xtask stack up` (with the node agent) and the binaries `cargo xtask test` builds.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, ensure};
use kube::Api;
use tributary_crds::{OperationPhase, StreamingEnrichment, StreamingEnrichmentStatus};
use tributary_runtime::r#gen::GenConfig;
use tributary_tests::cluster::{admin_client, kubectl};
use tributary_tests::eventually;
use tributary_tests::flow::{PodLog, watch_pods};
use tributary_tests::pipeline::{Fixture, small};

/// How long one rescale (savepoint, scale down, restore, every replica committed) may take.
const RESCALE_TIMEOUT: Duration = Duration::from_secs(180);

fn data() -> GenConfig {
    GenConfig {
        sales: 3000,
        malformed_share: 0.0,
        ..small()
    }
}

/// The resource's spec beyond the fixture's: rescales need a savepoint location.
fn savepoints(fx: &Fixture) -> String {
    format!(
        "  upgradeMode: LastState\n  savepoints: {{ uri: \"s3://{}/savepoints\" }}\n",
        fx.name
    )
}

async fn status(api: &Api<StreamingEnrichment>) -> Result<StreamingEnrichmentStatus> {
    Ok(api.get("sales").await?.status.unwrap_or_default())
}

/// Wait until the rescale to `replicas` is done: no operation pending, the StatefulSet and the
/// state at `replicas`, and a savepoint other than `before` recorded. The phases seen, and the
/// savepoint's id.
async fn rescaled(
    api: &Api<StreamingEnrichment>,
    replicas: i32,
    before: Option<&str>,
) -> Result<(Vec<OperationPhase>, String)> {
    let phases: RefCell<Vec<OperationPhase>> = RefCell::default();
    let id = eventually(
        &format!("the rescale to {replicas} replicas"),
        RESCALE_TIMEOUT,
        || {
            let phases = &phases;
            async move {
                let s = status(api).await?;
                if let Some(op) = &s.pending_operation {
                    ensure!(
                        op.phase != OperationPhase::Aborting,
                        "the operation aborts: {:?} {:?}",
                        op.abort_reason,
                        op.abort_message
                    );
                    let mut phases = phases.borrow_mut();
                    if phases.last() != Some(&op.phase) {
                        phases.push(op.phase);
                    }
                    return Ok(None);
                }
                let sp = s.last_savepoint.as_ref().map(|sp| sp.id.clone());
                Ok((s.replicas == replicas
                    && s.running_replicas == Some(replicas)
                    && sp.is_some()
                    && sp.as_deref() != before)
                    .then_some(sp)
                    .flatten())
            }
        },
    )
    .await?;
    Ok((phases.into_inner(), id))
}

/// The events published on the resource as (time, reason, message), oldest first.
fn events(ns: &str) -> Result<Vec<(String, String, String)>> {
    Ok(tributary_tests::flow::events(ns)?
        .into_iter()
        .map(|e| (e.at, e.reason, e.message))
        .collect())
}

#[tokio::test]
async fn scaling_a_running_job_up_and_down_through_savepoints_gives_the_oracle_once() -> Result<()>
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fx = Fixture::new("rescale", &data()).await?;
    let ns = fx.name.clone();
    let client = admin_client().await?;
    let log = Arc::new(Mutex::new(PodLog::default()));
    let watch = tokio::spawn(watch_pods(
        Api::namespaced(client.clone(), &ns),
        log.clone(),
    ));
    let result = async {
        fx.install_and_apply(&savepoints(&fx))?;
        let se: Api<StreamingEnrichment> = Api::namespaced(client.clone(), &ns);
        let expected = fx.data.expected.len() as u64;

        let writer = async {
            fx.put_all_paced(Duration::from_millis(1500)).await?;
            println!("writer: every record put");
            anyhow::Ok(())
        };
        let rescales = async {
            eventually("first documents", Duration::from_secs(180), || async {
                Ok((fx.count().await? > 100).then_some(()))
            })
            .await?;
            let at_first = fx.count().await?;
            ensure!(
                at_first < expected,
                "the first rescale came after the last document: make the dataset larger"
            );
            println!("scaling to 3 at {at_first}/{expected} documents");
            kubectl(&["-n", &ns, "scale", "se/sales", "--replicas=3"])?;
            let (phases, first) = rescaled(&se, 3, None).await?;
            println!("at 3 replicas with savepoint {first}; phases seen {phases:?}");

            let at_second = fx.count().await?;
            ensure!(
                at_second < expected,
                "the second rescale came after the last document: make the dataset larger"
            );
            println!("patching to 2 at {at_second}/{expected} documents");
            kubectl(&[
                "-n",
                &ns,
                "patch",
                "se",
                "sales",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"replicas":2}}"#,
            ])?;
            let (phases, second) = rescaled(&se, 2, Some(&first)).await?;
            println!("at 2 replicas with savepoint {second}; phases seen {phases:?}");
            anyhow::Ok((first, second))
        };
        let ((), (first, second)) = tokio::try_join!(writer, rescales)?;

        fx.assert_complete().await?;
        let s = status(&se).await?;
        ensure!(
            s.state_id.as_deref() == Some(second.as_str()),
            "state {:?}, expected {second}",
            s.state_id
        );
        let sts = kubectl(&[
            "-n",
            &ns,
            "get",
            "statefulset",
            "sales",
            "-o",
            "jsonpath={.spec.replicas}",
        ])?;
        ensure!(sts.trim() == "2", "StatefulSet replicas {sts}");

        // Pods of two replica counts never existed together.
        let pods = {
            let l = log.lock().unwrap_or_else(|e| e.into_inner());
            ensure!(
                l.overlaps.is_empty(),
                "pods of two states existed together: {:?}",
                l.overlaps
            );
            l.epochs.clone()
        };
        println!("job pods by state, in order: {pods:?}");
        let seen: Vec<(String, BTreeSet<u32>)> = pods
            .iter()
            .map(|(id, o, _)| (id.clone(), o.clone()))
            .collect();
        // The first state is named by the operator at its first apply.
        let initial = seen.first().map(|(id, _)| id.clone()).unwrap_or_default();
        ensure!(
            initial.starts_with("st-"),
            "the first state is not named: {initial:?}"
        );
        let want = vec![
            (initial.clone(), BTreeSet::from([0])),
            (first.clone(), BTreeSet::from([0, 1, 2])),
            (second.clone(), BTreeSet::from([0, 1])),
        ];
        ensure!(seen == want, "job pods {seen:?}, expected {want:?}");

        // The rescale published its four steps, naming its savepoint; nothing failed. Only the
        // first rescale's are checked by id: the event recorder folds a repeated event (same
        // reason, same object) into a series of the first one, which keeps its first message.
        // (A condition that flips publishes an event as well, sometimes under the same reason,
        // so the events are matched by savepoint id, not counted.)
        let steps = [
            "SavepointStarted",
            "SavepointCompleted",
            "RestoreStarted",
            "RestoreCompleted",
        ];
        let published = eventually("the operator's events", Duration::from_secs(30), || async {
            let all = events(&ns)?;
            let has = |reason: &str, id: &str| {
                all.iter()
                    .any(|(_, r, m)| r == reason && m.contains(&format!("savepoint {id}")))
            };
            Ok(steps.iter().all(|r| has(r, &first)).then_some(all))
        })
        .await?;
        let reasons: Vec<&str> = published.iter().map(|(_, r, _)| r.as_str()).collect();
        println!("events: {reasons:?}");
        let failed: Vec<&(String, String, String)> = published
            .iter()
            .filter(|(_, r, _)| {
                [
                    "SavepointFailed",
                    "SavepointTimeout",
                    "SavepointIncomplete",
                    "SavepointCancelled",
                    "SavepointAbandoned",
                ]
                .contains(&r.as_str())
            })
            .collect();
        ensure!(failed.is_empty(), "failure events: {failed:?}");
        Ok(())
    }
    .await;
    watch.abort();
    tributary_tests::flow::teardown(&fx).await;
    result
}
