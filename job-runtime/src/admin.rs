//! The admin server of a job pod: `/metrics` (Prometheus text), `/healthz` (the engine thread
//! is alive and no source or sink task has ended: either is a pod to restart), `/status` (the
//! pipeline's own [`tributary_crds::control::PipelineReport`], see [`crate::report`]), `/readyz` (the job is processing: reference
//! data loaded and the state open; a pod that is catching up is ready, it is doing its work),
//! and the control API of [`tributary_crds::control`] (savepoints, resume, the state report;
//! changes need the control token).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};
use tributary_crds::control::{
    RESUME_PATH, SAVEPOINTS_PATH, STATE_PATH, STATUS_PATH, SavepointRequest, StateReport,
};

use crate::savepoint::control::{RequestError, SavepointControl};

/// Health flags shared with the engine.
#[derive(Clone, Debug, Default)]
pub struct Health {
    pub alive: Arc<AtomicBool>,
    pub ready: Arc<AtomicBool>,
    /// Set at the first commit on the state this process runs on.
    pub committed: Arc<AtomicBool>,
    /// The sources' and sinks' health, lag and ended tasks.
    pub report: crate::report::Report,
}

/// What the control endpoints serve; set once the state is open (before that they answer 503).
#[derive(Clone)]
pub struct ControlPlane {
    pub savepoints: Arc<SavepointControl>,
    pub state_id: String,
    pub restored_from: Option<String>,
}

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    health: Health,
    control: Arc<std::sync::OnceLock<ControlPlane>>,
}

fn starting() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "starting: the state is not open yet",
    )
        .into_response()
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

async fn request_savepoint(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<SavepointRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(c) = s.control.get() else {
        return starting();
    };
    if !c.savepoints.authorized(authorization(&headers)) {
        return (
            StatusCode::UNAUTHORIZED,
            "a valid control token is required",
        )
            .into_response();
    }
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    match c.savepoints.request(req) {
        Ok(report) => (StatusCode::ACCEPTED, Json(report)).into_response(),
        Err(e @ RequestError::Busy(_)) => (StatusCode::CONFLICT, e.to_string()).into_response(),
        Err(e @ RequestError::NotConfigured) => {
            (StatusCode::PRECONDITION_FAILED, e.to_string()).into_response()
        }
        Err(e @ RequestError::BadId) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn savepoint_report(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    let Some(c) = s.control.get() else {
        return starting();
    };
    match c.savepoints.report(&id) {
        Some(r) => Json(r).into_response(),
        None => (StatusCode::NOT_FOUND, "no such savepoint in this process").into_response(),
    }
}

async fn check_savepoint(State(s): State<AdminState>, Path(id): Path<String>) -> Response {
    let Some(c) = s.control.get() else {
        return starting();
    };
    match c.savepoints.check(&id).await {
        Ok(check) => Json(check).into_response(),
        Err(e @ RequestError::NotConfigured) => {
            (StatusCode::PRECONDITION_FAILED, e.to_string()).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn resume(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let Some(c) = s.control.get() else {
        return starting();
    };
    if !c.savepoints.authorized(authorization(&headers)) {
        return (
            StatusCode::UNAUTHORIZED,
            "a valid control token is required",
        )
            .into_response();
    }
    c.savepoints.resume();
    StatusCode::NO_CONTENT.into_response()
}

async fn state_report(State(s): State<AdminState>) -> Response {
    let Some(c) = s.control.get() else {
        return starting();
    };
    Json(StateReport {
        state_id: c.state_id.clone(),
        restored_from: c.restored_from.clone(),
        committed: s.health.committed.load(Ordering::Relaxed),
        stopped: c.savepoints.stopped(),
    })
    .into_response()
}

async fn metrics(State(s): State<AdminState>) -> (StatusCode, String) {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&s.registry.gather(), &mut buf) {
        Ok(()) => (StatusCode::OK, String::from_utf8_lossy(&buf).into_owned()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn healthz(State(s): State<AdminState>) -> (StatusCode, String) {
    if !s.health.alive.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "engine stopped".into());
    }
    match s.health.report.has_ended() {
        Some(task) => (StatusCode::SERVICE_UNAVAILABLE, format!("ended: {task}")),
        None => (StatusCode::OK, "ok".into()),
    }
}

async fn pipeline_status(State(s): State<AdminState>) -> Response {
    let dead = crate::report::dead_letters(&s.registry);
    Json(s.health.report.snapshot(dead)).into_response()
}

async fn readyz(State(s): State<AdminState>) -> (StatusCode, &'static str) {
    if s.health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: state or reference data not loaded",
        )
    }
}

/// Bind first (so a port conflict fails the start), then serve until `shutdown`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    health: Health,
    control: Arc<std::sync::OnceLock<ControlPlane>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(SAVEPOINTS_PATH, post(request_savepoint))
        .route(&format!("{SAVEPOINTS_PATH}/{{id}}"), get(savepoint_report))
        .route(
            &format!("{SAVEPOINTS_PATH}/{{id}}/check"),
            get(check_savepoint),
        )
        .route(RESUME_PATH, post(resume))
        .route(STATE_PATH, get(state_report))
        .route(STATUS_PATH, get(pipeline_status))
        .with_state(AdminState {
            registry,
            health,
            control,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Mark ready (used by the app once the engine has received both reference tables).
pub fn set(flag: &AtomicBool, value: bool) {
    flag.store(value, Ordering::Relaxed);
}
