//! `christmas-ingest replay FILE`: a Databento DBN file (every tick schema, `.dbn` or
//! `.dbn.zst`) or a CSV of trades or quotes (generic, Databento, Tardis, Binance, HistData)
//! into PostgreSQL (and Redis, when `REDIS_URL` is set), as fast as possible or at recorded
//! speed × N, with a progress bar on stderr and the summary alone on stdout.
//!
//! The files are read by core's readers ([`christmas_core::sources`]: which file is which,
//! the CSV dialects and their columns, the DBN schemas and their mapping), which validate
//! each tick by its kind, on a thread of their own so that parsing runs beside the COPY;
//! the ticks go in through an [`Ingress`] like every other way in. A CSV without a symbol
//! column takes `--symbol`, else the six-letter pair in the file name
//! (`truefx-usdjpy-ticks.csv` → `USDJPY`).
//!
//! A file that cannot be read to its end (truncated, corrupt, a bad line) fails the replay
//! with an error naming where; the ticks before that point were pushed and are committed
//! (a prefix of the file, in file order), nothing after it. Ticks older than the database's
//! retention are refused unless `--retention-ok` (the next maintenance pass would delete
//! them) or `--rebase-to-now`.
//!
//! A file is loaded exactly once: it is an idempotent producer
//! ([`christmas_core::producer`]) named `file:<SHA-256 of its bytes>`, each tick numbered
//! by its position in the file. Running it again stores nothing new and says so; running
//! it again after a failure or a kill stores the rest, whatever was committed before.
//! `--producer NAME` names it yourself (a file fixed after a failure keeps its old name and
//! resumes); `--force` loads it again as new ticks, and so does `--rebase-to-now` (its
//! times differ on every run) unless a `--producer` is named.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use christmas_core::fanout::FanoutConfig;
use christmas_core::producer::ProducerId;
use christmas_core::sources::csv::CsvDialect;
use christmas_core::sources::timefmt::{format_ns, NaiveZone, TimeUnit};
use christmas_core::sources::{PendingHash, ReadOptions, ReplayFile};
use christmas_core::{AckLevel, IngestorConfig, Ingress, Sink, Symbol, SymbolShards, Tick, Ticks};
use tokio::sync::mpsc;

/// The CSV reader of replay, kept at its former path for the fuzz target.
pub use christmas_core::sources::csv::parse_csv;

/// Flags of `christmas-ingest replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The file: DBN (`.dbn`, `.dbn.zst`, told by its content) or CSV.
    pub file: PathBuf,
    /// 0: as fast as possible; N: the recorded pace × N.
    #[arg(long, default_value_t = 0.0)]
    pub speed: f64,
    /// Symbol of a CSV without a symbol column (default: from the file name: a currency pair
    /// like `eurusd-ticks.csv`, or Binance's `BTCUSDT-trades-2024-07-01.csv`).
    #[arg(long)]
    pub symbol: Option<String>,
    /// Shift every timestamp so the first tick is now (replayed history then looks live,
    /// and retention keeps it).
    #[arg(long)]
    pub rebase_to_now: bool,
    /// Shards per record kind.
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Redis to fan out to (unset or empty: none).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// The CSV dialect, when detection is not sure: csv, databento-csv, tardis, binance,
    /// histdata.
    #[arg(long = "format", value_name = "NAME")]
    pub format: Option<CsvDialect>,
    /// Unit of a CSV's integer times: s, ms, us or ns (default: the dialect's, else guessed
    /// from their magnitude, with a warning).
    #[arg(long, value_name = "UNIT")]
    pub time_unit: Option<TimeUnit>,
    /// Where a CSV's times written without an offset were taken: a fixed offset like
    /// -05:00, or a time zone name like America/New_York (its daylight saving time
    /// followed) (default: the dialect's, HistData's EST; else UTC, with a warning).
    #[arg(long, value_name = "ZONE", value_parser = NaiveZone::parse, allow_hyphen_values = true)]
    pub tz: Option<NaiveZone>,
    /// Load ticks older than the database's retention anyway (the next maintenance pass
    /// deletes them).
    #[arg(long)]
    pub retention_ok: bool,
    /// The producer the file's ticks are stored as (default `file:<SHA-256 of the file>`):
    /// what makes a second run store nothing new, and a run after a failure store the rest.
    #[arg(long, value_name = "NAME", conflicts_with = "force")]
    pub producer: Option<String>,
    /// Load the file again even if it was loaded before: its ticks are stored as new.
    #[arg(long)]
    pub force: bool,
}

