//! [`CopySink`]: the PostgreSQL side of a shard's writer. Per batch, on the shard's own
//! connection:
//!
//! ```text
//! BEGIN; INSERT INTO ingest_batches (stream, shard, seq, first_row, rows) VALUES (…);
//! COPY <table> (<columns>) FROM STDIN (FORMAT binary);   -- header, rows, trailer
//! COMMIT
//! ```
//!
//! When an attempt fails in a way that leaves the outcome unknown (the connection broke,
//! the server restarted, an error came back for `COMMIT` itself), the sink reconnects with
//! capped exponential backoff and asks the [`BatchLedger`] whether the batch's row is there:
//! if it is, the batch committed and is not sent again; if not, the same bytes are sent
//! again. Rows are neither lost nor duplicated, and the happy path pays one extra tiny
//! `INSERT` per batch instead of any per-row deduplication.
//!
//! When PostgreSQL rejects the data itself (SQLSTATE class 22 or 23), the batch is split
//! in halves until the bad rows stand alone; those go to the dead-letter table and the rest
//! commits.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::binary_copy::{CopyRows, HEADER, TRAILER};
use crate::config::{DeadLetterHook, IngestorConfig, Sink};
use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};
use crate::metrics::{self, ShardCounters};
use crate::pg::ledger::{BatchLedger, BatchOrigin, LedgerEntry};
use crate::record::Record;

/// How one attempt ended.
enum AttemptError {
    /// PostgreSQL refused the data; the transaction certainly did not commit.
    Data(tokio_postgres::Error),
    /// Anything else: the outcome is unknown or the failure may pass. Retry after the
    /// ledger says the batch is not in.
    Retry(Error),
}

/// What one transaction does besides writing its ledger row.
enum Work<'a> {
    Copy(&'a CopyRows, Range<usize>),
    DeadLetter(&'a DeadLetter),
}

/// One batch to write: its rows and its key in the ledger.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchToWrite<'a> {
    /// Who sealed it (this run's shard, or an earlier run's for a batch recovered from the
    /// spool).
    pub origin: &'a BatchOrigin,
    /// Its sequence within that shard.
    pub seq: u64,
    /// Its rows.
    pub rows: &'a CopyRows,
    /// The batch may have committed already (an earlier run spooled it): ask the ledger
    /// before the first attempt.
    pub check_ledger_first: bool,
}

/// One shard's PostgreSQL connection and the statements it runs.
pub(crate) struct CopySink {
    url: String,
    application_name: String,
    client: Option<Client>,
    /// The shard this sink writes for (logs).
    shard: usize,
    table: String,
    copy_sql: String,
    ledger: BatchLedger,
    dead_letter_table: String,
    reconnect_min: Duration,
    reconnect_max: Duration,
    on_dead_letter: Option<DeadLetterHook>,
}

impl std::fmt::Debug for CopySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopySink")
            .field("shard", &self.shard)
            .field("table", &self.table)
            .field("connected", &self.client.is_some())
            .finish()
    }
}

impl CopySink {
    /// Prepares the sink of `origin`'s shard for record kind `R` and opens its first
    /// connection. With a spool configured, an unreachable database is not an error: the
    /// sink connects when it can.
    pub async fn connect<R: Record>(
        config: &IngestorConfig,
        origin: &BatchOrigin,
        counters: &ShardCounters,
    ) -> Result<CopySink> {
        let Some(Sink::Postgres(url)) = &config.sink else {
            return Err(Error::config("sink", "not a PostgreSQL sink"));
        };
        let shard = origin.shard;
        let table = config
            .table
            .clone()
            .unwrap_or_else(|| R::DEFAULT_TABLE.into());
        let columns = R::COLUMNS
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sink = CopySink {
            url: url.clone(),
            application_name: format!("christmas-{}-{}-{shard}", origin.stream, R::KIND),
            client: None,
            shard,
            copy_sql: format!("COPY {table} ({columns}) FROM STDIN (FORMAT binary)"),
            table,
            ledger: BatchLedger::new(&config.ledger_table),
            dead_letter_table: config.dead_letter_table.clone(),
            reconnect_min: config.reconnect_min,
            reconnect_max: config.reconnect_max,
            on_dead_letter: config.on_dead_letter.clone(),
        };
        match sink.open(counters).await {
            Ok(()) => {}
            // With a spool the daemon takes data while PostgreSQL is away, from the start
            // too: the sink connects when it can.
            Err(e) if config.spool.is_some() => {
                tracing::warn!(shard, error = %e, "PostgreSQL unreachable at start; spooling until it is back");
            }
            Err(e) => return Err(e),
        }
        Ok(sink)
    }

