//! `cargo xtask demo`: the README's first command. The whole path on the local stack:
//! stack up (with the node agent), build, `helm install` the operator, generate data into
//! Kinesis and S3, apply `examples/local.yaml`, wait until every expected document is in
//! OpenSearch, then print counts, one document and where to look further.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::stack::{self, Ctx};

const NAMESPACE: &str = "analytics";
const OPERATOR_NAMESPACE: &str = "tributary-system";
const SALES: usize = 20_000;

fn step(n: u32, what: &str) {
    println!("\n[demo {n}/8] {what}");
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot start"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn var(env: &[(String, String)], k: &str) -> Result<String> {
    env.iter()
        .find(|(name, _)| name == k)
        .map(|(_, v)| v.clone())
        .with_context(|| format!("{k} missing from stack.env"))
}

fn curl(url: &str, body: Option<&str>) -> Result<serde_json::Value> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sf", "-H", "Content-Type: application/json", url]);
    if let Some(b) = body {
        cmd.args(["-d", b]);
    }
    let out = run(&mut cmd, &format!("curl {url}"))?;
    Ok(serde_json::from_str(&out)?)
}

/// Remove what a previous demo left, so that its counts start from zero: the helm release, the
/// namespace (its pods stop), the job's claim folder (its RocksDB state and stream positions),
/// the streams (kinesis-mock takes unsigned requests), the S3 data and the OpenSearch indices.
fn reset(ctx: &Ctx, env: &[(String, String)]) -> Result<()> {
    let kubectl = var(env, "KUBECTL")?;
    let helm = var(env, "HELM")?;
    let kubeconfig = var(env, "KUBECONFIG")?;
    let _ = Command::new(&helm)
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "uninstall",
            "tributary",
            "--namespace",
            OPERATOR_NAMESPACE,
            "--wait",
        ])
        .output();
    let _ = Command::new(&kubectl)
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "delete",
            "namespace",
            NAMESPACE,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
        ])
        .output();
    let claims = ctx.home.join("agent/pvc").join(NAMESPACE);
    if claims.exists() {
        std::fs::remove_dir_all(&claims)
            .with_context(|| format!("removing {}", claims.display()))?;
    }
    let kinesis = var(env, "KINESIS_ENDPOINT")?;
    for stream in [
        "ara-web-customer",
        "ara-web-customer-address",
        "ara-web-sale",
    ] {
        let _ = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-X", "POST", &kinesis])
            .args(["-H", "Content-Type: application/x-amz-json-1.1"])
            .args(["-H", "X-Amz-Target: Kinesis_20131202.DeleteStream"])
            .args(["-H", "X-Amz-Date: 20260101T000000Z"])
            .args(["-H", "Authorization: AWS4-HMAC-SHA256 Credential=demo/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0"])
            .args(["-d", &format!("{{\"StreamName\":\"{stream}\",\"EnforceConsumerDeletion\":true}}")])
            .status();
    }
    // versitygw keeps objects as plain files; the bucket itself stays.
    let bucket = ctx.home.join("stack/data/s3/buckets/ara");
    for folder in ["raw", "curated", "dead-letter"] {
        let _ = std::fs::remove_dir_all(bucket.join(folder));
    }
    let os = var(env, "OPENSEARCH_URL")?;
    let _ = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-X",
            "DELETE",
            &format!("{os}/ara-*"),
        ])
        .status();
    // The streams' deletion is asynchronous in kinesis-mock.
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
}

/// A sample of the job pod's metrics (`0` when absent).
fn job_metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

