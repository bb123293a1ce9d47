//! The RocksDB state against the join scenarios, plus what only a durable state has:
//! reopen, uncommitted batches, key order.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::events::{EnrichedSale, SaleKey};
use crate::join::tests::{Input, MAX_WAIT, TestState, now, rules, run_on, script};
use crate::join::{JoinOutput, Joiner, MemoryState};
use crate::test_fixtures::{address, customer, item, promo, sale, t};

impl TestState for RocksState {
    fn versions(&self, id: &CustomerId) -> Vec<EventTime> {
        self.customer_versions(id).unwrap()
    }
    fn counts(&self) -> (usize, usize, usize) {
        self.pending_counts().unwrap()
    }
}

fn open(dir: &Path) -> Joiner<RocksState> {
    Joiner::new(RocksState::open(dir).unwrap(), rules())
}

/// Commit the batch (no offsets), drop the database and open it again.
fn commit_reopen(j: Joiner<RocksState>, dir: &Path) -> Joiner<RocksState> {
    let mut state = j.into_state();
    state.commit(&BTreeMap::new()).unwrap();
    drop(state);
    open(dir)
}

fn commit(j: &mut Joiner<RocksState>) {
    j.state_mut().commit(&BTreeMap::new()).unwrap();
}

fn one_doc(out: Vec<JoinOutput>) -> EnrichedSale {
    assert_eq!(out.len(), 1, "expected one output: {out:?}");
    match out.into_iter().next() {
        Some(JoinOutput::Emit(d)) => *d,
        other => panic!("expected a document, got {other:?}"),
    }
}

fn k(order_id: i64, item_id: i64) -> SaleKey {
    SaleKey { order_id, item_id }
}

fn offsets(pairs: &[(&str, &str, &str)]) -> BTreeMap<(String, String), String> {
    pairs
        .iter()
        .map(|(a, b, c)| ((a.to_string(), b.to_string()), c.to_string()))
        .collect()
}

fn memory_run(inputs: &[Input]) -> Vec<Vec<u8>> {
    run_on(Joiner::new(MemoryState::default(), rules()), inputs, |j| j)
}

#[test]
fn replay_script_matches_the_memory_state_in_one_batch_and_across_reopens() {
    let expected = memory_run(&script());
    assert_eq!(expected.len(), 4);

    // Everything in one uncommitted batch: reads are served by the overlay.
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run_on(open(dir.path()), &script(), |j| j), expected);

    // A commit and a reopen after every input: reads are served by RocksDB.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let got = run_on(open(&path), &script(), |j| commit_reopen(j, &path));
    assert_eq!(got, expected);

    // A commit every other input: reads mix both.
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    let got = run_on(open(dir.path()), &script(), |mut j| {
        n += 1;
        if n % 2 == 0 {
            commit(&mut j);
        }
        j
    });
    assert_eq!(got, expected);
}

#[test]
fn dimension_order_does_not_change_the_document() {
    let dims = vec![
        Input::Item(item(7)),
        Input::Promo(promo("5")),
        Input::Customer(customer("C1", "A1", 10, "Bill")),
        Input::Customer(customer("C1", "A1", 500, "Later")),
        Input::Address(address("A1", 0, "Springfield")),
    ];
    let s = Input::Sale(sale(1, 7, "C1", "C1", 100, Some("5")));
    let mut sale_first = vec![s.clone()];
    sale_first.extend(dims.iter().cloned());
    let mut sale_last = dims;
    sale_last.push(s);
    let expected = memory_run(&sale_first);
    assert_eq!(expected.len(), 1);
    for inputs in [&sale_first, &sale_last] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        assert_eq!(
            run_on(open(&path), inputs, |j| commit_reopen(j, &path)),
            expected
        );
    }
}

#[test]
fn sale_before_customer_waits_across_a_restart_then_joins() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(dir.path());
    j.on_item(item(7)).unwrap();
    assert!(
        j.on_sale(sale(1, 7, "C1", "C1", 100, None), now(0))
            .unwrap()
            .is_empty()
    );
    let j = commit_reopen(j, dir.path());
    let mut j = commit_reopen(j, dir.path());
    assert_eq!(
        j.state().pending(k(1, 7)).unwrap().unwrap().waiting_on,
        MissingKey::Customer("C1".into())
    );
    assert!(
        j.on_customer(customer("C1", "A1", 10, "Edwards"))
            .unwrap()
            .is_empty()
    );
    commit(&mut j);
    let doc = one_doc(j.on_address(address("A1", 5, "Springfield")).unwrap());
    assert_eq!(
        doc.bill_customer.customer.last_name.as_deref(),
        Some("Edwards")
    );
    assert_eq!(j.state().pending_counts().unwrap(), (0, 0, 0));
    let j = commit_reopen(j, dir.path());
    assert_eq!(j.state().pending_counts().unwrap(), (0, 0, 0));
}

