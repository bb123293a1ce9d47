//! A savepoint taken mid-stream by N replicas and restored by M: every document of the
//! generator's oracle comes out exactly once across the old and the new replicas' outboxes.
//!
//! The replicas are engines over RocksDB fed by simulated readers (as in the engine tests),
//! with the sales spread over four shards by the MD5 of their partition key as Kinesis does,
//! each shard read by its owner under the assignment rule. The savepoint's files stay in
//! memory: the object store is not what is tested here (the integration tests write real
//! savepoints to S3).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tributary_crds::document_id::DocumentIdTemplate;

use super::format::{DataFile, FORMAT, FORMAT_VERSION, PartManifest};
use super::restore::{Loaded, Router, apply, partition_hash, positions};
use super::write::{Chunk, scan};
use super::{RestoreFigures, SavepointError};
use crate::engine::{Control, Core, EngineConfig, Streams};
use crate::r#gen::{Dataset, GenConfig, generate};
use crate::join::JoinRules;
use crate::metrics::Metrics;
use crate::output::OutputRecord;
use crate::reference::{ReferenceRow, Snapshot, parse_file};
use crate::s3uri::S3Uri;
use crate::source::assign::owner_of_range;
use crate::source::kinesis::plan::ShardInfo;
use crate::source::{Position, ShardBatch, SourceRecord, StreamRole};
use crate::state::RocksState;
use crate::state::export::Family;
use tributary_crds::spec::ReferenceFormat;

const SHARDS: u32 = 4;

fn streams() -> Streams {
    Streams {
        customers: "customers".into(),
        addresses: "addresses".into(),
        sales: "sales".into(),
    }
}

fn config() -> EngineConfig {
    let year = Duration::from_secs(365 * 24 * 3600);
    EngineConfig::new(
        streams(),
        JoinRules {
            max_wait: year,
            allowed_lateness: year,
        },
        DocumentIdTemplate::parse("{order_id}:{item_id}").unwrap(),
    )
}

/// Four evenly sized open shards.
fn shards() -> Vec<ShardInfo> {
    let width = u128::MAX / u128::from(SHARDS);
    (0..SHARDS)
        .map(|i| {
            let lo = width * u128::from(i) + u128::from(i > 0);
            let hi = if i + 1 == SHARDS {
                u128::MAX
            } else {
                width * u128::from(i + 1)
            };
            ShardInfo {
                shard_id: format!("shard-{i}"),
                parent: None,
                adjacent_parent: None,
                starting_hash_key: lo,
                ending_hash_key: hi,
                closed: false,
            }
        })
        .collect()
}

fn seq(i: usize) -> String {
    format!("{:020}", i + 1)
}

fn rows<T: ReferenceRow>(csv: &str) -> BTreeMap<T::Id, T> {
    let load =
        parse_file::<T>(ReferenceFormat::Csv, "x.csv", Bytes::from(csv.to_string())).unwrap();
    Snapshot::from_files(vec![("x.csv".into(), load)])
        .rows()
        .clone()
}

/// The input as the simulated readers see it: the dimension streams on one shard each, the
/// sales on four by their partition key.
struct Input {
    customers: Vec<SourceRecord>,
    addresses: Vec<SourceRecord>,
    sales: BTreeMap<String, Vec<SourceRecord>>,
}

fn record(i: usize, r: &crate::r#gen::Record) -> SourceRecord {
    SourceRecord {
        sequence: seq(i),
        partition_key: r.partition_key.clone(),
        data: Bytes::from(r.data.clone()),
        arrival_ms: Some(i64::try_from(r.arrival).unwrap()),
    }
}

fn input(d: &Dataset) -> Input {
    let shards = shards();
    let mut sales: BTreeMap<String, Vec<SourceRecord>> = BTreeMap::new();
    for r in &d.sale_records {
        let h = partition_hash(&r.partition_key);
        let shard = shards
            .iter()
            .find(|s| (s.starting_hash_key..=s.ending_hash_key).contains(&h))
            .unwrap();
        let list = sales.entry(shard.shard_id.clone()).or_default();
        let i = list.len();
        list.push(record(i, r));
    }
    Input {
        customers: d
            .customer_records
            .iter()
            .enumerate()
            .map(|(i, r)| record(i, r))
            .collect(),
        addresses: d
            .address_records
            .iter()
            .enumerate()
            .map(|(i, r)| record(i, r))
            .collect(),
        sales,
    }
}

/// One replica: an engine over its own state, and how far it has read each shard.
struct Replica {
    core: Core,
    next: BTreeMap<(String, String), usize>,
    _dir: tempfile::TempDir,
}

