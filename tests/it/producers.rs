//! Idempotent producers against a real PostgreSQL: a resend after a timeout, to a second
//! engine while the first still holds the batch, and after a restart, is stored once.

use std::time::Duration;

use christmas_core::ingress::{AckLevel, Ingress, Ticks};
use christmas_core::producer::ProducerId;
use christmas_core::{IngestorConfig, Quote, Sink, Symbol};

use crate::support::{count, fresh_core_db, symbols, trade};

/// An ingress on `url` with a short linger.
async fn ingress(url: &str) -> Ingress {
    Ingress::start(IngestorConfig {
        sink: Some(Sink::Postgres(url.to_string())),
        shards: 2,
        linger: Duration::from_millis(2),
        ..IngestorConfig::default()
    })
    .await
    .expect("start the ingress")
}

/// Ticks `from..to` of a producer's stream: trades over 7 symbols (each symbol's trades in
/// order) and one quote per 10 trades.
fn ticks(from: u64, to: u64) -> Ticks {
    let syms = symbols(7);
    let mut t = Ticks::default();
    for k in from..to {
        t.push_trade(trade(syms[k as usize % 7], k)).unwrap();
    }
    for k in (from..to).filter(|k| k % 10 == 0) {
        t.push_quote(Quote {
            time_ns: 1_719_878_400_000_000_000 + k as i64,
            symbol: Symbol::new("6EU4").unwrap(),
            bid: 1.0,
            ask: 1.25,
            bid_size: 1.0,
            ask_size: 2.0,
        })
        .unwrap();
    }
    t
}

/// The first sequence of `ticks(from, to)` in a stream sent in whole steps of 10 trades and
/// 1 quote (a push numbers its trades, then its quotes).
fn first_seq(from: u64) -> u64 {
    1 + from / 10 * 11
}

async fn sums(client: &tokio_postgres::Client) -> (i64, i64, f64) {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM market_data), (SELECT count(*) FROM quotes), \
                    (SELECT coalesce(sum(exchange_seq), 0)::float8 FROM market_data)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_is_left_out_and_counted() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let ing = ingress(&url).await;
    let p = ProducerId::new("feed-a").unwrap();
    let first = ticks(0, 1_000);
    let acked = ing
        .push_from(&p, first_seq(0), &first, AckLevel::Committed)
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(
        (acked.trades, acked.quotes, acked.duplicates),
        (1_000, 100, 0)
    );
    // The whole request again (a retry after a timeout): nothing new is stored.
    let again = ing
        .push_from(&p, first_seq(0), &first, AckLevel::Committed)
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(again.duplicates, 1_100);
    // Half old, half new, from a producer of trades only (its tick k has sequence k + 1):
    // only the new half is stored.
    let trades_only = ProducerId::new("feed-trades").unwrap();
    let only_trades = |from, to| {
        let mut t = Ticks::default();
        for tick in ticks(from, to).trades() {
            t.push_trade(*tick).unwrap();
        }
        t
    };
    for (from, to, duplicates) in [(0, 1_000, 0), (500, 1_500, 500)] {
        let acked = ing
            .push_from(
                &trades_only,
                from + 1,
                &only_trades(from, to),
                AckLevel::Committed,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(acked.duplicates, duplicates);
    }
    // A producer that sends nothing twice, and a push without a producer, are untouched.
    let other = ProducerId::new("feed-b").unwrap();
    let acked = ing
        .push_from(&other, 1, &ticks(0, 10), AckLevel::Committed)
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(acked.duplicates, 0);
    ing.push(&ticks(0, 10), AckLevel::Committed)
        .await
        .unwrap()
        .await
        .unwrap();
    let metrics = ing.shutdown().await.unwrap();
    assert_eq!(
        metrics.trades.producer_resends() + metrics.quotes.producer_resends(),
        1_100 + 500
    );
    let (trades, quotes, seq_sum) = sums(&client).await;
    assert_eq!((trades, quotes), (1_000 + 1_500 + 10 + 10, 100 + 1 + 1));
    let expected: u64 =
        (0..1_000u64).sum::<u64>() + (0..1_500u64).sum::<u64>() + 2 * (0..10u64).sum::<u64>();
    assert_eq!(seq_sum, expected as f64);
    let stored: i64 = client
        .query_one(
            "SELECT max(seq) FROM ingest_producers WHERE producer = 'feed-trades'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 1_500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_to_a_second_engine_waits_for_the_first_and_is_left_out() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let (a, b) = (ingress(&url).await, ingress(&url).await);
    let p = ProducerId::new("feed-two-daemons").unwrap();
    let batch = ticks(0, 2_000);
    // Hold the tables, so the first engine's batch is claimed but cannot commit.
    let mut locker = crate::support::connect(&url).await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE market_data, quotes IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let first = a
        .push_from(&p, 1, &batch, AckLevel::Committed)
        .await
        .unwrap();
    let first = tokio::spawn(first.wait());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The client gave up on the first engine and retries through the second.
    let second = b
        .push_from(&p, 1, &batch, AckLevel::Committed)
        .await
        .unwrap();
    let second = tokio::spawn(second.wait());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!first.is_finished() && !second.is_finished());
    lock.rollback().await.unwrap();
    let first = first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    // Whichever won, the other left everything out.
    assert_eq!(first.duplicates + second.duplicates, 2_200);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    assert_eq!(count(&client, "market_data").await, 2_000);
    assert_eq!(count(&client, "quotes").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_engine_remembers_what_a_producer_stored() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let p = ProducerId::new("feed-restart").unwrap();
    let ing = ingress(&url).await;
    for from in (0..3_000).step_by(1_000) {
        let _accepted = ing
            .push_from(
                &p,
                first_seq(from),
                &ticks(from, from + 1_000),
                AckLevel::Accepted,
            )
            .await
            .unwrap();
    }
    ing.shutdown().await.unwrap();
    // The producer did not see its acks and sends everything again, and more, to a new run.
    let ing = ingress(&url).await;
    let mut duplicates = 0;
    for from in (0..4_000).step_by(1_000) {
        duplicates += ing
            .push_from(
                &p,
                first_seq(from),
                &ticks(from, from + 1_000),
                AckLevel::Committed,
            )
            .await
            .unwrap()
            .await
            .unwrap()
            .duplicates;
    }
    ing.shutdown().await.unwrap();
    assert_eq!(duplicates, 3_300);
    assert_eq!(count(&client, "market_data").await, 4_000);
    assert_eq!(count(&client, "quotes").await, 400);
}

#[tokio::test]
async fn bad_producer_sequences_are_refused_before_anything_is_pushed() {
    let ing = Ingress::start(IngestorConfig {
        sink: Some(Sink::Discard),
        ..IngestorConfig::default()
    })
    .await
    .unwrap();
    let p = ProducerId::new("p").unwrap();
    for first in [0, i64::MAX as u64] {
        let e = ing
            .push_from(&p, first, &ticks(0, 10), AckLevel::Accepted)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("producer_seq"), "{e}");
    }
    assert_eq!(ing.shutdown().await.unwrap().accepted(), 0);
}

