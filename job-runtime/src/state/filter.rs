//! Filters that spare RocksDB look-ups and iterators whose answer is almost always "nothing".
//!
//! Both kinds answer "may contain" over a 64-bit hash of a key: `false` proves the key is
//! absent, so only the rare `true` answers go to RocksDB. Neither ever answers `false` for a
//! present key; collisions (and saturated counters) only cost look-ups.
//!
//! # Counting filters ([`CountingFilter`])
//!
//! For sets whose members come and go:
//!
//! * **pending sales**, keyed by the sale line ([`sale_hash`]): every sale asks whether its
//!   line is already waiting (a producer retry or a correction replaces the waiting record).
//!   Almost never is it, and a point look-up to learn that was a few percent of the engine's
//!   time.
//! * **the waiting index**, keyed by the *missing key* (`kind | id`, the prefix its entries
//!   share, hashed with [`bytes_hash`]): every dimension or reference version asks which sales
//!   wait for it. Almost always none does, and the iterator (creation and seek) opened to
//!   learn that was about 5% of the engine benchmark. The counter of a missing key counts the
//!   sales waiting for it.
//!
//! Exactness rests on the callers: a counter goes up when a key becomes present and down when
//! it stops being present, never otherwise ([`super::RocksState`] checks before it writes, and
//! reloads the filter from the committed state when a batch is aborted). A counter that
//! reaches 255 stays there (it can no longer count down safely): that only costs look-ups.
//!
//! # Bit filters ([`BitFilter`])
//!
//! For sets that only grow: the ids of a versioned dimension that may have versions
//! (compaction keeps an id's newest version, so an id never loses all of them). The first
//! version of every customer and address reads the id's versions before storing it; the bit
//! spares that read its iterator. A bit set by a write that is then aborted stays set: a false
//! positive, which only costs the seek.

use std::hash::BuildHasher;

use crate::events::SaleKey;

/// Slots of the counting filters (1 MiB each).
pub(super) const COUNTING_BITS: u32 = 20;
/// Bits of a version id filter (1 MiB each).
pub(super) const ID_BITS: u32 = 23;

/// The slot of `hash` among `2^bits`: the multiply spreads every input bit to the top bits.
fn slot(hash: u64, bits: u32) -> usize {
    (hash.wrapping_mul(0x1656_67b1_9e37_79f9) >> (64 - bits)) as usize
}

