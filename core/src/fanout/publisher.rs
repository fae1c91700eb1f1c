//! The fan-out queue and the task that empties it into Redis.
//!
//! Batchers (publish point `Sealed`) or writers (`Committed`) hand each batch's records,
//! with their per-symbol sequences, to a bounded lock-free queue and never wait: when the
//! queue is full (in batches or in ticks) the oldest batches are dropped and counted. One task per ingestor pops
//! batches, groups them by symbol and sends each group as one message per key, pipelined.
//! When Redis fails it reconnects with backoff, and resumes with the batch it held; the
//! queue meanwhile keeps the newest batches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use tokio::sync::Notify;

use super::snapshot::FanoutSnapshot;
use crate::fanout::config::FanoutConfig;
use crate::fanout::wire::{self, TickMessage};
use crate::metrics;
use crate::record::Record;
use crate::redis::connection::{self, RedisConn};
use crate::redis::target::RedisTarget;
use crate::symbol::Symbol;

/// One shard batch's records and the fan-out sequence of each (per symbol, from 1).
#[derive(Debug)]
pub(crate) struct FanoutBatch<R> {
    pub ticks: Vec<(R, u64)>,
}

/// Counters of the fan-out; each has one writer (noted) so none is contended per tick.
#[derive(Debug, Default)]
pub(crate) struct FanoutCounters {
    /// Ticks handed to the queue (batchers / writers).
    pub enqueued: AtomicU64,
    /// Ticks dropped because the queue was full (batchers / writers).
    pub dropped: AtomicU64,
    /// Ticks not published because the spool spilled their batch to disk (spool stages).
    pub spilled: AtomicU64,
    /// Ticks published (publisher).
    pub published: AtomicU64,
    /// Messages (symbol groups) published (publisher).
    pub messages: AtomicU64,
    /// Failed publish or connect attempts (publisher).
    pub errors: AtomicU64,
    /// Connections made (publisher).
    pub connects: AtomicU64,
}

/// The bounded queue between the pipeline and the publisher.
#[derive(Debug)]
pub(crate) struct FanoutQueue<R> {
    queue: ArrayQueue<FanoutBatch<R>>,
    /// Ticks in the queued batches (added before a batch goes in, taken off after it comes
    /// out, so it never goes below zero), and the most kept beyond the newest batch.
    ticks: AtomicU64,
    max_ticks: u64,
    wake: Notify,
    pub counters: FanoutCounters,
    connected: AtomicBool,
    /// Set once the pipeline has stopped producing: drain, then exit.
    finishing: AtomicBool,
    /// When the last "dropping" warning was logged (seconds since `born`), to log at most
    /// one a second.
    last_warning: AtomicU64,
    born: Instant,
}

impl<R: Record> FanoutQueue<R> {
    pub fn new(batches: usize, ticks: usize) -> Self {
        FanoutQueue {
            queue: ArrayQueue::new(batches),
            ticks: AtomicU64::new(0),
            max_ticks: ticks as u64,
            wake: Notify::new(),
            counters: FanoutCounters::default(),
            connected: AtomicBool::new(false),
            finishing: AtomicBool::new(false),
            last_warning: AtomicU64::new(u64::MAX),
            born: Instant::now(),
        }
    }

    /// Enqueues without waiting; drops (and counts) the oldest batches while the queue is
    /// over either bound (the newest batch always stays).
    pub fn push(&self, batch: FanoutBatch<R>) {
        if batch.ticks.is_empty() {
            return;
        }
        let n = batch.ticks.len() as u64;
        metrics::add(&self.counters.enqueued, n);
        self.ticks.fetch_add(n, Ordering::Relaxed);
        let mut lost = self
            .queue
            .force_push(batch)
            .map_or(0, |old| self.forget(old.ticks.len() as u64));
        while self.ticks.load(Ordering::Relaxed) > self.max_ticks && self.queue.len() > 1 {
            match self.pop() {
                Some(old) => lost += old.ticks.len() as u64,
                None => break,
            }
        }
        if lost > 0 {
            metrics::add(&self.counters.dropped, lost);
            self.warn_dropping();
        }
        self.wake.notify_one();
    }

    /// Takes the oldest batch out.
    fn pop(&self) -> Option<FanoutBatch<R>> {
        let batch = self.queue.pop()?;
        self.forget(batch.ticks.len() as u64);
        Some(batch)
    }

    /// Takes `n` ticks that left the queue off its count; returns `n`.
    fn forget(&self, n: u64) -> u64 {
        self.ticks.fetch_sub(n, Ordering::Relaxed);
        n
    }

