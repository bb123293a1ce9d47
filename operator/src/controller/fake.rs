//! The cheap reconcile tier, in the style of kube-rs controller-rs `src/fixtures.rs`: the real
//! `reconcile` runs against a `kube::Client` whose transport is an in-memory API server (a
//! tower service: objects by path, server-side apply as a replace, the status and scale
//! subresources, pod lists, events), next to fake job runtimes serving the control API on
//! loopback addresses. The test drives the world between reconciles (the StatefulSet
//! controller creating and deleting pods, replicas finishing their savepoints and restores),
//! and every request to either server is logged in order, so a test can check what was
//! recorded before what was done.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::client::Body;
use serde_json::{Value, json};
use tributary_crds::StreamingEnrichment;
use tributary_crds::control::{
    SavepointCheck, SavepointReport, SavepointRequest, SavepointState, StateReport, token_matches,
};
use tributary_crds::job_config::{CONFIG_FILE, JobConfig};

/// One entry per request, to either the API server or a job pod, in the order they came.
pub type Log = Arc<Mutex<Vec<String>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The API server's objects, by path (`/api/v1/namespaces/ns/pods/x`).
#[derive(Default)]
pub struct Store {
    pub objects: BTreeMap<String, Value>,
    next_uid: u64,
}

impl Store {
    pub fn put(&mut self, path: &str, mut obj: Value) {
        self.next_uid += 1;
        let meta = &mut obj["metadata"];
        if meta.get("uid").is_none() {
            meta["uid"] = json!(format!("uid-{}", self.next_uid));
        }
        meta["resourceVersion"] = json!(self.next_uid.to_string());
        self.objects.insert(path.to_string(), obj);
    }
}

pub struct FakeApi {
    pub store: Arc<Mutex<Store>>,
    pub log: Log,
}

fn respond(status: u16, body: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(serde_json::to_vec(body).unwrap_or_default()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r
}

fn not_found(path: &str) -> Response<Body> {
    respond(
        404,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("{path} not found"), "reason": "NotFound", "code": 404}),
    )
}

impl FakeApi {
    pub fn new(log: Log) -> Self {
        Self {
            store: Arc::default(),
            log,
        }
    }

    /// A client whose every request this fake answers.
    pub fn client(&self) -> kube::Client {
        let store = self.store.clone();
        let log = self.log.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let store = store.clone();
            let log = log.clone();
            async move { Ok::<_, Infallible>(handle(&store, &log, req).await) }
        });
        kube::Client::new(service, "default")
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        lock(&self.store).objects.get(path).cloned()
    }
}

