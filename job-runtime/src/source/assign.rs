//! Which replica reads which sales shard.
//!
//! # The rule
//!
//! The hash key space `[0, 2^128)` is cut into `replicas` equal slices, and a shard belongs to
//! the slice that holds the *middle* of its hash key range:
//! `owner = floor(mid * replicas / 2^128)` with `mid = start + (end - start) / 2`. Every replica
//! computes the same answer from what ListShards returns, its StatefulSet ordinal (the numeric
//! suffix of its pod name) and the replica count in the job configuration, so no lease table and
//! no coordination service is needed; every shard has exactly one owner because the slices
//! partition the key space.
//!
//! Why the middle and not the starting hash key: Kinesis cuts the key space with integer
//! division, so shard boundaries sit a few units *below* the exact fractions (AWS puts the second
//! of three shards at `floor(2^128 / 3)`, kinesis-mock puts the third of four at `2^127 - 2`). With
//! the starting key, such a shard lands in the slice below: three shards over three replicas
//! would give replica 0 two shards and replica 2 none. The middle of a range is far from any slice
//! boundary whenever the shards are evenly sized, so evenly sized shards spread evenly.
//!
//! # Resharding
//!
//! Kinesis guarantees per-key order only if a parent shard is read to its end before its children.
//! The rule keeps that local in the common case and falls back to S3 markers otherwise:
//!
//! - **Split.** Each child lies inside its parent. When the shards are evenly sized and their
//!   count is a multiple of the replica count (for example UpdateShardCount doubling 2 shards
//!   over 2 replicas), each child's middle stays in the parent's slice, so the parent's owner
//!   reads both children and finishes the parent first with local knowledge (its own committed
//!   positions). Otherwise (one shard split for two replicas, uneven split points) a child may
//!   land in another slice, and its parent is then *foreign* to its owner.
//! - **Merge.** The child covers both parents, which may belong to different replicas (always so
//!   when the merge spans a slice boundary): at least one parent is then *foreign*.
//!
//! The owner of a child cannot see another replica's RocksDB, so a foreign parent is known to be
//! finished through a marker object in S3 that its owner publishes after committing the parent's
//! end (see [`super::coordination`]); a parent no longer listed (trimmed) counts as finished.
//!
//! The arithmetic is done in `u128` without overflow (the product `key * replicas` does not fit,
//! so it is computed in 64-bit halves).

/// Errors of this module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AssignError {
    #[error("pod name {0:?} does not end in -<ordinal>")]
    PodName(String),
    #[error("replica count must be at least 1, got {0}")]
    Replicas(i64),
    #[error("ordinal {ordinal} is not below the replica count {replicas}")]
    Ordinal { ordinal: u32, replicas: u32 },
    #[error("hash key {0:?} is not a decimal number below 2^128")]
    HashKey(String),
}

/// `floor(key * replicas / 2^128)`: the slice holding `key`; always below `replicas` (for
/// `replicas >= 1`).
pub fn owner(key: u128, replicas: u32) -> u32 {
    let r = u128::from(replicas);
    let hi = key >> 64;
    let lo = key & u128::from(u64::MAX);
    // key * r = hi * r * 2^64 + lo * r; divide by 2^128 in two steps of 2^64. Both products fit
    // (each factor is below 2^64 and r below 2^32), and the fractional part dropped in the first
    // step cannot change the floor of the second.
    let upper = hi * r + ((lo * r) >> 64);
    // upper < r * 2^64, so the quotient is below r and fits in u32.
    u32::try_from(upper >> 64).unwrap_or(u32::MAX)
}

/// The middle of a hash key range (`start <= end`; tolerant of a reversed pair).
pub fn midpoint(start: u128, end: u128) -> u128 {
    let (lo, hi) = if start <= end {
        (start, end)
    } else {
        (end, start)
    };
    lo + (hi - lo) / 2
}

/// The owner of the shard covering `[start, end]`.
pub fn owner_of_range(start: u128, end: u128, replicas: u32) -> u32 {
    owner(midpoint(start, end), replicas)
}

/// A Kinesis hash key (a decimal string).
pub fn parse_hash_key(s: &str) -> Result<u128, AssignError> {
    s.parse::<u128>()
        .map_err(|_| AssignError::HashKey(s.to_string()))
}

