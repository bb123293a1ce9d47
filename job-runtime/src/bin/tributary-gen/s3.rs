//! Uploading the items and promos files to S3 (`<prefix>/items/…`, `<prefix>/promos/…`).

use anyhow::{Context, Result, bail};
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use clap::Args;
use tributary_runtime::s3uri::S3Uri;

use crate::files::ReferenceFiles;

#[derive(Args, Debug)]
pub struct S3Args {
    /// Upload items and promos under this prefix (`s3://bucket/prefix`), creating the bucket.
    #[arg(long, value_name = "s3://BUCKET/PREFIX", value_parser = S3Uri::parse)]
    pub s3: Option<S3Uri>,
    /// S3 endpoint (the local stack's versitygw; path-style addressing); AWS when unset.
    #[arg(long, env = "S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Static S3 credentials (else the SDK's default chain).
    #[arg(long, env = "S3_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<tributary_crds::secret::Secret>,
}

async fn client(args: &S3Args) -> Client {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(args.s3_region.clone()));
    if let (Some(id), Some(secret)) = (&args.s3_access_key_id, &args.s3_secret_access_key) {
        loader = loader.credentials_provider(Credentials::new(
            id.clone(),
            secret.expose().to_string(),
            None,
            None,
            "tributary-gen",
        ));
    }
    let shared = loader.load().await;
    let mut conf = aws_sdk_s3::config::Builder::from(&shared);
    if let Some(endpoint) = &args.s3_endpoint {
        conf = conf.endpoint_url(endpoint).force_path_style(true);
    }
    Client::from_conf(conf.build())
}

async fn ensure_bucket(client: &Client, bucket: &str, region: &str) -> Result<()> {
    match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => return Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("checking bucket {bucket}")));
        }
    }
    let mut req = client.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        req = req.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match req.send().await {
        Ok(_) => {
            println!("s3: created bucket {bucket}");
            Ok(())
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you()) =>
        {
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating bucket {bucket}"))),
    }
}

/// Keys under `prefix/dir/` other than `keep` (files the runtime would read too).
async fn others(client: &Client, uri: &S3Uri, dir: &str, keep: &str) -> Result<Vec<String>> {
    let out = client
        .list_objects_v2()
        .bucket(&uri.bucket)
        .prefix(uri.key(&format!("{dir}/")))
        .send()
        .await
        .with_context(|| format!("listing s3://{}/{}", uri.bucket, uri.key(dir)))?;
    Ok(out
        .contents()
        .iter()
        .filter_map(|o| o.key())
        .filter(|k| *k != keep)
        .map(str::to_string)
        .collect())
}

pub async fn upload(args: &S3Args, uri: &S3Uri, files: &ReferenceFiles) -> Result<()> {
    let client = client(args).await;
    ensure_bucket(&client, &uri.bucket, &args.s3_region).await?;
    for (rel, body) in [&files.items, &files.promos] {
        let key = uri.key(rel);
        let content_type = if rel.ends_with(".csv") {
            "text/csv"
        } else {
            "application/vnd.apache.parquet"
        };
        client
            .put_object()
            .bucket(&uri.bucket)
            .key(&key)
            .content_type(content_type)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .with_context(|| format!("uploading s3://{}/{key}", uri.bucket))?;
        println!("s3: wrote s3://{}/{key} ({} bytes)", uri.bucket, body.len());
        let Some((dir, _)) = rel.split_once('/') else {
            bail!("reference path {rel} has no folder");
        };
        let extra = others(&client, uri, dir, &key).await?;
        if !extra.is_empty() {
            eprintln!(
                "s3: warning: the runtime reads every file under s3://{}/{}/, which also holds {extra:?}",
                uri.bucket,
                uri.key(dir)
            );
        }
    }
    Ok(())
}
