//! Scenario `ingest`: the embedded engine into PostgreSQL against the ceiling of the same
//! rows, pre-encoded, loaded by parallel `psql \copy … (FORMAT binary)` streams, and against
//! the Python loaders a user would write instead (asyncpg, psycopg 3), over a sweep of shard
//! counts and batch sizes.
//!
//! Plan → run → report: [`run`] settles the sweep from the flags, `measure` runs every
//! contender (the runs themselves are in `runs`), and `report` writes RESULTS.md, the
//! JSON and the charts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Result};
use christmas_core::{Quote, Trade};
use hdrhistogram::Histogram;

use indicatif::ProgressBar;

use crate::args::LoadArgs;
use report::report_ingest;
pub use runs::{ceiling_run, engine_run, rss_probe};
use runs::{latency_run, rss_of_probe};

mod report;
mod runs;
use crate::market::{self, BenchRecord, Kind, TempDir};
use crate::run::{median, runtime, Outcome, RunContext};
use crate::{peers, pg};

/// Flags of `christmas-bench ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Databases, Redis, repeats, `--quick`; the market and its rows per run.
    #[command(flatten)]
    pub load: LoadArgs,
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
    if args.load.common.plan(ctx.quick, 3) {
        args.load.rows = args.load.rows.min(300_000);
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
        args.load.common.repeats() >= 1
            && args.shards.iter().all(|s| *s >= 1)
            && args.load.rows >= 1,
        "repeats, shards and rows must be ≥ 1"
    );
    match args.load.market.kind {
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

/// The rows every contender loads, in the form each takes them, and the Python peers
/// holding them already.
struct Prepared<R> {
    rows: Vec<R>,
    /// By shard count: the rows split by shard (the engine's producers) and their COPY
    /// files (the psql streams).
    split: BTreeMap<usize, Vec<Vec<R>>>,
    files: BTreeMap<usize, Vec<PathBuf>>,
    peers: Vec<peers::Peer>,
    /// Peers that failed to start or were skipped, and why.
    peer_notes: Vec<String>,
    /// Holds the files until the run ends.
    _tmp: TempDir,
}

/// The same rows for every contender: split by shard for the engine's producers and the
/// psql streams; one file in row order for the Python peers, which read it before any clock
/// starts, then load it on request.
fn prepare<R: BenchRecord>(
    args: &IngestArgs,
    url: &str,
    with_peers: bool,
    bar: &ProgressBar,
) -> Result<Prepared<R>> {
    let rows: Vec<R> = market::generate(&args.load.market, args.load.rows)?;
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
    let mut peer_procs = Vec::new();
    let mut peer_notes = Vec::new();
    if with_peers {
        bar.set_message("Python peers: reading the rows");
        market::write_python_rows(&rows_file, &rows)?;
        match peers::python() {
            Ok(py) => {
                for (name, script) in peers::PEERS {
                    match peers::Peer::start(&py, name, script, url, &rows_file) {
                        Ok(p) => peer_procs.push(p),
                        Err(e) => {
                            crate::run::say(bar, format!("ingest: peer {name} failed: {e:#}"));
                            peer_notes.push(format!("{name} failed: {e:#}"));
                        }
                    }
                }
            }
            Err(e) => {
                crate::run::say(bar, format!("ingest: no Python peers: {e:#}"));
                peer_notes.push(format!("peers skipped: {e:#}"));
            }
        }
    }
    bar.inc(1);
    Ok(Prepared {
        rows,
        split,
        files,
        peers: peer_procs,
        peer_notes,
        _tmp: tmp,
    })
}

/// One timed load of each contender on an emptied table, checked for every row.
struct Contenders<'a, R> {
    rt: &'a tokio::runtime::Runtime,
    client: &'a tokio_postgres::Client,
    url: &'a str,
    settle: Duration,
    rows: usize,
    prepared: &'a Prepared<R>,
}

