//! [`JoinState`] in ordered in-memory maps: for unit tests (and a reference the RocksDB
//! implementation is checked against). Ordered maps only, so iteration order is deterministic.

use std::collections::{BTreeMap, BTreeSet};

use super::state::{JoinState, MissingKey, PendingSale, ProcessingTime};
use crate::events::{
    Address, AddressId, Customer, CustomerId, EventTime, Item, ItemId, Promo, PromoId, SaleKey,
    Shared,
};

/// The only failure: rendering a row whose event time is outside the calendar.
type Error = serde_json::Error;

type Versions<K, V> = BTreeMap<K, BTreeMap<EventTime, V>>;

#[derive(Debug, Default, Clone)]
pub struct MemoryState {
    customers: Versions<CustomerId, Shared<Customer>>,
    addresses: Versions<AddressId, Shared<Address>>,
    items: BTreeMap<ItemId, Shared<Item>>,
    promos: BTreeMap<PromoId, Shared<Promo>>,
    pending: BTreeMap<SaleKey, PendingSale>,
    waiting: BTreeSet<(MissingKey, SaleKey)>,
    deadlines: BTreeSet<(ProcessingTime, SaleKey)>,
}

const KEY_MIN: SaleKey = SaleKey {
    order_id: i64::MIN,
    item_id: i64::MIN,
};
const KEY_MAX: SaleKey = SaleKey {
    order_id: i64::MAX,
    item_id: i64::MAX,
};

fn at<K: Ord, V: Clone>(m: &Versions<K, V>, id: &K, t: EventTime) -> Option<V> {
    m.get(id)?.range(..=t).next_back().map(|(_, v)| v.clone())
}

fn first<K: Ord, V: Clone>(m: &Versions<K, V>, id: &K) -> Option<V> {
    m.get(id)?.values().next().cloned()
}

fn compact<K: Ord, V>(m: &mut Versions<K, V>, id: &K, horizon: EventTime) -> usize {
    let Some(versions) = m.get_mut(id) else {
        return 0;
    };
    let Some(&valid_at_horizon) = versions.range(..=horizon).next_back().map(|(t, _)| t) else {
        return 0;
    };
    let kept = versions.split_off(&valid_at_horizon);
    let dropped = versions.len();
    *versions = kept;
    dropped
}

impl MemoryState {
    /// Event times of the stored versions of a customer, ascending (for tests).
    pub fn customer_versions(&self, id: &CustomerId) -> Vec<EventTime> {
        self.customers
            .get(id)
            .map(|v| v.keys().copied().collect())
            .unwrap_or_default()
    }

    /// (pending sales, waiting index entries, deadline index entries): all zero when nothing
    /// waits, which is how tests prove the state does not leak (defect 3).
    pub fn pending_counts(&self) -> (usize, usize, usize) {
        (self.pending.len(), self.waiting.len(), self.deadlines.len())
    }
}

impl JoinState for MemoryState {
    type Error = Error;

    fn put_customer(&mut self, c: Customer) -> Result<(), Error> {
        self.customers
            .entry(c.customer_id.clone())
            .or_default()
            .insert(c.customer_datetime, Shared::new(c)?);
        Ok(())
    }
    fn customer_at(
        &self,
        id: &CustomerId,
        t: EventTime,
    ) -> Result<Option<Shared<Customer>>, Error> {
        Ok(at(&self.customers, id, t))
    }
    fn first_customer(&self, id: &CustomerId) -> Result<Option<Shared<Customer>>, Error> {
        Ok(first(&self.customers, id))
    }
    fn compact_customer(&mut self, id: &CustomerId, h: EventTime) -> Result<usize, Error> {
        Ok(compact(&mut self.customers, id, h))
    }

    fn put_address(&mut self, a: Address) -> Result<(), Error> {
        self.addresses
            .entry(a.address_id.clone())
            .or_default()
            .insert(a.address_datetime, Shared::new(a)?);
        Ok(())
    }
    fn address_at(&self, id: &AddressId, t: EventTime) -> Result<Option<Shared<Address>>, Error> {
        Ok(at(&self.addresses, id, t))
    }
    fn first_address(&self, id: &AddressId) -> Result<Option<Shared<Address>>, Error> {
        Ok(first(&self.addresses, id))
    }
    fn compact_address(&mut self, id: &AddressId, h: EventTime) -> Result<usize, Error> {
        Ok(compact(&mut self.addresses, id, h))
    }

    fn put_item(&mut self, item: Item) -> Result<(), Error> {
        self.items.insert(item.item_id, Shared::new(item)?);
        Ok(())
    }
    fn item(&self, id: ItemId) -> Result<Option<Shared<Item>>, Error> {
        Ok(self.items.get(&id).cloned())
    }
    fn put_promo(&mut self, promo: Promo) -> Result<(), Error> {
        self.promos
            .insert(promo.promo_id.clone(), Shared::new(promo)?);
        Ok(())
    }
    fn promo(&self, id: &PromoId) -> Result<Option<Shared<Promo>>, Error> {
        Ok(self.promos.get(id).cloned())
    }

    fn pending(&self, key: SaleKey) -> Result<Option<PendingSale>, Error> {
        Ok(self.pending.get(&key).cloned())
    }
    fn put_pending(&mut self, p: PendingSale) -> Result<(), Error> {
        self.pending.insert(p.sale.key(), p);
        Ok(())
    }
    fn remove_pending(&mut self, key: SaleKey) -> Result<(), Error> {
        self.pending.remove(&key);
        Ok(())
    }

    fn add_waiting(&mut self, on: &MissingKey, key: SaleKey) -> Result<(), Error> {
        self.waiting.insert((on.clone(), key));
        Ok(())
    }
    fn remove_waiting(&mut self, on: &MissingKey, key: SaleKey) -> Result<(), Error> {
        self.waiting.remove(&(on.clone(), key));
        Ok(())
    }
    fn waiting_on(&self, on: &MissingKey) -> Result<Vec<SaleKey>, Error> {
        Ok(self
            .waiting
            .range((on.clone(), KEY_MIN)..=(on.clone(), KEY_MAX))
            .map(|(_, k)| *k)
            .collect())
    }

    fn add_deadline(&mut self, at: ProcessingTime, key: SaleKey) -> Result<(), Error> {
        self.deadlines.insert((at, key));
        Ok(())
    }
    fn remove_deadline(&mut self, at: ProcessingTime, key: SaleKey) -> Result<(), Error> {
        self.deadlines.remove(&(at, key));
        Ok(())
    }
    fn due(&self, now: ProcessingTime) -> Result<Vec<(ProcessingTime, SaleKey)>, Error> {
        Ok(self.deadlines.range(..=(now, KEY_MAX)).copied().collect())
    }
}
