//! [`OrderWorker`]: the consumer side of the order events stream, on Redis or RabbitMQ
//! (the `redis_url`'s scheme chooses: `amqp://` and `amqps://` are RabbitMQ).
//!
//! RabbitMQ: the worker consumes the events queue with manual acknowledgements and a
//! prefetch of `prefetch` deliveries; a worker that dies (or whose connection breaks)
//! before `ack` has its deliveries redelivered at once, flagged `claimed`. It reconnects
//! with backoff by itself. Redis, below:
//!
//! Workers of one consumer group share the stream: each event goes to one of them and stays
//! pending until acknowledged. A worker that dies before `ack` leaves its events pending;
//! after `claim_idle` another worker claims them (`XAUTOCLAIM`) before reading new ones.
//! [`OrderWorker::transition`] changes an order's status only from the statuses given, so an
//! event handled twice moves the order once. [`OrderWorker::next_batch`],
//! [`OrderWorker::transition_many`] and [`OrderWorker::ack_many`] do the same for a batch of
//! events in one round trip each.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use redis::Value;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::error::{Error, RedisErrorKind, Result};
use crate::orders::amqp::{AmqpConsumer, AmqpTarget};
use crate::orders::stream::text;
use crate::orders::types::OrderStatus;
use crate::pg;
use crate::redis::connection::{self, RedisConn};
use crate::redis::target::RedisTarget;

/// How an [`OrderWorker`] connects and consumes.
#[derive(Clone, PartialEq, Eq)]
pub struct OrderWorkerConfig {
    /// The events broker: Redis holding the stream (`redis://`, `redis+sentinel://`,
    /// `redis+cluster://`) or RabbitMQ holding the queue (`amqp://`, or `amqps://` over
    /// TLS).
    pub redis_url: String,
    /// For an `amqps://` URL: a PEM file of the CA certificates that signed a private
    /// broker's certificate, trusted besides the system's roots; `None`: the system's roots
    /// only (default).
    pub tls_ca: Option<PathBuf>,
    /// PostgreSQL holding the orders (the primary).
    pub database_url: String,
    /// The events stream (default `orders:events`).
    pub stream: String,
    /// The consumer group (default `order-workers`); created if missing.
    pub group: String,
    /// This worker's name within the group.
    pub consumer: String,
    /// An event pending this long with a dead worker is claimed by this one (default 30 s).
    pub claim_idle: Duration,
    /// How long `next` waits for a new event (default 1 s).
    pub block: Duration,
    /// RabbitMQ: most deliveries this worker holds unacknowledged (default 256).
    pub prefetch: u16,
    /// After this many failed attempts ([`OrderWorker::reject`]) an event goes to the
    /// dead-letter queue (`<queue>.dead` on RabbitMQ, `<stream>:dead` on Redis) with its
    /// reason (default 5).
    pub max_attempts: u32,
}

impl std::fmt::Debug for OrderWorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderWorkerConfig")
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("claim_idle", &self.claim_idle)
            .finish_non_exhaustive()
    }
}

impl OrderWorkerConfig {
    /// A worker named `consumer` with the defaults.
    pub fn new(
        redis_url: impl Into<String>,
        database_url: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        OrderWorkerConfig {
            redis_url: redis_url.into(),
            tls_ca: None,
            database_url: database_url.into(),
            stream: "orders:events".into(),
            group: "order-workers".into(),
            consumer: consumer.into(),
            claim_idle: Duration::from_secs(30),
            block: Duration::from_secs(1),
            prefetch: 256,
            max_attempts: 5,
        }
    }
}

/// One `order.accepted` event.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderEvent {
    /// The stream entry id, or on RabbitMQ the delivery's id: what `ack` acknowledges.
    pub stream_id: String,
    /// The event type (`order.accepted`).
    pub kind: String,
    /// The order's id.
    pub order_id: i64,
    /// The order as JSON, as it was when accepted.
    pub order: serde_json::Value,
    /// True when this worker claimed it from another that did not acknowledge it (on
    /// RabbitMQ: a redelivery).
    pub claimed: bool,
}

/// Consumes order events; see the module docs.
pub struct OrderWorker {
    config: OrderWorkerConfig,
    queue: WorkerQueue,
    db: Client,
}

/// The broker a worker consumes from.
enum WorkerQueue {
    Redis(RedisConn),
    /// Boxed: far larger than a Redis connection, and one per worker.
    Amqp(Box<AmqpConsumer>),
}

