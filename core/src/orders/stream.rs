//! The order events stream as Redis holds it: adding `order.accepted` events, where each
//! consumer group is, and trimming what every group has acknowledged.

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use crate::error::{Error, RedisErrorKind, Result};
use crate::orders::types::Order;
use crate::redis::connection::RedisConn;

/// Adds an `order.accepted` event per order to `stream`, in one pipeline.
pub(super) async fn announce(conn: &mut RedisConn, stream: &str, orders: &[Order]) -> Result<()> {
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

/// Trims `stream` of the events every consumer group has been given and acknowledged:
/// those before each group's oldest pending event, or, with none pending, before the last
/// one it was given. Without a group nothing is trimmed (no worker has come yet, and the
/// first one reads from the start). Returns how many entries went.
pub(super) async fn trim_acknowledged(conn: &mut RedisConn, stream: &str) -> Result<u64> {
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
        let field = |k: &str| g.get(k).and_then(text);
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
                .and_then(text)
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

/// Where the consumer groups of the events stream are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WorkerProgress {
    /// No stream or no group: no worker has come, or Redis lost them.
    NoGroup,
    /// Some group has an event older than the horizon that it was not given, or was given
    /// and has not acknowledged: a backlog, or one in hand.
    Behind,
    /// Every group was given, and acknowledged, every event older than the horizon.
    CaughtUp,
    /// The broker lost the queue and it was declared again (RabbitMQ): whatever it held
    /// is gone, so every order announced and still `accepted` is announced again now.
    Lost,
}

/// Whether every consumer group of `stream` was given and acknowledged every event older
/// than `within`.
pub(super) async fn worker_progress(
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

/// A reply value as text, when it is a string.
pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}
