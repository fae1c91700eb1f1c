//! [`IngestorConfig`]: every knob of the pipeline, with defaults that suit a 2-core box.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::dead_letter::DeadLetter;
use crate::error::{Error, Result};
use crate::fanout::FanoutConfig;
use crate::pg::ledger::BatchLedger;
use crate::router::SymbolShards;
use crate::spool::config::SpoolConfig;

/// What a producer experiences when its shard's ring is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backpressure {
    /// Wait for space: `push` spins then sleeps, `push_async` awaits. Nothing is lost.
    #[default]
    Block,
    /// Return [`Error::Full`] to the caller at once; nothing is lost, the caller decides.
    Reject,
    /// Evict the oldest record in the ring to make room, and count it in
    /// `MetricsSnapshot::dropped`. For live feeds where fresh beats complete.
    DropOldest,
}

/// Where sealed batches go.
#[derive(Clone, PartialEq, Eq)]
pub enum Sink {
    /// PostgreSQL at this URL (`postgres://user@host:port/db?...`), one connection per shard.
    Postgres(String),
    /// Nowhere: batches are encoded, sealed and discarded. Measures the pipeline alone.
    Discard,
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The URL may carry a password; never print it.
            Sink::Postgres(_) => f.write_str("Postgres(<url>)"),
            Sink::Discard => f.write_str("Discard"),
        }
    }
}

