//! The operator's savepoint flow (upgrades and rescales of a running job) as the live tests see
//! it: a watch on the job pods that records every moment pods of two state ids existed together,
//! a watch on the resource's status that records every phase the operation went through, the
//! events published on the resource, the leader Lease of the operator's Deployment, the job
//! pods' own control API (reports only, no token needed), and the teardown every live test does.
//!
//! Every helper reads the real API server or the real replica; none of them fakes anything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch;
use tributary_crds::control::{SavepointReport, StateReport};
use tributary_crds::{OperationPhase, StreamingEnrichment, StreamingEnrichmentStatus};

use crate::cluster::{helm, kubectl};
use crate::pipeline::{Fixture, http};

/// The annotation the operator puts on each job pod: the state id the pod runs on.
pub const STATE_ID_ANNOTATION: &str = "tributary.dev/state-id";
/// The leader Lease of the operator (`--lease-name`'s default, in `operator/src/config.rs`; the
/// chart does not set it), in the operator's namespace. Its holder is the leader's pod name
/// (`POD_NAME`, from the downward API).
pub const LEASE_NAME: &str = "tributary-operator-leader";
/// The label every operator pod of the chart carries.
pub const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=tributary-operator";

/// One state id's run: (state id, every ordinal seen with it, every pod UID seen with it).
pub type Epoch = (String, BTreeSet<u32>, BTreeSet<String>);

/// What the pod watch saw: the job pods by state id, in the order the state ids appeared, and
/// every moment at which pods of two state ids existed together.
#[derive(Default, Debug)]
pub struct PodLog {
    /// (state id, every ordinal seen with it, every pod UID seen with it), in order of first
    /// appearance.
    pub epochs: Vec<Epoch>,
    pub overlaps: Vec<String>,
    pub events: usize,
}

impl PodLog {
    fn observe(&mut self, live: &BTreeMap<String, JobPod>) {
        self.events += 1;
        let ids: BTreeSet<&String> = live.values().map(|p| &p.state_id).collect();
        if ids.len() > 1 {
            self.overlaps.push(format!("{live:?}"));
        }
        for p in live.values() {
            match self.epochs.iter_mut().find(|(e, ..)| *e == p.state_id) {
                Some((_, ordinals, uids)) => {
                    ordinals.insert(p.ordinal);
                    uids.insert(p.uid.clone());
                }
                None => self.epochs.push((
                    p.state_id.clone(),
                    BTreeSet::from([p.ordinal]),
                    BTreeSet::from([p.uid.clone()]),
                )),
            }
        }
    }
}

#[derive(Debug)]
pub struct JobPod {
    pub state_id: String,
    pub ordinal: u32,
    pub uid: String,
}

/// A job pod of resource `sales`, by its name.
pub fn job_pod(pod: &Pod) -> Option<(String, JobPod)> {
    let name = pod.metadata.name.clone()?;
    let ordinal = name.strip_prefix("sales-")?.parse().ok()?;
    let state_id = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATE_ID_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    Some((
        name,
        JobPod {
            state_id,
            ordinal,
            uid,
        },
    ))
}

/// Watch the namespace's job pods until aborted, recording into `log`.
pub async fn watch_pods(api: Api<Pod>, log: Arc<Mutex<PodLog>>) {
    let mut live: BTreeMap<String, JobPod> = BTreeMap::new();
    let mut init: Option<BTreeMap<String, JobPod>> = None;
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = stream.next().await {
        let Ok(event) = event else {
            // The watcher retries by itself (with a relist, reported as Init events).
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        match event {
            watcher::Event::Init => init = Some(BTreeMap::new()),
            watcher::Event::InitApply(pod) => {
                if let (Some(m), Some((name, p))) = (init.as_mut(), job_pod(&pod)) {
                    m.insert(name, p);
                }
            }
            watcher::Event::InitDone => {
                live = init.take().unwrap_or_default();
                log.lock().unwrap_or_else(|e| e.into_inner()).observe(&live);
            }
            watcher::Event::Apply(pod) => {
                if let Some((name, p)) = job_pod(&pod) {
                    live.insert(name, p);
                    log.lock().unwrap_or_else(|e| e.into_inner()).observe(&live);
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some((name, ..)) = job_pod(&pod) {
                    live.remove(&name);
                    log.lock().unwrap_or_else(|e| e.into_inner()).observe(&live);
                }
            }
        }
    }
}

pub async fn status(api: &Api<StreamingEnrichment>) -> Result<StreamingEnrichmentStatus> {
    Ok(api.get("sales").await?.status.unwrap_or_default())
}

/// A condition of a status, by type.
pub fn condition<'a>(s: &'a StreamingEnrichmentStatus, type_: &str) -> Option<&'a Condition> {
    s.conditions.iter().find(|c| c.type_ == type_)
}

