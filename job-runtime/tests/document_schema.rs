//! Drift between the enriched document the runtime writes and the schema the operator maps
//! (`tributary_crds::document`): every field of the generated documents must be in the schema
//! with a compatible JSON type, and every schema field must appear in some document.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use serde_json::Value;
use tributary_crds::document::{ENRICHED_SALE, FieldKind, kind_of, leaf_paths};
use tributary_runtime::events::JoinFlag;
use tributary_runtime::r#gen::{GenConfig, generate};

fn compatible(kind: FieldKind, v: &Value) -> bool {
    match kind {
        FieldKind::Keyword => v.is_string() || v.is_i64() || v.is_u64(),
        FieldKind::Money => v.is_number(),
        FieldKind::Long => v.is_i64() || v.is_u64(),
        FieldKind::Date => v
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        FieldKind::Text => v.is_string(),
        FieldKind::Boolean => v.is_boolean(),
        FieldKind::Object(_) => v.is_object(),
    }
}

/// Check one value at `path` against the schema; record leaf paths seen.
fn walk(path: &str, v: &Value, seen: &mut BTreeSet<String>, problems: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) if !path.is_empty() || !m.is_empty() => {
            if !path.is_empty() {
                match kind_of(ENRICHED_SALE, path) {
                    Some(FieldKind::Object(_)) => {}
                    Some(k) => {
                        problems.insert(format!("{path}: an object, the schema says {k:?}"));
                        return;
                    }
                    None => {
                        problems.insert(format!("{path}: missing from the schema"));
                        return;
                    }
                }
            }
            for (k, child) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(&p, child, seen, problems);
            }
        }
        // An array of values maps like its elements (OpenSearch has no array type).
        Value::Array(items) => items.iter().for_each(|i| walk(path, i, seen, problems)),
        Value::Null => {
            problems.insert(format!(
                "{path}: null is written (nulls should be left out)"
            ));
        }
        leaf => match kind_of(ENRICHED_SALE, path) {
            None => {
                problems.insert(format!("{path}: missing from the schema"));
            }
            Some(kind) if !compatible(kind, leaf) => {
                problems.insert(format!("{path}: {leaf} is not a {kind:?}"));
            }
            Some(_) => {
                seen.insert(path.to_string());
            }
        },
    }
}

#[test]
fn generated_documents_match_the_mapped_schema() {
    let data = generate(&GenConfig::default());
    assert!(
        data.expected.len() > 1000,
        "enough documents to see every field"
    );
    let mut seen = BTreeSet::new();
    let mut problems = BTreeSet::new();
    for doc in data.expected.values() {
        walk("", doc, &mut seen, &mut problems);
    }
    // The oracle never sets join flags (they come from late joins): check the enum's own
    // serialisation in a document.
    let mut flagged = data.expected.values().next().unwrap().clone();
    flagged["join_flags"] = serde_json::to_value([
        JoinFlag::BillCustomerAfterSale,
        JoinFlag::BillAddressAfterSale,
        JoinFlag::ShipCustomerAfterSale,
        JoinFlag::ShipAddressAfterSale,
    ])
    .unwrap();
    walk("", &flagged, &mut seen, &mut problems);

    assert!(
        problems.is_empty(),
        "documents and schema disagree:\n{}",
        problems.into_iter().collect::<Vec<_>>().join("\n")
    );
    let never: Vec<String> = leaf_paths(ENRICHED_SALE)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !seen.contains(p))
        .collect();
    assert!(
        never.is_empty(),
        "schema fields no generated document has: {never:?}"
    );
}

#[test]
fn the_check_catches_drift() {
    let mut seen = BTreeSet::new();
    let mut problems = BTreeSet::new();
    let doc = serde_json::json!({
        "order_id": 1, "net_paid": "12.30", "brand_new": true,
        "bill_customer": {"email_address": "a@b", "nickname": "x"}, "sale_datetime": "yesterday"
    });
    walk("", &doc, &mut seen, &mut problems);
    let text = problems.into_iter().collect::<Vec<_>>().join("\n");
    for expected in [
        "net_paid: \"12.30\" is not a Money",
        "brand_new: missing",
        "bill_customer.nickname: missing",
        "sale_datetime: \"yesterday\" is not a Date",
    ] {
        assert!(
            text.contains(expected),
            "{expected} not reported in:\n{text}"
        );
    }
    assert!(seen.contains("order_id") && seen.contains("bill_customer.email_address"));
}

