//! `christmas-ingest replay FILE`: a Databento DBN file (MBP-1, `.dbn` or `.dbn.zst`) or a
//! CSV of trades or quotes into PostgreSQL (and Redis, when `REDIS_URL` is set), as fast as
//! possible or at recorded speed × N, with a progress bar and a summary.
//!
//! CSV files need a header. Columns (any order, case-insensitive): `time`/`timestamp`/
//! `ts_event` (RFC 3339 or integer ns) or `time_ns`; `symbol` (else `--symbol`, else the
//! six-letter pair in the file name, as in `truefx-usdjpy-ticks.csv` → `USDJPY`); trades
//! have `price` and `volume`/`size` (and optional `side`, `exchange_seq`); quotes have `bid`
//! and `ask` (and optional `bid_size`, `ask_size`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use christmas_core::dbn_file::Mbp1Reader;
use christmas_core::fanout::FanoutConfig;
use christmas_core::synthetic::Tick;
use christmas_core::{Quote, Side, Symbol, Trade};

use crate::timefmt::parse_ns;

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

/// A source of ticks and how far through it we are.
trait TickSource {
    fn next_tick(&mut self) -> Result<Option<Tick>>;
    /// Fraction done, when known.
    fn progress(&self) -> Option<f64>;
}

struct DbnSource {
    reader: Mbp1Reader,
    pending: Option<Quote>,
}

impl TickSource for DbnSource {
    fn next_tick(&mut self) -> Result<Option<Tick>> {
        if let Some(q) = self.pending.take() {
            return Ok(Some(Tick::Quote(q)));
        }
        loop {
            let Some(t) = self.reader.next_ticks()? else {
                return Ok(None);
            };
            match (t.trade, t.quote) {
                (Some(trade), quote) => {
                    self.pending = quote;
                    return Ok(Some(Tick::Trade(trade)));
                }
                (None, Some(q)) => return Ok(Some(Tick::Quote(q))),
                (None, None) => continue,
            }
        }
    }

    fn progress(&self) -> Option<f64> {
        None
    }
}

/// Column positions of a CSV header.
struct Columns {
    time: usize,
    time_is_ns: bool,
    symbol: Option<usize>,
    trade: Option<(usize, usize, Option<usize>, Option<usize>)>,
    quote: Option<(usize, usize, Option<usize>, Option<usize>)>,
}

struct CsvSource<R = std::fs::File> {
    reader: csv::Reader<R>,
    cols: Columns,
    symbol: Option<Symbol>,
    size: u64,
    record: csv::StringRecord,
    line: u64,
}

impl CsvSource {
    fn open(path: &Path, symbol: Option<&str>) -> Result<Self> {
        let size = std::fs::metadata(path)?.len();
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // Only used when the file has no symbol column.
        let symbol = match symbol {
            Some(s) => Some(Symbol::new(s)?),
            None => symbol_from_file_name(path),
        };
        CsvSource::from_reader(file, size, symbol)
            .with_context(|| format!("reading {}", path.display()))
    }
}

/// Parses a whole CSV of ticks held in memory, in the format of `replay` (see the module
/// docs); `symbol` is for a file without a symbol column. Stops at the first bad line.
pub fn parse_csv(bytes: &[u8], symbol: Option<Symbol>) -> Result<Vec<Tick>> {
    let mut source = CsvSource::from_reader(bytes, bytes.len() as u64, symbol)?;
    let mut ticks = Vec::new();
    while let Some(t) = source.next_tick()? {
        ticks.push(t);
    }
    Ok(ticks)
}

