//! Scenario `fanout`: the engine's Redis fan-out delivering to one subscriber, against
//! `redis-benchmark -P 64` publishing the same payload size in the same run; push →
//! subscriber latency at a fixed rate; and PostgreSQL throughput with Redis down.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use christmas_core::fanout::{FanoutConfig, PayloadFormat, PublishPoint, TickSubscription};
use christmas_core::query::unix_ns;
use christmas_core::synthetic::SyntheticMarket;
use christmas_core::{Ingestor, ShardRouter, Summary, Symbol, Trade};
use hdrhistogram::Histogram;

use crate::args::CommonArgs;
use indicatif::ProgressBar;

use crate::chart::{self, LineChart, Series};
use crate::machine;
use crate::run::{median, runtime, Headline, Outcome, RunContext, Target};

/// Flags of `christmas-bench fanout`.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Databases, Redis, repeats, `--quick`.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Ticks per delivery run.
    #[arg(long, default_value_t = 2_000_000)]
    pub ticks: usize,
    /// Symbols in the synthetic market.
    #[arg(long, default_value_t = 500)]
    pub symbols: usize,
    /// Ticks/s of the latency run.
    #[arg(long, default_value_t = 200_000)]
    pub latency_rate: u64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Batcher linger of the latency run, microseconds (0: seal whatever each drain finds;
    /// the publisher merges what queues up behind a round trip).
    #[arg(long, default_value_t = 0)]
    pub latency_linger_us: u64,
    /// Rows per PostgreSQL run (Redis up vs down vs no fan-out).
    #[arg(long, default_value_t = 2_000_000)]
    pub pg_rows: usize,
}

fn now_ns() -> i64 {
    unix_ns(SystemTime::now())
}

/// The synthetic market with symbols of this process only (`F<pid>_0000`…): anything else
/// publishing the usual `SYM0000`… names to the same Redis (a demo, a test, another bench)
/// would otherwise reach the bench's subscriber.
fn market(seed: u64, symbols: usize) -> SyntheticMarket {
    let tag = std::process::id() % 100_000;
    let names = (0..symbols.max(1))
        .map(|i| Symbol::new(&format!("F{tag}_{i:04}")).expect("a short ASCII symbol is valid"))
        .collect();
    SyntheticMarket::with_symbols(seed, names)
}

/// `(host, port)` of a `redis://host:port/…` URL.
fn host_port(url: &str) -> Result<(String, u16)> {
    let rest = url
        .strip_prefix("redis://")
        .context("--redis-url must be redis://host:port/")?;
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let hp = rest.split('/').next().unwrap_or(rest);
    let (h, p) = hp.rsplit_once(':').unwrap_or((hp, "6379"));
    Ok((h.to_string(), p.parse()?))
}

/// What one delivery run measured.
struct Delivery {
    ticks_per_s: f64,
    messages_per_s: f64,
    dropped: u64,
}