#[test]
fn customer_update_after_the_sale_keeps_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(dir.path());
    j.on_item(item(7)).unwrap();
    j.on_customer(customer("C1", "A1", 10, "Old")).unwrap();
    j.on_address(address("A1", 0, "Springfield")).unwrap();
    let mut j = commit_reopen(j, dir.path());
    j.on_customer(customer("C1", "A1", 120, "New")).unwrap();
    // Uncommitted newer version in the overlay, older one in the database.
    let doc = one_doc(
        j.on_sale(sale(1, 7, "C1", "C1", 100, None), now(0))
            .unwrap(),
    );
    assert_eq!(doc.bill_customer.customer.last_name.as_deref(), Some("Old"));
    let doc = one_doc(
        j.on_sale(sale(2, 7, "C1", "C1", 125, None), now(0))
            .unwrap(),
    );
    assert_eq!(doc.bill_customer.customer.last_name.as_deref(), Some("New"));
}

#[test]
fn two_customers_at_one_unseen_address_both_join() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(dir.path());
    j.on_item(item(7)).unwrap();
    j.on_customer(customer("C1", "A1", 0, "One")).unwrap();
    j.on_customer(customer("C2", "A1", 0, "Two")).unwrap();
    j.on_sale(sale(2, 7, "C2", "C2", 100, None), now(0))
        .unwrap();
    let mut j = commit_reopen(j, dir.path());
    j.on_sale(sale(1, 7, "C1", "C1", 100, None), now(0))
        .unwrap();
    let out = j.on_address(address("A1", 0, "Springfield")).unwrap();
    let orders: Vec<i64> = out
        .iter()
        .map(|o| match o {
            JoinOutput::Emit(d) => d.sale.order_id,
            JoinOutput::DeadLetter(d) => panic!("{d:?}"),
        })
        .collect();
    assert_eq!(orders, [1, 2], "key order across overlay and database");
    assert_eq!(j.state().pending_counts().unwrap(), (0, 0, 0));
}

#[test]
fn expiry_goes_to_dead_letter_and_removes_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = open(dir.path());
    j.on_item(item(7)).unwrap();
    j.on_sale(sale(1, 7, "C1", "C1", 100, None), now(0))
        .unwrap();
    j.on_sale(sale(2, 7, "C2", "C2", 100, None), now(10))
        .unwrap();
    let mut j = commit_reopen(j, dir.path());
    let wait = i64::try_from(MAX_WAIT.as_millis()).unwrap();
    assert!(j.expire(now(wait - 1)).unwrap().is_empty());
    let out = j.expire(now(wait + 10)).unwrap();
    let reasons: Vec<_> = out
        .iter()
        .map(|o| match o {
            JoinOutput::DeadLetter(d) => (d.sale.order_id, d.reason.as_str(), d.expired_at),
            JoinOutput::Emit(d) => panic!("{d:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            (1, "missing_customer", now(wait)),
            (2, "missing_customer", now(wait + 10))
        ]
    );
    let j = commit_reopen(j, dir.path());
    assert_eq!(j.state().pending_counts().unwrap(), (0, 0, 0));
}

#[test]
fn compaction_keeps_the_version_valid_at_the_horizon() {
    // allowed_lateness is 50 s.
    let dir = tempfile::tempdir().unwrap();
    let id: CustomerId = "C1".into();
    let mut j = open(dir.path());
    j.on_customer(customer("C1", "A1", 0, "v0")).unwrap();
    j.on_customer(customer("C1", "A1", 30, "v30")).unwrap();
    let mut j = commit_reopen(j, dir.path());
    j.on_customer(customer("C1", "A1", 100, "v100")).unwrap();
    assert_eq!(j.state().customer_versions(&id).unwrap(), [t(30), t(100)]);
    assert_eq!(j.stats().versions_compacted, 1);
    j.on_customer(customer("C1", "A1", 10, "v10")).unwrap();
    j.on_customer(customer("C1", "A1", 70, "v70")).unwrap();
    let j = commit_reopen(j, dir.path());
    assert_eq!(
        j.state().customer_versions(&id).unwrap(),
        [t(30), t(70), t(100)]
    );
    // A neighbouring id is untouched (length-prefixed ids: "C1" is no prefix of "C10").
    let mut j = j;
    j.on_customer(customer("C10", "A1", -1000, "other"))
        .unwrap();
    j.on_customer(customer("C1", "A1", 1000, "v1000")).unwrap();
    // Horizon 950: v100 is valid there and stays, v30 and v70 go.
    assert_eq!(j.state().customer_versions(&id).unwrap(), [t(100), t(1000)]);
    assert_eq!(
        j.state().customer_versions(&"C10".into()).unwrap(),
        [t(-1000)]
    );
}

