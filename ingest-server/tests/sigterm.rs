//! The real binary under load, stopped by a real SIGTERM: it exits 0 and every tick it
//! acknowledged is in PostgreSQL. (The other daemon tests are in `tests/it/daemon.rs`; this
//! one lives here because only this package's tests can name its binary.)

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
use common::{free_addr, migrated_database, spawn_daemon, wait_exit, wait_listening};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_and_loses_nothing_acknowledged() {
    let url = migrated_database().await;
    let addr = free_addr();
    let mut daemon = spawn_daemon(&url, &addr, &[]);
    wait_listening(&addr).await;

    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let clients: Vec<_> = (0..4i64)
        .map(|c| {
            let (acked, addr) = (acked.clone(), addr.clone());
            tokio::spawn(async move {
                for n in 0.. {
                    let base = (n * 4 + c) * 100;
                    let ticks: Vec<String> = (base..base + 100)
                        .map(|k| format!(r#"{{"kind":"trade","symbol":"ESZ6","time_ns":{},"price":1,"volume":1,"exchange_seq":{k}}}"#, 1_795_600_000_000_000_000i64 + k))
                        .collect();
                    let body = format!("[{}]", ticks.join(","));
                    let Ok(mut s) = TcpStream::connect(&addr).await else { return };
                    let req = format!(
                        "POST /api/ticks HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(req.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut raw = Vec::new();
                    if s.read_to_end(&mut raw).await.is_err() || !raw.starts_with(b"HTTP/1.1 202") {
                        return;
                    }
                    acked.lock().unwrap().extend(base..base + 100);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let kill = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::task::block_in_place(|| wait_exit(&mut daemon));
    assert!(status.success(), "exit status {status}");
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 1_000, "load was too light: {}", acked.len());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
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
