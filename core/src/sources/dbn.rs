//! Databento DBN files (MBP-1 schema) as ticks: every record's top of book is a [`Quote`],
//! and records with `action = 'T'` are also a [`Trade`]. Feature `dbn`.
//!
//! Prices are DBN fixed-point (1 unit = 1e-9) converted to `f64`; times are the venue's
//! `ts_event` (nanoseconds); the trade's `exchange_seq` is the venue's `sequence`; the
//! aggressor side `B`/`A`/`N` becomes [`Side::Buy`]/[`Side::Sell`]/[`Side::None`]
//! ([`Side::from_book_code`]), and any other side byte is an error. Every trade and quote
//! passes its kind's `validate`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use ::dbn::decode::{DbnDecoder, DbnMetadata, DecodeRecord, DynReader};
use ::dbn::symbol_map::{SymbolIndex, TsSymbolMap};
use ::dbn::v3::Mbp1Msg;
use ::dbn::VersionUpgradePolicy;

use crate::error::{Error, Result};
use crate::record::{Quote, Side, Tick, Trade};
use crate::sources::TickSource;
use crate::symbol::Symbol;

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
    decoder: FileDecoder,
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

/// The longest metadata read. Real MBP-1 files carry kilobytes (symbols and their
/// mappings); the length comes from the file, and the decoder allocates it up front.
const MAX_METADATA_BYTES: u64 = 1 << 30;

/// The metadata length of a DBN file, `None` when it does not start like one (the decoder
/// then says why).
///
/// Refuses a length larger than the data after it (or than [`MAX_METADATA_BYTES`]) before
/// the decoder allocates a buffer of that length: a corrupt length word would otherwise cost
/// up to 4 GiB. Streams through the (decompressed) bytes without keeping them.
fn metadata_length(path: &Path) -> Result<Option<u64>> {
    let mut reader = DynReader::from_file(path).map_err(|e| dbn_error("opening", e))?;
    let mut prelude = [0u8; 8];
    if reader.read_exact(&mut prelude).is_err() || &prelude[..3] != b"DBN" {
        return Ok(None);
    }
    let length = u64::from(u32::from_le_bytes([
        prelude[4], prelude[5], prelude[6], prelude[7],
    ]));
    let present = std::io::copy(
        &mut reader.take(length.min(MAX_METADATA_BYTES + 1)),
        &mut std::io::sink(),
    )
    .map_err(|e| Error::field("dbn", format!("reading the metadata: {e}")))?;
    if present < length || length > MAX_METADATA_BYTES {
        return Err(Error::field(
            "dbn",
            format!(
                "the metadata length {length} is past the end of the file ({present} bytes \
                 follow) or over {MAX_METADATA_BYTES}"
            ),
        ));
    }
    Ok(Some(length))
}

/// The decompressed file on its way to the decoder, refusing a record that is not an MBP-1
/// record (type 0x01) of a whole number of 8-byte words, at least a header's 16 bytes.
///
/// `dbn` trusts the record headers it is given: it reads each record in place where the
/// previous one ended, relying on 8-byte alignment (a corrupt length byte misaligns the next
/// record: a debug assertion in `dbn`, undefined behaviour without one), and while upgrading
/// an older record of another type it panics when the record is shorter than that type. Any
/// record but MBP-1 fails [`Mbp1Reader::next_ticks`] anyway, so refusing it here refuses
/// nothing that would have been read.
#[derive(Debug)]
struct RecordFraming<R> {
    inner: R,
    /// Bytes from the next byte read to the next record's length byte (`u64::MAX`: not
    /// DBN, nothing checked).
    to_next: u64,
    /// The last read ended on a record's length byte: its type is the next byte.
    rtype_next: bool,
    /// Why the stream was refused, once it was: it ends there.
    refused: Option<String>,
}

/// Why a record's length byte (in 4-byte words) is refused, if it is.
fn bad_length(words: u8) -> Option<String> {
    let len = usize::from(words) * 4;
    (len < 16 || len % 8 != 0)
        .then(|| format!("a record length of {len} bytes (must be a multiple of 8, at least 16)"))
}

/// Why a record's type is refused, if it is.
fn bad_rtype(rtype: u8) -> Option<String> {
    (rtype != dbn::rtype::MBP_1)
        .then(|| format!("a record of type {rtype:#04x} (an MBP-1 file holds type 0x01 only)"))
}

