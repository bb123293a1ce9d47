//! Container probes: httpGet (plain HTTP), tcpSocket, and exec (run inside the container's mount
//! namespace with `nsenter`), with Kubernetes' delays, periods, timeouts and thresholds. gRPC and
//! HTTPS probes are not implemented and always fail, with a message saying so.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Http {
        host: Option<String>,
        port: u16,
        path: String,
    },
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Exec(Vec<String>),
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.and_then(|s| u64::try_from(s).ok()).unwrap_or(default))
}

fn port(p: &IntOrString, c: &Container) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    }
}

/// A probe with Kubernetes' defaults (period 10s, timeout 1s, thresholds 1 and 3) and its named
/// port resolved against the container's ports.
pub fn spec(p: &Probe, c: &Container) -> Spec {
    let action = if let Some(h) = &p.http_get {
        match (port(&h.port, c), h.scheme.as_deref()) {
            (_, Some(s)) if s.eq_ignore_ascii_case("https") => {
                Action::Unsupported("HTTPS probes are not supported by the node agent".into())
            }
            (Some(port), _) => Action::Http {
                host: h.host.clone(),
                port,
                path: h.path.clone().unwrap_or_else(|| "/".into()),
            },
            (None, _) => Action::Unsupported(format!("unknown port {:?}", h.port)),
        }
    } else if let Some(t) = &p.tcp_socket {
        match port(&t.port, c) {
            Some(port) => Action::Tcp {
                host: t.host.clone(),
                port,
            },
            None => Action::Unsupported(format!("unknown port {:?}", t.port)),
        }
    } else if let Some(e) = &p.exec {
        Action::Exec(e.command.clone().unwrap_or_default())
    } else {
        Action::Unsupported("gRPC probes are not supported by the node agent".into())
    };
    Spec {
        action,
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10),
        timeout: secs(p.timeout_seconds, 1),
        success_threshold: p.success_threshold.map_or(1, |v| v.max(1) as u32),
        failure_threshold: p.failure_threshold.map_or(3, |v| v.max(1) as u32),
    }
}

/// A probe's schedule and consecutive results.
#[derive(Debug)]
pub struct Tracker {
    pub spec: Spec,
    pub next: Instant,
    successes: u32,
    failures: u32,
}

/// What a result changed.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// The success threshold was just reached.
    Succeeded,
    /// The failure threshold was just reached.
    Failed,
    Unchanged,
}

impl Tracker {
    pub fn new(spec: Spec, container_start: Instant) -> Self {
        let next = container_start + spec.initial_delay;
        Self {
            spec,
            next,
            successes: 0,
            failures: 0,
        }
    }

