//! Scenario `soak`: the real daemon binary for a long run at half its measured ingest
//! ceiling, with the Redis fan-out, the spool and a steady order flow, sampled every
//! minute: RSS, tick commit latency (p50/p99), order latency (p99), rates, errors.
//!
//! The ceiling is measured first in the same run: ticks over TCP as fast as the daemon
//! takes them for `--calibrate-seconds` (90), beside the soak's orders (and order worker),
//! which share the cores with the ticks, the ceiling being the rate committed over the
//! last two thirds of that (a fresh database's first seconds take rows faster than the
//! store sustains; see `bench/results/` for the runs that showed it). The soak then paces
//! ticks at `--load` of it over TCP with `ack=committed` frames (each frame's send → ack
//! time is a commit latency) and POSTs `--orders-per-second` orders. RSS is sampled every second and summarised per
//! minute (median and maximum). It also reports the machine's CPU per tick committed at the
//! ceiling and in the soak, with the rows a commit and the ticks a fan-out message carried
//! at each: half the ceiling's rate is not half its CPU when batches and messages shrink.
//!
//! Verdict: RSS does not grow by more than 10 %, no errors, p99 stable. Growth is the
//! median RSS of the last five minutes against that of minutes 2–6 (the first is warm-up).
//! One sample a minute cannot tell growth from the swing of memory in flight: the daemon's
//! RSS moves by tens of MiB within a minute as batches queue behind a commit and are freed,
//! so a verdict on the largest single sample fails runs whose memory does not grow. The
//! largest sample and the slope of the per-minute medians are reported beside it.
//! "p99 stable" is judged on the per-minute tick-commit p99s after warm-up: the median of the
//! last five minutes' within +50 % of that of minutes 2–6 (no drift), and no minute above four
//! times the median of all (no stall).
//!
//! Retention, as a deployment runs it: at half the ceiling a 30-minute store is tens of GB
//! (about 110 bytes a row with its indexes), more than a test machine's disk, and a store
//! growing past RAM measures PostgreSQL's cache, not the daemon. So the soak keeps about
//! [`RETAINED_DAYS`] minutes of ticks: minute `m`'s ticks are stamped `(m - 1) mod
//! RETAINED_DAYS` days ahead (the daily partitions the migrator made ahead), and before
//! minute `m` starts the partition it will fill, written `RETAINED_DAYS` minutes before, is
//! truncated.
//!
//! Plan → run → report: [`start`] makes the database and starts the daemon, [`calibrate`]
//! measures the ceiling, [`Loads`] and [`soak_minutes`] run the soak (the senders and the
//! sampler are in `load`, the statistics in `stats`), and `report` judges and writes it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use christmas_core::frame::AckLevel;
use christmas_tests::{free_addr, DaemonProcess, HttpClient};
use tokio::task::JoinHandle;

use crate::args::ServiceArgs;
use load::{metric_sum, metrics, OrderStats, Sample, TickStats, WorkerStats};
use stats::{cpu_jiffies, histogram, idle_share, median, Minute};

mod load;
mod report;
mod stages;
mod stats;

/// Flags of `christmas-bench soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// PostgreSQL and Redis (the soak needs both: Redis for the fan-out and order events).
    #[command(flatten)]
    services: ServiceArgs,
    /// Minutes of soak.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Seconds of the ceiling measurement. The ceiling is the commit rate over its last two
    /// thirds: in the first third the partitions and indexes are empty and no checkpoint
    /// has run, so they take rows faster than the store does in steady state.
    #[arg(long, default_value_t = 90)]
    calibrate_seconds: u64,
    /// Fraction of the ceiling to soak at.
    #[arg(long, default_value_t = 0.5)]
    load: f64,
    /// Soak at this many ticks/s instead of `--load` of the ceiling: A/B runs at one rate
    /// (the ceiling measured at the start of each run varies from run to run on a shared VM).
    #[arg(long)]
    rate: Option<u64>,
    /// Also run an order worker in the bench (accepted → working → filled, acknowledged),
    /// so `orders:events` is consumed and trimmed as in a deployment. It takes events in
    /// batches of up to 256: two more statements per batch, not per order.
    #[arg(long)]
    order_worker: bool,
    /// Orders per second during the soak.
    #[arg(long, default_value_t = 500)]
    orders_per_second: u64,
    /// Instruments in the synthetic market.
    #[arg(long, default_value_t = 500)]
    symbols: usize,
    /// What the soak's frames wait for: `committed` (PostgreSQL) or `durable` (the spool's
    /// fsync). The latency reported is frame sent → that ack.
    #[arg(long, value_enum, default_value_t = SoakAck::Committed)]
    ack: SoakAck,
    /// How the soak's ticks reach the daemon: `tcp` (rkyv frames of 1,000 on one
    /// connection) or `http` (`POST /api/ticks` requests of 1,000 NDJSON lines over 64
    /// keep-alive connections). The ceiling is measured over TCP either way.
    #[arg(long, value_enum, default_value_t = SoakVia::Tcp)]
    via: SoakVia,
    /// Set the kernel's `vm.dirty_background_bytes` to this for the run (needs root; put
    /// back afterwards). On one disk the default bursts of writeback stall PostgreSQL's WAL
    /// fsyncs and the spool's: see docs/operations.md.
    #[arg(long)]
    dirty_background_bytes: Option<u64>,
}

