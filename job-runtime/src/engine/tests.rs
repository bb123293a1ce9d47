//! The engine over RocksDB, fed by simulated readers that interleave the three streams at
//! random: the committed outbox must equal the generator's oracle, however the reads
//! interleave, and across crashes at random points.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::r#gen::{Dataset, GenConfig, Record, generate};
use crate::reference::{ReferenceRow, Snapshot, parse_file};
use tributary_crds::spec::ReferenceFormat;

const STREAMS: [(StreamRole, &str); 3] = [
    (StreamRole::Customers, "customers"),
    (StreamRole::Addresses, "addresses"),
    (StreamRole::Sales, "sales"),
];

fn config() -> EngineConfig {
    let year = Duration::from_secs(365 * 24 * 3600);
    EngineConfig::new(
        Streams {
            customers: "customers".into(),
            addresses: "addresses".into(),
            sales: "sales".into(),
        },
        JoinRules {
            max_wait: year,
            allowed_lateness: year,
        },
        DocumentIdTemplate::parse("{order_id}:{item_id}").unwrap(),
    )
}

fn seq(i: usize) -> String {
    format!("{:020}", i + 1)
}

fn records(d: &Dataset, role: StreamRole) -> &[Record] {
    match role {
        StreamRole::Customers => &d.customer_records,
        StreamRole::Addresses => &d.address_records,
        StreamRole::Sales => &d.sale_records,
    }
}

fn rows<T: ReferenceRow>(csv: &str) -> BTreeMap<T::Id, T> {
    let load =
        parse_file::<T>(ReferenceFormat::Csv, "x.csv", Bytes::from(csv.to_string())).unwrap();
    Snapshot::from_files(vec![("x.csv".into(), load)])
        .rows()
        .clone()
}

/// One simulated run until `crash_after` steps (or the end); returns whether it finished.
fn run_until(d: &Dataset, dir: &Path, rng: &mut StdRng, crash_after: Option<usize>) -> bool {
    let state = RocksState::open(dir).unwrap();
    let mut core = Core::new(state, config(), Metrics::unregistered()).unwrap();
    // Resume each stream after its committed position.
    let mut next: BTreeMap<StreamRole, usize> = BTreeMap::new();
    for (role, name) in STREAMS {
        let pos = core
            .committed_positions()
            .get(&(name.to_string(), "shard-0".to_string()));
        let start = match pos {
            None => 0,
            Some(Position::After(s)) => s.parse::<usize>().unwrap(),
            Some(Position::Finished) => records(d, role).len(),
        };
        next.insert(role, start);
    }
    core.control(Control::Items(rows(&d.items_csv))).unwrap();
    core.control(Control::Promos(rows(&d.promos_csv))).unwrap();
    for name in ["customers", "addresses"] {
        core.control(Control::ActiveShards {
            stream: name.into(),
            shards: BTreeSet::from(["shard-0".to_string()]),
        })
        .unwrap();
    }
    let mut steps = 0;
    loop {
        if crash_after.is_some_and(|n| steps >= n) {
            return false; // dropped without committing: a crash
        }
        steps += 1;
        if next.iter().all(|(role, i)| *i >= records(d, *role).len()) {
            // Every dimension shard is caught up: the rest of the sales are released.
            for name in ["customers", "addresses"] {
                let role = if name == "customers" {
                    StreamRole::Customers
                } else {
                    StreamRole::Addresses
                };
                core.apply_dimension(batch(role, name, vec![], Some(0)))
                    .unwrap();
            }
            assert_eq!(core.held_records(), 0);
            core.commit().unwrap();
            return true;
        }
        let (role, name) = STREAMS[rng.random_range(0..3)];
        let all = records(d, role);
        let from = next[&role];
        let n = rng.random_range(0..40).min(all.len() - from);
        let recs: Vec<SourceRecord> = (from..from + n)
            .map(|i| SourceRecord {
                sequence: seq(i),
                partition_key: all[i].partition_key.clone(),
                data: Bytes::from(all[i].data.clone()),
                arrival_ms: Some(i64::try_from(all[i].arrival).unwrap()),
            })
            .collect();
        next.insert(role, from + n);
        let behind = if from + n >= all.len() { 0 } else { 1000 };
        let b = batch(role, name, recs, Some(behind));
        if role == StreamRole::Sales {
            core.accept_sales(b).unwrap();
        } else {
            core.apply_dimension(b).unwrap();
        }
        if rng.random_bool(0.2) {
            core.commit().unwrap();
        }
    }
}