    async fn open(&mut self, counters: &ShardCounters) -> Result<()> {
        let config = crate::pg::connect::parse_url(&self.url)?;
        let client =
            crate::pg::connect::connect(&config, &self.application_name, "connecting").await?;
        self.client = Some(client);
        metrics::add(&counters.connects, 1);
        Ok(())
    }

    /// Writes `batch` exactly once; returns the indexes of the rows that were dead-lettered,
    /// ascending. Retries for as long as it takes: a stuck database fills the ring and
    /// pushes back on producers.
    pub async fn write(&mut self, counters: &ShardCounters, batch: BatchToWrite<'_>) -> Vec<usize> {
        let mut dead = Vec::new();
        // Ranges still to commit, last = next; halves are pushed in reverse so rows keep
        // their order.
        let mut todo: Vec<Range<usize>> = Vec::with_capacity(16);
        todo.push(0..batch.rows.len());
        while let Some(range) = todo.pop() {
            let entry = LedgerEntry {
                origin: batch.origin,
                seq: batch.seq,
                first_row: range.start,
                rows: range.len(),
            };
            let work = Work::Copy(batch.rows, range.clone());
            match self
                .exactly_once(counters, &entry, batch.check_ledger_first, work)
                .await
            {
                Ok(()) => {}
                Err(e) if range.len() > 1 => {
                    tracing::debug!(shard = self.shard, seq = batch.seq, rows = range.len(), error = %e, "rejected rows in batch; splitting");
                    let mid = range.start + range.len() / 2;
                    todo.push(mid..range.end);
                    todo.push(range.start..mid);
                }
                Err(e) => {
                    self.dead_letter(counters, &batch, &entry, &e).await;
                    dead.push(range.start);
                }
            }
        }
        dead
    }

    /// Stores the row `entry` names in the dead-letter table (exactly once, like a batch)
    /// and tells the hook.
    async fn dead_letter(
        &mut self,
        counters: &ShardCounters,
        batch: &BatchToWrite<'_>,
        entry: &LedgerEntry<'_>,
        e: &tokio_postgres::Error,
    ) {
        let row = entry.first_row;
        let (reason, sqlstate) = match e.as_db_error() {
            Some(db) => (db.message().to_string(), db.code().code().to_string()),
            None => (e.to_string(), String::new()),
        };
        let letter = DeadLetter {
            table: self.table.clone(),
            stream: entry.origin.stream.to_string(),
            shard: entry.origin.shard,
            seq: batch.seq,
            row_index: row,
            row: batch.rows.slice(row..row + 1),
            reason,
            sqlstate,
        };
        tracing::warn!(
            shard = self.shard, seq = batch.seq, row,
            table = %self.table, sqlstate = %letter.sqlstate, reason = %letter.reason,
            "row rejected by PostgreSQL; dead-lettered"
        );
        // A failure to store the dead letter is retried like any other.
        let stored = self
            .exactly_once(
                counters,
                entry,
                batch.check_ledger_first,
                Work::DeadLetter(&letter),
            )
            .await;
        if let Err(e) = stored {
            // The dead-letter table itself refused the row: nothing more the database will
            // take. Report it loudly; the hook still sees it.
            tracing::error!(shard = self.shard, seq = batch.seq, error = %e, "dead-letter table rejected the row");
        }
        if let Some(hook) = &self.on_dead_letter {
            hook(&letter);
        }
        metrics::add(&counters.dead_lettered, 1);
    }