/// Pushes `ticks` trades as fast as two threads can into a null-sink ingestor fanning out
/// in `format`, and times until one subscriber of every symbol has all of them.
async fn delivery_run(args: &FanoutArgs, format: PayloadFormat, seed: u64) -> Result<Delivery> {
    let first = market(seed, args.symbols);
    let symbols: Vec<Symbol> = first.symbols().to_vec();
    let (host, port) = host_port(args.common.services.redis()?)?;
    clear_keys(&host, port, &symbols)?;
    let mut sub = TickSubscription::live(args.common.services.redis()?, format, &symbols).await?;
    let ingestor = Ingestor::<Trade>::builder()
        .discard()
        .fanout(FanoutConfig {
            format,
            // Deep enough that a burst of millions of ticks is delivered, not dropped.
            queue_batches: 1 << 16,
            queue_ticks: 1 << 30,
            ..FanoutConfig::new(args.common.services.redis()?)
        })
        .start()
        .await?;
    // Generated before the clock starts; one producer thread per shard's symbols, so each
    // symbol has one producer.
    let router = ShardRouter::new(2);
    let halves: Vec<Vec<Trade>> = {
        let mut m = market(seed, args.symbols).starting_at(now_ns());
        let mut h = vec![
            Vec::with_capacity(args.ticks / 2),
            Vec::with_capacity(args.ticks / 2),
        ];
        for _ in 0..args.ticks {
            let t = m.next_trade();
            h[router.shard_for(&t.symbol)].push(t);
        }
        h
    };
    let total: usize = halves.iter().map(Vec::len).sum();
    let start_push = Instant::now();
    let threads: Vec<_> = halves
        .into_iter()
        .map(|rows| {
            let ingestor = ingestor.clone();
            std::thread::spawn(move || -> christmas_core::Result<()> {
                for chunk in rows.chunks(1_024) {
                    ingestor.push_batch(chunk)?;
                }
                Ok(())
            })
        })
        .collect();
    let mut received = 0usize;
    let mut messages = 0u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while received < total {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(d)) => {
                received += d?.message.len();
                messages += 1;
            }
            Ok(None) => bail!("subscription ended"),
            Err(_) => {
                let f = ingestor.metrics().fanout.unwrap_or_default();
                bail!("only {received} of {total} ticks arrived in 300 s ({f:?})");
            }
        }
        if messages.is_multiple_of(1_024) {
            let f = ingestor.metrics().fanout.unwrap_or_default();
            ensure!(f.dropped == 0, "the fan-out dropped ticks: {f:?}");
        }
    }
    let elapsed = start_push.elapsed().as_secs_f64();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    }
    let snap = ingestor.shutdown().await?;
    // The keys of this process's symbols go with it.
    clear_keys(&host, port, &symbols)?;
    let f = snap.fanout.unwrap_or_default();
    Ok(Delivery {
        ticks_per_s: received as f64 / elapsed,
        messages_per_s: messages as f64 / elapsed,
        dropped: f.dropped,
    })
}

/// Mean encoded size of the messages a run of `ticks` produces (per-symbol groups of
/// 50,000-row batches), for the redis-benchmark ceiling.
fn mean_payload(args: &FanoutArgs, format: PayloadFormat) -> Result<usize> {
    let mut m = market(99, args.symbols).starting_at(now_ns());
    let batch: Vec<Trade> = (0..50_000).map(|_| m.next_trade()).collect();
    let mut groups: std::collections::HashMap<Symbol, christmas_core::fanout::TickMessage> =
        std::collections::HashMap::new();
    for t in &batch {
        let msg = groups
            .entry(t.symbol)
            .or_insert_with(|| christmas_core::fanout::TickMessage {
                source: "bench-0000000000000000".into(),
                symbol: t.symbol.as_str().into(),
                kind: christmas_core::fanout::TickKind::Trade,
                first_seq: 1,
                trades: Vec::new(),
                quotes: Vec::new(),
            });
        christmas_core::Record::push_to_message(t, msg);
    }
    let mut bytes = 0usize;
    for msg in groups.values() {
        bytes += msg.encode(format)?.len();
    }
    Ok(bytes / groups.len().max(1))
}

/// Deletes the streams and latest hashes of `symbols` (what earlier runs left), so every run
/// starts from the same Redis memory.
fn clear_keys(host: &str, port: u16, symbols: &[Symbol]) -> Result<()> {
    let keys: Vec<String> = symbols
        .iter()
        .flat_map(|s| {
            let s = s.as_str();
            [format!("md:{{{s}}}:ticks"), format!("md:{{{s}}}:latest")]
        })
        .collect();
    let out = Command::new("redis-cli")
        .args(["-h", host, "-p", &port.to_string(), "DEL"])
        .args(&keys)
        .output()
        .context("running redis-cli")?;
    ensure!(out.status.success(), "redis-cli DEL failed");
    Ok(())
}

