//! The versioned schema: migrations, partitions, retention, the least-privilege role, and
//! OHLCV bars over the real CME sample compared with bars computed here from the file.

use std::time::{Duration, SystemTime};

use christmas_core::dbn_file::Mbp1Reader;
use christmas_core::query::{system_time, unix_ns, BarInterval, MarketDataReader};
use christmas_core::schema::{self, SchemaConfig, Variant};
use christmas_core::{Error, Ingestor, Quote, Side, Symbol, Trade};
use tokio_postgres::Client;

use crate::support::{connect, count, fresh_core_db, keep_everything};

const DAY_NS: i64 = 86_400_000_000_000;

fn cme_sample() -> String {
    format!(
        "{}/data/glbx-futures-mbp-1.dbn.zst",
        env!("CARGO_MANIFEST_DIR")
    )
}

async fn fresh_db(config: &SchemaConfig) -> (String, Client) {
    let url = christmas_tests::fresh_database(&christmas_tests::shared_pg_url())
        .await
        .expect("create a test database");
    schema::migrate_url(&url, config).await.expect("migrate");
    let client = connect(&url).await;
    (url, client)
}

async fn relation_exists(client: &Client, name: &str) -> bool {
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .unwrap()
        .get(0)
}

/// The partition (table) a row with this time went to.
async fn partition_of(client: &Client, table: &str, time_ns: i64) -> String {
    client
        .query_one(
            &format!("SELECT tableoid::regclass::text FROM {table} WHERE time = $1 LIMIT 1"),
            &[&system_time(time_ns)],
        )
        .await
        .unwrap()
        .get(0)
}

/// The default settings (90-day retention) on plain PostgreSQL.
fn plain_with_retention() -> SchemaConfig {
    SchemaConfig {
        variant: Some(Variant::Postgres),
        ..SchemaConfig::default()
    }
}

