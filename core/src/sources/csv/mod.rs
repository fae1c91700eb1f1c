//! CSV files of trades or quotes as ticks, each checked by its kind's `validate`.
//!
//! Dialects ([`CsvDialect`]): a generic header-driven layout (the names it accepts are
//! [`ACCEPTED_COLUMNS`], in any order and case), Databento's CSV export, Tardis.dev,
//! Binance trades (with or without a header) and HistData ticks (headerless). The dialect
//! is detected from the header (or the first line's shape), or named by
//! [`CsvOptions::dialect`] (`--format`) when detection is not sure.
//!
//! Times are read by their first line's form, kept for the whole file:
//! - integers or decimals since the epoch, in [`CsvOptions::time_unit`], else the dialect's
//!   unit (Tardis µs, Databento ns, a `time_ns` column ns), else guessed from the magnitude
//!   ([`TimeUnit::guess`]) with a note saying so;
//! - RFC 3339 with an offset;
//! - naive date-times, at [`CsvOptions::tz`] (a fixed offset or a tz database zone), else the dialect's (HistData:
//!   EST, fixed UTC−5), else UTC with a note saying so.
//!
//! A side is read by [`Side::from_text`] (`B`, `buy`, `S`, `sell`, `A`, `ask`, … in any
//! case); an empty side cell, and Tardis's `unknown`, is [`Side::None`]. Binance's
//! `is_buyer_maker = true` is [`Side::Sell`] (the seller took the resting bid). A Databento
//! row is a trade when its `action` is `T`, and also a quote when its top level is quoted;
//! its prices are fixed-point (integers, 1e-9) or decimals. A bad line stops the reading
//! with an error naming the line and the field.

mod decimal;
mod layout;
mod records;

use std::io::Read;
use std::path::Path;

use self::layout::{looks_like_header, Layout, QuoteColumns, SideColumn, TradeColumns};
pub use self::layout::{CsvDialect, ACCEPTED_COLUMNS};
use self::records::Records;
use crate::error::Result;
use crate::record::{Quote, Side, Tick, Trade};
use crate::sources::error::{SourceError, SourceErrorKind, SourcePosition};
use crate::sources::tick_source::TickSource;
use crate::sources::timefmt::{
    parse_epoch, parse_ns, parse_ns_with, NaiveZone, SecondCache, TimeUnit,
};
use crate::symbol::Symbol;

/// How to read a CSV, where the file does not say.
#[derive(Debug, Clone, Default)]
pub struct CsvOptions {
    /// The symbol of every tick of a file without a symbol column.
    pub symbol: Option<Symbol>,
    /// The dialect, when detection is not sure (`--format`).
    pub dialect: Option<CsvDialect>,
    /// The unit of integer times (`--time-unit`); unset: the dialect's, else guessed.
    pub time_unit: Option<TimeUnit>,
    /// Where times written without an offset were taken (`--tz`): a fixed offset or a tz
    /// database zone; unset: the dialect's (HistData: UTC−5), else UTC.
    pub tz: Option<NaiveZone>,
}

/// How the file's times are written, decided on its first line.
#[derive(Debug, Clone)]
enum TimeForm {
    Epoch(TimeUnit),
    Rfc3339,
    Naive(NaiveZone),
}

/// Reads a CSV of trades or quotes tick by tick, reusing one record buffer.
#[derive(Debug)]
pub struct CsvReader<R = std::fs::File> {
    records: Records<R>,
    layout: Layout,
    time: TimeForm,
    /// The symbol of every tick, when the file has no symbol column.
    symbol: Option<Symbol>,
    /// The input's length in bytes, for [`CsvReader::progress`].
    size: u64,
    /// Data lines read (the header not counted).
    lines: u64,
    /// The last second an RFC 3339 time was read in.
    seconds: SecondCache,
    /// The quote of the line whose trade was returned last.
    pending: Option<Quote>,
    notes: Vec<String>,
}

