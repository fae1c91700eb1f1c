//! [`TickSubscription`]: live fan-out messages of a set of symbols (pub/sub), or one
//! symbol's retained messages from its stream with resume-from-id.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use redis::streams::StreamReadReply;
use redis::{PushKind, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::fanout::wire::{self, PayloadFormat, TickMessage};
use crate::redis::connection::{self, RedisConn};
use crate::redis::error::redis_error;
use crate::redis::target::RedisTarget;
use crate::symbol::Symbol;

/// One message received, with its stream entry id when it came from a stream (pass it to
/// [`TickSubscription::replay`] to resume after it).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The ticks.
    pub message: TickMessage,
    /// The stream entry id (`replay` only).
    pub stream_id: Option<String>,
}

/// Messages as they arrive. Implements [`futures_util::Stream`]; dropping it unsubscribes.
///
/// ```no_run
/// # async fn demo() -> christmas_core::Result<()> {
/// use christmas_core::fanout::{PayloadFormat, TickSubscription};
/// use christmas_core::Symbol;
/// let mut live = TickSubscription::live(
///     "redis://127.0.0.1:56379/",
///     PayloadFormat::Json,
///     &[Symbol::new("ESU4")?],
/// )
/// .await?;
/// while let Some(delivery) = live.next().await {
///     let m = delivery?.message;
///     println!("{} {} ticks from seq {}", m.symbol, m.len(), m.first_seq);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TickSubscription {
    rx: mpsc::Receiver<Result<Delivery>>,
    task: JoinHandle<()>,
}

impl Drop for TickSubscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Messages buffered between the Redis connection and the consumer.
const BUFFER: usize = 65_536;

/// Delay before resubscribing after the connection is lost.
const RESUBSCRIBE: Duration = Duration::from_millis(100);

impl TickSubscription {
    /// Subscribes to the live messages of `symbols` (`md:{SYMBOL}` channels; sharded
    /// pub/sub on a cluster, each channel on the node that owns it). Returns once subscribed.
    /// After a lost connection it resubscribes by itself (re-asking Sentinel for the
    /// master); messages missed meanwhile show as a jump in `first_seq`.
    pub async fn live(url: &str, format: PayloadFormat, symbols: &[Symbol]) -> Result<Self> {
        let target = RedisTarget::parse(url)?;
        let channels: Vec<String> = symbols.iter().map(|s| wire::channel(s.as_str())).collect();
        let (tx, rx) = mpsc::channel(BUFFER);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = match target {
            RedisTarget::Cluster { nodes } => {
                tokio::spawn(live_cluster(nodes, channels, format, tx, ready_tx))
            }
            target => tokio::spawn(live_node(target, channels, format, tx, ready_tx)),
        };
        match ready_rx.await {
            Ok(Ok(())) => Ok(TickSubscription { rx, task }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Task("subscriber stopped before subscribing".into())),
        }
    }

