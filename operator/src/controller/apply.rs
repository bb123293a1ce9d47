//! The apply step: every child by server-side apply with the operator's one field manager.

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use k8s_openapi::api::apps::v1::StatefulSet;

use super::build::Children;
use super::build::labels::MANAGER;

async fn apply_one<K>(client: &Client, namespace: &str, obj: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = obj.meta().name.clone().unwrap_or_default();
    // force: the operator owns these fields; another manager's conflicting edit is reverted
    // rather than leaving the job half-configured.
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
}

/// Apply the children that do not restart anything: the control Secret, the Services and the
/// PodDisruptionBudget.
pub async fn apply_support(
    client: &Client,
    namespace: &str,
    children: &Children,
) -> Result<(), kube::Error> {
    // The Secret first: pods that start find the token they are configured to read.
    if let Some(secret) = &children.control_secret {
        apply_one(client, namespace, secret).await?;
    }
    apply_one(client, namespace, &children.headless_service).await?;
    apply_one(client, namespace, &children.metrics_service).await?;
    apply_one(client, namespace, &children.pdb).await?;
    Ok(())
}

/// Apply every child; returns the StatefulSet as the server now has it.
pub async fn apply_children(
    client: &Client,
    namespace: &str,
    children: &Children,
) -> Result<StatefulSet, kube::Error> {
    apply_support(client, namespace, children).await?;
    // The ConfigMap before the StatefulSet: pods rolled by a new hash must find the new
    // configuration.
    apply_one(client, namespace, &children.config_map).await?;
    apply_one(client, namespace, &children.statefulset).await
}

/// Scale the StatefulSet to zero through its scale subresource: the template (and the
/// ConfigMap) stay exactly as the old pods had them, which the spec may no longer describe.
pub async fn scale_to_zero(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(), kube::Error> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({ "spec": { "replicas": 0 } });
    api.patch_scale(name, &PatchParams::apply(MANAGER), &Patch::Merge(&patch))
        .await?;
    Ok(())
}
