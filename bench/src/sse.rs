//! Scenario `sse`: many `GET /api/stream` subscribers on loopback while the engine ingests
//! a synthetic market at a fixed, bounded rate. Measures what the subscribers received
//! (every one gap-free or told of its gap by a `gap` event), that stalled subscribers are
//! dropped while the others keep up, and the engine's committed rate with the subscribers
//! against the same run without any (the ratio: the feed must not slow ingest). By default
//! the daemon runs on one core and the subscribers on another, in both runs (`--no-pin`
//! shares them), so the ratio shows what serving the feed costs the daemon rather than
//! what the bench's own clients cost.
//!
//! Not part of `all` (it holds a thousand connections and both cores for a minute):
//! `christmas-bench sse [--quick]`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use christmas_core::synthetic::SyntheticMarket;
use christmas_core::Symbol;
use christmas_ingest::config::{DaemonConfig, HttpSettings};
use christmas_tests::InProcessDaemon;
use core_affinity::CoreId;
use memchr::memmem;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::args::CommonArgs;
use crate::run::{runtime, say, Headline, Outcome, RunContext, Target};
use crate::services;

/// Flags of `christmas-bench sse`.
#[derive(Debug, Clone, clap::Args)]
pub struct SseArgs {
    /// Databases, Redis, `--quick`.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Subscribers that read.
    #[arg(long, default_value_t = 1_000)]
    pub subscribers: usize,
    /// Subscribers that never read (each must be dropped).
    #[arg(long, default_value_t = 2)]
    pub stalled: usize,
    /// Ticks/s offered to the engine.
    #[arg(long, default_value_t = 200_000)]
    pub rate: u64,
    /// Seconds of each run.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Symbols in the market.
    #[arg(long, default_value_t = 500)]
    pub symbols: usize,
    /// Symbols each subscriber watches.
    #[arg(long, default_value_t = 2)]
    pub symbols_per_subscriber: usize,
    /// Let the daemon and the subscribers run on any core. By default (with 2 cores or
    /// more) the daemon's runtime, the engine's threads and the tick driver run on the
    /// first core and the reading subscribers on the last, in both runs.
    #[arg(long)]
    pub no_pin: bool,
}

/// The cores the run is pinned to.
#[derive(Debug, Clone, Copy)]
struct Cores {
    daemon: CoreId,
    clients: CoreId,
}

/// The first and last core this process may use, unless `--no-pin` or only one.
fn cores(args: &SseArgs) -> Option<Cores> {
    if args.no_pin {
        return None;
    }
    let ids = core_affinity::get_core_ids()?;
    match (ids.first(), ids.last()) {
        (Some(&daemon), Some(&clients)) if ids.len() >= 2 => Some(Cores { daemon, clients }),
        _ => None,
    }
}

/// The daemon's two-worker runtime (as [`runtime`]), its threads pinned to `core`.
fn daemon_runtime(core: Option<CoreId>) -> Result<tokio::runtime::Runtime> {
    let Some(core) = core else {
        return runtime();
    };
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            core_affinity::set_for_current(core);
        })
        .build()?)
}

/// What one subscriber saw.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    ticks: u64,
    events: u64,
    /// Sequence jumps announced by a `gap` event first.
    told_gaps: u64,
    /// Sequence jumps nobody announced: must stay 0.
    silent_gaps: u64,
    /// Tick events whose `id` does not hold the position their data ends at: must stay 0.
    bad_ids: u64,
    /// Tick events the byte scan could not read (no symbol, `first_seq` or tick): must
    /// stay 0, or the checks above missed them.
    unreadable: u64,
    dropped: bool,
}

/// Where a subscriber stands in one symbol: the last sequence of each kind (trade, quote)
/// and whether a `gap` event announced the next jump.
struct Position {
    symbol: Vec<u8>,
    last: [u64; 2],
    told: [bool; 2],
}