#[test]
fn reopen_after_commit_returns_the_same_state_and_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = RocksState::open(dir.path()).unwrap();
    assert!(state.offsets().unwrap().is_empty());
    state.put_item(item(7)).unwrap();
    state.put_promo(promo("5")).unwrap();
    state
        .put_customer(customer("C1", "A1", 10, "Edwards"))
        .unwrap();
    state.put_address(address("A1", 0, "Springfield")).unwrap();
    let pending = PendingSale {
        sale: sale(1, 7, "C1", "C2", 100, Some("5")),
        arrived_at: now(0),
        deadline: now(600_000),
        waiting_on: MissingKey::Customer("C2".into()),
    };
    state.put_pending(pending.clone()).unwrap();
    state.add_waiting(&pending.waiting_on, k(1, 7)).unwrap();
    state.add_deadline(pending.deadline, k(1, 7)).unwrap();
    let first = offsets(&[("sales", "shard-0", "4960"), ("customers", "shard-1", "17")]);
    state.commit(&first).unwrap();
    state
        .commit(&offsets(&[("sales", "shard-0", "4961")]))
        .unwrap();
    drop(state);

    let state = RocksState::open(dir.path()).unwrap();
    assert_eq!(
        state.offsets().unwrap(),
        offsets(&[("customers", "shard-1", "17"), ("sales", "shard-0", "4961")])
    );
    assert_eq!(state.item(7).unwrap().as_deref(), Some(&item(7)));
    assert_eq!(
        state.promo(&"5".into()).unwrap().as_deref(),
        Some(&promo("5"))
    );
    assert_eq!(state.item(8).unwrap(), None);
    assert_eq!(
        state.customer_at(&"C1".into(), t(10)).unwrap().as_deref(),
        Some(&customer("C1", "A1", 10, "Edwards"))
    );
    assert_eq!(state.customer_at(&"C1".into(), t(9)).unwrap(), None);
    assert_eq!(
        state.first_address(&"A1".into()).unwrap().as_deref(),
        Some(&address("A1", 0, "Springfield"))
    );
    assert_eq!(state.pending(k(1, 7)).unwrap(), Some(pending.clone()));
    assert_eq!(
        state
            .waiting_on(&MissingKey::Customer("C2".into()))
            .unwrap(),
        [k(1, 7)]
    );
    assert_eq!(
        state.due(now(600_000)).unwrap(),
        [(pending.deadline, k(1, 7))]
    );
    assert!(state.due(now(599_999)).unwrap().is_empty());
}

#[test]
fn an_uncommitted_batch_leaves_neither_state_nor_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = RocksState::open(dir.path()).unwrap();
    state.put_item(item(7)).unwrap();
    state.commit(&offsets(&[("sales", "s0", "1")])).unwrap();

    // The next batch: visible to its own reads, then the process "crashes" before commit.
    state.put_item(item(8)).unwrap();
    state.put_customer(customer("C1", "A1", 0, "Lost")).unwrap();
    state.remove_pending(k(1, 1)).unwrap();
    assert!(state.item(8).unwrap().is_some());
    drop(state);

    let mut state = RocksState::open(dir.path()).unwrap();
    assert_eq!(state.offsets().unwrap(), offsets(&[("sales", "s0", "1")]));
    assert!(state.item(7).unwrap().is_some());
    assert!(state.item(8).unwrap().is_none());
    assert!(state.first_customer(&"C1".into()).unwrap().is_none());

    // abort() discards likewise, without a restart.
    state.put_item(item(9)).unwrap();
    state.abort();
    assert!(state.item(9).unwrap().is_none());
    state.commit(&BTreeMap::new()).unwrap();
    drop(state);
    let state = RocksState::open(dir.path()).unwrap();
    assert!(state.item(9).unwrap().is_none());
    assert_eq!(state.offsets().unwrap(), offsets(&[("sales", "s0", "1")]));
}

#[test]
fn overlay_deletes_hide_database_entries_in_seeks_and_scans() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = RocksState::open(dir.path()).unwrap();
    for at in [0, 10, 20] {
        state
            .put_customer(customer("C1", "A1", at, &format!("v{at}")))
            .unwrap();
    }
    state.commit(&BTreeMap::new()).unwrap();
    assert_eq!(state.compact_customer(&"C1".into(), t(15)).unwrap(), 1);
    let name = |c: Option<Shared<Customer>>| c.and_then(|c| c.last_name.clone());
    assert_eq!(
        name(state.first_customer(&"C1".into()).unwrap()).as_deref(),
        Some("v10")
    );
    assert_eq!(name(state.customer_at(&"C1".into(), t(5)).unwrap()), None);
    // A delete of the newest in the overlay, written past the join's API (which would also
    // update the cache): a fresh load merges RocksDB with the overlay and drops it.
    state
        .delete(Cf::Customers, keys::version("C1", t(20).as_micros()))
        .unwrap();
    state.customers.get_mut().clear();
    assert_eq!(
        name(state.customer_at(&"C1".into(), EventTime::MAX).unwrap()).as_deref(),
        Some("v10")
    );
    assert_eq!(state.customer_versions(&"C1".into()).unwrap(), [t(10)]);
}

