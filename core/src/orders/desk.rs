//! [`OrderDesk`]: group-committed, idempotent order submission; reads; cancels; and the
//! `order.accepted` events (with an outbox sweep, so an event Redis missed is sent later).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use tokio::sync::{mpsc, oneshot, Mutex as AsyncMutex, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::error::RedisErrorKind;
use crate::orders::{NewOrder, Order, OrderStatus, ORDER_COLUMNS};
use crate::pg;
use crate::query::MarketDataReader;
use crate::redis::connection::{self, RedisConn};
use crate::redis::target::RedisTarget;
use crate::{Error, Result};

/// How an [`OrderDesk`] runs.
#[derive(Clone, PartialEq, Eq)]
pub struct OrderDeskConfig {
    /// The primary, where orders are written.
    pub database_url: String,
    /// Where reads go (a replica); default: the primary.
    pub read_database_url: Option<String>,
    /// Redis for `order.accepted` events; `None`: no events.
    pub redis_url: Option<String>,
    /// The events stream (default `orders:events`).
    pub events_stream: String,
    /// Writer connections, each committing one group at a time (default 2).
    pub connections: usize,
    /// Most orders in one group (default 1,024).
    pub max_group: usize,
    /// Submissions queued before `submit` waits (default 65,536).
    pub queue: usize,
    /// Reads go to the primary while the replica lags more than this (default 5 s).
    pub max_replica_lag: Duration,
    /// How often the events stream is trimmed of the events every consumer group has
    /// acknowledged (default 10 s).
    pub events_trim_every: Duration,
    /// An order still `accepted` this long after its event reached Redis is announced
    /// again, once (default 60 s; zero turns the re-check off). Redis can lose events it
    /// took: a restart without an fsynced append-only file, or a failover to a replica the
    /// last writes had not reached. The re-check waits while the workers have not been
    /// given and acknowledged every event older than half this (a backlog, or events in a
    /// worker's hands, not a loss) and while their consumer group is gone; before any group
    /// ever existed it keeps nothing. Each desk holds the ids it announced and has not
    /// re-checked yet: 8 bytes each, at most 32 MiB (beyond, the oldest go unchecked).
    pub events_recheck_after: Duration,
}

impl std::fmt::Debug for OrderDeskConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderDeskConfig")
            .field("events_stream", &self.events_stream)
            .field("connections", &self.connections)
            .field("max_group", &self.max_group)
            .field("queue", &self.queue)
            .field("events_trim_every", &self.events_trim_every)
            .field("events_recheck_after", &self.events_recheck_after)
            .finish()
    }
}

impl OrderDeskConfig {
    /// Orders in the database at `url`, with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        OrderDeskConfig {
            database_url: url.into(),
            read_database_url: None,
            redis_url: None,
            events_stream: "orders:events".into(),
            connections: 2,
            max_group: 1_024,
            queue: 65_536,
            max_replica_lag: Duration::from_secs(5),
            events_trim_every: Duration::from_secs(10),
            events_recheck_after: Duration::from_secs(60),
        }
    }
}

/// What a submission came to.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitOutcome {
    /// Stored now (HTTP 201).
    Created(Order),
    /// This account already had this `client_order_id` with the same body: the original
    /// (HTTP 200).
    Existing(Order),
    /// This account already had this `client_order_id` with another body (HTTP 409).
    Conflict(Order),
}

/// What a cancel came to.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// Cancelled now.
    Cancelled(Order),
    /// Already filled, rejected or cancelled: unchanged (HTTP 409).
    Final(Order),
    /// No such order for this account.
    NotFound,
}

/// Which orders [`OrderDesk::list`] returns (newest first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderFilter {
    /// Only this status.
    pub status: Option<OrderStatus>,
    /// Only this symbol.
    pub symbol: Option<String>,
    /// At most this many (default 100).
    pub limit: usize,
}

struct Pending {
    order: NewOrder,
    hash: String,
    reply: oneshot::Sender<Result<SubmitOutcome>>,
    queued_at: Instant,
}

/// The submissions' queue, shared by the writers.
struct Intake {
    /// Taken by one writer at a time, to gather a group.
    rx: AsyncMutex<mpsc::Receiver<Pending>>,
    /// Writers writing a group now.
    busy: AtomicUsize,
    /// Signalled when a writer finishes a group.
    idle: Notify,
}

/// What an [`OrderDesk`] has done since it started ([`OrderDesk::metrics`]).
#[derive(Debug, Clone)]
pub struct OrderDeskSnapshot {
    /// New orders stored (HTTP 201).
    pub created: u64,
    /// Repeats answered with the original (HTTP 200).
    pub existing: u64,
    /// Repeats with another body (HTTP 409).
    pub conflicts: u64,
    /// Submissions answered with an error.
    pub failed: u64,
    /// Groups committed.
    pub groups: u64,
    /// Group writes retried after a lost connection.
    pub retries: u64,
    /// Groups written a second time, with `ON CONFLICT`, because their plain `INSERT` met
    /// a key already stored (a client's repeat): see the [module](crate::orders) docs.
    pub rewritten: u64,
    /// Submissions waiting for a writer now.
    pub queued: u64,
    /// `order.accepted` events added to the Redis stream.
    pub events_published: u64,
    /// Event rounds Redis or the outbox refused (the outbox keeps their events).
    pub event_failures: u64,
    /// Events trimmed from the stream once every consumer group had acknowledged them.
    pub events_trimmed: u64,
    /// Events announced again: their orders were still `accepted` long after Redis took
    /// the first announcement (see [`OrderDeskConfig::events_recheck_after`]).
    pub events_reannounced: u64,
    /// Writing and committing one group, microseconds.
    pub group_commit_us: Histogram<u64>,
    /// Orders per group.
    pub group_orders: Histogram<u64>,
    /// Submission to answer, microseconds: the wait for a writer plus the group's commit.
    pub submit_us: Histogram<u64>,
}

/// The writers' and publisher's counters, shared with [`OrderDesk::metrics`].
#[derive(Debug)]
struct DeskStats {
    created: AtomicU64,
    existing: AtomicU64,
    conflicts: AtomicU64,
    failed: AtomicU64,
    groups: AtomicU64,
    retries: AtomicU64,
    rewritten: AtomicU64,
    events_published: AtomicU64,
    event_failures: AtomicU64,
    events_trimmed: AtomicU64,
    events_reannounced: AtomicU64,
    /// Commit time, group size, submit time.
    histograms: std::sync::Mutex<[Histogram<u64>; 3]>,
}

