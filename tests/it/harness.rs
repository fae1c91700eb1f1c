//! The harness itself: private servers really start, crash, recover and isolate.

use christmas_tests::{fresh_database, PgServer, RedisServer};

use crate::support::connect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_server_survives_a_crash_with_its_data() {
    let mut server = tokio::task::block_in_place(PgServer::start).unwrap();
    let client = connect(&server.url()).await;
    client
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3)")
        .await
        .unwrap();
    drop(client);
    tokio::task::block_in_place(|| {
        server.kill()?;
        server.start_again()
    })
    .unwrap();
    let client = connect(&server.url()).await;
    let sum: i64 = client
        .query_one("SELECT sum(x) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum, 6);
}

#[test]
fn redis_server_kill_and_restart() {
    use std::io::{Read, Write};
    let ping = |port: u16| -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.write_all(b"*1\r\n$4\r\nPING\r\n").ok()?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    };
    let mut server = RedisServer::start().unwrap();
    assert_eq!(ping(server.port()).as_deref(), Some("+PONG\r\n"));
    server.kill().unwrap();
    assert_eq!(ping(server.port()), None);
    server.start_again().unwrap();
    assert_eq!(ping(server.port()).as_deref(), Some("+PONG\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_databases_are_separate() {
    let base = christmas_tests::shared_pg_url();
    let a = fresh_database(&base).await.unwrap();
    let b = fresh_database(&base).await.unwrap();
    assert_ne!(a, b);
    let (ca, cb) = (connect(&a).await, connect(&b).await);
    ca.batch_execute("CREATE TABLE only_in_a (x int)")
        .await
        .unwrap();
    let in_b: i64 = cb
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_b, 0);
}
