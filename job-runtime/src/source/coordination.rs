//! Finished-shard markers in S3, for resharding across replicas.
//!
//! # The rule
//!
//! A sales shard's children may start only when all of its parents are finished. When a parent is
//! owned by another replica (a merge of two replicas' shards, or a split whose child lands in
//! another replica's slice; see [`super::assign`]), the child's owner cannot see the parent's committed
//! position, which lives in the other replica's RocksDB. So:
//!
//! 1. After the engine has *committed* [`super::Position::Finished`] for a sales shard, it calls
//!    [`Coordination::publish_finished`], which writes the marker object
//!    `<prefix>/_shards/<stream>/<shard>.finished` under the dead-letter location
//!    (`s3://bucket/prefix`). The marker is written after the commit, never before, so a marker
//!    always means "every record of the parent has been processed"; if the process dies between
//!    the commit and the marker, the restarted engine publishes again for its finished shards
//!    (publishing is idempotent).
//! 2. The owner of a child with a foreign parent checks for the marker (HeadObject) until it
//!    exists, and only then starts the child. A parent that ListShards no longer returns (trimmed
//!    after the retention period) counts as finished without a marker.
//!
//! Markers are tiny, written once per closed shard, and can be removed by a lifecycle rule after
//! the stream's retention period (a trimmed parent no longer needs one).

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;

#[derive(Debug, thiserror::Error)]
pub enum CoordinationError {
    #[error("{0:?} is not an s3://bucket[/prefix] URI")]
    Uri(String),
    #[error("publishing the finished marker s3://{bucket}/{key}: {source}")]
    Publish {
        bucket: String,
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("checking the finished marker s3://{bucket}/{key}: {source}")]
    Check {
        bucket: String,
        key: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// `s3://bucket/prefix/` into the bucket and the prefix without surrounding slashes.
pub fn parse_s3_uri(uri: &str) -> Result<(String, String), CoordinationError> {
    let err = || CoordinationError::Uri(uri.to_string());
    let rest = uri.strip_prefix("s3://").ok_or_else(err)?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(err());
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// One path segment for a stream name or ARN (ARNs contain `:` and `/`): letters, digits, `.`,
/// `_` and `-` stay, every other byte becomes `%XX`. Injective, so two streams never share markers.
pub fn key_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `<prefix>/_shards/<stream>/<shard>.finished` (no leading slash when the prefix is empty).
pub fn marker_key(prefix: &str, stream: &str, shard: &str) -> String {
    let tail = format!(
        "_shards/{}/{}.finished",
        key_segment(stream),
        key_segment(shard)
    );
    if prefix.is_empty() {
        tail
    } else {
        format!("{prefix}/{tail}")
    }
}

/// Publishes and checks finished-shard markers (see the module).
#[derive(Clone, Debug)]
pub struct Coordination {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl Coordination {
    /// `location` is the dead-letter URI of the job configuration, `s3://bucket/prefix`.
    pub fn new(client: aws_sdk_s3::Client, location: &str) -> Result<Self, CoordinationError> {
        let (bucket, prefix) = parse_s3_uri(location)?;
        Ok(Self {
            client,
            bucket,
            prefix,
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn key(&self, stream: &str, shard: &str) -> String {
        marker_key(&self.prefix, stream, shard)
    }

    /// Records that `shard` of `stream` (the configured stream name) has been read to its end and
    /// committed. Idempotent. Call it only after the commit of [`super::Position::Finished`].
    pub async fn publish_finished(
        &self,
        stream: &str,
        shard: &str,
    ) -> Result<(), CoordinationError> {
        let key = self.key(stream, shard);
        let body = serde_json::json!({
            "stream": stream,
            "shard": shard,
            "finishedAtMs": chrono::Utc::now().timestamp_millis(),
        })
        .to_string();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/json")
            .body(ByteStream::from(body.into_bytes()))
            .send()
            .await
            .map_err(|e| CoordinationError::Publish {
                bucket: self.bucket.clone(),
                key,
                source: Box::new(e),
            })?;
        Ok(())
    }

    /// Whether the marker of `shard` exists.
    pub async fn is_finished(&self, stream: &str, shard: &str) -> Result<bool, CoordinationError> {
        let key = self.key(stream, shard);
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e))
                if e.err().is_not_found() || e.raw().status().as_u16() == 404 =>
            {
                Ok(false)
            }
            Err(e) => Err(CoordinationError::Check {
                bucket: self.bucket.clone(),
                key,
                source: Box::new(e),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(
            parse_s3_uri("s3://dl/sales-enrichment").unwrap(),
            ("dl".into(), "sales-enrichment".into())
        );
        assert_eq!(
            parse_s3_uri("s3://dl/a/b/").unwrap(),
            ("dl".into(), "a/b".into())
        );
        assert_eq!(
            parse_s3_uri("s3://dl").unwrap(),
            ("dl".into(), String::new())
        );
        assert!(parse_s3_uri("s3:///x").is_err());
        assert!(parse_s3_uri("https://dl/x").is_err());
    }

    #[test]
    fn marker_keys() {
        assert_eq!(
            marker_key("dl", "ara-web-sale", "shardId-000000000004"),
            "dl/_shards/ara-web-sale/shardId-000000000004.finished"
        );
        assert_eq!(
            marker_key("", "s", "shardId-1"),
            "_shards/s/shardId-1.finished"
        );
        assert_eq!(
            marker_key("p", "arn:aws:kinesis:eu-west-1:1:stream/x", "shardId-1"),
            "p/_shards/arn%3Aaws%3Akinesis%3Aeu-west-1%3A1%3Astream%2Fx/shardId-1.finished"
        );
        // Injective: '%' itself is escaped.
        assert_ne!(key_segment("a%3A"), key_segment("a:"));
    }
}
