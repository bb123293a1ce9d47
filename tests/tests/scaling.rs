//! The operator observing the streams, on the real stack (API server with the node agent,
//! kinesis-mock, versitygw, OpenSearch), the operator installed with `helm install`:
//!
//! - Shards mode follows the sales stream: `UpdateShardCount` 2 -> 4 -> 2 mid-stream with
//!   `shardsPerReplica: 2` takes the job from 1 to 2 replicas and back to 1 (after the
//!   stabilisation window), each through the savepoint rescale; every document and every
//!   Parquet row of the oracle exactly once, and every dead letter once although two replicas
//!   read the dimension streams in full (malformed records included). Then no further rescale
//!   while the shards stay as they are (no loop under a steady load).
//! - A stream that does not exist gives `SourcesHealthy=False` with reason `StreamNotFound`.
//!
//! The operator reads the resource's AWS credentials Secret (the job's rules), so the chart is
//! installed with `secretNamespaces` naming the test's namespace (and watches only that one:
//! the tests run side by side, each with its own operator).
//!
//! Needs `cargo xtask stack up` (with the node agent) and the binaries `cargo xtask test` builds.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use aws_sdk_kinesis::types::ScalingType;
use kube::Api;
use tributary_crds::conditions::{ConditionType, get_condition};
use tributary_crds::{OperationPhase, StreamingEnrichment, StreamingEnrichmentStatus};
use tributary_runtime::r#gen::GenConfig;
use tributary_tests::cluster::{admin_client, kubectl};
use tributary_tests::eventually;
use tributary_tests::pipeline::{Fixture, small};

/// How long one rescale (stabilisation, savepoint, scale down, restore) may take.
const RESCALE_TIMEOUT: Duration = Duration::from_secs(240);

fn data() -> GenConfig {
    GenConfig {
        sales: 4000,
        ..small()
    }
}

/// Shards mode with a short window and cooldown, and the operator looking every 2 s.
fn shards_mode(fx: &Fixture) -> String {
    format!(
        "  upgradeMode: LastState\n  savepoints: {{ uri: \"s3://{}/savepoints\" }}\n  scaling: \
         {{ mode: Shards, shardsPerReplica: 2, minReplicas: 1, maxReplicas: 4, \
         stabilizationWindow: 10s, cooldown: 5s }}\n",
        fx.name
    )
}

/// The chart (scoped to the fixture's namespace, looking at the streams every `check_secs`),
/// then the resource `yaml`.
fn install(fx: &Fixture, yaml: &str, check_secs: u64) -> Result<()> {
    let interval = format!("sourcesCheckIntervalSeconds={check_secs}");
    fx.install_and_apply_yaml(&["--set", &interval], yaml)
}

async fn status(api: &Api<StreamingEnrichment>) -> Result<StreamingEnrichmentStatus> {
    Ok(api.get("sales").await?.status.unwrap_or_default())
}

/// Wait until the job runs `replicas` on a state other than `before`, with no operation in
/// flight; the state id.
async fn at_replicas(
    api: &Api<StreamingEnrichment>,
    replicas: i32,
    before: Option<&str>,
) -> Result<String> {
    eventually(
        &format!("the job at {replicas} replica(s)"),
        RESCALE_TIMEOUT,
        || async move {
            let s = status(api).await?;
            if let Some(op) = &s.pending_operation {
                ensure!(
                    op.phase != OperationPhase::Aborting,
                    "the operation aborts: {:?} {:?}",
                    op.abort_reason,
                    op.abort_message
                );
                return Ok(None);
            }
            let id = s.state_id.clone();
            Ok((s.running_replicas == Some(replicas)
                && s.replicas == replicas
                && s.ready_replicas == replicas
                && id.as_deref() != before)
                .then_some(id)
                .flatten())
        },
    )
    .await
}

async fn update_shard_count(fx: &Fixture, target: i32) -> Result<()> {
    let k = fx.kinesis();
    k.update_shard_count()
        .stream_name(&fx.config.sources.sales.stream)
        .target_shard_count(target)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .with_context(|| format!("UpdateShardCount to {target}"))?;
    Ok(())
}

/// Reasons and messages of the events on the resource, oldest first.
fn events(ns: &str) -> Result<Vec<(String, String)>> {
    Ok(tributary_tests::flow::events(ns)?
        .into_iter()
        .map(|e| (e.reason, e.message))
        .collect())
}

