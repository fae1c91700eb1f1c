//! The spool: sealed batches on local disk before PostgreSQL, for the `durable` ack level
//! and for accepting while the database is away.
//!
//! With a spool, each shard's pipeline is `ring → batcher → spool → writer`. The spool
//! appends every sealed batch to the shard's current segment file, fsyncs by policy, and
//! only then answers durable receipts and hands the batch on. Segments are deleted once every
//! batch in them is committed. Disk use is capped: when the cap is reached the spool stops
//! taking batches until commits free space, which fills the ring and pushes back on
//! producers (`Block` waits, `Reject` answers `Full`).
//!
//! ```text
//! <dir>/<kind>/shard-<k>/<first entry:020>.seg
//!   "CHSPOOL1"
//!   entry*: u32 LE payload length, u32 LE CRC-32 of the payload, payload (rkyv Entry)
//! ```
//!
//! On start, segments left by an earlier run are read back before new data and written
//! exactly once under their original ledger identity (stream, shard, seq), so a batch that
//! did commit before the crash is found in the ledger and skipped. A torn or corrupt tail
//! (a crash mid-append) is truncated at the last whole entry and reported, never fatal.
//!
//! While the writer keeps up, batches travel on in memory. Once more than
//! [`SpoolConfig::memory_bytes`] of spooled batches wait for PostgreSQL, further ones travel
//! as a file position and the writer reads them back: memory stays bounded however long the
//! database is away.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"CHSPOOL1";
const ENTRY_HEADER: usize = 8;
/// Larger payloads are corruption (a batch is at most 1 GiB of COPY body).
const MAX_PAYLOAD: u32 = (1 << 30) + (64 << 20);

/// When appended batches are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every batch, before anyone is told it is durable (the default).
    EveryBatch,
    /// At most this long after a batch is appended; durable receipts wait for that fsync.
    /// Fewer fsyncs under load, at the price of that much added durable latency.
    Every(Duration),
}

/// Where and how the spool keeps batches. See the [module docs](self).
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

/// One spooled batch, as archived on disk.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct Entry {
    /// The ledger identity of the batch: stream, shard and sequence.
    pub stream: String,
    pub shard: u32,
    pub seq: u64,
    /// End offset in `body` of each row.
    pub row_ends: Vec<u32>,
    /// The rows, binary COPY encoded.
    pub body: Vec<u8>,
}

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
struct Segment {
    path: Arc<PathBuf>,
    bytes: u64,
    /// Entry number of the last entry in it (none yet: `None`).
    last: Option<u64>,
    open: bool,
}

#[derive(Debug, Default)]
struct State {
    segments: VecDeque<Segment>,
    /// Bytes of all segments on disk.
    disk: u64,
    /// Bytes of batches handed to the writer in memory and not yet committed.
    memory: u64,
    /// Every entry up to this one is committed.
    committed: Option<u64>,
}

