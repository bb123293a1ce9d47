//! The running job's side of the control API ([`tributary_crds::control`]): savepoint requests
//! and resume, each authenticated by the resource's control token.
//!
//! One savepoint runs at a time. Its steps (see [`super`]): pause the engine and wait for its
//! commit, flush the sinks and wait until every committed output is delivered, write the part,
//! then stay paused (`stopAfter`) or resume. Every step is bounded by the drain timeout; a
//! failure at any step resumes the job and reports `Failed` with the reason.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use tokio::sync::watch;
use tributary_crds::control::{
    SavepointCheck, SavepointReport, SavepointRequest, SavepointState, token_matches,
};

use super::SavepointError;
use super::write::{PartInfo, write_part};
use crate::s3uri::S3Uri;
use crate::sink::Drain;
use crate::state::export::StateExport;

/// Why a request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the resource has no savepoints.uri")]
    NotConfigured,
    #[error("savepoint {0} is in progress")]
    Busy(String),
    #[error("a savepoint id is 1 to 128 letters, digits, '.', '_' or '-'")]
    BadId,
}

/// What the job wires into the control: the engine's pause, the sinks' drain, and where the
/// part goes.
pub struct Wiring {
    pub client: Client,
    pub export: StateExport,
    /// `savepoints.uri`, when the resource has one.
    pub location: Option<S3Uri>,
    pub pipeline: String,
    pub ordinal: u32,
    pub replicas: u32,
    pub state_id: String,
    pub restored_from: Option<String>,
    pub sales_stream: String,
    pub pause: watch::Sender<bool>,
    pub paused: watch::Receiver<bool>,
    pub drain: Arc<watch::Sender<Drain>>,
    /// The outbox's committed end and the slowest sink's cursor.
    pub committed_outbox: watch::Receiver<u64>,
    pub delivered: watch::Receiver<u64>,
    /// Bound of each waiting step.
    pub step_timeout: Duration,
}

struct Inner {
    reports: BTreeMap<String, SavepointReport>,
    running: Option<String>,
    stopped: bool,
}

/// The savepoint control of one replica.
pub struct SavepointControl {
    token: Option<tributary_crds::secret::Secret>,
    wiring: Wiring,
    inner: Mutex<Inner>,
}

/// `Bearer <expected>`; nothing passes without an expected token.
fn bearer_ok(expected: Option<&str>, header: Option<&str>) -> bool {
    match (expected, header.and_then(|h| h.strip_prefix("Bearer "))) {
        (Some(expected), Some(presented)) => token_matches(expected, presented.trim()),
        _ => false,
    }
}

fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

async fn wait_for(
    rx: &mut watch::Receiver<bool>,
    want: bool,
    timeout: Duration,
    what: &'static str,
) -> Result<(), SavepointError> {
    tokio::time::timeout(timeout, rx.wait_for(|v| *v == want))
        .await
        .map_err(|_| SavepointError::Timeout {
            what,
            secs: timeout.as_secs(),
        })?
        .map_err(|_| SavepointError::Config(format!("{what}: the engine is gone")))?;
    Ok(())
}

