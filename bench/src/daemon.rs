//! Scenario `daemon`: the same rows as `ingest`, sent to a running christmas-ingest over
//! `POST /api/ticks` (NDJSON) and over its TCP binary listener (rkyv frames), each
//! acknowledged once committed; against the parallel `psql \copy` ceiling and the embedded
//! engine, in the same run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use christmas_core::frame::{self, AckLevel};
use christmas_core::{Quote, Trade};
use christmas_ingest::config::{DaemonConfig, HttpSettings};
use christmas_tests::InProcessDaemon;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::args::LoadArgs;
use crate::chart::{self, Bar, LineChart, Series};
use crate::ingest::{ceiling_run, engine_run};
use crate::market::{self, BenchRecord, Kind, TempDir};
use crate::pg;
use crate::run::{median, runs, runtime, Headline, Outcome, RunContext};

/// PostgreSQL's settings the report quotes beside the figures.
const SETTINGS: &[&str] = &["fsync", "synchronous_commit"];

/// Flags of `christmas-bench daemon`.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// Databases, Redis, repeats, `--quick`; the market and its rows per run.
    #[command(flatten)]
    pub load: LoadArgs,
    /// The daemon's shards per record kind (and the embedded engine's, and psql streams).
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Records per `POST /api/ticks` request.
    #[arg(long, default_value_t = 5_000)]
    pub http_batch: usize,
    /// Concurrent HTTP connections, each owning its symbols and sending its requests one
    /// after another (`ack=committed`). The default keeps as many rows in flight as the TCP
    /// path's connections × window (32 × 5,000 = 2 × 16 × 5,000): a closed-loop client's
    /// rate is its rows in flight over its commit latency, so fewer connections measure
    /// the clients, not the path.
    #[arg(long, default_value_t = 32)]
    pub http_connections: usize,
    /// Records per TCP frame.
    #[arg(long, default_value_t = 5_000)]
    pub frame_rows: usize,
    /// TCP connections, each owning its symbols.
    #[arg(long, default_value_t = 2)]
    pub tcp_connections: usize,
    /// Frames a TCP connection may have unacknowledged (`ack=committed`).
    #[arg(long, default_value_t = 16)]
    pub tcp_window: usize,
    /// The daemon's batch linger, milliseconds (default: the daemon's own).
    #[arg(long)]
    pub linger_ms: Option<u64>,
    /// Skip the unrecorded warm-up run of each daemon path.
    #[arg(long)]
    pub no_warmup: bool,
    /// Pause after each TRUNCATE + CHECKPOINT, milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub settle_ms: u64,
}

pub fn run(ctx: &RunContext, mut args: DaemonArgs) -> Result<Outcome> {
    if args.load.common.plan(ctx.quick, 3) {
        args.load.rows = args.load.rows.min(300_000);
        args.settle_ms = args.settle_ms.min(1_000);
    }
    ensure!(
        args.load.common.repeats() >= 1
            && args.shards >= 1
            && args.http_connections >= 1
            && args.tcp_connections >= 1
            && args.tcp_window >= 1,
        "repeats, shards, connections and window must be ≥ 1"
    );
    match args.load.market.kind {
        Kind::Trade => measure::<Trade>(ctx, &args),
        Kind::Quote => measure::<Quote>(ctx, &args),
    }
}

/// What one daemon run measured.
struct PathRun {
    rows_per_s: f64,
    /// Request (HTTP) or frame (TCP) send → acknowledgement, microseconds.
    latency_us: Histogram<u64>,
}

/// The same rows in the form each path takes them, encoded before any clock starts.
struct Inputs<R> {
    /// By shard: for the embedded engine and (as COPY files) the psql streams.
    per_shard: Vec<Vec<R>>,
    files: Vec<std::path::PathBuf>,
    /// By connection, each owning its symbols, as partitioned feed handlers would.
    http_bodies: Vec<Vec<Bytes>>,
    tcp_frames: Vec<Vec<Vec<u8>>>,
    /// The same frames from named producers (one per connection), sequence-numbered.
    producer_frames: Vec<Vec<Vec<u8>>>,
    /// Holds the files until the run ends.
    _tmp: TempDir,
}

