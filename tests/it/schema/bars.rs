//! OHLCV bars over the real CME sample compared with bars computed here from the file;
//! the TimescaleDB variant's are in `timescaledb.rs`.

use std::time::SystemTime;

use christmas_core::dbn_file::Mbp1Reader;
use christmas_core::query::{unix_ns, BarInterval, MarketDataReader};
use christmas_core::schema;
use christmas_core::{Ingestor, Quote, Side, Symbol, Trade};

use crate::support::{connect, count, fresh_core_db};

use super::*;

/// A trade decoded straight from the DBN file, independently of `christmas_core::dbn_file`.
#[derive(Debug, Clone, Copy)]
pub(super) struct FileTrade {
    pub(super) time_us: i64,
    pub(super) seq: i64,
    pub(super) price: f64,
    pub(super) size: f64,
    pub(super) side: u8,
}

/// Trades and the number of two-sided top-of-book records in the CME sample.
pub(super) fn decode_cme_sample() -> (Vec<FileTrade>, usize) {
    use dbn::decode::{DecodeRecord, DynDecoder};
    let mut decoder =
        DynDecoder::from_file(cme_sample(), dbn::VersionUpgradePolicy::UpgradeToV3).unwrap();
    let (mut trades, mut quotes) = (Vec::new(), 0);
    while let Some(rec) = decoder.decode_record::<dbn::v3::Mbp1Msg>().unwrap() {
        let top = &rec.levels[0];
        if top.bid_px != dbn::UNDEF_PRICE && top.ask_px != dbn::UNDEF_PRICE {
            quotes += 1;
        }
        if rec.action as u8 == b'T' {
            trades.push(FileTrade {
                // timestamptz keeps microseconds.
                time_us: (rec.hd.ts_event / 1_000) as i64,
                seq: i64::from(rec.sequence),
                price: rec.price as f64 / 1e9,
                size: f64::from(rec.size),
                side: rec.side as u8,
            });
        }
    }
    (trades, quotes)
}

/// OHLCV bars of `width_us`, computed here: (start µs, open, high, low, close, volume, n).
pub(super) fn bars_of(
    trades: &[FileTrade],
    width_us: i64,
) -> Vec<(i64, f64, f64, f64, f64, f64, u64)> {
    let mut sorted = trades.to_vec();
    sorted.sort_by_key(|t| (t.time_us, t.seq));
    let mut bars: Vec<(i64, f64, f64, f64, f64, f64, u64)> = Vec::new();
    for t in sorted {
        let start = t.time_us.div_euclid(width_us) * width_us;
        match bars.last_mut() {
            Some(b) if b.0 == start => {
                b.2 = b.2.max(t.price);
                b.3 = b.3.min(t.price);
                b.4 = t.price;
                b.5 += t.size;
                b.6 += 1;
            }
            _ => bars.push((start, t.price, t.price, t.price, t.price, t.size, 1)),
        }
    }
    bars
}

/// Pushes the CME sample through the engine; returns (trades, quotes) pushed.
async fn ingest_cme_sample(url: &str) -> (u64, u64) {
    let trades = Ingestor::<Trade>::builder()
        .database_url(url)
        .start()
        .await
        .unwrap();
    let quotes = Ingestor::<Quote>::builder()
        .database_url(url)
        .start()
        .await
        .unwrap();
    let (mut nt, mut nq) = (0, 0);
    for ticks in Mbp1Reader::open(cme_sample()).unwrap() {
        let ticks = ticks.unwrap();
        if let Some(t) = ticks.trade {
            trades.push_async(t).await.unwrap();
            nt += 1;
        }
        if let Some(q) = ticks.quote {
            quotes.push_async(q).await.unwrap();
            nq += 1;
        }
    }
    trades.shutdown().await.unwrap();
    quotes.shutdown().await.unwrap();
    (nt, nq)
}

