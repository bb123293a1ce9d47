//! The versioned dimensions (customers, addresses) of [`RocksState`]: reads through the
//! version cache, writes to the overlay *and* the cache.
//!
//! The cache entry of an id is the **current** view of it: every committed version with the
//! batch's own writes applied. A write updates a cached entry in place (the row is rendered
//! once, and its rendered JSON is the stored value: the same bytes `values::encode` gives);
//! an id that is not cached is loaded on its next read, from RocksDB merged with the overlay.
//! A commit therefore leaves the cache valid as it is, and an abort (the only way overlay
//! writes disappear) clears it. Reads and compaction of a cached id touch no RocksDB iterator.
//!
//! An id that is not cached is looked up in the type's id filter ([`super::filter`]) first:
//! the first version of every customer and address reads the id's versions before storing it,
//! and for an id never seen that read would open an iterator to find nothing. A write sets
//! the id's bit before it reaches the overlay, and [`RocksState::open`] sets the bits of every
//! stored id, so a clear bit proves the id has no version, committed or in the overlay (none
//! is ever deleted down to zero: compaction keeps the newest). Bits are never cleared: an
//! aborted write leaves its bit set, a false positive that only costs the seek.

use std::cell::RefCell;
use std::sync::Arc;

use super::cache::{self, VersionCache, Versions};
use super::filter::{self, BitFilter};
use super::{Cf, RocksState, StateError, keys, values};
use crate::events::{Address, Customer, EventTime, Render, Shared};

/// A row type stored by `(id, event time)`.
pub(super) trait Versioned: Render + Sized {
    const CF: Cf;
    fn cache(state: &RocksState) -> &RefCell<VersionCache<Shared<Self>>>;
    /// The ids that may have versions.
    fn ids(state: &RocksState) -> &BitFilter;
    fn ids_mut(state: &mut RocksState) -> &mut BitFilter;
    fn decode(bytes: &[u8]) -> Result<Shared<Self>, StateError>;
    fn id(&self) -> &str;
    fn time(&self) -> EventTime;
}

impl Versioned for Customer {
    const CF: Cf = Cf::Customers;
    fn cache(state: &RocksState) -> &RefCell<VersionCache<Shared<Self>>> {
        &state.customers
    }
    fn ids(state: &RocksState) -> &BitFilter {
        &state.customer_ids
    }
    fn ids_mut(state: &mut RocksState) -> &mut BitFilter {
        &mut state.customer_ids
    }
    fn decode(bytes: &[u8]) -> Result<Shared<Self>, StateError> {
        values::shared_customer(bytes)
    }
    fn id(&self) -> &str {
        self.customer_id.as_str()
    }
    fn time(&self) -> EventTime {
        self.customer_datetime
    }
}

impl Versioned for Address {
    const CF: Cf = Cf::Addresses;
    fn cache(state: &RocksState) -> &RefCell<VersionCache<Shared<Self>>> {
        &state.addresses
    }
    fn ids(state: &RocksState) -> &BitFilter {
        &state.address_ids
    }
    fn ids_mut(state: &mut RocksState) -> &mut BitFilter {
        &mut state.address_ids
    }
    fn decode(bytes: &[u8]) -> Result<Shared<Self>, StateError> {
        values::shared_address(bytes)
    }
    fn id(&self) -> &str {
        self.address_id.as_str()
    }
    fn time(&self) -> EventTime {
        self.address_datetime
    }
}

/// The id filters' hash of an id.
pub(super) fn id_hash(id: &str) -> u64 {
    filter::bytes_hash(id.as_bytes())
}

fn key_time(cf: Cf, key: &[u8]) -> Result<i64, StateError> {
    key.len()
        .checked_sub(8)
        .and_then(|i| keys::get_i64(&key[i..]))
        .ok_or_else(|| StateError::Corrupt {
            cf: cf.name(),
            reason: "version key without a time".into(),
        })
}

