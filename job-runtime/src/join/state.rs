//! The state the join reads and writes, as a trait: the in-memory implementation
//! ([`super::MemoryState`]) backs the unit tests, the RocksDB one the job.
//!
//! Every method is a point read, a seek, a prefix scan or a small write, so each maps to one
//! RocksDB operation (see the module docs of [`super`] for the intended key encodings).
//! Iterations return keys in ascending order: the join's outputs are ordered by them, which is
//! part of what makes a replay byte-identical.

use serde::Serialize;

use crate::events::{
    Address, AddressId, Customer, CustomerId, EventTime, Item, ItemId, Promo, PromoId, Sale,
    SaleKey, Shared,
};

/// Processing (wall-clock) time in milliseconds since the Unix epoch. Only wait deadlines use
/// it; the join's *results* depend on event time alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ProcessingTime(i64);

impl ProcessingTime {
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    pub fn saturating_add(self, d: std::time::Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }
}

/// What a waiting sale needs next: the key it is indexed under until that piece arrives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum MissingKey {
    /// No version of this customer valid at the sale's time (none at all, or only later ones).
    Customer(CustomerId),
    /// Same for the address of a bill or ship customer.
    Address(AddressId),
    Item(ItemId),
    Promo(PromoId),
}

/// Why a sale went to dead-letter: a bounded label for metrics and dead-letter records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    MissingCustomer,
    MissingAddress,
    MissingItem,
    MissingPromo,
}

impl DeadLetterReason {
    pub const ALL: [Self; 4] = [
        Self::MissingCustomer,
        Self::MissingAddress,
        Self::MissingItem,
        Self::MissingPromo,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingCustomer => "missing_customer",
            Self::MissingAddress => "missing_address",
            Self::MissingItem => "missing_item",
            Self::MissingPromo => "missing_promo",
        }
    }
}

impl MissingKey {
    pub const fn reason(&self) -> DeadLetterReason {
        match self {
            Self::Customer(_) => DeadLetterReason::MissingCustomer,
            Self::Address(_) => DeadLetterReason::MissingAddress,
            Self::Item(_) => DeadLetterReason::MissingItem,
            Self::Promo(_) => DeadLetterReason::MissingPromo,
        }
    }
}

/// A sale waiting for a missing piece.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PendingSale {
    pub sale: Sale,
    /// When the sale line first arrived.
    pub arrived_at: ProcessingTime,
    /// `arrived_at + join.maxWait`: then it is joined with what is known, or dead-lettered.
    pub deadline: ProcessingTime,
    pub waiting_on: MissingKey,
}

/// Storage primitives of the join. Contracts are stated per method; the join logic
/// ([`super::Joiner`]) decides what to call. Rows are handed out as [`Shared`] (rendered once,
/// reference-counted): an implementation keeps them that way rather than rebuilding a row
/// per read.
pub trait JoinState {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Store a customer version under (id, `customer_datetime`), replacing one with the same
    /// id and event time.
    fn put_customer(&mut self, customer: Customer) -> Result<(), Self::Error>;
    /// The version with the greatest event time `<= at`.
    fn customer_at(
        &self,
        id: &CustomerId,
        at: EventTime,
    ) -> Result<Option<Shared<Customer>>, Self::Error>;
    /// The version with the smallest event time.
    fn first_customer(&self, id: &CustomerId) -> Result<Option<Shared<Customer>>, Self::Error>;
    /// Remove every version strictly older than the greatest version `<= horizon` (that one
    /// stays: it is the version valid at the horizon). Returns how many were removed.
    fn compact_customer(
        &mut self,
        id: &CustomerId,
        horizon: EventTime,
    ) -> Result<usize, Self::Error>;

    /// As [`JoinState::put_customer`], for addresses.
    fn put_address(&mut self, address: Address) -> Result<(), Self::Error>;
    fn address_at(
        &self,
        id: &AddressId,
        at: EventTime,
    ) -> Result<Option<Shared<Address>>, Self::Error>;
    fn first_address(&self, id: &AddressId) -> Result<Option<Shared<Address>>, Self::Error>;
    fn compact_address(&mut self, id: &AddressId, horizon: EventTime)
    -> Result<usize, Self::Error>;

    /// Reference rows: current state, the latest put wins.
    fn put_item(&mut self, item: Item) -> Result<(), Self::Error>;
    fn item(&self, id: ItemId) -> Result<Option<Shared<Item>>, Self::Error>;
    fn put_promo(&mut self, promo: Promo) -> Result<(), Self::Error>;
    fn promo(&self, id: &PromoId) -> Result<Option<Shared<Promo>>, Self::Error>;

    fn pending(&self, key: SaleKey) -> Result<Option<PendingSale>, Self::Error>;
    /// Insert or replace the pending sale under its key.
    fn put_pending(&mut self, pending: PendingSale) -> Result<(), Self::Error>;
    fn remove_pending(&mut self, key: SaleKey) -> Result<(), Self::Error>;

    /// Index: sale `key` waits for `on`. Many sales may wait for one key.
    fn add_waiting(&mut self, on: &MissingKey, key: SaleKey) -> Result<(), Self::Error>;
    fn remove_waiting(&mut self, on: &MissingKey, key: SaleKey) -> Result<(), Self::Error>;
    /// The sales waiting for `on`, ascending by key.
    fn waiting_on(&self, on: &MissingKey) -> Result<Vec<SaleKey>, Self::Error>;

    /// Index: sale `key` expires at `at`.
    fn add_deadline(&mut self, at: ProcessingTime, key: SaleKey) -> Result<(), Self::Error>;
    fn remove_deadline(&mut self, at: ProcessingTime, key: SaleKey) -> Result<(), Self::Error>;
    /// Deadlines `<= now`, ascending by (deadline, key).
    fn due(&self, now: ProcessingTime) -> Result<Vec<(ProcessingTime, SaleKey)>, Self::Error>;
}
