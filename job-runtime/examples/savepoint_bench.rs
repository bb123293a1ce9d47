//! The savepoint benchmark (`cargo xtask bench savepoint`): how long one replica takes to write
//! a savepoint of a large state to the local stack's S3 (versitygw), and how long a new replica
//! takes to restore it, with the sizes.
//!
//! The state is filled directly (customer and address versions from the generator, stored as a
//! restore stores them, plus waiting sales), not by running the join: the figures are about
//! moving state, and filling it through the join would take most of the run.
//!
//! Needs the stack up (`cargo xtask stack up`): it reads the S3 endpoint and keys from
//! `$TRIBUTARY_HOME/stack/stack.env`.

#[global_allocator]
static ALLOCATOR: tributary_runtime::Allocator = tributary_runtime::Allocator;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use tributary_crds::document_id::DocumentIdTemplate;
use tributary_crds::spec::AwsSpec;
use tributary_runtime::engine::{Core, EngineConfig, RestoredRow, Streams};
use tributary_runtime::events::{decode_address, decode_customer, decode_sale};
use tributary_runtime::r#gen::{GenConfig, generate};
use tributary_runtime::join::{JoinRules, MissingKey, PendingSale, ProcessingTime};
use tributary_runtime::metrics::Metrics;
use tributary_runtime::s3uri::S3Uri;
use tributary_runtime::savepoint::restore::{self, Router};
use tributary_runtime::savepoint::write::{PartInfo, write_part};
use tributary_runtime::state::RocksState;

#[derive(Parser, Debug)]
#[command(
    name = "savepoint_bench",
    about = "Savepoint write and restore of a large state"
)]
struct Args {
    #[arg(long, default_value_t = 1_500_000)]
    customers: usize,
    #[arg(long, default_value_t = 600_000)]
    addresses: usize,
    /// Sales stored as waiting (for a customer that never comes).
    #[arg(long, default_value_t = 200_000)]
    waiting_sales: usize,
    /// Where the two states live (a temporary folder by default).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn streams() -> Streams {
    Streams {
        customers: "customers".into(),
        addresses: "addresses".into(),
        sales: "sales".into(),
    }
}

