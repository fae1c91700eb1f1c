//! [`Appender`]: writes sealed batches to the shard's open segment, rolls segments, waits
//! while the spool is full and fsyncs by policy.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::FsyncPolicy;
use super::format::{io, segment_name, ENTRY_HEADER, MAGIC};
use super::shard_spool::{Recovered, Segment, ShardSpool, SpoolRef};
use crate::error::Result;

/// The appender's open segment.
pub(crate) struct Appender {
    spool: Arc<ShardSpool>,
    file: Option<(File, Arc<PathBuf>, u64)>,
    /// Number the next entry gets.
    next: u64,
    /// Appended and not yet fsynced since this instant.
    dirty_since: Option<Instant>,
}

/// What [`Appender::append`] did with a batch.
pub(crate) enum Placed {
    /// The writer gets the batch in memory (its bytes count against the memory budget).
    Memory { entry: u64, bytes: u64 },
    /// The writer reads it back from here.
    Disk(SpoolRef),
}

impl Appender {
    pub fn new(spool: Arc<ShardSpool>, recovered: &Recovered) -> Self {
        let next = recovered.entries.last().map_or(0, |e| e.entry + 1);
        Appender {
            spool,
            file: None,
            next,
            dirty_since: None,
        }
    }

    /// Appends `encoded` (from [`encode_entry`]), waiting while the spool is full. Does not
    /// fsync: see [`Appender::sync`].
    pub fn append(&mut self, encoded: &[u8]) -> Result<Placed> {
        let size = encoded.len() as u64;
        let spool = self.spool.clone();
        let cfg = &spool.config;
        if self
            .file
            .as_ref()
            .is_some_and(|(_, _, bytes)| *bytes + size > cfg.segment_bytes)
        {
            self.roll()?;
        }
        {
            let mut st = self.spool.lock();
            let mut waited = false;
            // Full: wait for commits to free space. A lone open segment always may grow,
            // so one oversized batch cannot wedge the spool.
            while st.disk + size > cfg.max_bytes && st.segments.len() > 1 {
                if !waited {
                    waited = true;
                    self.spool
                        .counters
                        .full_waits
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        disk_bytes = st.disk,
                        max_bytes = cfg.max_bytes,
                        "spool full: waiting for PostgreSQL to commit before taking more"
                    );
                }
                st = self
                    .spool
                    .space
                    .wait_timeout(st, Duration::from_millis(100))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        if self.file.is_none() {
            self.open_segment()?;
        }
        let entry = self.next;
        let (file, path, bytes) = self.file.as_mut().expect("segment is open");
        let offset = *bytes;
        file.write_all(encoded)
            .map_err(|e| io("appending to", path, e))?;
        *bytes += size;
        let path = path.clone();
        self.next += 1;
        self.dirty_since.get_or_insert_with(Instant::now);
        self.spool.counters.appended.fetch_add(1, Ordering::Relaxed);
        let mut st = self.spool.lock();
        st.disk += size;
        if let Some(seg) = st.segments.back_mut() {
            seg.bytes += size;
            seg.last = Some(entry);
        }
        let payload = size - ENTRY_HEADER as u64;
        if st.memory + payload <= cfg.memory_bytes {
            st.memory += payload;
            Ok(Placed::Memory {
                entry,
                bytes: payload,
            })
        } else {
            Ok(Placed::Disk(SpoolRef {
                path,
                offset,
                len: payload as u32,
                entry,
            }))
        }
    }

    /// True when an fsync is due under the policy.
    pub fn sync_due(&self) -> bool {
        match (self.dirty_since, self.spool.config.fsync) {
            (None, _) => false,
            (Some(_), FsyncPolicy::EveryBatch) => true,
            (Some(t), FsyncPolicy::Every(d)) => t.elapsed() >= d,
        }
    }

    /// How long until an fsync is due (`None`: nothing to sync).
    pub fn sync_in(&self) -> Option<Duration> {
        match (self.dirty_since, self.spool.config.fsync) {
            (None, _) => None,
            (Some(_), FsyncPolicy::EveryBatch) => Some(Duration::ZERO),
            (Some(t), FsyncPolicy::Every(d)) => Some(d.saturating_sub(t.elapsed())),
        }
    }

    /// Forces everything appended to disk.
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty_since.is_none() {
            return Ok(());
        }
        if let Some((file, path, _)) = &self.file {
            file.sync_data().map_err(|e| io("fsyncing", path, e))?;
            self.spool.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        self.dirty_since = None;
        Ok(())
    }

    fn open_segment(&mut self) -> Result<()> {
        let path = self.spool.dir.join(segment_name(self.next));
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| io("creating", &path, e))?;
        file.write_all(MAGIC).map_err(|e| io("writing", &path, e))?;
        // The new name must survive a crash as well as its contents.
        file.sync_all()
            .and_then(|_| File::open(&self.spool.dir).and_then(|d| d.sync_all()))
            .map_err(|e| io("fsyncing", &path, e))?;
        let path = Arc::new(path);
        let mut st = self.spool.lock();
        st.disk += MAGIC.len() as u64;
        st.segments.push_back(Segment {
            path: path.clone(),
            bytes: MAGIC.len() as u64,
            last: None,
            open: true,
        });
        drop(st);
        self.file = Some((file, path, MAGIC.len() as u64));
        Ok(())
    }

    /// Closes the open segment at shutdown: it is deleted once the writer has committed it.
    pub fn close(&mut self) -> Result<()> {
        self.roll()
    }

    /// Closes the open segment (fsynced) so it can be deleted once committed.
    fn roll(&mut self) -> Result<()> {
        self.sync()?;
        self.file = None;
        let mut st = self.spool.lock();
        if let Some(seg) = st.segments.back_mut() {
            seg.open = false;
        }
        self.spool.release(&mut st);
        Ok(())
    }
}
