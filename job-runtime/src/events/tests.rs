use rust_decimal::Decimal;
use tributary_crds::document_id::DocumentIdTemplate;

use super::*;
use crate::test_fixtures;

fn sale_json(overrides: serde_json::Value) -> Vec<u8> {
    let mut v = serde_json::json!({
        "order_id": 1, "item_id": 2, "bill_customer_id": "C1", "ship_customer_id": "C2",
        "sale_datetime": "2020-01-01T13:15:14.852Z",
    });
    for (k, val) in overrides.as_object().unwrap() {
        v[k] = val.clone();
    }
    v.to_string().into_bytes()
}

fn reason(r: Result<Sale, DecodeError>) -> &'static str {
    r.unwrap_err().reason()
}

#[test]
fn the_originals_customer_sample_decodes() {
    let c = decode_customer(
        br#"{"customer_id": "AAAAAAAABCMDBAAA", "salutation": "Mr.", "first_name": "Kevin",
            "address_id": "AAAAAAAAICGLAAAA", "purchase_estimate": 7500, "vehicle_count": 1,
            "lower_bound": 160001, "upper_bound": 170000, "birth_date": "1943-03-22",
            "customer_datetime": "2020-01-01T04:18:10.753Z"}"#,
    )
    .unwrap();
    assert_eq!(c.customer_id.as_str(), "AAAAAAAABCMDBAAA");
    assert_eq!(c.address_id.unwrap().as_str(), "AAAAAAAAICGLAAAA");
    assert_eq!(c.purchase_estimate, Some(7500));
    assert_eq!(c.birth_date.to_string(), "1943-03-22T00:00:00Z");
    assert_eq!(c.customer_datetime.to_string(), "2020-01-01T04:18:10.753Z");
}

