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

pub(crate) mod appender;
pub(crate) mod config;
pub(crate) mod format;
pub(crate) mod recovery;
pub(crate) mod scanner;
pub(crate) mod shard_spool;

pub use config::{FsyncPolicy, SpoolConfig};
pub use scanner::scan_segment;
pub use shard_spool::SpoolSnapshot;