fn new_replica(d: &Dataset) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let state = RocksState::open(dir.path()).unwrap();
    let mut core = Core::new(state, config(), Metrics::unregistered()).unwrap();
    core.control(Control::Items(rows(&d.items_csv))).unwrap();
    core.control(Control::Promos(rows(&d.promos_csv))).unwrap();
    for name in ["customers", "addresses"] {
        core.control(Control::ActiveShards {
            stream: name.into(),
            shards: BTreeSet::from(["shard-0".to_string()]),
        })
        .unwrap();
    }
    Replica {
        core,
        next: BTreeMap::new(),
        _dir: dir,
    }
}

impl Replica {
    /// Resume every shard after its committed position.
    fn resume_from_committed(&mut self) {
        for ((stream, shard), p) in self.core.committed_positions() {
            let n = match p {
                Position::After(s) => s.parse::<usize>().unwrap(),
                Position::Finished => usize::MAX,
            };
            self.next.insert((stream.clone(), shard.clone()), n);
        }
    }

    /// Read up to `n` records of one shard, in one batch.
    fn read(
        &mut self,
        role: StreamRole,
        stream: &str,
        shard: &str,
        all: &[SourceRecord],
        n: usize,
    ) {
        let key = (stream.to_string(), shard.to_string());
        let from = self.next.get(&key).copied().unwrap_or(0).min(all.len());
        let to = (from + n).min(all.len());
        self.next.insert(key, to);
        let batch = ShardBatch {
            role,
            stream: stream.into(),
            shard_id: shard.into(),
            records: all[from..to].to_vec(),
            millis_behind_latest: Some(if to >= all.len() { 0 } else { 1000 }),
            requested_at: Instant::now(),
            shard_end: false,
        };
        if role == StreamRole::Sales {
            self.core.accept_sales(batch).unwrap();
        } else {
            self.core.apply_dimension(batch).unwrap();
        }
    }

    /// Read at random until `steps` batches were read (or everything, when `None`).
    fn run(&mut self, input: &Input, owned: &[String], rng: &mut StdRng, steps: Option<usize>) {
        let mut done = 0;
        loop {
            if steps.is_some_and(|s| done >= s) {
                break;
            }
            done += 1;
            let pick = rng.random_range(0..2 + owned.len());
            let n = rng.random_range(0..40);
            match pick {
                0 => self.read(
                    StreamRole::Customers,
                    "customers",
                    "shard-0",
                    &input.customers,
                    n,
                ),
                1 => self.read(
                    StreamRole::Addresses,
                    "addresses",
                    "shard-0",
                    &input.addresses,
                    n,
                ),
                k => {
                    let shard = &owned[k - 2];
                    self.read(StreamRole::Sales, "sales", shard, &input.sales[shard], n);
                }
            }
            if rng.random_bool(0.2) {
                self.core.commit().unwrap();
            }
            if steps.is_none() && self.caught_up(input, owned) {
                break;
            }
        }
        if steps.is_none() {
            // Every dimension shard caught up: the held sales are released.
            self.read(
                StreamRole::Customers,
                "customers",
                "shard-0",
                &input.customers,
                0,
            );
            self.read(
                StreamRole::Addresses,
                "addresses",
                "shard-0",
                &input.addresses,
                0,
            );
            assert_eq!(self.core.held_records(), 0);
        }
        self.core.commit().unwrap();
    }

    fn caught_up(&self, input: &Input, owned: &[String]) -> bool {
        let at = |s: &str, sh: &str| {
            self.next
                .get(&(s.to_string(), sh.to_string()))
                .copied()
                .unwrap_or(0)
        };
        at("customers", "shard-0") >= input.customers.len()
            && at("addresses", "shard-0") >= input.addresses.len()
            && owned
                .iter()
                .all(|sh| at("sales", sh) >= input.sales[sh].len())
    }

    /// Every committed document and dead letter of this replica's outbox.
    fn outputs(&self) -> Vec<OutputRecord> {
        let reader = self.core.state().outbox_reader();
        reader
            .read(0, usize::MAX, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, bytes)| OutputRecord::decode(&bytes).unwrap())
            .collect()
    }
}

fn owned_shards(ordinal: u32, replicas: u32) -> Vec<String> {
    shards()
        .iter()
        .filter(|s| owner_of_range(s.starting_hash_key, s.ending_hash_key, replicas) == ordinal)
        .map(|s| s.shard_id.clone())
        .collect()
}

