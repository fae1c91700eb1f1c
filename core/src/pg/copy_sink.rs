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
use crate::producer::claim::Refused;
use crate::producer::BatchClaims;
use crate::record::Record;

mod group;

/// How one attempt ended.
enum AttemptError {
    /// PostgreSQL refused the data; the transaction certainly did not commit.
    Data(tokio_postgres::Error),
    /// Producer claims were refused: those keys' ticks (some of them) are stored already.
    /// The transaction did not commit.
    Refused(Refused),
    /// Anything else: the outcome is unknown or the failure may pass. Retry after the
    /// ledger says the batch is not in.
    Retry(Error),
}

/// Why a batch (or part) was not written.
enum Unwritten {
    /// PostgreSQL refused the data.
    Data(tokio_postgres::Error),
    /// Producer claims were refused (positions in the claims' key order).
    Refused(Refused),
}

/// What became of a batch's rows besides committing.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Rows rejected by PostgreSQL, now dead letters (batch indexes, ascending).
    pub dead: Vec<usize>,
    /// Rows left out as resends of producer ticks already stored (batch indexes,
    /// ascending).
    pub resent: Vec<usize>,
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

impl<'a> BatchToWrite<'a> {
    /// The ledger row of the part `range` of the batch.
    fn entry(&self, range: &Range<usize>) -> LedgerEntry<'a> {
        LedgerEntry {
            origin: self.origin,
            seq: self.seq,
            first_row: range.start,
            rows: range.len(),
        }
    }
}

/// One shard's PostgreSQL connection and the statements it runs.
pub(crate) struct CopySink {
    url: String,
    application_name: String,
    /// The record kind written (`trade`, `quote`): the kind of its producer claims.
    kind: &'static str,
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
    /// The last committed attempt's time to the end of its COPY and its COMMIT round trip.
    last_timing: Option<(Duration, Duration)>,
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
            kind: R::KIND,
            shard,
            copy_sql: format!("COPY {table} ({columns}) FROM STDIN (FORMAT binary)"),
            table,
            ledger: BatchLedger::new(&config.ledger_table),
            dead_letter_table: config.dead_letter_table.clone(),
            reconnect_min: config.reconnect_min,
            reconnect_max: config.reconnect_max,
            on_dead_letter: config.on_dead_letter.clone(),
            last_timing: None,
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

    /// Writes `batch` exactly once, with its producer claims in the same transaction; rows
    /// whose producer already stored them are left out. Retries for as long as it takes: a
    /// stuck database fills the ring and pushes back on producers.
    pub async fn write(
        &mut self,
        counters: &ShardCounters,
        batch: BatchToWrite<'_>,
        claims: &mut BatchClaims,
    ) -> Written {
        if claims.is_empty() {
            let dead = match self.write_rows(counters, batch, None).await {
                Ok(dead) => dead,
                Err(_) => unreachable!("no claims, none refused"),
            };
            return Written {
                dead,
                resent: Vec::new(),
            };
        }
        let mut rows = batch.rows.clone();
        // Each current row's index in the batch as sealed, once rows were left out.
        let mut original: Option<Vec<usize>> = None;
        let mut resent = Vec::new();
        loop {
            let to_write = BatchToWrite {
                rows: &rows,
                ..batch
            };
            let refused = match self.write_rows(counters, to_write, Some(claims)).await {
                Ok(mut dead) => {
                    if let Some(map) = &original {
                        dead.iter_mut().for_each(|d| *d = map[*d]);
                    }
                    resent.sort_unstable();
                    return Written { dead, resent };
                }
                Err(refused) => refused,
            };
            let stored = self.stored_seqs(counters, claims, &refused).await;
            let dropped = claims.drop_stored(&refused, &stored);
            metrics::add(&counters.producer_resends, dropped.len() as u64);
            tracing::info!(
                shard = self.shard,
                seq = batch.seq,
                rows = dropped.len(),
                "producer ticks already stored; leaving them out"
            );
            let (kept, new_index) = rows.without(&dropped);
            let map = original.get_or_insert_with(|| (0..rows.len()).collect());
            resent.extend(dropped.iter().map(|&d| map[d]));
            let kept_original: Vec<usize> = new_index
                .iter()
                .enumerate()
                .filter(|(_, &n)| n != u32::MAX)
                .map(|(old, _)| map[old])
                .collect();
            *map = kept_original;
            claims.renumber(&new_index);
            rows = kept;
            if rows.len() == 0 {
                resent.sort_unstable();
                return Written {
                    dead: Vec::new(),
                    resent,
                };
            }
        }
    }

