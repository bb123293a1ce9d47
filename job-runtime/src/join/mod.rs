//! The event-time join: sale x bill customer x ship customer x their addresses x item x promo,
//! as pure logic over a [`JoinState`].
//!
//! # Rules
//!
//! * **Versions by event time.** Customers and addresses are versioned by their own datetime.
//!   A sale at time `t` uses, for each customer, the version with the greatest
//!   `customer_datetime <= t`, and for that customer's address the version with the greatest
//!   `address_datetime <= t` (the address *at sale time*, not at customer time). A customer
//!   update that arrives after the sale never changes it (defect 4).
//! * **Reference rows** (item, promo) have no usable event time: the current row is used.
//! * **Waiting.** A sale missing any piece is stored once under its natural key
//!   `(order_id, item_id)` and indexed under the *first* missing piece, checked in the order
//!   bill customer, its address, ship customer, its address, item, promo (the latter only when
//!   `promo_id` is not null). The index is a set of `(missing key, sale key)`, so any number of
//!   sales wait for one key and nothing is overwritten (defects 1-2). When that piece arrives
//!   the sale is re-evaluated, and either emitted or re-indexed under its next missing piece.
//! * **Deadline.** A waiting sale expires at its first arrival + `join.maxWait`
//!   ([`Joiner::expire`], driven by a timer). It is then evaluated one last time with the
//!   fallback below; if something is still missing it goes to dead-letter with the reason of
//!   the first missing piece (`missing_customer`, `missing_address`, `missing_item`,
//!   `missing_promo`), and every state entry of it is removed (defect 3).
//! * **Dimension known only after the sale** (its first version is later than `t`: producer
//!   clock skew, or a sale sent before its customer). The sale waits like a missing piece, so a
//!   version `<= t` arriving within `maxWait` is used as normal. At the deadline the *earliest*
//!   known version is used and the document carries a [`JoinFlag`]
//!   (`bill_customer_after_sale`, ...). Chosen over dead-lettering because the earliest version
//!   is what the customer looked like at the first moment we know of it, the choice is a
//!   function of the stored versions (not of when the timer fired), and the sale is not lost;
//!   the flag makes those documents easy to find. Chosen over using it immediately because
//!   the common cause (a creation record a few seconds late) then still gets the exact version.
//! * **Compaction.** After a version is stored, versions of that id older than
//!   `newest - join.allowedLateness` are removed *except* the greatest one at or before that
//!   horizon, which is the version still valid inside the lateness window; the newest is
//!   therefore always kept. Versions arriving later than the horizon are dropped at once
//!   (counted in [`JoinStats::versions_compacted`]). The retained set depends only on the set of
//!   versions seen, not on their order.
//! * **Ties.** Two versions of one id with the same event time: the one greater in a canonical
//!   order of their content wins, so the survivor does not depend on arrival order.
//!
//! # Determinism
//!
//! Results depend on event time and state only; processing time is passed in (never read from
//! a clock here) and only decides *when* a waiting sale gives up. All iteration is in key order.
//! Hence the same inputs in the same order give byte-identical documents, and a sale whose
//! dimensions all arrived (in any order) before its deadline gets the same document whatever the
//! interleaving. What stays order-dependent is inherent to not holding every sale back:
//! a dimension version arriving *after* a sale was emitted, with an event time before the sale,
//! does not re-emit that sale.
//!
//! # RocksDB mapping
//!
//! Implemented by [`crate::state::RocksState`] (see its docs for the per-batch overlay and
//! commit; compaction there deletes key by key rather than with `delete_range`).
//!
//! Column families and keys (integers big-endian with the sign bit flipped, so byte order is
//! numeric order; strings length-prefixed so a prefix never matches a longer id):
//! `customers`: `id | event_time` -> customer (all versions of an id are read with one seek
//! into a decoded, rendered cache entry that writes keep current, and with none for an id a
//! filter proves unseen; `customer_at` is then a binary search; compaction deletes the older
//! keys),
//! `addresses` likewise, `items`: `item_id` (integer) -> row, `promos`: `promo_id` (string)
//! -> row, `pending`: `order_id | item_id` -> pending sale, `waiting`:
//! `kind | id | order_id | item_id` -> empty (prefix scan, skipped when a counting filter over
//! `kind | id` proves that no sale waits), `deadlines`: `deadline_ms | order_id | item_id` ->
//! empty (iterate up to `now`), and `offsets`: `stream | shard` -> sequence number, all
//! written in one `WriteBatch` per input batch so offsets only move together with the state
//! they produced.

