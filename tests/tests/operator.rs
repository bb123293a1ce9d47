//! The operator against the local stack's real API server and controller-manager: the chart is
//! installed with helm, the operator binary runs as a local process with the chart's own
//! ServiceAccount token (so its RBAC is what is tested), and the examples are applied with kubectl.
//! No kubelet runs here, so job pods stay Pending: this tier checks the objects, not the job.

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tributary_crds::StreamingEnrichment;
use tributary_crds::conditions::{ConditionType, get_condition};
use tributary_tests::cluster::{admin_client, helm, install_crds, kubectl, kubectl_raw, repo_root};
use tributary_tests::{eventually, unique};

const WAIT: Duration = Duration::from_secs(60);
const HASH: &str = "tributary.dev/config-hash";

/// The operator binary running as a local process; killed when dropped.
struct Operator {
    child: Child,
    admin: String,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A kubeconfig that authenticates as the chart's ServiceAccount.
fn service_account_kubeconfig(
    ns: &str,
    sa: &str,
    dir: &std::path::Path,
) -> Result<std::path::PathBuf> {
    let token = kubectl(&["create", "token", sa, "-n", ns, "--duration", "2h"])?;
    let admin: serde_yaml_like::Value = serde_json::from_str(&kubectl(&[
        "config", "view", "--raw", "--minify", "-o", "json",
    ])?)?;
    let cluster = &admin["clusters"][0]["cluster"];
    let kc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token.trim()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": sa}}],
        "current-context": "sa",
    });
    let path = dir.join(format!("{ns}-{sa}.kubeconfig"));
    std::fs::write(&path, serde_json::to_vec_pretty(&kc)?)?;
    Ok(path)
}

// serde_json::Value under a name that says what it holds here.
mod serde_yaml_like {
    pub type Value = serde_json::Value;
}

/// As the chart's Deployment runs it: `watch` is `TRIBUTARY_WATCH_NAMESPACES` (empty: all).
async fn start_operator(
    kubeconfig: &std::path::Path,
    lease_ns: &str,
    watch: &str,
) -> Result<Operator> {
    let bin = std::env::var("TRIBUTARY_OPERATOR_BIN")
        .context("TRIBUTARY_OPERATOR_BIN is not set: run through `cargo xtask test`")?;
    let port = free_port()?;
    let log = std::fs::File::create(std::env::temp_dir().join(format!("operator-{port}.log")))?;
    let child = Command::new(bin)
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAMESPACE", lease_ns)
        .env("POD_NAME", format!("test-operator-{port}"))
        .env("TRIBUTARY_ADMIN_ADDR", format!("127.0.0.1:{port}"))
        .env("TRIBUTARY_RUNTIME_IMAGE", "tributary-runtime:test")
        .env("TRIBUTARY_WATCH_NAMESPACES", watch)
        .env("RUST_LOG", "info,kube=warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let op = Operator {
        child,
        admin: format!("127.0.0.1:{port}"),
    };
    Ok(op)
}

/// Install the chart in `sys`, watching `ns`, and the current CRDs. Without a kubelet the
/// operator's own Deployment cannot run, so it is installed at zero replicas and the same binary
/// runs here as the chart's ServiceAccount ([`start_operator`]).
fn install_chart(sys: &str, ns: &str) -> Result<()> {
    let chart = repo_root().join("charts/tributary");
    helm(&[
        "install",
        "tributary",
        chart.to_str().context("path")?,
        "-n",
        sys,
        "--set",
        "replicaCount=0",
        "--set",
        &format!("watchNamespaces={{{ns}}}"),
    ])?;
    // Helm never upgrades CRDs; apply the current ones the way the chart's notes tell users to.
    install_crds()
}

/// `kubectl auth can-i <args> --as <user>`: `yes` or `no`.
fn can_i(user: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["auth", "can-i"];
    full.extend(args.iter().copied());
    full.extend(["--as", user]);
    // The answer is stdout's first line; kubectl may add warnings on stderr after it.
    let (_, out) = kubectl_raw(&full, None)?;
    Ok(out.lines().next().unwrap_or_default().trim().to_string())
}

