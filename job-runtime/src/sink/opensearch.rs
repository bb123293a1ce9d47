//! The OpenSearch sink: `_bulk` `index` operations to the write alias, with the `_id` from the
//! resource's template, so a redelivery overwrites the same documents.
//!
//! A range is sent in requests of at most `bulkMaxBytes`. Per item: `429` and `5xx` are retried
//! (only the failed items, with backoff); any other error is permanent for that document
//! (a mapping conflict, a refused value): it goes to dead-letter with OpenSearch's reason and
//! the range is done. A failure of a whole request (connection refused, 5xx, 401/403) fails the
//! write and the delivery loop retries the range.
//!
//! A request refused as too large (`413`: the cluster's `http.max_content_length`, 10 MiB on
//! some managed domains, is below `bulkMaxBytes`) is split in halves, and later requests stay
//! under half the refused size. A single document refused so goes to dead-letter
//! (`opensearch_too_large`): it can never be indexed there.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use opensearch::auth::Credentials;
use opensearch::cert::{Certificate, CertificateValidation};
use opensearch::http::Url;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::{BulkParts, OpenSearch};
use prometheus::{Histogram, IntCounterVec};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use super::dead_letter::DeadLetterWriter;
use super::{Batching, Range, Sink, SinkError};
use crate::output::{DeadLetterRecord, Document, OutputRecord};

/// How often one request's retryable failures (429/5xx of items or of the whole request, a
/// lost connection) are retried in place before the write fails and the delivery loop takes
/// over (which retries the whole range, forever, with a longer backoff).
const ITEM_RETRIES: u32 = 12;

/// Dead-letter reasons of this sink: a document OpenSearch refused for good (mapping conflict,
/// refused value), and one too large for any request the cluster accepts.
pub const REJECTED: &str = "opensearch_rejected";
pub const TOO_LARGE: &str = "opensearch_too_large";
pub const DEAD_LETTER_REASONS: [&str; 2] = [REJECTED, TOO_LARGE];

/// Backoff of in-place retries: 100 ms doubling to 5 s.
fn retry_delay(attempt: u32) -> Duration {
    super::backoff(attempt).min(Duration::from_secs(5))
}

pub struct OpenSearchSink {
    client: OpenSearch,
    alias: String,
    batching: Batching,
    /// The largest request to send: `bulkMaxBytes`, lowered when the cluster refuses a
    /// request as too large.
    request_limit: usize,
    dead_letter: DeadLetterWriter,
    /// `tributary_dead_letters_total`, counted by reason once the refused documents are written.
    dead_letters: Option<IntCounterVec>,
    /// `tributary_sink_freshness_seconds{sink="opensearch"}`, observed per document OpenSearch
    /// acknowledged.
    freshness: Option<Histogram>,
}

/// Connection settings.
#[derive(Clone, Debug)]
pub struct OpenSearchConfig {
    pub endpoint: String,
    pub username: Option<String>,
    pub password: Option<tributary_crds::secret::Secret>,
    pub write_alias: String,
    pub bulk_max_bytes: usize,
    pub flush_interval: Duration,
    /// PEM CA bundle the endpoint's certificate chains to (`caCertFile` of the job
    /// configuration); `None`: the system's trusted roots.
    pub ca_cert_file: Option<PathBuf>,
}