    /// At least half of either bound is used: the publisher does not wait out its round
    /// interval, so waiting never costs drops.
    fn half_full(&self) -> bool {
        self.queue.len() * 2 >= self.queue.capacity()
            || self.ticks.load(Ordering::Relaxed) * 2 >= self.max_ticks
    }

    fn warn_dropping(&self) {
        let now = self.born.elapsed().as_secs();
        let last = self.last_warning.load(Ordering::Relaxed);
        if (last == u64::MAX || now > last)
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped_total = metrics::load(&self.counters.dropped),
                connected = self.connected.load(Ordering::Relaxed),
                "fan-out queue full: dropping the oldest batches (Redis slow or down)"
            );
        }
    }

    /// Tells the publisher no more batches come; it drains the queue and exits.
    pub fn finish(&self) {
        self.finishing.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub fn snapshot(&self) -> FanoutSnapshot {
        let c = &self.counters;
        FanoutSnapshot {
            enqueued: metrics::load(&c.enqueued),
            dropped: metrics::load(&c.dropped),
            spilled: metrics::load(&c.spilled),
            published: metrics::load(&c.published),
            messages: metrics::load(&c.messages),
            errors: metrics::load(&c.errors),
            connects: metrics::load(&c.connects),
            queue_depth: self.queue.len() as u64,
            connected: self.connected.load(Ordering::Relaxed),
        }
    }
}

/// Assigns per-symbol fan-out sequences; owned by one shard's batcher (symbols never
/// change shard, so each symbol's sequence lives in exactly one place).
#[derive(Debug, Default)]
pub(crate) struct SymbolSequences {
    next: HashMap<Symbol, u64>,
}

impl SymbolSequences {
    #[inline]
    pub fn next(&mut self, symbol: Symbol) -> u64 {
        let n = self.next.entry(symbol).or_insert(0);
        *n += 1;
        *n
    }
}

/// Runs the publisher until the queue is finished and drained (or `drain_timeout` after
/// finishing, if Redis is unreachable).
pub(crate) async fn run<R: Record>(
    queue: Arc<FanoutQueue<R>>,
    target: RedisTarget,
    config: FanoutConfig,
    source: Arc<str>,
) {
    let mut conn: Option<RedisConn> = None;
    let mut held: Option<FanoutBatch<R>> = None;
    let mut backoff = config.reconnect_min;
    let mut finish_deadline: Option<Instant> = None;
    let mut groups = Groups::default();
    let mut last_round: Option<Instant> = None;
    loop {
        if finish_deadline.is_none() && queue.finishing.load(Ordering::SeqCst) {
            finish_deadline = Some(Instant::now() + config.drain_timeout);
        }
        if finish_deadline.is_some_and(|d| Instant::now() >= d) {
            let mut lost = held.take().map_or(0, |b| b.ticks.len() as u64);
            while let Some(b) = queue.pop() {
                lost += b.ticks.len() as u64;
            }
            if lost > 0 {
                metrics::add(&queue.counters.dropped, lost);
                tracing::warn!(
                    ticks = lost,
                    "fan-out: Redis unreachable at shutdown; ticks not published"
                );
            }
            return;
        }
        let mut batch = match held.take().or_else(|| queue.pop()) {
            Some(b) => b,
            None if finish_deadline.is_some() => return,
            None => {
                let _ =
                    tokio::time::timeout(Duration::from_millis(100), queue.wake.notified()).await;
                continue;
            }
        };
        // A round starts at most once per `round_interval`: the batches that queue up
        // meanwhile go out with this one. Not past a half-full queue (waiting must not
        // cost drops), nor while finishing.
        if let Some(due) = last_round.map(|t| t + config.round_interval) {
            while !queue.finishing.load(Ordering::SeqCst) && !queue.half_full() {
                let Some(left) = due.checked_duration_since(Instant::now()) else {
                    break;
                };
                let _ = tokio::time::timeout(left, queue.wake.notified()).await;
            }
        }
        last_round = Some(Instant::now());
        // Whatever queued up while the last round trip was in flight goes out with this
        // one: under load messages grow instead of multiplying (group publish).
        while batch.ticks.len() < MERGE_TICKS {
            match queue.pop() {
                Some(more) => batch.ticks.extend(more.ticks),
                None => break,
            }
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connection::connect(&target).await {
                Ok(c) => {
                    metrics::add(&queue.counters.connects, 1);
                    queue.connected.store(true, Ordering::Relaxed);
                    tracing::info!(target = ?target, "fan-out connected to Redis");
                    backoff = config.reconnect_min;
                    conn.insert(c)
                }
                Err(e) => {
                    metrics::add(&queue.counters.errors, 1);
                    queue.connected.store(false, Ordering::Relaxed);
                    tracing::debug!(error = %e, backoff_ms = backoff.as_millis() as u64, "fan-out connect failed");
                    held = Some(batch);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(config.reconnect_max);
                    continue;
                }
            },
        };
        match publish(c, &mut groups, &batch, &config, &source).await {
            Ok(messages) => {
                metrics::add(&queue.counters.published, batch.ticks.len() as u64);
                metrics::add(&queue.counters.messages, messages);
            }
            Err(e) => {
                // Sent again after reconnecting: some of its messages may arrive twice, and
                // consumers drop repeats by sequence.
                metrics::add(&queue.counters.errors, 1);
                queue.connected.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "fan-out publish failed; reconnecting");
                conn = None;
                held = Some(batch);
            }
        }
    }
}