/// The hash of a sale line, for the pending filter.
// The sign bits are kept by the casts; `slot`'s multiply spreads them to the top bits.
#[allow(clippy::cast_sign_loss)]
pub(super) fn sale_hash(key: SaleKey) -> u64 {
    (key.order_id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (key.item_id as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
}

/// The hash of a byte string (an encoded missing key, a dimension id). Fixed-seed: the same in
/// every process (foldhash's default hasher is seeded per process; a filter only needs the
/// same hash within one process, but a fixed one keeps tests and profiles reproducible).
pub(super) fn bytes_hash(bytes: &[u8]) -> u64 {
    const STATE: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0);
    STATE.hash_one(bytes)
}

/// Saturating `u8` counters over `2^COUNTING_BITS` slots.
pub(super) struct CountingFilter {
    counts: Vec<u8>,
}

impl Default for CountingFilter {
    fn default() -> Self {
        Self {
            counts: vec![0; 1 << COUNTING_BITS],
        }
    }
}

impl CountingFilter {
    /// Whether the key of `hash` may be present (`false`: it is not).
    pub(super) fn may_contain(&self, hash: u64) -> bool {
        self.counts[slot(hash, COUNTING_BITS)] != 0
    }

    /// The key of `hash` became present (it was not).
    pub(super) fn added(&mut self, hash: u64) {
        let c = &mut self.counts[slot(hash, COUNTING_BITS)];
        *c = c.saturating_add(1);
    }

    /// The key of `hash` stopped being present (it was).
    pub(super) fn removed(&mut self, hash: u64) {
        let c = &mut self.counts[slot(hash, COUNTING_BITS)];
        if *c != u8::MAX {
            *c = c.saturating_sub(1);
        }
    }

    pub(super) fn clear(&mut self) {
        self.counts.fill(0);
    }

    /// Every key "may" be present.
    pub(super) fn saturate(&mut self) {
        self.counts.fill(u8::MAX);
    }
}

/// One bit per slot over `2^ID_BITS` slots, only ever set.
pub(super) struct BitFilter {
    words: Vec<u64>,
}

impl Default for BitFilter {
    fn default() -> Self {
        Self {
            words: vec![0; (1 << ID_BITS) / 64],
        }
    }
}

impl BitFilter {
    /// Whether the key of `hash` may have been inserted (`false`: it was not).
    pub(super) fn may_contain(&self, hash: u64) -> bool {
        let s = slot(hash, ID_BITS);
        self.words[s / 64] & (1 << (s % 64)) != 0
    }

    pub(super) fn insert(&mut self, hash: u64) {
        let s = slot(hash, ID_BITS);
        self.words[s / 64] |= 1 << (s % 64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_and_down_and_saturates_safely() {
        let mut f = CountingFilter::default();
        let k = |o, i| {
            sale_hash(SaleKey {
                order_id: o,
                item_id: i,
            })
        };
        assert!(!f.may_contain(k(1, 2)));
        f.added(k(1, 2));
        f.added(k(-7, i64::MAX));
        assert!(f.may_contain(k(1, 2)) && f.may_contain(k(-7, i64::MAX)));
        f.removed(k(1, 2));
        assert!(
            !f.may_contain(k(1, 2))
                || slot(k(1, 2), COUNTING_BITS) == slot(k(-7, i64::MAX), COUNTING_BITS)
        );
        // Saturated: stays "maybe" whatever is removed after.
        for _ in 0..300 {
            f.added(k(5, 5));
        }
        for _ in 0..300 {
            f.removed(k(5, 5));
        }
        assert!(f.may_contain(k(5, 5)));
        f.clear();
        assert!(!f.may_contain(k(5, 5)));
        f.saturate();
        assert!(f.may_contain(k(1, 2)));
        // Keys spread: 10,000 sequential lines fill many slots.
        let mut f = CountingFilter::default();
        for o in 0..10_000 {
            f.added(k(o, o % 7));
        }
        let used = f.counts.iter().filter(|c| **c != 0).count();
        assert!(used > 9_900, "{used}");
    }

    #[test]
    fn byte_keys_count_and_spread() {
        // Encoded missing keys of sequential ids differ in few bytes: they still spread.
        let key = |i: u32| {
            let mut k = vec![0];
            super::super::keys::put_str(&mut k, &format!("C{i}"));
            k
        };
        assert_eq!(bytes_hash(&key(1)), bytes_hash(&key(1)), "deterministic");
        let mut f = CountingFilter::default();
        for i in 0..10_000 {
            f.added(bytes_hash(&key(i)));
        }
        let used = f.counts.iter().filter(|c| **c != 0).count();
        assert!(used > 9_900, "{used}");
        for i in 0..10_000 {
            assert!(f.may_contain(bytes_hash(&key(i))));
            f.removed(bytes_hash(&key(i)));
        }
        assert!(f.counts.iter().all(|c| *c == 0), "back to empty");
    }

    #[test]
    fn bits_are_only_set_and_spread() {
        let mut f = BitFilter::default();
        let h = |id: &str| bytes_hash(id.as_bytes());
        assert!(!f.may_contain(h("C1")));
        f.insert(h("C1"));
        f.insert(h("C1"));
        assert!(f.may_contain(h("C1")));
        for i in 0..10_000 {
            f.insert(h(&format!("A{i}")));
        }
        for i in 0..10_000 {
            assert!(f.may_contain(h(&format!("A{i}"))));
        }
        // Few false positives among ids never inserted (about 10,000 / 2^23 expected).
        let false_positives = (0..10_000)
            .filter(|i| f.may_contain(h(&format!("B{i}"))))
            .count();
        assert!(false_positives < 20, "{false_positives}");
    }
}
