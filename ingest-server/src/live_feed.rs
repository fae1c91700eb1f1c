//! [`LiveFeed`]: the daemon's one Redis subscription, relayed to every `GET /api/stream`
//! client through a bounded buffer each.
//!
//! However many clients watch, Redis sees one subscriber connection per daemon (a
//! [`LiveSet`]): a symbol is subscribed when its first client arrives and unsubscribed when
//! its last leaves. Each message is encoded once ([`Frame`]) and shared by every client of
//! its symbol (each copies the bytes into its next write, beside its own event id). A client whose buffer is full is marked dropped (its feed tells it why and
//! ends) instead of being waited for: one slow reader never delays the others, and the
//! engine never waits for the feed at all (it only publishes to Redis).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use christmas_core::fanout::{LiveSet, PayloadFormat, TickMessage};
use christmas_core::Symbol;
use tokio::sync::{mpsc, Notify};

/// One fan-out message as every client gets it.
#[derive(Debug)]
pub struct Frame {
    /// The message (kept for the rare client that needs only part of it).
    pub message: TickMessage,
    /// Its symbol.
    pub symbol: Symbol,
    /// The SSE `data:` line's content: the message as JSON, encoded once.
    pub json: Bytes,
    /// A hash of `message.source`, to tell an engine restart from a gap cheaply.
    pub source: u64,
}

/// What ended a client's feed, when something other than the client did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Still running.
    Open = 0,
    /// Its buffer filled: it read more slowly than the market moved.
    Slow = 1,
    /// The daemon is shutting down.
    Closing = 2,
}

/// A client as the dispatcher sees it.
#[derive(Debug)]
pub struct Client {
    tx: mpsc::Sender<Arc<Frame>>,
    /// Bytes of JSON waiting in `tx` (added by the dispatcher, taken off by the feed).
    queued: AtomicUsize,
    ending: AtomicU8,
    /// Woken when `ending` is set.
    pub woken: Notify,
}

impl Client {
    /// Why the feed must end now, if it must.
    pub fn ending(&self) -> Ending {
        match self.ending.load(Ordering::Acquire) {
            1 => Ending::Slow,
            2 => Ending::Closing,
            _ => Ending::Open,
        }
    }

    /// Called by the feed for each frame it takes from its buffer.
    pub fn taken(&self, frame: &Frame) {
        self.queued.fetch_sub(frame.json.len(), Ordering::Relaxed);
    }

    fn end(&self, why: Ending) {
        if self
            .ending
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.woken.notify_one();
        }
    }
}

/// Counters of the feed, for `/metrics`.
#[derive(Debug, Default)]
pub struct FeedCounters {
    /// Clients connected now.
    pub clients: AtomicU64,
    /// Clients dropped for reading too slowly.
    pub dropped_slow: AtomicU64,
    /// Messages received from Redis.
    pub messages: AtomicU64,
    /// Frames handed to client buffers.
    pub delivered: AtomicU64,
}

/// The shared subscription and its clients. Start it with [`LiveFeed::start`].
#[derive(Debug)]
pub struct LiveFeed {
    live: LiveSet,
    clients: Mutex<HashMap<Symbol, Vec<Arc<Client>>>>,
    /// Frames each client's buffer holds before the client is dropped.
    pub buffer: usize,
    /// Bytes each client's buffer holds before the client is dropped (a message may carry
    /// thousands of ticks, so a count alone bounds memory loosely).
    pub buffer_bytes: usize,
    closing: AtomicBool,
    /// Counters.
    pub counters: FeedCounters,
}

/// A client's place in the feed; dropping it leaves (and unsubscribes symbols nobody
/// else watches).
#[derive(Debug)]
pub struct Registration {
    feed: Arc<LiveFeed>,
    /// The client, for its ending.
    pub client: Arc<Client>,
    symbols: Vec<Symbol>,
}

/// Why a client could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The daemon is shutting down.
    #[error("shutting down")]
    Closing,
    /// Redis refused or could not be reached.
    #[error("subscribing: {0}")]
    Redis(#[from] christmas_core::Error),
}

impl LiveFeed {
    /// Subscribes through the Redis at `url` (payloads in `format`); each client's buffer
    /// holds `buffer` frames and `buffer_bytes` bytes of JSON.
    pub fn start(
        url: &str,
        format: PayloadFormat,
        buffer: usize,
        buffer_bytes: usize,
    ) -> christmas_core::Result<Arc<LiveFeed>> {
        // Enough to ride out a burst while the dispatcher is busy; beyond, Redis buffers.
        let (tx, rx) = mpsc::channel(4_096);
        let feed = Arc::new(LiveFeed {
            live: LiveSet::start(url, format, tx)?,
            clients: Mutex::default(),
            buffer: buffer.max(1),
            buffer_bytes: buffer_bytes.max(1),
            closing: AtomicBool::new(false),
            counters: FeedCounters::default(),
        });
        tokio::spawn(dispatch(Arc::downgrade(&feed), rx));
        Ok(feed)
    }

