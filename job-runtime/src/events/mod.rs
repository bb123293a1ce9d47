//! Typed events of the three input streams (customer, address, sale) and the two reference
//! tables (item, promo), and the enriched document the join produces.
//!
//! Decoding never panics and never goes through `f64`: a record either becomes a typed event or
//! a [`DecodeError`] whose [`DecodeError::reason`] is a bounded label for metrics and
//! dead-letter records.
//!
//! Nullability follows the TPC-DS source: the keys the join needs (`customer_id`, `address_id`,
//! `order_id`, `item_id`, both customer ids of a sale) and the event times are required;
//! descriptive attributes and measures (money, quantity) may be null and are then left out of
//! the document, as the original did (`JsonInclude.NON_NULL`).

mod address;
mod customer;
pub mod enriched;
mod fields;
mod ids;
pub(crate) mod json_out;
pub mod money;
mod reference;
mod sale;
mod sale_fast;
mod scan;
mod shared;
mod time;

pub use address::Address;
pub use customer::Customer;
pub use enriched::{EnrichedCustomer, EnrichedSale, JoinFlag};
pub use ids::{AddressId, CustomerId, ItemId, PromoId, WarehouseId};
pub use reference::{ITEM_COLUMNS, Item, PROMO_COLUMNS, Promo};
pub use sale::{Sale, SaleKey};
pub use shared::{Render, Shared};
pub use time::EventTime;

/// Records larger than this are rejected before parsing (a Kinesis record is at most 1 MiB; a
/// larger one from another source is a producer bug, and parsing it would only cost memory).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Why a record could not be decoded. The payload names the field (a schema name, bounded) and
/// at most a short excerpt of the value: fit for a dead-letter record, never for a metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {size} bytes exceeds the limit of {limit} bytes")]
    Oversized { size: usize, limit: usize },
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("missing field {field}")]
    MissingField { field: &'static str },
    #[error("field {field}: expected {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("field {field}: invalid decimal {value:?}")]
    InvalidDecimal { field: &'static str, value: String },
    #[error("field {field}: invalid datetime {value:?} (ISO-8601 with a zone expected)")]
    InvalidDatetime { field: &'static str, value: String },
}

impl DecodeError {
    /// Bounded label for metrics (`reason`) and dead-letter records.
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Oversized { .. } => "oversized",
            Self::MalformedJson(_) => "malformed_json",
            Self::MissingField { .. } => "missing_field",
            Self::WrongType { .. } => "wrong_type",
            Self::InvalidDecimal { .. } => "invalid_decimal",
            Self::InvalidDatetime { .. } => "invalid_datetime",
        }
    }

    /// Every label [`DecodeError::reason`] can return (to pre-register metric series).
    pub const REASONS: [&'static str; 6] = [
        "oversized",
        "malformed_json",
        "missing_field",
        "wrong_type",
        "invalid_decimal",
        "invalid_datetime",
    ];
}

/// Decode one record of the customer stream.
pub fn decode_customer(bytes: &[u8]) -> Result<Customer, DecodeError> {
    fields::Fields::decode(bytes, Customer::decode)
}

/// Decode one record of the address stream.
pub fn decode_address(bytes: &[u8]) -> Result<Address, DecodeError> {
    fields::Fields::decode(bytes, Address::decode)
}

/// Decode one record of the sale stream: in one pass when it has the usual shape
/// ([`sale_fast`]), else field by field.
pub fn decode_sale(bytes: &[u8]) -> Result<Sale, DecodeError> {
    match sale_fast::decode(bytes) {
        Some(sale) => Ok(sale),
        None => fields::Fields::decode(bytes, Sale::decode),
    }
}

#[cfg(test)]
mod tests;