impl<R> Inputs<R> {
    fn http_bytes(&self) -> usize {
        self.http_bodies.iter().flatten().map(Bytes::len).sum()
    }

    fn tcp_bytes(&self) -> usize {
        self.tcp_frames.iter().flatten().map(Vec::len).sum()
    }
}

/// Plan: the rows, split and encoded for every path.
fn prepare<R: BenchRecord>(args: &DaemonArgs) -> Result<Inputs<R>> {
    let rows: Vec<R> = market::generate(&args.load.market, args.load.rows)?;
    let per_shard = market::split_by_shard(&rows, args.shards);
    let tmp = TempDir::new("daemon")?;
    let files = market::write_copy_files(&tmp.0, "daemon", &per_shard)?;
    let http_bodies: Vec<Vec<Bytes>> = market::split_by_shard(&rows, args.http_connections)
        .iter()
        .map(|part| market::ndjson_bodies(part, args.http_batch))
        .collect();
    let by_connection = market::split_by_shard(&rows, args.tcp_connections);
    let tcp_frames: Vec<Vec<Vec<u8>>> = by_connection
        .iter()
        .map(|part| market::frames(part, args.frame_rows, AckLevel::Committed, None))
        .collect::<Result<_>>()?;
    // A fresh producer name per run is not needed: every run starts on an emptied table
    // and ledger (`pg::reset`), producers included.
    let producer_frames: Vec<Vec<Vec<u8>>> = by_connection
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let name = format!("bench-feed-{i}");
            market::frames(part, args.frame_rows, AckLevel::Committed, Some(&name))
        })
        .collect::<Result<_>>()?;
    Ok(Inputs {
        per_shard,
        files,
        http_bodies,
        tcp_frames,
        producer_frames,
        _tmp: tmp,
    })
}

/// What the daemon scenario measured, for its report.
struct DaemonRun {
    /// PostgreSQL's settings the figures depend on.
    settings: String,
    http_bytes: usize,
    tcp_bytes: usize,
    /// Rows/s of every measured run, by contender.
    ceiling: Vec<f64>,
    engine: Vec<f64>,
    http: Vec<f64>,
    tcp: Vec<f64>,
    /// TCP frames from named producers (idempotent), same rows.
    producers: Vec<f64>,
    /// Send → ack latencies of every measured run.
    http_lat: Histogram<u64>,
    tcp_lat: Histogram<u64>,
}

impl DaemonRun {
    /// Medians of (ceiling, engine, HTTP, TCP).
    fn medians(&self) -> (f64, f64, f64, f64) {
        (
            median(self.ceiling.clone()),
            median(self.engine.clone()),
            median(self.http.clone()),
            median(self.tcp.clone()),
        )
    }
}