pub fn run_demo(ctx: &Ctx) -> Result<()> {
    let started = Instant::now();
    step(
        1,
        "local stack (Kubernetes, node agent, Kinesis, S3, OpenSearch, Prometheus)",
    );
    stack::up(ctx)?;
    let env = stack::read_env(ctx)?;
    let kubectl = var(&env, "KUBECTL")?;
    let helm = var(&env, "HELM")?;
    let kubeconfig = var(&env, "KUBECONFIG")?;
    let os = var(&env, "OPENSEARCH_URL")?;

    step(
        2,
        "start clean: remove a previous demo's release, pipeline, streams, data and indices",
    );
    reset(ctx, &env)?;

    step(3, "build the operator, the runtime and the generator");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(&ctx.repo)
        .args([
            "build",
            "--bin",
            "tributary-operator",
            "--bin",
            "tributary-runtime",
            "--bin",
            "tributary-gen",
        ])
        .status()?;
    if !status.success() {
        bail!("cargo build failed");
    }

    step(
        4,
        "helm install the operator (its pod runs on the node agent)",
    );
    let chart = ctx.repo.join("charts/tributary");
    run(
        Command::new(&helm)
            .env("KUBECONFIG", &kubeconfig)
            .args(["upgrade", "--install", "tributary"])
            .arg(&chart)
            .args([
                "--namespace",
                OPERATOR_NAMESPACE,
                "--create-namespace",
                "--set",
                "logFormat=text",
                "--wait",
                "--timeout",
                "3m",
            ]),
        "helm install",
    )?;
    println!("  operator ready in namespace {OPERATOR_NAMESPACE}");

    step(
        5,
        &format!("generate {SALES} sales into Kinesis and items/promos into s3://ara/raw"),
    );
    let oracle = ctx.home.join("demo/oracle.jsonl");
    std::fs::create_dir_all(oracle.parent().unwrap_or(Path::new(".")))?;
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| ctx.repo.join("target"));
    let gen_bin = target.join("debug/tributary-gen");
    let mut gen_cmd = Command::new(&gen_bin);
    for (k, v) in &env {
        gen_cmd.env(k, v);
    }
    let status = gen_cmd
        .args([
            "--sales",
            &SALES.to_string(),
            "--customers",
            "2000",
            "--addresses",
            "800",
            "--items",
            "500",
            "--promos",
            "50",
            "--kinesis",
            "--shards",
            "2",
            "--customers-stream",
            "ara-web-customer",
            "--addresses-stream",
            "ara-web-customer-address",
            "--sales-stream",
            "ara-web-sale",
            "--s3",
            "s3://ara/raw",
            "--oracle",
        ])
        .arg(&oracle)
        .status()?;
    if !status.success() {
        bail!("tributary-gen failed");
    }
    let expected = std::fs::read_to_string(&oracle)?.lines().count();

    step(6, "apply examples/local.yaml");
    let k = |args: &[&str]| {
        Command::new(&kubectl)
            .env("KUBECONFIG", &kubeconfig)
            .args(args)
            .output()
    };
    let _ = k(&["create", "namespace", NAMESPACE]);
    let _ = k(&["-n", NAMESPACE, "delete", "secret", "aws-local"]);
    let s3_key = var(&env, "S3_ACCESS_KEY_ID")?;
    let s3_secret = var(&env, "S3_SECRET_ACCESS_KEY")?;
    run(
        Command::new(&kubectl).env("KUBECONFIG", &kubeconfig).args([
            "-n",
            NAMESPACE,
            "create",
            "secret",
            "generic",
            "aws-local",
            &format!("--from-literal=access-key-id={s3_key}"),
            &format!("--from-literal=secret-access-key={s3_secret}"),
        ]),
        "create the credentials secret",
    )?;
    run(
        Command::new(&kubectl)
            .env("KUBECONFIG", &kubeconfig)
            .args(["apply", "-f"])
            .arg(ctx.repo.join("examples/local.yaml")),
        "kubectl apply",
    )?;
    let applied = Instant::now();

    step(
        7,
        &format!(
            "wait for {expected} enriched documents in OpenSearch (alias ara-sales / ara-write)"
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = 0;
    loop {
        let count = curl(&format!("{os}/ara-*/_count"), None)
            .ok()
            .and_then(|v| v["count"].as_u64())
            .unwrap_or(0);
        if count != last {
            println!("  {count} / {expected} documents");
            last = count;
        }
        if count >= expected as u64 {
            let secs = applied.elapsed().as_secs_f64();
            println!(
                "  all {expected} documents searchable {secs:.1}s after the apply (pod start included): {:.0} documents/s",
                expected as f64 / secs
            );
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {count} of {expected} documents after 10 minutes; look at the job pod's log under {}",
                ctx.home.join("agent/pods").display()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }

    println!("  waiting for the Parquet files in S3 (the S3 sink rolls every 10 s)");
    let pod_ip = String::from_utf8_lossy(
        &k(&[
            "-n",
            NAMESPACE,
            "get",
            "pod",
            "sales-0",
            "-o",
            "jsonpath={.status.podIP}",
        ])?
        .stdout,
    )
    .into_owned();
    let metrics_url = format!("http://{pod_ip}:9249/metrics");
    let deadline = Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        let out = Command::new("curl").args(["-sf", &metrics_url]).output()?;
        let m = String::from_utf8_lossy(&out.stdout).into_owned();
        let s3 = job_metric(&m, "tributary_sink_delivered_total{sink=\"s3\"}");
        let os = job_metric(&m, "tributary_sink_delivered_total{sink=\"opensearch\"}");
        if s3 > 0.0 && s3 >= os && job_metric(&m, "tributary_outbox_lag") == 0.0 {
            break m;
        }
        if Instant::now() > deadline {
            bail!("the S3 sink did not catch up within 2 minutes; metrics: {metrics_url}");
        }
        std::thread::sleep(Duration::from_secs(2));
    };

    step(8, "done");
    let dead: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("tributary_dead_letters_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!(
        "Counts (from the job's /metrics at {metrics_url}):\n  documents committed   {}\n  outbox entries through OpenSearch {}\n  outbox entries through the S3 sink {} (Parquet under s3://ara/curated/ara-web-sale/<day>/)\n  dead-letter records   {dead} (s3://ara/dead-letter/records/)\n  job CPU seconds       {:.1}\n  job peak RSS          {:.0} MiB",
        job_metric(&metrics, "tributary_documents_out_total"),
        job_metric(
            &metrics,
            "tributary_sink_delivered_total{sink=\"opensearch\"}"
        ),
        job_metric(&metrics, "tributary_sink_delivered_total{sink=\"s3\"}"),
        job_metric(&metrics, "process_cpu_seconds_total"),
        job_metric(&metrics, "tributary_process_peak_rss_bytes") / 1048576.0,
    );
    let se = k(&["-n", NAMESPACE, "get", "se"])?;
    println!("{}", String::from_utf8_lossy(&se.stdout));
    let one = curl(&format!("{os}/ara-*/_search?size=1"), None)?;
    println!(
        "One enriched document:\n{}",
        serde_json::to_string_pretty(&one["hits"]["hits"][0]["_source"])?
    );
    println!(
        "\n{expected} documents in {:.0?}. Look further:\n  set -a; . {}; set +a\n  $KUBECTL -n {NAMESPACE} get se,sts,pods\n  curl -s \"$OPENSEARCH_URL/ara-*/_search?q=bill_customer.last_name:Smith&size=3\"\n  curl -s \"$OPENSEARCH_URL/ara-*/_count\"\n  job pod logs: {}\n  the expected documents: {}\nStop everything with `cargo xtask stack down`.",
        started.elapsed(),
        stack::env_path(ctx).display(),
        ctx.home.join("agent/pods").display(),
        oracle.display()
    );
    Ok(())
}