/// The CA bundle at `path` (one or more PEM certificates), for the client to trust. A file that
/// cannot be read, holds no certificate or a malformed one is an error naming the file.
pub fn read_ca(path: &Path) -> Result<Certificate, SinkError> {
    let fail = |what: String| {
        SinkError::Write(format!(
            "OpenSearch CA certificate {}: {what}",
            path.display()
        ))
    };
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let ders = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not valid PEM: {e}")))?;
    let mut chain: Option<Certificate> = None;
    for (i, der) in ders.into_iter().enumerate() {
        // What the TLS stack will ask of a trust anchor, checked now rather than at the first
        // request.
        rustls::RootCertStore::empty()
            .add(der.clone())
            .map_err(|e| fail(format!("certificate {} is not usable as a CA: {e}", i + 1)))?;
        let cert =
            Certificate::from_der(&der).map_err(|e| fail(format!("certificate {}: {e}", i + 1)))?;
        match &mut chain {
            Some(c) => c.append(cert),
            None => chain = Some(cert),
        }
    }
    chain.ok_or_else(|| fail("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into()))
}

/// The client for `cfg`: its endpoint, Basic credentials and CA.
pub fn client(cfg: &OpenSearchConfig) -> Result<OpenSearch, SinkError> {
    let url = Url::parse(&cfg.endpoint)
        .map_err(|e| SinkError::Write(format!("OpenSearch endpoint {}: {e}", cfg.endpoint)))?;
    let mut builder =
        TransportBuilder::new(SingleNodeConnectionPool::new(url)).timeout(Duration::from_secs(60));
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        builder = builder.auth(Credentials::Basic(u.clone(), p.expose().to_string()));
    }
    if let Some(path) = &cfg.ca_cert_file {
        builder = builder.cert_validation(CertificateValidation::Full(read_ca(path)?));
    }
    let transport = builder
        .build()
        .map_err(|e| SinkError::Write(format!("OpenSearch client: {e}")))?;
    Ok(OpenSearch::new(transport))
}

/// The answer to one `_bulk` request (a permanent failure is the `Err` around it).
enum Bulk {
    /// The outcome of every item, in request order.
    Items(Vec<ItemOutcome>),
    /// A whole-request failure worth retrying in place (429, 5xx, a lost connection).
    /// Worth retrying: why (machine-readable) and the message.
    Retry(&'static str, String),
    /// `413 Payload Too Large`: the request (of this many bytes) exceeds the cluster's
    /// `http.max_content_length`; smaller requests may pass.
    TooLarge(usize),
}

/// The outcome of one item of a bulk response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemOutcome {
    Ok,
    Retry,
    Reject(String),
}

/// Classify the items of a bulk response body, in request order.
pub fn outcomes(body: &Value) -> Vec<ItemOutcome> {
    let Some(items) = body.get("items").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| {
            let op = item
                .as_object()
                .and_then(|o| o.values().next())
                .cloned()
                .unwrap_or(Value::Null);
            let status = op.get("status").and_then(Value::as_u64).unwrap_or(0);
            match status {
                200..=299 => ItemOutcome::Ok,
                429 | 500..=599 => ItemOutcome::Retry,
                _ => ItemOutcome::Reject(
                    op.get("error")
                        .map(Value::to_string)
                        .unwrap_or_else(|| format!("status {status}")),
                ),
            }
        })
        .collect()
}

impl OpenSearchSink {
    pub fn new(cfg: &OpenSearchConfig, dead_letter: DeadLetterWriter) -> Result<Self, SinkError> {
        Ok(Self {
            client: client(cfg)?,
            alias: cfg.write_alias.clone(),
            batching: Batching {
                max_bytes: cfg.bulk_max_bytes.max(1),
                max_interval: cfg.flush_interval,
            },
            request_limit: cfg.bulk_max_bytes.max(1),
            dead_letter,
            dead_letters: None,
            freshness: None,
        })
    }

    /// Count the documents this sink dead-letters in `counter` (by reason).
    #[must_use]
    pub fn counting_dead_letters(mut self, counter: IntCounterVec) -> Self {
        self.dead_letters = Some(counter);
        self
    }

    /// Observe in `histogram` the seconds from each document's `sale_datetime` to the bulk
    /// response that acknowledged it.
    #[must_use]
    pub fn measuring_freshness(mut self, histogram: Histogram) -> Self {
        self.freshness = Some(histogram);
        self
    }

    fn observe_acknowledged(&self, docs: &[&Document]) {
        let Some(h) = &self.freshness else { return };
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        for t in docs.iter().filter_map(|d| d.sale_time()) {
            // A sale dated in the future counts as fresh.
            h.observe(now_us.saturating_sub(t.as_micros()).max(0) as f64 / 1e6);
        }
    }

