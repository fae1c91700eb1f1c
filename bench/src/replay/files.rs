//! The files of the replay scenario, all holding the same trades: a CSV (what replay, `psql
//! \copy … csv` and the asyncpg loader read), a Databento DBN file of the trades schema,
//! zstd-compressed as Databento delivers it (written with the `dbn` crate's encoder), and
//! binary COPY files per shard for the `psql` ceiling, split as replay's writers split the
//! rows.

use std::ffi::c_char;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use christmas_core::sources::timefmt::format_ns;
use christmas_core::synthetic::SyntheticMarket;
use christmas_core::{ShardRouter, Side, Trade};
use christmas_ingest::commands::replay;
use dbn::encode::{DbnEncoder, DynWriter, EncodeRecord};
use dbn::{rtype, Compression, MappingInterval, RecordHeader, SType, Schema, SymbolMapping};

use crate::market::{self, TempDir};

/// The header of the CSV: the generic dialect's names, which are also `market_data`'s
/// columns, so `psql \copy` reads the same file.
pub const CSV_HEADER: &str = "time,symbol,price,volume,side,exchange_seq";

/// The same trades in every form the contenders read, in a temporary directory.
#[derive(Debug)]
pub struct Inputs {
    pub csv: PathBuf,
    pub dbn: PathBuf,
    /// One binary COPY file per shard.
    pub copy_files: Vec<PathBuf>,
    /// The rows in each.
    pub shard_rows: Vec<usize>,
    pub csv_bytes: u64,
    pub dbn_bytes: u64,
    /// Holds the files until the run ends.
    _tmp: TempDir,
}

/// `rows` trades of a synthetic market of `symbols` instruments, 1 µs apart from now (so
/// the database's retention and partitions take them), with the values a DBN file can
/// hold: prices on the 1e-9 grid, whole volumes, sequences that fit a `u32`.
pub fn trades(rows: usize, symbols: usize, seed: u64) -> Vec<Trade> {
    let now_us = christmas_core::query::unix_ns(std::time::SystemTime::now()) / 1_000;
    let mut market = SyntheticMarket::new(seed, symbols.max(1));
    (0..rows)
        .map(|i| {
            let mut t = market.next_trade();
            t.time_ns = (now_us + i as i64) * 1_000;
            t.price = (t.price * 1e9).round() / 1e9;
            t.volume = t.volume.round().max(1.0);
            t.exchange_seq = i as i64 + 1;
            t
        })
        .collect()
}

/// Writes every file for `trades`, split over `shards` for the ceiling.
pub fn prepare(trades: &[Trade], shards: usize) -> Result<Inputs> {
    let tmp = TempDir::new("replay")?;
    let csv = tmp.0.join("trades.csv");
    write_csv(&csv, trades)?;
    let dbn = tmp.0.join("trades.dbn.zst");
    write_dbn(&dbn, trades)?;
    // Each file holds what one of replay's writers writes: replay deals the symbols of its
    // first chunk out by their rows (`symbol_shards`), the rest by the hash.
    let first = trades.iter().take(replay::CHUNK).map(|t| &t.symbol);
    let router = ShardRouter::new(shards).with_symbols(replay::symbol_shards(first, shards));
    let per_shard = market::split_by_router(trades, &router);
    let copy_files = market::write_copy_files(&tmp.0, "replay", &per_shard)?;
    let shard_rows = per_shard.iter().map(Vec::len).collect();
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len());
    Ok(Inputs {
        csv_bytes: size(&csv)?,
        dbn_bytes: size(&dbn)?,
        csv,
        dbn,
        copy_files,
        shard_rows,
        _tmp: tmp,
    })
}

/// The CSV: [`CSV_HEADER`], times RFC 3339 in UTC with microseconds, sides `B`/`S`/`N`.
fn write_csv(path: &Path, trades: &[Trade]) -> Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "{CSV_HEADER}")?;
    for t in trades {
        let time = format_ns(t.time_ns);
        // Whole microseconds: drop the three zeros of the nanoseconds.
        let time = time
            .strip_suffix("000Z")
            .map_or(time.clone(), |s| format!("{s}Z"));
        writeln!(
            w,
            "{time},{},{},{},{},{}",
            t.symbol.as_str(),
            t.price,
            t.volume,
            t.side.code() as char,
            t.exchange_seq
        )?;
    }
    w.flush()?;
    Ok(())
}

/// The DBN file: schema `trades`, one instrument id per symbol mapped through the
/// metadata's symbology for today and the next days, zstd-compressed.
fn write_dbn(path: &Path, trades: &[Trade]) -> Result<()> {
    let mut symbols: Vec<&str> = trades.iter().map(|t| t.symbol.as_str()).collect();
    symbols.sort_unstable();
    symbols.dedup();
    let id_of = |s: &str| symbols.binary_search(&s).map_or(0, |i| i as u32 + 1);
    let first_ns = trades.first().map_or(0, |t| t.time_ns);
    let today = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(first_ns))
        .context("the first trade's time")?
        .date();
    let until = today + time::Duration::days(3);
    let mappings = symbols
        .iter()
        .enumerate()
        .map(|(i, s)| SymbolMapping {
            raw_symbol: s.to_string(),
            intervals: vec![MappingInterval {
                start_date: today,
                end_date: until,
                symbol: (i + 1).to_string(),
            }],
        })
        .collect();
    let metadata = dbn::Metadata::builder()
        .dataset("XNAS.ITCH")
        .schema(Some(Schema::Trades))
        .start(first_ns as u64)
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .symbols(symbols.iter().map(|s| s.to_string()).collect())
        .mappings(mappings)
        .build();
    let file = BufWriter::new(std::fs::File::create(path)?);
    let mut writer = DynWriter::new(file, Compression::Zstd)?;
    {
        let mut encoder = DbnEncoder::new(&mut writer, &metadata)?;
        for t in trades {
            let ts = t.time_ns as u64;
            let side = match t.side {
                Side::Buy => b'B',
                Side::Sell => b'A',
                Side::None => b'N',
            };
            encoder.encode_record(&dbn::TradeMsg {
                hd: RecordHeader::new::<dbn::TradeMsg>(
                    rtype::MBP_0,
                    1,
                    id_of(t.symbol.as_str()),
                    ts,
                ),
                price: (t.price * 1e9).round() as i64,
                size: t.volume as u32,
                action: b'T' as c_char,
                side: side as c_char,
                ts_recv: ts,
                sequence: t.exchange_seq as u32,
                ..Default::default()
            })?;
        }
    }
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use christmas_core::sources::{ReadOptions, ReplayFile};
    use christmas_core::Tick;

    use super::*;

    /// Every contender loads the same rows: replay's own reader gives back, from the CSV and
    /// from the DBN file, exactly the trades the ceiling's COPY files hold.
    #[test]
    fn the_csv_and_the_dbn_file_hold_the_trades_of_the_copy_files() {
        let trades = trades(3_000, 40, 7);
        let inputs = prepare(&trades, 2).unwrap();
        assert_eq!(inputs.copy_files.len(), 2);
        for path in [&inputs.csv, &inputs.dbn] {
            let mut file = ReplayFile::open(path, &ReadOptions::default()).unwrap();
            assert!(file.notes().is_empty(), "{:?}", file.notes());
            let mut read = Vec::new();
            while let Some((_, tick)) = file.next_tick().unwrap() {
                match tick {
                    Tick::Trade(t) => read.push(t),
                    Tick::Quote(q) => panic!("{} holds a quote: {q:?}", path.display()),
                }
            }
            assert_eq!(read, trades, "{}", path.display());
        }
    }
}
