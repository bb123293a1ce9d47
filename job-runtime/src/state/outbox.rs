//! The outbox: the join's outputs, committed together with the state and the source offsets
//! that produced them, then delivered by each sink from its own cursor.
//!
//! # Layout
//!
//! * `outbox/<first seq, 20 digits>.seg`: **segment files** next to the RocksDB files. A
//!   segment holds consecutive entries, each `[length: u32 LE][CRC-32 of the bytes: u32 LE]
//!   [bytes]` (an encoded output record). Sequence numbers are dense and only grow; they are
//!   local to one state directory. A commit appends to one segment; the next commit starts a
//!   new one once it holds [`SEGMENT_BYTES`].
//! * `meta/outbox_head` (RocksDB): the committed end of the log, [`Head`] (the last segment's
//!   first sequence number and committed length, and the next sequence number). It is written
//!   in the commit's `WriteBatch`, with the state and the offsets.
//! * `sinks` (RocksDB): sink name -> [`SinkCursor`] (JSON): the next sequence number the sink
//!   has not delivered yet, and the range it is delivering now (its *intent*).
//!
//! # Why files, not a column family
//!
//! The outputs are most of the bytes the engine writes (a document is about 2 KB; the state
//! it changes is a few hundred bytes). In a column family each was copied into the write
//! batch, the write-ahead log and the memtable, then flushed to a table file when a sink was a
//! memtable behind: a third of the engine benchmark's CPU. Appended to a segment, it is
//! written once; a delivered segment is deleted as a whole, with no tombstones to compact.
//!
//! # Atomicity and crashes
//!
//! A batch's entries are written after the committed end as the batch fills (a few hundred
//! KiB at a time, see `WRITE_BEHIND_BYTES` in [`super`]). Its commit (1) writes the rest and
//! syncs the file (`fdatasync`; a new segment also syncs the folder), then (2) writes the
//! `WriteBatch` with the new head. Until (2) the written bytes are past the committed end and
//! count for nothing (an aborted batch's are overwritten by the next). On open, the last
//! segment is cut back to the committed length and segments started after it are deleted: a
//! crash between (1) and (2) leaves no trace. Because (1) is synced before (2), a machine
//! crash that loses the last RocksDB commits (the WAL is not synced, see the module docs of
//! [`super`]) finds the segment *longer* than the recovered head, never shorter; a segment
//! shorter than its committed length is reported as corrupt, never silently skipped.
//!
//! A sink writes its intent before it writes anything outside, names what it writes after the
//! range, and moves its cursor only after the write is durable. After a crash it finds the
//! intent and writes the same range again, under the same names: nothing is lost (the entries
//! stay until every cursor has passed them) and nothing is duplicated (a rewrite replaces).
//! Segments wholly below every sink's cursor are deleted by [`OutboxReader::trim`], after the
//! cursors are synced to disk (so a machine crash cannot bring back a cursor that points into
//! a deleted segment).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rocksdb::{ColumnFamily, DB};
use serde::{Deserialize, Serialize};

use super::{Cf, StateError};

/// A commit starts a new segment once the current one holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes before each entry: its length and its CRC-32.
pub(super) const ENTRY_HEADER: usize = 8;
const SUFFIX: &str = ".seg";

/// One sink's progress through the outbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkCursor {
    /// Every entry below this has been delivered.
    pub next: u64,
    /// The range `[first, last]` being delivered: recorded before the first external write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<(u64, u64)>,
}

fn decode_cursor(v: &[u8]) -> Result<SinkCursor, StateError> {
    serde_json::from_slice(v).map_err(|e| StateError::Corrupt {
        cf: "sinks",
        reason: e.to_string(),
    })
}

/// The committed end of the log (stored in `meta`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Head {
    /// First sequence number of the last segment.
    pub segment: u64,
    /// Committed bytes of the last segment.
    pub len: u64,
    /// The sequence number the next entry gets.
    pub next: u64,
}

impl Head {
    pub(super) fn encode(&self) -> [u8; 24] {
        let mut out = [0; 24];
        out[..8].copy_from_slice(&self.segment.to_be_bytes());
        out[8..16].copy_from_slice(&self.len.to_be_bytes());
        out[16..].copy_from_slice(&self.next.to_be_bytes());
        out
    }

    pub(super) fn decode(v: &[u8]) -> Result<Self, StateError> {
        let v = <[u8; 24]>::try_from(v).map_err(|_| StateError::Corrupt {
            cf: "meta",
            reason: "outbox head is not 24 bytes".into(),
        })?;
        let word = |i: usize| {
            let mut w = [0; 8];
            w.copy_from_slice(&v[i * 8..i * 8 + 8]);
            u64::from_be_bytes(w)
        };
        Ok(Self {
            segment: word(0),
            len: word(1),
            next: word(2),
        })
    }
}

