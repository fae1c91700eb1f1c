//! Databento DBN files (`.dbn`, `.dbn.zst`; DBN versions 1 to 3) as ticks, every tick
//! schema: MBO, MBP-1, MBP-10, TBBO, trades, BBO, CBBO, CMBP-1 and TCBBO. Which record
//! yields a trade and which a quote is in the table of `convert.rs`, repeated here:
//!
//! | schema | trade | quote |
//! |---|---|---|
//! | `mbo` | `action = 'T'` (not `F`: the same trade seen from the resting order) | none: a book needs every resting order, which a file cut from a session lacks |
//! | `mbp-1`, `tbbo`, `mbp-10` | `action = 'T'` | top level |
//! | `trades` | every record | none |
//! | `bbo-*`, `cbbo-*` | none | top level |
//! | `cmbp-1`, `tcbbo` | `action = 'T'` | top level |
//!
//! OHLCV, definition, statistics, status and imbalance files are refused with a sentence
//! saying what to load instead. Feature `dbn`.
//!
//! Prices are DBN fixed-point (1 unit = 1e-9) converted to `f64`; times are the venue's
//! `ts_event` (nanoseconds); the trade's `exchange_seq` is the venue's `sequence` (0 for
//! CMBP-1, which has none); the aggressor side `B`/`A`/`N` becomes
//! [`Side::Buy`]/[`Side::Sell`]/[`Side::None`] ([`Side::from_book_code`]), and any other side
//! byte is an error. Instrument ids become symbols through the file's symbology (the
//! metadata's mappings, by date). Every trade and quote passes its kind's `validate`.
//!
//! A file that ends inside a record, or a `.zst` whose stream ends early, is an error of
//! kind [`SourceErrorKind::Truncated`] naming the record and byte where it stops; the
//! records before it are read. (A plain `.dbn` cut exactly between two records cannot be
//! told from a whole file: DBN has no trailer.)

mod convert;
mod framing;
#[cfg(test)]
mod tests;

use foldhash::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use ::dbn::decode::dbn::MetadataDecoder;
use ::dbn::decode::{DbnDecoder, DbnMetadata, DecodeRecordRef, DynReader};
use ::dbn::symbol_map::{SymbolIndex, TsSymbolMap};
use ::dbn::{Schema, VersionUpgradePolicy};

use self::convert::{record_types, ticks_of, RawQuote, RawTrade};
use self::framing::RecordFraming;
use crate::error::Result;
use crate::record::{Quote, Side, Tick, Trade};
use crate::sources::error::{SourceError, SourceErrorKind, SourcePosition};
use crate::sources::tick_source::TickSource;
use crate::symbol::Symbol;

/// The ticks of one record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordTicks {
    /// The trade, when the record is one.
    pub trade: Option<Trade>,
    /// The top of book after (TBBO, TCBBO: before) the record, when both sides are quoted.
    pub quote: Option<Quote>,
}

/// The former name of [`RecordTicks`], from when only MBP-1 was read.
pub type Mbp1Ticks = RecordTicks;
/// The former name of [`DbnReader`], from when only MBP-1 was read.
pub type Mbp1Reader = DbnReader;
/// The former name of [`DbnTickReader`], from when only MBP-1 was read.
pub type Mbp1TickReader = DbnTickReader;

type FileDecoder = DbnDecoder<RecordFraming<DynReader<'static, BufReader<File>>>>;

/// Reads a DBN file of a tick schema (plain or zstd-compressed) record by record.
pub struct DbnReader {
    decoder: FileDecoder,
    schema: Schema,
    version: u8,
    symbols: TsSymbolMap,
    /// Instrument id → validated symbol, so a symbol is checked once, not per record.
    cache: HashMap<u32, Symbol>,
    /// Records decoded so far: the index of the next one.
    records: u64,
    /// The file's length in bytes, for [`DbnReader::progress`].
    size: u64,
}

impl std::fmt::Debug for DbnReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbnReader")
            .field("schema", &self.schema)
            .field("version", &self.version)
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

/// The longest metadata read. Real files carry kilobytes (symbols and their mappings); the
/// length comes from the file, and the decoder allocates it up front.
const MAX_METADATA_BYTES: u64 = 1 << 30;

fn corrupt(why: impl std::fmt::Display) -> SourceError {
    SourceError::new(SourceErrorKind::Corrupt, why)
}

fn open_stream(path: &Path) -> Result<DynReader<'static, BufReader<File>>, SourceError> {
    let file = File::open(path).map_err(|e| {
        SourceError::new(
            SourceErrorKind::Io,
            format!("Could not open {}: {e}.", path.display()),
        )
    })?;
    DynReader::new_inferred(file).map_err(|e| corrupt(format!("The file cannot be read: {e}.")))
}

