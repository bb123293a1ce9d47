//! [`JoinState`] in RocksDB, following the mapping in the [`crate::join`] module docs.
//!
//! # Batches
//!
//! The join mutates state through many small calls per input batch. They are not written to
//! RocksDB one by one: they go to an in-memory **overlay** (one ordered map per column family
//! of pending puts and deletes) that every read consults before the database, so reads inside
//! a batch see the batch's own writes. [`RocksState::commit`] turns the overlay *and* the
//! source offsets (`stream`, `shard` -> sequence number) into one `WriteBatch` and writes it
//! atomically, so offsets move only together with the state they produced. The batch's
//! outputs are appended to the outbox's segment files first and made committed by the same
//! `WriteBatch` ([`outbox`]).
//! [`RocksState::abort`] (or dropping the state, e.g. a crash) discards the overlay: on
//! restart the state and [`RocksState::offsets`] are those of the last commit, and the
//! sources resume from there.
//!
//! Commits use RocksDB's write-ahead log without an fsync per batch: a process crash loses
//! nothing committed; a machine crash may lose the last batches, but always whole batches
//! with their offsets (the WAL replays a consistent prefix), so the sources replay them.
//!
//! # Filters
//!
//! Three reads of the join almost always find nothing: whether a sale line is already pending,
//! which sales wait for a dimension or reference key that just arrived, and the versions of a
//! customer or address id seen for the first time. In-memory filters (module `filter`) prove
//! most of those absences without a RocksDB look-up or iterator. Writes keep them current
//! (overlay included), an abort reloads the counting ones, and [`RocksState::open`] builds them
//! with one key scan of `pending`, `waiting`, `customers` and `addresses` (so opening takes
//! time in proportion to the stored keys).
//!
//! # Compaction
//!
//! Version compaction deletes the dropped versions key by key (it counts them anyway, and a
//! per-key delete fits the overlay); a `delete_range` would save little for the handful of
//! versions one id keeps within `allowedLateness`.
//!
//! # Options
//!
//! Deliberately minimal: LZ4 compression for every column family (values are JSON), one
//! shared LRU block cache of [`BLOCK_CACHE_BYTES`], one memtable budget of [`MEMTABLE_BYTES`]
//! for all families, bloom filters for point lookups. Everything else is RocksDB's default.

mod cache;
pub mod export;
mod filter;
mod keys;
mod outbox;
mod values;
mod versions;
pub mod volume;

use outbox::OutboxLog;
pub use outbox::{OutboxReader, SEGMENT_BYTES, SinkCursor};

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Options,
    ReadOptions, WriteBatch,
};

use crate::events::{
    Address, AddressId, Customer, CustomerId, EventTime, Item, ItemId, Promo, PromoId, SaleKey,
    Shared,
};
use crate::join::{JoinState, MissingKey, PendingSale, ProcessingTime};

/// The on-disk layout this binary writes. Bump on any incompatible change of keys or values.
/// 2: the outbox moved from a column family to segment files ([`outbox`]).
/// 3: promo ids are text: the `promos` key and the `waiting` index's promo keys are
/// length-prefixed strings (were integers), and stored promos and sales hold them as strings.
pub const LAYOUT_VERSION: u32 = 3;
/// Memtable memory of all column families together.
pub const MEMTABLE_BYTES: usize = 64 * 1024 * 1024;
/// The block cache shared by all column families.
pub const BLOCK_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// A batch's outputs are written to their segment once this many bytes wait, rather than all
/// at commit: the buffer stays in the CPU cache (a commit holds tens of megabytes of documents),
/// and the commit has less to write.
const WRITE_BEHIND_BYTES: usize = 256 * 1024;
const LAYOUT_KEY: &[u8] = b"layout_version";
const LINEAGE_KEY: &[u8] = b"lineage";
/// The id of the state lineage held here (`StateConfig::id`), once complete.
const STATE_ID_KEY: &[u8] = b"state_id";
/// Set while a restore or fresh start fills this state; removed with the id recorded.
const RESTORING_KEY: &[u8] = b"restoring";
/// The savepoint this state was restored from.
const RESTORED_FROM_KEY: &[u8] = b"restored_from";
const OUTBOX_HEAD_KEY: &[u8] = b"outbox_head";
/// The outbox's segment files, inside the state directory.
pub const OUTBOX_DIR: &str = "outbox";

