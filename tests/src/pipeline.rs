//! A pipeline fixture for runtime tests: generated data put into kinesis-mock (in the
//! generator's arrival order) and versitygw, a job configuration pointing at the stack (or at
//! fault-injecting proxies in front of it), the runtime binary started as a process, and
//! checks of every output against the generator's oracle: each document in OpenSearch (by
//! `_id`, whole `_source`), each row of the Parquet files in S3 (keys, no duplicates), each
//! dead-letter record (counts by reason).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{eventually, stack_var, unique};
use anyhow::{Context, Result, bail, ensure};
use arrow::array::{Array, Int64Array};
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::StreamStatus;
use opensearch::http::Url;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::indices::IndicesRefreshParts;
use opensearch::{CountParts, OpenSearch, SearchParts};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};
use tributary_crds::StreamingEnrichment;
use tributary_crds::job_config::JobConfig;
use tributary_runtime::r#gen::{Dataset, GenConfig, Record, generate};

pub const TIMEOUT: Duration = Duration::from_secs(120);

pub struct Fixture {
    pub name: String,
    pub data: Dataset,
    pub config: JobConfig,
    kinesis: aws_sdk_kinesis::Client,
    s3: aws_sdk_s3::Client,
    opensearch: OpenSearch,
    dir: tempfile::TempDir,
}

/// The SDK configuration for one of the stack's endpoints, with the S3 keys (kinesis-mock
/// accepts any).
async fn sdk_config(endpoint_var: &str, region_var: &str) -> Result<aws_config::SdkConfig> {
    Ok(aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(stack_var(endpoint_var)?)
        .region(Region::new(stack_var(region_var)?))
        .credentials_provider(Credentials::new(
            stack_var("S3_ACCESS_KEY_ID")?,
            stack_var("S3_SECRET_ACCESS_KEY")?,
            None,
            None,
            "tributary-stack",
        ))
        .load()
        .await)
}

async fn kinesis() -> Result<aws_sdk_kinesis::Client> {
    Ok(aws_sdk_kinesis::Client::new(
        &sdk_config("KINESIS_ENDPOINT", "AWS_REGION").await?,
    ))
}

async fn s3() -> Result<aws_sdk_s3::Client> {
    let config = sdk_config("S3_ENDPOINT", "S3_REGION").await?;
    let conf = aws_sdk_s3::config::Builder::from(&config)
        .force_path_style(true)
        .build();
    Ok(aws_sdk_s3::Client::from_conf(conf))
}

fn opensearch() -> Result<OpenSearch> {
    let pool = SingleNodeConnectionPool::new(Url::parse(&stack_var("OPENSEARCH_URL")?)?);
    Ok(OpenSearch::new(
        TransportBuilder::new(pool).disable_proxy().build()?,
    ))
}

impl Fixture {
    pub async fn new(prefix: &str, gen_config: &GenConfig) -> Result<Self> {
        Self::with_endpoints(prefix, gen_config, None, None).await
    }

