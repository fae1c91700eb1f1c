//! The shard writer: commits sealed batches in order, exactly once, and resolves receipts.
//!
//! Per batch, on the shard's own connection:
//!
//! ```text
//! BEGIN; INSERT INTO ingest_batches (stream, shard, seq, first_row, rows) VALUES (…);
//! COPY <table> (<columns>) FROM STDIN (FORMAT binary);   -- header, rows, trailer
//! COMMIT
//! ```
//!
//! When an attempt fails in a way that leaves the outcome unknown (the connection broke,
//! the server restarted, an error came back for `COMMIT` itself), the writer reconnects with
//! capped exponential backoff and asks the ledger whether the batch's row is there: if it
//! is, the batch committed and is not sent again; if not, the same bytes are sent again.
//! Rows are neither lost nor duplicated, and the happy path pays one extra tiny `INSERT`
//! per batch instead of any per-row deduplication.
//!
//! When PostgreSQL rejects the data itself (SQLSTATE class 22 or 23), the batch is split
//! in halves until the bad rows stand alone; those go to the dead-letter table and the rest
//! commits.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::batcher::{Sealed, SealedBatch};
use crate::binary_copy::{HEADER, TRAILER};
use crate::config::{DeadLetterHook, Sink};
use crate::dead_letter::DeadLetter;
use crate::ingestor::Shared;
use crate::metrics::{self, lock_histograms};
use crate::record::Record;
use crate::{Error, Result};

/// What happened to one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchReport {
    /// Shard of the batch.
    pub shard: usize,
    /// Sequence of the batch within its shard.
    pub seq: u64,
    /// Rows committed to the target table.
    pub rows_committed: u64,
    /// Rows the database rejected, now in the dead-letter table.
    pub rows_dead_lettered: u64,
}

/// Where a writer's batches come from: the batcher, or the spool stage.
#[derive(Debug)]
pub(crate) enum BatchRx<R> {
    Direct(mpsc::Receiver<Sealed<R>>),
    Spooled(mpsc::UnboundedReceiver<Sealed<R>>),
}

