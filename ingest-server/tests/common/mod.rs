//! What the tests of the real `christmas-ingest` binary share: a migrated database and the
//! daemon process (the harness's [`DaemonProcess`] on this package's binary).

#![allow(dead_code)] // Each test binary uses its own subset.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use christmas_tests::DaemonProcess;

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

/// `christmas-ingest serve` on HTTP `addr` (TCP off) into `url`, with `env` added and no
/// Redis unless `env` names one; ready (up to 30 s).
pub async fn start_daemon(url: &str, addr: SocketAddr, env: &[(&str, &str)]) -> DaemonProcess {
    let binary = Path::new(env!("CARGO_BIN_EXE_christmas-ingest"));
    let mut daemon = DaemonProcess::spawn(binary, addr, None, |cmd| {
        cmd.env("DATABASE_URL", url).env_remove("REDIS_URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
    })
    .unwrap();
    daemon.wait_ready(Duration::from_secs(30)).await.unwrap();
    daemon
}

/// Waits (up to 60 s, blocking) for the process to exit.
pub fn wait_exit(daemon: &mut DaemonProcess) -> std::process::ExitStatus {
    tokio::task::block_in_place(|| daemon.wait_exit(Duration::from_secs(60))).unwrap()
}
