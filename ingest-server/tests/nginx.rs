//! Three real daemons behind nginx with the project's own configuration
//! (`deploy/nginx/nginx.conf`), one killed with SIGKILL under load: no acknowledged tick is
//! lost or doubled, every read succeeds (nginx retries idempotent requests elsewhere), and
//! only requests in flight on the killed daemon fail. The daemons fan out to Redis through
//! Sentinel.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use christmas_tests::{free_addr, stored_ticks, DaemonProcess, HttpClient, Nginx, StoredTicks};

mod common;
use common::{migrated_database, start_daemon};

/// One request on a fresh connection: the status (0 when no answer came).
async fn request(addr: &str, method: &str, path: &str, body: &str) -> u16 {
    HttpClient::new(addr)
        .request(method, path, &[], body.to_string())
        .await
        .map_or(0, |r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_daemons_killed_behind_nginx_costs_no_acknowledged_tick_and_no_read() {
    let url = migrated_database().await;
    let backends: Vec<String> = (0..3).map(|_| free_addr().to_string()).collect();
    // The daemons fan out through Redis Sentinel (they ask it for the master).
    let master = christmas_tests::RedisServer::start().unwrap();
    let sentinel = christmas_tests::RedisServer::start_sentinel("md", master.port()).unwrap();
    let redis = format!("redis+sentinel://127.0.0.1:{}/md", sentinel.port());
    let mut daemons: Vec<DaemonProcess> = Vec::new();
    for a in &backends {
        daemons.push(start_daemon(&url, a.parse().unwrap(), &[("REDIS_URL", &redis)]).await);
    }
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx");
    let nginx = Nginx::start(&conf, &backends).unwrap();
    let front = nginx.addr();
    assert_eq!(
        request(&front, "GET", "/ready", "").await,
        200,
        "{}",
        nginx.error_log()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicI64::new(0));
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    // When each failed POST came back, to tell the kill's losses from a lasting outage.
    let post_failures = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let get_failures = Arc::new(AtomicU64::new(0));
    let gets = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (front, stop, next, acked, failures) = (
            front.clone(),
            stop.clone(),
            next.clone(),
            acked.clone(),
            post_failures.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let base = next.fetch_add(20, Ordering::SeqCst);
                let symbol = format!("S{:02}", (base / 20) % 16);
                let ticks: Vec<String> = (base..base + 20)
                    .map(|k| format!(r#"{{"kind":"trade","symbol":"{symbol}","time_ns":{},"price":1,"volume":1,"exchange_seq":{k}}}"#, 1_795_600_000_000_000_000i64 + k))
                    .collect();
                let path = format!("/api/ticks?ack=committed&symbol={symbol}");
                match request(&front, "POST", &path, &format!("[{}]", ticks.join(","))).await {
                    201 => acked.lock().unwrap().extend(base..base + 20),
                    _ => failures.lock().unwrap().push(Instant::now()),
                }
            }
        }));
    }
    for _ in 0..2 {
        let (front, stop, failures, gets) = (
            front.clone(),
            stop.clone(),
            get_failures.clone(),
            gets.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let path = format!("/api/market-data/S{:02}/trades?limit=10", i % 16);
                if request(&front, "GET", &path, "").await != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                gets.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before_kill = acked.lock().unwrap().len();
    let killed_at = Instant::now();
    daemons[1].signal("KILL").unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let after_kill = acked.lock().unwrap().len() - before_kill;
    assert!(
        after_kill > 200,
        "two daemons kept taking ticks: {after_kill}"
    );
    assert_eq!(
        get_failures.load(Ordering::SeqCst),
        0,
        "reads failed (of {}): {}",
        gets.load(Ordering::SeqCst),
        nginx.error_log()
    );
    posts_failed_only_at_the_kill(&post_failures.lock().unwrap(), killed_at);
    for d in &mut daemons {
        // SIGTERM to the two left; the killed one has exited already.
        let _ = tokio::task::block_in_place(|| d.stop());
    }
    // The latest tick of a symbol, through nginx, from the Redis cache the daemons filled
    // through Sentinel.
    let latest = master.cli(&["HGETALL", "md:{S03}:latest"]).unwrap();
    assert!(latest.contains("trade_price"), "latest hash: {latest}");
    let acked = acked.lock().unwrap().clone();
    let StoredTicks {
        missing,
        duplicated,
    } = stored_ticks(&url, &acked).await;
    assert_eq!(duplicated, 0, "a tick was written twice");
    assert_eq!(missing, 0, "{missing} of {} acknowledged lost", acked.len());
}

/// Only POSTs already sent to the killed daemon may fail (nginx does not resend them): the
/// one each of the four posters had in flight, and one written on a keepalive connection
/// nginx had cached to that daemon before it saw the connection close. A new connection to
/// it is refused and tried on another daemon. So at most two per poster, all right at the
/// kill: none before it, none over a second after it.
fn posts_failed_only_at_the_kill(failures: &[Instant], killed_at: Instant) {
    assert!(
        failures.len() <= 8,
        "{} ingest requests failed",
        failures.len()
    );
    let late: Vec<_> = failures
        .iter()
        .map(|t| t.saturating_duration_since(killed_at))
        .filter(|d| *d > Duration::from_millis(1_000))
        .collect();
    assert!(
        late.is_empty() && failures.iter().all(|t| *t >= killed_at),
        "ingest requests failed before the kill or over 1 s after it: {late:?}"
    );
}
