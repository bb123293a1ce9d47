//! The end of `cargo xtask demo`: what the job made, in short blocks. Counts (expected, indexed,
//! Parquet rows, dead letters), one enriched document, an aggregation run against OpenSearch,
//! where the Parquet files are and how to read one, dead letters by reason, and the URLs worth
//! opening. Every block is best-effort: a failing query prints its error in its block, since
//! the pipeline itself has already been checked by then.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::parquet_rows;

/// The read alias the operator creates (`sinks.opensearch.readAlias`' default).
pub const READ_ALIAS: &str = "ara-sales";
/// The `job` labels of the demo's `file_sd` targets: those the chart's PodMonitors give, so the
/// chart's alerts and dashboards (`docs/metrics.md`) read the demo's series as they are.
pub const PROMETHEUS_JOB: &str = "tributary-job";
pub const PROMETHEUS_OPERATOR_JOB: &str = "tributary-operator";
/// How many Parquet files are listed.
const LISTED_FILES: usize = 3;

/// What the demo knows when it reports.
pub struct Inputs<'a> {
    pub home: &'a Path,
    pub opensearch: &'a str,
    pub prometheus: Option<&'a str>,
    pub expected: usize,
    pub oracle: &'a Path,
    pub metrics: &'a str,
    pub metrics_url: &'a str,
    /// Seconds from the apply until every document was searchable.
    pub searchable_secs: f64,
    /// `kubectl get se` as printed.
    pub resource: String,
    pub env_file: &'a Path,
    pub namespace: &'a str,
}

// ---------------------------------------------------------------------------------------------
// Pure parts

/// Every sample of `name` in a Prometheus text exposition, with its labels.
pub fn samples(metrics: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
                let (labels, value) = r.split_once('}')?;
                (labels, value)
            } else if rest.starts_with(' ') {
                ("", rest)
            } else {
                return None; // another metric whose name starts with `name`
            };
            let value: f64 = value.split_whitespace().next()?.parse().ok()?;
            let labels = labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                })
                .collect();
            Some((labels, value))
        })
        .collect()
}

/// The value of one sample (`0` when absent): `series` is `name` or `name{label="value"}`.
pub fn sample(metrics: &str, series: &str) -> f64 {
    let (name, want) = match series.split_once('{') {
        Some((n, l)) => (n, format!("{{{l}")),
        None => (series, String::new()),
    };
    let want = samples(&format!("{name}{want} 0"), name)
        .into_iter()
        .next()
        .map(|(l, _)| l)
        .unwrap_or_default();
    samples(metrics, name)
        .into_iter()
        .find(|(labels, _)| *labels == want)
        .map_or(0.0, |(_, v)| v)
}

/// Dead letters by reason from the job's metrics, largest first, zeros left out.
pub fn dead_letters_by_reason(metrics: &str) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = samples(metrics, "tributary_dead_letters_total")
        .into_iter()
        .filter_map(|(l, n)| Some((l.get("reason")?.clone(), n as u64)))
        .filter(|(_, n)| *n > 0)
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// The aggregation the demo runs: revenue (sum of `net_paid`, a scaled_float) by the billing
/// address's state (a keyword), the top five by revenue, with the total and the number of states.
pub fn revenue_query() -> Value {
    json!({
        "size": 0,
        "track_total_hits": true,
        "aggs": {
            "by_state": {
                "terms": {
                    "field": "bill_customer.address.state",
                    "size": 5,
                    "order": { "revenue": "desc" }
                },
                "aggs": { "revenue": { "sum": { "field": "net_paid" } } }
            },
            "no_state": {
                "missing": { "field": "bill_customer.address.state" },
                "aggs": { "revenue": { "sum": { "field": "net_paid" } } }
            },
            "revenue": { "sum": { "field": "net_paid" } },
            "states": { "cardinality": { "field": "bill_customer.address.state" } }
        }
    })
}

/// One row of the revenue table.
#[derive(Debug, Clone, PartialEq)]
pub struct RevenueRow {
    pub state: String,
    pub sales: u64,
    pub revenue: f64,
}

