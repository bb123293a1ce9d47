use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::events::{DecodeError, Item, Promo, decode_address, decode_customer, decode_sale};
use crate::join::{JoinOutput, JoinRules, Joiner, MemoryState, ProcessingTime};

fn small() -> GenConfig {
    GenConfig {
        seed: 7,
        customers: 60,
        addresses: 25,
        sales: 600,
        items: 20,
        promos: 5,
        late_sale_share: 0.3,
        update_share: 0.5,
        malformed_share: 0.05,
        ..GenConfig::default()
    }
}

/// All records of the three streams in arrival order, tagged with their stream.
fn merged(d: &Dataset) -> Vec<(Stream, &Record)> {
    let mut all: Vec<(Stream, &Record)> = d
        .customer_records
        .iter()
        .map(|r| (Stream::Customer, r))
        .chain(d.address_records.iter().map(|r| (Stream::Address, r)))
        .chain(d.sale_records.iter().map(|r| (Stream::Sale, r)))
        .collect();
    all.sort_by_key(|(_, r)| r.arrival);
    all
}

fn decode(stream: Stream, data: &[u8]) -> Result<(), DecodeError> {
    match stream {
        Stream::Customer => decode_customer(data).map(|_| ()),
        Stream::Address => decode_address(data).map(|_| ()),
        Stream::Sale => decode_sale(data).map(|_| ()),
    }
}

