//! Order events on RabbitMQ (AMQP 0-9-1): the queue and its dead-letter queue, the
//! publisher the outbox uses ([`AmqpPublisher`]) and the consumer an
//! [`OrderWorker`](super::OrderWorker) uses ([`AmqpConsumer`]).
//!
//! Topology: one durable queue named as the events stream (default `orders:events`), a
//! quorum queue where the broker has them (a classic durable queue when a classic one of
//! that name already exists: the broker refuses to change a queue's type), and beside it
//! `<queue>.dead`, where a delivery that failed `max_attempts` times goes with its reason.
//! Events are published to the default exchange, persistent and `mandatory`, on a channel
//! in confirm mode: an outbox row is deleted only after the broker confirmed every event it
//! holds, and an event the broker returns (its queue is gone) fails the round, so the
//! outbox keeps it while the queue is declared again.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};

use crate::error::{AmqpErrorKind, Error, Result};
use crate::orders::types::Order;

/// Header naming the event's type (`order.accepted`).
const TYPE_HEADER: &str = "type";
/// Header holding the order's id.
const ORDER_ID_HEADER: &str = "order_id";
/// How many times a worker failed the event (a header counter: classic queues keep none).
const ATTEMPTS_HEADER: &str = "x-christmas-attempts";
/// Why the last attempt failed (on dead-lettered events).
const REASON_HEADER: &str = "x-christmas-reason";
/// How many times a quorum queue delivered the event before (crashed workers included).
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// A RabbitMQ URL, checked, and for `amqps://` the CA certificates trusted besides the
/// system's roots.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AmqpTarget {
    url: String,
    /// PEM certificates of the CA that signed a private broker's certificate.
    tls_ca: Option<String>,
}

impl std::fmt::Debug for AmqpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("AmqpTarget")
            .field("tls", &self.url.starts_with("amqps://"))
            .finish_non_exhaustive()
    }
}

/// The first line of a PEM certificate.
const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

impl AmqpTarget {
    /// Whether `url` names RabbitMQ rather than Redis.
    pub(crate) fn is_amqp(url: &str) -> bool {
        url.starts_with("amqp://") || url.starts_with("amqps://")
    }

    /// Checks `url` (`amqp://user:pass@host:port/vhost`, or `amqps://…` over TLS) and reads
    /// `tls_ca`, a PEM file of CA certificates the broker's certificate may chain to besides
    /// the system's roots (`amqps://` only).
    pub(crate) fn parse(url: &str, tls_ca: Option<&Path>) -> Result<AmqpTarget> {
        let tls = url.starts_with("amqps://");
        if !tls && !url.starts_with("amqp://") {
            return Err(Error::config(
                "events url",
                "must start with amqp:// or amqps://",
            ));
        }
        url.parse::<lapin::uri::AMQPUri>()
            .map_err(|e| Error::config("events url", e))?;
        let tls_ca = match tls_ca {
            None => None,
            Some(_) if !tls => {
                return Err(Error::config(
                    "events tls ca",
                    "a CA file is for amqps:// URLs; this one is amqp:// (no TLS)",
                ))
            }
            Some(path) => {
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    Error::config("events tls ca", format!("reading {}: {e}", path.display()))
                })?;
                if !pem.contains(PEM_CERTIFICATE) {
                    return Err(Error::config(
                        "events tls ca",
                        format!("{} holds no PEM certificate", path.display()),
                    ));
                }
                Some(pem)
            }
        };
        Ok(AmqpTarget {
            url: url.into(),
            tls_ca,
        })
    }

    async fn connect(&self, name: &str) -> Result<Connection> {
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let tls = OwnedTLSConfig {
            identity: None,
            cert_chain: self.tls_ca.clone(),
        };
        let runtime = lapin::runtime::default_runtime()
            .map_err(|e| amqp_error("connecting to RabbitMQ", e))?;
        // A broker that does not answer must not hang a round.
        match tokio::time::timeout(
            Duration::from_secs(5),
            Connection::connect_with_config(&self.url, props, tls, runtime),
        )
        .await
        {
            Ok(c) => c.map_err(|e| amqp_error("connecting to RabbitMQ", e)),
            Err(_) => Err(Error::Amqp {
                context: "connecting to RabbitMQ",
                kind: AmqpErrorKind::Connection,
                reason: "no answer in 5 s".into(),
            }),
        }
    }
}

