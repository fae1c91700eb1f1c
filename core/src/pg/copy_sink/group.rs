//! Several queued batches in one transaction: a writer that fell behind catches up without
//! a transaction per batch. The single-batch path in the parent module keeps the retries,
//! the reconnects, the producer claims and the dead letters.

use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

use super::CopySink;
use crate::binary_copy::{CopyRows, HEADER, TRAILER};
use crate::error::{Error, Result};
use crate::pg::ledger::BatchOrigin;

impl CopySink {
    /// Commits consecutive whole batches of `origin`, none with producer claims or sealed
    /// by an earlier run, in one transaction: a ledger row each (the row each would have
    /// alone), one COPY of all their rows, one COMMIT. A writer that fell behind catches up
    /// this way instead of paying a transaction per small batch. True when it committed;
    /// false when anything failed, after which the caller writes each batch alone asking
    /// the ledger first: the transaction was all or nothing, so the ledger's answer is the
    /// same for every batch of it. One attempt, no retry: the single-batch path has the
    /// retries, the reconnects and the dead letters.
    pub async fn write_group(&mut self, origin: &BatchOrigin, group: &[(u64, &CopyRows)]) -> bool {
        let Some(client) = self.client.as_ref().filter(|c| !c.is_closed()) else {
            return false;
        };
        match self.attempt_group(client, origin, group).await {
            Ok(timing) => {
                self.last_timing = Some(timing);
                true
            }
            Err(e) => {
                tracing::info!(shard = self.shard, batches = group.len(), error = %e, "writing batches together failed; writing them one by one");
                self.rollback().await;
                false
            }
        }
    }

    async fn attempt_group(
        &self,
        client: &Client,
        origin: &BatchOrigin,
        group: &[(u64, &CopyRows)],
    ) -> Result<(Duration, Duration)> {
        let began = std::time::Instant::now();
        let what = "writing batches together";
        let pg = |e| Error::pg(what, e);
        let sql = self
            .ledger
            .begin_with_inserts(origin, group.iter().map(|(seq, rows)| (*seq, rows.len())));
        client.batch_execute(&sql).await.map_err(pg)?;
        let sink = client
            .copy_in::<_, Bytes>(self.copy_sql.as_str())
            .await
            .map_err(pg)?;
        futures_util::pin_mut!(sink);
        sink.feed(Bytes::from_static(HEADER)).await.map_err(pg)?;
        for (_, rows) in group {
            for piece in rows.pieces(0..rows.len()) {
                sink.feed(piece).await.map_err(pg)?;
            }
        }
        sink.feed(Bytes::from_static(TRAILER)).await.map_err(pg)?;
        let written = sink.as_mut().finish().await.map_err(pg)?;
        let expected: usize = group.iter().map(|(_, rows)| rows.len()).sum();
        if written != expected as u64 {
            return Err(Error::Task(format!(
                "COPY wrote {written} rows, expected {expected}"
            )));
        }
        let copied = began.elapsed();
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| Error::pg("committing batches together", e))?;
        Ok((copied, began.elapsed() - copied))
    }
}
