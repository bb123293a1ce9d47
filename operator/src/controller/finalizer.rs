//! The operator's finalizers: work outside the cluster that must be undone before a
//! `StreamingEnrichment` goes (in-cluster children go with their owner references).
//!
//! - [`OPENSEARCH`]: `deletionPolicy: Delete` of a managed OpenSearch side (indices, template,
//!   policy, roles);
//! - [`CONSUMERS`]: the enhanced fan-out consumers the replicas registered (one per replica and
//!   stream read with `reader: EnhancedFanOut`), which Kinesis bills while they exist.
//!
//! Each is present exactly while it is wanted, so one that stops being wanted (the spec changed)
//! is removed without its cleanup.

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tributary_crds::spec::ReaderKind;
use tributary_crds::{DeletionPolicy, StreamingEnrichment};

pub const OPENSEARCH: &str = "tributary.dev/opensearch";
pub const CONSUMERS: &str = "tributary.dev/kinesis-consumers";

/// The finalizers of ours the spec needs.
pub fn wanted(se: &StreamingEnrichment) -> Vec<&'static str> {
    let mut w = Vec::new();
    let os = &se.spec.sinks.opensearch;
    if os.template.managed && os.deletion_policy == DeletionPolicy::Delete {
        w.push(OPENSEARCH);
    }
    let s = &se.spec.sources;
    if [&s.customers, &s.addresses, &s.sales]
        .iter()
        .any(|src| src.reader == ReaderKind::EnhancedFanOut)
    {
        w.push(CONSUMERS);
    }
    w
}

pub fn present(se: &StreamingEnrichment, name: &str) -> bool {
    se.metadata.finalizers.iter().flatten().any(|f| f == name)
}

/// Whether any finalizer of ours is on the resource.
pub fn any_present(se: &StreamingEnrichment) -> bool {
    [OPENSEARCH, CONSUMERS].iter().any(|f| present(se, f))
}

/// The list with ours exactly as wanted and everyone else's kept; `None` when it is already so.
pub fn synced(se: &StreamingEnrichment) -> Option<Vec<String>> {
    let before = se.metadata.finalizers.clone().unwrap_or_default();
    let wanted = wanted(se);
    let mut list: Vec<String> = before
        .iter()
        .filter(|f| ![OPENSEARCH, CONSUMERS].contains(&f.as_str()) || wanted.contains(&f.as_str()))
        .cloned()
        .collect();
    for w in wanted {
        if !list.iter().any(|f| f == w) {
            list.push(w.to_string());
        }
    }
    (list != before).then_some(list)
}

/// Bring our finalizers to what the spec wants.
pub async fn sync(
    api: &Api<StreamingEnrichment>,
    se: &StreamingEnrichment,
) -> Result<(), kube::Error> {
    match synced(se) {
        Some(list) => send(api, se, list).await,
        None => Ok(()),
    }
}

pub async fn remove(
    api: &Api<StreamingEnrichment>,
    se: &StreamingEnrichment,
    name: &str,
) -> Result<(), kube::Error> {
    let mut list = se.metadata.finalizers.clone().unwrap_or_default();
    list.retain(|f| f != name);
    send(api, se, list).await
}

/// Merge patches of the whole list carrying the resourceVersion they were computed from, so a
/// concurrent change of the finalizers makes the patch fail with a conflict (and the reconcile
/// retry) instead of clobbering it.
async fn send(
    api: &Api<StreamingEnrichment>,
    se: &StreamingEnrichment,
    list: Vec<String>,
) -> Result<(), kube::Error> {
    let name = se.metadata.name.clone().unwrap_or_default();
    let patch = json!({
        "metadata": {
            "finalizers": list,
            "resourceVersion": se.metadata.resource_version,
        }
    });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::example;

    #[test]
    fn ours_follow_the_spec_and_others_stay() {
        let mut se = example("minimal.yaml");
        se.metadata.finalizers = Some(vec!["someone.else/keep".into(), OPENSEARCH.into()]);
        se.spec.sinks.opensearch.deletion_policy = DeletionPolicy::Retain;
        // Not wanted any more: removed, the foreign one kept.
        assert_eq!(synced(&se), Some(vec!["someone.else/keep".to_string()]));

        se.spec.sources.customers.reader = ReaderKind::EnhancedFanOut;
        se.spec.sources.customers.consumer_name = Some("c".into());
        assert_eq!(
            synced(&se),
            Some(vec!["someone.else/keep".to_string(), CONSUMERS.to_string()])
        );
        se.metadata.finalizers = Some(vec!["someone.else/keep".into(), CONSUMERS.into()]);
        assert_eq!(synced(&se), None);
    }
}
