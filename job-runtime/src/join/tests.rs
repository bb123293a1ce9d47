//! One test per interleaving class of the join rules.

use std::time::Duration;

use super::*;
use crate::events::{EnrichedSale, PromoId, SaleKey};
use crate::test_fixtures::{address, customer, item, promo, sale, sale_with_promo_json, t};

pub(crate) const MAX_WAIT: Duration = Duration::from_secs(600);

pub(crate) fn rules() -> JoinRules {
    JoinRules {
        max_wait: MAX_WAIT,
        allowed_lateness: Duration::from_secs(50),
    }
}

/// What the scenarios need of a state beyond [`JoinState`]: two inspections. Every scenario
/// runs against each implementation (see [`scenarios!`] at the end of this file).
pub(crate) trait TestState: JoinState {
    /// Event times of the stored versions of a customer, ascending.
    fn versions(&self, id: &CustomerId) -> Vec<EventTime>;
    /// (pending sales, waiting index entries, deadline index entries).
    fn counts(&self) -> (usize, usize, usize);
}

impl TestState for MemoryState {
    fn versions(&self, id: &CustomerId) -> Vec<EventTime> {
        self.customer_versions(id)
    }
    fn counts(&self) -> (usize, usize, usize) {
        self.pending_counts()
    }
}

/// Makes an empty state.
type New<S> = fn() -> S;

fn joiner<S: TestState>(new: New<S>) -> Joiner<S> {
    Joiner::new(new(), rules())
}

/// A joiner with item 7 and promo 5 loaded.
fn with_reference<S: TestState>(new: New<S>) -> Joiner<S> {
    let mut j = joiner(new);
    assert!(j.on_item(item(7)).unwrap().is_empty());
    assert!(j.on_promo(promo("5")).unwrap().is_empty());
    j
}

pub(crate) fn now(ms: i64) -> ProcessingTime {
    ProcessingTime::from_millis(1_700_000_000_000 + ms)
}

fn docs(out: Vec<JoinOutput>) -> Vec<EnrichedSale> {
    out.into_iter()
        .map(|o| match o {
            JoinOutput::Emit(d) => *d,
            JoinOutput::DeadLetter(d) => panic!("unexpected dead letter {d:?}"),
        })
        .collect()
}

fn one_doc(out: Vec<JoinOutput>) -> EnrichedSale {
    let mut d = docs(out);
    assert_eq!(d.len(), 1, "expected exactly one document: {d:?}");
    d.remove(0)
}

fn dead_letters(out: Vec<JoinOutput>) -> Vec<DeadLetter> {
    out.into_iter()
        .map(|o| match o {
            JoinOutput::DeadLetter(d) => *d,
            JoinOutput::Emit(d) => panic!("unexpected document {d:?}"),
        })
        .collect()
}

fn waiting<S: TestState>(j: &Joiner<S>, key: SaleKey) -> MissingKey {
    j.state().pending(key).unwrap().unwrap().waiting_on
}

fn assert_no_pending<S: TestState>(j: &Joiner<S>) {
    assert_eq!(j.state().counts(), (0, 0, 0), "state leaks");
}

fn k(order_id: i64, item_id: i64) -> SaleKey {
    SaleKey { order_id, item_id }
}

