//! The local node agent (test tooling, `xtask/src/agent/`) runs pods as local processes: a Pod
//! with the `agent-fixture` image becomes Running and Ready on a 127.x address and sees its
//! environment, ConfigMap, Secret, service-account token and PVC; it is restarted when it exits
//! and killed when deleted; a StatefulSet's pod keeps its PVC data across deletion; an image
//! that maps to no binary waits with a clear reason. Runs against the stack's agent
//! (`cargo xtask stack up`); fails, never skips, without it.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tributary_tests::{eventually, unique};

const TIMEOUT: Duration = Duration::from_secs(60);
const FIXTURE_IMAGE: &str = "ghcr.io/tributary-dev/agent-fixture:test";
const PORT: u16 = 8080;

async fn client() -> Result<Client> {
    tributary_tests::cluster::admin_client().await
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    Ok(serde_json::from_value(v)?)
}

async fn namespace(c: &Client, prefix: &str) -> Result<String> {
    let ns = unique(prefix);
    Api::<Namespace>::all(c.clone())
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    Ok(ns)
}

async fn delete_namespace(c: &Client, ns: &str) {
    let _ = Api::<Namespace>::all(c.clone())
        .delete(ns, &DeleteParams::default())
        .await;
}

/// The fixture container: serves on its pod IP, reports env and the listed files.
fn fixture_container(files: &[&str], data_dir: Option<&str>) -> Value {
    let mut env = vec![
        json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "FIXTURE_FILES", "value": files.join(":")}),
    ];
    if let Some(d) = data_dir {
        env.push(json!({"name": "DATA_DIR", "value": d}));
    }
    json!({
        "name": "main",
        "image": FIXTURE_IMAGE,
        "env": env,
        "ports": [{"name": "http", "containerPort": PORT}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
        "livenessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 2},
    })
}