/// On-demand bench (not part of the test suite): mapping size and index size per 100,000
/// generated documents with the operator's mapping vs OpenSearch's dynamic mapping, on the
/// stack's OpenSearch. Run:
/// `cargo test -p tributary-runtime --test document_schema -- --ignored --nocapture bench`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "bench: run on demand against the local stack"]
async fn bench_index_size_generated_vs_dynamic_mapping() {
    use opensearch::http::Method;
    use opensearch::http::headers::HeaderMap;
    use opensearch::http::request::JsonBody;
    use serde_json::json;

    const DOCS: usize = 100_000;
    let url = std::env::var("OPENSEARCH_URL").expect("OPENSEARCH_URL (source stack.env)");
    let transport = opensearch::http::transport::Transport::single_node(&url).unwrap();
    let os = opensearch::OpenSearch::new(transport);
    let call = |method: Method, path: String, body: Option<Value>| {
        let os = &os;
        async move {
            let r = os
                .send(
                    method,
                    &path,
                    HeaderMap::new(),
                    None::<&()>,
                    body.map(JsonBody::new),
                    None,
                )
                .await
                .unwrap();
            let status = r.status_code().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            assert!(
                status < 300 || method == Method::Delete,
                "{path}: {status} {v}"
            );
            v
        }
    };
    let data = generate(&GenConfig {
        sales: DOCS,
        customers: 5_000,
        addresses: 2_000,
        items: 1_000,
        promos: 100,
        malformed_share: 0.0,
        ..GenConfig::default()
    });
    let docs: Vec<&Value> = data.expected.values().collect();
    let settings = json!({"number_of_shards": 1, "number_of_replicas": 0});
    for (index, body) in [
        (
            "bench-generated",
            json!({"settings": {"index": settings.clone()}, "mappings": tributary_crds::document::mappings()}),
        ),
        (
            "bench-dynamic",
            json!({"settings": {"index": settings.clone()}}),
        ),
    ] {
        call(Method::Delete, format!("/{index}"), None).await;
        call(Method::Put, format!("/{index}"), Some(body)).await;
        for chunk in docs.chunks(5_000) {
            let mut lines: Vec<JsonBody<Value>> = Vec::with_capacity(chunk.len() * 2);
            for (i, d) in chunk.iter().enumerate() {
                let id = format!("{}:{}:{i}", d["order_id"], d["item_id"]);
                lines.push(json!({"index": {"_id": id}}).into());
                lines.push((*d).clone().into());
            }
            let r = os
                .bulk(opensearch::BulkParts::Index(index))
                .body(lines)
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["errors"], json!(false), "{index}: bulk errors");
        }
        call(Method::Post, format!("/{index}/_refresh"), None).await;
        call(
            Method::Post,
            format!("/{index}/_forcemerge?max_num_segments=1"),
            None,
        )
        .await;
        let stats = call(Method::Get, format!("/{index}/_stats/store,docs"), None).await;
        let mapping = call(Method::Get, format!("/{index}/_mapping"), None).await;
        let mapping_text = serde_json::to_string(&mapping[index]["mappings"]).unwrap();
        let fields = mapping_text.matches("\"type\":").count();
        let bytes = stats["_all"]["primaries"]["store"]["size_in_bytes"]
            .as_u64()
            .unwrap();
        let count = stats["_all"]["primaries"]["docs"]["count"]
            .as_u64()
            .unwrap();
        println!(
            "{index}: {count} docs, mapping {} bytes ({fields} typed fields), store {:.1} MiB \
             ({:.1} MiB per 100,000 documents, force-merged to one segment)",
            mapping_text.len(),
            bytes as f64 / 1048576.0,
            bytes as f64 / 1048576.0 * 100_000.0 / count as f64
        );
        call(Method::Delete, format!("/{index}"), None).await;
    }
}