/// Run: the daemon in this process; an optional warm-up of each path, then every
/// contender in each repeat.
// Long: the warm-up and the repeats share its closures (reset, run, check) on one runtime.
fn measure<R: BenchRecord>(ctx: &RunContext, args: &DaemonArgs) -> Result<Outcome> {
    let steps = 1 + if args.no_warmup { 0 } else { 2 } + 5 * args.load.common.repeats();
    let bar = ctx.steps("daemon", steps as u64);
    bar.set_message("fresh database christmas_bench_daemon; rows; daemon start");
    let rt = runtime()?;
    let (url, client, settings) =
        args.load
            .fresh_database(&rt, "christmas_bench_daemon", SETTINGS)?;
    let settle = Duration::from_millis(args.settle_ms);
    let table = R::DEFAULT_TABLE;

    let inputs = prepare::<R>(args)?;
    let (files, per_shard) = (&inputs.files, &inputs.per_shard);
    let (http_bodies, tcp_frames) = (&inputs.http_bodies, &inputs.tcp_frames);

    // The daemon, as `christmas-ingest serve` runs it, without Redis (the comparison is
    // PostgreSQL ingest), in this process.
    let config = DaemonConfig {
        database_url: Some(url.clone().into()),
        redis_url: None,
        shards: args.shards,
        http: HttpSettings {
            max_connections: 4_096,
            // Every load-generating connection comes from loopback.
            max_connections_per_address: 0,
            ..HttpSettings::default()
        },
        linger_ms: args.linger_ms.unwrap_or(DaemonConfig::default().linger_ms),
        ..DaemonConfig::default()
    };
    let daemon = rt.block_on(InProcessDaemon::start(config, true))?;
    let http_addr = daemon.http().to_string();
    let tcp_addr = daemon
        .tcp()
        .context("the daemon has no TCP port")?
        .to_string();
    bar.inc(1);

    let n = args.load.rows as i64;
    let check = |what: &str| -> Result<()> {
        let got = rt.block_on(pg::count(&client, table))?;
        ensure!(got == n, "{what} left {got} rows in {table}, expected {n}");
        Ok(())
    };
    let http_once = || -> Result<PathRun> {
        rt.block_on(pg::reset(&client, settle))?;
        let r = rt.block_on(http_run(&http_addr, http_bodies, args.load.rows))?;
        check("POST /api/ticks")?;
        Ok(r)
    };
    let tcp_once = |frames: &[Vec<Vec<u8>>]| -> Result<PathRun> {
        rt.block_on(pg::reset(&client, settle))?;
        let r = rt.block_on(tcp_run(&tcp_addr, frames, args.tcp_window, args.load.rows))?;
        check("TCP frames")?;
        Ok(r)
    };
    if !args.no_warmup {
        bar.set_message("warm-up: POST /api/ticks");
        let h = http_once()?;
        bar.inc(1);
        bar.set_message("warm-up: TCP frames");
        let t = tcp_once(tcp_frames)?;
        bar.inc(1);
        crate::run::say(
            &bar,
            format!(
                "daemon warm-up (not recorded): HTTP {:.0} rows/s, TCP {:.0} rows/s",
                h.rows_per_s, t.rows_per_s
            ),
        );
    }
    let (mut ceiling, mut engine, mut http, mut tcp) = (vec![], vec![], vec![], vec![]);
    let mut producers = vec![];
    let mut http_lat = Histogram::<u64>::new(3)?;
    let mut tcp_lat = Histogram::<u64>::new(3)?;
    http_lat.auto(true);
    tcp_lat.auto(true);
    for r in 0..args.load.common.repeats() {
        let msg = |what: &str| format!("run {}/{}: {what}", r + 1, args.load.common.repeats());
        bar.set_message(msg(&format!("psql ceiling, {} streams", args.shards)));
        rt.block_on(pg::reset(&client, settle))?;
        let secs = ceiling_run::<R>(&url, files)?;
        check("the psql ceiling")?;
        ceiling.push(args.load.rows as f64 / secs);
        bar.inc(1);
        bar.set_message(msg("embedded engine"));
        rt.block_on(pg::reset(&client, settle))?;
        let secs = rt.block_on(engine_run(&url, args.shards, 50_000, per_shard))?;
        check("the embedded engine")?;
        engine.push(args.load.rows as f64 / secs);
        bar.inc(1);
        bar.set_message(msg("POST /api/ticks"));
        let h = http_once()?;
        http.push(h.rows_per_s);
        http_lat.add(&h.latency_us)?;
        bar.inc(1);
        bar.set_message(msg("TCP frames"));
        let t = tcp_once(tcp_frames)?;
        tcp.push(t.rows_per_s);
        tcp_lat.add(&t.latency_us)?;
        bar.inc(1);
        bar.set_message(msg("TCP frames, named producers"));
        producers.push(tcp_once(&inputs.producer_frames)?.rows_per_s);
        bar.inc(1);
        crate::run::say(
            &bar,
            format!(
                "daemon run {}: ceiling {:.0}, engine {:.0}, HTTP {:.0}, TCP {:.0}, TCP with producer ids {:.0} rows/s",
                r + 1,
                ceiling[r],
                engine[r],
                http[r],
                tcp[r],
                producers[r]
            ),
        );
    }
    rt.block_on(daemon.stop())?;
    rt.block_on(pg::reset(&client, Duration::ZERO))?;
    let run = DaemonRun {
        settings,
        http_bytes: inputs.http_bytes(),
        tcp_bytes: inputs.tcp_bytes(),
        ceiling,
        engine,
        http,
        tcp,
        producers,
        http_lat,
        tcp_lat,
    };
    let (ceiling_m, _, http_m, tcp_m) = run.medians();
    bar.finish_with_message(format!(
        "HTTP {http_m:.0} rows/s ({:.2} of ceiling), TCP {tcp_m:.0} ({:.2})",
        http_m / ceiling_m,
        tcp_m / ceiling_m
    ));
    report::<R>(ctx, args, &run)
}

