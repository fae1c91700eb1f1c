//! Partitions, retention, vacuum settings by partition age, the ledger's pruning and
//! the least-privilege role.

use std::time::{Duration, SystemTime};

use christmas_core::schema::{self, SchemaConfig};
use christmas_core::{Ingestor, Trade};
use tokio_postgres::Client;

use crate::support::{connect, count, fresh_core_db, keep_everything};

use super::*;

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
    // Its first pass finishes beside the first batches, not before start returns.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let seen = loop {
        if let Some(report) = ingestor.metrics().maintenance {
            break report;
        }
        assert!(std::time::Instant::now() < deadline, "no first pass");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_runs_on_a_schema_without_version_11() {
    // A daemon upgraded before `migrate` runs meets a version-10 schema: the pass still
    // creates partitions and counts, and reports 0 for what version 11 adds.
    let (_url, client) = fresh_db(&plain_with_retention()).await;
    let newest: String = client
        .query_one(
            "SELECT name FROM christmas_partitions WHERE parent_table = 'market_data'
              ORDER BY lower_bound DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(&format!(
            "DROP FUNCTION christmas_stale_prepared();
             DROP FUNCTION christmas_compress_partitions(text);
             DROP FUNCTION christmas_compress_partitions_at(text, timestamptz);
             DROP TABLE {newest};
             DELETE FROM christmas_partitions WHERE name = '{newest}';"
        ))
        .await
        .unwrap();
    let report = schema::maintain(&client, "market_data").await.unwrap();
    assert_eq!(report.partitions_created, 1, "{report:?}");
    assert_eq!(report.partitions_compressed, 0);
    assert_eq!(report.prepared_stale, 0);
    assert!(relation_exists(&client, &newest).await);
}
