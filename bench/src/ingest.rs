//! Scenario `ingest`: the embedded engine into PostgreSQL against the ceiling of the same
//! rows, pre-encoded, loaded by parallel `psql \copy … (FORMAT binary)` streams.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::BytesMut;
use christmas_core::binary_copy::{HEADER, TRAILER};
use christmas_core::synthetic::SyntheticMarket;
use christmas_core::{Ingestor, Record, ShardRouter, Summary, Trade};
use tokio_postgres::{Client, NoTls};

use crate::{machine, report};

/// Flags of `christmas-bench ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// PostgreSQL URL (a database the bench may TRUNCATE market_data in).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    url: String,
    /// Rows per run.
    #[arg(long, default_value_t = 4_000_000)]
    rows: usize,
    /// Symbols in the synthetic market.
    #[arg(long, default_value_t = 500)]
    symbols: usize,
    /// Shards = producer threads = parallel psql streams of the ceiling.
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Engine batch size in rows.
    #[arg(long, default_value_t = 50_000)]
    batch_rows: usize,
    /// Runs of each side; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Seconds of the 50 %-load latency run.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Rows/s of the latency run (default: 50 % of the engine's measured maximum).
    #[arg(long)]
    latency_rate: Option<f64>,
    /// Smaller and shorter: 500k rows, 1 repeat, 5 s latency run.
    #[arg(long)]
    quick: bool,
}

/// Flags of the hidden `rss-probe` subcommand.
#[derive(Debug, clap::Args)]
pub struct RssProbeArgs {
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 5_000_000)]
    rows: usize,
}

const COLUMNS: &str = "time, symbol, price, volume, side, exchange_seq";

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

async fn connect(url: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(conn);
    Ok(client)
}