/// `redis-benchmark -P 64` of `PUBLISH` with a `size`-byte payload: requests/s.
fn redis_benchmark_publish(host: &str, port: u16, size: usize, requests: usize) -> Result<f64> {
    let payload = "x".repeat(size);
    let out = Command::new("redis-benchmark")
        .args(["-h", host, "-p", &port.to_string()])
        .args(["-n", &requests.to_string(), "-P", "64", "-q"])
        .args(["PUBLISH", "md:{BENCH}", &payload])
        .output()
        .context("running redis-benchmark (installed by scripts/services.sh install)")?;
    ensure!(
        out.status.success(),
        "redis-benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // "PUBLISH md:{BENCH} xxxx…: 123456.79 requests per second, p50=…"
    let rate = text
        .split("requests per second")
        .next()
        .and_then(|s| s.rsplit(' ').nth(1).or_else(|| s.rsplit(": ").next()))
        .map(str::trim)
        .and_then(|s| s.parse::<f64>().ok())
        .with_context(|| {
            format!(
                "unexpected redis-benchmark output: {}",
                &text[..text.len().min(300)]
            )
        })?;
    Ok(rate)
}

/// Push → subscriber latency (µs) while pushing `rate` ticks/s, published at seal with
/// `--latency-linger-us` and a null sink: the fan-out path alone.
async fn latency_run(args: &FanoutArgs, format: PayloadFormat) -> Result<Histogram<u64>> {
    let first = market(5, args.symbols);
    let symbols: Vec<Symbol> = first.symbols().to_vec();
    let (host, port) = host_port(args.common.services.redis()?)?;
    clear_keys(&host, port, &symbols)?;
    let rate = args.latency_rate;
    let seconds = args.latency_seconds;
    // The subscriber runs on its own thread and runtime, as a consumer process would.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let subscriber = {
        let (url, symbols) = (args.common.services.redis()?.to_string(), symbols.clone());
        std::thread::spawn(move || -> Result<(Histogram<u64>, u64)> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut sub = TickSubscription::live(&url, format, &symbols).await?;
                let _ = ready_tx.send(());
                let mut h = Histogram::<u64>::new(3)?;
                h.auto(true);
                let mut received = 0u64;
                let stop = tokio::time::sleep(Duration::from_secs(seconds + 2));
                tokio::pin!(stop);
                loop {
                    tokio::select! {
                        d = sub.next() => {
                            let m = d.context("subscription ended")??.message;
                            let now = now_ns();
                            for t in &m.trades {
                                let _ = h.record(((now - t.time_ns).max(0) / 1_000) as u64);
                            }
                            received += m.len() as u64;
                        }
                        _ = &mut stop => break,
                    }
                }
                Ok((h, received))
            })
        })
    };
    ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the subscriber did not start"))?;
    let ingestor = Ingestor::<Trade>::builder()
        .discard()
        .linger(Duration::from_micros(args.latency_linger_us))
        .fanout(FanoutConfig {
            format,
            publish: PublishPoint::Sealed,
            ..FanoutConfig::new(args.common.services.redis()?)
        })
        .start()
        .await?;
    let producer = {
        let ingestor = ingestor.clone();
        let n = symbols.len();
        tokio::spawn(async move {
            let mut m = market(5, n);
            let start = Instant::now();
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            while start.elapsed() < Duration::from_secs(seconds) {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    let mut t = m.next_trade();
                    // The push time travels in the tick: the subscriber subtracts it.
                    t.time_ns = now_ns();
                    ingestor.push_async(t).await?;
                    sent += 1;
                }
            }
            Ok::<u64, christmas_core::Error>(sent)
        })
    };
    let sent = producer.await??;
    let (h, received) = tokio::task::block_in_place(|| subscriber.join())
        .map_err(|_| anyhow::anyhow!("the subscriber panicked"))??;
    let snap = ingestor.shutdown().await?;
    // The keys of this process's symbols go with it.
    clear_keys(&host, port, &symbols)?;
    let dropped = snap.fanout.map_or(0, |f| f.dropped);
    ensure!(
        received == sent && dropped == 0,
        "received {received} of {sent} ticks, {dropped} dropped"
    );
    Ok(h)
}