    /// One `_bulk` request.
    async fn bulk(&self, docs: &[&Document]) -> Result<Bulk, SinkError> {
        let mut body: Vec<Bytes> = Vec::with_capacity(docs.len() * 2);
        let mut bytes = 0;
        for d in docs {
            let action = serde_json::json!({"index": {"_id": d.id}}).to_string();
            bytes += action.len() + d.json.len() + 2;
            body.push(Bytes::from(action));
            body.push(Bytes::from(d.json.clone()));
        }
        let resp = match self
            .client
            .bulk(BulkParts::Index(&self.alias))
            .body(body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                return Ok(Bulk::Retry(
                    "OpenSearchUnreachable",
                    format!("bulk to {}: {e}", self.alias),
                ));
            }
        };
        let status = resp.status_code();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => {
                return Ok(Bulk::Retry(
                    "OpenSearchUnreachable",
                    format!("bulk response: {e}"),
                ));
            }
        };
        if status.as_u16() == 413 {
            return Ok(Bulk::TooLarge(bytes));
        }
        if !status.is_success() {
            let excerpt: String = text.chars().take(500).collect();
            let message = format!("bulk to {}: HTTP {status}: {excerpt}", self.alias);
            let reason = match status.as_u16() {
                429 => "OpenSearchThrottled",
                401 => "OpenSearchUnauthorized",
                403 => "OpenSearchForbidden",
                404 => "OpenSearchAliasNotFound",
                s if s >= 500 => "OpenSearchUnavailable",
                _ => "OpenSearchRejected",
            };
            if status.as_u16() == 429 || status.is_server_error() {
                return Ok(Bulk::Retry(reason, message));
            }
            return Err(SinkError::Refused { reason, message });
        }
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| SinkError::Write(format!("bulk response is not JSON: {e}")))?;
        let out = outcomes(&json);
        if out.len() != docs.len() {
            return Err(SinkError::Write(format!(
                "bulk response has {} items for {} documents",
                out.len(),
                docs.len()
            )));
        }
        Ok(Bulk::Items(out))
    }
}

impl Sink for OpenSearchSink {
    fn name(&self) -> &'static str {
        "opensearch"
    }

    fn batching(&self) -> Batching {
        self.batching
    }

    async fn write(&mut self, range: Range, records: Vec<OutputRecord>) -> Result<(), SinkError> {
        let docs: Vec<Document> = records
            .into_iter()
            .filter_map(|r| match r {
                OutputRecord::Document(d) => Some(d),
                OutputRecord::DeadLetter(_) => None,
            })
            .collect();
        let mut rejected = Vec::new();
        // Requests of at most `request_limit` bytes, in order; a request refused as too large
        // is split in two and its halves go first.
        let mut chunks: VecDeque<&[Document]> = chunks(&docs, self.request_limit).collect();
        while let Some(chunk) = chunks.pop_front() {
            let Some(bytes) = self.send(chunk, &mut rejected).await? else {
                continue;
            };
            if let [doc] = chunk {
                tracing::warn!(id = %doc.id, bytes, "OpenSearch refused one document as too large (HTTP 413); dead-lettered");
                rejected.push(DeadLetterRecord {
                    reason: TOO_LARGE.into(),
                    detail: format!(
                        "a bulk request of this document alone ({bytes} bytes) was refused with \
                         HTTP 413: it exceeds the cluster's http.max_content_length"
                    ),
                    document: serde_json::from_slice(&doc.json).ok(),
                    ..DeadLetterRecord::default()
                });
                continue;
            }
            // Later requests stay under what was refused, so one 413 is not paid per range.
            let limit = (bytes / 2).max(1);
            if limit < self.request_limit {
                tracing::warn!(
                    refused = bytes,
                    limit,
                    "OpenSearch refused a bulk request as too large (HTTP 413); splitting it \
                     and sending at most {limit} bytes per request from now on: lower \
                     sinks.opensearch.bulkMaxBytes to the cluster's http.max_content_length"
                );
                self.request_limit = limit;
            }
            let (a, b) = chunk.split_at(chunk.len() / 2);
            chunks.push_front(b);
            chunks.push_front(a);
        }
        if !rejected.is_empty() {
            tracing::warn!(
                count = rejected.len(),
                "OpenSearch refused documents; dead-lettered"
            );
            self.dead_letter
                .write("opensearch-rejected", range, &rejected)
                .await?;
            if let Some(counter) = &self.dead_letters {
                for r in &rejected {
                    counter.with_label_values(&[r.reason.as_str()]).inc();
                }
            }
        }
        Ok(())
    }
}

/// The bytes `doc` adds to a bulk request: its action line and its source, each with its
/// newline (an estimate: an id with characters JSON escapes is counted a little short).
fn bulk_size(doc: &Document) -> usize {
    BULK_ACTION_OVERHEAD + doc.id.len() + doc.json.len() + 1
}

/// `{"index":{"_id":""}}` and its newline.
const BULK_ACTION_OVERHEAD: usize = r#"{"index":{"_id":""}}"#.len() + 1;

