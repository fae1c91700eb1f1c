//! Which dialect a CSV is and where its columns are: from its header's names, or, for the
//! headerless dialects (HistData, Binance), from the shape of its first line.

use crate::sources::error::{SourceError, SourceErrorKind};

/// The CSV dialects replay reads; [`CsvDialect::detect`] tells them apart when it can, and
/// `--format` names one when it cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CsvDialect {
    /// A header naming the columns ([`ACCEPTED_COLUMNS`]); times RFC 3339 or integers.
    Generic,
    /// Databento's CSV export: `ts_event` (ns or ISO 8601), `action` (`T` rows are
    /// trades), `price`, `size`, `side` and the top level `bid_px_00`/`ask_px_00`/
    /// `bid_sz_00`/`ask_sz_00`; prices fixed-point (1e-9, integers) or decimal.
    Databento,
    /// Tardis.dev: `timestamp` in microseconds (the exchange's; `local_timestamp` is when
    /// Tardis received it), trades `price`/`amount`/`side` (`buy`, `sell`, `unknown`),
    /// quotes `bid_price`/`ask_price`/`bid_amount`/`ask_amount`.
    Tardis,
    /// Binance trades and aggTrades (data.binance.vision), with or without a header:
    /// `is_buyer_maker = true` means the seller was the aggressor. Times in ms or µs.
    Binance,
    /// HistData.com ticks, headerless: `YYYYMMDD hhmmssfff,bid,ask,volume` in EST (UTC−5
    /// all year, no daylight saving time).
    HistData,
}

impl CsvDialect {
    /// The dialect's name as `--format` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            CsvDialect::Generic => "csv",
            CsvDialect::Databento => "databento-csv",
            CsvDialect::Tardis => "tardis",
            CsvDialect::Binance => "binance",
            CsvDialect::HistData => "histdata",
        }
    }

    /// Every dialect, for listing in errors and `--help`.
    pub const ALL: [CsvDialect; 5] = [
        CsvDialect::Generic,
        CsvDialect::Databento,
        CsvDialect::Tardis,
        CsvDialect::Binance,
        CsvDialect::HistData,
    ];

    /// The dialect of a file whose header holds `names` (lower case), when it says.
    fn of_header(names: &[String]) -> CsvDialect {
        let has = |n: &str| names.iter().any(|h| h == n);
        if has("local_timestamp") {
            CsvDialect::Tardis
        } else if has("ts_event") && (has("rtype") || has("instrument_id") || has("action")) {
            CsvDialect::Databento
        } else if has("is_buyer_maker") {
            CsvDialect::Binance
        } else {
            CsvDialect::Generic
        }
    }
}

impl std::str::FromStr for CsvDialect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.to_ascii_lowercase();
        let found = CsvDialect::ALL
            .into_iter()
            .find(|d| d.as_str() == s || (s == "databento" && *d == CsvDialect::Databento));
        found.ok_or_else(|| {
            let names: Vec<&str> = CsvDialect::ALL.iter().map(|d| d.as_str()).collect();
            format!(
                "{s:?} is not a CSV format; the formats are {}",
                names.join(", ")
            )
        })
    }
}

/// The column names a header may use, for error messages.
pub const ACCEPTED_COLUMNS: &str = "a time (time, timestamp, ts_event, datetime, date, \
     transact_time, or time_ns for integer nanoseconds); for trades price and a volume (volume, \
     size, qty, quantity, amount), optionally side or is_buyer_maker, and exchange_seq \
     (sequence, id, trade_id); for quotes bid and ask (bid_price, ask_price, bid_px_00, \
     ask_px_00), optionally bid_size and ask_size (bid_amount, ask_amount, bid_sz_00, \
     ask_sz_00, bid_qty, ask_qty); optionally symbol (instrument, pair, ticker); Databento's \
     action";

/// How a trade's side is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SideColumn {
    /// `B`/`buy`/`S`/`sell`/`A`/… ([`Side::from_text`](crate::Side::from_text)); Tardis's
    /// `unknown` is no side.
    Text(usize),
    /// Binance's `is_buyer_maker`: `true` means the seller took the bid.
    BuyerMaker(usize),
}

/// Where the trade fields are.
#[derive(Debug, Clone, Copy)]
pub(super) struct TradeColumns {
    pub price: usize,
    pub volume: usize,
    pub side: Option<SideColumn>,
    pub exchange_seq: Option<usize>,
}

/// Where the quote fields are.
#[derive(Debug, Clone, Copy)]
pub(super) struct QuoteColumns {
    pub bid: usize,
    pub ask: usize,
    pub bid_size: Option<usize>,
    pub ask_size: Option<usize>,
}

/// A file's dialect and column positions.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    pub dialect: CsvDialect,
    pub time: usize,
    /// The time column is `time_ns`: integer nanoseconds, whatever their magnitude.
    pub time_is_ns: bool,
    pub symbol: Option<usize>,
    pub trade: Option<TradeColumns>,
    pub quote: Option<QuoteColumns>,
    /// Databento's `action`: a row is a trade only when it is `T`, and a row may also be a
    /// quote.
    pub action: Option<usize>,
}

fn header_error(why: impl std::fmt::Display) -> SourceError {
    SourceError::new(SourceErrorKind::Header, why)
}