fn header_error(why: impl std::fmt::Display) -> SourceError {
    SourceError::new(SourceErrorKind::Header, why)
}

impl CsvReader {
    /// Opens `path`. A file without a symbol column takes `options.symbol`, else the pair in
    /// its name ([`symbol_from_file_name`]).
    pub fn open(path: &Path, mut options: CsvOptions) -> Result<Self> {
        let io = |e: std::io::Error| {
            SourceError::new(
                SourceErrorKind::Io,
                format!("Could not read {}: {e}.", path.display()),
            )
        };
        let size = std::fs::metadata(path).map_err(io)?.len();
        let file = std::fs::File::open(path).map_err(io)?;
        if options.symbol.is_none() {
            options.symbol = symbol_from_file_name(path);
        }
        CsvReader::from_reader(file, size, options)
    }
}

/// Reads a whole CSV held in memory; `symbol` is for a file without a symbol column. Stops
/// at the first bad line.
pub fn parse_csv(bytes: &[u8], symbol: Option<Symbol>) -> Result<Vec<Tick>> {
    let options = CsvOptions {
        symbol,
        ..CsvOptions::default()
    };
    let mut reader = CsvReader::from_reader(bytes, bytes.len() as u64, options)?;
    let mut ticks = Vec::new();
    while let Some(t) = reader.next_tick()? {
        ticks.push(t);
    }
    Ok(ticks)
}

impl<R: Read> CsvReader<R> {
    /// Reads the header (or the first line of a headerless dialect); `size` is the input's
    /// length in bytes (for progress).
    pub fn from_reader(reader: R, size: u64, options: CsvOptions) -> Result<Self> {
        // Fields are trimmed where they are read (`Line::field`); the first two lines, read
        // once to tell the layout, are trimmed whole.
        let mut records = Records::new(reader);
        let read = records.next().map_err(|e| {
            header_error(format!("The first line of the file cannot be read: {e}."))
        })?;
        let mut first = records.to_string_record();
        first.trim();
        if !read || first.iter().all(str::is_empty) {
            return Err(header_error(format!(
                "The file is empty: replay needs a header naming the columns ({ACCEPTED_COLUMNS}) \
                 and lines of ticks."
            ))
            .into());
        }
        if first.len() == 1 && first[0].contains(';') {
            return Err(header_error(
                "The file is separated by semicolons; replay reads comma-separated files. \
                 (HistData's semicolon files are 1-minute bars, not ticks: load its tick files.)",
            )
            .into());
        }
        // The first data line stays held for `next_tick`.
        let (layout, peeked) =
            if looks_like_header(&first) && options.dialect != Some(CsvDialect::HistData) {
                let layout = Layout::of_header(&first, options.dialect)?;
                let more = records
                    .next()
                    .map_err(|e| header_error(format!("Line 2 cannot be read: {e}.")))?;
                let mut data = records.to_string_record();
                data.trim();
                (layout, more.then_some(data))
            } else {
                (Layout::headerless(&first, options.dialect)?, Some(first))
            };
        records.hold();
        let symbol = match (layout.symbol, options.symbol) {
            (Some(_), _) => None,
            (None, Some(s)) => Some(s),
            (None, None) => {
                return Err(header_error(
                    "The file has no symbol column; pass --symbol (or name the file after its \
                     currency pair, like eurusd-ticks.csv, or as Binance does, like \
                     BTCUSDT-trades-2024-07-01.csv).",
                )
                .into())
            }
        };
        let mut notes = Vec::new();
        let time = match &peeked {
            Some(line) => time_form(
                line.get(layout.time).unwrap_or(""),
                &layout,
                &options,
                &mut notes,
            ),
            None => TimeForm::Rfc3339,
        };
        Ok(CsvReader {
            records,
            layout,
            time,
            symbol,
            size: size.max(1),
            lines: 0,
            seconds: SecondCache::default(),
            pending: None,
            notes,
        })
    }