/// Create, retrying while the namespace's default ServiceAccount does not exist yet.
async fn create_pod(api: &Api<Pod>, pod: &Pod) -> Result<Pod> {
    eventually("the pod to be accepted", TIMEOUT, || async {
        match api.create(&PostParams::default(), pod).await {
            Ok(p) => Ok(Some(p)),
            Err(kube::Error::Api(e)) if e.message.contains("serviceaccount") => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

/// Wait until the named pod (with a UID other than `not_uid`) is Running and Ready.
async fn ready_pod(api: &Api<Pod>, name: &str, not_uid: Option<&str>) -> Result<Pod> {
    eventually(
        &format!("pod {name} Running and Ready"),
        TIMEOUT,
        || async {
            let Some(p) = api.get_opt(name).await? else {
                return Ok(None);
            };
            let st = p.status.clone().unwrap_or_default();
            let ready = st
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let fresh = not_uid.is_none_or(|u| p.uid().as_deref() != Some(u));
            Ok((fresh && ready && st.phase.as_deref() == Some("Running")).then_some(p))
        },
    )
    .await
}

fn pod_ip(p: &Pod) -> Result<String> {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .context("no podIP")
}

/// GET http://ip:PORT/path (plain sockets: the fixture speaks HTTP/1.0).
fn http_get(ip: &str, path: &str) -> Result<String> {
    let mut s = std::net::TcpStream::connect((ip, PORT))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("no HTTP body")?;
    if !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_string())
}

fn seen(ip: &str) -> Result<Value> {
    Ok(serde_json::from_str(&http_get(ip, "/seen")?)?)
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

#[tokio::test]
async fn a_pod_runs_sees_its_spec_restarts_and_dies_with_its_deletion() -> Result<()> {
    let c = client().await?;
    let ns = namespace(&c, "agent").await?;
    let pp = PostParams::default();
    Api::<ConfigMap>::namespaced(c.clone(), &ns)
        .create(
            &pp,
            &from(json!({"metadata": {"name": "cfg"},
            "data": {"job.yaml": "sources: 3\n", "FIXTURE_FROM_CM": "from-configmap"}}))?,
        )
        .await?;
    Api::<Secret>::namespaced(c.clone(), &ns)
        .create(
            &pp,
            &from(json!({"metadata": {"name": "creds"},
            "stringData": {"password": "s3cret", "token.txt": "file-secret"}}))?,
        )
        .await?;
    Api::<PersistentVolumeClaim>::namespaced(c.clone(), &ns)
        .create(
            &pp,
            &from(json!({"metadata": {"name": "state"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}))?,
        )
        .await?;
    let mut container = fixture_container(
        &[
            "/etc/tributary/job.yaml",
            "/etc/creds/token.txt",
            "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
        ],
        Some("/var/lib/tributary"),
    );
    container["env"].as_array_mut().context("env")?.push(json!(
        {"name": "FIXTURE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}
    ));
    container["envFrom"] = json!([{"configMapRef": {"name": "cfg"}}]);
    container["volumeMounts"] = json!([
        {"name": "cfg", "mountPath": "/etc/tributary", "readOnly": true},
        {"name": "creds", "mountPath": "/etc/creds"},
        {"name": "state", "mountPath": "/var/lib/tributary"},
    ]);
    let pod: Pod = from(json!({
        "metadata": {"name": "fixture"},
        "spec": {"terminationGracePeriodSeconds": 5, "containers": [container], "volumes": [
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "creds", "secret": {"secretName": "creds"}},
            {"name": "state", "persistentVolumeClaim": {"claimName": "state"}},
        ]}
    }))?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    create_pod(&pods, &pod).await?;
    let running = ready_pod(&pods, "fixture", None).await?;
    let ip = pod_ip(&running)?;
    assert!(ip.starts_with("127."), "pod IP {ip}");
    assert_ne!(ip, "127.0.0.1");
    assert_eq!(
        running.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("tributary-local")
    );

    let s = seen(&ip)?;
    assert_eq!(s["env"]["POD_IP"], ip.as_str());
    assert_eq!(s["env"]["POD_NAME"], "fixture");
    assert_eq!(s["env"]["FIXTURE_PASSWORD"], "s3cret");
    assert_eq!(s["env"]["FIXTURE_FROM_CM"], "from-configmap");
    assert_eq!(s["env"]["KUBERNETES_SERVICE_HOST"], "127.0.0.1");
    assert_eq!(s["hostname"], "fixture");
    let files = &s["files"];
    assert_eq!(files["/etc/tributary/job.yaml"], "sources: 3\n");
    assert_eq!(files["/etc/creds/token.txt"], "file-secret");
    assert_eq!(
        files["/var/run/secrets/kubernetes.io/serviceaccount/namespace"],
        ns.as_str()
    );
    let token = files["/var/run/secrets/kubernetes.io/serviceaccount/token"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(token.split('.').count(), 3, "a JWT, got {token:?}");
    assert_eq!(s["boots"].as_str().map(|b| b.lines().count()), Some(1));
    let first_pid = s["pid"].as_u64().context("pid")?;

    // The process exits: the agent restarts it (first restart without back-off).
    http_get(&ip, "/exit")?;
    let restarted = eventually("restartCount 1 and Ready again", TIMEOUT, || async {
        let p = pods.get("fixture").await?;
        let cs = p.status.clone().unwrap_or_default().container_statuses;
        let c0 = cs.unwrap_or_default().into_iter().next();
        Ok(c0.filter(|c| c.restart_count >= 1 && c.ready))
    })
    .await?;
    let last = restarted.last_state.and_then(|s| s.terminated);
    assert_eq!(last.map(|t| t.exit_code), Some(3));
    let s = seen(&ip)?;
    let second_pid = s["pid"].as_u64().context("pid")?;
    assert_ne!(first_pid, second_pid);
    assert!(!alive(first_pid));
    assert_eq!(s["boots"].as_str().map(|b| b.lines().count()), Some(2));

    // Deletion: the process is killed and the agent finalises the deletion.
    pods.delete("fixture", &DeleteParams::default()).await?;
    eventually("the pod to be gone", TIMEOUT, || async {
        Ok(pods.get_opt("fixture").await?.is_none().then_some(()))
    })
    .await?;
    assert!(!alive(second_pid), "pid {second_pid} survived the deletion");
    delete_namespace(&c, &ns).await;
    Ok(())
}

#[tokio::test]
async fn a_statefulset_pod_keeps_its_volume_across_deletion() -> Result<()> {
    let c = client().await?;
    let ns = namespace(&c, "agent-sts").await?;
    let mut container = fixture_container(&[], Some("/var/lib/tributary"));
    container["volumeMounts"] = json!([{"name": "data", "mountPath": "/var/lib/tributary"}]);
    let sts: StatefulSet = from(json!({
        "metadata": {"name": "store"},
        "spec": {
            "replicas": 1, "serviceName": "store",
            "selector": {"matchLabels": {"app": "store"}},
            "template": {
                "metadata": {"labels": {"app": "store"}},
                "spec": {"terminationGracePeriodSeconds": 5, "containers": [container]}
            },
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
        }
    }))?;
    let api: Api<StatefulSet> = Api::namespaced(c.clone(), &ns);
    eventually("the StatefulSet to be accepted", TIMEOUT, || async {
        Ok(api
            .create(&PostParams::default(), &sts)
            .await
            .ok()
            .map(drop))
    })
    .await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    let first = ready_pod(&pods, "store-0", None).await?;
    let ip = pod_ip(&first)?;
    let boots = seen(&ip)?["boots"].as_str().unwrap_or_default().to_string();
    assert_eq!(boots.lines().count(), 1, "{boots}");

    pods.delete("store-0", &DeleteParams::default()).await?;
    let uid = first.uid().unwrap_or_default();
    let second = ready_pod(&pods, "store-0", Some(&uid)).await?;
    let boots = seen(&pod_ip(&second)?)?["boots"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(boots.lines().count(), 2, "the claim's folder kept: {boots}");
    delete_namespace(&c, &ns).await;
    Ok(())
}

#[tokio::test]
async fn an_unmapped_image_waits_with_a_reason() -> Result<()> {
    let c = client().await?;
    let ns = namespace(&c, "agent-img").await?;
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
    let pod: Pod = from(json!({"metadata": {"name": "nobin"}, "spec": {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": "example.com/no-such-binary-anywhere:1"}]}}))?;
    create_pod(&pods, &pod).await?;
    let (reason, message) = eventually("a waiting reason", TIMEOUT, || async {
        let p = pods.get("nobin").await?;
        let cs = p
            .status
            .unwrap_or_default()
            .container_statuses
            .unwrap_or_default();
        let waiting = cs
            .into_iter()
            .next()
            .and_then(|c| c.state)
            .and_then(|s| s.waiting);
        Ok(waiting
            .filter(|w| w.reason.as_deref() == Some("ImageNotMapped"))
            .map(|w| (w.reason, w.message)))
    })
    .await?;
    assert_eq!(reason.as_deref(), Some("ImageNotMapped"));
    assert!(
        message
            .unwrap_or_default()
            .contains("no-such-binary-anywhere")
    );
    delete_namespace(&c, &ns).await;
    Ok(())
}
