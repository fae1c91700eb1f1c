//! The open-loop load generator of the `orders` scenario: POST /api/orders at a fixed offered
//! rate, each request with its scheduled send time, and latency measured from that time, so a
//! server that falls behind is charged for the requests waiting to be sent (no coordinated
//! omission, as wrk2 measures). Then the highest rate a server sustains.
//!
//! Written here rather than installed (`oha`, wrk2): a few raw HTTP/1.1 keep-alive
//! connections on a runtime of their own, no crate beyond the bench's, nothing to compile or
//! fetch on a newcomer's machine. The request is the one bench/wrk/orders.lua sends.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long answers still missing when the schedule ends are waited for.
const DRAIN: Duration = Duration::from_secs(5);
/// Requests sent this much before their scheduled time instead of sleeping for less: the
/// timer's granularity is a millisecond. Such a request's latency counts from its send.
const EARLY: Duration = Duration::from_millis(1);
/// A rate is sustained when its p99 (from the scheduled times) stays under this, every
/// request is answered below 400, and answers come at ≥ 95 % of the offered rate.
pub const SUSTAINED_P99_MS: f64 = 100.0;

/// What one open-loop run measured.
#[derive(Debug, Default, Clone)]
pub struct OpenLoopRun {
    pub offered_per_s: f64,
    /// Requests scheduled (rate × seconds).
    pub scheduled: u64,
    /// Answers below 400 (new orders), and per second from the first schedule to the last answer.
    pub created: u64,
    pub created_per_s: f64,
    /// Answers of 400 and above.
    pub other: u64,
    /// Requests lost to a socket error or not answered within the drain.
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl OpenLoopRun {
    /// Whether the server kept up with the offered rate (see [`SUSTAINED_P99_MS`]).
    pub fn sustained(&self) -> bool {
        self.errors == 0
            && self.other == 0
            && self.created == self.scheduled
            && self.created_per_s >= 0.95 * self.offered_per_s
            && self.p99_ms <= SUSTAINED_P99_MS
    }
}

/// The schedule every connection takes its next request from.
#[derive(Debug)]
struct Schedule {
    start: Instant,
    interval_ns: f64,
    total: u64,
    next: AtomicU64,
    /// `client_order_id` prefix, unique per run.
    prefix: String,
    host: String,
}

/// What one connection counted.
#[derive(Debug)]
struct Tally {
    latency_us: Histogram<u64>,
    created: u64,
    other: u64,
    errors: u64,
    last_answer: Instant,
}

/// POST /api/orders at `rate` a second for `seconds` over `connections` keep-alive
/// connections to `addr`, on a 2-thread runtime of its own (as `wrk -t2`).
pub fn orders(addr: &str, rate: f64, seconds: f64, connections: usize) -> Result<OpenLoopRun> {
    static RUN: AtomicU64 = AtomicU64::new(0);
    anyhow::ensure!(
        rate > 0.0 && seconds > 0.0,
        "open loop: rate and seconds must be > 0"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let total = (rate * seconds).round().max(1.0) as u64;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let prefix = format!(
        "o{stamp}-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    );
    let tallies = rt.block_on(async {
        // Connect first, so the schedule does not start with the handshakes.
        let mut streams = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            let s = TcpStream::connect(addr)
                .await
                .with_context(|| format!("open loop: connecting to {addr}"))?;
            s.set_nodelay(true)?;
            streams.push(s);
        }
        let schedule = Arc::new(Schedule {
            start: Instant::now() + Duration::from_millis(20),
            interval_ns: 1e9 / rate,
            total,
            next: AtomicU64::new(0),
            prefix,
            host: addr.to_string(),
        });
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|s| tokio::spawn(connection(s, addr.to_string(), schedule.clone())))
            .collect();
        let mut tallies = Vec::with_capacity(tasks.len());
        for t in tasks {
            tallies.push(t.await.context("open loop: a connection task panicked")??);
        }
        anyhow::Ok((schedule.start, tallies))
    })?;
    Ok(summarise(rate, total, tallies.0, &tallies.1))
}

/// Merges the connections' tallies.
fn summarise(rate: f64, total: u64, start: Instant, tallies: &[Tally]) -> OpenLoopRun {
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
    let mut run = OpenLoopRun {
        offered_per_s: rate,
        scheduled: total,
        ..OpenLoopRun::default()
    };
    let mut last = start;
    for t in tallies {
        let _ = h.add(&t.latency_us);
        run.created += t.created;
        run.other += t.other;
        run.errors += t.errors;
        last = last.max(t.last_answer);
    }
    let secs = last.duration_since(start).as_secs_f64().max(1e-9);
    run.created_per_s = run.created as f64 / secs;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    run.p50_ms = ms(0.5);
    run.p99_ms = ms(0.99);
    run.p999_ms = ms(0.999);
    run.max_ms = h.max() as f64 / 1e3;
    run
}

/// One keep-alive connection: takes the next scheduled request, waits for its time, sends
/// it, reads the answer; reconnects after a socket error.
async fn connection(stream: TcpStream, addr: String, s: Arc<Schedule>) -> Result<Tally> {
    let mut tally = Tally {
        latency_us: Histogram::new_with_bounds(1, 600_000_000, 3)?,
        created: 0,
        other: 0,
        errors: 0,
        last_answer: s.start,
    };
    let end = s.start + Duration::from_nanos((s.total as f64 * s.interval_ns) as u64) + DRAIN;
    let (mut rd, mut wr) = split(stream);
    let mut req = Vec::with_capacity(512);
    let mut scratch = Vec::with_capacity(1024);
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= s.total {
            break;
        }
        let due = s.start + Duration::from_nanos((i as f64 * s.interval_ns) as u64);
        if due > Instant::now() + EARLY {
            tokio::time::sleep_until((due - EARLY).into()).await;
        }
        request(&mut req, &s, i);
        let sent = Instant::now();
        let answer = tokio::time::timeout_at(end.into(), async {
            wr.write_all(&req).await?;
            read_status(&mut rd, &mut scratch).await
        })
        .await;
        match answer {
            Ok(Ok(status)) => {
                let now = Instant::now();
                tally.last_answer = now;
                let us = now.duration_since(due.min(sent)).as_micros() as u64;
                tally.latency_us.saturating_record(us.max(1));
                if status < 400 {
                    tally.created += 1;
                } else {
                    tally.other += 1;
                }
            }
            Ok(Err(_)) => {
                tally.errors += 1;
                let Ok(fresh) = TcpStream::connect(&addr).await else {
                    // The rest of the schedule goes to the other connections.
                    break;
                };
                fresh.set_nodelay(true)?;
                (rd, wr) = split(fresh);
            }
            Err(_) => {
                // Not answered by the end of the drain: this and every request still to
                // come on this connection is lost.
                tally.errors += 1;
                break;
            }
        }
    }
    Ok(tally)
}