/// The way in of the soak's ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SoakVia {
    Tcp,
    Http,
}

/// The ack level of the soak's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SoakAck {
    Committed,
    Durable,
}

impl SoakAck {
    fn level(self) -> AckLevel {
        match self {
            SoakAck::Committed => AckLevel::Committed,
            SoakAck::Durable => AckLevel::Durable,
        }
    }

    fn name(self) -> &'static str {
        self.level().as_str()
    }
}

/// Daily partitions the soak writes in turn, a minute each (today and the days after it the
/// migrator creates ahead of time).
const RETAINED_DAYS: u64 = 4;

const DAY_NS: i64 = 86_400_000_000_000;

/// The daemon binary beside this one (both are built by `cargo build --release`).
fn daemon_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .context("no directory for the bench binary")?
        .join("christmas-ingest");
    if !bin.exists() {
        bail!(
            "{} is missing: cargo build --release -p christmas-ingest",
            bin.display()
        );
    }
    Ok(bin)
}

pub fn run(args: SoakArgs) -> Result<()> {
    let _writeback = args
        .dirty_background_bytes
        .map(crate::machine::Writeback::set)
        .transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(soak(args))
}

/// The soak's database, daemon, spool and log.
struct Setup {
    url: String,
    redis: String,
    spool: PathBuf,
    log_path: PathBuf,
    daemon: DaemonProcess,
}

/// Plan: a fresh database, an empty spool, and the release daemon on it, ready.
async fn start(args: &SoakArgs) -> Result<Setup> {
    let redis = args.services.redis()?.to_string();
    let url = crate::pg::fresh_database(&args.services.url, "christmas_bench_soak").await?;
    let spool = std::env::temp_dir().join(format!("christmas-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let log_path = std::env::temp_dir().join("christmas-soak-daemon.log");
    let log_file = std::fs::File::create(&log_path)?;
    let (stdout, stderr) = (log_file.try_clone()?, log_file);
    let mut daemon =
        DaemonProcess::spawn(&daemon_binary()?, free_addr(), Some(free_addr()), |cmd| {
            cmd.env("DATABASE_URL", &url)
                // The bench's own Redis database, emptied afterwards.
                .env("REDIS_URL", crate::services::bench_redis(&redis))
                .env("CHRISTMAS_SPOOL_DIR", &spool)
                .env("RUST_LOG", "warn")
                // stderr too: a panic, or the allocator's statistics at exit, land in the log.
                .stdout(stdout)
                .stderr(stderr);
        })?;
    daemon
        .wait_ready(Duration::from_secs(30))
        .await
        .with_context(|| format!("the daemon did not start; see {}", log_path.display()))?;
    Ok(Setup {
        url,
        redis,
        spool,
        log_path,
        daemon,
    })
}

/// The counters the soak reports differences of, in this order: rows and batches
/// committed, fan-out ticks published, messages, ticks dropped.
fn totals(text: &str) -> [f64; 5] {
    [
        "christmas_rows_committed_total",
        "christmas_batches_committed_total",
        "christmas_fanout_published_total",
        "christmas_fanout_messages_total",
        "christmas_fanout_dropped_total",
    ]
    .map(|name| metric_sum(text, name))
}

fn since(before: [f64; 5], after: [f64; 5]) -> [f64; 5] {
    std::array::from_fn(|i| after[i] - before[i])
}

fn committed_total(text: &str) -> f64 {
    metric_sum(text, "christmas_rows_committed_total")
}

/// What the ceiling measurement found.
struct Ceiling {
    ticks_per_s: f64,
    /// The soak's rate: `--rate`, else `--load` of the ceiling.
    rate: u64,
    /// The counters once the calibration's backlog drained.
    drained: [f64; 5],
    published: f64,
    dropped: f64,
    /// The machine's CPU over the ceiling's measured seconds: busy share (0–1) and
    /// microseconds of CPU (all cores, orders included) per tick committed.
    cpu: CpuPerTick,
    /// Rows per commit and ticks per fan-out message over the calibration.
    rows_per_commit: f64,
    ticks_per_message: f64,
}

/// How busy the machine was, and its CPU per tick committed.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CpuPerTick {
    pub busy: f64,
    pub us_per_tick: f64,
}

impl CpuPerTick {
    /// From `/proc/stat` jiffies `(idle, total)` before and after, and the ticks/s committed
    /// in between.
    pub(super) fn between(before: (u64, u64), after: (u64, u64), ticks_per_s: f64) -> Self {
        Self::at(1.0 - idle_share(before, after), ticks_per_s)
    }

    /// From a busy share (0–1) and the ticks/s committed meanwhile.
    pub(super) fn at(busy: f64, ticks_per_s: f64) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        CpuPerTick {
            busy,
            us_per_tick: busy * cores / ticks_per_s.max(1.0) * 1e6,
        }
    }
}