impl DeskStats {
    fn new() -> DeskStats {
        let h = || {
            let mut h = Histogram::new(3).expect("3 significant figures is valid");
            h.auto(true);
            h
        };
        DeskStats {
            created: AtomicU64::new(0),
            existing: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            rewritten: AtomicU64::new(0),
            events_published: AtomicU64::new(0),
            event_failures: AtomicU64::new(0),
            events_trimmed: AtomicU64::new(0),
            events_reannounced: AtomicU64::new(0),
            histograms: std::sync::Mutex::new([h(), h(), h()]),
        }
    }

    /// Counts one answered group.
    fn record(&self, group: &[Pending], outcomes: &[Result<SubmitOutcome>], commit: Duration) {
        let (mut created, mut existing, mut conflicts, mut failed) = (0, 0, 0, 0);
        for o in outcomes {
            match o {
                Ok(SubmitOutcome::Created(_)) => created += 1,
                Ok(SubmitOutcome::Existing(_)) => existing += 1,
                Ok(SubmitOutcome::Conflict(_)) => conflicts += 1,
                Err(_) => failed += 1,
            }
        }
        self.created.fetch_add(created, Ordering::Relaxed);
        self.existing.fetch_add(existing, Ordering::Relaxed);
        self.conflicts.fetch_add(conflicts, Ordering::Relaxed);
        self.failed.fetch_add(failed, Ordering::Relaxed);
        self.groups.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut h = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        let _ = h[0].record(commit.as_micros() as u64);
        let _ = h[1].record(group.len() as u64);
        for p in group {
            let _ = h[2].record(now.duration_since(p.queued_at).as_micros() as u64);
        }
    }
}

/// Submits, reads and cancels orders. Cheap to share behind an `Arc`.
pub struct OrderDesk {
    /// `None` once shut down.
    tx: std::sync::Mutex<Option<mpsc::Sender<Pending>>>,
    reader: MarketDataReader,
    primary: MarketDataReader,
    writers: std::sync::Mutex<Vec<JoinHandle<()>>>,
    events: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Where the writers and the event publisher run.
    runtime: std::sync::Mutex<Option<tokio::runtime::Runtime>>,
    stats: Arc<DeskStats>,
}

impl Drop for OrderDesk {
    fn drop(&mut self) {
        // Dropped from async code too, where a runtime may not block.
        if let Some(rt) = self
            .runtime
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for OrderDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderDesk").finish_non_exhaustive()
    }
}

async fn connect(url: &str, name: &str) -> Result<Client> {
    pg::connect(&pg::parse_url(url)?, name, "connecting the order desk").await
}

impl OrderDesk {
    /// Connects and starts the writers (and the event publisher when Redis is set).
    pub async fn start(config: OrderDeskConfig) -> Result<OrderDesk> {
        if !(1..=64).contains(&config.connections) {
            return Err(Error::config(
                "orders.connections",
                "must be between 1 and 64",
            ));
        }
        if !(1..=65_536).contains(&config.max_group) {
            return Err(Error::config(
                "orders.max_group",
                "must be between 1 and 65,536",
            ));
        }
        let target = config
            .redis_url
            .as_deref()
            .map(RedisTarget::parse)
            .transpose()?;
        let reader = match &config.read_database_url {
            Some(replica) => {
                MarketDataReader::with_fallback(
                    replica,
                    &config.database_url,
                    config.max_replica_lag,
                )
                .await?
            }
            None => MarketDataReader::connect(&config.database_url).await?,
        };
        let primary = MarketDataReader::connect(&config.database_url).await?;
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let intake = Arc::new(Intake {
            rx: AsyncMutex::new(rx),
            busy: AtomicUsize::new(0),
            idle: Notify::new(),
        });
        // The writers and their connections run on a thread of their own: a commit's reply
        // is read and the group answered at once, not after the HTTP tasks queued before it
        // on a busy runtime. That is most of the tail latency under load.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("christmas-orders")
            .enable_all()
            .build()
            .map_err(|e| Error::Task(format!("starting the order runtime: {e}")))?;
        let stats = Arc::new(DeskStats::new());
        let setup = {
            let config = config.clone();
            let stats = stats.clone();
            async move {
                let (events_tx, events_rx) = mpsc::channel::<OutboxBatch>(1_024);
                let events_tx = target.as_ref().map(|_| events_tx);
                let mut writers = Vec::with_capacity(config.connections);
                for i in 0..config.connections {
                    let client =
                        connect(&config.database_url, &format!("christmas-orders-{i}")).await?;
                    writers.push(tokio::spawn(write_groups(
                        client,
                        config.clone(),
                        i,
                        intake.clone(),
                        events_tx.clone(),
                        stats.clone(),
                    )));
                    // (The outbox is written only when events are on: see write_group.)
                }
                let events = match target {
                    Some(t) => {
                        let db = connect_events(&config.database_url).await?;
                        Some(tokio::spawn(publish_events(
                            t,
                            config.clone(),
                            db,
                            events_rx,
                            stats,
                        )))
                    }
                    None => None,
                };
                Ok::<_, Error>((writers, events))
            }
        };
        let started = runtime
            .spawn(setup)
            .await
            .unwrap_or_else(|e| Err(Error::Task(format!("starting the order writers: {e}"))));
        let (writers, events) = match started {
            Ok(started) => started,
            Err(e) => {
                runtime.shutdown_background();
                return Err(e);
            }
        };
        Ok(OrderDesk {
            tx: std::sync::Mutex::new(Some(tx)),
            reader,
            primary,
            writers: std::sync::Mutex::new(writers),
            events: std::sync::Mutex::new(events),
            runtime: std::sync::Mutex::new(Some(runtime)),
            stats,
        })
    }