/// Report: the chart of rows/s by path, the latency CDF, the RESULTS.md section and the
/// JSON.
// Long: one RESULTS.md section and its JSON written top to bottom.
fn report<R: BenchRecord>(ctx: &RunContext, args: &DaemonArgs, run: &DaemonRun) -> Result<Outcome> {
    let (settings, http_bytes, tcp_bytes) = (&run.settings, run.http_bytes, run.tcp_bytes);
    let (ceiling, engine, http, tcp) = (&run.ceiling, &run.engine, &run.http, &run.tcp);
    let (http_lat, tcp_lat) = (&run.http_lat, &run.tcp_lat);
    let (ceiling_m, engine_m, http_m, tcp_m) = run.medians();
    let table = R::DEFAULT_TABLE;
    let hl = christmas_core::Summary::of(http_lat);
    let tl = christmas_core::Summary::of(tcp_lat);
    let charts = vec![
        (
            "rows/s by path".to_string(),
            ctx.write_chart(
                "daemon-throughput",
                &chart::bar_chart(
                    &format!("daemon: committed rows/s, {} rows", args.load.rows),
                    "rows/s",
                    &[
                        Bar {
                            label: "psql \\copy".into(),
                            value: ceiling_m,
                            color: 1,
                        },
                        Bar {
                            label: "embedded engine".into(),
                            value: engine_m,
                            color: 2,
                        },
                        Bar {
                            label: "POST /api/ticks".into(),
                            value: http_m,
                            color: 0,
                        },
                        Bar {
                            label: "TCP frames".into(),
                            value: tcp_m,
                            color: 0,
                        },
                    ],
                    &["daemon", "ceiling", "embedded"],
                ),
            )?,
        ),
        (
            "ack latency CDF".to_string(),
            ctx.write_chart(
                "daemon-latency-cdf",
                &chart::line_chart(&LineChart::latency_cdf(
                    "daemon: send → committed ack, at full speed",
                    "fraction of requests / frames",
                    vec![
                        Series {
                            name: format!("HTTP, {} rows/request", args.http_batch),
                            points: chart::cdf_points(http_lat),
                            dashed: false,
                        },
                        Series {
                            name: format!("TCP, {} rows/frame", args.frame_rows),
                            points: chart::cdf_points(tcp_lat),
                            dashed: true,
                        },
                    ],
                )),
            )?,
        ),
    ];
    let ceiling_name = format!(
        "parallel `psql \\copy` binary ({} streams), ceiling",
        args.shards
    );
    let headlines = vec![
        Headline::against(
            "committed rows/s, POST /api/ticks (NDJSON)",
            http_m,
            "rows/s",
            ceiling_name.clone(),
            ceiling_m,
        ),
        Headline::against(
            "committed rows/s, TCP frames (rkyv)",
            tcp_m,
            "rows/s",
            ceiling_name,
            ceiling_m,
        ),
        Headline::against(
            "committed rows/s, TCP frames from named producers",
            median(run.producers.clone()),
            "rows/s",
            "the same frames without producer ids".to_string(),
            tcp_m,
        ),
    ];
    let mut md = format!(
        "## daemon — the same rows through POST /api/ticks and the TCP listener\n\n\
         {provenance} · PostgreSQL {settings}; clients, daemon and PostgreSQL share the \
         machine\n\n\
         {rows_of}, into `{table}` of a fresh database. christmas-ingest \
         runs in the bench process (`AppState` + `server::run`, what `serve` runs) with {shards} \
         shards and no Redis; the clients were encoded before the clock starts. \
         **HTTP**: {hc} keep-alive connections, each owning its symbols, sending NDJSON requests \
         of {hb} ticks one after another with `ack=committed` ({hmb:.0} MB in all). **TCP**: \
         {tc} connections, each owning its symbols, pipelining rkyv frames of {fr} ticks with \
         ack level committed, at most {tw} unacknowledged ({tmb:.0} MB). The clock stops at the \
         last acknowledgement; the table's row count is checked after every run. \
         {warm}Median of {runs}.\n\n\
         | path | committed rows/s | ceiling: psql \\copy, {shards} streams | ratio | embedded \
         engine, same run | ratio | send → ack p50 / p99 |\n|---|---|---|---|---|---|---|\n",
        provenance = ctx.provenance(),
        rows_of = args.load.market.rows_of::<R>(args.load.rows),
        shards = args.shards,
        hc = args.http_connections,
        hb = args.http_batch,
        hmb = http_bytes as f64 / 1e6,
        tc = args.tcp_connections,
        fr = args.frame_rows,
        tw = args.tcp_window,
        tmb = tcp_bytes as f64 / 1e6,
        warm = if args.no_warmup {
            ""
        } else {
            "One unrecorded warm-up run of each daemon path first. "
        },
        runs = runs(args.load.common.repeats()),
    );
    let producers_m = median(run.producers.clone());
    for (name, v, l) in [
        ("POST /api/ticks (NDJSON)", http_m, &hl),
        ("TCP frames (rkyv)", tcp_m, &tl),
    ] {
        md.push_str(&format!(
            "| {name} | {v:.0} | {ceiling_m:.0} | **{:.2}** | {engine_m:.0} | {:.2} | {:.1} / {:.1} ms |\n",
            v / ceiling_m,
            v / engine_m,
            l.p50 as f64 / 1e3,
            l.p99 as f64 / 1e3
        ));
    }
    md.push_str(&format!(
        "| TCP frames, named producers (idempotent) | {producers_m:.0} | {ceiling_m:.0} | **{:.2}** | {engine_m:.0} | {:.2} | — |\n\n\
         Cost of producer ids: TCP frames from named, sequence-numbered producers reach **{:.2}** of \
         the same frames without them (target ≥ 0.90): one claim statement per batch, nothing per row.\n",
        producers_m / ceiling_m,
        producers_m / engine_m,
        producers_m / tcp_m,
    ));
    md.push('\n');
    let outcome = Outcome {
        scenario: "daemon",
        headlines,
        json: args.load.json::<R>(
            ctx,
            "daemon",
            settings,
            json!({
                "shards": args.shards,
                "runs": {"ceiling": ceiling, "engine": engine, "http": http, "tcp": tcp,
                         "tcp_producers": run.producers},
                "medians": {"ceiling": ceiling_m.round(), "engine": engine_m.round(),
                            "http": http_m.round(), "tcp": tcp_m.round(),
                            "tcp_producers": producers_m.round()},
                "producer_cost_ratio": producers_m / tcp_m,
                "http": {"connections": args.http_connections, "rows_per_request": args.http_batch,
                         "p50_us": hl.p50, "p99_us": hl.p99},
                "tcp": {"connections": args.tcp_connections, "rows_per_frame": args.frame_rows,
                        "window": args.tcp_window, "p50_us": tl.p50, "p99_us": tl.p99},
            }),
        ),
        charts,
        markdown: String::new(),
    };
    outcome.publish(md)
}