#[test]
fn money_as_string_or_number_gives_the_same_exact_decimal() {
    for (as_string, as_number) in [
        (r#""0.1""#, "0.1"),
        (r#""123456789.123456789""#, "123456789.123456789"),
        (r#""0.30000000000000004""#, "0.30000000000000004"),
        (r#""-12.30""#, "-12.30"),
        (r#""1E+2""#, "1E+2"),
    ] {
        let a = decode_sale(
            format!(
                r#"{{"order_id":1,"item_id":2,"bill_customer_id":"C","ship_customer_id":"C",
                "sale_datetime":"2020-01-01T00:00:00Z","net_paid":{as_string}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let b = decode_sale(
            format!(
                r#"{{"order_id":1,"item_id":2,"bill_customer_id":"C","ship_customer_id":"C",
                "sale_datetime":"2020-01-01T00:00:00Z","net_paid":{as_number}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(a.net_paid, b.net_paid, "{as_string} vs {as_number}");
        // Same digits and scale, not merely numerically equal.
        assert_eq!(
            a.net_paid.unwrap().to_string(),
            b.net_paid.unwrap().to_string()
        );
    }
    let s = decode_sale(&sale_json(serde_json::json!({}))).unwrap();
    assert_eq!(s.net_paid, None);
    let exact = decode_sale(
        br#"{"order_id":1,"item_id":2,"bill_customer_id":"C","ship_customer_id":"C",
            "sale_datetime":"2020-01-01T00:00:00Z","net_paid":123456789.123456789}"#,
    )
    .unwrap();
    assert_eq!(
        exact.net_paid,
        Some(Decimal::from_i128_with_scale(123_456_789_123_456_789, 9))
    );
}

#[test]
fn ids_and_integers_accept_strings_and_numbers() {
    let a = decode_sale(&sale_json(serde_json::json!({
        "order_id": "10", "item_id": 20.0, "bill_customer_id": 42, "warehouse_id": 7,
        "promo_id": "5", "quantity": "3",
    })))
    .unwrap();
    assert_eq!(
        a.key(),
        SaleKey {
            order_id: 10,
            item_id: 20
        }
    );
    assert_eq!(a.bill_customer_id, CustomerId::from("42"));
    assert_eq!(a.warehouse_id, Some(WarehouseId::from("7")));
    assert_eq!(
        (a.promo_id, a.quantity),
        (Some(PromoId::from("5")), Some(3))
    );
}

#[test]
fn promo_ids_are_text_ids() {
    let promo =
        |v: serde_json::Value| decode_sale(&sale_json(serde_json::json!({ "promo_id": v })));
    // A number and the string of its digits are the same id; text is kept as sent.
    assert_eq!(promo(serde_json::json!(5)), promo(serde_json::json!("5")));
    for (sent, id) in [
        (serde_json::json!(5), "5"),
        (serde_json::json!(-5), "-5"),
        (serde_json::json!("P12"), "P12"),
        (serde_json::json!("007"), "007"),
        (serde_json::json!(" P 1"), " P 1"),
    ] {
        assert_eq!(
            promo(sent.clone()).unwrap().promo_id,
            Some(PromoId::from(id)),
            "{sent}"
        );
    }
    assert_eq!(promo(serde_json::json!("")).unwrap().promo_id, None);
    // What an id cannot be, as for customer ids.
    for bad in [
        serde_json::json!(5.5),
        serde_json::json!(true),
        serde_json::json!({ "id": 5 }),
    ] {
        assert_eq!(reason(promo(bad.clone())), "wrong_type", "{bad}");
    }
    let s = promo(serde_json::json!("P12")).unwrap();
    assert_eq!(s.field("promo_id").as_deref(), Some("P12"));
}

#[test]
fn null_or_absent_promo_id_is_none() {
    let null = decode_sale(&sale_json(serde_json::json!({ "promo_id": null }))).unwrap();
    assert_eq!(null.promo_id, None);
    let absent = decode_sale(&sale_json(serde_json::json!({}))).unwrap();
    assert_eq!(absent.promo_id, None);
}

#[test]
fn empty_or_null_birth_date_is_the_epoch() {
    for birth in [serde_json::json!(""), serde_json::Value::Null] {
        let c = decode_customer(
            serde_json::json!({"customer_id": "C", "birth_date": birth,
                "customer_datetime": "2020-01-01T00:00:00Z"})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(c.birth_date, EventTime::EPOCH);
        assert_eq!(c.address_id, None);
    }
}

#[test]
fn every_error_reason() {
    assert_eq!(reason(decode_sale(b"{not json")), "malformed_json");
    assert_eq!(reason(decode_sale(b"")), "malformed_json");
    assert_eq!(
        reason(decode_sale(b"{\"order_id\": 1} trailing")),
        "malformed_json"
    );
    assert_eq!(reason(decode_sale(&[b'"', 0xff, b'"'])), "malformed_json");
    assert_eq!(reason(decode_sale(b"[1, 2]")), "wrong_type");
    assert_eq!(reason(decode_sale(b"{}")), "missing_field");
    assert_eq!(
        decode_sale(&sale_json(serde_json::json!({ "ship_customer_id": null }))).unwrap_err(),
        DecodeError::MissingField {
            field: "ship_customer_id"
        }
    );
    assert_eq!(
        reason(decode_sale(&sale_json(
            serde_json::json!({ "sale_datetime": "" })
        ))),
        "missing_field"
    );
    for bad in [
        serde_json::json!({ "order_id": "ten" }),
        serde_json::json!({ "order_id": 1.5 }),
        serde_json::json!({ "order_id": [1] }),
        serde_json::json!({ "bill_customer_id": true }),
        serde_json::json!({ "bill_customer_id": 4.2 }),
        serde_json::json!({ "net_paid": {"v": 1} }),
        serde_json::json!({ "sale_datetime": 1577836800 }),
        serde_json::json!({ "ship_mode": ["a"] }),
    ] {
        assert_eq!(
            reason(decode_sale(&sale_json(bad.clone()))),
            "wrong_type",
            "{bad}"
        );
    }
    for bad in ["abc", "NaN", "1,5", "0.00000000000000000000000000001"] {
        assert_eq!(
            reason(decode_sale(&sale_json(
                serde_json::json!({ "net_paid": bad })
            ))),
            "invalid_decimal",
            "{bad}"
        );
    }
    for bad in ["2020-01-01T13:15:14", "2020-13-01T00:00:00Z", "tomorrow"] {
        assert_eq!(
            reason(decode_sale(&sale_json(
                serde_json::json!({ "sale_datetime": bad })
            ))),
            "invalid_datetime",
            "{bad}"
        );
    }
    let huge = vec![b' '; MAX_RECORD_BYTES + 1];
    assert_eq!(reason(decode_sale(&huge)), "oversized");
    assert_eq!(
        decode_customer(
            b"{\"customer_id\": \"C\", \"birth_date\": \"someday\", \
            \"customer_datetime\": \"2020-01-01T00:00:00Z\"}"
        )
        .unwrap_err()
        .reason(),
        "invalid_datetime"
    );
    assert_eq!(
        decode_address(
            b"{\"address_id\": 1, \"gmt_offset\": \"x\", \
            \"address_datetime\": \"2020-01-01T00:00:00Z\"}"
        )
        .unwrap_err()
        .reason(),
        "invalid_decimal"
    );
    let all: Vec<&str> = DecodeError::REASONS.to_vec();
    for r in [
        "malformed_json",
        "missing_field",
        "wrong_type",
        "invalid_decimal",
        "invalid_datetime",
        "oversized",
    ] {
        assert!(all.contains(&r));
    }
}

#[test]
fn reference_rows() {
    assert_eq!(Item::from_columns(&["item_id", "item_desc"]).unwrap(), None);
    assert_eq!(
        Item::from_columns(&["x1", "", "", "", "", "", "", "", "", "", "", ""])
            .unwrap_err()
            .reason(),
        "wrong_type"
    );
    assert_eq!(
        Item::from_columns(&["1", "d"]).unwrap_err().reason(),
        "missing_field"
    );
    let p = Promo::from_columns(&["1", "0.0", "1", "promo_name", "purpose", "s", "e", "x"])
        .unwrap()
        .unwrap();
    assert_eq!(p.cost.unwrap().to_string(), "0.0");
    // The original reads promo id "1" as the text "1": any text is an id, trimmed like the
    // other columns; only a missing one is refused.
    assert_eq!(p.promo_id, PromoId::from("1"));
    let text = Promo::from_columns(&[" P12 ", "", "", "", "", "", "", ""])
        .unwrap()
        .unwrap();
    assert_eq!(text.promo_id, PromoId::from("P12"));
    assert_eq!(
        Promo::from_columns(&[" ", "", "", "", "", "", "", ""])
            .unwrap_err()
            .reason(),
        "missing_field"
    );
    assert_eq!(test_fixtures::item(7).item_id, 7);
}

#[test]
fn enriched_document_shape_and_id() {
    let s = test_fixtures::sale(42, 7, "C1", "C1", 10, None);
    let c = test_fixtures::customer("C1", "A1", 0, "Edwards");
    let a = test_fixtures::address("A1", 0, "Springfield");
    let doc = EnrichedSale {
        sale: s,
        item: Shared::new(test_fixtures::item(7)).unwrap(),
        bill_customer: EnrichedCustomer {
            customer: Shared::new(c.clone()).unwrap(),
            address: Some(Shared::new(a.clone()).unwrap()),
        },
        ship_customer: EnrichedCustomer {
            customer: Shared::new(c).unwrap(),
            address: Some(Shared::new(a).unwrap()),
        },
        promo: None,
        join_flags: vec![],
    };
    let json: serde_json::Value = serde_json::from_slice(&doc.to_json().unwrap()).unwrap();
    assert_eq!(json["order_id"], 42);
    assert_eq!(json["sale_datetime"], "2020-01-01T00:00:10Z");
    assert_eq!(json["bill_customer"]["address"]["city"], "Springfield");
    assert_eq!(json["ship_customer"]["last_name"], "Edwards");
    assert!(json.get("promo").is_none() && json.get("promo_id").is_none());
    assert!(json.get("join_flags").is_none());
    let text = String::from_utf8(doc.to_json().unwrap()).unwrap();
    assert!(text.contains(r#""list_price":20.1,"#), "{text}");
    assert!(text.contains(r#""gmt_offset":-6.00,"#), "{text}");
    assert!(text.contains(r#""wholesale_cost":12.34,"#), "{text}");
    let template = DocumentIdTemplate::parse("{order_id}:{item_id}").unwrap();
    assert_eq!(doc.document_id(&template), "42:7");
}

#[test]
fn field_order_and_repeated_keys_do_not_change_the_result() {
    let in_order = br#"{"customer_id":"C1","first_name":"Kevin","last_name":"A","address_id":"A1","customer_datetime":"2020-01-01T00:00:00Z"}"#;
    let reversed = br#"{"customer_datetime":"2020-01-01T00:00:00Z","address_id":"A1","last_name":"A","first_name":"Kevin","customer_id":"C1"}"#;
    let a = decode_customer(in_order).unwrap();
    assert_eq!(a, decode_customer(reversed).unwrap());
    assert_eq!(a.last_name.as_deref(), Some("A"));
    // A repeated key keeps its last value, wherever the repetition is, unknown keys or not.
    for record in [
        &br#"{"customer_id":"C1","last_name":"A","last_name":"B","customer_datetime":"2020-01-01T00:00:00Z"}"#[..],
        br#"{"last_name":"A","customer_id":"C1","customer_datetime":"2020-01-01T00:00:00Z","last_name":"B"}"#,
        br#"{"customer_id":"C1","last_name":"A","x":1,"customer_datetime":"2020-01-01T00:00:00Z","last_name":"B"}"#,
    ] {
        let c = decode_customer(record).unwrap();
        assert_eq!(c.last_name.as_deref(), Some("B"), "{}", String::from_utf8_lossy(record));
    }
    // A bad first occurrence is overridden by a good last one, and the reverse is an error.
    let fixed = br#"{"customer_id":"C1","customer_datetime":"yesterday","customer_datetime":"2020-01-01T00:00:00Z"}"#;
    assert!(decode_customer(fixed).is_ok());
    let broken = br#"{"customer_id":"C1","customer_datetime":"2020-01-01T00:00:00Z","customer_datetime":"yesterday"}"#;
    assert_eq!(
        decode_customer(broken).unwrap_err().reason(),
        "invalid_datetime"
    );
}