    /// Validates `order` and stores it durably (idempotent on account + client_order_id);
    /// resolves once its group has committed.
    pub async fn submit(&self, order: NewOrder) -> Result<SubmitOutcome> {
        order.validate()?;
        let (reply, rx) = oneshot::channel();
        let hash = order.request_hash();
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::Closed)?;
        tx.send(Pending {
            order,
            hash,
            reply,
            queued_at: Instant::now(),
        })
        .await
        .map_err(|_| Error::Closed)?;
        rx.await
            .map_err(|_| Error::Task("order writer stopped".into()))?
    }

    /// The order `id` of `account`, from the read database.
    pub async fn get(&self, account: &str, id: i64) -> Result<Option<Order>> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND account = $2");
        let rows = self
            .reader
            .query(
                "reading an order",
                &sql,
                &[(&id, Type::INT8), (&account, Type::TEXT)],
            )
            .await?;
        rows.first()
            .map(|r| Order::from_row(r).map(|(o, _)| o))
            .transpose()
    }

    /// `account`'s orders, newest first, from the read database.
    pub async fn list(&self, account: &str, filter: &OrderFilter) -> Result<Vec<Order>> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE account = $1 \
             AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR symbol = $3) \
             ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        let status = filter.status.map(|s| s.as_str());
        let limit = if filter.limit == 0 { 100 } else { filter.limit } as i64;
        let rows = self
            .reader
            .query(
                "listing orders",
                &sql,
                &[
                    (&account, Type::TEXT),
                    (&status, Type::TEXT),
                    (&filter.symbol, Type::TEXT),
                    (&limit, Type::INT8),
                ],
            )
            .await?;
        rows.iter()
            .map(|r| Order::from_row(r).map(|(o, _)| o))
            .collect()
    }

    /// Cancels order `id` of `account` unless it is final.
    pub async fn cancel(&self, account: &str, id: i64) -> Result<CancelOutcome> {
        let sql = format!(
            "UPDATE orders SET status = 'cancelled', status_changes = status_changes + 1, \
             updated_at = now() WHERE id = $1 AND account = $2 \
             AND status NOT IN ('filled', 'rejected', 'cancelled') RETURNING {ORDER_COLUMNS}"
        );
        let p: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 2] =
            [(&id, Type::INT8), (&account, Type::TEXT)];
        let rows = self.primary.query("cancelling an order", &sql, &p).await?;
        if let Some(r) = rows.first() {
            return Ok(CancelOutcome::Cancelled(Order::from_row(r)?.0));
        }
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND account = $2");
        let rows = self.primary.query("reading an order", &sql, &p).await?;
        Ok(match rows.first() {
            Some(r) => CancelOutcome::Final(Order::from_row(r)?.0),
            None => CancelOutcome::NotFound,
        })
    }

    /// Counters and latency since the desk started.
    pub fn metrics(&self) -> OrderDeskSnapshot {
        let st = &self.stats;
        let queued = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, |tx| tx.max_capacity() - tx.capacity()) as u64;
        let [group_commit_us, group_orders, submit_us] = st
            .histograms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        OrderDeskSnapshot {
            created: st.created.load(Ordering::Relaxed),
            existing: st.existing.load(Ordering::Relaxed),
            conflicts: st.conflicts.load(Ordering::Relaxed),
            failed: st.failed.load(Ordering::Relaxed),
            groups: st.groups.load(Ordering::Relaxed),
            retries: st.retries.load(Ordering::Relaxed),
            rewritten: st.rewritten.load(Ordering::Relaxed),
            queued,
            events_published: st.events_published.load(Ordering::Relaxed),
            event_failures: st.event_failures.load(Ordering::Relaxed),
            events_trimmed: st.events_trimmed.load(Ordering::Relaxed),
            events_reannounced: st.events_reannounced.load(Ordering::Relaxed),
            group_commit_us,
            group_orders,
            submit_us,
        }
    }

    /// Stops taking orders (later submissions get [`Error::Closed`]), commits the ones
    /// queued and waits for the writers.
    pub async fn shutdown(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let writers = std::mem::take(&mut *self.writers.lock().unwrap_or_else(|e| e.into_inner()));
        for w in writers {
            let _ = w.await;
        }
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(e) = events {
            // The event channel closed with the writers; the publisher drains it.
            let _ = tokio::time::timeout(Duration::from_secs(5), e).await;
        }
    }
}

/// One writer connection: takes every waiting submission (up to `max_group`), commits
/// them in one statement, answers each.
async fn write_groups(
    mut client: Client,
    config: OrderDeskConfig,
    index: usize,
    intake: Arc<Intake>,
    events: Option<mpsc::Sender<OutboxBatch>>,
    stats: Arc<DeskStats>,
) {
    let mut group: Vec<Pending> = Vec::with_capacity(config.max_group);
    // While another writer commits, a group starts only once this many orders wait: tiny
    // groups side by side cost more (a statement and a commit each) than they save, but a
    // writer that waits for the other's fsync leaves the CPU idle. Under wrk -c400 groups
    // run about 140 orders; at a quarter of max_group (256) the second writer almost never
    // started and the machine sat 11 % idle; at 32 it sat 7 % idle and the daemon answered
    // about 4 % more orders (more in 5 of 7 alternating 30 s runs).
    let parallel_min = (config.max_group / 32).max(1);
    // Until then, this writer's groups go in with ON CONFLICT: a plain INSERT met a stored
    // key less than KEYS_CHECKED_FOR ago, so repeats are about.
    let mut check_keys_until: Option<Instant> = None;
    loop {
        {
            let mut rx = intake.rx.lock().await;
            match rx.recv().await {
                Some(p) => group.push(p),
                None => return,
            }
            loop {
                while group.len() < config.max_group {
                    match rx.try_recv() {
                        Ok(p) => group.push(p),
                        Err(_) => break,
                    }
                }
                if group.len() >= parallel_min || intake.busy.load(Ordering::Acquire) == 0 {
                    break;
                }
                let idle = intake.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if intake.busy.load(Ordering::Acquire) == 0 {
                    break;
                }
                tokio::select! {
                    _ = idle => {}
                    p = rx.recv() => match p {
                        Some(p) => group.push(p),
                        None => break,
                    },
                }
            }
            intake.busy.fetch_add(1, Ordering::AcqRel);
        }
        let mut backoff = Duration::from_millis(50);
        let started = Instant::now();
        let mut keys = match check_keys_until {
            Some(t) if started < t => Keys::Checked,
            _ => Keys::New,
        };
        let (outcomes, outbox_groups) = loop {
            if client.is_closed() {
                match connect(&config.database_url, &format!("christmas-orders-{index}")).await {
                    Ok(c) => client = c,
                    Err(e) => {
                        tracing::warn!(error = %e, "order writer reconnect failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            match write_group(&client, &group, events.is_some(), keys).await {
                Ok((o, g)) => break (o, g.into_iter().collect::<Vec<i64>>()),
                // The statement stored nothing; the group goes again, repeats and all.
                Err(e) if keys == Keys::New && e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    stats.rewritten.fetch_add(1, Ordering::Relaxed);
                    keys = Keys::Checked;
                    check_keys_until = Some(Instant::now() + KEYS_CHECKED_FOR);
                }
                // The group is written again after reconnecting: rows that did commit are
                // found by their unique key, so nothing is stored twice.
                Err(e) if pg::is_connection_error(&e) => {
                    keys = Keys::Checked;
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, orders = group.len(), "order group failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if !client.is_closed() {
                        continue;
                    }
                }
                Err(e) => {
                    // Refused data the validation missed: answer each order on its own.
                    tracing::warn!(error = %e, "order group refused; writing one by one");
                    let mut one_by_one = Vec::with_capacity(group.len());
                    let mut groups = Vec::new();
                    for p in group.iter() {
                        let single = std::slice::from_ref(p);
                        one_by_one.push(
                            match write_group(&client, single, events.is_some(), Keys::Checked)
                                .await
                            {
                                Ok((mut o, g)) => {
                                    groups.extend(g);
                                    o.pop()
                                        .unwrap_or_else(|| Err(Error::Task("no outcome".into())))
                                }
                                Err(e) => Err(Error::field("order", e.to_string())),
                            },
                        );
                    }
                    break (one_by_one, groups);
                }
            }
        };
        intake.busy.fetch_sub(1, Ordering::AcqRel);
        intake.idle.notify_waiters();
        stats.record(&group, &outcomes, started.elapsed());
        let created: Vec<Order> = outcomes
            .iter()
            .filter_map(|o| match o {
                Ok(SubmitOutcome::Created(o)) => Some(o.clone()),
                _ => None,
            })
            .collect();
        for (p, outcome) in group.drain(..).zip(outcomes) {
            // The caller may be gone (client disconnected): the order is stored anyway.
            let _ = p.reply.send(outcome);
        }
        if let (Some(tx), false) = (&events, created.is_empty()) {
            // Full: the outbox sweep publishes them later.
            let _ = tx.try_send((outbox_groups, created));
        }
    }
}

/// Outbox groups (rows of `order_outbox`) and the new orders they hold.
type OutboxBatch = (Vec<i64>, Vec<Order>);

/// What the insert returns for a new order; the rest is the request.
const CREATED_COLUMNS: &str = "id, account, client_order_id, created_at";

/// How a group's insert treats keys that are already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// A plain `INSERT`, for groups expected to be all new: PostgreSQL runs it in about
    /// two thirds of the time of the checked one (no speculative insertion per row), and
    /// a stored key fails the whole statement, which then stores nothing.
    New,
    /// `INSERT … ON CONFLICT DO NOTHING`: stored keys are skipped, then read back.
    Checked,
}

