//! Scenario `replay`: `christmas-ingest replay` (the release binary, as users run it) of a
//! 1 M-trade CSV and of a Databento DBN file of the same trades, against, in the same run,
//! parallel `psql \copy` of the same rows in binary (the ceiling), `psql \copy … csv` of the
//! CSV, and an asyncpg loader of the CSV (bench/peers/asyncpg_csv.py). Every contender is a
//! process timed from spawn to exit, into a table emptied before each run and counted after.

mod files;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use christmas_core::{Record, Trade};
use serde_json::{json, Value};

use crate::args::CommonArgs;
use crate::chart::{self, Bar};
use crate::ingest::ceiling_run;
use crate::pg;
use crate::run::{median, runs, runtime, Headline, Outcome, RunContext, Target};

/// PostgreSQL's settings the report quotes beside the figures.
const SETTINGS: &[&str] = &["fsync", "synchronous_commit"];

/// Flags of `christmas-bench replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Databases, repeats, `--quick`.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Trades in each file (300,000 with `--quick`).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: usize,
    /// Symbols of the synthetic market the trades come from.
    #[arg(long, default_value_t = 500)]
    pub symbols: usize,
    /// Shards of replay (`--shards`) and streams of the psql ceiling.
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// The christmas-ingest binary (default: target/release/christmas-ingest, built with
    /// `cargo build --release -p christmas-ingest` first).
    #[arg(long)]
    pub ingest_bin: Option<PathBuf>,
    /// Leave out the asyncpg loader.
    #[arg(long)]
    pub no_peers: bool,
    /// Skip the unrecorded warm-up run of each replay.
    #[arg(long)]
    pub no_warmup: bool,
    /// Pause after each TRUNCATE + CHECKPOINT, milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub settle_ms: u64,
}

/// The contenders, in the order each repeat runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Ceiling,
    ReplayCsv,
    ReplayDbn,
    PsqlCsv,
    Asyncpg,
}

impl Contender {
    const ALL: [Contender; 5] = [
        Contender::Ceiling,
        Contender::ReplayCsv,
        Contender::ReplayDbn,
        Contender::PsqlCsv,
        Contender::Asyncpg,
    ];

    fn key(self) -> &'static str {
        match self {
            Contender::Ceiling => "ceiling",
            Contender::ReplayCsv => "replay_csv",
            Contender::ReplayDbn => "replay_dbn",
            Contender::PsqlCsv => "psql_csv",
            Contender::Asyncpg => "asyncpg",
        }
    }
}

/// How the contenders are run: the binary, the database, the files.
struct Bench<'a> {
    args: &'a ReplayArgs,
    ingest_bin: PathBuf,
    url: String,
    inputs: files::Inputs,
    /// The venv's Python for the asyncpg loader; why not, when it cannot run.
    python: Result<PathBuf, String>,
}

impl Bench<'_> {
    /// Seconds `c` took to load every row (its process from spawn to exit).
    fn once(&self, c: Contender) -> Result<f64> {
        let i = &self.inputs;
        match c {
            Contender::Ceiling => ceiling_run::<Trade>(&self.url, &i.copy_files),
            Contender::ReplayCsv => self.replay(&i.csv),
            Contender::ReplayDbn => self.replay(&i.dbn),
            Contender::PsqlCsv => {
                let copy = format!(
                    "\\copy {} ({}) FROM '{}' WITH (FORMAT csv, HEADER true)",
                    Trade::DEFAULT_TABLE,
                    Trade::COLUMNS.join(", "),
                    i.csv.display()
                );
                let mut cmd = Command::new("psql");
                cmd.arg(&self.url)
                    .args(["-X", "-v", "ON_ERROR_STOP=1", "-qc"])
                    .arg(copy);
                timed("psql \\copy csv", &mut cmd)
            }
            Contender::Asyncpg => {
                let python = self.python.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
                let mut cmd = Command::new(python);
                cmd.arg(crate::report::bench_dir().join("peers/asyncpg_csv.py"))
                    .args(["--dsn", &self.url, "--csv"])
                    .arg(&i.csv);
                timed("the asyncpg loader", &mut cmd)
            }
        }
    }

    fn replay(&self, file: &Path) -> Result<f64> {
        let mut cmd = Command::new(&self.ingest_bin);
        cmd.arg("replay")
            .arg(file)
            .args(["--shards", &self.args.shards.to_string()])
            .env("DATABASE_URL", &self.url)
            .env_remove("REDIS_URL")
            .env_remove("CHRISTMAS_CONFIG");
        timed("christmas-ingest replay", &mut cmd)
    }
}

