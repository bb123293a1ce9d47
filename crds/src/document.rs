//! The enriched sale document as data: every field the job runtime writes to OpenSearch, with the
//! kind of value it holds.
//!
//! The runtime's `EnrichedSale` (job-runtime/src/events/enriched.rs) is the document's Rust type;
//! the operator must not link the runtime (RocksDB), so the shape the operator maps lives here,
//! in the crate both share. `job-runtime/tests/document_schema.rs` serialises generated documents
//! and fails when a field is missing here, has an incompatible JSON type, or is listed here but
//! never written.
//!
//! Unknown fields: the index template maps with `dynamic: false`, so a field the runtime adds
//! before this list is updated is kept in `_source` (nothing is lost, the document is accepted)
//! but not indexed. `strict` would make OpenSearch refuse the whole document, and the sink would
//! then have to dead-letter every sale until the operator is upgraded.

/// What one field holds, which decides its OpenSearch mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// An identifier or a code: exact match, terms aggregations, no full text. A JSON string or
    /// integer.
    Keyword,
    /// A decimal with at most two fractional digits, written as a JSON number (money; also the
    /// addresses' `gmt_offset` in hours).
    Money,
    /// A count or other integer.
    Long,
    /// An RFC 3339 datetime string.
    Date,
    /// Free text where full-text search helps (names, descriptions), with a `keyword` sub-field
    /// for sorting and aggregations.
    Text,
    /// `true` / `false`.
    Boolean,
    /// A nested JSON object with its own fields.
    Object(&'static [Field]),
}

/// One field of the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub kind: FieldKind,
}

const fn f(name: &'static str, kind: FieldKind) -> Field {
    Field { name, kind }
}

use FieldKind::{Date, Keyword, Long, Money, Object, Text};

/// Address version valid at the sale's time (`bill_customer.address`, `ship_customer.address`).
pub const ADDRESS: &[Field] = &[
    f("address_id", Keyword),
    f("city", Keyword),
    f("county", Keyword),
    f("state", Keyword),
    f("zip", Keyword),
    f("country", Keyword),
    f("gmt_offset", Money),
    f("location_type", Keyword),
    f("street", Keyword),
    f("address_datetime", Date),
];

/// Customer version valid at the sale's time (`bill_customer`, `ship_customer`).
pub const CUSTOMER: &[Field] = &[
    f("customer_id", Keyword),
    f("salutation", Keyword),
    f("first_name", Text),
    f("last_name", Text),
    f("birth_country", Keyword),
    f("email_address", Keyword),
    f("address_id", Keyword),
    f("gender", Keyword),
    f("marital_status", Keyword),
    f("education_status", Keyword),
    f("purchase_estimate", Long),
    f("credit_rating", Keyword),
    f("buy_potential", Keyword),
    f("vehicle_count", Long),
    f("lower_bound", Long),
    f("upper_bound", Long),
    f("birth_date", Date),
    f("customer_datetime", Date),
    f("address", Object(ADDRESS)),
];

/// The item, from the reference data.
pub const ITEM: &[Field] = &[
    f("item_id", Keyword),
    f("item_desc", Text),
    f("brand", Keyword),
    f("class", Keyword),
    f("category", Keyword),
    f("manufact", Keyword),
    f("size", Keyword),
    f("color", Keyword),
    f("units", Keyword),
    f("container", Keyword),
    f("product_name", Text),
];

/// The promotion, from the reference data (absent when the sale has none).
pub const PROMO: &[Field] = &[
    f("promo_id", Keyword),
    f("cost", Money),
    f("response_target", Long),
    f("promo_name", Text),
    f("purpose", Keyword),
    // Kept as text by the runtime: the source does not specify their format, and a `date`
    // mapping would make OpenSearch refuse a document whose value it cannot parse.
    f("promo_start_date", Keyword),
    f("promo_end_date", Keyword),
];