/// `lapin`'s error, classified.
pub(crate) fn amqp_error(context: &'static str, e: lapin::Error) -> Error {
    let kind = match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => match p.get_id() {
            404 => AmqpErrorKind::NotFound,
            406 => AmqpErrorKind::PreconditionFailed,
            _ => AmqpErrorKind::Other,
        },
        // rustls reports a failed handshake (a certificate not trusted, a name that does
        // not match) as invalid data; TCP's own failures are other kinds.
        lapin::ErrorKind::IOError(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            return Error::Amqp {
                context,
                kind: AmqpErrorKind::Tls,
                reason: format!(
                    "TLS handshake with the broker failed: {io} (is the CA that signed the \
                     broker's certificate among the system's roots or in the events TLS CA \
                     file?)"
                ),
            }
        }
        lapin::ErrorKind::IOError(_)
        | lapin::ErrorKind::InvalidChannelState(..)
        | lapin::ErrorKind::InvalidConnectionState(_)
        | lapin::ErrorKind::MissingHeartbeatError => AmqpErrorKind::Connection,
        _ => AmqpErrorKind::Other,
    };
    Error::Amqp {
        context,
        kind,
        reason: e.to_string(),
    }
}

fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

/// Declares the events queue (quorum, or classic durable when a classic one exists) and its
/// dead-letter queue on `channel`; returns the channel to use afterwards (a refused
/// declaration closes the channel it was made on).
async fn declare(conn: &Connection, channel: Channel, queue: &str) -> Result<Channel> {
    const CONTEXT: &str = "declaring the order events queue";
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let dlq = dead_letter_queue(queue);
    let channel = match channel
        .queue_declare(queue.into(), QueueDeclareOptions::durable(), quorum.clone())
        .await
    {
        Ok(_) => channel,
        Err(e) => match amqp_error(CONTEXT, e) {
            Error::Amqp {
                kind: AmqpErrorKind::PreconditionFailed,
                reason,
                ..
            } => {
                tracing::warn!(
                    %queue, %reason,
                    "order events: a queue of that name exists and is not a quorum queue; \
                     using it as a classic durable queue (delete it to get a quorum queue)"
                );
                let channel = conn
                    .create_channel()
                    .await
                    .map_err(|e| amqp_error(CONTEXT, e))?;
                channel
                    .queue_declare(
                        queue.into(),
                        QueueDeclareOptions::durable(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| amqp_error(CONTEXT, e))?;
                channel
            }
            e => return Err(e),
        },
    };
    // The dead-letter queue follows the events queue's type where it can.
    let dlq_args = quorum;
    let declared = channel
        .queue_declare(
            dlq.as_str().into(),
            QueueDeclareOptions::durable(),
            dlq_args,
        )
        .await;
    match declared {
        Ok(_) => Ok(channel),
        Err(e) => match amqp_error(CONTEXT, e) {
            Error::Amqp {
                kind: AmqpErrorKind::PreconditionFailed,
                ..
            } => {
                let channel = conn
                    .create_channel()
                    .await
                    .map_err(|e| amqp_error(CONTEXT, e))?;
                channel
                    .queue_declare(
                        dlq.as_str().into(),
                        QueueDeclareOptions::durable(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| amqp_error(CONTEXT, e))?;
                Ok(channel)
            }
            e => Err(e),
        },
    }
}

/// The persistent properties of an event, with `headers`.
fn event_properties(headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_headers(headers)
}

/// The outbox's side: publishes events and waits for the broker's confirms.
pub(crate) struct AmqpPublisher {
    conn: Connection,
    channel: Channel,
    queue: String,
}

impl std::fmt::Debug for AmqpPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpPublisher")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl AmqpPublisher {
    /// Connects, declares the queues and puts the channel in confirm mode.
    pub(crate) async fn connect(target: &AmqpTarget, queue: &str) -> Result<AmqpPublisher> {
        let conn = target.connect("christmas-orders-events").await?;
        let channel = Self::open_channel(&conn, queue).await?;
        Ok(AmqpPublisher {
            conn,
            channel,
            queue: queue.into(),
        })
    }

    async fn open_channel(conn: &Connection, queue: &str) -> Result<Channel> {
        const CONTEXT: &str = "opening the order events channel";
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| amqp_error(CONTEXT, e))?;
        let channel = declare(conn, channel, queue).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| amqp_error(CONTEXT, e))?;
        Ok(channel)
    }

    /// Whether the connection and channel are usable.
    pub(crate) fn is_open(&self) -> bool {
        self.conn.status().connected() && self.channel.status().connected()
    }

    /// Publishes an `order.accepted` event per order and waits until the broker confirmed
    /// every one. A negative confirm fails with [`AmqpErrorKind::Refused`], an event
    /// returned as unroutable (the queue is gone) with [`AmqpErrorKind::NotFound`], after
    /// the queue was declared again.
    pub(crate) async fn announce(&mut self, orders: &[Order]) -> Result<()> {
        const CONTEXT: &str = "publishing order events";
        let bodies: Vec<(i64, Vec<u8>)> = orders.iter().map(|o| (o.id, o.json_bytes())).collect();
        // Every publish is handed to the connection before any is awaited: lapin resolves a
        // publish once the I/O loop wrote its frames, so awaiting them one by one costs a
        // turn of that loop per event, and a round of a thousand events a hundred
        // milliseconds. Together they go out in a few writes, in order (delivery tags are
        // taken when a publish is first polled, which `join_all` does in order).
        let publishes = bodies.iter().map(|(id, body)| {
            let mut headers = FieldTable::default();
            headers.insert(
                TYPE_HEADER.into(),
                AMQPValue::LongString("order.accepted".into()),
            );
            headers.insert(ORDER_ID_HEADER.into(), AMQPValue::LongLongInt(*id));
            self.channel.basic_publish(
                "".into(),
                self.queue.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                event_properties(headers).with_message_id(id.to_string().into()),
            )
        });
        let mut confirms = Vec::with_capacity(orders.len());
        for p in join_all(publishes).await {
            confirms.push(p.map_err(|e| amqp_error(CONTEXT, e))?);
        }
        let mut returned = false;
        for c in join_all(confirms).await {
            let c = c.map_err(|e| amqp_error(CONTEXT, e))?;
            if c.is_nack() {
                return Err(Error::Amqp {
                    context: CONTEXT,
                    kind: AmqpErrorKind::Refused,
                    reason: "the broker answered with a negative confirm".into(),
                });
            }
            returned |= c.take_message().is_some();
        }
        if returned {
            self.redeclare().await?;
            return Err(Error::Amqp {
                context: CONTEXT,
                kind: AmqpErrorKind::NotFound,
                reason: format!("the broker returned events: queue {} was gone", self.queue),
            });
        }
        Ok(())
    }

    /// Declares the queues again on a new channel (after the broker lost them).
    async fn redeclare(&mut self) -> Result<()> {
        tracing::warn!(queue = %self.queue, "order events: the queue is gone; declaring it again");
        self.channel = Self::open_channel(&self.conn, &self.queue).await?;
        Ok(())
    }

    /// How many events wait in the queue undelivered, or `None` when the queue was gone
    /// (it is declared again before this returns).
    pub(crate) async fn ready_events(&mut self) -> Result<Option<u32>> {
        const CONTEXT: &str = "checking the order events queue";
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        // On its own channel: a passive declaration of a missing queue closes its channel.
        let probe = self
            .conn
            .create_channel()
            .await
            .map_err(|e| amqp_error(CONTEXT, e))?;
        let found = probe
            .queue_declare(self.queue.as_str().into(), passive, FieldTable::default())
            .await;
        match found {
            Ok(q) => {
                let _ = probe.close(200, "done".into()).await;
                Ok(Some(q.message_count()))
            }
            Err(e) => match amqp_error(CONTEXT, e) {
                Error::Amqp {
                    kind: AmqpErrorKind::NotFound,
                    ..
                } => {
                    self.redeclare().await?;
                    Ok(None)
                }
                e => Err(e),
            },
        }
    }
}

