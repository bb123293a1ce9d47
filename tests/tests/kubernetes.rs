//! The local stack's Kubernetes control plane works end to end: the API server stores objects,
//! the controller-manager's StatefulSet controller creates Pods, and its garbage collector deletes
//! them once their owner is gone. Needs `cargo xtask stack up`; fails (does not skip) without it.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use tributary_tests::eventually;

const TIMEOUT: Duration = Duration::from_secs(60);

async fn client() -> Result<Client> {
    tributary_tests::cluster::admin_client().await
}

fn statefulset(name: &str) -> StatefulSet {
    let labels = [("app".to_string(), name.to_string())]
        .into_iter()
        .collect();
    StatefulSet {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name.to_string()),
            selector: LabelSelector {
                match_labels: Some(labels),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(
                        [("app".to_string(), name.to_string())]
                            .into_iter()
                            .collect(),
                    ),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "main".to_string(),
                        // No kubelet runs: the Pod stays Pending and the image is never pulled.
                        image: Some("tributary.invalid/never-pulled:0".to_string()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn statefulset_pod_lifecycle(client: &Client, ns: &str) -> Result<()> {
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);

    let sts = sts_api
        .create(&PostParams::default(), &statefulset("web"))
        .await?;
    let sts_uid = sts.uid().context("created StatefulSet has no uid")?;

    let pod = eventually(
        "the StatefulSet controller to create web-0",
        TIMEOUT,
        || async {
            let list = pods.list(&ListParams::default()).await?;
            Ok(list.items.into_iter().find(|p| {
                p.owner_references().iter().any(|o| {
                    o.kind == "StatefulSet" && o.uid == sts_uid && o.controller == Some(true)
                })
            }))
        },
    )
    .await?;
    assert_eq!(pod.name_any(), "web-0");

    sts_api.delete("web", &DeleteParams::background()).await?;
    eventually("the garbage collector to delete web-0", TIMEOUT, || async {
        let list = pods.list(&ListParams::default()).await?;
        Ok(list.items.is_empty().then_some(()))
    })
    .await
}

#[tokio::test]
async fn statefulset_creates_pod_and_garbage_collector_removes_it() -> Result<()> {
    let client = client().await?;
    let version = client.apiserver_version().await?;
    assert_eq!(
        version.git_version,
        tributary_tests::stack_var("KUBERNETES_VERSION")?
    );

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let ns = format!("kube-test-{}-{nanos}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;

    let outcome = statefulset_pod_lifecycle(&client, &ns).await;
    // Clean up even when the lifecycle failed; the namespace controller removes what is left.
    let cleanup = namespaces.delete(&ns, &DeleteParams::background()).await;
    outcome?;
    cleanup?;
    Ok(())
}