impl<R: BenchRecord> Contenders<'_, R> {
    fn check(&self, what: &str) -> Result<()> {
        let (n, table) = (self.rows as i64, R::DEFAULT_TABLE);
        let got = self.rt.block_on(pg::count(self.client, table))?;
        ensure!(got == n, "{what} left {got} rows in {table}, expected {n}");
        Ok(())
    }

    fn ceiling_once(&self, s: usize) -> Result<f64> {
        self.rt.block_on(pg::reset(self.client, self.settle))?;
        let secs = ceiling_run::<R>(self.url, &self.prepared.files[&s])?;
        self.check("the psql ceiling")?;
        Ok(self.rows as f64 / secs)
    }

    fn engine_once(&self, s: usize, b: usize) -> Result<f64> {
        self.rt.block_on(pg::reset(self.client, self.settle))?;
        let secs = self
            .rt
            .block_on(engine_run(self.url, s, b, &self.prepared.split[&s]))?;
        self.check("the engine")?;
        Ok(self.rows as f64 / secs)
    }

    fn peer_once(&self, p: &mut peers::Peer, s: usize) -> Result<f64> {
        self.rt.block_on(pg::reset(self.client, self.settle))?;
        let secs = p.load(s)?;
        self.check(&p.name)?;
        Ok(self.rows as f64 / secs)
    }

    /// One unrecorded run of each contender at the headline configuration.
    fn warm_up(
        &self,
        args: &IngestArgs,
        peers: &mut [peers::Peer],
        bar: &ProgressBar,
    ) -> Result<()> {
        let (hs, hb) = (args.headline_shards, args.headline_batch_rows);
        bar.set_message(format!("warm-up: psql ceiling, {hs} streams"));
        let c = self.ceiling_once(hs)?;
        bar.inc(1);
        bar.set_message(format!("warm-up: engine, {hs} shards, batches of {hb}"));
        let e = self.engine_once(hs, hb)?;
        bar.inc(1);
        let mut line =
            format!("ingest warm-up (not recorded): ceiling {c:.0} rows/s, engine {e:.0} rows/s");
        for p in peers.iter_mut() {
            bar.set_message(format!("warm-up: {}, {hs} connections", p.name));
            let v = self.peer_once(p, hs)?;
            line.push_str(&format!(", {} {v:.0} rows/s", p.name));
            bar.inc(1);
        }
        crate::run::say(bar, line);
        Ok(())
    }

    /// Every contender at every shard count in each repeat: they share the same minutes of
    /// a machine whose background load drifts.
    fn sweep(
        &self,
        args: &IngestArgs,
        peers: &mut [peers::Peer],
        n_peers: usize,
        bar: &ProgressBar,
    ) -> Result<(BTreeMap<usize, ShardPoint>, Vec<PeerRun>)> {
        let mut points: BTreeMap<usize, ShardPoint> = BTreeMap::new();
        let mut peer_runs: Vec<PeerRun> = peers
            .iter()
            .map(|p| PeerRun {
                peer: p.name.clone(),
                version: p.version.clone(),
                rates: BTreeMap::new(),
            })
            .collect();
        for r in 0..args.load.common.repeats() {
            let msg =
                |what: String| format!("run {}/{}: {what}", r + 1, args.load.common.repeats());
            for &s in &args.shards {
                bar.set_message(msg(format!("psql ceiling, {s} streams")));
                let c = self.ceiling_once(s)?;
                bar.inc(1);
                let p = points.entry(s).or_default();
                p.ceiling.push(c);
                let mut line = format!("ingest run {}, {s} shards: ceiling {c:.0}", r + 1);
                for &b in &args.batch_rows {
                    bar.set_message(msg(format!("engine, {s} shards, batches of {b}")));
                    let e = self.engine_once(s, b)?;
                    bar.inc(1);
                    if let Some(p) = points.get_mut(&s) {
                        p.engine.entry(b).or_default().push(e);
                    }
                    line.push_str(&format!(", engine@{b} {e:.0}"));
                }
                for (p, run) in peers.iter_mut().zip(&mut peer_runs) {
                    bar.set_message(msg(format!("{}, {s} connections", p.name)));
                    let v = self.peer_once(p, s)?;
                    bar.inc(1);
                    run.rates.entry(s).or_default().push(v);
                    line.push_str(&format!(", {} {v:.0}", p.name));
                }
                bar.inc((n_peers - peers.len()) as u64);
                crate::run::say(bar, format!("{line} rows/s"));
            }
        }
        Ok((points, peer_runs))
    }
}