/// Runs `cmd` to its end; its wall time in seconds. Fails with its stderr's last lines.
fn timed(what: &str, cmd: &mut Command) -> Result<f64> {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {what}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        bail!("{what} failed ({}): {}", out.status, tail.join(" / "));
    }
    Ok(secs)
}

// Long: the warm-up and the repeats share its closure (reset, load, count) on one runtime.
pub fn run(ctx: &RunContext, mut args: ReplayArgs) -> Result<Outcome> {
    if args.common.plan(ctx.quick, 3) {
        args.rows = args.rows.min(300_000);
        args.settle_ms = args.settle_ms.min(1_000);
    }
    ensure!(
        args.common.repeats() >= 1 && args.shards >= 1 && args.rows >= 1,
        "repeats, shards and rows must be ≥ 1"
    );
    let contenders: Vec<Contender> = Contender::ALL
        .into_iter()
        .filter(|c| !(args.no_peers && *c == Contender::Asyncpg))
        .collect();
    let warmups = if args.no_warmup { 0 } else { 2 };
    let steps = 2 + warmups + contenders.len() * args.common.repeats();
    let bar = ctx.steps("replay", steps as u64);
    bar.set_message("christmas-ingest binary");
    let ingest_bin = match &args.ingest_bin {
        Some(p) => p.clone(),
        None => crate::scale::ingest_binary(&bar)?,
    };
    bar.inc(1);
    bar.set_message(format!(
        "fresh database christmas_bench_replay; {} trades as CSV, DBN and COPY files",
        args.rows
    ));
    let rt = runtime()?;
    let (url, client, settings) = rt.block_on(async {
        let url = pg::fresh_database(&args.common.services.url, "christmas_bench_replay").await?;
        let client = pg::connect(&url).await?;
        let settings = pg::settings(&client, SETTINGS).await?;
        anyhow::Ok((url, client, settings))
    })?;
    let trades = files::trades(args.rows, args.symbols, 7);
    let inputs = files::prepare(&trades, args.shards)?;
    drop(trades);
    let python = if args.no_peers {
        Err("left out (--no-peers)".to_string())
    } else {
        crate::peers::python().map_err(|e| format!("{e:#}"))
    };
    if let Err(why) = &python {
        crate::run::say(
            &bar,
            format!("replay: the asyncpg loader is skipped: {why}"),
        );
    }
    bar.inc(1);
    let bench = Bench {
        args: &args,
        ingest_bin,
        url,
        inputs,
        python,
    };
    let settle = Duration::from_millis(args.settle_ms);
    let n = args.rows as i64;
    let load = |c: Contender| -> Result<f64> {
        rt.block_on(pg::reset(&client, settle))?;
        let secs = bench.once(c)?;
        let got = rt.block_on(pg::count(&client, Trade::DEFAULT_TABLE))?;
        ensure!(got == n, "{} left {got} rows, expected {n}", c.key());
        Ok(secs)
    };
    if !args.no_warmup {
        for c in [Contender::ReplayCsv, Contender::ReplayDbn] {
            bar.set_message(format!("warm-up: {}", c.key()));
            let secs = load(c)?;
            crate::run::say(
                &bar,
                format!(
                    "replay warm-up (not recorded): {} {:.0} rows/s",
                    c.key(),
                    n as f64 / secs
                ),
            );
            bar.inc(1);
        }
    }
    let mut rates: Vec<(Contender, Vec<f64>)> = contenders.iter().map(|&c| (c, vec![])).collect();
    let mut skipped: Option<String> = bench.python.as_ref().err().cloned();
    for r in 0..args.common.repeats() {
        let mut line = format!("replay run {}:", r + 1);
        for (c, v) in rates.iter_mut() {
            bar.set_message(format!(
                "run {}/{}: {}",
                r + 1,
                args.common.repeats(),
                c.key()
            ));
            let skip = *c == Contender::Asyncpg && skipped.is_some();
            if !skip {
                match load(*c) {
                    Ok(secs) => {
                        v.push(n as f64 / secs);
                        line.push_str(&format!(" {} {:.0}", c.key(), n as f64 / secs));
                    }
                    // A peer that fails is reported as such; ours fail the scenario.
                    Err(e) if *c == Contender::Asyncpg => {
                        crate::run::say(&bar, format!("replay: asyncpg loader failed: {e:#}"));
                        skipped = Some(format!("it failed: {e:#}"));
                    }
                    Err(e) => return Err(e),
                }
            }
            bar.inc(1);
        }
        crate::run::say(&bar, format!("{line} rows/s"));
    }
    rt.block_on(pg::reset(&client, Duration::ZERO))?;
    let medians: Vec<(Contender, Option<f64>)> = rates
        .iter()
        .map(|(c, v)| (*c, (!v.is_empty()).then(|| median(v.clone()))))
        .collect();
    let of = |c: Contender| medians.iter().find(|m| m.0 == c).and_then(|m| m.1);
    let ceiling = of(Contender::Ceiling).context("no ceiling")?;
    bar.finish_with_message(format!(
        "replay CSV {:.2} of the ceiling, DBN {:.2}",
        of(Contender::ReplayCsv).unwrap_or(0.0) / ceiling,
        of(Contender::ReplayDbn).unwrap_or(0.0) / ceiling
    ));
    let asyncpg_version = bench.python.as_ref().ok().map(|py| asyncpg_version(py));
    report(
        ctx,
        &args,
        &Measured {
            settings,
            csv_bytes: bench.inputs.csv_bytes,
            shard_rows: bench.inputs.shard_rows.clone(),
            dbn_bytes: bench.inputs.dbn_bytes,
            rates: &rates,
            medians: &medians,
            asyncpg: asyncpg_version,
            skipped,
        },
    )
}