type Reader = BufReader<tokio::net::tcp::OwnedReadHalf>;
type Writer = tokio::net::tcp::OwnedWriteHalf;

fn split(s: TcpStream) -> (Reader, Writer) {
    let (r, w) = s.into_split();
    (BufReader::with_capacity(16 << 10, r), w)
}

/// The request bench/wrk/orders.lua sends, with order `i`'s unique id.
fn request(buf: &mut Vec<u8>, s: &Schedule, i: u64) {
    use std::io::Write;
    let side = if i.is_multiple_of(2) { "buy" } else { "sell" };
    let body = format!(
        r#"{{"client_order_id":"{}-{i}","symbol":"ESZ6","side":"{side}","type":"limit","quantity":{},"limit_price":6000.25,"time_in_force":"day"}}"#,
        s.prefix,
        1 + i % 5
    );
    buf.clear();
    let _ = write!(
        buf,
        "POST /api/orders HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        s.host,
        body.len()
    );
}

/// Reads one HTTP/1.1 answer (status line, headers, a `Content-Length` body); its status.
async fn read_status(rd: &mut Reader, scratch: &mut Vec<u8>) -> std::io::Result<u16> {
    let bad = |what: &str| std::io::Error::new(ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    if rd.read_line(&mut line).await? == 0 {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no HTTP status line"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        if rd.read_line(&mut line).await? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().map_err(|_| bad("bad Content-Length"))?;
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("chunked answers are not read"));
            }
        }
    }
    scratch.resize(length, 0);
    rd.read_exact(scratch).await?;
    Ok(status)
}

/// How [`max_rate`] searches.
#[derive(Debug, Clone, Copy)]
pub struct Search {
    /// The first rate tried.
    pub start: f64,
    /// Seconds of each try.
    pub seconds: f64,
    pub connections: usize,
    /// No rate above this is tried.
    pub cap: f64,
}

