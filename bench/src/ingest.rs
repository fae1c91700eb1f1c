//! Scenario `ingest`: the embedded engine into PostgreSQL against the ceiling of the same
//! rows, pre-encoded, loaded by parallel `psql \copy … (FORMAT binary)` streams, and against
//! the Python loaders a user would write instead (asyncpg, psycopg 3), over a sweep of shard
//! counts and batch sizes.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use christmas_core::synthetic::SyntheticMarket;
use christmas_core::{Ingestor, Quote, Trade};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::args::CommonArgs;
use crate::chart::{self, LineChart, Series};
use crate::market::{self, BenchRecord, Kind, MarketArgs, TempDir};
use crate::run::{median, runtime, Headline, Outcome, RunContext};
use crate::{machine, peers, pg};

/// Flags of `christmas-bench ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Databases, Redis, repeats, `--quick`.
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub market: MarketArgs,
    /// Rows per run.
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: usize,
    /// Shard counts of the sweep (= producer threads = parallel psql streams = peer
    /// connections).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub shards: Vec<usize>,
    /// Engine batch sizes of the sweep, in rows.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000")]
    pub batch_rows: Vec<usize>,
    /// The headline configuration's shard count (the daemon's default).
    #[arg(long, default_value_t = 2)]
    pub headline_shards: usize,
    /// The headline configuration's batch size (the library's default).
    #[arg(long, default_value_t = 50_000)]
    pub headline_batch_rows: usize,
    /// Skip the unrecorded warm-up run of each side.
    #[arg(long)]
    pub no_warmup: bool,
    /// Skip the Python peers.
    #[arg(long)]
    pub no_peers: bool,
    /// Pause after each TRUNCATE + CHECKPOINT, milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub settle_ms: u64,
    /// Seconds of the 50 %-load latency run.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Rows/s of the latency run (default: 50 % of the engine's measured maximum).
    #[arg(long)]
    pub latency_rate: Option<f64>,
}

/// Flags of the hidden `rss-probe` subcommand.
#[derive(Debug, clap::Args)]
pub struct RssProbeArgs {
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 5_000_000)]
    rows: usize,
}

const SETTINGS: &[&str] = &[
    "server_version",
    "fsync",
    "synchronous_commit",
    "shared_buffers",
];

pub fn run(ctx: &RunContext, mut args: IngestArgs) -> Result<Outcome> {
    if args.common.plan(ctx.quick, 3) {
        args.rows = args.rows.min(300_000);
        args.batch_rows.retain(|b| *b != 10_000);
        args.latency_seconds = args.latency_seconds.min(3);
        args.settle_ms = args.settle_ms.min(1_000);
    }
    args.shards.sort_unstable();
    args.shards.dedup();
    args.batch_rows.sort_unstable();
    args.batch_rows.dedup();
    if !args.shards.contains(&args.headline_shards) {
        args.shards.push(args.headline_shards);
        args.shards.sort_unstable();
    }
    if !args.batch_rows.contains(&args.headline_batch_rows) {
        args.batch_rows.push(args.headline_batch_rows);
        args.batch_rows.sort_unstable();
    }
    ensure!(
        args.common.repeats() >= 1 && args.shards.iter().all(|s| *s >= 1) && args.rows >= 1,
        "repeats, shards and rows must be ≥ 1"
    );
    match args.market.kind {
        Kind::Trade => measure::<Trade>(ctx, &args),
        Kind::Quote => measure::<Quote>(ctx, &args),
    }
}

/// Medians of one shard count.
#[derive(Debug, Default, Clone)]
struct ShardPoint {
    ceiling: Vec<f64>,
    /// By batch size.
    engine: BTreeMap<usize, Vec<f64>>,
}

/// What one Python peer measured: rows/s of every run, by connection count.
#[derive(Debug, Clone)]
struct PeerRun {
    peer: String,
    /// `asyncpg 0.32.0, Python 3.11.7`.
    version: String,
    rates: BTreeMap<usize, Vec<f64>>,
}

