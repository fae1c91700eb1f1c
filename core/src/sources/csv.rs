//! CSV files of trades or quotes as ticks, each checked by its kind's `validate`.
//!
//! A file needs a header. Columns (any order, case-insensitive): `time`/`timestamp`/
//! `ts_event`/`datetime` (RFC 3339 or integer ns) or `time_ns`; `symbol`/`instrument`/`pair`
//! (else the symbol given by the caller, see [`symbol_from_file_name`]); trades have `price`
//! and `volume`/`size`/`qty`/`quantity` (and optional `side`, `exchange_seq`/`sequence`);
//! quotes have `bid` and `ask` (and optional `bid_size`, `ask_size`, 0 when absent).
//!
//! A side is read by [`Side::from_text`] (`B`, `buy`, `S`, `sell`, `A`, `ask`, … in any case);
//! an empty side cell is [`Side::None`], and a side it cannot read is an error naming the
//! line. A bad line stops the reading with an error naming the line and the field.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};
use crate::record::{Quote, Side, Tick, Trade};
use crate::sources::timefmt::parse_ns;
use crate::sources::TickSource;
use crate::symbol::Symbol;

/// Column positions of a header.
#[derive(Debug, Clone, Copy)]
struct Columns {
    time: usize,
    time_is_ns: bool,
    symbol: Option<usize>,
    trade: Option<TradeColumns>,
    quote: Option<QuoteColumns>,
}

#[derive(Debug, Clone, Copy)]
struct TradeColumns {
    price: usize,
    volume: usize,
    side: Option<usize>,
    exchange_seq: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
struct QuoteColumns {
    bid: usize,
    ask: usize,
    bid_size: Option<usize>,
    ask_size: Option<usize>,
}

/// Reads a CSV of trades or quotes tick by tick, reusing one record buffer.
#[derive(Debug)]
pub struct CsvReader<R = std::fs::File> {
    reader: ::csv::Reader<R>,
    cols: Columns,
    /// The symbol of every tick, when the file has no symbol column.
    symbol: Option<Symbol>,
    /// The input's length in bytes, for [`CsvReader::progress`].
    size: u64,
    record: ::csv::StringRecord,
    /// The line of the record read last (the header is line 1).
    line: u64,
}

fn csv_error(reason: impl std::fmt::Display) -> Error {
    Error::field("csv", reason)
}

impl CsvReader {
    /// Opens `path`. `symbol` is for a file without a symbol column; without it, the
    /// symbol comes from the file name ([`symbol_from_file_name`]).
    pub fn open(path: &Path, symbol: Option<&str>) -> Result<Self> {
        let in_file = |e: &dyn std::fmt::Display| csv_error(format!("{}: {e}", path.display()));
        let size = std::fs::metadata(path).map_err(|e| in_file(&e))?.len();
        let file = std::fs::File::open(path).map_err(|e| in_file(&e))?;
        let symbol = match symbol {
            Some(s) => Some(Symbol::new(s)?),
            None => symbol_from_file_name(path),
        };
        CsvReader::from_reader(file, size, symbol).map_err(|e| in_file(&e))
    }
}

/// Reads a whole CSV held in memory; `symbol` is for a file without a symbol column. Stops
/// at the first bad line.
pub fn parse_csv(bytes: &[u8], symbol: Option<Symbol>) -> Result<Vec<Tick>> {
    let mut reader = CsvReader::from_reader(bytes, bytes.len() as u64, symbol)?;
    let mut ticks = Vec::new();
    while let Some(t) = reader.next_tick()? {
        ticks.push(t);
    }
    Ok(ticks)
}

impl<R: Read> CsvReader<R> {
    /// Reads the header; `size` is the input's length in bytes (for progress), `symbol` the
    /// symbol of a file without a symbol column.
    pub fn from_reader(reader: R, size: u64, symbol: Option<Symbol>) -> Result<Self> {
        let mut reader = ::csv::ReaderBuilder::new()
            .trim(::csv::Trim::All)
            .from_reader(reader);
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| csv_error(format!("reading the header: {e}")))?
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
            _ => {
                return Err(csv_error(
                    "the header has no time column (time, timestamp, ts_event or time_ns)",
                ))
            }
        };
        let trade = match (col(&["price"]), col(&["volume", "size", "qty", "quantity"])) {
            (Some(price), Some(volume)) => Some(TradeColumns {
                price,
                volume,
                side: col(&["side"]),
                exchange_seq: col(&["exchange_seq", "sequence"]),
            }),
            _ => None,
        };
        let quote = match (col(&["bid"]), col(&["ask"])) {
            (Some(bid), Some(ask)) => Some(QuoteColumns {
                bid,
                ask,
                bid_size: col(&["bid_size"]),
                ask_size: col(&["ask_size"]),
            }),
            _ => None,
        };
        if trade.is_none() && quote.is_none() {
            return Err(csv_error(
                "the header has neither price and volume (trades) nor bid and ask (quotes)",
            ));
        }
        let symbol_col = col(&["symbol", "instrument", "pair"]);
        let symbol = match (symbol_col, symbol) {
            (Some(_), _) => None,
            (None, Some(s)) => Some(s),
            (None, None) => return Err(csv_error("the file has no symbol column; pass --symbol")),
        };
        Ok(CsvReader {
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
            record: ::csv::StringRecord::new(),
            line: 1,
        })
    }

    /// Fraction of the input read so far.
    pub fn progress(&self) -> f64 {
        self.reader.position().byte() as f64 / self.size as f64
    }

    /// The next tick, validated by its kind; `None` at the end of the file.
    pub fn next_tick(&mut self) -> Result<Option<Tick>> {
        let read = self.reader.read_record(&mut self.record);
        if !read.map_err(|e| csv_error(format!("line {}: {e}", self.line + 1)))? {
            return Ok(None);
        }
        self.line += 1;
        let line = Line {
            record: &self.record,
            number: self.line,
        };
        let time_ns = line.time_ns(self.cols.time, self.cols.time_is_ns)?;
        let symbol = match (self.symbol, self.cols.symbol) {
            (Some(s), _) => s,
            (None, Some(i)) => Symbol::parse(line.field(i, "symbol")?).map_err(|e| line.bad(e))?,
            (None, None) => return Err(line.bad("no symbol")),
        };
        let tick = match (self.cols.trade, self.cols.quote) {
            (Some(c), _) => Tick::Trade(line.trade(c, time_ns, symbol)?),
            (None, Some(c)) => Tick::Quote(line.quote(c, time_ns, symbol)?),
            (None, None) => return Err(line.bad("no trade or quote columns")),
        };
        let valid = match &tick {
            Tick::Trade(t) => t.validate(),
            Tick::Quote(q) => q.validate(),
        };
        valid.map_err(|e| line.bad(e))?;
        Ok(Some(tick))
    }
}

