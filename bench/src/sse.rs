//! Scenario `sse`: many `GET /api/stream` subscribers on loopback while the engine ingests
//! a synthetic market at a fixed, bounded rate. Measures what the subscribers received
//! (every one gap-free or told of its gap by a `gap` event), that stalled subscribers are
//! dropped while the others keep up, and the engine's committed rate with the subscribers
//! against the same run without any (the ratio: the feed must not slow ingest).
//!
//! Not part of `all` (it holds a thousand connections and both cores for a minute):
//! `christmas-bench sse [--quick]`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use christmas_core::synthetic::SyntheticMarket;
use christmas_core::Symbol;
use christmas_ingest::config::DaemonConfig;
use christmas_tests::InProcessDaemon;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    dropped: bool,
}

/// The fields of a tick event the subscriber checks.
#[derive(serde::Deserialize)]
struct Message {
    symbol: String,
    kind: String,
    first_seq: u64,
    #[serde(default)]
    trades: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    quotes: Vec<serde::de::IgnoredAny>,
}

/// Reads the stream of `symbols` until `stop`, checking sequences. HTTP/1.0, so the body
/// is the raw event text up to the end of the connection (no chunk framing to undo).
async fn subscriber(
    addr: SocketAddr,
    symbols: Vec<Symbol>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Seen> {
    let mut s = TcpStream::connect(addr).await?;
    let names: Vec<&str> = symbols.iter().map(|s| s.as_str()).collect();
    let req = format!(
        "GET /api/stream?symbols={} HTTP/1.0\r\n\r\n",
        names.join(",")
    );
    s.write_all(req.as_bytes()).await?;
    let mut seen = Seen::default();
    let mut last: HashMap<(String, String), (u64, bool)> = HashMap::new();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut head_done = false;
    let mut chunk = vec![0u8; 1 << 16];
    let mut stop = stop;
    loop {
        let n = tokio::select! {
            r = s.read(&mut chunk) => r?,
            _ = stop.wait_for(|s| *s) => break,
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !head_done {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            buf.drain(..end + 4);
            head_done = true;
        }
        let mut start = 0;
        while let Some(end) = buf[start..].windows(2).position(|w| w == b"\n\n") {
            let block = &buf[start..start + end];
            start += end + 2;
            event(block, &mut seen, &mut last);
        }
        buf.drain(..start);
    }
    Ok(seen)
}

/// Accounts one event block.
fn event(block: &[u8], seen: &mut Seen, last: &mut HashMap<(String, String), (u64, bool)>) {
    let text = String::from_utf8_lossy(block);
    let mut name = "";
    let mut data = "";
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event: ") {
            name = v;
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = v;
        }
    }
    seen.events += 1;
    match name {
        "trade" | "quote" => {
            let Ok(m) = serde_json::from_str::<Message>(data) else {
                return;
            };
            let n = (m.trades.len() + m.quotes.len()) as u64;
            seen.ticks += n;
            let entry = last.entry((m.symbol, m.kind)).or_insert((0, false));
            if entry.0 > 0 && m.first_seq != entry.0 + 1 {
                if entry.1 {
                    seen.told_gaps += 1;
                } else {
                    seen.silent_gaps += 1;
                }
            }
            *entry = (m.first_seq + n - 1, false);
        }
        "gap" => {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(data) {
                let key = (
                    v["symbol"].as_str().unwrap_or("").to_string(),
                    v["kind"].as_str().unwrap_or("").to_string(),
                );
                last.entry(key).or_insert((0, false)).1 = true;
            }
        }
        "dropped" => seen.dropped = true,
        _ => {}
    }
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
            ingress.trades().push_batch(&batch)?;
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
        database_url: Some(pg.to_string()),
        redis_url: Some(redis.to_string()),
        max_connections: 4_096,
        ..DaemonConfig::default()
    }
}

/// Runs the scenario.
pub fn run(ctx: &RunContext, mut args: SseArgs) -> Result<Outcome> {
    if args.common.plan(ctx.quick, 1) {
        args.seconds = args.seconds.min(5);
        args.subscribers = args.subscribers.min(200);
    }
    let bar = ctx.steps("sse", 2);
    let rt = runtime()?;
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
    let (with, seen, dropped, clients_at_peak) =
        rt.block_on(with_subscribers(&args, &pg, &redis))?;
    bar.inc(1);
    bar.finish_and_clear();
    report(&args, alone, with, &seen, dropped, clients_at_peak)
}