impl ReplayArgs {
    /// The Redis to fan out to: none when unset or empty (`REDIS_URL=`), as for `serve`.
    pub fn redis(&self) -> Option<&str> {
        super::set_url(&self.redis_url)
    }

    /// Flags for replaying `file` as fast as possible with the defaults.
    pub fn new(file: impl Into<PathBuf>) -> Self {
        ReplayArgs {
            file: file.into(),
            speed: 0.0,
            symbol: None,
            rebase_to_now: false,
            shards: 2,
            redis_url: None,
            format: None,
            time_unit: None,
            tz: None,
            retention_ok: false,
            producer: None,
            force: false,
        }
    }
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
    /// Ticks left out because an earlier run of the same file (producer) stored them.
    pub already_stored: u64,
}

/// Draws `[#####.....]  45%  12345 ticks  98765/s` on stderr, five times a second, when
/// stderr is a terminal; nothing otherwise (a log gets the summary, not a line a second).
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
        if !self.tty || (!force && self.last.elapsed() < Duration::from_millis(200)) {
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
        let _ = write!(err, "\r{line}");
        let _ = err.flush();
    }
}

/// Ticks read into one chunk, at most: the unit the reader thread hands over. The first
/// chunk's symbols decide the shards ([`symbol_shards`]).
pub const CHUNK: usize = 4_096;

/// The shards a replay gives the symbols of its first chunk (the symbols of the file's
/// first [`CHUNK`] ticks, one item per tick): dealt out by their ticks, so the writers
/// finish together. By the hash of their names, a file whose few symbols carry most rows
/// keeps one writer busy long after the others. A symbol's rows still all go through one
/// shard, in order; symbols first seen later go by the hash. `None` for one shard.
pub fn symbol_shards<'a>(
    first_chunk: impl IntoIterator<Item = &'a Symbol>,
    shards: usize,
) -> Option<Arc<SymbolShards>> {
    if shards < 2 {
        return None;
    }
    let mut rows: HashMap<Symbol, u64> = HashMap::new();
    for symbol in first_chunk {
        *rows.entry(*symbol).or_insert(0) += 1;
    }
    Some(Arc::new(SymbolShards::balanced(rows, shards)))
}

/// A run of ticks read (shifted to now with `--rebase-to-now`), and how far into the file
/// the reader was after them.
struct Chunk {
    ticks: ChunkTicks,
    progress: Option<f64>,
}

/// A chunk's ticks, in the form its pushing needs.
enum ChunkTicks {
    /// In file order with their positions, to be paced at `--speed` one by one.
    Ordered(Vec<(u64, Tick)>),
    /// Each kind in file order with its positions + 1 (the producer's sequence numbers),
    /// pushed as they are (as fast as possible: the reader thread sorts them, not the
    /// thread that pushes).
    Ready {
        ticks: Ticks,
        trade_seqs: Vec<u64>,
        quote_seqs: Vec<u64>,
    },
}

impl Chunk {
    /// The symbol of each of its ticks.
    fn symbols(&self) -> Box<dyn Iterator<Item = &Symbol> + '_> {
        match &self.ticks {
            ChunkTicks::Ordered(ticks) => Box::new(ticks.iter().map(|(_, t)| t.symbol())),
            ChunkTicks::Ready { ticks, .. } => Box::new(
                (ticks.trades().iter().map(|t| &t.symbol))
                    .chain(ticks.quotes().iter().map(|q| &q.symbol)),
            ),
        }
    }

    /// The time of its oldest tick.
    fn oldest_ns(&self) -> Option<i64> {
        match &self.ticks {
            ChunkTicks::Ordered(ticks) => ticks.iter().map(|(_, t)| t.time_ns()).min(),
            ChunkTicks::Ready { ticks, .. } => {
                let trades = ticks.trades().iter().map(|t| t.time_ns);
                trades.chain(ticks.quotes().iter().map(|q| q.time_ns)).min()
            }
        }
    }
}

