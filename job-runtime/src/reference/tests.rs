use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Decimal128Array, Int32Array, Int64Array, LargeStringArray, RecordBatch,
    StringArray,
};
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
    assert_eq!(
        p7.promo_id.as_str(),
        "7",
        "an integer column gives the id's digits"
    );
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
            s.get(&1).and_then(|i| i.item_desc.as_deref()),
            Some("second")
        );
        assert_eq!(s.get(&2).and_then(|i| i.item_desc.as_deref()), Some("two"));
        assert!(s.get(&3).is_none());
    }
}

/// A promo file whose `promo_id` column is `ids`, every other column text.
fn promo_ids_parquet(ids: ArrayRef) -> bytes::Bytes {
    let n = ids.len();
    let mut cols: Vec<(&str, ArrayRef)> = vec![("promo_id", ids)];
    for name in &crate::events::PROMO_COLUMNS[1..7] {
        cols.push((*name, Arc::new(StringArray::from(vec![None::<&str>; n]))));
    }
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    bytes::Bytes::from(buf)
}

fn promo_ids(load: &FileLoad<Promo>) -> Vec<&str> {
    load.rows.iter().map(|p| p.promo_id.as_str()).collect()
}

#[test]
fn promo_ids_are_text_in_csv_and_in_parquet_of_any_id_type() {
    let csv = "promo_id,cost,response_target,promo_name,purpose,start_datetime,end_datetime\n\
               P12,1.00,,,,,\n \
               7 ,2.00,,,,,\n\
               007,3.00,,,,,\n\
               ,4.00,,,,,\n";
    let load: FileLoad<Promo> = parse_csv("promos/p.csv", csv.as_bytes()).unwrap();
    assert_eq!(
        promo_ids(&load),
        ["P12", "7", "007"],
        "trimmed, else as written"
    );
    assert_eq!(load.rejected.len(), 1);
    assert_eq!(load.rejected[0].error.reason(), "missing_field");

    let text: Vec<Option<&str>> = vec![Some("P12"), Some("7"), None];
    for ids in [
        Arc::new(StringArray::from(text.clone())) as ArrayRef,
        Arc::new(LargeStringArray::from(text)),
        Arc::new(Int32Array::from(vec![Some(12), Some(7), None])),
        Arc::new(Int64Array::from(vec![Some(12), Some(7), None])),
    ] {
        let data_type = ids.data_type().clone();
        let load: FileLoad<Promo> = parse_file(
            ReferenceFormat::Parquet,
            "p.parquet",
            promo_ids_parquet(ids),
        )
        .unwrap();
        let want: &[&str] = if data_type.is_integer() {
            &["12", "7"]
        } else {
            &["P12", "7"]
        };
        assert_eq!(promo_ids(&load), want, "{data_type}");
        assert_eq!(load.rejected.len(), 1, "a null id: {data_type}");
        assert_eq!(load.rejected[0].error.reason(), "missing_field");
    }
}

/// Sales join the promos of a CSV and of a Parquet file by text id, whether the sale sends the
/// id as a string or as a number.
#[test]
fn text_promo_ids_from_csv_and_parquet_join_sales() {
    use crate::join::{JoinOutput, JoinRules, Joiner, MemoryState, ProcessingTime};
    use crate::test_fixtures::{address, customer, item, sale, sale_with_promo_json};

    let csv = b"P12,1.00,1,csv promo,,,\n5,2.00,1,csv five,,,\n";
    let from_csv: FileLoad<Promo> = parse_csv("promos/a.csv", csv).unwrap();
    let from_parquet: FileLoad<Promo> = parse_file(
        ReferenceFormat::Parquet,
        "promos/b.parquet",
        promo_ids_parquet(Arc::new(StringArray::from(vec!["PQ-1"]))),
    )
    .unwrap();
    let from_int_parquet: FileLoad<Promo> = parse_file(
        ReferenceFormat::Parquet,
        "promos/c.parquet",
        promo_ids_parquet(Arc::new(Int64Array::from(vec![9]))),
    )
    .unwrap();
    let snapshot = Snapshot::from_files(vec![
        ("promos/a.csv".into(), from_csv),
        ("promos/b.parquet".into(), from_parquet),
        ("promos/c.parquet".into(), from_int_parquet),
    ]);
    assert_eq!(snapshot.len(), 4);

    let rules = JoinRules {
        max_wait: std::time::Duration::from_secs(60),
        allowed_lateness: std::time::Duration::from_secs(60),
    };
    let mut j = Joiner::new(MemoryState::default(), rules);
    j.on_item(item(7)).unwrap();
    j.on_customer(customer("C1", "A1", 0, "Edwards")).unwrap();
    j.on_address(address("A1", 0, "Springfield")).unwrap();
    for p in snapshot.rows().values() {
        assert!(j.on_promo(p.clone()).unwrap().is_empty());
    }
    let now = ProcessingTime::from_millis(0);
    for (order, s, want) in [
        (1, sale(1, 7, "C1", "C1", 10, Some("P12")), "csv promo"),
        (
            2,
            sale_with_promo_json(2, 7, "C1", "C1", 10, serde_json::json!(5)),
            "csv five",
        ),
        (3, sale(3, 7, "C1", "C1", 10, Some("5")), "csv five"),
        (4, sale(4, 7, "C1", "C1", 10, Some("PQ-1")), ""),
        (
            5,
            sale_with_promo_json(5, 7, "C1", "C1", 10, serde_json::json!(9)),
            "",
        ),
    ] {
        let out = j.on_sale(s, now).unwrap();
        let [JoinOutput::Emit(doc)] = out.as_slice() else {
            panic!("sale {order} did not join: {out:?}");
        };
        let promo = doc.promo.as_ref().unwrap();
        assert_eq!(
            promo.promo_name.as_deref().unwrap_or(""),
            want,
            "sale {order}"
        );
        assert_eq!(Some(&promo.promo_id), doc.sale.promo_id.as_ref());
    }
}