/// The ceiling: as fast as the daemon takes ticks (acks at `accepted` keep the pipe full;
/// the rate is what it committed, read from its counters), beside the soak's orders and
/// order worker: they share the cores with the ticks during the soak, so "half the
/// ceiling" measured without them is more than half of what is left for ticks.
async fn calibrate(args: &SoakArgs, setup: &Setup, http: &HttpClient) -> Result<Ceiling> {
    let tcp = setup.daemon.tcp().context("the daemon has no TCP port")?;
    println!(
        "soak: measuring the ceiling for {} s",
        args.calibrate_seconds
    );
    let cal_before = totals(&metrics(http).await?);
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(TickStats::default());
    let cal = tokio::spawn(load::send_ticks(
        tcp,
        load::TickPlan {
            rate: 0,
            symbols: args.symbols,
            ack: AckLevel::Accepted,
            stats: stats.clone(),
            stop: stop.clone(),
            day_offset: Arc::new(AtomicI64::new(0)),
        },
    ));
    let orders = tokio::spawn(load::send_orders(
        setup.daemon.http(),
        args.orders_per_second,
        // Ids of their own: the soak's would otherwise be replays of these (200, not 201).
        "calibration",
        Arc::new(OrderStats::default()),
        stop.clone(),
    ));
    let worker = args.order_worker.then(|| {
        tokio::spawn(load::work_orders(
            crate::services::bench_redis(&setup.redis),
            setup.url.clone(),
            Arc::new(WorkerStats::default()),
            stop.clone(),
        ))
    });
    let warm_up = args.calibrate_seconds / 3;
    let measured = (args.calibrate_seconds - warm_up).max(1);
    tokio::time::sleep(Duration::from_secs(warm_up)).await;
    let before = committed_total(&metrics(http).await?);
    let cpu_before = cpu_jiffies();
    tokio::time::sleep(Duration::from_secs(measured)).await;
    let cpu_after = cpu_jiffies();
    let after = committed_total(&metrics(http).await?);
    stop.store(true, Ordering::SeqCst);
    cal.await??;
    orders.await?.context("the calibration's orders")?;
    if let Some(worker) = worker {
        worker.await?.context("the calibration's order worker")?;
    }
    let ceiling = (after - before) / measured as f64;
    let cpu = CpuPerTick::between(cpu_before, cpu_after, ceiling);
    let rate = args.rate.unwrap_or((ceiling * args.load) as u64);
    println!(
        "soak: ceiling {ceiling:.0} ticks/s; soaking at {rate} ticks/s and {} orders/s for {} min",
        args.orders_per_second, args.minutes
    );
    // The calibration's backlog (rings, spool) drains before the soak starts.
    let mut last = -1.0;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = committed_total(&metrics(http).await?);
        if now == last {
            break;
        }
        last = now;
    }
    // Whether the fan-out kept up with the ceiling: a full fan-out queue drops its oldest
    // batches, so a ceiling with drops is above what fan-out and PostgreSQL sustain together.
    let drained = totals(&metrics(http).await?);
    let [rows, commits, published, messages, dropped] = since(cal_before, drained);
    println!(
        "soak: fan-out during the ceiling: {published:.0} ticks published, {dropped:.0} dropped"
    );
    // From here on, the same counters say what each commit and each fan-out message carried
    // during the soak: the per-commit and per-message costs are what a longer linger or
    // larger messages save.
    Ok(Ceiling {
        ticks_per_s: ceiling,
        rate,
        drained,
        published,
        dropped,
        cpu,
        rows_per_commit: rows / commits.max(1.0),
        ticks_per_message: published / messages.max(1.0),
    })
}