    /// As [`Fixture::new`], with the runtime's S3 and OpenSearch endpoints replaced (proxies).
    pub async fn with_endpoints(
        prefix: &str,
        gen_config: &GenConfig,
        s3_endpoint: Option<String>,
        opensearch_endpoint: Option<String>,
    ) -> Result<Self> {
        let name = unique(prefix);
        let example = crate::cluster::repo_root().join("examples/minimal.yaml");
        let se: StreamingEnrichment = serde_yaml::from_str(&std::fs::read_to_string(example)?)?;
        let mut spec = se.spec;
        spec.aws.region = stack_var("AWS_REGION")?;
        spec.aws.kinesis_endpoint = Some(stack_var("KINESIS_ENDPOINT")?);
        spec.aws.s3_endpoint = Some(match s3_endpoint {
            Some(e) => e,
            None => stack_var("S3_ENDPOINT")?,
        });
        spec.aws.s3_force_path_style = true;
        spec.sources.customers.stream = format!("{name}-customers");
        spec.sources.addresses.stream = format!("{name}-addresses");
        spec.sources.sales.stream = format!("{name}-sales");
        spec.reference.items.uri = format!("s3://{name}/raw/items/");
        spec.reference.promos.uri = format!("s3://{name}/raw/promos/");
        spec.sinks.s3.uri = format!("s3://{name}/curated");
        spec.sinks.s3.roll_interval = "2s".parse().context("duration")?;
        spec.sinks.opensearch.endpoint = match opensearch_endpoint {
            Some(e) => e,
            None => stack_var("OPENSEARCH_URL")?,
        };
        spec.sinks.opensearch.write_alias = format!("{name}-sales");
        spec.dead_letter.uri = format!("s3://{name}/dead-letter");
        let config = JobConfig::from_spec("tests", &name, &spec, 1);
        let fx = Self {
            data: generate(gen_config),
            config,
            kinesis: kinesis().await?,
            s3: s3().await?,
            opensearch: opensearch()?,
            dir: tempfile::tempdir()?,
            name,
        };
        fx.s3.create_bucket().bucket(&fx.name).send().await?;
        for (key, body) in [
            ("raw/items/items.csv", &fx.data.items_csv),
            ("raw/promos/promos.csv", &fx.data.promos_csv),
        ] {
            fx.s3
                .put_object()
                .bucket(&fx.name)
                .key(key)
                .body(body.clone().into_bytes().into())
                .send()
                .await?;
        }
        for stream in fx.streams() {
            fx.kinesis
                .create_stream()
                .stream_name(&stream)
                .shard_count(2)
                .send()
                .await?;
        }
        for stream in fx.streams() {
            eventually(&format!("{stream} ACTIVE"), TIMEOUT, || async {
                let d = fx
                    .kinesis
                    .describe_stream_summary()
                    .stream_name(&stream)
                    .send()
                    .await?;
                Ok((d.stream_description_summary().map(|s| s.stream_status())
                    == Some(&StreamStatus::Active))
                .then_some(()))
            })
            .await?;
        }
        std::fs::write(fx.config_path(), fx.config.to_yaml()?)?;
        Ok(fx)
    }

    /// The fixture as a `StreamingEnrichment` named `sales` in the namespace of the fixture's
    /// name (what the end-to-end tests apply); `extra` is more of its spec, two spaces in
    /// (`replicas: 1` unless `extra` sets `replicas`).
    pub fn resource_yaml(&self, extra: &str) -> String {
        let c = &self.config;
        let os = &c.sinks.opensearch.spec;
        // `extra` may set the replica count itself (a repeated key is an error in YAML).
        let replicas = if extra.lines().any(|l| l.starts_with("  replicas:")) {
            ""
        } else {
            "  replicas: 1\n"
        };
        format!(
            r#"apiVersion: tributary.dev/v1alpha1
kind: StreamingEnrichment
metadata:
  name: sales
  namespace: {ns}
spec:
{replicas}{extra}  storage: {{ size: 1Gi }}
  aws:
    region: {region}
    kinesisEndpoint: {kinesis}
    s3Endpoint: {s3}
    s3ForcePathStyle: true
    credentials:
      accessKeyId: {{ name: aws, key: id }}
      secretAccessKey: {{ name: aws, key: secret }}
  sources:
    customers: {{ stream: {customers} }}
    addresses: {{ stream: {addresses} }}
    sales: {{ stream: {sales} }}
  reference:
    items: {{ uri: "{items}", refreshInterval: 5s }}
    promos: {{ uri: "{promos}", refreshInterval: 5s }}
  sinks:
    s3: {{ uri: "{curated}", rollInterval: 2s }}
    opensearch:
      endpoint: {endpoint}
      indexPrefix: {ns}
      writeAlias: {write}
      readAlias: {ns}-read
      template: {{ shards: 1, replicas: 0 }}
  deadLetter: {{ uri: "{dlq}" }}
"#,
            ns = self.name,
            region = c.aws.region,
            kinesis = c.aws.kinesis_endpoint.clone().unwrap_or_default(),
            s3 = c.aws.s3_endpoint.clone().unwrap_or_default(),
            customers = c.sources.customers.stream,
            addresses = c.sources.addresses.stream,
            sales = c.sources.sales.stream,
            items = c.reference.items.uri,
            promos = c.reference.promos.uri,
            curated = c.sinks.s3.uri,
            endpoint = os.endpoint,
            write = os.write_alias,
            dlq = c.dead_letter.uri,
        )
    }