    /// What is stored for each refused claim, retried until the database answers.
    async fn stored_seqs(
        &mut self,
        counters: &ShardCounters,
        claims: &BatchClaims,
        refused: &Refused,
    ) -> Vec<u64> {
        let mut backoff = self.reconnect_min;
        loop {
            if let Some(client) = self.client.as_ref().filter(|c| !c.is_closed()) {
                match claims.stored(client, self.kind, refused).await {
                    Ok(stored) => return stored,
                    Err(e) => {
                        tracing::warn!(shard = self.shard, error = %e, "reading producer claims failed")
                    }
                }
            } else if let Err(e) = self.open(counters).await {
                tracing::warn!(shard = self.shard, error = %e, "reconnect failed");
            } else {
                continue;
            }
            self.after_failure(&mut backoff).await;
        }
    }

    /// Writes `batch`'s rows exactly once; the indexes of the rows that were dead-lettered,
    /// ascending. `claims` go into the transaction of the batch's last part (the whole batch
    /// unless bad rows split it). `Err` when the claims were refused (nothing committed
    /// then, unless bad rows split the batch first: see below).
    async fn write_rows(
        &mut self,
        counters: &ShardCounters,
        batch: BatchToWrite<'_>,
        claims: Option<&BatchClaims>,
    ) -> Result<Vec<usize>, Refused> {
        let mut dead = Vec::new();
        // Ranges still to commit, last = next; halves are pushed in reverse so rows keep
        // their order.
        let mut todo: Vec<Range<usize>> = Vec::with_capacity(16);
        todo.push(0..batch.rows.len());
        while let Some(range) = todo.pop() {
            let entry = batch.entry(&range);
            let work = Work::Copy(batch.rows, range.clone());
            let whole = range.len() == batch.rows.len();
            // The claims commit with the last part, so a part before it never marks ticks
            // of a later part as stored.
            let part_claims = claims.filter(|_| todo.is_empty());
            match self
                .exactly_once(
                    counters,
                    &entry,
                    batch.check_ledger_first,
                    work,
                    part_claims,
                )
                .await
            {
                Ok(()) => {}
                Err(Unwritten::Refused(refused)) if whole => return Err(refused),
                Err(Unwritten::Refused(_)) => {
                    // Bad rows split the batch and a resend of its last part raced in from
                    // elsewhere meanwhile: the earlier parts are committed, so this part is
                    // written without its claims rather than left out.
                    tracing::warn!(shard = self.shard, seq = batch.seq, "producer claims refused for the last part of a split batch; writing it unclaimed");
                    todo.push(range);
                    return self.finish_unclaimed(counters, batch, todo, dead).await;
                }
                Err(Unwritten::Data(e)) if range.len() > 1 => {
                    tracing::debug!(shard = self.shard, seq = batch.seq, rows = range.len(), error = %e, "rejected rows in batch; splitting");
                    let mid = range.start + range.len() / 2;
                    todo.push(mid..range.end);
                    todo.push(range.start..mid);
                }
                Err(Unwritten::Data(e)) => {
                    self.dead_letter(counters, &batch, &entry, &e, part_claims)
                        .await;
                    dead.push(range.start);
                }
            }
        }
        Ok(dead)
    }