/// Checks every bar width of the reader against bars computed from the file.
pub(super) async fn assert_bars_match_the_file(reader: &MarketDataReader, trades: &[FileTrade]) {
    let es = Symbol::new("ESU4").unwrap();
    let first = trades.iter().map(|t| t.time_us).min().unwrap() * 1_000;
    let last = trades.iter().map(|t| t.time_us).max().unwrap() * 1_000;
    for interval in BarInterval::ALL {
        let width_us = interval.duration().as_micros() as i64;
        let expected = bars_of(trades, width_us);
        let got = reader.bars(es, interval, first, last + 1).await.unwrap();
        let got: Vec<_> = got
            .iter()
            .map(|b| {
                (
                    b.start_ns / 1_000,
                    b.open,
                    b.high,
                    b.low,
                    b.close,
                    b.volume,
                    b.trades,
                )
            })
            .collect();
        assert_eq!(got, expected, "{interval} bars");
    }
    // Ranges select whole bars by their start: the 5-minute bars from the second one on.
    let expected = bars_of(trades, 300_000_000);
    let from = expected[1].0 * 1_000 + 1;
    let got = reader
        .bars(es, BarInterval::Minute5, from, last + 1)
        .await
        .unwrap();
    assert_eq!(got.len(), expected.len() - 1);
    assert_eq!(got[0].start_ns, expected[1].0 * 1_000);
}

pub(super) async fn check_cme_sample(url: &str) {
    let (file_trades, file_quotes) = decode_cme_sample();
    assert_eq!(
        file_trades.len(),
        120,
        "the sample's README says 120 trades"
    );
    let (pushed_trades, pushed_quotes) = ingest_cme_sample(url).await;
    assert_eq!(pushed_trades, 120);
    assert_eq!(pushed_quotes as usize, file_quotes);

    let client = connect(url).await;
    assert_eq!(count(&client, "market_data").await, 120);
    assert_eq!(count(&client, "quotes").await as usize, file_quotes);
    let volume: f64 = client
        .query_one("SELECT sum(volume) FROM market_data", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(volume, file_trades.iter().map(|t| t.size).sum::<f64>());

    let reader = MarketDataReader::connect(url).await.unwrap();
    assert_bars_match_the_file(&reader, &file_trades).await;

    // Every trade reads back, in (time, sequence) order, with its side.
    let es = Symbol::new("ESU4").unwrap();
    let all = reader.trades(es, 0, i64::MAX, 1_000).await.unwrap();
    let mut sorted = file_trades.clone();
    sorted.sort_by_key(|t| (t.time_us, t.seq));
    assert_eq!(all.len(), 120);
    for (got, want) in all.iter().zip(&sorted) {
        assert_eq!(
            (got.time_ns / 1_000, got.exchange_seq, got.price, got.volume),
            (want.time_us, want.seq, want.price, want.size)
        );
        let side = match want.side {
            b'B' => Side::Buy,
            b'A' => Side::Sell,
            _ => Side::None,
        };
        assert_eq!(got.side, side);
    }
    assert_eq!(reader.trades(es, 0, i64::MAX, 7).await.unwrap().len(), 7);
    let latest = reader.latest(es).await.unwrap();
    let last = sorted.last().unwrap();
    let trade = latest.trade.expect("a latest trade");
    assert_eq!(
        (trade.time_ns / 1_000, trade.exchange_seq),
        (last.time_us, last.seq)
    );
    let quote = latest.quote.expect("a latest quote");
    let newest_quote: SystemTime = client
        .query_one("SELECT max(time) FROM quotes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(quote.time_ns, unix_ns(newest_quote));
    assert!(quote.bid < quote.ask);
    let none = reader.latest(Symbol::new("NOPE").unwrap()).await.unwrap();
    assert!(none.trade.is_none() && none.quote.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cme_sample_bars_equal_bars_computed_from_the_file() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    check_cme_sample(&url).await;
    // The 1-minute relation has the same bars as christmas_bars.
    let (trades, _) = decode_cme_sample();
    let expected = bars_of(&trades, 60_000_000);
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM market_data_1m WHERE symbol = 'ESU4'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as usize, expected.len());
    // Maintenance gives July 2024 its partitions; the bars do not change.
    let report = schema::maintain(&client, "market_data").await.unwrap();
    assert_eq!(report.partitions_created, 2, "{report:?}");
    assert_eq!(report.rows_moved, 120);
    assert_eq!(report.rows_in_default, 0);
    let reader = MarketDataReader::connect(&url).await.unwrap();
    assert_bars_match_the_file(&reader, &trades).await;
}
