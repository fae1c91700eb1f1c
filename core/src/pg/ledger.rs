//! [`BatchLedger`]: the table of committed batch ids that makes the writer exactly once.
//!
//! Each batch's transaction inserts one row `(stream, shard, seq, first_row, rows)` next to
//! its `COPY`. After an ambiguous failure the writer asks the ledger whether that row is
//! there: if it is, the batch committed; if not, the same bytes are sent again. Old rows are
//! pruned by the schema's `christmas_prune_ledger()` (`christmas_settings.ledger_retention`).

use std::sync::Arc;

use tokio_postgres::error::DbError;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::error::{Error, Result};

/// Who sealed a batch: the run's stream name (`<stream>-<boot id>`) and the shard. With the
/// batch's sequence (and first row, once split), its key in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchOrigin {
    /// The stream name of the run that sealed the batch.
    pub stream: Arc<str>,
    /// The shard that sealed it, in that run.
    pub shard: usize,
}

/// One ledger row: a batch (or the part of it from `first_row` on, once split).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LedgerEntry<'a> {
    /// Who sealed the batch.
    pub origin: &'a BatchOrigin,
    /// The batch's sequence within its shard.
    pub seq: u64,
    /// The first row of the part committed.
    pub first_row: usize,
    /// Rows in the part committed.
    pub rows: usize,
}

/// Whether [`BatchLedger::prune`] has anything to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pruning {
    /// The schema's own ledger table: `christmas_prune_ledger()` prunes it.
    BySchema,
    /// A table the caller named: the schema's function does not know it, so it is left alone.
    Off,
}

/// The ledger table and the statements on it.
#[derive(Debug, Clone)]
pub(crate) struct BatchLedger {
    /// The table as configured (may be schema-qualified).
    table: String,
    /// The table's own name without its schema, as PostgreSQL reports it in errors.
    relation: String,
    pruning: Pruning,
}

impl BatchLedger {
    /// The ledger table the schema creates and prunes.
    pub const SCHEMA_TABLE: &'static str = "ingest_batches";

    /// The ledger in `table` (validated by the ingestor's config).
    pub fn new(table: &str) -> Self {
        BatchLedger {
            table: table.to_string(),
            relation: table.rsplit('.').next().unwrap_or(table).to_string(),
            pruning: if table == Self::SCHEMA_TABLE {
                Pruning::BySchema
            } else {
                Pruning::Off
            },
        }
    }

    /// `BEGIN` and the insert of `entry`'s row, as one simple query (one round trip) that
    /// opens the commit's transaction. The stream name is validated to `[A-Za-z0-9_.:-]`, so
    /// quoting it inline is safe.
    pub fn begin_with_insert(&self, entry: &LedgerEntry<'_>) -> String {
        format!(
            "BEGIN; INSERT INTO {} (stream, shard, seq, first_row, rows) VALUES ('{}', {}, {}, {}, {})",
            self.table,
            entry.origin.stream,
            entry.origin.shard,
            entry.seq,
            entry.first_row,
            entry.rows
        )
    }