fn batch(
    role: StreamRole,
    name: &str,
    records: Vec<SourceRecord>,
    behind: Option<i64>,
) -> ShardBatch {
    ShardBatch {
        role,
        stream: name.into(),
        shard_id: "shard-0".into(),
        records,
        millis_behind_latest: behind,
        requested_at: Instant::now(),
        shard_end: false,
    }
}

/// Every committed output, decoded: documents by key (asserting no duplicates), dead
/// letters counted by reason.
fn outputs(
    dir: &Path,
) -> (
    BTreeMap<(i64, i64), serde_json::Value>,
    BTreeMap<String, u64>,
) {
    let state = RocksState::open(dir).unwrap();
    let reader = state.outbox_reader();
    let mut docs = BTreeMap::new();
    let mut dead = BTreeMap::new();
    for (_, bytes) in reader.read(0, usize::MAX, usize::MAX).unwrap() {
        match OutputRecord::decode(&bytes).unwrap() {
            OutputRecord::Document(d) => {
                let v: serde_json::Value = serde_json::from_slice(&d.json).unwrap();
                let key = (
                    v["order_id"].as_i64().unwrap(),
                    v["item_id"].as_i64().unwrap(),
                );
                assert_eq!(d.id, format!("{}:{}", key.0, key.1));
                assert!(docs.insert(key, v).is_none(), "{key:?} delivered twice");
            }
            OutputRecord::DeadLetter(r) => *dead.entry(r.reason).or_default() += 1,
        }
    }
    (docs, dead)
}

fn assert_oracle(d: &Dataset, dir: &Path) {
    let (docs, dead) = outputs(dir);
    assert_eq!(dead, d.expected_dead_letters);
    let missing: Vec<_> = d
        .expected
        .keys()
        .filter(|k| !docs.contains_key(k))
        .collect();
    assert!(missing.is_empty(), "not emitted: {missing:?}");
    assert_eq!(docs.len(), d.expected.len());
    for (k, want) in &d.expected {
        assert_eq!(&docs[k], want, "document {k:?}");
    }
}

fn small() -> GenConfig {
    GenConfig {
        customers: 60,
        addresses: 25,
        sales: 500,
        ..GenConfig::default()
    }
}

#[test]
fn any_interleaving_of_the_three_readers_gives_the_oracle() {
    let d = generate(&small());
    for seed in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        assert!(run_until(&d, dir.path(), &mut rng, None));
        assert_oracle(&d, dir.path());
    }
}

#[test]
fn crashes_at_random_points_lose_and_duplicate_nothing() {
    let d = generate(&small());
    for seed in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let mut crashes = 0;
        loop {
            let crash_at = rng.random_range(1..25);
            if run_until(&d, dir.path(), &mut rng, Some(crash_at)) {
                break;
            }
            crashes += 1;
            if crashes >= 8 {
                assert!(run_until(&d, dir.path(), &mut rng, None));
                break;
            }
        }
        assert!(crashes > 0);
        assert_oracle(&d, dir.path());
    }
}

