//! Reference files (CSV as generated, or Parquet), NDJSON streams and the oracle on disk.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use arrow::array::{ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use rust_decimal::Decimal;
use tributary_runtime::events::{ITEM_COLUMNS, Item, PROMO_COLUMNS, Promo};
use tributary_runtime::r#gen::{Dataset, Record};
use tributary_runtime::reference::{ReferenceRow, parse_csv, parse_parquet};

use crate::ReferenceFormat;

/// The items and promos files in the chosen format: `(relative path, bytes)`.
pub struct ReferenceFiles {
    pub items: (String, Vec<u8>),
    pub promos: (String, Vec<u8>),
}

impl ReferenceFiles {
    pub fn build(d: &Dataset, format: ReferenceFormat) -> Result<Self> {
        Ok(match format {
            ReferenceFormat::Csv => Self {
                items: ("items/items.csv".into(), d.items_csv.clone().into_bytes()),
                promos: (
                    "promos/promos.csv".into(),
                    d.promos_csv.clone().into_bytes(),
                ),
            },
            ReferenceFormat::Parquet => Self {
                items: (
                    "items/items.parquet".into(),
                    to_parquet::<Item>(&d.items_csv, &["item_id"], &[])?,
                ),
                promos: (
                    "promos/promos.parquet".into(),
                    // `promo_id` stays Utf8: the generated ids are text (`P3`) and digits.
                    to_parquet::<Promo>(&d.promos_csv, &["response_target"], &["cost"])?,
                ),
            },
        })
    }
}

/// Decimal columns are written as Decimal128 with this precision and scale.
const DECIMAL_PRECISION: u8 = 15;
const DECIMAL_SCALE: u32 = 2;

fn decimal_cell(v: &str) -> Result<Option<i128>> {
    if v.is_empty() {
        return Ok(None);
    }
    let mut d: Decimal = v
        .parse()
        .with_context(|| format!("{v:?} is not a decimal"))?;
    ensure!(
        d.scale() <= DECIMAL_SCALE,
        "{v} has more than {DECIMAL_SCALE} decimals"
    );
    d.rescale(DECIMAL_SCALE);
    Ok(Some(d.mantissa()))
}

/// The generated CSV (with its header) as a Parquet file the runtime's reader accepts: the
/// columns by name, `ints` as Int64, `decimals` as Decimal128(15, 2), the rest as Utf8; an
/// empty cell is a null. Checked by reading it back with the runtime's Parquet reader: it must
/// give the same rows as the CSV.
fn to_parquet<T: ReferenceRow + PartialEq + std::fmt::Debug>(
    csv_text: &str,
    ints: &[&str],
    decimals: &[&str],
) -> Result<Vec<u8>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .context("reading the generated CSV header")?
        .iter()
        .map(str::to_string)
        .collect();
    ensure!(
        header
            .iter()
            .map(String::as_str)
            .eq(T::COLUMNS.iter().copied()),
        "the generated {} CSV header {header:?} is not {:?}",
        T::NAME,
        T::COLUMNS
    );
    let rows: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .context("reading the generated CSV")?;
    let mut columns: Vec<(&str, ArrayRef)> = Vec::with_capacity(header.len());
    for (i, name) in T::COLUMNS.iter().enumerate() {
        let cells = rows.iter().map(|r| r.get(i).unwrap_or(""));
        let array: ArrayRef = if ints.contains(name) {
            let values = cells
                .map(|v| {
                    if v.is_empty() {
                        Ok(None)
                    } else {
                        v.parse::<i64>()
                            .map(Some)
                            .with_context(|| format!("{name}: {v:?} is not an integer"))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            Arc::new(Int64Array::from(values))
        } else if decimals.contains(name) {
            let values = cells.map(decimal_cell).collect::<Result<Vec<_>>>()?;
            Arc::new(
                Decimal128Array::from(values)
                    .with_precision_and_scale(DECIMAL_PRECISION, DECIMAL_SCALE as i8)
                    .context("decimal precision")?,
            )
        } else {
            let values: Vec<Option<&str>> = cells.map(|v| (!v.is_empty()).then_some(v)).collect();
            Arc::new(StringArray::from(values))
        };
        columns.push((name, array));
    }
    let batch = RecordBatch::try_from_iter(columns).context("building the Arrow batch")?;
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), None).context("Parquet writer")?;
    w.write(&batch).context("writing Parquet")?;
    w.close().context("closing the Parquet file")?;

    let from_csv = parse_csv::<T>("generated.csv", csv_text.as_bytes())?;
    let from_parquet = parse_parquet::<T>("generated.parquet", bytes::Bytes::from(buf.clone()))?;
    if from_csv.rows != from_parquet.rows || !from_parquet.rejected.is_empty() {
        bail!(
            "the {} Parquet file does not read back as the CSV rows ({} vs {} rows, {} rejected)",
            T::NAME,
            from_parquet.rows.len(),
            from_csv.rows.len(),
            from_parquet.rejected.len()
        );
    }
    Ok(buf)
}

