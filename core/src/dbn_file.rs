//! Databento DBN files (MBP-1 schema) as ticks: every record's top of book is a [`Quote`],
//! and records with `action = 'T'` are also a [`Trade`]. Feature `dbn`.
//!
//! Prices are DBN fixed-point (1 unit = 1e-9) converted to `f64`; times are the venue's
//! `ts_event` (nanoseconds); the trade's `exchange_seq` is the venue's `sequence`; the
//! aggressor side `B`/`A` becomes [`Side::Buy`]/[`Side::Sell`].

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use dbn::decode::{DbnMetadata, DecodeRecord, DynDecoder};
use dbn::symbol_map::{SymbolIndex, TsSymbolMap};
use dbn::v3::Mbp1Msg;
use dbn::VersionUpgradePolicy;

use crate::record::{Quote, Side, Trade};
use crate::symbol::Symbol;
use crate::{Error, Result};

/// The ticks of one MBP-1 record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mbp1Ticks {
    /// The trade, when the record is one (`action = 'T'`).
    pub trade: Option<Trade>,
    /// The top of book after the record, when both sides are quoted.
    pub quote: Option<Quote>,
}

/// Reads an MBP-1 DBN file (plain or zstd-compressed) record by record.
pub struct Mbp1Reader {
    decoder: DynDecoder<'static, BufReader<File>>,
    symbols: TsSymbolMap,
    /// Instrument id → validated symbol, so a symbol is checked once, not per record.
    cache: HashMap<u32, Symbol>,
}

impl std::fmt::Debug for Mbp1Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbp1Reader")
            .field("symbols", &self.cache.len())
            .finish()
    }
}

fn dbn_error(context: &str, e: dbn::Error) -> Error {
    Error::field("dbn", format!("{context}: {e}"))
}

/// DBN fixed-point price to `f64`; `None` for the "undefined" sentinel.
fn price(px: i64) -> Option<f64> {
    (px != dbn::UNDEF_PRICE).then(|| px as f64 / 1e9)
}

impl Mbp1Reader {
    /// Opens `path`; the file's metadata must map instrument ids to symbols.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let decoder = DynDecoder::from_file(path.as_ref(), VersionUpgradePolicy::UpgradeToV3)
            .map_err(|e| dbn_error("opening", e))?;
        let schema = decoder.metadata().schema;
        if schema != Some(dbn::Schema::Mbp1) {
            return Err(Error::field(
                "dbn",
                format!("schema is {schema:?}; only MBP-1 files are read"),
            ));
        }
        let symbols = decoder
            .metadata()
            .symbol_map()
            .map_err(|e| dbn_error("reading the symbol map", e))?;
        Ok(Mbp1Reader {
            decoder,
            symbols,
            cache: HashMap::new(),
        })
    }

    /// The next record's ticks; `None` at the end of the file.
    pub fn next_ticks(&mut self) -> Result<Option<Mbp1Ticks>> {
        let Some(rec) = self
            .decoder
            .decode_record::<Mbp1Msg>()
            .map_err(|e| dbn_error("decoding", e))?
        else {
            return Ok(None);
        };
        let id = rec.hd.instrument_id;
        let symbol = match self.cache.get(&id) {
            Some(s) => *s,
            None => {
                let name = self.symbols.get_for_rec(rec).ok_or_else(|| {
                    Error::field("dbn", format!("instrument {id} has no symbol mapping"))
                })?;
                let s = Symbol::new(name)?;
                self.cache.insert(id, s);
                s
            }
        };
        let time_ns = i64::try_from(rec.hd.ts_event)
            .map_err(|_| Error::field("dbn", "ts_event is out of range"))?;
        let trade = match (rec.action as u8, price(rec.price)) {
            (b'T', Some(p)) => Some(Trade {
                time_ns,
                symbol,
                price: p,
                volume: f64::from(rec.size),
                side: match rec.side as u8 {
                    b'B' => Side::Buy,
                    b'A' => Side::Sell,
                    _ => Side::None,
                },
                exchange_seq: i64::from(rec.sequence),
            }),
            _ => None,
        };
        let top = &rec.levels[0];
        let quote = match (price(top.bid_px), price(top.ask_px)) {
            (Some(bid), Some(ask)) => Some(Quote {
                time_ns,
                symbol,
                bid,
                ask,
                bid_size: f64::from(top.bid_sz),
                ask_size: f64::from(top.ask_sz),
            }),
            _ => None,
        };
        Ok(Some(Mbp1Ticks { trade, quote }))
    }
}

impl Iterator for Mbp1Reader {
    type Item = Result<Mbp1Ticks>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_ticks().transpose()
    }
}
