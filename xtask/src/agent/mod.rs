//! The local node agent: TEST TOOLING, a small kubelet stand-in for the local stack, which has
//! an API server and a controller-manager but no scheduler, no kubelet and no container runtime.
//!
//! It registers one Node and keeps it alive ([`node`]), binds the Pending pods that have no node
//! (through `pods/binding`, as a scheduler would), and runs each container of the pods on its
//! node as a local process ([`pod`], [`container`], [`process`]): the image maps to a local
//! binary ([`image`]), the environment and volumes come from the Pod spec ([`env`],
//! [`volumes`]), each pod gets an address of its own in 127.0.0.0/8 ([`ipam`]), probes drive
//! readiness and restarts ([`probe`], [`backoff`]), and the Pod status reports it all
//! ([`status`]). Security contexts, resource limits, init containers, image pulls and
//! `kubectl logs`/`exec` are not implemented; docs/development.md says what is and where the logs
//! are.

mod backoff;
mod container;
mod env;
mod image;
mod ipam;
mod node;
mod pod;
mod probe;
mod process;
mod status;
mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, reflector, watcher};

use tokio::sync::watch;

use crate::stack::Ctx;
use status::PodRuntime;

/// Field manager of every write.
pub const MANAGER: &str = "tributary-node-agent";
/// The version the Node reports (the stack's control plane version).
pub const KUBELET_VERSION: &str = crate::stack::KUBERNETES_VERSION;
pub const DEFAULT_NODE: &str = "tributary-local";
const HOST_IP: &str = "127.0.0.1";
const API_PORT: &str = "6443";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("reading the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("kube client: {0}")]
    Client(#[from] kube::Error),
    #[error("registering node {node}: {source}")]
    Register { node: String, source: kube::Error },
    #[error("the pod watch ended")]
    WatchEnded,
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// `cargo xtask node-agent`: run the node agent in the foreground.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Name of the Node to register.
    #[arg(long, env = "NODE_AGENT_NODE_NAME", default_value = DEFAULT_NODE)]
    pub node_name: String,
    /// Admin kubeconfig (default: the stack's, `$TRIBUTARY_HOME/stack/kubeconfig`).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The agent's folder: pods/<ns>_<name>_<uid>/ (logs, volumes, state), pvc/<ns>/<claim>/
    /// (default: `$TRIBUTARY_HOME/agent`).
    #[arg(long, env = "NODE_AGENT_DIR")]
    pub dir: Option<PathBuf>,
    /// Colon-separated folders where images are looked up as binaries (default: the cargo
    /// target's `debug` folder, then the repository's `tests/fixtures/bin`).
    #[arg(long, env = "NODE_AGENT_BIN_PATH")]
    pub bin_path: Option<String>,
    /// First restart back-off after the immediate one, in seconds (the kubelet's 10).
    #[arg(long, default_value_t = 10)]
    pub backoff_initial_secs: u64,
    /// Restart back-off cap, in seconds (the kubelet's 300).
    #[arg(long, default_value_t = 300)]
    pub backoff_max_secs: u64,
}

/// The default binary search path: `$CARGO_TARGET_DIR/debug` (the folder of this very binary
/// when run through cargo) and `tests/fixtures/bin`.
pub fn default_bin_path(repo: &Path) -> String {
    let debug = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("debug")))
        .unwrap_or_else(|| repo.join("target/debug"));
    format!(
        "{}:{}",
        debug.display(),
        repo.join("tests/fixtures/bin").display()
    )
}

pub fn default_dir(ctx: &Ctx) -> PathBuf {
    ctx.home.join("agent")
}

/// What every pod worker shares.
pub struct Shared {
    pub client: kube::Client,
    pub node: String,
    pub host_ip: String,
    pub search: Vec<PathBuf>,
    pub dir: PathBuf,
    pub backoff: backoff::Backoff,
    ipam: Mutex<ipam::Ipam>,
}

impl Shared {
    pub fn pod_dir(&self, pod: &Pod) -> PathBuf {
        let m = &pod.metadata;
        self.dir.join("pods").join(format!(
            "{}_{}_{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default(),
            m.uid.as_deref().unwrap_or_default()
        ))
    }

    pub fn claims_dir(&self) -> PathBuf {
        self.dir.join("pvc")
    }

    pub fn search_display(&self) -> String {
        let dirs: Vec<String> = self
            .search
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        dirs.join(":")
    }

    pub fn allocate_ip(&self, uid: &str) -> Option<String> {
        let mut ipam = self.ipam.lock().unwrap_or_else(|e| e.into_inner());
        ipam.allocate(uid).map(|ip| ip.to_string())
    }

    pub fn release_ip(&self, uid: &str) {
        self.ipam
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(uid);
    }