impl<R: Read> Read for RecordFraming<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let refused = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
        if let Some(why) = &self.refused {
            return Err(refused(why));
        }
        let n = self.inner.read(buf)?;
        if self.rtype_next && n > 0 {
            self.rtype_next = false;
            if let Some(why) = bad_rtype(buf[0]) {
                let e = refused(&why);
                self.refused = Some(why);
                return Err(e);
            }
        }
        let mut next = self.to_next;
        while next < n as u64 {
            let at = next as usize;
            let why =
                bad_length(buf[at]).or_else(|| buf[..n].get(at + 1).and_then(|&t| bad_rtype(t)));
            if let Some(why) = why {
                let e = refused(&why);
                self.refused = Some(why);
                // The records before it are whole: hand them on first.
                return if at > 0 { Ok(at) } else { Err(e) };
            }
            self.rtype_next = at + 1 == n;
            next += u64::from(buf[at]) * 4;
        }
        self.to_next = next - n as u64;
        Ok(n)
    }
}

type FileDecoder = DbnDecoder<RecordFraming<DynReader<'static, BufReader<File>>>>;

/// DBN fixed-point price to `f64`; `None` for the "undefined" sentinel.
fn price(px: i64) -> Option<f64> {
    (px != dbn::UNDEF_PRICE).then(|| px as f64 / 1e9)
}

impl Mbp1Reader {
    /// Opens `path`; the file's metadata must map instrument ids to symbols.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let to_next = metadata_length(path)?.map_or(u64::MAX, |len| 8 + len);
        let reader = RecordFraming {
            inner: DynReader::from_file(path).map_err(|e| dbn_error("opening", e))?,
            to_next,
            rtype_next: false,
            refused: None,
        };
        let decoder = DbnDecoder::with_upgrade_policy(reader, VersionUpgradePolicy::UpgradeToV3)
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
                side: Side::from_book_code(rec.side as u8)?,
                exchange_seq: i64::from(rec.sequence),
            }),
            _ => None,
        };
        if let Some(t) = &trade {
            t.validate()?;
        }
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
        if let Some(q) = &quote {
            q.validate()?;
        }
        Ok(Some(Mbp1Ticks { trade, quote }))
    }
}

impl Iterator for Mbp1Reader {
    type Item = Result<Mbp1Ticks>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_ticks().transpose()
    }
}

/// An MBP-1 file one tick at a time: a record's trade, then its top of book; records with
/// neither are skipped.
#[derive(Debug)]
pub struct Mbp1TickReader {
    reader: Mbp1Reader,
    /// The quote of the record whose trade was returned last.
    pending: Option<Quote>,
}

impl Mbp1TickReader {
    /// Opens `path` (see [`Mbp1Reader::open`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Mbp1TickReader::from(Mbp1Reader::open(path)?))
    }
}

impl From<Mbp1Reader> for Mbp1TickReader {
    fn from(reader: Mbp1Reader) -> Self {
        Mbp1TickReader {
            reader,
            pending: None,
        }
    }
}

