//! The pure core of a deterministic test-data generator for the three input streams and the two
//! reference files, with the oracle: the enriched document every well-formed sale must produce.
//!
//! # Timeline (event time, from 2020-01-01T00:00:00Z)
//!
//! * hour 0: the first version of every address;
//! * hour 1: the first version of every customer (so every sale finds a version valid at its
//!   time, of its customers and of their addresses);
//! * hours 2..26: the sales, and the updates of customers / addresses (later datetimes than the
//!   first version; a sale before an update uses the old version, one after it the new).
//!
//! # Arrival order
//!
//! Records arrive in event-time order (dimensions before sales at the same instant), except:
//! for a `late_sale_share` of customers and, separately, of addresses, the *first* version
//! arrives right after the first sale that references it (so those sales wait for it); and
//! malformed records are sprinkled at random positions. Only first versions are delayed: every
//! other version with a datetime `<= t` arrives before any sale at `t`, so a sale is never
//! emitted before a version it should use (which the join, by design, would not correct).
//!
//! # Oracle
//!
//! [`Dataset::expected`] is computed from the ground truth alone: for each customer the version
//! with the greatest `customer_datetime <= sale_datetime`, for its `address_id` the version with
//! the greatest `address_datetime <= sale_datetime`. The typed values are obtained by decoding
//! the generated JSON (the runtime's decoders), the document shape is `EnrichedSale`'s; the
//! version *selection* does not use the join.

mod json;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, SecondsFormat};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use crate::events::{
    Address, Customer, EnrichedCustomer, EnrichedSale, Item, Promo, PromoId, Shared,
    decode_address, decode_customer, decode_sale,
};
use json::Obj;

/// 2020-01-01T00:00:00Z in milliseconds.
const T0_MS: i64 = 1_577_836_800_000;
const HOUR_MS: i64 = 3_600_000;

/// What to generate. Shares are probabilities in `[0, 1]`.
#[derive(Clone, Debug, PartialEq)]
pub struct GenConfig {
    pub seed: u64,
    pub customers: usize,
    pub addresses: usize,
    /// Sale lines (records of the sale stream, well-formed ones).
    pub sales: usize,
    pub items: usize,
    pub promos: usize,
    /// Customers are assigned to addresses in runs of this many, so (when there are enough
    /// customers) addresses are shared by at least this many customers.
    pub customers_per_address_min: usize,
    /// Share of customers (and, separately, addresses) whose first version arrives only after
    /// the first sale that references it.
    pub late_sale_share: f64,
    /// Share of customers (and, separately, addresses) that get 1-2 later versions, dated
    /// inside the sales window.
    pub update_share: f64,
    /// Share of sales without a promo.
    pub null_promo_share: f64,
    /// Malformed records added, as a share of the well-formed records of each stream.
    pub malformed_share: f64,
    /// Share of sales whose bill customer is drawn from the hot set (1% of customers, at least
    /// one); the rest are uniform.
    pub key_skew: f64,
    /// Share of customers without an address (their documents have no nested address).
    pub null_address_share: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            customers: 200,
            addresses: 80,
            sales: 2_000,
            items: 50,
            promos: 10,
            customers_per_address_min: 2,
            late_sale_share: 0.1,
            update_share: 0.3,
            null_promo_share: 0.3,
            malformed_share: 0.02,
            key_skew: 0.2,
            null_address_share: 0.02,
        }
    }
}

/// One record of an input stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition_key: String,
    /// The JSON payload.
    pub data: Vec<u8>,
    /// Global arrival order across the three streams (0, 1, 2, ...).
    pub arrival: u64,
}

