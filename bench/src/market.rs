//! The rows every scenario sends: a deterministic synthetic market (N symbols, Zipf
//! popularity, random-walk prices; `christmas_core::synthetic`) or a replay of a file
//! (tests/data's CME DBN and TrueFX CSV, or any MBP-1 DBN / trade or quote CSV), and the
//! encodings the contenders read them in: binary COPY files for `psql`, a fixed-layout file
//! for the Python peers, NDJSON bodies and TCP frames for the daemon.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use bytes::BytesMut;
use christmas_core::binary_copy::{HEADER, TRAILER};
use christmas_core::dbn_file::Mbp1Reader;
use christmas_core::frame::{FrameQuote, FrameTrade, IngestFrame};
use christmas_core::synthetic::{SyntheticMarket, Tick};
use christmas_core::{Quote, Record, ShardRouter, Side, Symbol, Trade};

use crate::report;

/// Which record kind a scenario sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Trades, into `market_data`.
    Trade,
    /// Quotes (top of book), into `quotes`.
    Quote,
}

/// Flags choosing the market.
#[derive(Debug, Clone, clap::Args)]
pub struct MarketArgs {
    /// Where rows come from: `synthetic`; `cme` (tests/data/glbx-futures-mbp-1.dbn.zst) or
    /// `truefx` (tests/data/truefx-usdjpy-ticks.csv), looped to the row count and restamped
    /// 1 µs apart from now; or a path to a .dbn, .dbn.zst or .csv file, treated the same way.
    #[arg(long, default_value = "synthetic")]
    pub source: String,
    /// Record kind: trades (`market_data`) or quotes (`quotes`). TrueFX files hold quotes only.
    #[arg(long, value_enum, default_value_t = Kind::Trade)]
    pub kind: Kind,
    /// Symbols of the synthetic market.
    #[arg(long, default_value_t = 500)]
    pub symbols: usize,
    /// Seed of the synthetic market (the same seed gives the same rows).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

impl MarketArgs {
    /// `1000000 trades from the synthetic market of …`: what a scenario sent, for a report.
    pub fn rows_of<R: BenchRecord>(&self, rows: usize) -> String {
        format!("{rows} {}s from the {}", R::NAME, self.describe())
    }

    /// `500 symbols (Zipf), seed 7` or `tests/data/… looped`, for a report.
    pub fn describe(&self) -> String {
        match self.source.as_str() {
            "synthetic" => format!(
                "synthetic market of {} symbols (Zipf popularity, random-walk prices, seed {})",
                self.symbols, self.seed
            ),
            _ => format!(
                "replay of `{}` (file order, looped to the row count, restamped 1 µs apart)",
                self.path().map_or_else(
                    |_| self.source.clone(),
                    |p| {
                        p.strip_prefix(report::bench_dir().join(".."))
                            .unwrap_or(&p)
                            .display()
                            .to_string()
                    }
                )
            ),
        }
    }

    fn path(&self) -> Result<PathBuf> {
        let data = report::bench_dir().join("../tests/data");
        Ok(match self.source.as_str() {
            "cme" => data.join("glbx-futures-mbp-1.dbn.zst"),
            "truefx" => data.join("truefx-usdjpy-ticks.csv"),
            "synthetic" => bail!("the synthetic market has no file"),
            other => PathBuf::from(other),
        })
    }
}

/// A record the harness can send every way it measures.
pub trait BenchRecord: Record + Send + 'static {
    /// `trade` or `quote`, as in the Python peers' row files.
    const NAME: &'static str;
    /// The next record of this kind from a synthetic market.
    fn synthetic(market: &mut SyntheticMarket) -> Self;
    /// This kind's record of a tick, if it is one.
    fn from_tick(tick: Tick) -> Option<Self>;
    fn set_time(&mut self, time_ns: i64);
    /// Appends one NDJSON line (`POST /api/ticks`).
    fn ndjson(&self, out: &mut String);
    /// Adds it to a TCP frame.
    fn push_to_frame(&self, frame: &mut IngestFrame);
    /// Appends its fixed-layout record for the Python peers (see bench/peers/rows.py).
    fn python_row(&self, out: &mut Vec<u8>);
}

fn symbol32(s: &Symbol, out: &mut Vec<u8>) {
    let mut b = [0u8; 32];
    let s = s.as_str().as_bytes();
    b[..s.len()].copy_from_slice(s);
    out.extend_from_slice(&b);
}

impl BenchRecord for Trade {
    const NAME: &'static str = "trade";

    fn synthetic(market: &mut SyntheticMarket) -> Self {
        market.next_trade()
    }

