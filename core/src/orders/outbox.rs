//! Publishing `order.accepted` events: each committed group as the writers hand it over,
//! and, every few seconds, whatever the outbox still holds (the sweep). After Redis
//! refuses a round, new events are left to the outbox for a pause ([`Refusals`]). The same
//! task trims the stream and runs the re-check rounds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::Interval;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::orders::queue::{breaks_connection, EventsConn, EventsTarget};
use crate::orders::recheck::Recheck;
use crate::orders::stats::DeskStats;
use crate::orders::types::{Order, ORDER_COLUMNS};
use crate::pg;

/// Outbox groups (rows of `order_outbox`) and the new orders they hold.
pub(super) type OutboxBatch = (Vec<i64>, Vec<Order>);

/// Most events published in one pipeline (more wait for the next round).
const MAX_EVENTS_PER_ROUND: usize = 8_192;

/// Most outbox groups one sweep reads.
const SWEEP_GROUPS: usize = 64;

/// What the event publisher takes from the desk's config.
#[derive(Debug, Clone)]
pub(super) struct EventsConfig {
    /// The events stream.
    pub(super) stream: String,
    /// The primary, which holds the outbox.
    pub(super) database_url: String,
    /// How often the stream is trimmed of what every consumer group acknowledged.
    pub(super) trim_every: Duration,
    /// How long after its announcement an order still `accepted` is announced again
    /// (zero: never).
    pub(super) recheck_after: Duration,
}

/// The event publisher's connection.
pub(super) async fn connect_events(url: &str) -> Result<Client> {
    pg::connect(
        &pg::parse_url(url)?,
        "christmas-orders-events",
        "connecting the order desk",
    )
    .await
}

