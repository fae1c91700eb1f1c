//! Orders over HTTP: idempotency under concurrency, validation, reads and cancels per
//! account, rate limits.

use std::collections::HashMap;
use std::sync::Arc;

use christmas_ingest::auth::{hash_key, ApiKey};
use serde_json::{json, Value};

use crate::daemon::Daemon;
use crate::support::count;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_orders_with_a_fifth_repeated_make_eight_thousand_rows() {
    let d = Daemon::start(|_| {}).await;
    // 8,000 ids; 2,000 of them sent twice, the repeat shuffled among the rest.
    let mut ids: Vec<String> = (0..8_000).map(|i| format!("c-{i}")).collect();
    ids.extend((0..2_000).map(|i| format!("c-{}", i * 4)));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..ids.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ids.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let queue = Arc::new(std::sync::Mutex::new(ids));
    let results = Arc::new(std::sync::Mutex::new(Vec::<(String, u16, i64)>::new()));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (queue, results, client) = (queue.clone(), results.clone(), d.client());
            tokio::spawn(async move {
                loop {
                    let Some(id) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let body = order_json(&id, 2.0).to_string();
                    let answer = client
                        .request("POST", "/api/orders", &[], body)
                        .await
                        .unwrap();
                    let (status, v) = (answer.status, answer.json().unwrap());
                    results
                        .lock()
                        .unwrap()
                        .push((id, status, v["id"].as_i64().unwrap_or(-1)));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let results = results.lock().unwrap().clone();
    assert_eq!(results.len(), 10_000);
    let created = results.iter().filter(|r| r.1 == 201).count();
    let repeated = results.iter().filter(|r| r.1 == 200).count();
    assert_eq!(
        (created, repeated),
        (8_000, 2_000),
        "other statuses: {:?}",
        results.iter().find(|r| r.1 != 201 && r.1 != 200)
    );
    // Every answer for an id carries the one order it created.
    let mut by_id: HashMap<&str, i64> = HashMap::new();
    for (id, _, order) in &results {
        assert_eq!(
            *by_id.entry(id).or_insert(*order),
            *order,
            "{id} answered with two orders"
        );
    }
    assert_eq!(count(&d.db, "orders").await, 8_000);
    let accepted = count(
        &d.db,
        "orders WHERE status = 'accepted' AND account = 'default'",
    )
    .await;
    assert_eq!(accepted, 8_000);
    // /metrics counts the same outcomes, and every group the writers committed.
    let metrics = d.client().get("/metrics").await.unwrap();
    assert_eq!(metrics.status, 200);
    let metrics = String::from_utf8(metrics.body.to_vec()).unwrap();
    let value = |line: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line} missing from /metrics"))
    };
    assert_eq!(
        value("christmas_orders_total{outcome=\"created\"}"),
        8_000.0
    );
    assert_eq!(
        value("christmas_orders_total{outcome=\"existing\"}"),
        2_000.0
    );
    assert_eq!(value("christmas_orders_total{outcome=\"conflict\"}"), 0.0);
    let groups = value("christmas_order_groups_total");
    assert!((1.0..=10_000.0).contains(&groups), "{groups} groups");
    assert_eq!(value("christmas_order_submit_seconds_count"), 10_000.0);
    assert_eq!(value("christmas_order_group_orders_count"), groups);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_body_is_409_and_bad_orders_are_400_naming_the_field() {
    let d = Daemon::start(|_| {}).await;
    let (status, first) = d.post("/api/orders", &order_json("c-1", 2.0)).await;
    assert_eq!((status, first["status"].as_str()), (201, Some("accepted")));
    let (status, again) = d.post("/api/orders", &order_json("c-1", 2.0)).await;
    assert_eq!((status, &again["id"]), (200, &first["id"]));
    let (status, v) = d.post("/api/orders", &order_json("c-1", 3.0)).await;
    assert_eq!(
        (status, v["field"].as_str(), &v["order"]["id"]),
        (409, Some("client_order_id"), &first["id"])
    );
    let market = json!({"client_order_id": "m", "symbol": "ESZ6", "side": "sell", "type": "market", "quantity": 1});
    assert_eq!(d.post("/api/orders", &market).await.0, 201);
    let cases = [
        (
            json!({"client_order_id": "x", "symbol": "ESZ6", "side": "hold", "type": "market", "quantity": 1}),
            "side",
        ),
        (
            json!({"client_order_id": "x", "symbol": "ESZ6", "side": "buy", "type": "market", "quantity": 0}),
            "quantity",
        ),
        (
            json!({"client_order_id": "x", "symbol": "ESZ6", "side": "buy", "type": "market", "quantity": -2}),
            "quantity",
        ),
        (
            json!({"client_order_id": "x", "symbol": "ESZ6", "side": "buy", "type": "limit", "quantity": 1}),
            "limit_price",
        ),
        (
            json!({"client_order_id": "x", "symbol": "ESZ6", "side": "buy", "type": "market", "quantity": 1, "limit_price": 5}),
            "limit_price",
        ),
        (
            json!({"client_order_id": "x", "symbol": "this symbol is far too long to be one", "side": "buy", "type": "market", "quantity": 1}),
            "symbol",
        ),
        (
            json!({"client_order_id": "x", "symbol": "ESZ6", "side": "buy", "type": "market", "quantity": 1, "venue": "X"}),
            "venue",
        ),
        (
            json!({"client_order_id": "x", "symbol": "ESZ6", "side": "buy", "type": "stop", "quantity": 1}),
            "type",
        ),
        (
            json!({"client_order_id": "x", "symbol": "ESZ6", "side": "buy", "type": "market", "quantity": 1, "time_in_force": "forever"}),
            "time_in_force",
        ),
        (
            json!({"symbol": "ESZ6", "side": "buy", "type": "market", "quantity": 1}),
            "client_order_id",
        ),
    ];
    for (body, field) in cases {
        let (status, v) = d.post("/api/orders", &body).await;
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some(field)),
            "{body}: {v}"
        );
    }
    assert_eq!(count(&d.db, "orders").await, 2);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_read_listed_and_cancelled_per_account() {
    let keys = vec![
        ApiKey::parse(&format!("alice:{}:orders", hash_key("alice-key"))).unwrap(),
        ApiKey::parse(&format!("bob:{}:orders", hash_key("bob-key"))).unwrap(),
        ApiKey::parse(&format!("feed:{}:ingest", hash_key("feed-key"))).unwrap(),
    ];
    let d = Daemon::start(|c| c.api_keys = keys).await;
    let call = |method: &'static str, path: String, key: &'static str, body: Value| {
        let client = d.client().bearer(key);
        async move {
            let body = if body.is_null() {
                Vec::new()
            } else {
                body.to_string().into_bytes()
            };
            let answer = client.request(method, &path, &[], body).await.unwrap();
            (answer.status, answer.json().unwrap_or(Value::Null))
        }
    };
    let post = |key, body| call("POST", "/api/orders".into(), key, body);
    let get = |key, path: String| call("GET", path, key, Value::Null);
    let delete = |key, id: i64| call("DELETE", format!("/api/orders/{id}"), key, Value::Null);
    assert_eq!(post("feed-key", order_json("a", 1.0)).await.0, 403);
    assert_eq!(d.post("/api/orders", &order_json("a", 1.0)).await.0, 401);
    let (status, a1) = post("alice-key", order_json("a-1", 1.0)).await;
    assert_eq!(status, 201);
    post("alice-key", json!({"client_order_id": "a-2", "symbol": "NQZ6", "side": "sell", "type": "market", "quantity": 5})).await;
    // The same client id from another account is another order.
    let (status, b1) = post("bob-key", order_json("a-1", 1.0)).await;
    assert_eq!(status, 201);
    assert_ne!(a1["id"], b1["id"]);
    let id = a1["id"].as_i64().unwrap();
    let (status, v) = get("alice-key", format!("/api/orders/{id}")).await;
    assert_eq!((status, v["client_order_id"].as_str()), (200, Some("a-1")));
    assert_eq!(get("bob-key", format!("/api/orders/{id}")).await.0, 404);
    let (_, v) = get("alice-key", "/api/orders?symbol=NQZ6".into()).await;
    assert_eq!(v["orders"].as_array().unwrap().len(), 1);
    let (_, v) = get("alice-key", "/api/orders?status=accepted&limit=10".into()).await;
    assert_eq!(v["orders"].as_array().unwrap().len(), 2);
    assert_eq!(
        get("alice-key", "/api/orders?status=sleeping".into())
            .await
            .1["field"],
        "status"
    );
    let (status, v) = delete("alice-key", id).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("cancelled")));
    let (status, v) = delete("alice-key", id).await;
    assert_eq!((status, v["field"].as_str()), (409, Some("id")));
    assert_eq!(delete("bob-key", id).await.0, 404);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_over_its_rate_gets_429_with_retry_after() {
    let d = Daemon::start(|c| {
        c.orders.rate_per_second = 0.5;
        c.orders.rate_burst = 2.0;
    })
    .await;
    assert_eq!(d.post("/api/orders", &order_json("r-1", 1.0)).await.0, 201);
    assert_eq!(d.post("/api/orders", &order_json("r-2", 1.0)).await.0, 201);
    let body = order_json("r-3", 1.0).to_string();
    let refused = d
        .client()
        .request("POST", "/api/orders", &[], body)
        .await
        .unwrap();
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("2"), "{refused:?}");
    assert_eq!(count(&d.db, "orders").await, 2);
    d.shutdown().await.unwrap();
}
