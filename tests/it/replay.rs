//! File replay end to end: every DBN tick schema in versions 1 to 3, plain and zstd, the CSV
//! dialects, truncated files and the retention guard, each checked against the rows read
//! back from PostgreSQL and a count made in the test (with `dbn`'s own decoder and
//! encoders, not the reader under test).

use std::ffi::c_char;
use std::path::{Path, PathBuf};

use christmas_core::schema::{SchemaConfig, Variant};
use christmas_ingest::replay::{self, ReplayArgs};
use dbn::decode::{DbnDecoder, DbnMetadata, DecodeRecord};
use dbn::encode::{DbnEncoder, DynWriter, EncodeRecord, EncodeRecordTextExt};
use dbn::{rtype, Compression, Metadata, RecordHeader, Schema, VersionUpgradePolicy};
use tokio_postgres::Client;

use crate::support::{connect, count, fresh_core_db};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/glbx-futures-mbp-1.dbn.zst")
}

/// A scratch directory for one test's files, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("christmas-replay-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The sample's metadata (its symbology) and its records, decoded by `dbn`.
fn sample_records() -> (Metadata, Vec<dbn::Mbp1Msg>) {
    let mut decoder = DbnDecoder::with_upgrade_policy(
        dbn::decode::DynReader::from_file(sample()).unwrap(),
        VersionUpgradePolicy::UpgradeToV3,
    )
    .unwrap();
    let metadata = decoder.metadata().clone();
    let mut records = Vec::new();
    while let Some(r) = decoder.decode_record::<dbn::Mbp1Msg>().unwrap() {
        records.push(r.clone());
    }
    (metadata, records)
}

/// Trades and quotes of sample records, counted as the reader should: a trade per
/// `action = 'T'`, a quote per record with both sides priced.
fn expected_mbp1(records: &[dbn::Mbp1Msg]) -> (i64, i64) {
    let trades = records.iter().filter(|r| r.action as u8 == b'T').count();
    let quotes = records
        .iter()
        .filter(|r| {
            r.levels[0].bid_px != dbn::UNDEF_PRICE && r.levels[0].ask_px != dbn::UNDEF_PRICE
        })
        .count();
    (trades as i64, quotes as i64)
}

/// `records` in a DBN file of `schema` and `version`, zstd or not, with `metadata`'s
/// symbology.
fn dbn_file<R: dbn::encode::DbnEncodable>(
    metadata: &Metadata,
    schema: Schema,
    version: u8,
    zstd: bool,
    records: &[R],
) -> Vec<u8> {
    let mut m = metadata.clone();
    m.schema = Some(schema);
    m.version = version;
    m.symbol_cstr_len = if version == 1 {
        dbn::compat::SYMBOL_CSTR_LEN_V1
    } else {
        dbn::compat::SYMBOL_CSTR_LEN_V2
    };
    let mut out = Vec::new();
    {
        let compression = if zstd {
            Compression::Zstd
        } else {
            Compression::None
        };
        let writer = DynWriter::new(&mut out, compression).unwrap();
        let mut encoder = DbnEncoder::new(writer, &m).unwrap();
        encoder.encode_records(records).unwrap();
    }
    out
}

