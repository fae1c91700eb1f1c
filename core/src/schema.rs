//! The minimal schema the pipeline writes to (`sql/0001_core.sql`).

use tokio_postgres::Client;

use crate::{Error, Result};

/// The core tables: `market_data`, `quotes`, `ingest_batches`, `ingest_dead_letters`.
pub const CORE_SQL: &str = include_str!("../../sql/0001_core.sql");

/// Applies [`CORE_SQL`] in one transaction under an advisory lock, so several processes
/// may call it at once. Idempotent.
pub async fn apply_core(client: &Client) -> Result<()> {
    let sql = format!("BEGIN; SELECT pg_advisory_xact_lock(7243567890); {CORE_SQL}\nCOMMIT;");
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| Error::pg("applying the core schema", e))
}

/// Connects to `url` and applies the core schema.
pub async fn apply_core_url(url: &str) -> Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| Error::pg("connecting", e))?;
    let conn = tokio::spawn(connection);
    let result = apply_core(&client).await;
    drop(client);
    let _ = conn.await;
    result
}
