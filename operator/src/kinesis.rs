//! The operator's view of a resource's Kinesis streams, with the job's endpoint, region and
//! credentials rules (`spec.aws`, each source's overrides; static credentials from the Secret the
//! resource references, else the operator's default chain: IRSA, Pod Identity, the instance
//! role):
//!
//! - the sales stream's open and closed shards (ListShards over the stream's retention, paged),
//!   which Shards mode scales by;
//! - whether every stream exists and is active (DescribeStreamSummary), for `SourcesHealthy`;
//! - the enhanced fan-out consumers of replicas that no longer exist, deregistered
//!   ([`deregister_consumers`]): each replica registers its own, `<consumerName>-<ordinal>`.
//!
//! The Secret is read in the resource's own namespace, and only when the chart granted the
//! operator read access there (`secretNamespaces`); without it the streams' health is Unknown,
//! never guessed.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tributary_aws::Credentials;
use tributary_aws::kinesis::Client;
use tributary_aws::kinesis::error::{ProvideErrorMetadata, SdkError};
use tributary_aws::kinesis::types::StreamStatus;
use tributary_crds::spec::{AwsSpec, ReaderKind, StreamSource};
use tributary_crds::{SecretKeyRef, StreamingEnrichment};

/// What one look at the streams found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Open and closed shards of the sales stream; `None` when it could not be listed.
    pub shards: Option<ShardCounts>,
    pub health: Health,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardCounts {
    pub open: i32,
    pub closed: i32,
}

/// `SourcesHealthy`: every stream exists and answers, or the first reason it does not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Something the job would hit too: a missing stream, denied access, throttling.
    Unhealthy {
        reason: &'static str,
        message: String,
    },
    /// The operator could not look (it may not read the credentials, Kinesis is unreachable
    /// from the operator).
    Unknown {
        reason: &'static str,
        message: String,
    },
}

/// The streams a resource reads, with their role names.
fn streams(se: &StreamingEnrichment) -> [(&'static str, &StreamSource); 3] {
    let s = &se.spec.sources;
    [
        ("customers", &s.customers),
        ("addresses", &s.addresses),
        ("sales", &s.sales),
    ]
}

/// How long one look at the streams may take: the reconcile waits for it, so an unreachable
/// endpoint must not hold it for the SDK's whole retry budget.
pub const OBSERVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Look at the resource's streams, within [`OBSERVE_TIMEOUT`].
pub async fn observe(kube: &kube::Client, se: &StreamingEnrichment) -> Observation {
    match tokio::time::timeout(OBSERVE_TIMEOUT, observe_unbounded(kube, se)).await {
        Ok(o) => o,
        Err(_) => Observation {
            shards: None,
            health: Health::Unknown {
                reason: "KinesisUnreachable",
                message: format!(
                    "Kinesis did not answer within {} s (endpoint {})",
                    OBSERVE_TIMEOUT.as_secs(),
                    se.spec
                        .aws
                        .kinesis_target(&se.spec.sources.sales)
                        .1
                        .map_or_else(
                            || format!("of region {}", se.spec.aws.region),
                            str::to_string
                        )
                ),
            },
        },
    }
}

async fn observe_unbounded(kube: &kube::Client, se: &StreamingEnrichment) -> Observation {
    let credentials = match credentials(kube, se).await {
        Ok(c) => c,
        Err(health) => {
            return Observation {
                shards: None,
                health,
            };
        }
    };
    let aws = &se.spec.aws;
    let mut health = Health::Healthy;
    let mut shards = None;
    for (role, source) in streams(se) {
        let client = tributary_aws::kinesis_client_with(aws, source, credentials.clone()).await;
        let result = if role == "sales" {
            list_shards(&client, &source.stream).await.map(|counts| {
                shards = Some(counts);
            })
        } else {
            describe(&client, &source.stream).await
        };
        if let Err(h) = result.map_err(|e| e.health(role, &source.stream, aws, source))
            && health == Health::Healthy
        {
            health = h;
        }
    }
    Observation { shards, health }
}

/// Static credentials from the resource's Secret, or `None` for the default chain.
async fn credentials(
    kube: &kube::Client,
    se: &StreamingEnrichment,
) -> Result<Option<Credentials>, Health> {
    let Some(c) = &se.spec.aws.credentials else {
        return Ok(None);
    };
    let ns = se.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(kube.clone(), &ns);
    let value = |r: &SecretKeyRef| {
        let api = api.clone();
        let ns = ns.clone();
        let r = r.clone();
        async move {
            let secret = match api.get(&r.name).await {
                Ok(s) => s,
                Err(kube::Error::Api(e)) if e.code == 403 => {
                    return Err(Health::Unknown {
                        reason: "CredentialsUnreadable",
                        message: format!(
                            "the operator may not read Secret {ns}/{} (spec.aws.credentials): add \
                             {ns} to the chart's secretNamespaces to let it observe the streams",
                            r.name
                        ),
                    });
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    return Err(Health::Unhealthy {
                        reason: "CredentialsMissing",
                        message: format!(
                            "Secret {ns}/{} (spec.aws.credentials) does not exist",
                            r.name
                        ),
                    });
                }
                Err(e) => {
                    return Err(Health::Unknown {
                        reason: "CredentialsUnreadable",
                        message: format!("reading Secret {ns}/{}: {e}", r.name),
                    });
                }
            };
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Health::Unhealthy {
                    reason: "CredentialsMissing",
                    message: format!(
                        "Secret {ns}/{} has no non-empty UTF-8 key {} (spec.aws.credentials)",
                        r.name, r.key
                    ),
                })
        }
    };
    let id = value(&c.access_key_id).await?;
    let secret = value(&c.secret_access_key).await?;
    Ok(Some(Credentials::new(
        id,
        secret,
        None,
        None,
        "tributary-operator-secret",
    )))
}

