//! The operator's OpenSearch side against the stack's OpenSearch (security off): the generated
//! template, the first index with both aliases, no rewrite when nothing changed, an update when
//! the resource changes, a real rollover with a tiny threshold (writes follow the write alias),
//! refusal of a template it does not own (and adoption), an unreachable cluster that does not
//! block the job's objects, and `deletionPolicy` on delete.

use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use opensearch::http::Method;
use serde_json::{Value, json};
use tributary_crds::StreamingEnrichment;
use tributary_crds::conditions::{ConditionType, get_condition};
use tributary_tests::cluster::{admin_client, install_crds, kubectl, kubectl_raw};
use tributary_tests::opensearch_side::{Os, sample_document, spawn_operator};
use tributary_tests::{eventually, stack_var, unique};

const WAIT: Duration = Duration::from_secs(90);

fn resource(name: &str, endpoint: &str, prefix: &str, template: &str, deletion: &str) -> String {
    format!(
        r#"apiVersion: tributary.dev/v1alpha1
kind: StreamingEnrichment
metadata:
  name: {name}
spec:
  replicas: 1
  sources:
    customers: {{ stream: c-{name} }}
    addresses: {{ stream: a-{name} }}
    sales: {{ stream: s-{name} }}
  reference:
    items: {{ uri: "s3://ara-raw/items/" }}
    promos: {{ uri: "s3://ara-raw/promos/" }}
  sinks:
    s3: {{ uri: "s3://ara-curated" }}
    opensearch:
      endpoint: "{endpoint}"
      indexPrefix: {prefix}
      writeAlias: {prefix}-write
      readAlias: {prefix}-read
      template: {template}
      deletionPolicy: {deletion}
  deadLetter: {{ uri: "s3://ara-dead-letter/{name}" }}
"#
    )
}

fn apply(ns: &str, yaml: &str) -> Result<()> {
    let (ok, out) = kubectl_raw(&["apply", "--server-side", "-n", ns, "-f", "-"], Some(yaml))?;
    ensure!(ok, "{out}");
    Ok(())
}

async fn condition(
    api: &Api<StreamingEnrichment>,
    name: &str,
    type_: ConditionType,
    status: &str,
    reason: &str,
) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    eventually(
        &format!("{name}: {type_:?} {status} {reason}"),
        WAIT,
        || async {
            let se = api.get(name).await?;
            Ok(se
                .status
                .and_then(|s| get_condition(&s.conditions, type_).cloned())
                .filter(|c| c.status == status && c.reason == reason))
        },
    )
    .await
}

