//! `/metrics` of a live daemon read as Prometheus reads it: parsed by a Prometheus text
//! parser (prometheus-parse), its counters and histograms checked against the ticks sent
//! and the rows stored.

use prometheus_parse::{Sample, Scrape, Value};
use serde_json::json;

use christmas_core::frame::AckLevel;
use christmas_ingest::config::SpoolSettings;
use tokio::net::TcpStream;

use crate::daemon::{ingest_frame, read_ack, send_frame, Daemon};
use crate::support::count;

/// The one sample of `metric` whose labels include every pair of `labels`.
fn sample<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> &'a Sample {
    let found: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert_eq!(found.len(), 1, "{metric} {labels:?}: {found:?}");
    found[0]
}

fn counter(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(scrape, metric, labels).value {
        Value::Counter(v) => v,
        ref other => panic!("{metric} is not a counter: {other:?}"),
    }
}

fn untyped(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(scrape, metric, labels).value {
        Value::Untyped(v) | Value::Gauge(v) => v,
        ref other => panic!("{metric}: {other:?}"),
    }
}

/// A histogram's (upper bound, cumulative count) pairs, checked to be cumulative and to end
/// in +Inf at its `_count`.
fn histogram(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let Value::Histogram(ref b) = sample(scrape, metric, labels).value else {
        panic!("{metric} is not a histogram");
    };
    let mut b: Vec<(f64, f64)> = b.iter().map(|h| (h.less_than, h.count)).collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    assert!(
        b.windows(2).all(|w| w[0].1 <= w[1].1),
        "{metric}: not cumulative: {b:?}"
    );
    let total = untyped(scrape, &format!("{metric}_count"), labels);
    assert_eq!(b.last(), Some(&(f64::INFINITY, total)), "{metric}");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_the_ticks_ingested() {
    let d = Daemon::start(|_| {}).await;
    let trade = |seq: i64| {
        json!({"kind": "trade", "symbol": "ESZ6", "time": "2026-11-25T10:00:00.5Z",
               "price": 100.0 + seq as f64, "volume": 1, "side": "B", "exchange_seq": seq})
    };
    for batch in [vec![trade(1), trade(2), trade(3)], vec![trade(4), trade(5)]] {
        let (status, v) = d.post("/api/ticks?ack=committed", &json!(batch)).await;
        assert_eq!(status, 201, "{v}");
    }
    let page = d.client().get("/metrics").await.unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        page.header("content-type")
    );
    let text = page.text();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();

    let stored = count(&d.db, "market_data").await as f64;
    assert_eq!(stored, 5.0);
    let trade_kind = [("kind", "trade")];
    assert_eq!(
        counter(&scrape, "christmas_rows_committed_total", &trade_kind),
        stored
    );
    assert_eq!(
        counter(&scrape, "christmas_accepted_total", &trade_kind),
        stored
    );
    assert_eq!(
        counter(
            &scrape,
            "christmas_rows_committed_total",
            &[("kind", "quote")]
        ),
        0.0
    );
    let posts = [
        ("method", "POST"),
        ("route", "/api/ticks"),
        ("status", "201"),
    ];
    assert_eq!(
        counter(&scrape, "christmas_http_requests_total", &posts),
        2.0
    );

    // Every committed trade in push → commit, at the bounds the daemon exports.
    let p2c = histogram(&scrape, "christmas_push_to_commit_seconds", &trade_kind);
    let bounds: Vec<f64> = p2c.iter().map(|(b, _)| *b).collect();
    let mut want = christmas_ingest::metrics::LATENCY_BUCKETS.to_vec();
    want.push(f64::INFINITY);
    assert_eq!(bounds, want);
    assert_eq!(p2c.last().unwrap().1, stored);
    let sum = untyped(&scrape, "christmas_push_to_commit_seconds_sum", &trade_kind);
    assert!(
        sum > 0.0 && sum < 10.0 * stored,
        "push → commit sum {sum} s"
    );
    // Each tick waited in batching; each batch (one per request at most) was committed.
    let batching = histogram(
        &scrape,
        "christmas_stage_seconds",
        &[("kind", "trade"), ("stage", "batching")],
    );
    assert_eq!(batching.last().unwrap().1, stored);
    let batches = counter(&scrape, "christmas_batches_committed_total", &trade_kind);
    assert!((1.0..=2.0).contains(&batches), "{batches} batches");
    let commits = histogram(&scrape, "christmas_batch_commit_seconds", &trade_kind);
    assert_eq!(commits.last().unwrap().1, batches);
    // The two POSTs are among the requests timed (this scrape is not yet).
    let requests = histogram(&scrape, "christmas_http_request_duration_seconds", &[]);
    assert!(requests.last().unwrap().1 >= 2.0, "{requests:?}");
    assert!(
        scrape.docs.contains_key("christmas_order_submit_seconds"),
        "HELP of the order latency"
    );
    d.shutdown().await.unwrap();
}