/// `asyncpg 0.32.0, Python 3.11.7` of the venv, or `asyncpg`.
fn asyncpg_version(python: &Path) -> String {
    let out = Command::new(python)
        .args([
            "-c",
            "import asyncpg, platform; print(f'asyncpg {asyncpg.__version__}, Python {platform.python_version()}')",
        ])
        .output();
    out.ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "asyncpg".into())
}

/// What the run measured, for its report.
struct Measured<'a> {
    settings: String,
    csv_bytes: u64,
    dbn_bytes: u64,
    /// The rows of each shard's COPY file.
    shard_rows: Vec<usize>,
    rates: &'a [(Contender, Vec<f64>)],
    medians: &'a [(Contender, Option<f64>)],
    /// The loader's version, when the venv exists.
    asyncpg: Option<String>,
    /// Why the asyncpg loader has no figure.
    skipped: Option<String>,
}

/// Report: the RESULTS.md section, the chart, the headlines and the JSON.
// Long: one RESULTS.md section and its JSON written top to bottom.
fn report(ctx: &RunContext, args: &ReplayArgs, m: &Measured<'_>) -> Result<Outcome> {
    let of = |c: Contender| m.medians.iter().find(|x| x.0 == c).and_then(|x| x.1);
    let ceiling = of(Contender::Ceiling).context("no ceiling")?;
    let asyncpg_name = m.asyncpg.clone().unwrap_or_else(|| "asyncpg".into());
    let name = |c: Contender| -> String {
        match c {
            Contender::Ceiling => format!(
                "parallel `psql \\copy` binary ({} streams), ceiling",
                args.shards
            ),
            Contender::ReplayCsv => "`christmas-ingest replay`, CSV".into(),
            Contender::ReplayDbn => "`christmas-ingest replay`, DBN (trades, zstd)".into(),
            Contender::PsqlCsv => "`psql \\copy … (FORMAT csv)`, one stream".into(),
            Contender::Asyncpg => format!("{asyncpg_name} loader of the CSV, one connection"),
        }
    };
    let mut md = format!(
        "## replay — `christmas-ingest replay` of a CSV and a DBN file, against `psql` and asyncpg\n\n\
         {provenance} · PostgreSQL {settings}; every process shares the machine\n\n\
         {rows} trades of the synthetic market ({symbols} symbols, 1 µs apart from now) into \
         `market_data` of a fresh database, written before any clock starts as: a CSV \
         (`{header}`, RFC 3339 times; {csv_mb:.0} MB), a Databento DBN file of the trades schema \
         written with the `dbn` crate's encoder, zstd-compressed ({dbn_mb:.0} MB), and one binary \
         COPY file per shard holding the rows replay's writer of that shard writes (its first \
         chunk's symbols dealt out by their rows, the rest by the hash; rows per shard {split}). \
         `christmas-ingest replay FILE --shards {shards}` is the release \
         binary as users run it (the file is its producer: hashed, every tick numbered); \
         `psql \\copy` of the CSV is one stream, as a user types it; the asyncpg loader \
         (`bench/peers/asyncpg_csv.py`) reads the CSV with Python's `csv` module and streams the \
         tuples into `copy_records_to_table` over one connection. Each is a process timed from \
         spawn to exit; before each run the table is emptied (TRUNCATE, CHECKPOINT, {settle} ms \
         pause) and after it its row count is checked. {warm}Median of {runs}, the contenders \
         alternating within each run.\n\n\
         | contender | rows/s | ratio to the ceiling | each run's ratio to its ceiling | their median | target |\n\
         |---|---|---|---|---|---|\n",
        provenance = ctx.provenance(),
        settings = m.settings,
        rows = args.rows,
        symbols = args.symbols,
        header = files::CSV_HEADER,
        csv_mb = m.csv_bytes as f64 / 1e6,
        dbn_mb = m.dbn_bytes as f64 / 1e6,
        shards = args.shards,
        split = m
            .shard_rows
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(" / "),
        settle = args.settle_ms,
        warm = if args.no_warmup {
            ""
        } else {
            "One unrecorded warm-up run of each replay first. "
        },
        runs = runs(args.common.repeats()),
    );
    for &(c, v) in m.medians {
        let target = match c {
            Contender::ReplayCsv | Contender::ReplayDbn => "≥ 0.90",
            _ => "—",
        };
        match v {
            Some(v) => md.push_str(&format!(
                "| {} | {v:.0} | **{:.2}** | {} | {} | {target} |\n",
                name(c),
                v / ceiling,
                per_run_ratios(m.rates, c).join(", "),
                median_run_ratio(m.rates, c).map_or("—".into(), |r| format!("{r:.2}")),
            )),
            None => md.push_str(&format!(
                "| {} | skipped: {} | — | — | — | — |\n",
                name(c),
                m.skipped.as_deref().unwrap_or("no run").replace('|', "\\|")
            )),
        }
    }
    md.push('\n');
    let bars: Vec<Bar> = m
        .medians
        .iter()
        .filter_map(|&(c, v)| {
            Some(Bar {
                label: match c {
                    Contender::Ceiling => "psql \\copy binary".into(),
                    Contender::ReplayCsv => "replay CSV".into(),
                    Contender::ReplayDbn => "replay DBN".into(),
                    Contender::PsqlCsv => "psql \\copy csv".into(),
                    Contender::Asyncpg => "asyncpg".into(),
                },
                value: v?,
                color: match c {
                    Contender::Ceiling => 1,
                    Contender::ReplayCsv | Contender::ReplayDbn => 0,
                    _ => 2,
                },
            })
        })
        .collect();
    let charts = vec![(
        "rows/s by contender".to_string(),
        ctx.write_chart(
            "replay-throughput",
            &chart::bar_chart(
                &format!("replay: committed rows/s, {} trades", args.rows),
                "rows/s",
                &bars,
                &["replay", "ceiling", "peers"],
            ),
        )?,
    )];
    let mut headlines = Vec::new();
    for c in [Contender::ReplayCsv, Contender::ReplayDbn] {
        if let Some(v) = of(c) {
            headlines.push(
                Headline::against(
                    format!("committed rows/s, {}", name(c)),
                    v,
                    "rows/s",
                    name(Contender::Ceiling),
                    ceiling,
                )
                .target(Target::RatioAtLeast(0.9)),
            );
        }
    }
    if let Some(csv) = of(Contender::ReplayCsv) {
        for peer in [Contender::PsqlCsv, Contender::Asyncpg] {
            if let Some(p) = of(peer) {
                headlines.push(Headline::against(
                    format!("committed rows/s, {}", name(Contender::ReplayCsv)),
                    csv,
                    "rows/s",
                    format!("{}, peer", name(peer)),
                    p,
                ));
            }
        }
    }
    let runs_json: serde_json::Map<String, Value> = m
        .rates
        .iter()
        .map(|(c, v)| (c.key().to_string(), json!(v)))
        .collect();
    let run_ratios_json: serde_json::Map<String, Value> = m
        .rates
        .iter()
        .map(|(c, _)| (c.key().to_string(), json!(median_run_ratio(m.rates, *c))))
        .collect();
    let medians_json: serde_json::Map<String, Value> = m
        .medians
        .iter()
        .map(|(c, v)| (c.key().to_string(), json!(v.map(f64::round))))
        .collect();
    let outcome = Outcome {
        scenario: "replay",
        headlines,
        json: json!({
            "scenario": "replay",
            "date": ctx.stamp,
            "command": ctx.command,
            "machine": crate::machine::describe(),
            "postgres": m.settings,
            "rows": args.rows,
            "symbols": args.symbols,
            "shards": args.shards,
            "repeats": args.common.repeats(),
            "csv_bytes": m.csv_bytes,
            "shard_rows": m.shard_rows,
            "dbn_bytes": m.dbn_bytes,
            "asyncpg": m.asyncpg,
            "asyncpg_skipped": m.skipped,
            "runs": runs_json,
            "medians": medians_json,
            "median_run_ratios": run_ratios_json,
        }),
        charts,
        markdown: String::new(),
    };
    outcome.publish(md)
}