/// A failed Kinesis call, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallError {
    op: &'static str,
    /// The service's error code, when it answered.
    code: Option<String>,
    message: String,
    /// The request never got an answer (connection, timeout).
    unreachable: bool,
}

impl CallError {
    fn from_sdk<E: ProvideErrorMetadata + std::error::Error + 'static>(
        op: &'static str,
        e: &SdkError<E>,
    ) -> Self {
        let unreachable = matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_));
        Self {
            op,
            code: e.code().map(str::to_string),
            message: e.message().map(str::to_string).unwrap_or_else(|| {
                tributary_aws::kinesis::error::DisplayErrorContext(e).to_string()
            }),
            unreachable,
        }
    }

    /// What this error says about the stream.
    pub fn health(&self, role: &str, stream: &str, aws: &AwsSpec, source: &StreamSource) -> Health {
        let (region, endpoint) = aws.kinesis_target(source);
        let at = endpoint.map_or_else(|| format!("region {region}"), |e| format!("{e} ({region})"));
        let what = format!("sources.{role} stream {stream:?} at {at}");
        let detail = format!("{}: {}", self.op, self.message);
        let unhealthy = |reason, message| Health::Unhealthy { reason, message };
        match self.code.as_deref() {
            Some("ResourceNotFoundException") => unhealthy(
                "StreamNotFound",
                format!("{what} does not exist ({detail})"),
            ),
            Some(
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "ExpiredTokenException"
                | "KMSAccessDeniedException",
            ) => unhealthy("AccessDenied", format!("{what}: access denied ({detail})")),
            Some(
                "LimitExceededException"
                | "ProvisionedThroughputExceededException"
                | "ThrottlingException",
            ) => unhealthy(
                "Throttled",
                format!("{what}: Kinesis throttles the calls ({detail})"),
            ),
            Some("StreamNotActive") => {
                unhealthy("StreamNotActive", format!("{what}: {}", self.message))
            }
            _ if self.unreachable => Health::Unknown {
                reason: "KinesisUnreachable",
                message: format!("{what}: the operator cannot reach Kinesis ({detail})"),
            },
            _ => unhealthy("KinesisError", format!("{what}: {detail}")),
        }
    }
}

/// Named by ARN when configured as one.
fn is_arn(stream: &str) -> bool {
    stream.starts_with("arn:")
}

async fn describe(client: &Client, stream: &str) -> Result<(), CallError> {
    let call = client.describe_stream_summary();
    let call = if is_arn(stream) {
        call.stream_arn(stream)
    } else {
        call.stream_name(stream)
    };
    let out = call
        .send()
        .await
        .map_err(|e| CallError::from_sdk("DescribeStreamSummary", &e))?;
    let status = out
        .stream_description_summary()
        .map(|s| s.stream_status().clone());
    match status {
        Some(StreamStatus::Active | StreamStatus::Updating) | None => Ok(()),
        Some(other) => Err(CallError {
            op: "DescribeStreamSummary",
            code: Some("StreamNotActive".into()),
            message: format!("the stream is {}", other.as_str()),
            unreachable: false,
        }),
    }
}

/// Every shard of the stream within its retention, counted open (no ending sequence number)
/// and closed.
async fn list_shards(client: &Client, stream: &str) -> Result<ShardCounts, CallError> {
    let mut counts = ShardCounts { open: 0, closed: 0 };
    let mut next: Option<String> = None;
    loop {
        let call = client.list_shards();
        // With a token, ListShards takes nothing else.
        let call = match &next {
            Some(token) => call.next_token(token),
            None if is_arn(stream) => call.stream_arn(stream),
            None => call.stream_name(stream),
        };
        let out = call
            .send()
            .await
            .map_err(|e| CallError::from_sdk("ListShards", &e))?;
        for shard in out.shards() {
            let closed = shard
                .sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_some();
            if closed {
                counts.closed += 1;
            } else {
                counts.open += 1;
            }
        }
        match out.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_string()),
            _ => return Ok(counts),
        }
    }
}

