//! One pass from a sale record in its usual shape straight to a [`Sale`].
//!
//! Producers write every member of a sale, in the schema's order, without whitespace (the
//! original's producer and our generator do). For such a record this decoder reads each
//! member's value where it stands and converts it at once: no list of members, no look-ups,
//! no second pass. Sales are most of the records, and decoding was a quarter of the engine.
//!
//! It accepts only what it can decide exactly as [`super::fields::Fields`] does, with the
//! same conversions (`money::parse_decimal`, `EventTime::parse`, the same trimming), and
//! returns `None` for everything else: another order, a missing or extra member, whitespace,
//! escapes, `true`/`false`, and every value the general path would reject or convert in a
//! less common way (an integer written `42.0`, a blank required field). The general path then
//! decides, and its errors name the problem. So this decoder can change speed, never a
//! result: what it returns, the general path returns too (tested on mutated records).

use super::fields::trim;
use super::scan::{literal_end, number_end, string_end};
use super::{CustomerId, EventTime, MAX_RECORD_BYTES, PromoId, Sale, WarehouseId, money};

/// The members of a sale in the schema's order.
const KEYS: [&str; 26] = [
    "order_id",
    "item_id",
    "quantity",
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
    "net_profit",
    "bill_customer_id",
    "ship_customer_id",
    "warehouse_id",
    "promo_id",
    "ship_delay",
    "ship_mode",
    "ship_carrier",
    "sale_datetime",
];

/// A member's value: JSON `null`, a string without escapes (its text), or a number (its text).
#[derive(Clone, Copy)]
enum Value<'a> {
    Null,
    Str(&'a str),
    Num(&'a str),
}

/// Reads the members in [`KEYS`] order.
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
    next_key: usize,
}

impl<'a> Reader<'a> {
    /// The value of the next member, checking that its key is the next of [`KEYS`].
    fn next(&mut self) -> Option<Value<'a>> {
        let key = KEYS.get(self.next_key)?.as_bytes();
        let b = self.b;
        let mut i = self.i;
        // `,` before every member but the first (`{` was consumed by `decode`).
        if self.next_key > 0 {
            (b.get(i) == Some(&b',')).then_some(())?;
            i += 1;
        }
        self.next_key += 1;
        (b.get(i) == Some(&b'"')).then_some(())?;
        (b.get(i + 1..i + 1 + key.len())? == key).then_some(())?;
        i += 1 + key.len();
        (b.get(i..i + 2)? == b"\":").then_some(())?;
        i += 2;
        let start = i;
        let value = match *b.get(i)? {
            b'"' => {
                let (end, escaped) = string_end(b, i)?;
                if escaped {
                    return None;
                }
                i = end;
                Value::Str(std::str::from_utf8(&b[start + 1..end - 1]).ok()?)
            }
            b'-' | b'0'..=b'9' => {
                i = number_end(b, i)?;
                Value::Num(std::str::from_utf8(&b[start..i]).ok()?)
            }
            b'n' => {
                i = literal_end(b, i, b"null")?;
                Value::Null
            }
            _ => return None,
        };
        self.i = i;
        Some(value)
    }

    fn int(&mut self) -> Option<i64> {
        self.opt_int()?
    }

    /// `Fields::opt_int` for null, blank and what `i64::from_str` takes (not `42.0`).
    fn opt_int(&mut self) -> Option<Option<i64>> {
        match self.next()? {
            Value::Null => Some(None),
            Value::Str(s) if trim(s).is_empty() => Some(None),
            Value::Str(s) => trim(s).parse().ok().map(Some),
            Value::Num(n) => n.parse().ok().map(Some),
        }
    }

    /// `Fields::opt_decimal`.
    fn opt_decimal(&mut self) -> Option<Option<rust_decimal::Decimal>> {
        let text = match self.next()? {
            Value::Null => return Some(None),
            Value::Str(s) if trim(s).is_empty() => return Some(None),
            Value::Str(s) => trim(s),
            Value::Num(n) => n,
        };
        money::parse_decimal(text).map(Some)
    }

    /// `Fields::opt_id`.
    fn opt_id(&mut self) -> Option<Option<String>> {
        match self.next()? {
            Value::Null => Some(None),
            Value::Str("") => Some(None),
            Value::Str(s) => Some(Some(s.to_string())),
            Value::Num(n) if n.bytes().all(|b| b.is_ascii_digit() || b == b'-') => {
                Some(Some(n.to_string()))
            }
            Value::Num(_) => None,
        }
    }

    fn id(&mut self) -> Option<String> {
        self.opt_id()?
    }

    /// `Fields::opt_text`.
    fn opt_text(&mut self) -> Option<Option<String>> {
        match self.next()? {
            Value::Null => Some(None),
            Value::Str(s) | Value::Num(s) => Some(Some(s.to_string())),
        }
    }

    /// `Fields::datetime`, for a string that parses.
    fn datetime(&mut self) -> Option<EventTime> {
        match self.next()? {
            Value::Str(s) if !trim(s).is_empty() => EventTime::parse(s),
            _ => None,
        }
    }
}

