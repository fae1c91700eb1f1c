//! The core pipeline against a real PostgreSQL: volume, order, sums, receipts, shutdown,
//! encoding edge values and dead letters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use christmas_core::{DeadLetter, Error, Ingestor, Side, Symbol, Trade};

use crate::support::{self, count, fresh_core_db, symbols, trade};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_trades_four_producers_exact_counts_sums_and_order() {
    const SYMBOLS: usize = 500;
    const TOTAL: u64 = 1_000_000;
    const PRODUCERS: u64 = 4;
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    support::track_arrival(&client).await;
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .shards(2)
        .start()
        .await
        .unwrap();

    // Producer p owns the symbols i with i % 4 == p and pushes each symbol's trades in
    // sequence order, so per-symbol push order is well defined.
    let syms = symbols(SYMBOLS);
    let per_producer = TOTAL / PRODUCERS;
    let mut threads = Vec::new();
    for p in 0..PRODUCERS {
        let ingestor = ingestor.clone();
        let mine: Vec<Symbol> = syms
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 % PRODUCERS == p)
            .map(|(_, s)| *s)
            .collect();
        threads.push(std::thread::spawn(move || {
            let mut expected: HashMap<Symbol, (i64, f64)> = HashMap::new();
            let mut next_k: HashMap<Symbol, u64> = HashMap::new();
            for n in 0..per_producer {
                let symbol = mine[(n as usize * 7 + n as usize / 3) % mine.len()];
                let k = next_k.entry(symbol).or_default();
                let t = trade(symbol, *k);
                *k += 1;
                ingestor.push(t).unwrap();
                let e = expected.entry(symbol).or_default();
                e.0 += 1;
                e.1 += t.price;
            }
            expected
        }));
    }
    let mut expected: HashMap<Symbol, (i64, f64)> = HashMap::new();
    for t in threads {
        expected.extend(t.join().unwrap());
    }
    let report = ingestor.shutdown().await.unwrap();
    assert_eq!(report.rows_committed(), TOTAL);
    assert_eq!(report.dropped(), 0);

    assert_eq!(count(&client, "market_data").await, TOTAL as i64);
    let rows = client
        .query(
            "SELECT symbol, count(*), sum(price) FROM market_data GROUP BY symbol",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), expected.len());
    for row in rows {
        let symbol = Symbol::new(row.get::<_, &str>(0)).unwrap();
        let (n, sum) = expected[&symbol];
        assert_eq!(row.get::<_, i64>(1), n, "{symbol} count");
        assert_eq!(row.get::<_, f64>(2), sum, "{symbol} sum of prices");
    }
    let total_sum: f64 = expected.values().map(|e| e.1).sum();
    let db_sum: f64 = client
        .query_one("SELECT sum(price) FROM market_data", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(db_sum, total_sum);
    let (misordered, duplicates) = support::order_violations_and_duplicates(&client).await;
    assert_eq!(misordered, 0, "rows of a symbol arrived out of push order");
    assert_eq!(duplicates, 0);
    // Times rise with arrival too.
    let late: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT time < lag(time) OVER (PARTITION BY symbol ORDER BY arrival) AS bad FROM market_data) t WHERE bad",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(late, 0);
    // One ledger row per batch.
    assert_eq!(
        count(&client, "ingest_batches").await as u64,
        report.batches_committed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_resolves_only_when_rows_are_readable() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    // A long linger: without the receipt's wait nothing would be committed yet.
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .linger(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let syms = symbols(3);
    for round in 0..5u64 {
        let batch: Vec<Trade> = (0..100)
            .map(|i| trade(syms[i % 3], round * 100 + i as u64))
            .collect();
        let receipt = ingestor.push_with_receipt(&batch).await.unwrap();
        let report = receipt.wait().await.unwrap();
        assert!(!report.batches.is_empty());
        assert_eq!(
            count(&client, "market_data").await,
            (round as i64 + 1) * 100,
            "round {round}: receipt resolved before the rows were committed"
        );
    }
    ingestor.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_everything_and_then_refuses() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .linger(Duration::from_secs(30))
        .batch_max_rows(1_000_000)
        .start()
        .await
        .unwrap();
    let syms = symbols(10);
    for k in 0..12_345u64 {
        ingestor.push(trade(syms[k as usize % 10], k)).unwrap();
    }
    // Nothing sealed yet (huge batch, long linger): shutdown must flush it.
    let report = ingestor.shutdown().await.unwrap();
    assert_eq!(report.rows_committed(), 12_345);
    assert_eq!(count(&client, "market_data").await, 12_345);
    assert!(matches!(
        ingestor.push(trade(syms[0], 0)),
        Err(Error::Closed)
    ));
    assert!(matches!(
        ingestor.try_push(trade(syms[0], 0)),
        Err(Error::Closed)
    ));
    assert!(matches!(
        ingestor.push_async(trade(syms[0], 0)).await,
        Err(Error::Closed)
    ));
    // Calling it again reports the same totals.
    assert_eq!(ingestor.shutdown().await.unwrap().rows_committed(), 12_345);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_go_to_their_own_table() {
    use christmas_core::Quote;
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let quotes = Ingestor::<Quote>::builder()
        .database_url(&url)
        .start()
        .await
        .unwrap();
    let sym = Symbol::new("USD/JPY").unwrap();
    let batch: Vec<Quote> = (0..1_000)
        .map(|i| Quote {
            time_ns: 1_357_000_000_000_000_000 + i * 1_000_000,
            symbol: sym,
            bid: 86.0 + i as f64 * 0.001,
            ask: 86.01 + i as f64 * 0.001,
            bid_size: 1e6,
            ask_size: 2e6,
        })
        .collect();
    quotes.push_batch(&batch).unwrap();
    quotes.flush().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*), min(bid), max(ask), sum(bid_size + ask_size) FROM quotes WHERE symbol = 'USD/JPY'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1_000);
    assert_eq!(row.get::<_, f64>(1), 86.0);
    assert_eq!(row.get::<_, f64>(2), 86.01 + 999.0 * 0.001);
    assert_eq!(row.get::<_, f64>(3), 3e9);
    quotes.shutdown().await.unwrap();
}