/// A part as the writer would store it: the manifest and the files' bodies by name.
fn take_part(
    r: &Replica,
    ordinal: u32,
    replicas: u32,
) -> (PartManifest, BTreeMap<String, Vec<u8>>) {
    let export = r.core.state().export();
    let families: Vec<Family> = if ordinal == 0 {
        Family::ALL.to_vec()
    } else {
        vec![Family::Pending]
    };
    let (tx, mut rx) = mpsc::channel::<Chunk>(1024);
    scan(&export, &families, &tx).unwrap();
    drop(tx);
    let mut files = Vec::new();
    let mut bodies = BTreeMap::new();
    while let Ok(c) = rx.try_recv() {
        files.push(DataFile {
            name: c.name.clone(),
            family: c.family.as_str().into(),
            bytes: c.body.len() as u64,
            lines: c.lines,
            sha256: c.sha256.clone(),
        });
        bodies.insert(c.name, c.body);
    }
    let mut by_stream: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for ((stream, shard), p) in export.offsets().unwrap() {
        by_stream.entry(stream).or_default().insert(shard, p);
    }
    let manifest = PartManifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        savepoint_id: "sp".into(),
        pipeline: "ns/p".into(),
        ordinal,
        replicas,
        state_layout: crate::state::LAYOUT_VERSION,
        lineage: export.lineage().unwrap().unwrap_or_default(),
        state_id: String::new(),
        restored_from: None,
        created_at: String::new(),
        dimension_cut: ordinal == 0,
        positions: by_stream,
        files,
        sha256: String::new(),
    };
    (manifest, bodies)
}

/// Restore new replica `ordinal` of `replicas` from the parts, as [`super::restore::restore`]
/// does, reading the files from memory.
fn restore_replica(
    d: &Dataset,
    parts: &[(PartManifest, BTreeMap<String, Vec<u8>>)],
    ordinal: u32,
    replicas: u32,
) -> (Replica, RestoreFigures) {
    let mut r = new_replica(d);
    let loaded = Loaded {
        folder: S3Uri::parse("s3://b/sp").unwrap(),
        parts: parts.iter().map(|(m, _)| m.clone()).collect(),
    };
    let router = Router::new(&shards(), replicas);
    let take = |customer: &str| router.owner(customer) == ordinal;
    let mut figures = RestoreFigures::default();
    let mut since = 0;
    let mut plan: Vec<(usize, Family)> = [
        Family::Customers,
        Family::Addresses,
        Family::Items,
        Family::Promos,
    ]
    .into_iter()
    .map(|f| (0, f))
    .collect();
    plan.extend((0..parts.len()).map(|p| (p, Family::Pending)));
    for (p, family) in plan {
        let (manifest, bodies) = &parts[p];
        for f in manifest.files_of(family) {
            apply(
                &mut r.core,
                family,
                &f.name,
                &bodies[&f.name],
                &take,
                &mut figures,
                &mut since,
            )
            .unwrap();
        }
    }
    r.core.restore_positions(positions(&loaded, &streams()));
    r.core.commit().unwrap();
    r.resume_from_committed();
    (r, figures)
}

fn documents(replicas: &[&Replica]) -> BTreeMap<(i64, i64), serde_json::Value> {
    let mut docs = BTreeMap::new();
    for r in replicas {
        for out in r.outputs() {
            match out {
                OutputRecord::Document(doc) => {
                    let v: serde_json::Value = serde_json::from_slice(&doc.json).unwrap();
                    let key = (
                        v["order_id"].as_i64().unwrap(),
                        v["item_id"].as_i64().unwrap(),
                    );
                    assert!(docs.insert(key, v).is_none(), "{key:?} emitted twice");
                }
                OutputRecord::DeadLetter(dl) => panic!("unexpected dead letter {}", dl.reason),
            }
        }
    }
    docs
}

fn dataset() -> Dataset {
    generate(&GenConfig {
        customers: 80,
        addresses: 30,
        sales: 700,
        // Malformed dimension records are dead-lettered by every replica: not what is
        // measured here.
        malformed_share: 0.0,
        ..GenConfig::default()
    })
}