    /// As a user does it: `helm install` the operator as release `<name>` in `<name>-op`
    /// (every namespace watched), then the namespace `<name>` with the credentials Secret the
    /// resource names, then `kubectl apply` of [`Fixture::resource_yaml`] with `extra`.
    pub fn install_and_apply(&self, extra: &str) -> Result<()> {
        self.install_and_apply_with(&[], extra)
    }

    /// As [`Fixture::install_and_apply`], with more `helm install` arguments (`--set k=v`
    /// pairs, for instance `--set replicaCount=2`). The namespace `<name>` and its Secret are
    /// created before the chart is installed, so `watchNamespaces={<name>}` can be set (the
    /// chart then writes its Role there).
    pub fn install_and_apply_with(&self, helm_args: &[&str], extra: &str) -> Result<()> {
        self.install_and_apply_yaml(helm_args, &self.resource_yaml(extra))
    }

    /// As [`Fixture::install_and_apply_with`], applying `yaml` (a whole resource manifest). The
    /// operator watches the fixture's namespace only (`watchNamespaces`) and may read its
    /// Secrets (`secretNamespaces`: the AWS credentials it observes the streams with): tests
    /// that run side by side each install their own operator, and two operators reconciling one
    /// resource would fight (each writes its own control token).
    pub fn install_and_apply_yaml(&self, helm_args: &[&str], yaml: &str) -> Result<()> {
        use crate::cluster::{helm, kubectl, repo_root};
        let ns = &self.name;
        kubectl(&["create", "namespace", ns])?;
        kubectl(&[
            "-n",
            ns,
            "create",
            "secret",
            "generic",
            "aws",
            &format!("--from-literal=id={}", stack_var("S3_ACCESS_KEY_ID")?),
            &format!(
                "--from-literal=secret={}",
                stack_var("S3_SECRET_ACCESS_KEY")?
            ),
        ])?;
        let chart = repo_root().join("charts/tributary");
        let operator_ns = format!("{ns}-op");
        let chart = chart.to_string_lossy();
        let mut args = vec![
            "install",
            ns.as_str(),
            &chart,
            "--namespace",
            &operator_ns,
            "--create-namespace",
            "--set",
            "logFormat=text",
        ];
        let scope = format!("watchNamespaces={{{ns}}}");
        let secrets = format!("secretNamespaces={{{ns}}}");
        args.extend(["--set", &scope, "--set", &secrets]);
        args.extend_from_slice(helm_args);
        args.extend(["--wait", "--timeout", "3m"]);
        helm(&args)?;
        let path = std::env::temp_dir().join(format!("{ns}.yaml"));
        std::fs::write(&path, yaml)?;
        kubectl(&["apply", "-f", &path.to_string_lossy()])?;
        Ok(())
    }

    /// Delete the fixture's streams (kinesis-mock keeps them, and their shards count against
    /// its limit, until it stops). Best effort.
    pub async fn cleanup(&self) {
        for stream in self.streams() {
            let _ = self
                .kinesis
                .delete_stream()
                .stream_name(&stream)
                .enforce_consumer_deletion(true)
                .send()
                .await;
        }
    }

    pub fn streams(&self) -> [String; 3] {
        [
            self.config.sources.customers.stream.clone(),
            self.config.sources.addresses.stream.clone(),
            self.config.sources.sales.stream.clone(),
        ]
    }

    /// The Kinesis client the fixture puts with (for resharding in tests).
    pub fn kinesis(&self) -> &aws_sdk_kinesis::Client {
        &self.kinesis
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("job.yaml")
    }

    /// Put every record, one at a time, in global arrival order (what the join relies on).
    pub async fn put_all(&self) -> Result<()> {
        self.put_all_paced(Duration::ZERO).await
    }

