//! [`ShardSpool`]: one shard's segments and their accounting, shared by the appender (a
//! thread) and the writer (which frees committed segments and reads entries back).

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::config::SpoolConfig;

/// Where an entry lives on disk.
#[derive(Debug, Clone)]
pub(crate) struct SpoolRef {
    pub path: Arc<PathBuf>,
    pub offset: u64,
    pub len: u32,
    /// Position of the entry in its shard's spool (increasing; frees segments).
    pub entry: u64,
}

/// Counters of one shard's spool.
#[derive(Debug, Default)]
pub(crate) struct SpoolCounters {
    pub appended: AtomicU64,
    pub fsyncs: AtomicU64,
    pub read_back: AtomicU64,
    pub recovered: AtomicU64,
    pub truncated_bytes: AtomicU64,
    pub full_waits: AtomicU64,
}

/// A closed or open segment file.
#[derive(Debug)]
pub(super) struct Segment {
    pub path: Arc<PathBuf>,
    pub bytes: u64,
    /// Entry number of the last entry in it (none yet: `None`).
    pub last: Option<u64>,
    pub open: bool,
}

/// The segments on disk and what is committed, under the spool's lock.
#[derive(Debug, Default)]
pub(super) struct State {
    pub segments: VecDeque<Segment>,
    /// Bytes of all segments on disk.
    pub disk: u64,
    /// Bytes of batches handed to the writer in memory and not yet committed.
    pub memory: u64,
    /// Every entry up to this one is committed.
    pub committed: Option<u64>,
}

/// One shard's spool: its segments, shared by the appender (a thread) and the writer.
#[derive(Debug)]
pub(crate) struct ShardSpool {
    pub config: SpoolConfig,
    pub(super) dir: PathBuf,
    pub(super) state: Mutex<State>,
    /// Signalled when commits free disk space.
    pub(super) space: Condvar,
    pub counters: SpoolCounters,
    /// Held for the life of the spool: one process per directory.
    pub(super) _lock: File,
}

/// What an earlier run left, per shard directory.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Entries to write before new data, in order.
    pub entries: Vec<SpoolRef>,
}

/// A snapshot of the spool's state, summed over shards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolSnapshot {
    /// Bytes of segment files on disk.
    pub disk_bytes: u64,
    /// Segment files on disk.
    pub segments: u64,
    /// The cap on `disk_bytes`, over all shards.
    pub max_bytes: u64,
    /// Batches appended since start.
    pub appended: u64,
    /// fsyncs since start.
    pub fsyncs: u64,
    /// Batches the writers read back from disk (memory budget exceeded, or recovered).
    pub read_back: u64,
    /// Batches found at start, left by an earlier run.
    pub recovered: u64,
    /// Bytes of torn or corrupt tails cut off at start.
    pub truncated_bytes: u64,
    /// Times a batch waited because the spool was full.
    pub full_waits: u64,
}

impl ShardSpool {
    /// The segments' state, locked (a poisoned lock is still used: its state is only ever
    /// updated whole).
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every entry up to `entry` is committed (or dead-lettered): frees what it can.
    pub fn committed(&self, entry: u64, in_memory_bytes: u64) {
        let mut st = self.lock();
        st.committed = Some(entry);
        st.memory = st.memory.saturating_sub(in_memory_bytes);
        self.release(&mut st);
        drop(st);
        self.space.notify_all();
    }

    /// Deletes closed segments whose entries are all committed.
    pub(super) fn release(&self, st: &mut State) {
        while let Some(front) = st.segments.front() {
            let done = !front.open
                && match (front.last, st.committed) {
                    (Some(last), Some(c)) => last <= c,
                    (None, _) => true,
                    _ => false,
                };
            if !done {
                break;
            }
            let seg = st.segments.pop_front().expect("front exists");
            if let Err(e) = std::fs::remove_file(&*seg.path) {
                tracing::warn!(segment = %seg.path.display(), error = %e, "spool: removing a committed segment failed");
            }
            st.disk = st.disk.saturating_sub(seg.bytes);
        }
    }

    pub fn snapshot(&self, into: &mut SpoolSnapshot) {
        let st = self.lock();
        into.disk_bytes += st.disk;
        into.segments += st.segments.len() as u64;
        drop(st);
        into.max_bytes += self.config.max_bytes;
        let c = &self.counters;
        into.appended += c.appended.load(Ordering::Relaxed);
        into.fsyncs += c.fsyncs.load(Ordering::Relaxed);
        into.read_back += c.read_back.load(Ordering::Relaxed);
        into.recovered += c.recovered.load(Ordering::Relaxed);
        into.truncated_bytes += c.truncated_bytes.load(Ordering::Relaxed);
        into.full_waits += c.full_waits.load(Ordering::Relaxed);
    }
}