/// `type=status reason: message` of a condition, for messages.
pub fn describe_condition(s: &StreamingEnrichmentStatus, type_: &str) -> String {
    match condition(s, type_) {
        Some(c) => format!(
            "{}={} {}: {}",
            c.type_,
            c.status,
            c.reason,
            c.message.chars().take(300).collect::<String>()
        ),
        None => format!("{type_} not set"),
    }
}

/// One change of `status.pendingOperation` as the status watch saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseSeen {
    /// Since the watch started.
    pub at: Duration,
    /// `None`: no operation pending.
    pub phase: Option<OperationPhase>,
    pub savepoint_id: Option<String>,
    pub abort_reason: Option<String>,
}

/// The status watch: the latest status (`None` until the resource exists), and every change of
/// the pending operation's phase, in order.
pub struct StatusWatch {
    pub latest: watch::Receiver<Option<StreamingEnrichmentStatus>>,
    pub phases: Arc<Mutex<Vec<PhaseSeen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusWatch {
    /// Watch resource `sales` in `api`'s namespace: every status write the API server sends.
    pub fn start(api: Api<StreamingEnrichment>) -> Self {
        let (tx, latest) = watch::channel(None);
        let phases: Arc<Mutex<Vec<PhaseSeen>>> = Arc::default();
        let log = phases.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let config = watcher::Config::default().fields("metadata.name=sales");
            let mut stream = watcher(api, config).boxed();
            while let Some(event) = stream.next().await {
                let se = match event {
                    Ok(watcher::Event::Apply(se) | watcher::Event::InitApply(se)) => se,
                    Ok(_) => continue,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let s = se.status.unwrap_or_default();
                let op = s.pending_operation.as_ref();
                let seen = PhaseSeen {
                    at: start.elapsed(),
                    phase: op.map(|o| o.phase),
                    savepoint_id: op.map(|o| o.savepoint_id.clone()),
                    abort_reason: op.and_then(|o| o.abort_reason.clone()),
                };
                {
                    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                    let changed = l.last().is_none_or(|p| {
                        (&p.phase, &p.savepoint_id, &p.abort_reason)
                            != (&seen.phase, &seen.savepoint_id, &seen.abort_reason)
                    });
                    if changed {
                        l.push(seen);
                    }
                }
                tx.send_replace(Some(s));
            }
        });
        Self {
            latest,
            phases,
            task,
        }
    }

    /// Wait until the latest status satisfies `pred`; that status.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&StreamingEnrichmentStatus) -> bool,
    ) -> Result<StreamingEnrichmentStatus> {
        let mut rx = self.latest.clone();
        let found =
            tokio::time::timeout(timeout, rx.wait_for(|s| s.as_ref().is_some_and(&mut pred))).await;
        match found {
            Ok(Ok(s)) => Ok(s.clone().unwrap_or_default()),
            Ok(Err(_)) => bail!("the status watch ended while waiting for {what}"),
            Err(_) => {
                let last = self.latest.borrow().clone().unwrap_or_default();
                bail!(
                    "timed out after {timeout:?} waiting for {what}; phases seen {:?}; last \
                     status: pending {:?}, retry {:?}, {}, {}",
                    self.phases(),
                    last.pending_operation,
                    last.operation_retry,
                    describe_condition(&last, "Degraded"),
                    describe_condition(&last, "Progressing"),
                )
            }
        }
    }

    /// The phase changes seen so far.
    pub fn phases(&self) -> Vec<PhaseSeen> {
        self.phases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The distinct phases seen so far, in order (each once, where it first appeared).
    pub fn distinct_phases(&self) -> Vec<OperationPhase> {
        let mut out: Vec<OperationPhase> = Vec::new();
        for p in self.phases().iter().filter_map(|p| p.phase) {
            if out.last() != Some(&p) {
                out.push(p);
            }
        }
        out
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One event published on the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `eventTime` (or the creation time), RFC 3339: the sort key.
    pub at: String,
    /// `Normal` or `Warning`.
    pub type_: String,
    pub reason: String,
    pub message: String,
    /// The publisher's instance: the operator's identity, its pod name.
    pub reporter: String,
}

/// The events published on resource `sales` of `ns`, oldest first (by `eventTime`: the
/// operator publishes events.k8s.io events). The event recorder folds a repeated event (same
/// reason, same object) into a series that keeps its first message.
pub fn events(ns: &str) -> Result<Vec<Event>> {
    let out = kubectl(&[
        "-n",
        ns,
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=StreamingEnrichment,involvedObject.name=sales",
        "-o",
        "json",
    ])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let text = |e: &serde_json::Value| e.as_str().unwrap_or_default().to_string();
    let mut events: Vec<Event> = v["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|e| Event {
            at: e["eventTime"]
                .as_str()
                .or(e["metadata"]["creationTimestamp"].as_str())
                .unwrap_or_default()
                .to_string(),
            type_: text(&e["type"]),
            reason: text(&e["reason"]),
            message: text(&e["message"]),
            reporter: text(&e["reportingInstance"]),
        })
        .collect();
    events.sort_by(|a, b| a.at.cmp(&b.at));
    Ok(events)
}