/// Column families, in [`Cf`] order.
const CF_NAMES: [&str; 10] = [
    "customers",
    "addresses",
    "items",
    "promos",
    "pending",
    "waiting",
    "deadlines",
    "offsets",
    "meta",
    "sinks",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cf {
    Customers,
    Addresses,
    Items,
    Promos,
    Pending,
    Waiting,
    Deadlines,
    Offsets,
    Meta,
    Sinks,
}

impl Cf {
    const fn name(self) -> &'static str {
        CF_NAMES[self as usize]
    }
}

/// Errors of the RocksDB state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error(
        "state layout version {found} is newer than this binary supports ({supported}); \
         run a newer binary or start from an empty state directory"
    )]
    NewerLayout { found: u32, supported: u32 },
    #[error("state layout version {0} is not supported (this binary reads {LAYOUT_VERSION})")]
    UnsupportedLayout(u32),
    #[error("column family `{0}` is missing")]
    MissingColumnFamily(&'static str),
    #[error("encoding a value: {0}")]
    Encode(serde_json::Error),
    #[error("outbox segment {path}: {source}")]
    Outbox {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt entry in `{cf}`: {reason}")]
    Corrupt { cf: &'static str, reason: String },
}

/// Pending writes of the current batch: `Some(value)` = put, `None` = delete.
type Overlay = [BTreeMap<Vec<u8>, Option<Vec<u8>>>; 10];

/// [`JoinState`] over RocksDB with per-batch atomic commits.
pub struct RocksState {
    db: Arc<DB>,
    overlay: Overlay,
    /// The outbox's segment files.
    outbox: Arc<OutboxLog>,
    /// Outputs of the current batch not written to their segment yet, in order, back to back,
    /// each with its segment entry header. Written behind once [`WRITE_BEHIND_BYTES`] wait
    /// (so the buffer stays small and in cache; its capacity is kept from batch to batch: no
    /// allocation per output), the rest at commit. They get outbox sequence numbers
    /// `outbox_committed..` at commit.
    outbox_pending: Vec<u8>,
    /// The current batch's segment writes, from its first write behind until commit or abort.
    outbox_batch: Option<outbox::Batch>,
    /// Bytes of the current batch's outputs already written to the segment.
    outbox_written: usize,
    /// Where each output of the current batch starts in the batch's bytes (written, then
    /// pending).
    outbox_starts: Vec<usize>,
    /// The next outbox sequence number after the last commit.
    outbox_committed: u64,
    /// Decoded, rendered rows (see [`cache`]; the versions' entries are kept current by
    /// [`versions`]).
    customers: RefCell<cache::VersionCache<Shared<Customer>>>,
    addresses: RefCell<cache::VersionCache<Shared<Address>>>,
    /// Which sale lines may be pending, overlay included ([`filter`]).
    pending_filter: filter::CountingFilter,
    /// Which missing keys may have sales waiting for them, overlay included ([`filter`]).
    waiting_filter: filter::CountingFilter,
    /// Which customer / address ids may have versions, overlay included (see [`filter`] and
    /// [`versions`]).
    customer_ids: filter::BitFilter,
    address_ids: filter::BitFilter,
    items: RefCell<cache::RowCache<ItemId, Shared<Item>>>,
    promos: RefCell<cache::RowCache<PromoId, Shared<Promo>>>,
    /// Tests only: commit after every write, so that reads are served by RocksDB.
    #[cfg(test)]
    write_through: bool,
    /// Tests only: the directory of [`RocksState::temporary`], removed after `db` is closed
    /// (fields drop in declaration order).
    #[cfg(test)]
    _temp_dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for RocksState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksState")
            .field("path", &self.db.path())
            .field(
                "uncommitted",
                &self.overlay.iter().map(BTreeMap::len).sum::<usize>(),
            )
            .finish()
    }
}

fn cf_options(cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Point lookups of absent keys (a sale not waiting yet) skip the data blocks.
    table.set_bloom_filter(10.0, false);
    let mut opts = Options::default();
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.set_block_based_table_factory(&table);
    opts
}

/// Check the stored layout version (and store ours in a new state).
fn check_layout(db: &DB) -> Result<(), StateError> {
    let meta = cf_of(db, Cf::Meta)?;
    match db.get_cf(meta, LAYOUT_KEY)? {
        None => {
            // A new state, unless it has data of an older layout that did not record its
            // version (none did).
            db.put_cf(meta, LAYOUT_KEY, LAYOUT_VERSION.to_be_bytes())?;
            Ok(())
        }
        Some(v) => {
            let found = <[u8; 4]>::try_from(v.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| StateError::Corrupt {
                    cf: "meta",
                    reason: "layout version is not 4 bytes".into(),
                })?;
            match found {
                LAYOUT_VERSION => Ok(()),
                f if f > LAYOUT_VERSION => Err(StateError::NewerLayout {
                    found: f,
                    supported: LAYOUT_VERSION,
                }),
                f => Err(StateError::UnsupportedLayout(f)),
            }
        }
    }
}

fn cf_of(db: &DB, cf: Cf) -> Result<&ColumnFamily, StateError> {
    db.cf_handle(cf.name())
        .ok_or(StateError::MissingColumnFamily(cf.name()))
}

impl RocksState {
    /// Open (or create) the state at `path`. Refuses a layout newer than [`LAYOUT_VERSION`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StateError> {
        let path = path.as_ref();
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut db_opts = cf_options(&cache);
        db_opts.create_if_missing(true);
        // One budget for the memtables of every column family (RocksDB's default is 64 MiB
        // per family, eleven of them), so the state's memory has a fixed bound.
        db_opts.set_db_write_buffer_size(MEMTABLE_BYTES);
        db_opts.create_missing_column_families(true);
        // A newer layout may have added column families; open them too so that the version
        // check below, not RocksDB, reports the mismatch.
        let mut names: Vec<String> = CF_NAMES.iter().map(|n| (*n).to_string()).collect();
        for existing in DB::list_cf(&db_opts, path).unwrap_or_default() {
            if !names.contains(&existing) {
                names.push(existing);
            }
        }
        let descriptors = names
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(n, cf_options(&cache)));
        let db = Arc::new(DB::open_cf_descriptors(&db_opts, path, descriptors)?);
        // The layout first: an older one has its outbox elsewhere.
        check_layout(&db)?;
        let head = match db.get_cf(cf_of(&db, Cf::Meta)?, OUTBOX_HEAD_KEY)? {
            Some(v) => outbox::Head::decode(&v)?,
            None => outbox::Head::default(),
        };
        let outbox = Arc::new(OutboxLog::open(
            &path.join(OUTBOX_DIR),
            head,
            SEGMENT_BYTES,
        )?);
        let mut state = Self {
            db,
            overlay: Default::default(),
            outbox,
            outbox_pending: Vec::new(),
            outbox_batch: None,
            outbox_written: 0,
            outbox_starts: Vec::new(),
            outbox_committed: head.next,
            customers: RefCell::default(),
            addresses: RefCell::default(),
            pending_filter: filter::CountingFilter::default(),
            waiting_filter: filter::CountingFilter::default(),
            customer_ids: filter::BitFilter::default(),
            address_ids: filter::BitFilter::default(),
            items: RefCell::default(),
            promos: RefCell::default(),
            #[cfg(test)]
            write_through: false,
            #[cfg(test)]
            _temp_dir: None,
        };
        state.load_counting_filters()?;
        state.load_version_filters()?;
        Ok(state)
    }

    /// Count every committed pending sale and waiting index entry into their filters. Called
    /// when the overlay is empty (at open and after an abort), so the filters then count
    /// exactly the committed state.
    fn load_counting_filters(&mut self) -> Result<(), StateError> {
        self.pending_filter.clear();
        self.waiting_filter.clear();
        let short = |cf: Cf| StateError::Corrupt {
            cf: cf.name(),
            reason: "short key".into(),
        };
        scan_keys(&self.db, Cf::Pending, |k| {
            let key = keys::sale_suffix(k).ok_or_else(|| short(Cf::Pending))?;
            self.pending_filter.added(filter::sale_hash(key));
            Ok(())
        })?;
        scan_keys(&self.db, Cf::Waiting, |k| {
            let on = waiting_prefix(k).ok_or_else(|| short(Cf::Waiting))?;
            self.waiting_filter.added(filter::bytes_hash(on));
            Ok(())
        })
    }

    /// Mark the id of every committed customer and address version (bits are only ever set,
    /// so this runs at open only).
    fn load_version_filters(&mut self) -> Result<(), StateError> {
        for (cf, ids) in [
            (Cf::Customers, &mut self.customer_ids),
            (Cf::Addresses, &mut self.address_ids),
        ] {
            scan_keys(&self.db, cf, |k| {
                let (id, _) = keys::get_str(k).ok_or_else(|| StateError::Corrupt {
                    cf: cf.name(),
                    reason: "version key without an id".into(),
                })?;
                ids.insert(versions::id_hash(id));
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Write this batch's state changes together with the source positions that produced
    /// them, atomically. `offsets` maps (`stream`, `shard`) to the last sequence number
    /// processed; shards not mentioned keep their stored offset.
    pub fn commit(
        &mut self,
        offsets: &BTreeMap<(String, String), String>,
    ) -> Result<(), StateError> {
        // Sized up front: a batch holds tens of megabytes of documents, and growing it by
        // doubling copied them several times (a tenth of the engine benchmark).
        const PER_ENTRY: usize = 24; // tag, column family, length prefixes
        let overlay_bytes: usize = self
            .overlay
            .iter()
            .flat_map(|w| w.iter())
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + PER_ENTRY)
            .sum();
        let mut batch = WriteBatch::with_capacity_bytes(overlay_bytes + 64 * offsets.len() + 128);
        for (i, writes) in self.overlay.iter().enumerate() {
            if writes.is_empty() {
                continue;
            }
            let cf = self.cf_at(i)?;
            for (k, v) in writes {
                match v {
                    Some(v) => batch.put_cf(cf, k, v),
                    None => batch.delete_cf(cf, k),
                }
            }
        }
        let cf = self.cf(Cf::Offsets)?;
        for ((stream, shard), seq) in offsets {
            batch.put_cf(cf, keys::offset(stream, shard), seq.as_bytes());
        }
        // The outputs to their segment first (synced), then the head that makes them
        // committed, in the batch (see `outbox`).
        let appended = if self.outbox_starts.is_empty() {
            None
        } else {
            let mut written = match self.outbox_batch.take() {
                Some(b) => b,
                None => self.outbox.begin()?,
            };
            self.outbox.write(&mut written, &self.outbox_pending)?;
            let appended = self.outbox.finish(written, &self.outbox_starts)?;
            batch.put_cf(self.cf(Cf::Meta)?, OUTBOX_HEAD_KEY, appended.head.encode());
            Some(appended)
        };
        self.db.write(batch)?;
        if let Some(appended) = appended {
            self.outbox_committed = appended.head.next;
            self.outbox.publish(appended);
        }
        self.clear_overlay();
        Ok(())
    }

    /// Discard the uncommitted changes of the current batch.
    pub fn abort(&mut self) {
        self.clear_overlay();
        // The counting filters counted the overlay's changes too. (The version id filters
        // keep the bits of the discarded writes: false positives, which only cost a seek.)
        if let Err(e) = self.load_counting_filters() {
            tracing::warn!(error = %e, "reloading the counting filters after an abort failed");
            // Safe either way: every key "may" be present until the next successful load.
            self.pending_filter.saturate();
            self.waiting_filter.saturate();
        }
        // Conservative: a cached row can never come from the overlay, but an abort is rare.
        self.customers.get_mut().clear();
        self.addresses.get_mut().clear();
        self.items.get_mut().clear();
        self.promos.get_mut().clear();
    }

    fn clear_overlay(&mut self) {
        for writes in &mut self.overlay {
            writes.clear();
        }
        self.outbox_pending.clear();
        self.outbox_batch = None;
        self.outbox_written = 0;
        self.outbox_starts.clear();
    }

    /// Queue an output record (an encoded [`crate::output::OutputRecord`]) of the current
    /// batch: it is committed with the batch's state and offsets, then delivered by the sinks
    /// from the outbox ([`OutboxReader`]).
    pub fn push_output(&mut self, record: &[u8]) -> Result<(), StateError> {
        self.push_output_with(|out| {
            out.extend_from_slice(record);
            Ok(())
        })
    }

    /// Queue an output record that `write` appends to the buffer it is given (nothing is
    /// queued if it fails).
    pub fn push_output_with<E: From<StateError>>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.outbox_pending.len() >= WRITE_BEHIND_BYTES {
            self.write_behind()?;
        }
        let start = outbox::begin_entry(&mut self.outbox_pending);
        let result = write(&mut self.outbox_pending).and_then(|()| {
            outbox::end_entry(&mut self.outbox_pending, start).ok_or_else(|| {
                E::from(StateError::Corrupt {
                    cf: "outbox",
                    reason: "an output record over 4 GiB".into(),
                })
            })
        });
        match result {
            Ok(()) => {
                self.outbox_starts.push(self.outbox_written + start);
                Ok(())
            }
            Err(e) => {
                self.outbox_pending.truncate(start);
                Err(e)
            }
        }
    }

    /// Write the pending outputs to the batch's segment (not synced: the commit syncs, and
    /// until the commit they are past the committed end).
    fn write_behind(&mut self) -> Result<(), StateError> {
        let batch = match &mut self.outbox_batch {
            Some(b) => b,
            None => self.outbox_batch.insert(self.outbox.begin()?),
        };
        self.outbox.write(batch, &self.outbox_pending)?;
        self.outbox_written += self.outbox_pending.len();
        self.outbox_pending.clear();
        Ok(())
    }

    /// Outputs queued in the current batch.
    pub fn pending_outputs(&self) -> usize {
        self.outbox_starts.len()
    }

    /// The outbox sequence number the next committed output gets.
    pub fn outbox_next(&self) -> u64 {
        self.outbox_committed
    }

    /// A handle for the sinks: reads committed outputs, keeps each sink's cursor.
    pub fn outbox_reader(&self) -> OutboxReader {
        OutboxReader::new(Arc::clone(&self.db), Arc::clone(&self.outbox))
    }

    /// A random id of this state directory, created with it: keeps the object keys of two
    /// replicas (or two lineages after a restore) apart.
    pub fn lineage(&self) -> Result<String, StateError> {
        let meta = self.cf(Cf::Meta)?;
        if let Some(v) = self.db.get_cf(meta, LINEAGE_KEY)? {
            return String::from_utf8(v).map_err(|_| StateError::Corrupt {
                cf: "meta",
                reason: "lineage is not UTF-8".into(),
            });
        }
        let id = format!("{:016x}", rand::random::<u64>());
        self.db.put_cf(meta, LINEAGE_KEY, id.as_bytes())?;
        Ok(id)
    }

    /// The committed source positions: (`stream`, `shard`) -> sequence number.
    pub fn offsets(&self) -> Result<BTreeMap<(String, String), String>, StateError> {
        export::read_offsets(&self.db)
    }

    /// A read-only handle on the committed state for a savepoint ([`export`]).
    pub fn export(&self) -> export::StateExport {
        export::StateExport::new(Arc::clone(&self.db))
    }

    /// Which state lineage this directory holds.
    pub fn identity(&self) -> Result<export::Identity, StateError> {
        export::identity(&self.db)
    }

    /// The savepoint this state was restored from, if any.
    pub fn restored_from(&self) -> Result<Option<String>, StateError> {
        export::meta_text(&self.db, RESTORED_FROM_KEY)
    }

    /// Mark the state as being filled (a restore or a fresh start): until
    /// [`RocksState::complete_identity`] it counts as [`export::Identity::Incomplete`], and the
    /// next start replaces it again. Written at once, outside any batch.
    pub fn begin_identity(&self) -> Result<(), StateError> {
        let meta = self.cf(Cf::Meta)?;
        self.db.put_cf(meta, RESTORING_KEY, b"1")?;
        Ok(())
    }

    /// Record that this state is lineage `id` (restored from `restored_from`), complete.
    /// Call with everything committed: the id and the end of the restore mark are one write.
    pub fn complete_identity(
        &self,
        id: &str,
        restored_from: Option<&str>,
    ) -> Result<(), StateError> {
        let meta = self.cf(Cf::Meta)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, STATE_ID_KEY, id.as_bytes());
        match restored_from {
            Some(sp) => batch.put_cf(meta, RESTORED_FROM_KEY, sp.as_bytes()),
            None => batch.delete_cf(meta, RESTORED_FROM_KEY),
        }
        batch.delete_cf(meta, RESTORING_KEY);
        self.db.write(batch)?;
        Ok(())
    }

    /// A reference row by id (`key` its encoding): from the cache unless the overlay holds a
    /// write for it.
    fn cached_row<K: std::hash::Hash + Eq + Clone, T: Clone>(
        &self,
        cf: Cf,
        cache: &RefCell<cache::RowCache<K, T>>,
        id: &K,
        key: impl Fn() -> Vec<u8>,
        decode: impl Fn(&[u8]) -> Result<T, StateError>,
    ) -> Result<Option<T>, StateError> {
        // Reference rows are rarely written: most batches have no overlay writes to look in.
        let overlay = &self.overlay[cf as usize];
        let pending = !overlay.is_empty() && overlay.contains_key(&key()[..]);
        if !pending && let Some(row) = cache.borrow().get(id) {
            return Ok(row);
        }
        let row = self.get(cf, &key())?.map(|v| decode(&v)).transpose()?;
        if !pending {
            cache.borrow_mut().insert(id, row.clone());
        }
        Ok(row)
    }

    fn cf(&self, cf: Cf) -> Result<&ColumnFamily, StateError> {
        self.db
            .cf_handle(cf.name())
            .ok_or(StateError::MissingColumnFamily(cf.name()))
    }

    fn cf_at(&self, i: usize) -> Result<&ColumnFamily, StateError> {
        let name = CF_NAMES[i];
        self.db
            .cf_handle(name)
            .ok_or(StateError::MissingColumnFamily(name))
    }

    /// Tests only: a state in a fresh temporary directory; `write_through` commits after
    /// every write.
    #[cfg(test)]
    pub(crate) fn temporary(write_through: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut state = Self::open(dir.path()).unwrap();
        state.write_through = write_through;
        state._temp_dir = Some(dir);
        state
    }

    fn put(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError> {
        self.overlay[cf as usize].insert(key, Some(value));
        self.written()
    }

    fn delete(&mut self, cf: Cf, key: Vec<u8>) -> Result<(), StateError> {
        self.overlay[cf as usize].insert(key, None);
        self.written()
    }

    #[cfg(not(test))]
    fn written(&mut self) -> Result<(), StateError> {
        Ok(())
    }

    #[cfg(test)]
    fn written(&mut self) -> Result<(), StateError> {
        if self.write_through {
            self.commit(&BTreeMap::new())?;
        }
        Ok(())
    }

    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(v) = self.overlay[cf as usize].get(key) {
            return Ok(v.clone());
        }
        Ok(self.db.get_cf(self.cf(cf)?, key)?)
    }

    /// Every key in `lo..=hi`, ascending, with the overlay applied.
    fn keys_in(&self, cf: Cf, lo: &[u8], hi: &[u8]) -> Result<Vec<Vec<u8>>, StateError> {
        let overlay = &self.overlay[cf as usize];
        let mut merged: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        let mut it = self.db.raw_iterator_cf(self.cf(cf)?);
        it.seek(lo);
        while let Some(k) = it.key() {
            if k > hi {
                break;
            }
            merged.insert(k.to_vec(), true);
            it.next();
        }
        it.status()?;
        for (k, v) in overlay.range(lo.to_vec()..=hi.to_vec()) {
            merged.insert(k.clone(), v.is_some());
        }
        Ok(merged
            .into_iter()
            .filter_map(|(k, live)| live.then_some(k))
            .collect())
    }

    /// Event times of the stored versions of a customer, ascending (for tests and tooling).
    pub fn customer_versions(&self, id: &CustomerId) -> Result<Vec<EventTime>, StateError> {
        let lo = keys::version(id.as_str(), i64::MIN);
        let hi = keys::version(id.as_str(), i64::MAX);
        self.keys_in(Cf::Customers, &lo, &hi)?
            .iter()
            .map(|k| {
                k.len()
                    .checked_sub(8)
                    .and_then(|at| keys::get_i64(&k[at..]))
                    .map(EventTime::from_micros)
                    .ok_or_else(|| StateError::Corrupt {
                        cf: "customers",
                        reason: "short key".into(),
                    })
            })
            .collect()
    }

    /// (pending sales, waiting index entries, deadline index entries), overlay applied.
    /// RocksDB properties for metrics: `(name, value)` of a few integer properties summed
    /// over the column families.
    pub fn properties(&self) -> Vec<(&'static str, i64)> {
        const PROPS: [(&str, &str); 5] = [
            ("estimate_num_keys", "rocksdb.estimate-num-keys"),
            ("live_sst_files_size_bytes", "rocksdb.live-sst-files-size"),
            ("memtables_size_bytes", "rocksdb.cur-size-all-mem-tables"),
            (
                "pending_compaction_bytes",
                "rocksdb.estimate-pending-compaction-bytes",
            ),
            ("block_cache_usage_bytes", "rocksdb.block-cache-usage"),
        ];
        let mut out = Vec::new();
        for (label, prop) in PROPS {
            let mut total: u64 = 0;
            for name in CF_NAMES {
                if let Some(cf) = self.db.cf_handle(name)
                    && let Ok(Some(v)) = self.db.property_int_value_cf(cf, prop)
                {
                    // The block cache is shared: count it once.
                    if label == "block_cache_usage_bytes" {
                        total = v;
                        break;
                    }
                    total = total.saturating_add(v);
                }
            }
            out.push((label, i64::try_from(total).unwrap_or(i64::MAX)));
        }
        let (segments, bytes) = self.outbox.stats();
        out.push((
            "outbox_segments",
            i64::try_from(segments).unwrap_or(i64::MAX),
        ));
        out.push(("outbox_bytes", i64::try_from(bytes).unwrap_or(i64::MAX)));
        out
    }

    pub fn pending_counts(&self) -> Result<(usize, usize, usize), StateError> {
        let all = |cf| self.keys_in(cf, &[], &[0xff; 64]).map(|k| k.len());
        Ok((all(Cf::Pending)?, all(Cf::Waiting)?, all(Cf::Deadlines)?))
    }
}

