//! Which shards to read, and from where: a pure function of the listed shards, the committed
//! positions, the ownership rule and what is already being read.
//!
//! # Rules
//!
//! - **Ownership.** Dimension streams: every shard. Sales: the shards [`Assignment::owns`]
//!   (the slice of the middle of the shard's hash key range).
//! - **Committed position.** `After(seq)`: resume after it (the shard's parents were finished
//!   before it started). `Finished`: nothing to do.
//! - **Parents first.** A shard without a committed position starts only when every parent
//!   (`ParentShardId`, `AdjacentParentShardId`) is finished:
//!   - a parent ListShards no longer returns (trimmed) counts as finished;
//!   - a parent with a committed `Finished` position is finished;
//!   - a parent we read ourselves (dimension stream, or a sales shard we own) is otherwise pending;
//!   - a *foreign* parent (a sales shard another replica owns) is finished when its marker exists
//!     (see [`crate::source::coordination`]), otherwise pending.
//! - **Where a new shard starts.** `TrimHorizon` configured: TRIM_HORIZON. `AtTimestamp`: the
//!   configured timestamp for every shard without a position; a child holds only records that
//!   arrived after its parents closed, so this equals TRIM_HORIZON for children created after the
//!   timestamp and correctly skips older records of children created before it. `Latest`: the
//!   shards listed at a *fresh start* (no committed position for the stream at all) start at
//!   LATEST without waiting for their parents (a closed shard has nothing after "now"); every
//!   shard discovered later is a child created while we were reading, so it starts at
//!   TRIM_HORIZON, after its parents, and nothing written after the start is skipped.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_kinesis::types::Shard;
use chrono::{DateTime, Utc};

use crate::source::Position;
use crate::source::assign::{Assignment, parse_hash_key};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("shard {0} has no hash key range")]
    NoHashKeyRange(String),
    #[error("shard {shard}: {source}")]
    HashKey {
        shard: String,
        #[source]
        source: crate::source::assign::AssignError,
    },
}

/// What the planner needs of a listed shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    pub shard_id: String,
    pub parent: Option<String>,
    pub adjacent_parent: Option<String>,
    pub starting_hash_key: u128,
    pub ending_hash_key: u128,
    /// The shard has an ending sequence number (it was split or merged).
    pub closed: bool,
}

impl ShardInfo {
    pub fn from_sdk(shard: &Shard) -> Result<Self, PlanError> {
        let id = shard.shard_id().to_string();
        let range = shard
            .hash_key_range()
            .ok_or_else(|| PlanError::NoHashKeyRange(id.clone()))?;
        let starting_hash_key =
            parse_hash_key(range.starting_hash_key()).map_err(|source| PlanError::HashKey {
                shard: id.clone(),
                source,
            })?;
        let ending_hash_key =
            parse_hash_key(range.ending_hash_key()).map_err(|source| PlanError::HashKey {
                shard: id.clone(),
                source,
            })?;
        Ok(Self {
            ending_hash_key,
            parent: shard.parent_shard_id().map(str::to_string),
            adjacent_parent: shard.adjacent_parent_shard_id().map(str::to_string),
            starting_hash_key,
            closed: shard
                .sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_some()),
            shard_id: id,
        })
    }

    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.parent
            .iter()
            .chain(self.adjacent_parent.iter())
            .map(String::as_str)
    }
}

/// Where a shard reader starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartAt {
    AfterSequence(String),
    TrimHorizon,
    Latest,
    AtTimestamp(DateTime<Utc>),
}

/// Which shards of the stream this replica reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readers {
    /// Dimension streams: every shard.
    All,
    /// Sales: the shards this replica owns.
    Owned(Assignment),
}

impl Readers {
    pub fn reads(self, shard: &ShardInfo) -> bool {
        match self {
            Self::All => true,
            Self::Owned(a) => a.owns(shard.starting_hash_key, shard.ending_hash_key),
        }
    }
}

/// The planner's view of one stream.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    pub shards: &'a [ShardInfo],
    /// Committed positions of this stream, by shard id.
    pub positions: &'a BTreeMap<String, Position>,
    pub readers: Readers,
    /// Foreign parents whose finished marker has been seen.
    pub foreign_finished: &'a BTreeSet<String>,
    /// Shards listed at a fresh start (only used with [`StartAt::Latest`]).
    pub initial: &'a BTreeSet<String>,
    /// The configured start position (never [`StartAt::AfterSequence`]).
    pub configured: &'a StartAt,
    /// Shards with a running reader, or whose reader sent the shard's end that the engine has
    /// not committed yet.
    pub active: &'a BTreeSet<String>,
}