/// The DBN version and metadata length of a file, checked before the decoder allocates a
/// buffer of that length (a corrupt length word would otherwise cost up to 4 GiB). Streams
/// through the (decompressed) bytes without keeping them.
fn prelude(path: &Path) -> Result<(u8, u64), SourceError> {
    let mut reader = open_stream(path)?;
    let mut prelude = [0u8; 8];
    let read = reader.read_exact(&mut prelude);
    if reader.is_compressed()
        && matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof)
    {
        return Err(SourceError::new(
            SourceErrorKind::Truncated,
            "The file is truncated: its zstd stream ends before the end of its first block.",
        ));
    }
    if read.is_err() || &prelude[..3] != b"DBN" {
        return Err(corrupt(
            "The file does not start with DBN's signature: it is not a DBN file, or its .zst \
             holds something else.",
        ));
    }
    let version = prelude[3];
    if !(1..=3).contains(&version) {
        return Err(SourceError::new(
            SourceErrorKind::Unsupported,
            format!("The file is DBN version {version}; replay reads DBN versions 1 to 3."),
        ));
    }
    let length = u64::from(u32::from_le_bytes([
        prelude[4], prelude[5], prelude[6], prelude[7],
    ]));
    let present = std::io::copy(
        &mut reader.take(length.min(MAX_METADATA_BYTES + 1)),
        &mut std::io::sink(),
    );
    match present {
        Ok(p) if p >= length && length <= MAX_METADATA_BYTES => Ok((version, length)),
        Ok(p) if p < length => Err(SourceError::new(
            SourceErrorKind::Truncated,
            format!(
                "The file is truncated: its metadata header is {length} bytes long and only \
                 {p} follow."
            ),
        )),
        Ok(_) => Err(corrupt(format!(
            "The file is corrupt: its metadata length of {length} bytes is over the \
             {MAX_METADATA_BYTES} bytes a DBN header may hold."
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(SourceError::new(
            SourceErrorKind::Truncated,
            "The file is truncated: its zstd stream ends inside the metadata header.",
        )),
        Err(e) => Err(corrupt(format!("The file's metadata cannot be read: {e}."))),
    }
}

/// DBN fixed-point price to `f64`; `None` for the "undefined" sentinel.
fn price(px: i64) -> Option<f64> {
    (px != dbn::UNDEF_PRICE).then(|| px as f64 / 1e9)
}

impl DbnReader {
    /// Opens `path`: a DBN file of version 1 to 3 and of a tick schema, whose metadata maps
    /// instrument ids to symbols.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let (version, metadata_len) = prelude(path)?;
        let size = std::fs::metadata(path).map_or(0, |m| m.len());
        let metadata = MetadataDecoder::with_upgrade_policy(
            open_stream(path)?.take(8 + metadata_len),
            VersionUpgradePolicy::UpgradeToV3,
        )
        .decode()
        .map_err(|e| corrupt(format!("The file's DBN metadata cannot be read: {e}.")))?;
        let types = record_types(metadata.schema)?;
        let stream = open_stream(path)?;
        let compressed = stream.is_compressed();
        let framing = RecordFraming::new(stream, types, compressed, 8 + metadata_len);
        let decoder =
            DbnDecoder::with_upgrade_policy(framing, VersionUpgradePolicy::UpgradeToV3)
                .map_err(|e| corrupt(format!("The file's DBN metadata cannot be read: {e}.")))?;
        let schema = metadata.schema;
        let symbols = decoder.metadata().symbol_map().map_err(|e| {
            corrupt(format!(
                "The file's symbology (metadata mappings) cannot be read: {e}."
            ))
        })?;
        Ok(DbnReader {
            decoder,
            schema: schema.unwrap_or(Schema::Mbp1),
            version,
            symbols,
            cache: HashMap::default(),
            records: 0,
            size: size.max(1),
        })
    }

    /// The file's schema.
    pub fn schema(&self) -> Schema {
        self.schema
    }

    /// The file's DBN version (its records are read as version 3).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Whether the file is zstd-compressed.
    pub fn is_compressed(&self) -> bool {
        self.decoder.get_ref().compressed
    }

    /// Records decoded so far.
    pub fn records_read(&self) -> u64 {
        self.records
    }

    /// Fraction of the file (as stored: compressed for `.zst`) read so far.
    pub fn progress(&self) -> f64 {
        let mut file: &File = self.decoder.get_ref().inner.get_ref().get_ref();
        file.stream_position()
            .map_or(0.0, |p| p as f64 / self.size as f64)
    }

    /// A `kind` error about the record being read.
    fn bad_record(&self, kind: SourceErrorKind, why: impl std::fmt::Display) -> SourceError {
        let at = SourcePosition {
            record: self.records,
            byte: None,
        };
        SourceError::at(kind, at, why)
    }

    /// The next record's ticks; `None` at the end of the file.
    pub fn next_ticks(&mut self) -> Result<Option<RecordTicks>> {
        let decoded = self.decoder.decode_record_ref();
        let rec = match decoded {
            Ok(Some(rec)) => rec,
            Ok(None) => return Ok(None),
            Err(e) => {
                let refused = self.decoder.get_ref().refused.clone();
                let e = refused.unwrap_or_else(|| {
                    self.bad_record(
                        SourceErrorKind::Corrupt,
                        format!("The file is corrupt: {e}."),
                    )
                });
                return Err(e.into());
            }
        };
        let (trade, quote) = ticks_of(&rec);
        let (id, ts_event) = (rec.header().instrument_id, rec.header().ts_event);
        let symbol = match self.cache.get(&id) {
            Some(s) => Ok(*s),
            None => Err(self.symbols.get_for_rec(&rec).cloned()),
        };
        let symbol = match symbol {
            Ok(s) => s,
            Err(name) => self.symbol(id, name)?,
        };
        let position = self.records;
        self.records += 1;
        self.convert(position, symbol, ts_event, trade, quote)
            .map(Some)
    }

    /// The symbol of instrument `id`, named `name` by the symbology, validated and cached.
    fn symbol(&mut self, id: u32, name: Option<String>) -> Result<Symbol, SourceError> {
        let Some(name) = name else {
            return Err(self.bad_record(
                SourceErrorKind::Field,
                format!(
                    "Instrument {id} has no symbol in the file's symbology (its metadata \
                     mappings) at that time; replay stores ticks by symbol."
                ),
            ));
        };
        let s = Symbol::parse(&name).map_err(|e| {
            let why = format!("Instrument {id}'s symbol {name:?} is refused: {e}.");
            self.bad_record(SourceErrorKind::Field, why)
        })?;
        self.cache.insert(id, s);
        Ok(s)
    }

    /// The ticks of record `position`, each validated by its kind.
    fn convert(
        &self,
        position: u64,
        symbol: Symbol,
        ts_event: u64,
        trade: Option<RawTrade>,
        quote: Option<RawQuote>,
    ) -> Result<RecordTicks> {
        let bad = |why: String| {
            let at = SourcePosition {
                record: position,
                byte: None,
            };
            SourceError::at(SourceErrorKind::Field, at, why)
        };
        let time_ns = i64::try_from(ts_event)
            .map_err(|_| bad("The record's ts_event is undefined or out of range.".into()))?;
        let trade = match trade.and_then(|t| Some((t, price(t.price)?))) {
            Some((t, p)) => {
                let side =
                    Side::from_book_code(t.side).map_err(|e| bad(format!("The trade's {e}.")))?;
                let trade = Trade {
                    time_ns,
                    symbol,
                    price: p,
                    volume: f64::from(t.size),
                    side,
                    exchange_seq: i64::from(t.sequence),
                };
                trade
                    .validate()
                    .map_err(|e| bad(format!("The trade's {e}.")))?;
                Some(trade)
            }
            None => None,
        };
        let quote = match quote.and_then(|q| Some((q, price(q.bid_px)?, price(q.ask_px)?))) {
            Some((q, bid, ask)) => {
                let quote = Quote {
                    time_ns,
                    symbol,
                    bid,
                    ask,
                    bid_size: f64::from(q.bid_sz),
                    ask_size: f64::from(q.ask_sz),
                };
                quote
                    .validate()
                    .map_err(|e| bad(format!("The quote's {e}.")))?;
                Some(quote)
            }
            None => None,
        };
        Ok(RecordTicks { trade, quote })
    }
}

impl Iterator for DbnReader {
    type Item = Result<RecordTicks>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_ticks().transpose()
    }
}

