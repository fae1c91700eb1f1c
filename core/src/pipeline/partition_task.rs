//! The ingestor's background partition maintenance: one connection, one pass every
//! `partition_maintenance`, never in the way of the writers (it only ever waits on its own
//! locks, and a failed pass is logged and retried at the next tick).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::pg::ledger::BatchLedger;
use crate::schema::{self, MaintenanceReport};

/// What the ingestor and its maintenance task share: the last report, and the stop signal.
#[derive(Debug, Default)]
pub(crate) struct MaintenanceStatus {
    /// The last pass's report (written once a period, read by `metrics`).
    last: Mutex<Option<MaintenanceReport>>,
    stopped: AtomicBool,
    /// Wakes the task at shutdown.
    stop: Notify,
}

impl MaintenanceStatus {
    /// Stops the task (at its next wake-up, which this triggers).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.stop.notify_one();
    }

    /// The last pass's report.
    pub fn last(&self) -> Option<MaintenanceReport> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<MaintenanceReport>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps `every`; false when stopped meanwhile.
    pub async fn sleep(&self, every: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = self.stop.notified() => return false,
        }
        !self.stopped.load(Ordering::SeqCst)
    }
}

/// A connected maintainer for one table.
pub(crate) struct PartitionTask {
    url: String,
    table: String,
    ledger: BatchLedger,
    client: Option<Client>,
    /// What [`PartitionTask::prepare`] did: the first half of a pass whose second half the
    /// next pass runs.
    prepared: Option<MaintenanceReport>,
}

impl PartitionTask {
    /// Connects and checks the schema has the maintenance functions; `Ok(None)` when the
    /// target table is not one the schema partitions (nothing to do).
    /// `table` is the ingestor's target table; `ledger` is pruned after each pass.
    pub async fn connect(url: &str, table: String, ledger: BatchLedger) -> Result<Option<Self>> {
        if table.contains('.') {
            return Ok(None);
        }
        let client = connect(url).await?;
        let present = client
            .query_typed(
                "SELECT to_regprocedure('christmas_partitions_needed(text)') IS NOT NULL",
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
            ledger,
            client: Some(client),
            prepared: None,
        }))
    }

    /// One pass; the report also goes into the ingestor's metrics.
    pub async fn pass(&mut self, status: &MaintenanceStatus) -> Result<MaintenanceReport> {
        let client = match self.client.take().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => connect(&self.url).await?,
        };
        let report = match self.prepared.take() {
            // The partitions were created at start: the rest of that pass.
            Some(mut report) => schema::upkeep(&client, &self.table, None, &mut report)
                .await
                .map(|()| report),
            None => schema::maintain(&client, &self.table).await,
        };
        let pruned = match &report {
            Ok(_) => self.ledger.prune(&client).await,
            Err(_) => Ok(None),
        };
        self.client = Some(client);
        let report = report?;
        if let Some(n) = pruned? {
            tracing::debug!(rows = n, "ledger pruned");
        }
        let previous = status.lock().replace(report.clone());
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

    /// The half of a pass that must come before the first batches, run before the writers
    /// start: the time partitions and retention. Autovacuum and the rest follow in
    /// [`PartitionTask::run`]'s first pass, beside the first batches rather than before
    /// them: in a replay's statement log they were 5–7 ms of the start.
    pub async fn prepare(&mut self) -> Result<()> {
        let client = match self.client.take().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => connect(&self.url).await?,
        };
        let mut report = MaintenanceReport {
            table: self.table.clone(),
            ..MaintenanceReport::default()
        };
        let created =
            schema::partitions_and_retention(&client, &self.table, None, &mut report).await;
        self.client = Some(client);
        created?;
        self.prepared = Some(report);
        Ok(())
    }

    /// Runs a pass every `every` until the status says stop; at once first when
    /// [`PartitionTask::prepare`] left its pass half done.
    pub async fn run(mut self, status: Arc<MaintenanceStatus>, every: Duration) {
        if self.prepared.is_some() {
            if let Err(e) = self.pass(&status).await {
                tracing::warn!(table = self.table, error = %e, "partition maintenance failed; retrying next period");
            }
        }
        while status.sleep(every).await {
            if let Err(e) = self.pass(&status).await {
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