/// The reasons of `events`, in order.
pub fn reasons(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.reason.as_str()).collect()
}

/// The holder of the operator's leader Lease in `operator_ns` (`None`: no Lease yet, or
/// released).
pub async fn lease_holder(client: &Client, operator_ns: &str) -> Result<Option<String>> {
    let api: Api<Lease> = Api::namespaced(client.clone(), operator_ns);
    Ok(api
        .get_opt(LEASE_NAME)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty()))
}

/// `leaseTransitions` of the operator's leader Lease.
pub async fn lease_transitions(client: &Client, operator_ns: &str) -> Result<i32> {
    let api: Api<Lease> = Api::namespaced(client.clone(), operator_ns);
    Ok(api
        .get_opt(LEASE_NAME)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0))
}

/// The operator pods of `operator_ns` that are not being deleted: (name, ready).
pub async fn operator_pods(client: &Client, operator_ns: &str) -> Result<Vec<(String, bool)>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), operator_ns);
    let pods = api
        .list(&ListParams::default().labels(OPERATOR_SELECTOR))
        .await?;
    Ok(pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            (p.metadata.name.clone().unwrap_or_default(), ready)
        })
        .collect())
}

/// `kubectl delete pod --grace-period=0 --force`: the API object goes at once.
pub fn force_delete_pod(ns: &str, pod: &str) -> Result<()> {
    kubectl(&[
        "-n",
        ns,
        "delete",
        "pod",
        pod,
        "--grace-period=0",
        "--force",
        "--wait=false",
    ])?;
    Ok(())
}

/// A job pod as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNow {
    pub uid: String,
    pub ip: Option<String>,
    pub state_id: String,
    pub ready: bool,
    /// The container's restart count (the node agent restarts exited processes in place).
    pub restarts: i32,
}

/// Job pod `name` of `ns`, if it exists.
pub async fn pod_now(client: &Client, ns: &str, name: &str) -> Result<Option<PodNow>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let Some(p) = api.get_opt(name).await? else {
        return Ok(None);
    };
    let status = p.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .as_ref()
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let restarts = status
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.first())
        .map_or(0, |c| c.restart_count);
    Ok(Some(PodNow {
        uid: p.metadata.uid.clone().unwrap_or_default(),
        ip: status.pod_ip.clone(),
        state_id: job_pod(&p).map(|(_, j)| j.state_id).unwrap_or_default(),
        ready,
        restarts,
    }))
}

/// `spec.replicas` of StatefulSet `sales` in `ns`.
pub fn statefulset_replicas(ns: &str) -> Result<i32> {
    let out = kubectl(&[
        "-n",
        ns,
        "get",
        "statefulset",
        "sales",
        "-o",
        "jsonpath={.spec.replicas}",
    ])?;
    out.trim()
        .parse()
        .with_context(|| format!("StatefulSet replicas {out:?}"))
}