/// How long a writer keeps checking keys after a plain insert met a stored one: clients
/// that repeat orders tend to repeat several, and each failed plain insert costs a
/// statement.
const KEYS_CHECKED_FOR: Duration = Duration::from_secs(1);

/// One statement inserts the group's new orders; a second reads the ones that existed.
async fn write_group(
    client: &Client,
    group: &[Pending],
    outbox: bool,
    keys: Keys,
) -> std::result::Result<(Vec<Result<SubmitOutcome>>, Option<i64>), tokio_postgres::Error> {
    // The first submission of each key in the group is the one inserted.
    let mut first: HashMap<(&str, &str), usize> = HashMap::with_capacity(group.len());
    let mut uniques = Vec::with_capacity(group.len());
    for (i, p) in group.iter().enumerate() {
        let key = (p.order.account.as_str(), p.order.client_order_id.as_str());
        if let std::collections::hash_map::Entry::Vacant(e) = first.entry(key) {
            e.insert(i);
            uniques.push(i);
        }
    }
    // Borrowed columns: the arrays are encoded straight from the requests.
    let col = |f: for<'a> fn(&'a NewOrder) -> &'a str| -> Vec<&str> {
        uniques.iter().map(|&i| f(&group[i].order)).collect()
    };
    let accounts = col(|o| &o.account);
    let ids = col(|o| &o.client_order_id);
    let symbols = col(|o| o.symbol.as_str());
    let sides = col(|o| o.side.code());
    let types = col(|o| o.order_type.as_str());
    let tifs = col(|o| o.time_in_force.as_str());
    let hashes: Vec<&str> = uniques.iter().map(|&i| group[i].hash.as_str()).collect();
    let quantities: Vec<f64> = uniques.iter().map(|&i| group[i].order.quantity).collect();
    let prices: Vec<Option<f64>> = uniques
        .iter()
        .map(|&i| group[i].order.limit_price)
        .collect();
    let on_conflict = match keys {
        Keys::New => "",
        Keys::Checked => "ON CONFLICT (account, client_order_id) DO NOTHING",
    };
    let insert_orders = format!(
        "INSERT INTO orders (account, client_order_id, symbol, side, type, \
         quantity, limit_price, time_in_force, request_hash) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                              $6::float8[], $7::float8[], $8::text[], $9::text[]) \
         {on_conflict}"
    );
    // With events on, the outbox rows go in with the orders, in the same statement.
    let insert = if outbox {
        format!(
            "WITH ins AS ({insert_orders} RETURNING {CREATED_COLUMNS}), \
             outbox AS (INSERT INTO order_outbox (order_ids) \
                        SELECT array_agg(id) FROM ins HAVING count(*) > 0 RETURNING group_id) \
             SELECT {CREATED_COLUMNS}, (SELECT group_id FROM outbox) FROM ins"
        )
    } else {
        format!("{insert_orders} RETURNING {CREATED_COLUMNS}")
    };
    let text_array = Type::TEXT_ARRAY;
    let rows = client
        .query_typed(
            &insert,
            &[
                (&accounts, text_array.clone()),
                (&ids, text_array.clone()),
                (&symbols, text_array.clone()),
                (&sides, text_array.clone()),
                (&types, text_array.clone()),
                (&quantities, Type::FLOAT8_ARRAY),
                (&prices, Type::FLOAT8_ARRAY),
                (&tifs, text_array.clone()),
                (&hashes, text_array.clone()),
            ],
        )
        .await?;
    // A new order is the request plus what the database assigned: fewer columns to send
    // back and decode.
    // Keyed by the index of the key's first submission in the group.
    let mut created: HashMap<usize, Order> = HashMap::with_capacity(rows.len());
    let outbox_group: Option<i64> = match (outbox, rows.first()) {
        (true, Some(r)) => r.get(4),
        _ => None,
    };
    for r in &rows {
        let (id, account, client_order_id, at): (i64, &str, &str, std::time::SystemTime) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let Some(&i) = first.get(&(account, client_order_id)) else {
            continue;
        };
        let o = &group[i].order;
        let at = crate::query::unix_ns(at);
        created.insert(
            i,
            Order {
                id,
                account: o.account.clone(),
                client_order_id: o.client_order_id.clone(),
                symbol: o.symbol.as_str().to_string(),
                side: o.side,
                order_type: o.order_type,
                quantity: o.quantity,
                limit_price: o.limit_price,
                time_in_force: o.time_in_force,
                status: OrderStatus::Accepted,
                created_at_ns: at,
                updated_at_ns: at,
                status_changes: 0,
            },
        );
    }
    let mut existing: HashMap<usize, (Order, String)> = HashMap::new();
    if created.len() < uniques.len() {
        let (missing_accounts, missing_ids): (Vec<&str>, Vec<&str>) = uniques
            .iter()
            .filter(|i| !created.contains_key(i))
            .map(|&i| {
                let o = &group[i].order;
                (o.account.as_str(), o.client_order_id.as_str())
            })
            .unzip();
        let select = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE (account, client_order_id) IN \
             (SELECT * FROM unnest($1::text[], $2::text[]))"
        );
        for r in client
            .query_typed(
                &select,
                &[
                    (&missing_accounts, text_array.clone()),
                    (&missing_ids, text_array),
                ],
            )
            .await?
        {
            if let Ok((o, h)) = Order::from_row(&r) {
                let key = (o.account.as_str(), o.client_order_id.as_str());
                if let Some(&i) = first.get(&key) {
                    existing.insert(i, (o, h));
                }
            }
        }
    }
    let outcomes = group
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let key = (p.order.account.as_str(), p.order.client_order_id.as_str());
            let f = first.get(&key).copied().unwrap_or(i);
            if let Some(o) = created.get(&f) {
                return Ok(if f == i {
                    SubmitOutcome::Created(o.clone())
                } else if group[f].hash == p.hash {
                    SubmitOutcome::Existing(o.clone())
                } else {
                    SubmitOutcome::Conflict(o.clone())
                });
            }
            match existing.get(&f) {
                Some((o, h)) if *h == p.hash => Ok(SubmitOutcome::Existing(o.clone())),
                Some((o, _)) => Ok(SubmitOutcome::Conflict(o.clone())),
                None => Err(Error::Task(format!(
                    "order {}/{} neither inserted nor found",
                    key.0, key.1
                ))),
            }
        })
        .collect();
    Ok((outcomes, outbox_group))
}

