//! Scenario `soak`: the real daemon binary for a long run at half its measured ingest
//! ceiling, with the Redis fan-out, the spool and a steady order flow, sampled every
//! minute: RSS, tick commit latency (p50/p99), order latency (p99), rates, errors.
//!
//! The ceiling is measured first in the same run: ticks over TCP as fast as the daemon
//! takes them for `--calibrate-seconds` (90), the ceiling being the rate committed over the
//! last two thirds of that. Measured over its first 20 s instead, in a fresh database, it
//! came out at up to 464 k ticks/s on a day the daemon could not hold 232 k for 30 minutes
//! (`bench/results/soak-2026-11-29T030937Z.md`). The soak then paces ticks at `--load` of it over
//! TCP with `ack=committed` frames (each frame's send → ack time is a commit latency) and
//! POSTs `--orders-per-second` orders. RSS is sampled every second and summarised per
//! minute (median and maximum).
//!
//! Verdict: RSS does not grow by more than 10 %, no errors, p99 stable. Growth is the
//! median RSS of the last five minutes against that of minutes 2–6 (the first is warm-up).
//! One sample a minute cannot tell growth from the swing of memory in flight: the daemon's
//! RSS moves by tens of MiB within a minute as batches queue behind a commit and are freed,
//! and a first 30-minute run judged by its largest single sample failed at +14.6 % while its
//! samples in the last minutes were as low as its first (`bench/results/soak-2026-11-28T154000Z.md`).
//! The largest sample and the slope of the per-minute medians are reported beside it.
//! "p99 stable" is judged on the per-minute tick-commit p99s after warm-up: the median of the
//! last five minutes' within +50 % of that of minutes 2–6 (no drift), and no minute above four
//! times the median of all (no stall). Runs before 2026-11-28T22:00 reported p99 without
//! judging it.
//!
//! Retention, as a deployment runs it: at half the ceiling a 30-minute store is tens of GB
//! (about 110 bytes a row with its indexes), more than a test machine's disk, and a store
//! growing past RAM measures PostgreSQL's cache, not the daemon. So the soak keeps about
//! [`RETAINED_DAYS`] minutes of ticks: minute `m`'s ticks are stamped
//! `(m - 1) mod RETAINED_DAYS` days ahead (the daily partitions the migrator made ahead), and before minute `m` starts
//! the partition it will fill, written `RETAINED_DAYS` minutes before, is truncated.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use christmas_core::frame::{self, AckLevel, IngestFrame};
use christmas_core::orders::{OrderStatus, OrderWorker, OrderWorkerConfig};
use christmas_core::synthetic::SyntheticMarket;
use christmas_ingest::feed::push;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{machine, report};

/// Flags of `christmas-bench soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// PostgreSQL URL; the soak creates its own database on that server.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    url: String,
    /// Redis for the fan-out and order events (the soak writes to its database 9 and
    /// deletes what it wrote afterwards).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: String,
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
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

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

/// One once-a-second look at the daemon: its memory from `/proc` and what it holds in
/// flight from its own `/metrics`, so growth can be told from backlog.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    /// Resident set (`VmRSS`), MiB.
    rss_mib: f64,
    /// The anonymous part of it (`RssAnon`: the heap, not mapped files), MiB.
    anon_mib: f64,
    threads: f64,
    /// Rows accepted and not yet committed, dropped or dead-lettered (rings, sealed
    /// batches queued for the spool or a writer, the batch being written).
    in_flight_rows: f64,
    /// Batches waiting for the Redis fan-out, and orders waiting for a writer.
    fanout_queue: f64,
    order_queue: f64,
}

/// `VmRSS`, `RssAnon` (MiB) and `Threads` of `pid`.
fn proc_status(pid: u32) -> (f64, f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        field("VmRSS:") / 1024.0,
        field("RssAnon:") / 1024.0,
        field("Threads:"),
    )
}

/// The sum over labels of every series of metric `name` in a Prometheus text page.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn sample(pid: u32, http: &str) -> Sample {
    let (rss_mib, anon_mib, threads) = proc_status(pid);
    let metrics = get(http, "/metrics").await.unwrap_or_default();
    let m = |name| metric_sum(&metrics, name);
    Sample {
        rss_mib,
        anon_mib,
        threads,
        in_flight_rows: m("christmas_accepted_total")
            - m("christmas_rows_committed_total")
            - m("christmas_dropped_total")
            - m("christmas_dead_lettered_total"),
        fanout_queue: m("christmas_fanout_queue_depth"),
        order_queue: m("christmas_order_queue_depth"),
    }
}