fn rescale(old: u32, new: u32, seed: u64) {
    let d = dataset();
    assert!(d.expected_dead_letters.is_empty());
    let input = input(&d);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut olds: Vec<Replica> = (0..old).map(|_| new_replica(&d)).collect();
    for (k, r) in olds.iter_mut().enumerate() {
        let owned = owned_shards(u32::try_from(k).unwrap(), old);
        // Each old replica stops at its own point: the dimension cuts differ.
        let steps = rng.random_range(5..60);
        r.run(&input, &owned, &mut rng, Some(steps));
    }
    let parts: Vec<_> = olds
        .iter()
        .enumerate()
        .map(|(k, r)| take_part(r, u32::try_from(k).unwrap(), old))
        .collect();
    let waiting: u64 = parts
        .iter()
        .flat_map(|(m, _)| m.files_of(Family::Pending))
        .map(|f| f.lines)
        .sum();
    let mut news = Vec::new();
    let mut taken = 0;
    for j in 0..new {
        let (mut r, figures) = restore_replica(&d, &parts, j, new);
        assert_eq!(figures.waiting_sales_seen, waiting);
        taken += figures.waiting_sales_taken;
        r.run(&input, &owned_shards(j, new), &mut rng, None);
        news.push(r);
    }
    assert_eq!(
        taken, waiting,
        "every waiting sale is taken by exactly one replica"
    );
    let all: Vec<&Replica> = olds.iter().chain(news.iter()).collect();
    let docs = documents(&all);
    let missing: Vec<_> = d
        .expected
        .keys()
        .filter(|k| !docs.contains_key(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{old} -> {new}: not emitted: {missing:?}"
    );
    assert_eq!(docs.len(), d.expected.len());
    for (k, want) in &d.expected {
        assert_eq!(&docs[k], want, "{old} -> {new}: document {k:?}");
    }
}

#[test]
fn one_to_three_to_two_gives_the_oracle_exactly_once() {
    for seed in 0..3 {
        rescale(1, 3, seed);
        rescale(3, 2, 100 + seed);
        rescale(2, 1, 200 + seed);
        rescale(2, 2, 300 + seed);
    }
}

#[test]
fn a_waiting_sale_is_released_by_another_replicas_cut() {
    use crate::test_fixtures::{address, customer, item, sale};
    let d = dataset();
    // Replica 0 (the cut) knows customer C and its address; replica 1 read a sale of C's
    // before it read C.
    let mut a = new_replica(&d);
    a.core
        .restore_row(crate::engine::RestoredRow::Customer(customer(
            "C", "A", 0, "Smith",
        )))
        .unwrap();
    a.core
        .restore_row(crate::engine::RestoredRow::Address(address("A", 0, "Oslo")))
        .unwrap();
    a.core
        .restore_row(crate::engine::RestoredRow::Item(item(9_999_001)))
        .unwrap();
    a.core.commit().unwrap();
    let mut b = new_replica(&d);
    let s = sale(1, 9_999_001, "C", "C", 10, None);
    let p = crate::join::PendingSale {
        sale: s,
        arrived_at: crate::join::ProcessingTime::from_millis(5),
        deadline: crate::join::ProcessingTime::from_millis(i64::MAX / 2),
        waiting_on: crate::join::MissingKey::Customer("C".into()),
    };
    b.core.restore_pending(p).unwrap();
    b.core.commit().unwrap();
    assert!(documents(&[&b]).is_empty(), "b waits for C");
    let parts = vec![take_part(&a, 0, 2), take_part(&b, 1, 2)];
    let (r, figures) = restore_replica(&d, &parts, 0, 1);
    assert_eq!(figures.waiting_sales_taken, 1);
    let docs = documents(&[&r]);
    assert_eq!(docs.len(), 1, "released at restore");
    assert_eq!(docs[&(1, 9_999_001)]["bill_customer"]["last_name"], "Smith");
}

#[test]
fn a_damaged_file_is_refused_with_its_name() {
    let d = dataset();
    let mut a = new_replica(&d);
    a.run(
        &input(&d),
        &owned_shards(0, 1),
        &mut StdRng::seed_from_u64(7),
        Some(30),
    );
    let (manifest, mut bodies) = take_part(&a, 0, 1);
    let f = manifest.files_of(Family::Customers).next().unwrap().clone();
    let body = bodies.get_mut(&f.name).unwrap();
    body[3] ^= 1;
    let e = super::format::verify_file(&f.name, &f, body).unwrap_err();
    assert!(e.to_string().contains(&f.name), "{e}");
    // And a line that is not an event names its file and line.
    let mut r = new_replica(&d);
    let e = apply(
        &mut r.core,
        Family::Customers,
        "part-0/customers-00000.jsonl",
        b"{\"customer_id\":\"x\"}\nnot json\n",
        &|_| true,
        &mut RestoreFigures::default(),
        &mut 0,
    )
    .unwrap_err();
    assert!(matches!(&e, SavepointError::Decode { line: 1, .. }), "{e}");
}