#[tokio::test]
async fn shards_mode_follows_update_shard_count_through_savepoints() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fx = Fixture::new("shards", &data()).await?;
    let ns = fx.name.clone();
    let result = async {
        install(&fx, &fx.resource_yaml(&shards_mode(&fx)), 2)?;
        let client = admin_client().await?;
        let se: Api<StreamingEnrichment> = Api::namespaced(client, &ns);
        let expected = fx.data.expected.len() as u64;

        let writer = async {
            fx.put_all_paced(Duration::from_millis(1500)).await?;
            println!("writer: every record put");
            anyhow::Ok(())
        };
        let scaling = async {
            // Observed before anything runs: 2 open shards, one replica.
            let s = eventually(
                "the first observation",
                Duration::from_secs(120),
                || async {
                    let s = status(&se).await?;
                    Ok((s.shards.is_some() && s.scaling.is_some()).then_some(s))
                },
            )
            .await?;
            ensure!(s.shards == Some(2), "shards {:?}", s.shards);
            ensure!(
                s.scaling.as_ref().map(|d| d.replicas) == Some(1),
                "scaling {:?}",
                s.scaling
            );
            let healthy = get_condition(&s.conditions, ConditionType::SourcesHealthy)
                .context("no SourcesHealthy")?;
            ensure!(healthy.status == "True", "SourcesHealthy {healthy:?}");
            eventually("first documents", Duration::from_secs(180), || async {
                Ok((fx.count().await? > 100).then_some(()))
            })
            .await?;
            let first = status(&se).await?.state_id;

            let at = fx.count().await?;
            ensure!(at < expected, "the split came after the last document");
            println!("UpdateShardCount 2 -> 4 at {at}/{expected} documents");
            update_shard_count(&fx, 4).await?;
            let out = at_replicas(&se, 2, first.as_deref()).await?;
            let s = status(&se).await?;
            ensure!(s.shards == Some(4), "shards {:?} after the split", s.shards);
            println!(
                "at 2 replicas on state {out}; closed shards {:?}",
                s.closed_shards
            );

            // kinesis-mock keeps the stream UPDATING for a while after a change.
            eventually(
                "the stream active again",
                Duration::from_secs(120),
                || async { Ok(update_shard_count(&fx, 2).await.ok()) },
            )
            .await?;
            let at = fx.count().await?;
            println!("UpdateShardCount 4 -> 2 at {at}/{expected} documents");
            let back = at_replicas(&se, 1, Some(&out)).await?;
            println!("back at 1 replica on state {back}");
            anyhow::Ok(back)
        };
        let ((), last) = tokio::try_join!(writer, scaling)?;

        fx.assert_complete().await?;

        // Steady shards, steady load: no further rescale across many looks.
        let before = status(&se).await?;
        tokio::time::sleep(Duration::from_secs(20)).await;
        let after = status(&se).await?;
        ensure!(
            after.pending_operation.is_none() && after.state_id.as_deref() == Some(last.as_str()),
            "a rescale without a shard change: {:?} -> {:?}",
            before.state_id,
            after.pending_operation
        );
        ensure!(
            after.scaling.as_ref().map(|d| d.changed_at.clone())
                == before.scaling.as_ref().map(|d| d.changed_at.clone()),
            "the decision changed without a shard change"
        );

        // Each decision is an event that states its inputs.
        let all = events(&ns)?;
        // (The event recorder folds a repeated reason into a series that keeps its first note,
        // so each kind of decision has a reason of its own.)
        let scaled: Vec<&(String, String)> = all
            .iter()
            .filter(|(r, _)| r.starts_with("ShardsScal"))
            .collect();
        println!("Shards mode events: {scaled:?}");
        ensure!(
            scaled
                .iter()
                .any(|(r, n)| r == "ShardsScaledIn" && n.contains("2 -> 1")),
            "no scale-in event naming its inputs: {all:?}"
        );
        ensure!(
            scaled
                .iter()
                .any(|(_, n)| n.contains("4 open sales shard(s)") && n.contains("1 -> 2")),
            "no scale-out event naming its inputs: {all:?}"
        );
        Ok(())
    }
    .await;
    tributary_tests::flow::teardown(&fx).await;
    result
}