/// Whether the first line is a header: some cell starts with a letter and is not a
/// boolean (Binance's headerless lines end in `true`/`false`).
pub(super) fn looks_like_header(first: &csv::StringRecord) -> bool {
    first.iter().any(|c| {
        let c = c.trim();
        c.starts_with(|ch: char| ch.is_ascii_alphabetic())
            && !c.eq_ignore_ascii_case("true")
            && !c.eq_ignore_ascii_case("false")
    })
}

impl Layout {
    /// The layout a header names; `forced` is the dialect `--format` named.
    pub(super) fn of_header(
        header: &csv::StringRecord,
        forced: Option<CsvDialect>,
    ) -> Result<Layout, SourceError> {
        let names: Vec<String> = header
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let dialect = forced.unwrap_or_else(|| CsvDialect::of_header(&names));
        let col = |aliases: &[&str]| {
            aliases
                .iter()
                .find_map(|a| names.iter().position(|h| h == a))
        };
        let (time, time_is_ns) = match (
            col(&[
                "ts_event",
                "timestamp",
                "time",
                "datetime",
                "date",
                "transact_time",
                "ts",
            ]),
            col(&["time_ns"]),
        ) {
            (Some(t), _) => (t, false),
            (None, Some(t)) => (t, true),
            (None, None) => {
                return Err(header_error(format!(
                    "The header ({}) has no time column. Accepted names: {ACCEPTED_COLUMNS}.",
                    names.join(",")
                )))
            }
        };
        let side = match (col(&["side"]), col(&["is_buyer_maker"])) {
            (Some(i), _) => Some(SideColumn::Text(i)),
            (None, Some(i)) => Some(SideColumn::BuyerMaker(i)),
            (None, None) => None,
        };
        let trade = match (
            col(&["price"]),
            col(&["volume", "size", "qty", "quantity", "amount"]),
        ) {
            (Some(price), Some(volume)) => Some(TradeColumns {
                price,
                volume,
                side,
                exchange_seq: col(&["exchange_seq", "sequence", "trade_id", "id", "agg_trade_id"]),
            }),
            _ => None,
        };
        let quote = match (
            col(&["bid", "bid_price", "bid_px_00", "bid_px"]),
            col(&["ask", "ask_price", "ask_px_00", "ask_px"]),
        ) {
            (Some(bid), Some(ask)) => Some(QuoteColumns {
                bid,
                ask,
                bid_size: col(&["bid_size", "bid_amount", "bid_sz_00", "bid_qty", "bid_sz"]),
                ask_size: col(&["ask_size", "ask_amount", "ask_sz_00", "ask_qty", "ask_sz"]),
            }),
            _ => None,
        };
        if trade.is_none() && quote.is_none() {
            return Err(header_error(format!(
                "The header ({}) has neither price and volume (trades) nor bid and ask \
                 (quotes). Accepted names: {ACCEPTED_COLUMNS}.",
                names.join(",")
            )));
        }
        Ok(Layout {
            dialect,
            time,
            time_is_ns,
            symbol: col(&["symbol", "instrument", "pair", "ticker"]),
            trade,
            quote,
            action: (dialect == CsvDialect::Databento)
                .then(|| col(&["action"]))
                .flatten(),
        })
    }

    /// The layout of a headerless file from its first line; `forced` is the dialect
    /// `--format` named.
    pub(super) fn headerless(
        first: &csv::StringRecord,
        forced: Option<CsvDialect>,
    ) -> Result<Layout, SourceError> {
        let histdata = first.len() >= 3
            && first[0].len() >= 15
            && first[0].as_bytes()[8] == b' '
            && first[0].as_bytes()[..8].iter().all(u8::is_ascii_digit);
        let boolean = |i: usize| {
            first
                .get(i)
                .is_some_and(|c| c.eq_ignore_ascii_case("true") || c.eq_ignore_ascii_case("false"))
        };
        // trades: id,price,qty,quote_qty,time,is_buyer_maker[,is_best_match];
        // aggTrades: agg_id,price,qty,first_id,last_id,time,is_buyer_maker[,is_best_match].
        let binance_trades = (6..=7).contains(&first.len()) && boolean(5);
        let binance_agg = (7..=8).contains(&first.len()) && boolean(6) && !boolean(5);
        let dialect = match forced {
            Some(d) => d,
            None if histdata => CsvDialect::HistData,
            None if binance_trades || binance_agg => CsvDialect::Binance,
            None => {
                return Err(header_error(format!(
                    "The file has no header and is not a headerless dialect replay knows \
                     (HistData ticks, Binance trades). Add a header naming the columns: \
                     {ACCEPTED_COLUMNS}."
                )))
            }
        };
        let layout = |time, trade, quote| Layout {
            dialect,
            time,
            time_is_ns: false,
            symbol: None,
            trade,
            quote,
            action: None,
        };
        match dialect {
            CsvDialect::HistData if histdata => Ok(layout(
                0,
                None,
                Some(QuoteColumns {
                    bid: 1,
                    ask: 2,
                    bid_size: None,
                    ask_size: None,
                }),
            )),
            CsvDialect::Binance if binance_trades || binance_agg => {
                let (time, maker) = if binance_trades { (4, 5) } else { (5, 6) };
                let trade = TradeColumns {
                    price: 1,
                    volume: 2,
                    side: Some(SideColumn::BuyerMaker(maker)),
                    exchange_seq: Some(0),
                };
                Ok(layout(time, Some(trade), None))
            }
            other => Err(header_error(format!(
                "The file has no header, and its first line is not a {} line. Add a header \
                 naming the columns: {ACCEPTED_COLUMNS}.",
                other.as_str()
            ))),
        }
    }
}
