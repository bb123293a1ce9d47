//! The engine: applies source batches to the join over RocksDB, and commits the state, the
//! source positions and the outputs together.
//!
//! # One commit, three things
//!
//! Every input batch changes the join state (an overlay in [`RocksState`]), moves its shard's
//! position, and may produce outputs (documents, dead letters). They are committed together in
//! one RocksDB `WriteBatch`, at most every `commit_interval` or `commit_max_outputs` outputs:
//! the outputs go to the **outbox** ([`crate::state::OutboxReader`]), from which every sink
//! delivers at its own pace with its own cursor. A crash at any point therefore loses nothing
//! (uncommitted work is redone from the committed positions) and duplicates nothing (committed
//! outputs are delivered from the outbox under names derived from their outbox range, and a
//! redelivery overwrites). The sinks never block the join, and the join never re-runs to feed
//! a sink.
//!
//! # Threads
//!
//! [`Core`] is synchronous and owns the state; [`run`] drives it on a dedicated OS thread, so
//! RocksDB work never runs on the async workers. It waits for input with the tokio handle
//! (`block_on` of a `select!`), in priority order: control messages, dimension batches, sales
//! batches. Sales are read only while few are held back by the [`barrier`] and while the
//! outbox is not too far ahead of the slowest sink (**backpressure**: reading stops, Kinesis
//! keeps the data, memory stays bounded).

pub mod barrier;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tributary_crds::document_id::DocumentIdTemplate;

use crate::events::{Item, Promo, PromoId, decode_address, decode_customer, decode_sale};
use crate::join::{
    JoinOutput, JoinRules, JoinState, JoinStats, Joiner, PendingSale, ProcessingTime,
};
use crate::metrics::Metrics;
use crate::output::{DeadLetterRecord, OutputError, OutputRecord};
use crate::source::{Position, ShardBatch, SourceRecord, StreamRole};
use crate::state::{RocksState, StateError};
use barrier::{Barrier, ShardKey};

/// Errors of the engine: only the state or a corrupt output can fail it; bad input never does.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("state: {0}")]
    State(#[from] StateError),
    #[error("encoding an output: {0}")]
    Output(#[from] OutputError),
}

/// The configured stream names (the offsets keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streams {
    pub customers: String,
    pub addresses: String,
    pub sales: String,
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub streams: Streams,
    pub rules: JoinRules,
    pub document_ids: DocumentIdTemplate,
    /// Commit at least this often while there is uncommitted work.
    pub commit_interval: Duration,
    /// Commit when this many outputs are waiting (bounds the overlay's memory).
    pub commit_max_outputs: usize,
    /// How often waiting sales are checked against their deadline.
    pub expire_interval: Duration,
    /// Stop reading sales while this many are held back by the barrier.
    pub max_held_sales: usize,
    /// Stop reading while the outbox holds this many undelivered entries.
    pub max_outbox_lag: u64,
    /// Whether this replica writes the dead letters of undecodable dimension records. Every
    /// replica reads the customers and addresses streams in full, so only one of them (ordinal
    /// 0) writes and counts each; the others skip the record with a debug line.
    pub dimension_dead_letters: bool,
}

impl EngineConfig {
    pub fn new(streams: Streams, rules: JoinRules, document_ids: DocumentIdTemplate) -> Self {
        Self {
            streams,
            rules,
            document_ids,
            commit_interval: Duration::from_millis(250),
            commit_max_outputs: 20_000,
            expire_interval: Duration::from_secs(1),
            max_held_sales: 50_000,
            max_outbox_lag: 2_000_000,
            dimension_dead_letters: true,
        }
    }
}

/// Control messages for the engine (reference data, the sources' shard sets).
#[derive(Debug)]
pub enum Control {
    /// A new items snapshot (every row); changed rows are applied, then re-joined.
    Items(BTreeMap<i64, Item>),
    Promos(BTreeMap<PromoId, Promo>),
    /// The dimension shards of `stream` being read or waiting to be read.
    ActiveShards {
        stream: String,
        shards: BTreeSet<String>,
    },
}

/// A row of a savepoint's dimension or reference state.
#[derive(Debug)]
pub enum RestoredRow {
    Customer(crate::events::Customer),
    Address(crate::events::Address),
    Item(Item),
    Promo(Promo),
}

/// What a commit changed, for whoever follows the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// The outbox's next sequence number after this commit.
    pub outbox_next: u64,
    /// Every committed position.
    pub positions: BTreeMap<ShardKey, Position>,
}