impl TickSource for Mbp1TickReader {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_path() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/glbx-futures-mbp-1.dbn.zst")
    }

    /// The CME sample decompressed (DBN v1) and where its first record starts.
    fn sample_bytes() -> (Vec<u8>, usize) {
        let mut file = Vec::new();
        DynReader::from_file(sample_path())
            .unwrap()
            .read_to_end(&mut file)
            .unwrap();
        let first_record = 8 + u32::from_le_bytes(file[4..8].try_into().unwrap()) as usize;
        (file, first_record)
    }

    /// Reads `file` to its first error, which it must have: the records read and the error.
    fn read_to_error(name: &str, file: &[u8]) -> (usize, String) {
        let path =
            std::env::temp_dir().join(format!("christmas-{name}-{}.dbn", std::process::id()));
        std::fs::write(&path, file).unwrap();
        let reader = Mbp1Reader::open(&path);
        std::fs::remove_file(&path).unwrap();
        let mut reader = match reader {
            Ok(r) => r,
            Err(e) => return (0, e.to_string()),
        };
        let mut read = 0;
        loop {
            match reader.next_ticks() {
                Ok(Some(_)) => read += 1,
                Ok(None) => panic!("no error after {read} records"),
                Err(e) => return (read, e.to_string()),
            }
        }
    }

    #[test]
    fn the_cme_sample_still_reads() {
        let ticks: Vec<Mbp1Ticks> = Mbp1Reader::open(sample_path())
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(ticks.len(), 2_288);
        assert_eq!(ticks.iter().filter(|t| t.trade.is_some()).count(), 120);
    }

    #[test]
    fn tick_by_tick_each_trade_comes_before_its_quote() {
        let mut reader = Mbp1TickReader::open(sample_path()).unwrap();
        let mut ticks = Vec::new();
        while let Some(t) = reader.next_tick().unwrap() {
            ticks.push(t);
        }
        let trades = ticks.iter().filter(|t| matches!(t, Tick::Trade(_))).count();
        assert_eq!((trades, ticks.len() - trades), (120, 2_288));
        let first_trade = ticks
            .iter()
            .position(|t| matches!(t, Tick::Trade(_)))
            .unwrap();
        assert!(
            matches!(ticks[first_trade + 1], Tick::Quote(q) if q.time_ns == ticks[first_trade].time_ns())
        );
        assert_eq!(reader.progress(), None);
    }

    /// Hands out at most `chunk` bytes a read, so record headers straddle reads.
    struct Chunked<'a> {
        bytes: &'a [u8],
        chunk: usize,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.chunk).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn framing_passes_whole_records_and_stops_before_a_bad_one() {
        let (file, first) = sample_bytes();
        let framed = |bytes: &[u8], chunk: usize| {
            let mut out = Vec::new();
            let result = RecordFraming {
                inner: Chunked { bytes, chunk },
                to_next: first as u64,
                rtype_next: false,
                refused: None,
            }
            .read_to_end(&mut out);
            (result, out)
        };
        let fifth = first + 4 * 80;
        let mut bad_type = file.clone();
        bad_type[fifth + 1] = 0x15;
        for chunk in [1, 2, 7, 80, 81, 4096, 1 << 20] {
            let (result, out) = framed(&file, chunk);
            result.unwrap();
            assert_eq!(out, file, "chunk {chunk}");
            let (result, out) = framed(&bad_type, chunk);
            let e = result.unwrap_err().to_string();
            assert!(e.contains("type 0x15"), "chunk {chunk}: {e}");
            // Nothing of the bad record but (with one-byte reads) its length byte.
            assert!((fifth..=fifth + 1).contains(&out.len()), "chunk {chunk}");
        }
    }

    /// Found by fuzzing (dbn_reader): a record length byte of 21 words (84 bytes) left the
    /// next record misaligned in the decoder's buffer, which `dbn` asserts against (and reads
    /// anyway in a release build).
    #[test]
    fn a_record_length_off_the_8_byte_grid_is_an_error() {
        let (mut file, first) = sample_bytes();
        file.truncate(first + 10 * 80);
        let fifth = first + 4 * 80;
        assert_eq!(file[fifth], 20, "an 80-byte MBP-1 record");
        file[fifth] = 21;
        let (read, e) = read_to_error("dbn-record-length", &file);
        assert_eq!(read, 4, "the records before it are read");
        assert!(e.contains("a record length of 84 bytes"), "{e}");
    }

    /// Found by fuzzing (dbn_reader): an 80-byte error record (type 0x15) in a v1 file whose
    /// metadata sets `ts_out` made `dbn`'s upgrade to v3 panic (it expected 88 bytes).
    #[test]
    fn a_record_of_another_type_is_an_error() {
        let (mut file, first) = sample_bytes();
        file.truncate(first + 10 * 80);
        file[60] = 1; // ts_out, in the v1 metadata's fixed part
        file[first + 4 * 80 + 1] = 0x15;
        let (read, e) = read_to_error("dbn-record-type", &file);
        assert_eq!(read, 4, "the records before it are read");
        assert!(e.contains("a record of type 0x15"), "{e}");
    }

    /// Found by fuzzing (dbn_reader): a metadata length word of 0xC6000000 in a 500-byte
    /// file made the decoder allocate 3.3 GB before reading any metadata.
    #[test]
    fn a_metadata_length_past_the_end_is_an_error() {
        let mut file = b"DBN\x01\x00\x00\x00\xc6GLBX.MDP3".to_vec();
        file.resize(500, 0);
        let (read, e) = read_to_error("dbn-metadata-length", &file);
        assert_eq!(read, 0);
        assert!(e.contains("metadata length 3321888768"), "{e}");
    }
}
