//! Key encodings: byte order equals the logical order.
//!
//! * `i64`: big-endian with the sign bit flipped, so `i64::MIN` is `00..` and `i64::MAX` `ff..`.
//! * strings: a big-endian `u32` length, then the UTF-8 bytes, so an id is never a prefix of
//!   the encoding of a longer id (`"C1"` and `"C10"` differ in their first four bytes). Ids
//!   therefore order by length first; every scan stays within one id, so that is harmless.

use crate::events::SaleKey;
use crate::join::{MissingKey, ProcessingTime};

pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
}

pub(crate) fn get_i64(bytes: &[u8]) -> Option<i64> {
    let raw: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(raw) ^ (1 << 63)) as i64)
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    // Ids are far below 4 GiB (records are at most 1 MiB).
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn get_str(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let len: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(len)).ok()?;
    let s = bytes.get(4..4 + len)?;
    Some((std::str::from_utf8(s).ok()?, &bytes[4 + len..]))
}

/// `id | event_time` for the versioned dimensions.
pub(crate) fn version(id: &str, at: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + id.len() + 8);
    put_str(&mut k, id);
    put_i64(&mut k, at);
    k
}

pub(crate) fn int(id: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(8);
    put_i64(&mut k, id);
    k
}

/// A string id alone (the `promos` key).
pub(crate) fn string(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + id.len());
    put_str(&mut k, id);
    k
}

pub(crate) fn sale(key: SaleKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    put_i64(&mut k, key.order_id);
    put_i64(&mut k, key.item_id);
    k
}

/// The sale key in the last 16 bytes of an index key.
pub(crate) fn sale_suffix(key: &[u8]) -> Option<SaleKey> {
    let tail = key.get(key.len().checked_sub(16)?..)?;
    Some(SaleKey {
        order_id: get_i64(tail)?,
        item_id: get_i64(&tail[8..])?,
    })
}

/// `kind | id`: the prefix of the waiting index for one missing key.
pub(crate) fn missing(on: &MissingKey) -> Vec<u8> {
    let mut k = Vec::new();
    match on {
        MissingKey::Customer(id) => {
            k.push(0);
            put_str(&mut k, id.as_str());
        }
        MissingKey::Address(id) => {
            k.push(1);
            put_str(&mut k, id.as_str());
        }
        MissingKey::Item(id) => {
            k.push(2);
            put_i64(&mut k, *id);
        }
        MissingKey::Promo(id) => {
            k.push(3);
            put_str(&mut k, id.as_str());
        }
    }
    k
}

pub(crate) fn waiting(on: &MissingKey, key: SaleKey) -> Vec<u8> {
    let mut k = missing(on);
    k.extend_from_slice(&sale(key));
    k
}

pub(crate) fn deadline(at: ProcessingTime, key: SaleKey) -> Vec<u8> {
    let mut k = int(at.as_millis());
    k.extend_from_slice(&sale(key));
    k
}

pub(crate) fn offset(stream: &str, shard: &str) -> Vec<u8> {
    let mut k = Vec::new();
    put_str(&mut k, stream);
    put_str(&mut k, shard);
    k
}

pub(crate) const SALE_MIN: SaleKey = SaleKey {
    order_id: i64::MIN,
    item_id: i64::MIN,
};
pub(crate) const SALE_MAX: SaleKey = SaleKey {
    order_id: i64::MAX,
    item_id: i64::MAX,
};