/// Connects the event publisher once PostgreSQL answers; `None` when the desk shut down
/// first (every sender of `rx` gone).
pub(super) async fn wait_for_events_db(
    url: &str,
    rx: &mpsc::Receiver<OutboxBatch>,
) -> Option<Client> {
    let mut backoff = Duration::from_millis(100);
    loop {
        if rx.is_closed() {
            return None;
        }
        match connect_events(url).await {
            Ok(c) => return Some(c),
            Err(e) => tracing::debug!(error = %e, "order events: database unreachable"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Publishes `order.accepted` events: each committed group as it comes, and every few
/// seconds whatever the outbox still holds. Every few seconds it also trims what every
/// consumer group has acknowledged from the stream.
pub(super) async fn publish_events(
    target: EventsTarget,
    config: EventsConfig,
    db: Client,
    mut rx: mpsc::Receiver<OutboxBatch>,
    stats: Arc<DeskStats>,
) {
    let recheck_after = config.recheck_after;
    let mut sweep = tokio::time::interval(Duration::from_secs(2));
    let mut trim = tokio::time::interval(config.trim_every);
    let mut recheck_tick = tokio::time::interval(
        (recheck_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(10)),
    );
    recheck_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut p = EventPublisher {
        target,
        stream: config.stream,
        database_url: config.database_url,
        db,
        conn: None,
        recheck: Recheck::new(recheck_after),
        refusals: Refusals::new(),
        stats,
        // Groups older than this were not published as they committed (Redis was down or
        // full, the channel was full, or the process died): the sweep sends them, at once
        // again while it finds a full batch.
        stale: format!(
            "SELECT group_id, order_ids FROM order_outbox \
             WHERE created_at < now() - interval '2 seconds' ORDER BY group_id LIMIT {SWEEP_GROUPS}"
        ),
        select: format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1) ORDER BY id"),
    };
    loop {
        if p.db.is_closed() {
            match connect_events(&p.database_url).await {
                Ok(c) => p.db = c,
                Err(e) => tracing::debug!(error = %e, "order events: database reconnect failed"),
            }
        }
        let (groups, orders): OutboxBatch = tokio::select! {
            batch = rx.recv() => match batch {
                Some(batch) => with_queued(&mut rx, batch),
                None => return,
            },
            _ = sweep.tick(), if !p.refusals.paused() => {
                match p.read_stale(&mut sweep).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::debug!(error = %e, "order outbox sweep failed");
                        continue;
                    }
                }
            }
            _ = recheck_tick.tick(), if p.recheck.wants_round() => {
                p.recheck_round().await;
                continue;
            }
            _ = trim.tick() => {
                p.trim().await;
                continue;
            }
        };
        p.publish(groups, orders).await;
    }
}

/// `batch` and everything queued behind it, up to [`MAX_EVENTS_PER_ROUND`] orders: all of
/// it goes out in one round.
fn with_queued(rx: &mut mpsc::Receiver<OutboxBatch>, batch: OutboxBatch) -> OutboxBatch {
    let (mut groups, mut orders) = batch;
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

/// What the event publisher keeps between rounds.
struct EventPublisher {
    target: EventsTarget,
    stream: String,
    database_url: String,
    db: Client,
    /// `None` until connected, and after the broker failed.
    conn: Option<EventsConn>,
    recheck: Recheck,
    refusals: Refusals,
    stats: Arc<DeskStats>,
    /// Reads the outbox groups the sweep sends.
    stale: String,
    /// Reads their orders.
    select: String,
}

impl EventPublisher {
    /// The outbox groups left over (see `stale`) and their orders; a full batch makes the
    /// next sweep come at once.
    async fn read_stale(
        &self,
        sweep: &mut Interval,
    ) -> std::result::Result<OutboxBatch, tokio_postgres::Error> {
        let rows = self.db.query_typed(&self.stale, &[]).await?;
        if rows.len() == SWEEP_GROUPS {
            sweep.reset_immediately();
        }
        let groups: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let ids: Vec<i64> = rows.iter().flat_map(|r| r.get::<_, Vec<i64>>(1)).collect();
        let orders = self
            .db
            .query_typed(&self.select, &[(&ids, Type::INT8_ARRAY)])
            .await?;
        let orders = orders
            .iter()
            .filter_map(|r| Order::from_row(r).ok().map(|(o, _)| o))
            .collect();
        Ok((groups, orders))
    }

    /// One re-check round; a Redis failure drops the connection.
    async fn recheck_round(&mut self) {
        let done = match connected(&mut self.conn, &self.target, &self.stream).await {
            Ok(c) => {
                self.recheck
                    .round(&self.db, c, &self.stream, &self.stats.events_reannounced)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            tracing::debug!(error = %e, "order events: re-check failed");
            if breaks_connection(&e) {
                self.conn = None;
            }
            self.note_broker();
        }
    }

    /// Trims the stream of what every consumer group acknowledged (when connected). For a
    /// broker whose connection shows it broke (RabbitMQ), reconnects now, so the broker's
    /// state in the metrics is fresh without traffic.
    async fn trim(&mut self) {
        if self.conn.as_ref().is_some_and(|c| !c.is_open()) {
            self.conn = None;
        }
        if self.conn.is_none() && matches!(self.target, EventsTarget::Amqp(_)) {
            let _ = connected(&mut self.conn, &self.target, &self.stream).await;
        }
        if let Some(c) = self.conn.as_mut() {
            match c.trim(&self.stream).await {
                Ok(n) => {
                    self.stats.events_trimmed.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "order events: trimming failed");
                    if breaks_connection(&e) {
                        self.conn = None;
                    }
                }
            }
        }
        self.note_broker();
    }

    /// Publishes whether the broker connection is up, for `/ready` and `/metrics`.
    fn note_broker(&self) {
        self.stats.events_broker_up.store(
            self.conn.as_ref().is_some_and(|c| c.is_open()),
            Ordering::Relaxed,
        );
    }

    /// Announces `orders` and clears their outbox `groups`; while Redis refuses, leaves
    /// them to the outbox.
    async fn publish(&mut self, groups: Vec<i64>, orders: Vec<Order>) {
        if self.refusals.paused() {
            // Redis refused the last round: these wait in the outbox for the sweep.
            return;
        }
        if orders.is_empty() {
            // Groups whose orders are gone (deleted by hand): nothing left to announce.
            if !groups.is_empty() {
                let _ = clear_outbox(&self.db, &groups).await;
            }
            return;
        }
        let stats = self.stats.clone();
        if self.conn.as_ref().is_some_and(|c| !c.is_open()) {
            self.conn = None;
        }
        let c = match connected(&mut self.conn, &self.target, &self.stream).await {
            Ok(c) => c,
            Err(e) => {
                stats.event_failures.fetch_add(1, Ordering::Relaxed);
                self.refusals.refused("the broker is unreachable", &e);
                self.note_broker();
                return;
            }
        };
        if let Err(e) = c.announce(&self.stream, &orders).await {
            stats.event_failures.fetch_add(1, Ordering::Relaxed);
            self.refusals.refused("publish failed", &e);
            // A queue the broker lost was declared again on this connection: keep it.
            if !matches!(
                e,
                Error::Amqp {
                    kind: crate::error::AmqpErrorKind::NotFound,
                    ..
                }
            ) {
                self.conn = None;
            }
            self.note_broker();
            return;
        }
        self.refusals.published();
        self.note_broker();
        stats
            .events_published
            .fetch_add(orders.len() as u64, Ordering::Relaxed);
        self.recheck
            .announced(orders.iter().map(|o| o.id).collect());
        if let Err(e) = clear_outbox(&self.db, &groups).await {
            stats.event_failures.fetch_add(1, Ordering::Relaxed);
            // Published but still in the outbox: the sweep sends them again; workers see
            // the order's status and handle each once.
            tracing::warn!(error = %e, "order events: clearing the outbox failed");
        }
    }
}

/// The publisher's broker connection, made now if there is none.
async fn connected<'a>(
    conn: &'a mut Option<EventsConn>,
    target: &EventsTarget,
    stream: &str,
) -> Result<&'a mut EventsConn> {
    let c = match conn.take() {
        Some(c) => c,
        None => target.connect(stream).await?,
    };
    Ok(conn.insert(c))
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

/// What the events publisher does after Redis refuses a round (down, or full under
/// `maxmemory`): it leaves new events to the outbox for a pause that doubles up to 5 s
/// instead of trying (and reconnecting) for every group, and logs one line per 10 s
/// instead of one per round (a line per round floods the log at thousands of orders a
/// second).
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
                "order events: the broker takes them again"
            );
        }
        *self = Refusals::new();
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
}
