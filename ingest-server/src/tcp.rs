//! The TCP ingest listener: length-prefixed rkyv frames in, acks out (see
//! [`christmas_core::frame`]).
//!
//! One task reads a connection's frames and pushes their records; another writes the acks
//! in frame order, each once its records reached the frame's ack level, so a client may
//! pipeline frames. A frame that cannot be read gets an error ack and the connection is
//! closed; a client gone mid-frame is just a closed connection.

use christmas_core::frame::{self, AckFrame, AckLevel, IngestFrame};
use christmas_core::Receipt;
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

/// What the ack writer waits for before answering a frame.
enum PendingAck {
    /// Answer now.
    Ready(AckFrame),
    /// Answer once these commit.
    Commit {
        seq: u64,
        records: u32,
        receipts: Vec<Receipt>,
    },
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
        while let Some(p) = rx.recv().await {
            let ack = match p {
                PendingAck::Ready(a) => a,
                PendingAck::Commit {
                    seq,
                    records,
                    receipts,
                } => {
                    let mut result = Ok(());
                    for r in receipts {
                        if let Err(e) = r.wait().await {
                            result = Err(e);
                        }
                    }
                    match result {
                        Ok(()) => AckFrame {
                            seq,
                            ok: true,
                            records,
                            error: String::new(),
                        },
                        Err(e) => refused(seq, e.to_string()),
                    }
                }
            };
            write_ack(&mut w, &ack).await?;
        }
        w.shutdown().await
    });
    let max = s.config.max_frame_bytes;
    let mut authorized = !s.config.needs_key(Scope::Ingest);
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
        let mut body = vec![0u8; n];
        // A client gone mid-frame: close, nothing to answer.
        r.read_exact(&mut body).await?;
        let f: IngestFrame = match frame::decode_ingest(&body) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.send(PendingAck::Ready(refused(0, e.to_string()))).await;
                break;
            }
        };
        if !authorized {
            let token = format!("Bearer {}", f.api_key);
            match auth::check(&s.config.api_keys, Some(&token), Scope::Ingest) {
                Access::Allowed(_) => authorized = true,
                other => {
                    let why = if matches!(other, Access::Forbidden(_)) {
                        "key may not ingest"
                    } else {
                        "missing or unknown API key"
                    };
                    let _ = tx.send(PendingAck::Ready(refused(f.seq, why))).await;
                    break;
                }
            }
        }
        let pending = match process(&s, &f).await {
            Ok(p) => p,
            Err(msg) => PendingAck::Ready(refused(f.seq, msg)),
        };
        if tx.send(pending).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer.await??;
    Ok(())
}

/// Checks and pushes one frame's records.
async fn process(s: &AppState, f: &IngestFrame) -> Result<PendingAck, String> {
    let ack = AckLevel::from_code(f.ack).map_err(|e| e.to_string())?;
    if ack == AckLevel::Durable && s.config.spool_dir.is_none() {
        return Err(
            "ack level durable needs a spool (spool_dir / CHRISTMAS_SPOOL_DIR), which this daemon does not have"
                .into(),
        );
    }
    let (trades, quotes) = frame::to_records(f)?;
    let records = (trades.len() + quotes.len()) as u32;
    if ack == AckLevel::Committed || ack == AckLevel::Durable {
        let durable = ack == AckLevel::Durable;
        let mut receipts = Vec::with_capacity(2);
        if !trades.is_empty() {
            receipts.push(
                if durable {
                    s.trades.push_durable(&trades).await
                } else {
                    s.trades.push_with_receipt(&trades).await
                }
                .map_err(|e| e.to_string())?,
            );
        }
        if !quotes.is_empty() {
            receipts.push(
                if durable {
                    s.quotes.push_durable(&quotes).await
                } else {
                    s.quotes.push_with_receipt(&quotes).await
                }
                .map_err(|e| e.to_string())?,
            );
        }
        return Ok(PendingAck::Commit {
            seq: f.seq,
            records,
            receipts,
        });
    }
    s.trades
        .push_batch_async(&trades)
        .await
        .map_err(|e| e.to_string())?;
    s.quotes
        .push_batch_async(&quotes)
        .await
        .map_err(|e| e.to_string())?;
    Ok(PendingAck::Ready(AckFrame {
        seq: f.seq,
        ok: true,
        records,
        error: String::new(),
    }))
}
