//! Fault-injecting proxies in front of the real servers, for faults the servers cannot be made
//! to produce on demand. They are test doubles of the *network*, not of the servers: every
//! request that is not failed on purpose reaches the real server unchanged.
//!
//! * [`TcpProxy`]: forwards TCP connections; [`TcpProxy::set_down`] refuses new connections and
//!   cuts the open ones (a server that is down, or a network partition).
//! * [`BulkFaultProxy`]: forwards HTTP to OpenSearch; answers some `_bulk` requests with a
//!   whole-request 429 or 503, and in others fails some items with 429 without sending them
//!   on (a partial failure: those documents are *not* indexed, as with a real rejection).
//!   With [`BulkFaultProxy::set_max_body`] it also answers `413` to a request body above that
//!   size, as a node with a lower `http.max_content_length` does (the shared node's is fixed at
//!   its start).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use anyhow::Result;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// A TCP forwarder that can be switched off.
pub struct TcpProxy {
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Connections refused while down.
    pub refused: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let down = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let refused = Arc::new(AtomicU64::new(0));
        let accept = {
            let (down, conns, refused) = (down.clone(), conns.clone(), refused.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if down.load(Ordering::SeqCst) {
                        refused.fetch_add(1, Ordering::SeqCst);
                        drop(inbound);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    let mut c = conns.lock().await;
                    c.retain(|t| !t.is_finished());
                    c.push(task);
                }
            })
        };
        Ok(Self {
            addr,
            down,
            conns,
            refused,
            accept,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Down: refuse new connections and cut the open ones. Up: forward again.
    pub async fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            for t in self.conns.lock().await.drain(..) {
                t.abort();
            }
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// What the bulk proxy did.
#[derive(Debug, Default)]
pub struct BulkFaults {
    pub requests: AtomicU64,
    pub whole_request_failures: AtomicU64,
    pub items_failed: AtomicU64,
    pub items_forwarded: AtomicU64,
    /// Requests answered `413` (body above [`BulkFaults::max_body`]).
    pub too_large: AtomicU64,
    /// The largest request body passed on; 0: no limit.
    pub max_body: AtomicUsize,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    faults: Arc<BulkFaults>,
}

/// An HTTP proxy in front of OpenSearch that fails `_bulk` requests and items on purpose.
pub struct BulkFaultProxy {
    pub addr: SocketAddr,
    pub faults: Arc<BulkFaults>,
    task: JoinHandle<()>,
}

impl BulkFaultProxy {
    pub async fn start(upstream: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(BulkFaults::default());
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder().no_proxy().build()?,
            faults: faults.clone(),
        };
        // The proxy's own limit off: only `max_body` (as the node's) refuses a size.
        let app = axum::Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, faults, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer `413 Payload Too Large` to request bodies above `bytes` (0: no limit).
    pub fn set_max_body(&self, bytes: usize) {
        self.faults.max_body.store(bytes, Ordering::SeqCst);
    }
}

impl Drop for BulkFaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    s: &ProxyState,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Bytes), reqwest::Error> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = s
        .client
        .request(method, format!("{}{path}", s.upstream))
        .body(body);
    if let Some(ct) = headers.get("content-type") {
        req = req.header("content-type", ct.as_bytes());
    }
    let resp = req.send().await?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok((status, resp.bytes().await?))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(
    State(s): State<ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !uri.path().ends_with("/_bulk") {
        return match forward(&s, method, &uri, &headers, body).await {
            Ok((status, bytes)) => {
                (status, [("content-type", "application/json")], bytes).into_response()
            }
            Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        };
    }
    let max_body = s.faults.max_body.load(Ordering::SeqCst);
    if max_body > 0 && body.len() > max_body {
        // What OpenSearch's HTTP layer answers above http.max_content_length: an empty 413.
        s.faults.too_large.fetch_add(1, Ordering::SeqCst);
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    }
    let n = s.faults.requests.fetch_add(1, Ordering::SeqCst);
    // Every 4th request fails whole: alternately 429 and 503.
    if n % 4 == 1 {
        s.faults
            .whole_request_failures
            .fetch_add(1, Ordering::SeqCst);
        let status = if n % 8 == 1 {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return json_response(
            status,
            &json!({"error": {"type": "injected", "reason": "fault proxy"}, "status": status.as_u16()}),
        );
    }
    // Otherwise every 5th item (rotating with the request number) is refused with 429.
    let text = String::from_utf8_lossy(&body);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let pairs: Vec<(&str, &str)> = lines
        .chunks(2)
        .filter_map(|c| match c {
            [a, d] => Some((*a, *d)),
            _ => None,
        })
        .collect();
    let victim = |i: usize| (i as u64 + n).is_multiple_of(5);
    let mut forwarded = String::new();
    for (i, (a, d)) in pairs.iter().enumerate() {
        if !victim(i) {
            forwarded.push_str(a);
            forwarded.push('\n');
            forwarded.push_str(d);
            forwarded.push('\n');
        }
    }
    let mut upstream_items: Vec<Value> = Vec::new();
    if !forwarded.is_empty() {
        match forward(&s, method, &uri, &headers, Bytes::from(forwarded)).await {
            Ok((status, bytes)) if status.is_success() => {
                let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                upstream_items = v["items"].as_array().cloned().unwrap_or_default();
            }
            Ok((status, bytes)) => return (status, bytes).into_response(),
            Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        }
    }
    let mut up = upstream_items.into_iter();
    let mut items = Vec::with_capacity(pairs.len());
    for (i, (a, _)) in pairs.iter().enumerate() {
        if victim(i) {
            s.faults.items_failed.fetch_add(1, Ordering::SeqCst);
            let action: Value = serde_json::from_str(a).unwrap_or(Value::Null);
            let id = action["index"]["_id"].clone();
            items.push(json!({"index": {"_id": id, "status": 429,
                "error": {"type": "es_rejected_execution_exception", "reason": "injected"}}}));
        } else {
            s.faults.items_forwarded.fetch_add(1, Ordering::SeqCst);
            items.push(up.next().unwrap_or(Value::Null));
        }
    }
    json_response(
        StatusCode::OK,
        &json!({"took": 1, "errors": true, "items": items}),
    )
}