impl<R> BatchRx<R> {
    async fn recv(&mut self, ring: &crate::ring::ShardRing<R>) -> Option<Sealed<R>> {
        match self {
            BatchRx::Direct(rx) => rx.recv().await,
            BatchRx::Spooled(rx) => {
                let got = rx.recv().await;
                if got.is_some() {
                    ring.spool_queued
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
                got
            }
        }
    }
}

/// Brings a batch left on disk by the spool back into memory, with its ledger identity
/// when an earlier run wrote it. False when it cannot be read (reported; skipped).
fn load_spooled<R: Record>(shared: &Shared<R>, batch: &mut SealedBatch) -> bool {
    let Some(sp) = &batch.spooled else {
        return true;
    };
    let Some(at) = &sp.on_disk else { return true };
    match shared.spools[sp.owner].read(at) {
        Ok(entry) => {
            if *entry.stream != *shared.stream {
                if !crate::config::valid_stream(&entry.stream) {
                    tracing::error!(segment = %at.path.display(), offset = at.offset, "spool entry names an invalid stream; skipped");
                    return false;
                }
                batch.foreign = Some((entry.stream.as_str().into(), entry.shard as usize));
                batch.seq = entry.seq;
            }
            batch.body = Bytes::from(entry.body);
            batch.row_ends = entry.row_ends;
            true
        }
        Err(e) => {
            tracing::error!(segment = %at.path.display(), offset = at.offset, error = %e, "spooled batch unreadable; skipped");
            false
        }
    }
}

/// Runs one shard's writer until the batcher (or the spool stage) hangs up.
pub(crate) async fn run<R: Record>(
    shared: Arc<Shared<R>>,
    shard: usize,
    mut rx: BatchRx<R>,
    mut pg: Option<PgWriter>,
) {
    let ring = &shared.rings[shard];
    while let Some(Sealed { mut batch, fanout }) = rx.recv(ring).await {
        if !load_spooled(&shared, &mut batch) {
            batch.row_ends.clear();
        }
        let started = Instant::now();
        let rows = batch.rows() as u64;
        let mut report = BatchReport {
            shard,
            seq: batch.seq,
            rows_committed: rows,
            rows_dead_lettered: 0,
        };
        // Rows the database rejected (indexes in the batch): not published after commit.
        let mut dead_rows = Vec::new();
        if rows > 0 {
            if let Some(pg) = pg.as_mut() {
                pg.identity(batch.foreign.as_ref());
                dead_rows = pg.write(&shared, &batch).await;
                pg.identity(None);
                let dead = dead_rows.len() as u64;
                report.rows_committed = rows - dead;
                report.rows_dead_lettered = dead;
            }
            let committed_at = shared.clock.now();
            let c = &ring.counters;
            metrics::add(&c.rows_committed, report.rows_committed);
            metrics::add(&c.batches_committed, 1);
            let mut h = lock_histograms(&shared.histograms[shard]);
            for &p in &batch.pushed_at {
                let _ = h
                    .push_to_commit_us
                    .record(committed_at.saturating_sub(p) / 1_000);
            }
            let _ = h
                .batch_commit_us
                .record(started.elapsed().as_micros() as u64);
            let _ = h.batch_rows.record(rows);
        }
        if let (Some(q), Some(mut f)) = (shared.fanout.as_deref(), fanout) {
            if !dead_rows.is_empty() {
                // Their sequences become gaps: consumers see the ticks were not delivered.
                let mut i = 0;
                f.ticks.retain(|_| {
                    i += 1;
                    dead_rows.binary_search(&(i - 1)).is_err()
                });
            }
            q.push(f);
        }
        if let Some(sp) = &batch.spooled {
            shared.spools[sp.owner].committed(sp.entry, sp.memory_bytes);
        }
        // Without a spool, committed is the strongest point there is.
        for w in batch
            .waiters
            .drain(..)
            .chain(batch.durable_waiters.drain(..))
        {
            let _ = w.send(Ok(report));
        }
    }
}

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
    Copy(&'a SealedBatch, Range<usize>),
    DeadLetter(&'a DeadLetter),
}

/// One shard's PostgreSQL connection and the statements it runs.
pub(crate) struct PgWriter {
    url: String,
    application_name: String,
    client: Option<Client>,
    shard: usize,
    stream: Arc<str>,
    /// The ledger identity of the batch being written: this run's (stream, shard), or an
    /// earlier run's for a batch recovered from the spool, whose ledger is checked first.
    ledger_stream: Arc<str>,
    ledger_shard: usize,
    ledger_first: bool,
    table: String,
    copy_sql: String,
    ledger_table: String,
    dead_letter_table: String,
    reconnect_min: Duration,
    reconnect_max: Duration,
    on_dead_letter: Option<DeadLetterHook>,
}

impl std::fmt::Debug for PgWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgWriter")
            .field("shard", &self.shard)
            .field("table", &self.table)
            .field("connected", &self.client.is_some())
            .finish()
    }
}

impl PgWriter {
    /// Prepares the writer for `shard` and opens its first connection.
    pub async fn connect<R: Record>(shared: &Shared<R>, shard: usize) -> Result<PgWriter> {
        let cfg = &shared.config;
        let Some(Sink::Postgres(url)) = &cfg.sink else {
            return Err(Error::config("sink", "not a PostgreSQL sink"));
        };
        let table = cfg.table.clone().unwrap_or_else(|| R::DEFAULT_TABLE.into());
        let columns = R::COLUMNS
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut w = PgWriter {
            url: url.clone(),
            application_name: format!("christmas-{}-{}-{shard}", shared.stream, R::KIND),
            client: None,
            shard,
            stream: shared.stream.clone(),
            ledger_stream: shared.stream.clone(),
            ledger_shard: shard,
            ledger_first: false,
            copy_sql: format!("COPY {table} ({columns}) FROM STDIN (FORMAT binary)"),
            table,
            ledger_table: cfg.ledger_table.clone(),
            dead_letter_table: cfg.dead_letter_table.clone(),
            reconnect_min: cfg.reconnect_min,
            reconnect_max: cfg.reconnect_max,
            on_dead_letter: cfg.on_dead_letter.clone(),
        };
        match w.open(shared, shard).await {
            Ok(()) => {}
            // With a spool the daemon takes data while PostgreSQL is away, from the start
            // too: the writer connects when it can.
            Err(e) if cfg.spool.is_some() => {
                tracing::warn!(shard, error = %e, "PostgreSQL unreachable at start; spooling until it is back");
            }
            Err(e) => return Err(e),
        }
        Ok(w)
    }

