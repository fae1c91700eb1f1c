//! The ingestor's background partition maintenance: one connection, one pass every
//! `partition_maintenance`, never in the way of the writers (it only ever waits on its own
//! locks, and a failed pass is logged and retried at the next tick).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use crate::ingestor::Shared;
use crate::record::Record;
use crate::schema::{self, MaintenanceReport};
use crate::{Error, Result};

/// A connected maintainer for one table.
pub(crate) struct PartitionTask {
    url: String,
    table: String,
    prune_ledger: bool,
    client: Option<Client>,
}

impl PartitionTask {
    /// Connects and checks the schema has the maintenance functions; `Ok(None)` when the
    /// target table is not one the schema partitions (nothing to do).
    pub async fn connect<R: Record>(shared: &Shared<R>, url: &str) -> Result<Option<Self>> {
        let table = shared
            .config
            .table
            .clone()
            .unwrap_or_else(|| R::DEFAULT_TABLE.to_string());
        if table.contains('.') {
            return Ok(None);
        }
        let client = connect(url).await?;
        let present = client
            .query_typed(
                "SELECT to_regprocedure('christmas_partitions_needed(text,timestamptz)') IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| Error::pg("looking for the maintenance functions", e))?
            .first()
            .is_some_and(|r| r.get::<_, bool>(0));
        if !present {
            tracing::debug!(table, "no christmas schema here: partition maintenance off");
            return Ok(None);
        }
        Ok(Some(PartitionTask {
            url: url.to_string(),
            table,
            prune_ledger: shared.config.ledger_table == "ingest_batches",
            client: Some(client),
        }))
    }

    /// One pass; the report also goes into the ingestor's metrics.
    pub async fn pass<R: Record>(&mut self, shared: &Shared<R>) -> Result<MaintenanceReport> {
        let client = match self.client.take().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => connect(&self.url).await?,
        };
        let report = schema::maintain(&client, &self.table).await;
        let pruned = match (&report, self.prune_ledger) {
            (Ok(_), true) => schema::prune_ledger(&client).await.map(Some),
            _ => Ok(None),
        };
        self.client = Some(client);
        let report = report?;
        if let Some(n) = pruned? {
            tracing::debug!(rows = n, "ledger pruned");
        }
        let previous = shared
            .maintenance
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(report.clone());
        let before = previous.map_or(0, |p| p.rows_in_default);
        if report.rows_in_default > before {
            tracing::warn!(
                table = self.table,
                rows = report.rows_in_default,
                "rows outside every time partition (far-future, or history beyond what was \
                 created) are held in the default partition"
            );
        }
        Ok(report)
    }

    /// Runs a pass every `every` until the ingestor closes.
    pub async fn run<R: Record>(mut self, shared: Arc<Shared<R>>, every: Duration) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shared.stop.notified() => return,
            }
            if shared.closed.load(Ordering::SeqCst) {
                return;
            }
            if let Err(e) = self.pass(&shared).await {
                tracing::warn!(table = self.table, error = %e, "partition maintenance failed; retrying next period");
            }
        }
    }
}

async fn connect(url: &str) -> Result<Client> {
    crate::pg::connect(
        &crate::pg::parse_url(url)?,
        "christmas-maintenance",
        "connecting for partition maintenance",
    )
    .await
}