/// Call `f` with every committed key of `cf`, ascending (without filling the block cache: a
/// full scan at open would evict the working set).
fn scan_keys(
    db: &DB,
    cf: Cf,
    mut f: impl FnMut(&[u8]) -> Result<(), StateError>,
) -> Result<(), StateError> {
    let mut opts = ReadOptions::default();
    opts.fill_cache(false);
    let mut it = db.raw_iterator_cf_opt(cf_of(db, cf)?, opts);
    it.seek_to_first();
    while let Some(k) = it.key() {
        f(k)?;
        it.next();
    }
    it.status()?;
    Ok(())
}

/// The waiting filter's hash of a waiting index key: that of its missing key, as
/// [`RocksState::load_counting_filters`] computes it.
fn waiting_hash(key: &[u8]) -> Result<u64, StateError> {
    waiting_prefix(key)
        .map(filter::bytes_hash)
        .ok_or_else(|| StateError::Corrupt {
            cf: Cf::Waiting.name(),
            reason: "short key".into(),
        })
}

/// The missing key (`kind | id`, [`keys::missing`]) of a waiting index key: all but its last
/// 16 bytes, the sale key.
fn waiting_prefix(key: &[u8]) -> Option<&[u8]> {
    key.len()
        .checked_sub(16)
        .filter(|&n| n > 0)
        .map(|n| &key[..n])
}

