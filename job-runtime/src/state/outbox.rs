//! The outbox: the join's outputs, committed in the same `WriteBatch` as the state and the
//! source offsets that produced them, then delivered by each sink from its own cursor.
//!
//! * `outbox`: `seq` (big-endian `u64`) -> an encoded output record. Sequence numbers are
//!   dense and only grow; they are local to one state directory.
//! * `sinks`: sink name -> [`SinkCursor`] (JSON): the next sequence number the sink has not
//!   delivered yet, and the range it is delivering now (its *intent*).
//!
//! A sink writes its intent before it writes anything outside, names what it writes after the
//! range, and moves its cursor only after the write is durable. After a crash it finds the
//! intent and writes the same range again, under the same names: nothing is lost (the entries
//! stay until every cursor has passed them) and nothing is duplicated (a rewrite replaces).
//! Entries below every sink's cursor are deleted by [`OutboxReader::trim`].

use std::sync::Arc;

use rocksdb::{ColumnFamily, DB, Direction, IteratorMode};
use serde::{Deserialize, Serialize};

use super::{Cf, StateError};

/// One sink's progress through the outbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkCursor {
    /// Every entry below this has been delivered.
    pub next: u64,
    /// The range `[first, last]` being delivered: recorded before the first external write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<(u64, u64)>,
}

/// The next sequence number to assign: one past the greatest committed entry (0 if empty).
pub(super) fn next_seq(db: &DB) -> Result<u64, StateError> {
    let cf = db
        .cf_handle(Cf::Outbox.name())
        .ok_or(StateError::MissingColumnFamily(Cf::Outbox.name()))?;
    let mut it = db.raw_iterator_cf(cf);
    it.seek_to_last();
    let next = match it.key() {
        Some(k) => decode_seq(k)? + 1,
        None => {
            // An empty outbox after a trim: continue after the greatest cursor, so that a
            // sequence number is never reused for a different record.
            let sinks = db
                .cf_handle(Cf::Sinks.name())
                .ok_or(StateError::MissingColumnFamily(Cf::Sinks.name()))?;
            let mut max = 0;
            for item in db.iterator_cf(sinks, IteratorMode::Start) {
                let (_, v) = item?;
                max = max.max(decode_cursor(&v)?.next);
            }
            max
        }
    };
    it.status()?;
    Ok(next)
}

fn decode_seq(k: &[u8]) -> Result<u64, StateError> {
    <[u8; 8]>::try_from(k)
        .map(u64::from_be_bytes)
        .map_err(|_| StateError::Corrupt {
            cf: "outbox",
            reason: "key is not 8 bytes".into(),
        })
}

fn decode_cursor(v: &[u8]) -> Result<SinkCursor, StateError> {
    serde_json::from_slice(v).map_err(|e| StateError::Corrupt {
        cf: "sinks",
        reason: e.to_string(),
    })
}

/// Read access to the committed outbox and the sinks' cursors; cheap to clone, usable from
/// any thread (RocksDB is thread-safe), but every call blocks: call it off the async workers.
#[derive(Clone)]
pub struct OutboxReader {
    db: Arc<DB>,
}

impl std::fmt::Debug for OutboxReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxReader").finish_non_exhaustive()
    }
}

impl OutboxReader {
    pub(super) fn new(db: Arc<DB>) -> Self {
        Self { db }
    }

    fn cf(&self, cf: Cf) -> Result<&ColumnFamily, StateError> {
        self.db
            .cf_handle(cf.name())
            .ok_or(StateError::MissingColumnFamily(cf.name()))
    }

    /// Committed entries with `seq >= from`, in order, at most `max_items` and about
    /// `max_bytes` (always at least one entry when there is one).
    pub fn read(
        &self,
        from: u64,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StateError> {
        let cf = self.cf(Cf::Outbox)?;
        let start = from.to_be_bytes();
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item?;
            if out.len() >= max_items || (bytes >= max_bytes && !out.is_empty()) {
                break;
            }
            bytes += v.len();
            out.push((decode_seq(&k)?, v.into_vec()));
        }
        Ok(out)
    }

    /// The entries `first..=last` (an intent being replayed).
    pub fn range(&self, first: u64, last: u64) -> Result<Vec<(u64, Vec<u8>)>, StateError> {
        let n = usize::try_from(last.saturating_sub(first) + 1).unwrap_or(usize::MAX);
        let mut out = self.read(first, n, usize::MAX)?;
        out.retain(|(seq, _)| *seq <= last);
        Ok(out)
    }

    /// A sink's cursor; a new sink starts at `start` (the outbox's first entry when it was
    /// created: a sink added later does not re-deliver what others already trimmed).
    pub fn cursor(&self, sink: &str) -> Result<Option<SinkCursor>, StateError> {
        let cf = self.cf(Cf::Sinks)?;
        self.db
            .get_cf(cf, sink.as_bytes())?
            .map(|v| decode_cursor(&v))
            .transpose()
    }

    pub fn set_cursor(&self, sink: &str, cursor: &SinkCursor) -> Result<(), StateError> {
        let cf = self.cf(Cf::Sinks)?;
        let v = serde_json::to_vec(cursor).map_err(StateError::Encode)?;
        self.db.put_cf(cf, sink.as_bytes(), v)?;
        Ok(())
    }

    /// The first committed entry still stored (what a new sink starts from).
    pub fn first(&self) -> Result<Option<u64>, StateError> {
        let cf = self.cf(Cf::Outbox)?;
        match self.db.iterator_cf(cf, IteratorMode::Start).next() {
            Some(item) => Ok(Some(decode_seq(&item?.0)?)),
            None => Ok(None),
        }
    }

    /// Delete the entries below `below` (every sink's cursor has passed them).
    pub fn trim(&self, below: u64) -> Result<(), StateError> {
        if below == 0 {
            return Ok(());
        }
        let cf = self.cf(Cf::Outbox)?;
        self.db
            .delete_range_cf(cf, 0u64.to_be_bytes(), below.to_be_bytes())?;
        Ok(())
    }
}