/// One delivery a worker holds, unacknowledged.
struct Held {
    delivery: lapin::message::Delivery,
}

/// The worker's side: consumes with manual acks and a bounded prefetch, reconnecting with
/// backoff after the connection or channel broke.
pub(crate) struct AmqpConsumer {
    target: AmqpTarget,
    queue: String,
    consumer_tag: String,
    prefetch: u16,
    max_attempts: u32,
    /// `None` while disconnected.
    live: Option<Live>,
    /// Bumped at each reconnect: an event's id carries it, so an ack for a delivery of a
    /// channel that is gone is skipped (the broker delivers that event again).
    generation: u64,
    /// When the next reconnect may be tried, and the pause after it.
    retry_at: Instant,
    pause: Duration,
    held: HashMap<u64, Held>,
}

struct Live {
    _conn: Connection,
    channel: Channel,
    consumer: Consumer,
}

impl std::fmt::Debug for AmqpConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConsumer")
            .field("queue", &self.queue)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// A delivery as the worker API hands it over: (event id, kind, order id, order JSON,
/// redelivered).
pub(crate) type RawEvent = (String, String, i64, serde_json::Value, bool);

impl AmqpConsumer {
    /// Connects and starts consuming `queue` (declared if missing).
    pub(crate) async fn connect(
        target: AmqpTarget,
        queue: &str,
        consumer_tag: &str,
        prefetch: u16,
        max_attempts: u32,
    ) -> Result<AmqpConsumer> {
        let mut c = AmqpConsumer {
            target,
            queue: queue.into(),
            consumer_tag: consumer_tag.into(),
            prefetch: prefetch.max(1),
            max_attempts: max_attempts.max(1),
            live: None,
            generation: 0,
            retry_at: Instant::now(),
            pause: Duration::from_millis(100),
            held: HashMap::new(),
        };
        c.live = Some(c.open().await?);
        Ok(c)
    }

