//! Checks the API server's schema cannot express. A failure here is the user's to fix: the
//! operator reports it (Degraded, an event) and waits for the next change instead of retrying.

use tributary_crds::document_id::DocumentIdTemplate;
use tributary_crds::quantity;
use tributary_crds::spec::{OpenSearchAuthKind, ReaderKind};
use tributary_crds::{ScalingMode, StreamingEnrichmentSpec, UpgradeMode};

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
/// Registered enhanced fan-out consumers per Kinesis stream.
const MAX_CONSUMERS: i32 = 20;

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

    // Enhanced fan-out: one consumer per replica, and Kinesis allows 20 per stream.
    let most_replicas = match spec.scaling.mode {
        ScalingMode::Manual => spec.replicas.unwrap_or(1),
        ScalingMode::Shards => spec.scaling.max_replicas,
    };
    for (name, source) in [
        ("customers", &s.customers),
        ("addresses", &s.addresses),
        ("sales", &s.sales),
    ] {
        if source.reader == ReaderKind::EnhancedFanOut && most_replicas > MAX_CONSUMERS {
            problems.push(format!(
                "sources.{name}: enhanced fan-out registers one consumer per replica and a \
                 stream has at most {MAX_CONSUMERS}, but up to {most_replicas} replicas may run"
            ));
        }
    }

    if spec.join.max_wait.as_millis() == 0 {
        problems.push("join.maxWait must be greater than 0".into());
    }

    let os = &spec.sinks.opensearch;
    let plain = os.endpoint.to_ascii_lowercase().starts_with("http://");
    let basic =
        os.auth.kind == OpenSearchAuthKind::Basic || os.template.admin_credentials.is_some();
    if plain && basic && !os.allow_credentials_over_plain_http {
        problems.push(format!(
            "sinks.opensearch: Basic credentials would go to {} in clear text; use https, or set \
             sinks.opensearch.allowCredentialsOverPlainHttp: true (a local or test cluster only)",
            os.endpoint
        ));
    }
    if os.auth.kind == OpenSearchAuthKind::SigV4 {
        problems.push(
            "sinks.opensearch.auth.type SigV4 is not supported yet: requests would go unsigned; \
             use Basic, or None behind a signing proxy"
                .into(),
        );
    }
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

    #[test]
    fn credentials_never_go_in_clear_text_unless_asked_and_sigv4_is_refused() {
        let mut se = example("full.yaml"); // Basic auth over https
        se.spec.sinks.opensearch.endpoint = "http://search.internal:9200".into();
        let msg = validate(&se.spec).unwrap_err().to_string();
        assert!(msg.contains("in clear text"), "{msg}");
        se.spec.sinks.opensearch.allow_credentials_over_plain_http = true;
        validate(&se.spec).unwrap();

        let mut se = example("full.yaml");
        se.spec.sinks.opensearch.auth = tributary_crds::OpenSearchAuth {
            kind: OpenSearchAuthKind::SigV4,
            ..Default::default()
        };
        let msg = validate(&se.spec).unwrap_err().to_string();
        assert!(msg.contains("SigV4 is not supported yet"), "{msg}");
    }

    #[test]
    fn enhanced_fan_out_needs_a_consumer_per_replica_within_the_limit() {
        let mut se = example("full.yaml"); // sales on enhanced fan-out, Shards mode up to 8
        validate(&se.spec).unwrap();
        se.spec.scaling.max_replicas = 21;
        let msg = validate(&se.spec).unwrap_err().to_string();
        assert!(msg.contains("sources.sales: enhanced fan-out"), "{msg}");
    }
}