async fn write_index(os: &Os, alias: &str) -> Result<Option<String>> {
    let (status, body) = os
        .call(Method::Get, &format!("/_alias/{alias}"), None)
        .await?;
    if status != 200 {
        return Ok(None);
    }
    Ok(body.as_object().and_then(|m| {
        m.iter()
            .find(|(_, v)| v["aliases"][alias]["is_write_index"] == json!(true))
            .map(|(k, _)| k.clone())
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_owns_template_bootstrap_rollover_and_deletion() -> Result<()> {
    let url = stack_var("OPENSEARCH_URL")?;
    let os = Os::new(&url, None, None)?;
    install_crds()?;
    let client = admin_client().await?;
    let ns = unique("ostpl");
    kubectl(&["create", "namespace", &ns])?;
    let _op = spawn_operator(&ns, 1)?;
    let api: Api<StreamingEnrichment> = Api::namespaced(client.clone(), &ns);

    // --- Template and first index.
    let prefix = unique("tpl");
    let name = "managed";
    apply(
        &ns,
        &resource(
            name,
            &url,
            &prefix,
            "{ replicas: 0, rolloverSize: 2Ki }",
            "Delete",
        ),
    )?;
    let c = condition(
        &api,
        name,
        ConditionType::IndexTemplateReady,
        "True",
        "TemplateApplied",
    )
    .await?;
    ensure!(
        c.message
            .contains(&format!("{prefix}-write -> {prefix}-000001")),
        "{}",
        c.message
    );
    let tname = format!("tributary-{prefix}");
    let t = os
        .ok(Method::Get, &format!("/_index_template/{tname}"), None)
        .await?;
    let t = &t["index_templates"][0]["index_template"];
    ensure!(t["_meta"]["owner"] == json!(format!("{ns}/{name}")), "{t}");
    let hash1 = t["_meta"]["hash"].clone();
    let first = format!("{prefix}-000001");
    let m = os
        .ok(Method::Get, &format!("/{first}/_mapping"), None)
        .await?;
    let props = &m[&first]["mappings"]["properties"];
    ensure!(m[&first]["mappings"]["dynamic"] == json!("false"), "{m}");
    ensure!(props["net_paid"]["type"] == "scaled_float" && props["order_id"]["type"] == "keyword");
    ensure!(
        props["bill_customer"]["properties"]["first_name"]["fields"]["keyword"]["type"]
            == "keyword"
    );
    let aliases = os
        .ok(Method::Get, &format!("/{first}/_alias"), None)
        .await?;
    ensure!(
        aliases[&first]["aliases"][format!("{prefix}-write")]["is_write_index"] == json!(true),
        "{aliases}"
    );
    ensure!(
        aliases[&first]["aliases"]
            .get(format!("{prefix}-read"))
            .is_some(),
        "{aliases}"
    );

    // The finalizer guards deletionPolicy Delete.
    let se = api.get(name).await?;
    ensure!(
        se.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"tributary.dev/opensearch".to_string())
    );

    // --- No rewrite of an up-to-date template: several passes (1 s apart) write nothing.
    let written = || {
        let out = kubectl(&[
            "-n",
            &ns,
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name},reason=IndexTemplateWritten"),
            "-o",
            "jsonpath={range .items[*]}x{.series.count} {end}",
        ])?;
        // One event per write, or a series of them (`x<count>`): the number of writes seen.
        anyhow::Ok(
            out.split_whitespace()
                .map(|t| t.trim_start_matches('x').parse::<u64>().unwrap_or(1))
                .sum::<u64>(),
        )
    };
    let writes = written()?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(
        written()? == writes,
        "the operator rewrote an up-to-date template ({writes} -> {} writes)",
        written()?
    );

    // --- Drift is judged on the live body: a hand edit that keeps _meta is reverted.
    let mut edited = t.clone();
    edited["priority"] = json!(201);
    os.ok(
        Method::Put,
        &format!("/_index_template/{tname}"),
        Some(edited),
    )
    .await?;
    eventually(
        "the hand edit reverted",
        Duration::from_secs(30),
        || async {
            let t2 = os
                .ok(Method::Get, &format!("/_index_template/{tname}"), None)
                .await?;
            Ok(
                (t2["index_templates"][0]["index_template"]["priority"] == t["priority"])
                    .then_some(()),
            )
        },
    )
    .await?;

    // --- A change of the resource changes the hash and rewrites the template.
    kubectl(&[
        "patch",
        "se",
        name,
        "-n",
        &ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"sinks":{"opensearch":{"template":{"shards":2}}}}}"#,
    ])?;
    let t3 = eventually("the template rewritten", WAIT, || async {
        let t = os
            .ok(Method::Get, &format!("/_index_template/{tname}"), None)
            .await?;
        let t = t["index_templates"][0]["index_template"].clone();
        Ok((t["_meta"]["hash"] != hash1).then_some(t))
    })
    .await?;
    ensure!(
        t3["priority"] == 200 && t3["template"]["settings"]["index"]["number_of_shards"] == "2",
        "{t3}"
    );

    // --- Rollover: fill the write index past 2 KiB; the operator rolls it; writes follow.
    let docs: Vec<Value> = (0..40).map(sample_document).collect();
    let (status, body) = os.bulk(&format!("{prefix}-write"), &docs).await?;
    ensure!(status == 200 && body["errors"] == json!(false), "{body}");
    os.ok(Method::Post, &format!("/{first}/_flush"), None)
        .await?;
    let second = eventually("rollover to -000002", WAIT, || async {
        Ok(write_index(&os, &format!("{prefix}-write"))
            .await?
            .filter(|w| *w != first))
    })
    .await?;
    ensure!(second == format!("{prefix}-000002"), "{second}");
    let (status, body) = os
        .bulk(&format!("{prefix}-write"), &[sample_document(999)])
        .await?;
    ensure!(
        status == 200 && body["items"][0]["index"]["_index"] == json!(second),
        "{body}"
    );
    let s2 = os
        .ok(Method::Get, &format!("/{second}/_settings"), None)
        .await?;
    ensure!(
        s2[&second]["settings"]["index"]["number_of_shards"] == "2",
        "the new index follows the template"
    );
    let count = os
        .ok(Method::Get, &format!("/{prefix}-read/_count"), None)
        .await?;
    ensure!(
        count["count"] == 41,
        "read alias spans both indices: {count}"
    );
    eventually("a RolledOver event", WAIT, || async {
        let out = kubectl(&["get", "events.events.k8s.io", "-n", &ns, "-o", "json"])?;
        Ok(out.contains("RolledOver").then_some(()))
    })
    .await?;

    // --- A template this resource does not own is left alone until adopt: true.
    let foreign = unique("foreign");
    os.ok(
        Method::Put,
        &format!("/_index_template/tributary-{foreign}"),
        Some(json!({"index_patterns": [format!("{foreign}-*")], "priority": 200, "template": {}})),
    )
    .await?;
    apply(
        &ns,
        &resource("foreign", &url, &foreign, "{ replicas: 0 }", "Retain"),
    )?;
    condition(
        &api,
        "foreign",
        ConditionType::IndexTemplateReady,
        "False",
        "TemplateNotOwned",
    )
    .await?;
    condition(
        &api,
        "foreign",
        ConditionType::Degraded,
        "True",
        "TemplateNotOwned",
    )
    .await?;
    let t = os
        .ok(
            Method::Get,
            &format!("/_index_template/tributary-{foreign}"),
            None,
        )
        .await?;
    ensure!(
        t["index_templates"][0]["index_template"]
            .get("_meta")
            .is_none(),
        "overwritten without adopt"
    );
    kubectl(&[
        "patch",
        "se",
        "foreign",
        "-n",
        &ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"sinks":{"opensearch":{"template":{"adopt":true}}}}}"#,
    ])?;
    condition(
        &api,
        "foreign",
        ConditionType::IndexTemplateReady,
        "True",
        "TemplateApplied",
    )
    .await?;
    condition(
        &api,
        "foreign",
        ConditionType::Degraded,
        "False",
        "AsExpected",
    )
    .await?;

    // --- OpenSearch unreachable: the job's objects are still applied.
    apply(
        &ns,
        &resource(
            "unreachable",
            "http://127.0.0.1:1",
            &unique("down"),
            "{ replicas: 0 }",
            "Retain",
        ),
    )?;
    condition(
        &api,
        "unreachable",
        ConditionType::IndexTemplateReady,
        "False",
        "OpenSearchUnreachable",
    )
    .await?;
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    ensure!(
        sts.get_opt("unreachable").await?.is_some(),
        "OpenSearch trouble blocked the StatefulSet"
    );
    let se = api.get("unreachable").await?;
    ensure!(
        se.metadata.finalizers.unwrap_or_default().is_empty(),
        "Retain needs no finalizer"
    );

    // --- Deletion: Retain keeps the indices; Delete removes indices and template.
    kubectl(&[
        "delete",
        "se",
        "foreign",
        "-n",
        &ns,
        "--wait=true",
        "--timeout=60s",
    ])?;
    let (status, _) = os
        .call(Method::Get, &format!("/{foreign}-000001"), None)
        .await?;
    ensure!(status == 200, "Retain must keep the index");
    kubectl(&[
        "delete",
        "se",
        name,
        "-n",
        &ns,
        "--wait=true",
        "--timeout=60s",
    ])?;
    for path in [
        format!("/{first}"),
        format!("/{second}"),
        format!("/_index_template/{tname}"),
    ] {
        let (status, _) = os.call(Method::Get, &path, None).await?;
        ensure!(status == 404, "{path} survived deletionPolicy Delete");
    }

    // Clean up what Retain kept.
    os.call(Method::Delete, &format!("/{foreign}-000001"), None)
        .await?;
    os.call(
        Method::Delete,
        &format!("/_index_template/tributary-{foreign}"),
        None,
    )
    .await?;
    kubectl(&["delete", "namespace", &ns, "--wait=false"])?;
    Ok(())
}
