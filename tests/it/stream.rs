//! `GET /api/stream` over real sockets: ticks pushed over HTTP come back as SSE events in
//! order with rising ids (from a single Redis and from a Redis Cluster), a reconnect resumes
//! from the Redis stream, a stalled client is dropped while another keeps up, and the read
//! key is required (header or cookie).

use std::net::SocketAddr;
use std::time::Duration;

use christmas_ingest::auth::{hash_key, ApiKey};
use christmas_tests::RedisCluster;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::daemon::Daemon;

/// One server-sent event.
#[derive(Debug, Clone)]
struct SseEvent {
    id: Option<String>,
    event: String,
    data: String,
}

/// A raw HTTP/1.1 client of one event stream: reads only when asked to, so a test can
/// stall it.
struct SseClient {
    reader: BufReader<TcpStream>,
    /// Decoded body text not yet split into events.
    text: String,
    ended: bool,
}

/// Opens `path` with extra `headers`; the status and, for a 200, the stream. `rcvbuf` sets
/// the socket's receive buffer (a small one makes a stalled client back up quickly).
async fn open(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    rcvbuf: Option<u32>,
) -> (u16, SseClient) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(n) = rcvbuf {
        socket.set_recv_buffer_size(n).unwrap();
    }
    let mut stream = socket.connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await.unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
        if status == 200 && lower.starts_with("x-accel-buffering:") {
            assert!(lower.contains("no"), "{line}");
        }
    }
    assert!(status != 200 || chunked, "an event stream is chunked");
    let client = SseClient {
        reader,
        text: String::new(),
        ended: false,
    };
    (status, client)
}

impl SseClient {
    /// Reads one chunk of the body into `text`; false at the end of the body.
    async fn read_chunk(&mut self) -> bool {
        let mut size = String::new();
        if self.reader.read_line(&mut size).await.unwrap_or(0) == 0 {
            return false;
        }
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut buf = vec![0; n + 2];
        self.reader.read_exact(&mut buf).await.unwrap();
        self.text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        n > 0
    }

    /// The next event (comments skipped); `None` when the stream ended or `within` passed.
    async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut e = SseEvent {
                    id: None,
                    event: "message".into(),
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        e.id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        e.event = v.to_string();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        e.data.push_str(v);
                        any = true;
                    }
                }
                if any {
                    return Some(e);
                }
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.read_chunk()).await {
                Ok(true) => {}
                Ok(false) => self.ended = true,
                Err(_) => return None,
            }
        }
    }

    /// Tick events until `ticks` trades arrived (other events kept too), or panics after
    /// `within`.
    async fn trades(&mut self, ticks: usize, within: Duration) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut got = 0;
        while got < ticks {
            let e = self
                .next(within)
                .await
                .unwrap_or_else(|| panic!("only {got} of {ticks} trades arrived; {out:?}"));
            if e.event == "trade" {
                got += data(&e)["trades"].as_array().unwrap().len();
            }
            out.push(e);
        }
        out
    }
}

fn data(e: &SseEvent) -> Value {
    serde_json::from_str(&e.data).unwrap()
}

/// A symbol no other test (or earlier run) publishes.
fn fresh_symbol(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}{}{nanos:x}", std::process::id())
}

async fn push_trades(d: &Daemon, symbol: &str, seqs: std::ops::Range<i64>, ack: &str) {
    let body: Vec<Value> = seqs
        .map(|k| json!({"kind": "trade", "symbol": symbol, "time_ns": 1_795_600_000_000_000_000i64 + k,
                        "price": 100.0 + (k % 50) as f64, "volume": 1, "side": "B", "exchange_seq": k}))
        .collect();
    let (status, v) = d.post(&format!("/api/ticks?ack={ack}"), &json!(body)).await;
    assert!((200..300).contains(&status), "{status} {v}");
}

