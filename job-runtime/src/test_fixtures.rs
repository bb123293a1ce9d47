//! Builders of valid events for unit tests, decoded from JSON like production input.

use crate::events::{
    Address, Customer, EventTime, Item, Promo, Sale, decode_address, decode_customer, decode_sale,
};

/// `2020-01-01T00:00:00Z` plus `secs` seconds.
pub fn t(secs: i64) -> EventTime {
    EventTime::from_micros(1_577_836_800_000_000 + secs * 1_000_000)
}

fn iso(secs: i64) -> String {
    t(secs).to_rfc3339().unwrap()
}

pub fn customer(id: &str, address_id: &str, at: i64, last_name: &str) -> Customer {
    decode_customer(
        serde_json::json!({
            "customer_id": id, "salutation": "Mr.", "first_name": "Kevin",
            "last_name": last_name, "birth_country": "BELIZE",
            "email_address": "kevin@example.org", "address_id": address_id, "gender": "F",
            "marital_status": "U", "education_status": "Advanced Degree",
            "purchase_estimate": 7500, "credit_rating": "Good", "buy_potential": "501-1000",
            "vehicle_count": 1, "lower_bound": 160001, "upper_bound": 170000,
            "birth_date": "1943-03-22", "customer_datetime": iso(at),
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

pub fn address(id: &str, at: i64, city: &str) -> Address {
    decode_address(
        serde_json::json!({
            "address_id": id, "city": city, "county": "Ziebach County", "state": "SD",
            "zip": "57001", "country": "United States", "gmt_offset": "-6.00",
            "location_type": "apartment", "street": "1 Main St", "address_datetime": iso(at),
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

pub fn sale(order: i64, item: i64, bill: &str, ship: &str, at: i64, promo: Option<&str>) -> Sale {
    sale_with_promo_json(order, item, bill, ship, at, serde_json::json!(promo))
}

/// [`sale`] with `promo_id` given as any JSON value (a number, a string, null).
pub fn sale_with_promo_json(
    order: i64,
    item: i64,
    bill: &str,
    ship: &str,
    at: i64,
    promo: serde_json::Value,
) -> Sale {
    decode_sale(
        serde_json::json!({
            "order_id": order, "item_id": item, "quantity": 3,
            "wholesale_cost": "12.34", "list_price": 20.1, "sales_price": "18.00",
            "ext_discount_amt": "0.00", "ext_sales_price": "54.00", "ext_wholesale_cost": "37.02",
            "ext_list_price": "60.30", "ext_tax": "4.32", "coupon_amt": "0.00",
            "ext_ship_cost": "9.99", "net_paid": "54.00", "net_paid_inc_tax": "58.32",
            "net_paid_inc_ship": "63.99", "net_paid_inc_ship_tax": "68.31", "net_profit": "16.98",
            "bill_customer_id": bill, "ship_customer_id": ship, "warehouse_id": 3,
            "promo_id": promo, "ship_delay": "2", "ship_mode": "EXPRESS", "ship_carrier": "UPS",
            "sale_datetime": iso(at),
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

pub fn item(id: i64) -> Item {
    let id = id.to_string();
    Item::from_columns(&[
        &id,
        "desc",
        "brand",
        "class",
        "category",
        "manufact",
        "size",
        "color",
        "units",
        "container",
        "product",
        "2020-01-01T00:00:00Z",
    ])
    .unwrap()
    .unwrap()
}

pub fn promo(id: &str) -> Promo {
    Promo::from_columns(&[id, "1000.00", "1", "promo", "purpose", "start", "end", ""])
        .unwrap()
        .unwrap()
}