    /// Runs `work` in one transaction with `entry`'s ledger row until it commits or the
    /// data is refused. `Err` only for refused data.
    async fn exactly_once(
        &mut self,
        counters: &ShardCounters,
        entry: &LedgerEntry<'_>,
        check_ledger_first: bool,
        work: Work<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        let mut backoff = self.reconnect_min;
        let mut failed_before = check_ledger_first;
        loop {
            if self.client.as_ref().is_none_or(|c| c.is_closed()) {
                self.client = None;
                if let Err(e) = self.open(counters).await {
                    tracing::warn!(shard = self.shard, error = %e, backoff_ms = backoff.as_millis() as u64, "reconnect failed");
                    self.after_failure(&mut backoff).await;
                    continue;
                }
            }
            let Some(client) = self.client.as_ref() else {
                continue;
            };
            if failed_before {
                match self.ledger.contains(client, entry).await {
                    Ok(true) => {
                        metrics::add(&counters.ledger_hits, 1);
                        tracing::info!(
                            shard = self.shard,
                            seq = entry.seq,
                            first_row = entry.first_row,
                            "ledger: batch already committed"
                        );
                        return Ok(());
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(shard = self.shard, error = %e, "ledger check failed");
                        self.after_failure(&mut backoff).await;
                        continue;
                    }
                }
            }
            match self.attempt(client, entry, &work).await {
                Ok(()) => return Ok(()),
                Err(AttemptError::Data(e)) => {
                    self.rollback().await;
                    return Err(e);
                }
                Err(AttemptError::Retry(e)) => {
                    metrics::add(&counters.retries, 1);
                    tracing::warn!(shard = self.shard, seq = entry.seq, error = %e, backoff_ms = backoff.as_millis() as u64, "commit failed; will check the ledger and retry");
                    failed_before = true;
                    self.rollback().await;
                    self.after_failure(&mut backoff).await;
                }
            }
        }
    }

    async fn after_failure(&mut self, backoff: &mut Duration) {
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(self.reconnect_max);
    }

    /// Leaves a failed transaction so the connection can be reused (or drops a broken one).
    async fn rollback(&mut self) {
        if let Some(c) = &self.client {
            if c.is_closed() || c.batch_execute("ROLLBACK").await.is_err() {
                self.client = None;
            }
        }
    }

    async fn attempt(
        &self,
        client: &Client,
        entry: &LedgerEntry<'_>,
        work: &Work<'_>,
    ) -> Result<(), AttemptError> {
        let classify = |e| self.classify(e);
        client
            .batch_execute(&self.ledger.begin_with_insert(entry))
            .await
            .map_err(classify)?;
        match work {
            Work::Copy(rows, range) => {
                let sink = client
                    .copy_in::<_, Bytes>(self.copy_sql.as_str())
                    .await
                    .map_err(classify)?;
                futures_util::pin_mut!(sink);
                sink.feed(Bytes::from_static(HEADER))
                    .await
                    .map_err(classify)?;
                sink.feed(rows.slice(range.clone()))
                    .await
                    .map_err(classify)?;
                sink.feed(Bytes::from_static(TRAILER))
                    .await
                    .map_err(classify)?;
                let written = sink.as_mut().finish().await.map_err(classify)?;
                if written != entry.rows as u64 {
                    return Err(AttemptError::Retry(Error::Task(format!(
                        "COPY wrote {written} rows, expected {}",
                        entry.rows
                    ))));
                }
            }
            Work::DeadLetter(letter) => self.insert_dead_letter(client, letter).await?,
        }
        // An error here is ambiguous only when the connection broke; a server error reply
        // means the transaction did not commit. Either way the ledger decides on retry.
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| AttemptError::Retry(Error::pg("committing", e)))
    }

    async fn insert_dead_letter(
        &self,
        client: &Client,
        letter: &DeadLetter,
    ) -> Result<(), AttemptError> {
        let sql = format!(
            "INSERT INTO {} (stream, shard, seq, row_index, target_table, row_copy, reason, sqlstate) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            self.dead_letter_table
        );
        client
            .query_typed(
                &sql,
                &[
                    (&letter.stream, Type::TEXT),
                    (&(letter.shard as i32), Type::INT4),
                    (&(letter.seq as i64), Type::INT8),
                    (&(letter.row_index as i32), Type::INT4),
                    (&letter.table, Type::TEXT),
                    (&&letter.row[..], Type::BYTEA),
                    (&letter.reason, Type::TEXT),
                    (&letter.sqlstate, Type::TEXT),
                ],
            )
            .await
            .map_err(|e| AttemptError::Retry(Error::pg("storing a dead letter", e)))?;
        Ok(())
    }

    /// Data errors (class 22: data exception, class 23: integrity constraint violation) are
    /// the rows' fault and are isolated; everything else is retried. A violation on the
    /// ledger itself is not the rows' fault: the retry's ledger check resolves it.
    fn classify(&self, e: tokio_postgres::Error) -> AttemptError {
        let data = e.as_db_error().is_some_and(|db| {
            let code = db.code().code();
            (code.starts_with("22") || code.starts_with("23")) && !self.ledger.is_ledger_error(db)
        });
        if data {
            AttemptError::Data(e)
        } else {
            AttemptError::Retry(Error::pg("writing a batch", e))
        }
    }
}