/// Every `exchange_seq` in `market_data`, ascending.
async fn exchange_seqs(client: &Client) -> Vec<i64> {
    client
        .query(
            "SELECT exchange_seq FROM market_data ORDER BY exchange_seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn now_ns() -> i64 {
    unix_ns(SystemTime::now())
}

fn trade_at(symbol: &str, time_ns: i64, seq: i64) -> Trade {
    Trade {
        time_ns,
        symbol: Symbol::new(symbol).unwrap(),
        price: 100.0 + seq as f64,
        volume: 1.0,
        side: Side::Buy,
        exchange_seq: seq,
    }
}

async fn trades_ingestor(url: &str) -> Ingestor<Trade> {
    Ingestor::<Trade>::builder()
        .database_url(url)
        .shards(2)
        .partition_maintenance(None)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_on_an_empty_database_and_are_idempotent() {
    let url = christmas_tests::fresh_database(&christmas_tests::shared_pg_url())
        .await
        .unwrap();
    let config = keep_everything();
    let first = schema::migrate_url(&url, &config).await.unwrap();
    assert_eq!(first.variant, Variant::Postgres);
    assert_eq!(first.applied, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(first.version, 6);
    let client = connect(&url).await;
    for t in [
        "market_data",
        "quotes",
        "ingest_batches",
        "ingest_dead_letters",
        "orders",
        "market_data_1m",
        "market_data_default",
        "christmas_migrations",
        "christmas_settings",
    ] {
        assert!(relation_exists(&client, t).await, "{t} missing");
    }
    // Yesterday, today and the 3 days ahead exist for both tables, 4 hash partitions each.
    let created: u32 = first.maintenance.iter().map(|m| m.partitions_created).sum();
    assert_eq!(created, 10);
    let leaves = count(&client, "pg_partition_tree('market_data') WHERE isleaf").await;
    assert_eq!(leaves, 5 * 4 + 1);
    let tables_before = count(&client, "pg_class WHERE relkind IN ('r', 'p')").await;
    // The queue tables are never truncated by vacuum (its lock would stall inserts).
    let no_truncate = count(
        &client,
        "pg_class WHERE relname IN ('order_outbox', 'ingest_batches') \
         AND 'vacuum_truncate=false' = ANY(reloptions)",
    )
    .await;
    assert_eq!(no_truncate, 2);

    let second = schema::migrate_url(&url, &config).await.unwrap();
    assert!(second.applied.is_empty(), "{second:?}");
    assert_eq!(second.version, 6);
    assert_eq!(count(&client, "christmas_migrations").await, 6);
    assert_eq!(
        count(&client, "pg_class WHERE relkind IN ('r', 'p')").await,
        tables_before
    );

    // A tick of now lands in today's partition, not the default one.
    let t = now_ns();
    let ingestor = trades_ingestor(&url).await;
    ingestor.push(trade_at("ESZ6", t, 1)).unwrap();
    ingestor.shutdown().await.unwrap();
    let part = partition_of(&client, "market_data", t).await;
    assert!(part.starts_with("market_data_p"), "{part}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_versioned_migrations_is_upgraded_with_its_rows() {
    let url = christmas_tests::fresh_database(&christmas_tests::shared_pg_url())
        .await
        .unwrap();
    let client = connect(&url).await;
    let legacy = include_str!("../data/schema-0.1-core.sql");
    client.batch_execute(legacy).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO market_data SELECT now() - i * interval '1 hour', 'ESZ6', i, 1, 'B', i
               FROM generate_series(1, 100) i;
             INSERT INTO quotes SELECT now() - i * interval '1 minute', 'ESZ6', i, i + 1, 1, 1
               FROM generate_series(1, 50) i;
             INSERT INTO ingest_batches VALUES ('old-run', 0, 1, 0, 100, now());",
        )
        .await
        .unwrap();
    let report = schema::migrate_url(&url, &keep_everything()).await.unwrap();
    assert_eq!(report.applied, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(count(&client, "market_data").await, 100);
    assert_eq!(count(&client, "quotes").await, 50);
    assert_eq!(count(&client, "ingest_batches").await, 1);
    assert_eq!(count(&client, "market_data_default").await, 0, "{report:?}");
    let sum: i64 = client
        .query_one("SELECT sum(exchange_seq)::bigint FROM market_data", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 5_050);
    assert!(!relation_exists(&client, "market_data_unpartitioned").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrators_do_not_collide() {
    let url = christmas_tests::fresh_database(&christmas_tests::shared_pg_url())
        .await
        .unwrap();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { schema::migrate_url(&url, &keep_everything()).await })
        })
        .collect();
    let mut applied = Vec::new();
    for r in runs {
        applied.push(r.await.unwrap().unwrap().applied);
    }
    applied.sort();
    assert_eq!(
        applied,
        vec![vec![], vec![], vec![], vec![1, 2, 3, 4, 5, 6]]
    );
    let client = connect(&url).await;
    assert_eq!(count(&client, "christmas_migrations").await, 6);
    assert_eq!(count(&client, "christmas_partitions").await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_migration_or_another_variant_is_refused() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let timescale = SchemaConfig {
        variant: Some(Variant::TimescaleDb),
        ..keep_everything()
    };
    match schema::migrate_url(&url, &timescale).await {
        Err(Error::Schema { reason }) => assert!(reason.contains("postgres variant"), "{reason}"),
        other => panic!("{other:?}"),
    }
    client
        .batch_execute("UPDATE christmas_migrations SET checksum = 'edited' WHERE version = 2")
        .await
        .unwrap();
    match schema::migrate_url(&url, &keep_everything()).await {
        Err(Error::Schema { reason }) => assert!(reason.contains("migration 2"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timescaledb_is_refused_where_the_server_lacks_it() {
    let base = christmas_tests::shared_pg_url();
    let client = connect(&base).await;
    let available: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let url = christmas_tests::fresh_database(&base).await.unwrap();
    let config = SchemaConfig {
        variant: Some(Variant::TimescaleDb),
        ..keep_everything()
    };
    let result = schema::migrate_url(&url, &config).await;
    if available {
        // Installed but (on the test server) not preloaded.
        match result {
            Err(Error::Schema { reason }) => {
                assert!(reason.contains("shared_preload_libraries"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    } else {
        match result {
            Err(Error::Schema { reason }) => {
                assert!(reason.contains("pg_available_extensions"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
    // Nothing was created but the bookkeeping.
    let client = connect(&url).await;
    assert!(!relation_exists(&client, "market_data").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partition_width_cannot_change_once_partitions_exist() {
    let (url, _client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let hourly = SchemaConfig {
        chunk_interval: Duration::from_secs(3_600),
        ..keep_everything()
    };
    match schema::migrate_url(&url, &hourly).await {
        Err(Error::Config { field, .. }) => assert_eq!(field, "chunk_interval"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_past_far_future_and_new_symbols_land_and_are_reported() {
    // Default retention (90 days): the far-past row is accepted, then expired by
    // maintenance; the far-future one stays in the default partition and is reported.
    let (url, client) = fresh_db(&plain_with_retention()).await;
    let now = now_ns();
    let rows = [
        trade_at("ESZ6", now, 1),
        trade_at("ESZ6", now - DAY_NS, 2), // yesterday: has a partition
        trade_at("NEVERSEEN", now - 30 * DAY_NS, 3), // inside retention, no partition yet
        trade_at("NEVERSEEN", 157_766_400_000_000_000, 4), // 1975: beyond retention
        trade_at("ESZ6", 5_680_281_600_000_000_000, 5), // 2150: far future
    ];
    let ingestor = trades_ingestor(&url).await;
    ingestor.push_batch(&rows).unwrap();
    let snap = ingestor.shutdown().await.unwrap();
    assert_eq!(snap.rows_committed(), 5);
    assert_eq!(snap.dead_lettered(), 0);
    assert_eq!(count(&client, "market_data").await, 5);
    assert_eq!(count(&client, "market_data_default").await, 3);

    let report = schema::maintain(&client, "market_data").await.unwrap();
    assert_eq!(report.partitions_created, 1, "{report:?}");
    assert_eq!(report.rows_moved, 1, "{report:?}");
    assert_eq!(report.rows_expired, 1, "{report:?}");
    assert_eq!(report.rows_in_default, 1, "{report:?}");
    let seqs = exchange_seqs(&client).await;
    assert_eq!(seqs, vec![1, 2, 3, 5]);
    let moved = partition_of(&client, "market_data", now - 30 * DAY_NS).await;
    assert!(moved.starts_with("market_data_p"), "{moved}");
    assert_eq!(
        partition_of(&client, "market_data", 5_680_281_600_000_000_000).await,
        "market_data_default"
    );
    // The ingestor reports the same through its metrics.
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .start()
        .await
        .unwrap();
    let seen = ingestor.metrics().maintenance.expect("a first pass ran");
    assert_eq!(seen.rows_in_default, 1);
    ingestor.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_only_rows_older_than_the_window() {
    let (url, client) = fresh_db(&plain_with_retention()).await;
    let now = now_ns();
    let ages_days = [115.0, 95.0, 91.0, 90.5, 89.9, 89.0, 60.0, 10.0, 0.0];
    let rows: Vec<Trade> = ages_days
        .iter()
        .enumerate()
        .map(|(i, age)| trade_at("ESZ6", now - (age * DAY_NS as f64) as i64, i as i64))
        .collect();
    let ingestor = trades_ingestor(&url).await;
    ingestor.push_batch(&rows).unwrap();
    ingestor.shutdown().await.unwrap();

    // Thirty days ago every row but the last two was inside the window: give them
    // partitions then, as a daemon running at the time would have.
    let earlier = SystemTime::now() - Duration::from_secs(30 * 86_400);
    let then = schema::maintain_at(&client, "market_data", earlier)
        .await
        .unwrap();
    assert!(then.partitions_created >= 7, "{then:?}");
    assert_eq!(then.rows_expired, 0, "{then:?}");

    let report = schema::maintain(&client, "market_data").await.unwrap();
    assert!(report.partitions_dropped >= 3, "{report:?}");
    let cutoff = now - 90 * DAY_NS;
    let day_of_cutoff = cutoff.div_euclid(DAY_NS) * DAY_NS;
    let left = exchange_seqs(&client).await;
    for (i, row) in rows.iter().enumerate() {
        let kept = left.contains(&(i as i64));
        if row.time_ns >= cutoff {
            assert!(
                kept,
                "row {i} ({} days old) is inside the window",
                ages_days[i]
            );
        } else if row.time_ns < day_of_cutoff {
            assert!(
                !kept,
                "row {i} ({} days old) is older than the window",
                ages_days[i]
            );
        }
        // Rows in [day_of_cutoff, cutoff) share a partition with younger rows: they go
        // when their whole partition is older than the window.
    }
    assert_eq!(report.rows_in_default, 0, "{report:?}");
}

/// Each leaf of `table`'s time partitions with the end of its range and what its reloptions
/// say: (leaf, upper bound, insert-triggered vacuum off, freeze_min_age = 0).
async fn leaf_vacuum_states(client: &Client, table: &str) -> Vec<(String, SystemTime, bool, bool)> {
    client
        .query(
            "SELECT c.relname::text, p.upper_bound,
                    coalesce('autovacuum_vacuum_insert_threshold=-1' = ANY(c.reloptions), false),
                    coalesce('autovacuum_freeze_min_age=0' = ANY(c.reloptions), false)
               FROM christmas_partitions p
              CROSS JOIN LATERAL pg_partition_tree(p.name::regclass) t
               JOIN pg_class c ON c.oid = t.relid
              WHERE p.parent_table = $1 AND t.isleaf
              ORDER BY 1",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// Asserts every leaf of `table` is held (insert-triggered vacuum off) while its range is
/// open at `at`, released (vacuum on, freezing) once it has ended; returns (held, released).
async fn assert_vacuum_follows_the_clock(
    client: &Client,
    table: &str,
    at: SystemTime,
) -> (usize, usize) {
    let states = leaf_vacuum_states(client, table).await;
    assert!(!states.is_empty());
    let (mut held, mut released) = (0, 0);
    for (leaf, upper, is_held, is_released) in &states {
        if *upper > at {
            assert!(*is_held && !*is_released, "{leaf} is open: {states:?}");
            held += 1;
        } else {
            assert!(!*is_held && *is_released, "{leaf} has closed: {states:?}");
            released += 1;
        }
    }
    (held, released)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_partitions_skip_insert_vacuums_and_closed_ones_are_frozen() {
    let (url, client) = fresh_db(&keep_everything()).await;
    let now = SystemTime::now();
    // The migration's pass: yesterday has closed; today and the 3 days ahead are open.
    let (held, released) = assert_vacuum_follows_the_clock(&client, "market_data", now).await;
    assert_eq!((held, released), (4 * 4, 4));
    assert_vacuum_follows_the_clock(&client, "quotes", now).await;
    let default_options: Option<Vec<String>> = client
        .query_one(
            "SELECT reloptions FROM pg_class WHERE relname = 'market_data_default'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        default_options, None,
        "the default partition keeps the server's settings"
    );
    let again = schema::maintain_at(&client, "market_data", now)
        .await
        .unwrap();
    assert_eq!(
        (again.vacuum_held, again.vacuum_released),
        (0, 0),
        "{again:?}"
    );

    // A tick of now goes to a held leaf; two days later its partition has closed and is
    // released, and the partitions created ahead meanwhile are held.
    let t = now_ns();
    let ingestor = trades_ingestor(&url).await;
    ingestor.push(trade_at("ESZ6", t, 1)).unwrap();
    ingestor.shutdown().await.unwrap();
    let leaf = partition_of(&client, "market_data", t).await;
    let state_of = |states: Vec<(String, SystemTime, bool, bool)>| {
        let (_, _, is_held, is_released) = states
            .into_iter()
            .find(|s| s.0 == leaf)
            .expect("the tick's leaf");
        (is_held, is_released)
    };
    assert_eq!(
        state_of(leaf_vacuum_states(&client, "market_data").await),
        (true, false)
    );
    let later = now + Duration::from_secs(2 * 86_400);
    let report = schema::maintain_at(&client, "market_data", later)
        .await
        .unwrap();
    assert_eq!(report.partitions_created, 2, "{report:?}");
    assert_eq!(report.vacuum_held, 2 * 4, "{report:?}");
    assert_eq!(report.vacuum_released, 2 * 4, "{report:?}");
    assert_eq!(
        state_of(leaf_vacuum_states(&client, "market_data").await),
        (false, true)
    );
    let (held, released) = assert_vacuum_follows_the_clock(&client, "market_data", later).await;
    assert_eq!((held, released), (4 * 4, 3 * 4));
    assert_eq!(count(&client, "market_data").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_is_pruned_after_its_retention() {
    let (_url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    client
        .batch_execute(
            "INSERT INTO ingest_batches (stream, shard, seq, first_row, rows, committed_at) VALUES
               ('old', 0, 1, 0, 10, now() - interval '8 days'),
               ('new', 0, 1, 0, 10, now() - interval '6 days')",
        )
        .await
        .unwrap();
    assert_eq!(schema::prune_ledger(&client).await.unwrap(), 1);
    let left: Vec<String> = client
        .query("SELECT stream FROM ingest_batches", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec!["new".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_privilege_role_ingests_and_maintains_but_has_no_ddl() {
    let role = christmas_tests::unique_name("christmas_app");
    let config = SchemaConfig {
        app_role: Some(role.clone()),
        app_password: Some("s3cret'pw".into()),
        ..keep_everything()
    };
    let (url, _owner) = fresh_db(&config).await;
    let app_url = url.replacen(
        "postgres://christmas@",
        &format!("postgres://{role}:s3cret%27pw@"),
        1,
    );
    assert_ne!(app_url, url, "the test URL names its user");

    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&app_url)
        .start()
        .await
        .unwrap();
    let rows: Vec<Trade> = (0..1_000)
        .map(|i| trade_at("ESZ6", 1_719_878_400_000_000_000 + i, i))
        .collect();
    ingestor.push_batch(&rows).unwrap();
    ingestor.shutdown().await.unwrap();

    let app = connect(&app_url).await;
    assert_eq!(count(&app, "market_data").await, 1_000);
    // Its maintenance pass gives the 2024 rows a partition through the definer functions.
    let report = schema::maintain(&app, "market_data").await.unwrap();
    assert_eq!(report.partitions_created, 1, "{report:?}");
    assert_eq!(report.rows_moved, 1_000, "{report:?}");
    // ... and hands the closed partition's 4 leaves back to autovacuum.
    assert_eq!(report.vacuum_released, 4, "{report:?}");
    for ddl in [
        "CREATE TABLE sneaky (x int)",
        "DROP TABLE market_data",
        "ALTER TABLE market_data ADD COLUMN x int",
        "DELETE FROM market_data",
        "TRUNCATE market_data",
        "SELECT christmas_create_partition('orders', now())",
    ] {
        let err = app.batch_execute(ddl).await.expect_err(ddl);
        let code = err.code().map(|c| c.code().to_string());
        assert!(
            matches!(code.as_deref(), Some("42501") | Some("P0001")),
            "{ddl}: {err}"
        );
    }
    assert_eq!(count(&app, "market_data").await, 1_000);
}

/// A trade decoded straight from the DBN file, independently of `christmas_core::dbn_file`.
#[derive(Debug, Clone, Copy)]
struct FileTrade {
    time_us: i64,
    seq: i64,
    price: f64,
    size: f64,
    side: u8,
}

/// Trades and the number of two-sided top-of-book records in the CME sample.
fn decode_cme_sample() -> (Vec<FileTrade>, usize) {
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
fn bars_of(trades: &[FileTrade], width_us: i64) -> Vec<(i64, f64, f64, f64, f64, f64, u64)> {
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
async fn assert_bars_match_the_file(reader: &MarketDataReader, trades: &[FileTrade]) {
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

async fn check_cme_sample(url: &str) {
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

/// Runs only when `CHRISTMAS_TIMESCALEDB_URL` names a server with TimescaleDB loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timescaledb_variant_hypertables_policies_and_bars() {
    let Ok(base) = std::env::var("CHRISTMAS_TIMESCALEDB_URL") else {
        eprintln!("skipped: CHRISTMAS_TIMESCALEDB_URL is not set");
        return;
    };
    // The default settings: hypertables, policies, the continuous aggregate.
    let url = christmas_tests::fresh_database(&base).await.unwrap();
    let report = schema::migrate_url(&url, &SchemaConfig::default())
        .await
        .unwrap();
    assert_eq!(report.variant, Variant::TimescaleDb);
    assert_eq!(report.applied, vec![1, 2, 3, 4, 5, 6]);
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
    let jobs: Vec<String> = client
        .query(
            "SELECT proc_name || ':' || coalesce(hypertable_name, '')
               FROM timescaledb_information.jobs
              WHERE hypertable_name IS NOT NULL OR proc_name LIKE 'christmas%'
              ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
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
    let url = christmas_tests::fresh_database(&base).await.unwrap();
    schema::migrate_url(&url, &keep).await.unwrap();
    check_cme_sample(&url).await;
    let client = connect(&url).await;
    client
        .batch_execute("CALL refresh_continuous_aggregate('market_data_1m', NULL, NULL)")
        .await
        .unwrap();
    let (trades, _) = decode_cme_sample();
    let reader = MarketDataReader::connect(&url).await.unwrap();
    assert_bars_match_the_file(&reader, &trades).await;

    // A database from before versioned migrations: its tables become hypertables.
    let url = christmas_tests::fresh_database(&base).await.unwrap();
    let client = connect(&url).await;
    client
        .batch_execute(include_str!("../data/schema-0.1-core.sql"))
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