mod memory;
mod state;

#[cfg(test)]
pub(crate) mod tests;

pub use memory::MemoryState;
pub use state::{DeadLetterReason, JoinState, MissingKey, PendingSale, ProcessingTime};

use serde::Serialize;
use tributary_crds::spec::JoinSpec;

use crate::events::{
    Address, Customer, CustomerId, EnrichedCustomer, EnrichedSale, EventTime, Item, JoinFlag,
    Promo, Sale, Shared,
};

/// The join's time settings (from `spec.join`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinRules {
    pub max_wait: std::time::Duration,
    pub allowed_lateness: std::time::Duration,
}

impl From<&JoinSpec> for JoinRules {
    fn from(spec: &JoinSpec) -> Self {
        Self {
            max_wait: spec.max_wait.std(),
            allowed_lateness: spec.allowed_lateness.std(),
        }
    }
}

/// A sale that could not be joined before its deadline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub reason: DeadLetterReason,
    pub missing: MissingKey,
    pub sale: Sale,
    pub arrived_at: ProcessingTime,
    /// The deadline (not the timer's firing time, so the record is reproducible).
    pub expired_at: ProcessingTime,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinOutput {
    Emit(Box<EnrichedSale>),
    DeadLetter(Box<DeadLetter>),
}

/// Counters for metrics (`tributary_join_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JoinStats {
    pub emitted: u64,
    /// Emitted with at least one [`JoinFlag`].
    pub emitted_flagged: u64,
    pub dead_lettered: u64,
    pub versions_compacted: u64,
}

/// The join over a state implementation.
#[derive(Debug)]
pub struct Joiner<S> {
    state: S,
    rules: JoinRules,
    stats: JoinStats,
}

/// `Err(missing)` when a piece is not (yet) available.
type Resolved<T> = Result<T, MissingKey>;

/// What the join found for a sale: its document without the sale itself (which the caller
/// owns and moves in, rather than the join cloning it).
struct Joined {
    item: Shared<Item>,
    bill_customer: EnrichedCustomer,
    ship_customer: EnrichedCustomer,
    promo: Option<Shared<Promo>>,
    join_flags: Vec<JoinFlag>,
}

impl Joined {
    fn with(self, sale: Sale) -> EnrichedSale {
        EnrichedSale {
            sale,
            item: self.item,
            bill_customer: self.bill_customer,
            ship_customer: self.ship_customer,
            promo: self.promo,
            join_flags: self.join_flags,
        }
    }
}

/// Whether a missing "valid at t" version may be replaced by the earliest later one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fallback {
    No,
    EarliestLater,
}

impl<S: JoinState> Joiner<S> {
    pub fn new(state: S, rules: JoinRules) -> Self {
        Self {
            state,
            rules,
            stats: JoinStats::default(),
        }
    }

    pub fn state(&self) -> &S {
        &self.state
    }

    /// For the batch boundary: the runtime commits (or aborts) the state's batch through this.
    pub fn state_mut(&mut self) -> &mut S {
        &mut self.state
    }

    pub fn into_state(self) -> S {
        self.state
    }

    pub fn stats(&self) -> JoinStats {
        self.stats
    }

    /// A sale line arrives at processing time `now`.
    pub fn on_sale(
        &mut self,
        sale: Sale,
        now: ProcessingTime,
    ) -> Result<Vec<JoinOutput>, S::Error> {
        let mut out = Vec::new();
        // A second record for a line still waiting (a producer retry or a correction) replaces
        // it but keeps the first arrival: a line waits at most maxWait in total.
        let previous = self.state.pending(sale.key())?;
        if let Some(p) = &previous {
            self.unregister(p)?;
        }
        match self.resolve(&sale, Fallback::No)? {
            Ok(parts) => self.emit(parts.with(sale), &mut out),
            Err(missing) => {
                let (arrived_at, deadline) = match previous {
                    Some(p) => (p.arrived_at, p.deadline),
                    None => (now, now.saturating_add(self.rules.max_wait)),
                };
                self.register(PendingSale {
                    sale,
                    arrived_at,
                    deadline,
                    waiting_on: missing,
                })?;
            }
        }
        Ok(out)
    }