/// `_count` of `metric` for the series with exactly `labels`' values among its labels.
fn histogram_count(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    histogram(scrape, metric, labels).last().unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_histograms_count_every_tick_and_batch_a_spooled_daemon_committed() {
    let spool = std::env::temp_dir().join(format!(
        "christmas-it-stages-{}-{}",
        std::process::id(),
        christmas_core::query::unix_ns(std::time::SystemTime::now())
    ));
    let d = Daemon::start(|c| {
        c.spool = SpoolSettings {
            dir: Some(spool.display().to_string()),
            ..Default::default()
        };
    })
    .await;
    // Frames of 20 trades and a quote, acknowledged at `committed`, some pipelined.
    let mut s = TcpStream::connect(d.tcp).await.unwrap();
    let frames: u64 = 6;
    for seq in 1..=frames {
        send_frame(&mut s, &ingest_frame(seq, AckLevel::Committed, 20)).await;
        if seq % 2 == 0 {
            for _ in 0..2 {
                let ack = read_ack(&mut s).await.unwrap();
                assert!(ack.ok, "{ack:?}");
            }
        }
    }
    // An ack is measured once written: the last may be read here a moment before.
    let mut scrape;
    let mut tries = 0;
    loop {
        let text = d.client().get("/metrics").await.unwrap().text();
        scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
        let labels = [("transport", "tcp")];
        let acks = histogram_count(&scrape, "christmas_ack_delivery_seconds", &labels);
        tries += 1;
        if acks >= frames as f64 || tries == 50 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    for (kind, table) in [("trade", "market_data"), ("quote", "quotes")] {
        let stored = count(&d.db, table).await as f64;
        let committed = counter(&scrape, "christmas_rows_committed_total", &[("kind", kind)]);
        assert_eq!(committed, stored, "{kind}");
        let batches = counter(
            &scrape,
            "christmas_batches_committed_total",
            &[("kind", kind)],
        );
        assert!(batches >= 1.0, "{kind}: {batches} batches");
        let stage = |stage: &str| {
            let labels = [("kind", kind), ("stage", stage)];
            histogram_count(&scrape, "christmas_stage_seconds", &labels)
        };
        // Per tick: every row stored went through the ring, the linger and batching.
        for per_tick in ["ring", "linger", "batching"] {
            assert_eq!(stage(per_tick), stored, "{kind} {per_tick}");
        }
        // Per batch: every committed batch went through the spool, the writer's queue, a
        // COPY and a COMMIT.
        for per_batch in ["spool", "queue", "copy", "commit"] {
            assert_eq!(stage(per_batch), batches, "{kind} {per_batch}");
        }
        let fsyncs = stage("fsync");
        assert!(
            (1.0..=batches).contains(&fsyncs),
            "{kind}: {fsyncs} fsyncs for {batches} batches"
        );
    }
    assert_eq!(count(&d.db, "market_data").await, 20 * frames as i64);
    // Every frame's ack was delivered after its commit, and measured.
    let acks = histogram_count(
        &scrape,
        "christmas_ack_delivery_seconds",
        &[("transport", "tcp")],
    );
    assert_eq!(acks, frames as f64);
    drop(s);
    d.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&spool);
}