/// Wall-clock milliseconds since the epoch.
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The synchronous engine.
pub struct Core {
    joiner: Joiner<RocksState>,
    cfg: EngineConfig,
    barrier: Barrier,
    /// Sales batches read but not yet fully applied, in arrival order; `held_front` records
    /// of the front batch are applied already.
    held: VecDeque<ShardBatch>,
    held_front: usize,
    held_records: usize,
    /// Positions changed since the last commit.
    positions: BTreeMap<ShardKey, Position>,
    /// Every committed position.
    committed: BTreeMap<ShardKey, Position>,
    items: BTreeMap<i64, Item>,
    promos: BTreeMap<PromoId, Promo>,
    items_loaded: bool,
    promos_loaded: bool,
    metrics: Metrics,
    last_stats: JoinStats,
    /// `Instant` -> wall-clock ms, for the barrier.
    epoch: (Instant, i64),
    first_uncommitted: Option<Instant>,
    now_ms: Box<dyn Fn() -> i64 + Send>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("held_records", &self.held_records)
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

impl Core {
    pub fn new(
        state: RocksState,
        cfg: EngineConfig,
        metrics: Metrics,
    ) -> Result<Self, EngineError> {
        let committed = state
            .offsets()?
            .into_iter()
            .map(|(k, v)| (k, Position::decode(&v)))
            .collect();
        let barrier = Barrier::new([
            cfg.streams.customers.as_str(),
            cfg.streams.addresses.as_str(),
        ]);
        Ok(Self {
            joiner: Joiner::new(state, cfg.rules),
            cfg,
            barrier,
            held: VecDeque::new(),
            held_front: 0,
            held_records: 0,
            positions: BTreeMap::new(),
            committed,
            items: BTreeMap::new(),
            promos: BTreeMap::new(),
            items_loaded: false,
            promos_loaded: false,
            metrics,
            last_stats: JoinStats::default(),
            epoch: (Instant::now(), wall_ms()),
            first_uncommitted: None,
            now_ms: Box::new(wall_ms),
        })
    }

    /// Every committed position (where the sources resume).
    pub fn committed_positions(&self) -> &BTreeMap<ShardKey, Position> {
        &self.committed
    }

    /// Replace the processing-time clock (tests: deterministic deadlines).
    pub fn with_clock(mut self, now_ms: impl Fn() -> i64 + Send + 'static) -> Self {
        self.now_ms = Box::new(now_ms);
        self
    }

    pub fn state(&self) -> &RocksState {
        self.joiner.state()
    }

    pub fn held_records(&self) -> usize {
        self.held_records
    }

    pub fn stats(&self) -> JoinStats {
        self.joiner.stats()
    }

    fn wall_of(&self, at: Instant) -> i64 {
        let (base, base_ms) = self.epoch;
        let delta = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        if at >= base {
            base_ms.saturating_add(delta(at - base))
        } else {
            base_ms.saturating_sub(delta(base - at))
        }
    }

    fn now(&self) -> ProcessingTime {
        ProcessingTime::from_millis((self.now_ms)())
    }

    fn touched(&mut self) {
        self.first_uncommitted.get_or_insert_with(Instant::now);
    }

    pub fn control(&mut self, c: Control) -> Result<(), EngineError> {
        match c {
            Control::Items(rows) => {
                for (id, row) in &rows {
                    if self.items.get(id) != Some(row) {
                        let out = self.joiner.on_item(row.clone())?;
                        self.outputs(out)?;
                    }
                }
                self.metrics
                    .reference_rows
                    .with_label_values(&["items"])
                    .set(i64::try_from(rows.len()).unwrap_or(i64::MAX));
                self.items = rows;
                self.items_loaded = true;
            }
            Control::Promos(rows) => {
                for (id, row) in &rows {
                    if self.promos.get(id) != Some(row) {
                        let out = self.joiner.on_promo(row.clone())?;
                        self.outputs(out)?;
                    }
                }
                self.metrics
                    .reference_rows
                    .with_label_values(&["promos"])
                    .set(i64::try_from(rows.len()).unwrap_or(i64::MAX));
                self.promos = rows;
                self.promos_loaded = true;
            }
            Control::ActiveShards { stream, shards } => self.barrier.set_active(&stream, shards),
        }
        if self.items_loaded && self.promos_loaded {
            self.barrier.set_reference_ready();
        }
        self.touched();
        self.release()
    }