impl<R: std::io::Read> CsvSource<R> {
    /// Reads the header; `size` is the input's length in bytes (for progress).
    fn from_reader(reader: R, size: u64, symbol: Option<Symbol>) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(reader);
        let header: Vec<String> = reader
            .headers()
            .context("reading the CSV header")?
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let col = |names: &[&str]| header.iter().position(|h| names.contains(&h.as_str()));
        let (time, time_is_ns) = match (
            col(&["time", "timestamp", "ts_event", "datetime"]),
            col(&["time_ns"]),
        ) {
            (Some(t), _) => (t, false),
            (None, Some(t)) => (t, true),
            _ => bail!("the CSV header has no time column (time, timestamp, ts_event or time_ns)"),
        };
        let trade = match (col(&["price"]), col(&["volume", "size", "qty", "quantity"])) {
            (Some(p), Some(v)) => Some((p, v, col(&["side"]), col(&["exchange_seq", "sequence"]))),
            _ => None,
        };
        let quote = match (col(&["bid"]), col(&["ask"])) {
            (Some(b), Some(a)) => Some((b, a, col(&["bid_size"]), col(&["ask_size"]))),
            _ => None,
        };
        if trade.is_none() && quote.is_none() {
            bail!("the CSV header has neither price and volume (trades) nor bid and ask (quotes)");
        }
        let symbol_col = col(&["symbol", "instrument", "pair"]);
        let symbol = match (symbol_col, symbol) {
            (Some(_), _) => None,
            (None, Some(s)) => Some(s),
            (None, None) => bail!("the CSV has no symbol column; pass --symbol"),
        };
        Ok(CsvSource {
            reader,
            cols: Columns {
                time,
                time_is_ns,
                symbol: symbol_col,
                trade,
                quote,
            },
            symbol,
            size: size.max(1),
            record: csv::StringRecord::new(),
            line: 1,
        })
    }
}

/// Currency codes a file name's pair is made of.
const CURRENCIES: &[&str] = &[
    "USD", "EUR", "JPY", "GBP", "CHF", "AUD", "CAD", "NZD", "SEK", "NOK", "DKK", "HKD", "SGD",
    "CNH", "CNY", "MXN", "ZAR", "TRY", "PLN", "HUF", "CZK", "INR", "KRW", "BRL", "XAU", "XAG",
];

/// `truefx-usdjpy-ticks.csv` → `USDJPY`: the one part of the name that is two currency codes.
fn symbol_from_file_name(path: &Path) -> Option<Symbol> {
    let stem = path.file_name()?.to_str()?.split('.').next()?;
    let is_code = |c: &str| CURRENCIES.contains(&c.to_ascii_uppercase().as_str());
    let mut pairs = stem
        .split(['-', '_'])
        .filter(|p| p.len() == 6 && p.is_ascii() && is_code(&p[..3]) && is_code(&p[3..]));
    let pair = pairs.next()?;
    if pairs.next().is_some() {
        return None;
    }
    Symbol::new(&pair.to_ascii_uppercase()).ok()
}

impl<R: std::io::Read> TickSource for CsvSource<R> {
    fn next_tick(&mut self) -> Result<Option<Tick>> {
        if !self.reader.read_record(&mut self.record)? {
            return Ok(None);
        }
        self.line += 1;
        let line = self.line;
        let field = |i: usize, name: &str| -> Result<&str> {
            self.record
                .get(i)
                .with_context(|| format!("line {line}: no {name} field"))
        };
        let num = |i: usize, name: &str| -> Result<f64> {
            field(i, name)?
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .with_context(|| format!("line {line}: {name} is not a number"))
        };
        let t = field(self.cols.time, "time")?;
        let time_ns = if self.cols.time_is_ns {
            t.parse::<i64>()
                .with_context(|| format!("line {line}: time_ns is not an integer"))?
        } else {
            parse_ns(t).map_err(|e| anyhow::anyhow!("line {line}: {e}"))?
        };
        let symbol = match (self.symbol, self.cols.symbol) {
            (Some(s), _) => s,
            (None, Some(i)) => {
                Symbol::new(field(i, "symbol")?).with_context(|| format!("line {line}: symbol"))?
            }
            (None, None) => bail!("no symbol"),
        };
        if let Some((p, v, side, seq)) = self.cols.trade {
            let side = match side.map(|i| field(i, "side")).transpose()? {
                Some("B" | "b" | "buy" | "Buy" | "BUY") => Side::Buy,
                Some("S" | "s" | "A" | "sell" | "Sell" | "SELL") => Side::Sell,
                _ => Side::None,
            };
            let exchange_seq = match seq {
                Some(i) => field(i, "exchange_seq")?.parse().unwrap_or(0),
                None => 0,
            };
            return Ok(Some(Tick::Trade(Trade {
                time_ns,
                symbol,
                price: num(p, "price")?,
                volume: num(v, "volume")?,
                side,
                exchange_seq,
            })));
        }
        let Some((b, a, bs, asz)) = self.cols.quote else {
            bail!("no trade or quote columns")
        };
        Ok(Some(Tick::Quote(Quote {
            time_ns,
            symbol,
            bid: num(b, "bid")?,
            ask: num(a, "ask")?,
            bid_size: bs.map(|i| num(i, "bid_size")).transpose()?.unwrap_or(0.0),
            ask_size: asz.map(|i| num(i, "ask_size")).transpose()?.unwrap_or(0.0),
        })))
    }