/// The decision for one listed shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardPlan {
    /// Another replica reads it.
    NotOurs,
    /// Committed as finished.
    Finished,
    /// Already being read (or its end is being committed).
    Active,
    /// Start a reader here.
    Start(StartAt),
    /// Parents not finished yet: `local` are read here, `foreign` need their marker.
    Wait {
        local: Vec<String>,
        foreign: Vec<String>,
    },
}

/// The plan for every listed shard, by shard id.
pub fn plan(input: &PlanInput<'_>) -> BTreeMap<String, ShardPlan> {
    let by_id: BTreeMap<&str, &ShardInfo> = input
        .shards
        .iter()
        .map(|s| (s.shard_id.as_str(), s))
        .collect();
    input
        .shards
        .iter()
        .map(|s| (s.shard_id.clone(), plan_shard(input, &by_id, s)))
        .collect()
}

fn plan_shard(
    input: &PlanInput<'_>,
    by_id: &BTreeMap<&str, &ShardInfo>,
    shard: &ShardInfo,
) -> ShardPlan {
    if !input.readers.reads(shard) {
        return ShardPlan::NotOurs;
    }
    match input.positions.get(&shard.shard_id) {
        Some(Position::Finished) => return ShardPlan::Finished,
        _ if input.active.contains(&shard.shard_id) => return ShardPlan::Active,
        Some(Position::After(seq)) => return ShardPlan::Start(StartAt::AfterSequence(seq.clone())),
        None => {}
    }
    let latest_initial =
        *input.configured == StartAt::Latest && input.initial.contains(&shard.shard_id);
    if latest_initial {
        return ShardPlan::Start(StartAt::Latest);
    }
    let (mut local, mut foreign) = (Vec::new(), Vec::new());
    for parent_id in shard.parents() {
        let Some(parent) = by_id.get(parent_id) else {
            continue; // trimmed: finished
        };
        if input.positions.get(parent_id) == Some(&Position::Finished) {
            continue;
        }
        if input.readers.reads(parent) {
            local.push(parent_id.to_string());
        } else if !input.foreign_finished.contains(parent_id) {
            foreign.push(parent_id.to_string());
        }
    }
    if !local.is_empty() || !foreign.is_empty() {
        return ShardPlan::Wait { local, foreign };
    }
    ShardPlan::Start(match input.configured {
        StartAt::Latest => StartAt::TrimHorizon,
        other => other.clone(),
    })
}

