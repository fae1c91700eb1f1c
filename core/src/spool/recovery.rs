//! Opening a shard's spool: what an earlier run left is checked, a torn tail cut off, and
//! the whole entries listed for the writer to commit before new data.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};

use super::config::SpoolConfig;
use super::format::io;
use super::scanner::scan_segment;
use super::shard_spool::{Recovered, Segment, ShardSpool, SpoolCounters, SpoolRef, State};
use crate::error::{Error, Result};

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
}