async fn handle(store: &Mutex<Store>, log: &Log, req: Request<Body>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let what = if path.contains("/events") {
        format!(" {}", body["reason"].as_str().unwrap_or("?"))
    } else if path.ends_with("/status") {
        let phase = &body["status"]["pendingOperation"]["phase"];
        format!(" phase={}", phase.as_str().unwrap_or("none"))
    } else {
        String::new()
    };
    lock(log).push(format!("api {method} {path}{what}"));
    let mut store = lock(store);

    if path.contains("/events") {
        return respond(201, &body);
    }
    match method {
        Method::GET => {
            if let Some(obj) = store.objects.get(&path) {
                return respond(200, obj);
            }
            // A collection: every object directly under it, filtered by the label selector.
            let selector = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("labelSelector="))
                .map(percent_decode)
                .unwrap_or_default();
            let prefix = format!("{path}/");
            let items: Vec<&Value> = store
                .objects
                .iter()
                .filter(|(p, _)| {
                    p.strip_prefix(&prefix)
                        .is_some_and(|rest| !rest.contains('/'))
                })
                .map(|(_, o)| o)
                .filter(|o| {
                    selector.split(',').filter(|s| !s.is_empty()).all(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        o["metadata"]["labels"][k] == json!(v)
                    })
                })
                .collect();
            if items.is_empty() && !path.ends_with('s') {
                return not_found(&path);
            }
            respond(
                200,
                &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"},
                        "items": items}),
            )
        }
        Method::PATCH => {
            if let Some(obj_path) = path.strip_suffix("/status") {
                let Some(mut obj) = store.objects.get(obj_path).cloned() else {
                    return not_found(&path);
                };
                obj["status"] = body["status"].clone();
                store.put(obj_path, obj.clone());
                return respond(200, &obj);
            }
            if let Some(obj_path) = path.strip_suffix("/scale") {
                let Some(mut obj) = store.objects.get(obj_path).cloned() else {
                    return not_found(&path);
                };
                obj["spec"]["replicas"] = body["spec"]["replicas"].clone();
                store.put(obj_path, obj.clone());
                return respond(
                    200,
                    &json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                            "metadata": obj["metadata"], "spec": {"replicas": obj["spec"]["replicas"]}}),
                );
            }
            // Server-side apply by the one manager: the applied object is the object; the
            // status and the generation stay the server's.
            let before = store.objects.get(&path).cloned();
            let mut obj = body;
            if let Some(b) = &before {
                obj["status"] = b["status"].clone();
                obj["metadata"]["uid"] = b["metadata"]["uid"].clone();
                let generation = b["metadata"]["generation"].as_i64().unwrap_or(1);
                let changed = b["spec"] != obj["spec"];
                obj["metadata"]["generation"] = json!(generation + i64::from(changed));
            } else {
                obj["metadata"]["generation"] = json!(1);
            }
            store.put(&path, obj.clone());
            respond(200, &obj)
        }
        _ => respond(405, &json!({"kind": "Status", "code": 405})),
    }
}

/// `%2F` -> `/` and so on: enough of URL decoding for label selectors.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What one fake replica knows.
#[derive(Clone, Debug, Default)]
pub struct Replica {
    pub ordinal: u32,
    pub job_replicas: i32,
    pub state_id: String,
    pub restored_from: Option<String>,
    pub committed: bool,
    pub savepoint: Option<(String, SavepointState, bool)>,
}

/// Fake job runtimes: one control API per pod address, every one on the same port.
pub struct FakeRuntime {
    pub port: u16,
    pub replicas: Arc<Mutex<BTreeMap<String, Replica>>>,
    token: String,
    log: Log,
}

#[derive(Clone)]
struct PodState {
    ip: String,
    replicas: Arc<Mutex<BTreeMap<String, Replica>>>,
    token: String,
    log: Log,
}

fn authorized(s: &PodState, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| token_matches(&s.token, t))
}

fn report(r: &Replica) -> Option<SavepointReport> {
    let (id, state, stopped) = r.savepoint.clone()?;
    Some(SavepointReport {
        id,
        state,
        ordinal: r.ordinal,
        replicas: u32::try_from(r.job_replicas).unwrap_or(0),
        manifest: None,
        error: None,
        figures: None,
        stopped,
    })
}

fn reply(status: StatusCode, body: impl serde::Serialize) -> (StatusCode, String) {
    (status, serde_json::to_string(&body).unwrap_or_default())
}

async fn post_savepoint(
    State(s): State<PodState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    lock(&s.log).push(format!("pod {} POST /savepoints", s.ip));
    if !authorized(&s, &headers) {
        return (StatusCode::UNAUTHORIZED, "bad token".into());
    }
    let Ok(req) = serde_json::from_slice::<SavepointRequest>(&body) else {
        return (StatusCode::BAD_REQUEST, "not a request".into());
    };
    let mut all = lock(&s.replicas);
    let Some(r) = all.get_mut(&s.ip) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no replica".into());
    };
    if r.savepoint.as_ref().is_none_or(|(id, ..)| *id != req.id) {
        r.savepoint = Some((req.id.clone(), SavepointState::InProgress, false));
    }
    reply(StatusCode::ACCEPTED, report(r))
}

