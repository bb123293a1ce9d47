//! `tributary-gen`: generate a deterministic data set ([`tributary_runtime::r#gen`]) and write it
//! where a test or the demo needs it: the three Kinesis streams (in global arrival order), the
//! items and promos reference files on S3 (CSV or Parquet), NDJSON files for offline use, and the
//! oracle (the expected document of every sale, the expected dead-letter counts).
//!
//! `cargo xtask gen -- <flags>` builds and runs it with the local stack's endpoints.

mod files;
mod kinesis;
mod s3;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args as ClapArgs, Parser, ValueEnum};
use tributary_runtime::r#gen::{Dataset, GenConfig, generate};

#[derive(Parser, Debug)]
#[command(
    name = "tributary-gen",
    about = "Generate customers, addresses and sales (Kinesis or NDJSON), items and promos (S3), \
             and the oracle of expected documents"
)]
struct Cli {
    #[command(flatten)]
    generator: GenArgs,
    #[command(flatten)]
    kinesis: kinesis::KinesisArgs,
    #[command(flatten)]
    s3: s3::S3Args,
    /// Write the three streams as NDJSON (one payload per line, arrival order) and the reference
    /// files into this folder.
    #[arg(long, value_name = "DIR")]
    ndjson: Option<PathBuf>,
    /// Write the expected documents (one JSON per line, sorted by order_id, item_id) to FILE,
    /// and the expected dead-letter counts with the configuration to FILE's
    /// `.summary.json` sibling.
    #[arg(long, value_name = "FILE")]
    oracle: Option<PathBuf>,
    /// Format of the reference files written to S3 and to the NDJSON folder.
    #[arg(long, value_enum, default_value_t = ReferenceFormat::Csv)]
    reference_format: ReferenceFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReferenceFormat {
    /// `items/items.csv`, `promos/promos.csv` with a header row.
    Csv,
    /// `items/items.parquet`, `promos/promos.parquet` (item ids and response targets as Int64,
    /// promo cost as Decimal128(15, 2), promo ids and other text as Utf8).
    Parquet,
}

/// Every [`GenConfig`] field.
#[derive(ClapArgs, Debug)]
struct GenArgs {
    #[arg(long, default_value_t = GenConfig::default().seed)]
    seed: u64,
    #[arg(long, default_value_t = GenConfig::default().customers)]
    customers: usize,
    #[arg(long, default_value_t = GenConfig::default().addresses)]
    addresses: usize,
    /// Well-formed sale lines (records of the sales stream).
    #[arg(long, default_value_t = GenConfig::default().sales)]
    sales: usize,
    #[arg(long, default_value_t = GenConfig::default().items)]
    items: usize,
    #[arg(long, default_value_t = GenConfig::default().promos)]
    promos: usize,
    /// Customers are assigned to addresses in runs of this many (customers sharing an address).
    #[arg(long, default_value_t = GenConfig::default().customers_per_address_min)]
    customers_per_address_min: usize,
    /// Share of customers (and of addresses) whose first version arrives after the first sale
    /// referencing it.
    #[arg(long, value_parser = share, default_value_t = GenConfig::default().late_sale_share)]
    late_sale_share: f64,
    /// Share of customers (and of addresses) updated during the sales window.
    #[arg(long, value_parser = share, default_value_t = GenConfig::default().update_share)]
    update_share: f64,
    /// Share of sales without a promo.
    #[arg(long, value_parser = share, default_value_t = GenConfig::default().null_promo_share)]
    null_promo_share: f64,
    /// Malformed records added, as a share of each stream's well-formed records.
    #[arg(long, value_parser = share, default_value_t = GenConfig::default().malformed_share)]
    malformed_share: f64,
    /// Share of sales whose bill customer comes from the hot 1% of customers.
    #[arg(long, value_parser = share, default_value_t = GenConfig::default().key_skew)]
    key_skew: f64,
    /// Share of customers without an address.
    #[arg(long, value_parser = share, default_value_t = GenConfig::default().null_address_share)]
    null_address_share: f64,
}

impl GenArgs {
    fn config(&self) -> GenConfig {
        GenConfig {
            seed: self.seed,
            customers: self.customers,
            addresses: self.addresses,
            sales: self.sales,
            items: self.items,
            promos: self.promos,
            customers_per_address_min: self.customers_per_address_min,
            late_sale_share: self.late_sale_share,
            update_share: self.update_share,
            null_promo_share: self.null_promo_share,
            malformed_share: self.malformed_share,
            key_skew: self.key_skew,
            null_address_share: self.null_address_share,
        }
    }
}

fn share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not a share in [0, 1]"))
    }
}

/// The JSON of a configuration (for the oracle summary).
fn config_json(c: &GenConfig) -> serde_json::Value {
    serde_json::json!({
        "seed": c.seed,
        "customers": c.customers,
        "addresses": c.addresses,
        "sales": c.sales,
        "items": c.items,
        "promos": c.promos,
        "customers_per_address_min": c.customers_per_address_min,
        "late_sale_share": c.late_sale_share,
        "update_share": c.update_share,
        "null_promo_share": c.null_promo_share,
        "malformed_share": c.malformed_share,
        "key_skew": c.key_skew,
        "null_address_share": c.null_address_share,
    })
}

fn print_summary(d: &Dataset) {
    let dead: u64 = d.expected_dead_letters.values().sum();
    println!(
        "generated: {} customer, {} address, {} sale records ({} malformed); {} expected documents",
        d.customer_records.len(),
        d.address_records.len(),
        d.sale_records.len(),
        dead,
        d.expected.len()
    );
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let cfg = cli.generator.config();
    let started = std::time::Instant::now();
    let dataset = generate(&cfg);
    print_summary(&dataset);
    println!("generated in {:.1}s", started.elapsed().as_secs_f64());

    let reference = files::ReferenceFiles::build(&dataset, cli.reference_format)?;
    if let Some(dir) = &cli.ndjson {
        files::write_ndjson(dir, &dataset, &reference)
            .with_context(|| format!("writing NDJSON to {}", dir.display()))?;
        println!("ndjson: wrote {}", dir.display());
    }
    if let Some(path) = &cli.oracle {
        let summary = files::write_oracle(path, &dataset, config_json(&cfg))
            .with_context(|| format!("writing the oracle to {}", path.display()))?;
        println!(
            "oracle: {} documents in {}, summary in {}",
            dataset.expected.len(),
            path.display(),
            summary.display()
        );
    }
    if cli.s3.s3.is_none() && !cli.kinesis.kinesis {
        if cli.ndjson.is_none() && cli.oracle.is_none() {
            println!("nothing written: pass --kinesis, --s3, --ndjson or --oracle");
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Reference data first: a runtime reading the streams needs it to release sales.
        if let Some(uri) = &cli.s3.s3 {
            s3::upload(&cli.s3, uri, &reference).await?;
        }
        if cli.kinesis.kinesis {
            kinesis::put_all(&cli.kinesis, &dataset).await?;
        }
        Ok::<(), anyhow::Error>(())
    })
}
