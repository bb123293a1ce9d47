//! The chart's monitoring kit: the alerting rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`: every alert made to fire, and not to), and `helm template` renders the
//! PodMonitors and the PrometheusRule only when the cluster serves `monitoring.coreos.com/v1`
//! (or they are forced) and their toggles allow, the dashboards' ConfigMaps only when asked for,
//! and the operator pod's scrape annotations only without PodMonitors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use serde_json::Value;
use tributary_tests::cluster::{helm, repo_root};

const API: &str = "monitoring.coreos.com/v1";

fn chart() -> PathBuf {
    repo_root().join("charts/tributary")
}

/// promtool: `PROMTOOL`, else Debian's (the `prometheus` package the stack needs), else PATH.
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return PathBuf::from(p);
    }
    let debian = PathBuf::from("/usr/bin/promtool");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("promtool")
    }
}

fn run_promtool(args: &[&str]) -> Result<String> {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(chart().join("files"))
        .output()
        .with_context(|| {
            format!(
                "running {} (Debian's prometheus package)",
                promtool().display()
            )
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    Ok(text)
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() -> Result<()> {
    let out = run_promtool(&["check", "rules", "alerts.yaml"])?;
    ensure!(out.contains("SUCCESS"), "{out}");
    let out = run_promtool(&["test", "rules", "alerts_test.yaml"])?;
    ensure!(out.contains("SUCCESS"), "{out}");
    Ok(())
}

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    alert: Option<String>,
}

#[derive(Deserialize)]
struct TestFile {
    rule_files: Vec<String>,
    tests: Vec<UnitTest>,
}

#[derive(Deserialize)]
struct UnitTest {
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
}

#[derive(Deserialize)]
struct AlertTest {
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<Value>,
}

#[test]
fn every_alert_has_a_test_that_fires_it_and_one_that_does_not() -> Result<()> {
    let files = chart().join("files");
    let rules: RuleFile =
        serde_yaml::from_str(&std::fs::read_to_string(files.join("alerts.yaml"))?)?;
    let tests: TestFile =
        serde_yaml::from_str(&std::fs::read_to_string(files.join("alerts_test.yaml"))?)?;
    ensure!(
        tests.rule_files == ["alerts.yaml"],
        "{:?}",
        tests.rule_files
    );
    let alerts: BTreeSet<String> = rules
        .groups
        .iter()
        .flat_map(|g| g.rules.iter().filter_map(|r| r.alert.clone()))
        .collect();
    ensure!(alerts.len() >= 7, "{alerts:?}");
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests.tests.iter().flat_map(|t| &t.alert_rule_test) {
        ensure!(
            alerts.contains(&t.alertname),
            "alerts_test.yaml tests {}, which alerts.yaml does not define",
            t.alertname
        );
        if t.exp_alerts.is_empty() {
            quiet.insert(t.alertname.clone());
        } else {
            fires.insert(t.alertname.clone());
        }
    }
    for a in &alerts {
        ensure!(fires.contains(a), "no test makes {a} fire");
        ensure!(quiet.contains(a), "no test checks that {a} stays quiet");
    }
    Ok(())
}

/// `helm template` with `args`, as JSON documents (empty documents dropped).
fn render(args: &[&str]) -> Result<Vec<Value>> {
    let chart = chart();
    let mut all = vec![
        "template",
        "tributary",
        chart.to_str().context("chart path")?,
        "-n",
        "tributary-system",
    ];
    all.extend_from_slice(args);
    let out = helm(&all)?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&out) {
        let v = Value::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn operator_pod_annotations(docs: &[Value]) -> Result<BTreeMap<String, String>> {
    let dep = of_kind(docs, "Deployment")
        .into_iter()
        .next()
        .context("no Deployment")?;
    Ok(
        serde_json::from_value(dep["spec"]["template"]["metadata"]["annotations"].clone())
            .unwrap_or_default(),
    )
}

/// (PodMonitors, PrometheusRules, scrape annotations on the operator pod) rendered with `args`.
fn monitoring_objects(args: &[&str]) -> Result<(usize, usize, bool)> {
    let docs = render(args)?;
    let scrape = operator_pod_annotations(&docs)?
        .get("prometheus.io/scrape")
        .is_some_and(|v| v == "true");
    Ok((
        of_kind(&docs, "PodMonitor").len(),
        of_kind(&docs, "PrometheusRule").len(),
        scrape,
    ))
}

/// `helm template` arguments, and what they render: (PodMonitors, PrometheusRules, whether the
/// operator pod carries scrape annotations).
type Case<'a> = (Vec<&'a str>, (usize, usize, bool));

#[test]
fn monitors_and_rules_render_only_with_the_api_and_their_toggles() -> Result<()> {
    let api = ["--api-versions", API];
    let cases: Vec<Case> = vec![
        // The defaults (auto): nothing without the API, scrape annotations instead.
        (vec![], (0, 0, true)),
        (api.to_vec(), (2, 1, false)),
        // Turned off with the API present.
        (
            [
                &api[..],
                &["--set", "monitoring.podMonitors.enabled=false"],
                &["--set", "monitoring.prometheusRules.enabled=false"],
            ]
            .concat(),
            (0, 0, true),
        ),
        (
            [
                &api[..],
                &["--set", "monitoring.prometheusRules.enabled=false"],
            ]
            .concat(),
            (2, 0, false),
        ),
        (vec!["--set", "monitoring.annotations=false"], (0, 0, false)),
        // Forced without the API (a GitOps render that knows the CRDs are there).
        (
            vec![
                "--set",
                "monitoring.podMonitors.enabled=true",
                "--set",
                "monitoring.prometheusRules.enabled=true",
            ],
            (2, 1, false),
        ),
    ];
    for (args, want) in cases {
        let got = monitoring_objects(&args)?;
        ensure!(
            got == want,
            "helm template {args:?}: (PodMonitors, PrometheusRules, scrape annotations) {got:?}, want {want:?}"
        );
    }
    let err = match render(&["--set", "monitoring.podMonitors.enabled=maybe"]) {
        Ok(_) => bail!("helm accepted monitoring.podMonitors.enabled=maybe"),
        Err(e) => e.to_string(),
    };
    ensure!(err.contains("enabled"), "{err}");
    Ok(())
}

#[test]
fn the_monitors_select_the_pods_and_set_the_labels_the_alerts_use() -> Result<()> {
    let docs = render(&[
        "--api-versions",
        API,
        "--set",
        "watchNamespaces={analytics,ops}",
    ])?;
    let monitors: BTreeMap<String, &Value> = of_kind(&docs, "PodMonitor")
        .into_iter()
        .map(|m| (m["metadata"]["name"].as_str().unwrap_or("").to_string(), m))
        .collect();
    let operator = monitors
        .get("tributary-operator")
        .context("PodMonitor tributary-operator")?;
    let jobs = monitors
        .get("tributary-jobs")
        .context("PodMonitor tributary-jobs")?;

    // The operator's pods: the Deployment's selector, its admin port, the resource's namespace
    // label kept over the pod's.
    let dep = of_kind(&docs, "Deployment")[0];
    ensure!(
        operator["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"],
        "{operator}"
    );
    let ports = &dep["spec"]["template"]["spec"]["containers"][0]["ports"];
    ensure!(ports[0]["name"] == "admin", "{ports}");
    let ep = &operator["spec"]["podMetricsEndpoints"][0];
    ensure!(ep["port"] == "admin" && ep["honorLabels"] == true, "{ep}");
    ensure!(
        ep["relabelings"][0]
            == serde_json::json!({"targetLabel": "job", "replacement": "tributary-operator"}),
        "{ep}"
    );

    // The job pods: the labels operator/src/controller/build/labels.rs gives them (name and
    // managed-by; instance is the resource), their admin port, in the watched namespaces.
    ensure!(
        jobs["spec"]["selector"]["matchLabels"]
            == serde_json::json!({
                "app.kubernetes.io/name": "tributary-job",
                "app.kubernetes.io/managed-by": "tributary-operator",
            }),
        "{jobs}"
    );
    ensure!(
        jobs["spec"]["namespaceSelector"]
            == serde_json::json!({"matchNames": ["analytics", "ops"]}),
        "{jobs}"
    );
    let ep = &jobs["spec"]["podMetricsEndpoints"][0];
    ensure!(ep["port"] == "admin" && ep["path"] == "/metrics", "{ep}");
    let relabel = ep["relabelings"].as_array().context("relabelings")?;
    ensure!(
        relabel
            .contains(&serde_json::json!({"targetLabel": "job", "replacement": "tributary-job"})),
        "{ep}"
    );
    ensure!(
        relabel.contains(&serde_json::json!({
            "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
            "targetLabel": "pipeline",
        })),
        "{ep}"
    );
    // Every namespace without watchNamespaces.
    let docs = render(&["--api-versions", API])?;
    let jobs = of_kind(&docs, "PodMonitor")
        .into_iter()
        .find(|m| m["metadata"]["name"] == "tributary-jobs")
        .context("jobs PodMonitor")?;
    ensure!(
        jobs["spec"]["namespaceSelector"] == serde_json::json!({"any": true}),
        "{jobs}"
    );

    // The PrometheusRule is files/alerts.yaml, as promtool checks it.
    let rule = of_kind(&docs, "PrometheusRule")[0];
    let file: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("files/alerts.yaml"))?)?;
    ensure!(
        rule["spec"] == file,
        "the PrometheusRule differs from files/alerts.yaml"
    );
    Ok(())
}

