//! Values: the JSON the event types serialise to, read back through the production decoders
//! (`decode_customer`, ...; `from_columns` for reference rows), so a stored value is parsed by
//! exactly the rules its original record was. A round-trip test guards the pairing.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::StateError;
use crate::events::{
    Address, Customer, ITEM_COLUMNS, Item, Promo, PromoId, Render, Shared, decode_address,
    decode_customer, decode_sale,
};
use crate::join::{MissingKey, PendingSale, ProcessingTime};

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(v).map_err(StateError::Encode)
}

fn corrupt(cf: &'static str, reason: impl ToString) -> StateError {
    StateError::Corrupt {
        cf,
        reason: reason.to_string(),
    }
}

pub(crate) fn customer(bytes: &[u8]) -> Result<Customer, StateError> {
    decode_customer(bytes).map_err(|e| corrupt("customers", e))
}

pub(crate) fn address(bytes: &[u8]) -> Result<Address, StateError> {
    decode_address(bytes).map_err(|e| corrupt("addresses", e))
}

/// A stored row as the join hands it out (rendered once, see [`Shared`]).
fn shared<T: Render>(row: T) -> Result<Shared<T>, StateError> {
    Shared::new(row).map_err(StateError::Encode)
}

pub(crate) fn shared_customer(bytes: &[u8]) -> Result<Shared<Customer>, StateError> {
    shared(customer(bytes)?)
}

pub(crate) fn shared_address(bytes: &[u8]) -> Result<Shared<Address>, StateError> {
    shared(address(bytes)?)
}

pub(crate) fn shared_item(bytes: &[u8]) -> Result<Shared<Item>, StateError> {
    shared(item(bytes)?)
}

pub(crate) fn shared_promo(bytes: &[u8]) -> Result<Shared<Promo>, StateError> {
    shared(promo(bytes)?)
}

/// A JSON object's fields as the text `from_columns` expects: strings unquoted, numbers with
/// their exact digits, absent fields empty.
fn columns(cf: &'static str, bytes: &[u8], fields: &[&str]) -> Result<Vec<String>, StateError> {
    let map: BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(bytes).map_err(|e| corrupt(cf, e))?;
    fields
        .iter()
        .map(|f| match map.get(*f) {
            None => Ok(String::new()),
            Some(raw) if raw.get().starts_with('"') => {
                serde_json::from_str::<String>(raw.get()).map_err(|e| corrupt(cf, e))
            }
            Some(raw) => Ok(raw.get().to_string()),
        })
        .collect()
}

/// An item's JSON keys are its CSV columns, less the trailing datetime the loader drops.
const ITEM_FIELDS: &[&str] = match ITEM_COLUMNS.split_last() {
    Some((_datetime, fields)) => fields,
    None => &[],
};

const PROMO_FIELDS: [&str; 7] = [
    "promo_id",
    "cost",
    "response_target",
    "promo_name",
    "purpose",
    "promo_start_date",
    "promo_end_date",
];

pub(crate) fn item(bytes: &[u8]) -> Result<Item, StateError> {
    let cols = columns("items", bytes, ITEM_FIELDS)?;
    let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
    Item::from_columns(&cols)
        .map_err(|e| corrupt("items", e))?
        .ok_or_else(|| corrupt("items", "header row"))
}

pub(crate) fn promo(bytes: &[u8]) -> Result<Promo, StateError> {
    let cols = columns("promos", bytes, &PROMO_FIELDS)?;
    let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
    Promo::from_columns(&cols)
        .map_err(|e| corrupt("promos", e))?
        .ok_or_else(|| corrupt("promos", "header row"))
}

/// Mirror of [`MissingKey`]'s serialised form.
#[derive(Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
enum StoredMissing {
    Customer(String),
    Address(String),
    Item(i64),
    Promo(String),
}

/// Mirror of [`PendingSale`]'s serialised form; the sale goes through `decode_sale`.
#[derive(Deserialize)]
struct StoredPending<'a> {
    #[serde(borrow)]
    sale: &'a RawValue,
    arrived_at: i64,
    deadline: i64,
    waiting_on: StoredMissing,
}

pub(crate) fn pending(bytes: &[u8]) -> Result<PendingSale, StateError> {
    let p: StoredPending<'_> = serde_json::from_slice(bytes).map_err(|e| corrupt("pending", e))?;
    Ok(PendingSale {
        sale: decode_sale(p.sale.get().as_bytes()).map_err(|e| corrupt("pending", e))?,
        arrived_at: ProcessingTime::from_millis(p.arrived_at),
        deadline: ProcessingTime::from_millis(p.deadline),
        waiting_on: match p.waiting_on {
            StoredMissing::Customer(id) => MissingKey::Customer(id.as_str().into()),
            StoredMissing::Address(id) => MissingKey::Address(id.as_str().into()),
            StoredMissing::Item(id) => MissingKey::Item(id),
            StoredMissing::Promo(id) => MissingKey::Promo(PromoId::new(id)),
        },
    })
}
