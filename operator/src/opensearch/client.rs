//! A thin JSON-over-HTTP client for the handful of OpenSearch APIs the operator calls, on the
//! `opensearch` crate's transport (TLS, basic auth, timeouts).

use std::time::Duration;

use opensearch::OpenSearch;
use opensearch::auth::Credentials;
use opensearch::cert::{Certificate, CertificateValidation};
use opensearch::http::headers::HeaderMap;
use opensearch::http::request::JsonBody;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::http::{Method, Url};
use serde_json::Value;

use super::Error;

/// Every request is bounded: an unreachable cluster must not hold the reconcile.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Resolved connection settings (secrets already read).
#[derive(Clone, Default)]
pub struct ClientConfig {
    pub endpoint: String,
    /// (username, password)
    pub basic: Option<(String, String)>,
    /// PEM CA bundle.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoint", &self.endpoint)
            .field("user", &self.basic.as_ref().map(|(u, _)| u))
            .field("ca", &self.ca_pem.is_some())
            .finish()
    }
}

pub struct Client {
    inner: OpenSearch,
    endpoint: String,
}

/// A response: status and JSON body (a JSON string when the body was not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl Client {
    pub fn new(cfg: &ClientConfig) -> Result<Self, Error> {
        let url = Url::parse(&cfg.endpoint)
            .map_err(|e| Error::Config(format!("endpoint {:?}: {e}", cfg.endpoint)))?;
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(TIMEOUT)
            .disable_proxy();
        if let Some((u, p)) = &cfg.basic {
            builder = builder.auth(Credentials::Basic(u.clone(), p.clone()));
        }
        if let Some(pem) = &cfg.ca_pem {
            let cert = Certificate::from_pem(pem)
                .map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        let transport = builder
            .build()
            .map_err(|e| Error::Config(format!("transport: {e}")))?;
        Ok(Self {
            inner: OpenSearch::new(transport),
            endpoint: cfg.endpoint.clone(),
        })
    }

    /// Send one request. 401 and 403 become errors here (every caller treats them alike); any
    /// other status is returned for the caller to judge.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, Error> {
        let what = format!("{} {path}", method_name(method));
        let resp = self
            .inner
            .send(
                method,
                path,
                HeaderMap::new(),
                None::<&()>,
                body.map(|b| JsonBody::new(b.clone())),
                None,
            )
            .await
            .map_err(|e| Error::Unreachable {
                endpoint: self.endpoint.clone(),
                message: error_chain(&e),
            })?;
        let status = resp.status_code().as_u16();
        let text = resp.text().await.map_err(|e| Error::Unreachable {
            endpoint: self.endpoint.clone(),
            message: error_chain(&e),
        })?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        match status {
            401 => Err(Error::Unauthorized { what }),
            403 => Err(Error::Forbidden {
                what,
                message: reason_of(&body),
            }),
            _ => Ok(Reply { status, body }),
        }
    }

    /// Like [`Client::call`], and any non-2xx status is an error.
    pub async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let reply = self.call(method, path, body).await?;
        if reply.ok() {
            Ok(reply.body)
        } else {
            Err(Error::Api {
                status: reply.status,
                what: format!("{} {path}", method_name(method)),
                message: reason_of(&reply.body),
            })
        }
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Put => "PUT",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        Method::Head => "HEAD",
    }
}

/// The readable part of an OpenSearch error body, bounded.
pub fn reason_of(body: &Value) -> String {
    let text = body
        .pointer("/error/reason")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            body.get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.to_string());
    text.chars().take(300).collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reasons_are_readable_and_bounded() {
        assert_eq!(
            reason_of(&json!({"error": {"reason": "no such index [x]"}, "status": 404})),
            "no such index [x]"
        );
        assert_eq!(reason_of(&json!({"message": "denied"})), "denied");
        assert_eq!(reason_of(&json!("x".repeat(1000))).len(), 300);
    }

    #[test]
    fn bad_endpoint_is_a_config_error() {
        let e = Client::new(&ClientConfig {
            endpoint: "not a url".into(),
            ..Default::default()
        })
        .err()
        .expect("refused");
        assert_eq!(e.reason(), "InvalidClientConfig");
    }

    #[test]
    fn debug_redacts_the_password() {
        let c = ClientConfig {
            endpoint: "https://x:9200".into(),
            basic: Some(("admin".into(), "s3cret".into())),
            ca_pem: None,
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