/// A keep-alive HTTP/1.1 connection that POSTs and reads the status of each answer.
///
/// Raw on purpose: it is the load generator, sharing the machine's cores with the daemon it
/// measures; a pooled client (a task and channel per request) would take CPU from the daemon.
pub(crate) struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl HttpConn {
    pub(crate) async fn connect(addr: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConn {
            stream,
            buf: Vec::with_capacity(4_096),
        })
    }

    /// Sends one request and returns the status and body of its answer.
    pub(crate) async fn post(&mut self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/x-ndjson\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body).await?;
        self.buf.clear();
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4_096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the daemon closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line: {head}"))?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .with_context(|| format!("no content-length in {head}"))?;
        let mut body = self.buf[end..].to_vec();
        while body.len() < len {
            let mut chunk = vec![0u8; len - body.len()];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the daemon closed the connection mid-answer");
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Ok((status, body))
    }
}

/// Every body POSTed with `ack=committed`, one task per connection; rows/s until the last
/// 201.
async fn http_run(addr: &str, bodies: &[Vec<Bytes>], rows: usize) -> Result<PathRun> {
    let mut conns = Vec::new();
    for _ in bodies {
        conns.push(HttpConn::connect(addr).await?);
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut conn, mine) in conns.into_iter().zip(bodies.iter().cloned()) {
        tasks.spawn(async move {
            let mut h = latency_histogram()?;
            for body in mine {
                let t = Instant::now();
                let (status, answer) = conn.post("/api/ticks?ack=committed", &body).await?;
                ensure!(
                    status == 201,
                    "POST /api/ticks answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
                h.record(t.elapsed().as_micros() as u64)?;
            }
            anyhow::Ok(h)
        });
    }
    PathRun::gather(tasks, rows, start).await
}

/// An empty histogram of microseconds that grows to whatever it is given.
fn latency_histogram() -> Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new(3)?;
    h.auto(true);
    Ok(h)
}