/// Everything generated from one [`GenConfig`].
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Each in arrival order; together the arrivals are `0..n` without gaps.
    pub customer_records: Vec<Record>,
    pub address_records: Vec<Record>,
    pub sale_records: Vec<Record>,
    /// Item CSV with a header row, columns as [`crate::events::ITEM_COLUMNS`].
    pub items_csv: String,
    /// Promo CSV with a header row, columns as [`crate::events::PROMO_COLUMNS`].
    pub promos_csv: String,
    /// The expected document of every well-formed sale, keyed by `(order_id, item_id)`.
    pub expected: BTreeMap<(i64, i64), serde_json::Value>,
    /// Malformed records by the decode error reason they must produce.
    pub expected_dead_letters: BTreeMap<String, u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stream {
    Address,
    Customer,
    Sale,
}

/// A record before arrival numbers are assigned; sorted by `(time_ms, rank, seq)`.
struct Pending {
    time_ms: i64,
    rank: u8,
    seq: u64,
    stream: Stream,
    partition_key: String,
    data: Vec<u8>,
}

/// Ranks at one instant: dimensions, then sales, then delayed first versions, then malformed.
const RANK_DIMENSION: u8 = 0;
const RANK_SALE: u8 = 1;
const RANK_DELAYED: u8 = 2;
const RANK_MALFORMED: u8 = 3;

fn tpcds_id(prefix: &str, n: usize) -> String {
    // TPC-DS style: 16 characters, the number in base 16 with letters A..P, low digit first.
    let mut s = String::from(prefix);
    let mut v = n;
    for _ in 0..(16 - prefix.len()) {
        let d = u8::try_from(v % 16).unwrap_or(0);
        s.push(char::from(b'A' + d));
        v /= 16;
    }
    s
}

/// The `promo_id` of promo `n` (1-based): text (`P3`) for every third, digits for the others,
/// so both kinds of id go through the files, the join and the documents.
fn promo_id(n: usize) -> String {
    if n.is_multiple_of(3) {
        format!("P{n}")
    } else {
        n.to_string()
    }
}

fn customer_id(i: usize) -> String {
    tpcds_id("AAAAAAAA", i + 1)
}

fn address_id(i: usize) -> String {
    tpcds_id("AAAAAAAB", i + 1)
}

