//! When a sale may be joined: only once every dimension record that was in its stream when the
//! sale was written has been applied.
//!
//! Each stream is read by its own tasks, at their own pace; without this rule a sale could be
//! joined before a customer update written a second before it, simply because the customers
//! reader was slower, and the document would depend on timing. The rule makes it depend only on
//! the order the producers wrote in:
//!
//! * every dimension shard has a **frontier** `f`: all of its records that arrived before `f`
//!   (Kinesis' ApproximateArrivalTimestamp, ms) have been applied. A batch ending with a
//!   record that arrived at `a` moves `f` to `a` (records of a shard arrive in order); a read
//!   that found the shard caught up (`millisBehindLatest == 0`) moves it to the instant the
//!   read started; a finished shard has no bound;
//! * a sale that arrived at `a` is released when `a` is below the frontier of every dimension
//!   shard the sources are reading or about to read (a child shard not yet read holds sales
//!   back, so a reshard cannot let a sale overtake an update);
//! * until the sources have listed their shards and the reference data has loaded once, no
//!   sale is released.
//!
//! Idle dimension streams are polled, so their frontier follows the clock: the price is up to
//! one idle poll interval of extra latency per sale. Dimension versions that arrive *after* a
//! sale with an earlier event time (a producer that sends late) are not covered by any
//! ordering rule; the join's wait and its `*_after_sale` flags handle the first version, and
//! later ones cannot re-emit a document (see [`crate::join`]).

use std::collections::{BTreeMap, BTreeSet};

/// `(stream, shard)`.
pub type ShardKey = (String, String);

#[derive(Debug, Default)]
pub struct Barrier {
    /// Per stream: the dimension shards being read or waiting to be read; `None` until the
    /// source has listed the stream once.
    active: BTreeMap<String, Option<BTreeSet<String>>>,
    frontiers: BTreeMap<ShardKey, i64>,
    reference_ready: bool,
}

impl Barrier {
    /// A barrier over these dimension streams (names as configured).
    pub fn new<'a>(dimension_streams: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            active: dimension_streams
                .into_iter()
                .map(|s| (s.to_string(), None))
                .collect(),
            ..Self::default()
        }
    }

    /// The source's current set of dimension shards of `stream` (read or to be read).
    pub fn set_active(&mut self, stream: &str, shards: BTreeSet<String>) {
        self.frontiers
            .retain(|(s, shard), _| s != stream || shards.contains(shard));
        self.active.insert(stream.to_string(), Some(shards));
    }

    pub fn set_reference_ready(&mut self) {
        self.reference_ready = true;
    }

    /// A dimension batch has been applied.
    pub fn applied(
        &mut self,
        stream: &str,
        shard: &str,
        last_arrival_ms: Option<i64>,
        caught_up_at_ms: Option<i64>,
        shard_end: bool,
    ) {
        let f = self
            .frontiers
            .entry((stream.to_string(), shard.to_string()))
            .or_insert(i64::MIN);
        if shard_end {
            *f = i64::MAX;
            return;
        }
        for candidate in [last_arrival_ms, caught_up_at_ms].into_iter().flatten() {
            *f = (*f).max(candidate);
        }
    }

    /// Every sale that arrived strictly before this may be joined (`i64::MIN`: none).
    pub fn release_below(&self) -> i64 {
        if !self.reference_ready {
            return i64::MIN;
        }
        let mut low = i64::MAX;
        for (stream, shards) in &self.active {
            let Some(shards) = shards else {
                return i64::MIN;
            };
            for shard in shards {
                let f = self
                    .frontiers
                    .get(&(stream.clone(), shard.clone()))
                    .copied()
                    .unwrap_or(i64::MIN);
                low = low.min(f);
            }
        }
        low
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(xs: &[&str]) -> BTreeSet<String> {
        xs.iter().map(|s| (*s).to_string()).collect()
    }

    fn ready() -> Barrier {
        let mut b = Barrier::new(["c", "a"]);
        b.set_reference_ready();
        b.set_active("c", set(&["c0", "c1"]));
        b.set_active("a", set(&["a0"]));
        b
    }

    #[test]
    fn nothing_is_released_before_listing_and_reference_data() {
        let mut b = Barrier::new(["c"]);
        b.applied("c", "c0", None, Some(100), false);
        assert_eq!(b.release_below(), i64::MIN);
        b.set_active("c", set(&["c0"]));
        assert_eq!(b.release_below(), i64::MIN, "reference data not loaded");
        b.set_reference_ready();
        assert_eq!(b.release_below(), 100);
    }

    #[test]
    fn the_slowest_shard_decides() {
        let mut b = ready();
        b.applied("c", "c0", Some(50), None, false);
        b.applied("a", "a0", None, Some(200), false);
        assert_eq!(b.release_below(), i64::MIN, "c1 not read yet");
        b.applied("c", "c1", Some(70), None, false);
        assert_eq!(b.release_below(), 50);
        b.applied("c", "c0", None, Some(300), false);
        assert_eq!(b.release_below(), 70);
    }

    #[test]
    fn frontiers_never_move_back() {
        let mut b = ready();
        for s in ["c0", "c1"] {
            b.applied("c", s, None, Some(500), false);
        }
        b.applied("a", "a0", Some(400), None, false);
        b.applied("a", "a0", Some(300), None, false);
        assert_eq!(b.release_below(), 400);
    }

    #[test]
    fn a_child_not_yet_read_holds_sales_back_and_a_finished_parent_does_not() {
        let mut b = ready();
        for s in ["c0", "c1"] {
            b.applied("c", s, None, Some(500), false);
        }
        b.applied("a", "a0", None, Some(500), false);
        assert_eq!(b.release_below(), 500);
        // a0 is split into a1 and a2: the source lists the children before a0 ends.
        b.set_active("a", set(&["a0", "a1", "a2"]));
        b.applied("a", "a0", Some(510), None, true);
        assert_eq!(b.release_below(), i64::MIN);
        b.applied("a", "a1", None, Some(600), false);
        b.applied("a", "a2", None, Some(650), false);
        assert_eq!(b.release_below(), 500);
        // The source drops the finished parent.
        b.set_active("a", set(&["a1", "a2"]));
        for s in ["c0", "c1"] {
            b.applied("c", s, None, Some(700), false);
        }
        assert_eq!(b.release_below(), 600);
    }
}