    fn progress(&self) -> Option<f64> {
        Some(self.reader.position().byte() as f64 / self.size as f64)
    }
}

fn open(args: &ReplayArgs) -> Result<Box<dyn TickSource>> {
    let name = args.file.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".dbn") || name.ends_with(".dbn.zst") {
        Ok(Box::new(DbnSource {
            reader: Mbp1Reader::open(&args.file)
                .with_context(|| format!("opening {}", args.file.display()))?,
            pending: None,
        }))
    } else if name.ends_with(".csv") {
        Ok(Box::new(CsvSource::open(
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

/// Replays `args.file` into the database at `url`.
pub async fn run(url: &str, args: &ReplayArgs) -> Result<ReplaySummary> {
    if !(args.speed >= 0.0 && args.speed.is_finite()) {
        bail!("--speed must be 0 (as fast as possible) or a positive factor");
    }
    let mut source = open(args)?;
    let fanout = args.redis_url.as_deref().map(FanoutConfig::new);
    let (trades, quotes) = crate::pipelines::start(
        url,
        crate::pipelines::Batching::shards(args.shards),
        "replay",
        fanout,
        None,
    )
    .await?;
    let mut summary = ReplaySummary::default();
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
                tokio::time::sleep(ahead).await;
            }
        }
        tick.shift_time(offset);
        match tick {
            Tick::Trade(t) => {
                trades.push_async(t).await?;
                summary.trades += 1;
            }
            Tick::Quote(q) => {
                quotes.push_async(q).await?;
                summary.quotes += 1;
            }
        }
        progress.tick(source.progress(), summary.trades + summary.quotes, false);
    }
    progress.tick(Some(1.0), summary.trades + summary.quotes, true);
    if progress.tty {
        eprintln!();
    }
    let t = trades.shutdown().await?;
    let q = quotes.shutdown().await?;
    summary.committed = t.rows_committed() + q.rows_committed();
    summary.dead_lettered = t.dead_lettered() + q.dead_lettered();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_from_file_name() {
        let s = |p: &str| symbol_from_file_name(Path::new(p)).map(|s| s.as_str().to_string());
        assert_eq!(s("data/truefx-usdjpy-ticks.csv").as_deref(), Some("USDJPY"));
        assert_eq!(s("eurusd.csv").as_deref(), Some("EURUSD"));
        assert_eq!(s("ticks.csv"), None);
        assert_eq!(s("eurusd-usdjpy.csv"), None);
    }

    #[test]
    fn csv_from_memory() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/truefx-usdjpy-ticks.csv");
        let bytes = std::fs::read(path).unwrap();
        let usdjpy = Symbol::new("USDJPY").unwrap();
        let ticks = parse_csv(&bytes, Some(usdjpy)).unwrap();
        assert_eq!(ticks.len(), 1_000);
        assert!(matches!(ticks[0], Tick::Quote(q) if q.symbol == usdjpy && q.bid == 86.655));
        let e = parse_csv(&bytes, None).unwrap_err().to_string();
        assert!(e.contains("no symbol column"), "{e}");
        let bad = b"time_ns,symbol,price,volume\n1,ES,NaN,1\n";
        assert!(parse_csv(bad, None).is_err());
    }
}
