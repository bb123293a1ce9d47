use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Array, Int64Array, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use rust_decimal::Decimal;
use tributary_crds::ReferenceFormat;

use super::*;

const ITEMS_CSV: &str = "\
item_id,item_desc,brand,class,category,manufact,size,color,units,container,product_name,item_datetime
1,\"Soft, warm scarf\",brandA,classA,Women,m1,small,red,Each,Unknown,scarf,2020-01-01T00:00:00Z
2,mug,brandB,classB,Home,m2,N/A,white,Each,Unknown,mug
x,bad id,brandC,classC,Home,m3,N/A,blue,Each,Unknown,bowl,2020-01-01T00:00:00Z

3,plate,brandC,classC,Home,m3,N/A,blue,Each,Unknown,plate,2020-01-01T00:00:00Z
";

#[test]
fn csv_with_header_quoting_and_a_bad_row() {
    let load: FileLoad<Item> = parse_csv("items/a.csv", ITEMS_CSV.as_bytes()).unwrap();
    let ids: Vec<i64> = load.rows.iter().map(|r| r.item_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(load.rows[0].item_desc.as_deref(), Some("Soft, warm scarf"));
    assert_eq!(
        load.rows[1].product_name.as_deref(),
        Some("mug"),
        "datetime column may be absent"
    );
    assert_eq!(load.rejected.len(), 1);
    let rej = &load.rejected[0];
    assert_eq!((rej.file.as_str(), rej.row), ("items/a.csv", 4));
    assert_eq!(rej.error.reason(), "wrong_type");
}

#[test]
fn csv_without_header_loads_the_same_rows() {
    let body: String = ITEMS_CSV
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect();
    let with: FileLoad<Item> = parse_csv("a", ITEMS_CSV.as_bytes()).unwrap();
    let without: FileLoad<Item> = parse_csv("a", body.as_bytes()).unwrap();
    assert_eq!(with.rows, without.rows);
}

#[test]
fn broken_csv_fails_the_whole_file() {
    let err = parse_csv::<Item>("items/b.csv", b"1,\"unterminated\n2,x\n\xff\xfe").unwrap_err();
    assert_eq!(err.reason(), "bad_csv");
    assert!(err.to_string().contains("items/b.csv"), "{err}");
}

#[test]
fn promo_money_is_exact() {
    let csv = "promo_id,cost,response_target,promo_name,purpose,start_datetime,end_datetime,promo_datetime\n\
               7,1000.10,1,ought,Unknown,2020-01-01,2020-02-01,2020-01-01\n\
               8,12.3.4,1,bad,Unknown,,,\n";
    let load: FileLoad<Promo> = parse_csv("promos/p.csv", csv.as_bytes()).unwrap();
    assert_eq!(load.rows.len(), 1);
    assert_eq!(
        load.rows[0].cost,
        Some("1000.10".parse::<Decimal>().unwrap())
    );
    assert_eq!(load.rows[0].promo_start_date.as_deref(), Some("2020-01-01"));
    assert_eq!(load.rejected[0].error.reason(), "invalid_decimal");
}

fn promos_parquet(with_name_column: bool) -> bytes::Bytes {
    let mut cols: Vec<(&str, ArrayRef)> = vec![
        ("promo_id", Arc::new(Int64Array::from(vec![7, 9]))),
        (
            "cost",
            Arc::new(
                Decimal128Array::from(vec![100_010, 5])
                    .with_precision_and_scale(15, 2)
                    .unwrap(),
            ),
        ),
        (
            "response_target",
            Arc::new(Int64Array::from(vec![Some(1), None])),
        ),
        (
            "purpose",
            Arc::new(StringArray::from(vec!["Unknown", "TV"])),
        ),
        (
            "start_datetime",
            Arc::new(StringArray::from(vec!["2020-01-01", "2020-03-01"])),
        ),
        (
            "end_datetime",
            Arc::new(StringArray::from(vec![Some("2020-02-01"), None])),
        ),
    ];
    if with_name_column {
        cols.push((
            "promo_name",
            Arc::new(StringArray::from(vec!["ought", "able"])),
        ));
    }
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    bytes::Bytes::from(buf)
}

#[test]
fn parquet_columns_by_name_with_exact_decimals() {
    let load: FileLoad<Promo> = parse_file(
        ReferenceFormat::Parquet,
        "promos/p.parquet",
        promos_parquet(true),
    )
    .unwrap();
    assert!(load.rejected.is_empty(), "{:?}", load.rejected);
    assert_eq!(load.rows.len(), 2);
    let p7 = &load.rows[0];
    assert_eq!(p7.promo_id, 7);
    assert_eq!(p7.cost, Some("1000.10".parse::<Decimal>().unwrap()));
    assert_eq!(p7.promo_name.as_deref(), Some("ought"));
    assert_eq!(p7.response_target, Some(1));
    let p9 = &load.rows[1];
    assert_eq!(p9.cost, Some("0.05".parse::<Decimal>().unwrap()));
    assert_eq!(p9.response_target, None);
    assert_eq!(p9.promo_end_date, None);
}

#[test]
fn parquet_missing_a_column_or_unreadable_fails_the_file() {
    let err =
        parse_file::<Promo>(ReferenceFormat::Parquet, "p", promos_parquet(false)).unwrap_err();
    assert_eq!(err.reason(), "missing_column");
    assert!(err.to_string().contains("promo_name"), "{err}");
    let err = parse_file::<Promo>(
        ReferenceFormat::Parquet,
        "p",
        bytes::Bytes::from_static(b"PAR1 not really"),
    )
    .unwrap_err();
    assert_eq!(err.reason(), "bad_parquet");
}

#[test]
fn snapshot_applies_files_in_key_order() {
    let a: FileLoad<Item> = parse_csv("a", b"1,first,,,,,,,,,x\n2,two,,,,,,,,,y\n").unwrap();
    let b: FileLoad<Item> = parse_csv("b", b"1,second,,,,,,,,,x\n").unwrap();
    let s1 = Snapshot::from_files(vec![("b".into(), b.clone()), ("a".into(), a.clone())]);
    let s2 = Snapshot::from_files(vec![("a".into(), a), ("b".into(), b)]);
    for s in [&s1, &s2] {
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.get(1).and_then(|i| i.item_desc.as_deref()),
            Some("second")
        );
        assert_eq!(s.get(2).and_then(|i| i.item_desc.as_deref()), Some("two"));
        assert!(s.get(3).is_none());
    }
}