/// A replica's report of savepoint `id` (`GET /savepoints/<id>` on its admin port: reports
/// need no token). `None`: it has not heard of it.
pub async fn replica_savepoint(ip: &str, id: &str) -> Result<Option<SavepointReport>> {
    let port = tributary_crds::job_config::ADMIN_PORT;
    let (code, body) = http(&format!("http://{ip}:{port}/savepoints/{id}")).await?;
    match code {
        200 => Ok(Some(serde_json::from_str(&body)?)),
        404 => Ok(None),
        _ => bail!("GET /savepoints/{id} on {ip}: {code} {body}"),
    }
}

/// A replica's state (`GET /state`).
pub async fn replica_state(ip: &str) -> Result<StateReport> {
    let port = tributary_crds::job_config::ADMIN_PORT;
    let (code, body) = http(&format!("http://{ip}:{port}/state")).await?;
    anyhow::ensure!(code == 200, "GET /state on {ip}: {code} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// The cell of column `header` (as `kubectl get` prints it, e.g. `LAST SAVEPOINT`) for resource
/// `sales`, and the whole output.
pub fn se_column(ns: &str, header: &str) -> Result<(String, String)> {
    let out = kubectl(&["-n", ns, "get", "se", "sales"])?;
    let mut lines = out.lines();
    let head = lines.next().context("no header line")?;
    let row = lines.next().context("no row")?;
    let at = head
        .find(header)
        .with_context(|| format!("no column {header}:\n{out}"))?;
    let cell: String = row
        .get(at..)
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    Ok((cell, out))
}

/// The printer columns of the CRD, as declared (`additionalPrinterColumns[*].name`).
pub fn printer_columns() -> Result<Vec<String>> {
    let out = kubectl(&[
        "get",
        "crd",
        "streamingenrichments.tributary.dev",
        "-o",
        "json",
    ])?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["spec"]["versions"]
        .as_array()
        .context("versions")?
        .iter()
        .flat_map(|ver| {
            ver["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect())
}

/// The teardown of a live test, whatever its outcome: the resource (and with it its children),
/// the operator's release, both namespaces, the fixture's streams.
pub async fn teardown(fx: &Fixture) {
    let ns = fx.name.clone();
    let operator_ns = format!("{ns}-op");
    let _ = kubectl(&[
        "-n",
        &ns,
        "delete",
        "se",
        "sales",
        "--wait=true",
        "--timeout=60s",
    ]);
    let _ = helm(&["uninstall", &ns, "--namespace", &operator_ns, "--wait"]);
    let _ = kubectl(&["delete", "namespace", &ns, &operator_ns, "--wait=false"]);
    fx.cleanup().await;
}

/// Print the events of `ns` for the record, one a line.
pub fn print_events(ns: &str) {
    match events(ns) {
        Ok(all) => {
            for e in all {
                println!(
                    "  event {} {} {} [{}]: {}",
                    e.at,
                    e.type_,
                    e.reason,
                    e.reporter,
                    e.message.chars().take(240).collect::<String>()
                );
            }
        }
        Err(e) => println!("  (events: {e:#})"),
    }
}

/// One live test's job: its fixture, the operator installed by Helm watching the fixture's
/// namespace only (so that tests running at the same time never reconcile each other's
/// resources), and the two watches, started before anything is applied.
pub struct LiveJob {
    pub fx: Fixture,
    pub ns: String,
    pub operator_ns: String,
    pub client: Client,
    pub se: Api<StreamingEnrichment>,
    pub pods: Arc<Mutex<PodLog>>,
    pub status: StatusWatch,
    pod_watch: tokio::task::JoinHandle<()>,
}

impl LiveJob {
    pub async fn new(fx: Fixture) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = crate::cluster::admin_client().await?;
        let ns = fx.name.clone();
        let pods = Arc::new(Mutex::new(PodLog::default()));
        let pod_watch = tokio::spawn(watch_pods(
            Api::namespaced(client.clone(), &ns),
            pods.clone(),
        ));
        let se: Api<StreamingEnrichment> = Api::namespaced(client.clone(), &ns);
        let status = StatusWatch::start(se.clone());
        Ok(Self {
            operator_ns: format!("{ns}-op"),
            ns,
            client,
            se,
            pods,
            status,
            pod_watch,
            fx,
        })
    }

    /// Helm must not keep an older CRD (it installs `crds/` once): apply the chart's, then
    /// [`Fixture::install_and_apply_with`] (which scopes the operator to the fixture's
    /// namespace) with `helm_args`.
    pub fn install(&self, helm_args: &[&str], extra: &str) -> Result<()> {
        crate::cluster::install_crds()?;
        self.fx.install_and_apply_with(helm_args, extra)
    }

    /// Events on the resource published by operators that are not this test's release (its pods
    /// are named `<ns>-tributary-...`): another installation watching this namespace too, which
    /// would fight this one over the resource (each writes its own control token and state).
    pub fn foreign_events(&self) -> Vec<Event> {
        let ours = format!("{}-tributary", self.ns);
        events(&self.ns)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| !e.reporter.is_empty() && !e.reporter.starts_with(&ours))
            .collect()
    }

    /// `kubectl <args>` in the job's namespace.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.ns.as_str()];
        full.extend_from_slice(args);
        kubectl(&full)
    }

    /// `kubectl patch se sales --type merge -p <patch>`.
    pub fn patch(&self, patch: &str) -> Result<()> {
        self.kubectl(&["patch", "se", "sales", "--type", "merge", "-p", patch])?;
        Ok(())
    }

    /// The leader's pod name, once the Lease has a holder.
    pub async fn leader(&self, timeout: Duration) -> Result<String> {
        crate::eventually("a leader in the Lease", timeout, || async {
            lease_holder(&self.client, &self.operator_ns).await
        })
        .await
    }

    /// Job pod `sales-<ordinal>` as it is now.
    pub async fn pod(&self, ordinal: u32) -> Result<Option<PodNow>> {
        pod_now(&self.client, &self.ns, &format!("sales-{ordinal}")).await
    }

    /// Wait until job pod `sales-<ordinal>` is ready; it then.
    pub async fn ready_pod(&self, ordinal: u32, timeout: Duration) -> Result<PodNow> {
        crate::eventually(&format!("pod sales-{ordinal} ready"), timeout, || async {
            Ok(self
                .pod(ordinal)
                .await?
                .filter(|p| p.ready && p.ip.is_some()))
        })
        .await
    }

    /// Wait until at least `n` documents are searchable; how many there are then.
    pub async fn documents_at_least(&self, n: u64, timeout: Duration) -> Result<u64> {
        crate::eventually(&format!("{n} documents"), timeout, || async {
            let c = self.fx.count().await?;
            Ok((c >= n).then_some(c))
        })
        .await
    }

    /// A copy of what the pod watch recorded so far.
    pub fn pod_log(&self) -> (Vec<Epoch>, Vec<String>) {
        let l = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        (l.epochs.clone(), l.overlaps.clone())
    }

    /// Print the record (phases, events), then tear everything down; `result` is the test's,
    /// with a note when an operator of another release reconciled this resource meanwhile.
    pub async fn finish(self, result: Result<()>) -> Result<()> {
        println!("[{}] phases seen: {:?}", self.ns, self.status.phases());
        print_events(&self.ns);
        let foreign = self.foreign_events();
        self.pod_watch.abort();
        teardown(&self.fx).await;
        if foreign.is_empty() {
            return result;
        }
        let who: BTreeSet<&str> = foreign.iter().map(|e| e.reporter.as_str()).collect();
        let note = format!(
            "operators of other releases reconciled this resource too ({who:?}, {} events): \
             a test installed without watchNamespaces runs beside this one",
            foreign.len()
        );
        println!("[{}] {note}", self.ns);
        match result {
            Ok(()) => Err(anyhow::anyhow!(note)),
            Err(e) => Err(e.context(note)),
        }
    }
}

/// The pending operation's phase of a status.
pub fn phase(s: &StreamingEnrichmentStatus) -> Option<OperationPhase> {
    s.pending_operation.as_ref().map(|o| o.phase)
}

/// An operation to `replicas` that finished on a new savepoint: nothing pending, the job at
/// `replicas` on the state restored from a savepoint other than `before`, and that savepoint's
/// id as the state id.
pub fn converged(s: &StreamingEnrichmentStatus, replicas: i32, before: Option<&str>) -> bool {
    let sp = s.last_savepoint.as_ref().map(|sp| sp.id.as_str());
    s.pending_operation.is_none()
        && s.replicas == replicas
        && s.running_replicas == Some(replicas)
        && sp.is_some()
        && sp != before
        && s.state_id.as_deref() == sp
}
