//! A counting filter over the keys of the pending sales.
//!
//! Every sale asks whether its line is already waiting (a producer retry or a correction
//! replaces the waiting record). Almost never is it, and a RocksDB look-up to learn that was
//! a few percent of the engine's time. A zero counter proves the key is absent, so only the
//! rare non-zero ones are looked up.
//!
//! Exactness rests on the callers: a counter goes up when a key becomes pending and down when
//! it stops being pending, never otherwise ([`super::RocksState`] checks before it writes). A
//! counter that reaches 255 stays there (it can no longer count down safely): that only costs
//! look-ups. Collisions, likewise, only cost look-ups.

use crate::events::SaleKey;

const BITS: u32 = 20;

pub(super) struct PendingFilter {
    counts: Vec<u8>,
}

impl Default for PendingFilter {
    fn default() -> Self {
        Self {
            counts: vec![0; 1 << BITS],
        }
    }
}

fn slot(key: SaleKey) -> usize {
    // The sign bits are kept by the casts; the multiply spreads them to the top bits.
    #[allow(clippy::cast_sign_loss)]
    let h = (key.order_id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (key.item_id as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    (h.wrapping_mul(0x1656_67b1_9e37_79f9) >> (64 - BITS)) as usize
}

impl PendingFilter {
    /// Whether `key` may be pending (`false`: it is not).
    pub(super) fn may_contain(&self, key: SaleKey) -> bool {
        self.counts[slot(key)] != 0
    }

    pub(super) fn added(&mut self, key: SaleKey) {
        let c = &mut self.counts[slot(key)];
        *c = c.saturating_add(1);
    }

    pub(super) fn removed(&mut self, key: SaleKey) {
        let c = &mut self.counts[slot(key)];
        if *c != u8::MAX {
            *c = c.saturating_sub(1);
        }
    }

    pub(super) fn clear(&mut self) {
        self.counts.fill(0);
    }

    /// Every key "may" be pending.
    pub(super) fn saturate(&mut self) {
        self.counts.fill(u8::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_and_down_and_saturates_safely() {
        let mut f = PendingFilter::default();
        let k = |o, i| SaleKey {
            order_id: o,
            item_id: i,
        };
        assert!(!f.may_contain(k(1, 2)));
        f.added(k(1, 2));
        f.added(k(-7, i64::MAX));
        assert!(f.may_contain(k(1, 2)) && f.may_contain(k(-7, i64::MAX)));
        f.removed(k(1, 2));
        assert!(!f.may_contain(k(1, 2)) || slot(k(1, 2)) == slot(k(-7, i64::MAX)));
        // Saturated: stays "maybe" whatever is removed after.
        for _ in 0..300 {
            f.added(k(5, 5));
        }
        for _ in 0..300 {
            f.removed(k(5, 5));
        }
        assert!(f.may_contain(k(5, 5)));
        // Keys spread: 10,000 sequential lines fill many slots.
        let mut f = PendingFilter::default();
        for o in 0..10_000 {
            f.added(k(o, o % 7));
        }
        let used = f.counts.iter().filter(|c| **c != 0).count();
        assert!(used > 9_900, "{used}");
    }
}