/// The reader thread: reads `file` to its end in chunks (ordered ones when `paced`),
/// shifting each tick to now when `rebase`; an error goes after the ticks read before it,
/// and ends the reading.
fn read_chunks(
    mut file: ReplayFile,
    paced: bool,
    rebase: bool,
    tx: mpsc::Sender<Result<Chunk, christmas_core::Error>>,
) {
    let mut offset = None;
    // Each kind's count in the last chunk: the next one is sized by it, not grown.
    let (mut trades, mut quotes) = (CHUNK, CHUNK);
    loop {
        let mut ticks = if paced {
            ChunkTicks::Ordered(Vec::with_capacity(CHUNK))
        } else {
            ChunkTicks::Ready {
                ticks: Ticks::with_capacity(trades, quotes),
                trade_seqs: Vec::with_capacity(trades),
                quote_seqs: Vec::with_capacity(quotes),
            }
        };
        let mut failed = None;
        let mut read = 0;
        while read < CHUNK {
            let (at, mut tick) = match file.next_tick() {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            if rebase {
                let t = tick.time_ns();
                let now = || christmas_core::query::unix_ns(std::time::SystemTime::now());
                tick.shift_time(*offset.get_or_insert_with(|| now() - t));
            }
            read += 1;
            match &mut ticks {
                ChunkTicks::Ordered(v) => v.push((at, tick)),
                ChunkTicks::Ready {
                    ticks,
                    trade_seqs,
                    quote_seqs,
                } => {
                    let seqs = match tick {
                        Tick::Trade(_) => trade_seqs,
                        Tick::Quote(_) => quote_seqs,
                    };
                    // Validated by the file's reader; a shifted time is checked again here.
                    if let Err(e) = ticks.push(tick) {
                        failed = Some(e.into());
                        break;
                    }
                    seqs.push(at + 1);
                }
            }
        }
        let end = read < CHUNK;
        if let ChunkTicks::Ready { ticks, .. } = &ticks {
            // The last chunk's mix and some room: a file whose mix changes grows them.
            trades = (ticks.trades().len() + CHUNK / 8).min(CHUNK);
            quotes = (ticks.quotes().len() + CHUNK / 8).min(CHUNK);
        }
        let chunk = Chunk {
            ticks,
            progress: file.progress(),
        };
        if tx.blocking_send(Ok(chunk)).is_err() {
            return;
        }
        if let Some(e) = failed {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        if end {
            return;
        }
    }
}

/// The database's retention (`christmas_settings.retention`), when it has one.
async fn retention(url: &str) -> Result<Option<Duration>> {
    let client = christmas_core::pg::connect_url(url, "christmas-replay")
        .await
        .context("connecting to the database")?;
    let row = client
        .query_opt(
            "SELECT extract(epoch FROM retention)::float8 FROM christmas_settings",
            &[],
        )
        .await
        .context(
            "reading the retention from christmas_settings (run `christmas-ingest migrate` first)",
        )?;
    let secs: Option<f64> = row.and_then(|r| r.get(0));
    Ok(secs.map(Duration::from_secs_f64))
}

/// Refuses (or, with `--retention-ok`, warns about) a file whose oldest tick of its first
/// chunk is older than the database keeps.
async fn check_retention(url: &str, args: &ReplayArgs, oldest_ns: i64) -> Result<()> {
    if args.rebase_to_now {
        return Ok(());
    }
    let keep = match retention(url).await {
        Ok(Some(keep)) => keep,
        Ok(None) => return Ok(()),
        // The COPY that follows says whether the database can be written at all; a role
        // that may not read the settings still may load.
        Err(e) => {
            eprintln!("warning: the file's age is not checked against the retention: {e:#}");
            return Ok(());
        }
    };
    let now = christmas_core::query::unix_ns(std::time::SystemTime::now());
    let cutoff = now.saturating_sub(keep.as_nanos().min(i64::MAX as u128) as i64);
    if oldest_ns >= cutoff {
        return Ok(());
    }
    let days = keep.as_secs_f64() / 86_400.0;
    let what = format!(
        "The file's ticks start at {}, older than the database's retention of {days:.0} days: \
         the next maintenance pass deletes them",
        format_ns(oldest_ns)
    );
    if args.retention_ok {
        eprintln!("warning: {what}. Loading them anyway (--retention-ok).");
        return Ok(());
    }
    bail!(
        "{what}. Pass --retention-ok to load them anyway, or --rebase-to-now to shift them to now."
    )
}

/// Records each shard's ring holds during a replay. A replay pushes chunks of thousands of
/// ticks, one ring slot each, so the 65,536 slots of the daemon's default sat mostly unused,
/// yet each ring's slot array (about 5 MB, four rings) was written through at start: a
/// quarter fewer page faults and about 25 MB less memory at a quarter of it. The batcher's
/// open batch (up to 50,000 rows) still buffers ahead of the writer.
const RING_RECORDS: usize = 16_384;

/// Replays `args.file` into the database at `url`.
pub async fn run(url: &str, args: &ReplayArgs) -> Result<ReplaySummary> {
    if !(args.speed >= 0.0 && args.speed.is_finite()) {
        bail!("--speed must be 0 (as fast as possible) or a positive factor");
    }
    let options = ReadOptions {
        symbol: args.symbol.clone(),
        dialect: args.format,
        time_unit: args.time_unit,
        tz: args.tz.clone(),
    };
    let path = args.file.display().to_string();
    let mut file =
        ReplayFile::open(&args.file, &options).with_context(|| format!("reading {path}"))?;
    for note in file.notes() {
        eprintln!("warning: {path}: {note}");
    }
    // The file's hash (its producer name), the pipelines' connections and the retention
    // check of the first chunk are waited for together: none needs another.
    let named = producer(args, &mut file)?;
    let kinds = file.kinds(); // the pipelines to start: a file of trades needs no quotes'
    let (tx, mut rx) = mpsc::channel(4);
    let (paced, rebase) = (args.speed > 0.0, args.rebase_to_now);
    let reader = std::thread::spawn(move || read_chunks(file, paced, rebase, tx));
    let hashed = named.resolve(&path);
    // The first chunk deals the file's symbols out to the shards: see symbol_shards.
    let first = rx.recv().await;
    let symbol_shards = match &first {
        Some(Ok(chunk)) => symbol_shards(chunk.symbols(), args.shards),
        _ => None,
    };
    let checked = async {
        if let Some(Ok(chunk)) = &first {
            if let Some(oldest) = chunk.oldest_ns() {
                check_retention(url, args, oldest).await?;
            }
        }
        anyhow::Ok(())
    };
    let config = IngestorConfig {
        sink: Some(Sink::Postgres(url.into())),
        shards: args.shards,
        stream: "replay".into(),
        ring_capacity: RING_RECORDS,
        fanout: args.redis().map(FanoutConfig::new),
        symbol_shards,
        ..IngestorConfig::default()
    };
    let started = async {
        Ingress::start_kinds(config, kinds)
            .await
            .context("starting the trade and quote pipelines")
    };
    let (producer, checked, ingress) = tokio::join!(hashed, checked, started);
    let (producer, ingress) = match (producer, checked, ingress) {
        (Ok(p), Ok(()), Ok(i)) => (p, i),
        (p, f, i) => {
            // Dropping the receiver ends the reader at its next chunk.
            drop(rx);
            let _ = reader.join();
            if let Ok(i) = &i {
                let _ = i.shutdown().await;
            }
            return Err(first_error([f.err(), p.err(), i.err()]));
        }
    };
    let mut pusher = Pusher::new(args, producer.clone());
    let mut failed = None;
    let mut next = first;
    while let Some(chunk) = next {
        match chunk {
            Ok(chunk) => {
                if let Err(e) = pusher.chunk(&ingress, chunk).await {
                    failed = Some(e);
                    break;
                }
            }
            Err(e) => {
                failed = Some(anyhow::Error::new(e).context(format!("reading {path}")));
                break;
            }
        }
        next = rx.recv().await;
    }
    drop(rx);
    let _ = reader.join();
    let pushed = pusher.finish(&ingress).await;
    let totals = ingress.shutdown().await?;
    let mut summary = pusher.summary;
    summary.committed = totals.rows_committed();
    summary.dead_lettered = totals.dead_lettered();
    summary.already_stored = totals.trades.producer_resends() + totals.quotes.producer_resends();
    match failed.or(pushed.err()) {
        None => Ok(summary),
        Some(e) => {
            let again = match &producer {
                Some(p) => format!(
                    "; run it again to store the rest (producer {p}; after fixing the file, add --producer {p})"
                ),
                None => String::new(),
            };
            Err(e.context(format!(
                "replay stopped; the {} ticks before that point were committed{again}",
                summary.committed
            )))
        }
    }
}

/// The producer a replay pushes as: none with `--force` or `--rebase-to-now` (new ticks
/// each run), the one `--producer` names, else the file's content hash (still being
/// computed on its own thread).
enum Named {
    Now(Option<ProducerId>),
    Hashing(PendingHash),
}

fn producer(args: &ReplayArgs, file: &mut ReplayFile) -> Result<Named> {
    Ok(match (&args.producer, args.force, args.rebase_to_now) {
        (_, true, _) | (None, false, true) => Named::Now(None),
        (Some(name), false, _) => Named::Now(Some(ProducerId::new(name).context("--producer")?)),
        (None, false, false) => match file.take_content_hash() {
            Some(pending) => Named::Hashing(pending),
            None => Named::Now(None),
        },
    })
}

impl Named {
    /// The producer, once the file's hash is known.
    async fn resolve(self, path: &str) -> Result<Option<ProducerId>> {
        let pending = match self {
            Named::Now(named) => return Ok(named),
            Named::Hashing(pending) => pending,
        };
        let hash = tokio::task::spawn_blocking(move || pending.wait())
            .await
            .context("the hashing thread")?
            .with_context(|| format!("hashing {path}"))?;
        Ok(Some(ProducerId::new(&format!("file:{}", hash.to_hex()))?))
    }
}

/// The first of errors where at least one is known to be.
fn first_error(errors: [Option<anyhow::Error>; 3]) -> anyhow::Error {
    errors
        .into_iter()
        .flatten()
        .next()
        .unwrap_or_else(|| anyhow::anyhow!("replay failed"))
}

/// The async side of a replay: paces, rebases and pushes what the reader thread read.
struct Pusher<'a> {
    args: &'a ReplayArgs,
    /// The file as a producer (`None` with `--force`), and the held ticks' positions + 1.
    producer: Option<ProducerId>,
    trade_seqs: Vec<u64>,
    quote_seqs: Vec<u64>,
    ticks: Ticks,
    summary: ReplaySummary,
    progress: Progress,
    wall_start: Instant,
    /// The first tick's time, which `--speed` paces from.
    first: Option<i64>,
}

impl<'a> Pusher<'a> {
    fn new(args: &'a ReplayArgs, producer: Option<ProducerId>) -> Self {
        Pusher {
            args,
            producer,
            trade_seqs: Vec::new(),
            quote_seqs: Vec::new(),
            ticks: Ticks::default(),
            summary: ReplaySummary::default(),
            progress: Progress::new(),
            wall_start: Instant::now(),
            first: None,
        }
    }

    /// Pushes one chunk's ticks, pacing them at `--speed`.
    async fn chunk(&mut self, ingress: &Ingress, chunk: Chunk) -> Result<()> {
        match chunk.ticks {
            ChunkTicks::Ready {
                ticks,
                trade_seqs,
                quote_seqs,
            } => {
                self.push(ingress).await?;
                (self.ticks, self.trade_seqs, self.quote_seqs) = (ticks, trade_seqs, quote_seqs);
                self.push(ingress).await?;
            }
            ChunkTicks::Ordered(ticks) => {
                for (at, tick) in ticks {
                    self.pace(ingress, tick.time_ns()).await?;
                    match tick {
                        Tick::Trade(_) => self.trade_seqs.push(at + 1),
                        Tick::Quote(_) => self.quote_seqs.push(at + 1),
                    }
                    self.ticks.push(tick)?;
                    if self.ticks.len() >= CHUNK {
                        self.push(ingress).await?;
                    }
                }
            }
        }
        let read = self.summary.trades + self.summary.quotes + self.ticks.len() as u64;
        self.progress.tick(chunk.progress, read, false);
        Ok(())
    }

    /// Waits until a tick at `t` is due at `--speed`, pushing what is due before the wait
    /// so it is not held back by it.
    async fn pace(&mut self, ingress: &Ingress, t: i64) -> Result<()> {
        let t0 = *self.first.get_or_insert(t);
        let due = Duration::from_nanos(((t - t0).max(0) as f64 / self.args.speed) as u64);
        let ahead = due.saturating_sub(self.wall_start.elapsed());
        if ahead > Duration::from_millis(1) {
            self.push(ingress).await?;
            tokio::time::sleep(ahead).await;
        }
        Ok(())
    }

    /// Pushes what is left and ends the progress line.
    async fn finish(&mut self, ingress: &Ingress) -> Result<()> {
        let pushed = self.push(ingress).await;
        self.progress
            .tick(Some(1.0), self.summary.trades + self.summary.quotes, true);
        if self.progress.tty {
            eprintln!();
        }
        pushed
    }

    /// Pushes the ticks held (accepted into the rings), counts them and empties them.
    async fn push(&mut self, ingress: &Ingress) -> Result<()> {
        if self.ticks.is_empty() {
            return Ok(());
        }
        let pushed = match &self.producer {
            Some(p) => {
                let (trades, quotes) = (&self.trade_seqs, &self.quote_seqs);
                ingress
                    .push_numbered(p, &self.ticks, trades, quotes, AckLevel::Accepted)
                    .await?
            }
            None => ingress.push(&self.ticks, AckLevel::Accepted).await?,
        };
        pushed.wait().await?;
        self.summary.trades += self.ticks.trades().len() as u64;
        self.summary.quotes += self.ticks.quotes().len() as u64;
        self.ticks.clear();
        self.trade_seqs.clear();
        self.quote_seqs.clear();
        Ok(())
    }
}
