//! The HTTP API's edges under clients that get things wrong: auth challenges, JSON error
//! bodies for every refusal, NUL bytes in parameters, and closing after an early refusal.

use std::time::Duration;

use christmas_ingest::auth::{hash_key, ApiKey};
use christmas_ingest::config::DaemonConfig;
use christmas_tests::{HttpClient, InProcessDaemon};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::fresh_core_db;

/// A daemon (HTTP only) with its own database and two keys: `desk-key` (orders and reads)
/// and `feed-key` (ingest).
async fn start(tweak: impl FnOnce(&mut DaemonConfig)) -> InProcessDaemon {
    let (url, _db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let mut config = DaemonConfig {
        database_url: Some(url.into()),
        api_keys: vec![
            ApiKey::parse(&format!("desk:{}:orders+read", hash_key("desk-key"))).unwrap(),
            ApiKey::parse(&format!("feed:{}:ingest", hash_key("feed-key"))).unwrap(),
        ],
        ..DaemonConfig::default()
    };
    tweak(&mut config);
    InProcessDaemon::start(config, false).await.unwrap()
}

/// `method path` with `headers` on a fresh keep-alive connection: status, headers, JSON body.
async fn call(
    d: &InProcessDaemon,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, hyper::HeaderMap, Value) {
    let r = HttpClient::keep_alive(d.http())
        .request(method, path, headers, Vec::new())
        .await
        .unwrap();
    let body = r
        .json()
        .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {:?}", r.text()));
    (r.status, r.headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_is_case_insensitive_and_401s_carry_a_challenge() {
    let d = start(|_| {}).await;
    let (status, headers, v) = call(&d, "GET", "/api/orders", &[]).await;
    assert_eq!((status, v["field"].as_str()), (401, Some("authorization")));
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, headers, _) = call(
        &d,
        "GET",
        "/api/orders",
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let key = format!("{scheme} desk-key");
        let (status, headers, _) = call(&d, "GET", "/api/orders", &[("authorization", &key)]).await;
        assert_eq!(status, 200, "{key}");
        assert!(headers.get("www-authenticate").is_none());
    }
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_a_json_error_naming_the_field() {
    let d = start(|_| {}).await;
    let key = [("authorization", "Bearer desk-key")];
    let (status, _, v) = call(&d, "GET", "/api/nothing", &[]).await;
    assert_eq!((status, v["error"].is_string()), (404, true));
    let (status, headers, v) = call(&d, "PUT", "/api/orders", &key).await;
    assert_eq!((status, v["field"].as_str()), (405, Some("method")));
    assert_eq!(headers["allow"], "POST,GET,HEAD");
    assert_eq!(headers["content-type"], "application/json");
    let (status, headers, v) = call(&d, "PATCH", "/api/orders/1", &key).await;
    assert_eq!((status, v["field"].as_str()), (405, Some("method")));
    assert!(headers["allow"].to_str().unwrap().contains("DELETE"));
    // A path parameter that is not UTF-8 once decoded.
    for (path, field) in [
        ("/api/orders/%FF", "id"),
        ("/api/market-data/%FF/trades", "symbol"),
        ("/api/market-data/%FF/bars", "symbol"),
    ] {
        let (status, headers, v) = call(&d, "GET", path, &key).await;
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some(field)),
            "{path}: {v}"
        );
        assert_eq!(headers["content-type"], "application/json", "{path}");
    }
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_byte_in_a_parameter_is_the_clients_error() {
    let d = start(|_| {}).await;
    let key = [("authorization", "Bearer desk-key")];
    for (path, field) in [
        ("/api/orders?symbol=%00", "symbol"),
        ("/api/orders?status=%00", "status"),
        ("/api/orders?symbol=ES%00Z6&limit=5", "symbol"),
        ("/api/market-data?symbol=%00", "symbol"),
        ("/api/market-data/ESZ6/trades?from=%00", "from"),
        ("/api/market-data/ESZ6/bars?interval=1m%00", "interval"),
        ("/api/market-data/ES%00Z6/trades", "symbol"),
        ("/api/orders/1%00", "id"),
    ] {
        let (status, _, v) = call(&d, "GET", path, &key).await;
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some(field)),
            "{path}: {v}"
        );
    }
    d.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_before_the_body_is_read_closes_the_connection() {
    let d = start(|c| c.http.max_body_bytes = 1024).await;
    let client = HttpClient::keep_alive(d.http());
    let ticks = "[]".repeat(10);
    for (key, path, body, status) in [
        (None, "/api/ticks", ticks.clone(), 401),
        (Some("Bearer desk-key"), "/api/ticks", ticks, 403),
        (
            Some("Bearer desk-key"),
            "/api/orders",
            "x".repeat(70_000),
            413,
        ),
        (None, "/api/orders", "{}".to_string(), 401),
    ] {
        let headers: Vec<_> = key.map(|k| ("authorization", k)).into_iter().collect();
        let r = client.request("POST", path, &headers, body).await.unwrap();
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"), "{path} {status}");
        assert!(r.json().unwrap()["error"].is_string());
    }
    // Over a raw socket: the 401 arrives with half the body unsent, then the server closes.
    let mut socket = TcpStream::connect(d.http()).await.unwrap();
    let head = "POST /api/ticks HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n[";
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 401"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    d.stop().await.unwrap();
}
