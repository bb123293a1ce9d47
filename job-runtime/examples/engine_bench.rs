//! The engine benchmark (`cargo xtask bench engine`): enriched sales per second per core, from
//! an in-memory source through the RocksDB joins to encoded outputs in the outbox, with commits.
//!
//! A generated data set is cut into source batches beforehand (three simulated readers of at
//! most `--batch` records, the one whose next record arrived first reads next, as the engine
//! tests do). The timed part feeds them to [`Core`] exactly as the engine thread does
//! (`apply_dimension`, `accept_sales`, `expire` every second, `commit` when `commit_due`), so it
//! covers decoding, the barrier, the join over RocksDB, document encoding, outbox writes and
//! commits. Nothing drains the outbox (no sink), so the state holds every output at the end.
//!
//! CPU time is the whole process's (`/proc/self/stat`: the engine thread and RocksDB's
//! background flush and compaction threads), so "per core" charges RocksDB's work too.

#[global_allocator]
static ALLOCATOR: tributary_runtime::Allocator = tributary_runtime::Allocator;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use tributary_crds::document_id::DocumentIdTemplate;
use tributary_runtime::engine::{Control, Core, EngineConfig, Streams};
use tributary_runtime::events::{
    Item, Promo, PromoId, decode_address, decode_customer, decode_sale,
};
use tributary_runtime::r#gen::{Dataset, GenConfig, Record, generate};
use tributary_runtime::join::JoinRules;
use tributary_runtime::metrics::Metrics;
use tributary_runtime::output::OutputRecord;
use tributary_runtime::reference::{ReferenceRow, parse_csv};
use tributary_runtime::source::{ShardBatch, SourceRecord, StreamRole};
use tributary_runtime::state::RocksState;

#[derive(Parser, Debug)]
#[command(
    name = "engine_bench",
    about = "Enriched sales per second per core through the engine"
)]
struct Args {
    /// Well-formed sale lines.
    #[arg(long, default_value_t = 200_000)]
    sales: usize,
    #[arg(long, default_value_t = 20_000)]
    customers: usize,
    #[arg(long, default_value_t = 8_000)]
    addresses: usize,
    #[arg(long, default_value_t = 2_000)]
    items: usize,
    #[arg(long, default_value_t = 100)]
    promos: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Share of customers and addresses updated during the sales window.
    #[arg(long, default_value_t = GenConfig::default().update_share)]
    update_share: f64,
    /// Share of customers and addresses whose first version arrives after a sale needing it.
    #[arg(long, default_value_t = GenConfig::default().late_sale_share)]
    late_sale_share: f64,
    #[arg(long, default_value_t = GenConfig::default().malformed_share)]
    malformed_share: f64,
    /// Records per source batch (a Kinesis GetRecords returns up to 10,000).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Commit when this many outputs wait (EngineConfig's default when unset).
    #[arg(long)]
    commit_max_outputs: Option<usize>,
    /// Commit at least this often, in ms (EngineConfig's default when unset).
    #[arg(long)]
    commit_interval_ms: Option<u64>,
    /// Where the state goes: a `run-<n>` folder in it per run, removed after the run (a fresh
    /// temporary folder when unset). A tmpfs folder (`/dev/shm/...`) shows the CPU cost
    /// without the disk.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// After each run, compare every committed document with the generator's oracle.
    #[arg(long)]
    verify: bool,
    /// Timed runs over the same data, each on a fresh state; the summary gives their median
    /// (this machine's figures vary by about a tenth from run to run).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// A `perf record --control fifo:<path>` control FIFO: the benchmark writes `enable` to it
    /// when the timed part starts and `disable` when it ends, so `perf record -D -1 --control
    /// fifo:<path> -- engine_bench --perf-control <path>` profiles the timed parts only.
    #[arg(long)]
    perf_control: Option<PathBuf>,
    /// Only time decoding (every record, five times; profiled under `--perf-control`), then
    /// exit.
    #[arg(long)]
    decode_only: bool,
}

/// Tells a waiting `perf record` to start or stop sampling (see `--perf-control`).
fn perf_control(args: &Args, command: &str) -> Result<()> {
    if let Some(fifo) = &args.perf_control {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(fifo)
            .with_context(|| format!("opening {}", fifo.display()))?;
        std::io::Write::write_all(&mut f, format!("{command}\n").as_bytes())?;
    }
    Ok(())
}

