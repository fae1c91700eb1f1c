//! What the soak runs against the daemon: ticks over TCP, orders over HTTP, an order worker,
//! and the once-a-second look at the daemon's memory and metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use christmas_core::frame::{self, AckLevel, IngestFrame};
use christmas_core::orders::{OrderStatus, OrderWorker, OrderWorkerConfig};
use christmas_core::synthetic::{SyntheticMarket, Tick};
use christmas_ingest::feed::push;
use christmas_tests::HttpClient;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::DAY_NS;
use crate::market::BenchRecord;

/// One once-a-second look at the daemon: its memory from `/proc` and what it holds in
/// flight from its own `/metrics`, so growth can be told from backlog.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sample {
    /// Resident set (`VmRSS`), MiB.
    pub(super) rss_mib: f64,
    /// The anonymous part of it (`RssAnon`: the heap, not mapped files), MiB.
    pub(super) anon_mib: f64,
    pub(super) threads: f64,
    /// Rows accepted and not yet committed, dropped or dead-lettered (rings, sealed
    /// batches queued for the spool or a writer, the batch being written).
    pub(super) in_flight_rows: f64,
    /// Batches waiting for the Redis fan-out, and orders waiting for a writer.
    pub(super) fanout_queue: f64,
    pub(super) order_queue: f64,
}

/// `VmRSS`, `RssAnon` (MiB) and `Threads` of `pid`.
fn proc_status(pid: u32) -> (f64, f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        field("VmRSS:") / 1024.0,
        field("RssAnon:") / 1024.0,
        field("Threads:"),
    )
}

/// The sum over labels of every series of metric `name` in a Prometheus text page.
pub(super) fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The daemon `pid`'s memory now and what it holds in flight, from its `/metrics` on `http`.
pub(super) async fn sample(pid: u32, http: &HttpClient) -> Sample {
    let (rss_mib, anon_mib, threads) = proc_status(pid);
    let metrics = metrics(http).await.unwrap_or_default();
    let m = |name| metric_sum(&metrics, name);
    Sample {
        rss_mib,
        anon_mib,
        threads,
        in_flight_rows: m("christmas_accepted_total")
            - m("christmas_rows_committed_total")
            - m("christmas_dropped_total")
            - m("christmas_dead_lettered_total"),
        fanout_queue: m("christmas_fanout_queue_depth"),
        order_queue: m("christmas_order_queue_depth"),
    }
}

/// The daemon's `/metrics` page.
pub(super) async fn metrics(http: &HttpClient) -> Result<String> {
    Ok(http.get("/metrics").await?.text())
}

/// What the tick sender saw.
#[derive(Default)]
pub(super) struct TickStats {
    pub(super) committed: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) latency_us: Mutex<Option<Histogram<u64>>>,
}

/// What a tick sender sends, and where it reports.
pub(super) struct TickPlan {
    /// Ticks per second (0: as fast as the daemon takes them; TCP only).
    pub(super) rate: u64,
    /// Instruments of the synthetic market.
    pub(super) symbols: usize,
    pub(super) ack: AckLevel,
    pub(super) stats: Arc<TickStats>,
    pub(super) stop: Arc<AtomicBool>,
    /// Days each tick is moved ahead (see the retention note of the scenario).
    pub(super) day_offset: Arc<AtomicI64>,
}

