//! Labels, selectors and the owner reference shared by every child.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use tributary_crds::StreamingEnrichment;

use super::BuildError;

pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const JOB_NAME: &str = "tributary-job";
pub const MANAGER: &str = "tributary-operator";

/// The labels that select one resource's job pods (stable for the life of the StatefulSet).
pub fn selector_labels(se_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_string(), JOB_NAME.to_string()),
        (INSTANCE_LABEL.to_string(), se_name.to_string()),
    ])
}

/// The selector as the scale subresource wants it: `k=v,k=v`.
pub fn selector_string(se_name: &str) -> String {
    selector_labels(se_name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels on every child: the selector plus component and manager.
pub fn common_labels(se_name: &str, component: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(se_name);
    l.insert(COMPONENT_LABEL.to_string(), component.to_string());
    l.insert(MANAGED_BY_LABEL.to_string(), MANAGER.to_string());
    l
}

/// A controller owner reference to the resource, so children are garbage-collected with it.
pub fn owner_reference(se: &StreamingEnrichment) -> Result<OwnerReference, BuildError> {
    se.controller_owner_ref(&())
        .ok_or(BuildError::MissingMetadata("uid"))
}

/// Metadata of one child: its name, the resource's namespace, the common labels and the
/// controller owner reference.
pub fn child_meta(
    child_name: String,
    namespace: &str,
    se_name: &str,
    component: &str,
    owner: &OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(child_name),
        namespace: Some(namespace.to_string()),
        labels: Some(common_labels(se_name, component)),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}
