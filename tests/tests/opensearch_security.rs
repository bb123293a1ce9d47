//! The operator's roles against the stack's second OpenSearch node, which runs the security
//! plugin (TLS, internal users): the operator authenticates with admin credentials read from a
//! Secret and trusts the CA from a Secret; the job's writer role can index through the write alias
//! but not search; the reader role cannot see, match, sort or aggregate on hidden fields (nor
//! their `.keyword` sub-fields) through `_search`, `_get` or `_mget`; wrong admin credentials
//! give Degraded with the reason; `deletionPolicy: Delete` removes the roles. The job runtime's
//! OpenSearch sink trusts the CA from the file the pod mounts (`caCertFile`), and only with it.

use std::time::Duration;

use anyhow::{Result, ensure};
use kube::Api;
use opensearch::http::Method;
use serde_json::{Value, json};
use tributary_crds::StreamingEnrichment;
use tributary_crds::conditions::{ConditionType, get_condition};
use tributary_runtime::output::{Document, OutputRecord};
use tributary_runtime::s3uri::S3Uri;
use tributary_runtime::sink::dead_letter::DeadLetterWriter;
use tributary_runtime::sink::opensearch::{self as sink, OpenSearchConfig, OpenSearchSink};
use tributary_runtime::sink::{Range, Sink};
use tributary_tests::cluster::{admin_client, install_crds, kubectl, kubectl_raw};
use tributary_tests::opensearch_side::{Os, sample_document, spawn_operator};
use tributary_tests::{eventually, stack_var, unique};

const WAIT: Duration = Duration::from_secs(90);
const HIDDEN: [&str; 5] = [
    "bill_customer.email_address",
    "bill_customer.birth_date",
    "ship_customer.email_address",
    "ship_customer.birth_date",
    "bill_customer.last_name",
];

fn resource(name: &str, url: &str, prefix: &str, admin_secret: &str, reader: &str) -> String {
    let hidden = HIDDEN.map(|h| format!("\"{h}\"")).join(", ");
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
      endpoint: "{url}"
      caCert: {{ name: os-ca, key: ca.crt }}
      auth:
        type: Basic
        username: {{ name: os-job, key: username }}
        password: {{ name: os-job, key: password }}
      indexPrefix: {prefix}
      writeAlias: {prefix}-write
      readAlias: {prefix}-read
      template:
        replicas: 0
        adminCredentials:
          username: {{ name: {admin_secret}, key: username }}
          password: {{ name: {admin_secret}, key: password }}
        reader:
          hiddenFields: [{hidden}]
          users: [{reader}]
      deletionPolicy: Delete
  deadLetter: {{ uri: "s3://ara-dead-letter/{name}" }}
"#
    )
}

fn secret(ns: &str, name: &str, pairs: &[(&str, &str)]) -> Result<()> {
    let mut args = vec!["create", "secret", "generic", name, "-n", ns];
    let lits: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("--from-literal={k}={v}"))
        .collect();
    args.extend(lits.iter().map(String::as_str));
    kubectl(&args)?;
    Ok(())
}

async fn condition(
    api: &Api<StreamingEnrichment>,
    name: &str,
    t: ConditionType,
    status: &str,
    reason: &str,
) -> Result<String> {
    eventually(
        &format!("{name}: {t:?} {status} {reason}"),
        WAIT,
        || async {
            let se = api.get(name).await?;
            Ok(se
                .status
                .and_then(|s| get_condition(&s.conditions, t).cloned())
                .filter(|c| c.status == status && c.reason == reason)
                .map(|c| c.message))
        },
    )
    .await
}

/// The value at a dotted path of a `_source`.
fn at<'a>(source: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(source, |v, k| v.get(k))
}

fn assert_hidden(source: &Value, what: &str) -> Result<()> {
    for h in HIDDEN {
        ensure!(at(source, h).is_none(), "{what}: {h} visible in {source}");
    }
    ensure!(
        at(source, "bill_customer.first_name").is_some(),
        "{what}: visible fields kept"
    );
    ensure!(
        at(source, "ship_customer.last_name").is_some(),
        "{what}: only the listed fields go"
    );
    Ok(())
}

