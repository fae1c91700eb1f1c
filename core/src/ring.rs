//! [`ShardRing`]: one shard's bounded lock-free queue, with the wake-ups around it.
//!
//! The queue is crossbeam's `ArrayQueue` (a proven bounded MPMC queue); this module adds no
//! lock-free algorithm of its own, only the signalling: producers wake a sleeping batcher,
//! the batcher wakes producers waiting for space, and shutdown never strands a record that
//! a producer was told was accepted.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use tokio::sync::{oneshot, Notify};

use crate::metrics::ShardCounters;
use crate::writer::BatchReport;
use crate::Result;

/// What travels through a ring.
#[derive(Debug)]
pub(crate) enum Slot<R> {
    /// A record and the time it was pushed (ns since the ingestor started).
    Record { record: R, pushed_at: u64 },
    /// A producer waiting until everything it pushed to this shard before is committed
    /// (`durable: false`) or fsynced in the spool (`durable: true`).
    Barrier {
        waiter: oneshot::Sender<Result<BatchReport>>,
        durable: bool,
    },
}

/// One shard's ring.
#[derive(Debug)]
pub(crate) struct ShardRing<R> {
    pub queue: ArrayQueue<Slot<R>>,
    /// Producers inside a push right now. Shutdown waits for 0 after setting `closed`, so a
    /// push that saw `closed == false` always lands before the batcher's final drain.
    // Invariant: incremented (SeqCst) before a producer reads `closed`, decremented after
    // its enqueue.
    pushers: CachePadded<AtomicUsize>,
    /// Set by the batcher before it sleeps; a producer that finds it set clears it and
    /// wakes the batcher.
    batcher_sleeping: CachePadded<AtomicBool>,
    wake_batcher: Notify,
    /// Producers awaiting space (async push). The batcher only notifies when non-zero.
    space_waiters: AtomicUsize,
    space: Notify,
    pub counters: ShardCounters,
    /// Spooled batches handed on and not yet taken by the writer (with a spool, the
    /// batcher's "writer free" test for group commit).
    pub spool_queued: AtomicUsize,
}

/// A producer's ticket into a ring; dropping it leaves the ring.
pub(crate) struct PushGuard<'a, R> {
    ring: &'a ShardRing<R>,
}

impl<R> Drop for PushGuard<'_, R> {
    fn drop(&mut self) {
        self.ring.pushers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<R> ShardRing<R> {
    pub fn new(capacity: usize) -> Self {
        ShardRing {
            queue: ArrayQueue::new(capacity),
            pushers: CachePadded::new(AtomicUsize::new(0)),
            batcher_sleeping: CachePadded::new(AtomicBool::new(false)),
            wake_batcher: Notify::new(),
            space_waiters: AtomicUsize::new(0),
            space: Notify::new(),
            counters: ShardCounters::default(),
            spool_queued: AtomicUsize::new(0),
        }
    }

    /// Enters the ring unless `closed` is set.
    #[inline]
    pub fn enter<'a>(&'a self, closed: &AtomicBool) -> Option<PushGuard<'a, R>> {
        self.pushers.fetch_add(1, Ordering::SeqCst);
        let guard = PushGuard { ring: self };
        if closed.load(Ordering::SeqCst) {
            return None;
        }
        Some(guard)
    }

    /// True when no producer is inside a push.
    pub fn no_pushers(&self) -> bool {
        self.pushers.load(Ordering::SeqCst) == 0
    }

    /// Wakes the batcher if it is asleep. Called after every successful enqueue.
    #[inline]
    pub fn after_push(&self) {
        if self.batcher_sleeping.load(Ordering::Relaxed)
            && self.batcher_sleeping.swap(false, Ordering::AcqRel)
        {
            self.wake_batcher.notify_one();
        }
    }

    /// Wakes the batcher unconditionally (shutdown).
    pub fn wake(&self) {
        self.wake_batcher.notify_one();
    }

    /// The batcher sleeps until a producer pushes or `timeout` passes. A wake-up lost to the
    /// race between the emptiness check and the flag costs at most `timeout`.
    pub async fn batcher_wait(&self, timeout: Duration) {
        self.batcher_sleeping.store(true, Ordering::SeqCst);
        if !self.queue.is_empty() {
            self.batcher_sleeping.store(false, Ordering::Relaxed);
            return;
        }
        let _ = tokio::time::timeout(timeout, self.wake_batcher.notified()).await;
        self.batcher_sleeping.store(false, Ordering::Relaxed);
    }

    /// Called by the batcher after it freed space.
    #[inline]
    pub fn after_drain(&self) {
        if self.space_waiters.load(Ordering::SeqCst) > 0 {
            self.space.notify_waiters();
        }
    }

    /// Enqueues `slot`, awaiting space as long as it takes.
    pub async fn push_waiting(&self, mut slot: Slot<R>) {
        loop {
            match self.queue.push(slot) {
                Ok(()) => return self.after_push(),
                Err(back) => slot = back,
            }
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.space_waiters.fetch_add(1, Ordering::SeqCst);
            let retry = self.queue.push(slot);
            match retry {
                Ok(()) => {
                    self.space_waiters.fetch_sub(1, Ordering::SeqCst);
                    return self.after_push();
                }
                Err(back) => slot = back,
            }
            // Make sure the batcher is draining, then wait; the timeout bounds any missed
            // notification.
            self.after_push();
            let _ = tokio::time::timeout(Duration::from_millis(2), notified).await;
            self.space_waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Enqueues `slot`, waiting for space on this thread: a short spin, then sleeps growing
    /// from 50 µs to 1 ms. A full ring means the writer is busy for milliseconds, so sleeping
    /// leaves the CPU to PostgreSQL instead of spinning against it.
    pub fn push_blocking(&self, mut slot: Slot<R>) {
        let backoff = crossbeam_utils::Backoff::new();
        let mut sleep = Duration::from_micros(50);
        loop {
            match self.queue.push(slot) {
                Ok(()) => return self.after_push(),
                Err(back) => slot = back,
            }
            self.after_push();
            if backoff.is_completed() {
                std::thread::sleep(sleep);
                sleep = (sleep * 2).min(Duration::from_millis(1));
            } else {
                backoff.snooze();
            }
        }
    }
}