    /// `BEGIN` and one insert of a row for each of `origin`'s whole batches `(seq, rows)`,
    /// as one simple query: the transaction that commits several batches at once. The rows
    /// are the ones [`BatchLedger::begin_with_insert`] writes for each batch alone, so the
    /// ledger answers for each batch the same way whichever wrote it.
    pub fn begin_with_inserts(
        &self,
        origin: &BatchOrigin,
        batches: impl IntoIterator<Item = (u64, usize)>,
    ) -> String {
        use std::fmt::Write;
        let mut sql = format!(
            "BEGIN; INSERT INTO {} (stream, shard, seq, first_row, rows) VALUES ",
            self.table
        );
        for (i, (seq, rows)) in batches.into_iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            let _ = write!(
                sql,
                "{sep}('{}', {}, {seq}, 0, {rows})",
                origin.stream, origin.shard
            );
        }
        sql
    }

    /// True when `entry`'s row is in the ledger: that part of the batch committed.
    pub async fn contains(
        &self,
        client: &Client,
        entry: &LedgerEntry<'_>,
    ) -> std::result::Result<bool, tokio_postgres::Error> {
        let sql = format!(
            "SELECT rows FROM {} WHERE stream = $1 AND shard = $2 AND seq = $3 AND first_row = $4",
            self.table
        );
        // Unnamed statements throughout: safe behind PgBouncer in transaction mode.
        let row = client
            .query_typed(
                &sql,
                &[
                    (&&*entry.origin.stream, Type::TEXT),
                    (&(entry.origin.shard as i32), Type::INT4),
                    (&(entry.seq as i64), Type::INT8),
                    (&(entry.first_row as i32), Type::INT4),
                ],
            )
            .await?
            .into_iter()
            .next();
        Ok(match row {
            Some(r) => {
                let stored: i32 = r.get(0);
                debug_assert_eq!(stored as usize, entry.rows, "ledger row count mismatch");
                true
            }
            None => false,
        })
    }

    /// True when `db` is a violation on the ledger table itself (a retry after an
    /// ambiguous commit), not on the rows being copied.
    pub fn is_ledger_error(&self, db: &DbError) -> bool {
        db.table() == Some(self.relation.as_str())
    }

    /// Prunes rows older than the retention setting; `None` when this ledger is not the
    /// schema's table (nothing is pruned).
    pub async fn prune(&self, client: &Client) -> Result<Option<u64>> {
        match self.pruning {
            Pruning::BySchema => prune_ledger(client).await.map(Some),
            Pruning::Off => Ok(None),
        }
    }
}

/// Deletes exactly-once ledger rows older than `christmas_settings.ledger_retention`;
/// returns how many went.
pub async fn prune_ledger(client: &Client) -> Result<u64> {
    let row = client
        .query_typed("SELECT christmas_prune_ledger()", &[])
        .await
        .map_err(|e| Error::pg("pruning the ledger", e))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Task("pruning the ledger: no row".into()))?;
    Ok(row.get::<_, i64>(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_schema_table_is_pruned() {
        assert_eq!(
            BatchLedger::new(BatchLedger::SCHEMA_TABLE).pruning,
            Pruning::BySchema
        );
        assert_eq!(BatchLedger::new("my_ledger").pruning, Pruning::Off);
        assert_eq!(BatchLedger::new("ops.ingest_batches").pruning, Pruning::Off);
    }

    #[test]
    fn insert_names_the_origin() {
        let origin = BatchOrigin {
            stream: "feed-1".into(),
            shard: 3,
        };
        let sql = BatchLedger::new("ops.ledger").begin_with_insert(&LedgerEntry {
            origin: &origin,
            seq: 7,
            first_row: 2,
            rows: 5,
        });
        assert_eq!(
            sql,
            "BEGIN; INSERT INTO ops.ledger (stream, shard, seq, first_row, rows) \
             VALUES ('feed-1', 3, 7, 2, 5)"
        );
    }

    #[test]
    fn a_group_inserts_the_row_each_batch_would_alone() {
        let origin = BatchOrigin {
            stream: "feed-1".into(),
            shard: 3,
        };
        let ledger = BatchLedger::new("ops.ledger");
        let sql = ledger.begin_with_inserts(&origin, [(7, 5), (8, 100)]);
        assert_eq!(
            sql,
            "BEGIN; INSERT INTO ops.ledger (stream, shard, seq, first_row, rows) \
             VALUES ('feed-1', 3, 7, 0, 5), ('feed-1', 3, 8, 0, 100)"
        );
        let alone = ledger.begin_with_insert(&LedgerEntry {
            origin: &origin,
            seq: 8,
            first_row: 0,
            rows: 100,
        });
        assert!(alone.ends_with(&sql[sql.len() - "('feed-1', 3, 8, 0, 100)".len()..]));
    }
}