#[test]
fn dashboards_render_as_configmaps_for_the_grafana_sidecar() -> Result<()> {
    let mut files = BTreeMap::new();
    for e in std::fs::read_dir(chart().join("dashboards"))? {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "json") {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .context("name")?
                .to_string();
            files.insert(
                name,
                serde_json::from_str::<Value>(&std::fs::read_to_string(&path)?)?,
            );
        }
    }
    ensure!(files.len() >= 6, "{:?}", files.keys());

    let docs = render(&[])?;
    ensure!(
        !of_kind(&docs, "ConfigMap")
            .iter()
            .any(|c| c["metadata"]["labels"]["grafana_dashboard"].is_string()),
        "dashboards are opt-in"
    );

    let docs = render(&[
        "--set",
        "monitoring.dashboards.enabled=true",
        "--set",
        "monitoring.dashboards.namespace=grafana",
        "--set",
        "monitoring.dashboards.annotations.grafana_folder=Tributary",
    ])?;
    let maps: Vec<&Value> = of_kind(&docs, "ConfigMap")
        .into_iter()
        .filter(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .collect();
    ensure!(maps.len() == files.len(), "{} ConfigMaps", maps.len());
    let mut seen = BTreeSet::new();
    for m in maps {
        ensure!(m["metadata"]["namespace"] == "grafana", "{}", m["metadata"]);
        ensure!(
            m["metadata"]["annotations"]["grafana_folder"] == "Tributary",
            "{}",
            m["metadata"]
        );
        let data = m["data"].as_object().context("data")?;
        ensure!(data.len() == 1, "one dashboard per ConfigMap");
        let (key, body) = data.iter().next().context("data")?;
        let file = key.strip_prefix("tributary-").context("key")?;
        let want = files
            .get(file)
            .with_context(|| format!("{key}: no such file"))?;
        let got: Value = serde_json::from_str(body.as_str().context("string")?)?;
        ensure!(&got == want, "{key} differs from dashboards/{file}");
        seen.insert(file.to_string());
    }
    ensure!(seen.len() == files.len(), "{seen:?}");
    Ok(())
}