async fn reset(client: &Client) -> Result<()> {
    client
        .batch_execute("TRUNCATE market_data, ingest_batches; CHECKPOINT")
        .await?;
    // Let the server's background writes of the previous run settle, so each run starts
    // from the same idle state on both sides.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

async fn count(client: &Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM market_data", &[])
        .await?
        .get(0))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(mut args: IngestArgs) -> Result<()> {
    if args.quick {
        args.rows = args.rows.min(500_000);
        args.repeats = 1;
        args.latency_seconds = args.latency_seconds.min(5);
    }
    ensure!(
        args.repeats >= 1 && args.shards >= 1,
        "repeats and shards must be ≥ 1"
    );
    let rt = runtime()?;
    let client = rt.block_on(async {
        christmas_core::schema::migrate_url(&args.url, &Default::default()).await?;
        connect(&args.url).await
    })?;
    let settings = rt.block_on(async {
        let mut s = Vec::new();
        for name in [
            "server_version",
            "fsync",
            "synchronous_commit",
            "shared_buffers",
        ] {
            let v: String = client.query_one(&format!("SHOW {name}"), &[]).await?.get(0);
            s.push(format!("{name}={v}"));
        }
        anyhow::Ok(s.join(", "))
    })?;

    // The same rows for both sides, split by shard so each producer / psql stream owns its
    // symbols and per-symbol order is the same.
    let router = ShardRouter::new(args.shards);
    let mut market = SyntheticMarket::new(7, args.symbols)
        .starting_at(christmas_core::query::unix_ns(std::time::SystemTime::now()));
    let mut per_shard: Vec<Vec<Trade>> = vec![Vec::new(); args.shards];
    for _ in 0..args.rows {
        let t = market.next_trade();
        per_shard[router.shard_for(&t.symbol)].push(t);
    }
    let files = write_copy_files(&per_shard)?;

    let (mut ceiling, mut engine) = (Vec::new(), Vec::new());
    for r in 0..args.repeats {
        rt.block_on(reset(&client))?;
        let secs = ceiling_run(&args.url, &files)?;
        ensure!(
            rt.block_on(count(&client))? == args.rows as i64,
            "ceiling loaded a wrong row count"
        );
        ceiling.push(args.rows as f64 / secs);

        rt.block_on(reset(&client))?;
        let secs = rt.block_on(engine_run(&args, &per_shard))?;
        ensure!(
            rt.block_on(count(&client))? == args.rows as i64,
            "engine committed a wrong row count"
        );
        engine.push(args.rows as f64 / secs);
        eprintln!(
            "run {}: ceiling {:.0} rows/s, engine {:.0} rows/s",
            r + 1,
            ceiling[r],
            engine[r]
        );
    }
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
    let (ceiling, engine) = (median(ceiling), median(engine));
    let ratio = engine / ceiling;

    rt.block_on(reset(&client))?;
    let rate = args.latency_rate.unwrap_or(engine * 0.5);
    let [latency, commit, batch_rows] = rt.block_on(latency_run(&args, rate))?;
    rt.block_on(reset(&client))?;
    let rss = rss_of_probe(&args.url, if args.quick { 1_000_000 } else { 5_000_000 })?;
    rt.block_on(reset(&client))?;

    let stamp = machine::utc_now();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let command = command.replace(&args.url, "$DATABASE_URL");
    let md = format!(
        "## ingest — embedded engine → PostgreSQL\n\n\
         {stamp} · `{command}` · {} · PostgreSQL {settings}\n\n\
         {} rows of trades, {} symbols (Zipf), {} shards, batches of {} rows, `(symbol, time)` index present; \
         median of {} runs.\n\n\
         | figure | value | ceiling / target | ratio |\n|---|---|---|---|\n\
         | committed rows/s (engine) | {:.0} | {:.0} (parallel `psql \\copy` binary) | **{:.2}** (floor 0.90) |\n\
         | push → commit p50 at 50 % load ({:.0} rows/s) | {:.1} ms | | |\n\
         | push → commit p99 at 50 % load | {:.1} ms | ≤ 50 ms | |\n\
         | push → commit p99.9 at 50 % load | {:.1} ms | | |\n\
         | batch commit time p50 / p99 at 50 % load | {:.1} / {:.1} ms | | |\n\
         | rows per batch p50 / p99 at 50 % load | {} / {} | | |\n\
         | peak RSS, default settings, full speed | {:.0} MiB | ≤ 256 MiB | |\n",
        machine::describe(),
        args.rows,
        args.symbols,
        args.shards,
        args.batch_rows,
        args.repeats,
        engine,
        ceiling,
        ratio,
        rate,
        latency.p50 as f64 / 1e3,
        latency.p99 as f64 / 1e3,
        latency.p999 as f64 / 1e3,
        commit.p50 as f64 / 1e3,
        commit.p99 as f64 / 1e3,
        batch_rows.p50,
        batch_rows.p99,
        rss,
    );
    println!("{md}");
    report::update_results("ingest", &md)?;
    let json = format!(
        "{{\"scenario\":\"ingest\",\"date\":\"{stamp}\",\"machine\":\"{}\",\"postgres\":\"{settings}\",\
         \"rows\":{},\"symbols\":{},\"shards\":{},\"batch_rows\":{},\"repeats\":{},\
         \"engine_rows_per_s\":{engine:.0},\"ceiling_rows_per_s\":{ceiling:.0},\"ratio\":{ratio:.4},\
         \"latency_rate\":{rate:.0},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"peak_rss_mib\":{rss:.1}}}\n",
        machine::describe(),
        args.rows,
        args.symbols,
        args.shards,
        args.batch_rows,
        args.repeats,
        latency.p50,
        latency.p99,
        latency.p999,
    );
    let path = report::write_json("ingest", &stamp, &json)?;
    eprintln!("wrote bench/RESULTS.md and {}", path.display());
    Ok(())
}

/// One binary COPY file per shard: header, rows, trailer.
fn write_copy_files(per_shard: &[Vec<Trade>]) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for (i, rows) in per_shard.iter().enumerate() {
        let mut buf = BytesMut::with_capacity(rows.len() * Trade::MAX_ROW_BYTES + 32);
        buf.extend_from_slice(HEADER);
        for t in rows {
            t.encode_row(&mut buf);
        }
        buf.extend_from_slice(TRAILER);
        let path =
            std::env::temp_dir().join(format!("christmas-bench-{}-{i}.copy", std::process::id()));
        std::fs::File::create(&path)?.write_all(&buf)?;
        files.push(path);
    }
    Ok(files)
}