    /// A batch of the customers or addresses stream.
    pub fn apply_dimension(&mut self, batch: ShardBatch) -> Result<(), EngineError> {
        let role = batch.role;
        for rec in &batch.records {
            let out = match role {
                StreamRole::Customers => match decode_customer(&rec.data) {
                    Ok(c) => self.joiner.on_customer(c)?,
                    Err(e) => {
                        self.undecodable_dimension(&batch, rec, e.reason(), e.to_string())?;
                        continue;
                    }
                },
                StreamRole::Addresses => match decode_address(&rec.data) {
                    Ok(a) => self.joiner.on_address(a)?,
                    Err(e) => {
                        self.undecodable_dimension(&batch, rec, e.reason(), e.to_string())?;
                        continue;
                    }
                },
                StreamRole::Sales => return self.accept_sales(batch),
            };
            self.outputs(out)?;
        }
        self.metrics
            .records_in
            .with_label_values(&[role.as_str()])
            .inc_by(batch.records.len() as u64);
        let caught_up =
            (batch.millis_behind_latest == Some(0)).then(|| self.wall_of(batch.requested_at));
        self.barrier.applied(
            &batch.stream,
            &batch.shard_id,
            batch.records.last().and_then(|r| r.arrival_ms),
            caught_up,
            batch.shard_end,
        );
        self.advance(&batch, batch.records.last().map(|r| r.sequence.as_str()));
        self.touched();
        self.release()
    }

    /// A batch of the sales stream: held until the barrier releases its records.
    pub fn accept_sales(&mut self, batch: ShardBatch) -> Result<(), EngineError> {
        self.held_records += batch.records.len();
        self.held.push_back(batch);
        self.touched();
        self.release()
    }

    fn advance(&mut self, batch: &ShardBatch, last_seq: Option<&str>) {
        let key = (batch.stream.clone(), batch.shard_id.clone());
        if batch.shard_end {
            self.positions.insert(key, Position::Finished);
        } else if let Some(seq) = last_seq {
            self.positions.insert(key, Position::After(seq.to_string()));
        }
    }

    /// Apply every held sale the barrier allows, in order.
    fn release(&mut self) -> Result<(), EngineError> {
        let below = self.barrier.release_below();
        while let Some(batch) = self.held.pop_front() {
            let fallback = self.wall_of(batch.requested_at);
            let mut i = self.held_front;
            while let Some(rec) = batch.records.get(i) {
                if rec.arrival_ms.unwrap_or(fallback) >= below {
                    break;
                }
                self.apply_sale(&batch, rec)?;
                i += 1;
            }
            let applied = i - self.held_front;
            self.held_records -= applied;
            self.metrics
                .records_in
                .with_label_values(&[StreamRole::Sales.as_str()])
                .inc_by(applied as u64);
            if i < batch.records.len() {
                if applied > 0 {
                    let seq = batch.records[i - 1].sequence.clone();
                    self.positions.insert(
                        (batch.stream.clone(), batch.shard_id.clone()),
                        Position::After(seq),
                    );
                }
                self.held_front = i;
                self.held.push_front(batch);
                break;
            }
            self.held_front = 0;
            self.advance(&batch, batch.records.last().map(|r| r.sequence.as_str()));
        }
        self.metrics
            .barrier_held
            .set(i64::try_from(self.held_records).unwrap_or(i64::MAX));
        Ok(())
    }

    fn apply_sale(&mut self, batch: &ShardBatch, rec: &SourceRecord) -> Result<(), EngineError> {
        match decode_sale(&rec.data) {
            Ok(sale) => {
                let now = self.now();
                let out = self.joiner.on_sale(sale, now)?;
                self.outputs(out)
            }
            Err(e) => self.undecodable(batch, rec, e.reason(), e.to_string()),
        }
    }

    /// An undecodable dimension record: dead-lettered by the one replica that writes them.
    fn undecodable_dimension(
        &mut self,
        batch: &ShardBatch,
        rec: &SourceRecord,
        reason: &str,
        detail: String,
    ) -> Result<(), EngineError> {
        if self.cfg.dimension_dead_letters {
            return self.undecodable(batch, rec, reason, detail);
        }
        tracing::debug!(stream = %batch.stream, shard = %batch.shard_id, seq = %rec.sequence,
            reason, "undecodable dimension record, dead-lettered by replica 0");
        Ok(())
    }