fn engine(dir: &Path) -> Result<Core> {
    let year = std::time::Duration::from_secs(365 * 24 * 3600);
    let cfg = EngineConfig::new(
        streams(),
        JoinRules {
            max_wait: year,
            allowed_lateness: year,
        },
        DocumentIdTemplate::parse("{order_id}:{item_id}")?,
    );
    Ok(Core::new(
        RocksState::open(dir)?,
        cfg,
        Metrics::unregistered(),
    )?)
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += if m.is_dir() {
                dir_bytes(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

fn stack_env() -> Result<Vec<(String, String)>> {
    let home = match std::env::var_os("TRIBUTARY_HOME") {
        Some(h) => std::path::PathBuf::from(h),
        None => std::path::PathBuf::from(std::env::var_os("HOME").context("HOME")?)
            .join(".cache/tributary"),
    };
    let path = home.join("stack/stack.env");
    let body = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: is the stack up (cargo xtask stack up)?",
            path.display()
        )
    })?;
    Ok(body
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let env = stack_env()?;
    let var = |k: &str| {
        env.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .with_context(|| format!("stack.env has no {k}"))
    };
    let aws = AwsSpec {
        region: var("S3_REGION")?,
        credentials: None,
        kinesis_endpoint: None,
        s3_endpoint: Some(var("S3_ENDPOINT")?),
        s3_force_path_style: true,
    };
    let creds = aws_credential_types::Credentials::new(
        var("S3_ACCESS_KEY_ID")?,
        var("S3_SECRET_ACCESS_KEY")?,
        None,
        None,
        "stack",
    );
    let s3 = tributary_runtime::aws::s3_client_with(&aws, Some(creds)).await;
    let bucket = format!("savepoint-bench-{}", std::process::id());
    s3.create_bucket().bucket(&bucket).send().await?;

    let temp = tempfile::tempdir()?;
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let (old_dir, new_dir) = (root.join("old"), root.join("new"));

    eprintln!(
        "generating {} customers, {} addresses, {} waiting sales",
        args.customers, args.addresses, args.waiting_sales
    );
    let data = generate(&GenConfig {
        customers: args.customers,
        addresses: args.addresses,
        sales: args.waiting_sales,
        malformed_share: 0.0,
        ..GenConfig::default()
    });
    let filled = Instant::now();
    let mut core = engine(&old_dir)?;
    let mut n = 0u64;
    let mut tick = |core: &mut Core| -> Result<()> {
        n += 1;
        if n.is_multiple_of(100_000) {
            core.commit()?;
        }
        Ok(())
    };
    for r in &data.customer_records {
        if let Ok(c) = decode_customer(&r.data) {
            core.restore_row(RestoredRow::Customer(c))?;
            tick(&mut core)?;
        }
    }
    for r in &data.address_records {
        if let Ok(a) = decode_address(&r.data) {
            core.restore_row(RestoredRow::Address(a))?;
            tick(&mut core)?;
        }
    }
    for (i, r) in data.sale_records.iter().enumerate() {
        let Ok(sale) = decode_sale(&r.data) else {
            continue;
        };
        core.restore_pending(PendingSale {
            sale,
            arrived_at: ProcessingTime::from_millis(0),
            deadline: ProcessingTime::from_millis(i64::MAX / 2),
            waiting_on: MissingKey::Customer(format!("never-{i}").as_str().into()),
        })?;
        tick(&mut core)?;
    }
    core.commit()?;
    let state_bytes = dir_bytes(&old_dir);
    eprintln!(
        "state filled in {:.1} s: {:.0} MiB on disk",
        filled.elapsed().as_secs_f64(),
        mib(state_bytes)
    );

    let location = S3Uri::parse(&format!("s3://{bucket}/savepoints"))?;
    let info = PartInfo {
        savepoint_id: "bench".into(),
        pipeline: "bench/bench".into(),
        ordinal: 0,
        replicas: 1,
        state_id: "old".into(),
        restored_from: None,
        location: location.clone(),
        sales_stream: "sales".into(),
    };
    let started = Instant::now();
    let (_, figures) = write_part(&s3, core.state().export(), &info).await?;
    let write_s = started.elapsed().as_secs_f64();
    drop(core);

    let started = Instant::now();
    let folder = S3Uri::parse(&format!("s3://{bucket}/savepoints/bench"))?;
    let loaded = restore::load(&s3, &folder).await?;
    let (core, restored) = restore::restore(
        engine(&new_dir)?,
        &s3,
        &loaded,
        0,
        &Router::new(&[], 1),
        &streams(),
    )
    .await?;
    let restore_s = started.elapsed().as_secs_f64();
    drop(core);
    let restored_bytes = dir_bytes(&new_dir);

    println!("state on disk             {:>10.0} MiB", mib(state_bytes));
    println!(
        "savepoint                 {:>10.0} MiB in {} files ({} customer versions, {} address versions, {} waiting sales)",
        mib(figures.bytes),
        figures.files,
        figures.customer_versions,
        figures.address_versions,
        figures.waiting_sales
    );
    println!(
        "savepoint written in      {:>10.1} s ({:.0} MiB/s of savepoint)",
        write_s,
        mib(figures.bytes) / write_s
    );
    println!(
        "restored in               {:>10.1} s ({} rows, {} waiting sales; state {:.0} MiB)",
        restore_s,
        restored.customer_versions + restored.address_versions,
        restored.waiting_sales_taken,
        mib(restored_bytes)
    );
    println!(
        "SUMMARY savepoint_s={write_s:.1} restore_s={restore_s:.1} savepoint_mib={:.0} state_mib={:.0}",
        mib(figures.bytes),
        mib(state_bytes)
    );
    Ok(())
}