    /// Variables every container gets: a plain PATH and HOME, its hostname, and where the API
    /// server is (in-cluster clients read `KUBERNETES_SERVICE_HOST`/`_PORT`). Nothing of the
    /// agent's own environment leaks into pods.
    pub fn base_env(&self, hostname: &str) -> Vec<(String, String)> {
        [
            (
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ),
            ("HOME", "/root"),
            ("HOSTNAME", hostname),
            ("KUBERNETES_SERVICE_HOST", HOST_IP),
            ("KUBERNETES_SERVICE_PORT", API_PORT),
            ("KUBERNETES_SERVICE_PORT_HTTPS", API_PORT),
            ("KUBERNETES_PORT", "tcp://127.0.0.1:6443"),
            ("KUBERNETES_PORT_443_TCP", "tcp://127.0.0.1:6443"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// Whether this node should bind the pod: unbound, not being deleted, not finished, for the
/// default scheduler, no scheduling gates, and its nodeSelector satisfied by the node's labels.
/// (Taints, tolerations and affinity are not evaluated: the node has no taints.)
pub fn bindable(pod: &Pod, labels: &BTreeMap<String, String>) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    spec.node_name.as_deref().unwrap_or_default().is_empty()
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded" | "Failed"))
        && matches!(
            spec.scheduler_name.as_deref(),
            None | Some("default-scheduler")
        )
        && spec.scheduling_gates.as_ref().is_none_or(Vec::is_empty)
        && spec
            .node_selector
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v))
}

pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // kube is built with ring; rustls needs the provider chosen once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    rt.block_on(agent(ctx, args))?;
    Ok(())
}

async fn client(path: &Path) -> Result<kube::Client, AgentError> {
    let kc = Kubeconfig::read_from(path).map_err(|source| AgentError::Kubeconfig {
        path: path.to_path_buf(),
        source,
    })?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|source| AgentError::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(kube::Client::try_from(cfg)?)
}

/// Records of pods a previous agent ran (`pods/*/state.json`).
fn load_records(dir: &Path) -> Vec<PodRuntime> {
    let Ok(entries) = std::fs::read_dir(dir.join("pods")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join(pod::STATE_FILE)).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// Kill what is left of a pod that no longer exists, and drop its volumes and record.
async fn clean_up(shared: &Shared, rec: &PodRuntime) {
    for c in &rec.containers {
        if let (Some(pid), Some(ticks)) = (c.pid, c.start_ticks)
            && process::alive(pid, ticks)
        {
            tracing::info!(pod = %rec.name, container = %c.name, pid, "killing a leftover process");
            let mut p = process::Proc::Adopted {
                pid,
                start_ticks: ticks,
            };
            p.terminate(Duration::from_secs(5)).await;
        }
    }
    let dir = shared
        .dir
        .join("pods")
        .join(format!("{}_{}_{}", rec.namespace, rec.name, rec.uid));
    let _ = std::fs::remove_dir_all(dir.join("volumes"));
    let _ = std::fs::remove_file(dir.join(pod::STATE_FILE));
    shared.release_ip(&rec.uid);
}

struct Worker {
    tx: watch::Sender<Option<Arc<Pod>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn agent(ctx: &Ctx, args: Args) -> Result<(), AgentError> {
    let kubeconfig = args
        .kubeconfig
        .unwrap_or_else(|| crate::stack::kubeconfig_path(ctx));
    let dir = args.dir.unwrap_or_else(|| default_dir(ctx));
    let bin_path = args.bin_path.unwrap_or_else(|| default_bin_path(&ctx.repo));
    let client = client(&kubeconfig).await?;
    let shared = Arc::new(Shared {
        client: client.clone(),
        node: args.node_name.clone(),
        host_ip: HOST_IP.into(),
        search: image::search_dirs(&bin_path),
        dir: dir.clone(),
        backoff: backoff::Backoff {
            initial: Duration::from_secs(args.backoff_initial_secs),
            max: Duration::from_secs(args.backoff_max_secs),
        },
        ipam: Mutex::new(ipam::Ipam::default()),
    });
    tracing::info!(node = %shared.node, dir = %dir.display(), bin_path, "node agent starting (test tooling)");

    let since = k8s_openapi::jiff::Timestamp::now().to_string();
    let node_uid = node::register(&client, &shared.node, HOST_IP, &since)
        .await
        .map_err(|source| AgentError::Register {
            node: shared.node.clone(),
            source,
        })?;
    tokio::spawn(node::heartbeat(
        client.clone(),
        shared.node.clone(),
        node_uid,
        HOST_IP.into(),
        since,
    ));
    let labels = node::labels(&shared.node);
    tokio::spawn(reclaim_claims(client.clone(), shared.claims_dir()));

    // Addresses of pods a previous agent ran stay theirs.
    let mut records: HashMap<String, PodRuntime> = HashMap::new();
    for rec in load_records(&dir) {
        if let Ok(ip) = rec.ip.parse() {
            let mut ipam = shared.ipam.lock().unwrap_or_else(|e| e.into_inner());
            ipam.reserve(&rec.uid, ip);
        }
        records.insert(rec.uid.clone(), rec);
    }

    let pods: Api<Pod> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let stream =
        reflector(writer, watcher(pods.clone(), watcher::Config::default())).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut bound: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut adopted_done = false;
    let mut listed = false;
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(watcher::Event::InitDone)) => listed = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!("pod watch: {e}"),
                None => return Err(AgentError::WatchEnded),
            },
            _ = tick.tick() => {}
        }
        // Act only on a complete view: adoption must not mistake an unlisted pod for a gone one.
        if !listed {
            continue;
        }
        let all = reader.state();
        let mut ours = HashSet::new();
        for p in &all {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
            if node == Some(shared.node.as_str()) {
                ours.insert(uid.clone());
                match workers.get(&uid) {
                    Some(w) => {
                        let changed = w.tx.borrow().as_ref().map(|o| &o.metadata.resource_version)
                            != Some(&p.metadata.resource_version);
                        if changed {
                            let _ = w.tx.send(Some(p.clone()));
                        }
                    }
                    None => {
                        let finished = matches!(
                            p.status.as_ref().and_then(|s| s.phase.as_deref()),
                            Some("Succeeded" | "Failed")
                        ) && p.metadata.deletion_timestamp.is_none()
                            && !records.contains_key(&uid);
                        if !finished {
                            let (tx, rx) = watch::channel(Some(p.clone()));
                            let task =
                                tokio::spawn(pod::run(shared.clone(), rx, records.remove(&uid)));
                            workers.insert(uid, Worker { tx, task });
                        }
                    }
                }
            } else if bindable(p, &labels) && !bound.contains(&uid) {
                bound.insert(uid);
                bind(&client, p, &shared.node).await;
            }
        }
        if !adopted_done {
            // Records of pods that are gone: their processes are leftovers.
            for (_, rec) in records.drain() {
                clean_up(&shared, &rec).await;
            }
            adopted_done = true;
        }
        for (uid, w) in &workers {
            if !ours.contains(uid) && w.tx.borrow().is_some() {
                let _ = w.tx.send(None);
            }
        }
        workers.retain(|_, w| !w.task.is_finished());
        bound.retain(|uid| all.iter().any(|p| p.metadata.uid.as_deref() == Some(uid)));
    }
}