    /// The dialect read.
    pub fn dialect(&self) -> CsvDialect {
        self.layout.dialect
    }

    /// What the reader guessed and the user may want to know (a time unit told from the
    /// times' magnitude, naive times read as UTC).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Fraction of the input read so far.
    pub fn progress(&self) -> f64 {
        self.records.position() as f64 / self.size as f64
    }

    /// The next tick, validated by its kind; `None` at the end of the file.
    pub fn next_tick(&mut self) -> Result<Option<Tick>> {
        if let Some(q) = self.pending.take() {
            return Ok(Some(Tick::Quote(q)));
        }
        loop {
            let read = self.records.next().map_err(|e| {
                // Where the record that failed starts (an I/O error: the one before it).
                let (line, byte) = self.records.record_at();
                let at = SourcePosition {
                    record: self.lines,
                    byte: Some(byte),
                };
                SourceError::at(
                    SourceErrorKind::Field,
                    at,
                    format!("line {line} cannot be read: {e}"),
                )
            })?;
            if !read {
                return Ok(None);
            }
            let (number, byte) = self.records.record_at();
            let line = Line {
                record: &self.records,
                index: self.lines,
                number,
                byte: Some(byte),
                dialect: self.layout.dialect,
            };
            self.lines += 1;
            let (trade, quote) =
                line.ticks(&self.layout, &self.time, &mut self.seconds, self.symbol)?;
            match (trade, quote) {
                (Some(t), q) => {
                    self.pending = q;
                    return Ok(Some(Tick::Trade(t)));
                }
                (None, Some(q)) => return Ok(Some(Tick::Quote(q))),
                (None, None) => continue,
            }
        }
    }
}

/// How the file's times are written, from the first line's `cell`; notes what it guessed.
fn time_form(
    cell: &str,
    layout: &Layout,
    options: &CsvOptions,
    notes: &mut Vec<String>,
) -> TimeForm {
    if layout.time_is_ns {
        return TimeForm::Epoch(TimeUnit::Ns);
    }
    let numeric = cell.parse::<f64>().is_ok() && !cell.contains(['e', 'E', 'n', 'N', 'i', 'I']);
    if numeric {
        let dialect_unit = match layout.dialect {
            CsvDialect::Tardis => Some(TimeUnit::Us),
            CsvDialect::Databento => Some(TimeUnit::Ns),
            _ => None,
        };
        let unit = options.time_unit.or(dialect_unit).unwrap_or_else(|| {
            let whole = cell
                .split('.')
                .next()
                .unwrap_or("")
                .parse::<i64>()
                .unwrap_or(0);
            let unit = TimeUnit::guess(whole);
            notes.push(format!(
                "The times are integers without a stated unit; {cell} was read as {} since \
                 the epoch from its magnitude. Pass --time-unit if that is wrong.",
                unit.as_str()
            ));
            unit
        });
        return TimeForm::Epoch(unit);
    }
    if parse_ns(cell).is_ok() {
        if options.tz.is_some() {
            notes.push("The times carry their own offset; --tz is not used.".into());
        }
        return TimeForm::Rfc3339;
    }
    let dialect_tz = (layout.dialect == CsvDialect::HistData).then_some(NaiveZone::Offset(-300));
    let tz = options.tz.clone().or(dialect_tz).unwrap_or_else(|| {
        notes.push(
            "The times have no offset and were read as UTC. Pass --tz (like --tz -05:00 or \
             --tz America/New_York) if they are local times."
                .into(),
        );
        NaiveZone::Offset(0)
    });
    TimeForm::Naive(tz)
}

impl<R: Read + Send> TickSource for CsvReader<R> {
    fn next_tick(&mut self) -> Result<Option<Tick>> {
        CsvReader::next_tick(self)
    }

    fn progress(&self) -> Option<f64> {
        Some(CsvReader::progress(self))
    }