/// Every trade's `exchange_seq` in arrival order; asserts the sequences have no gap, no
/// repeat, and the ids rise with them.
fn check_in_order(events: &[SseEvent], symbol: &str, from_seq: u64) -> Vec<i64> {
    let mut next = from_seq;
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e.event == "trade") {
        let v = data(e);
        assert_eq!(v["symbol"], symbol);
        assert_eq!(
            v["first_seq"].as_u64().unwrap(),
            next,
            "gap or repeat: {e:?}"
        );
        let trades = v["trades"].as_array().unwrap();
        next += trades.len() as u64;
        out.extend(trades.iter().map(|t| t["exchange_seq"].as_i64().unwrap()));
        // The id is `SYM:trade_seq:quote_seq`: this event's last trade.
        assert_eq!(
            e.id.as_deref(),
            Some(format!("{symbol}:{}:0", next - 1).as_str())
        );
    }
    assert!(
        events.iter().all(|e| e.event != "gap"),
        "no gap expected: {events:?}"
    );
    out
}

async fn redis_daemon(tweak: impl FnOnce(&mut christmas_ingest::config::DaemonConfig)) -> Daemon {
    Daemon::start(|c| {
        c.redis_url = Some(christmas_tests::shared_redis_url().into());
        c.linger_ms = 5;
        tweak(c);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_arrive_in_order_with_rising_ids() {
    let d = redis_daemon(|_| {}).await;
    let sym = fresh_symbol("SSEA");
    let (status, mut sse) = open(d.addr(), &format!("/api/stream?symbols={sym}"), &[], None).await;
    assert_eq!(status, 200);
    for k in 0..5 {
        push_trades(&d, &sym, k * 20..(k + 1) * 20, "committed").await;
    }
    let events = sse.trades(100, Duration::from_secs(10)).await;
    assert_eq!(
        check_in_order(&events, &sym, 1),
        (0..100).collect::<Vec<_>>()
    );
    drop(sse);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_last_event_id_resumes_where_it_stood() {
    let d = redis_daemon(|_| {}).await;
    let sym = fresh_symbol("SSEB");
    let path = format!("/api/stream?symbols={sym}");
    let (_, mut first) = open(d.addr(), &path, &[], None).await;
    push_trades(&d, &sym, 0..30, "committed").await;
    let events = first.trades(30, Duration::from_secs(10)).await;
    check_in_order(&events, &sym, 1);
    let last_id = events.last().unwrap().id.clone().unwrap();
    drop(first);
    // Pushed while no client watches: only the Redis stream has them.
    push_trades(&d, &sym, 30..50, "committed").await;
    push_trades(&d, &sym, 50..60, "committed").await;
    let (status, mut again) = open(
        d.addr(),
        &path,
        &[("Last-Event-ID", last_id.as_str())],
        None,
    )
    .await;
    assert_eq!(status, 200);
    push_trades(&d, &sym, 60..70, "committed").await;
    let events = again.trades(40, Duration::from_secs(10)).await;
    assert_eq!(
        check_in_order(&events, &sym, 31),
        (30..70).collect::<Vec<_>>()
    );
    // Nothing more: no repeats came after.
    let more = again.next(Duration::from_millis(300)).await;
    assert!(more.is_none(), "{more:?}");
    drop(again);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_dropped_while_another_keeps_up() {
    stalled_and_reading(|c| c.stream.client_buffer = 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_dropped_by_the_byte_bound_too() {
    stalled_and_reading(|c| {
        c.stream.client_buffer = 1_000_000;
        c.stream.client_buffer_bytes = 256 << 10;
    })
    .await;
}

/// A stalled client (never reads, 4 KiB receive buffer) and a reading one on the same
/// symbol, under a buffer bound set by `bound`. Fan-out rounds off: a 50 ms round of these
/// back-to-back batches reaches the reader as one burst of tens of messages, more than the
/// bounds here, and a reader that keeps up would be dropped with the stalled one (two
/// fresh-clone CIs of 2026-12-05 failed so).
async fn stalled_and_reading(bound: impl FnOnce(&mut christmas_ingest::config::DaemonConfig)) {
    let d = redis_daemon(|c| {
        c.fanout.round_interval_ms = 0;
        bound(c);
    })
    .await;
    let sym = fresh_symbol("SSEC");
    let path = format!("/api/stream?symbols={sym}");
    let (_, mut stalled) = open(d.addr(), &path, &[], Some(4_096)).await;
    let (_, mut reader) = open(d.addr(), &path, &[], None).await;
    let batches = 60;
    let per_batch = 1_000;
    let total = (batches * per_batch) as usize;
    let reading = tokio::spawn(async move {
        let events = reader.trades(total, Duration::from_secs(20)).await;
        (reader, events)
    });
    for b in 0..batches {
        push_trades(&d, &sym, b * per_batch..(b + 1) * per_batch, "committed").await;
    }
    let (_reader, events) = reading.await.unwrap();
    assert_eq!(
        check_in_order(&events, &sym, 1),
        (0..batches * per_batch).collect::<Vec<_>>()
    );
    // The stalled client now reads what the kernel held for it: some ticks, then the
    // reason, then the end of the stream.
    let mut last = None;
    while let Some(e) = stalled.next(Duration::from_secs(5)).await {
        last = Some(e);
    }
    let last = last.expect("the stalled client got at least its final event");
    assert_eq!(last.event, "dropped", "{last:?}");
    assert!(data(&last)["reason"]
        .as_str()
        .unwrap()
        .contains("slow consumer"));
    assert!(stalled.ended, "the stream ends after dropped");
    let feed = d.state().stream.clone().unwrap();
    let dropped = feed
        .counters
        .dropped_slow
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dropped, 1);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_needs_a_read_key_in_a_header_or_cookie() {
    let keys = vec![ApiKey::parse(&format!("viewer:{}:read", hash_key("view-key"))).unwrap()];
    let d = redis_daemon(|c| {
        c.api_keys = keys;
        c.auth_reads = true;
    })
    .await;
    let path = format!("/api/stream?symbols={}", fresh_symbol("SSED"));
    let (status, _) = open(d.addr(), &path, &[], None).await;
    assert_eq!(status, 401);
    let (status, _) = open(d.addr(), &path, &[("Cookie", "christmas_key=wrong")], None).await;
    assert_eq!(status, 401);
    let (status, _) = open(
        d.addr(),
        &path,
        &[("Authorization", "Bearer view-key")],
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = open(
        d.addr(),
        &path,
        &[("Cookie", "theme=dark; christmas_key=view-key")],
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = open(
        d.addr(),
        "/api/stream?symbols=",
        &[("Cookie", "christmas_key=view-key")],
        None,
    )
    .await;
    assert_eq!(status, 400);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_pass_nginx_unbuffered() {
    let d = redis_daemon(|_| {}).await;
    let conf = format!("{}/../deploy/nginx", env!("CARGO_MANIFEST_DIR"));
    let nginx = christmas_tests::Nginx::start(std::path::Path::new(&conf), &[d.addr().to_string()])
        .unwrap();
    let sym = fresh_symbol("SSEN");
    let addr: SocketAddr = nginx.addr().parse().unwrap();
    let (status, mut sse) = open(addr, &format!("/api/stream?symbols={sym}"), &[], None).await;
    assert_eq!(status, 200, "{}", nginx.error_log());
    // One small message: a buffering proxy would sit on it.
    push_trades(&d, &sym, 0..3, "committed").await;
    let events = sse.trades(3, Duration::from_secs(2)).await;
    assert_eq!(check_in_order(&events, &sym, 1), vec![0, 1, 2]);
    drop(sse);
    drop(nginx);
    d.shutdown().await.unwrap();
}

/// For each node of `cluster`, the slot ranges it owns (from its `CLUSTER NODES` line).
fn slot_ranges(cluster: &RedisCluster) -> Vec<Vec<(u16, u16)>> {
    cluster
        .nodes
        .iter()
        .map(|n| {
            let nodes = n.cli(&["CLUSTER", "NODES"]).unwrap();
            let me = nodes.lines().find(|l| l.contains("myself")).unwrap();
            // id addr flags master ping pong epoch link slot…
            me.split_whitespace()
                .skip(8)
                .filter_map(|r| match r.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => r.parse().ok().map(|s| (s, s)),
                })
                .collect()
        })
        .collect()
}

/// Per symbol, the trades' `exchange_seq` in arrival order; asserts each symbol's
/// sequences start at `from_seq` and have no gap and no repeat and that each event's id holds the symbol's new
/// position (`SYM:trade_seq:0` among the others, joined by `,`).
fn check_each_in_order(events: &[SseEvent], symbols: &[String], from_seq: u64) -> Vec<Vec<i64>> {
    let mut out = vec![Vec::new(); symbols.len()];
    let mut next = vec![from_seq; symbols.len()];
    for e in events.iter().filter(|e| e.event == "trade") {
        let v = data(e);
        let i = symbols.iter().position(|s| v["symbol"] == **s).unwrap();
        assert_eq!(
            v["first_seq"].as_u64(),
            Some(next[i]),
            "gap or repeat: {e:?}"
        );
        let trades = v["trades"].as_array().unwrap();
        next[i] += trades.len() as u64;
        out[i].extend(trades.iter().map(|t| t["exchange_seq"].as_i64().unwrap()));
        let id = e.id.as_deref().unwrap();
        let want = format!("{}:{}:0", symbols[i], next[i] - 1);
        assert!(id.split(',').any(|p| p == want), "{id} lacks {want}");
    }
    assert!(events.iter().all(|e| e.event != "gap"), "{events:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_feeds_the_stream_in_order_with_ids() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3)).unwrap();
    // One symbol on each node, so one subscription spans the cluster.
    let ranges = slot_ranges(&cluster);
    let mut picked: Vec<Option<String>> = vec![None; ranges.len()];
    for k in 0..200 {
        let sym = format!("CL{k}");
        let slot: u16 = cluster.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", &format!("md:{{{sym}}}")])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let node = ranges
            .iter()
            .position(|r| r.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .unwrap();
        picked[node].get_or_insert(sym);
        if picked.iter().all(Option::is_some) {
            break;
        }
    }
    let syms: Vec<String> = picked.into_iter().map(Option::unwrap).collect();
    // The daemon enters the cluster through its second node.
    let url = cluster.url_via(1);
    let d = Daemon::start(|c| {
        c.redis_url = Some(url.into());
        c.linger_ms = 5;
    })
    .await;
    let path = format!("/api/stream?symbols={}", syms.join(","));
    let (status, mut sse) = open(d.addr(), &path, &[], None).await;
    assert_eq!(status, 200);
    for k in 0..3 {
        for s in &syms {
            push_trades(&d, s, k * 20..(k + 1) * 20, "committed").await;
        }
    }
    let events = sse.trades(3 * 60, Duration::from_secs(10)).await;
    for seqs in check_each_in_order(&events, &syms, 1) {
        assert_eq!(seqs, (0..60).collect::<Vec<_>>());
    }
    // Resumed from the capped streams, each on its own node.
    let last_id = events.last().unwrap().id.clone().unwrap();
    drop(sse);
    for s in &syms {
        push_trades(&d, s, 60..80, "committed").await;
    }
    let (status, mut again) = open(d.addr(), &path, &[("Last-Event-ID", &last_id)], None).await;
    assert_eq!(status, 200);
    let events = again.trades(3 * 20, Duration::from_secs(10)).await;
    for seqs in check_each_in_order(&events, &syms, 61) {
        assert_eq!(seqs, (60..80).collect::<Vec<_>>());
    }
    drop(again);
    d.shutdown().await.unwrap();
}
