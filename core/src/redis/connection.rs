//! One connection to whatever a [`RedisTarget`] names: a node, the master Sentinel reports,
//! or a cluster.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::AsyncConnectionConfig;

use crate::error::{Error, Result};
use crate::redis::error::{redis_error, topology_error};
use crate::redis::target::RedisTarget;
use crate::redis::tls;
use crate::tls::TlsSettings;

/// How long connecting, and each reply, may take before the connection counts as down.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(2);

/// A publishing connection.
#[derive(Clone)]
pub(crate) enum RedisConn {
    /// A single server or the Sentinel-reported master.
    Node(MultiplexedConnection),
    /// A cluster: commands are routed by key slot.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_cluster() {
            "RedisConn(cluster)"
        } else {
            "RedisConn(node)"
        })
    }
}

fn config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
}

/// Connects to one server.
pub(crate) async fn connect_node(url: &str) -> Result<MultiplexedConnection> {
    tls::node_client(url)?
        .get_multiplexed_async_connection_with_config(&config())
        .await
        .map_err(|e| redis_error("connecting to Redis", e))
}

/// A pub/sub connection to the node `target` names (the server, or the master Sentinel
/// reports now). Clusters subscribe through their own client; `cluster` names the function
/// that does, for the message of the impossible case.
pub(crate) async fn node_pubsub(target: &RedisTarget, cluster: &str) -> Result<redis::aio::PubSub> {
    let url = match target {
        RedisTarget::Node(url) => url.clone(),
        RedisTarget::Sentinel {
            sentinels,
            master,
            auth,
            db,
            tls,
        } => sentinel_master(sentinels, master, auth, *db, tls.as_ref()).await?,
        RedisTarget::Cluster { .. } => unreachable!("clusters use {cluster}"),
    };
    tls::node_client(&url)?
        .get_async_pubsub()
        .await
        .map_err(|e| redis_error("connecting the subscriber", e))
}

/// The URL of the master Sentinel reports now, asking each sentinel in turn.
pub(crate) async fn sentinel_master(
    sentinels: &[String],
    master: &str,
    auth: &str,
    db: i64,
    tls: Option<&TlsSettings>,
) -> Result<String> {
    let scheme = if tls.is_some() { "rediss" } else { "redis" };
    let query = tls::query(tls);
    let mut last = None;
    for s in sentinels {
        let ask = async {
            let mut conn = connect_node(&format!("{scheme}://{s}{query}")).await?;
            let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(master)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error("asking Sentinel for the master", e))?;
            addr.ok_or_else(|| {
                topology_error(
                    "asking Sentinel for the master",
                    format!("sentinel {s} does not know master {master:?}"),
                )
            })
        };
        match ask.await {
            Ok((host, port)) => return Ok(format!("{scheme}://{auth}{host}:{port}/{db}{query}")),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::config("fanout.url", "no sentinel given")))
}

/// Connects to the master and checks it is one: right after a failover a sentinel may
/// still name the old master for a moment.
async fn connect_master(url: &str) -> Result<MultiplexedConnection> {
    let mut conn = connect_node(url).await?;
    let role: Vec<redis::Value> = redis::cmd("ROLE")
        .query_async(&mut conn)
        .await
        .map_err(|e| redis_error("checking the master's role", e))?;
    match role.first() {
        Some(redis::Value::BulkString(r)) if r == b"master" => Ok(conn),
        _ => Err(topology_error(
            "checking the master's role",
            "the server Sentinel named is not a master (failover in progress?)",
        )),
    }
}

/// Connects to `target`.
pub(crate) async fn connect(target: &RedisTarget) -> Result<RedisConn> {
    match target {
        RedisTarget::Node(url) => Ok(RedisConn::Node(connect_node(url).await?)),
        RedisTarget::Sentinel {
            sentinels,
            master,
            auth,
            db,
            tls,
        } => {
            let url = sentinel_master(sentinels, master, auth, *db, tls.as_ref()).await?;
            Ok(RedisConn::Node(connect_master(&url).await?))
        }
        RedisTarget::Cluster { nodes } => {
            let client = tls::cluster_builder(nodes)?
                .connection_timeout(TIMEOUT)
                .response_timeout(TIMEOUT)
                .retries(2)
                .build()
                .map_err(|e| redis_error("configuring the cluster client", e))?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(|e| redis_error("connecting to the cluster", e))?;
            Ok(RedisConn::Cluster(conn))
        }
    }
}

impl RedisConn {
    /// Runs `pipe` (whose keys all share one slot on a cluster).
    pub(crate) async fn run(&mut self, pipe: &redis::Pipeline) -> Result<()> {
        let r = match self {
            RedisConn::Node(c) => pipe.query_async::<()>(c).await,
            RedisConn::Cluster(c) => pipe.query_async::<()>(c).await,
        };
        r.map_err(|e| redis_error("publishing", e))
    }

    /// Runs one command; `context` names what failed in the error.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
        context: &'static str,
    ) -> Result<T> {
        let r = match self {
            RedisConn::Node(c) => cmd.query_async(c).await,
            RedisConn::Cluster(c) => cmd.query_async(c).await,
        };
        r.map_err(|e| redis_error(context, e))
    }

    /// True on a cluster (publish with `SPUBLISH`).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }
}