fn sale_before_customer_waits_then_joins<S: TestState>(new: New<S>) {
    let mut j = with_reference(new);
    let s = sale(1, 7, "C1", "C1", 100, None);
    assert!(j.on_sale(s, now(0)).unwrap().is_empty());
    assert_eq!(waiting(&j, k(1, 7)), MissingKey::Customer("C1".into()));

    assert!(
        j.on_customer(customer("C1", "A1", 10, "Edwards"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(waiting(&j, k(1, 7)), MissingKey::Address("A1".into()));

    let doc = one_doc(j.on_address(address("A1", 5, "Springfield")).unwrap());
    assert_eq!(
        doc.bill_customer.customer.last_name.as_deref(),
        Some("Edwards")
    );
    assert_eq!(
        doc.ship_customer.address.unwrap().city.as_deref(),
        Some("Springfield")
    );
    assert!(doc.join_flags.is_empty());
    assert_no_pending(&j);
}

fn address_after_customer<S: TestState>(new: New<S>) {
    let mut j = with_reference(new);
    assert!(
        j.on_customer(customer("C1", "A1", 10, "Edwards"))
            .unwrap()
            .is_empty()
    );
    assert!(
        j.on_sale(sale(1, 7, "C1", "C1", 100, None), now(0))
            .unwrap()
            .is_empty()
    );
    assert_eq!(waiting(&j, k(1, 7)), MissingKey::Address("A1".into()));
    let doc = one_doc(j.on_address(address("A1", 0, "Springfield")).unwrap());
    assert_eq!(
        doc.bill_customer.address.unwrap().city.as_deref(),
        Some("Springfield")
    );
    assert_no_pending(&j);
}

fn customer_update_after_the_sale_keeps_the_version_valid_at_sale_time<S: TestState>(new: New<S>) {
    let mut j = with_reference(new);
    j.on_customer(customer("C1", "A1", 10, "Old")).unwrap();
    j.on_address(address("A1", 0, "Springfield")).unwrap();
    // Emitted at once with the version valid at t=100.
    let doc = one_doc(
        j.on_sale(sale(1, 7, "C1", "C1", 100, None), now(0))
            .unwrap(),
    );
    assert_eq!(doc.bill_customer.customer.last_name.as_deref(), Some("Old"));
    // The update (t=120, within lateness) produces nothing and changes nothing emitted.
    assert!(
        j.on_customer(customer("C1", "A1", 120, "New"))
            .unwrap()
            .is_empty()
    );

    // A sale that was still waiting (for its item) when the update arrived keeps the
    // version valid at its own time.
    assert!(
        j.on_sale(sale(2, 8, "C1", "C1", 110, None), now(1))
            .unwrap()
            .is_empty()
    );
    assert!(
        j.on_customer(customer("C1", "A1", 130, "Newer"))
            .unwrap()
            .is_empty()
    );
    let doc = one_doc(j.on_item(item(8)).unwrap());
    assert_eq!(doc.bill_customer.customer.last_name.as_deref(), Some("Old"));

    // Replaying yesterday's sale today attaches yesterday's customer (defect 4).
    let doc = one_doc(
        j.on_sale(sale(1, 7, "C1", "C1", 100, None), now(2))
            .unwrap(),
    );
    assert_eq!(doc.bill_customer.customer.last_name.as_deref(), Some("Old"));
    let doc = one_doc(
        j.on_sale(sale(3, 7, "C1", "C1", 125, None), now(3))
            .unwrap(),
    );
    assert_eq!(doc.bill_customer.customer.last_name.as_deref(), Some("New"));
    assert_no_pending(&j);
}

fn address_is_the_version_valid_at_sale_time<S: TestState>(new: New<S>) {
    let mut j = with_reference(new);
    j.on_customer(customer("C1", "A1", 0, "Edwards")).unwrap();
    j.on_address(address("A1", 0, "Before")).unwrap();
    j.on_address(address("A1", 200, "After")).unwrap();
    let doc = one_doc(
        j.on_sale(sale(1, 7, "C1", "C1", 100, None), now(0))
            .unwrap(),
    );
    assert_eq!(
        doc.bill_customer.address.unwrap().city.as_deref(),
        Some("Before")
    );
    let doc = one_doc(
        j.on_sale(sale(2, 7, "C1", "C1", 300, None), now(0))
            .unwrap(),
    );
    assert_eq!(
        doc.bill_customer.address.unwrap().city.as_deref(),
        Some("After")
    );
}

fn two_customers_at_one_unseen_address_both_join<S: TestState>(new: New<S>) {
    let mut j = with_reference(new);
    j.on_customer(customer("C1", "A1", 0, "One")).unwrap();
    j.on_customer(customer("C2", "A1", 0, "Two")).unwrap();
    assert!(
        j.on_sale(sale(2, 7, "C2", "C2", 100, None), now(0))
            .unwrap()
            .is_empty()
    );
    assert!(
        j.on_sale(sale(1, 7, "C1", "C1", 100, None), now(0))
            .unwrap()
            .is_empty()
    );
    let out = docs(j.on_address(address("A1", 0, "Springfield")).unwrap());
    let names: Vec<_> = out
        .iter()
        .map(|d| {
            (
                d.sale.order_id,
                d.bill_customer.customer.last_name.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [(1, "One".to_string()), (2, "Two".to_string())],
        "key order"
    );
    // The address stays: a third customer there joins at once (defect 2).
    j.on_customer(customer("C3", "A1", 0, "Three")).unwrap();
    one_doc(
        j.on_sale(sale(3, 7, "C3", "C3", 100, None), now(0))
            .unwrap(),
    );
    assert_no_pending(&j);
}

fn many_sales_wait_for_one_customer<S: TestState>(new: New<S>) {
    let mut j = with_reference(new);
    for order in 1..=3 {
        j.on_sale(sale(order, 7, "C1", "C1", 100, None), now(0))
            .unwrap();
    }
    j.on_address(address("A1", 0, "Springfield")).unwrap();
    let out = docs(j.on_customer(customer("C1", "A1", 0, "Edwards")).unwrap());
    assert_eq!(
        out.iter().map(|d| d.sale.order_id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_no_pending(&j);
}

fn missing_promo_waits_then_joins<S: TestState>(new: New<S>) {
    let mut j = with_reference(new);
    j.on_customer(customer("C1", "A1", 0, "Edwards")).unwrap();
    j.on_address(address("A1", 0, "Springfield")).unwrap();
    assert!(
        j.on_sale(sale(1, 7, "C1", "C1", 100, Some("9")), now(0))
            .unwrap()
            .is_empty()
    );
    assert_eq!(waiting(&j, k(1, 7)), MissingKey::Promo("9".into()));
    let doc = one_doc(j.on_promo(promo("9")).unwrap());
    assert_eq!(doc.promo.unwrap().promo_id.as_str(), "9");
    assert_no_pending(&j);
}

fn text_promo_id_waits_then_joins<S: TestState>(new: New<S>) {
    let mut j = with_reference(new);
    j.on_customer(customer("C1", "A1", 0, "Edwards")).unwrap();
    j.on_address(address("A1", 0, "Springfield")).unwrap();
    assert!(
        j.on_sale(sale(1, 7, "C1", "C1", 100, Some("P12")), now(0))
            .unwrap()
            .is_empty()
    );
    assert_eq!(waiting(&j, k(1, 7)), MissingKey::Promo("P12".into()));
    // An id that the waiting one extends, or is a prefix of, releases nothing.
    for other in ["P1", "P120"] {
        assert!(j.on_promo(promo(other)).unwrap().is_empty(), "{other}");
    }
    let doc = one_doc(j.on_promo(promo("P12")).unwrap());
    assert_eq!(doc.promo.as_ref().unwrap().promo_id.as_str(), "P12");
    let json: serde_json::Value = serde_json::from_slice(&doc.to_json().unwrap()).unwrap();
    assert_eq!(json["promo_id"], "P12");
    assert_eq!(json["promo"]["promo_id"], "P12");
    assert_no_pending(&j);
}

fn a_numeric_and_a_string_promo_id_join_the_same_promo<S: TestState>(new: New<S>) {
    let mut j = with_reference(new);
    j.on_customer(customer("C1", "A1", 0, "Edwards")).unwrap();
    j.on_address(address("A1", 0, "Springfield")).unwrap();
    for (order, sent) in [(1, serde_json::json!(5)), (2, serde_json::json!("5"))] {
        let s = sale_with_promo_json(order, 7, "C1", "C1", 100, sent);
        let doc = one_doc(j.on_sale(s, now(0)).unwrap());
        assert_eq!(doc.promo.as_ref().unwrap().promo_id.as_str(), "5");
        let json: serde_json::Value = serde_json::from_slice(&doc.to_json().unwrap()).unwrap();
        assert_eq!(json["promo_id"], "5", "written as a string");
        assert_eq!(json["promo"]["promo_id"], "5");
    }
    // And both wait for it alike.
    for (order, sent) in [(3, serde_json::json!(6)), (4, serde_json::json!("6"))] {
        let s = sale_with_promo_json(order, 7, "C1", "C1", 100, sent);
        assert!(j.on_sale(s, now(0)).unwrap().is_empty());
    }
    let out = docs(j.on_promo(promo("6")).unwrap());
    assert_eq!(
        out.iter().map(|d| d.sale.order_id).collect::<Vec<_>>(),
        [3, 4]
    );
    assert_no_pending(&j);
}

fn an_unknown_text_promo_waits_then_dead_letters_as_missing_promo<S: TestState>(new: New<S>) {
    let mut j = with_reference(new);
    j.on_customer(customer("C1", "A1", 0, "Edwards")).unwrap();
    j.on_address(address("A1", 0, "Springfield")).unwrap();
    assert!(
        j.on_sale(sale(1, 7, "C1", "C1", 100, Some("SPRING-X")), now(0))
            .unwrap()
            .is_empty()
    );
    assert_eq!(waiting(&j, k(1, 7)), MissingKey::Promo("SPRING-X".into()));
    let wait = i64::try_from(MAX_WAIT.as_millis()).unwrap();
    let dl = dead_letters(j.expire(now(wait)).unwrap());
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].reason.as_str(), "missing_promo");
    assert_eq!(dl[0].missing, MissingKey::Promo("SPRING-X".into()));
    let record = serde_json::to_value(&dl[0]).unwrap();
    assert_eq!(
        record["missing"],
        serde_json::json!({"kind": "promo", "id": "SPRING-X"})
    );
    assert_eq!(record["sale"]["promo_id"], "SPRING-X");
    assert_no_pending(&j);
}

fn null_promo_joins_without_promo<S: TestState>(new: New<S>) {
    let mut j = with_reference(new);
    j.on_customer(customer("C1", "A1", 0, "Edwards")).unwrap();
    j.on_address(address("A1", 0, "Springfield")).unwrap();
    let doc = one_doc(
        j.on_sale(sale(1, 7, "C1", "C1", 100, None), now(0))
            .unwrap(),
    );
    assert!(doc.promo.is_none());
    let json: serde_json::Value = serde_json::from_slice(&doc.to_json().unwrap()).unwrap();
    assert!(json.get("promo").is_none() && json.get("promo_id").is_none());
    let doc = one_doc(
        j.on_sale(sale(2, 7, "C1", "C1", 100, Some("5")), now(0))
            .unwrap(),
    );
    assert_eq!(doc.promo.unwrap().promo_id.as_str(), "5");
}

fn expired_wait_goes_to_dead_letter_with_its_reason<S: TestState>(new: New<S>) {
    let mut j = with_reference(new);
    j.on_customer(customer("C2", "A2", 0, "NoAddress")).unwrap();
    j.on_customer(customer("C3", "A3", 0, "Ok")).unwrap();
    j.on_address(address("A3", 0, "Springfield")).unwrap();
    j.on_sale(sale(1, 7, "C1", "C1", 100, None), now(0))
        .unwrap();
    j.on_sale(sale(2, 7, "C2", "C2", 100, None), now(10))
        .unwrap();
    j.on_sale(sale(3, 99, "C3", "C3", 100, None), now(20))
        .unwrap();
    j.on_sale(sale(4, 7, "C3", "C3", 100, Some("99")), now(30))
        .unwrap();

    let wait = i64::try_from(MAX_WAIT.as_millis()).unwrap();
    assert!(j.expire(now(wait - 1)).unwrap().is_empty());
    let dl = dead_letters(j.expire(now(wait + 30)).unwrap());
    let reasons: Vec<_> = dl
        .iter()
        .map(|d| (d.sale.order_id, d.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (1, "missing_customer"),
            (2, "missing_address"),
            (3, "missing_item"),
            (4, "missing_promo")
        ]
    );
    assert_eq!(dl[0].expired_at, now(wait));
    assert_eq!(dl[0].missing, MissingKey::Customer("C1".into()));
    assert_eq!(j.stats().dead_lettered, 4);
    assert_no_pending(&j);
    // A late arrival after the dead-letter finds nothing waiting.
    assert!(
        j.on_customer(customer("C1", "A3", 0, "Late"))
            .unwrap()
            .is_empty()
    );
}

fn customer_known_only_after_the_sale_waits_then_uses_the_earliest_version_flagged<S: TestState>(
    new: New<S>,
) {
    let mut j = with_reference(new);
    j.on_address(address("A1", 0, "Springfield")).unwrap();
    j.on_customer(customer("C1", "A1", 200, "Created")).unwrap();
    j.on_customer(customer("C1", "A1", 220, "Updated")).unwrap();
    assert!(
        j.on_sale(sale(1, 7, "C1", "C1", 100, None), now(0))
            .unwrap()
            .is_empty()
    );
    assert_eq!(waiting(&j, k(1, 7)), MissingKey::Customer("C1".into()));
    let wait = i64::try_from(MAX_WAIT.as_millis()).unwrap();
    let doc = one_doc(j.expire(now(wait)).unwrap());
    assert_eq!(
        doc.bill_customer.customer.last_name.as_deref(),
        Some("Created")
    );
    assert_eq!(
        doc.join_flags,
        [
            JoinFlag::BillCustomerAfterSale,
            JoinFlag::ShipCustomerAfterSale
        ]
    );
    let json: serde_json::Value = serde_json::from_slice(&doc.to_json().unwrap()).unwrap();
    assert_eq!(
        json["join_flags"],
        serde_json::json!(["bill_customer_after_sale", "ship_customer_after_sale"])
    );
    assert_eq!(j.stats().emitted_flagged, 1);
    assert_no_pending(&j);

    // A version valid at sale time arriving within maxWait is used, unflagged.
    let mut j = with_reference(new);
    j.on_address(address("A1", 0, "Springfield")).unwrap();
    j.on_customer(customer("C1", "A1", 200, "Created")).unwrap();
    j.on_sale(sale(1, 7, "C1", "C1", 100, None), now(0))
        .unwrap();
    let doc = one_doc(j.on_customer(customer("C1", "A1", 50, "Earlier")).unwrap());
    assert_eq!(
        doc.bill_customer.customer.last_name.as_deref(),
        Some("Earlier")
    );
    assert!(doc.join_flags.is_empty());
}

fn compaction_keeps_the_version_valid_at_the_horizon_and_the_latest<S: TestState>(new: New<S>) {
    // allowed_lateness is 50 s.
    let mut j = with_reference(new);
    let id: CustomerId = "C1".into();
    j.on_customer(customer("C1", "A1", 0, "v0")).unwrap();
    j.on_customer(customer("C1", "A1", 30, "v30")).unwrap();
    j.on_customer(customer("C1", "A1", 100, "v100")).unwrap();
    // Horizon 50: v30 is valid there and stays, v0 goes.
    assert_eq!(j.state().versions(&id), [t(30), t(100)]);
    assert_eq!(j.stats().versions_compacted, 1);
    // Too late (before v30, itself before the horizon): dropped at once.
    j.on_customer(customer("C1", "A1", 10, "v10")).unwrap();
    assert_eq!(j.state().versions(&id), [t(30), t(100)]);
    // Within the window a late version is kept and used.
    j.on_customer(customer("C1", "A1", 70, "v70")).unwrap();
    assert_eq!(j.state().versions(&id), [t(30), t(70), t(100)]);
    j.on_address(address("A1", 0, "Springfield")).unwrap();
    let doc = one_doc(j.on_sale(sale(1, 7, "C1", "C1", 60, None), now(0)).unwrap());
    assert_eq!(doc.bill_customer.customer.last_name.as_deref(), Some("v30"));
    let doc = one_doc(j.on_sale(sale(2, 7, "C1", "C1", 80, None), now(0)).unwrap());
    assert_eq!(doc.bill_customer.customer.last_name.as_deref(), Some("v70"));
    // A lone, very old version is always kept (it is the latest).
    j.on_customer(customer("C9", "A1", -100_000, "old"))
        .unwrap();
    assert_eq!(j.state().versions(&"C9".into()), [t(-100_000)]);

    // The retained set does not depend on arrival order.
    let mut other = with_reference(new);
    for at in [100, 70, 10, 30, 0] {
        other
            .on_customer(customer("C1", "A1", at, &format!("v{at}")))
            .unwrap();
    }
    assert_eq!(other.state().versions(&id), [t(30), t(70), t(100)]);
}

fn same_event_time_tie_break_does_not_depend_on_order<S: TestState>(new: New<S>) {
    let run = |first: &str, second: &str| {
        let mut j = with_reference(new);
        j.on_address(address("A1", 0, "Springfield")).unwrap();
        j.on_customer(customer("C1", "A1", 10, first)).unwrap();
        j.on_customer(customer("C1", "A1", 10, second)).unwrap();
        one_doc(j.on_sale(sale(1, 7, "C1", "C1", 20, None), now(0)).unwrap())
            .bill_customer
            .customer
            .last_name
            .clone()
    };
    assert_eq!(run("Alpha", "Beta"), run("Beta", "Alpha"));
}

fn a_duplicate_waiting_sale_replaces_it_and_keeps_the_first_deadline<S: TestState>(new: New<S>) {
    let mut j = with_reference(new);
    j.on_sale(sale(1, 7, "C1", "C1", 100, None), now(0))
        .unwrap();
    j.on_sale(sale(1, 7, "C1", "C1", 100, Some("5")), now(500))
        .unwrap();
    assert_eq!(j.state().counts(), (1, 1, 1));
    let p = j.state().pending(k(1, 7)).unwrap().unwrap();
    assert_eq!(
        (p.arrived_at, p.sale.promo_id),
        (now(0), Some(PromoId::new("5")))
    );
    let wait = i64::try_from(MAX_WAIT.as_millis()).unwrap();
    assert_eq!(dead_letters(j.expire(now(wait)).unwrap()).len(), 1);
    assert_no_pending(&j);
}

/// One input of a replay script.
#[derive(Clone)]
pub(crate) enum Input {
    Sale(Sale),
    Customer(Customer),
    Address(Address),
    Item(Item),
    Promo(Promo),
    Tick,
}

pub(crate) fn script() -> Vec<Input> {
    vec![
        Input::Sale(sale(1, 7, "C1", "C2", 100, Some("5"))),
        Input::Customer(customer("C1", "A1", 10, "Bill")),
        Input::Sale(sale(2, 8, "C2", "C2", 150, None)),
        Input::Item(item(7)),
        Input::Customer(customer("C2", "A1", 10, "Ship")),
        Input::Address(address("A1", 0, "Springfield")),
        Input::Customer(customer("C1", "A2", 120, "Moved")),
        Input::Promo(promo("5")),
        Input::Sale(sale(3, 7, "C1", "C1", 130, None)),
        Input::Address(address("A2", 0, "Shelbyville")),
        Input::Sale(sale(4, 7, "C9", "C9", 100, None)),
        Input::Tick,
        Input::Item(item(8)),
    ]
}

/// Run a script, one processing-time second per input, returning every output as bytes.
fn run<S: TestState>(new: New<S>, inputs: &[Input]) -> Vec<Vec<u8>> {
    run_on(joiner(new), inputs, |j| j)
}

/// [`run`] over any state; `between` is called after each input (e.g. to commit and reopen).
pub(crate) fn run_on<S: JoinState>(
    mut j: Joiner<S>,
    inputs: &[Input],
    mut between: impl FnMut(Joiner<S>) -> Joiner<S>,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        let at = now(i64::try_from(i).unwrap() * 1000);
        let produced = match input.clone() {
            Input::Sale(s) => j.on_sale(s, at),
            Input::Customer(c) => j.on_customer(c),
            Input::Address(a) => j.on_address(a),
            Input::Item(it) => j.on_item(it),
            Input::Promo(p) => j.on_promo(p),
            Input::Tick => j.expire(at.saturating_add(MAX_WAIT)),
        }
        .unwrap();
        for o in produced {
            out.push(match o {
                JoinOutput::Emit(d) => d.to_json().unwrap(),
                JoinOutput::DeadLetter(d) => serde_json::to_vec(&d).unwrap(),
            });
        }
        j = between(j);
    }
    out
}

fn replay_of_the_same_inputs_gives_byte_identical_documents<S: TestState>(new: New<S>) {
    let first = run(new, &script());
    let second = run(new, &script());
    assert_eq!(first, second);
    // Sanity: the script exercises emission and dead-letter.
    let text: Vec<String> = first
        .iter()
        .map(|b| String::from_utf8(b.clone()).unwrap())
        .collect();
    assert_eq!(text.len(), 4, "{text:#?}");
    assert!(
        text.iter()
            .any(|t| t.contains(r#""reason":"missing_customer""#))
    );
    // Sale 3 (t=130) sees the moved customer; sale 1 (t=100) does not.
    assert!(
        text.iter()
            .any(|t| t.contains(r#""order_id":3"#) && t.contains("Shelbyville"))
    );
    assert!(
        text.iter()
            .any(|t| t.contains(r#""order_id":1"#) && t.contains(r#""last_name":"Bill""#))
    );
}

fn a_sale_gets_the_same_document_whether_dimensions_come_before_or_after_it<S: TestState>(
    new: New<S>,
) {
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
    let mut sale_last = dims.clone();
    sale_last.push(s);
    let mut reversed: Vec<Input> = dims.into_iter().rev().collect();
    reversed.insert(2, Input::Sale(sale(1, 7, "C1", "C1", 100, Some("5"))));
    let a = run(new, &sale_first);
    assert_eq!(a.len(), 1);
    assert_eq!(a, run(new, &sale_last));
    assert_eq!(a, run(new, &reversed));
}

/// Every scenario as a test against each state implementation: in memory; RocksDB within one
/// uncommitted batch (reads served by the overlay); RocksDB committing after every write
/// (reads served by the database).
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[test]
            fn $name() {
                super::$name(crate::join::MemoryState::default);
            })*
        }
        mod rocksdb_batch {
            $(#[test]
            fn $name() {
                super::$name(|| crate::state::RocksState::temporary(false));
            })*
        }
        mod rocksdb_committed {
            $(#[test]
            fn $name() {
                super::$name(|| crate::state::RocksState::temporary(true));
            })*
        }
    };
}

scenarios!(
    sale_before_customer_waits_then_joins,
    address_after_customer,
    customer_update_after_the_sale_keeps_the_version_valid_at_sale_time,
    address_is_the_version_valid_at_sale_time,
    two_customers_at_one_unseen_address_both_join,
    many_sales_wait_for_one_customer,
    missing_promo_waits_then_joins,
    text_promo_id_waits_then_joins,
    a_numeric_and_a_string_promo_id_join_the_same_promo,
    an_unknown_text_promo_waits_then_dead_letters_as_missing_promo,
    null_promo_joins_without_promo,
    expired_wait_goes_to_dead_letter_with_its_reason,
    customer_known_only_after_the_sale_waits_then_uses_the_earliest_version_flagged,
    compaction_keeps_the_version_valid_at_the_horizon_and_the_latest,
    same_event_time_tie_break_does_not_depend_on_order,
    a_duplicate_waiting_sale_replaces_it_and_keeps_the_first_deadline,
    replay_of_the_same_inputs_gives_byte_identical_documents,
    a_sale_gets_the_same_document_whether_dimensions_come_before_or_after_it,
);
