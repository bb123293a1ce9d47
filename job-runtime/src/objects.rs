//! S3 object I/O: one place for how objects are written (multipart above a size) and read, so
//! every writer (the sinks, savepoints) behaves the same against S3.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

/// Objects above this size are uploaded with multipart.
pub const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
/// Part size of multipart uploads (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// A failed object operation, naming the object and the step.
#[derive(Debug, thiserror::Error)]
#[error("s3://{bucket}/{key}: {what}: {detail}")]
pub struct ObjectError {
    pub bucket: String,
    pub key: String,
    pub what: &'static str,
    pub detail: String,
    /// Why, machine-readable: `S3AccessDenied`, `S3BucketNotFound`, `S3Unreachable`,
    /// `S3Error`.
    pub reason: &'static str,
}

fn error(bucket: &str, key: &str, what: &'static str, detail: impl ToString) -> ObjectError {
    ObjectError {
        bucket: bucket.to_string(),
        key: key.to_string(),
        what,
        detail: detail.to_string(),
        reason: "S3Error",
    }
}

/// The reason of a failed S3 call: its error code, or that no answer came.
pub fn reason_of<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> &'static str {
    match e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => "S3Unreachable",
        _ => match e.code() {
            Some(
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "AllAccessDisabled",
            ) => "S3AccessDenied",
            Some("NoSuchBucket") => "S3BucketNotFound",
            _ => "S3Error",
        },
    }
}

fn sdk<E, R>(bucket: &str, key: &str, what: &'static str, e: SdkError<E, R>) -> ObjectError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let reason = reason_of(&e);
    ObjectError {
        reason,
        ..error(bucket, key, what, DisplayErrorContext(e))
    }
}

/// Put an object, in parts when it is large.
pub async fn put(
    client: &Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Result<(), ObjectError> {
    if body.len() <= MULTIPART_THRESHOLD {
        client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| sdk(bucket, key, "put", e))?;
        return Ok(());
    }
    let upload = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .send()
        .await
        .map_err(|e| sdk(bucket, key, "create multipart", e))?;
    let id = upload
        .upload_id()
        .ok_or_else(|| error(bucket, key, "create multipart", "no upload id"))?
        .to_string();
    let mut parts = Vec::new();
    let result: Result<(), ObjectError> = async {
        for (i, chunk) in body.chunks(PART_SIZE).enumerate() {
            let n = i32::try_from(i + 1).unwrap_or(i32::MAX);
            let part = client
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(&id)
                .part_number(n)
                .body(ByteStream::from(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| sdk(bucket, key, "upload part", e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(part.e_tag().map(str::to_string))
                    .build(),
            );
        }
        client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk(bucket, key, "complete multipart", e))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        // Best effort: do not leave parts billed; the retry starts a new upload.
        let _ = client
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .send()
            .await;
    }
    result
}

/// Get an object whole; `None` when it does not exist.
pub async fn get(client: &Client, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, ObjectError> {
    let out = match client.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => out,
        Err(e) => {
            if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                return Ok(None);
            }
            return Err(sdk(bucket, key, "get", e));
        }
    };
    let body = out
        .body
        .collect()
        .await
        .map_err(|e| error(bucket, key, "read body", e))?;
    Ok(Some(body.into_bytes().to_vec()))
}

/// The size of an object; `None` when it does not exist.
pub async fn size(client: &Client, bucket: &str, key: &str) -> Result<Option<u64>, ObjectError> {
    match client.head_object().bucket(bucket).key(key).send().await {
        Ok(out) => Ok(Some(
            out.content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
        )),
        Err(e) => {
            if e.as_service_error().is_some_and(|s| s.is_not_found()) {
                return Ok(None);
            }
            Err(sdk(bucket, key, "head", e))
        }
    }
}
