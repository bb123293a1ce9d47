//! The local stack's S3 server (`S3_ENDPOINT`, path style) does what the sinks and checkpoints
//! need with the Rust SDK: buckets, put/get, ListObjectsV2 by prefix, multipart uploads and
//! conditional requests. Needs `cargo xtask stack up`; fails (does not skip) without it.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

const MIB: usize = 1024 * 1024;

async fn client() -> Result<Client> {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(tributary_tests::stack_var("S3_ENDPOINT")?)
        .region(Region::new(tributary_tests::stack_var("S3_REGION")?))
        .credentials_provider(Credentials::new(
            tributary_tests::stack_var("S3_ACCESS_KEY_ID")?,
            tributary_tests::stack_var("S3_SECRET_ACCESS_KEY")?,
            None,
            None,
            "tributary-stack",
        ))
        .load()
        .await;
    let s3 = aws_sdk_s3::config::Builder::from(&config)
        .force_path_style(true)
        .build();
    Ok(Client::from_conf(s3))
}

fn unique_bucket() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("tributary-test-{}-{nanos}", std::process::id())
}

/// `len` bytes of a pattern that differs per `seed`, so swapped or shifted parts are caught.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

async fn get_bytes(client: &Client, bucket: &str, key: &str) -> Result<Vec<u8>> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .with_context(|| format!("GetObject {key}"))?;
    Ok(out.body.collect().await?.into_bytes().to_vec())
}

/// The HTTP status of a failed call (304 and 412 come back as errors from the SDK).
fn status_of<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

async fn exercise(client: &Client, bucket: &str) -> Result<()> {
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .context("CreateBucket")?;

    let small: [(&str, &[u8]); 3] = [
        ("data/a.txt", b"alpha"),
        ("data/b.txt", b"bravo"),
        ("other/c.txt", b"charlie"),
    ];
    for (key, body) in small {
        client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await
            .with_context(|| format!("PutObject {key}"))?;
    }

    let listed = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix("data/")
        .send()
        .await
        .context("ListObjectsV2")?;
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    ensure!(
        keys == ["data/a.txt", "data/b.txt"],
        "ListObjectsV2 prefix data/ gave {keys:?}"
    );
    ensure!(
        listed.key_count() == Some(2),
        "KeyCount {:?}",
        listed.key_count()
    );

    ensure!(get_bytes(client, bucket, "data/a.txt").await? == b"alpha");

    // Multipart: a 5 MiB + 1 byte first part (the minimum for all but the last) and a small last.
    // The upload is created without a checksum algorithm, so Complete lists ETags only: as on AWS,
    // echoing the per-part CRC32 the SDK computed by default would be rejected with InvalidPart.
    let key = "multipart/big.bin";
    let parts = [pattern(5 * MIB + 1, 1), pattern(MIB / 2 + 3, 2)];
    let upload = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .context("CreateMultipartUpload")?;
    let upload_id = upload.upload_id().context("no upload id")?;
    let mut completed = Vec::new();
    for (i, body) in parts.iter().enumerate() {
        let number = i32::try_from(i + 1)?;
        let part = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .with_context(|| format!("UploadPart {number}"))?;
        completed.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(part.e_tag().map(str::to_string))
                .build(),
        );
    }
    let done = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .context("CompleteMultipartUpload")?;
    let etag = done.e_tag().unwrap_or_default();
    ensure!(
        etag.trim_matches('"').ends_with("-2"),
        "a 2-part upload should have a multipart ETag ending in -2, got {etag}"
    );
    let whole = get_bytes(client, bucket, key).await?;
    ensure!(
        whole == parts.concat(),
        "multipart object differs: {} bytes read, {} written",
        whole.len(),
        parts.iter().map(Vec::len).sum::<usize>()
    );

    // Conditional GET: If-None-Match with the current ETag is 304, If-Match with another 412.
    let head = client
        .head_object()
        .bucket(bucket)
        .key("data/a.txt")
        .send()
        .await
        .context("HeadObject")?;
    let etag = head.e_tag().context("HeadObject without ETag")?;
    match client
        .get_object()
        .bucket(bucket)
        .key("data/a.txt")
        .if_none_match(etag)
        .send()
        .await
    {
        Ok(_) => bail!("GET with If-None-Match: {etag} returned the object instead of 304"),
        Err(e) => ensure!(status_of(&e) == Some(304), "If-None-Match gave {e:?}"),
    }
    match client
        .get_object()
        .bucket(bucket)
        .key("data/a.txt")
        .if_match("\"0123456789abcdef0123456789abcdef\"")
        .send()
        .await
    {
        Ok(_) => bail!("GET with a wrong If-Match returned the object instead of 412"),
        Err(e) => ensure!(status_of(&e) == Some(412), "If-Match gave {e:?}"),
    }
    // Conditional PUT (create only if absent), as checkpoint commits use it.
    match client
        .put_object()
        .bucket(bucket)
        .key("data/a.txt")
        .if_none_match("*")
        .body(ByteStream::from_static(b"overwritten"))
        .send()
        .await
    {
        Ok(_) => bail!("PUT with If-None-Match: * overwrote an existing object"),
        Err(e) => ensure!(status_of(&e) == Some(412), "conditional PUT gave {e:?}"),
    }
    ensure!(get_bytes(client, bucket, "data/a.txt").await? == b"alpha");
    Ok(())
}

async fn empty_and_delete(client: &Client, bucket: &str) -> Result<()> {
    let listed = client.list_objects_v2().bucket(bucket).send().await?;
    for key in listed.contents().iter().filter_map(|o| o.key()) {
        client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await?;
    }
    let uploads = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await?;
    for u in uploads.uploads() {
        if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
            client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await?;
        }
    }
    client.delete_bucket().bucket(bucket).send().await?;
    Ok(())
}

#[tokio::test]
async fn bucket_objects_multipart_conditional() -> Result<()> {
    let client = client().await?;
    let bucket = unique_bucket();
    let result = exercise(&client, &bucket).await;
    let cleanup = empty_and_delete(&client, &bucket).await;
    result?;
    cleanup.context("deleting the test bucket")?;
    // The bucket is gone.
    let gone = client.head_bucket().bucket(&bucket).send().await;
    ensure!(
        gone.as_ref().err().and_then(status_of) == Some(404),
        "bucket still there after DeleteBucket: {gone:?}"
    );
    Ok(())
}