/// Write an entry's header for the `len` bytes after it: reserve with [`begin_entry`], fill
/// with [`end_entry`].
pub(super) fn begin_entry(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; ENTRY_HEADER]);
    start
}

/// Fill the header reserved at `start` for the bytes after it. `None` if the entry is over
/// 4 GiB (never, for records bounded like ours).
pub(super) fn end_entry(buf: &mut [u8], start: usize) -> Option<()> {
    let body = buf.get(start + ENTRY_HEADER..)?;
    let len = u32::try_from(body.len()).ok()?;
    let crc = crc32fast::hash(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Some(())
}

struct Segment {
    file: Arc<File>,
    /// Where each committed entry starts; entry `i` has sequence number `first + i`.
    starts: Vec<u64>,
    /// Committed bytes.
    len: u64,
}

struct Log {
    /// Segments by first sequence number; the last one is appended to.
    segments: BTreeMap<u64, Segment>,
    head: Head,
}

impl Log {
    /// The segments whose every entry is below `below`, never the last one.
    fn wholly_below(&self, below: u64) -> Vec<u64> {
        self.segments
            .iter()
            .filter(|&(&first, s)| {
                first != self.head.segment && first + s.starts.len() as u64 <= below
            })
            .map(|(&first, _)| first)
            .collect()
    }
}

/// The segment files, shared by the engine (appends) and the sinks (reads, trims).
pub(super) struct OutboxLog {
    dir: PathBuf,
    /// A commit starts a new segment once the last one holds this many bytes
    /// ([`SEGMENT_BYTES`]; smaller in tests).
    segment_bytes: u64,
    log: Mutex<Log>,
}

/// A batch's entries being written after the committed end ([`OutboxLog::begin`]).
pub(super) struct Batch {
    /// Where the batch's bytes start: the committed head, or a new segment's start.
    at: Head,
    /// Whether `file` is a segment this batch started.
    new_file: bool,
    file: Arc<File>,
    /// Bytes written so far.
    written: u64,
}

/// Appended by [`OutboxLog::finish`], not committed yet: what [`OutboxLog::publish`] makes
/// visible once the head is in RocksDB.
pub(super) struct Appended {
    pub head: Head,
    /// A new segment's file, when the append started one.
    new_file: Option<Arc<File>>,
    starts: Vec<u64>,
}

fn io_err(path: &Path, source: io::Error) -> StateError {
    StateError::Outbox {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(reason: String) -> StateError {
    StateError::Corrupt {
        cf: "outbox",
        reason,
    }
}

impl OutboxLog {
    fn segment_path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{first:020}{SUFFIX}"))
    }

    /// Open the log at `dir` whose committed end is `head`: later bytes and segments (an
    /// append whose commit did not happen) are removed.
    pub(super) fn open(dir: &Path, head: Head, segment_bytes: u64) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let this = Self {
            dir: dir.to_path_buf(),
            segment_bytes,
            log: Mutex::new(Log {
                segments: BTreeMap::new(),
                head,
            }),
        };
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let name = entry.file_name();
            let Some(first) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            found.push(first);
        }
        found.sort_unstable();
        let mut segments = BTreeMap::new();
        for first in found {
            let path = this.segment_path(first);
            if first > head.segment {
                // Started by an append that was never committed.
                std::fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
                continue;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io_err(&path, e))?;
            let size = file.metadata().map_err(|e| io_err(&path, e))?.len();
            let len = if first == head.segment {
                if size < head.len {
                    return Err(corrupt(format!(
                        "segment {} has {size} bytes, {} were committed",
                        path.display(),
                        head.len
                    )));
                }
                if size > head.len {
                    file.set_len(head.len).map_err(|e| io_err(&path, e))?;
                }
                head.len
            } else {
                size
            };
            let starts = scan_starts(&file, len).map_err(|e| io_err(&path, e))?;
            segments.insert(
                first,
                Segment {
                    file: Arc::new(file),
                    starts,
                    len,
                },
            );
        }
        let last = match segments.entry(head.segment) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                if head.len > 0 {
                    return Err(corrupt(format!(
                        "segment {} is missing, {} bytes were committed",
                        this.segment_path(head.segment).display(),
                        head.len
                    )));
                }
                e.insert(Segment {
                    file: this.create(head.segment)?,
                    starts: Vec::new(),
                    len: 0,
                })
            }
        };
        if head.segment + last.starts.len() as u64 != head.next {
            return Err(corrupt(format!(
                "the last segment starts at {} and holds {} entries, but the next entry is {}",
                head.segment,
                last.starts.len(),
                head.next
            )));
        }
        this.lock().segments = segments;
        Ok(this)
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // The data under the lock is consistent between statements: a panic elsewhere while
        // it was held does not make it unusable.
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new, empty segment file (replacing a leftover of an uncommitted append), its name
    /// synced into the folder.
    fn create(&self, first: u64) -> Result<Arc<File>, StateError> {
        let path = self.segment_path(first);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err(&self.dir, e))?;
        Ok(Arc::new(file))
    }

    /// Start appending a batch's entries after the committed end: in the last segment, or in a
    /// new one once the last holds `segment_bytes`. Nothing is visible until
    /// [`OutboxLog::publish`]; a batch that is never published is overwritten by the next.
    pub(super) fn begin(&self) -> Result<Batch, StateError> {
        let (head, file) = {
            let log = self.lock();
            let file = log
                .segments
                .get(&log.head.segment)
                .map(|s| Arc::clone(&s.file));
            (log.head, file)
        };
        if head.len >= self.segment_bytes {
            let file = self.create(head.next)?;
            return Ok(Batch {
                at: Head {
                    segment: head.next,
                    len: 0,
                    next: head.next,
                },
                new_file: true,
                file,
                written: 0,
            });
        }
        let file = file.ok_or_else(|| corrupt("the last segment is not open".into()))?;
        Ok(Batch {
            at: head,
            new_file: false,
            file,
            written: 0,
        })
    }

    /// Write `bytes` (whole entries, each with its header) after what `batch` wrote so far.
    /// Not synced: [`OutboxLog::finish`] does that.
    pub(super) fn write(&self, batch: &mut Batch, bytes: &[u8]) -> Result<(), StateError> {
        if bytes.is_empty() {
            return Ok(());
        }
        batch
            .file
            .write_all_at(bytes, batch.at.len + batch.written)
            .map_err(|e| io_err(&self.segment_path(batch.at.segment), e))?;
        batch.written += bytes.len() as u64;
        Ok(())
    }

    /// Sync what `batch` wrote: its entries start at `starts` (offsets in the batch's bytes).
    /// The result is made visible by [`OutboxLog::publish`] once its head is committed.
    pub(super) fn finish(&self, batch: Batch, starts: &[usize]) -> Result<Appended, StateError> {
        let Batch {
            at,
            new_file,
            file,
            written,
        } = batch;
        if written > 0 {
            file.sync_data()
                .map_err(|e| io_err(&self.segment_path(at.segment), e))?;
        }
        Ok(Appended {
            head: Head {
                segment: at.segment,
                len: at.len + written,
                next: at.next + starts.len() as u64,
            },
            new_file: new_file.then_some(file),
            starts: starts.iter().map(|&s| at.len + s as u64).collect(),
        })
    }

    /// [`OutboxLog::begin`], [`OutboxLog::write`] and [`OutboxLog::finish`] in one.
    #[cfg(test)]
    pub(super) fn append(&self, bytes: &[u8], starts: &[usize]) -> Result<Appended, StateError> {
        let mut batch = self.begin()?;
        self.write(&mut batch, bytes)?;
        self.finish(batch, starts)
    }

    /// Make an append visible: its head is committed.
    pub(super) fn publish(&self, appended: Appended) {
        let Appended {
            head,
            new_file,
            starts,
        } = appended;
        let mut log = self.lock();
        if let Some(file) = new_file {
            log.segments.insert(
                head.segment,
                Segment {
                    file,
                    starts: Vec::new(),
                    len: 0,
                },
            );
        }
        if let Some(seg) = log.segments.get_mut(&head.segment) {
            seg.starts.extend(starts);
            seg.len = head.len;
        }
        log.head = head;
    }

    /// Committed entries with `seq >= from` (or from the first stored one), in order, at most
    /// `max_items` and about `max_bytes` (at least one when there is one). One segment per
    /// call at most: a caller reading on gets the rest next time.
    pub(super) fn read(
        &self,
        from: u64,
        max_items: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StateError> {
        // Under the lock: which bytes to read. Outside it: the read.
        let (file, first_seq, spans) = {
            let log = self.lock();
            let seg = log
                .segments
                .range(..=from)
                .next_back()
                .filter(|(first, s)| from < *first + s.starts.len() as u64)
                .or_else(|| {
                    log.segments
                        .range(from..)
                        .find(|(_, s)| !s.starts.is_empty())
                });
            let Some((&first, seg)) = seg else {
                return Ok(Vec::new());
            };
            let i0 = usize::try_from(from.saturating_sub(first)).unwrap_or(usize::MAX);
            let mut spans = Vec::new();
            let mut bytes = 0;
            for i in i0..seg.starts.len() {
                if spans.len() >= max_items || (bytes >= max_bytes && !spans.is_empty()) {
                    break;
                }
                let end = seg.starts.get(i + 1).copied().unwrap_or(seg.len);
                bytes += usize::try_from(end - seg.starts[i]).unwrap_or(usize::MAX);
                spans.push((seg.starts[i], end));
            }
            (Arc::clone(&seg.file), first + i0 as u64, spans)
        };
        let (Some(&(lo, _)), Some(&(_, hi))) = (spans.first(), spans.last()) else {
            return Ok(Vec::new());
        };
        let mut buf = vec![0; usize::try_from(hi - lo).unwrap_or(usize::MAX)];
        file.read_exact_at(&mut buf, lo)
            .map_err(|e| io_err(&self.segment_path(first_seq), e))?;
        let mut out = Vec::with_capacity(spans.len());
        for (k, (start, end)) in spans.into_iter().enumerate() {
            let seq = first_seq + k as u64;
            let entry = &buf[usize::try_from(start - lo).unwrap_or(usize::MAX)
                ..usize::try_from(end - lo).unwrap_or(usize::MAX)];
            out.push((seq, check_entry(entry, seq)?.to_vec()));
        }
        Ok(out)
    }

    /// The first stored entry.
    pub(super) fn first(&self) -> Option<u64> {
        let log = self.lock();
        log.segments
            .iter()
            .find(|(_, s)| !s.starts.is_empty())
            .map(|(&first, _)| first)
    }

    /// Remove the segments whose every entry is below `below` (never the last one).
    pub(super) fn trim(&self, below: u64) -> Result<usize, StateError> {
        let doomed: Vec<u64> = {
            let mut log = self.lock();
            let doomed = log.wholly_below(below);
            for first in &doomed {
                log.segments.remove(first);
            }
            doomed
        };
        for first in &doomed {
            let path = self.segment_path(*first);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path, e)),
            }
        }
        Ok(doomed.len())
    }

    /// Segment files and their committed bytes (for metrics and tests).
    pub(super) fn stats(&self) -> (usize, u64) {
        let log = self.lock();
        (
            log.segments.len(),
            log.segments.values().map(|s| s.len).sum(),
        )
    }
}

