//! The operator's side of the job pods' control API ([`tributary_crds::control`]): plain HTTP
//! to each pod's IP on the admin port, the bearer token on the requests that change anything.
//! Every request is bounded, so an unreachable pod costs one timeout, never the reconcile.

use std::time::Duration;

use tributary_crds::control::{
    PipelineReport, RESUME_PATH, SAVEPOINTS_PATH, STATE_PATH, STATUS_PATH, SavepointCheck,
    SavepointReport, SavepointRequest, StateReport,
};

use super::upgrade::{CheckSeen, Part, StateSeen};

const TIMEOUT: Duration = Duration::from_secs(5);
/// The whole-savepoint check reads every part's manifest back from the store.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Http {
        what: String,
        source: reqwest::Error,
    },
    #[error("{what} answered {status}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what} answered something that is not a report: {source}")]
    Decode {
        what: String,
        source: serde_json::Error,
    },
}

/// A client of the control API, shared by every reconcile.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The admin port (the runtime's is [`tributary_crds::job_config::ADMIN_PORT`]; tests
    /// point it at a fake runtime).
    port: u16,
}

impl Client {
    pub fn new(port: u16) -> Self {
        // Pod IPs are reached directly: no proxy from the environment may sit in between.
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .no_proxy()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { http, port }
    }

    fn url(&self, ip: &str, path: &str) -> String {
        // An IPv6 pod address needs brackets in a URL.
        if ip.contains(':') {
            format!("http://[{ip}]:{}{path}", self.port)
        } else {
            format!("http://{ip}:{}{path}", self.port)
        }
    }

    async fn send(
        &self,
        what: String,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), Error> {
        let resp = req.send().await.map_err(|source| Error::Http {
            what: what.clone(),
            source,
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|source| Error::Http { what, source })?;
        Ok((status, body.to_vec()))
    }

    /// `GET /savepoints/<id>`, as the flow sees it.
    pub async fn savepoint(&self, ip: &str, id: &str) -> Part {
        let what = format!("GET {SAVEPOINTS_PATH}/{id} on {ip}");
        let url = self.url(ip, &format!("{SAVEPOINTS_PATH}/{id}"));
        match self.send(what.clone(), self.http.get(url)).await {
            Ok((404, _)) => Part::Unknown,
            Ok((s, body)) if (200..300).contains(&s) => {
                match serde_json::from_slice::<SavepointReport>(&body) {
                    Ok(r) => Part::Report(r),
                    Err(source) => Part::Unreachable(Error::Decode { what, source }.to_string()),
                }
            }
            Ok((status, body)) => Part::Unreachable(
                Error::Status {
                    what,
                    status,
                    body: excerpt(&body),
                }
                .to_string(),
            ),
            Err(e) => Part::Unreachable(e.to_string()),
        }
    }

    /// `GET /savepoints/<id>/check`: the replica reads the whole savepoint back from the store.
    pub async fn check(&self, ip: &str, id: &str) -> CheckSeen {
        let what = format!("GET {SAVEPOINTS_PATH}/{id}/check on {ip}");
        let url = self.url(ip, &format!("{SAVEPOINTS_PATH}/{id}/check"));
        let req = self.http.get(url).timeout(CHECK_TIMEOUT);
        match self.send(what.clone(), req).await {
            Ok((s, body)) if (200..300).contains(&s) => {
                match serde_json::from_slice::<SavepointCheck>(&body) {
                    Ok(c) => CheckSeen::Report(c),
                    Err(source) => {
                        CheckSeen::Unreachable(Error::Decode { what, source }.to_string())
                    }
                }
            }
            Ok((status, body)) => CheckSeen::Unreachable(
                Error::Status {
                    what,
                    status,
                    body: excerpt(&body),
                }
                .to_string(),
            ),
            Err(e) => CheckSeen::Unreachable(e.to_string()),
        }
    }

    /// `POST /savepoints {id, stopAfter: true}`. The answer is not needed (the next poll reads
    /// the report), except a refusal of the token, which no retry cures.
    pub async fn request_savepoint(&self, ip: &str, id: &str, token: &str) -> Result<(), Error> {
        let what = format!("POST {SAVEPOINTS_PATH} {id} on {ip}");
        let body = SavepointRequest {
            id: id.to_string(),
            stop_after: true,
        };
        let req = self
            .http
            .post(self.url(ip, SAVEPOINTS_PATH))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).map_err(|source| Error::Decode {
                what: what.clone(),
                source,
            })?);
        let answer = self.send(what.clone(), req).await?;
        expect_success(what, answer)
    }

    /// `POST /resume`.
    pub async fn resume(&self, ip: &str, token: &str) -> Result<(), Error> {
        let what = format!("POST {RESUME_PATH} on {ip}");
        let req = self.http.post(self.url(ip, RESUME_PATH)).bearer_auth(token);
        let answer = self.send(what.clone(), req).await?;
        expect_success(what, answer)
    }

    /// `GET /status`: the replica's own report of its sources and sinks.
    pub async fn pipeline(&self, ip: &str) -> Result<PipelineReport, String> {
        let what = format!("GET {STATUS_PATH} on {ip}");
        match self
            .send(what.clone(), self.http.get(self.url(ip, STATUS_PATH)))
            .await
        {
            Ok((s, body)) if (200..300).contains(&s) => serde_json::from_slice(&body)
                .map_err(|source| Error::Decode { what, source }.to_string()),
            Ok((status, body)) => Err(Error::Status {
                what,
                status,
                body: excerpt(&body),
            }
            .to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `GET /state`, as the flow sees it.
    pub async fn state(&self, ip: &str) -> StateSeen {
        let what = format!("GET {STATE_PATH} on {ip}");
        match self
            .send(what.clone(), self.http.get(self.url(ip, STATE_PATH)))
            .await
        {
            Ok((s, body)) if (200..300).contains(&s) => {
                match serde_json::from_slice::<StateReport>(&body) {
                    Ok(r) => StateSeen::Report(r),
                    Err(source) => {
                        StateSeen::Unreachable(Error::Decode { what, source }.to_string())
                    }
                }
            }
            Ok((status, body)) => StateSeen::Unreachable(
                Error::Status {
                    what,
                    status,
                    body: excerpt(&body),
                }
                .to_string(),
            ),
            Err(e) => StateSeen::Unreachable(e.to_string()),
        }
    }
}

fn expect_success(what: String, (status, body): (u16, Vec<u8>)) -> Result<(), Error> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(Error::Status {
            what,
            status,
            body: excerpt(&body),
        })
    }
}

/// The start of a body, for a message (never the whole of a large one).
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

impl Error {
    /// The status a replica answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