/// Rows/s of `rows` trades into PostgreSQL (the database at `url`) with fan-out off, on, or
/// pointed at a dead port.
async fn pg_run(args: &FanoutArgs, url: &str, fanout: Option<&str>) -> Result<f64> {
    let client = crate::pg::connect(url).await?;
    crate::pg::reset(&client, Duration::from_secs(2)).await?;
    let mut b = Ingestor::<Trade>::builder()
        .database_url(url)
        .stream("bench");
    if let Some(url) = fanout {
        b = b.fanout(FanoutConfig::new(url));
    }
    let ingestor = b.start().await?;
    let rows = args.pg_rows;
    let start = Instant::now();
    let threads: Vec<_> = (0..2u64)
        .map(|p| {
            let ingestor = ingestor.clone();
            std::thread::spawn(move || -> christmas_core::Result<()> {
                let mut m = SyntheticMarket::new(100 + p, 250).starting_at(now_ns());
                let mut buf = Vec::with_capacity(1_024);
                for _ in 0..rows / 2 / 1_024 {
                    buf.clear();
                    buf.extend((0..1_024).map(|_| m.next_trade()));
                    ingestor.push_batch(&buf)?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    }
    ingestor.flush().await?;
    let elapsed = start.elapsed().as_secs_f64();
    let snap = ingestor.shutdown().await?;
    Ok(snap.rows_committed() as f64 / elapsed)
}

pub fn run(ctx: &RunContext, args: FanoutArgs) -> Result<Outcome> {
    crate::services::tool("redis-benchmark", "redis-tools")?;
    let args = plan(ctx, args)?;
    let rt = runtime()?;
    // Per format: a warm-up delivery run, the measured ones, redis-benchmark, latency; then
    // the PostgreSQL runs.
    let bar = ctx.steps(
        "fanout",
        (2 * (args.common.repeats() + 3) + args.common.repeats()) as u64,
    );
    let mut formats = Vec::new();
    for format in [PayloadFormat::Json, PayloadFormat::Rkyv] {
        formats.push(measure_format(&rt, &args, format, &bar)?);
    }
    let pg = measure_pg(&rt, &args, &bar)?;
    bar.finish_with_message(format!(
        "Redis down keeps {:.2} of PostgreSQL's rows/s",
        pg.down / pg.off
    ));
    report(ctx, &args, &formats, &pg)
}

/// Plan: the flags settled for this run; Redis is required.
fn plan(ctx: &RunContext, mut args: FanoutArgs) -> Result<FanoutArgs> {
    if args.common.plan(ctx.quick, 3) {
        args.ticks = args.ticks.min(400_000);
        args.pg_rows = args.pg_rows.min(500_000);
        args.latency_seconds = args.latency_seconds.min(3);
    }
    ensure!(args.common.repeats() >= 1, "repeats must be ≥ 1");
    args.common.services.redis()?;
    Ok(args)
}

/// What one payload format measured.
struct FormatRun {
    name: &'static str,
    format: PayloadFormat,
    /// Medians of the delivery runs.
    ticks_per_s: f64,
    messages_per_s: f64,
    /// Mean payload, bytes, and redis-benchmark's PUBLISH/s of that size.
    size: usize,
    ceiling: f64,
    latency_us: Histogram<u64>,
}

/// Run, one format: a warm-up delivery run, the measured ones (no tick may be dropped),
/// redis-benchmark's ceiling for the same payload size, and the latency run.
fn measure_format(
    rt: &tokio::runtime::Runtime,
    args: &FanoutArgs,
    format: PayloadFormat,
    bar: &ProgressBar,
) -> Result<FormatRun> {
    let (host, port) = host_port(args.common.services.redis()?)?;
    let name = match format {
        PayloadFormat::Json => "JSON",
        PayloadFormat::Rkyv => "rkyv",
    };
    bar.set_message(format!("{name}: warm-up delivery run"));
    let w = rt.block_on(delivery_run(args, format, 6))?;
    crate::run::say(
        bar,
        format!(
            "fanout {name} warm-up (not recorded): {:.0} ticks/s",
            w.ticks_per_s
        ),
    );
    bar.inc(1);
    let mut runs = Vec::new();
    for r in 0..args.common.repeats() {
        bar.set_message(format!(
            "{name}: delivery run {}/{}, {} ticks",
            r + 1,
            args.common.repeats(),
            args.ticks
        ));
        let d = rt.block_on(delivery_run(args, format, 7 + r as u64))?;
        crate::run::say(
            bar,
            format!(
                "fanout {name} run {}: {:.0} ticks/s, {:.0} messages/s delivered, dropped {}",
                r + 1,
                d.ticks_per_s,
                d.messages_per_s,
                d.dropped
            ),
        );
        ensure!(
            d.dropped == 0,
            "the fan-out dropped ticks in a delivery run"
        );
        runs.push(d);
        bar.inc(1);
    }
    let ticks = median(runs.iter().map(|d| d.ticks_per_s).collect());
    let msgs = median(runs.iter().map(|d| d.messages_per_s).collect());
    let size = mean_payload(args, format)?;
    bar.set_message(format!("{name}: redis-benchmark -P 64 PUBLISH of {size} B"));
    let ceiling = redis_benchmark_publish(&host, port, size, 200_000)?;
    bar.inc(1);
    crate::run::say(
        bar,
        format!("fanout {name}: redis-benchmark -P 64 PUBLISH of {size} B: {ceiling:.0}/s"),
    );
    bar.set_message(format!(
        "{name}: latency at {}/s for {} s",
        args.latency_rate, args.latency_seconds
    ));
    let lat = rt.block_on(latency_run(args, format))?;
    bar.inc(1);
    let s = Summary::of(&lat);
    crate::run::say(
        bar,
        format!(
            "fanout {name}: latency at {}/s p50 {} µs p99 {} µs",
            args.latency_rate, s.p50, s.p99
        ),
    );
    Ok(FormatRun {
        name,
        format,
        ticks_per_s: ticks,
        messages_per_s: msgs,
        size,
        ceiling,
        latency_us: lat,
    })
}

/// PostgreSQL's rows/s (medians) without fan-out, with fan-out to Redis, with Redis down.
struct PgRates {
    off: f64,
    up: f64,
    down: f64,
}

/// Run: PostgreSQL alone, with fan-out to a live Redis, and with Redis down (a closed
/// port), in turn in each repeat.
fn measure_pg(
    rt: &tokio::runtime::Runtime,
    args: &FanoutArgs,
    bar: &ProgressBar,
) -> Result<PgRates> {
    let dead = format!("redis://127.0.0.1:{}/", christmas_tests::free_port());
    let pg_url = rt.block_on(crate::pg::fresh_database(
        &args.common.services.url,
        "christmas_bench_fanout",
    ))?;
    let (mut off, mut up, mut down) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..args.common.repeats() {
        bar.set_message(format!(
            "PostgreSQL run {}/{}: without fan-out, Redis up, Redis down",
            r + 1,
            args.common.repeats()
        ));
        off.push(rt.block_on(pg_run(args, &pg_url, None))?);
        up.push(rt.block_on(pg_run(args, &pg_url, Some(args.common.services.redis()?)))?);
        down.push(rt.block_on(pg_run(args, &pg_url, Some(&dead)))?);
        crate::run::say(bar, format!(
            "fanout PostgreSQL run {}: {:.0} rows/s without fan-out, {:.0} with Redis up, {:.0} with Redis down",
            r + 1,
            off[r],
            up[r],
            down[r]
        ));
        bar.inc(1);
    }
    Ok(PgRates {
        off: median(off),
        up: median(up),
        down: median(down),
    })
}

/// Report: a table row, JSON and headline per format, the latency CDF, the PostgreSQL
/// figures.
// Long: one RESULTS.md section and its JSON written top to bottom.
fn report(
    ctx: &RunContext,
    args: &FanoutArgs,
    formats: &[FormatRun],
    pg: &PgRates,
) -> Result<Outcome> {
    let mut rows = Vec::new();
    let mut json = Vec::new();
    let mut headlines = Vec::new();
    let mut cdfs = Vec::new();
    for f in formats {
        let (name, ticks, msgs, size, ceiling) =
            (f.name, f.ticks_per_s, f.messages_per_s, f.size, f.ceiling);
        let ticks_per_msg = ticks / msgs.max(1.0);
        let s = Summary::of(&f.latency_us);
        rows.push(format!(
            "| {name} | {ticks:.0} | {msgs:.0} ({ticks_per_msg:.0} ticks each, mean {size} B) | {ceiling:.0} | **{ratio:.2}** | {p50:.2} / {p99:.2} ms |",
            ratio = msgs / ceiling,
            p50 = s.p50 as f64 / 1e3,
            p99 = s.p99 as f64 / 1e3,
        ));
        json.push(serde_json::json!({
            "format": name, "ticks_per_s": ticks.round(), "messages_per_s": msgs.round(),
            "mean_payload_bytes": size, "redis_benchmark_publish_per_s": ceiling.round(),
            "ratio": msgs / ceiling,
            "latency_p50_us": s.p50, "latency_p99_us": s.p99, "latency_p999_us": s.p999,
        }));
        headlines.push(Headline::against(
            format!("messages/s delivered to a subscriber, {name}"),
            msgs,
            "messages/s",
            format!("`redis-benchmark -P 64` PUBLISH of {size} B, ceiling"),
            ceiling,
        ));
        headlines.push(
            Headline::alone(
                format!("ticks/s delivered to a subscriber, {name}"),
                ticks,
                "ticks/s",
            )
            .target(Target::AtLeast(1e6)),
        );
        headlines.push(
            Headline::alone(
                format!(
                    "push → subscriber p99 at {} ticks/s, {name}",
                    args.latency_rate
                ),
                s.p99 as f64 / 1e3,
                "ms",
            )
            .target(Target::AtMost(5.0)),
        );
        cdfs.push(Series {
            name: format!("{name}, {} ticks/s", args.latency_rate),
            points: chart::cdf_points(&f.latency_us),
            dashed: f.format == PayloadFormat::Rkyv,
        });
    }
    let (off, up, down) = (pg.off, pg.up, pg.down);
    headlines.push(
        Headline::against(
            "PostgreSQL rows/s with Redis down",
            down,
            "rows/s",
            "the same without fan-out",
            off,
        )
        .target(Target::RatioAtLeast(0.90)),
    );
    let charts = vec![(
        "push → subscriber latency CDF".to_string(),
        ctx.write_chart(
            "fanout-latency-cdf",
            &chart::line_chart(&LineChart::latency_cdf(
                "fanout: push → subscriber latency",
                "fraction of ticks",
                cdfs,
            )),
        )?,
    )];

    let body = format!(
        "## fanout — Redis pub/sub, streams and latest hash\n\n\
         {stamp} · `{cmd}` · {machine} · {redis} on the same host\n\n\
         {ticks} trades, {symbols} symbols (Zipf), null sink, batches of up to 50,000 rows; one \
         subscriber of every symbol's channel; one unrecorded warm-up run per format, then the \
         median of {repeats} run{s}. Each message is one \
         symbol's ticks from one batch; per message the engine also sends `XADD` and `HSET`, \
         which redis-benchmark does not.\n\n\
         | payload | ticks/s delivered | messages/s | ceiling: redis-benchmark -P 64 PUBLISH/s, same size | ratio (messages) | push → subscriber p50 / p99 at {rate}/s |\n\
         |---|---|---|---|---|---|\n{rows}\n\n\
         Latency: published at seal, linger {linger} µs, null sink (the fan-out path alone), \
         subscriber on its own thread and runtime. \
         Targets: ≥ 1 M ticks/s delivered, p99 ≤ 5 ms.\n\n\
         PostgreSQL rows/s ({pg_rows} rows, 2 producers, default settings): {off:.0} without \
         fan-out, {up:.0} with fan-out to Redis ({up_ratio:.2}), {down:.0} with Redis down \
         ({down_ratio:.2}; floor 0.90).\n\n",
        stamp = ctx.stamp,
        cmd = ctx.command,
        machine = machine::describe(),
        redis = machine::redis_version(args.common.services.redis()?),
        ticks = args.ticks,
        symbols = args.symbols,
        repeats = args.common.repeats(),
        s = if args.common.repeats() == 1 { "" } else { "s" },
        rate = args.latency_rate,
        linger = args.latency_linger_us,
        rows = rows.join("\n"),
        pg_rows = args.pg_rows,
        up_ratio = up / off,
        down_ratio = down / off,
    );
    let outcome = Outcome {
        scenario: "fanout",
        headlines,
        json: serde_json::json!({
            "scenario": "fanout",
            "date": ctx.stamp,
            "command": ctx.command,
            "machine": machine::describe(),
            "ticks": args.ticks,
            "repeats": args.common.repeats(),
            "formats": json,
            "pg_rows_per_s": {"no_fanout": off.round(), "redis_up": up.round(), "redis_down": down.round()},
        }),
        charts,
        markdown: String::new(),
    };
    outcome.publish(body)
}
