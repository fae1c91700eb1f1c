//! The TCP ingest listener: length-prefixed rkyv frames in, acks out (see
//! [`christmas_core::frame`]).
//!
//! One task reads a connection's frames in place ([`FrameBuffer`]) into one reused
//! [`Ticks`] and pushes them through the engine's [`Ingress`](christmas_core::Ingress);
//! another writes the acks in frame order, each once its [`Ack`] resolved, so a client may
//! pipeline frames (frame N+1 is enqueued while frame N commits). A frame that cannot be read gets an error ack and the connection is
//! closed; a client gone mid-frame is just a closed connection.

use christmas_core::frame::{self, AckFrame, FrameBuffer, IngestView};
use christmas_core::producer::ProducerId;
use christmas_core::{Ack, Ticks};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::auth::{self, Access, Scope};
use crate::state::AppState;

/// Accepts connections until `stop` turns true, then waits for open ones to finish their
/// current frame and acks.
pub async fn serve(listener: TcpListener, state: AppState, mut stop: watch::Receiver<bool>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(tcp = %addr, "TCP ingest listening");
    }
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = state.connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let (state, stop) = (state.clone(), stop.clone());
                conns.spawn(async move {
                    let _permit = permit;
                    if let Err(e) = connection(stream, state, stop).await {
                        tracing::debug!(%peer, error = %e, "TCP connection closed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
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
    /// The ack frame, once there is one to write.
    async fn resolve(self) -> AckFrame {
        match self {
            PendingAck::Ready(a) => a,
            PendingAck::Pushed { seq, ack } => match ack.wait().await {
                Ok(acked) => AckFrame {
                    seq,
                    ok: true,
                    records: acked.records() as u32,
                    duplicates: acked.duplicates as u32,
                    error: String::new(),
                },
                Err(e) => refused(seq, e.to_string()),
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

async fn connection(
    stream: TcpStream,
    s: AppState,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (mut r, mut w) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<PendingAck>(1_024);
    let writer = tokio::spawn(async move {
        while let Some(pending) = rx.recv().await {
            write_ack(&mut w, &pending.resolve().await).await?;
        }
        w.shutdown().await
    });
    let max = s.config.max_frame_bytes;
    let mut authorized = !s.config.needs_key(Scope::Ingest);
    // Reused for every frame: reading a frame allocates nothing once they have grown.
    let mut body = FrameBuffer::default();
    let mut ticks = Ticks::default();
    // The feed handler's producer, named by its first frame.
    let mut producer: Option<ProducerId> = None;
    loop {
        let mut len = [0u8; 4];
        tokio::select! {
            read = r.read_exact(&mut len) => {
                // EOF between frames is a normal close.
                if read.is_err() {
                    break;
                }
            }
            _ = stop.wait_for(|s| *s) => break,
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > max {
            let _ = tx
                .send(PendingAck::Ready(refused(
                    0,
                    format!("frame of {n} bytes is over the {max}-byte limit"),
                )))
                .await;
            break;
        }
        // A client gone mid-frame: close, nothing to answer.
        r.read_exact(body.body_mut(n)).await?;
        let f = match body.ingest() {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.send(PendingAck::Ready(refused(0, e.to_string()))).await;
                break;
            }
        };
        if !authorized {
            let token = format!("Bearer {}", f.api_key());
            match auth::check(&s.config.api_keys, Some(&token), Scope::Ingest) {
                Access::Allowed(_) => authorized = true,
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
        let pending = match push(&s, f, &mut ticks, producer.as_ref()).await {
            Ok(ack) => PendingAck::Pushed { seq, ack },
            Err(msg) => PendingAck::Ready(refused(seq, msg)),
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
            "ack level durable needs a spool (spool_dir / CHRISTMAS_SPOOL_DIR), which this daemon does not have"
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
