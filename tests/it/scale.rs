//! Scale-out with real servers on loopback: PgBouncer in transaction mode between the
//! daemon and PostgreSQL, a streaming read replica with fallback to the primary (and the lag
//! the daemon measures on it), and three daemons behind nginx with one killed under load.

use std::time::{Duration, Instant};

use christmas_ingest::config::DaemonConfig;
use christmas_tests::{PgBouncer, PgServer};
use serde_json::{json, Value};

use crate::daemon::Running;
use crate::support::{connect, count, fresh_core_db};

fn ticks(symbol: &str, from: i64, n: i64) -> Value {
    Value::Array(
        (from..from + n)
            .map(|k| {
                json!({"kind": "trade", "symbol": symbol, "time_ns": 1_795_600_000_000_000_000i64 + k,
                       "price": 100.0 + (k % 8) as f64 * 0.25, "volume": 1, "exchange_seq": k})
            })
            .collect(),
    )
}

fn port_of(url: &str) -> u16 {
    let after_at = url.rsplit('@').next().unwrap();
    let host_port = after_at.split('/').next().unwrap();
    host_port.rsplit(':').next().unwrap().parse().unwrap()
}

fn db_of(url: &str) -> String {
    let path = url.rsplit('/').next().unwrap();
    path.split('?').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_orders_and_reads_work_through_pgbouncer_in_transaction_mode() {
    let base = christmas_tests::shared_pg_url();
    let (url, client) = fresh_core_db(&base).await;
    let bouncer = PgBouncer::start(port_of(&base)).unwrap();
    let pooled = bouncer.url(&db_of(&url));
    let d = Running::start(DaemonConfig {
        database_url: Some(pooled.clone().into()),
        ..DaemonConfig::default()
    })
    .await;

    // Ingest, with the commit acknowledged, in several requests so the pool mixes them.
    for i in 0..10 {
        let (status, v) = d
            .call(
                "POST",
                "/api/ticks?ack=committed",
                &ticks("ESZ6", i * 500, 500),
            )
            .await;
        assert_eq!(status, 201, "{v}\n{}", bouncer.log());
    }
    assert_eq!(count(&client, "market_data").await, 5_000);

    // Orders: created, repeated, read, listed, cancelled.
    let mut ids = Vec::new();
    for i in 0..50 {
        let body = json!({"client_order_id": format!("pb-{i}"), "symbol": "ESZ6", "side": "buy",
                          "type": "limit", "quantity": 1 + i % 3, "limit_price": 6000.25,
                          "time_in_force": "day"});
        let (status, v) = d.call("POST", "/api/orders", &body).await;
        assert_eq!(status, 201, "{v}");
        ids.push(v["id"].as_i64().unwrap());
        if i % 10 == 0 {
            let (again, w) = d.call("POST", "/api/orders", &body).await;
            assert_eq!((again, &w["id"]), (200, &v["id"]));
        }
    }
    let orders: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 50);
    let (status, v) = d
        .call("GET", &format!("/api/orders/{}", ids[7]), &Value::Null)
        .await;
    assert_eq!((status, v["client_order_id"].as_str()), (200, Some("pb-7")));
    let (status, v) = d
        .call("GET", "/api/orders?symbol=ESZ6&limit=100", &Value::Null)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["orders"].as_array().map(Vec::len), Some(50), "{v}");
    let (status, v) = d
        .call("DELETE", &format!("/api/orders/{}", ids[3]), &Value::Null)
        .await;
    assert_eq!((status, v["status"].as_str()), (200, Some("cancelled")));

    // Reads.
    let (status, v) = d
        .call("GET", "/api/market-data?symbol=ESZ6", &Value::Null)
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["trade"]["exchange_seq"], json!(4_999), "{v}");
    let (status, v) = d
        .call(
            "GET",
            "/api/market-data/ESZ6/trades?limit=100000",
            &Value::Null,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["trades"].as_array().map(Vec::len), Some(5_000));
    d.stop().await;
    drop(bouncer);
}