    /// As [`Fixture::put_all`], pausing `pause` after every 100 records: a stream that lasts
    /// long enough for operations (rescales) to happen while it arrives.
    pub async fn put_all_paced(&self, pause: Duration) -> Result<()> {
        let [c, a, s] = self.streams();
        let mut all: Vec<(&str, &Record)> = Vec::new();
        all.extend(self.data.customer_records.iter().map(|r| (c.as_str(), r)));
        all.extend(self.data.address_records.iter().map(|r| (a.as_str(), r)));
        all.extend(self.data.sale_records.iter().map(|r| (s.as_str(), r)));
        all.sort_by_key(|(_, r)| r.arrival);
        for (n, (stream, r)) in all.into_iter().enumerate() {
            if !pause.is_zero() && n > 0 && n % 100 == 0 {
                tokio::time::sleep(pause).await;
            }
            self.kinesis
                .put_record()
                .stream_name(stream)
                .partition_key(&r.partition_key)
                .data(Blob::new(r.data.clone()))
                .send()
                .await
                .with_context(|| format!("put to {stream}"))?;
        }
        Ok(())
    }

    pub fn start(&self, admin_port: u16) -> Result<Child> {
        self.start_replica(admin_port, &self.config_path(), "state", 0, None)
    }

    /// Write another job configuration next to the fixture's; returns its path.
    pub fn write_config(&self, file: &str, config: &JobConfig) -> Result<PathBuf> {
        let path = self.dir.path().join(file);
        std::fs::write(&path, config.to_yaml()?)?;
        Ok(path)
    }

