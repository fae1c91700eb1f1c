//! `christmas-ingest demo`: the engine fed by a synthetic market, with live throughput.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context;
use christmas_core::fanout::FanoutConfig;
use christmas_core::synthetic::SyntheticMarket;
use christmas_core::{AckLevel, IngestorConfig, Ingress, MetricsSnapshot, Sink, Summary, Ticks};

/// Flags of `christmas-ingest demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Instruments in the synthetic market.
    #[arg(long, default_value_t = 500)]
    symbols: usize,
    /// Ticks per second to generate (0 = as fast as the engine takes them).
    #[arg(long, default_value_t = 200_000)]
    rate: u64,
    /// Seconds to run (0 = until Ctrl-C / SIGTERM).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Shards per record kind.
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Random seed of the market.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Redis to fan ticks out to: redis://, redis+sentinel://…/master or redis+cluster://…
    /// (unset or empty: no fan-out).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Fan-out payload format: json or rkyv.
    #[arg(long, default_value = "json")]
    fanout_format: String,
}

/// Applies the schema at `url`, starts both pipelines and pushes a synthetic market into
/// them (for `--seconds`, or until `stop` resolves), printing rates every second and a
/// summary once everything accepted is flushed.
pub async fn run(url: &str, args: DemoArgs, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    christmas_core::schema::migrate_url(url, &Default::default())
        .await
        .context("applying the schema")?;
    let fanout = match super::set_url(&args.redis_url) {
        Some(redis) => Some(FanoutConfig {
            format: args.fanout_format.parse()?,
            ..FanoutConfig::new(redis)
        }),
        None => None,
    };
    if let Some(f) = &fanout {
        println!("fanning out to Redis ({:?}); watch with: cargo run --release -p christmas-core --example live_ticks -- SYM0000 SYM0001", f.format);
    }
    let ingress = Ingress::start(IngestorConfig {
        sink: Some(Sink::Postgres(url.into())),
        shards: args.shards,
        stream: "demo".into(),
        fanout,
        ..IngestorConfig::default()
    })
    .await
    .context("starting the trade and quote pipelines")?;

    let producer = tokio::spawn(produce(ingress.clone(), args));
    let report = tokio::spawn(report_every_second(ingress.clone()));
    tokio::select! {
        _ = stop => println!("stopping: flushing what was accepted"),
        r = producer => { r.context("producer task")??; println!("done: flushing"); }
    }
    report.abort();
    let totals = ingress.shutdown().await?;
    summary("trades", &totals.trades);
    summary("quotes", &totals.quotes);
    Ok(())
}

/// Ticks the producer pushes at once, at most.
const CHUNK: u64 = 4_096;

async fn produce(ingress: Ingress, args: DemoArgs) -> anyhow::Result<()> {
    let mut market = SyntheticMarket::new(args.seed, args.symbols)
        .starting_at(christmas_core::query::unix_ns(std::time::SystemTime::now()));
    let started = Instant::now();
    let deadline = (args.seconds > 0).then(|| started + Duration::from_secs(args.seconds));
    let mut sent: u64 = 0;
    let mut ticks = Ticks::default();
    // Pace in 1 ms slices: push what the rate allows so far, then sleep.
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        let due = if args.rate == 0 {
            sent + CHUNK
        } else {
            (started.elapsed().as_secs_f64() * args.rate as f64) as u64
        };
        while sent < due {
            ticks.clear();
            let mut ended = false;
            while sent < due && (ticks.len() as u64) < CHUNK {
                let Some(tick) = market.next() else {
                    ended = true;
                    break;
                };
                ticks.push(tick)?;
                sent += 1;
            }
            ingress
                .push(&ticks, AckLevel::Accepted)
                .await?
                .wait()
                .await?;
            if ended {
                return Ok(());
            }
        }
        if args.rate == 0 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

async fn report_every_second(ingress: Ingress) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_in, mut last_rows, mut last_pub) = (0, 0, 0);
    loop {
        tick.tick().await;
        let metrics = ingress.metrics();
        let (t, q) = (metrics.trades, metrics.quotes);
        let accepted = t.accepted() + q.accepted();
        let rows = t.rows_committed() + q.rows_committed();
        let p99 = Summary::of(&t.push_to_commit_us)
            .p99
            .max(Summary::of(&q.push_to_commit_us).p99);
        let (published, dropped) = [&t, &q]
            .iter()
            .filter_map(|m| m.fanout.as_ref())
            .fold((0, 0), |(p, d), f| (p + f.published, d + f.dropped));
        println!(
            "ticks in {:>9}/s   rows committed {:>9}/s   total {:>11}   ring {:>6}   push→commit p99 {:>6.1} ms   retries {}   redis {:>9}/s (dropped {})",
            accepted - last_in,
            rows - last_rows,
            rows,
            t.ring_depth() + q.ring_depth(),
            p99 as f64 / 1e3,
            t.retries() + q.retries(),
            published - last_pub,
            dropped,
        );
        (last_in, last_rows, last_pub) = (accepted, rows, published);
    }
}

fn summary(kind: &str, m: &MetricsSnapshot) {
    let lat = Summary::of(&m.push_to_commit_us);
    println!(
        "{kind}: {} rows committed in {} batches; dropped {}; dead-lettered {}; push→commit p50 {:.1} ms p99 {:.1} ms",
        m.rows_committed(),
        m.batches_committed(),
        m.dropped(),
        m.dead_lettered(),
        lat.p50 as f64 / 1e3,
        lat.p99 as f64 / 1e3,
    );
    if let Some(f) = &m.fanout {
        println!(
            "{kind}: fan-out published {} ticks in {} messages; dropped {}; errors {}",
            f.published, f.messages, f.dropped, f.errors
        );
    }
}