/// GET a path of the operator's admin server with a raw HTTP/1.0 request (no client dependency).
async fn admin_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    Ok((code, buf))
}

async fn wait_ready(op: &Operator) -> Result<()> {
    eventually("operator /readyz", WAIT, || async {
        Ok(admin_get(&op.admin, "/readyz")
            .await
            .ok()
            .filter(|(c, _)| *c == 200))
    })
    .await?;
    Ok(())
}

fn owned_by(meta: &kube::api::ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.uid == uid && r.controller == Some(true)))
}

async fn get_se(api: &Api<StreamingEnrichment>, name: &str) -> Result<StreamingEnrichment> {
    Ok(api.get(name).await?)
}

fn example_in(file: &str, ns: &str) -> Result<String> {
    let body = std::fs::read_to_string(repo_root().join("examples").join(file))?;
    // Examples may name a namespace; tests run each in a namespace of their own.
    Ok(body.replace("namespace: analytics", &format!("namespace: {ns}")))
}

/// A merge patch of a resource, as a user would type it.
fn patch_spec(name: &str, ns: &str, patch: &str) -> Result<String> {
    kubectl(&[
        "patch", "se", name, "-n", ns, "--type", "merge", "-p", patch,
    ])
}

fn apply(yaml: &str, ns: &str) -> Result<(bool, String)> {
    kubectl_raw(&["apply", "--server-side", "-n", ns, "-f", "-"], Some(yaml))
}

