//! `christmas-bench`: measures Christmas against a ceiling or a peer measured in the same run,
//! and writes the figures to `bench/RESULTS.md`, `bench/results/*.json` and SVG charts under
//! `bench/results/<date>/`.
//!
//! ## Layout
//!
//! | module | what it is |
//! |---|---|
//! | `all` (here) | every scenario in turn, then the summary |
//! | [`core_benches`], [`ingest`], [`daemon`], [`replay`], [`fanout`], [`orders`] (with [`orders_open`]), [`scale`] | the scenarios |
//! | [`market`] | the rows: synthetic market or file replay, and their encodings |
//! | [`peers`] | the Python peers of `ingest` (bench/peers/) |
//! | [`loadgen`], [`openloop`], [`locust`] | wrk and siege; the open-loop orders generator; Locust in the bench's venv |
//! | [`args`] | the flags every scenario takes ([`args::CommonArgs`]) |
//! | [`pg`], [`services`] | fresh databases, resets; the local PostgreSQL and Redis |
//! | [`run`], [`report`], [`chart`], [`machine`] | run context and progress, RESULTS.md and JSON, SVG, machine description |

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

// The daemon's allocator, so the orders scenario measures what christmas-ingest runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod chart;
mod core_benches;
mod daemon;
mod fanout;
mod ingest;
mod loadgen;
mod locust;
mod machine;
mod market;
mod openloop;
mod order_events;
mod orders;
mod orders_open;
mod peers;
mod pg;
mod replay;
mod report;
mod run;
mod scale;
mod services;
mod soak;
mod sse;

use run::{Outcome, RunContext};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags of `christmas-bench all`.
#[derive(Debug, Args)]
struct AllArgs {
    /// Shorter runs, one repeat and a reduced sweep in every scenario (< 5 minutes here).
    #[arg(long)]
    quick: bool,
    /// Only these scenarios (comma-separated: core,ingest,daemon,replay,fanout,orders,scale).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Not these scenarios.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
}

/// Flags of `christmas-bench core`.
#[derive(Debug, Args)]
struct CoreArgs {
    /// Shorter criterion warm-up and measurement.
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every scenario in turn (starting or reusing the local services), then the summary:
    /// bench/results/<date>.json and .md, charts in bench/results/<date>/, bench/RESULTS.md.
    All(AllArgs),
    /// Run the criterion benches of christmas-core and summarise them against the floors.
    Core(CoreArgs),
    /// Embedded engine → PostgreSQL vs parallel `psql \copy (FORMAT binary)` of the same
    /// pre-encoded rows and vs Python asyncpg / psycopg loaders, over shards × batch sizes;
    /// push → commit latency at 50 % load; peak RSS.
    Ingest(ingest::IngestArgs),
    /// The same rows through the daemon: POST /api/ticks (NDJSON) and the TCP listener,
    /// against the psql ceiling and the embedded engine.
    Daemon(daemon::DaemonArgs),
    /// `christmas-ingest replay` of a 1 M-trade CSV and of a DBN file of the same trades,
    /// against parallel `psql \copy` binary (the ceiling), `psql \copy … csv` and an
    /// asyncpg loader of the CSV.
    Replay(replay::ReplayArgs),
    /// Redis fan-out: ticks/s delivered to one subscriber vs redis-benchmark PUBLISH of the
    /// same payload size; push → subscriber latency; PostgreSQL throughput with Redis down.
    Fanout(fanout::FanoutArgs),
    /// SSE subscribers of GET /api/stream while the engine ingests (not part of `all`).
    Sse(sse::SseArgs),
    /// POST /api/orders open-loop at fixed offered loads and under wrk -c400, against a
    /// naive one-INSERT-per-request baseline; siege on GET /api/market-data; Locust on both.
    Orders(orders::OrdersArgs),
    /// 1 vs 3 christmas-ingest processes behind nginx least_conn, under the same wrk load.
    Scale(scale::ScaleArgs),
    /// The release daemon for a long run at half its measured ceiling, with fan-out, spool
    /// and orders: RSS, latency and errors per minute (30 minutes by default).
    Soak(soak::SoakArgs),
    /// (internal) Run the engine at full speed with default settings and print peak RSS.
    #[command(hide = true)]
    RssProbe(ingest::RssProbeArgs),
}

/// A scenario's flags with every default (and the URLs from the environment).
fn defaults<T: Args>() -> Result<T> {
    #[derive(Debug, Parser)]
    struct Wrap<T: Args> {
        #[command(flatten)]
        inner: T,
    }
    Ok(Wrap::<T>::try_parse_from(["christmas-bench"])?.inner)
}

const SCENARIOS: &[&str] = &[
    "core", "ingest", "daemon", "replay", "fanout", "orders", "scale",
];