fn write_file(path: &Path, body: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))
}

fn write_stream(path: &Path, records: &[Record]) -> Result<()> {
    let mut w = BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    for r in records {
        ensure!(
            !r.data.contains(&b'\n'),
            "record {} contains a newline: not representable as one NDJSON line",
            r.arrival
        );
        w.write_all(&r.data)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// `DIR/{customers,addresses,sales}.ndjson` (payloads, one per line, in arrival order),
/// `DIR/arrivals.csv` (`arrival,stream,line,partition_key`: the global order and the keys) and
/// the reference files under `DIR/items/`, `DIR/promos/`.
pub fn write_ndjson(dir: &Path, d: &Dataset, reference: &ReferenceFiles) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let streams: [(&str, &[Record]); 3] = [
        ("customers", &d.customer_records),
        ("addresses", &d.address_records),
        ("sales", &d.sale_records),
    ];
    for (name, records) in streams {
        write_stream(&dir.join(format!("{name}.ndjson")), records)?;
    }
    let mut order: Vec<(u64, &str, usize, &str)> = streams
        .iter()
        .flat_map(|(name, recs)| {
            recs.iter()
                .enumerate()
                .map(move |(line, r)| (r.arrival, *name, line + 1, r.partition_key.as_str()))
        })
        .collect();
    order.sort_unstable();
    let mut w = csv::Writer::from_path(dir.join("arrivals.csv"))?;
    w.write_record(["arrival", "stream", "line", "partition_key"])?;
    for (arrival, name, line, key) in order {
        w.write_record([
            arrival.to_string(),
            name.to_string(),
            line.to_string(),
            key.to_string(),
        ])?;
    }
    w.flush()?;
    for (rel, body) in [&reference.items, &reference.promos] {
        write_file(&dir.join(rel), body)?;
    }
    Ok(())
}

/// The oracle: `path` gets one expected document per line, sorted by (order_id, item_id);
/// its `.summary.json` sibling the configuration, the counts and the expected dead letters by
/// reason. Returns the summary's path.
pub fn write_oracle(path: &Path, d: &Dataset, config: serde_json::Value) -> Result<PathBuf> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut w = BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    // A BTreeMap: already in (order_id, item_id) order.
    for doc in d.expected.values() {
        serde_json::to_writer(&mut w, doc)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    let summary_path = path.with_extension("summary.json");
    let summary = serde_json::json!({
        "config": config,
        "records": {
            "customers": d.customer_records.len(),
            "addresses": d.address_records.len(),
            "sales": d.sale_records.len(),
        },
        "documents": d.expected.len(),
        "dead_letters": d.expected_dead_letters,
        "item_columns": ITEM_COLUMNS,
        "promo_columns": PROMO_COLUMNS,
    });
    write_file(&summary_path, &serde_json::to_vec_pretty(&summary)?)?;
    Ok(summary_path)
}
