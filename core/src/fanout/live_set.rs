//! [`LiveSet`]: one Redis subscription whose symbols change while it runs, for a process
//! that relays the fan-out to many consumers of its own (the daemon's SSE feed): however
//! many consumers, Redis sees one subscriber connection.
//!
//! Also reads a symbol's retained messages back, newest first
//! ([`LiveSet::retained_before`]), so a consumer that lost its place can resume from the
//! capped stream.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use redis::{PushKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::fanout::wire::{self, PayloadFormat, TickMessage};
use crate::redis::connection::{self, RedisConn};
use crate::redis::error::redis_error;
use crate::redis::target::RedisTarget;
use crate::symbol::Symbol;

/// A change to the set of channels.
#[derive(Debug)]
enum Command {
    /// Subscribe; answered once Redis confirmed (or refused).
    Add(String, oneshot::Sender<Result<()>>),
    /// Unsubscribe.
    Remove(String),
}

/// One subscriber connection; symbols are added and removed while it runs, and every
/// message of a symbol in the set goes to the channel given to [`LiveSet::start`].
///
/// After a lost connection it reconnects (re-asking Sentinel for the master) and
/// resubscribes the whole set; messages missed meanwhile show as a jump in `first_seq`.
/// A message that does not decode is counted and skipped. Dropping it unsubscribes.
#[derive(Debug)]
pub struct LiveSet {
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
    target: RedisTarget,
    format: PayloadFormat,
    /// The connection for stream reads, made on first use.
    reads: Mutex<Option<RedisConn>>,
}

impl Drop for LiveSet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One `XREVRANGE` entry: its id and its field-value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// Delay before reconnecting after the connection is lost.
const RECONNECT: Duration = Duration::from_millis(100);

impl LiveSet {
    /// Starts the subscriber for the Redis at `url` (any form [`RedisTarget::parse`] takes);
    /// messages go to `out`, and when `out` is full the subscriber waits (Redis buffers,
    /// up to its `client-output-buffer-limit pubsub`, then drops the connection).
    pub fn start(url: &str, format: PayloadFormat, out: mpsc::Sender<TickMessage>) -> Result<Self> {
        let target = RedisTarget::parse(url)?;
        let (commands, rx) = mpsc::unbounded_channel();
        let task = match &target {
            RedisTarget::Cluster { nodes } => {
                tokio::spawn(run_cluster(nodes.clone(), format, rx, out))
            }
            t => tokio::spawn(run_node(t.clone(), format, rx, out)),
        };
        Ok(LiveSet {
            commands,
            task,
            target,
            format,
            reads: Mutex::new(None),
        })
    }

    /// Adds `symbol`; the future resolves once Redis confirmed the subscription. The
    /// request is queued when this is called (not when the future is first polled), so
    /// calls made in some order reach Redis in that order.
    pub fn add(&self, symbol: Symbol) -> impl std::future::Future<Output = Result<()>> + Send {
        let (tx, rx) = oneshot::channel();
        let sent = self
            .commands
            .send(Command::Add(wire::channel(symbol.as_str()), tx));
        async move {
            sent.map_err(|_| Error::Task("the live subscriber stopped".into()))?;
            rx.await
                .map_err(|_| Error::Task("the live subscriber stopped".into()))?
        }
    }

    /// Removes `symbol` (no more of its messages arrive once Redis has processed it).
    pub fn remove(&self, symbol: Symbol) {
        let _ = self
            .commands
            .send(Command::Remove(wire::channel(symbol.as_str())));
    }

    /// Up to `count` of `symbol`'s retained messages with stream ids below `before` (`"+"`:
    /// from the newest), newest first, each with its stream id.
    pub async fn retained_before(
        &self,
        symbol: Symbol,
        before: &str,
        count: usize,
    ) -> Result<Vec<(String, TickMessage)>> {
        let end = if before == "+" {
            "+".to_string()
        } else {
            format!("({before}")
        };
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(wire::stream_key(symbol.as_str()))
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(count);
        let conn = self.reads.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut conn = match conn {
            Some(c) => c,
            None => {
                let c = connection::connect(&self.target).await?;
                *self.reads.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
                c
            }
        };
        let entries: Vec<StreamEntry> = conn
            .query(&cmd, "reading a fan-out stream")
            .await
            .inspect_err(|_| {
                // Reconnect next time (Sentinel may name a new master).
                *self.reads.lock().unwrap_or_else(|e| e.into_inner()) = None;
            })?;
        let mut out = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            let payload = fields
                .iter()
                .find(|(k, _)| k == wire::STREAM_FIELD)
                .map(|(_, v)| v.as_slice())
                .ok_or_else(|| Error::field("fanout stream entry", format!("{id} has no m")))?;
            out.push((id, TickMessage::decode(self.format, payload)?));
        }
        Ok(out)
    }
}