    fn from_tick(tick: Tick) -> Option<Self> {
        match tick {
            Tick::Trade(t) => Some(t),
            Tick::Quote(_) => None,
        }
    }

    fn set_time(&mut self, time_ns: i64) {
        self.time_ns = time_ns;
    }

    fn ndjson(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            r#"{{"kind":"trade","symbol":"{}","time_ns":{},"price":{},"volume":{},"side":"{}","exchange_seq":{}}}"#,
            self.symbol.as_str(),
            self.time_ns,
            self.price,
            self.volume,
            self.side.code() as char,
            self.exchange_seq
        );
    }

    fn push_to_frame(&self, frame: &mut IngestFrame) {
        frame.trades.push(FrameTrade {
            symbol: self.symbol.as_str().into(),
            time_ns: self.time_ns,
            price: self.price,
            volume: self.volume,
            side: self.side.code(),
            exchange_seq: self.exchange_seq,
        });
    }

    fn python_row(&self, out: &mut Vec<u8>) {
        // struct '<q32sddcq'
        out.extend_from_slice(&self.time_ns.to_le_bytes());
        symbol32(&self.symbol, out);
        out.extend_from_slice(&self.price.to_le_bytes());
        out.extend_from_slice(&self.volume.to_le_bytes());
        out.push(self.side.code());
        out.extend_from_slice(&self.exchange_seq.to_le_bytes());
    }
}

impl BenchRecord for Quote {
    const NAME: &'static str = "quote";

    fn synthetic(market: &mut SyntheticMarket) -> Self {
        loop {
            if let Some(Tick::Quote(q)) = market.next() {
                return q;
            }
        }
    }

    fn from_tick(tick: Tick) -> Option<Self> {
        match tick {
            Tick::Quote(q) => Some(q),
            Tick::Trade(_) => None,
        }
    }

    fn set_time(&mut self, time_ns: i64) {
        self.time_ns = time_ns;
    }

    fn ndjson(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            r#"{{"kind":"quote","symbol":"{}","time_ns":{},"bid":{},"ask":{},"bid_size":{},"ask_size":{}}}"#,
            self.symbol.as_str(),
            self.time_ns,
            self.bid,
            self.ask,
            self.bid_size,
            self.ask_size
        );
    }

    fn push_to_frame(&self, frame: &mut IngestFrame) {
        frame.quotes.push(FrameQuote {
            symbol: self.symbol.as_str().into(),
            time_ns: self.time_ns,
            bid: self.bid,
            ask: self.ask,
            bid_size: self.bid_size,
            ask_size: self.ask_size,
        });
    }

    fn python_row(&self, out: &mut Vec<u8>) {
        // struct '<q32sdddd'
        out.extend_from_slice(&self.time_ns.to_le_bytes());
        symbol32(&self.symbol, out);
        for v in [self.bid, self.ask, self.bid_size, self.ask_size] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

fn now_ns() -> i64 {
    christmas_core::query::unix_ns(std::time::SystemTime::now())
}

/// `rows` records of kind `R` from the chosen source, timestamped from now on.
pub fn generate<R: BenchRecord>(args: &MarketArgs, rows: usize) -> Result<Vec<R>> {
    if args.source == "synthetic" {
        ensure!(args.symbols >= 1, "--symbols must be ≥ 1");
        let mut m = SyntheticMarket::new(args.seed, args.symbols).starting_at(now_ns());
        return Ok((0..rows).map(|_| R::synthetic(&mut m)).collect());
    }
    let path = args.path()?;
    let base: Vec<R> = read_file(&path)?
        .into_iter()
        .filter_map(R::from_tick)
        .collect();
    ensure!(
        !base.is_empty(),
        "{} holds no {}s (pass --kind {})",
        path.display(),
        R::NAME,
        if R::NAME == "trade" { "quote" } else { "trade" }
    );
    // The recorded times would put most loops days into the future (and outside the
    // partitions the engine keeps ahead): rows go 1 µs apart from now instead.
    let start = now_ns();
    Ok((0..rows)
        .map(|i| {
            let mut r = base[i % base.len()];
            r.set_time(start + i as i64 * 1_000);
            r
        })
        .collect())
}

/// Every tick of a DBN (MBP-1) or CSV file, in file order.
fn read_file(path: &Path) -> Result<Vec<Tick>> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let mut out = Vec::new();
    if name.ends_with(".dbn") || name.ends_with(".dbn.zst") {
        let mut r =
            Mbp1Reader::open(path).with_context(|| format!("opening {}", path.display()))?;
        while let Some(t) = r.next_ticks()? {
            out.extend(t.trade.map(Tick::Trade));
            out.extend(t.quote.map(Tick::Quote));
        }
    } else if name.ends_with(".csv") {
        out = read_csv(path)?;
    } else {
        bail!("{}: expected .dbn, .dbn.zst or .csv", path.display());
    }
    Ok(out)
}