async fn sts_hash(api: &Api<StatefulSet>, name: &str) -> Result<Option<String>> {
    Ok(api
        .get_opt(name)
        .await?
        .and_then(|s| s.spec?.template.metadata?.annotations?.get(HASH).cloned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_reconciles_examples_through_their_lifecycle() -> Result<()> {
    let client = admin_client().await?;
    let sys = unique("tributary-system");
    let ns = unique("pipelines");
    kubectl(&["create", "namespace", &sys])?;
    kubectl(&["create", "namespace", &ns])?;

    // It watches the test's namespace only, as the other test here runs an operator beside it
    // (the default, every namespace with a ClusterRole, is what the end-to-end test installs).
    install_chart(&sys, &ns)?;

    let tmp = std::env::temp_dir();
    let sa_kc = service_account_kubeconfig(&sys, "tributary", &tmp)?;
    let op = start_operator(&sa_kc, &sys, &ns).await?;
    wait_ready(&op).await?;

    let result = lifecycle(&client, &ns, &sys, &sa_kc, op).await;

    let _ = helm(&["uninstall", "tributary", "-n", &sys]);
    let _ = kubectl(&["delete", "namespace", &ns, &sys, "--wait=false"]);
    result
}

/// `watchNamespaces`: the chart grants Roles in the listed namespaces only, and the operator,
/// running with exactly that, runs the resources there and leaves the others alone. An operator
/// that watched every namespace would be refused its cluster-wide watches and never be ready.
#[tokio::test]
async fn an_operator_scoped_to_namespaces_runs_only_those() -> Result<()> {
    let client = admin_client().await?;
    let sys = unique("tributary-scoped");
    let mine = unique("scoped-in");
    let other = unique("scoped-out");
    for ns in [&sys, &mine, &other] {
        kubectl(&["create", "namespace", ns])?;
    }
    let result = async {
        install_chart(&sys, &mine)?;
        let sa = format!("system:serviceaccount:{sys}:tributary");
        for (answer, args) in [
            ("yes", vec!["patch", "statefulsets", "-n", mine.as_str()]),
            (
                "yes",
                vec!["watch", "streamingenrichments", "-n", mine.as_str()],
            ),
            ("no", vec!["patch", "statefulsets", "-n", other.as_str()]),
            ("no", vec!["list", "streamingenrichments", "-A"]),
        ] {
            let out = can_i(&sa, &args)?;
            ensure!(out == answer, "can-i {}: {out}", args.join(" "));
        }
        let sa_kc = service_account_kubeconfig(&sys, "tributary", &std::env::temp_dir())?;
        let op = start_operator(&sa_kc, &sys, &mine).await?;
        wait_ready(&op).await?;
        for ns in [&mine, &other] {
            let (ok, out) = apply(&example_in("minimal.yaml", ns)?, ns)?;
            ensure!(ok, "applying minimal.yaml in {ns}: {out}");
        }
        let name = "sales-minimal";
        let mine_sts: Api<StatefulSet> = Api::namespaced(client.clone(), &mine);
        eventually("the watched namespace's StatefulSet", WAIT, || async {
            Ok(mine_sts.get_opt(name).await?)
        })
        .await?;
        let mine_se: Api<StreamingEnrichment> = Api::namespaced(client.clone(), &mine);
        eventually("the watched resource's status", WAIT, || async {
            Ok(mine_se
                .get(name)
                .await?
                .status
                .filter(|s| s.observed_generation.is_some()))
        })
        .await?;
        // The other resource was applied at the same time: had the operator taken it, it would
        // have its children by now.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let other_sts: Api<StatefulSet> = Api::namespaced(client.clone(), &other);
        ensure!(
            other_sts.get_opt(name).await?.is_none(),
            "a StatefulSet appeared in an unwatched namespace"
        );
        let other_se: Api<StreamingEnrichment> = Api::namespaced(client.clone(), &other);
        ensure!(
            other_se.get(name).await?.status.is_none(),
            "a resource in an unwatched namespace got a status"
        );
        Ok(())
    }
    .await;
    let _ = helm(&["uninstall", "tributary", "-n", &sys]);
    let _ = kubectl(&["delete", "namespace", &sys, &mine, &other, "--wait=false"]);
    result
}

async fn lifecycle(
    client: &Client,
    ns: &str,
    sys: &str,
    sa_kc: &std::path::Path,
    op: Operator,
) -> Result<()> {
    let se_api: Api<StreamingEnrichment> = Api::namespaced(client.clone(), ns);
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let svc_api: Api<Service> = Api::namespaced(client.clone(), ns);
    let pdb_api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    let pvc_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let name = "sales-minimal";

    // --- Apply the minimal example: every child appears, owned by the resource.
    let (ok, out) = apply(&example_in("minimal.yaml", ns)?, ns)?;
    ensure!(ok, "applying minimal.yaml: {out}");
    let uid = get_se(&se_api, name).await?.uid().context("uid")?;
    let sts = eventually("the StatefulSet", WAIT, || async {
        Ok(sts_api.get_opt(name).await?)
    })
    .await?;
    ensure!(
        owned_by(&sts.metadata, &uid),
        "StatefulSet not owned by the resource"
    );
    let spec = sts.spec.clone().context("sts spec")?;
    ensure!(spec.replicas == Some(1));
    ensure!(spec.service_name.as_deref() == Some(name));
    let pod = spec.template.spec.clone().context("pod spec")?;
    ensure!(pod.automount_service_account_token == Some(false));
    let psc = pod
        .security_context
        .clone()
        .context("pod securityContext")?;
    ensure!(psc.run_as_non_root == Some(true));
    ensure!(psc.seccomp_profile.map(|s| s.type_) == Some("RuntimeDefault".into()));
    let c = &pod.containers[0];
    ensure!(
        c.image.as_deref() == Some("tributary-runtime:test"),
        "operator default image"
    );
    let csc = c
        .security_context
        .clone()
        .context("container securityContext")?;
    ensure!(csc.read_only_root_filesystem == Some(true));
    ensure!(csc.allow_privilege_escalation == Some(false));
    ensure!(csc.capabilities.and_then(|c| c.drop) == Some(vec!["ALL".into()]));
    ensure!(c.liveness_probe.is_some() && c.readiness_probe.is_some());
    let vct = spec.volume_claim_templates.clone().unwrap_or_default();
    ensure!(vct.len() == 1 && vct[0].metadata.name.as_deref() == Some("state"));
    let hash1 = sts_hash(&sts_api, name)
        .await?
        .context("config hash annotation")?;

    let cm = cm_api.get(&format!("{name}-config")).await?;
    ensure!(owned_by(&cm.metadata, &uid));
    let job = cm
        .data
        .unwrap_or_default()
        .remove("job.yaml")
        .context("job.yaml")?;
    let cfg = tributary_crds::job_config::JobConfig::from_yaml(&job)?;
    ensure!(cfg.sources.sales.stream == "ara-web-sale");
    for svc in [name.to_string(), format!("{name}-metrics")] {
        let s = svc_api.get(&svc).await?;
        ensure!(owned_by(&s.metadata, &uid), "service {svc} not owned");
    }
    let headless = svc_api.get(name).await?;
    ensure!(headless.spec.and_then(|s| s.cluster_ip) == Some("None".into()));
    ensure!(owned_by(&pdb_api.get(name).await?.metadata, &uid));

    // Status: observedGeneration, conditions, selector; the controller-manager created the pod.
    let se = eventually("status with observedGeneration 1", WAIT, || async {
        let se = get_se(&se_api, name).await?;
        Ok(se
            .status
            .clone()
            .filter(|s| s.observed_generation == Some(1) && s.replicas == 1)
            .map(|_| se))
    })
    .await?;
    let st = se.status.context("status")?;
    ensure!(
        st.selector
            .as_deref()
            .is_some_and(|s| s.contains("app.kubernetes.io/instance=sales-minimal"))
    );
    let ready = get_condition(&st.conditions, ConditionType::Ready).context("Ready condition")?;
    ensure!(
        ready.status == "False" && ready.reason == "WaitingForPods",
        "{ready:?}"
    );
    ensure!(get_condition(&st.conditions, ConditionType::Progressing).is_some());
    let degraded = get_condition(&st.conditions, ConditionType::Degraded).context("Degraded")?;
    ensure!(degraded.status == "False");

    // --- A spec change rolls the pods through the configuration hash.
    patch_spec(name, ns, r#"{"spec":{"join":{"maxWait":"20m"}}}"#)?;
    let hash2 = eventually("a new configuration hash", WAIT, || async {
        Ok(sts_hash(&sts_api, name).await?.filter(|h| *h != hash1))
    })
    .await?;
    let job = cm_api
        .get(&format!("{name}-config"))
        .await?
        .data
        .unwrap_or_default();
    ensure!(
        job.get("job.yaml")
            .is_some_and(|j| j.contains("maxWait: 20m")),
        "ConfigMap not updated"
    );

    // --- Suspend scales to zero and keeps the state volume; resume brings the same volume back.
    let pvc_name = format!("state-{name}-0");
    let pvc = eventually("the state PVC", WAIT, || async {
        Ok(pvc_api.get_opt(&pvc_name).await?)
    })
    .await?;
    let pvc_uid = pvc.uid().context("pvc uid")?;
    patch_spec(name, ns, r#"{"spec":{"suspend":true}}"#)?;
    eventually(
        "suspended (replicas 0, Ready=False Suspended)",
        WAIT,
        || async {
            let sts = sts_api.get(name).await?;
            let se = get_se(&se_api, name).await?;
            let suspended = se
                .status
                .as_ref()
                .and_then(|s| get_condition(&s.conditions, ConditionType::Ready))
                .is_some_and(|c| c.reason == "Suspended");
            Ok((sts.spec.and_then(|s| s.replicas) == Some(0) && suspended).then_some(()))
        },
    )
    .await?;
    ensure!(
        sts_hash(&sts_api, name).await? == Some(hash2.clone()),
        "suspend must not roll the configuration"
    );
    ensure!(
        pvc_api.get(&pvc_name).await?.uid() == Some(pvc_uid.clone()),
        "state volume kept"
    );
    patch_spec(name, ns, r#"{"spec":{"suspend":false}}"#)?;
    eventually("resumed at 1 replica", WAIT, || async {
        let sts = sts_api.get(name).await?;
        Ok((sts.spec.and_then(|s| s.replicas) == Some(1)).then_some(()))
    })
    .await?;
    ensure!(
        pvc_api.get(&pvc_name).await?.uid() == Some(pvc_uid),
        "same state volume after resume"
    );

    // --- The schema and CEL refuse invalid resources with a readable message.
    let bad_cel = example_in("minimal.yaml", ns)?
        .replace("name: sales-minimal", "name: bad-scaling")
        + "  scaling: { mode: Shards, minReplicas: 5, maxReplicas: 2 }\n";
    let (ok, out) = apply(&bad_cel, ns)?;
    ensure!(
        !ok && out.contains("scaling.minReplicas must not exceed scaling.maxReplicas"),
        "{out}"
    );
    let bad_enum = example_in("minimal.yaml", ns)?
        .replace("name: sales-minimal", "name: bad-enum")
        .replace("spec:\n", "spec:\n  upgradeMode: Sometimes\n");
    let (ok, out) = apply(&bad_enum, ns)?;
    ensure!(
        !ok && out.contains("upgradeMode") && out.contains("Unsupported value"),
        "{out}"
    );
    let bad_duration = example_in("minimal.yaml", ns)?
        .replace("name: sales-minimal", "name: bad-duration")
        .replace("spec:\n", "spec:\n  join: { maxWait: 10 }\n");
    let (ok, out) = apply(&bad_duration, ns)?;
    ensure!(!ok && out.contains("maxWait"), "{out}");

    // --- What only the operator can check: Degraded with the reason, and a Warning event.
    let dup = example_in("minimal.yaml", ns)?
        .replace("name: sales-minimal", "name: same-streams")
        .replace(
            "stream: ara-web-customer-address",
            "stream: ara-web-customer",
        );
    let (ok, out) = apply(&dup, ns)?;
    ensure!(ok, "{out}");
    let degraded = eventually("Degraded InvalidSpec", WAIT, || async {
        let se = get_se(&se_api, "same-streams").await?;
        Ok(se
            .status
            .and_then(|s| get_condition(&s.conditions, ConditionType::Degraded).cloned())
            .filter(|c| c.status == "True" && c.reason == "InvalidSpec"))
    })
    .await?;
    ensure!(
        degraded.message.contains("name the same stream"),
        "{}",
        degraded.message
    );
    ensure!(
        sts_api.get_opt("same-streams").await?.is_none(),
        "no children for an invalid spec"
    );
    eventually("an InvalidSpec warning event", WAIT, || async {
        let out = kubectl(&[
            "get",
            "events.events.k8s.io",
            "-n",
            ns,
            "-o",
            "json",
            "--field-selector",
            "regarding.name=same-streams",
        ])?;
        Ok((out.contains("InvalidSpec") && out.contains("Warning")).then_some(()))
    })
    .await?;

    // --- Least privilege: what the operator's ServiceAccount must not do.
    let sa = format!("system:serviceaccount:{sys}:tributary");
    for args in [
        vec!["list", "secrets", "-A"],
        vec!["get", "secrets", "-n", ns],
        vec!["create", "pods/exec", "-n", ns],
        vec!["escalate", "clusterroles"],
        vec!["bind", "clusterroles"],
        vec!["impersonate", "users"],
        vec!["impersonate", "serviceaccounts", "-A"],
        vec!["delete", "statefulsets", "-n", ns],
        vec!["create", "pods", "-n", ns],
        vec!["update", "customresourcedefinitions"],
    ] {
        let out = can_i(&sa, &args)?;
        ensure!(out == "no", "operator may {}: {out}", args.join(" "));
    }
    let out = can_i(&sa, &["patch", "statefulsets", "-n", ns])?;
    ensure!(
        out == "yes",
        "the operator must be able to apply StatefulSets: {out}"
    );

    // --- Kill the operator mid-reconcile: a fresh one converges with no duplicate children.
    let full = example_in("full.yaml", ns)?;
    let (ok, out) = apply(&full, ns)?;
    ensure!(ok, "{out}");
    drop(op); // SIGKILL, right after the apply
    let op2 = start_operator(sa_kc, sys, ns).await?;
    wait_ready(&op2).await?;
    eventually("the full example's StatefulSet", WAIT, || async {
        Ok(sts_api.get_opt("sales-enrichment").await?)
    })
    .await?;
    let lp = ListParams::default().labels("app.kubernetes.io/instance=sales-enrichment");
    ensure!(sts_api.list(&lp).await?.items.len() == 1);
    ensure!(svc_api.list(&lp).await?.items.len() == 2);
    ensure!(cm_api.list(&lp).await?.items.len() == 1);
    ensure!(pdb_api.list(&lp).await?.items.len() == 1);
    let full_sts = sts_api.get("sales-enrichment").await?;
    let tmpl = full_sts.spec.context("spec")?.template;
    let labels: BTreeMap<String, String> = tmpl.metadata.and_then(|m| m.labels).unwrap_or_default();
    ensure!(
        labels.get("team").map(String::as_str) == Some("analytics"),
        "pod label override"
    );
    let env: Vec<String> = tmpl.spec.context("pod")?.containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.value_from
                .as_ref()
                .is_some_and(|v| v.secret_key_ref.is_some())
        })
        .map(|e| e.name)
        .collect();
    // AWS and OpenSearch credentials, and the control token from the resource's control
    // Secret (optional: this operator runs without a control key, so there is none).
    ensure!(
        env.len() == 5 && env.iter().any(|e| e == "TRIBUTARY_CONTROL_TOKEN"),
        "credentials come from secret references: {env:?}"
    );

    // Drift: a user's edit of an owned field is reverted on the next reconcile.
    sts_api
        .patch(
            "sales-enrichment",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "spec": {"template": {"metadata": {"annotations": {HASH: "tampered"}}}}
            })),
        )
        .await?;
    kubectl(&["annotate", "se", "sales-enrichment", "-n", ns, "touch=1"])?;
    eventually("the tampered hash restored", WAIT, || async {
        Ok(sts_hash(&sts_api, "sales-enrichment")
            .await?
            .filter(|h| h != "tampered"))
    })
    .await?;

    // --- Delete: children are garbage-collected through their owner references.
    kubectl(&[
        "delete",
        "se",
        name,
        "-n",
        ns,
        "--wait=true",
        "--timeout=60s",
    ])?;
    eventually(
        "children of the deleted resource collected",
        WAIT,
        || async {
            let gone = sts_api.get_opt(name).await?.is_none()
                && cm_api.get_opt(&format!("{name}-config")).await?.is_none()
                && svc_api.get_opt(name).await?.is_none()
                && svc_api.get_opt(&format!("{name}-metrics")).await?.is_none()
                && pdb_api.get_opt(name).await?.is_none();
            Ok(gone.then_some(()))
        },
    )
    .await?;

    let (code, metrics) = admin_get(&op2.admin, "/metrics").await?;
    ensure!(
        code == 200 && metrics.contains("tributary_operator_reconciles_total"),
        "{metrics}"
    );
    if !metrics.contains("tributary_operator_leader 1") {
        bail!("the operator should report leadership: {metrics}");
    }

    // --- Two replicas: the second waits as a ready standby and takes over when the leader dies.
    let op3 = start_operator(sa_kc, sys, ns).await?;
    wait_ready(&op3).await?;
    let (_, standby) = admin_get(&op3.admin, "/metrics").await?;
    ensure!(
        standby.contains("tributary_operator_leader 0"),
        "a second replica must not lead: {standby}"
    );
    drop(op2);
    eventually(
        "the standby to take the Lease",
        Duration::from_secs(45),
        || async {
            let (_, m) = admin_get(&op3.admin, "/metrics").await?;
            Ok(m.contains("tributary_operator_leader 1").then_some(()))
        },
    )
    .await?;
    // And it reconciles: a new resource gets its children.
    let again =
        example_in("minimal.yaml", ns)?.replace("name: sales-minimal", "name: after-failover");
    let (ok, out) = apply(&again, ns)?;
    ensure!(ok, "{out}");
    eventually("children from the new leader", WAIT, || async {
        Ok(sts_api.get_opt("after-failover").await?)
    })
    .await?;
    Ok(())
}
