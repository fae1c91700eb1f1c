//! [`SpoolConfig`]: where and how the spool keeps batches, and when it fsyncs.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// When appended batches are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every batch, before anyone is told it is durable (the default).
    EveryBatch,
    /// At most this long after a batch is appended; durable receipts wait for that fsync.
    /// Fewer fsyncs under load, at the price of that much added durable latency.
    Every(Duration),
}

/// Where and how the spool keeps batches. See the [spool module docs](crate::spool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Directory of the spool (created if missing). One ingestor per directory and record
    /// kind: a lock file refuses a second.
    pub dir: PathBuf,
    /// When to fsync (default every batch).
    pub fsync: FsyncPolicy,
    /// Most bytes of segments on disk per shard (default 1 GiB); beyond, new batches wait.
    pub max_bytes: u64,
    /// A segment is closed at this size (default 64 MiB).
    pub segment_bytes: u64,
    /// Most bytes of spooled batches held in memory for the writer per shard (default
    /// 64 MiB); beyond, the writer reads them back from disk.
    pub memory_bytes: u64,
}

impl SpoolConfig {
    /// Default [`max_bytes`](Self::max_bytes): 1 GiB per shard.
    pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
    /// Default [`memory_bytes`](Self::memory_bytes): 64 MiB per shard.
    pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;

    /// A spool in `dir` with the defaults.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolConfig {
            dir: dir.into(),
            fsync: FsyncPolicy::EveryBatch,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            segment_bytes: 64 << 20,
            memory_bytes: Self::DEFAULT_MEMORY_BYTES,
        }
    }

    /// Checks every field against a batch of at most `batch_bytes`.
    pub fn validate(&self, batch_bytes: usize) -> Result<()> {
        if let FsyncPolicy::Every(d) = self.fsync {
            if d.is_zero() || d > Duration::from_secs(10) {
                return Err(Error::config(
                    "spool.fsync",
                    "an fsync interval must be between 1 ms and 10 s",
                ));
            }
        }
        if self.segment_bytes < 1 << 20 {
            return Err(Error::config(
                "spool.segment_bytes",
                "must be at least 1 MiB",
            ));
        }
        // Room for a closed segment, the open one and one more batch.
        let least = 2 * self.segment_bytes + 2 * batch_bytes as u64;
        if self.max_bytes < least {
            return Err(Error::config(
                "spool.max_bytes",
                format!("must be at least {least} bytes (two segments and two batches)"),
            ));
        }
        Ok(())
    }
}