#[test]
fn stored_values_decode_to_the_same_events() {
    let c = customer("C1", "A1", -5, "Edwards");
    assert_eq!(values::customer(&values::encode(&c).unwrap()).unwrap(), c);
    let a = address("A1", 7, "Springfield");
    assert_eq!(values::address(&values::encode(&a).unwrap()).unwrap(), a);
    assert_eq!(
        values::item(&values::encode(&item(7)).unwrap()).unwrap(),
        item(7)
    );
    assert_eq!(
        values::promo(&values::encode(&promo("5")).unwrap()).unwrap(),
        promo("5")
    );
    for waiting_on in [
        MissingKey::Customer("C1".into()),
        MissingKey::Address("A1".into()),
        MissingKey::Item(-3),
        MissingKey::Promo("9".into()),
        MissingKey::Promo("P 9".into()),
    ] {
        let p = PendingSale {
            sale: sale(1, 7, "C1", "C2", 100, Some("5")),
            arrived_at: now(3),
            deadline: now(600_003),
            waiting_on,
        };
        assert_eq!(values::pending(&values::encode(&p).unwrap()).unwrap(), p);
    }
}

#[test]
fn key_encoding_sorts_numerically() {
    let times = [
        i64::MIN,
        -1_000_000,
        -1,
        0,
        1,
        255,
        256,
        1_000_000,
        i64::MAX,
    ];
    let encoded: Vec<Vec<u8>> = times.iter().map(|&at| keys::version("C1", at)).collect();
    let mut sorted = encoded.clone();
    sorted.sort();
    assert_eq!(encoded, sorted);
    for (&at, key) in times.iter().zip(&encoded) {
        assert_eq!(keys::get_i64(&key[key.len() - 8..]), Some(at));
    }
    // Length prefix: the versions of one id are contiguous, never interleaved with those of
    // an id it is a prefix of (ids order by length first, which no scan depends on).
    assert!(keys::version("C1", i64::MAX) < keys::version("C10", i64::MIN));
    assert!(keys::version("C2", i64::MAX) < keys::version("C10", i64::MIN));

    // Through RocksDB: negative and positive event times come back in numeric order.
    let dir = tempfile::tempdir().unwrap();
    let mut state = RocksState::open(dir.path()).unwrap();
    for secs in [5, -3, 0, -100_000, 2] {
        state.put_customer(customer("C1", "A1", secs, "x")).unwrap();
    }
    state.commit(&BTreeMap::new()).unwrap();
    assert_eq!(
        state.customer_versions(&"C1".into()).unwrap(),
        [t(-100_000), t(-3), t(0), t(2), t(5)]
    );
    assert_eq!(
        state
            .customer_at(&"C1".into(), t(-1))
            .unwrap()
            .map(|c| c.customer_datetime),
        Some(t(-3))
    );
    // Deadlines: negative and positive processing times.
    for ms in [10, -10, 0] {
        state
            .add_deadline(ProcessingTime::from_millis(ms), k(ms, 1))
            .unwrap();
    }
    let due: Vec<i64> = state
        .due(ProcessingTime::from_millis(0))
        .unwrap()
        .iter()
        .map(|(at, _)| at.as_millis())
        .collect();
    assert_eq!(due, [-10, 0]);
}

#[test]
fn a_newer_layout_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let state = RocksState::open(dir.path()).unwrap();
        let meta = state.cf(Cf::Meta).unwrap();
        state
            .db
            .put_cf(meta, LAYOUT_KEY, (LAYOUT_VERSION + 1).to_be_bytes())
            .unwrap();
    }
    let err = RocksState::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StateError::NewerLayout { found, supported }
            if found == LAYOUT_VERSION + 1 && supported == LAYOUT_VERSION),
        "{err}"
    );
    assert!(err.to_string().contains("newer than this binary supports"));
}

/// The layout before text promo ids kept them as integer keys: such a state is refused, not
/// read with keys that no longer match.
#[test]
fn an_older_layout_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let state = RocksState::open(dir.path()).unwrap();
        let meta = state.cf(Cf::Meta).unwrap();
        state
            .db
            .put_cf(meta, LAYOUT_KEY, (LAYOUT_VERSION - 1).to_be_bytes())
            .unwrap();
    }
    let err = RocksState::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StateError::UnsupportedLayout(found) if found == LAYOUT_VERSION - 1),
        "{err}"
    );
    assert!(err.to_string().contains("is not supported"), "{err}");
}

#[test]
fn text_promo_ids_are_keys_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = RocksState::open(dir.path()).unwrap();
    for id in ["P1", "P10", "1", "01"] {
        let mut p = promo("x");
        p.promo_id = id.into();
        p.promo_name = Some(format!("name {id}"));
        state.put_promo(p).unwrap();
    }
    let name = |s: &RocksState, id: &str| {
        s.promo(&id.into())
            .unwrap()
            .and_then(|p| p.promo_name.clone())
    };
    assert_eq!(name(&state, "P1").as_deref(), Some("name P1"), "overlay");
    state.commit(&BTreeMap::new()).unwrap();
    drop(state);
    let state = RocksState::open(dir.path()).unwrap();
    for id in ["P1", "P10", "1", "01"] {
        assert_eq!(name(&state, id), Some(format!("name {id}")), "{id}");
    }
    assert_eq!(name(&state, "P100"), None);
    assert_eq!(name(&state, "x"), None);
}