/// A `CHECKPOINT` after the ceiling, so its WAL is not checkpointed into the first minutes;
/// how it went, for the report.
async fn checkpoint(db: &tokio_postgres::Client) -> &'static str {
    match db.batch_execute("CHECKPOINT").await {
        Ok(()) => "then a `CHECKPOINT`",
        Err(e) => {
            println!(
                "soak: no CHECKPOINT after the ceiling ({e}); the first minutes may share one"
            );
            "no `CHECKPOINT` (refused)"
        }
    }
}

/// The soak's running loads: ticks, orders, the optional order worker, and the sampler.
struct Loads {
    stop: Arc<AtomicBool>,
    day_offset: Arc<AtomicI64>,
    ticks: Arc<TickStats>,
    orders: Arc<OrderStats>,
    worker: Arc<WorkerStats>,
    samples: Arc<Mutex<Vec<Sample>>>,
    tick_task: JoinHandle<Result<()>>,
    order_task: JoinHandle<Result<()>>,
    worker_task: JoinHandle<Result<()>>,
    sampler: JoinHandle<()>,
}

impl Loads {
    /// Ticks at `rate` in `--ack` frames, `--orders-per-second` orders, the worker
    /// when `--order-worker`, and a sample of the daemon every second.
    fn start(args: &SoakArgs, setup: &Setup, rate: u64) -> Result<Loads> {
        let tcp = setup.daemon.tcp().context("the daemon has no TCP port")?;
        let (http, pid) = (setup.daemon.http(), setup.daemon.pid());
        let day_offset = Arc::new(AtomicI64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let ticks = Arc::new(TickStats::default());
        let orders = Arc::new(OrderStats::default());
        *ticks.latency_us.lock().unwrap() = Some(histogram());
        *orders.latency_us.lock().unwrap() = Some(histogram());
        let plan = load::TickPlan {
            rate,
            symbols: args.symbols,
            ack: args.ack.level(),
            stats: ticks.clone(),
            stop: stop.clone(),
            day_offset: day_offset.clone(),
        };
        let tick_task = match args.via {
            SoakVia::Tcp => tokio::spawn(load::send_ticks(tcp, plan)),
            SoakVia::Http => tokio::spawn(load::send_ticks_http(http, plan)),
        };
        let order_task = tokio::spawn(load::send_orders(
            http,
            args.orders_per_second,
            "soak",
            orders.clone(),
            stop.clone(),
        ));
        let worker = Arc::new(WorkerStats::default());
        let worker_task = tokio::spawn({
            let (redis, url, worker, stop) = (
                crate::services::bench_redis(&setup.redis),
                setup.url.clone(),
                worker.clone(),
                stop.clone(),
            );
            let on = args.order_worker;
            async move {
                if on {
                    load::work_orders(redis, url, worker, stop).await
                } else {
                    Ok(())
                }
            }
        });
        let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
        let sampler = {
            let (samples, stop, http) = (samples.clone(), stop.clone(), HttpClient::new(http));
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                while !stop.load(Ordering::Relaxed) {
                    every.tick().await;
                    let s = load::sample(pid, &http).await;
                    samples.lock().unwrap().push(s);
                }
            })
        };
        Ok(Loads {
            stop,
            day_offset,
            ticks,
            orders,
            worker,
            samples,
            tick_task,
            order_task,
            worker_task,
            sampler,
        })
    }

    /// Whether a load stopped early.
    fn stopped(&self, order_worker: bool) -> bool {
        self.tick_task.is_finished()
            || self.order_task.is_finished()
            || (order_worker && self.worker_task.is_finished())
    }

    /// Stops the senders and the sampler; the result of each load (ticks, orders, worker).
    async fn finish(self) -> Result<[Result<()>; 3]> {
        self.stop.store(true, Ordering::SeqCst);
        self.sampler.await?;
        Ok([
            self.tick_task.await?,
            self.order_task.await?,
            self.worker_task.await?,
        ])
    }
}

