//! `christmas-ingest feed`: a synthetic market sent to a running daemon over its TCP ingest
//! port, as a feed handler would, printing sent and acknowledged ticks per second.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use christmas_core::frame::{self, AckLevel, FrameQuote, FrameTrade, IngestFrame};
use christmas_core::synthetic::{SyntheticMarket, Tick};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Flags of `christmas-ingest feed`.
#[derive(Debug, Clone, clap::Args)]
pub struct FeedArgs {
    /// The daemon's TCP ingest address.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub tcp: String,
    /// Instruments in the synthetic market.
    #[arg(long, default_value_t = 500)]
    pub symbols: usize,
    /// Ticks per second.
    #[arg(long, default_value_t = 200_000)]
    pub rate: u64,
    /// Seconds to run (0 = until Ctrl-C / SIGTERM).
    #[arg(long, default_value_t = 0)]
    pub seconds: u64,
    /// Random seed of the market.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// API key, when the daemon requires one.
    #[arg(
        long,
        env = "CHRISTMAS_API_KEY",
        hide_env_values = true,
        default_value = ""
    )]
    pub api_key: String,
}

/// Adds a synthetic tick to a frame.
pub fn push(f: &mut IngestFrame, t: Tick) {
    match t {
        Tick::Trade(t) => f.trades.push(FrameTrade::from(&t)),
        Tick::Quote(q) => f.quotes.push(FrameQuote::from(&q)),
    }
}

/// Sends the market until `stop` or `--seconds`, then waits for the last ack.
pub async fn run(args: FeedArgs, stop: impl Future<Output = ()>) -> Result<()> {
    let stream = TcpStream::connect(&args.tcp)
        .await
        .with_context(|| format!("connecting to the daemon's TCP port {}", args.tcp))?;
    stream.set_nodelay(true)?;
    let (mut r, mut w) = stream.into_split();
    let mut seq = 0u64;
    if !args.api_key.is_empty() {
        // The key goes first, in a frame without records: a daemon with keys refuses a
        // large first frame before it has checked one.
        seq += 1;
        let hello = IngestFrame {
            seq,
            ack: AckLevel::Accepted.code(),
            api_key: args.api_key.clone(),
            ..IngestFrame::default()
        };
        w.write_all(&frame::encode_ingest(&hello)?).await?;
    }
    let acked = Arc::new(AtomicU64::new(0));
    let last_seq = Arc::new(AtomicU64::new(0));
    let reader = {
        let (acked, last_seq) = (acked.clone(), last_seq.clone());
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 4];
                if r.read_exact(&mut len).await.is_err() {
                    return Ok::<_, anyhow::Error>(());
                }
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                r.read_exact(&mut body).await?;
                let ack = frame::decode_ack(&body)?;
                if !ack.ok {
                    bail!("the daemon refused frame {}: {}", ack.seq, ack.error);
                }
                acked.fetch_add(u64::from(ack.records), Ordering::Relaxed);
                last_seq.store(ack.seq, Ordering::Relaxed);
            }
        })
    };
    let mut market = SyntheticMarket::new(args.seed, args.symbols)
        .starting_at(christmas_core::query::unix_ns(std::time::SystemTime::now()));
    let started = Instant::now();
    let deadline = (args.seconds > 0).then(|| started + Duration::from_secs(args.seconds));
    let mut sent = 0u64;
    let (mut last_report, mut last_sent, mut last_acked) = (Instant::now(), 0u64, 0u64);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_millis(1)) => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let due = (started.elapsed().as_secs_f64() * args.rate as f64) as u64;
        while sent < due {
            seq += 1;
            let mut f = IngestFrame {
                seq,
                ack: AckLevel::Accepted.code(),
                ..IngestFrame::default()
            };
            while sent < due && f.trades.len() + f.quotes.len() < 2_000 {
                match market.next() {
                    Some(t) => push(&mut f, t),
                    None => break,
                }
                sent += 1;
            }
            w.write_all(&frame::encode_ingest(&f)?).await?;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            let a = acked.load(Ordering::Relaxed);
            println!(
                "sent {:>9}/s   acknowledged {:>9}/s   total acknowledged {:>11}",
                sent - last_sent,
                a - last_acked,
                a
            );
            (last_report, last_sent, last_acked) = (Instant::now(), sent, a);
        }
        if reader.is_finished() {
            break;
        }
    }
    // Every frame sent is answered before the daemon is told we are done.
    let wait = Instant::now();
    while last_seq.load(Ordering::Relaxed) < seq
        && wait.elapsed() < Duration::from_secs(30)
        && !reader.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.shutdown().await?;
    reader.await??;
    println!(
        "sent {sent} ticks in {seq} frames; {} acknowledged",
        acked.load(Ordering::Relaxed)
    );
    Ok(())
}