#[test]
fn the_version_cache_follows_writes_commits_and_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = RocksState::open(dir.path()).unwrap();
    let name = |s: &RocksState, at: i64| {
        s.customer_at(&"C1".into(), t(at))
            .unwrap()
            .and_then(|c| c.last_name.clone())
    };
    state.put_customer(customer("C1", "A1", 0, "v0")).unwrap();
    state.commit(&BTreeMap::new()).unwrap();
    // Read once: C1 is cached from here on.
    assert_eq!(name(&state, 100).as_deref(), Some("v0"));
    // A write updates the cached entry: the batch's reads see it...
    state.put_customer(customer("C1", "A1", 50, "v50")).unwrap();
    assert_eq!(name(&state, 100).as_deref(), Some("v50"));
    assert_eq!(name(&state, 10).as_deref(), Some("v0"));
    // ...and an abort takes it back.
    state.abort();
    assert_eq!(name(&state, 100).as_deref(), Some("v0"));
    // Same time replaces; a commit keeps the entry valid without a reload.
    state.put_customer(customer("C1", "A1", 50, "v50")).unwrap();
    state
        .put_customer(customer("C1", "A1", 50, "v50b"))
        .unwrap();
    state.commit(&BTreeMap::new()).unwrap();
    assert_eq!(name(&state, 100).as_deref(), Some("v50b"));
    // Compaction of a cached id: RocksDB and the cache drop the same version.
    assert_eq!(state.compact_customer(&"C1".into(), t(60)).unwrap(), 1);
    assert_eq!(name(&state, 10), None);
    state.commit(&BTreeMap::new()).unwrap();
    drop(state);
    let state = RocksState::open(dir.path()).unwrap();
    assert_eq!(name(&state, 10), None);
    assert_eq!(name(&state, 100).as_deref(), Some("v50b"));
    assert_eq!(state.customer_versions(&"C1".into()).unwrap(), [t(50)]);
}

// ---- the outbox's segment log -----------------------------------------------------------------

/// `n` entries `"<tag>-<i>"` with their headers, as the engine queues them.
fn entries(tag: &str, n: usize) -> (Vec<u8>, Vec<usize>) {
    let mut buf = Vec::new();
    let mut starts = Vec::new();
    for i in 0..n {
        let start = outbox::begin_entry(&mut buf);
        buf.extend_from_slice(format!("{tag}-{i}").as_bytes());
        outbox::end_entry(&mut buf, start).unwrap();
        starts.push(start);
    }
    (buf, starts)
}

fn bodies(read: Vec<(u64, Vec<u8>)>) -> Vec<(u64, String)> {
    read.into_iter()
        .map(|(seq, v)| (seq, String::from_utf8(v).unwrap()))
        .collect()
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn outbox_segments_roll_read_across_and_trim_whole() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny segments: each commit (3 entries of 11 bytes) starts a new one.
    let log = outbox::OutboxLog::open(dir.path(), outbox::Head::default(), 30).unwrap();
    let mut head = outbox::Head::default();
    for tag in ["a", "b", "c"] {
        let (buf, starts) = entries(tag, 3);
        let appended = log.append(&buf, &starts).unwrap();
        head = appended.head;
        log.publish(appended);
    }
    assert_eq!(head.next, 9);
    assert_eq!(
        head.segment, 6,
        "the third commit started the third segment"
    );
    assert_eq!(
        segment_files(dir.path()),
        [
            "00000000000000000000.seg",
            "00000000000000000003.seg",
            "00000000000000000006.seg"
        ]
    );
    let reader_read = |from, n| bodies(log.read(from, n, usize::MAX).unwrap());
    // One segment per call; the reader goes on (see `OutboxReader::read`).
    assert_eq!(
        reader_read(1, 10),
        [(1, "a-1".to_string()), (2, "a-2".to_string())]
    );
    assert_eq!(reader_read(4, 1), [(4, "b-1".to_string())]);
    assert!(reader_read(9, 10).is_empty(), "nothing past the head");
    // Byte limit: at least one entry.
    assert_eq!(bodies(log.read(6, 10, 1).unwrap()).len(), 1);

    // Trim below 5: only the first segment is wholly below.
    assert_eq!(log.trim(5).unwrap(), 1);
    assert_eq!(log.first(), Some(3));
    assert_eq!(
        reader_read(0, 10)[0],
        (3, "b-0".to_string()),
        "trimmed entries are skipped"
    );
    // The last segment is never removed, even when every entry is below.
    assert_eq!(log.trim(100).unwrap(), 1);
    assert_eq!(segment_files(dir.path()), ["00000000000000000006.seg"]);
    drop(log);

    // Reopened at the committed head: the same entries.
    let log = outbox::OutboxLog::open(dir.path(), head, 30).unwrap();
    assert_eq!(
        bodies(log.read(0, 10, usize::MAX).unwrap()),
        [
            (6, "c-0".to_string()),
            (7, "c-1".to_string()),
            (8, "c-2".to_string())
        ]
    );
}