/// A plain CSV with a header: a time column (`time`, `timestamp`, `ts_event`: RFC 3339 or
/// integer ns), `symbol` (else the six-letter pair in the file name, as in
/// `truefx-usdjpy-ticks.csv`), and `price`,`volume` (trades) or `bid`,`ask` (quotes).
/// christmas-ingest's `replay` reads more layouts, but its reader is private.
fn read_csv(path: &Path) -> Result<Vec<Tick>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .context("empty CSV")?
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let col = |names: &[&str]| header.iter().position(|h| names.contains(&h.as_str()));
    let time = col(&["time", "timestamp", "ts_event", "time_ns"]).context("no time column")?;
    let symbol_col = col(&["symbol", "pair", "instrument"]);
    const CURRENCIES: &[&str] = &[
        "USD", "EUR", "JPY", "GBP", "CHF", "AUD", "CAD", "NZD", "SEK", "NOK", "HKD", "SGD", "CNH",
        "MXN", "ZAR", "TRY", "PLN", "XAU", "XAG",
    ];
    let is_code = |c: &str| CURRENCIES.contains(&c.to_ascii_uppercase().as_str());
    let file_symbol = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| {
            n.split(['-', '_', '.'])
                .find(|p| p.len() == 6 && p.is_ascii() && is_code(&p[..3]) && is_code(&p[3..]))
        })
        .map(|p| p.to_ascii_uppercase());
    let (price, volume, bid, ask) = (
        col(&["price"]),
        col(&["volume", "size"]),
        col(&["bid"]),
        col(&["ask"]),
    );
    let mut out = Vec::new();
    for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        let num = |i: usize| -> Result<f64> {
            get(i)
                .parse::<f64>()
                .with_context(|| format!("line {}: not a number", n + 2))
        };
        let time_ns = christmas_ingest::timefmt::parse_ns(get(time))
            .map_err(|e| anyhow::anyhow!("line {}: {e}", n + 2))?;
        let symbol = match (symbol_col, &file_symbol) {
            (Some(i), _) => Symbol::new(get(i))?,
            (None, Some(s)) => Symbol::new(s)?,
            (None, None) => bail!("{}: no symbol column or pair in the name", path.display()),
        };
        if let (Some(p), Some(v)) = (price, volume) {
            out.push(Tick::Trade(Trade {
                time_ns,
                symbol,
                price: num(p)?,
                volume: num(v)?,
                side: Side::None,
                exchange_seq: n as i64 + 1,
            }));
        } else if let (Some(b), Some(a)) = (bid, ask) {
            out.push(Tick::Quote(Quote {
                time_ns,
                symbol,
                bid: num(b)?,
                ask: num(a)?,
                bid_size: 0.0,
                ask_size: 0.0,
            }));
        } else {
            bail!(
                "{}: neither price,volume nor bid,ask columns",
                path.display()
            );
        }
    }
    Ok(out)
}

/// The rows split by `ShardRouter` into one list per shard: each producer thread (or psql
/// stream) owns its symbols, as the engine's shards do.
pub fn split_by_shard<R: BenchRecord>(rows: &[R], shards: usize) -> Vec<Vec<R>> {
    split_by_router(rows, &ShardRouter::new(shards))
}

/// The rows split by `router` into one list per shard.
pub fn split_by_router<R: BenchRecord>(rows: &[R], router: &ShardRouter) -> Vec<Vec<R>> {
    let shards = router.shards();
    let mut out: Vec<Vec<R>> = vec![Vec::with_capacity(rows.len() / shards + 1); shards];
    for r in rows {
        out[router.shard_for(r.symbol())].push(*r);
    }
    out
}

/// A temporary directory of the run, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "christmas-bench-{what}-{}-{}",
            std::process::id(),
            now_ns()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One binary COPY file per shard (header, rows, trailer), for `psql \copy`.
pub fn write_copy_files<R: BenchRecord>(
    dir: &Path,
    tag: &str,
    per_shard: &[Vec<R>],
) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for (i, rows) in per_shard.iter().enumerate() {
        let mut buf = BytesMut::with_capacity(rows.len() * R::MAX_ROW_BYTES + 32);
        buf.extend_from_slice(HEADER);
        for r in rows {
            r.encode_row(&mut buf);
        }
        buf.extend_from_slice(TRAILER);
        let path = dir.join(format!("{tag}-{i}.copy"));
        std::fs::File::create(&path)?.write_all(&buf)?;
        files.push(path);
    }
    Ok(files)
}