/// Held by each test for its whole run. Every test starts an operator of its own, and an
/// operator (leader election off) reconciles the resources of every namespace: two at once would
/// both act on each test's resource, and one could re-create the first index of a resource the
/// other has just cleaned up (`deletionPolicy: Delete`). The security plugin also writes its
/// users with optimistic concurrency, so two tests creating users at once get 409s.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Setup {
    url: String,
    ca: Vec<u8>,
    admin: Os,
    ns: String,
    api: Api<StreamingEnrichment>,
    prefix: String,
    name: &'static str,
    writer: String,
    reader: String,
    pw: String,
    _op: tributary_tests::opensearch_side::OperatorProcess,
}

/// Users, Secrets, the operator and one secured resource whose template is in place.
async fn setup() -> Result<Setup> {
    let url = stack_var("OPENSEARCH_SECURE_URL")?;
    let admin_user = stack_var("OPENSEARCH_SECURE_ADMIN_USER")?;
    let admin_pw = stack_var("OPENSEARCH_SECURE_ADMIN_PASSWORD")?;
    let ca_path = stack_var("OPENSEARCH_SECURE_CA")?;
    let ca = std::fs::read(&ca_path)?;
    let admin = Os::new(&url, Some((&admin_user, &admin_pw)), Some(&ca))?;

    // Users the cluster's administrator would create; the operator maps roles to them.
    let tag = unique("fls");
    let (writer, reader) = (format!("{tag}-writer"), format!("{tag}-reader"));
    let pw = format!("Xq7!{tag}-Lm9#vT2");
    for u in [&writer, &reader] {
        admin
            .ok(
                Method::Put,
                &format!("/_plugins/_security/api/internalusers/{u}"),
                Some(json!({"password": pw})),
            )
            .await?;
    }

    install_crds()?;
    let client = admin_client().await?;
    let ns = unique("ossec");
    kubectl(&["create", "namespace", &ns])?;
    secret(
        &ns,
        "os-admin",
        &[("username", &admin_user), ("password", &admin_pw)],
    )?;
    secret(
        &ns,
        "os-bad-admin",
        &[("username", &admin_user), ("password", "wrong-password")],
    )?;
    secret(&ns, "os-job", &[("username", &writer), ("password", &pw)])?;
    kubectl(&[
        "create",
        "secret",
        "generic",
        "os-ca",
        "-n",
        &ns,
        &format!("--from-file=ca.crt={ca_path}"),
    ])?;
    let _op = spawn_operator(&ns, 2)?;
    let api: Api<StreamingEnrichment> = Api::namespaced(client.clone(), &ns);

    let prefix = tag.clone();
    let name: &'static str = "secured";
    let (ok, out) = kubectl_raw(
        &["apply", "--server-side", "-n", &ns, "-f", "-"],
        Some(&resource(name, &url, &prefix, "os-admin", &reader)),
    )?;
    ensure!(ok, "{out}");
    let msg = condition(
        &api,
        name,
        ConditionType::IndexTemplateReady,
        "True",
        "TemplateApplied",
    )
    .await?;
    ensure!(msg.contains("roles in place"), "{msg}");
    let writer_role = format!("tributary-{ns}-{name}-writer");
    let m = admin
        .ok(
            Method::Get,
            &format!("/_plugins/_security/api/rolesmapping/{writer_role}"),
            None,
        )
        .await?;
    ensure!(
        m[&writer_role]["users"] == json!([writer]),
        "writer role mapped to the job's user: {m}"
    );
    Ok(Setup {
        url,
        ca,
        admin,
        ns,
        api,
        prefix,
        name,
        writer,
        reader,
        pw,
        _op,
    })
}