#[test]
fn an_outbox_append_without_its_commit_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = outbox::OutboxLog::open(dir.path(), outbox::Head::default(), 40).unwrap();
    let (buf, starts) = entries("kept", 3);
    let appended = log.append(&buf, &starts).unwrap();
    let head = appended.head;
    log.publish(appended);
    // Two appends whose RocksDB commit never happened: the second starts a new segment.
    let (buf, starts) = entries("lost", 3);
    let lost = log.append(&buf, &starts).unwrap();
    assert_eq!(lost.head.segment, 3);
    drop(lost);
    drop(log);
    assert_eq!(segment_files(dir.path()).len(), 2);

    let log = outbox::OutboxLog::open(dir.path(), head, 40).unwrap();
    assert_eq!(segment_files(dir.path()), ["00000000000000000000.seg"]);
    assert_eq!(
        std::fs::metadata(dir.path().join("00000000000000000000.seg"))
            .unwrap()
            .len(),
        head.len
    );
    assert_eq!(bodies(log.read(0, 10, usize::MAX).unwrap()).len(), 3);

    // An uncommitted append within the last segment is cut back.
    let (buf, starts) = entries("short", 1);
    let head = outbox::Head {
        segment: 0,
        len: head.len,
        next: 3,
    };
    let log2 = outbox::OutboxLog::open(dir.path(), head, 1 << 20).unwrap();
    drop(log2.append(&buf, &starts).unwrap());
    drop(log2);
    drop(log);
    let log = outbox::OutboxLog::open(dir.path(), head, 1 << 20).unwrap();
    assert_eq!(log.read(0, 10, usize::MAX).unwrap().len(), 3);
}

#[test]
fn a_damaged_outbox_is_reported_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let log = outbox::OutboxLog::open(dir.path(), outbox::Head::default(), 1 << 20).unwrap();
    let (buf, starts) = entries("x", 3);
    let appended = log.append(&buf, &starts).unwrap();
    let head = appended.head;
    log.publish(appended);
    drop(log);
    let path = dir.path().join("00000000000000000000.seg");

    // A flipped byte in an entry: its read fails with the entry's number.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let log = outbox::OutboxLog::open(dir.path(), head, 1 << 20).unwrap();
    let err = log.read(2, 1, usize::MAX).unwrap_err().to_string();
    assert!(err.contains("entry 2: checksum"), "{err}");
    assert_eq!(log.read(0, 2, usize::MAX).unwrap().len(), 2);
    drop(log);

    // Shorter than committed (a lost write): refused on open.
    bytes.truncate(bytes.len() - 2);
    std::fs::write(&path, &bytes).unwrap();
    let err = outbox::OutboxLog::open(dir.path(), head, 1 << 20)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("were committed"), "{err}");

    // Missing altogether.
    std::fs::remove_file(&path).unwrap();
    let err = outbox::OutboxLog::open(dir.path(), head, 1 << 20)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("is missing"), "{err}");
}

#[test]
fn outputs_commit_with_the_state_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = RocksState::open(dir.path()).unwrap();
    state.push_output(b"one").unwrap();
    state.push_output(b"two").unwrap();
    assert_eq!(state.pending_outputs(), 2);
    assert!(
        state
            .outbox_reader()
            .read(0, 10, usize::MAX)
            .unwrap()
            .is_empty()
    );
    state.commit(&offsets(&[("sales", "s0", "1")])).unwrap();
    assert_eq!(state.outbox_next(), 2);
    // A failed writer queues nothing.
    let failed: Result<(), StateError> = state.push_output_with(|out| {
        out.extend_from_slice(b"half");
        Err(StateError::MissingColumnFamily("test"))
    });
    assert!(failed.is_err());
    state.push_output(b"three").unwrap();
    state.commit(&offsets(&[("sales", "s0", "2")])).unwrap();
    // Not committed: lost with the batch, like its offsets.
    state.push_output(b"lost").unwrap();
    drop(state);

    let state = RocksState::open(dir.path()).unwrap();
    assert_eq!(state.offsets().unwrap(), offsets(&[("sales", "s0", "2")]));
    let state = commit_outputs_reopen(state, dir.path(), &[b"four"]);
    assert_eq!(state.outbox_next(), 4);
    let reader = state.outbox_reader();
    assert_eq!(
        bodies(reader.read(0, 10, usize::MAX).unwrap()),
        [
            (0, "one".to_string()),
            (1, "two".to_string()),
            (2, "three".to_string()),
            (3, "four".to_string())
        ]
    );
    assert_eq!(bodies(reader.range(1, 2).unwrap()).len(), 2);
    assert_eq!(reader.first().unwrap(), Some(0));
    // Sequence numbers continue after a reopen, also once everything is trimmed.
    reader.trim(4).unwrap();
    drop(reader);
    let mut state = commit_outputs_reopen(state, dir.path(), &[b"five"]);
    assert_eq!(state.outbox_next(), 5);
    state.push_output(b"six").unwrap();
    state.commit(&BTreeMap::new()).unwrap();
    assert_eq!(
        bodies(state.outbox_reader().read(4, 10, usize::MAX).unwrap()),
        [(4, "five".to_string()), (5, "six".to_string())]
    );
}