impl RocksState {
    /// Every version of `id` (committed, with the overlay applied), ascending by time.
    pub(super) fn versions<T: Versioned>(
        &self,
        id: &str,
    ) -> Result<Versions<Shared<T>>, StateError> {
        if let Some(v) = T::cache(self).borrow().get(id) {
            return Ok(v);
        }
        // Cached either way (an empty entry too): the id's next write updates it in place.
        let versions = if T::ids(self).may_contain(id_hash(id)) {
            Arc::new(self.load_versions::<T>(id)?)
        } else {
            Arc::new(Vec::new())
        };
        T::cache(self)
            .borrow_mut()
            .insert(id, Arc::clone(&versions));
        Ok(versions)
    }

    /// RocksDB's versions of `id` merged with the overlay's writes for it.
    fn load_versions<T: Versioned>(&self, id: &str) -> Result<Vec<(i64, Shared<T>)>, StateError> {
        let lo = keys::version(id, i64::MIN);
        let hi = keys::version(id, i64::MAX);
        let overlay = &self.overlay[T::CF as usize];
        let mut merged = std::collections::BTreeMap::new();
        let mut it = self.db.raw_iterator_cf(self.cf(T::CF)?);
        it.seek(&lo);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if k > hi.as_slice() {
                break;
            }
            if !overlay.contains_key(k) {
                merged.insert(key_time(T::CF, k)?, T::decode(v)?);
            }
            it.next();
        }
        it.status()?;
        for (k, v) in overlay.range(lo..=hi) {
            if let Some(v) = v {
                merged.insert(key_time(T::CF, k)?, T::decode(v)?);
            }
        }
        Ok(merged.into_iter().collect())
    }

    /// The version valid at `at` (the greatest time `<= at`).
    pub(super) fn version_at<T: Versioned>(
        &self,
        id: &str,
        at: EventTime,
    ) -> Result<Option<Shared<T>>, StateError> {
        Ok(cache::at(&self.versions::<T>(id)?, at.as_micros()).cloned())
    }

    pub(super) fn first_version<T: Versioned>(
        &self,
        id: &str,
    ) -> Result<Option<Shared<T>>, StateError> {
        Ok(self.versions::<T>(id)?.first().map(|(_, v)| v.clone()))
    }

    /// Store a version, replacing one of the same id and time.
    pub(super) fn put_version<T: Versioned>(&mut self, row: T) -> Result<(), StateError> {
        let row = Shared::new(row).map_err(StateError::Encode)?;
        let at = row.time().as_micros();
        let key = keys::version(row.id(), at);
        // Before the write: in write-through tests it is committed at once.
        T::ids_mut(self).insert(id_hash(row.id()));
        self.put(T::CF, key, row.json().to_vec())?;
        let mut cache = T::cache(self).borrow_mut();
        if let Some(versions) = cache.get_mut(row.id()) {
            let versions = Arc::make_mut(versions);
            match versions.binary_search_by_key(&at, |(t, _)| *t) {
                Ok(i) => versions[i].1 = row,
                Err(i) => versions.insert(i, (at, row)),
            }
        }
        Ok(())
    }

    /// Remove every version of `id` older than the greatest one `<= horizon` (which stays).
    pub(super) fn compact_versions<T: Versioned>(
        &mut self,
        id: &str,
        horizon: EventTime,
    ) -> Result<usize, StateError> {
        let versions = self.versions::<T>(id)?;
        let dropped = versions
            .partition_point(|(t, _)| *t <= horizon.as_micros())
            .saturating_sub(1);
        if dropped == 0 {
            return Ok(0);
        }
        for (t, _) in &versions[..dropped] {
            self.delete(T::CF, keys::version(id, *t))?;
        }
        drop(versions);
        if let Some(versions) = T::cache(self).borrow_mut().get_mut(id) {
            Arc::make_mut(versions).drain(..dropped);
        }
        Ok(dropped)
    }
}