impl std::fmt::Debug for OrderWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderWorker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// `[id, [field, value, …]]` → an event.
fn entry(v: &Value, claimed: bool) -> Result<Option<OrderEvent>> {
    let Value::Array(parts) = v else {
        return Ok(None);
    };
    let (Some(id), Some(Value::Array(kv))) = (parts.first().and_then(text), parts.get(1)) else {
        return Ok(None);
    };
    let mut fields = HashMap::new();
    for pair in kv.chunks(2) {
        if let (Some(k), Some(v)) = (pair.first().and_then(text), pair.get(1).and_then(text)) {
            fields.insert(k, v);
        }
    }
    let bad = |what: &str| Error::field("order event", format!("entry {id}: {what}"));
    Ok(Some(OrderEvent {
        kind: fields.get("type").cloned().ok_or_else(|| bad("no type"))?,
        order_id: fields
            .get("order_id")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no order_id"))?,
        order: fields
            .get("order")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| bad("no order"))?,
        stream_id: id,
        claimed,
    }))
}

/// Creates the consumer group (and the stream) unless it exists; a new group reads from
/// the stream's start.
async fn create_group(redis: &mut RedisConn, config: &OrderWorkerConfig) -> Result<()> {
    let created: Result<Value> = query(
        redis,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&config.stream)
            .arg(&config.group)
            .arg("0")
            .arg("MKSTREAM"),
    )
    .await;
    match created {
        Ok(_) => Ok(()),
        Err(Error::Redis {
            kind: RedisErrorKind::BusyGroup,
            ..
        }) => Ok(()),
        Err(e) => Err(e),
    }
}

impl OrderWorker {
    /// Connects to Redis and PostgreSQL and creates the consumer group if needed.
    pub async fn connect(config: OrderWorkerConfig) -> Result<OrderWorker> {
        let queue = if AmqpTarget::is_amqp(&config.redis_url) {
            WorkerQueue::Amqp(Box::new(
                AmqpConsumer::connect(
                    AmqpTarget::parse(&config.redis_url, config.tls_ca.as_deref())?,
                    &config.stream,
                    &config.consumer,
                    config.prefetch,
                    config.max_attempts,
                )
                .await?,
            ))
        } else if config.tls_ca.is_some() {
            return Err(Error::config(
                "worker tls ca",
                "a CA file is for amqps:// URLs; the events URL names Redis",
            ));
        } else {
            let mut redis = connection::connect(&RedisTarget::parse(&config.redis_url)?).await?;
            create_group(&mut redis, &config).await?;
            WorkerQueue::Redis(redis)
        };
        let db = pg::connect(
            &pg::parse_url(&config.database_url)?,
            "christmas-order-worker",
            "connecting the order worker",
        )
        .await?;
        Ok(OrderWorker { config, queue, db })
    }

    /// The next event: one a dead worker left pending for `claim_idle`, else a new one
    /// (waiting up to `block`). `None` when there is none.
    pub async fn next(&mut self) -> Result<Option<OrderEvent>> {
        Ok(self.next_batch(1).await?.pop())
    }