fn config(args: &Args) -> Result<EngineConfig> {
    // The resource's defaults: join.maxWait 10m, join.allowedLateness 1d.
    let mut cfg = EngineConfig::new(
        Streams {
            customers: "customers".into(),
            addresses: "addresses".into(),
            sales: "sales".into(),
        },
        JoinRules {
            max_wait: Duration::from_secs(600),
            allowed_lateness: Duration::from_secs(24 * 3600),
        },
        DocumentIdTemplate::parse("{order_id}:{item_id}")
            .map_err(|e| anyhow::anyhow!("document id template: {e}"))?,
    );
    if let Some(n) = args.commit_max_outputs {
        cfg.commit_max_outputs = n;
    }
    if let Some(ms) = args.commit_interval_ms {
        cfg.commit_interval = Duration::from_millis(ms);
    }
    Ok(cfg)
}

fn rows<T: ReferenceRow>(csv: &str) -> Result<BTreeMap<T::Id, T>> {
    let load = parse_csv::<T>("generated.csv", csv.as_bytes())?;
    Ok(load.rows.into_iter().map(|r| (r.id(), r)).collect())
}

const ROLES: [(StreamRole, &str); 3] = [
    (StreamRole::Customers, "customers"),
    (StreamRole::Addresses, "addresses"),
    (StreamRole::Sales, "sales"),
];

fn batch(
    role: StreamRole,
    stream: &str,
    records: Vec<SourceRecord>,
    behind: Option<i64>,
) -> ShardBatch {
    ShardBatch {
        role,
        stream: stream.into(),
        shard_id: "shard-0".into(),
        records,
        millis_behind_latest: behind,
        requested_at: Instant::now(),
        shard_end: false,
    }
}

/// The source batches in the order the engine receives them: three readers, the one whose
/// next record arrived first reads next; the last batch of a dimension stream is caught up.
fn schedule(d: &Dataset, size: usize) -> Vec<ShardBatch> {
    let streams: [&[Record]; 3] = [&d.customer_records, &d.address_records, &d.sale_records];
    let mut next = [0usize; 3];
    let mut out = Vec::new();
    loop {
        let pick = (0..3)
            .filter(|&s| next[s] < streams[s].len())
            .min_by_key(|&s| streams[s][next[s]].arrival);
        let Some(s) = pick else { break };
        let (role, name) = ROLES[s];
        let from = next[s];
        let to = (from + size).min(streams[s].len());
        let records = streams[s][from..to]
            .iter()
            .enumerate()
            .map(|(k, r)| SourceRecord {
                sequence: format!("{:020}", from + k + 1),
                partition_key: r.partition_key.clone(),
                data: Bytes::from(r.data.clone()),
                arrival_ms: i64::try_from(r.arrival).ok(),
            })
            .collect();
        next[s] = to;
        let behind = if to == streams[s].len() { 0 } else { 1_000 };
        out.push(batch(role, name, records, Some(behind)));
    }
    out
}

/// utime + stime of the whole process, and of each thread by name, in seconds.
fn cpu_seconds() -> Result<(f64, BTreeMap<String, f64>)> {
    // CLK_TCK is 100 on Linux (`getconf CLK_TCK`).
    const TICKS: f64 = 100.0;
    fn parse(stat: &str) -> Option<(String, f64)> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let name = stat.get(open + 1..close)?.to_string();
        let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
        // After the name: state is field 3, utime 14, stime 15.
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((name, (utime + stime) / TICKS))
    }
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    let (_, total) = parse(&stat).context("parsing /proc/self/stat")?;
    let mut threads = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task")?.flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("stat"))
            && let Some((name, secs)) = parse(&s)
        {
            *threads.entry(name).or_insert(0.0) += secs;
        }
    }
    Ok((total, threads))
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Decoding alone (not timed with the run): the share of the work that is JSON parsing.
fn decode_only(d: &Dataset) -> (f64, f64) {
    let t = Instant::now();
    let mut ok = 0usize;
    for r in &d.customer_records {
        ok += usize::from(decode_customer(&r.data).is_ok());
    }
    for r in &d.address_records {
        ok += usize::from(decode_address(&r.data).is_ok());
    }
    let dims = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for r in &d.sale_records {
        ok += usize::from(decode_sale(&r.data).is_ok());
    }
    std::hint::black_box(ok);
    (dims, t.elapsed().as_secs_f64())
}

struct Expected {
    docs: u64,
    dead: u64,
    sale_records: usize,
    dim_records: usize,
    n_batches: usize,
}

struct RunResult {
    per_core: f64,
    per_sec: f64,
}