/// A DBN file one tick at a time: a record's trade, then its top of book; records with
/// neither are skipped.
#[derive(Debug)]
pub struct DbnTickReader {
    reader: DbnReader,
    /// The quote of the record whose trade was returned last.
    pending: Option<Quote>,
}

impl DbnTickReader {
    /// Opens `path` (see [`DbnReader::open`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(DbnTickReader::from(DbnReader::open(path)?))
    }

    /// The reader of records under it.
    pub fn records(&self) -> &DbnReader {
        &self.reader
    }
}

impl From<DbnReader> for DbnTickReader {
    fn from(reader: DbnReader) -> Self {
        DbnTickReader {
            reader,
            pending: None,
        }
    }
}

impl TickSource for DbnTickReader {
    fn next_tick(&mut self) -> Result<Option<Tick>> {
        if let Some(q) = self.pending.take() {
            return Ok(Some(Tick::Quote(q)));
        }
        while let Some(t) = self.reader.next_ticks()? {
            match (t.trade, t.quote) {
                (Some(trade), quote) => {
                    self.pending = quote;
                    return Ok(Some(Tick::Trade(trade)));
                }
                (None, Some(q)) => return Ok(Some(Tick::Quote(q))),
                (None, None) => continue,
            }
        }
        Ok(None)
    }

    fn progress(&self) -> Option<f64> {
        Some(self.reader.progress())
    }

    /// A trades-schema file holds trades only; every other tick schema may hold both.
    fn kinds(&self) -> crate::ingress::Kinds {
        crate::ingress::Kinds {
            trades: true,
            quotes: self.reader.schema() != Schema::Trades,
        }
    }
}