/// Counters a minute's row is the difference of.
#[derive(Default)]
struct Marks {
    ticks: u64,
    orders: u64,
    jiffies: (u64, u64),
}

/// One minute's row: rates and latencies since `last`, the samples' medians and maxima.
fn minute_row(m: u64, secs: f64, loads: &Loads, last: &mut Marks, redis: &str) -> Minute {
    let th = loads.ticks.latency_us.lock().unwrap().replace(histogram());
    let oh = loads.orders.latency_us.lock().unwrap().replace(histogram());
    let (t, o) = (
        loads.ticks.committed.load(Ordering::Relaxed),
        loads.orders.created.load(Ordering::Relaxed),
    );
    let errors =
        loads.ticks.errors.load(Ordering::Relaxed) + loads.orders.errors.load(Ordering::Relaxed);
    let taken = std::mem::take(&mut *loads.samples.lock().unwrap());
    let now = cpu_jiffies();
    let idle_pct = idle_share(last.jiffies, now) * 100.0;
    let of = |f: fn(&Sample) -> f64| median(&taken.iter().map(f).collect::<Vec<_>>());
    let quantile_ms = |h: &Option<hdrhistogram::Histogram<u64>>, q: f64| {
        h.as_ref()
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1e3)
    };
    let row = Minute {
        minute: m,
        ticks_per_s: (t - last.ticks) as f64 / secs,
        tick_p50_ms: quantile_ms(&th, 0.5),
        tick_p99_ms: quantile_ms(&th, 0.99),
        orders_per_s: (o - last.orders) as f64 / secs,
        order_p99_ms: quantile_ms(&oh, 0.99),
        rss_median_mib: of(|s| s.rss_mib),
        rss_max_mib: taken.iter().map(|s| s.rss_mib).fold(0.0, f64::max),
        anon_median_mib: of(|s| s.anon_mib),
        threads_max: taken.iter().map(|s| s.threads).fold(0.0, f64::max),
        in_flight_median: of(|s| s.in_flight_rows),
        fanout_queue_median: of(|s| s.fanout_queue),
        order_queue_median: of(|s| s.order_queue),
        idle_pct,
        redis_mib: crate::services::redis_used_mib(redis).unwrap_or(0.0),
        errors,
    };
    *last = Marks {
        ticks: t,
        orders: o,
        jiffies: now,
    };
    row
}

/// Run: `--minutes` of soak, a row a minute, with the retention of the scenario's note;
/// the rows and the number of partitions truncated.
async fn soak_minutes(
    args: &SoakArgs,
    loads: &Loads,
    db: &tokio_postgres::Client,
    redis: &str,
) -> Result<(Vec<Minute>, u64)> {
    let mut last = Marks {
        jiffies: cpu_jiffies(),
        ..Marks::default()
    };
    let mut minutes = Vec::new();
    let mut truncated = 0u64;
    let mut minute_started = Instant::now();
    for m in 1..=args.minutes {
        tokio::time::sleep(Duration::from_secs(60).saturating_sub(minute_started.elapsed())).await;
        let secs = minute_started.elapsed().as_secs_f64();
        minute_started = Instant::now();
        let row = minute_row(m, secs, loads, &mut last, redis);
        println!("  {row:?}");
        minutes.push(row);
        // Retention: the partition minute m + 1 fills was filled RETAINED_DAYS minutes ago
        // (its time counts in minute m + 1).
        let next = (m % RETAINED_DAYS) as i64;
        if m + 1 > RETAINED_DAYS && m < args.minutes {
            let day = db
                .query_one(
                    "SELECT to_char((now() AT TIME ZONE 'UTC')::date + $1::int, 'YYYYMMDD')",
                    &[&(next as i32)],
                )
                .await?
                .get::<_, String>(0);
            db.batch_execute(&format!("TRUNCATE market_data_p{day}, quotes_p{day}"))
                .await
                .with_context(|| format!("truncating the partitions of {day}"))?;
            truncated += 1;
        }
        loads.day_offset.store(next, Ordering::Relaxed);
        if loads.stopped(args.order_worker) {
            break;
        }
    }
    Ok((minutes, truncated))
}