/// Run: the sweep, then latency at half the engine's headline rate and the peak-RSS probe.
fn measure<R: BenchRecord>(ctx: &RunContext, args: &IngestArgs) -> Result<Outcome> {
    let n_peers = if args.no_peers { 0 } else { peers::PEERS.len() };
    let points_per_repeat = args.shards.len() * (1 + args.batch_rows.len() + n_peers);
    let steps = 2
        + if args.no_warmup { 0 } else { 2 + n_peers }
        + args.load.common.repeats() * points_per_repeat
        + 2;
    let bar = ctx.steps("ingest", steps as u64);
    bar.set_message("fresh database christmas_bench_ingest; generating rows");
    let rt = runtime()?;
    let (url, client, settings) =
        args.load
            .fresh_database(&rt, "christmas_bench_ingest", SETTINGS)?;
    let settle = Duration::from_millis(args.settle_ms);
    let mut prepared = prepare::<R>(args, &url, n_peers > 0, &bar)?;
    let mut peer_procs = std::mem::take(&mut prepared.peers);
    let contenders = Contenders {
        rt: &rt,
        client: &client,
        url: &url,
        settle,
        rows: args.load.rows,
        prepared: &prepared,
    };
    let (hs, hb) = (args.headline_shards, args.headline_batch_rows);
    if !args.no_warmup {
        contenders.warm_up(args, &mut peer_procs, &bar)?;
        bar.inc((n_peers - peer_procs.len()) as u64);
    }
    let (points, peer_runs) = contenders.sweep(args, &mut peer_procs, n_peers, &bar)?;
    drop(peer_procs);
    let med = |v: &Vec<f64>| median(v.clone());
    let engine = med(&points[&hs].engine[&hb]);
    let ceiling = med(&points[&hs].ceiling);
    bar.set_message("latency at 50 % load");
    rt.block_on(pg::reset(&client, settle))?;
    let rate = args.latency_rate.unwrap_or(engine * 0.5);
    let lat = rt.block_on(latency_run(
        &url,
        hs,
        args.latency_seconds,
        rate,
        &prepared.rows,
    ))?;
    bar.inc(1);
    bar.set_message("peak RSS probe");
    rt.block_on(pg::reset(&client, settle))?;
    let rss = rss_of_probe(
        &url,
        if args.load.common.quick {
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
    let run = IngestRun {
        settings,
        points,
        peer_runs,
        peer_notes: std::mem::take(&mut prepared.peer_notes),
        rate,
        lat,
        rss,
    };
    report_ingest::<R>(ctx, args, &run)
}

/// What `measure` found, for the report.
struct IngestRun {
    /// PostgreSQL's version and settings.
    settings: String,
    /// By shard count.
    points: BTreeMap<usize, ShardPoint>,
    peer_runs: Vec<PeerRun>,
    /// Peers that failed or were skipped, and why.
    peer_notes: Vec<String>,
    /// The latency run's rows/s.
    rate: f64,
    lat: Latency,
    /// Peak RSS of the probe, MiB.
    rss: f64,
}

/// The latency run's histograms.
struct Latency {
    push_to_commit_us: Histogram<u64>,
    batch_commit_us: Histogram<u64>,
    batch_rows: Histogram<u64>,
}