    fn kinds(&self) -> crate::ingress::Kinds {
        crate::ingress::Kinds {
            trades: self.layout.trade.is_some(),
            quotes: self.layout.quote.is_some(),
        }
    }
}

/// One data line of the file, read field by field.
struct Line<'a, R> {
    record: &'a Records<R>,
    /// 0-based index among the data lines.
    index: u64,
    /// 1-based line number in the file.
    number: u64,
    byte: Option<u64>,
    dialect: CsvDialect,
}

impl<R: Read> Line<'_, R> {
    /// `Line N: why.`, for an error about this line.
    #[cold]
    #[inline(never)]
    fn bad(&self, why: impl std::fmt::Display) -> SourceError {
        let at = SourcePosition {
            record: self.index,
            byte: self.byte,
        };
        SourceError::at(
            SourceErrorKind::Field,
            at,
            format!("line {}: {why}", self.number),
        )
    }

    #[inline]
    fn field(&self, i: usize, name: &str) -> Result<&str, SourceError> {
        self.record
            .get(i)
            .map(trim)
            .ok_or_else(|| self.bad(format_args!("no {name} field")))
    }

    #[inline]
    fn number(&self, i: usize, name: &str) -> Result<f64, SourceError> {
        let cell = self.field(i, name)?;
        match decimal::plain_decimal(cell) {
            Some(n) => Ok(n),
            None => cell
                .parse::<f64>()
                .map_err(|_| self.bad(format_args!("{name} is not a number"))),
        }
    }

    /// A price: Databento writes fixed-point integers (1e-9) or decimals, and an undefined
    /// price as empty or `i64::MAX`. `None` when undefined.
    fn price(&self, i: usize, name: &str) -> Result<Option<f64>, SourceError> {
        if self.dialect != CsvDialect::Databento {
            return self.number(i, name).map(Some);
        }
        let cell = self.field(i, name)?;
        if cell.is_empty() {
            return Ok(None);
        }
        match cell.parse::<i64>() {
            Ok(i64::MAX) => Ok(None),
            Ok(fixed) => Ok(Some(fixed as f64 / 1e9)),
            Err(_) => self.number(i, name).map(Some),
        }
    }

    fn time_ns(
        &self,
        i: usize,
        form: &TimeForm,
        seconds: &mut SecondCache,
    ) -> Result<i64, SourceError> {
        let t = self.field(i, "time")?;
        match form {
            TimeForm::Epoch(unit) => parse_epoch(t, *unit),
            TimeForm::Rfc3339 => parse_ns_with(t, seconds),
            TimeForm::Naive(zone) => zone.parse_ns(t),
        }
        .map_err(|e| self.bad(format_args!("time: {e}")))
    }

    /// The line's trade and quote, each validated by its kind.
    fn ticks(
        &self,
        layout: &Layout,
        form: &TimeForm,
        seconds: &mut SecondCache,
        symbol: Option<Symbol>,
    ) -> Result<(Option<Trade>, Option<Quote>), SourceError> {
        let time_ns = self.time_ns(layout.time, form, seconds)?;
        let symbol = match (symbol, layout.symbol) {
            (Some(s), _) => s,
            (None, Some(i)) => Symbol::parse(self.field(i, "symbol")?).map_err(|e| self.bad(e))?,
            (None, None) => return Err(self.bad("no symbol")),
        };
        let (trade, quote) = match layout.action {
            Some(a) => {
                let is_trade = self.field(a, "action")? == "T";
                let trade = layout.trade.filter(|_| is_trade);
                (trade, layout.quote)
            }
            None if layout.trade.is_some() => (layout.trade, None),
            None => (None, layout.quote),
        };
        let trade = match trade {
            Some(c) => self.trade(c, time_ns, symbol)?,
            None => None,
        };
        let quote = match quote {
            Some(c) => self.quote(c, time_ns, symbol)?,
            None => None,
        };
        if let Some(t) = &trade {
            t.validate().map_err(|e| self.bad(e))?;
        }
        if let Some(q) = &quote {
            q.validate().map_err(|e| self.bad(e))?;
        }
        Ok((trade, quote))
    }

    fn side(&self, column: Option<SideColumn>) -> Result<Side, SourceError> {
        match column {
            None => Ok(Side::None),
            Some(SideColumn::Text(i)) => match self.field(i, "side")? {
                "" => Ok(Side::None),
                t if t.eq_ignore_ascii_case("unknown") => Ok(Side::None),
                t => Side::from_text(t).map_err(|e| self.bad(e)),
            },
            Some(SideColumn::BuyerMaker(i)) => match self.field(i, "is_buyer_maker")? {
                t if t.eq_ignore_ascii_case("true") => Ok(Side::Sell),
                t if t.eq_ignore_ascii_case("false") => Ok(Side::Buy),
                _ => Err(self.bad("is_buyer_maker is neither true nor false")),
            },
        }
    }

    fn trade(
        &self,
        c: TradeColumns,
        time_ns: i64,
        symbol: Symbol,
    ) -> Result<Option<Trade>, SourceError> {
        let Some(price) = self.price(c.price, "price")? else {
            return Ok(None);
        };
        let exchange_seq = match c.exchange_seq {
            // An unreadable sequence is 0, as when the column is absent: it orders nothing.
            Some(i) => self.field(i, "exchange_seq")?.parse().unwrap_or(0),
            None => 0,
        };
        Ok(Some(Trade {
            time_ns,
            symbol,
            price,
            volume: self.number(c.volume, "volume")?,
            side: self.side(c.side)?,
            exchange_seq,
        }))
    }

    fn quote(
        &self,
        c: QuoteColumns,
        time_ns: i64,
        symbol: Symbol,
    ) -> Result<Option<Quote>, SourceError> {
        let (Some(bid), Some(ask)) = (self.price(c.bid, "bid")?, self.price(c.ask, "ask")?) else {
            return Ok(None);
        };
        let size = |col: Option<usize>, name| col.map_or(Ok(0.0), |i| self.number(i, name));
        Ok(Some(Quote {
            time_ns,
            symbol,
            bid,
            ask,
            bid_size: size(c.bid_size, "bid_size")?,
            ask_size: size(c.ask_size, "ask_size")?,
        }))
    }
}

