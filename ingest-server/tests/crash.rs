//! `kill -9` of the real binary at random moments under `ack=durable` load, restarted on
//! the same spool each time: every tick it acknowledged is in PostgreSQL exactly once.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use christmas_tests::{free_addr, DaemonProcess, HttpClient};

mod common;
use common::{migrated_database, start_daemon, wait_exit};

const SYMBOLS: i64 = 20;

async fn start(url: &str, addr: SocketAddr, spool: &std::path::Path) -> DaemonProcess {
    start_daemon(
        url,
        addr,
        &[("CHRISTMAS_SPOOL_DIR", &spool.display().to_string())],
    )
    .await
}

/// POSTs batches of 50 trades with `ack=durable` until the daemon goes away; records the
/// `exchange_seq`s of every batch answered 201.
async fn client(addr: SocketAddr, next: Arc<AtomicI64>, acked: Arc<Mutex<Vec<i64>>>) {
    loop {
        let base = next.fetch_add(50, Ordering::SeqCst);
        let ticks: Vec<String> = (base..base + 50)
            .map(|k| {
                format!(
                    r#"{{"kind":"trade","symbol":"S{:02}","time_ns":{},"price":{},"volume":1,"exchange_seq":{k}}}"#,
                    k % SYMBOLS,
                    1_795_600_000_000_000_000i64 + k,
                    1 + k % 97
                )
            })
            .collect();
        let body = format!("[{}]", ticks.join(","));
        let Ok(r) = HttpClient::new(addr)
            .request("POST", "/api/ticks?ack=durable", &[], body)
            .await
        else {
            return;
        };
        if r.status != 201 {
            return;
        }
        acked.lock().unwrap().extend(base..base + 50);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_durable_load_loses_and_duplicates_nothing_acknowledged() {
    let url = migrated_database().await;
    let spool = std::env::temp_dir().join(christmas_tests::unique_name("crash-spool"));
    let addr = free_addr();
    let next = Arc::new(AtomicI64::new(0));
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    // A small deterministic generator for the kill moments (300-1,500 ms into each round).
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ std::process::id() as u64;
    let mut kills = 0;
    for _ in 0..4 {
        let mut daemon = start(&url, addr, &spool).await;
        let clients: Vec<_> = (0..4)
            .map(|_| tokio::spawn(client(addr, next.clone(), acked.clone())))
            .collect();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(300 + seed % 1_200)).await;
        daemon.signal("KILL").unwrap();
        let status = wait_exit(&mut daemon);
        assert!(!status.success(), "killed, not exited: {status}");
        kills += 1;
        for c in clients {
            c.await.unwrap();
        }
    }
    // A last start writes what the spool holds; SIGTERM then flushes and exits 0.
    let mut daemon = start(&url, addr, &spool).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // What the last kill left was read back, and batches that had committed before it
    // were found in the ledger rather than written again.
    let metrics = HttpClient::new(addr).get("/metrics").await.unwrap().text();
    let total = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        total("christmas_spool_recovered_batches") > 0.0,
        "{metrics}"
    );
    assert!(total("christmas_ledger_hits_total") > 0.0, "{metrics}");
    daemon.signal("TERM").unwrap();
    let status = wait_exit(&mut daemon);
    assert!(status.success(), "exit status {status}");

    let acked = acked.lock().unwrap().clone();
    assert_eq!(kills, 4);
    assert!(acked.len() >= 2_000, "load was too light: {}", acked.len());
    let client = christmas_tests::connect(&url).await.unwrap();
    let rows: Vec<(String, i64)> = client
        .query("SELECT symbol, exchange_seq FROM market_data", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let stored: HashSet<i64> = rows.iter().map(|(_, k)| *k).collect();
    assert_eq!(stored.len(), rows.len(), "duplicated ticks");
    let missing = acked.iter().filter(|k| !stored.contains(k)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged ticks lost",
        acked.len()
    );
    // Per symbol: the acknowledged ticks' count and checksum are all there.
    let mut want: HashMap<String, (i64, i64)> = HashMap::new();
    for k in &acked {
        let e = want.entry(format!("S{:02}", k % SYMBOLS)).or_default();
        e.0 += 1;
        e.1 += k;
    }
    let acked_set: HashSet<i64> = acked.iter().copied().collect();
    let mut got: HashMap<String, (i64, i64)> = HashMap::new();
    for (sym, k) in &rows {
        if acked_set.contains(k) {
            let e = got.entry(sym.clone()).or_default();
            e.0 += 1;
            e.1 += k;
        }
    }
    assert_eq!(
        got, want,
        "per-symbol count and checksum of acknowledged ticks"
    );
    let _ = std::fs::remove_dir_all(&spool);
}
