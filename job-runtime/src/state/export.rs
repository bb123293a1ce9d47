//! Reading the committed state whole, for a savepoint, and the state's identity.
//!
//! [`StateExport`] reads RocksDB directly from another thread. It is meant for a paused engine:
//! the engine has committed and writes nothing until resumed, so one pass over the column
//! families sees exactly one commit (the overlay is empty, and the outbox is not part of a
//! savepoint: the sinks have drained it first).
//!
//! Values are handed out as stored: each is the JSON form of its event type (customer,
//! address, item, promo, pending sale), which the production decoders read back. That is what
//! makes a savepoint logical and portable: it holds events, not RocksDB keys.

use std::collections::BTreeMap;
use std::sync::Arc;

use rocksdb::{DB, ReadOptions};

use super::{Cf, LINEAGE_KEY, RESTORING_KEY, STATE_ID_KEY, StateError, cf_of, keys, values};
use crate::join::PendingSale;

/// The families a savepoint carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Customers,
    Addresses,
    Items,
    Promos,
    Pending,
}

impl Family {
    pub const ALL: [Self; 5] = [
        Self::Customers,
        Self::Addresses,
        Self::Items,
        Self::Promos,
        Self::Pending,
    ];

    const fn cf(self) -> Cf {
        match self {
            Self::Customers => Cf::Customers,
            Self::Addresses => Cf::Addresses,
            Self::Items => Cf::Items,
            Self::Promos => Cf::Promos,
            Self::Pending => Cf::Pending,
        }
    }

    /// The name used in savepoint file names and manifests.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Customers => "customers",
            Self::Addresses => "addresses",
            Self::Items => "items",
            Self::Promos => "promos",
            Self::Pending => "pending",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// Read-only access to the committed state (see the module docs for when it is consistent).
#[derive(Clone)]
pub struct StateExport {
    db: Arc<DB>,
}

impl std::fmt::Debug for StateExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateExport")
            .field("path", &self.db.path())
            .finish()
    }
}

impl StateExport {
    pub(super) fn new(db: Arc<DB>) -> Self {
        Self { db }
    }

    /// Call `f` with every stored value of `family`, in key order; returns how many.
    pub fn for_each<E: From<StateError>>(
        &self,
        family: Family,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let mut opts = ReadOptions::default();
        // A full scan would evict the working set of a running job.
        opts.fill_cache(false);
        let cf = cf_of(&self.db, family.cf())?;
        let mut it = self.db.raw_iterator_cf_opt(cf, opts);
        it.seek_to_first();
        let mut n = 0;
        while let Some(v) = it.value() {
            f(v)?;
            n += 1;
            it.next();
        }
        it.status().map_err(StateError::from)?;
        Ok(n)
    }

    /// Every committed source position: (`stream`, `shard`) -> encoded position.
    pub fn offsets(&self) -> Result<BTreeMap<(String, String), String>, StateError> {
        read_offsets(&self.db)
    }

    pub fn lineage(&self) -> Result<Option<String>, StateError> {
        meta_text(&self.db, LINEAGE_KEY)
    }
}

/// A stored item row (the `items` family's value).
pub fn decode_item(bytes: &[u8]) -> Result<crate::events::Item, StateError> {
    values::item(bytes)
}

/// A stored promo row (the `promos` family's value).
pub fn decode_promo(bytes: &[u8]) -> Result<crate::events::Promo, StateError> {
    values::promo(bytes)
}

/// A stored pending sale (the `pending` family's value) as the join knows it.
pub fn decode_pending(bytes: &[u8]) -> Result<PendingSale, StateError> {
    values::pending(bytes)
}

pub(super) fn read_offsets(db: &DB) -> Result<BTreeMap<(String, String), String>, StateError> {
    let cf = cf_of(db, Cf::Offsets)?;
    let mut out = BTreeMap::new();
    let mut it = db.raw_iterator_cf(cf);
    it.seek_to_first();
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        let bad = |reason: &str| StateError::Corrupt {
            cf: "offsets",
            reason: reason.into(),
        };
        let (stream, rest) = keys::get_str(k).ok_or_else(|| bad("bad key"))?;
        let (shard, _) = keys::get_str(rest).ok_or_else(|| bad("bad key"))?;
        let seq = std::str::from_utf8(v).map_err(|_| bad("sequence is not UTF-8"))?;
        out.insert((stream.to_string(), shard.to_string()), seq.to_string());
        it.next();
    }
    it.status()?;
    Ok(out)
}

pub(super) fn meta_text(db: &DB, key: &[u8]) -> Result<Option<String>, StateError> {
    match db.get_cf(cf_of(db, Cf::Meta)?, key)? {
        None => Ok(None),
        Some(v) => String::from_utf8(v)
            .map(Some)
            .map_err(|_| StateError::Corrupt {
                cf: "meta",
                reason: "a text value is not UTF-8".into(),
            }),
    }
}

/// Which state lineage a state directory holds (see `tributary_crds::job_config::StateConfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Nothing recorded: a state made before identities existed, or a new one.
    Unnamed,
    /// The state of this id, complete.
    Named(String),
    /// A restore or fresh start began here and did not finish: the content is partial.
    Incomplete,
}

pub(super) fn identity(db: &DB) -> Result<Identity, StateError> {
    if meta_text(db, RESTORING_KEY)?.is_some() {
        return Ok(Identity::Incomplete);
    }
    Ok(match meta_text(db, STATE_ID_KEY)? {
        Some(id) => Identity::Named(id),
        None => Identity::Unnamed,
    })
}
