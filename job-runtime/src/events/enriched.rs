//! The denormalised output document: one per sale line.
//!
//! Shape (snake_case keys, nulls left out): the sale's own fields, then `item`,
//! `bill_customer` and `ship_customer` (each the customer version valid at `sale_datetime`,
//! with its nested `address` valid at `sale_datetime`), `promo` (absent when `promo_id` is
//! null) and `join_flags` (absent unless a rule below applied). Money is a JSON number with
//! the decimal's exact digits (see [`super::money`]); datetimes are RFC 3339 UTC with `Z`.
//!
//! Serialisation is a pure function of the value: struct fields in declaration order, no maps,
//! so a replay of the same join produces byte-identical JSON.

use serde::Serialize;
use tributary_crds::document_id::DocumentIdTemplate;

use super::{Address, Customer, Item, Promo, Sale, Shared};

/// A customer version with the address version that was valid at the sale's time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnrichedCustomer {
    #[serde(flatten)]
    pub customer: Shared<Customer>,
    /// `None` only when the customer has no `address_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Shared<Address>>,
}

/// Notes on how a document was joined, kept in the document so that anyone can filter the
/// sales whose dimension was not valid at sale time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinFlag {
    /// No bill customer version existed at `sale_datetime`; after `join.maxWait` the earliest
    /// known (later) version was used.
    BillCustomerAfterSale,
    /// Same for the bill customer's address.
    BillAddressAfterSale,
    ShipCustomerAfterSale,
    ShipAddressAfterSale,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnrichedSale {
    #[serde(flatten)]
    pub sale: Sale,
    pub item: Shared<Item>,
    pub bill_customer: EnrichedCustomer,
    pub ship_customer: EnrichedCustomer,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promo: Option<Shared<Promo>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub join_flags: Vec<JoinFlag>,
}

impl EnrichedSale {
    /// The OpenSearch `_id`: deterministic, so a replay overwrites instead of duplicating.
    pub fn document_id(&self, template: &DocumentIdTemplate) -> String {
        template.render(|field| self.sale.field(field))
    }

    /// The document as JSON bytes (what both sinks write): the bytes `serde_json::to_vec`
    /// would give, from the hand-written writer of [`super::json_out`].
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::with_capacity(2048);
        self.write_json(&mut out)?;
        Ok(out)
    }

    /// Append the document's JSON to `out` (see [`EnrichedSale::to_json`]).
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        super::json_out::write_document(out, self)
    }
}