    /// Start one replica: its configuration, its state folder (a volume of its own), its
    /// ordinal, and the control token it accepts.
    pub fn start_replica(
        &self,
        admin_port: u16,
        config: &std::path::Path,
        state: &str,
        ordinal: u32,
        control_token: Option<&str>,
    ) -> Result<Child> {
        let bin = std::env::var("TRIBUTARY_RUNTIME_BIN")
            .context("TRIBUTARY_RUNTIME_BIN is not set: run through `cargo xtask test`")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("runtime.log"))?;
        let mut cmd = Command::new(bin);
        if let Some(t) = control_token {
            cmd.env(tributary_crds::job_config::env::CONTROL_TOKEN, t);
        }
        Ok(cmd
            .env("TRIBUTARY_CONFIG", config)
            .env("TRIBUTARY_STATE_DIR", self.dir.path().join(state))
            .env("TRIBUTARY_ORDINAL", ordinal.to_string())
            .env("TRIBUTARY_POD_IP", "127.0.0.1")
            .env("TRIBUTARY_ADMIN_PORT", admin_port.to_string())
            .env("TRIBUTARY_IDLE_POLL_MS", "200")
            .env("AWS_ACCESS_KEY_ID", stack_var("S3_ACCESS_KEY_ID")?)
            .env("AWS_SECRET_ACCESS_KEY", stack_var("S3_SECRET_ACCESS_KEY")?)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("runtime.log")).unwrap_or_default()
    }

    pub async fn count(&self) -> Result<u64> {
        let alias = &self.config.sinks.opensearch.spec.write_alias;
        let _ = self
            .opensearch
            .indices()
            .refresh(IndicesRefreshParts::Index(&[alias]))
            .send()
            .await?;
        let resp = self
            .opensearch
            .count(CountParts::Index(&[alias]))
            .send()
            .await?;
        if !resp.status_code().is_success() {
            return Ok(0);
        }
        let body: Value = resp.json().await?;
        Ok(body["count"].as_u64().unwrap_or(0))
    }

    pub async fn documents(&self) -> Result<BTreeMap<String, Value>> {
        let alias = &self.config.sinks.opensearch.spec.write_alias;
        let resp = self
            .opensearch
            .search(SearchParts::Index(&[alias]))
            .body(json!({"size": 10000, "query": {"match_all": {}}}))
            .send()
            .await?;
        let body: Value = resp.json().await?;
        let hits = body["hits"]["hits"].as_array().context("hits")?;
        Ok(hits
            .iter()
            .map(|h| {
                (
                    h["_id"].as_str().unwrap_or_default().to_string(),
                    h["_source"].clone(),
                )
            })
            .collect())
    }

    pub async fn objects(&self, prefix: &str) -> Result<Vec<(String, bytes::Bytes)>> {
        let list = self
            .s3
            .list_objects_v2()
            .bucket(&self.name)
            .prefix(prefix)
            .send()
            .await?;
        let mut out = Vec::new();
        for o in list.contents() {
            let key = o.key().context("key")?.to_string();
            let body = self
                .s3
                .get_object()
                .bucket(&self.name)
                .key(&key)
                .send()
                .await?
                .body
                .collect()
                .await?
                .into_bytes();
            out.push((key, body));
        }
        Ok(out)
    }

    /// Replace an object of the fixture's bucket.
    pub async fn put_object(&self, key: &str, body: Vec<u8>) -> Result<()> {
        self.s3
            .put_object()
            .bucket(&self.name)
            .key(key)
            .body(body.into())
            .send()
            .await?;
        Ok(())
    }

    /// `(order_id, item_id)` of every Parquet row (asserting day partitions match).
    pub async fn parquet_keys(&self) -> Result<Vec<(i64, i64)>> {
        let mut keys = Vec::new();
        for (key, body) in self.objects("curated/").await? {
            ensure!(key.ends_with(".parquet"), "unexpected object {key}");
            let reader = ParquetRecordBatchReaderBuilder::try_new(body)?.build()?;
            for batch in reader {
                let batch = batch?;
                let col = |n: &str| -> Result<Int64Array> {
                    Ok(batch
                        .column_by_name(n)
                        .context("column")?
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .context("int64")?
                        .clone())
                };
                let (o, i) = (col("order_id")?, col("item_id")?);
                for r in 0..batch.num_rows() {
                    keys.push((o.value(r), i.value(r)));
                }
            }
        }
        Ok(keys)
    }

    pub async fn dead_letters(&self) -> Result<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::new();
        for (_, body) in self.objects("dead-letter/records/").await? {
            for line in std::str::from_utf8(&body)?.lines() {
                let v: Value = serde_json::from_str(line)?;
                *counts
                    .entry(v["reason"].as_str().unwrap_or("?").to_string())
                    .or_default() += 1;
            }
        }
        Ok(counts)
    }

    /// Everything the oracle expects, exactly once, in both sinks and the dead-letter.
    pub async fn assert_complete(&self) -> Result<()> {
        let expected = self.data.expected.len();
        eventually("every document in OpenSearch", TIMEOUT, || async {
            Ok((self.count().await? >= expected as u64).then_some(()))
        })
        .await
        .with_context(|| self.log())?;
        let docs = self.documents().await?;
        ensure!(
            docs.len() == expected,
            "{} documents, expected {expected}",
            docs.len()
        );
        for ((order, item), want) in &self.data.expected {
            let id = format!("{order}:{item}");
            let got = docs
                .get(&id)
                .with_context(|| format!("document {id} missing"))?;
            ensure!(got == want, "document {id}:\n got {got}\nwant {want}");
        }
        let keys = eventually("every row in S3", TIMEOUT, || async {
            let keys = self.parquet_keys().await?;
            Ok((keys.len() >= expected).then_some(keys))
        })
        .await?;
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        ensure!(sorted.len() == keys.len(), "duplicate rows in S3");
        let want: Vec<(i64, i64)> = self.data.expected.keys().copied().collect();
        ensure!(sorted == want, "S3 rows differ from the oracle");
        let dead = eventually("the dead-letter records", TIMEOUT, || async {
            let d = self.dead_letters().await?;
            Ok(
                (d.values().sum::<u64>() >= self.data.expected_dead_letters.values().sum())
                    .then_some(d),
            )
        })
        .await?;
        ensure!(
            dead == self.data.expected_dead_letters,
            "dead letters {dead:?}, expected {:?}",
            self.data.expected_dead_letters
        );
        Ok(())
    }
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn small() -> GenConfig {
    GenConfig {
        customers: 80,
        addresses: 30,
        sales: 400,
        items: 40,
        promos: 8,
        ..GenConfig::default()
    }
}

pub async fn http(url: &str) -> Result<(u16, String)> {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", url])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

/// POST a JSON body, with a bearer token when given; the status and the body.
pub async fn http_post(url: &str, body: &str, token: Option<&str>) -> Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .args(["-H", "Content-Type: application/json", "-d", body]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

pub fn stop(mut child: Child) -> Result<()> {
    // SIGTERM: the runtime stops reading, commits and delivers, then exits 0.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status()?;
    for _ in 0..300 {
        if let Some(status) = child.try_wait()? {
            ensure!(status.success(), "runtime exited with {status}");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill()?;
    bail!("runtime did not stop within 30 s of SIGTERM")
}