/// A datetime in ms as ISO-8601: mostly `Z`, every third in `+02:00`, to exercise zones.
fn iso(ms: i64, variant: u64) -> String {
    let Some(dt) = DateTime::from_timestamp_millis(ms) else {
        return String::from("1970-01-01T00:00:00Z");
    };
    if variant % 3 == 2 {
        let Some(tz) = FixedOffset::east_opt(2 * 3600) else {
            return dt.to_rfc3339_opts(SecondsFormat::Millis, true);
        };
        dt.with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::Millis, false)
    } else {
        dt.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

fn pick<'a>(rng: &mut StdRng, xs: &[&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

fn cents(rng: &mut StdRng, lo: i64, hi: i64) -> Decimal {
    Decimal::new(rng.random_range(lo..hi), 2)
}

const FIRST_NAMES: [&str; 8] = [
    "Kevin", "Maria", "Jose", "Linda", "Wei", "Amara", "Olga", "Sean",
];
const LAST_NAMES: [&str; 8] = [
    "Edwards", "Garcia", "Nguyen", "Smith", "O'Brien", "Müller", "Kowalski", "Diaz",
];
const CITIES: [&str; 6] = [
    "Springfield",
    "Fairview",
    "Oak Grove",
    "Riverside",
    "Five Points",
    "Mount Zion",
];
const STATES: [&str; 5] = ["TX", "GA", "OH", "CA", "VA"];

struct CustomerTruth {
    /// Version times (ms), ascending, distinct; index 0 is the first version.
    versions: Vec<(i64, Option<usize>)>,
}

/// Generate a dataset. Pure and deterministic: the same config gives an identical dataset.
pub fn generate(cfg: &GenConfig) -> Dataset {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let customers = cfg.customers.max(1);
    let addresses = cfg.addresses.max(1);
    let items = cfg.items.max(1);
    let per_address = cfg.customers_per_address_min.max(1);
    let window = 24 * HOUR_MS;
    let sales_start = 2 * HOUR_MS;

    let mut pending: Vec<Pending> = Vec::new();
    let mut seq: u64 = 0;
    let mut next_seq = || {
        seq += 1;
        seq
    };

    // --- addresses: version times ---------------------------------------------------------
    let mut address_versions: Vec<Vec<i64>> = Vec::with_capacity(addresses);
    for _ in 0..addresses {
        let mut v = vec![T0_MS + rng.random_range(0..HOUR_MS)];
        if rng.random_bool(cfg.update_share.clamp(0.0, 1.0)) {
            for _ in 0..rng.random_range(1..=2) {
                v.push(T0_MS + sales_start + rng.random_range(0..window));
            }
        }
        distinct_ascending(&mut v);
        address_versions.push(v);
    }

    // --- customers: version times and address per version ---------------------------------
    let mut truth: Vec<CustomerTruth> = Vec::with_capacity(customers);
    for i in 0..customers {
        let home = if rng.random_bool(cfg.null_address_share.clamp(0.0, 1.0)) {
            None
        } else {
            Some((i / per_address) % addresses)
        };
        let mut times = vec![T0_MS + HOUR_MS + rng.random_range(0..HOUR_MS)];
        if rng.random_bool(cfg.update_share.clamp(0.0, 1.0)) {
            for _ in 0..rng.random_range(1..=2) {
                times.push(T0_MS + sales_start + rng.random_range(0..window));
            }
        }
        distinct_ascending(&mut times);
        let mut versions = Vec::with_capacity(times.len());
        let mut current = home;
        for (k, t) in times.into_iter().enumerate() {
            // Some updates move the customer to another address.
            if k > 0 && current.is_some() && rng.random_bool(0.3) {
                current = Some(rng.random_range(0..addresses));
            }
            versions.push((t, current));
        }
        truth.push(CustomerTruth { versions });
    }

    // --- address records --------------------------------------------------------------------
    let mut address_json: Vec<Vec<(i64, Vec<u8>)>> = Vec::with_capacity(addresses);
    for (a, versions) in address_versions.iter().enumerate() {
        let mut out = Vec::new();
        for (k, &t) in versions.iter().enumerate() {
            let n = next_seq();
            let zip = rng.random_range(10_000..99_999).to_string();
            let gmt = Decimal::new(-rng.random_range(5..9) * 100, 2).to_string();
            let mut o = Obj::new();
            o.str("address_id", &address_id(a))
                .str("city", pick(&mut rng, &CITIES))
                .opt_str("county", k.is_multiple_of(2).then_some("Williamson County"))
                .str("state", pick(&mut rng, &STATES))
                .num("zip", &zip, n.is_multiple_of(2))
                .str("country", "United States")
                .num("gmt_offset", &gmt, !n.is_multiple_of(2))
                .opt_str(
                    "location_type",
                    rng.random_bool(0.8)
                        .then(|| pick(&mut rng, &["apartment", "condo", "single family"])),
                )
                .str(
                    "street",
                    &format!(
                        "{} {} St",
                        rng.random_range(1..999),
                        pick(&mut rng, &["Oak", "Main", "1st"])
                    ),
                )
                .str("address_datetime", &iso(t, n));
            let data = o.finish();
            out.push((t, data.clone()));
            pending.push(Pending {
                time_ms: t,
                rank: RANK_DIMENSION,
                seq: n,
                stream: Stream::Address,
                partition_key: address_id(a),
                data,
            });
        }
        address_json.push(out);
    }

    // --- customer records -------------------------------------------------------------------
    let mut customer_json: Vec<Vec<(i64, Vec<u8>)>> = Vec::with_capacity(customers);
    for (i, c) in truth.iter().enumerate() {
        let mut out = Vec::new();
        let first = pick(&mut rng, &FIRST_NAMES);
        for (k, &(t, addr)) in c.versions.iter().enumerate() {
            let n = next_seq();
            let last = pick(&mut rng, &LAST_NAMES);
            let aid = addr.map(address_id);
            let estimate = (rng.random_range(1..20) * 500).to_string();
            let birth = match rng.random_range(0..10) {
                0 => None,
                1 => Some(String::new()),
                _ => Some(format!(
                    "19{:02}-{:02}-{:02}",
                    rng.random_range(30..99),
                    rng.random_range(1..=12),
                    rng.random_range(1..=28)
                )),
            };
            let lower = rng.random_range(0..20) * 10_000 + 1;
            let mut o = Obj::new();
            o.str("customer_id", &customer_id(i))
                .opt_str(
                    "salutation",
                    rng.random_bool(0.9)
                        .then(|| pick(&mut rng, &["Mr.", "Ms.", "Dr.", "Sir"])),
                )
                .str("first_name", first)
                .str("last_name", last)
                .str(
                    "birth_country",
                    pick(&mut rng, &["BELIZE", "PERU", "FIJI", "NORWAY"]),
                )
                .str(
                    "email_address",
                    &format!("{}.{}.v{k}@example.org", first.to_lowercase(), i),
                )
                .opt_str("address_id", aid.as_deref())
                .str("gender", pick(&mut rng, &["F", "M"]))
                .str("marital_status", pick(&mut rng, &["S", "M", "D", "W", "U"]))
                .str(
                    "education_status",
                    pick(&mut rng, &["Primary", "College", "Advanced Degree"]),
                )
                .num("purchase_estimate", &estimate, n.is_multiple_of(4))
                .str(
                    "credit_rating",
                    pick(&mut rng, &["Good", "High Risk", "Low Risk", "Unknown"]),
                )
                .str(
                    "buy_potential",
                    pick(&mut rng, &["0-500", "501-1000", "1001-5000", ">10000"]),
                )
                .raw("vehicle_count", &rng.random_range(0..5).to_string())
                .raw("lower_bound", &lower.to_string())
                .raw("upper_bound", &(lower + 9_999).to_string())
                .opt_str("birth_date", birth.as_deref())
                .str("customer_datetime", &iso(t, n));
            let data = o.finish();
            out.push((t, data.clone()));
            pending.push(Pending {
                time_ms: t,
                rank: RANK_DIMENSION,
                seq: n,
                stream: Stream::Customer,
                partition_key: customer_id(i),
                data,
            });
        }
        customer_json.push(out);
    }

    // --- items and promos ---------------------------------------------------------------------
    let mut item_rows: Vec<Vec<String>> = Vec::with_capacity(items);
    for id in 1..=items {
        let opt = |rng: &mut StdRng, v: String| {
            if rng.random_bool(0.9) {
                v
            } else {
                String::new()
            }
        };
        let desc = opt(
            &mut rng,
            format!("Soft, durable \"classic\" item number {id}"),
        );
        let brand = pick(
            &mut rng,
            &["amalgamalg #1", "edu packscholar #2", "importoexporti #3"],
        );
        let brand = opt(&mut rng, brand.to_string());
        item_rows.push(vec![
            id.to_string(),
            desc,
            brand,
            pick(&mut rng, &["shirts", "pants", "dresses", "accessories"]).to_string(),
            pick(&mut rng, &["Men", "Women", "Children", "Home"]).to_string(),
            format!("manufact{}", rng.random_range(1..20)),
            pick(&mut rng, &["small", "medium", "large", "N/A"]).to_string(),
            pick(&mut rng, &["red", "navy", "olive", "white"]).to_string(),
            pick(&mut rng, &["Each", "Dozen", "Case"]).to_string(),
            String::from("Unknown"),
            format!("product{id}"),
            String::from("2020-01-01T00:00:00Z"),
        ]);
    }
    let mut promo_rows: Vec<Vec<String>> = Vec::with_capacity(cfg.promos);
    for id in 1..=cfg.promos {
        promo_rows.push(vec![
            promo_id(id),
            cents(&mut rng, 10_000, 200_000).to_string(),
            "1".to_string(),
            format!("promo {id}, \"special\""),
            pick(&mut rng, &["Unknown", "Holiday", "Clearance"]).to_string(),
            "2019-12-01".to_string(),
            "2020-02-01".to_string(),
            "2020-01-01T00:00:00Z".to_string(),
        ]);
    }
    let items_csv = to_csv(&crate::events::ITEM_COLUMNS, &item_rows);
    let promos_csv = to_csv(&crate::events::PROMO_COLUMNS, &promo_rows);

    // --- sales --------------------------------------------------------------------------------
    let hot = (customers / 100).max(1);
    let mut sale_json: Vec<(i64, Vec<u8>)> = Vec::with_capacity(cfg.sales);
    // First sale time (ms) referencing each customer / address (any version of the customer).
    let mut first_sale_of_customer: Vec<Option<i64>> = vec![None; customers];
    let mut first_sale_of_address: Vec<Option<i64>> = vec![None; addresses];
    let mut order_id: i64 = 1_000;
    let mut made = 0usize;
    while made < cfg.sales {
        order_id += rng.random_range(1..4);
        let lines = rng.random_range(1..=4).min(cfg.sales - made).min(items);
        let t = T0_MS + sales_start + rng.random_range(0..window);
        let bill = if rng.random_bool(cfg.key_skew.clamp(0.0, 1.0)) {
            rng.random_range(0..hot)
        } else {
            rng.random_range(0..customers)
        };
        let ship = if rng.random_bool(0.8) {
            bill
        } else {
            rng.random_range(0..customers)
        };
        for c in [bill, ship] {
            let f = &mut first_sale_of_customer[c];
            *f = Some(f.map_or(t, |x| x.min(t)));
            for &(_, a) in &truth[c].versions {
                if let Some(a) = a {
                    let f = &mut first_sale_of_address[a];
                    *f = Some(f.map_or(t, |x| x.min(t)));
                }
            }
        }
        let mut used_items: Vec<usize> = Vec::new();
        while used_items.len() < lines {
            let it = rng.random_range(1..=items);
            if !used_items.contains(&it) {
                used_items.push(it);
            }
        }
        let promo = if cfg.promos == 0 || rng.random_bool(cfg.null_promo_share.clamp(0.0, 1.0)) {
            None
        } else {
            Some(promo_id(rng.random_range(1..=cfg.promos)))
        };
        for it in used_items {
            let n = next_seq();
            let data = sale_record(
                &mut rng,
                n,
                order_id,
                it,
                &customer_id(bill),
                &customer_id(ship),
                promo.as_deref(),
                t,
            );
            sale_json.push((t, data.clone()));
            pending.push(Pending {
                time_ms: t,
                rank: RANK_SALE,
                seq: n,
                stream: Stream::Sale,
                partition_key: customer_id(bill),
                data,
            });
            made += 1;
        }
    }

    // --- late first versions ----------------------------------------------------------------
    let late = cfg.late_sale_share.clamp(0.0, 1.0);
    let mut delay: BTreeMap<(Stream, String), i64> = BTreeMap::new();
    for (i, f) in first_sale_of_customer.iter().enumerate() {
        if let Some(t) = f
            && rng.random_bool(late)
        {
            delay.insert((Stream::Customer, customer_id(i)), *t);
        }
    }
    for (a, f) in first_sale_of_address.iter().enumerate() {
        if let Some(t) = f
            && rng.random_bool(late)
        {
            delay.insert((Stream::Address, address_id(a)), *t);
        }
    }
    // Only the first version (the earliest time of that id among the pending records).
    let mut first_seen: BTreeMap<(Stream, String), (i64, u64)> = BTreeMap::new();
    for p in &pending {
        if p.stream == Stream::Sale {
            continue;
        }
        let e = first_seen
            .entry((p.stream, p.partition_key.clone()))
            .or_insert((p.time_ms, p.seq));
        if (p.time_ms, p.seq) < *e {
            *e = (p.time_ms, p.seq);
        }
    }
    for p in &mut pending {
        let key = (p.stream, p.partition_key.clone());
        if let (Some(&t), Some(&first)) = (delay.get(&key), first_seen.get(&key))
            && first == (p.time_ms, p.seq)
        {
            p.time_ms = t;
            p.rank = RANK_DELAYED;
        }
    }

    // --- malformed records --------------------------------------------------------------------
    let mut expected_dead_letters: BTreeMap<String, u64> = BTreeMap::new();
    let share = cfg.malformed_share.clamp(0.0, 1.0);
    let mut malformed: Vec<Pending> = Vec::new();
    for (stream, valid) in [
        (Stream::Customer, &customer_json),
        (Stream::Address, &address_json),
    ] {
        let all: Vec<&Vec<u8>> = valid.iter().flatten().map(|(_, d)| d).collect();
        let count = malformed_count(all.len(), share);
        for _ in 0..count {
            let src = all[rng.random_range(0..all.len())];
            let (data, reason) = corrupt(&mut rng, stream, src);
            *expected_dead_letters.entry(reason.to_string()).or_default() += 1;
            malformed.push(Pending {
                time_ms: T0_MS + rng.random_range(0..sales_start + window),
                rank: RANK_MALFORMED,
                seq: next_seq(),
                stream,
                partition_key: String::from("malformed"),
                data,
            });
        }
    }
    let count = malformed_count(sale_json.len(), share);
    for _ in 0..count {
        let src = &sale_json[rng.random_range(0..sale_json.len())].1;
        let (data, reason) = corrupt(&mut rng, Stream::Sale, src);
        *expected_dead_letters.entry(reason.to_string()).or_default() += 1;
        malformed.push(Pending {
            time_ms: T0_MS + rng.random_range(0..sales_start + window),
            rank: RANK_MALFORMED,
            seq: next_seq(),
            stream: Stream::Sale,
            partition_key: String::from("malformed"),
            data,
        });
    }
    pending.extend(malformed);

    // --- arrival order ------------------------------------------------------------------------
    pending.sort_by_key(|p| (p.time_ms, p.rank, p.seq));
    let mut customer_records = Vec::new();
    let mut address_records = Vec::new();
    let mut sale_records = Vec::new();
    for (arrival, p) in (0u64..).zip(pending) {
        let r = Record {
            partition_key: p.partition_key,
            data: p.data,
            arrival,
        };
        match p.stream {
            Stream::Customer => customer_records.push(r),
            Stream::Address => address_records.push(r),
            Stream::Sale => sale_records.push(r),
        }
    }

    // --- oracle ---------------------------------------------------------------------------------
    let expected = oracle(
        &customer_json,
        &address_json,
        &sale_json,
        &item_rows,
        &promo_rows,
    );

    Dataset {
        customer_records,
        address_records,
        sale_records,
        items_csv,
        promos_csv,
        expected,
        expected_dead_letters,
    }
}

fn malformed_count(valid: usize, share: f64) -> usize {
    if valid == 0 || share <= 0.0 {
        return 0;
    }
    // Rounded up, so a small positive share always yields at least one.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let n = (valid as f64 * share).ceil() as usize;
    n
}

/// Sort ascending and make the times distinct (a tie is moved 1 ms later).
fn distinct_ascending(v: &mut [i64]) {
    v.sort_unstable();
    for i in 1..v.len() {
        if v[i] <= v[i - 1] {
            v[i] = v[i - 1] + 1;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn sale_record(
    rng: &mut StdRng,
    n: u64,
    order_id: i64,
    item_id: usize,
    bill: &str,
    ship: &str,
    promo: Option<&str>,
    t: i64,
) -> Vec<u8> {
    let q: i64 = rng.random_range(1..100);
    let qd = Decimal::from(q);
    let wholesale = cents(rng, 100, 10_000);
    let list = wholesale + cents(rng, 0, 10_000);
    let price = list - cents(rng, 0, 100).min(list);
    let ext_discount = (list - price) * qd;
    let ext_sales = price * qd;
    let ext_wholesale = wholesale * qd;
    let ext_list = list * qd;
    let ext_tax = (ext_sales * Decimal::new(7, 2)).round_dp(2);
    let coupon = if rng.random_bool(0.2) {
        cents(rng, 0, 500).min(ext_sales)
    } else {
        Decimal::new(0, 2)
    };
    let ship_cost = cents(rng, 0, 5_000);
    let net_paid = ext_sales - coupon;
    let money: [(&str, Decimal); 15] = [
        ("wholesale_cost", wholesale),
        ("list_price", list),
        ("sales_price", price),
        ("ext_discount_amt", ext_discount),
        ("ext_sales_price", ext_sales),
        ("ext_wholesale_cost", ext_wholesale),
        ("ext_list_price", ext_list),
        ("ext_tax", ext_tax),
        ("coupon_amt", coupon),
        ("ext_ship_cost", ship_cost),
        ("net_paid", net_paid),
        ("net_paid_inc_tax", net_paid + ext_tax),
        ("net_paid_inc_ship", net_paid + ship_cost),
        ("net_paid_inc_ship_tax", net_paid + ship_cost + ext_tax),
        ("net_profit", net_paid - ext_wholesale),
    ];
    let mut o = Obj::new();
    o.num("order_id", &order_id.to_string(), n.is_multiple_of(5))
        .raw("item_id", &item_id.to_string())
        .num("quantity", &q.to_string(), n.is_multiple_of(7));
    for (k, (name, v)) in (0u64..).zip(money) {
        // Alternate strings and numbers, field by field and record by record.
        o.num(name, &v.to_string(), (n + k).is_multiple_of(2));
    }
    o.str("bill_customer_id", bill)
        .str("ship_customer_id", ship)
        .num(
            "warehouse_id",
            &rng.random_range(1..6).to_string(),
            n.is_multiple_of(2),
        );
    match promo {
        // A numeric id comes as a JSON number or as a string of its digits (they must join
        // the same promo); a text id as a string.
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
            o.num("promo_id", p, n.is_multiple_of(3))
        }
        Some(p) => o.str("promo_id", p),
        None => o.null("promo_id"),
    };
    o.str(
        "ship_delay",
        pick(rng, &["OVERNIGHT", "2 DAYS", "NEXT DAY"]),
    )
    .str("ship_mode", pick(rng, &["AIR", "SEA", "SURFACE"]))
    .opt_str(
        "ship_carrier",
        rng.random_bool(0.9)
            .then(|| pick(rng, &["UPS", "FEDEX", "DHL"])),
    )
    .str("sale_datetime", &iso(t, n));
    o.finish()
}

/// Corrupt a valid record so that decoding fails with a known reason.
fn corrupt(rng: &mut StdRng, stream: Stream, valid: &[u8]) -> (Vec<u8>, &'static str) {
    let (id_field, time_field, decimal_field) = match stream {
        Stream::Customer => ("customer_id", "customer_datetime", None),
        Stream::Address => ("address_id", "address_datetime", Some("gmt_offset")),
        Stream::Sale => ("order_id", "sale_datetime", Some("net_paid")),
    };
    let Ok(serde_json::Value::Object(mut map)) = serde_json::from_slice::<serde_json::Value>(valid)
    else {
        return (b"{".to_vec(), "malformed_json");
    };
    let kinds = if decimal_field.is_some() { 5 } else { 4 };
    let reason = match rng.random_range(0..kinds) {
        0 => {
            let mut d = valid.to_vec();
            d.truncate(d.len().saturating_sub(7));
            return (d, "malformed_json");
        }
        1 => {
            map.remove(id_field);
            "missing_field"
        }
        2 => {
            map.insert(
                time_field.to_string(),
                serde_json::Value::from(1_577_836_800),
            );
            "wrong_type"
        }
        3 => {
            let bad = pick(
                rng,
                &["2020-01-01T00:00:00", "2020-13-45T00:00:00Z", "yesterday"],
            );
            map.insert(time_field.to_string(), serde_json::Value::from(bad));
            "invalid_datetime"
        }
        _ => {
            let field = decimal_field.unwrap_or("gmt_offset");
            map.insert(field.to_string(), serde_json::Value::from("12.3.4"));
            "invalid_decimal"
        }
    };
    let data = serde_json::to_vec(&map).unwrap_or_default();
    (data, reason)
}

fn to_csv(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = w.write_record(header);
    for r in rows {
        let _ = w.write_record(r);
    }
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

/// The version of `versions` (ascending by time) valid at `t`: the greatest `<= t`.
fn valid_at<T: Clone>(
    versions: &[(crate::events::EventTime, T)],
    t: crate::events::EventTime,
) -> Option<T> {
    versions
        .iter()
        .filter(|(at, _)| *at <= t)
        .max_by_key(|(at, _)| *at)
        .map(|(_, v)| v.clone())
}

fn oracle(
    customer_json: &[Vec<(i64, Vec<u8>)>],
    address_json: &[Vec<(i64, Vec<u8>)>],
    sale_json: &[(i64, Vec<u8>)],
    item_rows: &[Vec<String>],
    promo_rows: &[Vec<String>],
) -> BTreeMap<(i64, i64), serde_json::Value> {
    type Versions<T> = Vec<(crate::events::EventTime, T)>;
    let mut customers: BTreeMap<String, Versions<Shared<Customer>>> = BTreeMap::new();
    for c in customer_json
        .iter()
        .flatten()
        .filter_map(|(_, d)| Shared::new(decode_customer(d).ok()?).ok())
    {
        customers
            .entry(c.customer_id.as_str().to_string())
            .or_default()
            .push((c.customer_datetime, c));
    }
    let mut addresses: BTreeMap<String, Versions<Shared<Address>>> = BTreeMap::new();
    for a in address_json
        .iter()
        .flatten()
        .filter_map(|(_, d)| Shared::new(decode_address(d).ok()?).ok())
    {
        addresses
            .entry(a.address_id.as_str().to_string())
            .or_default()
            .push((a.address_datetime, a));
    }
    let items: BTreeMap<i64, Shared<Item>> = item_rows
        .iter()
        .filter_map(|r| {
            let cols: Vec<&str> = r.iter().map(String::as_str).collect();
            Shared::new(Item::from_columns(&cols).ok().flatten()?).ok()
        })
        .map(|i| (i.item_id, i))
        .collect();
    let promos: BTreeMap<PromoId, Shared<Promo>> = promo_rows
        .iter()
        .filter_map(|r| {
            let cols: Vec<&str> = r.iter().map(String::as_str).collect();
            Shared::new(Promo::from_columns(&cols).ok().flatten()?).ok()
        })
        .map(|p| (p.promo_id.clone(), p))
        .collect();

    let enriched = |id: &str, t| -> Option<EnrichedCustomer> {
        let customer = valid_at(customers.get(id)?, t)?;
        let address = match &customer.address_id {
            None => None,
            Some(aid) => Some(valid_at(addresses.get(aid.as_str())?, t)?),
        };
        Some(EnrichedCustomer { customer, address })
    };

    let mut out = BTreeMap::new();
    for (_, d) in sale_json {
        let Ok(sale) = decode_sale(d) else { continue };
        let build = || -> Option<EnrichedSale> {
            let t = sale.sale_datetime;
            Some(EnrichedSale {
                item: items.get(&sale.item_id)?.clone(),
                bill_customer: enriched(sale.bill_customer_id.as_str(), t)?,
                ship_customer: enriched(sale.ship_customer_id.as_str(), t)?,
                promo: match &sale.promo_id {
                    None => None,
                    Some(p) => Some(promos.get(p)?.clone()),
                },
                join_flags: Vec::new(),
                sale: sale.clone(),
            })
        };
        if let Some(doc) = build()
            && let Ok(v) = serde_json::to_value(&doc)
        {
            out.insert((sale.order_id, sale.item_id), v);
        }
    }
    out
}