fn commit_outputs_reopen(mut state: RocksState, dir: &Path, outputs: &[&[u8]]) -> RocksState {
    for o in outputs {
        state.push_output(o).unwrap();
    }
    state.commit(&BTreeMap::new()).unwrap();
    drop(state);
    RocksState::open(dir).unwrap()
}

#[test]
fn the_pending_filter_follows_puts_removes_aborts_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = RocksState::open(dir.path()).unwrap();
    let pending = |order| PendingSale {
        sale: sale(order, 7, "C1", "C1", 100, None),
        arrived_at: now(0),
        deadline: now(600_000),
        waiting_on: MissingKey::Customer("C1".into()),
    };
    // Put twice (a replacement), removed once: gone.
    state.put_pending(pending(1)).unwrap();
    state.put_pending(pending(1)).unwrap();
    state.put_pending(pending(2)).unwrap();
    state.remove_pending(k(1, 7)).unwrap();
    // Removing an absent line changes nothing.
    state.remove_pending(k(3, 7)).unwrap();
    assert_eq!(state.pending(k(1, 7)).unwrap(), None);
    assert_eq!(state.pending(k(2, 7)).unwrap(), Some(pending(2)));
    state.commit(&BTreeMap::new()).unwrap();

    // An aborted batch's changes leave the filter too.
    state.remove_pending(k(2, 7)).unwrap();
    state.put_pending(pending(4)).unwrap();
    state.abort();
    assert_eq!(state.pending(k(2, 7)).unwrap(), Some(pending(2)));
    assert_eq!(state.pending(k(4, 7)).unwrap(), None);
    drop(state);

    // Reopened: loaded from the committed lines.
    let mut state = RocksState::open(dir.path()).unwrap();
    assert_eq!(state.pending(k(2, 7)).unwrap(), Some(pending(2)));
    state.remove_pending(k(2, 7)).unwrap();
    assert_eq!(state.pending(k(2, 7)).unwrap(), None);
}

#[test]
fn the_waiting_filter_follows_adds_removes_commits_aborts_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = RocksState::open(dir.path()).unwrap();
    let c1 = MissingKey::Customer("C1".into());
    let a1 = MissingKey::Address("A1".into());
    let i7 = MissingKey::Item(7);
    // Whether the filter proves that nothing waits on `on` (no iterator is opened).
    let filtered = |s: &RocksState, on: &MissingKey| {
        !s.waiting_filter
            .may_contain(filter::bytes_hash(&keys::missing(on)))
    };
    assert!(filtered(&state, &c1));
    assert!(state.waiting_on(&c1).unwrap().is_empty());

    // The same entry added twice counts once; removing absent entries counts nothing.
    state.add_waiting(&c1, k(1, 7)).unwrap();
    state.add_waiting(&c1, k(1, 7)).unwrap();
    state.add_waiting(&c1, k(2, 7)).unwrap();
    state.add_waiting(&i7, k(3, 7)).unwrap();
    state.remove_waiting(&c1, k(1, 7)).unwrap();
    state.remove_waiting(&c1, k(9, 9)).unwrap();
    state.remove_waiting(&a1, k(2, 7)).unwrap();
    assert_eq!(state.waiting_on(&c1).unwrap(), [k(2, 7)]);
    assert_eq!(state.waiting_on(&i7).unwrap(), [k(3, 7)]);
    state.remove_waiting(&c1, k(2, 7)).unwrap();
    assert!(filtered(&state, &c1), "back to zero");
    assert!(state.waiting_on(&c1).unwrap().is_empty());
    state.add_waiting(&c1, k(2, 7)).unwrap();
    state.commit(&BTreeMap::new()).unwrap();
    assert_eq!(state.waiting_on(&c1).unwrap(), [k(2, 7)]);

    // An aborted batch: its add is not reported waiting, its remove is undone.
    state.add_waiting(&a1, k(4, 7)).unwrap();
    state.remove_waiting(&c1, k(2, 7)).unwrap();
    assert_eq!(state.waiting_on(&a1).unwrap(), [k(4, 7)]);
    assert!(state.waiting_on(&c1).unwrap().is_empty());
    state.abort();
    assert!(filtered(&state, &a1));
    assert!(state.waiting_on(&a1).unwrap().is_empty());
    assert_eq!(state.waiting_on(&c1).unwrap(), [k(2, 7)]);
    drop(state);

    // Reopened: counted from the committed entries (which then count down to zero).
    let mut state = RocksState::open(dir.path()).unwrap();
    assert_eq!(state.waiting_on(&c1).unwrap(), [k(2, 7)]);
    assert_eq!(state.waiting_on(&i7).unwrap(), [k(3, 7)]);
    assert!(filtered(&state, &a1));
    state.remove_waiting(&c1, k(2, 7)).unwrap();
    assert!(filtered(&state, &c1));
    assert!(state.waiting_on(&c1).unwrap().is_empty());
    assert!(!filtered(&state, &i7));
}