fn run_scenario(ctx: &RunContext, name: &str) -> Result<Outcome> {
    match name {
        "core" => core_benches::run(ctx),
        "ingest" => ingest::run(ctx, defaults()?),
        "daemon" => daemon::run(ctx, defaults()?),
        "replay" => replay::run(ctx, defaults()?),
        "fanout" => fanout::run(ctx, defaults()?),
        "orders" => orders::run(ctx, defaults()?),
        "scale" => scale::run(ctx, defaults()?),
        other => anyhow::bail!("no scenario {other:?}; one of {SCENARIOS:?}"),
    }
}

fn all(args: AllArgs) -> Result<()> {
    for n in args.only.iter().chain(&args.skip) {
        anyhow::ensure!(
            SCENARIOS.contains(&n.as_str()),
            "no scenario {n:?}; one of {SCENARIOS:?}"
        );
    }
    let ctx = RunContext::new(args.quick);
    let started = Instant::now();
    let chosen: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| o == s))
        .filter(|s| !args.skip.iter().any(|o| o == s))
        .collect();
    let overall = ctx.steps("all", chosen.len() as u64);
    let mut outcomes = Vec::new();
    let mut durations = Vec::new();
    for name in &chosen {
        overall.set_message(format!(
            "{name} (elapsed {:.0} s)",
            started.elapsed().as_secs_f64()
        ));
        let t = Instant::now();
        let r = run_scenario(&ctx, name);
        match &r {
            Ok(_) => crate::run::say(
                &overall,
                format!("== {name} done in {:.0} s", t.elapsed().as_secs_f64()),
            ),
            Err(e) => crate::run::say(&overall, format!("== {name} FAILED: {e:#}")),
        }
        durations.push((name.to_string(), t.elapsed().as_secs_f64()));
        outcomes.push(r.map_err(|e| (name.to_string(), format!("{e:#}"))));
        overall.inc(1);
    }
    let wall = started.elapsed().as_secs_f64();
    overall.finish_with_message(format!("{wall:.0} s"));
    let (json, md) = report::write_all(&ctx, &outcomes, &durations, wall)?;
    println!(
        "all: {wall:.0} s; wrote bench/RESULTS.md, {}, {} and bench/results/{}/*.svg",
        json.display(),
        md.display(),
        ctx.date()
    );
    let failed: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().err())
        .map(|(name, cause)| {
            eprintln!("error: {name}: {}", one_line(cause));
            name.as_str()
        })
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "{} of {} scenarios failed ({})",
        failed.len(),
        chosen.len(),
        failed.join(", ")
    );
    Ok(())
}

/// A cause chain (`{:#}`) on one line: tool output quoted in it may span several.
fn one_line(cause: &str) -> String {
    cause.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs one scenario on its own and writes its JSON next to the others.
fn single(name: &str, quick: bool, f: impl FnOnce(&RunContext) -> Result<Outcome>) -> Result<()> {
    let ctx = RunContext::new(quick);
    let outcome = f(&ctx).with_context(|| name.to_string())?;
    let path = report::write_json(
        outcome.scenario,
        &ctx.stamp,
        &(serde_json::to_string_pretty(&outcome.json)? + "\n"),
    )?;
    eprintln!("wrote bench/RESULTS.md and {}", path.display());
    Ok(())
}

/// A failure is one line, `error: <scenario>: <cause chain>`, and exit status 1: the error's
/// `{:#}`, not the `Debug` that `main() -> Result` prints (a backtrace when RUST_BACKTRACE or
/// RUST_LIB_BACKTRACE is set).
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    // The scenarios that need PostgreSQL and Redis start (or reuse) them before the flags
    // are read, so DATABASE_URL and REDIS_URL defaults come from scripts/services.sh.
    let needs_services = std::env::args().nth(1).is_some_and(|c| {
        [
            "all", "ingest", "daemon", "replay", "fanout", "orders", "scale", "soak", "sse",
        ]
        .contains(&c.as_str())
    }) && !std::env::args().any(|a| a == "--help" || a == "-h");
    if needs_services {
        services::ensure().context("services")?;
    }
    let cli = Cli::parse();
    match cli.command {
        Command::All(args) => all(args),
        Command::Core(args) => single("core", args.quick, core_benches::run),
        Command::Ingest(args) => single("ingest", args.load.common.quick, |c| ingest::run(c, args)),
        Command::Daemon(args) => single("daemon", args.load.common.quick, |c| daemon::run(c, args)),
        Command::Replay(args) => single("replay", args.common.quick, |c| replay::run(c, args)),
        Command::Fanout(args) => single("fanout", args.common.quick, |c| fanout::run(c, args)),
        Command::Sse(args) => single("sse", args.common.quick, |c| sse::run(c, args)),
        Command::Orders(args) => single("orders", args.common.quick, |c| orders::run(c, args)),
        Command::Scale(args) => single("scale", args.common.quick, |c| scale::run(c, args)),
        Command::Soak(args) => soak::run(args),
        Command::RssProbe(args) => ingest::rss_probe(args),
    }
}