async fn get_savepoint(State(s): State<PodState>, Path(id): Path<String>) -> (StatusCode, String) {
    lock(&s.log).push(format!("pod {} GET /savepoints/{id}", s.ip));
    let all = lock(&s.replicas);
    match all.get(&s.ip).and_then(report).filter(|r| r.id == id) {
        Some(r) => reply(StatusCode::OK, r),
        None => (StatusCode::NOT_FOUND, "never heard of it".into()),
    }
}

/// The whole savepoint: complete when every replica of the count that wrote it has its part.
async fn check(State(s): State<PodState>, Path(id): Path<String>) -> (StatusCode, String) {
    lock(&s.log).push(format!("pod {} GET /savepoints/{id}/check", s.ip));
    let all = lock(&s.replicas);
    let written: Vec<&Replica> = all
        .values()
        .filter(|r| {
            r.savepoint
                .as_ref()
                .is_some_and(|(sid, st, _)| *sid == id && *st == SavepointState::Completed)
        })
        .collect();
    let parts = u32::try_from(written.len()).unwrap_or(0);
    let complete = written
        .first()
        .is_some_and(|r| i64::from(parts) == i64::from(r.job_replicas));
    reply(
        StatusCode::OK,
        SavepointCheck {
            id,
            complete,
            parts,
            bytes: 0,
            error: (!complete).then(|| "parts missing".into()),
        },
    )
}

async fn resume(State(s): State<PodState>, headers: HeaderMap) -> (StatusCode, String) {
    lock(&s.log).push(format!("pod {} POST /resume", s.ip));
    if !authorized(&s, &headers) {
        return (StatusCode::UNAUTHORIZED, "bad token".into());
    }
    if let Some(sp) = lock(&s.replicas)
        .get_mut(&s.ip)
        .and_then(|r| r.savepoint.as_mut())
    {
        sp.2 = false;
    }
    (StatusCode::OK, String::new())
}

async fn state(State(s): State<PodState>) -> (StatusCode, String) {
    lock(&s.log).push(format!("pod {} GET /state", s.ip));
    let all = lock(&s.replicas);
    match all.get(&s.ip) {
        Some(r) => reply(
            StatusCode::OK,
            StateReport {
                state_id: r.state_id.clone(),
                restored_from: r.restored_from.clone(),
                committed: r.committed,
                stopped: r.savepoint.as_ref().is_some_and(|s| s.2),
            },
        ),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no replica".into()),
    }
}

/// The address of pod `ordinal` (loopback only).
pub fn pod_ip(ordinal: u32) -> String {
    format!("127.0.0.{}", 10 + ordinal)
}

impl FakeRuntime {
    /// Serve the control API on the addresses of pods `0..pods`, checking `token`.
    pub async fn start(pods: u32, token: String, log: Log) -> Self {
        let replicas: Arc<Mutex<BTreeMap<String, Replica>>> = Arc::default();
        let mut port = 0;
        for o in 0..pods {
            let ip = pod_ip(o);
            let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            port = listener.local_addr().unwrap().port();
            let app = Router::new()
                .route("/savepoints", post(post_savepoint))
                .route("/savepoints/{id}", get(get_savepoint))
                .route("/savepoints/{id}/check", get(check))
                .route("/resume", post(resume))
                .route("/state", get(state))
                .with_state(PodState {
                    ip,
                    replicas: replicas.clone(),
                    token: token.clone(),
                    log: log.clone(),
                });
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
        Self {
            port,
            replicas,
            token,
            log,
        }
    }
}

/// The rest of the cluster: the StatefulSet controller and the replicas' own progress.
pub struct World<'a> {
    pub api: &'a FakeApi,
    pub runtime: &'a FakeRuntime,
    pub namespace: String,
    pub name: String,
}