async fn stored(db: &Client) -> (i64, i64, f64) {
    let trades = count(db, "market_data").await;
    let quotes = count(db, "quotes").await;
    let sum: f64 = db
        .query_one(
            "SELECT coalesce(sum(price), 0)::float8 FROM market_data",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (trades, quotes, sum)
}

async fn empty(db: &Client) {
    db.batch_execute("TRUNCATE market_data, quotes, ingest_producers")
        .await
        .unwrap();
}

const T: c_char = b'T' as c_char;
const ADD: c_char = b'A' as c_char;

/// Records of each tick schema for one instrument, built from the sample's first record
/// (its instrument and time, so the sample's symbology maps them): record `k` is at
/// 5000 + (k mod 400) / 4, and every third of the book schemas is a trade.
struct Gen {
    id: u32,
    ts0: u64,
}

const SIDE: c_char = b'B' as c_char;

impl Gen {
    fn ts(&self, k: u64) -> u64 {
        self.ts0 + k * 1_000
    }

    fn px(k: u64) -> i64 {
        5_000_000_000_000 + (k as i64 % 400) * 250_000_000
    }

    fn action(k: u64) -> c_char {
        if k.is_multiple_of(3) {
            T
        } else {
            ADD
        }
    }

    fn level(k: u64) -> dbn::BidAskPair {
        dbn::BidAskPair {
            bid_px: Self::px(k),
            ask_px: Self::px(k) + 250_000_000,
            bid_sz: 3,
            ask_sz: 4,
            bid_ct: 1,
            ask_ct: 1,
        }
    }

    fn clevel(k: u64) -> dbn::ConsolidatedBidAskPair {
        dbn::ConsolidatedBidAskPair {
            bid_px: Self::px(k),
            ask_px: Self::px(k) + 250_000_000,
            bid_sz: 3,
            ask_sz: 4,
            ..Default::default()
        }
    }

    fn hd<R: dbn::HasRType<Header = RecordHeader>>(&self, rtype: u8, k: u64) -> RecordHeader {
        RecordHeader::new::<R>(rtype, 1, self.id, self.ts(k))
    }

    fn mbo(&self, k: u64) -> dbn::MboMsg {
        dbn::MboMsg {
            hd: self.hd::<dbn::MboMsg>(rtype::MBO, k),
            price: Self::px(k),
            size: 1,
            ts_recv: self.ts(k),
            action: Self::action(k),
            side: SIDE,
            sequence: k as u32,
            ..Default::default()
        }
    }

    fn mbp10(&self, k: u64) -> dbn::Mbp10Msg {
        dbn::Mbp10Msg {
            hd: self.hd::<dbn::Mbp10Msg>(rtype::MBP_10, k),
            price: Self::px(k),
            size: 1,
            ts_recv: self.ts(k),
            action: Self::action(k),
            side: SIDE,
            sequence: k as u32,
            levels: std::array::from_fn(|i| {
                if i == 0 {
                    Self::level(k)
                } else {
                    Default::default()
                }
            }),
            ..Default::default()
        }
    }

    /// A TBBO record: a trade with the book before it.
    fn tbbo(&self, k: u64) -> dbn::Mbp1Msg {
        dbn::Mbp1Msg {
            hd: self.hd::<dbn::Mbp1Msg>(rtype::MBP_1, k),
            price: Self::px(k),
            size: 1,
            ts_recv: self.ts(k),
            action: T,
            side: SIDE,
            sequence: k as u32,
            levels: [Self::level(k)],
            ..Default::default()
        }
    }

    fn trade(&self, k: u64) -> dbn::TradeMsg {
        dbn::TradeMsg {
            hd: self.hd::<dbn::TradeMsg>(rtype::MBP_0, k),
            price: Self::px(k),
            size: 1,
            ts_recv: self.ts(k),
            action: T,
            side: SIDE,
            sequence: k as u32,
            ..Default::default()
        }
    }

    fn bbo(&self, k: u64) -> dbn::BboMsg {
        dbn::BboMsg {
            hd: self.hd::<dbn::BboMsg>(rtype::BBO_1S, k),
            price: Self::px(k),
            size: 1,
            ts_recv: self.ts(k),
            side: SIDE,
            levels: [Self::level(k)],
            ..dbn::BboMsg::default_for_schema(Schema::Bbo1S)
        }
    }

    fn cbbo(&self, k: u64) -> dbn::CbboMsg {
        dbn::CbboMsg {
            hd: self.hd::<dbn::CbboMsg>(rtype::CBBO_1S, k),
            price: Self::px(k),
            size: 1,
            ts_recv: self.ts(k),
            side: SIDE,
            levels: [Self::clevel(k)],
            ..dbn::CbboMsg::default_for_schema(Schema::Cbbo1S)
        }
    }

    fn cmbp1(&self, k: u64) -> dbn::Cmbp1Msg {
        dbn::Cmbp1Msg {
            hd: self.hd::<dbn::Cmbp1Msg>(rtype::CMBP_1, k),
            price: Self::px(k),
            size: 1,
            ts_recv: self.ts(k),
            action: Self::action(k),
            side: SIDE,
            levels: [Self::clevel(k)],
            ..dbn::Cmbp1Msg::default_for_schema(Schema::Cmbp1)
        }
    }
}

/// A generated file: schema, DBN version, zstd, bytes, trades and quotes it holds.
type SchemaFile = (Schema, u8, bool, Vec<u8>, i64, i64);

/// `n` records of each tick schema, in several DBN versions, plain and zstd.
fn schema_files(metadata: &Metadata, first: &dbn::Mbp1Msg, n: u64) -> Vec<SchemaFile> {
    let g = Gen {
        id: first.hd.instrument_id,
        ts0: first.hd.ts_event,
    };
    let mbo: Vec<_> = (0..n).map(|k| g.mbo(k)).collect();
    let thirds = (n as i64 + 2) / 3;
    let n = n as i64;
    vec![
        (
            Schema::Mbo,
            1,
            false,
            dbn_file(metadata, Schema::Mbo, 1, false, &mbo),
            thirds,
            0,
        ),
        (
            Schema::Mbo,
            3,
            true,
            dbn_file(metadata, Schema::Mbo, 3, true, &mbo),
            thirds,
            0,
        ),
        {
            let r: Vec<_> = (0..n as u64).map(|k| g.mbp10(k)).collect();
            (
                Schema::Mbp10,
                2,
                true,
                dbn_file(metadata, Schema::Mbp10, 2, true, &r),
                thirds,
                n,
            )
        },
        {
            let r: Vec<_> = (0..n as u64).map(|k| g.tbbo(k)).collect();
            (
                Schema::Tbbo,
                3,
                false,
                dbn_file(metadata, Schema::Tbbo, 3, false, &r),
                n,
                n,
            )
        },
        {
            let r: Vec<_> = (0..n as u64).map(|k| g.trade(k)).collect();
            (
                Schema::Trades,
                1,
                true,
                dbn_file(metadata, Schema::Trades, 1, true, &r),
                n,
                0,
            )
        },
        {
            let r: Vec<_> = (0..n as u64).map(|k| g.bbo(k)).collect();
            (
                Schema::Bbo1S,
                2,
                false,
                dbn_file(metadata, Schema::Bbo1S, 2, false, &r),
                0,
                n,
            )
        },
        {
            let r: Vec<_> = (0..n as u64).map(|k| g.cbbo(k)).collect();
            (
                Schema::Cbbo1S,
                3,
                true,
                dbn_file(metadata, Schema::Cbbo1S, 3, true, &r),
                0,
                n,
            )
        },
        {
            let r: Vec<_> = (0..n as u64).map(|k| g.cmbp1(k)).collect();
            (
                Schema::Cmbp1,
                3,
                false,
                dbn_file(metadata, Schema::Cmbp1, 3, false, &r),
                thirds,
                n,
            )
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dbn_tick_schema_and_version_stores_its_ticks() {
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let dir = Scratch::new("schemas");
    let (metadata, records) = sample_records();
    // The sample itself in DBN versions 1, 2 and 3, plain and zstd.
    let (trades, quotes) = expected_mbp1(&records);
    assert_eq!((trades, quotes), (120, 2_288));
    for version in 1..=3 {
        for zstd in [false, true] {
            let bytes = dbn_file(&metadata, Schema::Mbp1, version, zstd, &records);
            // The name says nothing: the content does.
            let path = dir.write(&format!("mbp1-v{version}-{zstd}.bin"), &bytes);
            let s = replay::run(&url, &ReplayArgs::new(&path)).await.unwrap();
            let (t, q, _) = stored(&db).await;
            assert_eq!((t, q), (trades, quotes), "v{version} zstd {zstd}");
            assert_eq!(s.committed, (trades + quotes) as u64);
            empty(&db).await;
        }
    }
    let n = 1_000;
    for (schema, version, zstd, bytes, trades, quotes) in schema_files(&metadata, &records[0], n) {
        let path = dir.write(&format!("{schema}-v{version}.dbn"), &bytes);
        let what = format!("{schema} v{version} zstd {zstd}");
        let s = replay::run(&url, &ReplayArgs::new(&path))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        let (t, q, sum) = stored(&db).await;
        assert_eq!((t, q), (trades, quotes), "{what}");
        assert_eq!(
            (s.trades, s.quotes),
            (trades as u64, quotes as u64),
            "{what}"
        );
        let step = if trades == n as i64 { 1 } else { 3 };
        let price_sum: f64 = (0..n)
            .step_by(step)
            .map(|k| 5_000.0 + (k % 400) as f64 * 0.25)
            .sum();
        assert_eq!(sum, if trades > 0 { price_sum } else { 0.0 }, "{what}");
        let symbols: i64 = db
            .query_one("SELECT count(DISTINCT symbol) FILTER (WHERE symbol <> 'ESU4') FROM (SELECT symbol FROM market_data UNION ALL SELECT symbol FROM quotes) s", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            symbols, 0,
            "{what}: instrument ids map to the file's symbol"
        );
        empty(&db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_and_definitions_are_refused_with_what_to_load_instead() {
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let dir = Scratch::new("refused");
    let (metadata, records) = sample_records();
    let bar = dbn::OhlcvMsg {
        hd: RecordHeader::new::<dbn::OhlcvMsg>(
            rtype::OHLCV_1M,
            1,
            records[0].hd.instrument_id,
            records[0].hd.ts_event,
        ),
        open: 1,
        high: 1,
        low: 1,
        close: 1,
        volume: 1,
    };
    let ohlcv = dir.write(
        "bars.dbn",
        &dbn_file(&metadata, Schema::Ohlcv1M, 3, false, &[bar]),
    );
    let e = format!(
        "{:#}",
        replay::run(&url, &ReplayArgs::new(&ohlcv))
            .await
            .unwrap_err()
    );
    assert!(
        e.contains("ohlcv-1m bars, not ticks") && e.contains("Load the trades"),
        "{e}"
    );
    assert!(!e.contains("Some("), "no Debug output: {e}");
    let def = dir.write(
        "defs.dbn",
        &dbn_file::<dbn::OhlcvMsg>(&metadata, Schema::Definition, 3, false, &[]),
    );
    let e = format!(
        "{:#}",
        replay::run(&url, &ReplayArgs::new(&def)).await.unwrap_err()
    );
    assert!(
        e.contains("definition schema, which has no trades or quotes"),
        "{e}"
    );
    assert_eq!(stored(&db).await.0 + stored(&db).await.1, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_fails_naming_where_and_commits_only_the_ticks_before() {
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let dir = Scratch::new("truncated");
    let (metadata, records) = sample_records();
    let plain = dbn_file(&metadata, Schema::Mbp1, 3, false, &records);
    let first_record = plain.len() - records.len() * 80;
    // A .dbn cut 40 bytes into record 1,000.
    let cut = dir.write("cut.dbn", &plain[..first_record + 1_000 * 80 + 40]);
    let e = replay::run(&url, &ReplayArgs::new(&cut)).await.unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.contains("truncated") && text.contains("record 1000"),
        "{text}"
    );
    let (trades, quotes) = expected_mbp1(&records[..1_000]);
    let (t, q, _) = stored(&db).await;
    assert_eq!(
        (t, q),
        (trades, quotes),
        "the ticks of the 1,000 whole records, no more"
    );
    assert!(
        text.contains(&format!(
            "the {} ticks before that point were committed",
            trades + quotes
        )),
        "{text}"
    );
    empty(&db).await;
    // The real sample's .zst cut in half, as in the issue: an error, never exit 0.
    let zst = std::fs::read(sample()).unwrap();
    let half = dir.write("half.dbn.zst", &zst[..zst.len() / 2]);
    let e = format!(
        "{:#}",
        replay::run(&url, &ReplayArgs::new(&half))
            .await
            .unwrap_err()
    );
    assert!(e.contains("truncated") && e.contains("zstd"), "{e}");
    let (t, q, _) = stored(&db).await;
    assert!(t + q < 120 + 2_288, "{t} {q}");
}

/// A DB with the default 90-day retention.
async fn db_with_retention() -> (String, Client) {
    let url = christmas_tests::fresh_database(&christmas_tests::shared_pg_url())
        .await
        .unwrap();
    let config = SchemaConfig {
        variant: Some(Variant::Postgres),
        ..SchemaConfig::default()
    };
    christmas_core::schema::migrate_url(&url, &config)
        .await
        .unwrap();
    let client = connect(&url).await;
    (url, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_older_than_the_retention_is_refused_unless_asked_for() {
    let (url, db) = db_with_retention().await;
    let e = format!(
        "{:#}",
        replay::run(&url, &ReplayArgs::new(sample()))
            .await
            .unwrap_err()
    );
    assert!(
        e.contains("retention of 90 days") && e.contains("--retention-ok"),
        "{e}"
    );
    assert_eq!(stored(&db).await.0 + stored(&db).await.1, 0);
    let rebased = ReplayArgs {
        rebase_to_now: true,
        ..ReplayArgs::new(sample())
    };
    let s = replay::run(&url, &rebased).await.unwrap();
    assert_eq!(s.committed, 120 + 2_288);
    let ok = ReplayArgs {
        retention_ok: true,
        ..ReplayArgs::new(sample())
    };
    replay::run(&url, &ok).await.unwrap();
    let (t, q, _) = stored(&db).await;
    assert_eq!((t, q), (240, 2 * 2_288));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_dialects_store_every_row() {
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let dir = Scratch::new("csv");
    let (_, records) = sample_records();
    // Databento's own CSV export of the sample (dbn's encoder), fixed-point and pretty.
    for pretty in [false, true] {
        let mut out = Vec::new();
        {
            let mut enc = dbn::encode::csv::Encoder::builder(&mut out)
                .use_pretty_px(pretty)
                .use_pretty_ts(pretty)
                .schema(Some(Schema::Mbp1))
                .with_symbol(true)
                .build()
                .unwrap();
            for r in &records {
                enc.encode_record_with_sym(r, Some("ESU4")).unwrap();
            }
        }
        let path = dir.write(&format!("glbx-{pretty}.csv"), &out);
        replay::run(&url, &ReplayArgs::new(&path)).await.unwrap();
        let (t, q, sum) = stored(&db).await;
        assert_eq!((t, q), expected_mbp1(&records), "pretty {pretty}");
        let expected_sum: f64 = records
            .iter()
            .filter(|r| r.action as u8 == b'T')
            .map(|r| r.price as f64 / 1e9)
            .sum();
        assert!((sum - expected_sum).abs() < 1e-6, "{sum} {expected_sum}");
        empty(&db).await;
    }
    let n = 3_000u64;
    let tardis: String = std::iter::once(
        "exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n".to_string(),
    )
    .chain((0..n).map(|k| {
        format!(
            "binance,BTCUSDT,{},{},{k},{},{},0.5\n",
            1_719_878_400_000_000 + k,
            1_719_878_400_000_100 + k,
            ["buy", "sell", "unknown"][k as usize % 3],
            60_000 + k
        )
    }))
    .collect();
    let binance: String = (0..n)
        .map(|k| {
            format!(
                "{k},{},0.25,1.0,{},{},true\n",
                60_000 + k,
                1_719_878_400_000 + k,
                k % 2 == 0
            )
        })
        .collect();
    let histdata: String = (0..n)
        .map(|k| {
            format!(
                "20240701 19{:02}{:02}{:03},1.0{k:04},1.1{k:04},0\n",
                k / 60 % 60,
                k % 60,
                k % 1000
            )
        })
        .collect();
    for (name, body, trades, quotes) in [
        ("tardis-trades.csv", tardis, n as i64, 0),
        ("binance-BTCUSDT-trades.csv", binance, n as i64, 0),
        ("DAT_ASCII_EURUSD_T_202407.csv", histdata, 0, n as i64),
    ] {
        let path = dir.write(name, body.as_bytes());
        let args = ReplayArgs {
            symbol: name.starts_with("binance").then(|| "BTCUSDT".into()),
            ..ReplayArgs::new(&path)
        };
        replay::run(&url, &args)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let (t, q, _) = stored(&db).await;
        assert_eq!((t, q), (trades, quotes), "{name}");
        empty(&db).await;
    }
    // Times landed where each dialect says: none in 1970, Binance's buyer-maker a sell.
    let path = dir.write("binance-one.csv", b"7,60000,1,1,1719878400000,true,true\n");
    let args = ReplayArgs {
        symbol: Some("BTCUSDT".into()),
        ..ReplayArgs::new(&path)
    };
    replay::run(&url, &args).await.unwrap();
    let row = db
        .query_one(
            "SELECT extract(epoch FROM time)::float8, side FROM market_data",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, f64>(0), row.get::<_, String>(1)),
        (1_719_878_400.0, "S".to_string())
    );
}
