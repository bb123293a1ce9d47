//! The local stack's Kinesis (kinesis-mock, `KINESIS_ENDPOINT`) serves what the runtime needs with
//! the Rust SDK: streams, PutRecords, ListShards, TRIM_HORIZON reads and resharding with
//! UpdateShardCount. Needs `cargo xtask stack up`; fails (does not skip) without it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    PutRecordsRequestEntry, ScalingType, Shard, ShardIteratorType, StreamStatus,
};

const TIMEOUT: Duration = Duration::from_secs(60);
const RECORDS_PER_SHARD: usize = 10;

/// A client of the server at the stack variable `endpoint_var`.
async fn client(endpoint_var: &str) -> Result<Client> {
    let endpoint = tributary_tests::stack_var(endpoint_var)?;
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(tributary_tests::stack_var("AWS_REGION")?))
        .credentials_provider(Credentials::new(
            tributary_tests::stack_var("AWS_ACCESS_KEY_ID")?,
            tributary_tests::stack_var("AWS_SECRET_ACCESS_KEY")?,
            None,
            None,
            "tributary-stack",
        ))
        .load()
        .await;
    Ok(Client::new(&config))
}

fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

async fn wait_active(client: &Client, stream: &str) -> Result<()> {
    let start = Instant::now();
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await?;
        let status = summary
            .stream_description_summary()
            .map(|d| d.stream_status().clone());
        if status == Some(StreamStatus::Active) {
            return Ok(());
        }
        if start.elapsed() > TIMEOUT {
            bail!("stream {stream} not ACTIVE after {TIMEOUT:?} (last status {status:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn list_shards(client: &Client, stream: &str) -> Result<Vec<Shard>> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match &token {
            // The stream name must not be sent together with a continuation token.
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        let out = req.send().await?;
        shards.extend(out.shards().iter().cloned());
        match out.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(shards),
        }
    }
}

fn is_open(shard: &Shard) -> bool {
    shard
        .sequence_number_range()
        .is_none_or(|r| r.ending_sequence_number().is_none())
}

/// Every record of `shard` from TRIM_HORIZON, read until `expected` records arrived.
async fn read_shard(
    client: &Client,
    stream: &str,
    shard: &str,
    expected: usize,
) -> Result<Vec<Vec<u8>>> {
    let mut iterator = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await?
        .shard_iterator()
        .map(str::to_string)
        .context("GetShardIterator returned no iterator")?;
    let mut records = Vec::new();
    let start = Instant::now();
    while records.len() < expected {
        let out = client
            .get_records()
            .shard_iterator(&iterator)
            .limit(100)
            .send()
            .await?;
        records.extend(out.records().iter().map(|r| r.data().as_ref().to_vec()));
        match out.next_shard_iterator() {
            Some(next) => iterator = next.to_string(),
            None => break,
        }
        if start.elapsed() > TIMEOUT {
            bail!(
                "read {} of {expected} records from {shard} in {TIMEOUT:?}",
                records.len()
            );
        }
        if out.records().is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(records)
}

/// Write [`RECORDS_PER_SHARD`] records to every shard of `stream` (each addressed by the shard's
/// starting hash key, each with its own partition key), check where they landed, and read them
/// all back from TRIM_HORIZON. Returns the ids of the shards written.
async fn put_and_read_back(client: &Client, stream: &str) -> Result<Vec<String>> {
    let shards = list_shards(client, stream).await?;
    let mut expected: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let mut entries = Vec::new();
    let mut targets = Vec::new();
    for i in 0..RECORDS_PER_SHARD * shards.len() {
        let shard = &shards[i % shards.len()];
        let hash_key = shard
            .hash_key_range()
            .map(|r| r.starting_hash_key().to_string())
            .context("shard without a hash key range")?;
        let payload = format!("record {i} for {}", shard.shard_id()).into_bytes();
        entries.push(
            PutRecordsRequestEntry::builder()
                .partition_key(format!("partition-{i}"))
                .explicit_hash_key(hash_key)
                .data(Blob::new(payload.clone()))
                .build()?,
        );
        targets.push(shard.shard_id().to_string());
        expected
            .entry(shard.shard_id().to_string())
            .or_default()
            .push(payload);
    }
    let put = client
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await
        .context("PutRecords")?;
    ensure!(
        put.failed_record_count().unwrap_or(0) == 0,
        "PutRecords failed records: {put:?}"
    );
    let landed: Vec<String> = put
        .records()
        .iter()
        .map(|r| r.shard_id().unwrap_or_default().to_string())
        .collect();
    ensure!(
        landed == targets,
        "records landed on {landed:?}, expected {targets:?}"
    );

    for (shard, want) in &expected {
        let got = read_shard(client, stream, shard, want.len()).await?;
        ensure!(
            &got == want,
            "shard {shard}: read {} records that differ from the {} written",
            got.len(),
            want.len()
        );
    }
    Ok(expected.into_keys().collect())
}

async fn exercise(client: &Client, stream: &str) -> Result<()> {
    client
        .create_stream()
        .stream_name(stream)
        .shard_count(2)
        .send()
        .await
        .context("CreateStream")?;
    wait_active(client, stream).await?;
    let parents = put_and_read_back(client, stream).await?;
    ensure!(parents.len() == 2, "expected 2 shards, got {parents:?}");

    client
        .update_shard_count()
        .stream_name(stream)
        .target_shard_count(4)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .context("UpdateShardCount")?;
    wait_active(client, stream).await?;
    let after = list_shards(client, stream).await?;
    let open: Vec<&Shard> = after.iter().filter(|s| is_open(s)).collect();
    ensure!(
        open.len() == 4,
        "expected 4 open shards after UpdateShardCount, got {} of {}: {after:?}",
        open.len(),
        after.len()
    );
    for parent in &parents {
        let closed = after
            .iter()
            .find(|s| s.shard_id() == parent)
            .is_some_and(|s| !is_open(s));
        ensure!(
            closed,
            "parent shard {parent} is not closed after resharding"
        );
    }
    Ok(())
}

async fn delete(client: &Client, stream: &str) -> Result<()> {
    client
        .delete_stream()
        .stream_name(stream)
        .enforce_consumer_deletion(true)
        .send()
        .await
        .context("DeleteStream")?;
    Ok(())
}

#[tokio::test]
async fn stream_put_read_reshard() -> Result<()> {
    let client = client("KINESIS_ENDPOINT").await?;
    let stream = unique_name("tributary-test");
    let result = exercise(&client, &stream).await;
    let deleted = delete(&client, &stream).await;
    result?;
    deleted
}

/// kinesalite, the fast server for volume tests, answers the same SDK calls (no resharding).
#[tokio::test]
async fn volume_endpoint_put_read() -> Result<()> {
    let client = client("KINESIS_VOLUME_ENDPOINT").await?;
    let stream = unique_name("tributary-volume-test");
    client
        .create_stream()
        .stream_name(&stream)
        .shard_count(2)
        .send()
        .await
        .context("CreateStream")?;
    let result = async {
        wait_active(&client, &stream).await?;
        let shards = put_and_read_back(&client, &stream).await?;
        ensure!(shards.len() == 2, "expected 2 shards, got {shards:?}");
        Ok(())
    }
    .await;
    let deleted = delete(&client, &stream).await;
    result?;
    deleted
}