/// The consumers a rescale or a deletion leaves behind: `<consumerName>-<ordinal>` of every
/// stream read with enhanced fan-out, for ordinals at or above `keep`. Deregistered; returns
/// the names, or the first failure.
pub async fn deregister_consumers(
    kube: &kube::Client,
    se: &StreamingEnrichment,
    keep: u32,
) -> Result<Vec<String>, String> {
    let credentials = credentials(kube, se).await.map_err(|h| match h {
        Health::Unhealthy { message, .. } | Health::Unknown { message, .. } => message,
        Health::Healthy => String::new(),
    })?;
    let mut removed = Vec::new();
    for (role, source) in streams(se) {
        let (ReaderKind::EnhancedFanOut, Some(prefix)) = (source.reader, &source.consumer_name)
        else {
            continue;
        };
        let client =
            tributary_aws::kinesis_client_with(&se.spec.aws, source, credentials.clone()).await;
        let fail = |e: CallError| {
            format!(
                "sources.{role} stream {:?}: {}: {}",
                source.stream, e.op, e.message
            )
        };
        let arn = stream_arn(&client, &source.stream).await.map_err(fail)?;
        for name in consumers(&client, &arn).await.map_err(fail)? {
            if leftover(&name, prefix, keep) {
                client
                    .deregister_stream_consumer()
                    .stream_arn(&arn)
                    .consumer_name(&name)
                    .send()
                    .await
                    .map_err(|e| fail(CallError::from_sdk("DeregisterStreamConsumer", &e)))?;
                removed.push(name);
            }
        }
    }
    Ok(removed)
}

/// Whether consumer `name` is replica `n`'s of `prefix` with `n >= keep`.
fn leftover(name: &str, prefix: &str, keep: u32) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n >= keep)
}

async fn stream_arn(client: &Client, stream: &str) -> Result<String, CallError> {
    if is_arn(stream) {
        return Ok(stream.to_string());
    }
    let out = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| CallError::from_sdk("DescribeStreamSummary", &e))?;
    Ok(out
        .stream_description_summary()
        .map(|s| s.stream_arn().to_string())
        .unwrap_or_default())
}

async fn consumers(client: &Client, arn: &str) -> Result<Vec<String>, CallError> {
    let mut names = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut call = client.list_stream_consumers().stream_arn(arn);
        if let Some(t) = &next {
            call = call.next_token(t);
        }
        let out = call
            .send()
            .await
            .map_err(|e| CallError::from_sdk("ListStreamConsumers", &e))?;
        names.extend(
            out.consumers()
                .iter()
                .map(|c| c.consumer_name().to_string()),
        );
        match out.next_token() {
            Some(t) if !t.is_empty() => next = Some(t.to_string()),
            _ => return Ok(names),
        }
    }
}

/// How often the streams are looked at again when nothing changed.
pub fn interval(secs: u64) -> Duration {
    Duration::from_secs(secs.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> StreamSource {
        StreamSource {
            stream: "sales".into(),
            region: None,
            endpoint: Some("http://127.0.0.1:4568".into()),
            start_position: Default::default(),
            start_timestamp: None,
            reader: ReaderKind::Polling,
            consumer_name: None,
        }
    }

    fn err(code: Option<&str>, unreachable: bool) -> CallError {
        CallError {
            op: "ListShards",
            code: code.map(str::to_string),
            message: "m".into(),
            unreachable,
        }
    }

    #[test]
    fn errors_become_reasons_naming_the_stream_and_endpoint() {
        let aws = AwsSpec::default();
        let h = |e: CallError| e.health("sales", "sales", &aws, &source());
        let Health::Unhealthy { reason, message } =
            h(err(Some("ResourceNotFoundException"), false))
        else {
            panic!("not unhealthy")
        };
        assert_eq!(reason, "StreamNotFound");
        assert!(
            message.contains("sources.sales stream \"sales\" at http://127.0.0.1:4568 (us-east-1)"),
            "{message}"
        );
        assert!(matches!(
            h(err(Some("AccessDeniedException"), false)),
            Health::Unhealthy {
                reason: "AccessDenied",
                ..
            }
        ));
        assert!(matches!(
            h(err(Some("LimitExceededException"), false)),
            Health::Unhealthy {
                reason: "Throttled",
                ..
            }
        ));
        assert!(matches!(
            h(err(None, true)),
            Health::Unknown {
                reason: "KinesisUnreachable",
                ..
            }
        ));
        assert!(matches!(
            h(err(Some("InternalFailure"), false)),
            Health::Unhealthy {
                reason: "KinesisError",
                ..
            }
        ));
    }

    #[test]
    fn only_the_consumers_of_removed_ordinals_are_leftovers() {
        assert!(leftover("c-2", "c", 2));
        assert!(leftover("c-10", "c", 2));
        assert!(!leftover("c-1", "c", 2));
        assert!(!leftover("c-x", "c", 0));
        assert!(!leftover("c-", "c", 0));
        assert!(!leftover("c-1-0", "c", 0));
        assert!(!leftover("other-3", "c", 0));
        assert!(!leftover("c3", "c", 0));
    }
}