fn measure<R: BenchRecord>(ctx: &RunContext, args: &IngestArgs) -> Result<Outcome> {
    let n_peers = if args.no_peers { 0 } else { peers::PEERS.len() };
    let points_per_repeat = args.shards.len() * (1 + args.batch_rows.len() + n_peers);
    let steps = 2
        + if args.no_warmup { 0 } else { 2 + n_peers }
        + args.common.repeats() * points_per_repeat
        + 2;
    let bar = ctx.steps("ingest", steps as u64);
    bar.set_message("fresh database christmas_bench_ingest; generating rows");
    let rt = runtime()?;
    let url = rt.block_on(pg::fresh_database(
        &args.common.services.url,
        "christmas_bench_ingest",
    ))?;
    let client = rt.block_on(pg::connect(&url))?;
    let settings = rt.block_on(pg::settings(&client, SETTINGS))?;
    let settle = Duration::from_millis(args.settle_ms);
    let table = R::DEFAULT_TABLE;

    // The same rows for every contender: split by shard for the engine's producers and the
    // psql streams; one file in row order for the Python peers.
    let rows: Vec<R> = market::generate(&args.market, args.rows)?;
    let tmp = TempDir::new("ingest")?;
    let mut split = BTreeMap::new();
    let mut files = BTreeMap::new();
    for &s in &args.shards {
        let per_shard = market::split_by_shard(&rows, s);
        files.insert(
            s,
            market::write_copy_files(&tmp.0, &format!("s{s}"), &per_shard)?,
        );
        split.insert(s, per_shard);
    }
    let rows_file = tmp.0.join("rows.bin");
    bar.inc(1);

    // The peers read the rows once, before any clock starts, then load them on request.
    let mut peer_procs = Vec::new();
    let mut peer_notes = Vec::new();
    if n_peers > 0 {
        bar.set_message("Python peers: reading the rows");
        market::write_python_rows(&rows_file, &rows)?;
        match peers::python() {
            Ok(py) => {
                for (name, script) in peers::PEERS {
                    match peers::Peer::start(&py, name, script, &url, &rows_file) {
                        Ok(p) => peer_procs.push(p),
                        Err(e) => {
                            crate::run::say(&bar, format!("ingest: peer {name} failed: {e:#}"));
                            peer_notes.push(format!("{name} failed: {e:#}"));
                        }
                    }
                }
            }
            Err(e) => {
                crate::run::say(&bar, format!("ingest: no Python peers: {e:#}"));
                peer_notes.push(format!("peers skipped: {e:#}"));
            }
        }
    }
    bar.inc(1);

    let n = args.rows as i64;
    let check = |what: &str| -> Result<()> {
        let got = rt.block_on(pg::count(&client, table))?;
        ensure!(got == n, "{what} left {got} rows in {table}, expected {n}");
        Ok(())
    };
    let ceiling_once = |s: usize| -> Result<f64> {
        rt.block_on(pg::reset(&client, settle))?;
        let secs = ceiling_run::<R>(&url, &files[&s])?;
        check("the psql ceiling")?;
        Ok(args.rows as f64 / secs)
    };
    let engine_once = |s: usize, b: usize| -> Result<f64> {
        rt.block_on(pg::reset(&client, settle))?;
        let secs = rt.block_on(engine_run(&url, s, b, &split[&s]))?;
        check("the engine")?;
        Ok(args.rows as f64 / secs)
    };
    let peer_once = |p: &mut peers::Peer, s: usize| -> Result<f64> {
        rt.block_on(pg::reset(&client, settle))?;
        let secs = p.load(s)?;
        check(&p.name)?;
        Ok(args.rows as f64 / secs)
    };
    let (hs, hb) = (args.headline_shards, args.headline_batch_rows);
    if !args.no_warmup {
        bar.set_message(format!("warm-up: psql ceiling, {hs} streams"));
        let c = ceiling_once(hs)?;
        bar.inc(1);
        bar.set_message(format!("warm-up: engine, {hs} shards, batches of {hb}"));
        let e = engine_once(hs, hb)?;
        bar.inc(1);
        let mut line =
            format!("ingest warm-up (not recorded): ceiling {c:.0} rows/s, engine {e:.0} rows/s");
        for p in &mut peer_procs {
            bar.set_message(format!("warm-up: {}, {hs} connections", p.name));
            let v = peer_once(p, hs)?;
            line.push_str(&format!(", {} {v:.0} rows/s", p.name));
            bar.inc(1);
        }
        bar.inc((n_peers - peer_procs.len()) as u64);
        crate::run::say(&bar, line);
    }
    // Every contender at every shard count in each repeat: they share the same minutes of
    // a machine whose background load drifts.
    let mut points: BTreeMap<usize, ShardPoint> = BTreeMap::new();
    let mut peer_runs: Vec<PeerRun> = peer_procs
        .iter()
        .map(|p| PeerRun {
            peer: p.name.clone(),
            version: p.version.clone(),
            rates: BTreeMap::new(),
        })
        .collect();
    for r in 0..args.common.repeats() {
        let msg = |what: String| format!("run {}/{}: {what}", r + 1, args.common.repeats());
        for &s in &args.shards {
            bar.set_message(msg(format!("psql ceiling, {s} streams")));
            let c = ceiling_once(s)?;
            bar.inc(1);
            let p = points.entry(s).or_default();
            p.ceiling.push(c);
            let mut line = format!("ingest run {}, {s} shards: ceiling {c:.0}", r + 1);
            for &b in &args.batch_rows {
                bar.set_message(msg(format!("engine, {s} shards, batches of {b}")));
                let e = engine_once(s, b)?;
                bar.inc(1);
                if let Some(p) = points.get_mut(&s) {
                    p.engine.entry(b).or_default().push(e);
                }
                line.push_str(&format!(", engine@{b} {e:.0}"));
            }
            for (p, run) in peer_procs.iter_mut().zip(&mut peer_runs) {
                bar.set_message(msg(format!("{}, {s} connections", p.name)));
                let v = peer_once(p, s)?;
                bar.inc(1);
                run.rates.entry(s).or_default().push(v);
                line.push_str(&format!(", {} {v:.0}", p.name));
            }
            bar.inc((n_peers - peer_procs.len()) as u64);
            crate::run::say(&bar, format!("{line} rows/s"));
        }
    }
    drop(peer_procs);
    let med = |v: &Vec<f64>| median(v.clone());
    let engine = med(&points[&hs].engine[&hb]);
    let ceiling = med(&points[&hs].ceiling);
    bar.set_message("latency at 50 % load");
    rt.block_on(pg::reset(&client, settle))?;
    let rate = args.latency_rate.unwrap_or(engine * 0.5);
    let lat = rt.block_on(latency_run(&url, hs, args.latency_seconds, rate, &rows))?;
    bar.inc(1);
    bar.set_message("peak RSS probe");
    rt.block_on(pg::reset(&client, settle))?;
    let rss = rss_of_probe(
        &url,
        if args.common.quick {
            1_000_000
        } else {
            5_000_000
        },
    )?;
    rt.block_on(pg::reset(&client, settle))?;
    bar.inc(1);
    bar.finish_with_message(format!(
        "engine {engine:.0} rows/s, ceiling {ceiling:.0} ({:.2})",
        engine / ceiling
    ));

    report_ingest::<R>(
        ctx,
        args,
        &settings,
        &points,
        &peer_runs,
        &peer_notes,
        rate,
        &lat,
        rss,
    )
}