    /// Writes the next batches under `foreign`'s ledger identity (`None`: this run's).
    fn identity(&mut self, foreign: Option<&(Arc<str>, usize)>) {
        match foreign {
            Some((stream, shard)) => {
                self.ledger_stream = stream.clone();
                self.ledger_shard = *shard;
                self.ledger_first = true;
            }
            None => {
                self.ledger_stream = self.stream.clone();
                self.ledger_shard = self.shard;
                self.ledger_first = false;
            }
        }
    }

    async fn open<R: Record>(&mut self, shared: &Shared<R>, shard: usize) -> Result<()> {
        let config = crate::pg::parse_url(&self.url)?;
        let client = crate::pg::connect(&config, &self.application_name, "connecting").await?;
        self.client = Some(client);
        metrics::add(&shared.rings[shard].counters.connects, 1);
        Ok(())
    }

    /// Writes `batch` exactly once; returns the indexes of the rows that were dead-lettered,
    /// ascending. Retries for as long as it takes: a stuck database fills the ring and
    /// pushes back on producers.
    async fn write<R: Record>(&mut self, shared: &Shared<R>, batch: &SealedBatch) -> Vec<usize> {
        let mut dead = Vec::new();
        // Ranges still to commit, last = next; halves are pushed in reverse so rows keep
        // their order.
        let mut todo: Vec<Range<usize>> = Vec::with_capacity(16);
        todo.push(0..batch.rows());
        while let Some(range) = todo.pop() {
            match self
                .exactly_once(
                    shared,
                    batch.seq,
                    range.start,
                    range.len(),
                    Work::Copy(batch, range.clone()),
                )
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
                    let letter = self.dead_letter_for(batch, range.start, &e);
                    tracing::warn!(
                        shard = self.shard, seq = batch.seq, row = range.start,
                        table = %self.table, sqlstate = %letter.sqlstate, reason = %letter.reason,
                        "row rejected by PostgreSQL; dead-lettered"
                    );
                    // A failure to store the dead letter is retried like any other.
                    let stored = self
                        .exactly_once(shared, batch.seq, range.start, 1, Work::DeadLetter(&letter))
                        .await;
                    if let Err(e) = stored {
                        // The dead-letter table itself refused the row: nothing more the
                        // database will take. Report it loudly; the hook still sees it.
                        tracing::error!(shard = self.shard, seq = batch.seq, error = %e, "dead-letter table rejected the row");
                    }
                    if let Some(hook) = &self.on_dead_letter {
                        hook(&letter);
                    }
                    metrics::add(&shared.rings[self.shard].counters.dead_lettered, 1);
                    dead.push(range.start);
                }
            }
        }
        dead
    }

    fn dead_letter_for(
        &self,
        batch: &SealedBatch,
        row: usize,
        e: &tokio_postgres::Error,
    ) -> DeadLetter {
        let (reason, sqlstate) = match e.as_db_error() {
            Some(db) => (db.message().to_string(), db.code().code().to_string()),
            None => (e.to_string(), String::new()),
        };
        DeadLetter {
            table: self.table.clone(),
            stream: self.ledger_stream.to_string(),
            shard: self.ledger_shard,
            seq: batch.seq,
            row_index: row,
            row: batch.rows_bytes(row..row + 1),
            reason,
            sqlstate,
        }
    }

    /// Runs `work` in one transaction with its ledger row until it commits or the data is
    /// refused. `Err` only for refused data.
    async fn exactly_once<R: Record>(
        &mut self,
        shared: &Shared<R>,
        seq: u64,
        first_row: usize,
        rows: usize,
        work: Work<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        let counters = &shared.rings[self.shard].counters;
        let mut backoff = self.reconnect_min;
        let mut failed_before = self.ledger_first;
        loop {
            if self.client.as_ref().is_none_or(|c| c.is_closed()) {
                self.client = None;
                if let Err(e) = self.open(shared, self.shard).await {
                    tracing::warn!(shard = self.shard, error = %e, backoff_ms = backoff.as_millis() as u64, "reconnect failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.reconnect_max);
                    continue;
                }
            }
            let Some(client) = self.client.as_ref() else {
                continue;
            };
            if failed_before {
                match self.ledger_has(client, seq, first_row, rows).await {
                    Ok(true) => {
                        metrics::add(&counters.ledger_hits, 1);
                        tracing::info!(
                            shard = self.shard,
                            seq,
                            first_row,
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
            match self.attempt(client, seq, first_row, rows, &work).await {
                Ok(()) => return Ok(()),
                Err(AttemptError::Data(e)) => {
                    self.rollback().await;
                    return Err(e);
                }
                Err(AttemptError::Retry(e)) => {
                    metrics::add(&counters.retries, 1);
                    tracing::warn!(shard = self.shard, seq, error = %e, backoff_ms = backoff.as_millis() as u64, "commit failed; will check the ledger and retry");
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

    async fn ledger_has(
        &self,
        client: &Client,
        seq: u64,
        first_row: usize,
        rows: usize,
    ) -> Result<bool, tokio_postgres::Error> {
        let sql = format!(
            "SELECT rows FROM {} WHERE stream = $1 AND shard = $2 AND seq = $3 AND first_row = $4",
            self.ledger_table
        );
        // Unnamed statements throughout: safe behind PgBouncer in transaction mode.
        let row = client
            .query_typed(
                &sql,
                &[
                    (&&*self.ledger_stream, Type::TEXT),
                    (&(self.ledger_shard as i32), Type::INT4),
                    (&(seq as i64), Type::INT8),
                    (&(first_row as i32), Type::INT4),
                ],
            )
            .await?
            .into_iter()
            .next();
        Ok(match row {
            Some(r) => {
                let stored: i32 = r.get(0);
                debug_assert_eq!(stored as usize, rows, "ledger row count mismatch");
                true
            }
            None => false,
        })
    }

    async fn attempt(
        &self,
        client: &Client,
        seq: u64,
        first_row: usize,
        rows: usize,
        work: &Work<'_>,
    ) -> Result<(), AttemptError> {
        let classify = |e| classify(e, &self.ledger_table);
        // The stream name is validated to [A-Za-z0-9_.:-], so quoting it inline is safe;
        // one simple query saves a round trip per batch.
        let begin = format!(
            "BEGIN; INSERT INTO {} (stream, shard, seq, first_row, rows) VALUES ('{}', {}, {}, {}, {})",
            self.ledger_table, self.ledger_stream, self.ledger_shard, seq, first_row, rows
        );
        client.batch_execute(&begin).await.map_err(classify)?;
        match work {
            Work::Copy(batch, range) => {
                let sink = client
                    .copy_in::<_, Bytes>(self.copy_sql.as_str())
                    .await
                    .map_err(classify)?;
                futures_util::pin_mut!(sink);
                sink.feed(Bytes::from_static(HEADER))
                    .await
                    .map_err(classify)?;
                sink.feed(batch.rows_bytes(range.clone()))
                    .await
                    .map_err(classify)?;
                sink.feed(Bytes::from_static(TRAILER))
                    .await
                    .map_err(classify)?;
                let written = sink.as_mut().finish().await.map_err(classify)?;
                if written != rows as u64 {
                    return Err(AttemptError::Retry(Error::Task(format!(
                        "COPY wrote {written} rows, expected {rows}"
                    ))));
                }
            }
            Work::DeadLetter(letter) => {
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
            }
        }
        // An error here is ambiguous only when the connection broke; a server error reply
        // means the transaction did not commit. Either way the ledger decides on retry.
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| AttemptError::Retry(Error::pg("committing", e)))
    }
}

/// Data errors (class 22: data exception, class 23: integrity constraint violation) are the
/// rows' fault and are isolated; everything else is retried. A violation on the ledger itself
/// is not the rows' fault: the retry's ledger check resolves it.
fn classify(e: tokio_postgres::Error, ledger_table: &str) -> AttemptError {
    let ledger = ledger_table.rsplit('.').next().unwrap_or(ledger_table);
    let data = e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        (code.starts_with("22") || code.starts_with("23")) && db.table() != Some(ledger)
    });
    if data {
        AttemptError::Data(e)
    } else {
        AttemptError::Retry(Error::pg("writing a batch", e))
    }
}