    /// Reads `symbol`'s stream (`md:{SYMBOL}:ticks`) from after entry `after_id` (`"0"`:
    /// everything retained, `"$"`: only what comes next), then waits for new entries.
    pub async fn replay(
        url: &str,
        format: PayloadFormat,
        symbol: Symbol,
        after_id: &str,
    ) -> Result<Self> {
        let target = RedisTarget::parse(url)?;
        let mut conn = connection::connect(&target).await?;
        let key = wire::stream_key(symbol.as_str());
        let mut after = after_id.to_string();
        if after == "$" {
            // Resolve "$" now, so entries added between this call and the first read count.
            let last: Vec<(String, Value)> = query(
                &mut conn,
                redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
            after = last.first().map_or("0".into(), |(id, _)| id.clone());
        }
        let (tx, rx) = mpsc::channel(BUFFER);
        let task = tokio::spawn(async move {
            loop {
                let mut read = redis::cmd("XREAD");
                read.arg("COUNT")
                    .arg(1_000)
                    .arg("BLOCK")
                    .arg(1_000)
                    .arg("STREAMS")
                    .arg(&key)
                    .arg(&after);
                let reply: Result<Option<StreamReadReply>> = query(&mut conn, &read).await;
                let reply = match reply {
                    Ok(r) => r,
                    Err(e) => {
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(RESUBSCRIBE).await;
                        match connection::connect(&target).await {
                            Ok(c) => conn = c,
                            Err(_) => continue,
                        }
                        continue;
                    }
                };
                for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    after = entry.id.clone();
                    let delivery = match entry.map.get(wire::STREAM_FIELD) {
                        Some(Value::BulkString(b)) => {
                            TickMessage::decode(format, b).map(|message| Delivery {
                                message,
                                stream_id: Some(entry.id.clone()),
                            })
                        }
                        _ => Err(Error::field(
                            "fanout stream entry",
                            format!("{} has no field m", entry.id),
                        )),
                    };
                    if tx.send(delivery).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(TickSubscription { rx, task })
    }

    /// The next message; `None` once the subscription has ended.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        self.rx.recv().await
    }
}

impl futures_util::Stream for TickSubscription {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

async fn query<T: redis::FromRedisValue>(conn: &mut RedisConn, cmd: &redis::Cmd) -> Result<T> {
    let r = match conn {
        RedisConn::Node(c) => cmd.query_async(c).await,
        RedisConn::Cluster(c) => cmd.query_async(c).await,
    };
    r.map_err(|e| redis_error("reading a stream", e))
}

fn decoded(format: PayloadFormat, payload: &[u8]) -> Result<Delivery> {
    TickMessage::decode(format, payload).map(|message| Delivery {
        message,
        stream_id: None,
    })
}

/// A single server or a Sentinel-managed master: plain `SUBSCRIBE`.
async fn live_node(
    target: RedisTarget,
    channels: Vec<String>,
    format: PayloadFormat,
    tx: mpsc::Sender<Result<Delivery>>,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
) {
    let mut ready = Some(ready);
    loop {
        let subscribed = async {
            let mut pubsub = connection::node_pubsub(&target, "live_cluster").await?;
            pubsub
                .subscribe(&channels)
                .await
                .map_err(|e| redis_error("subscribing", e))?;
            Ok::<_, Error>(pubsub)
        }
        .await;
        let pubsub = match subscribed {
            Ok(p) => p,
            Err(e) => {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                tokio::time::sleep(RESUBSCRIBE).await;
                continue;
            }
        };
        if let Some(r) = ready.take() {
            let _ = r.send(Ok(()));
        }
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            if tx
                .send(decoded(format, msg.get_payload_bytes()))
                .await
                .is_err()
            {
                return;
            }
        }
        // The connection is gone: resubscribe (asking Sentinel again for the master).
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}

/// A cluster: `SSUBSCRIBE` over RESP3; the client routes each channel to the node owning its
/// slot and resubscribes after reconnects and slot moves.
async fn live_cluster(
    nodes: Vec<String>,
    channels: Vec<String>,
    format: PayloadFormat,
    tx: mpsc::Sender<Result<Delivery>>,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
) {
    let (push_tx, mut push_rx) = mpsc::unbounded_channel();
    let subscribed = async {
        let client = crate::redis::tls::cluster_builder(&nodes)?
            .use_protocol(redis::ProtocolVersion::RESP3)
            .connection_timeout(connection::TIMEOUT)
            .push_sender(push_tx)
            .build()
            .map_err(|e| redis_error("configuring the cluster subscriber", e))?;
        let mut conn = client
            .get_async_connection()
            .await
            .map_err(|e| redis_error("connecting the cluster subscriber", e))?;
        // One channel per command: a command's channels must share a slot.
        for channel in &channels {
            conn.ssubscribe(channel)
                .await
                .map_err(|e| redis_error("subscribing", e))?;
        }
        Ok::<_, Error>(conn)
    }
    .await;
    // Kept alive for as long as the subscription runs.
    let _conn = match subscribed {
        Ok(c) => {
            let _ = ready.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    while let Some(push) = push_rx.recv().await {
        if push.kind != PushKind::SMessage {
            continue;
        }
        let delivery = match push.data.get(1) {
            Some(Value::BulkString(payload)) => decoded(format, payload),
            _ => Err(Error::field(
                "fanout push",
                "a shard message without a payload",
            )),
        };
        if tx.send(delivery).await.is_err() {
            return;
        }
    }
}