/// `christmas_claim_producers` for one producer's `symbols`, each claiming `first..=last`;
/// the 1-based positions refused.
async fn claim(
    client: &tokio_postgres::Client,
    symbols: &[&str],
    first: i64,
    last: i64,
) -> Vec<i32> {
    let n = symbols.len();
    client
        .query(
            "SELECT christmas_claim_producers($1, $2, $3, $4, $5)",
            &[
                &vec!["feed-hot"; n],
                &vec!["trade"; n],
                &symbols.to_vec(),
                &vec![first; n],
                &vec![last; n],
            ],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_updates_its_row_in_place_and_moves_committed_at_once_a_minute() {
    let (_url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let syms = ["ESZ6", "NQZ6", "6EZ6"];
    assert!(claim(&client, &syms, 1, 10).await.is_empty());
    // Each claim its own transaction, as each batch's is: committed_at, the only indexed
    // column a claim could change, stays as it was, so PostgreSQL updates in place (HOT).
    for k in 1..=5 {
        assert!(claim(&client, &syms, k * 10 + 1, k * 10 + 10)
            .await
            .is_empty());
    }
    // A resend of stored sequences is refused, and updates nothing.
    assert_eq!(claim(&client, &syms, 41, 60).await, vec![1, 2, 3]);
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    let r = client
        .query_one(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
              WHERE relid = 'ingest_producers'::regclass",
            &[],
        )
        .await
        .unwrap();
    let (updated, in_place): (i64, i64) = (r.get(0), r.get(1));
    assert_eq!((updated, in_place), (15, 15));
    let seqs: Vec<i64> = client
        .query("SELECT seq FROM ingest_producers ORDER BY symbol", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seqs, vec![60, 60, 60]);

    // committed_at moves when it is a minute old, and only then.
    client
        .batch_execute(
            "UPDATE ingest_producers SET committed_at = now() - interval '2 minutes'
              WHERE symbol = 'ESZ6';
             UPDATE ingest_producers SET committed_at = now() - interval '30 seconds'
              WHERE symbol = 'NQZ6';",
        )
        .await
        .unwrap();
    assert!(claim(&client, &syms, 61, 70).await.is_empty());
    let ages: Vec<(String, f64)> = client
        .query(
            "SELECT symbol, extract(epoch FROM now() - committed_at)::float8
               FROM ingest_producers ORDER BY symbol",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let age = |s: &str| ages.iter().find(|(k, _)| k == s).unwrap().1;
    assert!(age("ESZ6") < 5.0, "{ages:?}");
    assert!((25.0..60.0).contains(&age("NQZ6")), "{ages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_producer_is_forgotten_a_minute_after_the_ledger_retention() {
    let (_url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    // The default ledger retention is 7 days; a producer's committed_at may lag its last
    // commit by up to a minute, so pruning waits that minute more.
    client
        .batch_execute(
            "INSERT INTO ingest_producers (producer, kind, symbol, first_seq, seq, committed_at)
             VALUES ('kept', 'trade', 'ESZ6', 1, 10, now() - interval '7 days 30 seconds'),
                    ('gone', 'trade', 'ESZ6', 1, 10, now() - interval '7 days 2 minutes')",
        )
        .await
        .unwrap();
    christmas_core::schema::prune_ledger(&client).await.unwrap();
    let left: Vec<String> = client
        .query("SELECT producer FROM ingest_producers", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec!["kept".to_string()]);
}
