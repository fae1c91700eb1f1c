//! Helpers shared by the integration tests: a fresh database with the core schema, a
//! client, and deterministic tick generators.

use christmas_core::schema::{SchemaConfig, Variant};
use christmas_core::{Side, Symbol, Trade};
use tokio_postgres::Client;

/// Connects and drives the connection in the background.
pub async fn connect(url: &str) -> Client {
    christmas_tests::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e:#}"))
}

/// A new database on `base_url` with the plain-PostgreSQL schema and retention off (the
/// tests' ticks are from 2024); returns its URL and a client.
pub async fn fresh_core_db(base_url: &str) -> (String, Client) {
    let url = christmas_tests::fresh_database(base_url)
        .await
        .expect("create a test database");
    christmas_core::schema::migrate_url(&url, &keep_everything())
        .await
        .expect("migrate");
    let client = connect(&url).await;
    (url, client)
}

/// The default schema config, plain PostgreSQL, without retention.
pub fn keep_everything() -> SchemaConfig {
    SchemaConfig {
        variant: Some(Variant::Postgres),
        retention: None,
        ..SchemaConfig::default()
    }
}

/// `SELECT count(*)` of a table.
pub async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

/// `n` symbols named `S000`, `S001`, …
pub fn symbols(n: usize) -> Vec<Symbol> {
    (0..n)
        .map(|i| Symbol::new(&format!("S{i:03}")).expect("valid symbol"))
        .collect()
}

/// The `k`-th trade of a symbol: times and sequence numbers rise with `k`, prices are
/// multiples of 0.25 so sums are exact in `f64`.
pub fn trade(symbol: Symbol, k: u64) -> Trade {
    Trade {
        time_ns: 1_719_878_400_000_000_000 + k as i64 * 1_000,
        symbol,
        price: 5_000.0 + (k % 400) as f64 * 0.25,
        volume: 1.0 + (k % 7) as f64,
        side: if k.is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        },
        exchange_seq: k as i64,
    }
}

/// Adds an `arrival` column to `market_data`, filled from a sequence in insertion order, so
/// a test can check the order rows reached the table in. (A sequence default rather than an
/// identity column: PostgreSQL 15 has no identity columns on partitioned tables.)
pub async fn track_arrival(client: &Client) {
    client
        .batch_execute(
            "CREATE SEQUENCE market_data_arrival;
             ALTER TABLE market_data ADD COLUMN arrival bigint
                 NOT NULL DEFAULT nextval('market_data_arrival')",
        )
        .await
        .expect("add arrival column");
}

/// Rows whose `exchange_seq` does not rise with arrival within their symbol (0 when every
/// symbol's rows arrived in push order), plus duplicated (symbol, exchange_seq) pairs.
pub async fn order_violations_and_duplicates(client: &Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT
               (SELECT count(*) FROM (
                  SELECT exchange_seq <= lag(exchange_seq) OVER w AS bad
                  FROM market_data WINDOW w AS (PARTITION BY symbol ORDER BY arrival)
                ) t WHERE bad),
               (SELECT count(*) - count(DISTINCT (symbol, exchange_seq)) FROM market_data)",
            &[],
        )
        .await
        .expect("order check");
    (row.get(0), row.get(1))
}
