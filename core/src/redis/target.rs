//! [`RedisTarget`]: where the Redis servers are (one node, a master found through
//! Sentinel, or a cluster), parsed from one URL.

use std::fmt;

use crate::error::{Error, Result};
use crate::redis::tls;
use crate::tls::TlsSettings;

/// Where the Redis servers are, from one URL. Each form has a TLS twin (`rediss://`,
/// `rediss+sentinel://`, `rediss+cluster://`) that takes `sslmode` (`require`, `verify-ca`,
/// `verify-full`, the default) and `sslrootcert` (a CA file, or `system`) in its query:
/// `rediss://h:6380/0?sslrootcert=/etc/christmas/ca.pem`.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server: `redis://[user:password@]host:port[/db]`, or `rediss://…` over TLS.
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
        /// TLS to the sentinels and the master (`rediss+sentinel://`).
        tls: Option<TlsSettings>,
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

/// `url` without its `user:password@`, for logs and `Debug`.
pub(crate) fn without_auth(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl RedisTarget {
    /// Parses `redis://…`, `redis+sentinel://…` or `redis+cluster://…` (or their
    /// `rediss` twins over TLS; a CA file named is read when connecting).
    pub fn parse(url: &str) -> Result<RedisTarget> {
        let bad = |why: &str| Error::config("fanout.url", format!("{}: {why}", without_auth(url)));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected redis://, redis+sentinel:// or redis+cluster://"))?;
        let tls = tls::settings(url)?;
        let query = tls::query(tls.as_ref());
        let (node_scheme, scheme) = match scheme.strip_prefix("rediss") {
            Some(topology) if tls.is_some() => ("rediss", format!("redis{topology}")),
            _ => ("redis", scheme.to_string()),
        };
        let rest = rest.split(['?', '#']).next().unwrap_or(rest);
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
        match scheme.as_str() {
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
                    tls,
                })
            }
            "redis+cluster" => Ok(RedisTarget::Cluster {
                nodes: hosts
                    .iter()
                    .map(|h| format!("{node_scheme}://{auth}{h}{query}"))
                    .collect(),
            }),
            _ => Err(bad("unknown scheme")),
        }
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
                tls: None,
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
        let t = RedisTarget::parse("redis+cluster://u:hunter2@a:1").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
        let t = RedisTarget::parse("redis://u:hunter2@h:1").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
