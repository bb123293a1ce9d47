//! The local OpenSearch: an index template, idempotent bulk writes, search and a sum aggregation.
//!
//! Needs `cargo xtask stack up`; fails (does not skip) when the stack is down.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use opensearch::cluster::ClusterHealthParts;
use opensearch::http::Url;
use opensearch::http::response::Response;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::indices::{
    IndicesDeleteIndexTemplateParts, IndicesDeleteParts, IndicesGetMappingParts,
    IndicesPutIndexTemplateParts, IndicesRefreshParts,
};
use opensearch::params::WaitForStatus;
use opensearch::{BulkOperation, BulkParts, OpenSearch, SearchParts};
use serde_json::{Value, json};

fn client() -> Result<OpenSearch> {
    let url = tributary_tests::stack_var("OPENSEARCH_URL")?;
    let pool = SingleNodeConnectionPool::new(Url::parse(&url).context("OPENSEARCH_URL")?);
    let transport = TransportBuilder::new(pool)
        // The node is on loopback; a proxy from the environment must not be in the way.
        .disable_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    Ok(OpenSearch::new(transport))
}

/// The body of a response that must have succeeded.
async fn ok_json(what: &str, resp: Response) -> Result<Value> {
    let status = resp.status_code();
    let body: Value = resp.json().await.with_context(|| format!("{what}: body"))?;
    ensure!(status.is_success(), "{what}: {status}: {body}");
    Ok(body)
}

fn unique_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("tributary-ostest-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn template_bulk_search_aggregate() -> Result<()> {
    let client = client()?;

    let health = ok_json(
        "cluster health",
        client
            .cluster()
            .health(ClusterHealthParts::None)
            .wait_for_status(WaitForStatus::Yellow)
            .timeout("10s")
            .send()
            .await?,
    )
    .await?;
    let status = health["status"].as_str().unwrap_or_default();
    ensure!(
        status == "green" || status == "yellow",
        "cluster health: {health}"
    );

    let prefix = unique_prefix();
    let template = prefix.clone();
    let index = format!("{prefix}-events");

    let result = exercise(&client, &template, &index).await;

    // Clean up whatever the run created, also when it failed half-way.
    let del_index = client
        .indices()
        .delete(IndicesDeleteParts::Index(&[&index]))
        .ignore_unavailable(true)
        .send()
        .await;
    let del_template = client
        .indices()
        .delete_index_template(IndicesDeleteIndexTemplateParts::Name(&template))
        .send()
        .await;
    result?;
    ok_json("delete index", del_index?).await?;
    ok_json("delete template", del_template?).await?;
    Ok(())
}

async fn exercise(client: &OpenSearch, template: &str, index: &str) -> Result<()> {
    // `scaled_float` lives in the mapper-extras module; fall back to `double` on a node without it.
    let plugins = tributary_tests::stack_var("OPENSEARCH_PLUGINS").unwrap_or_default();
    let amount = if plugins.split(',').any(|p| p == "mapper-extras") {
        json!({"type": "scaled_float", "scaling_factor": 100})
    } else {
        json!({"type": "double"})
    };
    let amount_type = amount["type"].clone();

    ok_json(
        "put index template",
        client
            .indices()
            .put_index_template(IndicesPutIndexTemplateParts::Name(template))
            .body(json!({
                "index_patterns": [format!("{template}-*")],
                "priority": 100,
                "template": {
                    "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                    "mappings": {
                        "dynamic": "strict",
                        "properties": {
                            "id": {"type": "keyword"},
                            "amount": amount,
                            "at": {"type": "date"}
                        }
                    }
                }
            }))
            .send()
            .await?,
    )
    .await?;

    let docs = [("a", 1.25), ("b", 2.50), ("c", 3.75), ("d", 0.10)];
    let expected_sum: f64 = docs.iter().map(|(_, a)| a).sum();

    for round in 1..=2 {
        let ops: Vec<BulkOperation<Value>> = docs
            .iter()
            .map(|(id, amount)| {
                BulkOperation::index(json!({
                    "id": id,
                    "amount": amount,
                    "at": "2026-01-01T00:00:00Z"
                }))
                .id(*id)
                .into()
            })
            .collect();
        let bulk = ok_json(
            "bulk",
            client
                .bulk(BulkParts::Index(index))
                .body(ops)
                .send()
                .await?,
        )
        .await?;
        ensure!(bulk["errors"] == json!(false), "bulk round {round}: {bulk}");
        let items = bulk["items"].as_array().context("bulk items")?;
        ensure!(items.len() == docs.len(), "bulk round {round}: {bulk}");
        for item in items {
            let version = item["index"]["_version"].as_i64();
            ensure!(
                version == Some(round),
                "bulk round {round}: expected _version {round}: {item}"
            );
        }

        ok_json(
            "refresh",
            client
                .indices()
                .refresh(IndicesRefreshParts::Index(&[index]))
                .send()
                .await?,
        )
        .await?;

        let found = ok_json(
            "search",
            client
                .search(SearchParts::Index(&[index]))
                .body(json!({
                    "size": 0,
                    "track_total_hits": true,
                    "aggs": {"total": {"sum": {"field": "amount"}}}
                }))
                .send()
                .await?,
        )
        .await?;
        let count = found["hits"]["total"]["value"].as_u64();
        ensure!(
            count == Some(docs.len() as u64),
            "round {round}: expected {} docs (ids make the bulk idempotent): {found}",
            docs.len()
        );
        let sum = found["aggregations"]["total"]["value"]
            .as_f64()
            .context("sum aggregation")?;
        ensure!(
            (sum - expected_sum).abs() < 1e-9,
            "round {round}: sum {sum}, expected {expected_sum}"
        );
    }

    // The index took its mapping from the template.
    let mapping = ok_json(
        "get mapping",
        client
            .indices()
            .get_mapping(IndicesGetMappingParts::Index(&[index]))
            .send()
            .await?,
    )
    .await?;
    let got = &mapping[index]["mappings"]["properties"]["amount"]["type"];
    ensure!(
        *got == amount_type,
        "mapping of amount: {got}, expected {amount_type}"
    );
    Ok(())
}
