//! `christmas-ingest replay FILE`: a Databento DBN file (MBP-1, `.dbn` or `.dbn.zst`) or a
//! CSV of trades or quotes into PostgreSQL (and Redis, when `REDIS_URL` is set), as fast as
//! possible or at recorded speed × N, with a progress bar and a summary.
//!
//! The files are read by core's readers ([`christmas_core::sources::csv`] describes the CSV
//! columns, [`christmas_core::sources::dbn`] the DBN mapping), which validate each tick by
//! its kind; the ticks go in through an [`Ingress`] like every other way in. A CSV without a
//! symbol column takes `--symbol`, else the six-letter pair in the file name
//! (`truefx-usdjpy-ticks.csv` → `USDJPY`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use christmas_core::fanout::FanoutConfig;
use christmas_core::sources::csv::CsvReader;
use christmas_core::sources::dbn::Mbp1TickReader;
use christmas_core::sources::TickSource;
use christmas_core::{AckLevel, IngestorConfig, Ingress, Sink, Ticks};

/// The CSV reader of replay, kept at its former path for the fuzz target.
pub use christmas_core::sources::csv::parse_csv;

/// Flags of `christmas-ingest replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The file: `.dbn`, `.dbn.zst` or `.csv`.
    pub file: PathBuf,
    /// 0: as fast as possible; N: the recorded pace × N.
    #[arg(long, default_value_t = 0.0)]
    pub speed: f64,
    /// Symbol of a CSV without a symbol column (default: from the file name).
    #[arg(long)]
    pub symbol: Option<String>,
    /// Shift every timestamp so the first tick is now (replayed history then looks live,
    /// and retention keeps it).
    #[arg(long)]
    pub rebase_to_now: bool,
    /// Shards per record kind.
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Redis to fan out to (unset: none).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplaySummary {
    /// Trades read and pushed.
    pub trades: u64,
    /// Quotes read and pushed.
    pub quotes: u64,
    /// Rows committed (trades + quotes).
    pub committed: u64,
    /// Rows the database rejected.
    pub dead_lettered: u64,
}

fn open(args: &ReplayArgs) -> Result<Box<dyn TickSource>> {
    let name = args.file.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".dbn") || name.ends_with(".dbn.zst") {
        Ok(Box::new(Mbp1TickReader::open(&args.file).with_context(
            || format!("opening {}", args.file.display()),
        )?))
    } else if name.ends_with(".csv") {
        Ok(Box::new(CsvReader::open(
            &args.file,
            args.symbol.as_deref(),
        )?))
    } else {
        bail!("{}: expected .dbn, .dbn.zst or .csv", args.file.display())
    }
}

/// Draws `[#####.....]  45%  12,345 ticks  98,765/s` on stderr (or a line a second when it
/// is not a terminal).
struct Progress {
    tty: bool,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new() -> Self {
        let now = Instant::now();
        Progress {
            tty: std::io::stderr().is_terminal(),
            started: now,
            last: now,
        }
    }

    fn tick(&mut self, done: Option<f64>, ticks: u64, force: bool) {
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        };
        if !force && self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let rate = ticks as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let bar = match done {
            Some(f) => {
                let f = f.clamp(0.0, 1.0);
                let filled = (f * 30.0) as usize;
                format!(
                    "[{}{}] {:>3.0}%  ",
                    "#".repeat(filled),
                    ".".repeat(30 - filled),
                    f * 100.0
                )
            }
            None => String::new(),
        };
        let line = format!("{bar}{ticks} ticks  {rate:.0}/s");
        let mut err = std::io::stderr();
        let _ = if self.tty {
            write!(err, "\r{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
}

/// Ticks pushed at once, at most.
const CHUNK: usize = 4_096;

/// Replays `args.file` into the database at `url`.
pub async fn run(url: &str, args: &ReplayArgs) -> Result<ReplaySummary> {
    if !(args.speed >= 0.0 && args.speed.is_finite()) {
        bail!("--speed must be 0 (as fast as possible) or a positive factor");
    }
    let mut source = open(args)?;
    let ingress = Ingress::start(IngestorConfig {
        sink: Some(Sink::Postgres(url.into())),
        shards: args.shards,
        stream: "replay".into(),
        fanout: args.redis_url.as_deref().map(FanoutConfig::new),
        ..IngestorConfig::default()
    })
    .await
    .context("starting the trade and quote pipelines")?;
    let mut summary = ReplaySummary::default();
    let mut ticks = Ticks::default();
    let mut progress = Progress::new();
    let wall_start = Instant::now();
    let mut first: Option<i64> = None;
    let mut offset = 0i64;
    while let Some(mut tick) = source.next_tick()? {
        let t = tick.time_ns();
        let t0 = *first.get_or_insert_with(|| {
            if args.rebase_to_now {
                offset = christmas_core::query::unix_ns(std::time::SystemTime::now()) - t;
            }
            t
        });
        if args.speed > 0.0 {
            let due = Duration::from_nanos(((t - t0).max(0) as f64 / args.speed) as u64);
            let ahead = due.saturating_sub(wall_start.elapsed());
            if ahead > Duration::from_millis(1) {
                // What is due goes in before the wait, so it is not held back by it.
                push(&ingress, &mut ticks, &mut summary).await?;
                tokio::time::sleep(ahead).await;
            }
        }
        tick.shift_time(offset);
        ticks.push(tick)?;
        if ticks.len() >= CHUNK {
            push(&ingress, &mut ticks, &mut summary).await?;
        }
        let read = summary.trades + summary.quotes + ticks.len() as u64;
        progress.tick(source.progress(), read, false);
    }
    push(&ingress, &mut ticks, &mut summary).await?;
    progress.tick(Some(1.0), summary.trades + summary.quotes, true);
    if progress.tty {
        eprintln!();
    }
    let totals = ingress.shutdown().await?;
    summary.committed = totals.rows_committed();
    summary.dead_lettered = totals.dead_lettered();
    Ok(summary)
}

/// Pushes the ticks read so far (accepted into the rings), counts them and empties `ticks`.
async fn push(ingress: &Ingress, ticks: &mut Ticks, summary: &mut ReplaySummary) -> Result<()> {
    if ticks.is_empty() {
        return Ok(());
    }
    ingress
        .push(ticks, AckLevel::Accepted)
        .await?
        .wait()
        .await?;
    summary.trades += ticks.trades().len() as u64;
    summary.quotes += ticks.quotes().len() as u64;
    ticks.clear();
    Ok(())
}