    /// Up to `max` events: those dead workers left pending for `claim_idle` when there are
    /// any, else new ones (waiting up to `block` for the first). Empty when there are none.
    ///
    /// With [`OrderWorker::transition_many`] and [`OrderWorker::ack_many`], a batch costs
    /// three round trips however many orders it holds, where one event at a time costs
    /// five per order.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<OrderEvent>> {
        let redis = match &mut self.queue {
            WorkerQueue::Amqp(c) => {
                let raw = c.next_batch(max.max(1), self.config.block).await;
                return Ok(raw
                    .into_iter()
                    .map(|(stream_id, kind, order_id, order, claimed)| OrderEvent {
                        stream_id,
                        kind,
                        order_id,
                        order,
                        claimed,
                    })
                    .collect());
            }
            WorkerQueue::Redis(r) => r,
        };
        match take(redis, &self.config, max).await {
            // Redis lost the stream and its group (a restart without persistence, a
            // failover): the group is made again, and the desk's re-check announces again
            // the orders whose events went with it.
            Err(Error::Redis {
                kind: RedisErrorKind::NoGroup,
                ..
            }) => {
                tracing::warn!(
                    stream = %self.config.stream,
                    group = %self.config.group,
                    "order worker: the consumer group is gone; creating it again"
                );
                create_group(redis, &self.config).await?;
                take(redis, &self.config, max).await
            }
            other => other,
        }
    }

    /// Moves order `id` to `to` if its status is one of `from`; true when it moved. An event
    /// handled twice therefore moves the order once.
    pub async fn transition(&self, id: i64, from: &[OrderStatus], to: OrderStatus) -> Result<bool> {
        Ok(!self.transition_many(&[id], from, to).await?.is_empty())
    }

    /// [`OrderWorker::transition`] for many orders in one statement: moves each of `ids`
    /// whose status is one of `from` to `to`, and returns the ids that moved.
    pub async fn transition_many(
        &self,
        ids: &[i64],
        from: &[OrderStatus],
        to: OrderStatus,
    ) -> Result<Vec<i64>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let rows = self
            .db
            .query_typed(
                "UPDATE orders SET status = $2, status_changes = status_changes + 1, updated_at = now() \
                 WHERE id = ANY($1) AND status = ANY($3) RETURNING id",
                &[(&ids, Type::INT8_ARRAY), (&to.as_str(), Type::TEXT), (&from, Type::TEXT_ARRAY)],
            )
            .await
            .map_err(|e| Error::pg("moving orders", e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Acknowledges `event`: it will not be delivered again.
    pub async fn ack(&mut self, event: &OrderEvent) -> Result<()> {
        self.ack_many(std::slice::from_ref(event)).await
    }

    /// Acknowledges `events` in one command.
    pub async fn ack_many(&mut self, events: &[OrderEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let redis = match &mut self.queue {
            WorkerQueue::Amqp(c) => {
                let ids: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
                return c.ack(&ids).await;
            }
            WorkerQueue::Redis(r) => r,
        };
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.config.stream).arg(&self.config.group);
        for e in events {
            cmd.arg(&e.stream_id);
        }
        let _: Value = query(redis, &cmd).await?;
        Ok(())
    }

    /// This worker could not handle `event` (`reason` says why). Before `max_attempts`
    /// failures it is delivered again (RabbitMQ: queued again at once with its attempts
    /// counted; Redis: left pending, claimed after `claim_idle`); at `max_attempts` it goes
    /// to the dead-letter queue with `reason` and is acknowledged. Returns true when it was
    /// dead-lettered.
    pub async fn reject(&mut self, event: &OrderEvent, reason: &str) -> Result<bool> {
        match &mut self.queue {
            WorkerQueue::Amqp(c) => c.reject(&event.stream_id, reason).await,
            WorkerQueue::Redis(r) => reject_redis(r, &self.config, event, reason).await,
        }
    }
}

/// Up to `max` events from Redis: claimed from dead workers, else new ones.
async fn take(
    redis: &mut RedisConn,
    config: &OrderWorkerConfig,
    max: usize,
) -> Result<Vec<OrderEvent>> {
    let max = max.max(1);
    let idle = config.claim_idle.as_millis() as u64;
    let claimed: Value = query(
        redis,
        redis::cmd("XAUTOCLAIM")
            .arg(&config.stream)
            .arg(&config.group)
            .arg(&config.consumer)
            .arg(idle)
            .arg("0-0")
            .arg("COUNT")
            .arg(max),
    )
    .await?;
    // [next id, [entry, …], [deleted id, …]]
    if let Value::Array(parts) = &claimed {
        if let Some(Value::Array(entries)) = parts.get(1) {
            let events = entries
                .iter()
                .filter_map(|e| entry(e, true).transpose())
                .collect::<Result<Vec<_>>>()?;
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }
    let read: Value = query(
        redis,
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&config.group)
            .arg(&config.consumer)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            // Below the connection's 2 s reply timeout.
            .arg(config.block.min(Duration::from_millis(1_500)).as_millis() as u64)
            .arg("STREAMS")
            .arg(&config.stream)
            .arg(">"),
    )
    .await?;
    // RESP2: [[stream, [[id, [k, v, …]], …]]]; RESP3 may answer a map.
    let streams = match read {
        Value::Array(s) => s,
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        _ => return Ok(Vec::new()),
    };
    let mut events = Vec::new();
    for s in &streams {
        if let Value::Array(kv) = s {
            if let Some(Value::Array(entries)) = kv.get(1) {
                for e in entries {
                    events.extend(entry(e, false)?);
                }
            }
        }
    }
    Ok(events)
}

/// [`OrderWorker::reject`] on Redis: the stream counts deliveries in the pending list.
async fn reject_redis(
    redis: &mut RedisConn,
    config: &OrderWorkerConfig,
    event: &OrderEvent,
    reason: &str,
) -> Result<bool> {
    // [[id, consumer, idle ms, times delivered]]
    let pending: Vec<(String, String, u64, u64)> = query(
        redis,
        redis::cmd("XPENDING")
            .arg(&config.stream)
            .arg(&config.group)
            .arg(&event.stream_id)
            .arg(&event.stream_id)
            .arg(1),
    )
    .await?;
    let Some((_, _, _, delivered)) = pending.first() else {
        return Ok(false);
    };
    if *delivered < u64::from(config.max_attempts) {
        return Ok(false);
    }
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("XADD")
        .arg(format!("{}:dead", config.stream))
        .arg("*")
        .arg("type")
        .arg(&event.kind)
        .arg("order_id")
        .arg(event.order_id)
        .arg("order")
        .arg(event.order.to_string())
        .arg("reason")
        .arg(reason)
        .arg("attempts")
        .arg(*delivered)
        .ignore()
        .cmd("XACK")
        .arg(&config.stream)
        .arg(&config.group)
        .arg(&event.stream_id)
        .ignore();
    redis.run(&pipe).await?;
    Ok(true)
}

async fn query<T: redis::FromRedisValue>(conn: &mut RedisConn, cmd: &redis::Cmd) -> Result<T> {
    conn.query(cmd, "consuming order events").await
}