    fn undecodable(
        &mut self,
        batch: &ShardBatch,
        rec: &SourceRecord,
        reason: &str,
        detail: String,
    ) -> Result<(), EngineError> {
        tracing::debug!(stream = %batch.stream, shard = %batch.shard_id, seq = %rec.sequence,
            reason, "undecodable record to dead-letter");
        self.metrics.dead_letters.with_label_values(&[reason]).inc();
        let record =
            DeadLetterRecord::undecodable(&batch.stream, &batch.shard_id, rec, reason, detail);
        let encoded = OutputRecord::DeadLetter(record).encode()?;
        self.joiner.state_mut().push_output(&encoded)?;
        Ok(())
    }

    fn outputs(&mut self, out: Vec<JoinOutput>) -> Result<(), EngineError> {
        for o in out {
            let record = match o {
                JoinOutput::Emit(doc) => {
                    self.metrics.documents_out.inc();
                    if !doc.join_flags.is_empty() {
                        self.metrics.documents_flagged.inc();
                    }
                    let ids = &self.cfg.document_ids;
                    self.joiner.state_mut().push_output_with(|out| {
                        OutputRecord::write_sale(out, &doc, ids).map_err(EngineError::from)
                    })?;
                    continue;
                }
                JoinOutput::DeadLetter(dl) => {
                    self.metrics
                        .dead_letters
                        .with_label_values(&[dl.reason.as_str()])
                        .inc();
                    OutputRecord::DeadLetter(DeadLetterRecord::expired(&dl))
                }
            };
            let encoded = record.encode()?;
            self.joiner.state_mut().push_output(&encoded)?;
        }
        Ok(())
    }

    /// Restore: a dimension or reference row as it was in a savepoint (stored as is: the
    /// savepoint's versions are already compacted, and nothing waits yet).
    pub fn restore_row(&mut self, row: RestoredRow) -> Result<(), EngineError> {
        let state = self.joiner.state_mut();
        match row {
            RestoredRow::Customer(c) => state.put_customer(c)?,
            RestoredRow::Address(a) => state.put_address(a)?,
            RestoredRow::Item(i) => state.put_item(i)?,
            RestoredRow::Promo(p) => state.put_promo(p)?,
        }
        self.touched();
        Ok(())
    }

    /// Restore: a waiting sale of a savepoint, re-evaluated against the restored rows.
    pub fn restore_pending(&mut self, p: PendingSale) -> Result<(), EngineError> {
        let out = self.joiner.restore_pending(p)?;
        self.touched();
        self.outputs(out)
    }

    /// Restore: the positions the restored state resumes from (committed by the next
    /// [`Core::commit`]).
    pub fn restore_positions(&mut self, positions: BTreeMap<ShardKey, Position>) {
        self.positions.extend(positions);
        self.touched();
    }

    /// Join or dead-letter every waiting sale whose deadline has passed.
    pub fn expire(&mut self) -> Result<(), EngineError> {
        let now = self.now();
        let out = self.joiner.expire(now)?;
        if !out.is_empty() {
            self.touched();
        }
        self.outputs(out)
    }

    /// Whether a commit is due.
    pub fn commit_due(&self) -> bool {
        self.first_uncommitted
            .is_some_and(|t| t.elapsed() >= self.cfg.commit_interval)
            || self.state().pending_outputs() >= self.cfg.commit_max_outputs
    }

    /// When the next commit will be due (if anything is uncommitted).
    pub fn commit_deadline(&self) -> Option<Instant> {
        self.first_uncommitted.map(|t| t + self.cfg.commit_interval)
    }

    /// Commit state, positions and outputs in one write.
    pub fn commit(&mut self) -> Result<Committed, EngineError> {
        let started = Instant::now();
        let encoded: BTreeMap<(String, String), String> = self
            .positions
            .iter()
            .map(|(k, p)| (k.clone(), p.encode()))
            .collect();
        self.joiner.state_mut().commit(&encoded)?;
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        let stats = self.joiner.stats();
        self.metrics
            .versions_compacted
            .inc_by(stats.versions_compacted - self.last_stats.versions_compacted);
        self.last_stats = stats;
        self.first_uncommitted = None;
        self.committed.append(&mut self.positions);
        Ok(Committed {
            outbox_next: self.state().outbox_next(),
            positions: self.committed.clone(),
        })
    }

