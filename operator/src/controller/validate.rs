//! Checks the API server's schema cannot express. A failure here is the user's to fix: the
//! operator reports it (Degraded, an event) and waits for the next change instead of retrying.

use tributary_crds::document_id::DocumentIdTemplate;
use tributary_crds::quantity;
use tributary_crds::{StreamingEnrichmentSpec, UpgradeMode};

/// Everything wrong with a spec, each problem one readable sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid spec: {}", .problems.join("; "))]
pub struct InvalidSpec {
    pub problems: Vec<String>,
}

/// Bounds of one OpenSearch bulk request: smaller wastes round trips, larger risks the
/// cluster's `http.max_content_length` and heap pressure.
const BULK_MIN: u64 = 1 << 20;
const BULK_MAX: u64 = 100 << 20;

pub fn validate(spec: &StreamingEnrichmentSpec) -> Result<(), InvalidSpec> {
    let mut problems = Vec::new();

    let s = &spec.sources;
    let streams = [
        ("customers", &s.customers.stream),
        ("addresses", &s.addresses.stream),
        ("sales", &s.sales.stream),
    ];
    for (i, (a, sa)) in streams.iter().enumerate() {
        for (b, sb) in &streams[i + 1..] {
            if sa == sb {
                problems.push(format!(
                    "sources.{a} and sources.{b} name the same stream {sa:?}"
                ));
            }
        }
    }

    if spec.join.max_wait.as_millis() == 0 {
        problems.push("join.maxWait must be greater than 0".into());
    }

    let os = &spec.sinks.opensearch;
    if let Err(e) = DocumentIdTemplate::parse(&os.document_id) {
        problems.push(format!("sinks.opensearch.documentId: {e}"));
    }
    if os.write_alias == os.read_alias {
        problems.push("sinks.opensearch.writeAlias and readAlias must differ".into());
    }
    match quantity::bytes(&os.bulk_max_bytes) {
        Ok(b) if !(BULK_MIN..=BULK_MAX).contains(&b) => problems.push(format!(
            "sinks.opensearch.bulkMaxBytes must be between 1Mi and 100Mi, got {}",
            os.bulk_max_bytes.0
        )),
        Ok(_) => {}
        Err(e) => problems.push(format!("sinks.opensearch.bulkMaxBytes: {e}")),
    }
    if let Err(e) = quantity::bytes(&os.template.rollover_size) {
        problems.push(format!("sinks.opensearch.template.rolloverSize: {e}"));
    }
    match quantity::bytes(&spec.sinks.s3.roll_size) {
        Ok(0) => problems.push("sinks.s3.rollSize must be greater than 0".into()),
        Ok(_) => {}
        Err(e) => problems.push(format!("sinks.s3.rollSize: {e}")),
    }
    if spec.sinks.s3.roll_interval.as_millis() == 0 {
        problems.push("sinks.s3.rollInterval must be greater than 0".into());
    }

    // The schema's CEL rule says the same; repeated here so a resource created before the rule
    // (or through a path that skipped it) is still reported.
    if spec.upgrade_mode == UpgradeMode::Savepoint && spec.savepoints.is_none() {
        problems.push("upgradeMode Savepoint needs spec.savepoints.uri".into());
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(InvalidSpec { problems })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::build::fixtures::example;

    #[test]
    fn examples_are_valid() {
        for f in ["minimal.yaml", "full.yaml"] {
            validate(&example(f).spec).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
    }

    #[test]
    fn every_problem_is_reported_in_one_message() {
        let mut se = example("minimal.yaml");
        se.spec.sources.addresses.stream = se.spec.sources.customers.stream.clone();
        se.spec.sinks.opensearch.document_id = "{order_id}:{sku}".into();
        se.spec.sinks.opensearch.bulk_max_bytes.0 = "200Mi".into();
        let err = validate(&se.spec).unwrap_err();
        assert_eq!(err.problems.len(), 3, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("sources.customers and sources.addresses"),
            "{msg}"
        );
        assert!(msg.contains("unknown field \"sku\""), "{msg}");
        assert!(msg.contains("bulkMaxBytes"), "{msg}");
    }
}
