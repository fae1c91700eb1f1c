//! Settings stored once and kept: migrating with the defaults changes nothing, a change
//! names what it changes, one that deletes rows needs confirming; the least-privilege role
//! runs maintenance on the server's clock only.

use std::time::Duration;

use christmas_core::schema::{self, Deletion, Setting, SettingsOutcome};
use christmas_core::Error;

use crate::support::{count, keep_everything};

use super::*;

/// chunk_interval, retention and ledger_retention as stored, in seconds.
async fn stored(client: &Client) -> (f64, Option<f64>, f64) {
    let r = client
        .query_one(
            "SELECT extract(epoch FROM chunk_interval)::float8,
                    extract(epoch FROM retention)::float8,
                    extract(epoch FROM ledger_retention)::float8
               FROM christmas_settings",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

const HOUR: f64 = 3_600.0;
const DAY: f64 = 86_400.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_kept_and_a_change_that_deletes_rows_needs_confirming() {
    let six_hours = SchemaConfig {
        chunk_interval: Duration::from_secs(6 * 3_600),
        ..keep_everything()
    };
    let (url, client) = fresh_db(&six_hours).await;
    // 2024 history, replayed with retention off: 120 rows from 03:00 to 12:55, in three
    // 6-hour partitions.
    client
        .batch_execute(
            "INSERT INTO market_data SELECT timestamptz '2024-07-01 03:00+00' + i * interval '5 minutes',
                    'ESU4', 100 + i, 1, 'B', i
               FROM generate_series(0, 119) i",
        )
        .await
        .unwrap();
    let report = schema::maintain(&client, "market_data").await.unwrap();
    assert_eq!(report.partitions_created, 3, "{report:?}");
    assert_eq!(stored(&client).await, (6.0 * HOUR, None, 7.0 * DAY));

    // The defaults (1-day partitions, 90-day retention) change nothing and delete nothing.
    let report = schema::migrate_url(&url, &SchemaConfig::default())
        .await
        .unwrap();
    assert_eq!(report.settings, SettingsOutcome::Unchanged);
    assert_eq!(stored(&client).await, (6.0 * HOUR, None, 7.0 * DAY));
    assert_eq!(count(&client, "market_data").await, 120);

    // One setting named: only it changes.
    let ledger = SchemaConfig {
        ledger_retention: Duration::from_secs(3 * 86_400),
        change: vec![Setting::LedgerRetention],
        ..SchemaConfig::default()
    };
    let report = schema::migrate_url(&url, &ledger).await.unwrap();
    assert_eq!(
        report.settings,
        SettingsOutcome::Changed(vec![Setting::LedgerRetention])
    );
    assert_eq!(stored(&client).await, (6.0 * HOUR, None, 3.0 * DAY));

    // Retention on would delete the history: refused with what it would delete.
    let mut retention = SchemaConfig {
        change: vec![Setting::Retention],
        ..SchemaConfig::default()
    };
    match schema::migrate_url(&url, &retention).await {
        Err(Error::Config { field, reason }) => {
            assert_eq!(field, "retention");
            assert!(
                reason.contains("120 rows in 3 partitions of market_data"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(stored(&client).await, (6.0 * HOUR, None, 3.0 * DAY));
    assert_eq!(count(&client, "market_data").await, 120);

    // Confirmed: it says what it deletes, and does.
    retention.confirm_deletion = true;
    let report = schema::migrate_url(&url, &retention).await.unwrap();
    assert_eq!(
        report.settings,
        SettingsOutcome::Changed(vec![Setting::Retention])
    );
    assert_eq!(
        report.deletions,
        vec![Deletion {
            table: "market_data".into(),
            partitions: 3,
            rows: 120
        }]
    );
    assert_eq!(
        stored(&client).await,
        (6.0 * HOUR, Some(90.0 * DAY), 3.0 * DAY)
    );
    assert_eq!(count(&client, "market_data").await, 0);
    let dropped: u32 = report
        .maintenance
        .iter()
        .map(|m| m.partitions_dropped)
        .sum();
    assert_eq!(dropped, 3, "{report:?}");

    // Longer retention deletes nothing and needs no confirmation.
    let longer = SchemaConfig {
        retention: Some(Duration::from_secs(400 * 86_400)),
        change: vec![Setting::Retention],
        ..SchemaConfig::default()
    };
    schema::migrate_url(&url, &longer).await.unwrap();
    assert_eq!(stored(&client).await.1, Some(400.0 * DAY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_ledger_retention_that_prunes_ledger_rows_needs_confirming() {
    let (url, client) = fresh_db(&keep_everything()).await;
    // A shorter ledger retention that would prune ledger rows needs confirming too: a
    // spool replayed or a producer resending after the pruning could store ticks again.
    client
        .batch_execute(
            "INSERT INTO ingest_batches (stream, shard, seq, first_row, rows, committed_at)
             SELECT 'old', 0, i, 0, 10, now() - interval '2 days' FROM generate_series(1, 40) i;
             INSERT INTO ingest_producers (producer, kind, symbol, first_seq, seq, committed_at)
             VALUES ('feed-a', 'trade', 'ESU4', 1, 99, now() - interval '2 days')",
        )
        .await
        .unwrap();
    let mut ledger = SchemaConfig {
        ledger_retention: Duration::from_secs(86_400),
        change: vec![Setting::LedgerRetention],
        ..SchemaConfig::default()
    };
    match schema::migrate_url(&url, &ledger).await {
        Err(Error::Config { field, reason }) => {
            assert_eq!(field, "ledger_retention");
            assert!(
                reason.contains("40 rows of ingest_batches and 1 rows of ingest_producers"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(stored(&client).await.2, 7.0 * DAY);
    ledger.confirm_deletion = true;
    let report = schema::migrate_url(&url, &ledger).await.unwrap();
    assert_eq!(
        report.deletions,
        vec![
            Deletion {
                table: "ingest_batches".into(),
                partitions: 0,
                rows: 40
            },
            Deletion {
                table: "ingest_producers".into(),
                partitions: 0,
                rows: 1
            }
        ]
    );
    assert_eq!(stored(&client).await.2, DAY);
    assert_eq!(schema::prune_ledger(&client).await.unwrap(), 40);
    assert_eq!(count(&client, "ingest_batches").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_least_privilege_role_cannot_choose_the_clock() {
    let role = christmas_tests::unique_name("christmas_app");
    let config = SchemaConfig {
        variant: Some(Variant::Postgres),
        app_role: Some(role.clone()),
        app_password: Some("pw".into()),
        ..SchemaConfig::default()
    };
    let (url, owner) = fresh_db(&config).await;
    owner
        .batch_execute(
            "INSERT INTO market_data SELECT now() - i * interval '1 hour', 'ESZ6', i, 1, 'B', i
               FROM generate_series(1, 50) i;
             INSERT INTO ingest_batches (stream, shard, seq, first_row, rows)
             VALUES ('run', 0, 1, 0, 50);",
        )
        .await
        .unwrap();
    schema::maintain(&owner, "market_data").await.unwrap();
    let app_url = url.replacen(
        "postgres://christmas@",
        &format!("postgres://{role}:pw@"),
        1,
    );
    assert_ne!(app_url, url, "the test URL names its user");
    let app = connect(&app_url).await;
    for attack in [
        "SELECT * FROM christmas_apply_retention('market_data', 'infinity')",
        "SELECT * FROM christmas_apply_retention_at('market_data', 'infinity')",
        "SELECT christmas_prune_ledger('infinity')",
        "SELECT christmas_prune_ledger_at('infinity')",
        "SELECT * FROM christmas_tune_autovacuum_at('market_data', 'infinity')",
        "SELECT * FROM christmas_partitions_needed_at('market_data', 'infinity')",
    ] {
        let err = app.batch_execute(attack).await.expect_err(attack);
        let code = err.code().map(|c| c.code().to_string());
        // 42883: no such function (the server-clock ones take no time); 42501: owner only.
        assert!(
            matches!(code.as_deref(), Some("42883") | Some("42501")),
            "{attack}: {err}"
        );
    }
    // The owner-only maintain_at is refused to it too.
    let far = SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000);
    assert!(schema::maintain_at(&app, "market_data", far).await.is_err());
    // Its own maintenance and ledger pruning run, on the server's clock, and keep the rows.
    let report = schema::maintain(&app, "market_data").await.unwrap();
    assert_eq!(report.rows_expired + report.partitions_dropped as u64, 0);
    assert_eq!(schema::prune_ledger(&app).await.unwrap(), 0);
    assert_eq!(count(&owner, "market_data").await, 50);
    assert_eq!(count(&owner, "ingest_batches").await, 1);
    // The owner may move the clock (as the tests do): 200 days on, retention takes it all.
    let later = SystemTime::now() + Duration::from_secs(200 * 86_400);
    let report = schema::maintain_at(&owner, "market_data", later)
        .await
        .unwrap();
    assert!(report.partitions_dropped > 0, "{report:?}");
    assert_eq!(count(&owner, "market_data").await, 0);
}

/// Makes a login role, neither superuser nor able to read every setting, the owner of the
/// database at `url`; returns the URL that logs in as it.
pub(super) async fn owned_by_plain_role(url: &str, role: &str) -> String {
    let admin = connect(url).await;
    let name = url.rsplit('/').next().unwrap().split('?').next().unwrap();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'pw' NOSUPERUSER NOCREATEROLE;
             ALTER DATABASE {name} OWNER TO {role};"
        ))
        .await
        .unwrap();
    let reads_all: bool = admin
        .query_one(
            "SELECT pg_has_role($1, 'pg_read_all_settings', 'USAGE')",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!reads_all);
    let owner_url = url.replacen(
        "postgres://christmas@",
        &format!("postgres://{role}:pw@"),
        1,
    );
    assert_ne!(owner_url, url, "the test URL names its user");
    owner_url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_superuser_owner_migrates_and_detects_the_variant() {
    let url = christmas_tests::fresh_database(&christmas_tests::shared_pg_url())
        .await
        .unwrap();
    let role = christmas_tests::unique_name("christmas_owner");
    let owner_url = owned_by_plain_role(&url, &role).await;
    let owner = connect(&owner_url).await;
    // The setting the old detection read is closed to this role.
    let err = owner
        .batch_execute("SELECT current_setting('shared_preload_libraries')")
        .await
        .expect_err("needs pg_read_all_settings");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"), "{err}");
    // Auto-detection (the test server does not preload TimescaleDB), then the variant
    // named explicitly.
    let report = schema::migrate_url(&owner_url, &SchemaConfig::default())
        .await
        .unwrap();
    assert_eq!(report.variant, Variant::Postgres);
    assert_eq!(report.version, 12);
    // It may not create roles: the least-privilege role is left to an administrator.
    assert_eq!(report.app_role, None);
    let again = SchemaConfig {
        variant: Some(Variant::Postgres),
        ..SchemaConfig::default()
    };
    let report = schema::migrate_url(&owner_url, &again).await.unwrap();
    assert!(report.applied.is_empty());
    assert_eq!(count(&owner, "christmas_migrations").await, 12);
}