/// One shard's spool: its segments, shared by the appender (a thread) and the writer.
#[derive(Debug)]
pub(crate) struct ShardSpool {
    pub config: SpoolConfig,
    dir: PathBuf,
    state: Mutex<State>,
    /// Signalled when commits free disk space.
    space: Condvar,
    pub counters: SpoolCounters,
    /// Held for the life of the spool: one process per directory.
    _lock: File,
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

fn io(context: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Spool {
        reason: format!("{context} {}: {e}", path.display()),
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

/// Encodes one entry: header and archived payload.
pub(crate) fn encode_entry(entry: &Entry) -> Result<Vec<u8>> {
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(entry).map_err(|e| Error::Spool {
        reason: format!("archiving a batch: {e}"),
    })?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= MAX_PAYLOAD)
        .ok_or_else(|| Error::Spool {
            reason: "batch too large for the spool".into(),
        })?;
    let mut out = Vec::with_capacity(ENTRY_HEADER + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes one entry's payload (after its header was checked).
pub(crate) fn decode_payload(payload: &[u8]) -> Result<Entry> {
    // rkyv needs aligned bytes; a file read gives none.
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<Entry, rkyv::rancor::Error>(&aligned).map_err(|e| Error::Spool {
        reason: format!("unreadable spool entry: {e}"),
    })
}

/// Reads the entries of a whole segment image: the entries that are whole and valid, and
/// where the valid part ends (`bytes.len()` when all of it is). Never panics on any input.
pub fn scan_segment(bytes: &[u8]) -> (Vec<(u64, u32)>, usize) {
    let mut found = Vec::new();
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return (found, 0);
    }
    let mut at = MAGIC.len();
    while bytes.len() - at >= ENTRY_HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap_or_default());
        let start = at + ENTRY_HEADER;
        if len > MAX_PAYLOAD || bytes.len() - start < len as usize {
            break;
        }
        let payload = &bytes[start..start + len as usize];
        if crc32fast::hash(payload) != crc || decode_payload(payload).is_err() {
            break;
        }
        found.push((at as u64, len));
        at = start + len as usize;
    }
    (found, at)
}

impl ShardSpool {
    /// Opens (creating) `<dir>/<kind>/shard-<shard>`, reads what an earlier run left, and
    /// starts a fresh segment for this run.
    pub fn open(config: &SpoolConfig, kind: &str, shard: usize) -> Result<(ShardSpool, Recovered)> {
        let dir = config.dir.join(kind).join(format!("shard-{shard}"));
        std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("opening", &lock_path, e))?;
        lock.try_lock().map_err(|_| Error::Spool {
            reason: format!(
                "{} is in use by another process (one ingestor per spool directory)",
                dir.display()
            ),
        })?;
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(|e| io("reading", &dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let p = e.path();
                let n = p
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".seg")?
                    .parse()
                    .ok()?;
                Some((n, p))
            })
            .collect();
        names.sort();
        let spool = ShardSpool {
            config: config.clone(),
            dir,
            state: Mutex::new(State::default()),
            space: Condvar::new(),
            counters: SpoolCounters::default(),
            _lock: lock,
        };
        let mut recovered = Recovered::default();
        let mut next = 0u64;
        {
            let mut st = spool.lock();
            for (first, path) in names {
                let bytes = std::fs::read(&path).map_err(|e| io("reading", &path, e))?;
                let (entries, valid) = scan_segment(&bytes);
                if valid < bytes.len() {
                    let cut = (bytes.len() - valid) as u64;
                    tracing::warn!(
                        segment = %path.display(), valid_bytes = valid, cut_bytes = cut,
                        entries = entries.len(),
                        "spool segment has a torn or corrupt tail; truncated after the last whole entry"
                    );
                    spool
                        .counters
                        .truncated_bytes
                        .fetch_add(cut, Ordering::Relaxed);
                    if entries.is_empty() {
                        std::fs::remove_file(&path).map_err(|e| io("removing", &path, e))?;
                        continue;
                    }
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| io("opening", &path, e))?;
                    f.set_len(valid as u64)
                        .and_then(|_| f.sync_all())
                        .map_err(|e| io("truncating", &path, e))?;
                }
                if entries.is_empty() {
                    std::fs::remove_file(&path).map_err(|e| io("removing", &path, e))?;
                    continue;
                }
                next = next.max(first);
                let path = Arc::new(path);
                for (offset, len) in entries {
                    recovered.entries.push(SpoolRef {
                        path: path.clone(),
                        offset,
                        len,
                        entry: next,
                    });
                    next += 1;
                }
                st.disk += valid as u64;
                st.segments.push_back(Segment {
                    path,
                    bytes: valid as u64,
                    last: Some(next - 1),
                    open: false,
                });
            }
            spool
                .counters
                .recovered
                .store(recovered.entries.len() as u64, Ordering::Relaxed);
            if !recovered.entries.is_empty() {
                tracing::info!(
                    dir = %spool.dir.display(), batches = recovered.entries.len(),
                    "spool: batches left by an earlier run will be written before new data"
                );
            }
        }
        Ok((spool, recovered))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
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
    fn release(&self, st: &mut State) {
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

    /// Reads an entry back (for the writer).
    pub fn read(&self, at: &SpoolRef) -> Result<Entry> {
        self.counters.read_back.fetch_add(1, Ordering::Relaxed);
        let path = &*at.path;
        let mut f = File::open(path).map_err(|e| io("opening", path, e))?;
        f.seek(SeekFrom::Start(at.offset))
            .map_err(|e| io("seeking in", path, e))?;
        let mut buf = vec![0u8; ENTRY_HEADER + at.len as usize];
        f.read_exact(&mut buf).map_err(|e| io("reading", path, e))?;
        let len = u32::from_le_bytes(buf[0..4].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap_or_default());
        let payload = &buf[ENTRY_HEADER..];
        if len != at.len || crc32fast::hash(payload) != crc {
            return Err(Error::Spool {
                reason: format!(
                    "entry at {} of {} changed on disk",
                    at.offset,
                    path.display()
                ),
            });
        }
        decode_payload(payload)
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