fn csv_rows(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

#[test]
fn same_seed_same_bytes_other_seed_differs() {
    let a = generate(&small());
    let b = generate(&small());
    assert_eq!(a, b);
    let c = generate(&GenConfig { seed: 8, ..small() });
    assert_ne!(a.sale_records, c.sale_records);
    assert_ne!(a.expected, c.expected);
}

#[test]
fn arrivals_are_a_gapless_sequence_and_streams_are_in_arrival_order() {
    let d = generate(&small());
    let all = merged(&d);
    for (i, (_, r)) in all.iter().enumerate() {
        assert_eq!(r.arrival, i as u64);
    }
    for s in [&d.customer_records, &d.address_records, &d.sale_records] {
        assert!(s.windows(2).all(|w| w[0].arrival < w[1].arrival));
    }
}

#[test]
fn well_formed_records_decode_and_malformed_ones_fail_with_the_expected_reasons() {
    let d = generate(&small());
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut good_sales = 0usize;
    for (stream, r) in merged(&d) {
        match decode(stream, &r.data) {
            Ok(()) => {
                assert_ne!(r.partition_key, "malformed");
                if stream == Stream::Sale {
                    good_sales += 1;
                }
            }
            Err(e) => {
                assert_eq!(
                    r.partition_key,
                    "malformed",
                    "{e} in {}",
                    String::from_utf8_lossy(&r.data)
                );
                *reasons.entry(e.reason().to_string()).or_default() += 1;
            }
        }
    }
    assert_eq!(good_sales, small().sales);
    assert_eq!(reasons, d.expected_dead_letters);
    assert!(
        reasons.len() >= 4,
        "too few kinds of malformed records: {reasons:?}"
    );
    // Every well-formed sale has an oracle document.
    assert_eq!(d.expected.len(), small().sales);

    // Reference files: header plus one row per id, all decodable.
    let items = csv_rows(&d.items_csv);
    assert_eq!(items[0][0], "item_id");
    assert_eq!(items.len(), small().items + 1);
    for r in &items[1..] {
        let cols: Vec<&str> = r.iter().map(String::as_str).collect();
        assert!(Item::from_columns(&cols).unwrap().is_some());
    }
    let promos = csv_rows(&d.promos_csv);
    assert_eq!(promos.len(), small().promos + 1);
    for r in &promos[1..] {
        let cols: Vec<&str> = r.iter().map(String::as_str).collect();
        assert!(Promo::from_columns(&cols).unwrap().is_some());
    }
}

#[test]
fn money_comes_both_as_strings_and_as_numbers() {
    let d = generate(&small());
    let (mut strings, mut numbers) = (0, 0);
    for r in d
        .sale_records
        .iter()
        .filter(|r| r.partition_key != "malformed")
    {
        let v: serde_json::Value = serde_json::from_slice(&r.data).unwrap();
        match &v["net_paid"] {
            serde_json::Value::String(_) => strings += 1,
            serde_json::Value::Number(_) => numbers += 1,
            other => panic!("net_paid {other:?}"),
        }
    }
    assert!(strings > 0 && numbers > 0);
}

/// Promo ids are text in the file (`P3` and digits); sales send the text ones as strings and
/// the numeric ones as numbers or as strings; documents carry every one as a string.
#[test]
fn promo_ids_come_as_text_as_digit_strings_and_as_numbers() {
    let d = generate(&small());
    let file_ids: Vec<String> = csv_rows(&d.promos_csv)[1..]
        .iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(file_ids, ["1", "2", "P3", "4", "5"]);
    let mut shapes: BTreeMap<&str, usize> = BTreeMap::new();
    for r in d
        .sale_records
        .iter()
        .filter(|r| r.partition_key != "malformed")
    {
        let v: serde_json::Value = serde_json::from_slice(&r.data).unwrap();
        let shape = match &v["promo_id"] {
            serde_json::Value::Null => "null",
            serde_json::Value::Number(_) => "number",
            serde_json::Value::String(s) if s.starts_with('P') => "text",
            serde_json::Value::String(_) => "digits",
            other => panic!("promo_id {other:?}"),
        };
        *shapes.entry(shape).or_default() += 1;
    }
    assert_eq!(shapes.len(), 4, "{shapes:?}");
    let mut joined = 0;
    for doc in d.expected.values() {
        if let Some(promo) = doc.get("promo") {
            assert!(doc["promo_id"].is_string(), "{}", doc["promo_id"]);
            assert_eq!(promo["promo_id"], doc["promo_id"]);
            joined += 1;
        }
    }
    assert!(joined > 0);
}

#[test]
fn covers_shared_addresses_late_sales_and_updates() {
    let d = generate(&small());
    // Customers per address (first versions).
    let mut per_address: BTreeMap<String, usize> = BTreeMap::new();
    let mut versions: BTreeMap<String, usize> = BTreeMap::new();
    let mut first_arrival: BTreeMap<String, u64> = BTreeMap::new();
    for r in &d.customer_records {
        let Ok(c) = decode_customer(&r.data) else {
            continue;
        };
        let n = versions.entry(c.customer_id.to_string()).or_default();
        *n += 1;
        if *n == 1
            && let Some(a) = &c.address_id
        {
            *per_address.entry(a.to_string()).or_default() += 1;
        }
        first_arrival
            .entry(c.customer_id.to_string())
            .or_insert(r.arrival);
    }
    assert!(per_address.values().any(|&n| n >= 2), "no shared address");
    assert!(versions.values().any(|&n| n >= 2), "no customer update");

    let mut before_customer = 0;
    for r in &d.sale_records {
        let Ok(s) = decode_sale(&r.data) else {
            continue;
        };
        if first_arrival[s.bill_customer_id.as_str()] > r.arrival {
            before_customer += 1;
        }
    }
    assert!(before_customer > 0, "no sale arrives before its customer");

    // Some sales use an updated customer version, some the first one.
    let mut by_version: BTreeMap<bool, usize> = BTreeMap::new();
    for doc in d.expected.values() {
        let email = doc["bill_customer"]["email_address"].as_str().unwrap();
        *by_version.entry(email.contains(".v0@")).or_default() += 1;
    }
    assert_eq!(by_version.len(), 2, "{by_version:?}");
}

/// The cross-check: the join, fed the records in arrival order, emits exactly the oracle.
fn join_matches_oracle(cfg: &GenConfig) {
    let d = generate(cfg);
    let rules = JoinRules {
        max_wait: Duration::from_secs(365 * 24 * 3600),
        allowed_lateness: Duration::from_secs(365 * 24 * 3600),
    };
    let mut j = Joiner::new(MemoryState::default(), rules);
    for r in &csv_rows(&d.items_csv) {
        let cols: Vec<&str> = r.iter().map(String::as_str).collect();
        if let Some(i) = Item::from_columns(&cols).unwrap() {
            assert!(j.on_item(i).unwrap().is_empty());
        }
    }
    for r in &csv_rows(&d.promos_csv) {
        let cols: Vec<&str> = r.iter().map(String::as_str).collect();
        if let Some(p) = Promo::from_columns(&cols).unwrap() {
            assert!(j.on_promo(p).unwrap().is_empty());
        }
    }
    let mut got: BTreeMap<(i64, i64), serde_json::Value> = BTreeMap::new();
    let mut dead: BTreeMap<String, u64> = BTreeMap::new();
    for (stream, r) in merged(&d) {
        let now = ProcessingTime::from_millis(1_700_000_000_000 + r.arrival as i64);
        let out = match stream {
            Stream::Customer => decode_customer(&r.data).map(|c| j.on_customer(c).unwrap()),
            Stream::Address => decode_address(&r.data).map(|a| j.on_address(a).unwrap()),
            Stream::Sale => decode_sale(&r.data).map(|s| j.on_sale(s, now).unwrap()),
        };
        match out {
            Err(e) => *dead.entry(e.reason().to_string()).or_default() += 1,
            Ok(out) => {
                for o in out {
                    match o {
                        JoinOutput::Emit(doc) => {
                            let key = (doc.sale.order_id, doc.sale.item_id);
                            let v = serde_json::to_value(&*doc).unwrap();
                            assert!(got.insert(key, v).is_none(), "{key:?} emitted twice");
                        }
                        JoinOutput::DeadLetter(dl) => panic!("dead letter {dl:?}"),
                    }
                }
            }
        }
    }
    assert_eq!(j.state().pending_counts(), (0, 0, 0), "sales still waiting");
    assert_eq!(dead, d.expected_dead_letters);
    let missing: Vec<_> = d.expected.keys().filter(|k| !got.contains_key(k)).collect();
    assert!(missing.is_empty(), "not emitted: {missing:?}");
    let extra: Vec<_> = got.keys().filter(|k| !d.expected.contains_key(k)).collect();
    assert!(extra.is_empty(), "not expected: {extra:?}");
    for (k, want) in &d.expected {
        assert_eq!(&got[k], want, "document {k:?} differs");
    }
}

#[test]
fn join_emits_exactly_the_oracle() {
    join_matches_oracle(&small());
}

#[test]
fn join_emits_exactly_the_oracle_default_and_other_seeds() {
    join_matches_oracle(&GenConfig::default());
    for seed in 100..104 {
        join_matches_oracle(&GenConfig { seed, ..small() });
    }
    // Extremes: nothing late / updated / malformed, and everything late.
    join_matches_oracle(&GenConfig {
        late_sale_share: 0.0,
        update_share: 0.0,
        malformed_share: 0.0,
        null_promo_share: 0.0,
        ..small()
    });
    join_matches_oracle(&GenConfig {
        late_sale_share: 1.0,
        update_share: 1.0,
        null_promo_share: 1.0,
        key_skew: 1.0,
        ..small()
    });
}