/// The rows of a [`revenue_query`] answer: the top states, then the other states and the sales
/// without a billing state (when any), then all.
pub fn revenue_rows(answer: &Value) -> Result<Vec<RevenueRow>> {
    let aggs = &answer["aggregations"];
    let buckets = aggs["by_state"]["buckets"]
        .as_array()
        .context("the answer has no by_state buckets")?;
    let mut rows: Vec<RevenueRow> = buckets
        .iter()
        .map(|b| RevenueRow {
            state: b["key"].as_str().unwrap_or("?").to_string(),
            sales: b["doc_count"].as_u64().unwrap_or(0),
            revenue: b["revenue"]["value"].as_f64().unwrap_or(0.0),
        })
        .collect();
    let total_sales = answer["hits"]["total"]["value"]
        .as_u64()
        .or_else(|| answer["hits"]["total"].as_u64())
        .unwrap_or(0);
    let total_revenue = aggs["revenue"]["value"].as_f64().unwrap_or(0.0);
    let states = aggs["states"]["value"].as_u64().unwrap_or(0);
    let missing = RevenueRow {
        state: "(no state)".into(),
        sales: aggs["no_state"]["doc_count"].as_u64().unwrap_or(0),
        revenue: aggs["no_state"]["revenue"]["value"].as_f64().unwrap_or(0.0),
    };
    let shown_sales: u64 = rows.iter().map(|r| r.sales).sum::<u64>() + missing.sales;
    let shown_revenue: f64 = rows.iter().map(|r| r.revenue).sum::<f64>() + missing.revenue;
    if total_sales > shown_sales {
        let other_states = states.saturating_sub(rows.len() as u64).max(1);
        rows.push(RevenueRow {
            state: if other_states == 1 {
                "1 other".into()
            } else {
                format!("{other_states} others")
            },
            sales: total_sales - shown_sales,
            revenue: total_revenue - shown_revenue,
        });
    }
    if missing.sales > 0 {
        rows.push(missing);
    }
    rows.push(RevenueRow {
        state: "all".into(),
        sales: total_sales,
        revenue: total_revenue,
    });
    Ok(rows)
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1234567.891` -> `1,234,567.89`.
pub fn money(v: f64) -> String {
    let cents = (v * 100.0).round() as i64;
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02}", thousands(cents / 100), cents % 100)
}

/// The revenue table, indented by two spaces.
pub fn revenue_table(rows: &[RevenueRow]) -> String {
    let w = rows
        .iter()
        .map(|r| r.state.len())
        .chain(["state".len()])
        .max()
        .unwrap_or(5);
    let sales_w = rows
        .iter()
        .map(|r| thousands(r.sales).len())
        .chain(["sales".len()])
        .max()
        .unwrap_or(5);
    let rev_w = rows
        .iter()
        .map(|r| money(r.revenue).len())
        .chain(["revenue (net_paid)".len()])
        .max()
        .unwrap_or(7);
    let mut out = format!(
        "  {:<w$}  {:>sales_w$}  {:>rev_w$}\n",
        "state", "sales", "revenue (net_paid)"
    );
    for r in rows {
        out.push_str(&format!(
            "  {:<w$}  {:>sales_w$}  {:>rev_w$}\n",
            r.state,
            thousands(r.sales),
            money(r.revenue)
        ));
    }
    out
}

/// A field of a document by dotted path, as text (`-` when absent or null).
fn field(doc: &Value, path: &str) -> String {
    let v = path.split('.').fold(doc, |v, k| &v[k]);
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "none".into(),
        Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn person(doc: &Value, who: &str) -> String {
    if doc[who].is_null() {
        return "-".into();
    }
    let name: Vec<String> = ["salutation", "first_name", "last_name"]
        .iter()
        .map(|f| field(doc, &format!("{who}.{f}")))
        .filter(|s| s != "-")
        .collect();
    format!(
        "{}, {} {} {} (customer {}, address {})",
        name.join(" "),
        field(doc, &format!("{who}.address.city")),
        field(doc, &format!("{who}.address.state")),
        field(doc, &format!("{who}.address.zip")),
        field(doc, &format!("{who}.customer_id")),
        field(doc, &format!("{who}.address.address_id")),
    )
}

/// One enriched document in a few lines: the sale and what the join added to it.
pub fn document_view(doc: &Value) -> String {
    let f = |p: &str| field(doc, p);
    let promo = if doc["promo"].is_null() {
        "none".to_string()
    } else {
        format!(
            "{} {} (cost {})",
            f("promo.promo_id"),
            doc["promo"]["promo_name"],
            f("promo.cost")
        )
    };
    let flags = if doc["join_flags"].is_null() {
        "none".to_string()
    } else {
        f("join_flags")
    };
    format!(
        "  sale        order {}, item {}, quantity {}, net_paid {}, at {}\n\
         \x20 item        {} ({}, {})\n\
         \x20 bill to     {}\n\
         \x20 ship to     {}\n\
         \x20 promo       {promo}\n\
         \x20 join flags  {flags}\n",
        f("order_id"),
        f("item_id"),
        f("quantity"),
        f("net_paid"),
        f("sale_datetime"),
        doc["item"]["product_name"],
        f("item.category"),
        f("item.brand"),
        person(doc, "bill_customer"),
        person(doc, "ship_customer"),
    )
}

/// Percent-encode a query-string value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The graphs of the demo's Prometheus link.
pub fn demo_graphs() -> Vec<String> {
    let job = format!("job=\"{PROMETHEUS_JOB}\"");
    vec![
        format!("sum(rate(tributary_documents_out_total{{{job}}}[30s]))"),
        format!("sum by (sink) (tributary_sink_delivered_total{{{job}}})"),
        format!("max by (stream) (tributary_source_behind_latest_seconds{{{job}}})"),
        format!(
            "histogram_quantile(0.99, sum by (le) (rate(tributary_sink_freshness_seconds_bucket{{{job}, sink=\"opensearch\"}}[1m])))"
        ),
        format!("tributary_pipeline_ready{{job=\"{PROMETHEUS_OPERATOR_JOB}\"}}"),
    ]
}

/// A Prometheus graph page with one panel per expression, over the last 15 minutes.
pub fn prometheus_graph_url<S: AsRef<str>>(base: &str, exprs: &[S]) -> String {
    let panels: Vec<String> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "g{i}.expr={}&g{i}.tab=0&g{i}.range_input=15m",
                url_encode(e.as_ref())
            )
        })
        .collect();
    format!("{base}/graph?{}", panels.join("&"))
}

/// `1536` -> `1.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A job pod in Prometheus' `file_sd` format, with the labels the chart's PodMonitor gives it.
pub fn file_sd_job(pod_ip: &str, namespace: &str, pod: &str, pipeline: &str) -> Value {
    json!({
        "targets": [format!("{pod_ip}:9249")],
        "labels": { "job": PROMETHEUS_JOB, "namespace": namespace, "pod": pod, "pipeline": pipeline }
    })
}

/// The operator's pod in `file_sd` format. No `namespace` target label: the operator's
/// `tributary_pipeline_*` series carry the resource's (the PodMonitor honours it).
pub fn file_sd_operator(pod_ip: &str, pod: &str) -> Value {
    json!({
        "targets": [format!("{pod_ip}:8080")],
        "labels": { "job": PROMETHEUS_OPERATOR_JOB, "pod": pod }
    })
}

// ---------------------------------------------------------------------------------------------
// Looking things up

fn curl_json(url: &str, body: Option<&Value>) -> Result<Value> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "20", "-H", "Content-Type: application/json"]);
    if let Some(b) = body {
        cmd.args(["-d", &b.to_string()]);
    }
    let out = cmd.arg(url).output().context("running curl")?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{url} answered: {}", String::from_utf8_lossy(&out.stdout)))?;
    if let Some(e) = v.get("error") {
        bail!("{url}: {e}");
    }
    Ok(v)
}

