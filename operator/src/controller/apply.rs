//! The apply step: every child by server-side apply with the operator's one field manager.

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

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

/// Apply every child; returns the StatefulSet as the server now has it.
pub async fn apply_children(
    client: &Client,
    namespace: &str,
    children: &Children,
) -> Result<k8s_openapi::api::apps::v1::StatefulSet, kube::Error> {
    // The ConfigMap first: pods rolled by a new hash must find the new configuration.
    apply_one(client, namespace, &children.config_map).await?;
    apply_one(client, namespace, &children.headless_service).await?;
    apply_one(client, namespace, &children.metrics_service).await?;
    apply_one(client, namespace, &children.pdb).await?;
    apply_one(client, namespace, &children.statefulset).await
}
