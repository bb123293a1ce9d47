//! `s3://bucket/prefix` locations of the job configuration.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Uri {
    pub bucket: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an s3://bucket/prefix location")]
pub struct S3UriError(pub String);

impl S3Uri {
    pub fn parse(uri: &str) -> Result<Self, S3UriError> {
        let rest = uri
            .strip_prefix("s3://")
            .ok_or_else(|| S3UriError(uri.into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(S3UriError(uri.into()));
        }
        Ok(Self {
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').into(),
        })
    }

    /// `prefix/part` (or `part` when the prefix is empty).
    pub fn key(&self, part: &str) -> String {
        if self.prefix.is_empty() {
            part.to_string()
        } else {
            format!("{}/{part}", self.prefix)
        }
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_prefix() {
        let u = S3Uri::parse("s3://b/p/q/").unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("b", "p/q"));
        assert_eq!(u.key("x.parquet"), "p/q/x.parquet");
        let u = S3Uri::parse("s3://b").unwrap();
        assert_eq!(u.key("x"), "x");
        assert!(S3Uri::parse("http://b/p").is_err());
        assert!(S3Uri::parse("s3:///p").is_err());
    }
}
