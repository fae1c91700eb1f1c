//! The real binary under load, stopped by a real SIGTERM: it exits 0 and every tick it
//! acknowledged is in PostgreSQL. (The other daemon tests are in `tests/it/daemon.rs`; this
//! one lives here because only this package's tests can name its binary.)

use std::time::Duration;

use christmas_tests::{free_addr, stored_ticks, HttpClient, TickLoad};

mod common;
use common::{migrated_database, start_daemon, wait_exit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_and_loses_nothing_acknowledged() {
    let url = migrated_database().await;
    let addr = free_addr();
    let mut daemon = start_daemon(&url, addr, &[]).await;

    let load = TickLoad::start((0..4).map(|_| HttpClient::new(addr)).collect(), |seqs| {
        let ticks: Vec<String> = seqs
            .map(|k| format!(r#"{{"kind":"trade","symbol":"ESZ6","time_ns":{},"price":1,"volume":1,"exchange_seq":{k}}}"#, 1_795_600_000_000_000_000i64 + k))
            .collect();
        format!("[{}]", ticks.join(","))
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    daemon.signal("TERM").unwrap();
    let status = wait_exit(&mut daemon);
    assert!(status.success(), "exit status {status}");
    let acked = load.finish().await;
    let missing = stored_ticks(&url, &acked).await.missing;
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged ticks lost",
        acked.len()
    );
}