/// Ticks the publisher gathers from the queue into one round trip.
const MERGE_TICKS: usize = 1 << 16;

/// The most ticks in one message. A round merges everything queued since the last one, so
/// without a bound one busy symbol's message grew with the rate (51,000 trades, about 5 MB
/// of JSON, in a test pushing batches of 1,000 back to back): larger than a stream client's
/// byte bound (`stream.client_buffer_bytes`), which then dropped a client that kept up.
/// A symbol's ticks past it go on in the next message, its sequences following on.
const MESSAGE_TICKS: usize = 1_024;

/// Reused per round trip: symbol → (its open group, the sequence that group expects next),
/// and the groups' record indexes. A group is one message, so its sequences must be
/// contiguous: a symbol whose next tick does not follow (a dropped batch between two
/// merged ones) starts a new group, and so does one whose group holds [`MESSAGE_TICKS`].
#[derive(Default)]
struct Groups {
    index: HashMap<Symbol, (usize, u64)>,
    members: Vec<(Symbol, Vec<usize>)>,
    trims: AgeTrims,
}

/// Per symbol: when its stream was last trimmed by age and its keys' expiry last set.
#[derive(Default)]
struct AgeTrims {
    symbols: HashMap<Symbol, Upkeep>,
    /// When symbols not seen for a while were last forgotten.
    pruned: Option<Instant>,
}

#[derive(Clone, Copy)]
struct Upkeep {
    trimmed: Option<Instant>,
    expiry_set: Option<Instant>,
}

/// How often a symbol's stream is trimmed by age.
const AGE_TRIM_EVERY: Duration = Duration::from_secs(1);
/// How often symbols not seen for a while are forgotten here (their keys expire in Redis).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl AgeTrims {
    fn upkeep(&mut self, symbol: Symbol) -> &mut Upkeep {
        self.symbols.entry(symbol).or_insert(Upkeep {
            trimmed: None,
            expiry_set: None,
        })
    }

    /// The stream id below which `symbol`'s entries go (`MINID`), when its age trim is due:
    /// now − `max_age`, in Redis's `ms-seq` form.
    fn cut(&mut self, symbol: Symbol, max_age: Duration) -> Option<String> {
        if max_age.is_zero() {
            return None;
        }
        let now = Instant::now();
        let upkeep = self.upkeep(symbol);
        if upkeep
            .trimmed
            .is_some_and(|last| now.duration_since(last) < AGE_TRIM_EVERY)
        {
            return None;
        }
        upkeep.trimmed = Some(now);
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let cut = since_epoch.saturating_sub(max_age).as_millis();
        Some(format!("{cut}-0"))
    }

    /// Whether `symbol`'s keys need their expiry (`ttl`) set again: on its first message,
    /// then at most every quarter of `ttl`.
    fn expiry_due(&mut self, symbol: Symbol, ttl: Duration) -> bool {
        if ttl.is_zero() {
            return false;
        }
        let now = Instant::now();
        let upkeep = self.upkeep(symbol);
        if upkeep
            .expiry_set
            .is_some_and(|last| now.duration_since(last) < ttl / 4)
        {
            return false;
        }
        upkeep.expiry_set = Some(now);
        true
    }

    /// Forgets, at most once a minute, the symbols without a message for `idle`: the
    /// map would otherwise grow with every symbol ever published.
    fn prune(&mut self, idle: Duration) {
        let now = Instant::now();
        if self
            .pruned
            .is_some_and(|last| now.duration_since(last) < PRUNE_EVERY)
        {
            return;
        }
        self.pruned = Some(now);
        let idle = idle.max(PRUNE_EVERY);
        self.symbols.retain(|_, u| {
            let last = u.trimmed.max(u.expiry_set);
            last.is_some_and(|t| now.duration_since(t) < idle)
        });
    }
}