/// The entry's bytes after checking its header.
fn check_entry(entry: &[u8], seq: u64) -> Result<&[u8], StateError> {
    let bad = |what: &str| corrupt(format!("entry {seq}: {what}"));
    let header = entry
        .get(..ENTRY_HEADER)
        .ok_or_else(|| bad("short header"))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let body = &entry[ENTRY_HEADER..];
    if body.len() != len {
        return Err(bad("length does not match"));
    }
    if crc32fast::hash(body) != crc {
        return Err(bad("checksum does not match"));
    }
    Ok(body)
}

/// Where each entry of the first `len` bytes of a segment starts.
fn scan_starts(file: &File, len: u64) -> io::Result<Vec<u64>> {
    let mut starts = Vec::new();
    let mut at = 0u64;
    let mut header = [0u8; ENTRY_HEADER];
    while at < len {
        file.read_exact_at(&mut header, at)?;
        let body = u64::from(u32::from_le_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        let end = at + ENTRY_HEADER as u64 + body;
        if end > len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("an entry at byte {at} ends past the committed {len} bytes"),
            ));
        }
        starts.push(at);
        at = end;
    }
    Ok(starts)
}

/// Read access to the committed outbox and the sinks' cursors; cheap to clone, usable from
/// any thread, but every call blocks: call it off the async workers.
#[derive(Clone)]
pub struct OutboxReader {
    db: Arc<DB>,
    log: Arc<OutboxLog>,
}