fn sale_keys(keys: Vec<Vec<u8>>, cf: &'static str) -> Result<Vec<SaleKey>, StateError> {
    keys.iter()
        .map(|k| {
            keys::sale_suffix(k).ok_or_else(|| StateError::Corrupt {
                cf,
                reason: "short key".into(),
            })
        })
        .collect()
}

impl JoinState for RocksState {
    type Error = StateError;

    fn put_customer(&mut self, c: Customer) -> Result<(), StateError> {
        self.put_version(c)
    }
    fn customer_at(
        &self,
        id: &CustomerId,
        at: EventTime,
    ) -> Result<Option<Shared<Customer>>, StateError> {
        self.version_at(id.as_str(), at)
    }
    fn first_customer(&self, id: &CustomerId) -> Result<Option<Shared<Customer>>, StateError> {
        self.first_version(id.as_str())
    }
    fn compact_customer(&mut self, id: &CustomerId, h: EventTime) -> Result<usize, StateError> {
        self.compact_versions::<Customer>(id.as_str(), h)
    }

    fn put_address(&mut self, a: Address) -> Result<(), StateError> {
        self.put_version(a)
    }
    fn address_at(
        &self,
        id: &AddressId,
        at: EventTime,
    ) -> Result<Option<Shared<Address>>, StateError> {
        self.version_at(id.as_str(), at)
    }
    fn first_address(&self, id: &AddressId) -> Result<Option<Shared<Address>>, StateError> {
        self.first_version(id.as_str())
    }
    fn compact_address(&mut self, id: &AddressId, h: EventTime) -> Result<usize, StateError> {
        self.compact_versions::<Address>(id.as_str(), h)
    }

