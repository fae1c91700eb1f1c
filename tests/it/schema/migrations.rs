//! Migrations: applied once, upgraded, concurrent, refused when edited or of another
//! variant, and the partition width fixed once used.

use std::time::Duration;

use christmas_core::schema::{self, SchemaConfig, Setting, SettingsOutcome, Variant};
use christmas_core::Error;

use crate::support::{connect, count, fresh_core_db, keep_everything};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_on_an_empty_database_and_are_idempotent() {
    let url = christmas_tests::fresh_database(&christmas_tests::shared_pg_url())
        .await
        .unwrap();
    let config = keep_everything();
    let first = schema::migrate_url(&url, &config).await.unwrap();
    assert_eq!(first.variant, Variant::Postgres);
    assert_eq!(first.applied, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert_eq!(first.version, 12);
    let client = connect(&url).await;
    for t in [
        "market_data",
        "quotes",
        "ingest_batches",
        "ingest_dead_letters",
        "ingest_producers",
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
    assert_eq!(second.version, 12);
    assert_eq!(count(&client, "christmas_migrations").await, 12);
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
    let legacy = include_str!("../../data/schema-0.1-core.sql");
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
    assert_eq!(report.applied, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
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
        vec![
            vec![],
            vec![],
            vec![],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        ]
    );
    let client = connect(&url).await;
    assert_eq!(count(&client, "christmas_migrations").await, 12);
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
    let mut hourly = SchemaConfig {
        chunk_interval: Duration::from_secs(3_600),
        ..keep_everything()
    };
    // Not asked to change it: the stored width is kept.
    let report = schema::migrate_url(&url, &hourly).await.unwrap();
    assert_eq!(report.settings, SettingsOutcome::Unchanged);
    hourly.change = vec![Setting::ChunkInterval];
    match schema::migrate_url(&url, &hourly).await {
        Err(Error::Config { field, .. }) => assert_eq!(field, "chunk_interval"),
        other => panic!("{other:?}"),
    }
}