impl std::fmt::Debug for OutboxReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxReader")
            .field("dir", &self.log.dir)
            .finish_non_exhaustive()
    }
}

impl OutboxReader {
    pub(super) fn new(db: Arc<DB>, log: Arc<OutboxLog>) -> Self {
        Self { db, log }
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
        let mut out = self.log.read(from, max_items, max_bytes)?;
        // One segment per read: go on into the next while the limits allow.
        let mut bytes: usize = out.iter().map(|(_, v)| v.len()).sum();
        while let Some(&(last, _)) = out.last() {
            if out.len() >= max_items || bytes >= max_bytes {
                break;
            }
            let more = self
                .log
                .read(last + 1, max_items - out.len(), max_bytes - bytes)?;
            if more.is_empty() {
                break;
            }
            bytes += more.iter().map(|(_, v)| v.len()).sum::<usize>();
            out.extend(more);
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
        Ok(self.log.first())
    }

    /// Delete the segments whose every entry is below `below` (every sink's cursor has
    /// passed them). The cursors are synced to disk first (see the module docs).
    pub fn trim(&self, below: u64) -> Result<(), StateError> {
        let whole_segments_below = !self.log.lock().wholly_below(below).is_empty();
        if whole_segments_below {
            self.db.flush_wal(true)?;
            self.log.trim(below)?;
        }
        Ok(())
    }

    /// Segment files and the bytes they hold.
    pub fn stats(&self) -> (usize, u64) {
        self.log.stats()
    }
}
