//! The document's JSON, written straight into a byte buffer.
//!
//! Every sale becomes one document, so this is the hottest serialisation of the job. The
//! `Serialize` derives on the event types describe the same JSON (and stay: tests, the
//! generator's oracle and dead-letter records use them); this writer produces the same bytes
//! without serde's flatten machinery, without allocating per money field or datetime, and with
//! the constant keys written as they are. The unit tests below and the engine tests (every
//! document against the oracle, which goes through serde) keep the two equal.

use chrono::{Datelike, Timelike};
use rust_decimal::Decimal;

use super::{
    Address, Customer, EnrichedCustomer, EnrichedSale, EventTime, Item, Promo, Render, Sale,
};

/// An object being written: commas between members, members skipped when absent.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// `"key":` (keys are plain snake_case: nothing to escape). Inlined, so that each key is
    /// a copy of known length (no `memcpy` call).
    #[inline(always)]
    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        self.out.reserve(key.len() + 4);
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn str(&mut self, key: &str, v: &str) {
        let out = self.key(key);
        string(out, v);
    }

    fn opt_str(&mut self, key: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.str(key, v);
        }
    }

    fn int(&mut self, key: &str, v: i64) {
        let out = self.key(key);
        let mut buf = itoa::Buffer::new();
        out.extend_from_slice(buf.format(v).as_bytes());
    }

    fn opt_int(&mut self, key: &str, v: Option<i64>) {
        if let Some(v) = v {
            self.int(key, v);
        }
    }

    fn opt_decimal(&mut self, key: &str, v: Option<&Decimal>) {
        if let Some(v) = v {
            // The exact digits, as `money::serialize`.
            super::money::write_decimal(self.key(key), v);
        }
    }

    fn time(&mut self, key: &str, t: EventTime) -> Result<(), serde_json::Error> {
        let out = self.key(key);
        rfc3339(out, t)
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// A JSON string with serde_json's escaping.
fn string(out: &mut Vec<u8>, v: &str) {
    // serde_json escapes `"`, `\` and control characters, nothing else: a string without them
    // (almost every one: ids, codes, names) is copied as it is.
    if v.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(v.len() + 2);
        out.push(b'"');
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

/// `EventTime`'s serialisation ([`EventTime::to_rfc3339`] in quotes) without a `String`.
fn rfc3339(out: &mut Vec<u8>, t: EventTime) -> Result<(), serde_json::Error> {
    let Some(dt) = t.to_datetime() else {
        return Err(serde::ser::Error::custom(format!(
            "event time {}us is outside the calendar range",
            t.as_micros()
        )));
    };
    let year = dt.year();
    if !(0..=9999).contains(&year) {
        // Rare: let chrono render the signed, wider year.
        string(out, &t.to_rfc3339().unwrap_or_default());
        return Ok(());
    }
    let two = |out: &mut Vec<u8>, v: u32| {
        out.push(b'0' + (v / 10) as u8);
        out.push(b'0' + (v % 10) as u8);
    };
    out.push(b'"');
    two(out, year as u32 / 100);
    two(out, year as u32 % 100);
    out.push(b'-');
    two(out, dt.month());
    out.push(b'-');
    two(out, dt.day());
    out.push(b'T');
    two(out, dt.hour());
    out.push(b':');
    two(out, dt.minute());
    out.push(b':');
    two(out, dt.second());
    // chrono's SecondsFormat::AutoSi: no fraction, or 3, 6 or 9 digits, as few as exact.
    let nanos = dt.nanosecond();
    let (digits, mut value) = if nanos == 0 {
        (0, 0)
    } else if nanos % 1_000_000 == 0 {
        (3, nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        (6, nanos / 1_000)
    } else {
        (9, nanos)
    };
    if digits > 0 {
        out.push(b'.');
        let start = out.len();
        out.resize(start + digits, b'0');
        for i in (0..digits).rev() {
            out[start + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    out.extend_from_slice(b"Z\"");
    Ok(())
}

fn sale_members(o: &mut Obj<'_>, s: &Sale) -> Result<(), serde_json::Error> {
    o.int("order_id", s.order_id);
    o.int("item_id", s.item_id);
    o.opt_int("quantity", s.quantity);
    o.opt_decimal("wholesale_cost", s.wholesale_cost.as_ref());
    o.opt_decimal("list_price", s.list_price.as_ref());
    o.opt_decimal("sales_price", s.sales_price.as_ref());
    o.opt_decimal("ext_discount_amt", s.ext_discount_amt.as_ref());
    o.opt_decimal("ext_sales_price", s.ext_sales_price.as_ref());
    o.opt_decimal("ext_wholesale_cost", s.ext_wholesale_cost.as_ref());
    o.opt_decimal("ext_list_price", s.ext_list_price.as_ref());
    o.opt_decimal("ext_tax", s.ext_tax.as_ref());
    o.opt_decimal("coupon_amt", s.coupon_amt.as_ref());
    o.opt_decimal("ext_ship_cost", s.ext_ship_cost.as_ref());
    o.opt_decimal("net_paid", s.net_paid.as_ref());
    o.opt_decimal("net_paid_inc_tax", s.net_paid_inc_tax.as_ref());
    o.opt_decimal("net_paid_inc_ship", s.net_paid_inc_ship.as_ref());
    o.opt_decimal("net_paid_inc_ship_tax", s.net_paid_inc_ship_tax.as_ref());
    o.opt_decimal("net_profit", s.net_profit.as_ref());
    o.str("bill_customer_id", s.bill_customer_id.as_str());
    o.str("ship_customer_id", s.ship_customer_id.as_str());
    o.opt_str("warehouse_id", s.warehouse_id.as_ref().map(|w| w.as_str()));
    o.opt_str("promo_id", s.promo_id.as_ref().map(|p| p.as_str()));
    o.opt_str("ship_delay", s.ship_delay.as_deref());
    o.opt_str("ship_mode", s.ship_mode.as_deref());
    o.opt_str("ship_carrier", s.ship_carrier.as_deref());
    o.time("sale_datetime", s.sale_datetime)
}

fn item(out: &mut Vec<u8>, i: &Item) {
    let mut o = Obj::open(out);
    o.int("item_id", i.item_id);
    o.opt_str("item_desc", i.item_desc.as_deref());
    o.opt_str("brand", i.brand.as_deref());
    o.opt_str("class", i.class.as_deref());
    o.opt_str("category", i.category.as_deref());
    o.opt_str("manufact", i.manufact.as_deref());
    o.opt_str("size", i.size.as_deref());
    o.opt_str("color", i.color.as_deref());
    o.opt_str("units", i.units.as_deref());
    o.opt_str("container", i.container.as_deref());
    o.opt_str("product_name", i.product_name.as_deref());
    o.close();
}

fn customer_members(o: &mut Obj<'_>, c: &Customer) -> Result<(), serde_json::Error> {
    o.str("customer_id", c.customer_id.as_str());
    o.opt_str("salutation", c.salutation.as_deref());
    o.opt_str("first_name", c.first_name.as_deref());
    o.opt_str("last_name", c.last_name.as_deref());
    o.opt_str("birth_country", c.birth_country.as_deref());
    o.opt_str("email_address", c.email_address.as_deref());
    o.opt_str("address_id", c.address_id.as_ref().map(|a| a.as_str()));
    o.opt_str("gender", c.gender.as_deref());
    o.opt_str("marital_status", c.marital_status.as_deref());
    o.opt_str("education_status", c.education_status.as_deref());
    o.opt_int("purchase_estimate", c.purchase_estimate);
    o.opt_str("credit_rating", c.credit_rating.as_deref());
    o.opt_str("buy_potential", c.buy_potential.as_deref());
    o.opt_int("vehicle_count", c.vehicle_count);
    o.opt_int("lower_bound", c.lower_bound);
    o.opt_int("upper_bound", c.upper_bound);
    o.time("birth_date", c.birth_date)?;
    o.time("customer_datetime", c.customer_datetime)
}

fn address(out: &mut Vec<u8>, a: &Address) -> Result<(), serde_json::Error> {
    let mut o = Obj::open(out);
    o.str("address_id", a.address_id.as_str());
    o.opt_str("city", a.city.as_deref());
    o.opt_str("county", a.county.as_deref());
    o.opt_str("state", a.state.as_deref());
    o.opt_str("zip", a.zip.as_deref());
    o.opt_str("country", a.country.as_deref());
    o.opt_decimal("gmt_offset", a.gmt_offset.as_ref());
    o.opt_str("location_type", a.location_type.as_deref());
    o.opt_str("street", a.street.as_deref());
    o.time("address_datetime", a.address_datetime)?;
    o.close();
    Ok(())
}

/// A customer with its nested address, from their rendered objects: the customer's members,
/// then `"address"` (the serde form of [`EnrichedCustomer`], whose customer is flattened).
fn enriched_customer(out: &mut Vec<u8>, c: &EnrichedCustomer) {
    let customer = c.customer.json();
    match &c.address {
        None => out.extend_from_slice(customer),
        Some(a) => {
            // The customer object always has members (`customer_id` is required): drop its
            // closing brace, add the address, close.
            out.extend_from_slice(customer.strip_suffix(b"}").unwrap_or(customer));
            out.extend_from_slice(b",\"address\":");
            out.extend_from_slice(a.json());
            out.push(b'}');
        }
    }
}

fn promo(out: &mut Vec<u8>, p: &Promo) {
    let mut o = Obj::open(out);
    o.str("promo_id", p.promo_id.as_str());
    o.opt_decimal("cost", p.cost.as_ref());
    o.opt_int("response_target", p.response_target);
    o.opt_str("promo_name", p.promo_name.as_deref());
    o.opt_str("purpose", p.purpose.as_deref());
    o.opt_str("promo_start_date", p.promo_start_date.as_deref());
    o.opt_str("promo_end_date", p.promo_end_date.as_deref());
    o.close();
}

impl Render for Customer {
    fn render(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let mut o = Obj::open(out);
        customer_members(&mut o, self)?;
        o.close();
        Ok(())
    }
}

impl Render for Address {
    fn render(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        address(out, self)
    }
}

impl Render for Item {
    fn render(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        item(out, self);
        Ok(())
    }
}

impl Render for Promo {
    fn render(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        promo(out, self);
        Ok(())
    }
}

/// Append the document's JSON to `out`: the same bytes as `serde_json::to_vec(doc)`. The sale's
/// members are written here; the rows' objects were rendered when they were loaded.
pub fn write_document(out: &mut Vec<u8>, doc: &EnrichedSale) -> Result<(), serde_json::Error> {
    let mut o = Obj::open(out);
    sale_members(&mut o, &doc.sale)?;
    o.key("item").extend_from_slice(doc.item.json());
    enriched_customer(o.key("bill_customer"), &doc.bill_customer);
    enriched_customer(o.key("ship_customer"), &doc.ship_customer);
    if let Some(p) = &doc.promo {
        o.key("promo").extend_from_slice(p.json());
    }
    if !doc.join_flags.is_empty() {
        let out = o.key("join_flags");
        serde_json::to_writer(&mut *out, &doc.join_flags)?;
    }
    o.close();
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::events::{
        AddressId, CustomerId, JoinFlag, PromoId, Shared, decode_address, decode_customer,
        decode_sale,
    };

    fn shared<T: Render>(v: T) -> Shared<T> {
        Shared::new(v).unwrap()
    }

    fn customer(id: &str, json: &str) -> Customer {
        let mut c = decode_customer(json.as_bytes()).unwrap();
        c.customer_id = CustomerId::new(id);
        c
    }

    /// A document with escapes, non-ASCII text, absent and present optional members, money
    /// with and without fraction digits, and a join flag.
    pub(crate) fn sample_document() -> EnrichedSale {
        let sale = decode_sale(
            r#"{"order_id":7,"item_id":42,"quantity":"3","wholesale_cost":"12.30",
                "list_price":1E+2,"sales_price":-0.005,"net_profit":"0",
                "bill_customer_id":"C\"1","ship_customer_id":2,"warehouse_id":"W\\1",
                "promo_id":5,"ship_mode":"éàü \u0001 tab\t","sale_datetime":"2020-01-01T13:15:14.852+01:00"}"#
                .as_bytes(),
        )
        .unwrap();
        let bill = customer(
            "C\"1",
            r#"{"customer_id":"x","first_name":"Zoë","last_name":"O'Neil \"Jr\"","address_id":"A1",
               "purchase_estimate":1000,"vehicle_count":"2","birth_date":"1943-03-22",
               "customer_datetime":"2019-12-31T23:59:59.123456Z"}"#,
        );
        let ship = customer(
            "2",
            r#"{"customer_id":"2","salutation":"Dr.","customer_datetime":"2019-06-01T00:00:00Z"}"#,
        );
        let address = decode_address(
            br#"{"address_id":"A1","city":"Line\nBreak","zip":"01234","gmt_offset":"-5.00",
                "address_datetime":"2019-01-01T00:00:00.5Z"}"#,
        )
        .unwrap();
        EnrichedSale {
            sale,
            item: shared(Item {
                item_id: 42,
                item_desc: Some("A \"quoted\" description / slash".into()),
                brand: None,
                class: Some("c".into()),
                category: None,
                manufact: None,
                size: Some("XL".into()),
                color: None,
                units: None,
                container: None,
                product_name: Some("p".into()),
            }),
            bill_customer: EnrichedCustomer {
                customer: shared(bill),
                address: Some(shared(address)),
            },
            ship_customer: EnrichedCustomer {
                customer: shared(ship),
                address: None,
            },
            promo: Some(shared(Promo {
                promo_id: PromoId::new("5"),
                cost: Some(Decimal::new(100_000, 2)),
                response_target: Some(1),
                promo_name: Some("ought".into()),
                purpose: None,
                promo_start_date: Some("2000-01-01".into()),
                promo_end_date: None,
            })),
            join_flags: vec![JoinFlag::ShipAddressAfterSale],
        }
    }

    #[test]
    fn writes_what_serde_writes() {
        let doc = sample_document();
        let mut out = Vec::new();
        write_document(&mut out, &doc).unwrap();
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            serde_json::to_string(&doc).unwrap()
        );
        // The sale sent promo id 5 as a number: both promo ids are written as the id's text.
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["promo_id"], "5");
        assert_eq!(json["promo"]["promo_id"], "5");
        // And with every optional member absent.
        let mut bare = doc.clone();
        bare.promo = None;
        bare.join_flags.clear();
        bare.sale.promo_id = None;
        bare.sale.warehouse_id = None;
        bare.bill_customer.address = None;
        let mut customer = bare.bill_customer.customer.value().clone();
        customer.address_id = Some(AddressId::new("A1"));
        bare.bill_customer.customer = shared(customer);
        let mut out = Vec::new();
        write_document(&mut out, &bare).unwrap();
        assert_eq!(out, serde_json::to_vec(&bare).unwrap());
    }

    #[test]
    fn strings_are_escaped_as_serde_escapes_them() {
        let mut texts: Vec<String> = [
            "", "plain", "é日本", "\u{7f}", "a\"b", "\\", "\u{1f}x", "\n",
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect();
        // Every character up to U+00FF alone and between others.
        for c in (0u32..=0xff).filter_map(char::from_u32) {
            texts.push(c.to_string());
            texts.push(format!("ab{c}cd"));
        }
        for t in texts {
            let mut out = Vec::new();
            string(&mut out, &t);
            assert_eq!(out, serde_json::to_vec(&t).unwrap(), "{t:?}");
        }
    }

    #[test]
    fn datetimes_match_the_serde_form() {
        for us in [
            0,
            1,
            999,
            1_000,
            123_456,
            500_000,
            1_577_884_514_852_000,
            -1,
            -86_400_000_000,
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999Z
            253_402_300_800_000_000, // year 10000: chrono's own rendering
            -62_167_219_200_000_001, // before year 0
        ] {
            let t = EventTime::from_micros(us);
            let mut out = Vec::new();
            rfc3339(&mut out, t).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&t).unwrap(),
                "{us}"
            );
        }
        assert!(rfc3339(&mut Vec::new(), EventTime::MAX).is_err());
    }
}