/// `docs` in consecutive runs of at most `limit` bulk bytes (a larger document alone).
fn chunks(docs: &[Document], limit: usize) -> impl Iterator<Item = &[Document]> {
    let mut rest = docs;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = 1;
        let mut size = bulk_size(&rest[0]);
        while end < rest.len() && size + bulk_size(&rest[end]) <= limit {
            size += bulk_size(&rest[end]);
            end += 1;
        }
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

impl OpenSearchSink {
    /// Index `chunk` in one request, retrying failed items in place; documents refused for
    /// good go to `rejected`. `Some(bytes)`: the request (of `bytes`) was refused as too large,
    /// and nothing goes to `rejected` (the chunk is sent again in halves).
    async fn send(
        &self,
        chunk: &[Document],
        rejected: &mut Vec<DeadLetterRecord>,
    ) -> Result<Option<usize>, SinkError> {
        let mut pending: Vec<&Document> = chunk.iter().collect();
        let mut refused = Vec::new();
        let mut attempt = 0;
        while !pending.is_empty() {
            let outcomes = match self.bulk(&pending).await? {
                Bulk::Items(o) => o,
                Bulk::TooLarge(bytes) => return Ok(Some(bytes)),
                Bulk::Retry(reason, message) => {
                    attempt += 1;
                    if attempt > ITEM_RETRIES {
                        return Err(SinkError::Refused { reason, message });
                    }
                    tracing::debug!(attempt, %message, "retrying the bulk request");
                    tokio::time::sleep(retry_delay(attempt)).await;
                    continue;
                }
            };
            let mut retry = Vec::new();
            let mut acknowledged = Vec::with_capacity(pending.len());
            for (doc, outcome) in pending.iter().zip(outcomes) {
                match outcome {
                    ItemOutcome::Ok => acknowledged.push(*doc),
                    ItemOutcome::Retry => retry.push(*doc),
                    ItemOutcome::Reject(reason) => refused.push(DeadLetterRecord {
                        reason: REJECTED.into(),
                        detail: reason,
                        document: serde_json::from_slice(&doc.json).ok(),
                        ..DeadLetterRecord::default()
                    }),
                }
            }
            self.observe_acknowledged(&acknowledged);
            if !retry.is_empty() {
                attempt += 1;
                if attempt > ITEM_RETRIES {
                    return Err(SinkError::Write(format!(
                        "{} documents still refused with 429/5xx after {ITEM_RETRIES} retries",
                        retry.len()
                    )));
                }
                tracing::debug!(items = retry.len(), attempt, "retrying bulk items");
                tokio::time::sleep(retry_delay(attempt)).await;
            }
            pending = retry;
        }
        rejected.append(&mut refused);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_bulk_items() {
        let body = serde_json::json!({"errors": true, "items": [
            {"index": {"_id": "a", "status": 201}},
            {"index": {"_id": "b", "status": 429, "error": {"type": "es_rejected_execution_exception"}}},
            {"index": {"_id": "c", "status": 400, "error": {"type": "mapper_parsing_exception"}}},
            {"index": {"_id": "d", "status": 503}},
            {"index": {"_id": "e", "status": 200}}
        ]});
        let o = outcomes(&body);
        assert_eq!(o[0], ItemOutcome::Ok);
        assert_eq!(o[1], ItemOutcome::Retry);
        assert!(matches!(&o[2], ItemOutcome::Reject(r) if r.contains("mapper_parsing_exception")));
        assert_eq!(o[3], ItemOutcome::Retry);
        assert_eq!(o[4], ItemOutcome::Ok);
        assert!(outcomes(&serde_json::json!({})).is_empty());
    }

    fn doc(id: &str, json_len: usize) -> Document {
        Document {
            id: id.into(),
            day: "2020-01-01".into(),
            json: vec![b'x'; json_len],
        }
    }

    #[test]
    fn requests_stay_under_the_limit_in_order() {
        let docs: Vec<Document> = (0..10).map(|i| doc(&format!("d{i}"), 100)).collect();
        let one = bulk_size(&docs[0]);
        // The size counted is the request's: action line, source and both newlines.
        let action = serde_json::json!({"index": {"_id": "d0"}}).to_string();
        assert_eq!(one, action.len() + 1 + 100 + 1);
        for limit in [
            1,
            one - 1,
            one,
            one + 1,
            3 * one,
            3 * one + 5,
            10 * one,
            usize::MAX,
        ] {
            let got: Vec<&[Document]> = chunks(&docs, limit).collect();
            // Nothing lost, nothing repeated, order kept.
            let ids: Vec<&str> = got
                .iter()
                .flat_map(|c| c.iter().map(|d| d.id.as_str()))
                .collect();
            let want: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
            assert_eq!(ids, want, "limit {limit}");
            let per = (limit / one).clamp(1, docs.len());
            assert!(got.iter().all(|c| c.len() <= per), "limit {limit}: {got:?}");
            assert_eq!(got.len(), docs.len().div_ceil(per), "limit {limit}");
        }
        // A document larger than the limit goes alone, between full requests.
        let mixed = vec![doc("a", 10), doc("big", 1000), doc("b", 10), doc("c", 10)];
        let sizes: Vec<usize> = chunks(&mixed, 200).map(<[Document]>::len).collect();
        assert_eq!(sizes, [1, 1, 2]);
        assert_eq!(chunks(&[], 10).count(), 0);
    }

    /// A self-signed CA (P-256, `CA:TRUE`), for parsing only.
    const TEST_CA: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBjzCCATWgAwIBAgIUKz2+TrjQIf0Uwrm3fs59ts2lq00wCgYIKoZIzj0EAwIw\n\
HDEaMBgGA1UEAwwRdHJpYnV0YXJ5IHRlc3QgQ0EwIBcNMjYxMTI2MjEwODEyWhgP\n\
MjEyNjExMDIyMTA4MTJaMBwxGjAYBgNVBAMMEXRyaWJ1dGFyeSB0ZXN0IENBMFkw\n\
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE3f3tjffX/MIQhbOuYTL9Gfs1r4Veg+mP\n\
gah/XvEhJtDsUJiy32jb5ZcFz0lHOFiPsVS9z8UIVInRuE1p5KZP/6NTMFEwHQYD\n\
VR0OBBYEFAHCsfaEaunzKNTwJE0B2IbM3oBxMB8GA1UdIwQYMBaAFAHCsfaEaunz\n\
KNTwJE0B2IbM3oBxMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIh\n\
AIaDCjUTeziCBmC5n7tLC/CcVw893+n/tQ3av92/D+K+AiBFnQctUfW+N+AV2Kbp\n\
FMz9oN30xmZDHnFWNgtV+p9CKw==\n\
-----END CERTIFICATE-----\n\
";

    fn config(ca: Option<PathBuf>) -> OpenSearchConfig {
        OpenSearchConfig {
            endpoint: "https://127.0.0.1:9201".into(),
            username: None,
            password: None,
            write_alias: "w".into(),
            bulk_max_bytes: 1 << 20,
            flush_interval: Duration::from_secs(1),
            ca_cert_file: ca,
        }
    }

    /// The client's error for a CA file with `contents` (`None`: no such file).
    fn ca_error(contents: Option<&str>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        if let Some(c) = contents {
            std::fs::write(&path, c).unwrap();
        }
        match client(&config(Some(path.clone()))) {
            Ok(_) => panic!("{contents:?} was accepted as a CA"),
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.starts_with(&format!("OpenSearch CA certificate {}: ", path.display())),
                    "{e}"
                );
                e
            }
        }
    }

    #[test]
    fn trusts_a_pem_ca_bundle() {
        assert!(client(&config(None)).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        // Two certificates, CRLF line ends and text around them, as bundles come.
        let bundle = format!("# ours\n{TEST_CA}\n{TEST_CA}").replace('\n', "\r\n");
        std::fs::write(&path, bundle).unwrap();
        assert!(read_ca(&path).is_ok());
        assert!(client(&config(Some(path))).is_ok());
    }

    #[test]
    fn a_bad_ca_file_is_a_clear_error() {
        let e = ca_error(None);
        assert!(e.contains("cannot read it"), "{e}");
        let e = ca_error(Some(""));
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = ca_error(Some("not a certificate\n"));
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = ca_error(Some(
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        ));
        assert!(e.contains("not valid PEM"), "{e}");
        // Well-formed PEM around bytes that are not a certificate.
        let e = ca_error(Some(
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        ));
        assert!(e.contains("certificate 1 is not usable as a CA"), "{e}");
        let e = ca_error(Some(&TEST_CA[..TEST_CA.len() / 2]));
        assert!(e.contains("not valid PEM"), "{e}");
    }
}
