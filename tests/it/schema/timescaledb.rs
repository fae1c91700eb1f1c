//! The TimescaleDB variant, against a server with TimescaleDB preloaded named by
//! `CHRISTMAS_TIMESCALEDB_URL`. These tests are `#[ignore]`d, so where they do not run they
//! count as skipped, not passed; `scripts/test.sh` runs them (`--ignored timescaledb`) when
//! the variable is set. Each database they create is dropped afterwards, even on failure:
//! every one holds a TimescaleDB background worker, and at
//! `timescaledb.max_background_workers` the scheduler stops starting new ones.

use std::time::{Duration, SystemTime};

use christmas_core::query::{unix_ns, BarInterval, MarketDataReader};
use christmas_core::schema::{self, Setting, SettingsOutcome};
use christmas_core::{Error, Ingestor, Side, Symbol, Trade};

use crate::support::{connect, count, fresh_core_db};

use super::bars::{
    assert_bars_match_the_file, bars_of, check_cme_sample, decode_cme_sample, FileTrade,
};
use super::*;

const NEEDS: &str = "needs CHRISTMAS_TIMESCALEDB_URL, a server with TimescaleDB preloaded";

/// A database on the TimescaleDB server, dropped when this is (WITH (FORCE): the
/// extension's background worker keeps a connection to it).
struct TsDb {
    base: String,
    name: String,
    url: String,
}

impl TsDb {
    async fn new() -> TsDb {
        let base = std::env::var("CHRISTMAS_TIMESCALEDB_URL")
            .unwrap_or_else(|_| panic!("{NEEDS} (this test is #[ignore]d without it)"));
        let url = christmas_tests::fresh_database(&base).await.unwrap();
        let name = url
            .rsplit('/')
            .next()
            .and_then(|s| s.split('?').next())
            .unwrap()
            .to_string();
        TsDb { base, name, url }
    }
}

impl Drop for TsDb {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // Drop runs inside the test's runtime: drop the database from a thread of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = christmas_tests::connect(&base).await?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {done:?}", self.name);
        }
    }
}

