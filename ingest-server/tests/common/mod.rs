//! What the tests of the real `christmas-ingest` binary share: a migrated database, a free
//! port, the daemon process, and waiting for it to listen or exit.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// A fresh database on the shared server, migrated, retention off (the ticks are old).
pub async fn migrated_database() -> String {
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
    url
}

/// `127.0.0.1:PORT` with a port free right now.
pub fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// `christmas-ingest serve` on HTTP `addr` (TCP off) into `url`, with `env` added and no
/// Redis unless `env` names one.
pub fn spawn_daemon(url: &str, addr: &str, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_christmas-ingest"));
    cmd.args(["serve", "--http-addr", addr, "--tcp-addr", ""])
        .env("DATABASE_URL", url)
        .env_remove("REDIS_URL")
        .env_remove("CHRISTMAS_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Waits (up to 30 s) until something accepts connections on `addr`.
pub async fn wait_listening(addr: &str) {
    let started = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon on {addr} did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to 60 s, blocking) for the process to exit.
pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}