    fn put_item(&mut self, item: Item) -> Result<(), StateError> {
        self.items.get_mut().invalidate(&item.item_id);
        let value = values::encode(&item)?;
        self.put(Cf::Items, keys::int(item.item_id), value)
    }
    fn item(&self, id: ItemId) -> Result<Option<Shared<Item>>, StateError> {
        let key = || keys::int(id);
        self.cached_row(Cf::Items, &self.items, &id, key, values::shared_item)
    }
    fn put_promo(&mut self, promo: Promo) -> Result<(), StateError> {
        self.promos.get_mut().invalidate(&promo.promo_id);
        let value = values::encode(&promo)?;
        self.put(Cf::Promos, keys::string(promo.promo_id.as_str()), value)
    }
    fn promo(&self, id: &PromoId) -> Result<Option<Shared<Promo>>, StateError> {
        let key = || keys::string(id.as_str());
        self.cached_row(Cf::Promos, &self.promos, id, key, values::shared_promo)
    }

    fn pending(&self, key: SaleKey) -> Result<Option<PendingSale>, StateError> {
        if !self.pending_filter.may_contain(filter::sale_hash(key)) {
            return Ok(None);
        }
        self.get(Cf::Pending, &keys::sale(key))?
            .map(|v| values::pending(&v))
            .transpose()
    }
    fn put_pending(&mut self, p: PendingSale) -> Result<(), StateError> {
        let key = p.sale.key();
        let (k, hash) = (keys::sale(key), filter::sale_hash(key));
        // A zero counter proves the line absent, without the look-up.
        if !self.pending_filter.may_contain(hash) || self.get(Cf::Pending, &k)?.is_none() {
            self.pending_filter.added(hash);
        }
        let value = values::encode(&p)?;
        self.put(Cf::Pending, k, value)
    }
    fn remove_pending(&mut self, key: SaleKey) -> Result<(), StateError> {
        let k = keys::sale(key);
        let hash = filter::sale_hash(key);
        if self.pending_filter.may_contain(hash) && self.get(Cf::Pending, &k)?.is_some() {
            self.pending_filter.removed(hash);
        }
        self.delete(Cf::Pending, k)
    }