impl<R: Read> TickSource for CsvReader<R> {
    fn next_tick(&mut self) -> Result<Option<Tick>> {
        CsvReader::next_tick(self)
    }

    fn progress(&self) -> Option<f64> {
        Some(CsvReader::progress(self))
    }
}

/// One record of the file and its line number, read field by field.
struct Line<'a> {
    record: &'a ::csv::StringRecord,
    number: u64,
}

impl Line<'_> {
    /// `line N: why`, for an error about this line.
    fn bad(&self, why: impl std::fmt::Display) -> Error {
        csv_error(format!("line {}: {why}", self.number))
    }

    fn field(&self, i: usize, name: &str) -> Result<&str> {
        self.record
            .get(i)
            .ok_or_else(|| self.bad(format_args!("no {name} field")))
    }

    fn number(&self, i: usize, name: &str) -> Result<f64> {
        self.field(i, name)?
            .parse::<f64>()
            .map_err(|_| self.bad(format_args!("{name} is not a number")))
    }

    fn time_ns(&self, i: usize, is_ns: bool) -> Result<i64> {
        let t = self.field(i, "time")?;
        if is_ns {
            t.parse::<i64>()
                .map_err(|_| self.bad("time_ns is not an integer"))
        } else {
            parse_ns(t).map_err(|e| self.bad(e))
        }
    }

    fn trade(&self, c: TradeColumns, time_ns: i64, symbol: Symbol) -> Result<Trade> {
        let side = match c.side.map(|i| self.field(i, "side")).transpose()? {
            None | Some("") => Side::None,
            Some(text) => Side::from_text(text).map_err(|e| self.bad(e))?,
        };
        let exchange_seq = match c.exchange_seq {
            // An unreadable sequence is 0, as when the column is absent: it orders nothing.
            Some(i) => self.field(i, "exchange_seq")?.parse().unwrap_or(0),
            None => 0,
        };
        Ok(Trade {
            time_ns,
            symbol,
            price: self.number(c.price, "price")?,
            volume: self.number(c.volume, "volume")?,
            side,
            exchange_seq,
        })
    }

    fn quote(&self, c: QuoteColumns, time_ns: i64, symbol: Symbol) -> Result<Quote> {
        let size = |col: Option<usize>, name| col.map_or(Ok(0.0), |i| self.number(i, name));
        Ok(Quote {
            time_ns,
            symbol,
            bid: self.number(c.bid, "bid")?,
            ask: self.number(c.ask, "ask")?,
            bid_size: size(c.bid_size, "bid_size")?,
            ask_size: size(c.ask_size, "ask_size")?,
        })
    }
}

/// Currency codes a file name's pair is made of.
const CURRENCIES: &[&str] = &[
    "USD", "EUR", "JPY", "GBP", "CHF", "AUD", "CAD", "NZD", "SEK", "NOK", "DKK", "HKD", "SGD",
    "CNH", "CNY", "MXN", "ZAR", "TRY", "PLN", "HUF", "CZK", "INR", "KRW", "BRL", "XAU", "XAG",
];

/// `truefx-usdjpy-ticks.csv` → `USDJPY`: the one part of the name that is two currency codes.
pub fn symbol_from_file_name(path: &Path) -> Option<Symbol> {
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

    #[test]
    fn sides_are_read_in_every_spelling_and_an_unknown_one_is_an_error() {
        let file = b"time_ns,symbol,price,volume,side\n1,ES,1,1,BUY\n2,ES,1,1,A\n3,ES,1,1,\n4,ES,1,1,sell\n";
        let sides: Vec<Side> = parse_csv(file, None)
            .unwrap()
            .into_iter()
            .map(|t| match t {
                Tick::Trade(t) => t.side,
                Tick::Quote(_) => unreachable!("a trade file"),
            })
            .collect();
        assert_eq!(sides, [Side::Buy, Side::Sell, Side::None, Side::Sell]);
        let e = parse_csv(b"time_ns,symbol,price,volume,side\n1,ES,1,1,X\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2: side:"), "{e}");
    }

    #[test]
    fn a_record_its_kind_refuses_names_the_line_and_field() {
        let e = parse_csv(b"time_ns,symbol,price,volume\n1,ES,1,1\n2,ES,1,-1\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3: volume: must be"), "{e}");
        let e = parse_csv(b"time_ns,symbol,bid,ask\n1,ES,1,inf\n", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2: ask: must be a finite number"), "{e}");
    }
}
