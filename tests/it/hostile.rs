//! The network surface under hostile clients, on loopback: floods of idle connections and
//! slow heads, unauthenticated large frames, stalled bodies and frames, and the per-address
//! caps. Flood clients bind their own loopback addresses (127.0.x.y), so the caps of one
//! address do not touch the well-behaved clients on 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use christmas_core::frame::{self, AckFrame, AckLevel, FrameTrade, IngestFrame};
use christmas_ingest::auth::{hash_key, ApiKey};
use christmas_ingest::config::DaemonConfig;
use christmas_tests::{free_addr, DaemonProcess, HttpClient, InProcessDaemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::{connect, count, fresh_core_db};

const KEY: &str = "feed-key";

fn feed_key() -> ApiKey {
    ApiKey::parse(&format!("feed:{}:ingest", hash_key(KEY))).unwrap()
}

/// A daemon with its own database and the `feed-key` ingest key, HTTP and TCP.
async fn start(tweak: impl FnOnce(&mut DaemonConfig)) -> (InProcessDaemon, String) {
    let (url, _db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let mut config = DaemonConfig {
        database_url: Some(url.clone().into()),
        api_keys: vec![feed_key()],
        ..DaemonConfig::default()
    };
    tweak(&mut config);
    (InProcessDaemon::start(config, true).await.unwrap(), url)
}

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    tokio::time::timeout(Duration::from_secs(3), socket.connect(to))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// `n` trades of frame `seq` (symbols H0–H4, exchange_seq `seq * 100_000 + i`).
fn frame_of(seq: u64, key: &str, n: i64) -> IngestFrame {
    IngestFrame {
        seq,
        ack: AckLevel::Committed.code(),
        api_key: key.into(),
        trades: (0..n)
            .map(|i| FrameTrade {
                symbol: format!("H{}", i % 5),
                time_ns: 1_795_600_000_000_000_000 + i,
                price: 100.0,
                volume: 1.0,
                side: b'B',
                exchange_seq: seq as i64 * 100_000 + i,
            })
            .collect(),
        ..IngestFrame::default()
    }
}

async fn send(s: &mut TcpStream, f: &IngestFrame) -> std::io::Result<()> {
    s.write_all(&frame::encode_ingest(f).unwrap()).await
}

/// The next ack, or `None` when the connection closed first.
async fn ack(s: &mut TcpStream) -> Option<AckFrame> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    Some(frame::decode_ack(&body).unwrap())
}

/// Whether the server closed `s` (EOF or reset) within `within`; bytes it sent are skipped.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Sum and count of the stored trades' exchange_seq.
async fn stored(url: &str) -> (i64, i64) {
    let db = connect(url).await;
    let row = db
        .query_one(
            "SELECT count(*), coalesce(sum(exchange_seq), 0)::bigint FROM market_data",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Raises this process's open-file limit to at least `n` (up to the hard limit) with
/// `prlimit`, for tests holding thousands of sockets.
fn raise_open_files(n: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    if soft.parse::<u64>().is_ok_and(|s| s >= n) {
        return;
    }
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .unwrap();
    assert!(status.success(), "prlimit failed");
}

/// Opens `per_address` connections to `to` from each of `addresses`, holding them.
async fn flood(to: SocketAddr, addresses: &[Ipv4Addr], per_address: usize) -> Vec<TcpStream> {
    let mut tasks = tokio::task::JoinSet::new();
    for &a in addresses {
        tasks.spawn(async move {
            let mut held = Vec::new();
            for _ in 0..per_address {
                match connect_from(a, to).await {
                    Ok(s) => held.push(s),
                    Err(e) => panic!("connecting from {a} to {to}: {e}"),
                }
            }
            held
        });
    }
    let mut all = Vec::new();
    while let Some(held) = tasks.join_next().await {
        all.extend(held.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_idle_connections_leave_probes_and_a_keyed_feed_answering() {
    raise_open_files(8_000);
    let (d, url) = start(|c| {
        c.ops.addr = "127.0.0.1:0".into();
        c.http.header_timeout_ms = 2_000;
        c.tcp.auth_timeout_ms = 2_000;
    })
    .await;
    let (tcp, ops) = (d.tcp().unwrap(), d.ops().unwrap());
    // A feed handler connected before the flood: key first, then a frame every 50 ms.
    let mut feed = TcpStream::connect(tcp).await.unwrap();
    send(&mut feed, &frame_of(1, KEY, 0)).await.unwrap();
    assert!(ack(&mut feed).await.unwrap().ok);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let feeder = tokio::spawn(async move {
        let (mut seq, mut acked) = (1u64, 0u64);
        while !*stop_rx.borrow() {
            seq += 1;
            send(&mut feed, &frame_of(seq, "", 100)).await.unwrap();
            let a = ack(&mut feed).await.expect("an ack");
            assert!(a.ok && a.seq == seq, "{a:?}");
            acked += u64::from(a.records);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (seq - 1, acked)
    });
    // The probe: GET /health on the operations port every 100 ms, each within 1 s.
    let (probe_stop, probe_rx) = tokio::sync::watch::channel(false);
    let prober = tokio::spawn(async move {
        let (client, mut slowest, mut probes) = (HttpClient::new(ops), Duration::ZERO, 0);
        while !*probe_rx.borrow() {
            let started = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(1), client.get("/health")).await;
            let r = r.expect("/health answered within 1 s").unwrap();
            assert_eq!(r.status, 200);
            (slowest, probes) = (slowest.max(started.elapsed()), probes + 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (probes, slowest)
    });
    // One address over its TCP cap first, while the budget has room: its first 64 are
    // admitted (and time out), the 10 after them are closed at once.
    let mut over_cap = flood(tcp, &[Ipv4Addr::new(127, 0, 2, 200)], 74).await;
    let flood_started = Instant::now();
    // 1,536 idle TCP connections (24 addresses at their cap of 64), 1,500 idle HTTP ones
    // (6 addresses × 250, under the cap of 256): each port's budget of 1,024 is full, the
    // rest wait in the backlog. Then 50 clients sending a request head a byte every 500 ms.
    let tcp_from: Vec<Ipv4Addr> = (0..24).map(|i| Ipv4Addr::new(127, 0, 2, 1 + i)).collect();
    let http_from: Vec<Ipv4Addr> = (0..6).map(|i| Ipv4Addr::new(127, 0, 3, 1 + i)).collect();
    let mut idle_tcp = flood(tcp, &tcp_from, 64).await;
    let mut idle_http = flood(d.http(), &http_from, 250).await;
    let mut slow = flood(d.http(), &[Ipv4Addr::new(127, 0, 4, 1)], 50).await;
    let flooded_in = flood_started.elapsed();
    let head = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut slow_closed = 0;
    for (i, byte) in head.iter().cycle().take(16).enumerate() {
        for s in slow.iter_mut() {
            if s.write_all(&[*byte]).await.is_err() && i > 0 {
                slow_closed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // 8 s after the first byte: every idle connection was admitted and timed out (the
    // ones waiting in the backlog after the first 1,024 were), and the slow heads too.
    let mut closed = [0usize; 4];
    for (n, group) in
        closed
            .iter_mut()
            .zip([&mut idle_tcp, &mut idle_http, &mut over_cap, &mut slow])
    {
        for s in group.iter_mut() {
            *n += usize::from(closed_within(s, Duration::from_millis(20)).await);
        }
    }
    let _ = probe_stop.send(true);
    let _ = stop_tx.send(true);
    let (probes, slowest) = prober.await.unwrap();
    let (frames, acked) = feeder.await.unwrap();
    assert_eq!(
        closed,
        [1_536, 1_500, 74, 50],
        "closed of: idle TCP, idle HTTP, TCP from one address over its cap, slow heads (flood took {flooded_in:?}; {slow_closed} slow writes failed)"
    );
    assert!(probes >= 40, "{probes} probes in the flood");
    assert!(
        slowest < Duration::from_secs(1),
        "slowest probe {slowest:?}"
    );
    assert!(frames >= 40, "{frames} frames in the flood");
    let metrics = HttpClient::new(ops).get("/metrics").await.unwrap().text();
    assert!(
        metrics.contains("christmas_connections_refused_total{listener=\"tcp\"} 10"),
        "{metrics}"
    );
    d.stop().await.unwrap();
    // Every acked tick stored once: frames 2..=frames+1 of 100 trades.
    let want: i64 = (2..=frames as i64 + 1)
        .map(|s| (0..100).map(|i| s * 100_000 + i).sum::<i64>())
        .sum();
    assert_eq!(acked, frames * 100);
    assert_eq!(stored(&url).await, (acked as i64, want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_large_frames_are_refused_before_they_are_buffered() {
    let (url, _db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let (http, tcp) = (free_addr(), free_addr());
    let mut daemon =
        DaemonProcess::spawn(&DaemonProcess::binary().unwrap(), http, Some(tcp), |cmd| {
            cmd.env("DATABASE_URL", &url)
                .env("RUST_LOG", "warn")
                .env("CHRISTMAS_LINGER_MS", "5")
                .env(
                    "CHRISTMAS_API_KEYS",
                    format!("feed:{}:ingest", hash_key(KEY)),
                );
        })
        .unwrap();
    daemon.wait_ready(Duration::from_secs(30)).await.unwrap();
    // Warm: one authenticated frame, so the baseline holds the pipelines' working memory.
    let mut warm = TcpStream::connect(tcp).await.unwrap();
    send(&mut warm, &frame_of(1, KEY, 10)).await.unwrap();
    assert!(ack(&mut warm).await.unwrap().ok);
    drop(warm);
    let (rss_before, _) = daemon.memory().unwrap();
    // 64 connections, each announcing an 8 MiB frame and sending it, without a key.
    const BIG: usize = 8 << 20;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        tasks.spawn(async move {
            let from = Ipv4Addr::new(127, 0, 6, 1 + i / 8);
            let mut s = connect_from(from, tcp).await.unwrap();
            // The length, then the first 256 KiB of the body: the old daemon allocated the
            // whole 8 MiB on reading the length. The daemon refuses after the length and
            // closes, so the rest need not go out.
            let mut bytes = (BIG as u32).to_be_bytes().to_vec();
            bytes.resize(4 + (256 << 10), 7);
            let _ = s.write_all(&bytes).await;
            let a = tokio::time::timeout(Duration::from_secs(5), ack(&mut s)).await;
            a.expect("refused within 5 s")
                .expect("an ack before the close")
        });
    }
    while let Some(a) = tasks.join_next().await {
        let a = a.unwrap();
        assert!(!a.ok && a.seq == 0, "{a:?}");
        assert!(a.error.contains("before the key is checked"), "{}", a.error);
    }
    let (rss_after, _) = daemon.memory().unwrap();
    // The bound: 16 MiB of growth. Buffering the frames took 64 × 8 MiB = 512 MiB.
    let grown = rss_after.saturating_sub(rss_before);
    assert!(
        grown < 16 << 20,
        "RSS grew {grown} bytes ({rss_before} → {rss_after})"
    );
    // A key alone first, then a large frame (≈ 2.7 MB): taken. A small first frame with
    // the key and records, as before: taken. A wrong key: refused with its frame's seq.
    let mut good = TcpStream::connect(tcp).await.unwrap();
    send(&mut good, &frame_of(2, KEY, 0)).await.unwrap();
    send(&mut good, &frame_of(3, "", 50_000)).await.unwrap();
    assert_eq!(ack(&mut good).await.unwrap().records, 0);
    let big = ack(&mut good).await.unwrap();
    assert!(big.ok && big.records == 50_000, "{big:?}");
    let mut old_style = TcpStream::connect(tcp).await.unwrap();
    send(&mut old_style, &frame_of(4, KEY, 100)).await.unwrap();
    assert_eq!(ack(&mut old_style).await.unwrap().records, 100);
    let mut wrong = TcpStream::connect(tcp).await.unwrap();
    send(&mut wrong, &frame_of(5, "nope", 100)).await.unwrap();
    let refused = ack(&mut wrong).await.unwrap();
    assert_eq!((refused.ok, refused.seq), (false, 5));
    assert!(closed_within(&mut wrong, Duration::from_secs(2)).await);
    drop((good, old_style));
    daemon.stop().unwrap();
    let want: i64 = [(1, 10), (3, 50_000), (4, 100)]
        .iter()
        .map(|&(s, n)| (0..n).map(|i| s * 100_000 + i).sum::<i64>())
        .sum();
    assert_eq!(stored(&url).await, (50_110, want));
    assert_eq!(count(&connect(&url).await, "quotes").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tcp_peers_are_closed_at_their_deadlines() {
    let (d, url) = start(|c| {
        c.tcp.auth_timeout_ms = 500;
        c.tcp.frame_timeout_ms = 500;
    })
    .await;
    let tcp = d.tcp().unwrap();
    // No key within the auth deadline: refused and closed.
    let started = Instant::now();
    let mut silent = TcpStream::connect(tcp).await.unwrap();
    let a = ack(&mut silent).await.expect("a refusal");
    assert!(!a.ok && a.error.contains("tcp.auth_timeout_ms"), "{a:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Authenticated, then a frame whose body stops after 10 of its 1,000 bytes.
    let mut stalled = TcpStream::connect(tcp).await.unwrap();
    send(&mut stalled, &frame_of(1, KEY, 3)).await.unwrap();
    assert_eq!(ack(&mut stalled).await.unwrap().records, 3);
    let started = Instant::now();
    stalled.write_all(&1_000u32.to_be_bytes()).await.unwrap();
    stalled.write_all(&[0u8; 10]).await.unwrap();
    let a = ack(&mut stalled).await.expect("a refusal");
    assert!(!a.ok && a.error.contains("tcp.frame_timeout_ms"), "{a:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(closed_within(&mut stalled, Duration::from_secs(1)).await);
    // A quiet authenticated connection between frames stays open.
    let mut quiet = TcpStream::connect(tcp).await.unwrap();
    send(&mut quiet, &frame_of(2, KEY, 0)).await.unwrap();
    assert!(ack(&mut quiet).await.unwrap().ok);
    assert!(!closed_within(&mut quiet, Duration::from_millis(1_500)).await);
    send(&mut quiet, &frame_of(3, "", 4)).await.unwrap();
    assert_eq!(ack(&mut quiet).await.unwrap().records, 4);
    drop(quiet);
    d.stop().await.unwrap();
    assert_eq!(stored(&url).await.0, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_http_heads_idle_connections_and_bodies_are_closed() {
    let (d, url) = start(|c| {
        c.http.header_timeout_ms = 500;
        c.http.body_timeout_ms = 500;
    })
    .await;
    let within = Duration::from_millis(2_000);
    // Nothing sent at all.
    let mut idle = TcpStream::connect(d.http()).await.unwrap();
    assert!(closed_within(&mut idle, within).await);
    // A head sent a byte every 100 ms: still incomplete at the deadline.
    let mut slow = TcpStream::connect(d.http()).await.unwrap();
    let started = Instant::now();
    for b in b"GET /health HTTP/1.1\r\nhost: slowly-slowly\r\n" {
        if slow.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed_within(&mut slow, Duration::from_millis(100)).await);
    assert!(started.elapsed() < Duration::from_secs(5));
    // A kept-alive connection after its answer.
    let mut kept = TcpStream::connect(d.http()).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 16];
    kept.read_exact(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    assert!(closed_within(&mut kept, within).await);
    // A body that stops: 408 naming the body, and the connection closed.
    let mut stalled = TcpStream::connect(d.http()).await.unwrap();
    let head = format!("POST /api/ticks HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-length: 1000\r\n\r\n[{{");
    stalled.write_all(head.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(within, stalled.read_to_end(&mut reply))
        .await
        .expect("answered and closed")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply).to_lowercase();
    assert!(reply.starts_with("http/1.1 408"), "{reply}");
    assert!(reply.contains("connection: close"), "{reply}");
    assert!(reply.contains(r#""field":"body""#), "{reply}");
    d.stop().await.unwrap();
    assert_eq!(stored(&url).await.0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_cap_of_http_connections() {
    let (d, _url) = start(|c| c.http.max_connections_per_address = 2).await;
    let capped = Ipv4Addr::new(127, 0, 5, 1);
    let mut held = flood(d.http(), &[capped], 2).await;
    let mut third = connect_from(capped, d.http()).await.unwrap();
    // Closed at once, long before the 10 s header timeout.
    assert!(closed_within(&mut third, Duration::from_secs(2)).await);
    assert!(!closed_within(&mut held[0], Duration::from_millis(200)).await);
    // Another address is served meanwhile, and the metrics count the refusal.
    let metrics = HttpClient::new(d.http()).get("/metrics").await.unwrap();
    assert!(metrics
        .text()
        .contains("christmas_connections_refused_total{listener=\"http\"} 1"));
    // A held connection closed gives its address the room back.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = connect_from(capped, d.http()).await.unwrap();
    again
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    again.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_client_stops_reading_is_cut_at_the_write_deadline() {
    // A 32 MiB file in the page's directory: more than both sockets' buffers hold.
    let dir = std::env::temp_dir().join(christmas_tests::unique_name("stalled-reader"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html>").unwrap();
    const BIG: usize = 32 << 20;
    std::fs::write(dir.join("big.bin"), vec![b'x'; BIG]).unwrap();
    let (d, _url) = start(|c| {
        c.http.write_timeout_ms = 500;
        c.web.dir = Some(dir.display().to_string());
    })
    .await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 << 10).unwrap();
    let mut s = socket.connect(d.http()).await.unwrap();
    s.write_all(b"GET /big.bin HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Read nothing until the daemon has closed the connection (its gauge counts only the
    // scrape's own), then everything: the answer was cut short.
    let started = Instant::now();
    loop {
        let metrics = HttpClient::new(d.http())
            .get("/metrics")
            .await
            .unwrap()
            .text();
        if metrics.contains("christmas_connections_open{listener=\"http\"} 1\n") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the stalled connection is still open: {}",
            metrics
                .lines()
                .filter(|l| l.starts_with("christmas_connections"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    let read = read.expect("the connection ended");
    assert!(
        read.is_err() || got.len() < BIG,
        "all {} bytes arrived: the write was not cut",
        got.len()
    );
    assert!(got.starts_with(b"HTTP/1.1 200"));
    // A client that reads gets the whole file.
    let whole = HttpClient::new(d.http()).get("/big.bin").await.unwrap();
    assert_eq!(whole.body.len(), BIG);
    d.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