/// Files under `dir` (recursively) whose name ends with `suffix`, sorted by path, with sizes.
fn files_under(dir: &Path, suffix: &str) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            // versitygw keeps multipart uploads under dot-folders of the bucket.
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(suffix) {
                let size = e.metadata().map_or(0, |m| m.len());
                out.push((p, size));
            }
        }
    }
    out.sort();
    out
}

fn expected_dead_letters(oracle: &Path) -> BTreeMap<String, u64> {
    let summary = oracle.with_extension("summary.json");
    std::fs::read(&summary)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| {
            v["dead_letters"].as_object().map(|m| {
                m.iter()
                    .filter_map(|(k, n)| Some((k.clone(), n.as_u64()?)))
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn header(title: &str) {
    println!("\n{title}");
}

/// Print the report.
pub fn print(i: &Inputs) {
    let os = i.opensearch;
    let bucket = i.home.join("stack/data/s3/buckets/ara");
    let curated = bucket.join("curated");
    let parquet = files_under(&curated, ".parquet");
    let mut parquet_rows: Option<i64> = Some(0);
    let mut rows_of: BTreeMap<PathBuf, i64> = BTreeMap::new();
    for (p, _) in &parquet {
        match parquet_rows::rows_in_file(p) {
            Ok(n) => {
                rows_of.insert(p.clone(), n);
                parquet_rows = parquet_rows.map(|t| t + n);
            }
            Err(_) => parquet_rows = None,
        }
    }
    let indexed = curl_json(&format!("{os}/{READ_ALIAS}/_count"), None)
        .ok()
        .and_then(|v| v["count"].as_u64());
    let dead = dead_letters_by_reason(i.metrics);
    let dead_total: u64 = dead.iter().map(|(_, n)| n).sum();
    let expected_dead = expected_dead_letters(i.oracle);
    let expected_dead_total: u64 = expected_dead.values().sum();

    header("Counts");
    let opt = |v: Option<u64>| v.map_or_else(|| "?".into(), thousands);
    println!(
        "  expected documents (the generator's oracle)  {:>8}",
        thousands(i.expected as u64)
    );
    println!(
        "  searchable in OpenSearch ({READ_ALIAS})         {:>8}",
        opt(indexed)
    );
    println!(
        "  rows in the Parquet files (their footers)    {:>8}  in {} files",
        opt(parquet_rows.and_then(|n| u64::try_from(n).ok())),
        parquet.len()
    );
    println!(
        "  dead letters (the job's /metrics)            {:>8}  (expected {})",
        thousands(dead_total),
        thousands(expected_dead_total)
    );
    println!(
        "  the job: all searchable {:.1} s after the apply ({:.0} documents/s, pod start \
         included), {:.1} CPU seconds, peak RSS {:.0} MiB",
        i.searchable_secs,
        i.expected as f64 / i.searchable_secs.max(0.001),
        sample(i.metrics, "process_cpu_seconds_total"),
        sample(i.metrics, "tributary_process_peak_rss_bytes") / 1048576.0
    );
    for l in i.resource.lines() {
        println!("  {l}");
    }

    header("One enriched document (the sale joined with its customers, addresses, item, promo)");
    let pick = json!({"size": 1, "query": {"bool": {"filter": [
        {"exists": {"field": "promo.promo_id"}},
        {"exists": {"field": "ship_customer.customer_id"}}
    ]}}});
    let hit = curl_json(&format!("{os}/{READ_ALIAS}/_search"), Some(&pick))
        .ok()
        .filter(|v| !v["hits"]["hits"][0].is_null())
        .or_else(|| curl_json(&format!("{os}/{READ_ALIAS}/_search?size=1"), None).ok())
        .map(|v| v["hits"]["hits"][0].clone());
    match hit {
        Some(h) if !h.is_null() => {
            print!("{}", document_view(&h["_source"]));
            println!(
                "  all of it:  curl -s '{os}/{}/_doc/{}?pretty'",
                h["_index"].as_str().unwrap_or(READ_ALIAS),
                url_encode(h["_id"].as_str().unwrap_or_default())
            );
        }
        _ => println!("  (no document could be read from {os}/{READ_ALIAS})"),
    }

    header("Revenue by billing state, top 5 (an OpenSearch aggregation: sum of net_paid)");
    let query = revenue_query();
    match curl_json(&format!("{os}/{READ_ALIAS}/_search"), Some(&query))
        .and_then(|a| revenue_rows(&a))
    {
        Ok(rows) => print!("{}", revenue_table(&rows)),
        Err(e) => println!("  (the aggregation failed: {e:#})"),
    }
    println!(
        "  the query:  curl -s '{os}/{READ_ALIAS}/_search?pretty' -H 'Content-Type: application/json' -d '{query}'"
    );

    header("Parquet files (the S3 sink: one file per outbox range and sale day)");
    let total: u64 = parquet.iter().map(|(_, s)| s).sum();
    println!(
        "  in S3:    s3://ara/curated/  ({} files, {})",
        parquet.len(),
        bytes(total)
    );
    println!(
        "  on disk:  {}/  (versitygw's posix backend keeps objects as plain files)",
        curated.display()
    );
    for (p, size) in parquet.iter().take(LISTED_FILES) {
        let rel = p.strip_prefix(&curated).unwrap_or(p);
        let rows = rows_of
            .get(p)
            .map_or_else(|| "?".into(), |n| thousands(*n as u64));
        println!("    {}  {}, {rows} rows", rel.display(), bytes(*size));
    }
    if parquet.len() > LISTED_FILES {
        println!("    ... and {} more", parquet.len() - LISTED_FILES);
    }
    if let Some((first, _)) = parquet.first() {
        let venv = i.home.join("pyarrow");
        let py = venv.join("bin/python");
        println!("  read one with pyarrow (from PyPI, in a virtualenv):");
        if !py.exists() {
            println!(
                "    python3 -m venv {} && {}/bin/pip install -q pyarrow",
                venv.display(),
                venv.display()
            );
        }
        println!(
            "    {} -c \"import pyarrow.parquet as pq; t = pq.read_table('{}'); print(t.num_rows, \
             'rows'); print(t.flatten().flatten().select(['order_id', 'item_id', 'net_paid', \
             'bill_customer.address.state']).slice(0, 5))\"",
            py.display(),
            first.display()
        );
    }

    header("Dead letters by reason (tributary_dead_letters_total; expected: the oracle's summary)");
    if dead.is_empty() && expected_dead.is_empty() {
        println!("  none");
    } else {
        let mut reasons: Vec<String> = dead.iter().map(|(r, _)| r.clone()).collect();
        for r in expected_dead.keys() {
            if !reasons.contains(r) {
                reasons.push(r.clone());
            }
        }
        let w = reasons.iter().map(String::len).max().unwrap_or(6).max(6);
        println!("  {:<w$}  {:>8}  {:>8}", "reason", "job", "expected");
        for r in &reasons {
            let got = dead.iter().find(|(x, _)| x == r).map_or(0, |(_, n)| *n);
            let want = expected_dead.get(r).copied().unwrap_or(0);
            println!("  {r:<w$}  {:>8}  {:>8}", thousands(got), thousands(want));
        }
    }
    let dl_dir = bucket.join("dead-letter");
    let dl_files = files_under(&dl_dir, "");
    println!(
        "  the records: s3://ara/dead-letter/ = {}/ ({} files)",
        dl_dir.display(),
        dl_files.len()
    );

    header("Look further");
    println!("  OpenSearch  curl -s '{os}/{READ_ALIAS}/_count'");
    println!(
        "              curl -s '{os}/{READ_ALIAS}/_search?q=bill_customer.last_name:Smith&size=3&pretty'"
    );
    println!("              curl -s '{os}/_cat/indices/ara-*?v'");
    if let Some(prom) = i.prometheus {
        let up = curl_json(
            &format!(
                "{prom}/api/v1/query?query={}",
                url_encode(&format!("up{{job=\"{PROMETHEUS_JOB}\"}}"))
            ),
            None,
        )
        .ok()
        .and_then(|v| {
            v["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_string)
        });
        let scraped = match up.as_deref() {
            Some("1") => "scraping the job and the operator now",
            Some(_) => "the job's target is down",
            None => "no sample of the job yet",
        };
        println!(
            "  Prometheus  {prom}  ({scraped}; job=\"{PROMETHEUS_JOB}\" and \
             job=\"{PROMETHEUS_OPERATOR_JOB}\"): documents/s, deliveries by sink, the furthest \
             shard behind, freshness p99 in OpenSearch and the resource's Ready condition:"
        );
        println!(
            "              {}",
            prometheus_graph_url(prom, &demo_graphs())
        );
        println!(
            "              the metrics: docs/metrics.md; the chart's Grafana dashboards: \
             charts/tributary/dashboards/"
        );
    }
    println!("  the job     {}", i.metrics_url);
    println!(
        "              logs: {}/{}_sales-0_*/",
        i.home.join("agent/pods").display(),
        i.namespace
    );
    println!(
        "  kubectl     set -a; . {}; set +a; $KUBECTL -n {} get se,sts,pods",
        i.env_file.display(),
        i.namespace
    );
    println!(
        "  the oracle  {} (every expected document)",
        i.oracle.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# HELP tributary_dead_letters_total Records written to dead-letter, by reason
# TYPE tributary_dead_letters_total counter
tributary_dead_letters_total{reason=\"malformed_json\"} 200
tributary_dead_letters_total{reason=\"missing_customer\"} 0
tributary_dead_letters_total{reason=\"missing_field\"} 150
tributary_dead_letters_total{reason=\"wrong_type\"} 150
tributary_documents_out_total 19600
tributary_documents_out_total_extra 5
tributary_sink_delivered_total{sink=\"opensearch\"} 19600
tributary_sink_delivered_total{sink=\"s3\"} 19500
process_cpu_seconds_total 3.25
";

    #[test]
    fn reads_samples_by_labels() {
        assert_eq!(sample(METRICS, "tributary_documents_out_total"), 19600.0);
        assert_eq!(
            sample(METRICS, "tributary_sink_delivered_total{sink=\"s3\"}"),
            19500.0
        );
        assert_eq!(
            sample(
                METRICS,
                "tributary_sink_delivered_total{sink=\"opensearch\"}"
            ),
            19600.0
        );
        assert_eq!(sample(METRICS, "process_cpu_seconds_total"), 3.25);
        assert_eq!(
            sample(METRICS, "tributary_outbox_pending_entries"),
            0.0,
            "absent is 0"
        );
        assert_eq!(samples(METRICS, "tributary_dead_letters_total").len(), 4);
    }

    #[test]
    fn dead_letters_largest_first_without_zeros() {
        assert_eq!(
            dead_letters_by_reason(METRICS),
            vec![
                ("malformed_json".to_string(), 200),
                ("missing_field".to_string(), 150),
                ("wrong_type".to_string(), 150),
            ]
        );
        assert!(dead_letters_by_reason("").is_empty());
    }

    #[test]
    fn the_aggregation_uses_the_schema_fields() {
        use tributary_crds::document::{ENRICHED_SALE, FieldKind, kind_of};
        let q = revenue_query();
        let terms = &q["aggs"]["by_state"]["terms"];
        let state = terms["field"].as_str().unwrap_or_default();
        let sum = q["aggs"]["by_state"]["aggs"]["revenue"]["sum"]["field"]
            .as_str()
            .unwrap_or_default();
        // A terms aggregation needs a keyword, a sum a number (money is scaled_float).
        assert_eq!(kind_of(ENRICHED_SALE, state), Some(FieldKind::Keyword));
        assert_eq!(kind_of(ENRICHED_SALE, sum), Some(FieldKind::Money));
        assert_eq!(terms["size"], 5);
        assert_eq!(terms["order"]["revenue"], "desc");
        assert_eq!(q["aggs"]["no_state"]["missing"]["field"], state);
        assert_eq!(q["aggs"]["revenue"]["sum"]["field"], sum);
        assert_eq!(q["size"], 0);
    }

    #[test]
    fn revenue_rows_and_table() -> Result<()> {
        let answer = json!({
            "hits": {"total": {"value": 1000, "relation": "eq"}},
            "aggregations": {
                "by_state": {
                    "sum_other_doc_count": 400,
                    "buckets": [
                        {"key": "TX", "doc_count": 350, "revenue": {"value": 12345.678}},
                        {"key": "GA", "doc_count": 250, "revenue": {"value": 9000.1}}
                    ]
                },
                "no_state": {"doc_count": 100, "revenue": {"value": 1000.0}},
                "revenue": {"value": 30000.0},
                "states": {"value": 9}
            }
        });
        let rows = revenue_rows(&answer)?;
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0].state, "TX");
        assert_eq!(rows[2].state, "7 others");
        assert_eq!(rows[2].sales, 300);
        assert!((rows[2].revenue - (30000.0 - 12345.678 - 9000.1 - 1000.0)).abs() < 1e-6);
        assert_eq!(rows[3].state, "(no state)");
        assert_eq!(rows[4].state, "all");
        let table = revenue_table(&rows);
        assert_eq!(
            table,
            "  state       sales  revenue (net_paid)\n\
             \x20 TX            350           12,345.68\n\
             \x20 GA            250            9,000.10\n\
             \x20 7 others      300            7,654.22\n\
             \x20 (no state)    100            1,000.00\n\
             \x20 all         1,000           30,000.00\n"
        );
        // Every state shown, some sales without one: no "others" row.
        let answer = json!({
            "hits": {"total": {"value": 700}},
            "aggregations": {
                "by_state": {"buckets": [
                    {"key": "TX", "doc_count": 600, "revenue": {"value": 6.0}}
                ]},
                "no_state": {"doc_count": 100, "revenue": {"value": 1.0}},
                "revenue": {"value": 7.0},
                "states": {"value": 1}
            }
        });
        let states: Vec<String> = revenue_rows(&answer)?
            .into_iter()
            .map(|r| r.state)
            .collect();
        assert_eq!(states, ["TX", "(no state)", "all"]);
        assert!(revenue_rows(&json!({})).is_err());
        Ok(())
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(money(1234567.891), "1,234,567.89");
        assert_eq!(money(0.005), "0.01");
        assert_eq!(money(-12.5), "-12.50");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn a_document_in_a_few_lines() {
        let doc = json!({
            "order_id": 1234, "item_id": 56, "quantity": 3, "net_paid": 123.45,
            "sale_datetime": "2026-01-03T10:22:01Z",
            "item": {"product_name": "ablepri", "category": "Music", "brand": "amalg #1"},
            "bill_customer": {"customer_id": "77", "salutation": "Mr.", "first_name": "John",
                "last_name": "Smith", "address": {"address_id": "12", "city": "Springfield",
                "state": "TX", "zip": "75001"}},
            "ship_customer": null,
            "promo": {"promo_id": "9", "promo_name": "ought", "cost": 1000.0},
            "join_flags": ["customer_after_sale"]
        });
        let v = document_view(&doc);
        assert!(
            v.contains("order 1234, item 56, quantity 3, net_paid 123.45"),
            "{v}"
        );
        assert!(
            v.contains(
                "bill to     Mr. John Smith, Springfield TX 75001 (customer 77, address 12)"
            ),
            "{v}"
        );
        assert!(v.contains("ship to     -\n"), "{v}");
        assert!(v.contains("promo       9 \"ought\" (cost 1000.0)"), "{v}");
        assert!(
            v.contains("item        \"ablepri\" (Music, amalg #1)"),
            "{v}"
        );
        let quoted = document_view(&json!({"promo": {"promo_name": "a, \"b\""}}));
        assert!(
            quoted.contains(r#"promo       - "a, \"b\"" (cost -)"#),
            "{quoted}"
        );
        assert!(v.contains("join flags  customer_after_sale"), "{v}");
        let bare = document_view(&json!({"order_id": 1}));
        assert!(bare.contains("promo       none"), "{bare}");
        assert!(bare.contains("join flags  none"), "{bare}");
    }

    #[test]
    fn prometheus_urls_are_encoded() {
        assert_eq!(
            url_encode("a b{c=\"d\"}[1m]"),
            "a%20b%7Bc%3D%22d%22%7D%5B1m%5D"
        );
        let u = prometheus_graph_url("http://127.0.0.1:9090", &["up", "rate(x[1m])"]);
        assert_eq!(
            u,
            "http://127.0.0.1:9090/graph?g0.expr=up&g0.tab=0&g0.range_input=15m&\
             g1.expr=rate%28x%5B1m%5D%29&g1.tab=0&g1.range_input=15m"
        );
        let t = file_sd_job("127.0.1.1", "analytics", "sales-0", "sales");
        assert_eq!(t["targets"][0], "127.0.1.1:9249");
        assert_eq!(t["labels"]["job"], PROMETHEUS_JOB);
        assert_eq!(t["labels"]["pipeline"], "sales");
        let o = file_sd_operator("127.0.1.2", "tributary-abc");
        assert_eq!(o["targets"][0], "127.0.1.2:8080");
        assert!(o["labels"].get("namespace").is_none());
        // Every graph names a metric the binaries register.
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
                .unwrap();
        for g in demo_graphs() {
            let metric = g
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .find(|w| w.starts_with("tributary_"))
                .unwrap();
            let base = metric.trim_end_matches("_bucket");
            assert!(doc.contains(&format!("`{base}`")), "{base} of {g}");
        }
    }
}
