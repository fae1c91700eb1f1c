//! [`ProducerId`], the per-producer lock that keeps a producer's pushes in order, and what
//! a push learns of its ticks ([`PushOutcome`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::error::{FieldError, Invalid};

/// A producer's stable name: 1–200 bytes of printable ASCII (`!` to `~`).
///
/// Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProducerId(Arc<str>);

impl ProducerId {
    /// The longest id in bytes.
    pub const MAX_LEN: usize = 200;

    /// Validates `id`; the error names the field `producer`.
    pub fn new(id: &str) -> Result<ProducerId, FieldError> {
        Self::checked("producer", id, "")
    }

    /// The producer of one request that carries an `Idempotency-Key` (the IETF httpapi
    /// draft's header): the key names a producer of its own, whose ticks are numbered from 1.
    /// The error names the field `Idempotency-Key`.
    pub fn for_idempotency_key(key: &str) -> Result<ProducerId, FieldError> {
        Self::checked("Idempotency-Key", key, "idempotency-key:")
    }

    fn checked(field: &'static str, id: &str, prefix: &str) -> Result<ProducerId, FieldError> {
        if id.is_empty() {
            return Err(FieldError::new(field, Invalid::Empty));
        }
        let len = prefix.len() + id.len();
        if len > Self::MAX_LEN {
            return Err(FieldError::new(
                field,
                Invalid::TooLong {
                    len: id.len(),
                    max: Self::MAX_LEN - prefix.len(),
                },
            ));
        }
        if !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(FieldError::new(field, Invalid::NotPrintable));
        }
        Ok(ProducerId(format!("{prefix}{id}").into()))
    }

    /// The id as stored in `ingest_producers.producer`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProducerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The sequence numbers of a push's records of one kind.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Seqs<'a> {
    /// Consecutive from this one.
    From(u64),
    /// One each, in record order.
    Each(&'a [u64]),
}

impl Seqs<'_> {
    /// The sequence of record `i`.
    pub fn of(&self, i: usize) -> u64 {
        match self {
            Seqs::From(first) => first + i as u64,
            Seqs::Each(seqs) => seqs[i],
        }
    }
}

/// What became of one push's ticks beyond its ack: how many were resends of ticks already
/// stored (dropped, not written again). Shared by the push's chunks and the writers.
#[derive(Debug, Default)]
pub(crate) struct PushOutcome {
    duplicates: AtomicU64,
    /// 1 + the shard whose ring evicted ticks of the push; 0 when none did.
    evicted: AtomicUsize,
}

impl PushOutcome {
    /// Notes that drop-oldest backpressure evicted ticks of the push before they were
    /// written.
    pub fn evicted(&self, shard: usize) {
        self.evicted.store(shard + 1, Ordering::Relaxed);
    }

    /// The shard that evicted ticks of the push, if one did.
    pub fn evicted_from(&self) -> Option<usize> {
        self.evicted.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Counts `n` more ticks dropped as resends.
    pub fn add_duplicates(&self, n: u64) {
        self.duplicates.fetch_add(n, Ordering::Relaxed);
    }

    /// Ticks dropped as resends so far.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
}

/// One lock per producer that is pushing, so its pushes reach the rings in order.
///
/// Entries are weak: a producer with no push in progress costs a map entry until the next
/// sweep, nothing more.
#[derive(Debug, Default)]
pub(crate) struct ProducerLocks {
    locks: Mutex<HashMap<ProducerId, Weak<tokio::sync::Mutex<()>>>>,
}

impl ProducerLocks {
    /// The lock of `producer` (the same one for every concurrent push of it).
    pub fn of(&self, producer: &ProducerId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lock) = locks.get(producer).and_then(Weak::upgrade) {
            return lock;
        }
        // Forget producers no push holds any more, before the map doubles.
        if locks.len() >= 1024 && locks.len().is_power_of_two() {
            locks.retain(|_, w| w.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(producer.clone(), Arc::downgrade(&lock));
        lock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_printable_ascii_of_bounded_length() {
        assert_eq!(ProducerId::new("feed-1").unwrap().as_str(), "feed-1");
        assert_eq!(
            ProducerId::for_idempotency_key("abc").unwrap().as_str(),
            "idempotency-key:abc"
        );
        assert_eq!(
            ProducerId::new("").unwrap_err(),
            FieldError::new("producer", Invalid::Empty)
        );
        assert_eq!(
            ProducerId::new("a b").unwrap_err(),
            FieldError::new("producer", Invalid::NotPrintable)
        );
        assert!(ProducerId::new(&"x".repeat(200)).is_ok());
        assert!(ProducerId::new(&"x".repeat(201)).is_err());
        let e = ProducerId::for_idempotency_key(&"k".repeat(190)).unwrap_err();
        assert_eq!(e.field, "Idempotency-Key");
    }

    #[tokio::test]
    async fn one_producer_one_lock() {
        let locks = ProducerLocks::default();
        let p = ProducerId::new("p").unwrap();
        let a = locks.of(&p);
        let b = locks.of(&p);
        assert!(Arc::ptr_eq(&a, &b));
        let _held = a.lock().await;
        assert!(b.try_lock().is_err());
        let other = locks.of(&ProducerId::new("q").unwrap());
        assert!(other.try_lock().is_ok());
    }
}