/// The COPY encoding, checked against what PostgreSQL itself reads back, through the
/// driver's own decoding (not the library's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_encoding_edge_values_read_back_by_postgres() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .shards(1)
        .start()
        .await
        .unwrap();
    let long = "L".repeat(Symbol::MAX_LEN);
    let cases: Vec<(i64, &str, f64, f64, Side)> = vec![
        (0, "A", f64::NAN, 0.0, Side::None),
        (
            1_719_878_400_123_456_789,
            "ESU4",
            f64::INFINITY,
            -0.0,
            Side::Buy,
        ),
        (-1, "€URO", f64::NEG_INFINITY, 1e300, Side::Sell),
        (i64::MIN, "日経225", f64::MAX, f64::MIN_POSITIVE, Side::Buy),
        (i64::MAX, &long, f64::MIN, f64::EPSILON, Side::Sell),
        (-1_000_000_000_123, "Ünïcødé-Sym", 5512.25, 3.0, Side::None),
    ];
    for (i, (time_ns, sym, price, volume, side)) in cases.iter().enumerate() {
        ingestor
            .push(Trade {
                time_ns: *time_ns,
                symbol: Symbol::new(sym).unwrap(),
                price: *price,
                volume: *volume,
                side: *side,
                exchange_seq: i as i64,
            })
            .unwrap();
    }
    ingestor.shutdown().await.unwrap();

    let rows = client
        .query(
            "SELECT time, symbol, price, volume, side, exchange_seq FROM market_data ORDER BY exchange_seq",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), cases.len());
    for (row, (time_ns, sym, price, volume, side)) in rows.iter().zip(&cases) {
        // timestamptz keeps microseconds, rounded toward negative infinity.
        let micros = time_ns.div_euclid(1_000);
        let expected_time = if micros >= 0 {
            UNIX_EPOCH + Duration::from_micros(micros as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
        };
        assert_eq!(row.get::<_, SystemTime>(0), expected_time, "time of {sym}");
        assert_eq!(row.get::<_, &str>(1), *sym);
        let p: f64 = row.get(2);
        if price.is_nan() {
            assert!(p.is_nan());
        } else {
            assert_eq!(p, *price, "price of {sym}");
        }
        let v: f64 = row.get(3);
        assert_eq!(
            v.to_bits(),
            volume.to_bits(),
            "volume of {sym} (sign of zero kept)"
        );
        let s: String = row.get(4);
        assert_eq!(s.as_bytes(), [side.code()]);
    }
    // PostgreSQL's own text rendering of a known instant.
    let text: String = client
        .query_one(
            "SELECT to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM market_data WHERE symbol = 'ESU4'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(text, "2024-07-02 00:00:00.123456");
    let nan_count: i64 = client
        .query_one(
            "SELECT count(*) FROM market_data WHERE price = 'NaN'::float8",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(nan_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_rows_are_dead_lettered_and_the_rest_commits() {
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    client
        .batch_execute("ALTER TABLE market_data ADD CONSTRAINT positive_price CHECK (price >= 0)")
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<DeadLetter>>> = Arc::default();
    let hook_seen = seen.clone();
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .shards(2)
        .on_dead_letter(Arc::new(move |d: &DeadLetter| {
            hook_seen.lock().unwrap().push(d.clone())
        }))
        .start()
        .await
        .unwrap();
    let syms = symbols(20);
    let bad_at = [3u64, 500, 501, 777, 998, 999, 1_999];
    let mut batch = Vec::new();
    for k in 0..2_000u64 {
        let mut t = trade(syms[k as usize % 20], k);
        if bad_at.contains(&k) {
            t.price = -(k as f64);
        }
        batch.push(t);
    }
    let report = ingestor
        .push_with_receipt(&batch)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(!report.batches.is_empty());
    let metrics = ingestor.shutdown().await.unwrap();
    assert_eq!(metrics.dead_lettered(), bad_at.len() as u64);
    assert_eq!(metrics.rows_committed(), 2_000 - bad_at.len() as u64);

    assert_eq!(
        count(&client, "market_data").await,
        2_000 - bad_at.len() as i64
    );
    let letters = client
        .query(
            "SELECT row_copy, sqlstate, reason, target_table FROM ingest_dead_letters",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(letters.len(), bad_at.len());
    let mut prices: Vec<f64> = letters
        .iter()
        .map(|r| {
            assert_eq!(r.get::<_, &str>(1), "23514");
            assert!(r.get::<_, &str>(2).contains("positive_price"));
            assert_eq!(r.get::<_, &str>(3), "market_data");
            <Trade as christmas_core::Record>::decode_row(r.get::<_, &[u8]>(0))
                .unwrap()
                .price
        })
        .collect();
    prices.sort_by(f64::total_cmp);
    let mut expected: Vec<f64> = bad_at.iter().map(|k| -(*k as f64)).collect();
    expected.sort_by(f64::total_cmp);
    assert_eq!(prices, expected);
    assert_eq!(seen.lock().unwrap().len(), bad_at.len());
    let negative: i64 = client
        .query_one("SELECT count(*) FROM market_data WHERE price < 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(negative, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_clearly_without_a_database() {
    let err = Ingestor::<Trade>::builder()
        .database_url("postgres://christmas@127.0.0.1:1/christmas")
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Postgres {
                context: "connecting",
                ..
            }
        ),
        "{err}"
    );
    let err = Ingestor::<Trade>::builder().start().await.unwrap_err();
    assert!(matches!(err, Error::Config { field: "sink", .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_citus_router_hashes_text_as_postgresql_does() {
    // Citus places a symbol by PostgreSQL's hashtext(); the engine's copy of it must agree
    // for every tail length and for bytes beyond ASCII.
    let client = support::connect(&christmas_tests::shared_pg_url()).await;
    let alphabet: Vec<char> = "ABCXYZabcxyz0189._-/:éß€😀".chars().collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut texts = Vec::new();
    for len in 0..=40 {
        for _ in 0..25 {
            let text: String = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect();
            texts.push(text);
        }
    }
    let rows = client
        .query(
            "SELECT hashtext(t) FROM unnest($1::text[]) WITH ORDINALITY u(t, i) ORDER BY i",
            &[&texts],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), texts.len());
    for (text, row) in texts.iter().zip(&rows) {
        let server: i32 = row.get(0);
        assert_eq!(
            christmas_core::pg_hashtext(text.as_bytes()),
            server,
            "{text:?}"
        );
    }
}