/// The StatefulSet ordinal from a pod name `<statefulset>-<N>`.
pub fn ordinal_from_pod_name(pod_name: &str) -> Result<u32, AssignError> {
    let err = || AssignError::PodName(pod_name.to_string());
    let (prefix, n) = pod_name.rsplit_once('-').ok_or_else(err)?;
    if prefix.is_empty() || n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    n.parse::<u32>().map_err(|_| err())
}

/// This replica's place among the replicas that split the sales shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    ordinal: u32,
    replicas: u32,
}

impl Assignment {
    pub fn new(ordinal: u32, replicas: i64) -> Result<Self, AssignError> {
        let replicas = u32::try_from(replicas)
            .ok()
            .filter(|r| *r >= 1)
            .ok_or(AssignError::Replicas(replicas))?;
        if ordinal >= replicas {
            return Err(AssignError::Ordinal { ordinal, replicas });
        }
        Ok(Self { ordinal, replicas })
    }

    /// From the pod name (`TRIBUTARY_POD_NAME`) and the configured replica count.
    pub fn from_pod_name(pod_name: &str, replicas: i64) -> Result<Self, AssignError> {
        Self::new(ordinal_from_pod_name(pod_name)?, replicas)
    }

    pub const fn ordinal(self) -> u32 {
        self.ordinal
    }

    pub const fn replicas(self) -> u32 {
        self.replicas
    }

    /// The owner of the shard covering `[start, end]`.
    pub fn owner_of(self, start: u128, end: u128) -> u32 {
        owner_of_range(start, end, self.replicas)
    }

