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
//! * [`ManifestCorruptingProxy`]: forwards HTTP to S3 (versitygw) byte for byte, signatures
//!   included; while corruption is on, it alters the body of savepoint manifests on their way
//!   back (one hex digit of a checksum), standing in for corruption at rest.

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
    /// Pass every request on unchanged (no injected 429/503 or refused items).
    pub pass_through: std::sync::atomic::AtomicBool,
    /// Answer every `_bulk` with `403 Forbidden`, as the security plugin does for a user
    /// without the index permission.
    pub forbidden: std::sync::atomic::AtomicBool,
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

    /// Pass requests on unchanged (`true`) or inject the 429/503 and item failures.
    pub fn set_pass_through(&self, on: bool) {
        self.faults.pass_through.store(on, Ordering::SeqCst);
    }

    /// Refuse every `_bulk` with 403 (`true`) or not.
    pub fn set_forbidden(&self, on: bool) {
        self.faults.forbidden.store(on, Ordering::SeqCst);
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
    if s.faults.forbidden.load(Ordering::SeqCst) {
        // The security plugin's answer to a user without the write permission.
        return json_response(
            StatusCode::FORBIDDEN,
            &json!({"error": {"type": "security_exception", "reason": "no permissions for [indices:data/write/bulk] (fault proxy)"}, "status": 403}),
        );
    }
    if s.faults.pass_through.load(Ordering::SeqCst) {
        return match forward(&s, method, &uri, &headers, body).await {
            Ok((status, bytes)) => {
                (status, [("content-type", "application/json")], bytes).into_response()
            }
            Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        };
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

/// What the manifest-corrupting proxy did.
#[derive(Debug, Default)]
pub struct S3Faults {
    /// Requests forwarded (all of them).
    pub requests: AtomicU64,
    /// Manifest bodies altered on their way back.
    pub corrupted: AtomicU64,
    /// Manifest GETs passed on untouched (corruption off).
    pub manifests_clean: AtomicU64,
    corrupt: AtomicBool,
}

#[derive(Clone)]
struct S3ProxyState {
    upstream: String,
    client: reqwest::Client,
    /// `<prefix>/`: the key prefix (in any bucket, path-style addressing) under which
    /// manifests are altered.
    under: String,
    /// The manifest's object name (`manifest.json`).
    file_name: String,
    faults: Arc<S3Faults>,
}

/// An HTTP proxy in front of S3 (versitygw) that stands in for **corruption at rest**, which the
/// real server cannot be made to produce: versitygw keeps objects as plain files and returns what
/// was written. Every request reaches versitygw unchanged (method, path, query, every header
/// including `Host` and the SigV4 `Authorization`, the body byte for byte), and every answer comes
/// back unchanged, except while [`ManifestCorruptingProxy::set_corrupt`] is on: then the body of a
/// successful `GET` of an object whose key (in any bucket: path-style addressing, as the jobs
/// use with versitygw) is under `<prefix>/` and whose name is the
/// savepoint manifest's has one hex digit of its last `"sha256"` value flipped (the manifest's
/// own checksum; the length stays the same, so `Content-Length` still matches), and the
/// `x-amz-checksum-*` response headers are dropped, so the SDK's response checksum validation
/// does not catch it first: the reader's own manifest check must.
pub struct ManifestCorruptingProxy {
    pub addr: SocketAddr,
    pub faults: Arc<S3Faults>,
    task: JoinHandle<()>,
}

impl ManifestCorruptingProxy {
    /// `upstream`: the S3 endpoint URL; `prefix`: where the manifests live
    /// (`s3://<any bucket>/<prefix>/...`); `file_name`: the manifest's object name.
    pub async fn start(upstream: &str, prefix: &str, file_name: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let faults = Arc::new(S3Faults::default());
        let state = S3ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            under: format!("{}/", prefix.trim_matches('/')),
            file_name: file_name.to_string(),
            faults: faults.clone(),
        };
        let app = axum::Router::new()
            .fallback(handle_s3)
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

    /// Corrupt the manifests read from now on (true), or pass them untouched (false).
    pub fn set_corrupt(&self, on: bool) {
        self.faults.corrupt.store(on, Ordering::SeqCst);
    }
}

impl Drop for ManifestCorruptingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Headers of one hop only (RFC 9110 §7.6.1), never forwarded; `content-length` is set again
/// from the body by whoever sends it.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "expect"
            | "content-length"
    )
}

/// Flip the first hex digit of the last `"sha256"` value of a JSON text (keeping its length):
/// `None` when there is none.
pub fn flip_last_checksum(body: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(body).ok()?;
    let field = text.rfind("\"sha256\"")?;
    let after = field + "\"sha256\"".len();
    let open = after + text.get(after..)?.find('"')?;
    let at = open + 1;
    let digit = *body.get(at)?;
    if !digit.is_ascii_hexdigit() {
        return None;
    }
    let mut out = body.to_vec();
    out[at] = if digit == b'0' { b'1' } else { b'0' };
    Some(out)
}

async fn handle_s3(
    State(s): State<S3ProxyState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.faults.requests.fetch_add(1, Ordering::SeqCst);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = s
        .client
        .request(method.clone(), format!("{}{path}", s.upstream))
        .body(body);
    for (name, value) in &headers {
        if !hop_by_hop(name.as_str()) {
            // `Host` included: it is signed, and versitygw checks the signature against it.
            req = req.header(name, value);
        }
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let upstream_headers = resp.headers().clone();
    let mut bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    // `/<bucket>/<key>`: path-style addressing.
    let key = uri
        .path()
        .trim_start_matches('/')
        .split_once('/')
        .map(|(_, k)| k);
    let manifest = method == Method::GET
        && status == StatusCode::OK
        && key.is_some_and(|k| k.starts_with(&s.under))
        && uri.path().rsplit('/').next() == Some(s.file_name.as_str());
    let mut corrupted = false;
    if manifest {
        if s.faults.corrupt.load(Ordering::SeqCst) {
            if let Some(altered) = flip_last_checksum(&bytes) {
                bytes = Bytes::from(altered);
                corrupted = true;
                s.faults.corrupted.fetch_add(1, Ordering::SeqCst);
            }
        } else {
            s.faults.manifests_clean.fetch_add(1, Ordering::SeqCst);
        }
    }
    let mut out = Response::builder().status(status);
    for (name, value) in &upstream_headers {
        let n = name.as_str();
        let keep_length = n == "content-length" && method == Method::HEAD;
        if (hop_by_hop(n) && !keep_length) || (corrupted && n.starts_with("x-amz-checksum-")) {
            continue;
        }
        out = out.header(name, value);
    }
    out.body(axum::body::Body::from(bytes))
        .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())
}

#[cfg(test)]
mod tests {
    use super::flip_last_checksum;

    #[test]
    fn flips_one_digit_of_the_last_checksum_and_keeps_the_length() {
        let body = br#"{"files":[{"sha256":"aaaa"}],"sha256":"0bcd"}"#;
        let out = flip_last_checksum(body);
        assert_eq!(
            out.as_deref(),
            Some(&br#"{"files":[{"sha256":"aaaa"}],"sha256":"1bcd"}"#[..])
        );
        let pretty = b"{\n  \"sha256\": \"f00d\"\n}";
        let out = flip_last_checksum(pretty);
        assert_eq!(out.as_deref(), Some(&b"{\n  \"sha256\": \"000d\"\n}"[..]));
        assert_eq!(flip_last_checksum(b"{}"), None);
    }
}