/// The highest offered rate `addr` sustains ([`OpenLoopRun::sustained`]): up by ×1.25 from
/// `start` while sustained (down by ÷2 while not), then two halvings of the gap between
/// the last sustained rate and the first that was not. The sustained run at the highest
/// rate, and every try in order.
pub fn max_rate(
    addr: &str,
    search: Search,
    mut progress: impl FnMut(&OpenLoopRun),
) -> Result<(OpenLoopRun, Vec<OpenLoopRun>)> {
    let mut tries = Vec::new();
    let mut attempt = |rate: f64| -> Result<OpenLoopRun> {
        let r = orders(addr, rate.round(), search.seconds, search.connections)?;
        progress(&r);
        tries.push(r.clone());
        Ok(r)
    };
    let (mut ok, mut fail): (Option<OpenLoopRun>, Option<f64>) = (None, None);
    let mut rate = search.start;
    for _ in 0..16 {
        let r = attempt(rate)?;
        if r.sustained() {
            ok = Some(r);
            if fail.is_some() || rate >= search.cap {
                break;
            }
            rate = (rate * 1.25).min(search.cap);
        } else {
            fail = Some(rate);
            if ok.is_some() || rate < 100.0 {
                break;
            }
            rate /= 2.0;
        }
    }
    let Some(mut best) = ok else {
        bail!(
            "no rate from {:.0} down to {rate:.0}/s was sustained",
            search.start
        );
    };
    if let Some(mut hi) = fail {
        for _ in 0..2 {
            let mid = (best.offered_per_s + hi) / 2.0;
            let r = attempt(mid)?;
            if r.sustained() {
                best = r;
            } else {
                hi = mid;
            }
        }
    }
    Ok((best, tries))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answering every request 201 after `delay`, one request at a time per
    /// connection; the requests it read.
    async fn slow_server(delay: Duration) -> (String, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let (mut rd, mut wr) = split(s);
                    let mut line = String::new();
                    loop {
                        let mut length = 0usize;
                        loop {
                            line.clear();
                            if rd.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if let Some(v) =
                                line.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                length = v.trim().parse().unwrap();
                            }
                            if line.trim_end().is_empty() {
                                break;
                            }
                        }
                        let mut body = vec![0; length];
                        rd.read_exact(&mut body).await.unwrap();
                        assert!(body.starts_with(br#"{"client_order_id":"o"#));
                        counter.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                        let answer = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";
                        if wr.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    #[test]
    fn every_scheduled_request_is_sent_and_answered() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (addr, seen) = rt.block_on(slow_server(Duration::from_millis(1)));
        let run = orders(&addr, 2_000.0, 0.5, 8).unwrap();
        assert_eq!(run.scheduled, 1_000);
        assert_eq!(seen.load(Ordering::Relaxed), 1_000);
        assert_eq!((run.created, run.other, run.errors), (1_000, 0, 0));
        assert!(
            run.p50_ms >= 1.0,
            "p50 {} ms below the server's 1 ms",
            run.p50_ms
        );
        assert!(run.sustained(), "{run:?}");
    }

    #[test]
    fn latency_counts_from_the_schedule_when_the_server_falls_behind() {
        // 2 connections, 20 ms each answer: at most 100 answers/s against 400/s offered.
        // Measured from the send, every answer would take ~20 ms; from the schedule, the
        // backlog grows to ~1.5 s by the end of the second.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (addr, _) = rt.block_on(slow_server(Duration::from_millis(20)));
        let run = orders(&addr, 400.0, 0.5, 2).unwrap();
        assert!(
            run.p99_ms > 300.0,
            "p99 {} ms: coordinated omission",
            run.p99_ms
        );
        assert!(run.created_per_s < 150.0, "{run:?}");
        assert!(!run.sustained());
    }

    #[test]
    fn the_highest_sustained_rate_is_below_the_servers_capacity_and_above_half_of_it() {
        // 4 connections, each answer after 5 ms (6 with the timer's rounding): 650–800/s.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (addr, _) = rt.block_on(slow_server(Duration::from_millis(5)));
        let search = Search {
            start: 200.0,
            seconds: 0.5,
            connections: 4,
            cap: 5_000.0,
        };
        let (best, tries) = max_rate(&addr, search, |_| {}).unwrap();
        assert!(best.sustained(), "{best:?}");
        assert!(
            (300.0..=850.0).contains(&best.offered_per_s),
            "{} /s sustained by a server of at most 800/s",
            best.offered_per_s
        );
        assert!(tries
            .iter()
            .any(|t| !t.sustained() && t.offered_per_s > best.offered_per_s));
        assert!(tries
            .iter()
            .all(|t| !t.sustained() || t.offered_per_s <= best.offered_per_s));
    }
}