/// Seconds for parallel `psql \copy` of every file.
fn ceiling_run(url: &str, files: &[std::path::PathBuf]) -> Result<f64> {
    let start = Instant::now();
    let children = files
        .iter()
        .map(|f| {
            Command::new("psql")
                .arg(url)
                .args(["-v", "ON_ERROR_STOP=1", "-qc"])
                .arg(format!(
                    "\\copy market_data ({COLUMNS}) FROM '{}' WITH (FORMAT binary)",
                    f.display()
                ))
                .stdout(Stdio::null())
                .spawn()
                .context("running psql")
        })
        .collect::<Result<Vec<_>>>()?;
    for mut c in children {
        if !c.wait()?.success() {
            bail!("psql \\copy failed");
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Seconds from the first push to every row committed.
async fn engine_run(args: &IngestArgs, per_shard: &[Vec<Trade>]) -> Result<f64> {
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&args.url)
        .shards(args.shards)
        .batch_max_rows(args.batch_rows)
        .stream("bench")
        .start()
        .await?;
    let start = Instant::now();
    on_threads(&ingestor, per_shard.to_vec(), |ingestor, rows| {
        for chunk in rows.chunks(1_024) {
            ingestor.push_batch(chunk)?;
        }
        Ok(())
    })?;
    ingestor.flush().await?;
    let secs = start.elapsed().as_secs_f64();
    ingestor.shutdown().await?;
    Ok(secs)
}

/// Runs `work(ingestor, input)` on one producer thread per input and waits for them all.
fn on_threads<I: Send + 'static>(
    ingestor: &Ingestor<Trade>,
    inputs: Vec<I>,
    work: fn(&Ingestor<Trade>, I) -> christmas_core::Result<()>,
) -> Result<()> {
    let threads: Vec<_> = inputs
        .into_iter()
        .map(|input| {
            let ingestor = ingestor.clone();
            std::thread::spawn(move || work(&ingestor, input))
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    }
    Ok(())
}

/// Push → commit latency with default settings while pushing `rate` rows/s.
async fn latency_run(args: &IngestArgs, rate: f64) -> Result<[Summary; 3]> {
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&args.url)
        .shards(args.shards)
        .stream("bench")
        .start()
        .await?;
    let mut market = SyntheticMarket::new(11, args.symbols)
        .starting_at(christmas_core::query::unix_ns(std::time::SystemTime::now()));
    let start = Instant::now();
    let duration = Duration::from_secs(args.latency_seconds);
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while start.elapsed() < duration {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            ingestor.push_async(market.next_trade()).await?;
            sent += 1;
        }
    }
    let m = ingestor.shutdown().await?;
    ensure!(m.rows_committed() == sent, "latency run lost rows");
    Ok([
        Summary::of(&m.push_to_commit_us),
        Summary::of(&m.batch_commit_us),
        Summary::of(&m.batch_rows),
    ])
}

/// Peak RSS (MiB) of a child process running the engine flat out with default settings.
fn rss_of_probe(url: &str, rows: usize) -> Result<f64> {
    let out = Command::new(std::env::current_exe()?)
        .args(["rss-probe", "--url", url, "--rows", &rows.to_string()])
        .output()?;
    ensure!(
        out.status.success(),
        "rss-probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("rss-probe output")
}

pub fn rss_probe(args: RssProbeArgs) -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async {
        let ingestor = Ingestor::<Trade>::builder()
            .database_url(&args.url)
            .stream("bench-rss")
            .start()
            .await?;
        let per = args.rows / 2;
        on_threads(
            &ingestor,
            vec![(100, per), (101, per)],
            |ingestor, (seed, n)| {
                let mut market = SyntheticMarket::new(seed, 250)
                    .starting_at(christmas_core::query::unix_ns(std::time::SystemTime::now()));
                for _ in 0..n {
                    ingestor.push(market.next_trade())?;
                }
                Ok(())
            },
        )?;
        ingestor.shutdown().await?;
        anyhow::Ok(())
    })?;
    println!("{:.1}", machine::peak_rss_mib());
    Ok(())
}