/// What the tick sender saw.
#[derive(Default)]
struct TickStats {
    committed: AtomicU64,
    errors: AtomicU64,
    latency_us: Mutex<Option<Histogram<u64>>>,
}

/// Daily partitions the soak writes in turn, a minute each (today and the days after it the
/// migrator creates ahead of time).
const RETAINED_DAYS: u64 = 4;

const DAY_NS: i64 = 86_400_000_000_000;

/// Sends ticks at `rate` per second (0: as fast as the daemon takes them) in frames of
/// 1,000 with `ack`, until `stop`; acks are counted and timed per frame. Each tick is moved
/// `day_offset` days ahead (see the retention note above).
async fn send_ticks(
    addr: String,
    rate: u64,
    symbols: usize,
    ack: AckLevel,
    stats: Arc<TickStats>,
    stop: Arc<AtomicBool>,
    day_offset: Arc<AtomicI64>,
) -> Result<()> {
    let stream = TcpStream::connect(&addr).await?;
    stream.set_nodelay(true)?;
    let (mut r, mut w) = stream.into_split();
    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let reader = {
        let (stats, sent_at) = (stats.clone(), sent_at.clone());
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 4];
                if r.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                if r.read_exact(&mut body).await.is_err() {
                    return;
                }
                let Ok(a) = frame::decode_ack(&body) else {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if !a.ok {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                stats
                    .committed
                    .fetch_add(u64::from(a.records), Ordering::Relaxed);
                if let Some(t) = sent_at.lock().unwrap().remove(&a.seq) {
                    if let Some(h) = stats.latency_us.lock().unwrap().as_mut() {
                        let _ = h.record(t.elapsed().as_micros() as u64);
                    }
                }
            }
        })
    };
    let mut market = SyntheticMarket::new(7, symbols)
        .starting_at(christmas_core::query::unix_ns(std::time::SystemTime::now()));
    let started = Instant::now();
    let (mut sent, mut seq) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let due = if rate == 0 {
            sent + 1_000
        } else {
            (started.elapsed().as_secs_f64() * rate as f64) as u64
        };
        while sent + 1_000 <= due {
            seq += 1;
            let mut f = IngestFrame {
                seq,
                ack: ack.code(),
                ..IngestFrame::default()
            };
            let shift = day_offset.load(Ordering::Relaxed) * DAY_NS;
            for mut t in market.by_ref().take(1_000) {
                t.shift_time(shift);
                push(&mut f, t);
            }
            sent += 1_000;
            sent_at.lock().unwrap().insert(seq, Instant::now());
            w.write_all(&frame::encode_ingest(&f)?).await?;
        }
        if rate > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // The last acks.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sent_at.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(w);
    reader.abort();
    Ok(())
}

/// What the order sender saw.
#[derive(Default)]
struct OrderStats {
    created: AtomicU64,
    errors: AtomicU64,
    latency_us: Mutex<Option<Histogram<u64>>>,
}

/// Orders an [`OrderWorker`] took to `filled`, and the events it acknowledged.
#[derive(Default)]
struct WorkerStats {
    filled: AtomicU64,
    acked: AtomicU64,
}