#[test]
fn sales_wait_for_the_dimension_streams_to_catch_up() {
    let d = generate(&small());
    let dir = tempfile::tempdir().unwrap();
    let state = RocksState::open(dir.path()).unwrap();
    let mut core = Core::new(state, config(), Metrics::unregistered()).unwrap();
    let sale = SourceRecord {
        sequence: seq(0),
        partition_key: "k".into(),
        data: Bytes::from(d.sale_records[0].data.clone()),
        arrival_ms: Some(100),
    };
    core.accept_sales(batch(StreamRole::Sales, "sales", vec![sale], Some(0)))
        .unwrap();
    assert_eq!(core.held_records(), 1, "no listing, no reference data yet");
    core.control(Control::Items(rows(&d.items_csv))).unwrap();
    core.control(Control::Promos(rows(&d.promos_csv))).unwrap();
    for name in ["customers", "addresses"] {
        core.control(Control::ActiveShards {
            stream: name.into(),
            shards: BTreeSet::from(["shard-0".to_string()]),
        })
        .unwrap();
    }
    assert_eq!(core.held_records(), 1, "no dimension read yet");
    let dim = |i: usize, arrival: i64| SourceRecord {
        sequence: seq(i),
        partition_key: "k".into(),
        data: Bytes::from(d.customer_records[i].data.clone()),
        arrival_ms: Some(arrival),
    };
    core.apply_dimension(batch(
        StreamRole::Customers,
        "customers",
        vec![dim(0, 100)],
        Some(500),
    ))
    .unwrap();
    core.apply_dimension(batch(StreamRole::Addresses, "addresses", vec![], Some(0)))
        .unwrap();
    assert_eq!(
        core.held_records(),
        1,
        "a customer record that arrived at the same instant may precede more"
    );
    core.apply_dimension(batch(
        StreamRole::Customers,
        "customers",
        vec![dim(1, 101)],
        Some(400),
    ))
    .unwrap();
    assert_eq!(core.held_records(), 0);
    let c = core.commit().unwrap();
    assert_eq!(
        c.positions
            .get(&("sales".to_string(), "shard-0".to_string())),
        Some(&Position::After(seq(0)))
    );
}

#[test]
fn a_finished_shard_is_committed_as_finished_and_bad_records_go_to_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let state = RocksState::open(dir.path()).unwrap();
    let mut core = Core::new(state, config(), Metrics::unregistered()).unwrap();
    let mut b = batch(
        StreamRole::Customers,
        "customers",
        vec![SourceRecord {
            sequence: seq(7),
            partition_key: "k".into(),
            data: Bytes::from_static(b"{not json"),
            arrival_ms: Some(5),
        }],
        Some(0),
    );
    b.shard_end = true;
    core.apply_dimension(b).unwrap();
    let c = core.commit().unwrap();
    assert_eq!(
        c.positions[&("customers".to_string(), "shard-0".to_string())],
        Position::Finished
    );
    drop(core);
    let (docs, dead) = outputs(dir.path());
    assert!(docs.is_empty());
    assert_eq!(dead, BTreeMap::from([("malformed_json".to_string(), 1)]));
}

#[test]
fn only_the_dimension_writer_dead_letters_a_bad_dimension_record() {
    // Every replica reads the dimension streams in full; only ordinal 0 writes their dead
    // letters, so each bad record appears once however many replicas run.
    for (writer, expected) in [(true, 1u64), (false, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let state = RocksState::open(dir.path()).unwrap();
        let mut cfg = config();
        cfg.dimension_dead_letters = writer;
        let mut core = Core::new(state, cfg, Metrics::unregistered()).unwrap();
        let b = batch(
            StreamRole::Addresses,
            "addresses",
            vec![SourceRecord {
                sequence: seq(3),
                partition_key: "k".into(),
                data: Bytes::from_static(b"{not json"),
                arrival_ms: Some(5),
            }],
            Some(0),
        );
        core.apply_dimension(b).unwrap();
        let c = core.commit().unwrap();
        // The position advances either way: the record is handled, not retried.
        assert_eq!(
            c.positions[&("addresses".to_string(), "shard-0".to_string())],
            Position::After(seq(3))
        );
        drop(core);
        let (_, dead) = outputs(dir.path());
        assert_eq!(
            dead.values().sum::<u64>(),
            expected,
            "writer {writer}: {dead:?}"
        );
    }
}