/// The rows for the Python peers: a header line `christmas-bench rows v1 <kind> <count>`
/// then fixed-layout little-endian records (bench/peers/rows.py reads them).
pub fn write_python_rows<R: BenchRecord>(path: &Path, rows: &[R]) -> Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "christmas-bench rows v1 {} {}", R::NAME, rows.len())?;
    let mut buf = Vec::with_capacity(80);
    for r in rows {
        buf.clear();
        r.python_row(&mut buf);
        w.write_all(&buf)?;
    }
    w.flush()?;
    Ok(())
}

/// NDJSON request bodies of `per_request` records each.
pub fn ndjson_bodies<R: BenchRecord>(rows: &[R], per_request: usize) -> Vec<bytes::Bytes> {
    rows.chunks(per_request.max(1))
        .map(|chunk| {
            let mut s = String::with_capacity(chunk.len() * 140);
            for r in chunk {
                r.ndjson(&mut s);
            }
            bytes::Bytes::from(s)
        })
        .collect()
}

/// Length-prefixed TCP ingest frames of `per_frame` records each, numbered from 1, asking
/// for `ack`; with `producer`, every frame names it and numbers its ticks (an idempotent
/// feed handler).
pub fn frames<R: BenchRecord>(
    rows: &[R],
    per_frame: usize,
    ack: christmas_core::frame::AckLevel,
    producer: Option<&str>,
) -> Result<Vec<Vec<u8>>> {
    let per_frame = per_frame.max(1);
    rows.chunks(per_frame)
        .enumerate()
        .map(|(i, chunk)| {
            let mut f = IngestFrame {
                seq: i as u64 + 1,
                ack: ack.code(),
                producer: producer.unwrap_or_default().to_string(),
                producer_seq: if producer.is_some() {
                    1 + (i * per_frame) as u64
                } else {
                    0
                },
                ..IngestFrame::default()
            };
            for r in chunk {
                r.push_to_frame(&mut f);
            }
            Ok(christmas_core::frame::encode_ingest(&f)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(source: &str) -> MarketArgs {
        MarketArgs {
            source: source.into(),
            kind: Kind::Trade,
            symbols: 50,
            seed: 7,
        }
    }

    #[test]
    fn synthetic_rows_are_deterministic_apart_from_time() {
        let a: Vec<Trade> = generate(&args("synthetic"), 1_000).unwrap();
        let b: Vec<Trade> = generate(&args("synthetic"), 1_000).unwrap();
        assert_eq!(a.len(), 1_000);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.symbol, x.price, x.volume), (y.symbol, y.price, y.volume));
        }
        let shards = split_by_shard(&a, 3);
        assert_eq!(shards.iter().map(Vec::len).sum::<usize>(), 1_000);
    }

    #[test]
    fn files_replay_looped() {
        let cme: Vec<Trade> = generate(&args("cme"), 500).unwrap();
        assert_eq!(cme.len(), 500);
        assert!(cme.windows(2).all(|w| w[1].time_ns > w[0].time_ns));
        let fx: Vec<Quote> = generate(&args("truefx"), 2_500).unwrap();
        assert_eq!(fx[0].symbol.as_str(), "USDJPY");
        assert!(
            fx.iter().all(|q| q.bid <= q.ask),
            "TrueFX quotes are crossed"
        );
        assert!(generate::<Trade>(&args("truefx"), 10).is_err());
    }

    #[test]
    fn encodings() {
        let rows: Vec<Trade> = generate(&args("synthetic"), 10).unwrap();
        let bodies = ndjson_bodies(&rows, 4);
        assert_eq!(bodies.len(), 3);
        let mut buf = Vec::new();
        rows[0].python_row(&mut buf);
        assert_eq!(buf.len(), 65);
        let f = frames(&rows, 4, christmas_core::frame::AckLevel::Committed, None).unwrap();
        assert_eq!(f.len(), 3);
        // Named: every frame carries the producer and its first tick's sequence.
        let f = frames(
            &rows,
            4,
            christmas_core::frame::AckLevel::Committed,
            Some("p"),
        )
        .unwrap();
        let third = christmas_core::frame::decode_ingest(&f[2][4..]).unwrap();
        assert_eq!((third.producer.as_str(), third.producer_seq), ("p", 9));
    }
}