/// A ledger stream name: 1-64 characters of `A-Z a-z 0-9 _ . : -` (the configured part is
/// at most 40; the boot id adds 17).
pub(crate) fn valid_stream(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

/// A callback told about every row PostgreSQL rejected (after it went to the dead-letter
/// table).
pub type DeadLetterHook = Arc<dyn Fn(&DeadLetter) + Send + Sync>;

/// Configuration of an [`Ingestor`](crate::Ingestor). Build it with
/// [`IngestorBuilder`](crate::IngestorBuilder); every field is documented there too.
#[derive(Clone)]
pub struct IngestorConfig {
    /// Where batches go. No default: choose PostgreSQL or `Discard`.
    pub sink: Option<Sink>,
    /// Number of shards: rings, batchers and writer connections (default 2).
    pub shards: usize,
    /// Records each shard's ring holds (default 65,536).
    pub ring_capacity: usize,
    /// A batch is sealed at this many rows (default 50,000).
    pub batch_max_rows: usize,
    /// … or when its COPY body would pass this many bytes (default 8 MiB).
    pub batch_max_bytes: usize,
    /// … or when its first row has waited this long and no sealed batch is already waiting
    /// for the writer (default 5 ms): group commit that adapts batch size to commit time.
    /// A batch a durable push waits on is sealed after `linger` or 5 ms, whichever is
    /// shorter, busy writer or not: durable acks wait for the spool, not for PostgreSQL.
    /// A batch a committed receipt waits on is sealed, writer free, once the ring has been
    /// quiet for 10 ms: its client waits for the answer before it sends more.
    pub linger: Duration,
    /// Ring-full behaviour (default [`Backpressure::Block`]).
    pub backpressure: Backpressure,
    /// Sealed batches queued per shard while one commits (default 2).
    pub in_flight_batches: usize,
    /// Target table; `None` uses the record kind's default (`market_data`, `quotes`).
    /// May be schema-qualified (`md.market_data`).
    pub table: Option<String>,
    /// The exactly-once ledger table (default `ingest_batches`).
    pub ledger_table: String,
    /// Where rejected rows go (default `ingest_dead_letters`).
    pub dead_letter_table: String,
    /// Name of this ingest stream in the ledger; a random boot id is appended so two runs
    /// never share batch ids (default `christmas`).
    pub stream: String,
    /// First reconnect delay; doubles up to `reconnect_max` (default 50 ms).
    pub reconnect_min: Duration,
    /// Longest reconnect delay (default 5 s).
    pub reconnect_max: Duration,
    /// Optional callback for dead-lettered rows.
    pub on_dead_letter: Option<DeadLetterHook>,
    /// How often to run partition maintenance on the target table (default 60 s; `None`
    /// turns it off). The first pass runs before `start` returns. It creates time
    /// partitions ahead of time, moves rows the default partition caught into new ones,
    /// applies retention and prunes the ledger; see [`crate::schema::maintain`]. Tables
    /// not created by the plain-PostgreSQL schema are left alone.
    pub partition_maintenance: Option<Duration>,
    /// Redis fan-out of every batch (default `None`: off). See [`crate::fanout`].
    pub fanout: Option<FanoutConfig>,
    /// A local spool of sealed batches before PostgreSQL (default `None`: off). Needed for
    /// [`Ingestor::push_durable`](crate::Ingestor::push_durable); see [`crate::spool`].
    pub spool: Option<SpoolConfig>,
    /// Shards chosen for some symbols (default `None`: every symbol by the hash of its
    /// name). `christmas-ingest replay` deals a file's symbols out by their rows
    /// ([`SymbolShards::balanced`]) so its writers finish together; a Citus placement
    /// still wins. Symbols it does not name go by the hash.
    pub symbol_shards: Option<Arc<SymbolShards>>,
}

impl Default for IngestorConfig {
    fn default() -> Self {
        IngestorConfig {
            sink: None,
            shards: 2,
            ring_capacity: 65_536,
            batch_max_rows: 50_000,
            batch_max_bytes: 8 << 20,
            linger: Duration::from_millis(5),
            backpressure: Backpressure::Block,
            in_flight_batches: 2,
            table: None,
            ledger_table: BatchLedger::SCHEMA_TABLE.into(),
            dead_letter_table: "ingest_dead_letters".into(),
            stream: "christmas".into(),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
            on_dead_letter: None,
            partition_maintenance: Some(Duration::from_secs(60)),
            fanout: None,
            spool: None,
            symbol_shards: None,
        }
    }
}

impl fmt::Debug for IngestorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestorConfig")
            .field("sink", &self.sink)
            .field("shards", &self.shards)
            .field("ring_capacity", &self.ring_capacity)
            .field("batch_max_rows", &self.batch_max_rows)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .field("linger", &self.linger)
            .field("backpressure", &self.backpressure)
            .field("in_flight_batches", &self.in_flight_batches)
            .field("table", &self.table)
            .field("ledger_table", &self.ledger_table)
            .field("dead_letter_table", &self.dead_letter_table)
            .field("stream", &self.stream)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("on_dead_letter", &self.on_dead_letter.is_some())
            .field("partition_maintenance", &self.partition_maintenance)
            .field("fanout", &self.fanout)
            .field("spool", &self.spool)
            .field(
                "symbol_shards",
                &self.symbol_shards.as_ref().map(|s| s.len()),
            )
            .finish()
    }
}