/// Most events published in one pipeline (more wait for the next round).
const MAX_EVENTS_PER_ROUND: usize = 8_192;

/// Most outbox groups one sweep reads.
const SWEEP_GROUPS: usize = 64;

/// What the events publisher does after Redis refuses a round (down, or full under
/// `maxmemory`): it leaves new events to the outbox for a pause that doubles up to 5 s
/// instead of trying (and reconnecting) for every group, and logs one line per 10 s
/// instead of one per round (at 25,000 orders/s into a full Redis that was 2,700 lines and
/// 25 MB of log in 10 s).
#[derive(Debug)]
struct Refusals {
    pause: Duration,
    until: Option<Instant>,
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl Refusals {
    const FIRST_PAUSE: Duration = Duration::from_millis(200);
    const LONGEST_PAUSE: Duration = Duration::from_secs(5);
    const LOG_EVERY: Duration = Duration::from_secs(10);
    /// Longest error text logged: a refused pipeline names every command that failed.
    const LOGGED_ERROR_CHARS: usize = 300;

    fn new() -> Refusals {
        Refusals {
            pause: Refusals::FIRST_PAUSE,
            until: None,
            logged_at: None,
            unlogged: 0,
        }
    }

    /// Whether to leave events to the outbox now.
    fn paused(&self) -> bool {
        self.until.is_some_and(|t| Instant::now() < t)
    }

    fn refused(&mut self, what: &str, e: &Error) {
        let now = Instant::now();
        self.until = Some(now + self.pause);
        let pause_ms = self.pause.as_millis() as u64;
        self.pause = (self.pause * 2).min(Refusals::LONGEST_PAUSE);
        self.unlogged += 1;
        if self
            .logged_at
            .is_none_or(|t| now.duration_since(t) >= Refusals::LOG_EVERY)
        {
            let error: String = e
                .to_string()
                .chars()
                .take(Refusals::LOGGED_ERROR_CHARS)
                .collect();
            tracing::warn!(
                %error,
                rounds = self.unlogged,
                pause_ms,
                "order events: {what}; the outbox keeps them"
            );
            self.logged_at = Some(now);
            self.unlogged = 0;
        }
    }

    fn published(&mut self) {
        if self.logged_at.take().is_some() {
            tracing::info!(
                rounds_refused_since_last_line = self.unlogged,
                "order events: Redis takes them again"
            );
        }
        *self = Refusals::new();
    }
}

/// The event publisher's connection.
async fn connect_events(url: &str) -> Result<Client> {
    connect(url, "christmas-orders-events").await
}

/// Deletes published outbox groups. The commit does not wait for the WAL flush: a delete
/// lost in a crash only means the sweep announces those orders again, which workers
/// already tolerate (delivery is at least once). `SET LOCAL` in one simple query, so no
/// session setting leaks into a PgBouncer pool.
async fn clear_outbox(
    db: &Client,
    groups: &[i64],
) -> std::result::Result<(), tokio_postgres::Error> {
    let ids: Vec<String> = groups.iter().map(i64::to_string).collect();
    let done = db
        .batch_execute(&format!(
            "BEGIN; SET LOCAL synchronous_commit = off; \
         DELETE FROM order_outbox WHERE group_id = ANY('{{{}}}'::bigint[]); COMMIT",
            ids.join(",")
        ))
        .await;
    if done.is_err() {
        // Leave no aborted transaction block behind on this connection.
        let _ = db.batch_execute("ROLLBACK").await;
    }
    done
}

/// Trims `stream` of the events every consumer group has been given and acknowledged:
/// those before each group's oldest pending event, or, with none pending, before the last
/// one it was given. Without a group nothing is trimmed (no worker has come yet, and the
/// first one reads from the start). Returns how many entries went.
async fn trim_acknowledged(conn: &mut RedisConn, stream: &str) -> Result<u64> {
    const CONTEXT: &str = "trimming order events";
    let Some(places) = group_places(conn, stream, CONTEXT).await? else {
        return Ok(0);
    };
    let Some(floor) = places
        .iter()
        .map(|p| p.oldest_pending.unwrap_or(p.delivered))
        .min()
    else {
        // No stream or no group yet.
        return Ok(0);
    };
    // Exact, not `~`: it runs every few seconds, and what it leaves is then exactly what
    // some group still needs.
    conn.query(
        redis::cmd("XTRIM")
            .arg(stream)
            .arg("MINID")
            .arg(floor.to_string()),
        CONTEXT,
    )
    .await
}

/// A consumer group's place in the stream.
struct GroupPlace {
    /// The last event it was given.
    delivered: StreamId,
    /// The oldest event it was given and has not acknowledged.
    oldest_pending: Option<StreamId>,
}

/// Where each consumer group of `stream` is: empty without a stream or a group, `None` when
/// Redis's answer has a shape this does not read.
async fn group_places(
    conn: &mut RedisConn,
    stream: &str,
    context: &'static str,
) -> Result<Option<Vec<GroupPlace>>> {
    let groups: Vec<HashMap<String, redis::Value>> = match conn
        .query(redis::cmd("XINFO").arg("GROUPS").arg(stream), context)
        .await
    {
        Ok(g) => g,
        Err(Error::Redis {
            kind: RedisErrorKind::NoSuchKey,
            ..
        }) => return Ok(Some(Vec::new())),
        Err(e) => return Err(e),
    };
    let mut places = Vec::with_capacity(groups.len());
    for g in &groups {
        let field = |k: &str| g.get(k).and_then(crate::orders::worker::text);
        let (Some(name), Some(delivered)) = (
            field("name"),
            field("last-delivered-id").and_then(|d| StreamId::parse(&d)),
        ) else {
            return Ok(None);
        };
        let oldest_pending = if matches!(g.get("pending"), Some(redis::Value::Int(n)) if *n > 0) {
            // Summary form: [count, smallest id, largest id, consumers].
            let summary: Vec<redis::Value> = conn
                .query(redis::cmd("XPENDING").arg(stream).arg(&name), context)
                .await?;
            match summary
                .get(1)
                .and_then(crate::orders::worker::text)
                .and_then(|id| StreamId::parse(&id))
            {
                Some(id) => Some(id),
                None => return Ok(None),
            }
        } else {
            None
        };
        places.push(GroupPlace {
            delivered,
            oldest_pending,
        });
    }
    Ok(Some(places))
}

/// A stream entry id, `ms-seq`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct StreamId(u64, u64);

impl StreamId {
    fn parse(s: &str) -> Option<StreamId> {
        let (ms, seq) = s.split_once('-')?;
        Some(StreamId(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// Adds an `order.accepted` event per order to `stream`, in one pipeline.
async fn announce(conn: &mut RedisConn, stream: &str, orders: &[Order]) -> Result<()> {
    let mut pipe = redis::pipe();
    for o in orders {
        pipe.cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("type")
            .arg("order.accepted")
            .arg("order_id")
            .arg(o.id)
            .arg("order")
            .arg(o.json_bytes())
            .ignore();
    }
    conn.run(&pipe).await
}

/// Most orders one re-check lookup reads.
const RECHECK_BATCH: usize = 65_536;

/// Most lookups in one re-check round; the rest waits for the next round, so new events
/// are not held up behind a large re-check.
const RECHECK_BATCHES_PER_ROUND: usize = 8;

/// Most order ids the re-check holds, 8 bytes each (32 MiB): beyond, the oldest go unchecked
/// (counted and logged).
const RECHECK_MAX_TRACKED: usize = 4 << 20;

/// Where the consumer groups of the events stream are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerProgress {
    /// No stream or no group: no worker has come, or Redis lost them.
    NoGroup,
    /// Some group has an event older than the horizon that it was not given, or was given
    /// and has not acknowledged: a backlog, or one in hand.
    Behind,
    /// Every group was given, and acknowledged, every event older than the horizon.
    CaughtUp,
}

/// Whether every consumer group of `stream` was given and acknowledged every event older
/// than `within`.
async fn worker_progress(
    conn: &mut RedisConn,
    stream: &str,
    within: Duration,
) -> Result<WorkerProgress> {
    const CONTEXT: &str = "checking the order workers' progress";
    let Some(places) = group_places(conn, stream, CONTEXT).await? else {
        return Ok(WorkerProgress::Behind);
    };
    if places.is_empty() {
        return Ok(WorkerProgress::NoGroup);
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let horizon = now_ms.saturating_sub(within.as_millis() as u64);
    for place in &places {
        if place.oldest_pending.is_some_and(|p| p.0 < horizon) {
            return Ok(WorkerProgress::Behind);
        }
        // The oldest event this group was not given yet.
        let next: Vec<(String, HashMap<String, String>)> = conn
            .query(
                redis::cmd("XRANGE")
                    .arg(stream)
                    .arg(format!("({}", place.delivered))
                    .arg("+")
                    .arg("COUNT")
                    .arg(1),
                CONTEXT,
            )
            .await?;
        if next
            .first()
            .and_then(|(id, _)| StreamId::parse(id))
            .is_some_and(|id| id.0 < horizon)
        {
            return Ok(WorkerProgress::Behind);
        }
    }
    Ok(WorkerProgress::CaughtUp)
}

/// The orders this desk announced, by when, until the re-check has looked at them.
///
/// Redis can lose events it took: a restart without an fsynced append-only file, or a
/// failover to a replica the last writes had not reached. An order whose event went is
/// `accepted` for ever. So `after` an announcement, once the workers are not behind (every
/// group was given and acknowledged every event older than `after / 2`: this one too,
/// unless Redis lost it), the orders still `accepted` are announced again, once. Each desk
/// re-checks what it announced itself: no coordination between daemons, and a lookup by
/// primary key.
struct Recheck {
    after: Duration,
    /// Announcements close together share an entry (see [`Recheck::announced`]).
    announced: std::collections::VecDeque<(Instant, Vec<i64>)>,
    tracked: usize,
    /// Whether a consumer group was ever seen. Until one is, due ids are dropped, not kept:
    /// no worker has come, and without a group the stream is not trimmed, so the first
    /// worker reads everything. Once one was, a missing group is Redis's loss.
    seen_group: bool,
    /// Ids dropped over [`RECHECK_MAX_TRACKED`], not yet logged.
    dropped: u64,
    /// Since when the workers have been behind.
    behind_since: Option<Instant>,
}

impl Recheck {
    fn new(after: Duration) -> Recheck {
        Recheck {
            after,
            announced: std::collections::VecDeque::new(),
            tracked: 0,
            seen_group: false,
            dropped: 0,
            behind_since: None,
        }
    }

    /// Notes orders just announced. Announcements within `after / 16` (at most a second)
    /// of an entry's first join it, so the entries stay few whatever the rate: an id is
    /// then re-checked up to that much early.
    fn announced(&mut self, ids: Vec<i64>) {
        if self.after.is_zero() || ids.is_empty() {
            return;
        }
        self.tracked += ids.len();
        let join = (self.after / 16).min(Duration::from_secs(1));
        match self.announced.back_mut() {
            Some((at, last)) if at.elapsed() < join => last.extend_from_slice(&ids),
            _ => self.announced.push_back((Instant::now(), ids)),
        }
        while self.tracked > RECHECK_MAX_TRACKED {
            match self.announced.pop_front() {
                Some((_, ids)) => {
                    self.tracked -= ids.len();
                    self.dropped += ids.len() as u64;
                }
                None => break,
            }
        }
    }

    /// Takes up to [`RECHECK_BATCH`] ids announced `after` ago or earlier (at least one
    /// entry's, however many it holds).
    fn take_due(&mut self) -> Vec<i64> {
        let mut due = Vec::new();
        while let Some((at, ids)) = self.announced.front() {
            if at.elapsed() < self.after || due.len() + ids.len() > RECHECK_BATCH.max(ids.len()) {
                break;
            }
            due.extend_from_slice(ids);
            self.tracked -= ids.len();
            self.announced.pop_front();
        }
        due
    }

    fn has_due(&self) -> bool {
        self.announced
            .front()
            .is_some_and(|(at, _)| at.elapsed() >= self.after)
    }

    /// Whether a round has anything to do: ids are due, or some are held and no group
    /// has been seen yet (a round looks for one as soon as there is something to lose).
    fn wants_round(&self) -> bool {
        !self.announced.is_empty() && (!self.seen_group || self.has_due())
    }

    /// One round: announces again the due orders still `accepted`, when the workers are
    /// not behind, adding each batch to `reannounced` as it goes.
    async fn round(
        &mut self,
        db: &Client,
        conn: &mut RedisConn,
        stream: &str,
        reannounced: &AtomicU64,
    ) -> Result<()> {
        if self.dropped > 0 {
            tracing::warn!(
                orders = self.dropped,
                "order events: too many announced orders held for the re-check; the oldest \
                 go unchecked"
            );
            self.dropped = 0;
        }
        if !self.wants_round() {
            return Ok(());
        }
        let progress = worker_progress(conn, stream, self.after / 2).await?;
        if progress != WorkerProgress::NoGroup {
            self.seen_group = true;
        }
        if progress == WorkerProgress::Behind {
            let since = *self.behind_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.after * 10 {
                tracing::warn!(
                    behind_s = since.elapsed().as_secs(),
                    "order events: workers have had events older than the re-check's horizon \
                     unread or unacknowledged this long; the re-check waits for them"
                );
                self.behind_since = Some(Instant::now());
            }
        } else {
            self.behind_since = None;
        }
        match progress {
            WorkerProgress::CaughtUp => {}
            WorkerProgress::Behind => return Ok(()),
            // Kept: the group may come back (a worker makes it again after Redis lost it).
            WorkerProgress::NoGroup if self.seen_group => return Ok(()),
            WorkerProgress::NoGroup => {
                while !self.take_due().is_empty() {}
                return Ok(());
            }
        }
        for _ in 0..RECHECK_BATCHES_PER_ROUND {
            let due = self.take_due();
            if due.is_empty() {
                break;
            }
            let n = self.announce_again(db, conn, stream, due).await?;
            reannounced.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Announces again those of `due` still `accepted`; on failure they are due again.
    async fn announce_again(
        &mut self,
        db: &Client,
        conn: &mut RedisConn,
        stream: &str,
        due: Vec<i64>,
    ) -> Result<u64> {
        let select = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1) AND status = 'accepted' \
             ORDER BY id"
        );
        let rows = match db.query_typed(&select, &[(&due, Type::INT8_ARRAY)]).await {
            Ok(r) => r,
            Err(e) => {
                self.due_again(due);
                return Err(Error::pg("re-checking order events", e));
            }
        };
        let orders: Vec<Order> = rows
            .iter()
            .filter_map(|r| Order::from_row(r).ok().map(|(o, _)| o))
            .collect();
        if orders.is_empty() {
            return Ok(0);
        }
        tracing::warn!(
            orders = orders.len(),
            after_s = self.after.as_secs_f64(),
            "order events: orders still accepted long after Redis took their events; announcing \
             them again (Redis lost events, or workers took them without moving the orders)"
        );
        if let Err(e) = announce(conn, stream, &orders).await {
            self.due_again(orders.iter().map(|o| o.id).collect());
            return Err(e);
        }
        Ok(orders.len() as u64)
    }

    /// Puts `ids` back at the front, due now.
    fn due_again(&mut self, ids: Vec<i64>) {
        let due_at = Instant::now()
            .checked_sub(self.after)
            .unwrap_or_else(Instant::now);
        self.tracked += ids.len();
        self.announced.push_front((due_at, ids));
    }
}

/// The publisher's Redis connection, made now if there is none.
async fn connected<'a>(
    conn: &'a mut Option<RedisConn>,
    target: &RedisTarget,
) -> Result<&'a mut RedisConn> {
    let c = match conn.take() {
        Some(c) => c,
        None => connection::connect(target).await?,
    };
    Ok(conn.insert(c))
}

/// Publishes `order.accepted` events: each committed group as it comes, and every few
/// seconds whatever the outbox still holds. Every few seconds it also trims what every
/// consumer group has acknowledged from the stream.
async fn publish_events(
    target: RedisTarget,
    config: OrderDeskConfig,
    mut db: Client,
    mut rx: mpsc::Receiver<OutboxBatch>,
    stats: Arc<DeskStats>,
) {
    let (stream, url) = (config.events_stream, config.database_url);
    let (trim_every, recheck_after) = (config.events_trim_every, config.events_recheck_after);
    let mut conn: Option<RedisConn> = None;
    let mut sweep = tokio::time::interval(Duration::from_secs(2));
    let mut trim = tokio::time::interval(trim_every);
    let mut recheck_tick = tokio::time::interval(
        (recheck_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(10)),
    );
    recheck_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut recheck = Recheck::new(recheck_after);
    let mut refusals = Refusals::new();
    // Groups older than this were not published as they committed (Redis was down or full,
    // the channel was full, or the process died): the sweep sends them, at once again while
    // it finds a full batch.
    let stale = format!(
        "SELECT group_id, order_ids FROM order_outbox \
         WHERE created_at < now() - interval '2 seconds' ORDER BY group_id LIMIT {SWEEP_GROUPS}"
    );
    let select = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1) ORDER BY id");
    loop {
        if db.is_closed() {
            match connect_events(&url).await {
                Ok(c) => db = c,
                Err(e) => tracing::debug!(error = %e, "order events: database reconnect failed"),
            }
        }
        let (groups, orders): OutboxBatch = tokio::select! {
            batch = rx.recv() => match batch {
                Some((mut groups, mut orders)) => {
                    // Everything queued behind the last round goes out in one round.
                    while orders.len() < MAX_EVENTS_PER_ROUND {
                        match rx.try_recv() {
                            Ok((g, o)) => {
                                groups.extend(g);
                                orders.extend(o);
                            }
                            Err(_) => break,
                        }
                    }
                    (groups, orders)
                }
                None => return,
            },
            _ = sweep.tick(), if !refusals.paused() => {
                let swept = async {
                    let rows = db.query_typed(&stale, &[]).await?;
                    if rows.len() == SWEEP_GROUPS {
                        sweep.reset_immediately();
                    }
                    let groups: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
                    let ids: Vec<i64> = rows.iter().flat_map(|r| r.get::<_, Vec<i64>>(1)).collect();
                    let orders = db.query_typed(&select, &[(&ids, Type::INT8_ARRAY)]).await?;
                    let orders = orders.iter().filter_map(|r| Order::from_row(r).ok().map(|(o, _)| o)).collect();
                    Ok::<_, tokio_postgres::Error>((groups, orders))
                };
                match swept.await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::debug!(error = %e, "order outbox sweep failed");
                        continue;
                    }
                }
            }
            _ = recheck_tick.tick(), if recheck.wants_round() => {
                let done = match connected(&mut conn, &target).await {
                    Ok(c) => recheck.round(&db, c, &stream, &stats.events_reannounced).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = done {
                    tracing::debug!(error = %e, "order events: re-check failed");
                    if matches!(e, Error::Redis { .. }) {
                        conn = None;
                    }
                }
                continue;
            }
            _ = trim.tick() => {
                if let Some(c) = conn.as_mut() {
                    match trim_acknowledged(c, &stream).await {
                        Ok(n) => {
                            stats.events_trimmed.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => tracing::debug!(error = %e, "order events: trimming failed"),
                    }
                }
                continue;
            }
        };
        if refusals.paused() {
            // Redis refused the last round: these wait in the outbox for the sweep.
            continue;
        }
        if orders.is_empty() {
            // Groups whose orders are gone (deleted by hand): nothing left to announce.
            if !groups.is_empty() {
                let _ = clear_outbox(&db, &groups).await;
            }
            continue;
        }
        let c = match connected(&mut conn, &target).await {
            Ok(c) => c,
            Err(e) => {
                stats.event_failures.fetch_add(1, Ordering::Relaxed);
                refusals.refused("Redis unreachable", &e);
                continue;
            }
        };
        if let Err(e) = announce(c, &stream, &orders).await {
            stats.event_failures.fetch_add(1, Ordering::Relaxed);
            refusals.refused("publish failed", &e);
            conn = None;
            continue;
        }
        refusals.published();
        stats
            .events_published
            .fetch_add(orders.len() as u64, Ordering::Relaxed);
        recheck.announced(orders.iter().map(|o| o.id).collect());
        if let Err(e) = clear_outbox(&db, &groups).await {
            stats.event_failures.fetch_add(1, Ordering::Relaxed);
            // Published but still in the outbox: the sweep sends them again; workers see
            // the order's status and handle each once.
            tracing::warn!(error = %e, "order events: clearing the outbox failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_pause_publishing_for_longer_each_time_until_a_round_goes_out() {
        let e = Error::Task("OOM".into());
        let mut r = Refusals::new();
        assert!(!r.paused());
        let mut pauses = Vec::new();
        for _ in 0..7 {
            let before = Instant::now();
            r.refused("publish failed", &e);
            assert!(r.paused());
            pauses.push((r.until.unwrap() - before).as_millis() / 100 * 100);
        }
        assert_eq!(pauses, [200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
        // One line for the first refusal; the other six wait for the next line.
        assert_eq!(r.unlogged, 6);
        r.published();
        assert!(!r.paused());
        assert_eq!(
            (r.pause, r.unlogged, r.logged_at),
            (Refusals::FIRST_PAUSE, 0, None)
        );
    }

    #[test]
    fn the_recheck_takes_what_is_due_in_batches_and_drops_beyond_its_cap() {
        let ms = Duration::from_millis;
        let mut r = Recheck::new(ms(500));
        r.announced((0..40_000).collect());
        std::thread::sleep(ms(40)); // past the 31 ms in which announcements share an entry
        r.announced((40_000..80_000).collect());
        assert!(!r.has_due(), "nothing is due before `after`");
        assert!(r.take_due().is_empty());
        std::thread::sleep(ms(520));
        r.announced(vec![80_000]);
        r.announced(vec![80_001]);
        assert!(r.has_due());
        // 40,000 + 40,000 is over a batch: one entry now, the other next.
        assert_eq!(r.take_due(), (0..40_000).collect::<Vec<i64>>());
        assert_eq!(r.take_due(), (40_000..80_000).collect::<Vec<i64>>());
        assert!(r.take_due().is_empty(), "the last two are not due yet");
        assert_eq!((r.tracked, r.announced.len()), (2, 1), "and share an entry");

        // Over the cap the oldest entries go, and are counted.
        let mut r = Recheck::new(ms(16));
        let half = (RECHECK_MAX_TRACKED / 2) as i64;
        r.announced((0..half).collect());
        std::thread::sleep(ms(5));
        r.announced((half..2 * half).collect());
        std::thread::sleep(ms(5));
        r.announced(vec![2 * half]);
        assert_eq!((r.tracked, r.dropped), (half as usize + 1, half as u64));
        std::thread::sleep(ms(20));
        assert_eq!(r.take_due().first(), Some(&half));

        // Off: nothing is kept.
        let mut r = Recheck::new(Duration::ZERO);
        r.announced(vec![1, 2, 3]);
        assert_eq!((r.tracked, r.wants_round()), (0, false));
    }
}