/// Job id, scheduled, and the config value `key` of policy `proc` on `table`.
async fn job(client: &Client, proc: &str, table: &str, key: &str) -> Option<(i32, bool, String)> {
    client
        .query_opt(
            "SELECT job_id, scheduled, coalesce(config ->> $3, 'null')
               FROM timescaledb_information.jobs
              WHERE proc_name = $1 AND hypertable_name = $2",
            &[&proc, &table, &key],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

async fn chunk_interval(client: &Client) -> String {
    client
        .query_one(
            "SELECT time_interval::text FROM timescaledb_information.dimensions
              WHERE hypertable_name = 'market_data' AND column_name = 'time'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The first column of every row `sql` returns, as text.
async fn strings(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_TIMESCALEDB_URL, a server with TimescaleDB preloaded"]
async fn timescaledb_variant_hypertables_policies_and_bars() {
    // The default settings: hypertables, policies, the continuous aggregate.
    let db = TsDb::new().await;
    let url = db.url.clone();
    let report = schema::migrate_url(&url, &SchemaConfig::default())
        .await
        .unwrap();
    assert_eq!(report.variant, Variant::TimescaleDb);
    assert_eq!(report.applied, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    let again = schema::migrate_url(&url, &SchemaConfig::default())
        .await
        .unwrap();
    assert!(again.applied.is_empty());
    let client = connect(&url).await;
    let dims: Vec<(String, String, Option<i32>)> = client
        .query(
            "SELECT hypertable_name::text, column_name::text, num_partitions::int
               FROM timescaledb_information.dimensions
              WHERE hypertable_name IN ('market_data', 'quotes')
              ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        dims,
        vec![
            ("market_data".into(), "symbol".into(), Some(4)),
            ("market_data".into(), "time".into(), None),
            ("quotes".into(), "symbol".into(), Some(4)),
            ("quotes".into(), "time".into(), None),
        ]
    );
    // The (symbol, time) indexes ascend, as the plain variant's do (version 10), and time
    // alone has a BRIN index (version 9).
    let indexes = strings(
        &client,
        "SELECT indexdef FROM pg_indexes
          WHERE schemaname = 'public' AND tablename IN ('market_data', 'quotes')
          ORDER BY indexname",
    )
    .await;
    assert_eq!(
        indexes,
        vec![
            "CREATE INDEX market_data_symbol_time_idx ON public.market_data USING btree (symbol, \"time\")",
            "CREATE INDEX market_data_time_brin ON public.market_data USING brin (\"time\") WITH (autosummarize='on')",
            "CREATE INDEX quotes_symbol_time_idx ON public.quotes USING btree (symbol, \"time\")",
            "CREATE INDEX quotes_time_brin ON public.quotes USING brin (\"time\") WITH (autosummarize='on')",
        ]
    );
    let jobs = strings(
        &client,
        "SELECT proc_name || ':' || coalesce(hypertable_name, '')
           FROM timescaledb_information.jobs
          WHERE hypertable_name IS NOT NULL OR proc_name LIKE 'christmas%'
          ORDER BY 1",
    )
    .await;
    assert_eq!(
        jobs,
        vec![
            "christmas_prune_ledger_job:",
            "policy_compression:market_data",
            "policy_compression:quotes",
            "policy_refresh_continuous_aggregate:market_data_1m",
            "policy_retention:market_data",
            "policy_retention:quotes",
        ]
    );
    let realtime: bool = client
        .query_one(
            "SELECT NOT materialized_only FROM timescaledb_information.continuous_aggregates
              WHERE view_name = 'market_data_1m'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(realtime);

    // The CME sample (2024) into a database that keeps it, bars before and after the
    // continuous aggregate is materialised.
    let keep = SchemaConfig {
        retention: None,
        compress_after: None,
        ..SchemaConfig::default()
    };
    let db2 = TsDb::new().await;
    let url = db2.url.clone();
    schema::migrate_url(&url, &keep).await.unwrap();
    check_cme_sample(&url).await;
    let client = connect(&url).await;
    // Before anything is materialised: the bars are there (read from the raw rows).
    let (trades, _) = decode_cme_sample();
    let reader = MarketDataReader::connect(&url).await.unwrap();
    assert_bars_match_the_file(&reader, &trades).await;
    client
        .batch_execute("CALL refresh_continuous_aggregate('market_data_1m', NULL, NULL)")
        .await
        .unwrap();
    assert_bars_match_the_file(&reader, &trades).await;

    // A database from before versioned migrations: its tables become hypertables.
    let db3 = TsDb::new().await;
    let url = db3.url.clone();
    let client = connect(&url).await;
    client
        .batch_execute(include_str!("../../data/schema-0.1-core.sql"))
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO market_data SELECT now() - i * interval '1 hour', 'ESZ6', i, 1, 'B', i
               FROM generate_series(1, 100) i",
        )
        .await
        .unwrap();
    let report = schema::migrate_url(&url, &keep).await.unwrap();
    assert_eq!(report.variant, Variant::TimescaleDb);
    assert_eq!(count(&client, "market_data").await, 100);
    let hypertables = count(
        &client,
        "timescaledb_information.hypertables WHERE hypertable_name IN ('market_data', 'quotes')",
    )
    .await;
    assert_eq!(hypertables, 2);
}

/// A TimescaleDB database with 6-hour chunks, retention off, and 120 rows of 2024 (from
/// 03:00 to 12:55: three chunks).
async fn with_2024_history() -> (TsDb, Client) {
    let db = TsDb::new().await;
    let keep = SchemaConfig {
        variant: Some(Variant::TimescaleDb),
        chunk_interval: Duration::from_secs(6 * 3_600),
        retention: None,
        ..SchemaConfig::default()
    };
    schema::migrate_url(&db.url, &keep).await.unwrap();
    let client = connect(&db.url).await;
    client
        .batch_execute(
            "INSERT INTO market_data SELECT timestamptz '2024-07-01 03:00+00' + i * interval '5 minutes',
                    'ESU4', 100 + i, 1, 'B', i
               FROM generate_series(0, 119) i",
        )
        .await
        .unwrap();
    (db, client)
}

fn retention(keep: Option<Duration>, confirm: bool) -> SchemaConfig {
    SchemaConfig {
        retention: keep,
        change: vec![Setting::Retention],
        confirm_deletion: confirm,
        ..SchemaConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_TIMESCALEDB_URL, a server with TimescaleDB preloaded"]
async fn timescaledb_settings_are_kept_and_policies_altered_in_place() {
    let (db, client) = with_2024_history().await;
    let compression = job(
        &client,
        "policy_compression",
        "market_data",
        "compress_after",
    )
    .await
    .expect("a compression policy");
    assert_eq!(chunk_interval(&client).await, "06:00:00");

    // The defaults change nothing: same width, same job, no retention.
    let report = schema::migrate_url(&db.url, &SchemaConfig::default())
        .await
        .unwrap();
    assert_eq!(report.settings, SettingsOutcome::Unchanged);
    assert_eq!(chunk_interval(&client).await, "06:00:00");
    assert_eq!(
        job(
            &client,
            "policy_compression",
            "market_data",
            "compress_after"
        )
        .await,
        Some(compression.clone())
    );
    assert!(
        job(&client, "policy_retention", "market_data", "drop_after")
            .await
            .is_none()
    );
    assert_eq!(count(&client, "market_data").await, 120);

    // Retention on would drop the 2024 chunks: refused, with what it would delete.
    match schema::migrate_url(
        &db.url,
        &retention(Some(Duration::from_secs(90 * 86_400)), false),
    )
    .await
    {
        Err(Error::Config { field, reason }) => {
            assert_eq!(field, "retention");
            assert!(
                reason.contains("120 rows in 3 partitions of market_data"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        job(&client, "policy_retention", "market_data", "drop_after")
            .await
            .is_none()
    );

    // Compression changed and turned off: the same job, altered, then paused.
    let one_day = SchemaConfig {
        compress_after: Some(Duration::from_secs(86_400)),
        change: vec![Setting::CompressAfter],
        ..SchemaConfig::default()
    };
    schema::migrate_url(&db.url, &one_day).await.unwrap();
    let altered = job(
        &client,
        "policy_compression",
        "market_data",
        "compress_after",
    )
    .await
    .unwrap();
    assert_eq!((altered.0, altered.1), (compression.0, true));
    let interval: bool = client
        .query_one(
            "SELECT $1::text::interval = interval '1 day'",
            &[&altered.2],
        )
        .await
        .unwrap()
        .get(0);
    assert!(interval, "{altered:?}");
    let off = SchemaConfig {
        compress_after: None,
        change: vec![Setting::CompressAfter],
        ..SchemaConfig::default()
    };
    schema::migrate_url(&db.url, &off).await.unwrap();
    let paused = job(
        &client,
        "policy_compression",
        "market_data",
        "compress_after",
    )
    .await
    .unwrap();
    assert_eq!((paused.0, paused.1), (compression.0, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_TIMESCALEDB_URL, a server with TimescaleDB preloaded"]
async fn timescaledb_confirmed_retention_deletes_and_off_pauses_the_same_job() {
    let (db, client) = with_2024_history().await;
    let ninety = Some(Duration::from_secs(90 * 86_400));
    let report = schema::migrate_url(&db.url, &retention(ninety, true))
        .await
        .unwrap();
    assert_eq!(report.deletions.len(), 1, "{report:?}");
    assert_eq!(
        (report.deletions[0].partitions, report.deletions[0].rows),
        (3, 120)
    );
    let drop_job = job(&client, "policy_retention", "market_data", "drop_after")
        .await
        .expect("a retention policy");
    client
        .batch_execute(&format!("CALL run_job({})", drop_job.0))
        .await
        .unwrap();
    assert_eq!(count(&client, "market_data").await, 0);
    // Off pauses it; on again resumes the same job.
    schema::migrate_url(&db.url, &retention(None, false))
        .await
        .unwrap();
    let paused = job(&client, "policy_retention", "market_data", "drop_after")
        .await
        .unwrap();
    assert_eq!((paused.0, paused.1), (drop_job.0, false));
    let longer = Some(Duration::from_secs(400 * 86_400));
    schema::migrate_url(&db.url, &retention(longer, false))
        .await
        .unwrap();
    let resumed = job(&client, "policy_retention", "market_data", "drop_after")
        .await
        .unwrap();
    assert_eq!((resumed.0, resumed.1), (drop_job.0, true));
}

/// Trades of two symbols from `start_ns` every `step_ns`, prices cycling.
fn trades_from(start_ns: i64, step_ns: i64, n: i64, seq0: i64) -> Vec<Trade> {
    (0..n)
        .map(|i| Trade {
            time_ns: start_ns + i * step_ns,
            symbol: Symbol::new(if i % 3 == 0 { "TSB" } else { "TSA" }).unwrap(),
            price: 100.0 + ((i * 37 + seq0) % 50) as f64 / 4.0,
            volume: 1.0 + (i % 5) as f64,
            side: Side::Buy,
            exchange_seq: seq0 + i,
        })
        .collect()
}

async fn push(url: &str, trades: &[Trade]) {
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(url)
        .partition_maintenance(None)
        .start()
        .await
        .unwrap();
    ingestor.push_batch(trades).unwrap();
    ingestor.shutdown().await.unwrap();
}

/// Every width of TSA's bars from `reader`, as (start µs, open, high, low, close, volume, n).
async fn all_bars(reader: &MarketDataReader, from_ns: i64, to_ns: i64) -> Vec<Vec<Bar7>> {
    let mut out = Vec::new();
    for interval in BarInterval::ALL {
        let bars = reader
            .bars(Symbol::new("TSA").unwrap(), interval, from_ns, to_ns)
            .await
            .unwrap();
        out.push(
            bars.iter()
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
                .collect(),
        );
    }
    out
}

type Bar7 = (i64, f64, f64, f64, f64, f64, u64);

fn expected_bars(trades: &[Trade]) -> Vec<Vec<Bar7>> {
    let tsa: Vec<FileTrade> = trades
        .iter()
        .filter(|t| t.symbol.as_str() == "TSA")
        .map(|t| FileTrade {
            time_us: t.time_ns / 1_000,
            seq: t.exchange_seq,
            price: t.price,
            size: t.volume,
            side: b'B',
        })
        .collect();
    BarInterval::ALL
        .iter()
        .map(|i| bars_of(&tsa, i.duration().as_micros() as i64))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_TIMESCALEDB_URL, a server with TimescaleDB preloaded"]
async fn timescaledb_bars_stay_right_behind_the_watermark_and_in_compressed_chunks() {
    let db = TsDb::new().await;
    let keep = SchemaConfig {
        variant: Some(Variant::TimescaleDb),
        retention: None,
        compress_after: None,
        ..SchemaConfig::default()
    };
    schema::migrate_url(&db.url, &keep).await.unwrap();
    let client = connect(&db.url).await;
    let (plain_url, _plain) = fresh_core_db(&christmas_tests::shared_pg_url()).await;

    // Ten days ago, on a whole hour: 1,500 trades 7 s apart (about 3 hours), materialised
    // and compressed.
    let hour_ns = 3_600_000_000_000;
    let start = (unix_ns(SystemTime::now()) - 10 * 86_400_000_000_000) / hour_ns * hour_ns;
    let mut trades = trades_from(start, 7_000_000_123, 1_500, 0);
    push(&db.url, &trades).await;
    client
        .batch_execute("CALL refresh_continuous_aggregate('market_data_1m', NULL, NULL)")
        .await
        .unwrap();
    let compressed: i64 = client
        .query_one(
            "SELECT count(compress_chunk(c)) FROM show_chunks('market_data') c",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(compressed >= 1);
    let stale: i64 = count(&client, "christmas_stale_ranges()").await;
    assert_eq!(stale, 0, "all materialised");

    // Late and historical trades behind the watermark: into the compressed chunk's minutes
    // (shared with the rows already there) and two hours before them.
    let late = [
        trades_from(start + 30_000_000_000, 11_000_000_000, 300, 10_000),
        trades_from(start - 2 * hour_ns, 13_000_000_000, 200, 20_000),
    ]
    .concat();
    push(&db.url, &late).await;
    trades.extend_from_slice(&late);
    assert_eq!(count(&client, "market_data").await, 2_000);
    let compressed_after: i64 = count(
        &client,
        "timescaledb_information.chunks WHERE hypertable_name = 'market_data' AND is_compressed",
    )
    .await;
    assert!(
        compressed_after >= 1,
        "the late rows went into compressed chunks"
    );

    // The plain variant, same trades in the same order.
    push(&plain_url, &trades[..1_500]).await;
    push(&plain_url, &late).await;

    let (from, to) = (start - 3 * hour_ns, start + 5 * hour_ns);
    let expected = expected_bars(&trades);
    let timescale = MarketDataReader::connect(&db.url).await.unwrap();
    let plain = MarketDataReader::connect(&plain_url).await.unwrap();
    assert_eq!(
        all_bars(&timescale, from, to).await,
        expected,
        "TimescaleDB"
    );
    assert_eq!(all_bars(&plain, from, to).await, expected, "plain");

    // The refresh policy (all history) materialises the stale minutes; bars unchanged.
    let refresh = job(
        &client,
        "policy_refresh_continuous_aggregate",
        "market_data_1m",
        "start_offset",
    )
    .await
    .expect("a refresh policy");
    assert_eq!(refresh.2, "null", "the refresh policy covers all history");
    assert!(count(&client, "christmas_stale_ranges()").await > 0);
    client
        .batch_execute(&format!("CALL run_job({})", refresh.0))
        .await
        .unwrap();
    assert_eq!(count(&client, "christmas_stale_ranges()").await, 0);
    assert_eq!(all_bars(&timescale, from, to).await, expected, "refreshed");

    // Retention shortened to a day drops every chunk, compressed ones included.
    let day = SchemaConfig {
        retention: Some(Duration::from_secs(86_400)),
        change: vec![Setting::Retention],
        confirm_deletion: true,
        ..SchemaConfig::default()
    };
    let report = schema::migrate_url(&db.url, &day).await.unwrap();
    assert_eq!(report.deletions[0].rows, 2_000, "{report:?}");
    let drop_job = job(&client, "policy_retention", "market_data", "drop_after")
        .await
        .unwrap();
    client
        .batch_execute(&format!("CALL run_job({})", drop_job.0))
        .await
        .unwrap();
    assert_eq!(count(&client, "market_data").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_TIMESCALEDB_URL, a server with TimescaleDB preloaded"]
async fn timescaledb_is_detected_and_installed_by_a_non_superuser_owner() {
    let db = TsDb::new().await;
    let role = christmas_tests::unique_name("christmas_owner");
    let owner_url = super::settings::owned_by_plain_role(&db.url, &role).await;
    let report = schema::migrate_url(&owner_url, &SchemaConfig::default())
        .await
        .unwrap();
    assert_eq!(report.variant, Variant::TimescaleDb);
    assert_eq!(report.version, 12);
    let owner = connect(&owner_url).await;
    assert_eq!(
        count(
            &owner,
            "timescaledb_information.jobs WHERE hypertable_name IS NOT NULL"
        )
        .await,
        5
    );
    drop(owner);
    let base = db.base.clone();
    drop(db);
    let admin = connect(&base).await;
    admin
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();
}