impl World<'_> {
    fn sts_path(&self) -> String {
        format!(
            "/apis/apps/v1/namespaces/{}/statefulsets/{}",
            self.namespace, self.name
        )
    }

    fn pod_path(&self, o: u32) -> String {
        format!(
            "/api/v1/namespaces/{}/pods/{}-{o}",
            self.namespace, self.name
        )
    }

    pub fn statefulset(&self) -> Option<StatefulSet> {
        serde_json::from_value(self.api.get(&self.sts_path())?).ok()
    }

    pub fn resource(&self) -> StreamingEnrichment {
        let path = format!(
            "/apis/tributary.dev/v1alpha1/namespaces/{}/streamingenrichments/{}",
            self.namespace, self.name
        );
        serde_json::from_value(self.api.get(&path).unwrap()).unwrap()
    }

    pub fn job_config(&self) -> JobConfig {
        let path = format!(
            "/api/v1/namespaces/{}/configmaps/{}-config",
            self.namespace, self.name
        );
        let cm = self.api.get(&path).unwrap();
        JobConfig::from_yaml(cm["data"][CONFIG_FILE].as_str().unwrap()).unwrap()
    }

    pub fn pods(&self) -> Vec<u32> {
        lock(&self.api.store)
            .objects
            .keys()
            .filter_map(|p| {
                p.strip_prefix(&format!(
                    "/api/v1/namespaces/{}/pods/{}-",
                    self.namespace, self.name
                ))?
                .parse()
                .ok()
            })
            .collect()
    }

    /// One move of everything that is not the operator: replicas finish what they were doing,
    /// then the StatefulSet controller removes one pod too many or adds the missing ones
    /// (from the ConfigMap as it is now, as a starting container reads it).
    pub fn tick(&self) {
        {
            let mut all = lock(&self.runtime.replicas);
            for r in all.values_mut() {
                r.committed = true;
                if let Some(sp) = r.savepoint.as_mut()
                    && sp.1 == SavepointState::InProgress
                {
                    sp.1 = SavepointState::Completed;
                    sp.2 = true;
                }
            }
        }
        let Some(sts) = self.statefulset() else {
            return;
        };
        let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let want = u32::try_from(want).unwrap_or(0);
        let pods = self.pods();
        if let Some(extra) = pods.iter().copied().filter(|o| *o >= want).max() {
            lock(&self.api.store).objects.remove(&self.pod_path(extra));
            lock(&self.runtime.replicas).remove(&pod_ip(extra));
        } else {
            let cfg = self.job_config();
            for o in (0..want).filter(|o| !pods.contains(o)) {
                let pod = json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("{}-{o}", self.name), "namespace": self.namespace,
                                 "labels": {"app.kubernetes.io/name": "tributary-job",
                                            "app.kubernetes.io/instance": self.name}},
                    "status": {"podIP": pod_ip(o),
                               "conditions": [{"type": "Ready", "status": "True"}]},
                });
                lock(&self.api.store).put(&self.pod_path(o), pod);
                lock(&self.runtime.replicas).insert(
                    pod_ip(o),
                    Replica {
                        ordinal: o,
                        job_replicas: cfg.replicas,
                        state_id: cfg.state.id.clone(),
                        restored_from: cfg.state.restore.as_ref().map(|r| r.id.clone()),
                        committed: false,
                        savepoint: None,
                    },
                );
            }
        }
        // The StatefulSet's status follows its pods.
        let count = i32::try_from(self.pods().len()).unwrap_or(0);
        let path = self.sts_path();
        let mut store = lock(&self.api.store);
        if let Some(mut obj) = store.objects.get(&path).cloned() {
            obj["status"] = json!({
                "observedGeneration": obj["metadata"]["generation"],
                "replicas": count, "readyReplicas": count, "updatedReplicas": count,
                "currentRevision": "r", "updateRevision": "r",
            });
            store.put(&path, obj);
        }
    }
}

impl FakeRuntime {
    /// Requests the replicas received, in order.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.log)
            .iter()
            .filter(|l| l.starts_with("pod "))
            .cloned()
            .collect()
    }

    pub fn token(&self) -> &str {
        &self.token
    }
}
