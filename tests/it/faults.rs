//! The daemon and the engine when the database misbehaves: PostgreSQL stopped for 30 s
//! under load, a partition missing, the disk full. Nothing acknowledged is lost, nothing
//! is written twice, and nothing is dropped without a trace.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use christmas_core::{Ingestor, Trade};
use christmas_ingest::config::{DaemonConfig, SpoolSettings};
use christmas_tests::PgServer;

use christmas_tests::{stored_ticks, HttpClient, StoredTicks};

use crate::daemon::Running;
use crate::support::{count, fresh_core_db, symbols, trade};

/// POSTs batches of 50 trades with `ack=durable` until `stop`; records every acknowledged
/// `exchange_seq`. Failed requests (503 while shutting down) are not counted.
async fn durable_client(
    addr: SocketAddr,
    next: Arc<AtomicI64>,
    acked: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let base = next.fetch_add(50, Ordering::SeqCst);
        let ticks: Vec<String> = (base..base + 50)
            .map(|k| {
                format!(
                    r#"{{"kind":"trade","symbol":"S{:02}","time_ns":{},"price":1,"volume":1,"exchange_seq":{k}}}"#,
                    k % 20,
                    1_795_600_000_000_000_000i64 + k
                )
            })
            .collect();
        let body = format!("[{}]", ticks.join(","));
        let answer = HttpClient::new(addr)
            .request("POST", "/api/ticks?ack=durable", &[], body)
            .await
            .unwrap();
        if answer.status == 201 {
            acked.lock().unwrap().extend(base..base + 50);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Every acknowledged `exchange_seq` is in `market_data`, and none is there twice.
async fn assert_acknowledged_stored_once(url: &str, acked: &[i64]) {
    let StoredTicks {
        missing,
        duplicated,
    } = stored_ticks(url, acked).await;
    assert_eq!(duplicated, 0, "duplicated ticks");
    assert_eq!(missing, 0, "{missing} of {} acknowledged lost", acked.len());
}

/// Two [`durable_client`]s against `addr` until [`DurableLoad::finish`].
struct DurableLoad {
    acked: Arc<Mutex<Vec<i64>>>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl DurableLoad {
    fn start(addr: SocketAddr) -> DurableLoad {
        let next = Arc::new(AtomicI64::new(0));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..2)
            .map(|_| {
                tokio::spawn(durable_client(
                    addr,
                    next.clone(),
                    acked.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        DurableLoad {
            acked,
            stop,
            clients,
        }
    }

    /// Ticks acknowledged so far.
    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Stops the clients; every acknowledged `exchange_seq`.
    async fn finish(self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        for c in self.clients {
            c.await.unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

/// A daemon with a spool on the database at `url`, ready.
async fn spooling_daemon(url: &str, spool: &std::path::Path) -> Running {
    let d = Running::start(DaemonConfig {
        database_url: Some(url.to_string().into()),
        spool: SpoolSettings {
            dir: Some(spool.display().to_string()),
            ..Default::default()
        },
        ..DaemonConfig::default()
    })
    .await;
    wait_ready(d.addr, 200, Duration::from_secs(10)).await;
    d
}

async fn ready(addr: SocketAddr) -> u16 {
    HttpClient::new(addr).get("/ready").await.unwrap().status
}

async fn wait_ready(addr: SocketAddr, want: u16, within: Duration) {
    let started = Instant::now();
    while ready(addr).await != want {
        assert!(
            started.elapsed() < within,
            "/ready did not answer {want} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_30_s_under_load_loses_nothing_and_ready_says_so() {
    let mut pg = PgServer::start().unwrap();
    let (url, _) = fresh_core_db(&pg.url()).await;
    let spool = std::env::temp_dir().join(christmas_tests::unique_name("faults-spool"));
    let d = spooling_daemon(&url, &spool).await;
    let addr = d.addr;
    let load = DurableLoad::start(addr);
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| pg.stop()).unwrap();
    let down_at = load.acked();
    wait_ready(addr, 503, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let answer = HttpClient::new(addr).get("/ready").await.unwrap();
    assert_eq!(answer.status, 503, "{}", answer.text());
    let during = load.acked() - down_at;
    assert!(
        during > 1_000,
        "the spool kept taking durable ticks while PostgreSQL was down: {during}"
    );
    tokio::task::block_in_place(|| pg.start_again()).unwrap();
    wait_ready(addr, 200, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked = load.finish().await;
    d.stop().await;
    assert_acknowledged_stored_once(&url, &acked).await;
    let _ = std::fs::remove_dir_all(&spool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_for_a_missing_partition_are_dead_lettered_and_the_rest_commits() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    // Only 2024-07-02 has a partition, and there is no default one.
    client
        .batch_execute(
            "CREATE TABLE md_strict (LIKE market_data INCLUDING DEFAULTS) PARTITION BY RANGE (time);
             CREATE TABLE md_strict_0702 PARTITION OF md_strict
                 FOR VALUES FROM ('2024-07-02') TO ('2024-07-03');",
        )
        .await
        .unwrap();
    let letters = Arc::new(AtomicI64::new(0));
    let hook = {
        let letters = letters.clone();
        Arc::new(move |_: &christmas_core::DeadLetter| {
            letters.fetch_add(1, Ordering::SeqCst);
        })
    };
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .table("md_strict")
        .partition_maintenance(None)
        .batch_max_rows(500)
        .on_dead_letter(hook)
        .start()
        .await
        .unwrap();
    let syms = symbols(10);
    let day = 86_400_000_000_000i64;
    // trade(.., k) is on 2024-07-02 00:00 UTC plus k µs; every 10th goes a day later.
    let mut outside = 0;
    let rows: Vec<Trade> = (0..5_000u64)
        .map(|k| {
            let mut t = trade(syms[(k % 10) as usize], k);
            if k % 10 == 3 {
                t.time_ns += day;
                outside += 1;
            }
            t
        })
        .collect();
    ingestor.push_batch(&rows).unwrap();
    ingestor.flush().await.unwrap();
    let snap = ingestor.shutdown().await.unwrap();
    assert_eq!(count(&client, "md_strict").await, 5_000 - outside);
    assert_eq!(snap.dead_lettered(), outside as u64);
    assert_eq!(letters.load(Ordering::SeqCst), outside);
    let r = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE sqlstate = '23514'), min(reason)
             FROM ingest_dead_letters WHERE target_table = 'md_strict'",
            &[],
        )
        .await
        .unwrap();
    let (n, check, reason): (i64, i64, String) = (r.get(0), r.get(1), r.get(2));
    assert_eq!((n, check), (outside, outside), "{reason}");
    assert!(reason.contains("no partition"), "a clear reason: {reason}");
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(cmd: &[&str]) -> bool {
    std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_retried_until_there_is_room_and_nothing_is_lost() {
    // The table lives in a tablespace on a 2 MiB tmpfs: mounting needs root.
    let mount = std::env::temp_dir().join(christmas_tests::unique_name("tiny-disk"));
    std::fs::create_dir_all(&mount).unwrap();
    let m = mount.display().to_string();
    if !is_root() || !run(&["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", &m]) {
        eprintln!(
            "skipped: mounting a small tmpfs needs root (and a mount namespace that allows it)"
        );
        return;
    }
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            run(&["umount", "-l", &self.0]);
        }
    }
    let _unmount = Unmount(m.clone());
    let pg = PgServer::start().unwrap();
    let (url, client) = fresh_core_db(&pg.url()).await;
    // PostgreSQL's own user must own a tablespace directory.
    let data: String = client
        .query_one("SHOW data_directory", &[])
        .await
        .unwrap()
        .get(0);
    let owner = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&data).unwrap().uid()
    };
    let space = mount.join("ts");
    std::fs::create_dir(&space).unwrap();
    std::os::unix::fs::chown(&space, Some(owner), None).unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLESPACE tiny LOCATION '{}'",
            space.display()
        ))
        .await
        .unwrap();
    client
        .batch_execute("CREATE TABLE md_tiny (LIKE market_data INCLUDING DEFAULTS) TABLESPACE tiny")
        .await
        .unwrap();
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .table("md_tiny")
        .partition_maintenance(None)
        .batch_max_rows(2_000)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    // About 10 MiB of rows: far more than 2 MiB.
    const TOTAL: u64 = 100_000;
    let syms = symbols(10);
    let rows: Vec<Trade> = (0..TOTAL)
        .map(|k| trade(syms[(k % 10) as usize], k))
        .collect();
    let pusher = {
        let ingestor = ingestor.clone();
        tokio::spawn(async move { ingestor.push_batch_async(&rows).await })
    };
    let started = Instant::now();
    while ingestor.metrics().retries() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a full disk was never hit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stuck = count(&client, "md_tiny").await;
    assert!((stuck as u64) < TOTAL, "{stuck}");
    // Room again: the retried batches go in.
    assert!(run(&["mount", "-o", "remount,size=256m", &m]));
    pusher.await.unwrap().unwrap();
    ingestor.flush().await.unwrap();
    let snap = ingestor.shutdown().await.unwrap();
    assert_eq!(
        snap.dead_lettered(),
        0,
        "a full disk is not the rows' fault"
    );
    assert_eq!(count(&client, "md_tiny").await, TOTAL as i64);
    let dup: i64 = client
        .query_one(
            "SELECT count(*) - count(DISTINCT (symbol, exchange_seq)) FROM md_tiny",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dup, 0);
    drop(client);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_cut_between_daemon_and_postgres_loses_nothing_acknowledged() {
    // PostgreSQL in a network namespace of its own, reached over a veth pair the test cuts.
    let ns = match christmas_tests::NetNs::create() {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!(
                "skipped: this machine does not allow network namespaces and veth pairs ({e:#})"
            );
            return;
        }
    };
    // (netem latency and loss need the sch_netem module; the cut needs only the link.)
    let pg = PgServer::start_in_netns(ns.name(), &ns.ns_ip).unwrap();
    let (url, _) = fresh_core_db(&pg.url()).await;
    let spool = std::env::temp_dir().join(christmas_tests::unique_name("netcut-spool"));
    let d = spooling_daemon(&url, &spool).await;
    let addr = d.addr;
    let load = DurableLoad::start(addr);
    tokio::time::sleep(Duration::from_secs(1)).await;
    ns.link(false).unwrap();
    let cut_at = load.acked();
    wait_ready(addr, 503, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = load.acked() - cut_at;
    assert!(
        during > 500,
        "durable ticks acknowledged during the cut: {during}"
    );
    ns.link(true).unwrap();
    wait_ready(addr, 200, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked = load.finish().await;
    d.stop().await;
    assert_acknowledged_stored_once(&url, &acked).await;
    drop(pg);
    drop(ns);
    let _ = std::fs::remove_dir_all(&spool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_starts_with_postgres_down_spools_and_stores_once_when_it_returns() {
    let mut pg = PgServer::start().unwrap();
    let (url, db) = fresh_core_db(&pg.url()).await;
    drop(db);
    tokio::task::block_in_place(|| pg.stop()).unwrap();
    let spool = std::env::temp_dir().join(christmas_tests::unique_name("down-at-start"));
    // Starts (it used to exit "connecting the market-data reader") and takes ticks.
    let d = Running::start(DaemonConfig {
        database_url: Some(url.clone().into()),
        spool: SpoolSettings {
            dir: Some(spool.display().to_string()),
            ..Default::default()
        },
        ..DaemonConfig::default()
    })
    .await;
    let client = HttpClient::new(d.addr);
    let mut want = 0i64;
    for batch in 0..3i64 {
        let ticks: Vec<String> = (batch * 100..batch * 100 + 100)
            .map(|k| {
                want += k;
                format!(
                    r#"{{"kind":"trade","symbol":"D{}","time_ns":{},"price":1,"volume":1,"exchange_seq":{k}}}"#,
                    k % 3,
                    1_795_600_000_000_000_000i64 + k
                )
            })
            .collect();
        let r = client
            .request(
                "POST",
                "/api/ticks?ack=durable",
                &[],
                format!("[{}]", ticks.join(",")),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
    }
    // Reads and orders answer 503 with a JSON error meanwhile; /ready says why.
    for path in [
        "/api/market-data?symbol=D1",
        "/api/market-data/D1/trades",
        "/api/orders/1",
    ] {
        let r = client.get(path).await.unwrap();
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        assert!(r.json().unwrap()["error"].is_string(), "{path}");
    }
    let r = client.get("/ready").await.unwrap();
    assert_eq!(
        (r.status, r.json().unwrap()["checks"]["database"].as_bool()),
        (503, Some(false))
    );
    tokio::task::block_in_place(|| pg.start_again()).unwrap();
    wait_ready(d.addr, 200, Duration::from_secs(30)).await;
    // Every spooled tick reaches the table, once; reads answer again.
    let db = crate::support::connect(&url).await;
    let started = Instant::now();
    while count(&db, "market_data").await < 300 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = client.get("/api/market-data/D1/trades").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    d.stop().await;
    let row = db
        .query_one("SELECT count(*), sum(exchange_seq)::bigint, count(DISTINCT exchange_seq) FROM market_data", &[])
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (300, want, 300)
    );
    let _ = std::fs::remove_dir_all(&spool);
}