/// `0.83, 0.88, 0.57`: each run's rows/s of `c` over the ceiling's in the same run (on a
/// busy machine the ceiling moves between runs, and these ratios move less than the
/// medians' ratio); `—` when they cannot be paired.
fn per_run_ratios(rates: &[(Contender, Vec<f64>)], c: Contender) -> Vec<String> {
    match run_ratios(rates, c) {
        Some(ratios) => ratios.iter().map(|r| format!("{r:.2}")).collect(),
        None => vec!["—".into()],
    }
}

/// Each run's rows/s of `c` over the ceiling's in the same run; `None` when a contender
/// that failed in some runs has fewer figures than the ceiling.
fn run_ratios(rates: &[(Contender, Vec<f64>)], c: Contender) -> Option<Vec<f64>> {
    let of = |c: Contender| rates.iter().find(|r| r.0 == c).map(|r| r.1.as_slice());
    let (ceiling, mine) = (of(Contender::Ceiling)?, of(c)?);
    (mine.len() == ceiling.len() && !mine.is_empty())
        .then(|| mine.iter().zip(ceiling).map(|(v, c)| v / c).collect())
}

/// The median of [`run_ratios`] (as the bench takes medians): the same-run comparison,
/// which a machine whose speed drifts during the bench moves less than the ratio of the
/// medians.
fn median_run_ratio(rates: &[(Contender, Vec<f64>)], c: Contender) -> Option<f64> {
    run_ratios(rates, c).map(median)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ratios_pair_each_run_with_its_own_ceiling() {
        let rates = vec![
            (Contender::Ceiling, vec![100.0, 200.0, 400.0]),
            (Contender::ReplayCsv, vec![90.0, 150.0, 380.0]),
            (Contender::Asyncpg, vec![50.0]),
        ];
        assert_eq!(
            per_run_ratios(&rates, Contender::ReplayCsv),
            ["0.90", "0.75", "0.95"]
        );
        // The medians' ratio would be 150 / 200 = 0.75; the runs' own ratios say 0.90.
        assert_eq!(median_run_ratio(&rates, Contender::ReplayCsv), Some(0.9));
        assert_eq!(median_run_ratio(&rates, Contender::Asyncpg), None);
        assert_eq!(per_run_ratios(&rates, Contender::Asyncpg), ["—"]);
        assert_eq!(median_run_ratio(&rates, Contender::ReplayDbn), None);
    }
}
