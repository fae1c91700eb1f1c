//! Partition maintenance of the plain-PostgreSQL and Citus variants. Ledger pruning lives with the
//! ledger (`pg/ledger.rs`) and is re-exported here.
//!
//! The SQL functions do the work (`sql/postgres/0002_market_data.sql`,
//! `0006_partition_autovacuum.sql`); this drives them, one partition per transaction so no
//! lock is held longer than one partition takes. In the TimescaleDB variant the partition
//! functions report nothing to do (chunks are created on demand and TimescaleDB's jobs
//! enforce retention); only the autovacuum hand-back of closed chunks does work.

use std::time::SystemTime;

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::{Error, Result};

pub use crate::pg::ledger::prune_ledger;

/// What one maintenance pass over a table did and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// The table maintained.
    pub table: String,
    /// Time partitions created (ahead of time, or for rows the default partition held).
    pub partitions_created: u32,
    /// Rows moved out of the default partition into a new time partition.
    pub rows_moved: u64,
    /// Time partitions dropped because they ended before the retention window.
    pub partitions_dropped: u32,
    /// Rows older than the retention window deleted from the default partition.
    pub rows_expired: u64,
    /// Rows still in the default partition: later than the partitions created ahead of time
    /// (far-future timestamps), or history when retention is off and more than 64 new
    /// partitions per pass would be needed. They are stored and queryable; this says they
    /// sit outside the time partitions.
    pub rows_in_default: u64,
    /// Leaf tables of open time partitions (or chunks) whose insert-triggered autovacuum was
    /// turned off: they take the live feed (`sql/postgres/0006_partition_autovacuum.sql`).
    pub vacuum_held: u32,
    /// Leaf tables of time partitions (or chunks) that have closed, handed back to
    /// autovacuum to be vacuumed and frozen once.
    pub vacuum_released: u32,
    /// Time partitions moved to columnar storage because they ended more than
    /// `compress_after` ago (Citus; the other variants report 0: TimescaleDB compresses in
    /// its own job).
    pub partitions_compressed: u32,
    /// Prepared transactions of the database older than a minute, on any node (Citus: a
    /// batch whose COMMIT PREPARED on a worker was cut off: committed, but its rows there
    /// invisible until Citus recovers it; elsewhere: someone else's, forgotten).
    pub prepared_stale: u64,
}

/// One maintenance pass over `table` as of the server's clock: what [`maintain_at`] does,
/// through the functions the least-privilege role may run (they take no time argument).
pub async fn maintain(client: &Client, table: &str) -> Result<MaintenanceReport> {
    pass(client, table, None).await
}

/// One maintenance pass over `table` as if the time were `at`: creates the time partitions
/// it should have (the current one, the one before, `partitions_ahead` after, and any range
/// inside the retention window that the default partition holds rows for, moving them in),
/// applies retention, turns insert-triggered autovacuum off on the open partitions' leaves and
/// back on (with freezing) on the closed ones, moves partitions older than `compress_after`
/// to columnar storage (Citus), and counts what is left in the default partition.
///
/// Runs the owner-only `*_at` functions (a caller-chosen clock can expire everything), so
/// only the schema owner may call it: tests and operators that move time.
///
/// Safe to run from several processes at once (the SQL functions serialise per table).
/// Tables this schema does not partition are left alone and report zeros.
pub async fn maintain_at(
    client: &Client,
    table: &str,
    at: SystemTime,
) -> Result<MaintenanceReport> {
    pass(client, table, Some(at)).await
}

/// `SELECT <cols> FROM <function>(table[, at])`: the server-clock function, or its owner-only
/// `_at` twin.
async fn call(
    client: &Client,
    cols: &str,
    function: &str,
    table: &str,
    at: Option<SystemTime>,
) -> std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    match at {
        None => {
            let sql = format!("SELECT {cols} FROM {function}($1) AS b");
            client.query_typed(&sql, &[(&table, Type::TEXT)]).await
        }
        Some(at) => {
            let sql = format!("SELECT {cols} FROM {function}_at($1, $2) AS b");
            client
                .query_typed(&sql, &[(&table, Type::TEXT), (&at, Type::TIMESTAMPTZ)])
                .await
        }
    }
}