/// Sends ticks at `rate` per second (0: as fast as the daemon takes them) in frames of
/// 1,000 with `ack`, until `stop`; acks are counted and timed per frame. Each tick is moved
/// `day_offset` days ahead (see the retention note of the scenario).
pub(super) async fn send_ticks(addr: std::net::SocketAddr, plan: TickPlan) -> Result<()> {
    let (rate, symbols, ack) = (plan.rate, plan.symbols, plan.ack);
    let TickPlan {
        stats,
        stop,
        day_offset,
        ..
    } = plan;
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut r, mut w) = stream.into_split();
    let sent_at: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let reader = {
        let (stats, sent_at) = (stats.clone(), sent_at.clone());
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 4];
                if r.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                if r.read_exact(&mut body).await.is_err() {
                    return;
                }
                let Ok(a) = frame::decode_ack(&body) else {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if !a.ok {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                stats
                    .committed
                    .fetch_add(u64::from(a.records), Ordering::Relaxed);
                if let Some(t) = sent_at.lock().unwrap().remove(&a.seq) {
                    if let Some(h) = stats.latency_us.lock().unwrap().as_mut() {
                        let _ = h.record(t.elapsed().as_micros() as u64);
                    }
                }
            }
        })
    };
    let mut market = SyntheticMarket::new(7, symbols)
        .starting_at(christmas_core::query::unix_ns(std::time::SystemTime::now()));
    let started = Instant::now();
    let (mut sent, mut seq) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let due = if rate == 0 {
            sent + 1_000
        } else {
            (started.elapsed().as_secs_f64() * rate as f64) as u64
        };
        while sent + 1_000 <= due {
            seq += 1;
            let mut f = IngestFrame {
                seq,
                ack: ack.code(),
                ..IngestFrame::default()
            };
            let shift = day_offset.load(Ordering::Relaxed) * DAY_NS;
            for mut t in market.by_ref().take(1_000) {
                t.shift_time(shift);
                push(&mut f, t);
            }
            sent += 1_000;
            sent_at.lock().unwrap().insert(seq, Instant::now());
            w.write_all(&frame::encode_ingest(&f)?).await?;
        }
        if rate > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // The last acks.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sent_at.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(w);
    reader.abort();
    Ok(())
}

/// Concurrent `POST /api/ticks` connections of the HTTP sender: enough that requests at the
/// soak's rates never wait for a free one while each waits about a group commit (200
/// requests/s × 100 ms is 20 in flight).
pub(super) const HTTP_CONNECTIONS: usize = 64;

