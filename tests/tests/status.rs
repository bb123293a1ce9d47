//! Status that tells the truth, on the real stack with the operator installed by `helm install`:
//! an OpenSearch that refuses the job's bulk writes (403, as the security plugin answers a user
//! without the write permission) makes `SinksHealthy=False` with reason `OpenSearchForbidden`,
//! `Ready=False` (`SinksOpenSearchForbidden`) and `Degraded=True`, although every job pod is
//! ready; when OpenSearch accepts the writes again, the conditions recover and every document
//! and Parquet row of the oracle is there exactly once (the outbox kept them).
//!
//! The 403 comes from a fault proxy in front of the real OpenSearch node
//! (`tributary_tests::faults::BulkFaultProxy`, passing everything else on unchanged): turning a
//! permission off and on within seconds is what the proxy can do and the node's security plugin
//! (on the other node) would need an admin round trip for.
//!
//! Needs `cargo xtask stack up` (with the node agent) and the binaries `cargo xtask test` builds.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use tributary_crds::StreamingEnrichment;
use tributary_crds::conditions::{ConditionType, get_condition};
use tributary_runtime::r#gen::GenConfig;
use tributary_tests::cluster::{admin_client, kubectl};
use tributary_tests::faults::BulkFaultProxy;
use tributary_tests::pipeline::{Fixture, small};
use tributary_tests::{eventually, stack_var};

const WAIT: Duration = Duration::from_secs(180);

async fn condition(
    api: &Api<StreamingEnrichment>,
    type_: ConditionType,
) -> Result<Option<Condition>> {
    let se = api.get("sales").await?;
    Ok(se
        .status
        .and_then(|s| get_condition(&s.conditions, type_).cloned()))
}

/// Wait until `type_` has `status` (and `reason`, when given); the condition.
async fn until(
    api: &Api<StreamingEnrichment>,
    type_: ConditionType,
    status: &str,
    reason: Option<&str>,
) -> Result<Condition> {
    eventually(
        &format!("{type_:?}={status} {}", reason.unwrap_or("")),
        WAIT,
        || async move {
            Ok(condition(api, type_)
                .await?
                .filter(|c| c.status == status && reason.is_none_or(|r| c.reason == r)))
        },
    )
    .await
}

#[tokio::test]
async fn a_refused_sink_is_reported_and_the_pipeline_recovers_without_loss() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let proxy = BulkFaultProxy::start(&stack_var("OPENSEARCH_URL")?).await?;
    proxy.set_pass_through(true);
    let data = GenConfig {
        sales: 3000,
        ..small()
    };
    let fx = Fixture::with_endpoints("status", &data, None, Some(proxy.url())).await?;
    let ns = fx.name.clone();
    let result = async {
        fx.install_and_apply_with(&["--set", "sourcesCheckIntervalSeconds=2"], "")?;
        let client = admin_client().await?;
        let se: Api<StreamingEnrichment> = Api::namespaced(client, &ns);

        // The data arrives over about a minute, while OpenSearch refuses and accepts again.
        let writer = async {
            fx.put_all_paced(Duration::from_millis(1500)).await?;
            println!("writer: every record put");
            anyhow::Ok(())
        };
        let faults = async {
            // Healthy first: documents flow, Ready and SinksHealthy are True.
            eventually("first documents", WAIT, || async {
                Ok((fx.count().await? > 0).then_some(()))
            })
            .await?;
            until(&se, ConditionType::SinksHealthy, "True", Some("Delivering")).await?;
            until(&se, ConditionType::Ready, "True", None).await?;

            // OpenSearch refuses the bulk writes; the sales wait in the outbox.
            proxy.set_forbidden(true);
            let sinks = until(
                &se,
                ConditionType::SinksHealthy,
                "False",
                Some("OpenSearchForbidden"),
            )
            .await?;
            println!(
                "SinksHealthy: {} {}: {}",
                sinks.status, sinks.reason, sinks.message
            );
            ensure!(
                sinks.message.contains("replica 0, opensearch") && sinks.message.contains("403"),
                "the message names the replica, the sink and the answer: {}",
                sinks.message
            );
            let ready = until(
                &se,
                ConditionType::Ready,
                "False",
                Some("SinksOpenSearchForbidden"),
            )
            .await?;
            println!("Ready: {} {}", ready.status, ready.reason);
            let degraded = until(
                &se,
                ConditionType::Degraded,
                "True",
                Some("OpenSearchForbidden"),
            )
            .await?;
            println!("Degraded: {} {}", degraded.status, degraded.reason);
            // The pod itself is ready all along: Ready=False comes from the pipeline.
            let st = se.get("sales").await?.status.context("status")?;
            ensure!(
                st.ready_replicas == 1,
                "ready replicas {}",
                st.ready_replicas
            );
            let warnings = kubectl(&[
                "-n",
                &ns,
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=sales,type=Warning,reason=OpenSearchForbidden",
                "-o",
                "name",
            ])?;
            ensure!(
                !warnings.trim().is_empty(),
                "no Warning event for the refused sink"
            );

            // Writes allowed again: everything recovers.
            proxy.set_forbidden(false);
            until(&se, ConditionType::SinksHealthy, "True", Some("Delivering")).await?;
            until(&se, ConditionType::Ready, "True", None).await?;
            until(&se, ConditionType::Degraded, "False", None).await?;
            anyhow::Ok(())
        };
        tokio::try_join!(writer, faults)?;
        // Nothing lost, nothing twice: the outbox kept what OpenSearch refused.
        fx.assert_complete().await?;
        Ok(())
    }
    .await;
    tributary_tests::flow::teardown(&fx).await;
    result
}
