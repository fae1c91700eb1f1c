//! Strict parsing where ticks and orders enter over HTTP: impossible dates and offsets,
//! repeated keys and bodies of something else than records are 400s that name the field
//! (and, in NDJSON, the line), nothing of a refused request is stored, and a large body
//! is parsed without stalling `/health`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::Daemon;
use crate::support::count;

const TRADE: &str =
    r#"{"kind":"trade","symbol":"ESZ6","time":"2026-11-25T10:00:00Z","price":100,"volume":1}"#;

/// A trade whose `time` is `time`.
fn trade_at(time: &str) -> String {
    format!(r#"{{"kind":"trade","symbol":"ESZ6","time":"{time}","price":100,"volume":1}}"#)
}

async fn post_raw(d: &Daemon, path: &str, body: &str) -> (u16, Value) {
    d.call("POST", path, &[], body.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_times_and_repeated_keys_are_400s_naming_them_and_nothing_is_stored() {
    let d = Daemon::start(|_| {}).await;
    let cases = [
        (
            format!("[{TRADE},{}]", trade_at("2024-02-31T00:00:00Z")),
            "time",
        ),
        (format!("[{}]", trade_at("2023-02-29T00:00:00Z")), "time"),
        (
            format!("[{}]", trade_at("2024-07-02T00:00:00+99:99")),
            "time",
        ),
        (
            format!("[{}]", trade_at("2024-07-02T00:00:00+24:00")),
            "time",
        ),
        (
            r#"[{"kind":"trade","symbol":"ESZ6","time_ns":1,"price":1,"price":999,"volume":1}]"#
                .to_string(),
            "price",
        ),
        (
            format!(
                "{TRADE}\n{}",
                r#"{"kind":"quote","symbol":"A","symbol":"B","time_ns":1,"bid":1,"ask":2,"bid_size":1,"ask_size":1}"#
            ),
            "symbol",
        ),
    ];
    for (body, field) in &cases {
        let (status, v) = post_raw(&d, "/api/ticks?ack=committed", body).await;
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some(*field)),
            "{body}: {v}"
        );
        assert!(v["reason"].is_string() && v["error"].is_string(), "{v}");
    }
    // A leap day is a real date: the one request that goes in.
    let (status, _) = post_raw(
        &d,
        "/api/ticks?ack=committed",
        &format!("[{}]", trade_at("2024-02-29T12:00:00+01:00")),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(count(&d.db, "market_data").await, 1);

    let order = r#""symbol":"ESZ6","side":"buy","type":"limit","quantity":2,"limit_price":6000.25"#;
    for (body, field) in [
        (
            format!(r#"{{"client_order_id":"c-1",{order},"client_order_id":"c-2"}}"#),
            "client_order_id",
        ),
        (
            format!(r#"{{"client_order_id":"c-1",{order},"limit_price":1}}"#),
            "limit_price",
        ),
    ] {
        let (status, v) = post_raw(&d, "/api/orders", &body).await;
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some(field)),
            "{body}: {v}"
        );
    }
    assert_eq!(count(&d.db, "orders").await, 0);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ndjson_error_names_its_line_and_record() {
    let d = Daemon::start(|_| {}).await;
    let body = format!(
        "{TRADE}\n\n{TRADE}\n{}\n{TRADE}\n",
        trade_at("2024-13-01T00:00:00Z")
    );
    let (status, v) = post_raw(&d, "/api/ticks?ack=committed", &body).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        (v["index"].as_u64(), v["line"].as_u64(), v["field"].as_str()),
        (Some(2), Some(4), Some("time")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("line 4"), "{v}");
    // An array names the index only.
    let (_, v) = post_raw(&d, "/api/ticks", &format!("[{TRADE},1]")).await;
    assert_eq!((v["index"].as_u64(), v.get("line")), (Some(1), None), "{v}");
    assert_eq!(count(&d.db, "market_data").await, 0);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_mib_array_of_zeros_is_refused_at_once_and_health_answers_during_large_bodies() {
    let d = Daemon::start(|_| {}).await;
    let mut zeros = String::with_capacity(8 << 20);
    zeros.push('[');
    while zeros.len() + 4 <= 8 << 20 {
        zeros.push_str("0,");
    }
    zeros.push_str("0]");
    assert!(zeros.len() > (8 << 20) - 4);
    let started = Instant::now();
    let posts: Vec<_> = (0..8)
        .map(|_| {
            let (client, body) = (d.client(), zeros.clone());
            tokio::spawn(async move { client.request("POST", "/api/ticks", &[], body).await })
        })
        .collect();
    for post in posts {
        let r = post.await.unwrap().unwrap();
        let v: Value = r.json().unwrap();
        assert_eq!(
            (r.status, v["index"].as_u64(), v["field"].as_str()),
            (400, Some(0), Some("body")),
            "{v}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Large valid bodies (over the inline limit) parse on the blocking pool: /health
    // answers while they are parsed.
    let big: String = (0..40_000).map(|_| format!("{TRADE}\n")).collect();
    let posts: Vec<_> = (0..4)
        .map(|_| {
            let (client, body) = (d.client(), big.clone());
            tokio::spawn(async move {
                let r = client.request("POST", "/api/ticks?ack=committed", &[], body);
                r.await.unwrap().status
            })
        })
        .collect();
    let posts = async {
        let mut statuses = Vec::new();
        for post in posts {
            statuses.push(post.await.unwrap());
        }
        statuses
    };
    let health = async {
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let asked = Instant::now();
            assert_eq!(d.get("/health").await.0, 200);
            slowest = slowest.max(asked.elapsed());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        slowest
    };
    let (statuses, slowest) = tokio::join!(posts, health);
    assert!(statuses.iter().all(|&s| s == 201), "{statuses:?}");
    assert!(slowest < Duration::from_secs(1), "/health took {slowest:?}");
    assert_eq!(count(&d.db, "market_data").await, 160_000);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_bodies_of_8_mib_in_parallel_keep_the_daemons_memory_bounded() {
    let (url, client) = crate::support::fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let mut d = christmas_tests::DaemonProcess::spawn(
        &christmas_tests::DaemonProcess::binary().unwrap(),
        christmas_tests::free_addr(),
        None,
        |cmd| {
            cmd.env("DATABASE_URL", &url).env("RUST_LOG", "warn");
        },
    )
    .unwrap();
    d.wait_ready(Duration::from_secs(30)).await.unwrap();
    let http = christmas_tests::HttpClient::new(d.http());
    let (_, peak_before) = d.memory().unwrap();
    let mut zeros = String::with_capacity(8 << 20);
    zeros.push('[');
    while zeros.len() + 4 <= 8 << 20 {
        zeros.push_str("0,");
    }
    zeros.push_str("0]");
    // Eight hostile bodies at once, while /health is asked.
    let posts: Vec<_> = (0..8)
        .map(|_| {
            let (client, body) = (http.clone(), zeros.clone());
            tokio::spawn(async move { client.request("POST", "/api/ticks", &[], body).await })
        })
        .collect();
    let health = http.get("/health").await.unwrap();
    assert_eq!(health.status, 200);
    for post in posts {
        let r = post.await.unwrap().unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json().unwrap()["field"], "body");
    }
    let (_, peak) = d.memory().unwrap();
    let grew = peak.saturating_sub(peak_before);
    // The bodies themselves are 64 MiB; parsing them must not cost a multiple of that (it
    // once reached 511 MB).
    assert!(
        grew < 160 << 20,
        "peak resident memory grew by {} MiB",
        grew >> 20
    );
    eprintln!(
        "8 × 8 MiB hostile bodies: peak RSS grew by {} MiB",
        grew >> 20
    );
    assert_eq!(count(&client, "market_data").await, 0);
    d.stop().unwrap();
}
