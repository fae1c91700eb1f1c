//! [`FanoutConfig`] and the Redis topology its URL selects.

use std::fmt;
use std::time::Duration;

use crate::fanout::wire::PayloadFormat;
use crate::{Error, Result};

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

/// Where the Redis servers are, from one URL.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server: `redis://[user:password@]host:port[/db]`.
    Node(String),
    /// A master found through Sentinel:
    /// `redis+sentinel://[user:password@]host:port[,host:port…]/master-name[/db]`.
    /// The credentials and db are the master's; sentinels are asked without them.
    Sentinel {
        /// `host:port` of each sentinel, asked in order.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
        /// `user:password@` (may be empty) for the master.
        auth: String,
        /// Database number on the master.
        db: i64,
    },
    /// A Redis Cluster: `redis+cluster://[user:password@]host:port[,host:port…]` (any nodes;
    /// the rest are discovered).
    Cluster {
        /// `redis://[auth@]host:port` of each seed node.
        nodes: Vec<String>,
    },
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // URLs may carry a password; show only the topology and hosts.
        match self {
            RedisTarget::Node(url) => write!(f, "Node({})", without_auth(url)),
            RedisTarget::Sentinel {
                sentinels, master, ..
            } => write!(f, "Sentinel({sentinels:?}, master {master})"),
            RedisTarget::Cluster { nodes } => {
                let nodes: Vec<_> = nodes.iter().map(|n| without_auth(n)).collect();
                write!(f, "Cluster({nodes:?})")
            }
        }
    }
}

fn without_auth(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl RedisTarget {
    /// Parses `redis://…`, `redis+sentinel://…` or `redis+cluster://…`.
    pub fn parse(url: &str) -> Result<RedisTarget> {
        let bad = |why: &str| Error::config("fanout.url", format!("{}: {why}", without_auth(url)));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected redis://, redis+sentinel:// or redis+cluster://"))?;
        let (auth, rest) = match rest.rfind('@') {
            Some(at) => (&rest[..=at], &rest[at + 1..]),
            None => ("", rest),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let hosts: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| {
                if h.contains(':') {
                    h.to_string()
                } else {
                    format!("{h}:6379")
                }
            })
            .collect();
        if hosts.is_empty() {
            return Err(bad("no host"));
        }
        match scheme {
            "redis" => {
                if hosts.len() != 1 {
                    return Err(bad(
                        "redis:// takes one host; use redis+cluster:// for several",
                    ));
                }
                Ok(RedisTarget::Node(url.to_string()))
            }
            "redis+sentinel" => {
                let mut parts = path.split('/').filter(|p| !p.is_empty());
                let master = parts
                    .next()
                    .ok_or_else(|| bad("the master's name must follow the hosts"))?
                    .to_string();
                let db = match parts.next() {
                    Some(db) => db.parse().map_err(|_| bad("the db must be a number"))?,
                    None => 0,
                };
                Ok(RedisTarget::Sentinel {
                    sentinels: hosts,
                    master,
                    auth: auth.to_string(),
                    db,
                })
            }
            "redis+cluster" => Ok(RedisTarget::Cluster {
                nodes: hosts.iter().map(|h| format!("redis://{auth}{h}")).collect(),
            }),
            _ => Err(bad("unknown scheme")),
        }
    }
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
    /// Batches the fan-out queue holds (default 256). When Redis is slow or down the oldest
    /// is dropped and counted; PostgreSQL never waits for Redis.
    pub queue_batches: usize,
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
            .field("queue_batches", &self.queue_batches)
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
            queue_batches: 256,
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
    fn urls_select_the_topology() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379/2").unwrap(),
            RedisTarget::Node("redis://127.0.0.1:6379/2".into())
        );
        assert_eq!(
            RedisTarget::parse("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2/md-master/1").unwrap(),
            RedisTarget::Sentinel {
                sentinels: vec!["10.0.0.1:26379".into(), "10.0.0.2:6379".into()],
                master: "md-master".into(),
                auth: ":pw@".into(),
                db: 1,
            }
        );
        assert_eq!(
            RedisTarget::parse("redis+cluster://a:7000,b:7001").unwrap(),
            RedisTarget::Cluster {
                nodes: vec!["redis://a:7000".into(), "redis://b:7001".into()]
            }
        );
        for bad in [
            "http://x",
            "redis+sentinel://a:1",
            "redis://a:1,b:2",
            "redis+cluster://",
            "nohost",
        ] {
            match RedisTarget::parse(bad) {
                Err(Error::Config { field, .. }) => assert_eq!(field, "fanout.url"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn debug_hides_passwords() {
        let cfg = FanoutConfig::new("redis://u:hunter2@h:1");
        assert!(!format!("{cfg:?}").contains("hunter2"));
        let t = RedisTarget::parse("redis+cluster://u:hunter2@a:1").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
