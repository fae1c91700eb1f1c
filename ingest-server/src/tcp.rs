//! The TCP ingest listener: length-prefixed rkyv frames in, acks out (see
//! [`christmas_core::frame`]).
//!
//! One task reads a connection's frames in place ([`FrameBuffer`]) into one reused
//! [`Ticks`] and pushes them through the engine's [`Ingress`](christmas_core::Ingress);
//! another writes the acks in frame order, each once its [`Ack`] resolved, so a client may
//! pipeline frames (frame N+1 is enqueued while frame N commits). A frame that cannot be
//! read gets an error ack and the connection is closed; a client gone mid-frame is just a
//! closed connection.
//!
//! Auth before work: with keys configured, the first frame must carry one, be at most
//! `tcp.auth_frame_bytes` and arrive within `tcp.auth_timeout_ms`, so nothing large is
//! buffered for a peer that has not proved its key. A frame's body has
//! `tcp.frame_timeout_ms` once its length is read, and so has each ack's write.

use christmas_core::frame::{self, AckFrame, FrameBuffer, IngestView};
use christmas_core::producer::ProducerId;
use christmas_core::{Ack, Ticks};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::auth::{self, Access, Scope};
use crate::budget;
use crate::state::AppState;

/// Accepts connections (as many as `tcp.max_connections` and
/// `tcp.max_connections_per_address` allow) until `stop` turns true, then waits for open
/// ones to finish their current frame and acks.
pub async fn serve(listener: TcpListener, state: AppState, mut stop: watch::Receiver<bool>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(tcp = %addr, "TCP ingest listening");
    }
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer, admission) = tokio::select! {
            a = budget::accept(&listener, &state.tcp_connections) => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        while conns.try_join_next().is_some() {}
        let (state, stop) = (state.clone(), stop.clone());
        conns.spawn(async move {
            let _admission = admission;
            if let Err(e) = connection(stream, state, stop).await {
                tracing::debug!(%peer, error = %e, "TCP connection closed");
            }
        });
    }
    while conns.join_next().await.is_some() {}
}

/// Frame buffer a connection keeps between frames; a larger one is freed after its frame.
const KEEP_FRAME_BYTES: usize = 1 << 20;
/// Records of each kind a connection keeps room for between frames.
const KEEP_RECORDS: usize = 16_384;

/// What the ack writer waits for before answering a frame.
enum PendingAck {
    /// Answer now.
    Ready(AckFrame),
    /// Answer once the frame's ticks reached its ack level.
    Pushed { seq: u64, ack: Ack },
}

impl PendingAck {
    /// The ack frame, once there is one to write, and when the pipeline answered it (see
    /// [`christmas_core::Acked::answered_at`]).
    async fn resolve(self) -> (AckFrame, Option<std::time::Instant>) {
        match self {
            PendingAck::Ready(a) => (a, None),
            PendingAck::Pushed { seq, ack } => match ack.wait().await {
                Ok(acked) => {
                    let frame = AckFrame {
                        seq,
                        ok: true,
                        records: acked.records() as u32,
                        duplicates: acked.duplicates as u32,
                        error: String::new(),
                    };
                    (frame, acked.answered_at)
                }
                Err(e) => (refused(seq, e.to_string()), None),
            },
        }
    }
}

async fn write_ack(w: &mut OwnedWriteHalf, ack: &AckFrame) -> std::io::Result<()> {
    let bytes = frame::encode_ack(ack).map_err(std::io::Error::other)?;
    w.write_all(&bytes).await
}

fn refused(seq: u64, error: impl Into<String>) -> AckFrame {
    AckFrame {
        seq,
        ok: false,
        records: 0,
        duplicates: 0,
        error: error.into(),
    }
}

/// How long the connection may take to deliver what it owes next: before its key is
/// checked, whatever is left of the auth deadline; after, `tcp.frame_timeout_ms` for a
/// frame's body and no limit for the wait between frames.
#[derive(Clone, Copy)]
enum Deadline {
    Auth(Instant),
    Authorized,
}

/// `read` within `deadline` (`between_frames`: the wait for the next frame's length);
/// `Err(why)` when the deadline passed.
async fn within<T>(
    deadline: Deadline,
    between_frames: bool,
    frame_timeout: Duration,
    read: impl std::future::Future<Output = T>,
) -> Result<T, &'static str> {
    match deadline {
        Deadline::Auth(at) => tokio::time::timeout_at(at, read)
            .await
            .map_err(|_| "no authenticated frame within tcp.auth_timeout_ms"),
        Deadline::Authorized if between_frames => Ok(read.await),
        Deadline::Authorized => tokio::time::timeout(frame_timeout, read)
            .await
            .map_err(|_| "the frame did not arrive within tcp.frame_timeout_ms"),
    }
}

/// What reading the next frame gave.
enum FrameRead {
    /// A frame's body, in the buffer.
    Frame,
    /// The peer closed between frames, or the daemon is stopping.
    Closed,
    /// Too long or too late: the refusal's text.
    Refused(String),
}