/// One order worker, as a deployment runs beside the daemons (`examples/order_worker.rs`):
/// batches of up to 256 `order.accepted` events move their orders accepted → working →
/// filled (one statement a step) and are acknowledged, so the daemon's trim keeps
/// `orders:events` short. Runs until `stop`.
async fn work_orders(
    redis_url: String,
    database_url: String,
    stats: Arc<WorkerStats>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut config = OrderWorkerConfig::new(redis_url, database_url, "soak-worker");
    config.block = Duration::from_millis(200);
    let mut worker = OrderWorker::connect(config).await?;
    while !stop.load(Ordering::Relaxed) {
        let events = worker.next_batch(256).await?;
        if events.is_empty() {
            continue;
        }
        let ids: Vec<i64> = events.iter().map(|e| e.order_id).collect();
        worker
            .transition_many(&ids, &[OrderStatus::Accepted], OrderStatus::Working)
            .await?;
        let filled = worker
            .transition_many(&ids, &[OrderStatus::Working], OrderStatus::Filled)
            .await?;
        worker.ack_many(&events).await?;
        stats
            .filled
            .fetch_add(filled.len() as u64, Ordering::Relaxed);
        stats
            .acked
            .fetch_add(events.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// POSTs `rate` orders per second over 4 keep-alive connections until `stop`.
async fn send_orders(
    addr: String,
    rate: u64,
    stats: Arc<OrderStats>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let per = (rate / 4).max(1);
    let mut tasks = Vec::new();
    for c in 0..4u64 {
        let (addr, stats, stop) = (addr.clone(), stats.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await?;
            s.set_nodelay(true)?;
            let started = Instant::now();
            let mut n = 0u64;
            let mut buf = vec![0u8; 64 << 10];
            while !stop.load(Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * per as f64) as u64;
                if n >= due {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                n += 1;
                let body = format!(
                    r#"{{"client_order_id":"soak-{c}-{n}","symbol":"ESZ6","side":"buy","type":"limit","quantity":1,"limit_price":6000.25,"time_in_force":"day"}}"#
                );
                let req = format!(
                    "POST /api/orders HTTP/1.1\r\nhost: soak\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let t = Instant::now();
                s.write_all(req.as_bytes()).await?;
                // One response: head, then content-length bytes.
                let mut got = 0usize;
                let status;
                loop {
                    let k = s.read(&mut buf[got..]).await?;
                    if k == 0 {
                        bail!("the daemon closed an order connection");
                    }
                    got += k;
                    let text = String::from_utf8_lossy(&buf[..got]);
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                let l = l.to_ascii_lowercase();
                                l.strip_prefix("content-length:")
                                    .and_then(|v| v.trim().parse::<usize>().ok())
                            })
                            .unwrap_or(0);
                        if got >= head_end + 4 + len {
                            status = text.split(' ').nth(1).unwrap_or("").to_string();
                            break;
                        }
                    }
                }
                if status == "201" {
                    stats.created.fetch_add(1, Ordering::Relaxed);
                    if let Some(h) = stats.latency_us.lock().unwrap().as_mut() {
                        let _ = h.record(t.elapsed().as_micros() as u64);
                    }
                } else {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// One minute of the soak.
#[derive(Debug, Clone)]
struct Minute {
    minute: u64,
    ticks_per_s: f64,
    tick_p50_ms: f64,
    tick_p99_ms: f64,
    orders_per_s: f64,
    order_p99_ms: f64,
    /// Median and largest of the minute's once-a-second RSS samples.
    rss_median_mib: f64,
    rss_max_mib: f64,
    /// Medians of the minute's samples of `RssAnon` and of what the daemon holds in flight.
    anon_median_mib: f64,
    threads_max: f64,
    in_flight_median: f64,
    fanout_queue_median: f64,
    order_queue_median: f64,
    /// The whole machine's idle CPU over the minute, % (`/proc/stat`).
    idle_pct: f64,
    /// Redis's memory at the minute's end, MiB.
    redis_mib: f64,
    errors: u64,
}

/// Idle and total jiffies of all CPUs since boot (`/proc/stat`).
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: idle and iowait are idle.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (idle, fields.iter().take(8).sum())
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The steps 0, 1, 2, … of a series of `n` values (its clock).
fn steps(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

/// Sums of the centred cross and squared terms of `a` and `b` (over their common length):
/// (Σ da·db, Σ da², Σ db²); `None` below two values.
fn co_moments(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    let n = a.len().min(b.len());
    if n < 2 {
        return None;
    }
    let (a, b) = (&a[..n], &b[..n]);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n as f64;
    let (ma, mb) = (mean(a), mean(b));
    Some(
        a.iter()
            .zip(b)
            .fold((0.0, 0.0, 0.0), |(ab, aa, bb), (x, y)| {
                let (dx, dy) = (x - ma, y - mb);
                (ab + dx * dy, aa + dx * dx, bb + dy * dy)
            }),
    )
}

/// Least-squares slope of `values` per step.
fn slope(values: &[f64]) -> f64 {
    co_moments(&steps(values.len()), values).map_or(0.0, |(xy, xx, _)| xy / xx)
}

/// Pearson correlation of `a` and `b` (0 when either is constant or they are shorter than 2).
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    match co_moments(a, b) {
        Some((ab, aa, bb)) if aa > 0.0 && bb > 0.0 => ab / (aa * bb).sqrt(),
        _ => 0.0,
    }
}

/// Largest rise of the typical per-minute tick-commit p99 from the first window to the last.
const P99_DRIFT_LIMIT_PCT: f64 = 50.0;
/// Largest per-minute p99 as a multiple of the run's median per-minute p99.
const P99_SPREAD_LIMIT: f64 = 4.0;

/// A per-minute series judged by windows: the median of its first `window` values against
/// that of its last (growth or drift), and its largest value against its median (a stall).
/// The RSS verdict reads the first; "p99 stable" reads both.
#[derive(Debug, Clone, Copy)]
struct Windows {
    first: f64,
    last: f64,
    median: f64,
    max: f64,
}

impl Windows {
    fn of(values: &[f64], window: usize) -> Self {
        let w = window.min(values.len());
        Windows {
            first: median(&values[..w]),
            last: median(&values[values.len() - w..]),
            median: median(values),
            max: values.iter().copied().fold(0.0, f64::max),
        }
    }

    /// The last window's median against the first's, in per cent.
    fn drift_pct(&self) -> f64 {
        if self.first > 0.0 {
            (self.last - self.first) / self.first * 100.0
        } else {
            0.0
        }
    }

    /// The largest value as a multiple of the median.
    fn spread(&self) -> f64 {
        if self.median > 0.0 {
            self.max / self.median
        } else {
            0.0
        }
    }

    /// "p99 stable" for a series of per-minute p99s: no drift past +50 %, no minute above
    /// four times the median minute.
    fn p99_stable(&self) -> bool {
        self.drift_pct() <= P99_DRIFT_LIMIT_PCT && self.spread() <= P99_SPREAD_LIMIT
    }
}

pub fn run(args: SoakArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(soak(args))
}

async fn soak(args: SoakArgs) -> Result<()> {
    let url = crate::pg::fresh_database(&args.url, "christmas_bench_soak").await?;
    let spool = std::env::temp_dir().join(format!("christmas-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&spool);
    let (http_port, tcp_port) = (free_port()?, free_port()?);
    let log_path = std::env::temp_dir().join("christmas-soak-daemon.log");
    let log_file = std::fs::File::create(&log_path)?;
    let mut daemon: Child = Command::new(daemon_binary()?)
        .args([
            "serve",
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
            "--tcp-addr",
            &format!("127.0.0.1:{tcp_port}"),
        ])
        .env("DATABASE_URL", &url)
        // The bench's own Redis database, emptied afterwards.
        .env("REDIS_URL", crate::services::bench_redis(&args.redis_url))
        .env("CHRISTMAS_SPOOL_DIR", &spool)
        .env("RUST_LOG", "warn")
        .env_remove("CHRISTMAS_CONFIG")
        // stderr too: a panic, or the allocator's statistics at exit, land in the log.
        .stdout(Stdio::from(log_file.try_clone()?))
        .stderr(Stdio::from(log_file))
        .spawn()
        .context("starting christmas-ingest")?;
    let pid = daemon.id();
    let (http, tcp) = (
        format!("127.0.0.1:{http_port}"),
        format!("127.0.0.1:{tcp_port}"),
    );
    let started = Instant::now();
    while TcpStream::connect(&tcp).await.is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = daemon.kill();
            bail!("the daemon did not start; see {}", log_path.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The ceiling: as fast as the daemon takes ticks (acks at `accepted` keep the pipe full;
    // the rate is what it committed, read from its counters).
    println!(
        "soak: measuring the ceiling for {} s",
        args.calibrate_seconds
    );
    let committed_total = |text: &str| metric_sum(text, "christmas_rows_committed_total");
    // The counters the soak reports differences of, in this order: rows and batches
    // committed, fan-out ticks published, messages, ticks dropped.
    let totals = |text: &str| {
        [
            "christmas_rows_committed_total",
            "christmas_batches_committed_total",
            "christmas_fanout_published_total",
            "christmas_fanout_messages_total",
            "christmas_fanout_dropped_total",
        ]
        .map(|name| metric_sum(text, name))
    };
    let since = |before: [f64; 5], after: [f64; 5]| -> [f64; 5] {
        std::array::from_fn(|i| after[i] - before[i])
    };
    let cal_before = totals(&get(&http, "/metrics").await?);
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(TickStats::default());
    let cal = tokio::spawn(send_ticks(
        tcp.clone(),
        0,
        args.symbols,
        AckLevel::Accepted,
        stats.clone(),
        stop.clone(),
        Arc::new(AtomicI64::new(0)),
    ));
    let warm_up = args.calibrate_seconds / 3;
    let measured = (args.calibrate_seconds - warm_up).max(1);
    tokio::time::sleep(Duration::from_secs(warm_up)).await;
    let before = committed_total(&get(&http, "/metrics").await?);
    tokio::time::sleep(Duration::from_secs(measured)).await;
    let after = committed_total(&get(&http, "/metrics").await?);
    stop.store(true, Ordering::SeqCst);
    cal.await??;
    let ceiling = (after - before) / measured as f64;
    let rate = args.rate.unwrap_or((ceiling * args.load) as u64);
    println!(
        "soak: ceiling {ceiling:.0} ticks/s; soaking at {rate} ticks/s and {} orders/s for {} min",
        args.orders_per_second, args.minutes
    );
    // The calibration's backlog (rings, spool) drains before the soak starts.
    let mut last = -1.0;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = committed_total(&get(&http, "/metrics").await?);
        if now == last {
            break;
        }
        last = now;
    }
    // Whether the fan-out kept up with the ceiling: a full fan-out queue drops its oldest
    // batches, so a ceiling with drops is above what fan-out and PostgreSQL sustain together.
    let drained = totals(&get(&http, "/metrics").await?);
    let [_, _, cal_published, _, cal_dropped] = since(cal_before, drained);
    println!("soak: fan-out during the ceiling: {cal_published:.0} ticks published, {cal_dropped:.0} dropped");
    // From here on, the same counters say what each commit and each fan-out message carried
    // during the soak: the per-commit and per-message costs are what a longer linger or
    // larger messages save.

    // The calibration's ticks went to today's partition, which minute RETAINED_DAYS truncates.
    let db = crate::pg::connect(&url).await?;
    // Its WAL is checkpointed now rather than by a checkpoint running into the first minutes.
    let checkpointed = match db.batch_execute("CHECKPOINT").await {
        Ok(()) => "then a `CHECKPOINT`",
        Err(e) => {
            println!(
                "soak: no CHECKPOINT after the ceiling ({e}); the first minutes may share one"
            );
            "no `CHECKPOINT` (refused)"
        }
    };
    let day_offset = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ticks = Arc::new(TickStats::default());
    let orders = Arc::new(OrderStats::default());
    *ticks.latency_us.lock().unwrap() = Some(histogram());
    *orders.latency_us.lock().unwrap() = Some(histogram());
    let tick_task = tokio::spawn(send_ticks(
        tcp.clone(),
        rate,
        args.symbols,
        AckLevel::Committed,
        ticks.clone(),
        stop.clone(),
        day_offset.clone(),
    ));
    let order_task = tokio::spawn(send_orders(
        http.clone(),
        args.orders_per_second,
        orders.clone(),
        stop.clone(),
    ));
    let worker = Arc::new(WorkerStats::default());
    let worker_task = tokio::spawn({
        let (redis, url, worker, stop) = (
            crate::services::bench_redis(&args.redis_url),
            url.clone(),
            worker.clone(),
            stop.clone(),
        );
        let on = args.order_worker;
        async move {
            if on {
                work_orders(redis, url, worker, stop).await
            } else {
                Ok(())
            }
        }
    });
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let sampler = {
        let (samples, stop, http) = (samples.clone(), stop.clone(), http.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            while !stop.load(Ordering::Relaxed) {
                every.tick().await;
                let s = sample(pid, &http).await;
                samples.lock().unwrap().push(s);
            }
        })
    };
    let soak_started = Instant::now();
    let mut jiffies = cpu_jiffies();
    let mut minutes = Vec::new();
    let (mut last_ticks, mut last_orders) = (0u64, 0u64);
    let mut truncated = 0u64;
    let mut minute_started = Instant::now();
    for m in 1..=args.minutes {
        tokio::time::sleep(Duration::from_secs(60).saturating_sub(minute_started.elapsed())).await;
        let secs = minute_started.elapsed().as_secs_f64();
        minute_started = Instant::now();
        let th = ticks.latency_us.lock().unwrap().replace(histogram());
        let oh = orders.latency_us.lock().unwrap().replace(histogram());
        let (t, o) = (
            ticks.committed.load(Ordering::Relaxed),
            orders.created.load(Ordering::Relaxed),
        );
        let errors = ticks.errors.load(Ordering::Relaxed) + orders.errors.load(Ordering::Relaxed);
        let taken = std::mem::take(&mut *samples.lock().unwrap());
        let now = cpu_jiffies();
        let idle_pct = (now.0 - jiffies.0) as f64 / (now.1 - jiffies.1).max(1) as f64 * 100.0;
        jiffies = now;
        let of = |f: fn(&Sample) -> f64| median(&taken.iter().map(f).collect::<Vec<_>>());
        let row = Minute {
            minute: m,
            ticks_per_s: (t - last_ticks) as f64 / secs,
            tick_p50_ms: th
                .as_ref()
                .map_or(0.0, |h| h.value_at_quantile(0.5) as f64 / 1e3),
            tick_p99_ms: th
                .as_ref()
                .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1e3),
            orders_per_s: (o - last_orders) as f64 / secs,
            order_p99_ms: oh
                .as_ref()
                .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1e3),
            rss_median_mib: of(|s| s.rss_mib),
            rss_max_mib: taken.iter().map(|s| s.rss_mib).fold(0.0, f64::max),
            anon_median_mib: of(|s| s.anon_mib),
            threads_max: taken.iter().map(|s| s.threads).fold(0.0, f64::max),
            in_flight_median: of(|s| s.in_flight_rows),
            fanout_queue_median: of(|s| s.fanout_queue),
            order_queue_median: of(|s| s.order_queue),
            idle_pct,
            redis_mib: crate::services::redis_used_mib(&args.redis_url).unwrap_or(0.0),
            errors,
        };
        println!("  {row:?}");
        (last_ticks, last_orders) = (t, o);
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
        day_offset.store(next, Ordering::Relaxed);
        if tick_task.is_finished()
            || order_task.is_finished()
            || (args.order_worker && worker_task.is_finished())
        {
            break;
        }
    }
    let [rows, commits, published, messages, _] =
        since(drained, totals(&get(&http, "/metrics").await?));
    let soak_secs = soak_started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    sampler.await?;
    let tick_result = tick_task.await?;
    let order_result = order_task.await?;
    let worker_result = worker_task.await?;
    if args.order_worker {
        // The daemon trims every 10 s below what the worker acknowledged: let one pass run.
        tokio::time::sleep(Duration::from_secs(11)).await;
    }
    let events_left = crate::services::bench_redis_xlen(&args.redis_url, "orders:events");
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = daemon.wait()?;
    tick_result?;
    order_result?;
    worker_result.context("the order worker")?;
    let (created, filled, acked) = (
        orders.created.load(Ordering::Relaxed),
        worker.filled.load(Ordering::Relaxed),
        worker.acked.load(Ordering::Relaxed),
    );
    let events_left = events_left.map_or("?".into(), |n| n.to_string());
    let events = if args.order_worker {
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
    };
    println!("soak: order events {events}");
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let log_errors = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .count();
    let _ = std::fs::remove_dir_all(&spool);
    crate::services::clear_bench_redis_keys(&args.redis_url, "md:*")?;
    crate::services::clear_bench_redis(&args.redis_url)?;
    if minutes.len() < 2 {
        bail!("the soak stopped after {} minute(s)", minutes.len());
    }

    // Verdict: after the first minute (warm-up: pools, caches, histograms fill), the last
    // window's median RSS against the first window's.
    let medians: Vec<f64> = minutes[1..].iter().map(|m| m.rss_median_mib).collect();
    let window = (medians.len() / 2).clamp(1, 5);
    let rss = Windows::of(&medians, window);
    let (base, end, growth) = (rss.first, rss.last, rss.drift_pct());
    let peak = minutes[1..]
        .iter()
        .map(|m| m.rss_max_mib)
        .fold(0.0, f64::max);
    let peak_pct = (peak - base) / base * 100.0;
    let mib_per_hour = slope(&medians) * 60.0;
    let anon: Vec<f64> = minutes[1..].iter().map(|m| m.anon_median_mib).collect();
    let anon_per_hour = slope(&anon) * 60.0;
    // What the medians follow: the clock (a leak, or an allocator that keeps what it
    // freed) or the rows in flight (backlog that is freed when it drains).
    let clock = steps(medians.len());
    let in_flight: Vec<f64> = minutes[1..].iter().map(|m| m.in_flight_median).collect();
    let (with_clock, with_flight) = (
        correlation(&medians, &clock),
        correlation(&medians, &in_flight),
    );
    let p99s: Vec<f64> = minutes[1..].iter().map(|m| m.tick_p99_ms).collect();
    let p99 = Windows::of(&p99s, window);
    let (p99_min, p99_max) = (p99s.iter().copied().fold(f64::MAX, f64::min), p99.max);
    let errors = minutes.last().map_or(0, |m| m.errors);
    let rss_flat = growth <= 10.0;
    let verdict =
        rss_flat && p99.p99_stable() && errors == 0 && log_errors == 0 && status.success();
    let stamp = machine::utc_now();
    let mut table = String::from(
        "| minute | ticks/s | tick commit p50 / p99 | orders/s | order p99 | daemon RSS median / max | RssAnon median | rows in flight | fan-out / order queue | threads | machine idle | Redis memory |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for m in &minutes {
        table.push_str(&format!(
            "| {} | {:.0} | {:.1} / {:.1} ms | {:.0} | {:.1} ms | {:.0} / {:.0} MiB | {:.0} MiB | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} % | {:.0} MiB |\n",
            m.minute,
            m.ticks_per_s,
            m.tick_p50_ms,
            m.tick_p99_ms,
            m.orders_per_s,
            m.order_p99_ms,
            m.rss_median_mib,
            m.rss_max_mib,
            m.anon_median_mib,
            m.in_flight_median,
            m.fanout_queue_median,
            m.order_queue_median,
            m.threads_max,
            m.idle_pct,
            m.redis_mib
        ));
    }
    let flags = format!(
        "{}{}",
        args.rate.map_or(String::new(), |r| format!(" --rate {r}")),
        if args.order_worker {
            " --order-worker"
        } else {
            ""
        }
    );
    let body = format!(
        "## soak — the daemon for {mins} minutes at {load:.0} % of its ceiling, with fan-out, spool and orders\n\n\
         {stamp} · `./target/release/christmas-bench soak --minutes {mins}{flags}` · {machine}\n\n\
         The release `christmas-ingest` with Redis fan-out (JSON), `spool_dir` (fsync per batch), \
         order events on and {events}, and a linger of {linger}. Ceiling measured first in the same run: **{ceiling:.0} ticks/s** over TCP \
         ({cal} s as fast as it takes them, the rate committed over the last {measured} s; \
         the fan-out published {cal_published:.0} of its ticks and dropped {cal_dropped:.0}; \
         {checkpointed}); soak at **{rate} ticks/s** in `ack=committed` frames \
         of 1,000 (latency = frame sent → ack) plus {opr} orders/s over HTTP. Retention as a \
         deployment runs it: each minute's ticks go to the next of {RETAINED_DAYS} daily partitions \
         in turn, and the partition a minute is about to fill is truncated first ({truncated} \
         truncations), so the store holds about {RETAINED_DAYS} minutes of ticks instead of \
         growing past this machine's disk. Over the soak the daemon committed {commits_per_s:.0} \
         batches/s of {rows_per_commit:.0} rows on average (trades and quotes, 2 shards each), and \
         its fan-out sent {messages_per_s:.0} messages/s of {ticks_per_message:.1} ticks.\n\n{table}\n\
         RSS is sampled once a second. Verdict: median RSS of minutes 2–{w1} {base:.0} MiB, of the \
         last {window} minutes {end:.0} MiB (**{growth:+.1} %**, limit +10 %); slope of the \
         per-minute medians {mib_per_hour:+.1} MiB/hour ({anon_per_hour:+.1} MiB/hour for RssAnon); \
         their correlation with the clock {with_clock:+.2} and with the rows in flight \
         {with_flight:+.2}; largest sample {peak:.0} MiB \
         ({peak_pct:+.1} %, memory in flight): RSS **{rss_word}**. Tick commit p99 between \
         {p99_min:.1} and {p99_max:.1} ms over minutes 2–{n}; the median of its per-minute values \
         {p99_base:.0} ms over minutes 2–{w1} and {p99_end:.0} ms over the last {window} \
         ({p99_drift:+.0} %, limit +{P99_DRIFT_LIMIT_PCT:.0} %); the worst minute \
         {p99_spread:.1}× the median of all ({p99_median:.0} ms; limit {P99_SPREAD_LIMIT:.0}×): \
         p99 **{p99_word}**. Errors: {errors} from the clients, {log_errors} ERROR lines in the daemon's log; daemon \
         exit on SIGTERM: {status}. **{pass}**.\n",
        mins = args.minutes,
        load = rate as f64 / ceiling.max(1.0) * 100.0,
        linger = match std::env::var("CHRISTMAS_LINGER_MS") {
            Ok(ms) => format!("{ms} ms (`CHRISTMAS_LINGER_MS`)"),
            Err(_) => format!(
                "{} ms (its default)",
                christmas_ingest::config::DaemonConfig::default().linger_ms
            ),
        },
        commits_per_s = commits / soak_secs,
        rows_per_commit = rows / commits.max(1.0),
        messages_per_s = messages / soak_secs,
        ticks_per_message = published / messages.max(1.0),
        machine = machine::describe_with_servers(),
        cal = args.calibrate_seconds,
        opr = args.orders_per_second,
        n = minutes.len(),
        w1 = window + 1,
        pass = if verdict { "pass" } else { "FAIL" },
        rss_word = if rss_flat { "flat" } else { "grew" },
        p99_word = if p99.p99_stable() { "stable" } else { "not stable" },
        p99_base = p99.first,
        p99_end = p99.last,
        p99_drift = p99.drift_pct(),
        p99_spread = p99.spread(),
        p99_median = p99.median,
    );
    report::update_results("soak", &body)?;
    let json = format!(
        r#"{{"stamp":"{stamp}","ceiling_ticks_per_s":{ceiling:.0},"rate":{rate},"ceiling_fanout_dropped":{cal_dropped:.0},"rss_growth_pct":{growth:.2},"rss_peak_pct":{peak_pct:.2},"rss_mib_per_hour":{mib_per_hour:.2},"anon_mib_per_hour":{anon_per_hour:.2},"rss_corr_clock":{with_clock:.2},"rss_corr_in_flight":{with_flight:.2},"p99_min_ms":{p99_min:.2},"p99_max_ms":{p99_max:.2},"p99_drift_pct":{:.2},"p99_spread":{:.2},"p99_stable":{},"rows_per_commit":{:.0},"ticks_per_message":{:.1},"errors":{errors},"log_errors":{log_errors},"pass":{verdict}}}"#,
        p99.drift_pct(),
        p99.spread(),
        p99.p99_stable(),
        rows / commits.max(1.0),
        published / messages.max(1.0),
    );
    report::write_json("soak", &stamp, &json)?;
    println!("{body}");
    if !verdict {
        bail!("the soak failed its verdict");
    }
    Ok(())
}

async fn get(addr: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: soak\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::{correlation, median, metric_sum, slope, Windows};

    #[test]
    fn p99_stability_catches_drift_and_stalls() {
        // Flat with noise: stable.
        let flat = [
            300.0, 350.0, 320.0, 400.0, 310.0, 330.0, 360.0, 340.0, 300.0, 350.0,
        ];
        let s = Windows::of(&flat, 5);
        assert_eq!((s.first, s.last), (320.0, 340.0));
        assert!(s.p99_stable(), "{s:?}");
        // The typical p99 doubles by the end: drift.
        let drift = [
            300.0, 310.0, 320.0, 300.0, 310.0, 600.0, 620.0, 640.0, 610.0, 630.0,
        ];
        let s = Windows::of(&drift, 5);
        assert!(s.drift_pct() > 90.0 && !s.p99_stable(), "{s:?}");
        // One minute at ten times the rest: a stall.
        let mut stall = flat;
        stall[4] = 3_400.0;
        let s = Windows::of(&stall, 5);
        assert!(s.spread() > 9.0 && !s.p99_stable(), "{s:?}");
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn slope_of_a_line_and_of_a_flat_sawtooth() {
        assert!((slope(&[1.0, 3.0, 5.0, 7.0]) - 2.0).abs() < 1e-12);
        assert_eq!(slope(&[5.0, 9.0, 5.0, 9.0, 5.0]), 0.0);
        assert_eq!(slope(&[4.0]), 0.0);
    }

    #[test]
    fn correlation_of_lines_and_of_a_constant() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!((correlation(&x, &[2.0, 4.0, 6.0, 8.0]) - 1.0).abs() < 1e-12);
        assert!((correlation(&x, &[8.0, 6.0, 4.0, 2.0]) + 1.0).abs() < 1e-12);
        assert_eq!(correlation(&x, &[5.0; 4]), 0.0);
        assert_eq!(correlation(&[1.0], &[1.0]), 0.0);
    }

    #[test]
    fn metric_sum_adds_labelled_series_of_that_name_only() {
        let page = "# TYPE christmas_ring_depth gauge\n\
                    christmas_ring_depth{kind=\"trade\",shard=\"0\"} 3\n\
                    christmas_ring_depth{kind=\"quote\",shard=\"0\"} 4\n\
                    christmas_ring_depth_max 100\n\
                    christmas_uptime_seconds 9\n";
        assert_eq!(metric_sum(page, "christmas_ring_depth"), 7.0);
        assert_eq!(metric_sum(page, "christmas_uptime_seconds"), 9.0);
        assert_eq!(metric_sum(page, "christmas_missing"), 0.0);
    }
}
