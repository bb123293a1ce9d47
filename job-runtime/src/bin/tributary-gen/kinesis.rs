//! Writing the three streams to Kinesis in global arrival order.
//!
//! The runtime's join relies on the producers' order across streams (its barrier compares
//! arrival times), so a record is put only after every record of lower `arrival` has been
//! acknowledged. Consecutive records of one stream go in one PutRecords call (at most 500
//! records, 5 MiB); when some entries of a response failed, the first failed entry and
//! everything after it are sent again, so a stream's records never overtake each other. A call
//! that fails as a whole (a timeout) may have been applied: its records may then appear twice
//! (at least once, like any Kinesis producer).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, StreamStatus};
use clap::Args;
use tributary_runtime::r#gen::{Dataset, Record};

/// PutRecords limits.
const MAX_RECORDS_PER_CALL: usize = 500;
const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;
/// Attempts of one PutRecords call (throttling, failed entries, transient errors).
const MAX_ATTEMPTS: u32 = 30;
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Args, Debug)]
pub struct KinesisArgs {
    /// Put the three streams to Kinesis (creating missing streams).
    #[arg(long)]
    pub kinesis: bool,
    /// Kinesis endpoint (the local stack's kinesis-mock); AWS when unset.
    #[arg(long, env = "KINESIS_ENDPOINT")]
    pub kinesis_endpoint: Option<String>,
    /// Region of the streams (credentials: the SDK's default chain, e.g. AWS_ACCESS_KEY_ID).
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
    #[arg(long, default_value = "customers")]
    pub customers_stream: String,
    #[arg(long, default_value = "addresses")]
    pub addresses_stream: String,
    #[arg(long, default_value = "sales")]
    pub sales_stream: String,
    /// Shards of each stream created here (an existing stream is used as it is).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub shards: i32,
    /// Records per PutRecords call (at most 500).
    #[arg(long, default_value_t = MAX_RECORDS_PER_CALL,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=500))]
    pub batch: usize,
}

async fn client(args: &KinesisArgs) -> Client {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(args.region.clone()));
    if let Some(endpoint) = &args.kinesis_endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    Client::new(&loader.load().await)
}

/// Create `stream` with `shards` shards unless it exists, then wait until it is ACTIVE.
async fn ensure_stream(client: &Client, stream: &str, shards: i32) -> Result<()> {
    match client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
    {
        Ok(out) => {
            let open = out
                .stream_description_summary()
                .map(|d| d.open_shard_count());
            println!(
                "kinesis: stream {stream} exists ({} open shards): records are appended",
                open.map_or_else(|| "?".to_string(), |n| n.to_string())
            );
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            match client
                .create_stream()
                .stream_name(stream)
                .shard_count(shards)
                .send()
                .await
            {
                Ok(_) => println!("kinesis: created stream {stream} with {shards} shards"),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_in_use_exception()) => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("creating stream {stream}")));
                }
            }
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("describing stream {stream}")));
        }
    }
    let start = Instant::now();
    loop {
        let out = client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .with_context(|| format!("describing stream {stream}"))?;
        let status = out
            .stream_description_summary()
            .map(|d| d.stream_status().clone());
        if status == Some(StreamStatus::Active) {
            return Ok(());
        }
        if start.elapsed() > ACTIVE_TIMEOUT {
            bail!("stream {stream} is not ACTIVE after {ACTIVE_TIMEOUT:?} (status {status:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

/// Put `records` (of one stream, in order) and return once every one is acknowledged.
async fn put_in_order(client: &Client, stream: &str, records: &[&Record]) -> Result<()> {
    let mut from = 0;
    let mut attempt = 0;
    while from < records.len() {
        let entries = records[from..]
            .iter()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&r.partition_key)
                    .data(Blob::new(r.data.clone()))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .context("building a PutRecords entry")?;
        let sent = entries.len();
        let failure = match client
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                let results = out.records();
                // The first entry that failed (or is missing from the response): it and every
                // later one are sent again, so this stream's order is kept.
                let first_failed = results
                    .iter()
                    .position(|r| r.error_code().is_some())
                    .or((results.len() < sent).then_some(results.len()));
                match first_failed {
                    None => return Ok(()),
                    Some(k) => {
                        let code = results
                            .get(k)
                            .and_then(|r| r.error_code())
                            .unwrap_or("missing from the response")
                            .to_string();
                        from += k;
                        code
                    }
                }
            }
            Err(e) => {
                let fatal = e.as_service_error().is_some_and(|s| {
                    !(s.is_provisioned_throughput_exceeded_exception()
                        || s.is_kms_throttling_exception())
                });
                if fatal {
                    return Err(anyhow::Error::new(e).context(format!("PutRecords to {stream}")));
                }
                format!("{}", aws_sdk_kinesis::error::DisplayErrorContext(&e))
            }
        };
        attempt += 1;
        if attempt >= MAX_ATTEMPTS {
            bail!("PutRecords to {stream}: still failing after {attempt} attempts: {failure}");
        }
        let wait = backoff(attempt);
        eprintln!(
            "kinesis: {stream}: {failure}; resending {} records in {wait:?}",
            records.len() - from
        );
        tokio::time::sleep(wait).await;
    }
    Ok(())
}

/// Create the streams if needed and put every record, in global arrival order.
pub async fn put_all(args: &KinesisArgs, d: &Dataset) -> Result<()> {
    let client = client(args).await;
    let names = [
        args.customers_stream.as_str(),
        args.addresses_stream.as_str(),
        args.sales_stream.as_str(),
    ];
    for name in names {
        ensure_stream(&client, name, args.shards).await?;
    }
    let mut all: Vec<(usize, &Record)> = [&d.customer_records, &d.address_records, &d.sale_records]
        .iter()
        .enumerate()
        .flat_map(|(s, recs)| recs.iter().map(move |r| (s, r)))
        .collect();
    all.sort_by_key(|(_, r)| r.arrival);
    let total = all.len();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut calls = 0u64;
    let mut i = 0;
    while i < total {
        let stream = all[i].0;
        let mut j = i;
        let mut bytes = 0;
        while j < total && all[j].0 == stream && j - i < args.batch {
            let size = all[j].1.data.len() + all[j].1.partition_key.len();
            if j > i && bytes + size > MAX_BYTES_PER_CALL {
                break;
            }
            bytes += size;
            j += 1;
        }
        let run: Vec<&Record> = all[i..j].iter().map(|(_, r)| *r).collect();
        put_in_order(&client, names[stream], &run).await?;
        calls += 1;
        i = j;
        if last_report.elapsed() >= Duration::from_secs(2) || i == total {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "kinesis: {i}/{total} records in {calls} PutRecords calls, {secs:.1}s ({:.0} records/s)",
                i as f64 / secs.max(1e-9)
            );
            last_report = Instant::now();
        }
    }
    println!(
        "kinesis: put {} customers, {} addresses, {} sales to {}, {}, {}",
        d.customer_records.len(),
        d.address_records.len(),
        d.sale_records.len(),
        names[0],
        names[1],
        names[2]
    );
    Ok(())
}