/// The latency run's histograms.
struct Latency {
    push_to_commit_us: Histogram<u64>,
    batch_commit_us: Histogram<u64>,
    batch_rows: Histogram<u64>,
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
fn report_ingest<R: BenchRecord>(
    ctx: &RunContext,
    args: &IngestArgs,
    settings: &str,
    points: &BTreeMap<usize, ShardPoint>,
    peer_runs: &[PeerRun],
    peer_notes: &[String],
    rate: f64,
    lat: &Latency,
    rss: f64,
) -> Result<Outcome> {
    let (hs, hb) = (args.headline_shards, args.headline_batch_rows);
    let med = |v: &Vec<f64>| median(v.clone());
    let ceiling = med(&points[&hs].ceiling);
    let engine = med(&points[&hs].engine[&hb]);
    let ratio = engine / ceiling;
    let l = christmas_core::Summary::of(&lat.push_to_commit_us);
    let c = christmas_core::Summary::of(&lat.batch_commit_us);
    let br = christmas_core::Summary::of(&lat.batch_rows);
    let table = R::DEFAULT_TABLE;

    let mut headlines = vec![Headline {
        figure: format!("committed rows/s, embedded engine ({hs} shards, batches of {hb})"),
        value: engine,
        unit: "rows/s".into(),
        against: format!("parallel `psql \\copy` binary ({hs} streams), ceiling"),
        against_value: ceiling,
    }];
    let peer_at = |p: &PeerRun, s: usize| p.rates.get(&s).map(|v| median(v.clone()));
    for p in peer_runs {
        if let Some(v) = peer_at(p, hs) {
            headlines.push(Headline {
                figure: format!("committed rows/s, embedded engine ({hs} shards)"),
                value: engine,
                unit: "rows/s".into(),
                against: format!("{} ({hs} connections), peer", p.version),
                against_value: v,
            });
        }
    }

    // Charts.
    let mut charts = Vec::new();
    let mut sweep = Vec::new();
    for (s, p) in points {
        sweep.push(Series {
            name: format!("engine, {s} shard{}", if *s == 1 { "" } else { "s" }),
            points: p.engine.iter().map(|(b, v)| (*b as f64, med(v))).collect(),
            dashed: false,
        });
    }
    let (b0, b1) = (
        *args.batch_rows.first().unwrap_or(&hb) as f64,
        *args.batch_rows.last().unwrap_or(&hb) as f64,
    );
    for (s, p) in points {
        sweep.push(Series {
            name: format!("psql \\copy, {s} stream{}", if *s == 1 { "" } else { "s" }),
            points: vec![(b0, med(&p.ceiling)), (b1, med(&p.ceiling))],
            dashed: true,
        });
    }
    charts.push((
        "throughput vs batch size".to_string(),
        ctx.write_chart(
            "ingest-batch-size",
            &chart::line_chart(&LineChart {
                title: format!(
                    "ingest: committed rows/s vs batch size ({} rows)",
                    args.rows
                ),
                x_label: "engine batch size (rows, log scale)".into(),
                y_label: "rows/s".into(),
                x_log: true,
                x_ticks: Some(args.batch_rows.iter().map(|b| *b as f64).collect()),
                y_format: chart::si,
                y_from_zero: true,
                series: sweep,
            }),
        )?,
    ));
    let mut by_shards = vec![
        Series {
            name: format!("engine, {} batches", chart::si(hb as f64)),
            points: points
                .iter()
                .map(|(s, p)| (*s as f64, med(&p.engine[&hb])))
                .collect(),
            dashed: false,
        },
        Series {
            name: "psql \\copy binary".into(),
            points: points
                .iter()
                .map(|(s, p)| (*s as f64, med(&p.ceiling)))
                .collect(),
            dashed: true,
        },
    ];
    for p in peer_runs {
        by_shards.push(Series {
            name: p.peer.clone(),
            points: p
                .rates
                .iter()
                .map(|(s, v)| (*s as f64, median(v.clone())))
                .collect(),
            dashed: true,
        });
    }
    charts.push((
        "throughput vs shard count".to_string(),
        ctx.write_chart(
            "ingest-shards",
            &chart::line_chart(&LineChart {
                title: "ingest: committed rows/s vs shards / streams / connections".into(),
                x_label: "shards (engine) = streams (psql) = connections (peers), log scale".into(),
                y_label: "rows/s".into(),
                x_log: true,
                x_ticks: Some(points.keys().map(|s| *s as f64).collect()),
                y_format: chart::si,
                y_from_zero: true,
                series: by_shards,
            }),
        )?,
    ));
    charts.push((
        "push → commit latency CDF".to_string(),
        ctx.write_chart(
            "ingest-latency-cdf",
            &chart::line_chart(&LineChart {
                title: format!("ingest: latency at 50 % load ({rate:.0} rows/s)"),
                x_label: "milliseconds (log scale)".into(),
                y_label: "fraction of rows / batches".into(),
                x_log: true,
                x_ticks: None,
                y_format: chart::percent,
                y_from_zero: true,
                series: vec![
                    Series {
                        name: "push → commit".into(),
                        points: chart::cdf_points(&lat.push_to_commit_us),
                        dashed: false,
                    },
                    Series {
                        name: "batch commit".into(),
                        points: chart::cdf_points(&lat.batch_commit_us),
                        dashed: true,
                    },
                ],
            }),
        )?,
    ));

    // Markdown.
    let mut md = format!(
        "## ingest — embedded engine → PostgreSQL\n\n\
         {stamp} · `{cmd}` · {machine} · PostgreSQL {settings}\n\n\
         {rows} {kind}s from the {market}, into `{table}` (with its `(symbol, time)` index) in a \
         fresh database; `TRUNCATE` + `CHECKPOINT` + {settle} ms pause before every run; \
         {warm}median of {repeats} run{s}.\n\n\
         | figure | value | ceiling / peer | ratio |\n|---|---|---|---|\n\
         | committed rows/s, engine, {hs} shards, batches of {hb} | {engine:.0} | {ceiling:.0} \
         (parallel `psql \\copy` binary, {hs} streams) | **{ratio:.2}** (floor 0.90) |\n",
        stamp = ctx.stamp,
        cmd = ctx.command,
        machine = machine::describe(),
        rows = args.rows,
        kind = R::NAME,
        market = args.market.describe(),
        settle = args.settle_ms,
        warm = if args.no_warmup {
            ""
        } else {
            "one unrecorded warm-up run of each side first; "
        },
        repeats = args.common.repeats(),
        s = if args.common.repeats() == 1 { "" } else { "s" },
    );
    for p in peer_runs {
        if let Some(v) = peer_at(p, hs) {
            md.push_str(&format!(
                "| committed rows/s, engine, {hs} shards | {engine:.0} | {v:.0} ({}, {hs} \
                 connections) | **{:.2}×** |\n",
                p.version,
                engine / v
            ));
        }
    }
    md.push_str(&format!(
        "| push → commit p50 at 50 % load ({rate:.0} rows/s) | {:.1} ms | | |\n\
         | push → commit p99 at 50 % load | {:.1} ms | ≤ 50 ms | |\n\
         | push → commit p99.9 at 50 % load | {:.1} ms | | |\n\
         | batch commit time p50 / p99 at 50 % load | {:.1} / {:.1} ms | | |\n\
         | rows per batch p50 / p99 at 50 % load | {} / {} | | |\n\
         | peak RSS, default settings, full speed | {rss:.0} MiB | ≤ 256 MiB | |\n\n",
        l.p50 as f64 / 1e3,
        l.p99 as f64 / 1e3,
        l.p999 as f64 / 1e3,
        c.p50 as f64 / 1e3,
        c.p99 as f64 / 1e3,
        br.p50,
        br.p99,
    ));
    // The sweep.
    md.push_str("Sweep (rows/s, medians; ratio = engine / ceiling of the same shard count):\n\n| shards | psql ceiling |");
    for b in &args.batch_rows {
        md.push_str(&format!(" engine, batches of {b} |"));
    }
    for p in peer_runs {
        md.push_str(&format!(" {} |", p.peer));
    }
    md.push_str("\n|---|---|");
    for _ in args
        .batch_rows
        .iter()
        .map(|_| ())
        .chain(peer_runs.iter().map(|_| ()))
    {
        md.push_str("---|");
    }
    md.push('\n');
    for (s, p) in points {
        let c = med(&p.ceiling);
        md.push_str(&format!("| {s} | {c:.0} |"));
        for b in &args.batch_rows {
            let e = med(&p.engine[b]);
            md.push_str(&format!(" {e:.0} ({:.2}) |", e / c));
        }
        for pr in peer_runs {
            match peer_at(pr, *s) {
                Some(v) => md.push_str(&format!(" {v:.0} ({:.2}) |", v / c)),
                None => md.push_str(" |"),
            }
        }
        md.push('\n');
    }
    md.push_str(
        "\nPeers: the same rows (read from a file and turned into Python tuples before any clock \
         starts), split into one contiguous slice per connection and loaded concurrently \
         (bench/peers/: asyncpg `copy_records_to_table`; psycopg 3 binary `COPY` with \
         `write_row`, one thread per connection); only the load is timed, by the script, after \
         connecting. Each repeat runs every contender at every shard count in turn, so all \
         share the same minutes of the machine.",
    );
    for n in peer_notes {
        md.push_str(&format!(" {n}."));
    }
    md.push_str("\n\n");
    let outcome_json = json!({
        "scenario": "ingest",
        "date": ctx.stamp,
        "command": ctx.command,
        "machine": machine::describe(),
        "postgres": settings,
        "kind": R::NAME,
        "market": args.market.describe(),
        "rows": args.rows,
        "repeats": args.common.repeats(),
        "headline": {"shards": hs, "batch_rows": hb, "engine_rows_per_s": engine.round(),
                     "ceiling_rows_per_s": ceiling.round(), "ratio": ratio},
        "sweep": points.iter().map(|(s, p)| json!({
            "shards": s,
            "ceiling_runs": p.ceiling,
            "engine_runs": p.engine.iter().map(|(b, v)| (b.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "peers": peer_runs.iter().map(|p| json!({
            "peer": p.peer, "version": p.version,
            "runs": p.rates.iter().map(|(s, v)| (s.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "peer_notes": peer_notes,
        "latency": {"rate": rate.round(), "p50_us": l.p50, "p99_us": l.p99, "p999_us": l.p999,
                    "batch_commit_p50_us": c.p50, "batch_commit_p99_us": c.p99},
        "peak_rss_mib": rss,
    });
    let outcome = Outcome {
        scenario: "ingest",
        headlines,
        json: outcome_json,
        charts,
        markdown: String::new(),
    };
    outcome.publish(md)
}

/// Seconds for parallel `psql \copy` of every file.
pub fn ceiling_run<R: BenchRecord>(url: &str, files: &[std::path::PathBuf]) -> Result<f64> {
    let columns = R::COLUMNS.join(", ");
    let start = Instant::now();
    let children = files
        .iter()
        .map(|f| {
            Command::new("psql")
                .arg(url)
                .args(["-X", "-v", "ON_ERROR_STOP=1", "-qc"])
                .arg(format!(
                    "\\copy {} ({columns}) FROM '{}' WITH (FORMAT binary)",
                    R::DEFAULT_TABLE,
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

/// Seconds from the first push to every row committed: one producer thread per shard
/// pushes its rows (`push_batch` of 1,024) into an engine of `shards` shards sealing at
/// `batch_rows`.
pub async fn engine_run<R: BenchRecord>(
    url: &str,
    shards: usize,
    batch_rows: usize,
    per_shard: &[Vec<R>],
) -> Result<f64> {
    let ingestor = Ingestor::<R>::builder()
        .database_url(url)
        .shards(shards)
        .batch_max_rows(batch_rows)
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
fn on_threads<R: BenchRecord, I: Send + 'static>(
    ingestor: &Ingestor<R>,
    inputs: Vec<I>,
    work: fn(&Ingestor<R>, I) -> christmas_core::Result<()>,
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

/// Push → commit latency with default settings while pushing `rate` rows/s (the run's rows,
/// cycled).
async fn latency_run<R: BenchRecord>(
    url: &str,
    shards: usize,
    seconds: u64,
    rate: f64,
    rows: &[R],
) -> Result<Latency> {
    let ingestor = Ingestor::<R>::builder()
        .database_url(url)
        .shards(shards)
        .stream("bench")
        .start()
        .await?;
    let start = Instant::now();
    let duration = Duration::from_secs(seconds);
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while start.elapsed() < duration {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            ingestor
                .push_async(rows[sent as usize % rows.len()])
                .await?;
            sent += 1;
        }
    }
    let m = ingestor.shutdown().await?;
    ensure!(m.rows_committed() == sent, "latency run lost rows");
    Ok(Latency {
        push_to_commit_us: m.push_to_commit_us,
        batch_commit_us: m.batch_commit_us,
        batch_rows: m.batch_rows,
    })
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
