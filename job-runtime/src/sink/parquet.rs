//! The curated Parquet layout of the enriched document: the sale's columns, then nested
//! structs `item`, `bill_customer` and `ship_customer` (each with a nested `address`), `promo`,
//! and the list `join_flags`.
//!
//! Types: `order_id`, `item_id` and counts `int64`; the text ids (customers, addresses,
//! warehouse, promo) `utf8`; money and `gmt_offset` `decimal(38, 10)` (exact: the runtime
//! accepts up to 10 fractional digits into Parquet — a document with more is refused row by
//! row and dead-lettered, never rounded); datetimes `timestamp(us, UTC)`; text `utf8`.
//! Rows are decoded from the document JSON with arrow-json in strict mode, so a field the
//! schema does not know fails loudly (and the drift test below catches it first).

use std::sync::{Arc, LazyLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::json::ReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// Fractional digits of the decimal columns.
pub const MONEY_SCALE: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    #[error("a number has more than {MONEY_SCALE} fractional digits; it would be rounded")]
    TooPrecise,
    #[error("document does not fit the Parquet schema: {0}")]
    Decode(#[from] arrow::error::ArrowError),
    #[error("writing Parquet: {0}")]
    Write(#[from] parquet::errors::ParquetError),
}

fn money() -> DataType {
    DataType::Decimal128(38, 10)
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
}

fn f(name: &str, t: DataType) -> Field {
    Field::new(name, t, true)
}

fn address() -> Fields {
    Fields::from(vec![
        Field::new("address_id", DataType::Utf8, false),
        f("city", DataType::Utf8),
        f("county", DataType::Utf8),
        f("state", DataType::Utf8),
        f("zip", DataType::Utf8),
        f("country", DataType::Utf8),
        f("gmt_offset", money()),
        f("location_type", DataType::Utf8),
        f("street", DataType::Utf8),
        Field::new("address_datetime", timestamp(), false),
    ])
}

fn customer() -> Fields {
    Fields::from(vec![
        Field::new("customer_id", DataType::Utf8, false),
        f("salutation", DataType::Utf8),
        f("first_name", DataType::Utf8),
        f("last_name", DataType::Utf8),
        f("birth_country", DataType::Utf8),
        f("email_address", DataType::Utf8),
        f("address_id", DataType::Utf8),
        f("gender", DataType::Utf8),
        f("marital_status", DataType::Utf8),
        f("education_status", DataType::Utf8),
        f("purchase_estimate", DataType::Int64),
        f("credit_rating", DataType::Utf8),
        f("buy_potential", DataType::Utf8),
        f("vehicle_count", DataType::Int64),
        f("lower_bound", DataType::Int64),
        f("upper_bound", DataType::Int64),
        f("birth_date", timestamp()),
        Field::new("customer_datetime", timestamp(), false),
        f("address", DataType::Struct(address())),
    ])
}

fn item() -> Fields {
    let mut v = vec![Field::new("item_id", DataType::Int64, false)];
    for name in [
        "item_desc",
        "brand",
        "class",
        "category",
        "manufact",
        "size",
        "color",
        "units",
        "container",
        "product_name",
    ] {
        v.push(f(name, DataType::Utf8));
    }
    Fields::from(v)
}

fn promo() -> Fields {
    Fields::from(vec![
        Field::new("promo_id", DataType::Utf8, false),
        f("cost", money()),
        f("response_target", DataType::Int64),
        f("promo_name", DataType::Utf8),
        f("purpose", DataType::Utf8),
        f("promo_start_date", DataType::Utf8),
        f("promo_end_date", DataType::Utf8),
    ])
}

/// Money columns of the sale, in document order.
const SALE_MONEY: [&str; 14] = [
    "wholesale_cost",
    "list_price",
    "sales_price",
    "ext_discount_amt",
    "ext_sales_price",
    "ext_wholesale_cost",
    "ext_list_price",
    "ext_tax",
    "coupon_amt",
    "ext_ship_cost",
    "net_paid",
    "net_paid_inc_tax",
    "net_paid_inc_ship",
    "net_paid_inc_ship_tax",
];

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut v = vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("item_id", DataType::Int64, false),
        f("quantity", DataType::Int64),
    ];
    for m in SALE_MONEY {
        v.push(f(m, money()));
    }
    v.extend([
        f("net_profit", money()),
        Field::new("bill_customer_id", DataType::Utf8, false),
        Field::new("ship_customer_id", DataType::Utf8, false),
        f("warehouse_id", DataType::Utf8),
        f("promo_id", DataType::Utf8),
        f("ship_delay", DataType::Utf8),
        f("ship_mode", DataType::Utf8),
        f("ship_carrier", DataType::Utf8),
        Field::new("sale_datetime", timestamp(), false),
        Field::new("item", DataType::Struct(item()), false),
        Field::new("bill_customer", DataType::Struct(customer()), false),
        Field::new("ship_customer", DataType::Struct(customer()), false),
        f("promo", DataType::Struct(promo())),
        f(
            "join_flags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        ),
    ]);
    Arc::new(Schema::new(v))
});

/// The Arrow schema of the curated files.
pub fn schema() -> SchemaRef {
    Arc::clone(&SCHEMA)
}