    /// A waiting sale carried over from a savepoint, possibly written by another replica
    /// than the one now holding it: evaluated against the state as restored (so a sale that
    /// waited on one replica for a version another replica had read is released), then
    /// emitted or waiting again for its first missing piece. Its arrival and deadline are
    /// kept: a restore does not extend how long a sale may wait.
    pub fn restore_pending(&mut self, p: PendingSale) -> Result<Vec<JoinOutput>, S::Error> {
        let mut out = Vec::new();
        if let Some(previous) = self.state.pending(p.sale.key())? {
            self.unregister(&previous)?;
        }
        match self.resolve(&p.sale, Fallback::No)? {
            Ok(parts) => self.emit(parts.with(p.sale), &mut out),
            Err(missing) => self.register(PendingSale {
                waiting_on: missing,
                ..p
            })?,
        }
        Ok(out)
    }

    /// A customer version arrives.
    pub fn on_customer(&mut self, customer: Customer) -> Result<Vec<JoinOutput>, S::Error> {
        let id = customer.customer_id.clone();
        let at = customer.customer_datetime;
        if let Some(existing) = self.state.customer_at(&id, at)?
            && existing.customer_datetime == at
            && !wins(&customer, existing.value())
        {
            return Ok(Vec::new());
        }
        self.state.put_customer(customer)?;
        if let Some(newest) = self.state.customer_at(&id, EventTime::MAX)? {
            let horizon = newest
                .customer_datetime
                .saturating_sub(self.rules.allowed_lateness);
            let dropped = self.state.compact_customer(&id, horizon)?;
            self.stats.versions_compacted += dropped as u64;
        }
        self.reevaluate(&MissingKey::Customer(id))
    }

    /// An address version arrives.
    pub fn on_address(&mut self, address: Address) -> Result<Vec<JoinOutput>, S::Error> {
        let id = address.address_id.clone();
        let at = address.address_datetime;
        if let Some(existing) = self.state.address_at(&id, at)?
            && existing.address_datetime == at
            && !wins(&address, existing.value())
        {
            return Ok(Vec::new());
        }
        self.state.put_address(address)?;
        if let Some(newest) = self.state.address_at(&id, EventTime::MAX)? {
            let horizon = newest
                .address_datetime
                .saturating_sub(self.rules.allowed_lateness);
            let dropped = self.state.compact_address(&id, horizon)?;
            self.stats.versions_compacted += dropped as u64;
        }
        self.reevaluate(&MissingKey::Address(id))
    }

    /// An item row is loaded (or reloaded) from the reference files.
    pub fn on_item(&mut self, item: Item) -> Result<Vec<JoinOutput>, S::Error> {
        let key = MissingKey::Item(item.item_id);
        self.state.put_item(item)?;
        self.reevaluate(&key)
    }

    /// A promo row is loaded (or reloaded) from the reference files.
    pub fn on_promo(&mut self, promo: Promo) -> Result<Vec<JoinOutput>, S::Error> {
        let key = MissingKey::Promo(promo.promo_id.clone());
        self.state.put_promo(promo)?;
        self.reevaluate(&key)
    }

    /// Timer: every sale whose deadline is `<= now` is joined with the fallback or
    /// dead-lettered, in (deadline, key) order.
    pub fn expire(&mut self, now: ProcessingTime) -> Result<Vec<JoinOutput>, S::Error> {
        let mut out = Vec::new();
        for (deadline, key) in self.state.due(now)? {
            let pending = self.state.pending(key)?;
            let Some(p) = pending.filter(|p| p.deadline == deadline) else {
                // An index entry without its sale cannot be produced by this module; drop it
                // rather than let it fire forever.
                self.state.remove_deadline(deadline, key)?;
                continue;
            };
            self.unregister(&p)?;
            match self.resolve(&p.sale, Fallback::EarliestLater)? {
                Ok(parts) => self.emit(parts.with(p.sale), &mut out),
                Err(missing) => {
                    self.stats.dead_lettered += 1;
                    out.push(JoinOutput::DeadLetter(Box::new(DeadLetter {
                        reason: missing.reason(),
                        missing,
                        sale: p.sale,
                        arrived_at: p.arrived_at,
                        expired_at: p.deadline,
                    })));
                }
            }
        }
        Ok(out)
    }

    fn emit(&mut self, doc: EnrichedSale, out: &mut Vec<JoinOutput>) {
        self.stats.emitted += 1;
        if !doc.join_flags.is_empty() {
            self.stats.emitted_flagged += 1;
        }
        out.push(JoinOutput::Emit(Box::new(doc)));
    }