/// Folders of claims (`<claims>/<namespace>/<claim>`) that exist on disk.
fn claim_folders(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for ns in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for claim in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            if let (Some(n), Some(c)) = (ns.file_name().to_str(), claim.file_name().to_str()) {
                out.push((n.to_string(), c.to_string()));
            }
        }
    }
    out
}

/// Like a provisioner with `reclaimPolicy: Delete`: a claim folder whose
/// PersistentVolumeClaim has been gone for two scans in a row (30 s apart) is removed, so
/// deleted namespaces do not leave their data behind.
async fn reclaim_claims(client: kube::Client, root: PathBuf) {
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::all(client);
    let mut missing_before: HashSet<(String, String)> = HashSet::new();
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let Ok(list) = pvcs.list(&Default::default()).await else {
            continue;
        };
        let live: HashSet<(String, String)> = list
            .items
            .iter()
            .map(|p| {
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect();
        let missing: HashSet<(String, String)> = claim_folders(&root)
            .into_iter()
            .filter(|k| !live.contains(k))
            .collect();
        for (ns, claim) in missing.intersection(&missing_before) {
            let dir = volumes::claim_dir(&root, ns, claim);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(namespace = %ns, claim = %claim, "claim deleted: folder removed")
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "cannot remove a deleted claim's folder: {e}")
                }
            }
            let _ = std::fs::remove_dir(root.join(ns)); // only when empty
        }
        missing_before = missing;
    }
}

async fn bind(client: &kube::Client, pod: &Pod, node: &str) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..Default::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), node, "bound"),
        Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), "binding: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Result<Pod, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn binds_only_unbound_pods_it_can_run() -> Result<(), serde_json::Error> {
        let labels = node::labels("n1");
        let c = serde_json::json!([{"name": "c"}]);
        assert!(bindable(
            &pod(serde_json::json!({"spec": {"containers": c}}))?,
            &labels
        ));
        assert!(bindable(
            &pod(
                serde_json::json!({"spec": {"containers": c, "nodeSelector": {"kubernetes.io/os": "linux"}}})
            )?,
            &labels
        ));
        for spec in [
            serde_json::json!({"containers": c, "nodeName": "other"}),
            serde_json::json!({"containers": c, "nodeSelector": {"disk": "ssd"}}),
            serde_json::json!({"containers": c, "schedulerName": "custom"}),
            serde_json::json!({"containers": c, "schedulingGates": [{"name": "g"}]}),
        ] {
            assert!(!bindable(&pod(serde_json::json!({"spec": spec}))?, &labels));
        }
        let deleting = pod(serde_json::json!({
            "metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"containers": c}
        }))?;
        assert!(!bindable(&deleting, &labels));
        Ok(())
    }

    #[test]
    fn bin_path_defaults_to_the_target_and_fixtures() {
        let p = default_bin_path(Path::new("/repo"));
        assert!(p.ends_with(":/repo/tests/fixtures/bin"), "{p}");
        assert_eq!(image::search_dirs(&p).len(), 2);
    }
}