/// Reads the next frame's length and body into `body` within `deadline`; an error for a
/// peer gone mid-frame.
async fn read_frame(
    r: &mut OwnedReadHalf,
    body: &mut FrameBuffer,
    s: &AppState,
    deadline: Deadline,
    stop: &mut watch::Receiver<bool>,
) -> std::io::Result<FrameRead> {
    let frame_timeout = Duration::from_millis(s.config.tcp.frame_timeout_ms);
    let mut len = [0u8; 4];
    let read = tokio::select! {
        read = within(deadline, true, frame_timeout, r.read_exact(&mut len)) => read,
        _ = stop.wait_for(|s| *s) => return Ok(FrameRead::Closed),
    };
    match read {
        Ok(Ok(_)) => {}
        // EOF between frames is a normal close.
        Ok(Err(_)) => return Ok(FrameRead::Closed),
        Err(why) => return Ok(FrameRead::Refused(why.into())),
    }
    let n = u32::from_be_bytes(len) as usize;
    let max = s.config.tcp.max_frame_bytes;
    let why = match deadline {
        Deadline::Auth(_) if n > s.config.tcp.auth_frame_bytes => format!(
            "the first frame is {n} bytes, over the {}-byte limit before the key is checked: send a frame with the API key and no records first",
            s.config.tcp.auth_frame_bytes
        ),
        _ if n > max => format!("frame of {n} bytes is over the {max}-byte limit"),
        _ => String::new(),
    };
    if !why.is_empty() {
        return Ok(FrameRead::Refused(why));
    }
    match within(
        deadline,
        false,
        frame_timeout,
        r.read_exact(body.body_mut(n)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(FrameRead::Frame),
        // A client gone mid-frame: close, nothing to answer.
        Ok(Err(e)) => Err(e),
        Err(why) => Ok(FrameRead::Refused(why.into())),
    }
}

async fn connection(
    stream: TcpStream,
    s: AppState,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (mut r, mut w) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<PendingAck>(1_024);
    let frame_timeout = Duration::from_millis(s.config.tcp.frame_timeout_ms);
    let state = s.clone();
    let writer = tokio::spawn(async move {
        while let Some(pending) = rx.recv().await {
            let (ack, answered_at) = pending.resolve().await;
            // A peer that stopped reading its acks must not hold the connection forever.
            tokio::time::timeout(frame_timeout, write_ack(&mut w, &ack))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            if let Some(t) = answered_at {
                let took = t.elapsed().as_micros() as u64;
                let mut h = state.tcp_ack_us.lock().unwrap_or_else(|e| e.into_inner());
                let _ = h.record(took);
            }
        }
        w.shutdown().await
    });
    // With keys, the first frame must be small and carry one: nothing larger is buffered
    // for a connection that has not proved its key.
    let mut deadline = match s.config.needs_key(Scope::Ingest) {
        true => {
            Deadline::Auth(Instant::now() + Duration::from_millis(s.config.tcp.auth_timeout_ms))
        }
        false => Deadline::Authorized,
    };
    // Reused for every frame: reading a frame allocates nothing once they have grown.
    let mut body = FrameBuffer::default();
    let mut ticks = Ticks::default();
    // The feed handler's producer, named by its first frame.
    let mut producer: Option<ProducerId> = None;
    loop {
        match read_frame(&mut r, &mut body, &s, deadline, &mut stop).await? {
            FrameRead::Frame => {}
            FrameRead::Closed => break,
            FrameRead::Refused(why) => {
                let _ = tx.send(PendingAck::Ready(refused(0, why))).await;
                break;
            }
        }
        let f = match body.ingest() {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.send(PendingAck::Ready(refused(0, e.to_string()))).await;
                break;
            }
        };
        if let Deadline::Auth(_) = deadline {
            match auth::check(
                &s.config.api_keys,
                Some(&format!("Bearer {}", f.api_key())),
                Scope::Ingest,
            ) {
                Access::Allowed(_) => deadline = Deadline::Authorized,
                other => {
                    let why = if matches!(other, Access::Forbidden(_)) {
                        "key may not ingest"
                    } else {
                        "missing or unknown API key"
                    };
                    let _ = tx.send(PendingAck::Ready(refused(f.seq(), why))).await;
                    break;
                }
            }
        }
        let seq = f.seq();
        if producer.is_none() && !f.producer().is_empty() {
            match ProducerId::new(f.producer()) {
                Ok(p) => producer = Some(p),
                Err(e) => {
                    let _ = tx
                        .send(PendingAck::Ready(refused(seq, e.to_string())))
                        .await;
                    break;
                }
            }
        }
        let pending = if f.records() == 0 {
            // A key (and producer) alone, sent before the first large frame.
            PendingAck::Ready(AckFrame {
                seq,
                ok: true,
                ..AckFrame::default()
            })
        } else {
            match push(&s, f, &mut ticks, producer.as_ref()).await {
                Ok(ack) => PendingAck::Pushed { seq, ack },
                Err(msg) => PendingAck::Ready(refused(seq, msg)),
            }
        };
        // The records are in the rings now: an idle connection keeps at most this much.
        body.release_if_over(KEEP_FRAME_BYTES);
        ticks.clear_and_release_over(KEEP_RECORDS);
        if tx.send(pending).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer.await??;
    Ok(())
}

/// Reads one frame's records into `ticks` and pushes them at the frame's ack level; the
/// error is the refused frame's ack text.
async fn push(
    s: &AppState,
    f: IngestView<'_>,
    ticks: &mut Ticks,
    producer: Option<&ProducerId>,
) -> Result<Ack, String> {
    let ack = f.ack().map_err(|e| e.to_string())?;
    if !s.ingress.supports(ack) {
        return Err(
            "ack level durable needs a spool (spool.dir / CHRISTMAS_SPOOL_DIR), which this daemon does not have"
                .into(),
        );
    }
    f.read_ticks(ticks)?;
    match producer {
        Some(p) => s.ingress.push_from(p, f.producer_seq(), ticks, ack).await,
        None => s.ingress.push(ticks, ack).await,
    }
    .map_err(|e| e.to_string())
}
