//! The real binary under load, stopped by a real SIGTERM: it exits 0 and every tick it
//! acknowledged is in PostgreSQL. (The other daemon tests are in `tests/it/daemon.rs`; this
//! one lives here because only this package's tests can name its binary.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use christmas_tests::{free_addr, HttpClient};

mod common;
use common::{migrated_database, start_daemon, wait_exit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_and_loses_nothing_acknowledged() {
    let url = migrated_database().await;
    let addr = free_addr();
    let mut daemon = start_daemon(&url, addr, &[]).await;

    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let clients: Vec<_> = (0..4i64)
        .map(|c| {
            let (acked, client) = (acked.clone(), HttpClient::new(addr));
            tokio::spawn(async move {
                for n in 0.. {
                    let base = (n * 4 + c) * 100;
                    let ticks: Vec<String> = (base..base + 100)
                        .map(|k| format!(r#"{{"kind":"trade","symbol":"ESZ6","time_ns":{},"price":1,"volume":1,"exchange_seq":{k}}}"#, 1_795_600_000_000_000_000i64 + k))
                        .collect();
                    let body = format!("[{}]", ticks.join(","));
                    let Ok(r) = client.request("POST", "/api/ticks", &[], body).await else {
                        return;
                    };
                    if r.status != 202 {
                        return;
                    }
                    acked.lock().unwrap().extend(base..base + 100);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    daemon.signal("TERM").unwrap();
    let status = wait_exit(&mut daemon);
    assert!(status.success(), "exit status {status}");
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 1_000, "load was too light: {}", acked.len());
    let client = christmas_tests::connect(&url).await.unwrap();
    let stored: std::collections::HashSet<i64> = client
        .query("SELECT exchange_seq FROM market_data", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing = acked.iter().filter(|k| !stored.contains(k)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged ticks lost",
        acked.len()
    );
}
