//! PostgreSQL helpers shared by the scenarios: connections (the harness's), a fresh migrated
//! database per scenario, the reset between runs, row counts and the server's settings.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio_postgres::Client;

pub use christmas_tests::pg::connect;
use christmas_tests::pg::database_url;

/// The schema variant of the bench's fresh databases: `CHRISTMAS_BENCH_VARIANT`
/// (`postgres`, `timescaledb` or `citus`), so that both can be measured on one TimescaleDB server;
/// unset, the migrator's choice (TimescaleDB where it is preloaded).
fn variant() -> Result<Option<christmas_core::schema::Variant>> {
    match std::env::var("CHRISTMAS_BENCH_VARIANT") {
        Ok(v) if !v.is_empty() => Ok(Some(
            v.parse()
                .with_context(|| format!("CHRISTMAS_BENCH_VARIANT={v}"))?,
        )),
        _ => Ok(None),
    }
}

/// A new database `name` on the server of `base` (dropped first if it exists), migrated to
/// the current schema; its URL. Each scenario gets its own, so nothing else's rows are
/// touched and every run starts from the same empty tables.
///
/// On a Citus coordinator (its database has the citus extension) the database is made on
/// every node and gets the citus variant (`christmas_tests::citus`).
pub async fn fresh_database(base: &str, name: &str) -> Result<String> {
    if christmas_tests::citus::is_citus(base).await? {
        let db = christmas_tests::citus::create_database(base, name).await?;
        let config = christmas_core::schema::SchemaConfig {
            variant: variant()?,
            ..Default::default()
        };
        christmas_core::schema::migrate_url(&db.url, &config).await?;
        return Ok(db.url);
    }
    let admin = connect(base).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let url = database_url(base, name)?;
    let config = christmas_core::schema::SchemaConfig {
        variant: variant()?,
        ..Default::default()
    };
    christmas_core::schema::migrate_url(&url, &config).await?;
    Ok(url)
}

/// Empties the tick tables and the batch ledger and takes a checkpoint, then lets the
/// server's background writes settle, so each run starts from the same idle state.
pub async fn reset(client: &Client, settle: Duration) -> Result<()> {
    client
        .batch_execute("TRUNCATE market_data, quotes, ingest_batches, ingest_producers; CHECKPOINT")
        .await?;
    tokio::time::sleep(settle).await;
    Ok(())
}

pub async fn count(client: &Client, table: &str) -> Result<i64> {
    Ok(client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0))
}

/// `name=value, …` of the server settings a figure depends on.
pub async fn settings(client: &Client, names: &[&str]) -> Result<String> {
    let mut s = Vec::new();
    for name in names {
        let v: String = client.query_one(&format!("SHOW {name}"), &[]).await?.get(0);
        s.push(format!("{name}={v}"));
    }
    Ok(s.join(", "))
}