/// The run with subscribers: committed rate, each reader's view, stalled ones dropped, and
/// the clients the feed counted while the run was on.
async fn with_subscribers(
    args: &SseArgs,
    pg: &str,
    redis: &str,
) -> Result<(f64, Vec<Seen>, usize, u64)> {
    let d = InProcessDaemon::start(config(pg, redis), false).await?;
    let addr = d.http();
    let names = market(args.symbols).symbols().to_vec();
    let pick = |i: usize| -> Vec<Symbol> {
        (0..args.symbols_per_subscriber.max(1))
            .map(|j| names[(i * args.symbols_per_subscriber + j) % names.len()])
            .collect()
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    for i in 0..args.subscribers {
        readers.push(tokio::spawn(subscriber(addr, pick(i), stop_rx.clone())));
    }
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
    let committed = drive(&d, args.rate, args.seconds, args.symbols).await?;
    // Let the last messages reach the readers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let mut seen = Vec::new();
    for r in readers {
        seen.push(r.await??);
    }
    let mut dropped = 0;
    for s in stalls {
        dropped += usize::from(was_dropped(s).await);
    }
    d.stop().await?;
    Ok((committed, seen, dropped, peak))
}

fn report(
    args: &SseArgs,
    alone: f64,
    with: f64,
    seen: &[Seen],
    dropped: usize,
    peak: u64,
) -> Result<Outcome> {
    let ticks: u64 = seen.iter().map(|s| s.ticks).sum();
    let per_s = ticks as f64 / args.seconds as f64;
    let gap_free = seen
        .iter()
        .filter(|s| s.told_gaps + s.silent_gaps == 0 && !s.dropped)
        .count();
    let told = seen.iter().filter(|s| s.told_gaps > 0 || s.dropped).count();
    let silent: u64 = seen.iter().map(|s| s.silent_gaps).sum();
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
        Headline::alone("subscribers with an unannounced gap", silent as f64, "gaps")
            .target(Target::AtMost(0.0)),
        Headline::alone("stalled subscribers dropped", dropped as f64, "clients")
            .target(Target::AtLeast(args.stalled as f64)),
    ];
    let md = format!(
        "## sse\n\n`christmas-bench sse` — {} subscribers (+{} stalled) of `GET /api/stream`, {} symbols each, \
         {} ticks/s offered for {} s over {} symbols, daemon and subscribers in one process on loopback. \
         The subscribers parse every event on the same cores as the engine, so the ratio charges their \
         CPU to ingest too; the engine itself never waits for the feed (it publishes to Redis only).\n\n\
         | figure | value |\n|---|---|\n\
         | committed ticks/s without subscribers | {alone:.0} |\n\
         | committed ticks/s with subscribers | {with:.0} (ratio {:.3}) |\n\
         | ticks delivered to subscribers | {ticks} ({per_s:.0}/s) |\n\
         | subscribers gap-free / told of a gap (gap event or dropped) | {gap_free} / {told} |\n\
         | sequence jumps no gap event announced | {silent} |\n\
         | reading subscribers dropped as slow | {readers_dropped} |\n\
         | stalled subscribers dropped | {dropped} of {} |\n\
         | feed clients counted during the run | {peak} |\n",
        args.subscribers,
        args.stalled,
        args.symbols_per_subscriber,
        args.rate,
        args.seconds,
        args.symbols,
        with / alone.max(f64::MIN_POSITIVE),
        args.stalled,
    );
    let outcome = Outcome {
        scenario: "sse",
        headlines,
        json: json!({
            "subscribers": args.subscribers, "stalled": args.stalled, "rate": args.rate,
            "seconds": args.seconds, "symbols": args.symbols,
            "committed_alone": alone, "committed_with": with,
            "delivered_ticks": ticks, "gap_free": gap_free, "told_of_gap": told,
            "silent_gaps": silent, "readers_dropped": readers_dropped,
            "stalled_dropped": dropped, "clients_peak": peak,
        }),
        charts: Vec::new(),
        markdown: String::new(),
    };
    outcome.publish(md)
}