/// Where the order events went, in words for the report.
async fn order_events(
    args: &SoakArgs,
    loads_seen: (u64, u64, u64),
    events_left: Option<u64>,
    db: &tokio_postgres::Client,
) -> Result<String> {
    let (created, filled, acked) = loads_seen;
    let events_left = events_left.map_or("?".into(), |n| n.to_string());
    Ok(if args.order_worker {
        let filled_in_db: i64 = db
            .query_one("SELECT count(*) FROM orders WHERE status = 'filled'", &[])
            .await?
            .get(0);
        format!(
            "consumed by one `OrderWorker` in the bench (`--order-worker`: it filled {filled} of \
             the {created} orders created, {filled_in_db} are filled in PostgreSQL, it \
             acknowledged {acked} events; `orders:events` held {events_left} entries at the end)"
        )
    } else {
        format!(
            "not consumed (no `--order-worker`: `orders:events` held {events_left} entries at \
             the end)"
        )
    })
}

async fn soak(args: SoakArgs) -> Result<()> {
    let mut setup = start(&args).await?;
    let http = HttpClient::new(setup.daemon.http());
    let ceiling = calibrate(&args, &setup, &http).await?;
    // The calibration's ticks went to today's partition, which minute RETAINED_DAYS truncates.
    let db = crate::pg::connect(&setup.url).await?;
    let checkpointed = checkpoint(&db).await;
    let page_before = metrics(&http).await?;
    let loads = Loads::start(&args, &setup, ceiling.rate)?;
    let soak_started = Instant::now();
    let (minutes, truncated) = soak_minutes(&args, &loads, &db, &setup.redis).await?;
    let page_after = metrics(&http).await?;
    let [rows, commits, published, messages, _] = since(ceiling.drained, totals(&page_after));
    let stages = stages::breakdown(&page_before, &page_after);
    let soak_secs = soak_started.elapsed().as_secs_f64();
    let (orders, worker) = (loads.orders.clone(), loads.worker.clone());
    let [tick_result, order_result, worker_result] = loads.finish().await?;
    if args.order_worker {
        // The daemon trims every 10 s below what the worker acknowledged: let one pass run.
        tokio::time::sleep(Duration::from_secs(11)).await;
    }
    let events_left = crate::services::bench_redis_xlen(&setup.redis, "orders:events");
    let _ = setup.daemon.signal("TERM");
    let status = setup.daemon.wait()?;
    tick_result?;
    order_result?;
    worker_result.context("the order worker")?;
    let seen = (
        orders.created.load(Ordering::Relaxed),
        worker.filled.load(Ordering::Relaxed),
        worker.acked.load(Ordering::Relaxed),
    );
    let events = order_events(&args, seen, events_left, &db).await?;
    println!("soak: order events {events}");
    let log = std::fs::read_to_string(&setup.log_path).unwrap_or_default();
    let log_errors = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .count();
    let _ = std::fs::remove_dir_all(&setup.spool);
    crate::services::clear_bench_redis_keys(&setup.redis, "md:*")?;
    crate::services::clear_bench_redis(&setup.redis)?;
    if minutes.len() < 2 {
        bail!("the soak stopped after {} minute(s)", minutes.len());
    }
    let run = report::SoakRun {
        minutes,
        stages,
        ceiling,
        checkpointed,
        truncated,
        rows,
        commits,
        published,
        messages,
        soak_secs,
        events,
        log_errors,
        exit: status,
    };
    if !report::publish(&args, &run)? {
        bail!("the soak failed its verdict");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::CpuPerTick;

    #[test]
    fn cpu_per_tick_is_the_busy_share_of_all_cores_over_the_rate() {
        // 100 jiffies, 25 of them idle: 75 % busy.
        let cpu = CpuPerTick::between((1_000, 10_000), (1_025, 10_100), 100_000.0);
        assert!((cpu.busy - 0.75).abs() < 1e-9);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        // 0.75 × cores seconds of CPU a second over 100,000 ticks a second.
        assert!((cpu.us_per_tick - 0.75 * cores * 10.0).abs() < 1e-9);
        // Half the rate at the same busy share: twice the CPU per tick.
        let half = CpuPerTick::at(0.75, 50_000.0);
        assert!((half.us_per_tick / cpu.us_per_tick - 2.0).abs() < 1e-9);
    }
}