impl IngestorConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self, max_row_bytes: usize) -> Result<()> {
        if self.sink.is_none() {
            return Err(Error::config(
                "sink",
                "set a database URL, or Sink::Discard for a null sink",
            ));
        }
        if !(1..=256).contains(&self.shards) {
            return Err(Error::config("shards", "must be between 1 and 256"));
        }
        if !(2..=1 << 24).contains(&self.ring_capacity) {
            return Err(Error::config(
                "ring_capacity",
                "must be between 2 and 16,777,216",
            ));
        }
        if !(1..=1 << 24).contains(&self.batch_max_rows) {
            return Err(Error::config(
                "batch_max_rows",
                "must be between 1 and 16,777,216",
            ));
        }
        if self.batch_max_bytes < max_row_bytes || self.batch_max_bytes > 1 << 30 {
            return Err(Error::config(
                "batch_max_bytes",
                format!("must be between {max_row_bytes} (one row) and 1 GiB"),
            ));
        }
        if self.linger > Duration::from_secs(60) {
            return Err(Error::config("linger", "must be at most 60 s"));
        }
        if let Some(max) = self.symbol_shards.as_ref().and_then(|s| s.max_shard()) {
            if max >= self.shards {
                return Err(Error::config(
                    "symbol_shards",
                    format!("names shard {max}, but there are {} shards", self.shards),
                ));
            }
        }
        if !(1..=64).contains(&self.in_flight_batches) {
            return Err(Error::config(
                "in_flight_batches",
                "must be between 1 and 64",
            ));
        }
        if let Some(spool) = &self.spool {
            spool.validate(self.batch_max_bytes)?;
        }
        if let Some(t) = &self.table {
            check_table_name("table", t)?;
        }
        check_table_name("ledger_table", &self.ledger_table)?;
        check_table_name("dead_letter_table", &self.dead_letter_table)?;
        if !valid_stream(&self.stream) || self.stream.len() > 40 {
            return Err(Error::config(
                "stream",
                "must be 1-40 characters of A-Z a-z 0-9 _ . : -",
            ));
        }
        if self
            .partition_maintenance
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            return Err(Error::config(
                "partition_maintenance",
                "must be at least 1 s (or None to turn it off)",
            ));
        }
        if let Some(f) = &self.fanout {
            f.validate()?;
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return Err(Error::config(
                "reconnect_min",
                "must be non-zero and at most reconnect_max",
            ));
        }
        Ok(())
    }
}

/// Table names end up in SQL text, so only plain (optionally schema-qualified) identifiers
/// are accepted.
pub(crate) fn check_table_name(field: &'static str, name: &str) -> Result<()> {
    let ident_ok = |part: &str| {
        let mut bytes = part.bytes();
        matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b == b'_')
            && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && part.len() <= 63
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|p| ident_ok(p)) {
        return Err(Error::config(
            field,
            format!("{name:?} is not a lower-case identifier (optionally schema.table)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> IngestorConfig {
        IngestorConfig {
            sink: Some(Sink::Discard),
            ..IngestorConfig::default()
        }
    }

    #[test]
    fn defaults_validate() {
        ok().validate(100).unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(&str, IngestorConfig)> = vec![
            ("sink", IngestorConfig::default()),
            ("shards", IngestorConfig { shards: 0, ..ok() }),
            (
                "symbol_shards",
                IngestorConfig {
                    shards: 2,
                    // Three symbols dealt over three shards: shard 2 of 2 does not exist.
                    symbol_shards: Some(Arc::new(crate::router::SymbolShards::balanced(
                        (0..3).map(|i| (crate::Symbol::new(&format!("S{i}")).unwrap(), 1)),
                        3,
                    ))),
                    ..ok()
                },
            ),
            (
                "ring_capacity",
                IngestorConfig {
                    ring_capacity: 1,
                    ..ok()
                },
            ),
            (
                "batch_max_rows",
                IngestorConfig {
                    batch_max_rows: 0,
                    ..ok()
                },
            ),
            (
                "batch_max_bytes",
                IngestorConfig {
                    batch_max_bytes: 10,
                    ..ok()
                },
            ),
            (
                "table",
                IngestorConfig {
                    table: Some("x; drop table y".into()),
                    ..ok()
                },
            ),
            (
                "stream",
                IngestorConfig {
                    stream: "a b".into(),
                    ..ok()
                },
            ),
        ];
        for (field, cfg) in cases {
            match cfg.validate(100) {
                Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn table_names() {
        check_table_name("t", "market_data").unwrap();
        check_table_name("t", "md.market_data").unwrap();
        check_table_name("t", "a.b.c").unwrap_err();
        check_table_name("t", "Market").unwrap_err();
        check_table_name("t", "1x").unwrap_err();
        check_table_name("t", "").unwrap_err();
    }

    #[test]
    fn debug_hides_url() {
        let cfg = IngestorConfig {
            sink: Some(Sink::Postgres("postgres://u:secret@h/db".into())),
            ..IngestorConfig::default()
        };
        assert!(!format!("{cfg:?}").contains("secret"));
    }
}