/// Reads the stream of `symbols` until `stop`, checking sequences and ids. HTTP/1.0, so
/// the body is the raw event text up to the end of the connection (no chunk framing to
/// undo). Events are checked by scanning their bytes, not by parsing their JSON: a
/// thousand of these share one core, and what they cost is charged to the run.
async fn subscriber(
    addr: SocketAddr,
    symbols: Vec<Symbol>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Seen> {
    let mut s = TcpStream::connect(addr).await?;
    let names: Vec<&str> = symbols.iter().map(|s| s.as_str()).collect();
    let req = format!(
        "GET /api/stream?symbols={} HTTP/1.0\r\n\r\n",
        names.join(",")
    );
    s.write_all(req.as_bytes()).await?;
    let mut seen = Seen::default();
    let mut positions: Vec<Position> = symbols
        .iter()
        .map(|s| Position {
            symbol: s.as_str().as_bytes().to_vec(),
            last: [0; 2],
            told: [false; 2],
        })
        .collect();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut head_done = false;
    loop {
        if buf.capacity() - buf.len() < 8 << 10 {
            buf.reserve(1 << 16);
        }
        let n = tokio::select! {
            r = s.read_buf(&mut buf) => r?,
            _ = stop.wait_for(|s| *s) => break,
        };
        if n == 0 {
            break;
        }
        let mut start = 0;
        if !head_done {
            let Some(end) = memmem::find(&buf, b"\r\n\r\n") else {
                continue;
            };
            start = end + 4;
            head_done = true;
        }
        while let Some(end) = memmem::find(&buf[start..], b"\n\n") {
            event(&buf[start..start + end], &mut seen, &mut positions);
            start += end + 2;
        }
        buf.drain(..start);
    }
    Ok(seen)
}

/// The string after `key` (which ends with the opening quote), up to its closing quote.
fn string_after<'a>(data: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let from = memmem::find(data, key)? + key.len();
    let len = memchr::memchr(b'"', &data[from..])?;
    Some(&data[from..from + len])
}

/// The unsigned integer at the start of `b`.
fn number(b: &[u8]) -> Option<u64> {
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    std::str::from_utf8(&b[..digits]).ok()?.parse().ok()
}

/// The sequence of kind `k` (0 trade, 1 quote) the id `SYM:trade:quote,…` gives `symbol`.
fn id_position(id: &[u8], symbol: &[u8], k: usize) -> Option<u64> {
    let entry = id
        .split(|&b| b == b',')
        .find_map(|e| e.strip_prefix(symbol)?.strip_prefix(b":"))?;
    let mut seqs = entry.split(|&b| b == b':');
    let trade = seqs.next()?;
    let quote = seqs.next()?;
    number(if k == 0 { trade } else { quote })
}

/// Accounts one event block.
fn event(block: &[u8], seen: &mut Seen, positions: &mut [Position]) {
    let (mut id, mut name, mut data): (&[u8], &[u8], &[u8]) = (b"", b"", b"");
    for line in block.split(|&b| b == b'\n') {
        if let Some(v) = line.strip_prefix(b"id: ") {
            id = v;
        } else if let Some(v) = line.strip_prefix(b"event: ") {
            name = v;
        } else if let Some(v) = line.strip_prefix(b"data: ") {
            data = v;
        }
    }
    seen.events += 1;
    match name {
        b"trade" | b"quote" => {
            let k = usize::from(name == b"quote");
            // Every trade and quote has one `time_ns`; the message's own fields do not.
            let n = memmem::find_iter(data, b"\"time_ns\":").count() as u64;
            let first =
                memmem::find(data, b"\"first_seq\":").and_then(|at| number(&data[at + 12..]));
            let symbol = string_after(data, b"\"symbol\":\"");
            let p = symbol.and_then(|s| positions.iter_mut().find(|p| p.symbol == s));
            let (Some(first), Some(p), true) = (first, p, n > 0) else {
                seen.unreadable += 1;
                return;
            };
            let last = first + n - 1;
            seen.ticks += n;
            if p.last[k] > 0 && first != p.last[k] + 1 {
                if p.told[k] {
                    seen.told_gaps += 1;
                } else {
                    seen.silent_gaps += 1;
                }
            }
            p.last[k] = last;
            p.told[k] = false;
            if id_position(id, &p.symbol, k) != Some(last) {
                seen.bad_ids += 1;
            }
        }
        b"gap" => {
            let symbol = string_after(data, b"\"symbol\":\"");
            let k = usize::from(string_after(data, b"\"kind\":\"") == Some(b"quote"));
            if let Some(p) = symbol.and_then(|s| positions.iter_mut().find(|p| p.symbol == s)) {
                p.told[k] = true;
            }
        }
        b"dropped" => seen.dropped = true,
        _ => {}
    }
}