/// The whole document, top level first.
pub const ENRICHED_SALE: &[Field] = &[
    f("order_id", Keyword),
    f("item_id", Keyword),
    f("quantity", Long),
    f("wholesale_cost", Money),
    f("list_price", Money),
    f("sales_price", Money),
    f("ext_discount_amt", Money),
    f("ext_sales_price", Money),
    f("ext_wholesale_cost", Money),
    f("ext_list_price", Money),
    f("ext_tax", Money),
    f("coupon_amt", Money),
    f("ext_ship_cost", Money),
    f("net_paid", Money),
    f("net_paid_inc_tax", Money),
    f("net_paid_inc_ship", Money),
    f("net_paid_inc_ship_tax", Money),
    f("net_profit", Money),
    f("bill_customer_id", Keyword),
    f("ship_customer_id", Keyword),
    f("warehouse_id", Keyword),
    f("promo_id", Keyword),
    f("ship_delay", Keyword),
    f("ship_mode", Keyword),
    f("ship_carrier", Keyword),
    f("sale_datetime", Date),
    f("item", Object(ITEM)),
    f("bill_customer", Object(CUSTOMER)),
    f("ship_customer", Object(CUSTOMER)),
    f("promo", Object(PROMO)),
    // An array of snake_case flag names.
    f("join_flags", Keyword),
];

/// Money is stored as a long of hundredths: exact for two-decimal amounts.
pub const MONEY_SCALING_FACTOR: u64 = 100;
/// Longer keyword values are kept in `_source` but not indexed (a Lucene term may not exceed
/// 32 KiB; without the bound such a document would be refused).
pub const KEYWORD_IGNORE_ABOVE: u64 = 1024;

fn field_mapping(kind: FieldKind) -> serde_json::Value {
    use serde_json::json;
    match kind {
        Keyword => json!({"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}),
        // scaled_float needs the mapper-extras module.
        Money => json!({"type": "scaled_float", "scaling_factor": MONEY_SCALING_FACTOR}),
        Long => json!({"type": "long"}),
        Date => json!({"type": "date", "format": "strict_date_optional_time"}),
        Text => json!({
            "type": "text",
            "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}
        }),
        FieldKind::Boolean => json!({"type": "boolean"}),
        Object(inner) => json!({"type": "object", "properties": properties(inner)}),
    }
}

/// The OpenSearch `properties` for these fields.
pub fn properties(fields: &[Field]) -> serde_json::Value {
    serde_json::Value::Object(
        fields
            .iter()
            .map(|f| (f.name.to_string(), field_mapping(f.kind)))
            .collect(),
    )
}

/// The OpenSearch index mappings of the document: every known field explicitly; unknown fields
/// kept in `_source` only (`dynamic: false`, see the module docs).
pub fn mappings() -> serde_json::Value {
    serde_json::json!({
        "dynamic": false,
        "properties": properties(ENRICHED_SALE),
    })
}

/// Every leaf field as a dotted path with its kind, in declaration order.
pub fn leaf_paths(fields: &[Field]) -> Vec<(String, FieldKind)> {
    fn walk(prefix: &str, fields: &[Field], out: &mut Vec<(String, FieldKind)>) {
        for field in fields {
            let path = if prefix.is_empty() {
                field.name.to_string()
            } else {
                format!("{prefix}.{}", field.name)
            };
            match field.kind {
                Object(inner) => walk(&path, inner, out),
                kind => out.push((path, kind)),
            }
        }
    }
    let mut out = Vec::new();
    walk("", fields, &mut out);
    out
}

/// The kind of the field at a dotted path (objects included), if the schema has it.
pub fn kind_of(fields: &[Field], path: &str) -> Option<FieldKind> {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let field = fields.iter().find(|f| f.name == head)?;
    match (rest, field.kind) {
        (None, kind) => Some(kind),
        (Some(rest), Object(inner)) => kind_of(inner, rest),
        (Some(_), _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_object() {
        fn check(fields: &[Field]) {
            let mut names: Vec<_> = fields.iter().map(|f| f.name).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(before, names.len(), "duplicate field in {fields:?}");
            for f in fields {
                if let Object(inner) = f.kind {
                    check(inner);
                }
            }
        }
        check(ENRICHED_SALE);
    }

    #[test]
    fn paths_and_lookup_agree() {
        let leaves = leaf_paths(ENRICHED_SALE);
        assert!(leaves.contains(&("bill_customer.address.zip".to_string(), Keyword)));
        assert!(leaves.contains(&("ship_customer.email_address".to_string(), Keyword)));
        for (path, kind) in &leaves {
            assert_eq!(kind_of(ENRICHED_SALE, path), Some(*kind), "{path}");
        }
        assert_eq!(kind_of(ENRICHED_SALE, "bill_customer.nope"), None);
        assert_eq!(kind_of(ENRICHED_SALE, "order_id.x"), None);
        assert!(matches!(
            kind_of(ENRICHED_SALE, "bill_customer.address"),
            Some(Object(_))
        ));
    }
}