impl SavepointControl {
    /// `token`: the control token from the environment; without one every request is refused.
    pub fn new(token: Option<tributary_crds::secret::Secret>, wiring: Wiring) -> Arc<Self> {
        Arc::new(Self {
            token: token.filter(|t| !t.expose().is_empty()),
            wiring,
            inner: Mutex::new(Inner {
                reports: BTreeMap::new(),
                running: None,
                stopped: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an `Authorization` header value carries this replica's token.
    pub fn authorized(&self, header: Option<&str>) -> bool {
        bearer_ok(
            self.token
                .as_ref()
                .map(tributary_crds::secret::Secret::expose),
            header,
        )
    }

    /// Whether the replica is paused after a `stopAfter` savepoint.
    pub fn stopped(&self) -> bool {
        self.lock().stopped
    }

    fn report_of(&self, id: &str, state: SavepointState, stopped: bool) -> SavepointReport {
        SavepointReport {
            id: id.to_string(),
            state,
            ordinal: self.wiring.ordinal,
            replicas: self.wiring.replicas,
            manifest: None,
            error: None,
            figures: None,
            stopped,
        }
    }

    /// The report of a savepoint this process was asked for.
    pub fn report(&self, id: &str) -> Option<SavepointReport> {
        let inner = self.lock();
        inner.reports.get(id).cloned().map(|mut r| {
            r.stopped = inner.stopped;
            r
        })
    }

    /// Start a savepoint (idempotent per id: the same id answers its report).
    pub fn request(
        self: &Arc<Self>,
        req: SavepointRequest,
    ) -> Result<SavepointReport, RequestError> {
        if !valid_id(&req.id) {
            return Err(RequestError::BadId);
        }
        let Some(location) = self.wiring.location.clone() else {
            return Err(RequestError::NotConfigured);
        };
        let mut inner = self.lock();
        if let Some(r) = inner.reports.get(&req.id) {
            let mut r = r.clone();
            r.stopped = inner.stopped;
            return Ok(r);
        }
        if let Some(running) = &inner.running {
            return Err(RequestError::Busy(running.clone()));
        }
        let report = self.report_of(&req.id, SavepointState::InProgress, inner.stopped);
        inner.reports.insert(req.id.clone(), report.clone());
        inner.running = Some(req.id.clone());
        drop(inner);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let result = this.take(&req, location).await;
            let mut inner = this.lock();
            inner.running = None;
            let r = inner
                .reports
                .entry(req.id.clone())
                .or_insert_with(|| this.report_of(&req.id, SavepointState::InProgress, false));
            match result {
                Ok((manifest, figures)) => {
                    tracing::info!(id = %req.id, bytes = figures.bytes, files = figures.files,
                        waiting_sales = figures.waiting_sales, ms = figures.duration_ms,
                        stop_after = req.stop_after, "savepoint written");
                    r.state = SavepointState::Completed;
                    r.manifest = Some(manifest);
                    r.figures = Some(figures);
                    inner.stopped = req.stop_after;
                }
                Err(e) => {
                    tracing::warn!(id = %req.id, error = %e, "savepoint failed; the job goes on");
                    r.state = SavepointState::Failed;
                    r.error = Some(e.to_string());
                    inner.stopped = false;
                }
            }
        });
        Ok(report)
    }

    /// Check the whole savepoint `id` (see [`super::restore::check`]).
    pub async fn check(&self, id: &str) -> Result<SavepointCheck, RequestError> {
        if !valid_id(id) {
            return Err(RequestError::BadId);
        }
        let location = self
            .wiring
            .location
            .clone()
            .ok_or(RequestError::NotConfigured)?;
        let folder = S3Uri {
            bucket: location.bucket.clone(),
            prefix: location.key(id),
        };
        Ok(
            match super::restore::check(&self.wiring.client, &folder).await {
                Ok((loaded, bytes)) => SavepointCheck {
                    id: id.to_string(),
                    complete: true,
                    parts: u32::try_from(loaded.parts.len()).unwrap_or(u32::MAX),
                    bytes,
                    error: None,
                },
                Err(e) => SavepointCheck {
                    id: id.to_string(),
                    complete: false,
                    parts: 0,
                    bytes: 0,
                    error: Some(e.to_string()),
                },
            },
        )
    }

    /// Read again after a `stopAfter` savepoint (nothing to do when not stopped).
    pub fn resume(&self) {
        let mut inner = self.lock();
        if inner.running.is_some() {
            // The running savepoint resumes or stops by itself; a resume now would race it.
            return;
        }
        inner.stopped = false;
        self.wiring.pause.send_replace(false);
    }

    async fn take(
        &self,
        req: &SavepointRequest,
        location: S3Uri,
    ) -> Result<(String, tributary_crds::control::SavepointFigures), SavepointError> {
        let w = &self.wiring;
        let result = async {
            w.pause.send_replace(true);
            let mut paused = w.paused.clone();
            wait_for(&mut paused, true, w.step_timeout, "pausing the engine").await?;
            w.drain.send_replace(Drain::Flush);
            let target = *w.committed_outbox.borrow();
            let mut delivered = w.delivered.clone();
            tokio::time::timeout(w.step_timeout, delivered.wait_for(|d| *d >= target))
                .await
                .map_err(|_| SavepointError::Timeout {
                    what: "delivering the outbox",
                    secs: w.step_timeout.as_secs(),
                })?
                .map_err(|_| SavepointError::Config("the sinks are gone".into()))?;
            w.drain.send_replace(Drain::Normal);
            let info = PartInfo {
                savepoint_id: req.id.clone(),
                pipeline: w.pipeline.clone(),
                ordinal: w.ordinal,
                replicas: w.replicas,
                state_id: w.state_id.clone(),
                restored_from: w.restored_from.clone(),
                location: location.clone(),
                sales_stream: w.sales_stream.clone(),
            };
            let (_, figures) = write_part(&w.client, w.export.clone(), &info).await?;
            Ok((
                format!(
                    "s3://{}/{}",
                    location.bucket,
                    info.key(super::format::MANIFEST)
                ),
                figures,
            ))
        }
        .await;
        // Flush is only for the savepoint; a shutdown meanwhile has set Stop, which stays.
        w.drain.send_if_modified(|d| {
            let flush = *d == Drain::Flush;
            if flush {
                *d = Drain::Normal;
            }
            flush
        });
        if result.is_err() || !req.stop_after {
            w.pause.send_replace(false);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bearer_of_the_token_passes() {
        let t = Some("abc123");
        assert!(bearer_ok(t, Some("Bearer abc123")));
        assert!(!bearer_ok(t, Some("Bearer abc124")));
        assert!(!bearer_ok(t, Some("abc123")));
        assert!(!bearer_ok(t, Some("Basic abc123")));
        assert!(!bearer_ok(t, None));
        assert!(!bearer_ok(None, Some("Bearer ")));
        assert!(!bearer_ok(None, None));
    }

    #[test]
    fn ids_are_path_segments() {
        assert!(valid_id("sp-20261204T120000Z-3"));
        assert!(valid_id("a.b_c"));
        assert!(!valid_id(""));
        assert!(!valid_id("../x"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(&"x".repeat(129)));
    }
}