/// The sale, when `bytes` is a record in the usual shape that decodes; `None` leaves the
/// record to the general path.
pub(super) fn decode(bytes: &[u8]) -> Option<Sale> {
    if bytes.len() > MAX_RECORD_BYTES || bytes.first() != Some(&b'{') {
        return None;
    }
    let mut r = Reader {
        b: bytes,
        i: 1,
        next_key: 0,
    };
    let sale = Sale {
        order_id: r.int()?,
        item_id: r.int()?,
        quantity: r.opt_int()?,
        wholesale_cost: r.opt_decimal()?,
        list_price: r.opt_decimal()?,
        sales_price: r.opt_decimal()?,
        ext_discount_amt: r.opt_decimal()?,
        ext_sales_price: r.opt_decimal()?,
        ext_wholesale_cost: r.opt_decimal()?,
        ext_list_price: r.opt_decimal()?,
        ext_tax: r.opt_decimal()?,
        coupon_amt: r.opt_decimal()?,
        ext_ship_cost: r.opt_decimal()?,
        net_paid: r.opt_decimal()?,
        net_paid_inc_tax: r.opt_decimal()?,
        net_paid_inc_ship: r.opt_decimal()?,
        net_paid_inc_ship_tax: r.opt_decimal()?,
        net_profit: r.opt_decimal()?,
        bill_customer_id: CustomerId::new(r.id()?),
        ship_customer_id: CustomerId::new(r.id()?),
        warehouse_id: r.opt_id()?.map(WarehouseId::new),
        promo_id: r.opt_id()?.map(PromoId::new),
        ship_delay: r.opt_text()?,
        ship_mode: r.opt_text()?,
        ship_carrier: r.opt_text()?,
        sale_datetime: r.datetime()?,
    };
    (r.next_key == KEYS.len() && bytes.get(r.i..) == Some(b"}")).then_some(sale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::fields::Fields;
    use crate::r#gen::{GenConfig, generate};

    /// What the general path makes of the record.
    fn general(bytes: &[u8]) -> Result<Sale, crate::events::DecodeError> {
        Fields::decode(bytes, Sale::decode)
    }

    fn agrees(bytes: &[u8]) -> bool {
        match decode(bytes) {
            Some(fast) => {
                assert_eq!(
                    general(bytes).as_ref(),
                    Ok(&fast),
                    "{:?}",
                    String::from_utf8_lossy(bytes)
                );
                true
            }
            None => false,
        }
    }

    /// Generated sale records (money as strings and as numbers, promo ids as text, as digits in
    /// strings and as numbers, null promos and carriers): the one-pass decoder takes every
    /// well-formed one, and agrees with the general path.
    #[test]
    fn takes_the_generated_records_and_agrees() {
        let d = generate(&GenConfig {
            sales: 3_000,
            ..GenConfig::default()
        });
        let mut taken = 0;
        let mut well_formed = 0;
        for r in &d.sale_records {
            let ok = general(&r.data).is_ok();
            well_formed += usize::from(ok);
            let fast = agrees(&r.data);
            assert!(!fast || ok);

            taken += usize::from(fast);
        }
        assert!(well_formed >= 3_000);
        assert_eq!(taken, well_formed, "every well-formed generated sale");
        // Every shape of promo id was among them.
        let shapes: std::collections::BTreeSet<&str> = d
            .sale_records
            .iter()
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.data).ok())
            .map(|v| match &v["promo_id"] {
                serde_json::Value::Number(_) => "number",
                serde_json::Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => "digits",
                serde_json::Value::String(_) => "text",
                _ => "null",
            })
            .collect();
        assert_eq!(
            shapes.into_iter().collect::<Vec<_>>(),
            ["digits", "null", "number", "text"]
        );
    }

    /// Every single-byte change of a record, at every position: whatever the one-pass decoder
    /// returns, the general path returns too. Once with a numeric promo id, once with text.
    #[test]
    fn mutated_records_agree_with_the_general_path() {
        let record = r#"{"order_id":1050,"item_id":"40","quantity":" 64","wholesale_cost":67.36,"list_price":"72.40","sales_price":-72.34,"ext_discount_amt":" 3.84 ","ext_sales_price":4629.76,"ext_wholesale_cost":"","ext_list_price":4.6336E+3,"ext_tax":null,"coupon_amt":0.00,"ext_ship_cost":"46.78","net_paid":4629.76,"net_paid_inc_tax":"4953.84","net_paid_inc_ship":4676.54,"net_paid_inc_ship_tax":"5000.62","net_profit":318.72,"bill_customer_id":"AAAAAAAAPGAAAAAA","ship_customer_id":77,"warehouse_id":"","promo_id":6,"ship_delay":12,"ship_mode":"SEA é","ship_carrier":null,"sale_datetime":"2020-01-01T04:07:41.124+02:00"}"#;
        let text_promo = record.replace(r#""promo_id":6,"#, r#""promo_id":"P 6","#);
        assert_ne!(text_promo, record);
        for record in [record, text_promo.as_str()] {
            let record = record.as_bytes();
            assert!(agrees(record), "the base record is taken");
            crate::events::scan::for_each_mutation(record, |m| {
                agrees(m);
            });
        }
    }

    #[test]
    fn other_shapes_are_left_to_the_general_path() {
        let base = r#"{"order_id":1,"item_id":2,"quantity":null,"wholesale_cost":null,"list_price":null,"sales_price":null,"ext_discount_amt":null,"ext_sales_price":null,"ext_wholesale_cost":null,"ext_list_price":null,"ext_tax":null,"coupon_amt":null,"ext_ship_cost":null,"net_paid":null,"net_paid_inc_tax":null,"net_paid_inc_ship":null,"net_paid_inc_ship_tax":null,"net_profit":null,"bill_customer_id":"C","ship_customer_id":"C","warehouse_id":null,"promo_id":null,"ship_delay":null,"ship_mode":null,"ship_carrier":null,"sale_datetime":"2020-01-01T00:00:00Z"}"#;
        assert!(agrees(base.as_bytes()));
        for other in [
            base.replace("{\"order_id\":1,", "{ \"order_id\":1,"),
            base.replace(
                "\"order_id\":1,\"item_id\":2",
                "\"item_id\":2,\"order_id\":1",
            ),
            base.replace(",\"quantity\":null", ""),
            base.replace("}", ",\"extra\":1}"),
            base.replace("\"order_id\":1", "\"order_id\":1.0"),
            base.replace("\"order_id\":1", "\"order_id\":\"1.0\""),
            base.replace("\"bill_customer_id\":\"C\"", "\"bill_customer_id\":\"\""),
            base.replace("\"ship_mode\":null", "\"ship_mode\":\"a\\nb\""),
            base.replace("\"ship_mode\":null", "\"ship_mode\":true"),
            base.replace("2020-01-01T00:00:00Z", "yesterday"),
            format!("{base}\n"),
        ] {
            assert!(decode(other.as_bytes()).is_none(), "{other}");
        }
    }
}