/// What each reading subscriber saw, and their thread's CPU time.
type ReadersDone = Result<(Vec<Seen>, Duration)>;

/// Starts the reading subscribers on a thread of their own with a current-thread runtime,
/// pinned to `core` when given; the answer comes once `stop` is set and all returned,
/// with the thread's CPU time.
fn spawn_readers(
    addr: SocketAddr,
    subscriptions: Vec<Vec<Symbol>>,
    stop: tokio::sync::watch::Receiver<bool>,
    core: Option<CoreId>,
) -> Result<oneshot::Receiver<ReadersDone>> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("sse-readers".into())
        .spawn(move || {
            if let Some(c) = core {
                core_affinity::set_for_current(c);
            }
            let read = || -> Result<Vec<Seen>> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let tasks: Vec<_> = subscriptions
                        .into_iter()
                        .map(|s| tokio::spawn(subscriber(addr, s, stop.clone())))
                        .collect();
                    let mut seen = Vec::with_capacity(tasks.len());
                    for t in tasks {
                        seen.push(t.await??);
                    }
                    Ok(seen)
                })
            };
            let _ = tx.send(read().map(|seen| (seen, thread_cpu())));
        })?;
    Ok(rx)
}

/// CPU time of the calling thread so far (`/proc/thread-self/schedstat`; zero if absent).
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// A subscriber that never reads (a 4 KiB receive buffer); at the end, whether the stream
/// ended with `event: dropped`.
async fn stalled(addr: SocketAddr, symbols: Vec<Symbol>) -> Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4_096)?;
    let mut s = socket.connect(addr).await?;
    let names: Vec<&str> = symbols.iter().map(|s| s.as_str()).collect();
    let req = format!(
        "GET /api/stream?symbols={} HTTP/1.0\r\n\r\n",
        names.join(",")
    );
    s.write_all(req.as_bytes()).await?;
    Ok(s)
}

async fn was_dropped(mut s: TcpStream) -> bool {
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all)).await;
    read.is_ok() && String::from_utf8_lossy(&all).contains("event: dropped")
}

/// The market of this run: `E<pid>_0000`… so nothing else publishing reaches the bench.
fn market(symbols: usize) -> SyntheticMarket {
    let tag = std::process::id() % 100_000;
    let names = (0..symbols.max(1))
        .map(|i| Symbol::new(&format!("E{tag}_{i:04}")).expect("a short ASCII symbol is valid"))
        .collect();
    SyntheticMarket::with_symbols(7, names)
}

