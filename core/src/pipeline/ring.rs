//! [`ShardRing`]: one shard's bounded lock-free queue, with the wake-ups around it.
//!
//! The queue is crossbeam's `ArrayQueue` (a proven bounded MPMC queue); this module adds no
//! lock-free algorithm of its own, only the signalling, which every push and pop keeps by
//! itself: a push wakes a sleeping batcher, a drain wakes producers waiting for space, and
//! closing never strands a record that a producer was told was accepted.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use tokio::sync::Notify;

use crate::metrics;
use crate::pipeline::batch::Slot;

/// One shard's ring.
#[derive(Debug)]
pub(crate) struct ShardRing<R> {
    queue: ArrayQueue<Slot<R>>,
    /// Producers inside a push right now. The batcher's final drain waits for 0 after
    /// `closed` is set, so a push that saw `closed == false` always lands before it.
    // Invariant: incremented (SeqCst) before a producer reads `closed`, decremented after
    // its enqueue.
    pushers: CachePadded<AtomicUsize>,
    /// Set once by [`ShardRing::close`]; [`ShardRing::enter`] fails after it.
    closed: AtomicBool,
    /// Set by the batcher before it sleeps; a producer that finds it set clears it and
    /// wakes the batcher.
    batcher_sleeping: CachePadded<AtomicBool>,
    wake_batcher: Notify,
    /// Producers awaiting space (async push). The batcher only notifies when non-zero.
    space_waiters: AtomicUsize,
    space: Notify,
    /// Records the batcher took out (batcher only).
    drained: AtomicU64,
    /// Records evicted by [`ShardRing::force_push`] (producers; rare).
    dropped: AtomicU64,
    /// Pushes refused by [`ShardRing::try_push`] because the ring was full (producers; rare).
    rejected_full: AtomicU64,
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
    /// An empty, open ring of `capacity` slots.
    pub fn new(capacity: usize) -> Self {
        ShardRing {
            queue: ArrayQueue::new(capacity),
            pushers: CachePadded::new(AtomicUsize::new(0)),
            closed: AtomicBool::new(false),
            batcher_sleeping: CachePadded::new(AtomicBool::new(false)),
            wake_batcher: Notify::new(),
            space_waiters: AtomicUsize::new(0),
            space: Notify::new(),
            drained: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            rejected_full: AtomicU64::new(0),
        }
    }

    /// Enters the ring unless it is closed. Hold the guard across the push: the final
    /// drain waits for every producer that entered.
    #[inline]
    pub fn enter(&self) -> Option<PushGuard<'_, R>> {
        self.pushers.fetch_add(1, Ordering::SeqCst);
        let guard = PushGuard { ring: self };
        if self.closed.load(Ordering::SeqCst) {
            return None;
        }
        Some(guard)
    }

    /// Refuses new producers from now on and wakes the batcher for its final drain.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake_batcher.notify_one();
    }

    /// True once [`ShardRing::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// True when no producer is inside a push.
    pub fn no_pushers(&self) -> bool {
        self.pushers.load(Ordering::SeqCst) == 0
    }

    /// True when closed, no producer is inside a push and nothing is left: the batcher's
    /// last drain is done.
    pub fn is_finished(&self) -> bool {
        self.is_closed() && self.no_pushers() && self.queue.is_empty()
    }

    /// Enqueues `slot` if there is room; gives it back (and counts a rejection) if not.
    #[inline]
    pub fn try_push(&self, slot: Slot<R>) -> Result<(), Slot<R>> {
        match self.queue.push(slot) {
            Ok(()) => {
                self.wake_batcher_if_asleep();
                Ok(())
            }
            Err(back) => {
                metrics::add(&self.rejected_full, 1);
                Err(back)
            }
        }
    }

    /// Enqueues `slot`, evicting the oldest slot when full; returns what was evicted (an
    /// evicted record is also counted as dropped).
    #[inline]
    pub fn force_push(&self, slot: Slot<R>) -> Option<Slot<R>> {
        let evicted = self.queue.force_push(slot);
        if let Some(Slot::Record { .. }) = &evicted {
            metrics::add(&self.dropped, 1);
        }
        self.wake_batcher_if_asleep();
        evicted
    }

    /// Enqueues `slot`, awaiting space as long as it takes.
    pub async fn push_waiting(&self, mut slot: Slot<R>) {
        loop {
            match self.queue.push(slot) {
                Ok(()) => return self.wake_batcher_if_asleep(),
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
                    return self.wake_batcher_if_asleep();
                }
                Err(back) => slot = back,
            }
            // Make sure the batcher is draining, then wait; the timeout bounds any missed
            // notification.
            self.wake_batcher_if_asleep();
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
                Ok(()) => return self.wake_batcher_if_asleep(),
                Err(back) => slot = back,
            }
            self.wake_batcher_if_asleep();
            if backoff.is_completed() {
                std::thread::sleep(sleep);
                sleep = (sleep * 2).min(Duration::from_millis(1));
            } else {
                backoff.snooze();
            }
        }
    }

    /// Takes the oldest slot (the batcher). Call [`ShardRing::drained`] after a run of pops.
    #[inline]
    pub fn pop(&self) -> Option<Slot<R>> {
        self.queue.pop()
    }

    /// The batcher took `slots` slots, `records` of them records: counts them and wakes
    /// producers waiting for space.
    #[inline]
    pub fn drained(&self, slots: usize, records: u64) {
        metrics::add(&self.drained, records);
        if slots > 0 && self.space_waiters.load(Ordering::SeqCst) > 0 {
            self.space.notify_waiters();
        }
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

    /// Wakes the batcher if it is asleep; every enqueue ends with it.
    #[inline]
    fn wake_batcher_if_asleep(&self) {
        if self.batcher_sleeping.load(Ordering::Relaxed)
            && self.batcher_sleeping.swap(false, Ordering::AcqRel)
        {
            self.wake_batcher.notify_one();
        }
    }

    /// Slots in the ring now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when the ring holds no slot.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Slots the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Records the batcher has taken out so far.
    pub fn drained_records(&self) -> u64 {
        metrics::load(&self.drained)
    }

    /// Records evicted by drop-oldest so far.
    pub fn dropped_records(&self) -> u64 {
        metrics::load(&self.dropped)
    }

    /// Pushes refused because the ring was full so far.
    pub fn rejected_full(&self) -> u64 {
        metrics::load(&self.rejected_full)
    }
}
