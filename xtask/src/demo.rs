//! `cargo xtask demo`: the README's first command. The whole path on the local stack:
//! stack up (with the node agent), build, `helm install` the operator, generate data into
//! Kinesis and S3, apply `examples/local.yaml`, wait until every expected document is in
//! OpenSearch, then print what the job made (`report.rs`): counts, one document, an
//! aggregation, the Parquet files, dead letters by reason and where to look further.

mod report;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::heartbeat::{self, Heartbeat};
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
    let _beat = Heartbeat::start("demo", "removing the previous demo", None);
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
    // Prometheus stops scraping the previous job's pod.
    if let Ok(dir) = var(env, "PROMETHEUS_FILE_SD_DIR") {
        let _ = std::fs::remove_file(Path::new(&dir).join(FILE_SD_NAME));
    }
    // The streams' deletion is asynchronous in kinesis-mock.
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
}

/// The pods of `namespace` with their phase and, for a container not running, its reason:
/// `tributary-6b55-9tllk Pending (operator: ImageNotMapped)`.
fn pod_status(kubectl: &str, kubeconfig: &str, namespace: &str) -> Option<String> {
    let out = Command::new(kubectl)
        .env("KUBECONFIG", kubeconfig)
        .args(["-n", namespace, "get", "pods", "-o", "json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let pods: Vec<String> = v["items"]
        .as_array()?
        .iter()
        .map(|p| {
            let waiting: Vec<String> = p["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    let reason = c["state"]["waiting"]["reason"].as_str()?;
                    Some(format!("{}: {reason}", c["name"].as_str().unwrap_or("?")))
                })
                .collect();
            let mut s = format!(
                "{} {}",
                p["metadata"]["name"].as_str().unwrap_or("?"),
                p["status"]["phase"].as_str().unwrap_or("?")
            );
            if !waiting.is_empty() {
                s.push_str(&format!(" ({})", waiting.join(", ")));
            }
            s
        })
        .collect();
    Some(if pods.is_empty() {
        "no pod yet".to_string()
    } else {
        format!("pods: {}", pods.join("; "))
    })
}

/// The file the node agent runs for `binary`: the first of its search path that has it.
fn resolve_in(search: &str, binary: &str) -> Option<std::path::PathBuf> {
    search
        .split(':')
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.is_file())
}

/// Fail at once when the running node agent would not run the binaries just built (it was
/// started from another target folder): helm would otherwise wait minutes for a pod that stays
/// `ImageNotMapped`, or the demo would run an older build.
fn check_agent_runs_this_build(ctx: &Ctx, built: &Path) -> Result<()> {
    let Some(search) = stack::node_agent_bin_path(ctx) else {
        return Ok(());
    };
    for binary in ["tributary-operator", "tributary-runtime"] {
        let ours = built.join(binary);
        let theirs = resolve_in(&search, binary);
        let same = theirs
            .as_ref()
            .and_then(|t| t.canonicalize().ok())
            .is_some_and(|t| ours.canonicalize().is_ok_and(|o| o == t));
        if !same {
            let what = match &theirs {
                Some(t) => format!("would run {} instead", t.display()),
                None => format!("finds no {binary} there"),
            };
            bail!(
                "the running node agent would not run the binaries just built: it looks for them \
                 in {search} and {what} (this build wrote {}). It was started from another \
                 target folder; restart the stack with this CARGO_TARGET_DIR: cargo xtask stack \
                 down && cargo xtask stack up",
                ours.display()
            );
        }
    }
    Ok(())
}

/// The operator's running pod: (pod IP, name).
fn operator_pod(kubectl: &str, kubeconfig: &str) -> Option<(String, String)> {
    let out = Command::new(kubectl)
        .env("KUBECONFIG", kubeconfig)
        .args(["-n", OPERATOR_NAMESPACE, "get", "pods"])
        .args(["-l", "app.kubernetes.io/name=tributary-operator"])
        .args(["--field-selector", "status.phase=Running", "-o"])
        .arg("jsonpath={.items[0].status.podIP} {.items[0].metadata.name}")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (ip, name) = text.trim().split_once(' ')?;
    (!ip.is_empty()).then(|| (ip.to_string(), name.to_string()))
}

/// The demo's file in Prometheus's `file_sd` folder.
const FILE_SD_NAME: &str = "tributary-demo.json";