    async fn open(&mut self) -> Result<Live> {
        const CONTEXT: &str = "starting to consume order events";
        let conn = self.target.connect(&self.consumer_tag).await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| amqp_error(CONTEXT, e))?;
        let channel = declare(&conn, channel, &self.queue).await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| amqp_error(CONTEXT, e))?;
        // Confirms for the copies `reject` publishes.
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| amqp_error(CONTEXT, e))?;
        let consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                self.consumer_tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_error(CONTEXT, e))?;
        self.generation += 1;
        self.held.clear();
        Ok(Live {
            _conn: conn,
            channel,
            consumer,
        })
    }

    /// Up to `max` deliveries, waiting up to `block` for the first. While the broker is
    /// unreachable, waits (up to `block`) and answers none: it reconnects with a pause
    /// that doubles up to 5 s.
    pub(crate) async fn next_batch(&mut self, max: usize, block: Duration) -> Vec<RawEvent> {
        let Some(live) = self.live.as_mut() else {
            self.reconnect(block).await;
            return Vec::new();
        };
        let mut out = Vec::new();
        let first = tokio::time::timeout(block, live.consumer.next()).await;
        let mut next = match first {
            Err(_) => return out,
            Ok(n) => n,
        };
        loop {
            match next {
                Some(Ok(d)) => {
                    out.push(self.hold(d));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "order worker: the RabbitMQ channel broke");
                    self.live = None;
                    return out;
                }
                None => {
                    tracing::warn!("order worker: RabbitMQ ended the consumer (queue deleted?)");
                    self.live = None;
                    return out;
                }
            }
            if out.len() >= max {
                return out;
            }
            let Some(live) = self.live.as_mut() else {
                return out;
            };
            match live.consumer.next().now_or_never() {
                Some(n) => next = n,
                None => return out,
            }
        }
    }

    async fn reconnect(&mut self, block: Duration) {
        let now = Instant::now();
        if now < self.retry_at {
            tokio::time::sleep((self.retry_at - now).min(block)).await;
            return;
        }
        match self.open().await {
            Ok(live) => {
                tracing::info!(queue = %self.queue, "order worker: consuming from RabbitMQ again");
                self.live = Some(live);
                self.pause = Duration::from_millis(100);
            }
            Err(e) => {
                tracing::warn!(error = %e, pause_ms = self.pause.as_millis() as u64,
                    "order worker: RabbitMQ unreachable; trying again");
                self.retry_at = Instant::now() + self.pause;
                self.pause = (self.pause * 2).min(Duration::from_secs(5));
            }
        }
    }

    fn hold(&mut self, d: lapin::message::Delivery) -> RawEvent {
        let headers = d.properties.headers().clone().unwrap_or_default();
        let kind = match headers.inner().get(TYPE_HEADER) {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            _ => String::new(),
        };
        let order_id = header_int(&headers, ORDER_ID_HEADER).unwrap_or(-1);
        let order = serde_json::from_slice(&d.data).unwrap_or(serde_json::Value::Null);
        let id = format!("{}.{}", self.generation, d.delivery_tag);
        let redelivered = d.redelivered;
        self.held.insert(d.delivery_tag, Held { delivery: d });
        (id, kind, order_id, order, redelivered)
    }

    /// The delivery tag of event `id`, when it came on the live channel.
    fn tag(&self, id: &str) -> Option<u64> {
        let (generation, tag) = id.split_once('.')?;
        (generation.parse::<u64>().ok()? == self.generation)
            .then(|| tag.parse().ok())
            .flatten()
    }

    /// Acknowledges the events `ids` names. Those of a channel that broke are skipped: the
    /// broker delivers them again, and the worker's transitions make that harmless.
    pub(crate) async fn ack(&mut self, ids: &[&str]) -> Result<()> {
        const CONTEXT: &str = "acknowledging order events";
        let tags: Vec<u64> = ids.iter().filter_map(|id| self.tag(id)).collect();
        let Some(live) = self.live.as_ref() else {
            return Ok(());
        };
        for tag in &tags {
            self.held.remove(tag);
        }
        // All handed to the connection before any is awaited (see `announce`).
        let acks = tags
            .iter()
            .map(|tag| live.channel.basic_ack(*tag, BasicAckOptions::default()));
        for done in join_all(acks).await {
            if let Err(e) = done {
                self.live = None;
                return Err(amqp_error(CONTEXT, e));
            }
        }
        Ok(())
    }

    /// A worker could not handle event `id`: it is queued again with its attempts counted,
    /// or, at `max_attempts`, moved to the dead-letter queue with `reason`. Returns true
    /// when it was dead-lettered.
    pub(crate) async fn reject(&mut self, id: &str, reason: &str) -> Result<bool> {
        const CONTEXT: &str = "rejecting an order event";
        let Some(tag) = self.tag(id) else {
            return Ok(false);
        };
        let (Some(live), Some(held)) = (self.live.as_ref(), self.held.remove(&tag)) else {
            return Ok(false);
        };
        let d = held.delivery;
        let mut headers = d.properties.headers().clone().unwrap_or_default();
        // Crashed workers' deliveries count too, where the queue counts them (quorum).
        let attempts = header_int(&headers, ATTEMPTS_HEADER)
            .unwrap_or(0)
            .max(header_int(&headers, DELIVERY_COUNT_HEADER).unwrap_or(0))
            + 1;
        let dead = attempts >= i64::from(self.max_attempts);
        headers.insert(ATTEMPTS_HEADER.into(), AMQPValue::LongLongInt(attempts));
        headers.insert(
            REASON_HEADER.into(),
            AMQPValue::LongString(LongString::from(reason.to_string())),
        );
        let to = if dead {
            dead_letter_queue(&self.queue)
        } else {
            self.queue.clone()
        };
        let properties = event_properties(headers);
        let properties = match d.properties.message_id() {
            Some(m) => properties.with_message_id(m.clone()),
            None => properties,
        };
        let confirm = live
            .channel
            .basic_publish(
                "".into(),
                ShortString::from(to),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &d.data,
                properties,
            )
            .await
            .map_err(|e| amqp_error(CONTEXT, e))?
            .await
            .map_err(|e| amqp_error(CONTEXT, e))?;
        if confirm.is_nack() || confirm.take_message().is_some() {
            return Err(Error::Amqp {
                context: CONTEXT,
                kind: AmqpErrorKind::Refused,
                reason: "the broker did not take the event's copy; it stays unacknowledged".into(),
            });
        }
        // The copy is safe: the original goes.
        live.channel
            .basic_ack(tag, BasicAckOptions::default())
            .await
            .map_err(|e| amqp_error(CONTEXT, e))?;
        Ok(dead)
    }
}

/// An integer header's value, whatever integer type the sender chose.
fn header_int(headers: &FieldTable, key: &str) -> Option<i64> {
    match headers.inner().get(key)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}