async fn teardown(s: &Setup) -> Result<()> {
    for u in [&s.writer, &s.reader] {
        s.admin
            .call(
                Method::Delete,
                &format!("/_plugins/_security/api/internalusers/{u}"),
                None,
            )
            .await?;
    }
    kubectl(&["delete", "namespace", &s.ns, "--wait=false"])?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_role_admin_credentials_and_deletion() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup().await?;
    let Setup {
        url,
        ca,
        admin,
        ns,
        api,
        prefix,
        name,
        writer,
        reader,
        pw,
        ..
    } = &s;
    let (ns, name, prefix) = (ns.as_str(), *name, prefix.as_str());
    let writer_role = format!("tributary-{ns}-{name}-writer");
    // --- The writer indexes through the write alias, and cannot read.
    let w = Os::new(url, Some((writer, pw)), Some(ca))?;
    let docs: Vec<Value> = (0..5).map(sample_document).collect();
    let (status, body) = w.bulk(&format!("{prefix}-write"), &docs).await?;
    ensure!(
        status == 200 && body["errors"] == json!(false),
        "writer bulk: {status} {body}"
    );
    for path in [
        format!("/{prefix}-read/_search"),
        format!("/{prefix}-write/_search"),
        format!("/{prefix}-000001/_doc/1000:7"),
    ] {
        let (status, body) = w.call(Method::Get, &path, None).await?;
        ensure!(
            status == 403,
            "the writer may not read {path}: {status} {body}"
        );
    }

    // The reader role as the plugin stored it: read only, the hidden fields and sub-fields.
    let reader_role = format!("tributary-{ns}-{name}-reader");
    let role = admin
        .ok(
            Method::Get,
            &format!("/_plugins/_security/api/roles/{reader_role}"),
            None,
        )
        .await?;
    let fls = role[&reader_role]["index_permissions"][0]["fls"].to_string();
    for h in HIDDEN {
        ensure!(
            fls.contains(&format!("~{h}\"")) && fls.contains(&format!("~{h}.*")),
            "{h} not hidden: {role}"
        );
    }
    let m = admin
        .ok(
            Method::Get,
            &format!("/_plugins/_security/api/rolesmapping/{reader_role}"),
            None,
        )
        .await?;
    ensure!(m[&reader_role]["users"] == json!([reader]), "{m}");

    // --- The operator's admin credentials come from the Secret: a wrong one degrades.
    let (ok, out) = kubectl_raw(
        &["apply", "--server-side", "-n", ns, "-f", "-"],
        Some(&resource(
            "bad-admin",
            url,
            &unique("bad"),
            "os-bad-admin",
            reader,
        )),
    )?;
    ensure!(ok, "{out}");
    let msg = condition(
        api,
        "bad-admin",
        ConditionType::Degraded,
        "True",
        "OpenSearchUnauthorized",
    )
    .await?;
    ensure!(msg.contains("401"), "{msg}");
    condition(
        api,
        "bad-admin",
        ConditionType::IndexTemplateReady,
        "False",
        "OpenSearchUnauthorized",
    )
    .await?;
    // Its finalizer cannot clean up with a refused credential; fix the Secret so it can.
    kubectl(&["delete", "se", "bad-admin", "-n", ns, "--wait=false"])?;
    kubectl(&[
        "patch",
        "se",
        "bad-admin",
        "-n",
        ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"sinks":{"opensearch":{"template":{"adminCredentials":{"username":{"name":"os-admin","key":"username"},"password":{"name":"os-admin","key":"password"}}}}}}}"#,
    ])?;

    // --- deletionPolicy Delete removes the indices and the roles.
    kubectl(&[
        "delete",
        "se",
        name,
        "-n",
        ns,
        "--wait=true",
        "--timeout=60s",
    ])?;
    for path in [
        format!("/_plugins/_security/api/roles/{writer_role}"),
        format!("/_plugins/_security/api/roles/tributary-{ns}-{name}-reader"),
        format!("/{prefix}-000001"),
    ] {
        let (status, _) = admin.call(Method::Get, &path, None).await?;
        ensure!(status == 404, "{path} survived deletionPolicy Delete");
    }
    eventually("bad-admin gone", WAIT, || async {
        Ok(api.get_opt("bad-admin").await?.is_none().then_some(()))
    })
    .await?;
    for u in [&writer, &reader] {
        admin
            .call(
                Method::Delete,
                &format!("/_plugins/_security/api/internalusers/{u}"),
                None,
            )
            .await?;
    }
    kubectl(&["delete", "namespace", ns, "--wait=false"])?;
    Ok(())
}

