//! The admin server of a job pod: `/metrics` (Prometheus text), `/healthz` (the engine thread
//! is alive: a dead engine is a pod to restart), `/readyz` (the job is processing: reference
//! data loaded and the state open; a pod that is catching up is ready, it is doing its work).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};

/// Health flags shared with the engine.
#[derive(Clone, Debug, Default)]
pub struct Health {
    pub alive: Arc<AtomicBool>,
    pub ready: Arc<AtomicBool>,
}

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    health: Health,
}

async fn metrics(State(s): State<AdminState>) -> (StatusCode, String) {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&s.registry.gather(), &mut buf) {
        Ok(()) => (StatusCode::OK, String::from_utf8_lossy(&buf).into_owned()),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn healthz(State(s): State<AdminState>) -> (StatusCode, &'static str) {
    if s.health.alive.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "engine stopped")
    }
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
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AdminState { registry, health });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Mark ready (used by the app once the engine has received both reference tables).
pub fn set(flag: &AtomicBool, value: bool) {
    flag.store(value, Ordering::Relaxed);
}
