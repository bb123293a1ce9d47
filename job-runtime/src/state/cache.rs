//! Decoded copies of committed dimension and reference rows, in front of RocksDB.
//!
//! A sale looks up four versioned rows (two customers, two addresses) and two reference rows;
//! without a cache each lookup opens a RocksDB iterator, seeks, and decodes JSON again. The
//! cache holds, per id, every version already decoded and rendered (so "the version valid at
//! `t`" is a binary search), and reference rows by id (misses included).
//!
//! Coherence: a version entry is the id's current view, committed data with the batch's
//! writes applied (maintained by `super::versions`); a reference row entry holds committed
//! data only (a write removes it, and reads of an id with an overlay write bypass it). An
//! abort clears every cache. Each map is bounded by [`CAPACITY`] ids: when full it is cleared
//! (cheap, and a hot working set refills it at once).

use std::sync::Arc;

/// foldhash: fast for short keys, and seeded per process (ids come from the streams).
type HashMap<K, V> = foldhash::HashMap<K, V>;

/// Ids kept per map before it is cleared.
pub(super) const CAPACITY: usize = 200_000;

/// Every committed version of one id, sorted by event time (microseconds).
pub(super) type Versions<T> = Arc<Vec<(i64, T)>>;

#[derive(Debug)]
pub(super) struct VersionCache<T> {
    map: HashMap<String, Versions<T>>,
}

impl<T> Default for VersionCache<T> {
    fn default() -> Self {
        Self {
            map: HashMap::default(),
        }
    }
}

impl<T> VersionCache<T> {
    pub(super) fn get(&self, id: &str) -> Option<Versions<T>> {
        self.map.get(id).cloned()
    }

    pub(super) fn insert(&mut self, id: &str, versions: Versions<T>) {
        if self.map.len() >= CAPACITY {
            self.map.clear();
        }
        self.map.insert(id.to_string(), versions);
    }

    /// The entry of `id`, to apply a write to it.
    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Versions<T>> {
        self.map.get_mut(id)
    }

    pub(super) fn clear(&mut self) {
        self.map.clear();
    }
}

/// The version with the greatest time `<= at`.
pub(super) fn at<T>(versions: &[(i64, T)], at: i64) -> Option<&T> {
    let i = versions.partition_point(|(t, _)| *t <= at);
    i.checked_sub(1).map(|i| &versions[i].1)
}

/// Reference rows by id (`K`: an item or a promo id); `None` caches a miss.
#[derive(Debug)]
pub(super) struct RowCache<K, T> {
    map: HashMap<K, Option<T>>,
}

impl<K, T> Default for RowCache<K, T> {
    fn default() -> Self {
        Self {
            map: HashMap::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, T: Clone> RowCache<K, T> {
    pub(super) fn get(&self, id: &K) -> Option<Option<T>> {
        self.map.get(id).cloned()
    }

    pub(super) fn insert(&mut self, id: &K, row: Option<T>) {
        if self.map.len() >= CAPACITY {
            self.map.clear();
        }
        self.map.insert(id.clone(), row);
    }

    pub(super) fn invalidate(&mut self, id: &K) {
        self.map.remove(id);
    }

    pub(super) fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_picks_the_greatest_time_not_after() {
        let v = vec![(10, 'a'), (20, 'b'), (30, 'c')];
        assert_eq!(at(&v, 5), None);
        assert_eq!(at(&v, 10), Some(&'a'));
        assert_eq!(at(&v, 25), Some(&'b'));
        assert_eq!(at(&v, i64::MAX), Some(&'c'));
        assert_eq!(at::<char>(&[], 0), None);
    }

    #[test]
    fn a_full_cache_starts_over() {
        let mut c = VersionCache::<u8>::default();
        for i in 0..CAPACITY {
            c.insert(&i.to_string(), Arc::new(vec![]));
        }
        assert!(c.get("0").is_some());
        c.insert("new", Arc::new(vec![(1, 1)]));
        assert!(c.get("0").is_none());
        assert!(c.get("new").is_some());
    }
}