#[tokio::test]
async fn a_missing_stream_makes_sources_unhealthy_with_the_reason() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fx = Fixture::new(
        "nostream",
        &GenConfig {
            sales: 10,
            ..small()
        },
    )
    .await?;
    let ns = fx.name.clone();
    let result = async {
        // The customers stream the resource names was never created.
        let yaml = fx.resource_yaml("").replace(
            &format!(
                "customers: {{ stream: {} }}",
                fx.config.sources.customers.stream
            ),
            &format!("customers: {{ stream: {}-missing }}", fx.name),
        );
        ensure!(yaml.contains("-missing"), "the manifest did not change");
        install(&fx, &yaml, 2)?;
        let client = admin_client().await?;
        let se: Api<StreamingEnrichment> = Api::namespaced(client, &ns);
        let cond = eventually("SourcesHealthy", Duration::from_secs(120), || async {
            let s = status(&se).await?;
            Ok(get_condition(&s.conditions, ConditionType::SourcesHealthy)
                .filter(|c| c.status != "Unknown")
                .cloned())
        })
        .await?;
        println!("SourcesHealthy: {cond:?}");
        ensure!(cond.status == "False", "{cond:?}");
        ensure!(cond.reason == "StreamNotFound", "{cond:?}");
        ensure!(
            cond.message.contains("sources.customers") && cond.message.contains("-missing"),
            "the message names the stream: {cond:?}"
        );
        // The sales stream exists: its shards are still reported.
        let s = status(&se).await?;
        ensure!(s.shards == Some(2), "shards {:?}", s.shards);
        Ok(())
    }
    .await;
    tributary_tests::flow::teardown(&fx).await;
    result
}

/// The consumers registered on a stream, by name.
async fn consumers(fx: &Fixture, stream: &str) -> Result<Vec<String>> {
    let k = fx.kinesis();
    let arn = k
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await?
        .stream_description_summary()
        .map(|s| s.stream_arn().to_string())
        .context("no stream ARN")?;
    let out = k.list_stream_consumers().stream_arn(arn).send().await?;
    let mut names: Vec<String> = out
        .consumers()
        .iter()
        .map(|c| c.consumer_name().to_string())
        .collect();
    names.sort();
    Ok(names)
}

/// Two replicas on enhanced fan-out read the customers stream each through its own consumer
/// (`<consumerName>-<ordinal>`): both subscriptions to a shard stay open and every document is
/// complete. A rescale to one replica deregisters the removed replica's consumer, and deleting
/// the resource deregisters the last one (its finalizer).
#[tokio::test]
async fn two_replicas_on_enhanced_fan_out_each_have_their_consumer() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fx = Fixture::new(
        "efo",
        &GenConfig {
            sales: 1500,
            ..small()
        },
    )
    .await?;
    let ns = fx.name.clone();
    let customers = fx.config.sources.customers.stream.clone();
    let result = async {
        let extra = format!(
            "  upgradeMode: LastState\n  savepoints: {{ uri: \"s3://{}/savepoints\" }}\n",
            fx.name
        );
        // Two replicas, the customers stream on fan-out.
        let yaml = fx
            .resource_yaml(&extra)
            .replace("  replicas: 1\n", "  replicas: 2\n")
            .replace(
                &format!("customers: {{ stream: {customers} }}"),
                &format!(
                    "customers: {{ stream: {customers}, reader: EnhancedFanOut, consumerName: tributary-test }}"
                ),
            );
        ensure!(yaml.contains("EnhancedFanOut") && yaml.contains("replicas: 2"));
        install(&fx, &yaml, 2)?;
        let client = admin_client().await?;
        let se: Api<StreamingEnrichment> = Api::namespaced(client, &ns);
        fx.put_all().await?;
        fx.assert_complete().await?;
        let names = consumers(&fx, &customers).await?;
        println!("consumers with two replicas: {names:?}");
        ensure!(
            names == ["tributary-test-0", "tributary-test-1"],
            "consumers {names:?}"
        );
        let finalizers = se.get("sales").await?.metadata.finalizers.unwrap_or_default();
        ensure!(
            finalizers.contains(&"tributary.dev/kinesis-consumers".to_string()),
            "finalizers {finalizers:?}"
        );

        kubectl(&["-n", &ns, "scale", "se/sales", "--replicas=1"])?;
        let before = status(&se).await?.state_id;
        at_replicas(&se, 1, before.as_deref()).await?;
        eventually("the removed replica's consumer deregistered", Duration::from_secs(60), || async {
            let names = consumers(&fx, &customers).await?;
            Ok((names == ["tributary-test-0"]).then_some(()))
        })
        .await?;

        kubectl(&["-n", &ns, "delete", "se", "sales", "--wait=true", "--timeout=90s"])?;
        eventually("every consumer deregistered", Duration::from_secs(60), || async {
            Ok(consumers(&fx, &customers).await?.is_empty().then_some(()))
        })
        .await?;
        Ok(())
    }
    .await;
    tributary_tests::flow::teardown(&fx).await;
    result
}
