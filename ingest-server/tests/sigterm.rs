//! The real binary under load, stopped by a real SIGTERM: it exits 0 and every tick it
//! acknowledged is in PostgreSQL. (The other daemon tests are in `tests/it/daemon.rs`; this
//! one lives here because only this package's tests can name its binary.)

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_and_loses_nothing_acknowledged() {
    let url = christmas_tests::fresh_database(&christmas_tests::shared_pg_url())
        .await
        .unwrap();
    let keep = christmas_core::schema::SchemaConfig {
        retention: None,
        ..Default::default()
    };
    christmas_core::schema::migrate_url(&url, &keep)
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_christmas-ingest"))
        .args(["serve", "--http-addr", &addr, "--tcp-addr", ""])
        .env("DATABASE_URL", &url)
        .env_remove("REDIS_URL")
        .env_remove("CHRISTMAS_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(&addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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
    let status = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = daemon.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
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