    fn register(&mut self, p: PendingSale) -> Result<(), S::Error> {
        let key = p.sale.key();
        self.state.add_waiting(&p.waiting_on, key)?;
        self.state.add_deadline(p.deadline, key)?;
        self.state.put_pending(p)
    }

    fn unregister(&mut self, p: &PendingSale) -> Result<(), S::Error> {
        let key = p.sale.key();
        self.state.remove_waiting(&p.waiting_on, key)?;
        self.state.remove_deadline(p.deadline, key)?;
        self.state.remove_pending(key)
    }

    /// Re-evaluate the sales waiting for `on`, in key order.
    fn reevaluate(&mut self, on: &MissingKey) -> Result<Vec<JoinOutput>, S::Error> {
        let mut out = Vec::new();
        for key in self.state.waiting_on(on)? {
            let Some(p) = self.state.pending(key)? else {
                self.state.remove_waiting(on, key)?;
                continue;
            };
            match self.resolve(&p.sale, Fallback::No)? {
                Ok(parts) => {
                    self.unregister(&p)?;
                    self.emit(parts.with(p.sale), &mut out);
                }
                Err(missing) if missing == p.waiting_on => {}
                Err(missing) => {
                    self.unregister(&p)?;
                    self.register(PendingSale {
                        waiting_on: missing,
                        ..p
                    })?;
                }
            }
        }
        Ok(out)
    }

    /// Everything the sale's document needs besides the sale, or the first missing piece.
    fn resolve(&self, sale: &Sale, fallback: Fallback) -> Result<Resolved<Joined>, S::Error> {
        let t = sale.sale_datetime;
        let mut flags = Vec::new();
        let bill = match self.enriched_customer(
            &sale.bill_customer_id,
            t,
            fallback,
            [
                JoinFlag::BillCustomerAfterSale,
                JoinFlag::BillAddressAfterSale,
            ],
            &mut flags,
        )? {
            Ok(c) => c,
            Err(m) => return Ok(Err(m)),
        };
        let ship = match self.enriched_customer(
            &sale.ship_customer_id,
            t,
            fallback,
            [
                JoinFlag::ShipCustomerAfterSale,
                JoinFlag::ShipAddressAfterSale,
            ],
            &mut flags,
        )? {
            Ok(c) => c,
            Err(m) => return Ok(Err(m)),
        };
        let Some(item) = self.state.item(sale.item_id)? else {
            return Ok(Err(MissingKey::Item(sale.item_id)));
        };
        let promo = match &sale.promo_id {
            None => None,
            Some(id) => match self.state.promo(id)? {
                Some(p) => Some(p),
                None => return Ok(Err(MissingKey::Promo(id.clone()))),
            },
        };
        Ok(Ok(Joined {
            item,
            bill_customer: bill,
            ship_customer: ship,
            promo,
            join_flags: flags,
        }))
    }

    /// The customer version valid at `t` with its address valid at `t`.
    fn enriched_customer(
        &self,
        id: &CustomerId,
        t: EventTime,
        fallback: Fallback,
        [customer_flag, address_flag]: [JoinFlag; 2],
        flags: &mut Vec<JoinFlag>,
    ) -> Result<Resolved<EnrichedCustomer>, S::Error> {
        let customer = match self.state.customer_at(id, t)? {
            Some(c) => c,
            None => match (fallback, self.state.first_customer(id)?) {
                (Fallback::EarliestLater, Some(c)) => {
                    flags.push(customer_flag);
                    c
                }
                _ => return Ok(Err(MissingKey::Customer(id.clone()))),
            },
        };
        let address = match &customer.address_id {
            None => None,
            Some(aid) => match self.state.address_at(aid, t)? {
                Some(a) => Some(a),
                None => match (fallback, self.state.first_address(aid)?) {
                    (Fallback::EarliestLater, Some(a)) => {
                        flags.push(address_flag);
                        Some(a)
                    }
                    _ => return Ok(Err(MissingKey::Address(aid.clone()))),
                },
            },
        };
        Ok(Ok(EnrichedCustomer { customer, address }))
    }
}

/// Tie-break between two versions with the same id and event time: a total order on content
/// (the derived `Debug` text covers every field), so the survivor is independent of arrival.
fn wins<T: std::fmt::Debug>(candidate: &T, existing: &T) -> bool {
    format!("{candidate:?}") > format!("{existing:?}")
}
