//! A file is loaded exactly once: a second run stores nothing, a failed run resumes with its
//! producer, and a run killed with SIGKILL stores the rest at the next run, each tick once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use christmas_ingest::replay::{self, ReplayArgs};
use christmas_tests::DaemonProcess;
use tokio_postgres::Client;

use crate::support::{count, fresh_core_db};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/glbx-futures-mbp-1.dbn.zst")
}

async fn rows(db: &Client) -> i64 {
    count(db, "market_data").await + count(db, "quotes").await
}

/// Distinct lines of the file stored (`exchange_seq` is the line number).
async fn distinct_lines(db: &Client) -> i64 {
    db.query_one("SELECT count(DISTINCT exchange_seq) FROM market_data", &[])
        .await
        .unwrap()
        .get(0)
}

/// A CSV of `n` trades over 20 symbols, `exchange_seq` = line number.
fn csv(n: u64) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "christmas-replay-once-{}-{n}.csv",
        std::process::id()
    ));
    let mut body = String::from("time_ns,symbol,price,volume,side,exchange_seq\n");
    for k in 0..n {
        body.push_str(&format!(
            "{},S{},{}.25,1,B,{k}\n",
            1_795_600_000_000_000_000u64 + k * 1_000,
            k % 20,
            100 + k % 50
        ));
    }
    std::fs::write(&path, body).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_of_a_file_stores_nothing_and_force_loads_it_again() {
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let args = ReplayArgs {
        retention_ok: true,
        ..ReplayArgs::new(sample())
    };
    let first = replay::run(&url, &args).await.unwrap();
    let n = (first.trades + first.quotes) as i64;
    assert!(n > 2_000, "{first:?}");
    assert_eq!((first.committed as i64, first.already_stored), (n, 0));
    let again = replay::run(&url, &args).await.unwrap();
    assert_eq!((again.committed, again.already_stored as i64), (0, n));
    assert_eq!(rows(&db).await, n);
    let forced = replay::run(
        &url,
        &ReplayArgs {
            force: true,
            ..args
        },
    )
    .await
    .unwrap();
    assert_eq!(forced.committed as i64, n);
    assert_eq!(rows(&db).await, 2 * n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_replay_fixed_and_run_again_under_its_producer_stores_the_rest_once() {
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let full = csv(50_000);
    let text = std::fs::read_to_string(&full).unwrap();
    // Line 30,001 (the 30,000th trade) has a bad price: the replay stops there.
    let mut lines: Vec<&str> = text.lines().collect();
    let bad = lines[30_001].replace(".25,", "x,");
    lines[30_001] = &bad;
    let broken = full.with_extension("broken.csv");
    std::fs::write(&broken, lines.join("\n")).unwrap();
    let args = |file: &Path| ReplayArgs {
        producer: Some("history-2026-11".into()),
        retention_ok: true,
        ..ReplayArgs::new(file)
    };
    let e = format!("{:#}", replay::run(&url, &args(&broken)).await.unwrap_err());
    assert!(e.contains("--producer history-2026-11"), "{e}");
    let prefix = rows(&db).await;
    assert!(prefix <= 30_000, "{prefix}");
    // The fixed file, under the same producer: the rest, and nothing twice.
    let fixed = replay::run(&url, &args(&full)).await.unwrap();
    assert_eq!(fixed.already_stored as i64, prefix);
    assert_eq!(rows(&db).await, 50_000);
    assert_eq!(distinct_lines(&db).await, 50_000);
    let _ = std::fs::remove_file(&full);
    let _ = std::fs::remove_file(&broken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_with_sigkill_stores_the_rest_once_at_the_next_run() {
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let file = csv(400_000);
    let bin = DaemonProcess::binary().unwrap();
    let mut child = std::process::Command::new(&bin)
        .arg("replay")
        .arg(&file)
        .arg("--retention-ok")
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once some of it is committed, well before the end.
    let started = Instant::now();
    while count(&db, "market_data").await < 20_000 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = count(&db, "market_data").await;
    assert!(
        (20_000..400_000).contains(&before),
        "{before} rows when killed"
    );
    let rest = replay::run(
        &url,
        &ReplayArgs {
            retention_ok: true,
            ..ReplayArgs::new(&file)
        },
    )
    .await
    .unwrap();
    assert_eq!(count(&db, "market_data").await, 400_000);
    assert_eq!(rest.committed as i64, 400_000 - before);
    assert_eq!(distinct_lines(&db).await, 400_000);
    let _ = std::fs::remove_file(&file);
}

/// A file where one symbol carries half the rows: replay deals the symbols of its first
/// chunk out by their rows, so each writer commits half the file (the ledger says which
/// shard wrote what), where the hash of the names would not. A run with another number of
/// shards, whose split differs, still finds every tick stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_spreads_a_skewed_file_evenly_over_its_writers() {
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let file =
        std::env::temp_dir().join(format!("christmas-replay-skew-{}.csv", std::process::id()));
    // ES every other line, then 100 light symbols in turn: 1,000 + 100 × 10 lines.
    let mut body = String::from("time_ns,symbol,price,volume,side,exchange_seq\n");
    let mut symbols = Vec::new();
    for k in 0..2_000u64 {
        let symbol = match k % 2 {
            0 => "ES".to_string(),
            _ => format!("L{:03}", (k / 2) % 100),
        };
        body.push_str(&format!(
            "{},{symbol},100.25,1,B,{k}\n",
            1_795_600_000_000_000_000u64 + k * 1_000
        ));
        symbols.push(christmas_core::Symbol::new(&symbol).unwrap());
    }
    std::fs::write(&file, body).unwrap();
    // By the hash of the names, the two shards would not get 1,000 rows each.
    let router = christmas_core::ShardRouter::new(2);
    let mut by_hash = [0i64; 2];
    symbols
        .iter()
        .for_each(|s| by_hash[router.shard_for(s)] += 1);
    assert_ne!(by_hash, [1_000, 1_000]);
    let args = ReplayArgs {
        retention_ok: true,
        ..ReplayArgs::new(&file)
    };
    let summary = replay::run(&url, &args).await.unwrap();
    assert_eq!(summary.committed, 2_000);
    let per_shard: Vec<i64> = db
        .query(
            "SELECT sum(rows)::bigint FROM ingest_batches WHERE stream LIKE 'replay-%' GROUP BY shard ORDER BY shard",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(per_shard, [1_000, 1_000]);
    assert_eq!(distinct_lines(&db).await, 2_000);
    let again = replay::run(&url, &ReplayArgs { shards: 3, ..args })
        .await
        .unwrap();
    assert_eq!((again.committed, again.already_stored), (0, 2_000));
    assert_eq!(count(&db, "market_data").await, 2_000);
    let _ = std::fs::remove_file(&file);
}

/// `REDIS_URL=` (set, empty) is no Redis, as for `serve`, not a URL that fails to parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_redis_url_is_no_fan_out() {
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let file = csv(1_000);
    let summary = replay::run(
        &url,
        &ReplayArgs {
            retention_ok: true,
            redis_url: Some(String::new()),
            ..ReplayArgs::new(&file)
        },
    )
    .await
    .unwrap();
    assert_eq!(summary.committed, 1_000);
    assert_eq!(count(&db, "market_data").await, 1_000);
    let _ = std::fs::remove_file(&file);
}

/// PostgreSQL crashes (an immediate stop) under a replay and comes back: the writers
/// reconnect, ask the ledger about the batch in flight and go on. Whatever the replay says,
/// a run after it leaves every line of the file stored once. (A commit that returned is
/// durable here; commits that do not wait for the WAL flush would lose the last ones in
/// the crash while the writers go on past them, leaving a hole the producer's stored
/// sequences skip: bench/results/history.md, 2026-12-04.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_through_a_postgres_crash_leaves_every_line_stored_once() {
    let mut server =
        tokio::task::block_in_place(christmas_tests::PgServer::start).expect("a private server");
    let (url, db) = fresh_core_db(&server.url()).await;
    let file = csv(300_000);
    let args = ReplayArgs {
        retention_ok: true,
        ..ReplayArgs::new(&file)
    };
    let run = {
        let (url, args) = (url.clone(), args.clone());
        tokio::spawn(async move { replay::run(&url, &args).await })
    };
    let started = Instant::now();
    let mut before = 0;
    while before < 20_000 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        before = count(&db, "market_data").await;
    }
    assert!(
        (20_000..300_000).contains(&before),
        "{before} rows at the crash"
    );
    drop(db);
    // An immediate stop: no shutdown checkpoint; WAL not yet flushed is gone.
    tokio::task::block_in_place(|| {
        server.kill()?;
        std::thread::sleep(Duration::from_millis(300));
        server.start_again()
    })
    .expect("crash and restart PostgreSQL");
    let first = run.await.unwrap();
    let db = crate::support::connect(&url).await;
    let after_first = count(&db, "market_data").await;
    if let Ok(summary) = &first {
        // Success is a promise: everything is in.
        assert_eq!(after_first, 300_000, "{summary:?}");
        assert_eq!(summary.committed, 300_000, "{summary:?}");
    }
    let rest = replay::run(&url, &args).await.unwrap();
    assert_eq!(
        count(&db, "market_data").await,
        300_000,
        "{first:?} then {rest:?}"
    );
    assert_eq!(distinct_lines(&db).await, 300_000);
    assert_eq!(rest.committed + rest.already_stored, 300_000, "{rest:?}");
    let _ = std::fs::remove_file(&file);
}