    /// The rest of a split batch, without claims.
    async fn finish_unclaimed(
        &mut self,
        counters: &ShardCounters,
        batch: BatchToWrite<'_>,
        todo: Vec<Range<usize>>,
        mut dead: Vec<usize>,
    ) -> Result<Vec<usize>, Refused> {
        for range in todo.into_iter().rev() {
            let entry = batch.entry(&range);
            let work = Work::Copy(batch.rows, range.clone());
            match self
                .exactly_once(counters, &entry, batch.check_ledger_first, work, None)
                .await
            {
                Ok(()) | Err(Unwritten::Refused(_)) => {}
                Err(Unwritten::Data(e)) => {
                    // One part, one attempt: its rows go to the dead-letter table row by row.
                    for row in range {
                        let entry = LedgerEntry {
                            first_row: row,
                            rows: 1,
                            ..entry
                        };
                        self.dead_letter(counters, &batch, &entry, &e, None).await;
                        dead.push(row);
                    }
                }
            }
        }
        dead.sort_unstable();
        Ok(dead)
    }

    /// Stores the row `entry` names in the dead-letter table (exactly once, like a batch)
    /// and tells the hook.
    async fn dead_letter(
        &mut self,
        counters: &ShardCounters,
        batch: &BatchToWrite<'_>,
        entry: &LedgerEntry<'_>,
        e: &tokio_postgres::Error,
        claims: Option<&BatchClaims>,
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
                claims,
            )
            .await;
        match stored {
            Ok(()) => {}
            // The dead-letter table itself refused the row: nothing more the database will
            // take. Report it loudly; the hook still sees it.
            Err(Unwritten::Data(e)) => {
                tracing::error!(shard = self.shard, seq = batch.seq, error = %e, "dead-letter table rejected the row")
            }
            Err(Unwritten::Refused(_)) => {
                tracing::warn!(
                    shard = self.shard,
                    seq = batch.seq,
                    "producer claims refused with a dead letter; stored it unclaimed"
                );
                let again = self
                    .exactly_once(counters, entry, true, Work::DeadLetter(&letter), None)
                    .await;
                if let Err(Unwritten::Data(e)) = again {
                    tracing::error!(shard = self.shard, seq = batch.seq, error = %e, "dead-letter table rejected the row");
                }
            }
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
        claims: Option<&BatchClaims>,
    ) -> Result<(), Unwritten> {
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
            match self.attempt(client, entry, &work, claims).await {
                Ok(timing) => {
                    self.last_timing = Some(timing);
                    return Ok(());
                }
                Err(AttemptError::Data(e)) => {
                    self.rollback().await;
                    return Err(Unwritten::Data(e));
                }
                Err(AttemptError::Refused(refused)) => {
                    self.rollback().await;
                    return Err(Unwritten::Refused(refused));
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
        claims: Option<&BatchClaims>,
    ) -> Result<(Duration, Duration), AttemptError> {
        let began = std::time::Instant::now();
        let classify = |e| self.classify(e);
        client
            .batch_execute(&self.ledger.begin_with_insert(entry))
            .await
            .map_err(classify)?;
        // Before the COPY: a refused claim costs no rows sent, and the row locks it takes
        // make a concurrent resend elsewhere wait for this transaction's outcome.
        if let Some(claims) = claims.filter(|c| !c.is_empty()) {
            let refused = claims
                .claim(client, self.kind)
                .await
                .map_err(|e| AttemptError::Retry(Error::pg("claiming producer ticks", e)))?;
            if !refused.is_empty() {
                return Err(AttemptError::Refused(refused));
            }
        }
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
                for piece in rows.pieces(range.clone()) {
                    sink.feed(piece).await.map_err(classify)?;
                }
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
        let copied = began.elapsed();
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| AttemptError::Retry(Error::pg("committing", e)))?;
        Ok((copied, began.elapsed() - copied))
    }

    /// The time to the end of the COPY and the COMMIT round trip of the last transaction
    /// committed since asked before (`None`: none, or the ledger found the batch in).
    pub fn take_timing(&mut self) -> Option<(Duration, Duration)> {
        self.last_timing.take()
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