    fn add_waiting(&mut self, on: &MissingKey, key: SaleKey) -> Result<(), StateError> {
        let k = keys::waiting(on, key);
        let hash = waiting_hash(&k)?;
        // A zero counter proves the entry absent, without the look-up.
        if !self.waiting_filter.may_contain(hash) || self.get(Cf::Waiting, &k)?.is_none() {
            self.waiting_filter.added(hash);
        }
        self.put(Cf::Waiting, k, Vec::new())
    }
    fn remove_waiting(&mut self, on: &MissingKey, key: SaleKey) -> Result<(), StateError> {
        let k = keys::waiting(on, key);
        let hash = waiting_hash(&k)?;
        if self.waiting_filter.may_contain(hash) && self.get(Cf::Waiting, &k)?.is_some() {
            self.waiting_filter.removed(hash);
        }
        self.delete(Cf::Waiting, k)
    }
    fn waiting_on(&self, on: &MissingKey) -> Result<Vec<SaleKey>, StateError> {
        if !self
            .waiting_filter
            .may_contain(filter::bytes_hash(&keys::missing(on)))
        {
            return Ok(Vec::new());
        }
        let lo = keys::waiting(on, keys::SALE_MIN);
        let hi = keys::waiting(on, keys::SALE_MAX);
        sale_keys(self.keys_in(Cf::Waiting, &lo, &hi)?, "waiting")
    }

    fn add_deadline(&mut self, at: ProcessingTime, key: SaleKey) -> Result<(), StateError> {
        self.put(Cf::Deadlines, keys::deadline(at, key), Vec::new())
    }
    fn remove_deadline(&mut self, at: ProcessingTime, key: SaleKey) -> Result<(), StateError> {
        self.delete(Cf::Deadlines, keys::deadline(at, key))
    }
    fn due(&self, now: ProcessingTime) -> Result<Vec<(ProcessingTime, SaleKey)>, StateError> {
        let hi = keys::deadline(now, keys::SALE_MAX);
        self.keys_in(Cf::Deadlines, &[], &hi)?
            .iter()
            .map(|k| {
                keys::get_i64(k)
                    .zip(keys::sale_suffix(k))
                    .map(|(at, key)| (ProcessingTime::from_millis(at), key))
                    .ok_or_else(|| StateError::Corrupt {
                        cf: "deadlines",
                        reason: "short key".into(),
                    })
            })
            .collect()
    }
}
