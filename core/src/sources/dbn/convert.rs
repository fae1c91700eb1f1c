//! Which DBN schemas replay reads, and each record type's trade and quote.
//!
//! | schema | record | trade | quote |
//! |---|---|---|---|
//! | `mbo` | `MboMsg` | `action = 'T'` | none (see below) |
//! | `mbp-1`, `tbbo` | `Mbp1Msg` | `action = 'T'` | level 0 |
//! | `mbp-10` | `Mbp10Msg` | `action = 'T'` | level 0 |
//! | `trades` | `TradeMsg` | `action = 'T'` | none |
//! | `bbo-1s`, `bbo-1m` | `BboMsg` | none (its price is the interval's last trade, not a new one) | level 0 |
//! | `cbbo-1s`, `cbbo-1m` | `CbboMsg` | none (as BBO) | level 0 |
//! | `cmbp-1`, `tcbbo` | `Cmbp1Msg` | `action = 'T'` | level 0 |
//!
//! MBO: a trade is its `T` record (the aggressor's side). The `F` (fill) records of the
//! same trade are the resting orders' side of it, so reading them too would store every
//! trade twice. MBO yields no quotes: a top of book needs every order resting when the
//! file starts, which a file that starts after the session's snapshot lacks, and a book
//! built from part of the orders is a wrong quote stored as a right one. Load the `mbp-1`
//! or `bbo-1s` schema of the same data for quotes.
//!
//! A level whose bid or ask is undefined (an empty side) yields no quote.

use std::ffi::c_char;

use dbn::{rtype, RecordRef, Schema};

use super::framing::RecordTypes;
use crate::sources::error::{SourceError, SourceErrorKind};

/// The record types of a tick schema, with their sizes; an error naming what to do for
/// the schemas replay does not read.
pub(super) fn record_types(schema: Option<Schema>) -> Result<RecordTypes, SourceError> {
    use std::mem::size_of;
    const MBO: RecordTypes = &[(rtype::MBO, size_of::<dbn::MboMsg>())];
    const MBP1: RecordTypes = &[(rtype::MBP_1, size_of::<dbn::Mbp1Msg>())];
    const MBP10: RecordTypes = &[(rtype::MBP_10, size_of::<dbn::Mbp10Msg>())];
    const TRADES: RecordTypes = &[(rtype::MBP_0, size_of::<dbn::TradeMsg>())];
    const BBO: RecordTypes = &[
        (rtype::BBO_1S, size_of::<dbn::BboMsg>()),
        (rtype::BBO_1M, size_of::<dbn::BboMsg>()),
    ];
    const CBBO: RecordTypes = &[
        (rtype::CBBO_1S, size_of::<dbn::CbboMsg>()),
        (rtype::CBBO_1M, size_of::<dbn::CbboMsg>()),
    ];
    const CMBP1: RecordTypes = &[
        (rtype::CMBP_1, size_of::<dbn::Cmbp1Msg>()),
        (rtype::TCBBO, size_of::<dbn::Cmbp1Msg>()),
    ];
    let unsupported = |why: String| SourceError::new(SourceErrorKind::Unsupported, why);
    let Some(schema) = schema else {
        return Err(unsupported(
            "The file mixes schemas (its metadata names none); replay reads one tick schema \
             a file. Split it by schema first (`dbn --schema ...` or Databento's client)."
                .into(),
        ));
    };
    Ok(match schema {
        Schema::Mbo => MBO,
        Schema::Mbp1 | Schema::Tbbo => MBP1,
        Schema::Mbp10 => MBP10,
        Schema::Trades => TRADES,
        Schema::Bbo1S | Schema::Bbo1M => BBO,
        Schema::Cbbo1S | Schema::Cbbo1M => CBBO,
        Schema::Cmbp1 | Schema::Tcbbo => CMBP1,
        Schema::Ohlcv1S
        | Schema::Ohlcv1M
        | Schema::Ohlcv1H
        | Schema::Ohlcv1D
        | Schema::OhlcvEod => {
            return Err(unsupported(format!(
                "The file holds {schema} bars, not ticks; replay stores ticks and computes \
                 bars from them. Load the trades (or mbp-1) schema of the same data instead."
            )))
        }
        other => {
            return Err(unsupported(format!(
                "The file holds the {other} schema, which has no trades or quotes; replay reads \
                 mbo, mbp-1, mbp-10, tbbo, trades, bbo-1s, bbo-1m, cbbo-1s, cbbo-1m, cmbp-1 and \
                 tcbbo files."
            )))
        }
    })
}

/// A record's trade fields, before the symbol is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RawTrade {
    pub price: i64,
    pub size: u32,
    pub side: u8,
    pub sequence: u32,
}

/// A record's top of book, before the symbol is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RawQuote {
    pub bid_px: i64,
    pub ask_px: i64,
    pub bid_sz: u32,
    pub ask_sz: u32,
}

/// The trade and the top of book of one record. The framing checked its type and size, so
/// `get` finds the type it names.
pub(super) fn ticks_of(rec: &RecordRef<'_>) -> (Option<RawTrade>, Option<RawQuote>) {
    let trade = |action: c_char, price, size, side: c_char, sequence| {
        (action as u8 == b'T').then_some(RawTrade {
            price,
            size,
            side: side as u8,
            sequence,
        })
    };
    let quote = |l: &dbn::BidAskPair| RawQuote {
        bid_px: l.bid_px,
        ask_px: l.ask_px,
        bid_sz: l.bid_sz,
        ask_sz: l.ask_sz,
    };
    let cquote = |l: &dbn::ConsolidatedBidAskPair| RawQuote {
        bid_px: l.bid_px,
        ask_px: l.ask_px,
        bid_sz: l.bid_sz,
        ask_sz: l.ask_sz,
    };
    if let Some(r) = rec.get::<dbn::Mbp1Msg>() {
        let t = trade(r.action, r.price, r.size, r.side, r.sequence);
        (t, Some(quote(&r.levels[0])))
    } else if let Some(r) = rec.get::<dbn::MboMsg>() {
        (trade(r.action, r.price, r.size, r.side, r.sequence), None)
    } else if let Some(r) = rec.get::<dbn::Mbp10Msg>() {
        let t = trade(r.action, r.price, r.size, r.side, r.sequence);
        (t, Some(quote(&r.levels[0])))
    } else if let Some(r) = rec.get::<dbn::TradeMsg>() {
        (trade(r.action, r.price, r.size, r.side, r.sequence), None)
    } else if let Some(r) = rec.get::<dbn::BboMsg>() {
        (None, Some(quote(&r.levels[0])))
    } else if let Some(r) = rec.get::<dbn::CbboMsg>() {
        (None, Some(cquote(&r.levels[0])))
    } else if let Some(r) = rec.get::<dbn::Cmbp1Msg>() {
        (
            trade(r.action, r.price, r.size, r.side, 0),
            Some(cquote(&r.levels[0])),
        )
    } else {
        (None, None)
    }
}