/// Foreign parents some shard waits for (whose markers are worth checking).
pub fn foreign_waits(plan: &BTreeMap<String, ShardPlan>) -> BTreeSet<String> {
    plan.values()
        .filter_map(|p| match p {
            ShardPlan::Wait { foreign, .. } => Some(foreign.iter().cloned()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF: u128 = 1 << 127;
    const QUARTER: u128 = 1 << 126;
    const TOP: u128 = u128::MAX;

    fn shard(
        id: &str,
        start: u128,
        end: u128,
        parents: (Option<&str>, Option<&str>),
        closed: bool,
    ) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            parent: parents.0.map(str::to_string),
            adjacent_parent: parents.1.map(str::to_string),
            starting_hash_key: start,
            ending_hash_key: end,
            closed,
        }
    }

    struct Case {
        shards: Vec<ShardInfo>,
        positions: BTreeMap<String, Position>,
        readers: Readers,
        foreign_finished: BTreeSet<String>,
        initial: BTreeSet<String>,
        configured: StartAt,
        active: BTreeSet<String>,
    }

    impl Case {
        fn new(shards: Vec<ShardInfo>) -> Self {
            Self {
                shards,
                positions: BTreeMap::new(),
                readers: Readers::All,
                foreign_finished: BTreeSet::new(),
                initial: BTreeSet::new(),
                configured: StartAt::TrimHorizon,
                active: BTreeSet::new(),
            }
        }
        fn pos(mut self, shard: &str, p: Position) -> Self {
            self.positions.insert(shard.into(), p);
            self
        }
        fn plan(&self) -> BTreeMap<String, ShardPlan> {
            plan(&PlanInput {
                shards: &self.shards,
                positions: &self.positions,
                readers: self.readers,
                foreign_finished: &self.foreign_finished,
                initial: &self.initial,
                configured: &self.configured,
                active: &self.active,
            })
        }
    }

    fn wait(local: &[&str], foreign: &[&str]) -> ShardPlan {
        ShardPlan::Wait {
            local: local.iter().map(|s| s.to_string()).collect(),
            foreign: foreign.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn split() -> Vec<ShardInfo> {
        vec![
            shard("p", 0, TOP, (None, None), true),
            shard("c1", 0, HALF - 1, (Some("p"), None), false),
            shard("c2", HALF, TOP, (Some("p"), None), false),
        ]
    }

    #[test]
    fn split_children_wait_for_the_parent_then_start_at_trim_horizon() {
        let case = Case::new(split());
        let p = case.plan();
        assert_eq!(p["p"], ShardPlan::Start(StartAt::TrimHorizon));
        assert_eq!(p["c1"], wait(&["p"], &[]));
        assert_eq!(p["c2"], wait(&["p"], &[]));

        // Being read: not started twice; children still wait.
        let mut case = Case::new(split()).pos("p", Position::After("5".into()));
        case.active.insert("p".into());
        let p = case.plan();
        assert_eq!(p["p"], ShardPlan::Active);
        assert_eq!(p["c1"], wait(&["p"], &[]));

        // The engine committed the parent's end.
        let p = Case::new(split()).pos("p", Position::Finished).plan();
        assert_eq!(p["p"], ShardPlan::Finished);
        assert_eq!(p["c1"], ShardPlan::Start(StartAt::TrimHorizon));
        assert_eq!(p["c2"], ShardPlan::Start(StartAt::TrimHorizon));
    }

    #[test]
    fn a_committed_position_resumes_after_it() {
        let p = Case::new(split())
            .pos("p", Position::Finished)
            .pos("c1", Position::After("42".into()))
            .plan();
        assert_eq!(
            p["c1"],
            ShardPlan::Start(StartAt::AfterSequence("42".into()))
        );
        // Even with the configured position elsewhere.
        let mut case = Case::new(vec![shard("s", 0, TOP, (None, None), false)])
            .pos("s", Position::After("7".into()));
        case.configured = StartAt::Latest;
        case.initial.insert("s".into());
        assert_eq!(
            case.plan()["s"],
            ShardPlan::Start(StartAt::AfterSequence("7".into()))
        );
    }

    #[test]
    fn a_trimmed_parent_counts_as_finished() {
        // "p" is no longer listed.
        let p = Case::new(split()[1..].to_vec()).plan();
        assert_eq!(p["c1"], ShardPlan::Start(StartAt::TrimHorizon));
        assert_eq!(p["c2"], ShardPlan::Start(StartAt::TrimHorizon));
    }

    fn merge() -> Vec<ShardInfo> {
        // Four shards over two replicas: a and b are replica 0's, c and d replica 1's.
        vec![
            shard("a", 0, QUARTER - 1, (None, None), false),
            shard("b", QUARTER, HALF - 1, (None, None), true),
            shard("c", HALF, HALF + QUARTER - 1, (None, None), true),
            shard("d", HALF + QUARTER, TOP, (None, None), false),
            // merge of b (replica 0) and c (replica 1): its middle is in replica 0's half.
            shard(
                "bc",
                QUARTER,
                HALF + QUARTER - 1,
                (Some("c"), Some("b")),
                false,
            ),
        ]
    }

    fn owned(ordinal: u32) -> Readers {
        Readers::Owned(Assignment::new(ordinal, 2).unwrap())
    }

    #[test]
    fn merge_with_a_local_parent_and_a_foreign_parent() {
        let mut case = Case::new(merge());
        case.readers = owned(0);
        let p = case.plan();
        assert_eq!(p["a"], ShardPlan::Start(StartAt::TrimHorizon));
        assert_eq!(p["b"], ShardPlan::Start(StartAt::TrimHorizon));
        assert_eq!(p["c"], ShardPlan::NotOurs);
        assert_eq!(p["d"], ShardPlan::NotOurs);
        assert_eq!(p["bc"], wait(&["b"], &["c"]));
        assert_eq!(foreign_waits(&p), BTreeSet::from(["c".to_string()]));

        // b finished locally; c's marker not seen yet.
        let mut case = Case::new(merge()).pos("b", Position::Finished);
        case.readers = owned(0);
        assert_eq!(case.plan()["bc"], wait(&[], &["c"]));
        // The marker appears.
        case.foreign_finished.insert("c".into());
        assert_eq!(case.plan()["bc"], ShardPlan::Start(StartAt::TrimHorizon));

        // The marker alone is not enough while the local parent is pending.
        let mut case = Case::new(merge());
        case.readers = owned(0);
        case.foreign_finished.insert("c".into());
        assert_eq!(case.plan()["bc"], wait(&["b"], &[]));

        // Replica 1 reads c and d, never the merged child.
        let mut case = Case::new(merge());
        case.readers = owned(1);
        let p = case.plan();
        assert_eq!(p["c"], ShardPlan::Start(StartAt::TrimHorizon));
        assert_eq!(p["bc"], ShardPlan::NotOurs);
        assert!(foreign_waits(&p).is_empty());
    }

    #[test]
    fn merge_with_both_parents_local() {
        let shards = vec![
            shard("a", 0, QUARTER - 1, (None, None), true),
            shard("b", QUARTER, HALF - 1, (None, None), true),
            shard("ab", 0, HALF - 1, (Some("a"), Some("b")), false),
        ];
        let mut case = Case::new(shards).pos("a", Position::Finished);
        case.readers = owned(0);
        assert_eq!(case.plan()["ab"], wait(&["b"], &[]));
        let case = Case {
            readers: owned(0),
            ..case.pos("b", Position::Finished)
        };
        assert_eq!(case.plan()["ab"], ShardPlan::Start(StartAt::TrimHorizon));
    }

    #[test]
    fn a_split_across_replicas_makes_the_parent_foreign() {
        let mut case = Case::new(split());
        case.readers = owned(1);
        let p = case.plan();
        assert_eq!(p["p"], ShardPlan::NotOurs);
        assert_eq!(p["c1"], ShardPlan::NotOurs);
        assert_eq!(p["c2"], wait(&[], &["p"]));
        case.foreign_finished.insert("p".into());
        assert_eq!(case.plan()["c2"], ShardPlan::Start(StartAt::TrimHorizon));
        // A committed Finished of a foreign parent (a previous replica count) also counts.
        let mut case = Case::new(split()).pos("p", Position::Finished);
        case.readers = owned(1);
        assert_eq!(case.plan()["c2"], ShardPlan::Start(StartAt::TrimHorizon));
    }

    #[test]
    fn start_positions() {
        let ts = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        // AT_TIMESTAMP applies to roots and children alike (after their parents).
        let mut case = Case::new(split());
        case.configured = StartAt::AtTimestamp(ts);
        let p = case.plan();
        assert_eq!(p["p"], ShardPlan::Start(StartAt::AtTimestamp(ts)));
        assert_eq!(p["c1"], wait(&["p"], &[]));
        let case = Case {
            configured: StartAt::AtTimestamp(ts),
            ..Case::new(split()).pos("p", Position::Finished)
        };
        assert_eq!(
            case.plan()["c1"],
            ShardPlan::Start(StartAt::AtTimestamp(ts))
        );

        // LATEST at a fresh start: every listed shard at LATEST, no waiting.
        let mut case = Case::new(split());
        case.configured = StartAt::Latest;
        case.initial = ["p", "c1", "c2"].map(String::from).into();
        let p = case.plan();
        for s in ["p", "c1", "c2"] {
            assert_eq!(p[s], ShardPlan::Start(StartAt::Latest), "{s}");
        }
        // LATEST, children discovered later: after the parent, from TRIM_HORIZON.
        let mut case = Case::new(split());
        case.configured = StartAt::Latest;
        case.initial = ["p"].map(String::from).into();
        let p = case.plan();
        assert_eq!(p["p"], ShardPlan::Start(StartAt::Latest));
        assert_eq!(p["c1"], wait(&["p"], &[]));
        let case = Case {
            configured: StartAt::Latest,
            initial: case.initial.clone(),
            ..Case::new(split()).pos("p", Position::Finished)
        };
        assert_eq!(case.plan()["c2"], ShardPlan::Start(StartAt::TrimHorizon));
    }

    #[test]
    fn an_active_shard_whose_end_is_committed_is_finished() {
        let mut case = Case::new(split()).pos("p", Position::Finished);
        case.active.insert("p".into());
        assert_eq!(case.plan()["p"], ShardPlan::Finished);
    }

    #[test]
    fn shard_info_from_the_sdk() {
        use aws_sdk_kinesis::types::{HashKeyRange, SequenceNumberRange};
        let s = Shard::builder()
            .shard_id("shardId-000000000002")
            .parent_shard_id("shardId-000000000000")
            .adjacent_parent_shard_id("shardId-000000000001")
            .hash_key_range(
                HashKeyRange::builder()
                    .starting_hash_key("170141183460469231731687303715884105728")
                    .ending_hash_key("340282366920938463463374607431768211455")
                    .build()
                    .unwrap(),
            )
            .sequence_number_range(
                SequenceNumberRange::builder()
                    .starting_sequence_number("1")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let info = ShardInfo::from_sdk(&s).unwrap();
        assert_eq!(info.starting_hash_key, HALF);
        assert_eq!(info.ending_hash_key, TOP);
        assert!(!info.closed);
        assert_eq!(
            info.parents().collect::<Vec<_>>(),
            ["shardId-000000000000", "shardId-000000000001"]
        );
    }
}