/// Field-level security through the reader role. The plugin's FLS calls core internals, so the
/// secure node must run the core its security plugin was built for (2.19.4.0 on 2.19.4; on a
/// 2.19.6 core the first FLS search killed the node with `NoSuchMethodError`): checked first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_role_hides_fields_everywhere() -> Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let s = setup().await?;
    let node = s.admin.ok(Method::Get, "/", None).await?;
    let core = node["version"]["number"].as_str().unwrap_or_default();
    let plugins = s
        .admin
        .ok(Method::Get, "/_cat/plugins?format=json", None)
        .await?;
    let security = plugins
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["component"] == "opensearch-security")
        .and_then(|p| p["version"].as_str())
        .unwrap_or_default();
    ensure!(
        !core.is_empty() && security.rsplit_once('.').map(|(v, _)| v) == Some(core),
        "opensearch-security {security:?} on OpenSearch {core:?}: {node} {plugins}"
    );
    let Setup {
        url,
        ca,
        prefix,
        reader,
        pw,
        writer,
        admin,
        ..
    } = &s;
    let prefix = prefix.as_str();
    let w = Os::new(url, Some((writer, pw)), Some(ca))?;
    let docs: Vec<Value> = (0..5).map(sample_document).collect();
    let (status, body) = w.bulk(&format!("{prefix}-write"), &docs).await?;
    ensure!(
        status == 200 && body["errors"] == json!(false),
        "writer bulk: {status} {body}"
    );

    // --- The reader: hidden fields absent from _search, _get and _mget.
    let r = Os::new(url, Some((reader, pw)), Some(ca))?;
    let read = format!("{prefix}-read");
    let res = r
        .ok(
            Method::Post,
            &format!("/{read}/_search"),
            Some(json!({"size": 10})),
        )
        .await?;
    let hits = res["hits"]["hits"].as_array().cloned().unwrap_or_default();
    ensure!(hits.len() == 5, "{res}");
    for h in &hits {
        assert_hidden(&h["_source"], "_search")?;
    }
    let got = r
        .ok(Method::Get, &format!("/{prefix}-000001/_doc/1000:7"), None)
        .await?;
    ensure!(got["found"] == json!(true), "{got}");
    assert_hidden(&got["_source"], "_get")?;
    let mget = r
        .ok(
            Method::Post,
            &format!("/{read}/_mget"),
            Some(json!({"ids": ["1000:7", "1001:7"]})),
        )
        .await?;
    for d in mget["docs"].as_array().cloned().unwrap_or_default() {
        ensure!(d["found"] == json!(true), "{d}");
        assert_hidden(&d["_source"], "_mget")?;
    }

    // --- ... and impossible to match, sort or aggregate on, .keyword sub-fields included.
    let count = |q: Value| {
        let r = &r;
        let read = read.clone();
        async move {
            let res = r
                .ok(
                    Method::Post,
                    &format!("/{read}/_search"),
                    Some(json!({"query": q})),
                )
                .await?;
            anyhow::Ok(res["hits"]["total"]["value"].as_u64().unwrap_or(u64::MAX))
        }
    };
    ensure!(
        count(json!({"match": {"bill_customer.first_name": "Alice"}})).await? == 5,
        "control query"
    );
    for q in [
        json!({"term": {"bill_customer.email_address": "alice0@example.com"}}),
        json!({"exists": {"field": "bill_customer.email_address"}}),
        json!({"match": {"bill_customer.last_name": "Secretname"}}),
        json!({"term": {"bill_customer.last_name.keyword": "Secretname"}}),
        json!({"exists": {"field": "ship_customer.birth_date"}}),
        json!({"range": {"bill_customer.birth_date": {"lte": "2000-01-01"}}}),
        json!({"query_string": {"query": "Secretname"}}),
        json!({"query_string": {"query": "alice0@example.com"}}),
    ] {
        ensure!(count(q.clone()).await? == 0, "a hidden field matched: {q}");
    }
    for sort in [
        "bill_customer.last_name.keyword",
        "bill_customer.email_address",
        "ship_customer.birth_date",
    ] {
        let (status, res) = r
            .call(
                Method::Post,
                &format!("/{read}/_search"),
                Some(json!({"sort": [{sort: "asc"}], "size": 10})),
            )
            .await?;
        let text = res.to_string();
        ensure!(
            !text.contains("Secretname")
                && !text.contains("@example.com")
                && !text.contains("1975-06-07"),
            "sort on {sort} leaked ({status}): {text}"
        );
        if status == 200 {
            for h in res["hits"]["hits"].as_array().cloned().unwrap_or_default() {
                let v = &h["sort"][0];
                ensure!(
                    v.is_null()
                        || v.as_i64().is_some_and(|n| n == i64::MAX || n == i64::MIN)
                        || v.as_str().is_none(),
                    "sort value {v} for {sort}"
                );
            }
        }
    }
    for field in [
        "bill_customer.email_address",
        "bill_customer.last_name.keyword",
        "ship_customer.email_address",
    ] {
        let (status, res) = r
            .call(
                Method::Post,
                &format!("/{read}/_search"),
                Some(json!({"size": 0, "aggs": {"a": {"terms": {"field": field}}}})),
            )
            .await?;
        let buckets = res["aggregations"]["a"]["buckets"]
            .as_array()
            .map_or(0, Vec::len);
        ensure!(
            buckets == 0 && !res.to_string().contains("@example.com"),
            "aggregation on {field} ({status}): {res}"
        );
    }
    let control = r
        .ok(Method::Post, &format!("/{read}/_search"), Some(json!({"size": 0, "aggs": {"a": {"terms": {"field": "bill_customer.first_name.keyword"}}}})))
        .await?;
    ensure!(
        control["aggregations"]["a"]["buckets"]
            .as_array()
            .map_or(0, Vec::len)
            == 1,
        "{control}"
    );
    // The reader cannot write.
    let (status, _) = r
        .bulk(&format!("{prefix}-write"), &[sample_document(50)])
        .await?;
    let (_, after) = admin
        .call(Method::Get, &format!("/{read}/_count"), None)
        .await?;
    ensure!(
        status == 403 || after["count"] == 5,
        "the reader wrote: {status} {after}"
    );

    teardown(&s).await
}