/// Pushes trades at `rate` for `seconds` into the daemon's engine; the committed rate.
async fn drive(daemon: &InProcessDaemon, rate: u64, seconds: u64, symbols: usize) -> Result<f64> {
    let ingress = &daemon.state().ingress;
    let before = ingress.metrics().trades.rows_committed();
    let mut market = market(symbols);
    let start = Instant::now();
    let run = Duration::from_secs(seconds);
    let mut sent = 0u64;
    let mut batch = Vec::with_capacity(4_096);
    while start.elapsed() < run {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            batch.clear();
            let n = (due - sent).min(4_096);
            batch.extend((0..n).map(|_| market.next_trade()));
            ingress
                .trades()
                .context("the daemon's ingress takes trades")?
                .push_batch(&batch)?;
            sent += n;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Committed by the end of the run plus one linger: what the engine kept up with.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let committed = ingress.metrics().trades.rows_committed() - before;
    Ok(committed as f64 / start.elapsed().as_secs_f64())
}

fn config(pg: &str, redis: &str) -> DaemonConfig {
    DaemonConfig {
        database_url: Some(pg.to_string().into()),
        redis_url: Some(redis.to_string().into()),
        http: HttpSettings {
            max_connections: 4_096,
            // Every load-generating connection comes from loopback.
            max_connections_per_address: 0,
            ..HttpSettings::default()
        },
        ..DaemonConfig::default()
    }
}

/// Runs the scenario.
pub fn run(ctx: &RunContext, mut args: SseArgs) -> Result<Outcome> {
    if args.common.plan(ctx.quick, 1) {
        args.seconds = args.seconds.min(5);
        args.subscribers = args.subscribers.min(200);
    }
    let cores = cores(&args);
    // On a thread of its own, so pinning it (for `block_on` and the threads the engine
    // starts from it) leaves the caller's thread as it was.
    let measured = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if let Some(c) = cores {
                    core_affinity::set_for_current(c.daemon);
                }
                measure(ctx, &args, cores)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the sse run panicked"))?
    })?;
    report(ctx, &args, cores, measured)
}

/// What the two runs measured.
struct Measured {
    alone: f64,
    with: f64,
    seen: Vec<Seen>,
    dropped: usize,
    peak: u64,
    readers_cpu: Duration,
}

fn measure(ctx: &RunContext, args: &SseArgs, cores: Option<Cores>) -> Result<Measured> {
    let bar = ctx.steps("sse", 2);
    let rt = daemon_runtime(cores.map(|c| c.daemon))?;
    let redis = services::bench_redis(args.common.services.redis()?);
    let pg = rt.block_on(crate::pg::fresh_database(
        &args.common.services.url,
        "christmas_bench_sse",
    ))?;

    bar.set_message("without subscribers");
    let alone = rt.block_on(async {
        let d = InProcessDaemon::start(config(&pg, &redis), false).await?;
        let r = drive(&d, args.rate, args.seconds, args.symbols).await;
        d.stop().await?;
        r
    })?;
    say(
        &bar,
        format!("sse: {alone:.0} ticks/s committed without subscribers"),
    );
    bar.inc(1);

    bar.set_message(format!("{} subscribers", args.subscribers));
    let m = rt.block_on(with_subscribers(args, &pg, &redis, alone, cores))?;
    bar.inc(1);
    bar.finish_and_clear();
    Ok(m)
}

