//! At most one job pod down at a time by voluntary disruption: each pod owns a share of the sales
//! shards, so draining two at once stalls two shares.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{common_labels, selector_labels};
use super::names;

pub fn build(name: &str, namespace: &str, owner: &OwnerReference) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(names::pdb(name)),
            namespace: Some(namespace.to_string()),
            labels: Some(common_labels(name, "job")),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(name)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
