//! [`FanoutConfig`]; its URL selects a [`RedisTarget`] (single node, Sentinel, Cluster).

use std::fmt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fanout::wire::PayloadFormat;
use crate::redis::target::without_auth;
pub use crate::redis::target::RedisTarget;

/// When a batch is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PublishPoint {
    /// As soon as the batch is sealed, before it commits: lowest latency, but a consumer
    /// may see a tick the database then rejects.
    Sealed,
    /// After the batch commits: consumers never see a tick the database does not have.
    #[default]
    Committed,
}

/// Redis fan-out of an [`Ingestor`](crate::Ingestor): every batch, grouped by symbol, is
/// published to `md:{SYMBOL}`, appended to the capped stream `md:{SYMBOL}:ticks` and
/// sets the hash `md:{SYMBOL}:latest` (see [`wire`](crate::fanout::wire)).
#[derive(Clone, PartialEq, Eq)]
pub struct FanoutConfig {
    /// `redis://…` (one server), `redis+sentinel://…/master` or `redis+cluster://…`.
    pub url: String,
    /// JSON (default) or rkyv.
    pub format: PayloadFormat,
    /// Publish when a batch is sealed or once it is committed (default).
    pub publish: PublishPoint,
    /// Entries kept in each symbol's stream (`XADD … MAXLEN ~ N`, default 10,000). Each
    /// entry is one message, so at least the last N ticks can be replayed. 0 turns the
    /// streams off.
    pub stream_max_len: usize,
    /// How far back each symbol's stream reaches (`XADD … MINID now−age`, at most once a
    /// second per symbol, when it gets a message; default 60 s; zero: no age bound). A
    /// symbol that stops trading keeps its last messages until it trades again. Under load
    /// a message carries many ticks (a round trip's worth), so `stream_max_len` alone does
    /// not bound Redis's memory: a soak of 500 symbols at 175–350 k ticks/s grew it to
    /// 23 GB before the kernel killed it. With the age bound it stays near rate × age ×
    /// ~145 bytes (JSON). Stream ids are Redis's clock, the cut is this host's: skew shifts
    /// the window.
    pub stream_max_age: Duration,
    /// How long a symbol's keys (`md:{SYMBOL}:ticks`, `md:{SYMBOL}:latest`) outlive its
    /// last message (default 10 min; zero: forever). The expiry is refreshed at most every
    /// quarter of it, so a quiet symbol's keys go between ¾ and all of it after its last
    /// message. This is what bounds Redis's memory under symbol cardinality: without it one
    /// request with 95,325 distinct symbols left 190,683 keys (+415 MiB) for good.
    pub key_ttl: Duration,
    /// The shortest time between the starts of two publishing round trips (default zero:
    /// each starts as soon as the last returns). What queues up in between goes out
    /// together, one message per symbol: while commits come every few milliseconds, each
    /// symbol's ticks of several commits share a PUBLISH, an XADD and an HSET instead of
    /// paying for them per commit. It adds at most this to a tick's delivery, and nothing
    /// when rounds are rarer than this.
    pub round_interval: Duration,
    /// Batches the fan-out queue holds (default 4,096). When Redis is slow or down the
    /// oldest is dropped and counted; PostgreSQL never waits for Redis.
    pub queue_batches: usize,
    /// Ticks the fan-out queue holds, over all its batches (default 1,048,576): past it the
    /// oldest batches are dropped and counted too, all but the newest. The batch bound alone
    /// fits neither end: at 200 k ticks/s with a short linger, 256 batches of about 100
    /// ticks were 130 ms of a stalled publisher; 256 batches of 50,000 rows held 12.8 M
    /// ticks (about 1 GB) while Redis was away.
    pub queue_ticks: usize,
    /// First reconnect delay, doubling up to `reconnect_max` (default 50 ms … 2 s).
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// How long `shutdown` waits for the queue to reach Redis before dropping the rest
    /// (default 2 s).
    pub drain_timeout: Duration,
}

impl fmt::Debug for FanoutConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanoutConfig")
            .field("url", &without_auth(&self.url))
            .field("format", &self.format)
            .field("publish", &self.publish)
            .field("stream_max_len", &self.stream_max_len)
            .field("stream_max_age", &self.stream_max_age)
            .field("key_ttl", &self.key_ttl)
            .field("round_interval", &self.round_interval)
            .field("queue_batches", &self.queue_batches)
            .field("queue_ticks", &self.queue_ticks)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}

impl FanoutConfig {
    /// Fan-out to `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        FanoutConfig {
            url: url.into(),
            format: PayloadFormat::Json,
            publish: PublishPoint::Committed,
            stream_max_len: 10_000,
            stream_max_age: Duration::from_secs(60),
            key_ttl: Duration::from_secs(600),
            round_interval: Duration::ZERO,
            queue_batches: 4_096,
            queue_ticks: 1 << 20,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(2),
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<RedisTarget> {
        let target = RedisTarget::parse(&self.url)?;
        if !(1..=1 << 20).contains(&self.queue_batches) {
            return Err(Error::config(
                "fanout.queue_batches",
                "must be between 1 and 1,048,576",
            ));
        }
        if !(1..=1 << 30).contains(&self.queue_ticks) {
            return Err(Error::config(
                "fanout.queue_ticks",
                "must be between 1 and 1,073,741,824",
            ));
        }
        if !self.key_ttl.is_zero() && self.key_ttl < Duration::from_secs(1) {
            return Err(Error::config(
                "fanout.key_ttl",
                "must be zero (no expiry) or at least 1 s",
            ));
        }
        if self.round_interval > Duration::from_secs(1) {
            return Err(Error::config(
                "fanout.round_interval",
                "must be at most 1 s",
            ));
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return Err(Error::config(
                "fanout.reconnect_min",
                "must be non-zero and at most reconnect_max",
            ));
        }
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_passwords() {
        let cfg = FanoutConfig::new("redis://u:hunter2@h:1");
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
