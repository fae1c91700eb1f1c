//! [`OrderDesk`]: the orders' API (submit, get, list, cancel, metrics) and its config.
//! Submissions go to the writers ([`group_commit`](super::group_commit)); new orders'
//! events to the publisher ([`outbox`](super::outbox)), which runs the re-check
//! ([`recheck`](super::recheck)).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::types::{ToSql, Type};

use crate::error::{Error, Result};
use crate::orders::group_commit::{connect_writer, write_groups, Intake, Submission};
use crate::orders::outbox::{
    connect_events, publish_events, wait_for_events_db, EventsConfig, OutboxBatch,
};
use crate::orders::queue::EventsTarget;
use crate::orders::stats::DeskStats;
use crate::orders::types::{NewOrder, Order, OrderStatus, SubmitOutcome, ORDER_COLUMNS};
use crate::pg::read::ReadClient;

/// How an [`OrderDesk`] runs.
#[derive(Clone, PartialEq, Eq)]
pub struct OrderDeskConfig {
    /// The primary, where orders are written.
    pub database_url: String,
    /// Where reads go (a replica); default: the primary.
    pub read_database_url: Option<String>,
    /// Where `order.accepted` events go, by scheme: Redis (`redis://`,
    /// `redis+sentinel://`, `redis+cluster://`: a stream with consumer groups) or RabbitMQ
    /// (`amqp://`, or `amqps://` over TLS: a durable quorum queue); `None`: no events.
    pub redis_url: Option<String>,
    /// For an `amqps://` events URL: a PEM file of the CA certificates that signed a
    /// private broker's certificate, trusted besides the system's roots; `None`: the
    /// system's roots only (default). Read when the desk starts.
    pub events_tls_ca: Option<PathBuf>,
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
            .field("events_tls_ca", &self.events_tls_ca)
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
            events_tls_ca: None,
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
    /// `order.accepted` events the broker took (added to the Redis stream, or confirmed by
    /// RabbitMQ).
    pub events_published: u64,
    /// The events broker: `Some("redis")`, `Some("amqp")`, or `None` without events.
    pub events_backend: Option<&'static str>,
    /// Whether the event publisher's broker connection was up when it last looked (it
    /// looks at every round and every few seconds).
    pub events_broker_up: bool,
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

/// Submits, reads and cancels orders. Cheap to share behind an `Arc`.
pub struct OrderDesk {
    /// `None` once shut down.
    tx: Mutex<Option<mpsc::Sender<Submission>>>,
    /// Reads (`get`, `list`): the replica while it is fit, else the primary.
    reader: ReadClient,
    /// Cancels, and the reads that follow them: always the primary.
    primary: ReadClient,
    writers: Mutex<Vec<JoinHandle<()>>>,
    events: Mutex<Option<JoinHandle<()>>>,
    events_backend: Option<&'static str>,
    /// Where the writers and the event publisher run.
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
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

impl OrderDesk {
    /// Starts the writers (and the event publisher when Redis is set). Each connects now
    /// when PostgreSQL answers, else on first use: the desk starts while it is down.
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
            .map(|url| EventsTarget::parse(url, config.events_tls_ca.as_deref()))
            .transpose()?;
        let events_backend = target.as_ref().map(EventsTarget::backend);
        // Every connection is made on first use, so the desk starts while PostgreSQL is
        // down (its requests fail until it is back).
        let reader = match &config.read_database_url {
            Some(replica) => ReadClient::with_fallback_later(
                replica,
                &config.database_url,
                config.max_replica_lag,
            )?,
            None => ReadClient::connect_later(&config.database_url)?,
        };
        let primary = ReadClient::connect_later(&config.database_url)?;
        let (tx, rx) = mpsc::channel(config.queue.max(1));
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
        let setup = start_tasks(config, target, Arc::new(Intake::new(rx)), stats.clone());
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
            tx: Mutex::new(Some(tx)),
            reader,
            primary,
            writers: Mutex::new(writers),
            events: Mutex::new(events),
            events_backend,
            runtime: Mutex::new(Some(runtime)),
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
        tx.send(Submission {
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
        let p: [(&(dyn ToSql + Sync), Type); 2] = [(&id, Type::INT8), (&account, Type::TEXT)];
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
            events_backend: self.events_backend,
            events_broker_up: st.events_broker_up.load(Ordering::Relaxed),
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

/// Connects the writers and, with Redis set, the event publisher, and spawns them (on the
/// desk's runtime).
async fn start_tasks(
    config: OrderDeskConfig,
    target: Option<EventsTarget>,
    intake: Arc<Intake>,
    stats: Arc<DeskStats>,
) -> Result<(Vec<JoinHandle<()>>, Option<JoinHandle<()>>)> {
    let (events_tx, events_rx) = mpsc::channel::<OutboxBatch>(1_024);
    // The outbox is written only when events are on (see `group_commit`).
    let events_tx = target.as_ref().map(|_| events_tx);
    let mut writers = Vec::with_capacity(config.connections);
    for i in 0..config.connections {
        // Unreachable now: the writer connects when its first group comes.
        let client = connect_writer(&config.database_url, i)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "order writer: PostgreSQL unreachable at start; connecting on the first order"))
            .ok();
        writers.push(tokio::spawn(write_groups(
            client,
            config.database_url.clone(),
            config.max_group,
            i,
            intake.clone(),
            events_tx.clone(),
            stats.clone(),
        )));
    }
    let events = match target {
        Some(t) => {
            let db = connect_events(&config.database_url).await.ok();
            let events_config = EventsConfig {
                stream: config.events_stream,
                database_url: config.database_url,
                trim_every: config.events_trim_every,
                recheck_after: config.events_recheck_after,
            };
            Some(tokio::spawn(async move {
                // PostgreSQL down at start: wait for it (the outbox holds the events).
                let db = match db {
                    Some(db) => db,
                    None => match wait_for_events_db(&events_config.database_url, &events_rx).await
                    {
                        Some(db) => db,
                        None => return,
                    },
                };
                publish_events(t, events_config, db, events_rx, stats).await
            }))
        }
        None => None,
    };
    Ok((writers, events))
}