#[test]
fn the_version_id_filter_skips_unseen_ids_and_follows_aborts_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = RocksState::open(dir.path()).unwrap();
    let name = |s: &RocksState, id: &str, at: i64| {
        s.customer_at(&id.into(), t(at))
            .unwrap()
            .and_then(|c| c.last_name.clone())
    };
    let city = |s: &RocksState, id: &str| {
        s.first_address(&id.into())
            .unwrap()
            .and_then(|a| a.city.clone())
    };
    // Whether the filter lets a read of the id open an iterator.
    let customer_seen =
        |s: &RocksState, id: &str| s.customer_ids.may_contain(versions::id_hash(id));
    let address_seen = |s: &RocksState, id: &str| s.address_ids.may_contain(versions::id_hash(id));

    // Never seen: no versions, answered by the filter.
    assert!(!customer_seen(&state, "C1"));
    assert_eq!(name(&state, "C1", 100), None);
    // The empty entry that read cached takes the next write in place.
    state.put_customer(customer("C1", "A1", 10, "v10")).unwrap();
    assert!(customer_seen(&state, "C1"));
    assert_eq!(name(&state, "C1", 100).as_deref(), Some("v10"));

    // Aborted: the bits stay (false positives), the versions are gone.
    state.put_customer(customer("C2", "A2", 0, "lost")).unwrap();
    state.put_address(address("A2", 0, "Lost")).unwrap();
    state.abort();
    assert!(customer_seen(&state, "C2") && address_seen(&state, "A2"));
    assert_eq!(name(&state, "C2", 100), None);
    assert_eq!(city(&state, "A2"), None);
    assert_eq!(name(&state, "C1", 100), None, "never committed");

    // Committed, reopened: the ids are marked from the stored keys.
    state.put_customer(customer("C1", "A1", 10, "v10")).unwrap();
    state.put_address(address("A1", 0, "Springfield")).unwrap();
    state.commit(&BTreeMap::new()).unwrap();
    drop(state);
    let mut state = RocksState::open(dir.path()).unwrap();
    assert!(customer_seen(&state, "C1") && address_seen(&state, "A1"));
    assert!(!customer_seen(&state, "C2") && !address_seen(&state, "A2"));
    assert!(!customer_seen(&state, "A1"), "one filter per type");
    assert_eq!(name(&state, "C1", 100).as_deref(), Some("v10"));
    assert_eq!(city(&state, "A1").as_deref(), Some("Springfield"));
    assert_eq!(name(&state, "C3", 100), None);
    // A later version of a reopened id joins the loaded ones.
    state.put_customer(customer("C1", "A1", 20, "v20")).unwrap();
    assert_eq!(name(&state, "C1", 15).as_deref(), Some("v10"));
    assert_eq!(name(&state, "C1", 25).as_deref(), Some("v20"));
}

#[test]
fn a_corrupt_key_scanned_at_open_is_reported() {
    for cf in [Cf::Customers, Cf::Waiting] {
        let dir = tempfile::tempdir().unwrap();
        {
            let state = RocksState::open(dir.path()).unwrap();
            state
                .db
                .put_cf(state.cf(cf).unwrap(), [0, 0, 0, 9, b'x'], [])
                .unwrap();
        }
        let err = RocksState::open(dir.path()).unwrap_err();
        assert!(
            matches!(&err, StateError::Corrupt { cf: name, .. } if *name == cf.name()),
            "{err}"
        );
    }
}

#[test]
fn outputs_written_behind_count_only_once_committed() {
    let dir = tempfile::tempdir().unwrap();
    // 100 kB each: a batch of five is written behind before its commit.
    let output = |tag: u8| {
        let mut v = vec![b'x'; 100_000];
        v[0] = tag;
        v
    };
    {
        let mut state = RocksState::open(dir.path()).unwrap();
        for _ in 0..5 {
            state.push_output(&output(b'a')).unwrap();
        }
        state.abort();
        for tag in b"bcdef" {
            state.push_output(&output(*tag)).unwrap();
        }
        state.commit(&BTreeMap::new()).unwrap();
        let read = state.outbox_reader().read(0, 100, usize::MAX).unwrap();
        assert_eq!(read.iter().map(|(_, v)| v[0]).collect::<Vec<_>>(), b"bcdef");
        // Written behind, never committed: the process ends here.
        for _ in 0..5 {
            state.push_output(&output(b'z')).unwrap();
        }
    }
    let state = RocksState::open(dir.path()).unwrap();
    assert_eq!(state.outbox_next(), 5);
    let read = state.outbox_reader().read(0, 100, usize::MAX).unwrap();
    let tags: Vec<(u64, u8, usize)> = read.iter().map(|(s, v)| (*s, v[0], v.len())).collect();
    assert_eq!(
        tags,
        [
            (0, b'b', 100_000),
            (1, b'c', 100_000),
            (2, b'd', 100_000),
            (3, b'e', 100_000),
            (4, b'f', 100_000)
        ]
    );
}