/// `cell` without the whitespace around it; a cell that starts and ends with a printable
/// ASCII byte (nearly every one) is returned as it is, without `str::trim`'s Unicode tables.
fn trim(cell: &str) -> &str {
    let plain = |b: Option<&u8>| b.is_some_and(|&b| b > b' ' && b < 0x7f);
    let b = cell.as_bytes();
    if plain(b.first()) && plain(b.last()) {
        cell
    } else {
        cell.trim()
    }
}

/// Currency codes a file name's pair is made of.
const CURRENCIES: &[&str] = &[
    "USD", "EUR", "JPY", "GBP", "CHF", "AUD", "CAD", "NZD", "SEK", "NOK", "DKK", "HKD", "SGD",
    "CNH", "CNY", "MXN", "ZAR", "TRY", "PLN", "HUF", "CZK", "INR", "KRW", "BRL", "XAU", "XAG",
];

/// The symbol a file's name gives: `truefx-usdjpy-ticks.csv` → `USDJPY` (the one part of
/// the name that is two currency codes), and Binance's own names
/// (data.binance.vision: `BTCUSDT-trades-2024-07-01.csv`, `ETHBTC-aggTrades-2024-07.csv`)
/// → their first part.
pub fn symbol_from_file_name(path: &Path) -> Option<Symbol> {
    let stem = path.file_name()?.to_str()?.split('.').next()?;
    let mut parts = stem.split('-');
    if let (Some(symbol), Some("trades" | "aggTrades")) = (parts.next(), parts.next()) {
        let date = parts
            .next()
            .is_some_and(|y| y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()));
        if date && symbol.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Symbol::new(symbol).ok();
        }
    }
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
mod tests;