/// The run with subscribers: committed rate, each reader's view, stalled ones dropped, and
/// the clients the feed counted while the run was on.
async fn with_subscribers(
    args: &SseArgs,
    pg: &str,
    redis: &str,
    alone: f64,
    cores: Option<Cores>,
) -> Result<Measured> {
    let d = InProcessDaemon::start(config(pg, redis), false).await?;
    let addr = d.http();
    let names = market(args.symbols).symbols().to_vec();
    let pick = |i: usize| -> Vec<Symbol> {
        (0..args.symbols_per_subscriber.max(1))
            .map(|j| names[(i * args.symbols_per_subscriber + j) % names.len()])
            .collect()
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let readers = spawn_readers(
        addr,
        (0..args.subscribers).map(pick).collect(),
        stop_rx,
        cores.map(|c| c.clients),
    )?;
    let mut stalls = Vec::new();
    for i in 0..args.stalled {
        // The most popular symbols: the fastest to fill a buffer.
        stalls.push(stalled(addr, vec![names[i % names.len()]]).await?);
    }
    let feed = d
        .state()
        .stream
        .clone()
        .context("the daemon has no live feed")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while feed.counters.clients.load(Ordering::Relaxed) < (args.subscribers + args.stalled) as u64 {
        anyhow::ensure!(Instant::now() < deadline, "subscribers did not all connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = feed.counters.clients.load(Ordering::Relaxed);
    let with = drive(&d, args.rate, args.seconds, args.symbols).await?;
    // Let the last messages reach the readers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let (seen, readers_cpu) = readers.await.context("the readers' thread ended")??;
    let mut dropped = 0;
    for s in stalls {
        dropped += usize::from(was_dropped(s).await);
    }
    d.stop().await?;
    Ok(Measured {
        alone,
        with,
        seen,
        dropped,
        peak,
        readers_cpu,
    })
}

fn report(ctx: &RunContext, args: &SseArgs, cores: Option<Cores>, m: Measured) -> Result<Outcome> {
    let Measured {
        alone,
        with,
        seen,
        dropped,
        peak,
        readers_cpu,
    } = m;
    let ticks: u64 = seen.iter().map(|s| s.ticks).sum();
    let per_s = ticks as f64 / args.seconds as f64;
    let gap_free = seen
        .iter()
        .filter(|s| s.told_gaps + s.silent_gaps == 0 && !s.dropped)
        .count();
    let told = seen.iter().filter(|s| s.told_gaps > 0 || s.dropped).count();
    let silent: u64 = seen.iter().map(|s| s.silent_gaps).sum();
    let bad_ids: u64 = seen.iter().map(|s| s.bad_ids).sum();
    let unreadable: u64 = seen.iter().map(|s| s.unreadable).sum();
    let readers_dropped = seen.iter().filter(|s| s.dropped).count();
    let headlines = vec![
        Headline::against(
            format!(
                "committed ticks/s with {} SSE subscribers",
                args.subscribers
            ),
            with,
            "ticks/s",
            "the same offered rate without subscribers",
            alone,
        )
        .target(Target::RatioAtLeast(0.95)),
        Headline::alone("SSE ticks delivered/s (all subscribers)", per_s, "ticks/s"),
        Headline::alone(
            "unannounced gaps, wrong ids, unreadable events",
            (silent + bad_ids + unreadable) as f64,
            "events",
        )
        .target(Target::AtMost(0.0)),
        Headline::alone("stalled subscribers dropped", dropped as f64, "clients")
            .target(Target::AtLeast(args.stalled as f64)),
    ];
    let placement = match cores {
        Some(c) => format!(
            "**Pinned, in both runs**: the daemon (its two-worker runtime, the engine's threads, \
             the tick driver) on core {}, the reading subscribers (one thread, one \
             current-thread runtime) on core {}; PostgreSQL and Redis are shared services on \
             either core. So the run with subscribers charges the daemon for serving them \
             (one JSON encoding per message, shared by every client of its symbol; per client \
             an id and the socket writes) on its own core, while the subscribers' reading \
             competes with PostgreSQL and Redis on the other",
            c.daemon.id, c.clients.id
        ),
        None => "Unpinned (`--no-pin`): the daemon and the subscribers share every core, so \
                 the ratio charges the subscribers' CPU to ingest too"
            .into(),
    };
    let run_s = args.seconds as f64;
    let md = format!(
        "## sse\n\n{provenance}\n\n\
         {} subscribers (+{} stalled) of `GET /api/stream`, {} symbols each, {} ticks/s offered \
         for {} s over {} symbols, daemon and subscribers in one process on loopback; the same \
         offered load first without subscribers. {placement}. The subscribers check each \
         event by scanning its bytes (symbol, `first_seq`, ticks counted by `time_ns`, the \
         `id`'s position), not by parsing its JSON. The engine itself never waits for the feed \
         (it publishes to Redis only).\n\n\
         | figure | value |\n|---|---|\n\
         | committed ticks/s without subscribers | {alone:.0} |\n\
         | committed ticks/s with subscribers | {with:.0} (ratio {:.3}) |\n\
         | ticks delivered to subscribers | {ticks} ({per_s:.0}/s) |\n\
         | subscribers gap-free / told of a gap (gap event or dropped) | {gap_free} / {told} |\n\
         | sequence jumps no gap event announced | {silent} |\n\
         | tick events whose id disagrees with their data / unreadable | {bad_ids} / {unreadable} |\n\
         | reading subscribers dropped as slow | {readers_dropped} |\n\
         | stalled subscribers dropped | {dropped} of {} |\n\
         | feed clients counted during the run | {peak} |\n\
         | the subscribers' thread: CPU time | {:.1} s ({:.0} % of a core over the {} s run and its 2 s tail) |\n",
        args.subscribers,
        args.stalled,
        args.symbols_per_subscriber,
        args.rate,
        args.seconds,
        args.symbols,
        with / alone.max(f64::MIN_POSITIVE),
        args.stalled,
        readers_cpu.as_secs_f64(),
        100.0 * readers_cpu.as_secs_f64() / (run_s + 2.0),
        args.seconds,
        provenance = ctx.provenance(),
    );
    let outcome = Outcome {
        scenario: "sse",
        headlines,
        json: json!({
            "subscribers": args.subscribers, "stalled": args.stalled, "rate": args.rate,
            "seconds": args.seconds, "symbols": args.symbols,
            "pinned": cores.map(|c| [c.daemon.id, c.clients.id]),
            "committed_alone": alone, "committed_with": with,
            "delivered_ticks": ticks, "gap_free": gap_free, "told_of_gap": told,
            "silent_gaps": silent, "bad_ids": bad_ids, "unreadable": unreadable,
            "readers_dropped": readers_dropped,
            "stalled_dropped": dropped, "clients_peak": peak,
            "readers_cpu_s": readers_cpu.as_secs_f64(),
        }),
        charts: Vec::new(),
        markdown: String::new(),
    };
    outcome.publish(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(symbols: &[&str]) -> Vec<Position> {
        symbols
            .iter()
            .map(|s| Position {
                symbol: s.as_bytes().to_vec(),
                last: [0; 2],
                told: [false; 2],
            })
            .collect()
    }

    fn trade_event(id: &str, symbol: &str, first: u64, n: usize) -> Vec<u8> {
        let trades: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"time_ns":{i},"price":1.0,"volume":1.0,"side":"B","exchange_seq":{i}}}"#
                )
            })
            .collect();
        format!(
            "id: {id}\nevent: trade\ndata: {{\"source\":\"daemon-1\",\"symbol\":\"{symbol}\",\"kind\":\"trade\",\"first_seq\":{first},\"trades\":[{}],\"quotes\":[]}}",
            trades.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn the_byte_scan_counts_ticks_checks_ids_and_tells_gaps_apart() {
        let mut p = positions(&["AAA", "BBB"]);
        let mut seen = Seen::default();
        event(
            &trade_event("AAA:3:0,BBB:0:0", "AAA", 1, 3),
            &mut seen,
            &mut p,
        );
        event(
            &trade_event("AAA:3:0,BBB:2:0", "BBB", 1, 2),
            &mut seen,
            &mut p,
        );
        event(
            &trade_event("AAA:5:0,BBB:2:0", "AAA", 4, 2),
            &mut seen,
            &mut p,
        );
        assert_eq!((seen.ticks, seen.silent_gaps, seen.bad_ids), (7, 0, 0));
        // A jump nobody announced, and an id that does not end where the data does.
        event(
            &trade_event("AAA:9:0,BBB:2:0", "AAA", 8, 1),
            &mut seen,
            &mut p,
        );
        assert_eq!((seen.silent_gaps, seen.bad_ids), (1, 1));
        // Announced first: told, not silent.
        let gap = br#"event: gap
data: {"from":3,"kind":"trade","reason":"missed","symbol":"BBB","to":9}"#;
        event(gap, &mut seen, &mut p);
        event(
            &trade_event("AAA:8:0,BBB:10:0", "BBB", 10, 1),
            &mut seen,
            &mut p,
        );
        assert_eq!((seen.told_gaps, seen.silent_gaps, seen.bad_ids), (1, 1, 1));
        event(b"event: trade\ndata: {}", &mut seen, &mut p);
        assert_eq!(seen.unreadable, 1);
        event(b"event: dropped\ndata: {}", &mut seen, &mut p);
        assert!(seen.dropped);
    }
}