/// The runtime's sink, configured as a job pod with `caCert` runs it (the CA as a file), indexes
/// into the secure node through `_bulk`; the same client without the CA is refused by TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_sink_trusts_the_ca_file() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = stack_var("OPENSEARCH_SECURE_URL")?;
    let user = stack_var("OPENSEARCH_SECURE_ADMIN_USER")?;
    let pw = stack_var("OPENSEARCH_SECURE_ADMIN_PASSWORD")?;
    let ca_path = stack_var("OPENSEARCH_SECURE_CA")?;
    let index = unique("ca-sink");
    let cfg = OpenSearchConfig {
        endpoint: url.clone(),
        username: Some(user.clone()),
        password: Some(tributary_crds::secret::Secret::new(pw.clone())),
        write_alias: index.clone(),
        bulk_max_bytes: 1 << 20,
        flush_interval: Duration::from_secs(1),
        ca_cert_file: Some(ca_path.clone().into()),
    };

    let untrusted = sink::client(&OpenSearchConfig {
        ca_cert_file: None,
        ..cfg.clone()
    })?;
    let refused = untrusted.ping().send().await;
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| format!("{e:?}").contains("UnknownIssuer")),
        "the node's certificate must not be trusted without the CA: {refused:?}"
    );

    // Nothing is rejected, so the dead-letter writer (no S3 behind it) is never called.
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .build(),
    );
    let dead_letter = DeadLetterWriter::new(s3, S3Uri::parse("s3://unused/dead-letter")?, "ca");
    let mut os_sink = OpenSearchSink::new(&cfg, dead_letter)?;
    let records = (0..5u64)
        .map(|i| {
            Ok(OutputRecord::Document(Document {
                id: format!("{}:7", 1000 + i),
                day: "2020-01-01".into(),
                json: serde_json::to_vec(&sample_document(i))?,
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    let written = os_sink.write(Range { first: 1, last: 5 }, records).await;

    let admin = Os::new(&url, Some((&user, &pw)), Some(&std::fs::read(&ca_path)?))?;
    let counted = async {
        written?;
        admin
            .ok(Method::Post, &format!("/{index}/_refresh"), None)
            .await?;
        let count = admin
            .ok(Method::Get, &format!("/{index}/_count"), None)
            .await?;
        ensure!(count["count"] == json!(5), "{count}");
        Ok(())
    }
    .await;
    admin
        .call(Method::Delete, &format!("/{index}"), None)
        .await?;
    counted
}
