//! Where order events go: a Redis stream (the default) or a RabbitMQ queue, chosen by the
//! events URL's scheme. The outbox and the re-check speak to [`EventsConn`] and do not care
//! which.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::orders::amqp::{AmqpPublisher, AmqpTarget};
use crate::orders::stream::{announce, trim_acknowledged, worker_progress, WorkerProgress};
use crate::orders::types::Order;
use crate::redis::connection::{self, RedisConn};
use crate::redis::target::RedisTarget;

/// The broker an events URL names.
#[derive(Debug, Clone)]
pub(crate) enum EventsTarget {
    /// `redis://`, `redis+sentinel://`, `redis+cluster://`: a stream with consumer groups.
    Redis(RedisTarget),
    /// `amqp://`, `amqps://`: a durable (quorum) queue.
    Amqp(AmqpTarget),
}

impl EventsTarget {
    /// Reads `url`: `amqp://…` or `amqps://…` is RabbitMQ, anything else must be a Redis
    /// URL. `tls_ca` (a PEM file of CA certificates) is for `amqps://` only.
    pub(crate) fn parse(url: &str, tls_ca: Option<&Path>) -> Result<EventsTarget> {
        if AmqpTarget::is_amqp(url) {
            Ok(EventsTarget::Amqp(AmqpTarget::parse(url, tls_ca)?))
        } else if tls_ca.is_some() {
            Err(Error::config(
                "events tls ca",
                "a CA file is for amqps:// URLs; the events URL names Redis",
            ))
        } else {
            Ok(EventsTarget::Redis(RedisTarget::parse(url)?))
        }
    }

    /// `"redis"` or `"amqp"`, for metrics and logs.
    pub(crate) fn backend(&self) -> &'static str {
        match self {
            EventsTarget::Redis(_) => "redis",
            EventsTarget::Amqp(_) => "amqp",
        }
    }

    /// Connects (and, for RabbitMQ, declares the queues of `stream`).
    pub(crate) async fn connect(&self, stream: &str) -> Result<EventsConn> {
        Ok(match self {
            EventsTarget::Redis(t) => EventsConn::Redis(connection::connect(t).await?),
            EventsTarget::Amqp(t) => {
                EventsConn::Amqp(Box::new(AmqpPublisher::connect(t, stream).await?))
            }
        })
    }
}

/// A connection to the events broker.
#[derive(Debug)]
pub(crate) enum EventsConn {
    /// Redis.
    Redis(RedisConn),
    /// RabbitMQ, its channel in confirm mode (boxed: one per desk, and far larger).
    Amqp(Box<AmqpPublisher>),
}

impl EventsConn {
    /// Adds an `order.accepted` event per order; `Ok` once the broker holds them all.
    pub(crate) async fn announce(&mut self, stream: &str, orders: &[Order]) -> Result<()> {
        match self {
            EventsConn::Redis(c) => announce(c, stream, orders).await,
            EventsConn::Amqp(p) => p.announce(orders).await,
        }
    }

    /// Trims what every worker acknowledged (Redis); RabbitMQ removes acknowledged
    /// deliveries itself. Returns how many went.
    pub(crate) async fn trim(&mut self, stream: &str) -> Result<u64> {
        match self {
            EventsConn::Redis(c) => trim_acknowledged(c, stream).await,
            EventsConn::Amqp(_) => Ok(0),
        }
    }

    /// Whether the workers took every event older than `within` (see [`WorkerProgress`]).
    /// RabbitMQ tells only how many events wait undelivered: none is caught up, some is
    /// behind, and a lost queue is declared again and answered [`WorkerProgress::Lost`].
    pub(crate) async fn progress(
        &mut self,
        stream: &str,
        within: Duration,
    ) -> Result<WorkerProgress> {
        match self {
            EventsConn::Redis(c) => worker_progress(c, stream, within).await,
            EventsConn::Amqp(p) => Ok(match p.ready_events().await? {
                Some(0) => WorkerProgress::CaughtUp,
                Some(_) => WorkerProgress::Behind,
                None => WorkerProgress::Lost,
            }),
        }
    }

    /// Whether the connection still looks usable (a broken RabbitMQ channel shows at once).
    pub(crate) fn is_open(&self) -> bool {
        match self {
            EventsConn::Redis(_) => true,
            EventsConn::Amqp(p) => p.is_open(),
        }
    }
}

/// Whether `e` means the broker connection should be dropped and made again.
pub(crate) fn breaks_connection(e: &Error) -> bool {
    matches!(e, Error::Redis { .. } | Error::Amqp { .. })
}