    /// Joins `symbols`; returns once Redis confirmed every new subscription. The receiver
    /// gets the frames of those symbols from now on.
    pub async fn join(
        self: &Arc<Self>,
        symbols: &[Symbol],
    ) -> Result<(Registration, mpsc::Receiver<Arc<Frame>>), JoinError> {
        if self.closing.load(Ordering::Acquire) {
            return Err(JoinError::Closing);
        }
        let (tx, rx) = mpsc::channel(self.buffer);
        let client = Arc::new(Client {
            tx,
            queued: AtomicUsize::new(0),
            ending: AtomicU8::new(0),
            woken: Notify::new(),
        });
        let mut confirmations = Vec::new();
        {
            let mut map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            for s in symbols {
                let list = map.entry(*s).or_default();
                if list.is_empty() {
                    // Queued under the lock, so it is ordered with the `remove` of the
                    // last client to leave.
                    confirmations.push(self.live.add(*s));
                }
                list.push(client.clone());
            }
        }
        self.counters.clients.fetch_add(1, Ordering::Relaxed);
        let registration = Registration {
            feed: self.clone(),
            client,
            symbols: symbols.to_vec(),
        };
        for c in confirmations {
            c.await?;
        }
        Ok((registration, rx))
    }

    /// Ends every client's feed (they are told the daemon is shutting down) and refuses
    /// new ones, so a graceful shutdown does not wait on open streams.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        let map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        for c in map.values().flatten() {
            c.end(Ending::Closing);
        }
    }

    /// Hands `frame` to every client of its symbol without waiting; a client whose buffer
    /// is full is dropped.
    fn deliver(&self, frame: Frame) {
        let frame = Arc::new(frame);
        let map = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let Some(list) = map.get(&frame.symbol) else {
            return;
        };
        let mut delivered = 0;
        for c in list {
            if c.ending() != Ending::Open {
                continue;
            }
            let len = frame.json.len();
            if c.queued.load(Ordering::Relaxed) + len > self.buffer_bytes {
                self.counters.dropped_slow.fetch_add(1, Ordering::Relaxed);
                c.end(Ending::Slow);
                continue;
            }
            match c.tx.try_send(frame.clone()) {
                Ok(()) => {
                    c.queued.fetch_add(len, Ordering::Relaxed);
                    delivered += 1;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.counters.dropped_slow.fetch_add(1, Ordering::Relaxed);
                    c.end(Ending::Slow);
                }
                // Its feed ended; its registration removes it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        self.counters
            .delivered
            .fetch_add(delivered, Ordering::Relaxed);
    }

    /// Up to `count` retained messages of `symbol` older than stream id `before`, newest
    /// first (see [`LiveSet::retained_before`]).
    pub async fn retained_before(
        &self,
        symbol: Symbol,
        before: &str,
        count: usize,
    ) -> christmas_core::Result<Vec<(String, TickMessage)>> {
        self.live.retained_before(symbol, before, count).await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.feed.clients.lock().unwrap_or_else(|e| e.into_inner());
        for s in &self.symbols {
            if let Some(list) = map.get_mut(s) {
                list.retain(|c| !Arc::ptr_eq(c, &self.client));
                if list.is_empty() {
                    map.remove(s);
                    self.feed.live.remove(*s);
                }
            }
        }
        self.feed.counters.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stable 64-bit hash of an engine run's name (FNV-1a).
pub fn source_hash(source: &str) -> u64 {
    source.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Encodes each message from Redis once and hands it to its symbol's clients; ends when
/// the feed is dropped.
async fn dispatch(feed: std::sync::Weak<LiveFeed>, mut rx: mpsc::Receiver<TickMessage>) {
    while let Some(message) = rx.recv().await {
        let Some(feed) = feed.upgrade() else { return };
        feed.counters.messages.fetch_add(1, Ordering::Relaxed);
        let Ok(symbol) = Symbol::new(&message.symbol) else {
            continue;
        };
        let json = match serde_json::to_vec(&message) {
            Ok(j) => Bytes::from(j),
            Err(e) => {
                tracing::warn!(error = %e, "live feed: a message that does not encode");
                continue;
            }
        };
        let source = source_hash(&message.source);
        feed.deliver(Frame {
            message,
            symbol,
            json,
            source,
        });
    }
}