    /// Whether this replica reads the shard covering `[start, end]`.
    pub fn owns(self, start: u128, end: u128) -> bool {
        self.owner_of(start, end) == self.ordinal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOP: u128 = u128::MAX; // 2^128 - 1, the last hash key

    /// `n` shards as AWS creates them: boundaries at `floor(i * 2^128 / n)` (computed as
    /// `i * floor(TOP / n)` plus the remainder share, close enough for the tests' purpose).
    fn aws_ranges(n: u128) -> Vec<(u128, u128)> {
        let width = TOP / n;
        (0..n)
            .map(|i| {
                let start = if i == 0 {
                    0
                } else {
                    i * width + i * (TOP % n + 1) / n
                };
                let end = if i + 1 == n {
                    TOP
                } else {
                    (i + 1) * width + (i + 1) * (TOP % n + 1) / n - 1
                };
                (start, end)
            })
            .collect()
    }

    /// `n` shards as kinesis-mock creates them: starts at `i * floor(TOP / n)`, a few units
    /// below the exact fractions.
    fn mock_ranges(n: u128) -> Vec<(u128, u128)> {
        let width = TOP / n;
        (0..n)
            .map(|i| {
                let end = if i + 1 == n { TOP } else { (i + 1) * width - 1 };
                (i * width, end)
            })
            .collect()
    }

    #[test]
    fn owner_is_the_slice_of_the_key() {
        assert_eq!(owner(0, 1), 0);
        assert_eq!(owner(TOP, 1), 0);
        assert_eq!(owner(TOP, 2), 1);
        assert_eq!(owner(1 << 127, 2), 1);
        assert_eq!(owner((1 << 127) - 1, 2), 0);
        assert_eq!(owner(TOP, 1024), 1023);
        assert_eq!(owner(TOP, u32::MAX), u32::MAX - 1);
        // 2^128 / 3 is not an integer: the boundary sits between floor and floor + 1.
        let third = TOP / 3; // floor((2^128 - 1) / 3) = floor(2^128 / 3)
        assert_eq!(owner(third, 3), 0);
        assert_eq!(owner(third + 1, 3), 1);
        assert_eq!(midpoint(0, TOP), (1 << 127) - 1);
        assert_eq!(midpoint(10, 4), 7);
    }

    #[test]
    fn the_starting_key_would_misassign_what_the_middle_assigns_evenly() {
        // AWS's second of three shards starts at floor(2^128 / 3): in slice 0 by its start.
        let aws = aws_ranges(3);
        assert_eq!(owner(aws[1].0, 3), 0);
        // kinesis-mock's third of four starts at 2^127 - 2: in slice 0 of two by its start.
        let mock = mock_ranges(4);
        assert_eq!(owner(mock[2].0, 2), 0);
        // By the middle, both are where they belong.
        for (i, (s, e)) in aws.iter().enumerate() {
            assert_eq!(owner_of_range(*s, *e, 3), u32::try_from(i).unwrap());
        }
        let owners: Vec<u32> = mock
            .iter()
            .map(|(s, e)| owner_of_range(*s, *e, 2))
            .collect();
        assert_eq!(owners, [0, 0, 1, 1]);
    }

    #[test]
    fn every_shard_has_exactly_one_owner_and_even_shards_spread_evenly() {
        for replicas in 1..=5i64 {
            let assignments: Vec<Assignment> = (0..u32::try_from(replicas).unwrap())
                .map(|o| Assignment::new(o, replicas).unwrap())
                .collect();
            for shards in 1..=9 {
                for ranges in [aws_ranges(shards), mock_ranges(shards)] {
                    let mut owned = vec![0u32; assignments.len()];
                    for (s, e) in ranges {
                        let owners: Vec<usize> = assignments
                            .iter()
                            .enumerate()
                            .filter(|(_, a)| a.owns(s, e))
                            .map(|(i, _)| i)
                            .collect();
                        assert_eq!(owners.len(), 1, "[{s}, {e}] replicas {replicas}");
                        owned[owners[0]] += 1;
                    }
                    let (min, max) = (owned.iter().min().unwrap(), owned.iter().max().unwrap());
                    assert!(max - min <= 1, "{shards} shards over {replicas}: {owned:?}");
                }
            }
        }
    }

    #[test]
    fn a_split_usually_keeps_both_children_with_the_parent_owner() {
        // 2 shards over 2 replicas, UpdateShardCount to 4: every child stays with its parent.
        for (parents, children) in [
            (aws_ranges(2), aws_ranges(4)),
            (mock_ranges(2), mock_ranges(4)),
        ] {
            for (i, (s, e)) in children.iter().enumerate() {
                let (ps, pe) = parents[i / 2];
                assert_eq!(owner_of_range(*s, *e, 2), owner_of_range(ps, pe, 2));
            }
        }
        // A single shard split in halves for two replicas: the children go to different
        // replicas and the parent is foreign to one of them (the coordination marker covers it).
        let parent = owner_of_range(0, TOP, 2);
        let low = owner_of_range(0, (1 << 127) - 1, 2);
        let high = owner_of_range(1 << 127, TOP, 2);
        assert_ne!(low, high);
        assert!(parent == low || parent == high);
    }

    #[test]
    fn a_merge_across_a_slice_boundary_joins_parents_of_different_owners() {
        // 4 shards over 2 replicas; merging shards 1 and 2 joins replica 0's and replica 1's.
        let s = aws_ranges(4);
        assert_eq!(owner_of_range(s[1].0, s[1].1, 2), 0);
        assert_eq!(owner_of_range(s[2].0, s[2].1, 2), 1);
        // The child's middle is the slice boundary minus a few units: replica 0 owns it, and
        // shard 2 is a foreign parent to it.
        assert_eq!(owner_of_range(s[1].0, s[2].1, 2), 0);
        // Merging 0 and 1 keeps everything on replica 0.
        assert_eq!(owner_of_range(s[0].0, s[1].1, 2), 0);
    }

    #[test]
    fn pod_names_and_bounds() {
        assert_eq!(ordinal_from_pod_name("sales-enrichment-0"), Ok(0));
        assert_eq!(ordinal_from_pod_name("a-b-17"), Ok(17));
        for bad in [
            "sales",
            "sales-",
            "-3",
            "sales-x1",
            "sales-+1",
            "s-99999999999",
        ] {
            assert!(ordinal_from_pod_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Assignment::from_pod_name("job-2", 2),
            Err(AssignError::Ordinal {
                ordinal: 2,
                replicas: 2
            })
        );
        assert_eq!(Assignment::new(0, 0), Err(AssignError::Replicas(0)));
        assert_eq!(Assignment::new(0, -1), Err(AssignError::Replicas(-1)));
        let a = Assignment::from_pod_name("job-1", 3).unwrap();
        assert_eq!((a.ordinal(), a.replicas()), (1, 3));
    }

    #[test]
    fn hash_keys_parse_as_decimal_u128() {
        assert_eq!(
            parse_hash_key("340282366920938463463374607431768211455"),
            Ok(TOP)
        );
        assert!(parse_hash_key("340282366920938463463374607431768211456").is_err());
        assert!(parse_hash_key("-1").is_err());
        assert!(parse_hash_key("").is_err());
    }
}