/// One timed run: a fresh state, every batch through the engine, then the checks.
fn timed_run(
    args: &Args,
    run: usize,
    batches: Vec<ShardBatch>,
    items: &BTreeMap<i64, Item>,
    promos: &BTreeMap<PromoId, Promo>,
    oracle: &BTreeMap<(i64, i64), serde_json::Value>,
    expected: Expected,
) -> Result<RunResult> {
    let Expected {
        docs: expected_docs,
        dead: expected_dead,
        sale_records,
        dim_records,
        n_batches,
    } = expected;
    let temp;
    let dir = match &args.dir {
        Some(p) => {
            let p = p.join(format!("run-{run}"));
            ensure!(!p.exists(), "{} exists: give a fresh folder", p.display());
            p
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("tributary-engine-bench")
                .tempdir()?;
            temp.path().join("state")
        }
    };
    let cfg = config(args)?;
    let expire_interval = cfg.expire_interval;
    let mut core = Core::new(RocksState::open(&dir)?, cfg, Metrics::unregistered())?;

    // ---- timed -------------------------------------------------------------------------------
    // (A profiler can attach when this line appears: `perf record -p <pid>`.)
    println!(
        "  {n_batches} batches, timing starts (pid {})",
        std::process::id()
    );
    std::io::Write::flush(&mut std::io::stdout())?;
    perf_control(args, "enable")?;
    let (cpu0, threads0) = cpu_seconds()?;
    let started = Instant::now();
    core.control(Control::Items(items.clone()))?;
    core.control(Control::Promos(promos.clone()))?;
    for name in ["customers", "addresses"] {
        core.control(Control::ActiveShards {
            stream: name.into(),
            shards: BTreeSet::from(["shard-0".to_string()]),
        })?;
    }
    let mut commits = 0u64;
    let mut commit_secs = 0.0;
    let mut apply_dims_secs = 0.0;
    let mut apply_sales_secs = 0.0;
    let mut max_held = 0usize;
    let mut next_expire = Instant::now() + expire_interval;
    for b in batches {
        let t = Instant::now();
        if b.role == StreamRole::Sales {
            core.accept_sales(b)?;
            apply_sales_secs += t.elapsed().as_secs_f64();
        } else {
            core.apply_dimension(b)?;
            apply_dims_secs += t.elapsed().as_secs_f64();
        }
        max_held = max_held.max(core.held_records());
        let now = Instant::now();
        if now >= next_expire {
            core.expire()?;
            next_expire = now + expire_interval;
        }
        if core.commit_due() {
            let t = Instant::now();
            core.commit()?;
            commit_secs += t.elapsed().as_secs_f64();
            commits += 1;
        }
    }
    // Both dimension streams caught up: every held sale is released.
    for (role, name) in &ROLES[..2] {
        core.apply_dimension(batch(*role, name, Vec::new(), Some(0)))?;
    }
    let t = Instant::now();
    core.commit()?;
    commit_secs += t.elapsed().as_secs_f64();
    commits += 1;
    let wall = started.elapsed().as_secs_f64();
    let (cpu1, threads1) = cpu_seconds()?;
    perf_control(args, "disable")?;
    // ---- end of timed part -------------------------------------------------------------------

    ensure!(core.held_records() == 0, "sales still held at the end");
    let stats = core.stats();
    let outputs = core.state().outbox_next();
    let props = core.state().properties();
    let cpu = cpu1 - cpu0;
    let state_bytes = dir_size(&dir);

    // Check: every output committed, documents as the oracle expects.
    let reader = core.state().outbox_reader();
    let mut docs = 0u64;
    let mut dead = 0u64;
    let mut mismatches = 0u64;
    let mut next = 0;
    loop {
        let page = reader.read(next, 10_000, usize::MAX)?;
        let Some((last, _)) = page.last() else { break };
        next = last + 1;
        for (_, bytes) in &page {
            match OutputRecord::decode(bytes)? {
                OutputRecord::Document(doc) => {
                    docs += 1;
                    if args.verify {
                        let v: serde_json::Value = serde_json::from_slice(&doc.json)?;
                        let key = (
                            v["order_id"].as_i64().unwrap_or_default(),
                            v["item_id"].as_i64().unwrap_or_default(),
                        );
                        if oracle.get(&key) != Some(&v) {
                            mismatches += 1;
                        }
                    }
                }
                OutputRecord::DeadLetter(_) => dead += 1,
            }
        }
    }

    let per_sec = sale_records as f64 / wall;
    let per_core = sale_records as f64 / cpu.max(1e-9);
    println!(
        "engine: {sale_records} sales (+{dim_records} dimension records) in {n_batches} batches of <= {}",
        args.batch
    );
    println!(
        "  documents {docs} (oracle {expected_docs}), dead letters {dead} (oracle {expected_dead}), outputs {outputs}, emitted by the join {}, versions compacted {}",
        stats.emitted, stats.versions_compacted
    );
    println!(
        "  wall {wall:.2}s, process CPU {cpu:.2}s ({:.2} cores busy)",
        cpu / wall
    );
    println!("  {per_sec:.0} sales/s wall, {per_core:.0} sales/s per core-second of CPU");
    println!(
        "  commits {commits} ({commit_secs:.2}s wall in commit), apply: dimensions {apply_dims_secs:.2}s, sales {apply_sales_secs:.2}s; max held by the barrier {max_held}"
    );
    println!(
        "  RocksDB state on disk {:.1} MiB at {}",
        state_bytes as f64 / 1_048_576.0,
        dir.display()
    );
    for (name, value) in props {
        println!("    {name} {value}");
    }
    println!("  CPU by thread during the run:");
    for (name, secs) in &threads1 {
        let before = threads0.get(name).copied().unwrap_or(0.0);
        if secs - before >= 0.01 {
            println!("    {name:<24} {:.2}s", secs - before);
        }
    }
    println!(
        "RESULT sales={sale_records} documents={docs} seconds={wall:.3} sales_per_s={per_sec:.0} sales_per_core_s={per_core:.0} commits={commits} state_bytes={state_bytes}"
    );
    if docs != expected_docs || dead != expected_dead {
        bail!("outputs differ from the oracle's counts");
    }
    if args.verify {
        ensure!(
            mismatches == 0,
            "{mismatches} documents differ from the oracle"
        );
        println!("verified: every document equals the oracle's");
    }
    // Each run's state goes: several runs' worth on tmpfs would take memory from the next.
    drop(core);
    if args.dir.is_some() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(RunResult { per_core, per_sec })
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.batch > 0, "--batch must be positive");
    ensure!(args.runs > 0, "--runs must be positive");
    let gen_cfg = GenConfig {
        seed: args.seed,
        customers: args.customers,
        addresses: args.addresses,
        sales: args.sales,
        items: args.items,
        promos: args.promos,
        update_share: args.update_share,
        late_sale_share: args.late_sale_share,
        malformed_share: args.malformed_share,
        ..GenConfig::default()
    };
    let t = Instant::now();
    let mut d = generate(&gen_cfg);
    let expected_docs = d.expected.len();
    let expected_dead: u64 = d.expected_dead_letters.values().sum();
    let oracle = if args.verify {
        std::mem::take(&mut d.expected)
    } else {
        d.expected = BTreeMap::new();
        BTreeMap::new()
    };
    println!(
        "data: {} customer, {} address, {} sale records ({} malformed), {} items, {} promos; generated in {:.1}s",
        d.customer_records.len(),
        d.address_records.len(),
        d.sale_records.len(),
        expected_dead,
        args.items,
        args.promos,
        t.elapsed().as_secs_f64()
    );
    let items: BTreeMap<i64, Item> = rows(&d.items_csv)?;
    let promos: BTreeMap<PromoId, Promo> = rows(&d.promos_csv)?;
    if args.decode_only {
        perf_control(&args, "enable")?;
        for _ in 0..5 {
            let (dims, sales) = decode_only(&d);
            println!(
                "decoding alone: sales {:.0}/s, dimensions {:.0}/s",
                d.sale_records.len() as f64 / sales.max(1e-9),
                (d.customer_records.len() + d.address_records.len()) as f64 / dims.max(1e-9)
            );
        }
        perf_control(&args, "disable")?;
        return Ok(());
    }
    let (decode_dims, decode_sales) = decode_only(&d);
    let batches = schedule(&d, args.batch);
    let n_batches = batches.len();
    let sale_records = d.sale_records.len();
    let dim_records = d.customer_records.len() + d.address_records.len();
    drop(d);

    println!(
        "decoding alone (outside the runs): sales {decode_sales:.2}s ({:.0}/s), dimensions {decode_dims:.2}s",
        sale_records as f64 / decode_sales.max(1e-9)
    );
    let mut results = Vec::new();
    for run in 1..=args.runs {
        println!("run {run} of {}:", args.runs);
        let r = timed_run(
            &args,
            run,
            batches.clone(),
            &items,
            &promos,
            &oracle,
            Expected {
                docs: expected_docs as u64,
                dead: expected_dead,
                sale_records,
                dim_records,
                n_batches,
            },
        )?;
        results.push(r);
    }
    let median = |f: fn(&RunResult) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let per_core = median(|r| r.per_core);
    let per_sec = median(|r| r.per_sec);
    let all: Vec<String> = results
        .iter()
        .map(|r| format!("{:.0}", r.per_core))
        .collect();
    println!(
        "SUMMARY runs={} median_sales_per_core_s={per_core:.0} median_sales_per_s={per_sec:.0} per_core_each=[{}]",
        results.len(),
        all.join(",")
    );
    Ok(())
}