impl PathRun {
    /// Waits for every connection's task, merges their latencies and takes rows/s from
    /// `start` to the last one's end.
    async fn gather(
        mut tasks: tokio::task::JoinSet<Result<Histogram<u64>>>,
        rows: usize,
        start: Instant,
    ) -> Result<Self> {
        let mut latency_us = latency_histogram()?;
        while let Some(r) = tasks.join_next().await {
            latency_us.add(&r??)?;
        }
        Ok(PathRun {
            rows_per_s: rows as f64 / start.elapsed().as_secs_f64(),
            latency_us,
        })
    }
}

/// Every frame sent over its connection with at most `window` unacknowledged; rows/s until
/// the last ack.
async fn tcp_run(
    addr: &str,
    frames: &[Vec<Vec<u8>>],
    window: usize,
    rows: usize,
) -> Result<PathRun> {
    let mut streams = Vec::new();
    for _ in frames {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        streams.push(s);
    }
    let frames: Vec<Arc<Vec<Vec<u8>>>> = frames.iter().cloned().map(Arc::new).collect();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (stream, mine) in streams.into_iter().zip(frames) {
        tasks.spawn(async move {
            let (mut r, mut w) = stream.into_split();
            let permits = Arc::new(tokio::sync::Semaphore::new(window));
            let sent_at = Arc::new(std::sync::Mutex::new(BTreeMap::<u64, Instant>::new()));
            let total = mine.len() as u64;
            let reader = {
                let (permits, sent_at) = (permits.clone(), sent_at.clone());
                tokio::spawn(async move {
                    let mut h = latency_histogram()?;
                    for _ in 0..total {
                        let mut len = [0u8; 4];
                        r.read_exact(&mut len).await?;
                        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                        r.read_exact(&mut body).await?;
                        let ack = frame::decode_ack(&body)?;
                        ensure!(ack.ok, "frame {} refused: {}", ack.seq, ack.error);
                        let t = sent_at
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&ack.seq);
                        if let Some(t) = t {
                            h.record(t.elapsed().as_micros() as u64)?;
                        }
                        permits.add_permits(1);
                    }
                    anyhow::Ok(h)
                })
            };
            for (i, f) in mine.iter().enumerate() {
                permits.acquire().await?.forget();
                sent_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(i as u64 + 1, Instant::now());
                w.write_all(f).await?;
            }
            let h = reader.await??;
            w.shutdown().await?;
            anyhow::Ok(h)
        });
    }
    PathRun::gather(tasks, rows, start).await
}