    pub fn record(&mut self, ok: bool, now: Instant) -> Verdict {
        self.next = now + self.spec.period;
        if ok {
            self.failures = 0;
            self.successes += 1;
            if self.successes == self.spec.success_threshold {
                return Verdict::Succeeded;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures == self.spec.failure_threshold {
                return Verdict::Failed;
            }
        }
        Verdict::Unchanged
    }
}

/// Run the probe once against the pod's IP; `Err` says why it failed.
pub async fn check(
    action: &Action,
    pod_ip: &str,
    pid: u32,
    timeout: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, run(action, pod_ip, pid)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

async fn run(action: &Action, pod_ip: &str, pid: u32) -> Result<(), String> {
    match action {
        Action::Http { host, port, path } => {
            let host = host.as_deref().unwrap_or(pod_ip);
            let s = tokio::net::TcpStream::connect((host, *port))
                .await
                .map_err(|e| format!("GET http://{host}:{port}{path}: {e}"))?;
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.36\r\n\
                 Accept: */*\r\nConnection: close\r\n\r\n"
            );
            write_all(&s, req.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let head = read_head(&s).await.map_err(|e| e.to_string())?;
            match http_status(&head) {
                Some(code) if (200..400).contains(&code) => Ok(()),
                Some(code) => Err(format!("HTTP probe failed with statuscode: {code}")),
                None => Err("not an HTTP response".into()),
            }
        }
        Action::Tcp { host, port } => {
            let host = host.as_deref().unwrap_or(pod_ip);
            tokio::net::TcpStream::connect((host, *port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
        }
        Action::Exec(cmd) => {
            let status = tokio::process::Command::new("nsenter")
                .args(["--target", &pid.to_string(), "--mount", "--uts", "--"])
                .args(cmd)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| e.to_string())?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("command {cmd:?} exited with {status}"))
            }
        }
        Action::Unsupported(why) => Err(why.clone()),
    }
}

// Readiness-based I/O: the workspace's tokio has no `io-util` feature, and adding it would
// rebuild every crate that depends on tokio.
async fn write_all(s: &tokio::net::TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        s.writable().await?;
        match s.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Up to the first 12 bytes of the response (an HTTP status line's version and code).
async fn read_head(s: &tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; 12];
    let mut got = 0;
    while got < head.len() {
        s.readable().await?;
        match s.try_read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok(head)
}

/// The status code of an HTTP/1.x status line's first 12 bytes.
fn http_status(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head).ok()?;
    let rest = line.strip_prefix("HTTP/1.")?;
    rest.get(2..5)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Result<Container, serde_json::Error> {
        serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "admin", "containerPort": 9249}]
        }))
    }

    #[test]
    fn specs_with_defaults_and_named_ports() -> Result<(), serde_json::Error> {
        let c = container()?;
        let p: Probe = serde_json::from_value(serde_json::json!({
            "httpGet": {"path": "/healthz", "port": "admin"}, "periodSeconds": 5
        }))?;
        let s = spec(&p, &c);
        assert_eq!(
            s.action,
            Action::Http {
                host: None,
                port: 9249,
                path: "/healthz".into()
            }
        );
        assert_eq!(s.period, Duration::from_secs(5));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
        let grpc: Probe = serde_json::from_value(serde_json::json!({"grpc": {"port": 1}}))?;
        assert!(matches!(spec(&grpc, &c).action, Action::Unsupported(_)));
        let bad: Probe =
            serde_json::from_value(serde_json::json!({"tcpSocket": {"port": "nope"}}))?;
        assert!(matches!(spec(&bad, &c).action, Action::Unsupported(_)));
        Ok(())
    }

    #[test]
    fn thresholds_count_consecutive_results() -> Result<(), serde_json::Error> {
        let c = container()?;
        let p: Probe = serde_json::from_value(serde_json::json!({
            "tcpSocket": {"port": 1}, "initialDelaySeconds": 3,
            "successThreshold": 2, "failureThreshold": 2
        }))?;
        let t0 = Instant::now();
        let mut t = Tracker::new(spec(&p, &c), t0);
        assert_eq!(t.next, t0 + Duration::from_secs(3));
        assert_eq!(t.record(false, t0), Verdict::Unchanged);
        assert_eq!(t.next, t0 + Duration::from_secs(10));
        assert_eq!(t.record(true, t0), Verdict::Unchanged);
        assert_eq!(t.record(false, t0), Verdict::Unchanged);
        assert_eq!(t.record(false, t0), Verdict::Failed);
        assert_eq!(t.record(true, t0), Verdict::Unchanged);
        assert_eq!(t.record(true, t0), Verdict::Succeeded);
        Ok(())
    }

    #[test]
    fn status_lines() {
        assert_eq!(http_status(b"HTTP/1.1 200 "), Some(200));
        assert_eq!(http_status(b"HTTP/1.0 503 "), Some(503));
        assert_eq!(http_status(b"SSH-2.0-Open"), None);
    }

    #[tokio::test]
    async fn tcp_and_http_against_a_local_listener() -> std::io::Result<()> {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
            }
        });
        let http = Action::Http {
            host: None,
            port,
            path: "/".into(),
        };
        let t = Duration::from_secs(2);
        assert_eq!(check(&http, "127.0.0.1", 0, t).await, Ok(()));
        assert_eq!(
            check(&Action::Tcp { host: None, port }, "127.0.0.1", 0, t).await,
            Ok(())
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        assert!(
            check(
                &Action::Tcp {
                    host: None,
                    port: closed
                },
                "127.0.0.1",
                0,
                t
            )
            .await
            .is_err()
        );
        Ok(())
    }
}