/// A single server or a Sentinel-managed master: `SUBSCRIBE` / `UNSUBSCRIBE` on one
/// pub/sub connection, split so commands go out while messages come in.
async fn run_node(
    target: RedisTarget,
    format: PayloadFormat,
    mut commands: mpsc::UnboundedReceiver<Command>,
    out: mpsc::Sender<TickMessage>,
) {
    let mut set: HashSet<String> = HashSet::new();
    loop {
        let connected = async {
            let pubsub = connection::node_pubsub(&target, "run_cluster").await?;
            let (mut sink, stream) = pubsub.split();
            for channel in &set {
                sink.subscribe(channel)
                    .await
                    .map_err(|e| redis_error("resubscribing", e))?;
            }
            Ok::<_, Error>((sink, stream))
        }
        .await;
        let (mut sink, mut stream) = match connected {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "live subscriber: connect failed");
                // Refuse what asks meanwhile rather than leave it waiting.
                let until = tokio::time::sleep(RECONNECT);
                tokio::pin!(until);
                loop {
                    tokio::select! {
                        _ = &mut until => break,
                        cmd = commands.recv() => match cmd {
                            None => return,
                            Some(Command::Add(_, ack)) => {
                                let _ = ack.send(Err(Error::Task(format!("live subscriber not connected: {e}"))));
                            }
                            Some(Command::Remove(ch)) => { set.remove(&ch); }
                        },
                    }
                }
                continue;
            }
        };
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(Command::Add(ch, ack)) => {
                        let r = sink.subscribe(&ch).await.map_err(|e| redis_error("subscribing", e));
                        if r.is_ok() {
                            set.insert(ch);
                        }
                        let _ = ack.send(r);
                    }
                    Some(Command::Remove(ch)) => {
                        set.remove(&ch);
                        let _ = sink.unsubscribe(&ch).await;
                    }
                },
                msg = stream.next() => match msg {
                    // The connection is gone: reconnect and resubscribe.
                    None => break,
                    Some(m) => {
                        if !forward(format, m.get_payload_bytes(), &out).await {
                            return;
                        }
                    }
                },
            }
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// A cluster: `SSUBSCRIBE` / `SUNSUBSCRIBE` over RESP3 on one cluster connection; the client
/// routes each channel to the node owning its slot and resubscribes after reconnects.
async fn run_cluster(
    nodes: Vec<String>,
    format: PayloadFormat,
    mut commands: mpsc::UnboundedReceiver<Command>,
    out: mpsc::Sender<TickMessage>,
) {
    let (push_tx, mut push_rx) = mpsc::unbounded_channel();
    let mut conn = loop {
        let made = async {
            crate::redis::tls::cluster_builder(&nodes)?
                .use_protocol(redis::ProtocolVersion::RESP3)
                .connection_timeout(connection::TIMEOUT)
                .push_sender(push_tx.clone())
                .build()
                .map_err(|e| redis_error("configuring the cluster subscriber", e))?
                .get_async_connection()
                .await
                .map_err(|e| redis_error("connecting the cluster subscriber", e))
        }
        .await;
        match made {
            Ok(c) => break c,
            Err(e) => match commands.try_recv() {
                Ok(Command::Add(_, ack)) => {
                    let _ = ack.send(Err(e));
                }
                Ok(Command::Remove(_)) | Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::time::sleep(RECONNECT).await;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            },
        }
    };
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None => return,
                Some(Command::Add(ch, ack)) => {
                    let r = conn.ssubscribe(&ch).await.map_err(|e| redis_error("subscribing", e));
                    let _ = ack.send(r);
                }
                Some(Command::Remove(ch)) => {
                    let _ = conn.sunsubscribe(&ch).await;
                }
            },
            push = push_rx.recv() => {
                let Some(push) = push else { return };
                if push.kind != PushKind::SMessage {
                    continue;
                }
                if let Some(Value::BulkString(payload)) = push.data.get(1) {
                    if !forward(format, payload, &out).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Decodes and sends one payload; false once nobody receives.
async fn forward(format: PayloadFormat, payload: &[u8], out: &mpsc::Sender<TickMessage>) -> bool {
    match TickMessage::decode(format, payload) {
        Ok(m) => out.send(m).await.is_ok(),
        Err(e) => {
            tracing::warn!(error = %e, "live subscriber: a message that does not decode");
            true
        }
    }
}