/// Sends ticks at `rate` per second as `POST /api/ticks?ack=…` requests of 1,000 NDJSON
/// lines over [`HTTP_CONNECTIONS`] keep-alive connections until `stop`. Open loop: each
/// request is due at its place in the schedule and its latency counts from then, so a
/// request that waited for a free connection shows as latency, not as a lower rate. Each
/// tick is moved `day_offset` days ahead (see the retention note of the scenario).
pub(super) async fn send_ticks_http(addr: std::net::SocketAddr, plan: TickPlan) -> Result<()> {
    anyhow::ensure!(plan.rate > 0, "the HTTP sender needs a rate");
    let path = format!("/api/ticks?ack={}", plan.ack.as_str());
    let TickPlan {
        rate,
        symbols,
        stats,
        stop,
        day_offset,
        ..
    } = plan;
    let (tx, rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(HTTP_CONNECTIONS * 4);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut conns = tokio::task::JoinSet::new();
    for _ in 0..HTTP_CONNECTIONS {
        let mut conn = crate::daemon::HttpConn::connect(&addr.to_string()).await?;
        let (rx, stats, path) = (rx.clone(), stats.clone(), path.clone());
        conns.spawn(async move {
            loop {
                let Some((due, body)) = rx.lock().await.recv().await else {
                    return anyhow::Ok(());
                };
                let (status, _) = conn.post(&path, &body).await?;
                if status == 201 {
                    stats.committed.fetch_add(1_000, Ordering::Relaxed);
                    if let Some(h) = stats.latency_us.lock().unwrap().as_mut() {
                        let _ = h.record(due.elapsed().as_micros() as u64);
                    }
                } else {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let mut market = SyntheticMarket::new(7, symbols)
        .starting_at(christmas_core::query::unix_ns(std::time::SystemTime::now()));
    let started = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent + 1_000 <= due {
            let at = started + Duration::from_secs_f64((sent + 1_000) as f64 / rate as f64);
            let shift = day_offset.load(Ordering::Relaxed) * DAY_NS;
            let mut body = String::with_capacity(1_000 * 120);
            for mut t in market.by_ref().take(1_000) {
                t.shift_time(shift);
                match t {
                    Tick::Trade(t) => t.ndjson(&mut body),
                    Tick::Quote(q) => q.ndjson(&mut body),
                }
            }
            sent += 1_000;
            tx.send((at, body.into_bytes())).await?;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(tx);
    // The last answers.
    while let Some(done) = conns.join_next().await {
        done??;
    }
    Ok(())
}

/// What the order sender saw.
#[derive(Default)]
pub(super) struct OrderStats {
    pub(super) created: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) latency_us: Mutex<Option<Histogram<u64>>>,
}

/// Orders an [`OrderWorker`] took to `filled`, and the events it acknowledged.
#[derive(Default)]
pub(super) struct WorkerStats {
    pub(super) filled: AtomicU64,
    pub(super) acked: AtomicU64,
}

/// One order worker, as a deployment runs beside the daemons (`examples/order_worker.rs`):
/// batches of up to 256 `order.accepted` events move their orders accepted → working →
/// filled (one statement a step) and are acknowledged, so the daemon's trim keeps
/// `orders:events` short. Runs until `stop`.
pub(super) async fn work_orders(
    redis_url: String,
    database_url: String,
    stats: Arc<WorkerStats>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut config = OrderWorkerConfig::new(redis_url, database_url, "soak-worker");
    config.block = Duration::from_millis(200);
    let mut worker = OrderWorker::connect(config).await?;
    while !stop.load(Ordering::Relaxed) {
        let events = worker.next_batch(256).await?;
        if events.is_empty() {
            continue;
        }
        let ids: Vec<i64> = events.iter().map(|e| e.order_id).collect();
        worker
            .transition_many(&ids, &[OrderStatus::Accepted], OrderStatus::Working)
            .await?;
        let filled = worker
            .transition_many(&ids, &[OrderStatus::Working], OrderStatus::Filled)
            .await?;
        worker.ack_many(&events).await?;
        stats
            .filled
            .fetch_add(filled.len() as u64, Ordering::Relaxed);
        stats
            .acked
            .fetch_add(events.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// POSTs `rate` orders per second over 4 keep-alive connections until `stop`, their
/// `client_order_id`s starting with `tag`.
pub(super) async fn send_orders(
    http: std::net::SocketAddr,
    rate: u64,
    tag: &'static str,
    stats: Arc<OrderStats>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let per = (rate / 4).max(1);
    let mut tasks = Vec::new();
    for c in 0..4u64 {
        let (stats, stop) = (stats.clone(), stop.clone());
        // A client per task: each keeps its one connection, as before.
        let client = HttpClient::keep_alive(http);
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * per as f64) as u64;
                if n >= due {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                n += 1;
                let body = format!(
                    r#"{{"client_order_id":"{tag}-{c}-{n}","symbol":"ESZ6","side":"buy","type":"limit","quantity":1,"limit_price":6000.25,"time_in_force":"day"}}"#
                );
                let t = Instant::now();
                let answer = client
                    .post_body("/api/orders", "application/json", body)
                    .await?;
                if answer.status == 201 {
                    stats.created.fetch_add(1, Ordering::Relaxed);
                    if let Some(h) = stats.latency_us.lock().unwrap().as_mut() {
                        let _ = h.record(t.elapsed().as_micros() as u64);
                    }
                } else {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn metric_sum_adds_labelled_series_of_that_name_only() {
        let page = "# TYPE christmas_ring_depth gauge\n\
                    christmas_ring_depth{kind=\"trade\",shard=\"0\"} 3\n\
                    christmas_ring_depth{kind=\"quote\",shard=\"0\"} 4\n\
                    christmas_ring_depth_max 100\n\
                    christmas_uptime_seconds 9\n";
        assert_eq!(metric_sum(page, "christmas_ring_depth"), 7.0);
        assert_eq!(metric_sum(page, "christmas_uptime_seconds"), 9.0);
        assert_eq!(metric_sum(page, "christmas_missing"), 0.0);
    }
}