/// Make Prometheus scrape the job's pod and the operator's (file-based discovery, re-read within
/// seconds), with the labels the chart's PodMonitors give them.
fn register_with_prometheus(
    env: &[(String, String)],
    pod_ip: &str,
    operator: Option<&(String, String)>,
) {
    let Ok(dir) = var(env, "PROMETHEUS_FILE_SD_DIR") else {
        return;
    };
    let mut groups = vec![report::file_sd_job(pod_ip, NAMESPACE, "sales-0", "sales")];
    if let Some((ip, pod)) = operator {
        groups.push(report::file_sd_operator(ip, pod));
    }
    let body = serde_json::Value::Array(groups).to_string();
    let path = Path::new(&dir).join(FILE_SD_NAME);
    // Written aside and renamed: Prometheus never reads half a file.
    let tmp = path.with_extension("json.tmp");
    if std::fs::write(&tmp, body).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
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
    println!(
        "  (on a cold cache RocksDB's C++ alone takes about 25 minutes here; a line every 30 s \
         says what compiles)"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    heartbeat::cargo(
        "demo",
        "cargo build",
        Command::new(&cargo).current_dir(&ctx.repo).args([
            "build",
            "--bin",
            "tributary-operator",
            "--bin",
            "tributary-runtime",
            "--bin",
            "tributary-gen",
        ]),
    )
    .context("cargo build failed")?;
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| ctx.repo.join("target"));
    check_agent_runs_this_build(ctx, &target.join("debug"))?;

    step(
        4,
        "helm install the operator (its pod runs on the node agent)",
    );
    let chart = ctx.repo.join("charts/tributary");
    let beat = {
        let (kubectl, kubeconfig) = (kubectl.clone(), kubeconfig.clone());
        Heartbeat::with_detail(
            "demo",
            "helm install (waits until the operator pod is ready)",
            move || pod_status(&kubectl, &kubeconfig, OPERATOR_NAMESPACE),
        )
    };
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
    drop(beat);
    println!("  operator ready in namespace {OPERATOR_NAMESPACE}");
    let operator_pod = operator_pod(&kubectl, &kubeconfig);

    step(
        5,
        &format!("generate {SALES} sales into Kinesis and items/promos into s3://ara/raw"),
    );
    let oracle = ctx.home.join("demo/oracle.jsonl");
    std::fs::create_dir_all(oracle.parent().unwrap_or(Path::new(".")))?;
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
    let mut last_print = Instant::now();
    let mut pod_ip = String::new();
    let pod_field = |path: &str| -> String {
        k(&[
            "-n",
            NAMESPACE,
            "get",
            "pod",
            "sales-0",
            "-o",
            &format!("jsonpath={{{path}}}"),
        ])
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
    };
    let searchable_secs = loop {
        if pod_ip.is_empty() {
            pod_ip = pod_field(".status.podIP");
            if !pod_ip.is_empty() {
                register_with_prometheus(&env, &pod_ip, operator_pod.as_ref());
                println!(
                    "  pod sales-0 runs at {pod_ip}; Prometheus scrapes its metrics (and the \
                     operator's) from now on"
                );
            }
        }
        let count = curl(&format!("{os}/ara-*/_count"), None)
            .ok()
            .and_then(|v| v["count"].as_u64())
            .unwrap_or(0);
        if count != last {
            println!("  {count} / {expected} documents");
            last = count;
            last_print = Instant::now();
        } else if last_print.elapsed() > heartbeat::INTERVAL {
            let phase = pod_field(".status.phase");
            println!(
                "  {count} / {expected} documents after {}; pod sales-0: {}",
                heartbeat::elapsed(applied.elapsed()),
                if phase.is_empty() {
                    "not created yet"
                } else {
                    &phase
                }
            );
            last_print = Instant::now();
        }
        if count >= expected as u64 {
            let secs = applied.elapsed().as_secs_f64();
            println!(
                "  all {expected} documents searchable {secs:.1}s after the apply (pod start included): {:.0} documents/s",
                expected as f64 / secs
            );
            break secs;
        }
        if Instant::now() > deadline {
            bail!(
                "only {count} of {expected} documents after 10 minutes; look at the job pod's log under {}",
                ctx.home.join("agent/pods").display()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    };

    println!("  waiting for the Parquet files in S3 (the S3 sink rolls every 10 s)");
    if pod_ip.is_empty() {
        pod_ip = pod_field(".status.podIP");
    }
    let metrics_url = format!("http://{pod_ip}:9249/metrics");
    let waited = Instant::now();
    let deadline = waited + Duration::from_secs(120);
    let mut last_print = Instant::now();
    let metrics = loop {
        let out = Command::new("curl").args(["-sf", &metrics_url]).output()?;
        let m = String::from_utf8_lossy(&out.stdout).into_owned();
        let s3 = report::sample(&m, "tributary_sink_delivered_total{sink=\"s3\"}");
        let os = report::sample(&m, "tributary_sink_delivered_total{sink=\"opensearch\"}");
        if s3 > 0.0 && s3 >= os && report::sample(&m, "tributary_outbox_pending_entries") == 0.0 {
            break m;
        }
        if Instant::now() > deadline {
            bail!("the S3 sink did not catch up within 2 minutes; metrics: {metrics_url}");
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            println!(
                "  the S3 sink has delivered {s3} of {os} documents ({})",
                heartbeat::elapsed(waited.elapsed())
            );
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_secs(2));
    };

    step(
        8,
        &format!(
            "done in {}: what the job made",
            heartbeat::elapsed(started.elapsed())
        ),
    );
    let resource = k(&["-n", NAMESPACE, "get", "se"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let env_file = stack::env_path(ctx);
    report::print(&report::Inputs {
        home: &ctx.home,
        opensearch: &os,
        prometheus: var(&env, "PROMETHEUS_URL").ok().as_deref(),
        expected,
        oracle: &oracle,
        metrics: &metrics,
        metrics_url: &metrics_url,
        searchable_secs,
        resource,
        env_file: &env_file,
        namespace: NAMESPACE,
    });
    println!("\nStop everything with `cargo xtask stack down`.");
    Ok(())
}