async fn wait_until(what: &str, within: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !ok().await {
        assert!(started.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A primary, a streaming replica of it, and a daemon that writes to the one and reads
/// from the other while the replica lags less than `max_lag_ms`.
struct Replicated {
    primary: PgServer,
    replica: PgServer,
    replica_url: String,
    /// On the primary's fresh database.
    client: tokio_postgres::Client,
    d: Running,
}

async fn replicated(max_lag_ms: u64) -> Replicated {
    let primary = PgServer::start().unwrap();
    let (url, client) = fresh_core_db(&primary.url()).await;
    let replica = tokio::task::block_in_place(|| primary.start_replica()).unwrap();
    let replica_url = url.replace(&primary.port().to_string(), &replica.port().to_string());
    let d = Running::start(DaemonConfig {
        database_url: Some(url.into()),
        read_database_url: Some(replica_url.clone().into()),
        replica_max_lag_ms: max_lag_ms,
        ..DaemonConfig::default()
    })
    .await;
    Replicated {
        primary,
        replica,
        replica_url,
        client,
        d,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_replica_and_to_the_primary_while_it_is_down() {
    let Replicated {
        primary: _primary,
        mut replica,
        replica_url,
        client,
        d,
    } = replicated(8_000).await;
    let (status, _) = d
        .call("POST", "/api/ticks?ack=committed", &ticks("NQZ6", 0, 1_000))
        .await;
    assert_eq!(status, 201);
    // The replica is read-only and streams from the primary: the rows arrive there.
    let standby = connect(&replica_url).await;
    let in_recovery: bool = standby
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery);
    wait_until("rows replicated", Duration::from_secs(20), async || {
        count(&standby, "market_data").await == 1_000
    })
    .await;
    let trades = async |d: &Running| {
        let (status, v) = d
            .call(
                "GET",
                "/api/market-data/NQZ6/trades?limit=100000",
                &Value::Null,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        v["trades"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(trades(&d).await, 1_000);
    // Proof the reads are the replica's: with its replay paused, a write on the primary is
    // not seen while the lag is within bounds (8 s here).
    pause_replay_then_write(&standby, &d, ticks("NQZ6", 1_000, 500)).await;
    assert_eq!(count(&client, "market_data").await, 1_500);
    assert_eq!(trades(&d).await, 1_000, "read from the paused replica");
    // Lagging past the bound: reads go to the primary.
    wait_until(
        "reads fall back to the primary",
        Duration::from_secs(30),
        async || trades(&d).await == 1_500,
    )
    .await;
    standby
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    drop(standby);
    // Down: the primary answers, at once after the failed attempt.
    tokio::task::block_in_place(|| replica.stop()).unwrap();
    let (status, _) = d
        .call(
            "POST",
            "/api/ticks?ack=committed",
            &ticks("NQZ6", 1_500, 500),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(trades(&d).await, 2_000);
    let (status, v) = d.call("GET", "/ready", &Value::Null).await;
    assert_eq!(status, 200, "reads still served: {v}");
    d.stop().await;
}

/// Pauses the standby's WAL replay, then commits `body` through the daemon: a write the
/// primary holds and the replica has received but not replayed.
async fn pause_replay_then_write(standby: &tokio_postgres::Client, d: &Running, body: Value) {
    standby
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let (status, v) = d.call("POST", "/api/ticks?ack=committed", &body).await;
    assert_eq!(status, 201, "{v}");
}

/// The replica lag `/api/engine` and `/metrics` report, in ms (`None`: null or absent).
async fn reported_lag(d: &Running) -> (Option<f64>, Option<f64>, bool) {
    let (status, v) = d.call("GET", "/api/engine", &Value::Null).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["replica"]["configured"], json!(true), "{v}");
    let gauge = d
        .metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("christmas_replica_lag_seconds "))
        .map(|s| s.parse::<f64>().unwrap() * 1e3);
    let on_replica = v["replica"]["reads_on_replica"].as_bool().unwrap();
    (v["replica"]["lag_ms"].as_f64(), gauge, on_replica)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_panel_shows_the_lag_measured_on_the_replica() {
    let Replicated {
        primary: _primary,
        mut replica,
        replica_url,
        client: _client,
        d,
    } = replicated(2_000).await;
    let first_write = Instant::now();
    let (status, _) = d
        .call("POST", "/api/ticks?ack=committed", &ticks("LAGZ6", 0, 100))
        .await;
    assert_eq!(status, 201);
    let standby = connect(&replica_url).await;
    wait_until("rows replicated", Duration::from_secs(20), async || {
        count(&standby, "market_data").await == 100
    })
    .await;
    // Caught up: the replica replayed all it received, so the lag is 0 in both places.
    wait_until(
        "a caught-up replica shows no lag",
        Duration::from_secs(10),
        async || {
            let (engine, gauge, on_replica) = reported_lag(&d).await;
            engine == Some(0.0) && gauge == Some(0.0) && on_replica
        },
    )
    .await;

    // Replay paused and a write received but not replayed: the lag is the age of the last
    // transaction replayed, and grows.
    pause_replay_then_write(&standby, &d, ticks("LAGZ6", 100, 100)).await;
    wait_until(
        "the lag passes 2.5 s",
        Duration::from_secs(20),
        async || reported_lag(&d).await.0.is_some_and(|ms| ms > 2_500.0),
    )
    .await;
    let (engine, gauge, on_replica) = reported_lag(&d).await;
    let on_standby: f64 = standby
        .query_one(
            "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (engine, gauge, truth) = (engine.unwrap(), gauge.unwrap(), on_standby * 1e3);
    // The daemon's figure was measured on the replica at most a second before ours, and
    // cannot exceed the time since the first write (the last replayed one is no older).
    for (what, ms) in [("/api/engine", engine), ("/metrics", gauge)] {
        assert!(
            ms <= truth + 50.0 && ms >= truth - 1_500.0,
            "{what}: {ms} ms, the replica says {truth} ms"
        );
        assert!(
            ms <= first_write.elapsed().as_secs_f64() * 1e3 + 50.0,
            "{what}: {ms} ms"
        );
    }
    assert!(
        !on_replica,
        "past replica_max_lag_ms reads go to the primary"
    );

    // Replay resumed: back to no lag, reads on the replica again.
    standby
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    drop(standby);
    wait_until(
        "the lag returns to 0",
        Duration::from_secs(20),
        async || {
            let (engine, gauge, on_replica) = reported_lag(&d).await;
            engine == Some(0.0) && gauge == Some(0.0) && on_replica
        },
    )
    .await;
    // Down: unmeasurable, so null and no series, rather than a made-up figure.
    tokio::task::block_in_place(|| replica.stop()).unwrap();
    wait_until(
        "an unreachable replica's lag is null",
        Duration::from_secs(20),
        async || {
            let (engine, gauge, on_replica) = reported_lag(&d).await;
            engine.is_none() && gauge.is_none() && !on_replica
        },
    )
    .await;
    d.stop().await;
}
