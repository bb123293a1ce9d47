//! AWS clients (Kinesis, S3) from a resource's `spec.aws` and stream sources, for the job runtime
//! and for the operator (which observes the streams with the same rules as the job).
//!
//! Credentials: when the operator wired a Secret into the pod, `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY` (plus an optional `AWS_SESSION_TOKEN`) are set and used as static
//! credentials; otherwise the SDK's default provider chain applies (IRSA web identity, ECS, the
//! instance role, profiles).
//!
//! Retries and timeouts suit a consumer that runs for months: a short connect timeout, a bounded
//! time per attempt and per operation (so a stuck connection is abandoned, never awaited forever),
//! and the SDK's standard retry mode with a few attempts. The sources add their own, unbounded,
//! backoff on top (throttling, a missing stream), so the SDK's retries are only the first line.
//! `SubscribeToShard` is not affected by the operation timeout once its event stream is open:
//! the timeout covers the request until the initial response, not the events that follow.

use std::time::Duration;

pub use aws_credential_types::Credentials;
pub use aws_sdk_kinesis as kinesis;
pub use aws_sdk_s3 as s3;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use tributary_crds::job_config::env;
use tributary_crds::spec::{AwsSpec, StreamSource};

/// Provider name reported by the SDK for credentials taken from the environment.
const ENV_PROVIDER: &str = "tributary-env";

/// Static credentials from an environment lookup: `Some` when both the access key id and the
/// secret are set and non-empty. `lookup` is `std::env::var(..).ok()` in production.
pub fn static_credentials(lookup: impl Fn(&str) -> Option<String>) -> Option<Credentials> {
    let non_empty = |name: &str| lookup(name).filter(|v| !v.is_empty());
    let key = non_empty(env::AWS_ACCESS_KEY_ID)?;
    let secret = non_empty(env::AWS_SECRET_ACCESS_KEY)?;
    let token = non_empty("AWS_SESSION_TOKEN");
    Some(Credentials::new(key, secret, token, None, ENV_PROVIDER))
}

fn env_credentials() -> Option<Credentials> {
    static_credentials(|name| std::env::var(name).ok())
}

/// Timeouts of every Kinesis and S3 call.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(30))
        .operation_timeout(Duration::from_secs(90))
        .build()
}

/// The SDK's standard retry mode, a few attempts with a capped exponential backoff.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(4)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(5))
}

async fn sdk_config(region: &str, credentials: Option<Credentials>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .retry_config(retry_config())
        .timeout_config(timeout_config());
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    loader.load().await
}

/// A Kinesis client for one configured stream (credentials from the environment, see the module).
pub async fn kinesis_client(aws: &AwsSpec, source: &StreamSource) -> aws_sdk_kinesis::Client {
    kinesis_client_with(aws, source, env_credentials()).await
}

/// [`kinesis_client`] with explicit credentials (`None`: the default chain).
pub async fn kinesis_client_with(
    aws: &AwsSpec,
    source: &StreamSource,
    credentials: Option<Credentials>,
) -> aws_sdk_kinesis::Client {
    let (region, endpoint) = aws.kinesis_target(source);
    let shared = sdk_config(region, credentials).await;
    let mut builder = aws_sdk_kinesis::config::Builder::from(&shared);
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_kinesis::Client::from_conf(builder.build())
}

/// An S3 client (credentials from the environment, see the module).
pub async fn s3_client(aws: &AwsSpec) -> aws_sdk_s3::Client {
    s3_client_with(aws, env_credentials()).await
}

/// [`s3_client`] with explicit credentials (`None`: the default chain).
pub async fn s3_client_with(aws: &AwsSpec, credentials: Option<Credentials>) -> aws_sdk_s3::Client {
    let shared = sdk_config(&aws.region, credentials).await;
    let mut builder =
        aws_sdk_s3::config::Builder::from(&shared).force_path_style(aws.s3_force_path_style);
    if let Some(endpoint) = &aws.s3_endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_credential_types::provider::ProvideCredentials;
    use tributary_crds::spec::{ReaderKind, StartPosition};

    use super::*;

    fn source(region: Option<&str>, endpoint: Option<&str>) -> StreamSource {
        StreamSource {
            stream: "s".into(),
            region: region.map(str::to_string),
            endpoint: endpoint.map(str::to_string),
            start_position: StartPosition::TrimHorizon,
            start_timestamp: None,
            reader: ReaderKind::Polling,
            consumer_name: None,
        }
    }

    #[test]
    fn credentials_need_both_variables() {
        let vars: HashMap<&str, &str> = [("AWS_ACCESS_KEY_ID", "id")].into();
        assert!(static_credentials(|k| vars.get(k).map(|v| v.to_string())).is_none());
        let vars: HashMap<&str, &str> =
            [("AWS_ACCESS_KEY_ID", "id"), ("AWS_SECRET_ACCESS_KEY", "")].into();
        assert!(static_credentials(|k| vars.get(k).map(|v| v.to_string())).is_none());
        let vars: HashMap<&str, &str> = [
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ]
        .into();
        let c = static_credentials(|k| vars.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(c.access_key_id(), "id");
        assert_eq!(c.secret_access_key(), "secret");
        assert!(c.session_token().is_none());
    }

    #[test]
    fn the_source_overrides_region_and_endpoint() {
        let aws = AwsSpec {
            region: "eu-west-1".into(),
            kinesis_endpoint: Some("http://shared:1".into()),
            ..AwsSpec::default()
        };
        assert_eq!(
            aws.kinesis_target(&source(None, None)),
            ("eu-west-1", Some("http://shared:1"))
        );
        assert_eq!(
            aws.kinesis_target(&source(Some("us-east-2"), Some("http://own:2"))),
            ("us-east-2", Some("http://own:2"))
        );
    }

    #[tokio::test]
    async fn clients_carry_region_and_static_credentials() {
        let aws = AwsSpec {
            region: "eu-central-1".into(),
            s3_endpoint: Some("http://127.0.0.1:1".into()),
            s3_force_path_style: true,
            ..AwsSpec::default()
        };
        let creds = Credentials::new("a", "b", None, None, "test");
        let k = kinesis_client_with(&aws, &source(None, None), Some(creds.clone())).await;
        assert_eq!(
            k.config().region().map(|r| r.as_ref()),
            Some("eu-central-1")
        );
        let shared = sdk_config("eu-central-1", Some(creds.clone())).await;
        let provider = shared.credentials_provider().unwrap();
        assert_eq!(
            provider
                .provide_credentials()
                .await
                .unwrap()
                .access_key_id(),
            "a"
        );
        let s = s3_client_with(&aws, Some(creds)).await;
        assert_eq!(
            s.config().region().map(|r| r.as_ref()),
            Some("eu-central-1")
        );
    }
}