/// Decode documents (JSON) into one record batch.
pub fn to_batch<'a>(docs: impl IntoIterator<Item = &'a [u8]>) -> Result<RecordBatch, ParquetError> {
    let docs: Vec<&[u8]> = docs.into_iter().collect();
    // arrow-json truncates extra fractional digits silently: refuse them first.
    if docs.iter().any(|d| max_fraction_digits(d) > MONEY_SCALE) {
        return Err(ParquetError::TooPrecise);
    }
    let mut decoder = ReaderBuilder::new(schema())
        .with_strict_mode(true)
        .with_batch_size(docs.len().max(1))
        .build_decoder()?;
    for doc in docs {
        decoder.decode(doc)?;
        decoder.decode(b"\n")?;
    }
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema())))
}

/// The longest fractional part of a number in a JSON text (numbers inside strings ignored).
fn max_fraction_digits(json: &[u8]) -> usize {
    let (mut in_string, mut escaped) = (false, false);
    let (mut in_fraction, mut run, mut max) = (false, 0, 0);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                in_fraction = false;
            }
            b'.' => {
                in_fraction = true;
                run = 0;
            }
            b'0'..=b'9' if in_fraction => {
                run += 1;
                max = max.max(run);
            }
            b'0'..=b'9' => {}
            _ => in_fraction = false,
        }
    }
    max
}

/// Check that one document fits (to find the bad rows when a batch fails).
pub fn fits(doc: &[u8]) -> Result<(), ParquetError> {
    to_batch([doc]).map(|_| ())
}

/// Encode a batch as a Parquet file (Snappy, one row group per 64k rows).
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>, ParquetError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(65_536))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::r#gen::{GenConfig, generate};
    use arrow::array::{Array, Decimal128Array, Int64Array, StringArray, StructArray};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn every_generated_document_fits_the_schema_and_round_trips() {
        let d = generate(&GenConfig::default());
        let docs: Vec<Vec<u8>> = d
            .expected
            .values()
            .map(|v| serde_json::to_vec(v).unwrap())
            .collect();
        let batch = to_batch(docs.iter().map(Vec::as_slice)).unwrap();
        assert_eq!(batch.num_rows(), d.expected.len());
        let file = encode(&batch).unwrap();
        let back: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file))
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let back = arrow::compute::concat_batches(&schema(), &back).unwrap();
        assert_eq!(back, batch);
        // Spot-check exact values against the JSON.
        let first: &serde_json::Value = d.expected.values().next().unwrap();
        let orders = back
            .column_by_name("order_id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(orders.value(0), first["order_id"].as_i64().unwrap());
        let bill = back
            .column_by_name("bill_customer")
            .unwrap()
            .as_any()
            .downcast_ref::<StructArray>()
            .unwrap();
        assert_eq!(bill.len(), d.expected.len());
    }

    #[test]
    fn money_is_exact_and_too_many_digits_are_refused() {
        let doc = |price: &str| {
            let mut v: serde_json::Value = generate(&GenConfig::default())
                .expected
                .into_values()
                .next()
                .unwrap();
            v["sales_price"] = serde_json::from_str(price).unwrap();
            serde_json::to_vec(&v).unwrap()
        };
        let batch = to_batch([doc("12.30").as_slice()]).unwrap();
        let col = batch
            .column_by_name("sales_price")
            .unwrap()
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        assert_eq!(col.value(0), 123_000_000_000);
        assert_eq!(col.value_as_string(0), "12.3000000000");
        assert_eq!(max_fraction_digits(br#"{"a":"1.123456789012","b":1.5}"#), 1);
        assert_eq!(
            max_fraction_digits(br#"{"a":"x\\\"1.12","b":[1.123,2]}"#),
            3
        );
        assert!(to_batch([doc("0.1234567890").as_slice()]).is_ok());
        let precise = to_batch([doc("0.12345678901").as_slice()]);
        if let Ok(b) = &precise {
            let col = b
                .column_by_name("sales_price")
                .unwrap()
                .as_any()
                .downcast_ref::<Decimal128Array>()
                .unwrap();
            panic!(
                "11 fractional digits were accepted as {}",
                col.value_as_string(0)
            );
        }
    }

    #[test]
    fn promo_ids_are_written_as_text() {
        // The sample sale sent promo id 5 as a JSON number; the other gets a text id.
        let numeric = crate::events::json_out::tests::sample_document();
        let mut text = numeric.clone();
        let id = crate::events::PromoId::new("P12");
        text.sale.promo_id = Some(id.clone());
        let mut promo = text.promo.as_ref().unwrap().value().clone();
        promo.promo_id = id;
        text.promo = Some(crate::events::Shared::new(promo).unwrap());
        let docs = [text.to_json().unwrap(), numeric.to_json().unwrap()];
        let file = encode(&to_batch(docs.iter().map(Vec::as_slice)).unwrap()).unwrap();
        let back: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file))
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let back = arrow::compute::concat_batches(&schema(), &back).unwrap();
        let top = back
            .column_by_name("promo_id")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!((top.value(0), top.value(1)), ("P12", "5"));
        let promo = back
            .column_by_name("promo")
            .unwrap()
            .as_any()
            .downcast_ref::<StructArray>()
            .unwrap();
        let nested = promo
            .column_by_name("promo_id")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!((nested.value(0), nested.value(1)), ("P12", "5"));
    }

    #[test]
    fn an_unknown_field_is_refused() {
        let mut v: serde_json::Value = generate(&GenConfig::default())
            .expected
            .into_values()
            .next()
            .unwrap();
        v["surprise"] = serde_json::json!(1);
        assert!(fits(&serde_json::to_vec(&v).unwrap()).is_err());
    }
}
