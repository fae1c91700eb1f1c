//! [`ShardRing`]: one shard's bounded lock-free queue, with the wake-ups around it.
//!
//! The queue is crossbeam's `ArrayQueue` (a proven bounded MPMC queue); this module adds no
//! lock-free algorithm of its own, only the signalling, which every push and pop keeps by
//! itself: a push wakes a sleeping batcher, a drain wakes producers waiting for space, and
//! closing never strands a record that a producer was told was accepted.
//!
//! The capacity is in records. A named producer's chunk is one slot of the queue holding
//! many records, so the ring also counts the records its chunks hold beyond their slot, and
//! a chunk goes in only while the ring holds fewer records than its capacity: a replay or a
//! pipelined client then waits for the batcher as a producer of single records does,
//! instead of queueing a whole file in memory (65,536 chunks of thousands of ticks).

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
    /// Records the ring's chunks hold beyond the one slot each takes: the ring holds
    /// `queue.len() + chunk_extra` records (and barriers).
    // Invariant: added before a chunk is enqueued, subtracted after it is popped or evicted.
    chunk_extra: CachePadded<AtomicUsize>,
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
    /// Records the batcher took out (batcher only; padded so its writes do not share a
    /// line with what producers read).
    drained: CachePadded<AtomicU64>,
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
    /// An empty, open ring of `capacity` records.
    pub fn new(capacity: usize) -> Self {
        ShardRing {
            queue: ArrayQueue::new(capacity),
            chunk_extra: CachePadded::new(AtomicUsize::new(0)),
            pushers: CachePadded::new(AtomicUsize::new(0)),
            closed: AtomicBool::new(false),
            batcher_sleeping: CachePadded::new(AtomicBool::new(false)),
            wake_batcher: Notify::new(),
            space_waiters: AtomicUsize::new(0),
            space: Notify::new(),
            drained: CachePadded::new(AtomicU64::new(0)),
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
        match self.enqueue(slot) {
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
        self.count_extra(&slot, true);
        let evicted = self.queue.force_push(slot);
        if let Some(e) = &evicted {
            self.count_extra(e, false);
        }
        match &evicted {
            Some(Slot::Record { .. }) => metrics::add(&self.dropped, 1),
            Some(Slot::Chunk(chunk)) => {
                metrics::add(&self.dropped, chunk.records.len() as u64);
                chunk.outcome.evicted(chunk.shard);
            }
            _ => {}
        }
        self.wake_batcher_if_asleep();
        evicted
    }

    /// Enqueues `slot`, awaiting space as long as it takes.
    pub async fn push_waiting(&self, mut slot: Slot<R>) {
        loop {
            match self.enqueue(slot) {
                Ok(()) => return self.wake_batcher_if_asleep(),
                Err(back) => slot = back,
            }
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.space_waiters.fetch_add(1, Ordering::SeqCst);
            let retry = self.enqueue(slot);
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
            match self.enqueue(slot) {
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
        let slot = self.queue.pop()?;
        self.count_extra(&slot, false);
        Some(slot)
    }

    /// What a slot holds beyond its own place in the queue: a chunk's records but one.
    fn extra(slot: &Slot<R>) -> usize {
        match slot {
            Slot::Chunk(chunk) => chunk.records.len().saturating_sub(1),
            _ => 0,
        }
    }

    /// Adds (`entering`) or takes off what `slot` holds beyond its slot; no atomic write
    /// for a single record or a barrier, so their pushes and pops cost what they did.
    #[inline]
    fn count_extra(&self, slot: &Slot<R>, entering: bool) {
        match Self::extra(slot) {
            0 => {}
            n if entering => {
                self.chunk_extra.fetch_add(n, Ordering::SeqCst);
            }
            n => {
                self.chunk_extra.fetch_sub(n, Ordering::SeqCst);
            }
        }
    }

    /// Enqueues `slot` if the queue has a free slot and, for a chunk, the ring holds fewer
    /// records than its capacity (so a chunk may take it past its capacity by at most the
    /// chunk itself, per producer inside a push; a chunk larger than the capacity still
    /// goes into a ring that has room).
    fn enqueue(&self, slot: Slot<R>) -> Result<(), Slot<R>> {
        if Self::extra(&slot) == 0 {
            return self.queue.push(slot);
        }
        if self.len() >= self.queue.capacity() {
            return Err(slot);
        }
        self.count_extra(&slot, true);
        self.queue
            .push(slot)
            .inspect_err(|back| self.count_extra(back, false))
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

    /// The batcher sleeps until a producer pushes or `timeout` passes. No wake-up is lost:
    /// the batcher raises its flag and then reads the queue's tail, a producer moves the
    /// tail and then reads the flag, all four `SeqCst` (crossbeam's `ArrayQueue` moves and
    /// reads its tail so), so at least one of the two sees the other's write; and a
    /// `notify_one` before the batcher awaits is kept as a permit.
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
        // SeqCst, after the enqueue's SeqCst tail move: see `batcher_wait` (a plain load on
        // x86).
        if self.batcher_sleeping.load(Ordering::SeqCst)
            && self.batcher_sleeping.swap(false, Ordering::AcqRel)
        {
            self.wake_batcher.notify_one();
        }
    }

    /// Records (and barriers) in the ring now, a chunk counted as its records.
    pub fn len(&self) -> usize {
        self.queue.len() + self.chunk_extra.load(Ordering::SeqCst)
    }

    /// True when the ring holds no slot.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Records the ring holds at most (a chunk may take it past by its own size).
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    use super::ShardRing;
    use crate::pipeline::batch::{Chunk, Slot};
    use crate::producer::{ProducerId, PushOutcome};

    fn record<R>(record: R) -> Slot<R> {
        Slot::Record {
            record,
            pushed_at: 0,
        }
    }

    fn value<R>(slot: Slot<R>) -> R {
        match slot {
            Slot::Record { record, .. } => record,
            _ => panic!("a barrier or chunk where a record was expected"),
        }
    }

    /// Pops until the ring is closed, has no producer inside and is empty, like the
    /// batcher's final drain.
    fn drain_until_finished<R>(ring: &ShardRing<R>, mut each: impl FnMut(R)) {
        loop {
            let mut slots = 0;
            while let Some(slot) = ring.pop() {
                slots += 1;
                each(value(slot));
            }
            ring.drained(slots, slots as u64);
            if ring.is_finished() {
                return;
            }
            thread::yield_now();
        }
    }

    #[test]
    fn smoke() {
        let ring = ShardRing::new(2);
        assert!(ring.try_push(record(1)).is_ok());
        assert!(ring.try_push(record(2)).is_ok());
        let back = ring.try_push(record(3)).expect_err("the ring is full");
        assert_eq!(value(back), 3);
        assert_eq!(ring.rejected_full(), 1);
        assert_eq!((ring.len(), ring.capacity()), (2, 2));
        assert_eq!(ring.pop().map(value), Some(1));
        assert_eq!(ring.pop().map(value), Some(2));
        assert!(ring.pop().is_none());
        ring.drained(2, 2);
        assert_eq!(ring.drained_records(), 2);
        ring.close();
        assert!(ring.enter().is_none(), "a closed ring refuses producers");
        assert!(ring.is_finished());
    }

    fn chunk(first: u64, n: u64) -> Slot<u64> {
        Slot::Chunk(Box::new(Chunk {
            producer: ProducerId::new("ring-test").expect("a valid name"),
            records: (first..first + n).map(|i| (i, i + 1)).collect(),
            pushed_at: 0,
            shard: 0,
            outcome: Arc::new(PushOutcome::default()),
        }))
    }

    #[test]
    fn chunks_count_as_their_records() {
        let ring = ShardRing::new(8);
        assert!(ring.try_push(chunk(0, 6)).is_ok());
        assert_eq!(
            ring.len(),
            6,
            "a chunk of 6 counts as 6 records, not one slot"
        );
        // Below the capacity a chunk still goes in, even past it.
        assert!(ring.try_push(chunk(6, 6)).is_ok());
        assert_eq!(ring.len(), 12);
        let back = ring
            .try_push(chunk(12, 6))
            .expect_err("12 records fill a ring of 8");
        assert!(matches!(&back, Slot::Chunk(c) if c.records.len() == 6));
        assert_eq!(ring.len(), 12, "a refused chunk leaves no count behind");
        // A single record is refused by slots only (the queue has 6 free slots).
        assert!(ring.try_push(record(100)).is_ok());
        assert_eq!(ring.len(), 13);
        let first = ring.pop().expect("the first chunk");
        assert!(matches!(&first, Slot::Chunk(c) if c.records[0].0 == 0));
        assert_eq!(ring.len(), 7);
        assert!(ring.try_push(back).is_ok(), "room again below the capacity");
        let mut records = Vec::new();
        while let Some(slot) = ring.pop() {
            match slot {
                Slot::Chunk(c) => records.extend(c.records.iter().map(|(r, _)| *r)),
                Slot::Record { record, .. } => records.push(record),
                Slot::Barrier { .. } => unreachable!("no barrier was pushed"),
            }
        }
        assert_eq!(records, [6, 7, 8, 9, 10, 11, 100, 12, 13, 14, 15, 16, 17]);
        assert_eq!(ring.len(), 0);
        // Drop-oldest eviction of a chunk takes its records off the count.
        let ring = ShardRing::new(2);
        assert!(ring.try_push(chunk(0, 5)).is_ok());
        assert!(ring.try_push(record(9)).is_ok());
        let evicted = ring.force_push(record(10));
        assert!(matches!(evicted, Some(Slot::Chunk(_))));
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.dropped_records(), 5);
    }

    #[test]
    fn spsc() {
        const COUNT: u64 = 100_000;
        let ring = Arc::new(ShardRing::new(64));
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                for i in 0..COUNT {
                    let _in = ring.enter().expect("open");
                    ring.push_blocking(record(i));
                }
            })
        };
        let mut next = 0;
        while next < COUNT {
            if let Some(slot) = ring.pop() {
                assert_eq!(value(slot), next, "records come out in push order");
                next += 1;
            }
        }
        producer.join().expect("producer");
        assert!(ring.pop().is_none());
    }

    #[test]
    fn mpmc() {
        const PRODUCERS: u64 = 4;
        const CONSUMERS: usize = 2;
        const EACH: u64 = 25_000;
        let ring = Arc::new(ShardRing::new(128));
        let taken = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let ring = ring.clone();
                thread::spawn(move || {
                    for seq in 0..EACH {
                        let _in = ring.enter().expect("open");
                        ring.push_blocking(record((p, seq)));
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|_| {
                let (ring, taken) = (ring.clone(), taken.clone());
                thread::spawn(move || {
                    let mut got = Vec::new();
                    while taken.load(Ordering::SeqCst) < (PRODUCERS * EACH) as usize {
                        if let Some(slot) = ring.pop() {
                            taken.fetch_add(1, Ordering::SeqCst);
                            got.push(value(slot));
                        }
                    }
                    got
                })
            })
            .collect();
        for p in producers {
            p.join().expect("producer");
        }
        let mut seen = HashSet::new();
        for c in consumers {
            let got = c.join().expect("consumer");
            // Each consumer sees every producer's records in that producer's order.
            let mut last = vec![None; PRODUCERS as usize];
            for &(p, seq) in &got {
                assert!(last[p as usize] < Some(seq), "producer {p} out of order");
                last[p as usize] = Some(seq);
            }
            for r in got {
                assert!(seen.insert(r), "{r:?} came out twice");
            }
        }
        assert_eq!(seen.len() as u64, PRODUCERS * EACH, "every record came out");
    }

    /// Counts its drops, so a test sees which records a ring let go of.
    #[derive(Debug)]
    struct Counted(Arc<AtomicUsize>, u32);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn drops() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let ring = ShardRing::new(4);
        let mut evicted = Vec::new();
        for i in 0..10 {
            if let Some(slot) = ring.force_push(record(Counted(dropped.clone(), i))) {
                evicted.push(value(slot).1);
            }
        }
        assert_eq!(
            ring.dropped_records(),
            6,
            "drop-oldest counts each eviction"
        );
        assert_eq!(evicted, [0, 1, 2, 3, 4, 5], "the oldest records go first");
        assert_eq!(dropped.load(Ordering::SeqCst), 6);
        let kept: Vec<u32> = std::iter::from_fn(|| ring.pop().map(|s| value(s).1)).collect();
        assert_eq!(kept, [6, 7, 8, 9]);
        assert_eq!(dropped.load(Ordering::SeqCst), 10);

        // Dropping a ring drops the slots it still holds.
        let dropped = Arc::new(AtomicUsize::new(0));
        let ring = ShardRing::new(8);
        for i in 0..5 {
            assert!(ring.try_push(record(Counted(dropped.clone(), i))).is_ok());
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        drop(ring);
        assert_eq!(dropped.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn shutdown_strands_nothing() {
        const PRODUCERS: usize = 4;
        let ring = Arc::new(ShardRing::new(32));
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let mut accepted = 0u64;
                    loop {
                        let Some(_in) = ring.enter() else {
                            return accepted;
                        };
                        ring.push_blocking(record((p, accepted)));
                        accepted += 1;
                    }
                })
            })
            .collect();
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut got = 0u64;
                drain_until_finished(&ring, |_| got += 1);
                got
            })
        };
        thread::sleep(Duration::from_millis(50));
        ring.close();
        let accepted: u64 = producers
            .into_iter()
            .map(|p| p.join().expect("producer"))
            .sum();
        let got = consumer.join().expect("consumer");
        assert!(accepted > 0, "the producers pushed before the close");
        assert_eq!(
            got, accepted,
            "every accepted record came out of the final drain"
        );
    }

    #[tokio::test]
    async fn waiting_push_wakes_on_drain() {
        let ring = Arc::new(ShardRing::new(1));
        assert!(ring.try_push(record(1)).is_ok());
        let waiting = {
            let ring = ring.clone();
            tokio::spawn(async move { ring.push_waiting(record(2)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            !waiting.is_finished(),
            "the push waits while the ring is full"
        );
        assert_eq!(ring.pop().map(value), Some(1));
        ring.drained(1, 1);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(ring.pop().map(value), Some(2));
    }
}