impl Groups {
    fn fill<R: Record>(&mut self, ticks: &[(R, u64)]) {
        self.index.clear();
        for (_, m) in self.members.iter_mut() {
            m.clear();
        }
        let mut used = 0;
        for (i, (r, seq)) in ticks.iter().enumerate() {
            let sym = *r.symbol();
            let g = match self.index.get_mut(&sym) {
                Some((g, next)) if *next == *seq && self.members[*g].1.len() < MESSAGE_TICKS => {
                    *next += 1;
                    *g
                }
                _ => {
                    if used == self.members.len() {
                        self.members.push((sym, Vec::new()));
                    }
                    self.members[used].0 = sym;
                    self.index.insert(sym, (used, seq + 1));
                    used += 1;
                    used - 1
                }
            };
            self.members[g].1.push(i);
        }
        self.members.truncate(used);
    }
}

async fn publish<R: Record>(
    conn: &mut RedisConn,
    groups: &mut Groups,
    batch: &FanoutBatch<R>,
    config: &FanoutConfig,
    source: &str,
) -> crate::error::Result<u64> {
    groups.fill(&batch.ticks);
    groups
        .trims
        .prune(config.key_ttl.max(config.stream_max_age));
    let publish_cmd = if conn.is_cluster() {
        "SPUBLISH"
    } else {
        "PUBLISH"
    };
    let mut pipes = Vec::with_capacity(if conn.is_cluster() {
        groups.members.len()
    } else {
        1
    });
    let mut pipe = redis::pipe();
    let Groups {
        members: all,
        trims,
        ..
    } = groups;
    for (symbol, members) in all.iter() {
        let first = &batch.ticks[members[0]];
        let mut message = TickMessage {
            source: source.to_string(),
            symbol: symbol.as_str().to_string(),
            kind: R::TICK_KIND,
            first_seq: first.1,
            trades: Vec::new(),
            quotes: Vec::new(),
        };
        for &i in members {
            batch.ticks[i].0.push_to_message(&mut message);
        }
        let payload = message.encode(config.format)?;
        let sym = symbol.as_str();
        pipe.cmd(publish_cmd)
            .arg(wire::channel(sym))
            .arg(&payload)
            .ignore();
        if config.stream_max_len > 0 {
            let xadd = pipe.cmd("XADD").arg(wire::stream_key(sym));
            // One trim per XADD: the age bound once a second, the length bound otherwise.
            match trims.cut(*symbol, config.stream_max_age) {
                // Exact: it runs once a second, and a cut inside a node is cheap then.
                Some(min_id) => xadd.arg("MINID").arg(min_id),
                None => xadd.arg("MAXLEN").arg("~").arg(config.stream_max_len),
            }
            .arg("*")
            .arg(wire::STREAM_FIELD)
            .arg(&payload)
            .ignore();
        }
        let (last, seq) = &batch.ticks[*members.last().unwrap_or(&0)];
        pipe.cmd("HSET")
            .arg(wire::latest_key(sym))
            .arg(last.latest_fields(*seq))
            .ignore();
        if trims.expiry_due(*symbol, config.key_ttl) {
            let ms = config.key_ttl.as_millis() as u64;
            if config.stream_max_len > 0 {
                pipe.cmd("PEXPIRE")
                    .arg(wire::stream_key(sym))
                    .arg(ms)
                    .ignore();
            }
            pipe.cmd("PEXPIRE")
                .arg(wire::latest_key(sym))
                .arg(ms)
                .ignore();
        }
        if conn.is_cluster() {
            // A cluster pipeline must stay on one slot: one per symbol, sent concurrently.
            pipes.push(std::mem::replace(&mut pipe, redis::pipe()));
        }
    }
    if !conn.is_cluster() {
        pipes.push(pipe);
    }
    let sends = pipes.iter().map(|p| {
        let mut c = conn.clone();
        async move { c.run(p).await }
    });
    for r in futures_util::future::join_all(sends).await {
        r?;
    }
    Ok(groups.members.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Side, Trade};

    fn t(sym: &str) -> Trade {
        Trade {
            time_ns: 0,
            symbol: Symbol::new(sym).unwrap(),
            price: 1.0,
            volume: 1.0,
            side: Side::None,
            exchange_seq: 0,
        }
    }

    /// A trade of each symbol, with its fan-out sequence.
    fn trades(symbols_and_seqs: &[(&str, u64)]) -> Vec<(Trade, u64)> {
        symbols_and_seqs
            .iter()
            .map(|(s, seq)| (t(s), *seq))
            .collect()
    }

    /// Fills `g` from `ticks`; each message's symbol and the indices of its ticks.
    fn fill_and_list(g: &mut Groups, ticks: &[(Trade, u64)]) -> Vec<(String, Vec<usize>)> {
        g.fill(ticks);
        g.members
            .iter()
            .map(|(s, m)| (s.as_str().to_string(), m.clone()))
            .collect()
    }

    #[test]
    fn groups_keep_push_order_and_are_reused() {
        let mut g = Groups::default();
        let ticks = trades(&[("A", 1), ("B", 1), ("A", 2), ("C", 1), ("B", 2), ("A", 3)]);
        assert_eq!(
            fill_and_list(&mut g, &ticks),
            vec![
                ("A".to_string(), vec![0, 2, 5]),
                ("B".to_string(), vec![1, 4]),
                ("C".to_string(), vec![3]),
            ]
        );
        g.fill(&ticks[3..4]);
        assert_eq!(g.members.len(), 1);
        assert_eq!(g.members[0].1, vec![0]);
    }

    #[test]
    fn a_sequence_gap_starts_a_new_message() {
        // A's seq 3-4 were in a dropped batch between two merged ones.
        let ticks = trades(&[("A", 1), ("A", 2), ("B", 7), ("A", 5), ("A", 6)]);
        assert_eq!(
            fill_and_list(&mut Groups::default(), &ticks),
            vec![
                ("A".to_string(), vec![0, 1]),
                ("B".to_string(), vec![2]),
                ("A".to_string(), vec![3, 4]),
            ]
        );
    }

    #[test]
    fn a_busy_symbol_s_round_is_split_into_bounded_messages() {
        let n = MESSAGE_TICKS * 2 + 5;
        let ticks: Vec<(Trade, u64)> = (0..n as u64).map(|i| (t("A"), i + 1)).collect();
        let groups = fill_and_list(&mut Groups::default(), &ticks);
        let sizes: Vec<usize> = groups.iter().map(|(_, m)| m.len()).collect();
        assert_eq!(sizes, [MESSAGE_TICKS, MESSAGE_TICKS, 5]);
        // In order, every tick once.
        let all: Vec<usize> = groups.into_iter().flat_map(|(_, m)| m).collect();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
    }

    fn batch(n: u64) -> FanoutBatch<Trade> {
        FanoutBatch {
            ticks: (0..n).map(|i| (t("A"), i)).collect(),
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let q = FanoutQueue::<Trade>::new(2, 1 << 20);
        for n in [3, 4, 5] {
            q.push(batch(n));
        }
        let s = q.snapshot();
        assert_eq!((s.enqueued, s.dropped, s.queue_depth), (12, 3, 2));
        assert_eq!(q.ticks.load(Ordering::Relaxed), 9);
        assert_eq!(q.pop().unwrap().ticks.len(), 4);
        assert_eq!(q.ticks.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn past_its_ticks_the_queue_drops_the_oldest_batches_but_keeps_the_newest() {
        let q = FanoutQueue::<Trade>::new(100, 10);
        for n in [4, 4] {
            q.push(batch(n));
        }
        assert!(q.half_full());
        // 4 + 4 + 3 = 11 > 10: the first batch goes.
        q.push(batch(3));
        let s = q.snapshot();
        assert_eq!((s.enqueued, s.dropped, s.queue_depth), (11, 4, 2));
        assert_eq!(q.ticks.load(Ordering::Relaxed), 7);
        // One batch larger than the bound alone: every older one goes, it stays.
        q.push(batch(25));
        let s = q.snapshot();
        assert_eq!((s.enqueued, s.dropped, s.queue_depth), (36, 11, 1));
        assert_eq!(q.pop().unwrap().ticks.len(), 25);
        assert_eq!(q.ticks.load(Ordering::Relaxed), 0);
        assert!(q.pop().is_none());
    }

    #[test]
    fn half_of_either_bound_is_half_full() {
        let by_ticks = FanoutQueue::<Trade>::new(100, 10);
        by_ticks.push(batch(4));
        assert!(!by_ticks.half_full());
        by_ticks.push(batch(1));
        assert!(by_ticks.half_full());
        let by_batches = FanoutQueue::<Trade>::new(4, 1 << 20);
        by_batches.push(batch(1));
        assert!(!by_batches.half_full());
        by_batches.push(batch(1));
        assert!(by_batches.half_full());
    }

    #[test]
    fn sequences_count_per_symbol() {
        let mut s = SymbolSequences::default();
        let (a, b) = (Symbol::new("A").unwrap(), Symbol::new("B").unwrap());
        assert_eq!(
            [s.next(a), s.next(b), s.next(a), s.next(a), s.next(b)],
            [1, 1, 2, 3, 2]
        );
    }
}
