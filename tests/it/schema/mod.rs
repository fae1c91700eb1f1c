//! The versioned schema: migrations, partitions, retention, the least-privilege role, and
//! OHLCV bars over the real CME sample compared with bars computed here from the file.

use std::time::SystemTime;

use christmas_core::query::{system_time, unix_ns};
use christmas_core::schema::{self, SchemaConfig, Variant};
use christmas_core::{Ingestor, Side, Symbol, Trade};
use tokio_postgres::Client;

use crate::support::connect;

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

mod bars;
mod citus;
mod citus_faults;
mod migrations;
mod partitions;
mod settings;
mod timescaledb;