    /// Refresh the gauges that need a scan of the state (call every few seconds).
    pub fn refresh_gauges(&self) {
        self.metrics.refresh_peak_rss();
        if let Ok((pending, _, _)) = self.state().pending_counts() {
            self.metrics
                .join_waiting
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
        }
        self.metrics
            .set_state_properties(&self.state().properties());
    }
}

/// The engine's channels.
#[derive(Debug)]
pub struct Inputs {
    pub dimensions: mpsc::Receiver<ShardBatch>,
    pub sales: mpsc::Receiver<ShardBatch>,
    pub control: mpsc::Receiver<Control>,
    /// The slowest sink's cursor (for backpressure).
    pub delivered: watch::Receiver<u64>,
    /// Set to true to stop: the engine commits what it applied and returns.
    pub stop: watch::Receiver<bool>,
    /// Set to true to pause (for a savepoint): the engine commits what it applied, then
    /// applies nothing (no input, no reference data, no deadlines) until it is set back to
    /// false. The sources keep their channels full meanwhile and the positions stay where the
    /// commit left them.
    pub pause: watch::Receiver<bool>,
    /// The engine's answer: true once paused and committed, false once running again.
    pub paused: watch::Sender<bool>,
}

enum Event {
    Stop,
    Control(Control),
    Dimension(ShardBatch),
    Sales(ShardBatch),
    Tick,
}

/// Drive `core` until stopped or every input is closed; publishes each commit on `committed`.
/// Call it on a dedicated thread (it blocks).
pub fn run(
    mut core: Core,
    mut inputs: Inputs,
    committed: &watch::Sender<Committed>,
    handle: &tokio::runtime::Handle,
) -> Result<Core, EngineError> {
    let mut next_expire = Instant::now() + core.cfg.expire_interval;
    let mut next_gauges = Instant::now();
    let mut paused_logged = false;
    // Whether anyone can still pause or resume the engine (a closed channel means never again).
    let mut pause_open = true;
    loop {
        if pause_open && *inputs.pause.borrow_and_update() {
            let c = core.commit()?;
            committed.send_replace(c);
            inputs.paused.send_replace(true);
            tracing::info!("paused: committed, applying nothing until resumed");
            let stop = handle.block_on(async {
                loop {
                    tokio::select! {
                        biased;
                        r = inputs.stop.changed() => if r.is_err() || *inputs.stop.borrow() {
                            return true;
                        },
                        r = inputs.pause.changed() => match r {
                            Err(_) => {
                                pause_open = false;
                                return false;
                            }
                            Ok(()) if !*inputs.pause.borrow() => return false,
                            Ok(()) => {}
                        },
                    }
                }
            });
            inputs.paused.send_replace(false);
            if stop {
                return Ok(core);
            }
            tracing::info!("resumed");
            // Deadlines that passed while paused fire on the next tick.
            continue;
        }
        let outbox_next = core.state().outbox_next();
        let delivered = *inputs.delivered.borrow();
        let lag = outbox_next.saturating_sub(delivered);
        core.metrics
            .outbox_lag
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
        let paused = lag >= core.cfg.max_outbox_lag;
        core.metrics.backpressure.set(i64::from(paused));
        if paused && !paused_logged {
            tracing::warn!(lag, "sinks are behind: reading paused until they catch up");
        }
        paused_logged = paused;
        let accept_sales = !paused && core.held_records < core.cfg.max_held_sales;
        let wake = core
            .commit_deadline()
            .map_or(next_expire, |d| d.min(next_expire));
        let event = handle.block_on(async {
            tokio::select! {
                biased;
                r = inputs.stop.changed() => match r {
                    Ok(()) if !*inputs.stop.borrow() => Event::Tick,
                    _ => Event::Stop,
                },
                r = inputs.pause.changed(), if pause_open => {
                    pause_open = r.is_ok();
                    Event::Tick
                },
                Some(c) = inputs.control.recv() => Event::Control(c),
                Some(b) = inputs.dimensions.recv(), if !paused => Event::Dimension(b),
                Some(b) = inputs.sales.recv(), if accept_sales => Event::Sales(b),
                _ = inputs.delivered.changed(), if paused => Event::Tick,
                () = tokio::time::sleep_until(wake.into()) => Event::Tick,
            }
        });
        match event {
            Event::Stop => {
                let c = core.commit()?;
                committed.send_replace(c);
                return Ok(core);
            }
            Event::Control(c) => core.control(c)?,
            Event::Dimension(b) => core.apply_dimension(b)?,
            Event::Sales(b) => core.accept_sales(b)?,
            Event::Tick => {}
        }
        let now = Instant::now();
        if now >= next_expire {
            core.expire()?;
            next_expire = now + core.cfg.expire_interval;
        }
        if core.commit_due() {
            let c = core.commit()?;
            committed.send_replace(c);
        }
        if now >= next_gauges {
            core.refresh_gauges();
            next_gauges = now + Duration::from_secs(5);
        }
    }
}
