//! At most one job pod down at a time by voluntary disruption: each pod owns a share of the sales
//! shards, so draining two at once stalls two shares.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{child_meta, selector_labels};
use super::names;

pub fn build(name: &str, namespace: &str, owner: &OwnerReference) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: child_meta(names::pdb(name), namespace, name, "job", owner),
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
