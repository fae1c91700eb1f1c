//! Orders over HTTP and through the library: group commit, idempotency under concurrency,
//! validation, reads and cancels, rate limits, a killed connection mid-commit, and workers
//! that crash before acknowledging.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use christmas_core::orders::{
    NewOrder, OrderDesk, OrderDeskConfig, OrderEvent, OrderSide, OrderStatus, OrderType,
    OrderWorker, OrderWorkerConfig, SubmitOutcome, TimeInForce,
};
use christmas_core::Symbol;
use christmas_ingest::auth::{hash_key, ApiKey};
use christmas_tests::RedisServer;
use serde_json::{json, Value};

use crate::daemon::Daemon;
use crate::support::{connect, count, fresh_core_db};

fn order_json(id: &str, quantity: f64) -> Value {
    json!({"client_order_id": id, "symbol": "ESZ6", "side": "buy", "type": "limit",
           "quantity": quantity, "limit_price": 6000.25, "time_in_force": "gtc"})
}

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
    assert_eq!(
        call(
            "POST",
            "/api/orders".into(),
            "feed-key",
            order_json("a", 1.0)
        )
        .await
        .0,
        403
    );
    assert_eq!(d.post("/api/orders", &order_json("a", 1.0)).await.0, 401);
    let (status, a1) = call(
        "POST",
        "/api/orders".into(),
        "alice-key",
        order_json("a-1", 1.0),
    )
    .await;
    assert_eq!(status, 201);
    call("POST", "/api/orders".into(), "alice-key", json!({"client_order_id": "a-2", "symbol": "NQZ6", "side": "sell", "type": "market", "quantity": 5})).await;
    // The same client id from another account is another order.
    let (status, b1) = call(
        "POST",
        "/api/orders".into(),
        "bob-key",
        order_json("a-1", 1.0),
    )
    .await;
    assert_eq!(status, 201);
    assert_ne!(a1["id"], b1["id"]);
    let id = a1["id"].as_i64().unwrap();
    let (status, v) = call("GET", format!("/api/orders/{id}"), "alice-key", Value::Null).await;
    assert_eq!((status, v["client_order_id"].as_str()), (200, Some("a-1")));
    assert_eq!(
        call("GET", format!("/api/orders/{id}"), "bob-key", Value::Null)
            .await
            .0,
        404
    );
    let (_, v) = call(
        "GET",
        "/api/orders?symbol=NQZ6".into(),
        "alice-key",
        Value::Null,
    )
    .await;
    assert_eq!(v["orders"].as_array().unwrap().len(), 1);
    let (_, v) = call(
        "GET",
        "/api/orders?status=accepted&limit=10".into(),
        "alice-key",
        Value::Null,
    )
    .await;
    assert_eq!(v["orders"].as_array().unwrap().len(), 2);
    assert_eq!(
        call(
            "GET",
            "/api/orders?status=sleeping".into(),
            "alice-key",
            Value::Null
        )
        .await
        .1["field"],
        "status"
    );
    let (status, v) = call(
        "DELETE",
        format!("/api/orders/{id}"),
        "alice-key",
        Value::Null,
    )
    .await;
    assert_eq!((status, v["status"].as_str()), (200, Some("cancelled")));
    let (status, v) = call(
        "DELETE",
        format!("/api/orders/{id}"),
        "alice-key",
        Value::Null,
    )
    .await;
    assert_eq!((status, v["field"].as_str()), (409, Some("id")));
    assert_eq!(
        call(
            "DELETE",
            format!("/api/orders/{id}"),
            "bob-key",
            Value::Null
        )
        .await
        .0,
        404
    );
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_over_its_rate_gets_429_with_retry_after() {
    let d = Daemon::start(|c| {
        c.order_rate_per_second = 0.5;
        c.order_rate_burst = 2.0;
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

/// Entries in the order-events stream.
fn events_len(redis: &RedisServer) -> u64 {
    redis
        .cli(&["XLEN", "orders:events"])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A desk with events on `redis`, its config changed by `tune`.
async fn desk_with_events(
    redis: &RedisServer,
    url: &str,
    tune: impl FnOnce(OrderDeskConfig) -> OrderDeskConfig,
) -> OrderDesk {
    OrderDesk::start(tune(OrderDeskConfig {
        redis_url: Some(redis.url()),
        ..OrderDeskConfig::new(url)
    }))
    .await
    .unwrap()
}

/// A Redis of its own, a fresh database, and a desk with the default config and events on.
async fn fresh_desk_with_events() -> (RedisServer, tokio_postgres::Client, Arc<OrderDesk>) {
    let redis = tokio::task::block_in_place(RedisServer::start).unwrap();
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let desk = Arc::new(desk_with_events(&redis, &url, |c| c).await);
    (redis, db, desk)
}

/// Every stored order's id, by `client_order_id`.
async fn stored_ids(db: &tokio_postgres::Client) -> HashMap<String, i64> {
    db.query("SELECT client_order_id, id FROM orders", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Worker `name`, reads blocking at most `block_ms`.
async fn worker(redis: &RedisServer, url: &str, name: &str, block_ms: u64) -> OrderWorker {
    OrderWorker::connect(OrderWorkerConfig {
        block: Duration::from_millis(block_ms),
        ..OrderWorkerConfig::new(redis.url(), url, name)
    })
    .await
    .unwrap()
}

fn new_order(i: usize) -> NewOrder {
    NewOrder {
        account: "desk".into(),
        client_order_id: format!("k-{i}"),
        symbol: Symbol::new("ESZ6").unwrap(),
        side: if i.is_multiple_of(2) {
            OrderSide::Buy
        } else {
            OrderSide::Sell
        },
        order_type: OrderType::Market,
        quantity: 1.0 + (i % 5) as f64,
        limit_price: None,
        time_in_force: TimeInForce::Ioc,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_writer_connection_mid_commit_loses_and_duplicates_nothing() {
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let desk = Arc::new(OrderDesk::start(OrderDeskConfig::new(&url)).await.unwrap());
    let killer = {
        let url = url.clone();
        tokio::spawn(async move {
            let c = connect(&url).await;
            let mut killed = 0i64;
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(25)).await;
                let n: i64 = c
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                          WHERE application_name LIKE 'christmas-orders-%' AND datname = current_database()",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                killed += n;
            }
            killed
        })
    };
    let submitters: Vec<_> = (0..40)
        .map(|t| {
            let desk = desk.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in (t..4_000).step_by(40) {
                    match desk.submit(new_order(i)).await {
                        Ok(SubmitOutcome::Created(o) | SubmitOutcome::Existing(o)) => {
                            acked.push((i, o.id))
                        }
                        other => panic!("order {i}: {other:?}"),
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for s in submitters {
        acked.extend(s.await.unwrap());
    }
    let killed = killer.await.unwrap();
    assert!(killed > 0, "no connection was killed");
    assert_eq!(acked.len(), 4_000);
    assert_eq!(count(&db, "orders").await, 4_000);
    let stored = stored_ids(&db).await;
    for (i, id) in acked {
        assert_eq!(stored.get(&format!("k-{i}")), Some(&id), "order k-{i}");
    }
    desk.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_meeting_a_stored_key_is_written_again_and_announces_only_its_new_orders() {
    let (redis, db, desk) = fresh_desk_with_events().await;
    for i in 0..10 {
        let created = desk.submit(new_order(i)).await.unwrap();
        assert!(matches!(created, SubmitOutcome::Created(_)), "{created:?}");
    }
    // Nothing was stored before, so every plain insert went in.
    assert_eq!(desk.metrics().rewritten, 0);
    let stored = stored_ids(&db).await;

    // A burst of 200: every 20th repeats a stored order, one changes a stored order's body.
    let burst: Vec<_> = (0..200)
        .map(|i| {
            let desk = desk.clone();
            tokio::spawn(async move {
                let order = match i {
                    10 => NewOrder {
                        quantity: 50.0,
                        ..new_order(9)
                    },
                    i if i % 20 == 0 => new_order(i / 20),
                    i => new_order(1_000 + i),
                };
                (i, desk.submit(order).await.unwrap())
            })
        })
        .collect();
    let mut new = 0;
    for b in burst {
        match b.await.unwrap() {
            (10, SubmitOutcome::Conflict(o)) => assert_eq!(o.id, stored["k-9"]),
            (i, SubmitOutcome::Existing(o)) if i % 20 == 0 => {
                assert_eq!(o.id, stored[&format!("k-{}", i / 20)], "repeat {i}")
            }
            (i, SubmitOutcome::Created(o)) if i != 10 && i % 20 != 0 => {
                assert_eq!(o.client_order_id, format!("k-{}", 1_000 + i));
                new += 1;
            }
            (i, other) => panic!("order {i}: {other:?}"),
        }
    }
    assert_eq!(new, 189);
    assert_eq!(count(&db, "orders").await, 199);
    let m = desk.metrics();
    assert!(
        (1..=m.groups).contains(&m.rewritten),
        "{} rewritten of {} groups",
        m.rewritten,
        m.groups
    );
    assert_eq!(
        (m.created, m.existing, m.conflicts, m.failed),
        (199, 10, 1, 0)
    );

    // Once the writers have stopped checking keys, a repeat costs one more rewrite.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let again = desk.submit(new_order(3)).await.unwrap();
    assert!(
        matches!(&again, SubmitOutcome::Existing(o) if o.id == stored["k-3"]),
        "{again:?}"
    );
    assert_eq!(desk.metrics().rewritten, m.rewritten + 1);

    // The statements that failed announced nothing: one event per stored order.
    for _ in 0..100 {
        if desk.metrics().events_published == 199 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(desk.metrics().events_published, 199);
    assert_eq!(events_len(&redis), 199);
    desk.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_full_redis_refuses_wait_in_the_outbox_and_go_out_once_it_has_room() {
    let (redis, db, desk) = fresh_desk_with_events().await;
    // Full from the start (an empty server uses about 1 MB); noeviction is the default.
    redis.cli(&["CONFIG", "SET", "maxmemory", "1mb"]).unwrap();
    let orders: Vec<_> = (0..2_000)
        .map(|i| {
            let desk = desk.clone();
            tokio::spawn(async move { desk.submit(new_order(i)).await.unwrap() })
        })
        .collect();
    for o in orders {
        let created = o.await.unwrap();
        assert!(matches!(created, SubmitOutcome::Created(_)), "{created:?}");
    }
    assert_eq!(count(&db, "orders").await, 2_000);
    // Orders whose events wait in the outbox.
    async fn waiting(db: &tokio_postgres::Client) -> i64 {
        db.query_one(
            "SELECT coalesce(sum(cardinality(order_ids)), 0)::bigint FROM order_outbox",
            &[],
        )
        .await
        .unwrap()
        .get(0)
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = desk.metrics();
    assert!(m.event_failures >= 1, "Redis refused nothing");
    assert!(
        m.events_published < 2_000,
        "{} published",
        m.events_published
    );
    assert!(waiting(&db).await >= 2_000 - m.events_published as i64);

    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]).unwrap();
    for _ in 0..300 {
        if waiting(&db).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(waiting(&db).await, 0, "the outbox still holds events");
    // Every order was announced; a round Redis refused part-way may announce some twice.
    assert!(events_len(&redis) >= 2_000, "{} events", events_len(&redis));
    assert!(desk.metrics().events_published >= 2_000);
    desk.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_a_worker_dies_holding_is_redelivered_and_moves_the_order_once() {
    let redis = tokio::task::block_in_place(RedisServer::start).unwrap();
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let desk = OrderDesk::start(OrderDeskConfig {
        redis_url: Some(redis.url()),
        ..OrderDeskConfig::new(&url)
    })
    .await
    .unwrap();
    let config = |name: &str| OrderWorkerConfig {
        claim_idle: Duration::from_millis(300),
        block: Duration::from_millis(200),
        ..OrderWorkerConfig::new(redis.url(), &url, name)
    };
    let mut a = OrderWorker::connect(config("a")).await.unwrap();
    let SubmitOutcome::Created(order) = desk.submit(new_order(1)).await.unwrap() else {
        panic!()
    };
    let mut event = None;
    for _ in 0..50 {
        event = a.next().await.unwrap();
        if event.is_some() {
            break;
        }
    }
    let event = event.expect("the order.accepted event");
    assert_eq!(
        (event.order_id, event.kind.as_str(), event.claimed),
        (order.id, "order.accepted", false)
    );
    assert_eq!(event.order["client_order_id"], "k-1");
    assert!(a
        .transition(order.id, &[OrderStatus::Accepted], OrderStatus::Working)
        .await
        .unwrap());
    drop(a); // dies before acknowledging

    let mut b = OrderWorker::connect(config("b")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = b
        .next()
        .await
        .unwrap()
        .expect("the event, claimed from the dead worker");
    assert_eq!(
        (again.stream_id.as_str(), again.claimed),
        (event.stream_id.as_str(), true)
    );
    // The step the dead worker already made does not happen twice.
    assert!(!b
        .transition(order.id, &[OrderStatus::Accepted], OrderStatus::Working)
        .await
        .unwrap());
    assert!(b
        .transition(order.id, &[OrderStatus::Working], OrderStatus::Filled)
        .await
        .unwrap());
    b.ack(&again).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        b.next().await.unwrap().is_none(),
        "an acknowledged event came back"
    );
    let row = db
        .query_one(
            "SELECT status, status_changes, (SELECT count(*) = 0 FROM order_outbox) FROM orders WHERE id = $1",
            &[&order.id],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0).as_str(),
            row.get::<_, i32>(1),
            row.get::<_, bool>(2)
        ),
        ("filled", 2, true)
    );
    let pending = redis
        .cli(&["XPENDING", "orders:events", "order-workers"])
        .unwrap();
    assert!(pending.starts_with('0'), "{pending}");
    desk.shutdown().await;
}

/// A worker takes events in batches, moves a batch's orders in one statement each step,
/// acknowledges them in one command, and a batch a dead worker held is claimed whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_take_move_and_acknowledge_events_in_batches() {
    let redis = tokio::task::block_in_place(RedisServer::start).unwrap();
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let desk = Arc::new(
        OrderDesk::start(OrderDeskConfig {
            redis_url: Some(redis.url()),
            ..OrderDeskConfig::new(&url)
        })
        .await
        .unwrap(),
    );
    let submit = |range: std::ops::Range<usize>| {
        let desk = desk.clone();
        async move {
            let mut set = tokio::task::JoinSet::new();
            for i in range {
                let desk = desk.clone();
                set.spawn(async move { desk.submit(new_order(i)).await.unwrap() });
            }
            let mut ids = Vec::new();
            while let Some(r) = set.join_next().await {
                let SubmitOutcome::Created(o) = r.unwrap() else {
                    panic!("a new order was not created")
                };
                ids.push(o.id);
            }
            ids.sort_unstable();
            ids
        }
    };
    let config = |name: &str| OrderWorkerConfig {
        claim_idle: Duration::from_millis(300),
        block: Duration::from_millis(200),
        ..OrderWorkerConfig::new(redis.url(), &url, name)
    };
    /// Batches of at most `max` until `n` events came (or 50 empty reads).
    async fn take(w: &mut OrderWorker, n: usize, max: usize) -> Vec<Vec<OrderEvent>> {
        let (mut batches, mut got, mut empty) = (Vec::new(), 0, 0);
        while got < n && empty < 50 {
            let b = w.next_batch(max).await.unwrap();
            assert!(b.len() <= max, "a batch of {} for at most {max}", b.len());
            if b.is_empty() {
                empty += 1;
            }
            got += b.len();
            batches.push(b);
        }
        batches.retain(|b| !b.is_empty());
        batches
    }

    let ids = submit(0..300).await;
    let mut a = OrderWorker::connect(config("a")).await.unwrap();
    let batches = take(&mut a, 300, 100).await;
    let events: Vec<OrderEvent> = batches.iter().flatten().cloned().collect();
    let mut seen: Vec<i64> = events.iter().map(|e| e.order_id).collect();
    seen.sort_unstable();
    assert_eq!(seen, ids, "every order's event, once");
    assert!(batches.len() < 300, "one event per read: {}", batches.len());
    assert!(events
        .iter()
        .all(|e| !e.claimed && e.kind == "order.accepted"));

    let mut working = a
        .transition_many(&seen, &[OrderStatus::Accepted], OrderStatus::Working)
        .await
        .unwrap();
    working.sort_unstable();
    assert_eq!(working, ids);
    // Handled twice (a claimed batch), the step moves nothing.
    assert!(a
        .transition_many(&seen, &[OrderStatus::Accepted], OrderStatus::Working)
        .await
        .unwrap()
        .is_empty());
    let filled = a
        .transition_many(&seen, &[OrderStatus::Working], OrderStatus::Filled)
        .await
        .unwrap();
    assert_eq!(filled.len(), 300);
    a.ack_many(&events).await.unwrap();
    let pending = redis
        .cli(&["XPENDING", "orders:events", "order-workers"])
        .unwrap();
    assert!(pending.starts_with('0'), "{pending}");

    // A worker dies holding a batch: another claims all of it, as claimed.
    let more = submit(300..350).await;
    let mut c = OrderWorker::connect(config("c")).await.unwrap();
    let mut held: Vec<String> = take(&mut c, 50, 100)
        .await
        .into_iter()
        .flatten()
        .map(|e| e.stream_id)
        .collect();
    held.sort();
    assert_eq!(held.len(), 50);
    drop(c);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut d = OrderWorker::connect(config("d")).await.unwrap();
    let claimed: Vec<OrderEvent> = take(&mut d, 50, 100).await.into_iter().flatten().collect();
    assert!(
        claimed.iter().all(|e| e.claimed),
        "claimed from the dead worker"
    );
    let mut again: Vec<String> = claimed.iter().map(|e| e.stream_id.clone()).collect();
    again.sort();
    assert_eq!(again, held);
    let claimed_ids: Vec<i64> = claimed.iter().map(|e| e.order_id).collect();
    assert_eq!(
        d.transition_many(&claimed_ids, &[OrderStatus::Accepted], OrderStatus::Filled)
            .await
            .unwrap()
            .len(),
        50
    );
    d.ack_many(&claimed).await.unwrap();
    d.ack_many(&[]).await.unwrap();

    let rows = db
        .query(
            "SELECT status, status_changes, count(*) FROM orders GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, i32, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("filled".to_string(), 1, 50),
            ("filled".to_string(), 2, 300)
        ]
    );
    assert_eq!(more.len(), 50);
    let pending = redis
        .cli(&["XPENDING", "orders:events", "order-workers"])
        .unwrap();
    assert!(pending.starts_with('0'), "{pending}");
    desk.shutdown().await;
}

/// The events stream keeps what some consumer group still needs and loses the rest: every
/// event the group acknowledged goes, its pending ones stay, and a group that has read
/// nothing holds everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_stream_is_trimmed_of_what_every_group_acknowledged() {
    let redis = tokio::task::block_in_place(RedisServer::start).unwrap();
    let (url, _db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let desk = desk_with_events(&redis, &url, |c| OrderDeskConfig {
        events_trim_every: Duration::from_millis(200),
        ..c
    })
    .await;
    let mut worker = worker(&redis, &url, "w", 100).await;
    let xlen = || events_len(&redis);
    // Reads `n` events, acknowledging the first `ack` of them.
    async fn take(worker: &mut OrderWorker, n: usize, ack: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..200 {
            if ids.len() == n {
                break;
            }
            if let Some(e) = worker.next().await.unwrap() {
                if ids.len() < ack {
                    worker.ack(&e).await.unwrap();
                }
                ids.push(e.stream_id);
            }
        }
        assert_eq!(ids.len(), n, "events read");
        ids
    }
    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..100 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}");
    }

    for k in 0..20 {
        desk.submit(new_order(k)).await.unwrap();
    }
    let ids = take(&mut worker, 20, 15).await;
    wait_for("trimmed to the 5 pending events", || xlen() == 5).await;
    let first = redis
        .cli(&["XRANGE", "orders:events", "-", "+", "COUNT", "1"])
        .unwrap();
    assert!(first.contains(&ids[15]), "oldest left: {first}");
    assert_eq!(desk.metrics().events_trimmed, 15);

    // A second group that has read nothing holds everything from now on.
    redis
        .cli(&["XGROUP", "CREATE", "orders:events", "audit", "0"])
        .unwrap();
    for k in 20..25 {
        desk.submit(new_order(k)).await.unwrap();
    }
    let pending = ids[15..].to_vec();
    for id in &pending {
        redis
            .cli(&["XACK", "orders:events", "order-workers", id])
            .unwrap();
    }
    take(&mut worker, 5, 5).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(xlen(), 10, "the audit group has read nothing");
    assert_eq!(desk.metrics().events_trimmed, 15);
    desk.shutdown().await;
}

/// Redis dies without persistence after taking the events of 40 orders, 10 of which a
/// worker had handled: the desk's re-check announces the other 30 again, once, and a
/// worker whose consumer group went with the data makes it again and moves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_whose_events_redis_lost_are_announced_again_once() {
    let mut redis = tokio::task::block_in_place(RedisServer::start).unwrap();
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let desk = desk_with_events(&redis, &url, |c| OrderDeskConfig {
        events_recheck_after: Duration::from_secs(1),
        ..c
    })
    .await;
    /// Moves each event's order accepted → working → filled and acknowledges the batch;
    /// returns the order ids.
    async fn handle(w: &mut OrderWorker, events: &[OrderEvent]) -> Vec<i64> {
        let ids: Vec<i64> = events.iter().map(|e| e.order_id).collect();
        w.transition_many(&ids, &[OrderStatus::Accepted], OrderStatus::Working)
            .await
            .unwrap();
        w.transition_many(&ids, &[OrderStatus::Working], OrderStatus::Filled)
            .await
            .unwrap();
        w.ack_many(events).await.unwrap();
        ids
    }
    let mut a = worker(&redis, &url, "a", 200).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let SubmitOutcome::Created(o) = desk.submit(new_order(i)).await.unwrap() else {
            panic!("a new order was not created")
        };
        ids.push(o.id);
    }
    let mut first = Vec::new();
    for _ in 0..50 {
        let want = 10 - first.len();
        first.extend(a.next_batch(want).await.unwrap());
        if first.len() == 10 {
            break;
        }
    }
    let handled = handle(&mut a, &first).await;
    assert_eq!(handled.len(), 10);
    for _ in 0..100 {
        if events_len(&redis) == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(events_len(&redis), 40);
    assert_eq!(desk.metrics().events_reannounced, 0);
    // The desk looks for the workers' group once it holds announced orders (every 250 ms
    // here); having seen it, it keeps the orders while the group is gone.
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Redis loses everything: the stream and the consumer group.
    redis.kill().unwrap();
    redis.start_again().unwrap();
    drop(a);
    let mut b = worker(&redis, &url, "b", 200).await;
    redis
        .cli(&["XGROUP", "DESTROY", "orders:events", "order-workers"])
        .unwrap();
    let mut again = Vec::new();
    for _ in 0..100 {
        let events = b.next_batch(100).await.unwrap();
        again.extend(handle(&mut b, &events).await);
        if again.len() >= 30 {
            break;
        }
    }
    again.sort_unstable();
    let mut lost: Vec<i64> = ids.into_iter().filter(|i| !handled.contains(i)).collect();
    lost.sort_unstable();
    assert_eq!(again, lost, "the unhandled orders, each once");

    // Nothing is announced a second time, and every order moved once per step.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(b.next_batch(100).await.unwrap().is_empty());
    assert_eq!(desk.metrics().events_reannounced, 30);
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'filled' AND status_changes = 2), count(*) \
             FROM orders",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (40, 40));
    desk.shutdown().await;
}

/// Events waiting in a backlog, or in a worker's hands, are not announced again: the
/// re-check waits while the workers have not been given or not acknowledged them, and
/// after they handle them finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_backlog_is_not_announced_again() {
    let redis = tokio::task::block_in_place(RedisServer::start).unwrap();
    let (url, _db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let desk = desk_with_events(&redis, &url, |c| OrderDeskConfig {
        events_recheck_after: Duration::from_millis(500),
        ..c
    })
    .await;
    let mut w = worker(&redis, &url, "w", 200).await;
    for i in 0..20 {
        desk.submit(new_order(i)).await.unwrap();
    }
    // Four re-check intervals with all 20 waiting for the worker.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(desk.metrics().events_reannounced, 0);
    let mut events = Vec::new();
    while events.len() < 20 {
        let batch = w.next_batch(20).await.unwrap();
        assert!(!batch.is_empty(), "{} of 20 events", events.len());
        events.extend(batch);
    }
    // Three more intervals with all 20 in the worker's hands, not acknowledged.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(desk.metrics().events_reannounced, 0);
    let ids: Vec<i64> = events.iter().map(|e| e.order_id).collect();
    assert_eq!(
        w.transition_many(&ids, &[OrderStatus::Accepted], OrderStatus::Working)
            .await
            .unwrap()
            .len(),
        20
    );
    w.ack_many(&events).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(desk.metrics().events_reannounced, 0);
    assert!(w.next_batch(20).await.unwrap().is_empty());
    assert_eq!(events_len(&redis), 20);
    desk.shutdown().await;
}