async fn pass(client: &Client, table: &str, at: Option<SystemTime>) -> Result<MaintenanceReport> {
    let mut report = MaintenanceReport {
        table: table.to_string(),
        ..MaintenanceReport::default()
    };
    partitions_and_retention(client, table, at, &mut report).await?;
    upkeep(client, table, at, &mut report).await?;
    Ok(report)
}

/// The first half of a pass, what must come before a writer's first batch: the time
/// partitions `table` should have, created, and the retention applied (counted into
/// `report`). Retention stays before the first batch: a replay of history older than it
/// (`--retention-ok`) keeps its rows until the next period's pass, not a few milliseconds.
pub(crate) async fn partitions_and_retention(
    client: &Client,
    table: &str,
    at: Option<SystemTime>,
    report: &mut MaintenanceReport,
) -> Result<()> {
    // Each call returns at most 64 bounds; a few rounds cover a long replay of history.
    for _ in 0..16 {
        let needed: Vec<SystemTime> = call(client, "b", "christmas_partitions_needed", table, at)
            .await
            .map_err(|e| Error::pg("listing partitions to create", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if needed.is_empty() {
            break;
        }
        for lower in needed {
            let moved: i64 = one(
                client
                    .query_typed(
                        "SELECT christmas_create_partition($1, $2)",
                        &[(&table, Type::TEXT), (&lower, Type::TIMESTAMPTZ)],
                    )
                    .await,
                "creating a partition",
            )?
            .get(0);
            if moved >= 0 {
                report.partitions_created += 1;
                report.rows_moved += moved as u64;
            }
        }
    }
    let row = one(
        call(
            client,
            "dropped, expired",
            "christmas_apply_retention",
            table,
            at,
        )
        .await,
        "applying retention",
    )?;
    report.partitions_dropped = row.get::<_, i32>(0) as u32;
    report.rows_expired = row.get::<_, i64>(1) as u64;
    Ok(())
}

/// The second half of a pass: autovacuum, columnar storage (Citus), the stale prepared
/// transactions and the default partition's rows (counted into `report`, logged when the
/// whole pass changed something).
pub(crate) async fn upkeep(
    client: &Client,
    table: &str,
    at: Option<SystemTime>,
    report: &mut MaintenanceReport,
) -> Result<()> {
    let row = one(
        call(
            client,
            "held, released",
            "christmas_tune_autovacuum",
            table,
            at,
        )
        .await,
        "setting the partitions' autovacuum",
    )?;
    report.vacuum_held = row.get::<_, i32>(0) as u32;
    report.vacuum_released = row.get::<_, i32>(1) as u32;
    // One partition per call (each rewrites its rows); a bounded number per pass. Version
    // 11's two functions are optional: a daemon upgraded before `migrate` has run still
    // maintains partitions on a version-10 schema.
    for _ in 0..64 {
        let converted = optional(
            call(
                client,
                "converted",
                "christmas_compress_partitions",
                table,
                at,
            )
            .await,
            "moving old partitions to columnar storage",
        )?
        .map_or(0, |row| row.get::<_, i32>(0) as u32);
        if converted == 0 {
            break;
        }
        report.partitions_compressed += converted;
    }
    report.prepared_stale = optional(
        client
            .query_typed("SELECT christmas_stale_prepared()", &[])
            .await,
        "counting stale prepared transactions",
    )?
    .map_or(0, |row| row.get::<_, i64>(0) as u64);
    report.rows_in_default = one(
        client
            .query_typed("SELECT christmas_default_rows($1)", &[(&table, Type::TEXT)])
            .await,
        "counting rows in the default partition",
    )?
    .get::<_, i64>(0) as u64;
    if report.partitions_created > 0
        || report.partitions_dropped > 0
        || report.rows_expired > 0
        || report.vacuum_released > 0
        || report.partitions_compressed > 0
    {
        tracing::info!(?report, "partitions maintained");
    }
    Ok(())
}

/// [`one`], or `None` when the function called does not exist (a schema older than it).
fn optional(
    rows: std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
    context: &'static str,
) -> Result<Option<tokio_postgres::Row>> {
    match rows {
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_FUNCTION) => {
            Ok(None)
        }
        rows => one(rows, context).map(Some),
    }
}

/// The one row of a `query_typed` (unnamed statements: safe behind PgBouncer in
/// transaction mode).
fn one(
    rows: std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>,
    context: &'static str,
) -> Result<tokio_postgres::Row> {
    rows.map_err(|e| Error::pg(context, e))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Task(format!("{context}: no row")))
}
