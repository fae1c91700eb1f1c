//! TLS to PostgreSQL and Redis: private servers that speak TLS only (PostgreSQL's TCP
//! connections are `hostssl`, Redis has `--port 0 --tls-port`), their certificates (for
//! 127.0.0.1 and localhost) signed by a CA the test made; 127.0.0.2 reaches the same
//! servers under a name the certificate does not hold.

use std::time::Duration;

use christmas_core::fanout::{FanoutConfig, PayloadFormat, TickSubscription};
use christmas_core::{Error, Ingestor, Symbol, TlsErrorKind, Trade};
use christmas_tests::tls::unrelated_ca;
use christmas_tests::{PgServer, RedisServer};

use crate::support::{count, fresh_core_db, symbols, trade};

/// `url` with `sslmode` (and `sslrootcert`, when given) in its query.
fn with_tls(url: &str, mode: &str, ca: Option<&std::path::Path>) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    match ca {
        Some(ca) => format!("{url}{sep}sslmode={mode}&sslrootcert={}", ca.display()),
        None => format!("{url}{sep}sslmode={mode}"),
    }
}

/// Whether the session of `client` is encrypted, as the server sees it.
async fn session_is_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The TLS failure kind of `r`, or a panic naming what came instead.
fn tls_kind<T>(r: christmas_core::Result<T>, store: &str) -> TlsErrorKind {
    match r {
        Err(Error::Tls { store: s, kind, .. }) if s == store => kind,
        Err(e) => panic!("expected a TLS error from {store}, got {e:?}"),
        Ok(_) => panic!("expected a TLS error from {store}, got a connection"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_go_over_tls_to_postgres_and_redis_exactly_once() {
    let (pg, redis) = tokio::task::block_in_place(|| {
        (
            PgServer::start_tls().unwrap(),
            RedisServer::start_tls().unwrap(),
        )
    });
    // The migrator, the writers and the test's own client all verify the full chain and
    // the host name.
    let base = with_tls(&pg.url(), "verify-full", Some(&pg.tls_ca()));
    let (url, client) = fresh_core_db(&base).await;
    assert!(session_is_tls(&client).await);
    let redis_url = with_tls(&redis.url(), "verify-full", Some(&redis.tls_ca()));

    let syms = symbols(8);
    let mut sub = TickSubscription::live(&redis_url, PayloadFormat::Json, &syms)
        .await
        .unwrap();
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .shards(2)
        .fanout(FanoutConfig::new(&redis_url))
        .start()
        .await
        .unwrap();
    const N: u64 = 20_000;
    let mut sum = 0.0;
    let mut per_symbol = vec![0u64; syms.len()];
    for k in 0..N {
        let i = (k % syms.len() as u64) as usize;
        let t = trade(syms[i], k);
        sum += t.price;
        per_symbol[i] += 1;
        ingestor.push(t).unwrap();
    }
    let report = ingestor.shutdown().await.unwrap();
    assert_eq!(report.rows_committed(), N);
    let fanout = report.fanout.unwrap();
    assert_eq!((fanout.published, fanout.dropped), (N, 0));

    // Exactly once in PostgreSQL: every row, none twice, and the sum of prices.
    assert_eq!(count(&client, "market_data").await, N as i64);
    let row = client
        .query_one(
            "SELECT count(DISTINCT (symbol, exchange_seq)), sum(price) FROM market_data",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), N as i64);
    assert_eq!(row.get::<_, f64>(1), sum);

    // And in Redis, over the TLS port: each symbol's latest hash counts its trades, and the
    // subscriber heard every one.
    for (i, s) in syms.iter().enumerate() {
        let seq = redis
            .cli(&[
                "HGET",
                &format!("md:{{{}}}:latest", s.as_str()),
                "trade_seq",
            ])
            .unwrap();
        assert_eq!(seq.trim(), per_symbol[i].to_string(), "{s}");
    }
    let mut heard = 0u64;
    while heard < N {
        let m = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("the subscriber hears every tick within 30 s")
            .expect("the subscription stays up")
            .expect("a decodable message");
        heard += m.message.len() as u64;
    }
    assert_eq!(heard, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sslmodes_do_what_libpq_users_expect() {
    let pg = tokio::task::block_in_place(|| PgServer::start_tls().unwrap());
    let ca = pg.tls_ca();
    let connect = |url: String| async move {
        christmas_core::pg::connect_url(&url, "christmas-tls-test").await
    };
    // 127.0.0.2: the same server under a name its certificate does not hold.
    let other_name = pg.url().replace("127.0.0.1", "127.0.0.2");

    for url in [
        with_tls(&pg.url(), "verify-full", Some(&ca)),
        with_tls(&pg.url(), "verify-ca", Some(&ca)),
        with_tls(&other_name, "verify-ca", Some(&ca)),
        // require without a CA: encrypted, the certificate unchecked.
        with_tls(&pg.url(), "require", None),
        // prefer (the default) takes TLS when the server offers it.
        pg.url(),
    ] {
        let client = connect(url.clone())
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(session_is_tls(&client).await, "{url}");
    }

    assert_eq!(
        tls_kind(
            connect(with_tls(&pg.url(), "verify-full", Some(&unrelated_ca()))).await,
            "PostgreSQL"
        ),
        TlsErrorKind::UntrustedCertificate
    );
    // require with a CA file checks the chain, as in libpq.
    assert_eq!(
        tls_kind(
            connect(with_tls(&pg.url(), "require", Some(&unrelated_ca()))).await,
            "PostgreSQL"
        ),
        TlsErrorKind::UntrustedCertificate
    );
    assert_eq!(
        tls_kind(
            connect(with_tls(&other_name, "verify-full", Some(&ca))).await,
            "PostgreSQL"
        ),
        TlsErrorKind::HostMismatch
    );
    // The server takes TCP connections over TLS only: disable is refused by the server.
    match connect(with_tls(&pg.url(), "disable", None)).await {
        Err(Error::Postgres { source, .. }) => assert_eq!(
            source.code(),
            Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
            "{source}"
        ),
        other => panic!(
            "expected the server to refuse a plain session: {:?}",
            other.err()
        ),
    }
    // A CA file that is not there is a configuration error, before any connection.
    match connect(with_tls(
        &pg.url(),
        "verify-full",
        Some("/nonexistent/ca.pem".as_ref()),
    ))
    .await
    {
        Err(Error::Config { field, .. }) => assert_eq!(field, "sslrootcert"),
        other => panic!("expected a config error: {:?}", other.err()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tls_modes_and_a_plain_client_on_the_tls_port() {
    let redis = tokio::task::block_in_place(|| RedisServer::start_tls().unwrap());
    let ca = redis.tls_ca();
    let syms: Vec<Symbol> = symbols(1);
    let subscribe = |url: String| {
        let syms = syms.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                TickSubscription::live(&url, PayloadFormat::Json, &syms),
            )
            .await
            .expect("connecting ends within 10 s")
        }
    };
    let other_name = redis.url().replace("127.0.0.1", "127.0.0.2");

    for url in [
        with_tls(&redis.url(), "verify-full", Some(&ca)),
        with_tls(&other_name, "verify-ca", Some(&ca)),
        with_tls(&redis.url(), "require", None),
    ] {
        subscribe(url.clone())
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    assert_eq!(
        tls_kind(
            subscribe(with_tls(&redis.url(), "verify-full", Some(&unrelated_ca()))).await,
            "Redis"
        ),
        TlsErrorKind::UntrustedCertificate
    );
    assert_eq!(
        tls_kind(
            subscribe(with_tls(&other_name, "verify-full", Some(&ca))).await,
            "Redis"
        ),
        TlsErrorKind::HostMismatch
    );
    // rediss:// without a CA trusts the system's roots only, which never signed this one.
    assert_eq!(
        tls_kind(subscribe(redis.url()).await, "Redis"),
        TlsErrorKind::UntrustedCertificate
    );
    // A plain redis:// client on the TLS-only port fails, and says it lost the connection.
    let plain = redis.url().replace("rediss://", "redis://");
    match subscribe(plain).await {
        Err(Error::Redis { kind, .. }) => {
            assert_eq!(kind, christmas_core::RedisErrorKind::Connection)
        }
        other => panic!("expected a Redis connection error: {:?}", other.err()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_ticks_reads_and_orders_over_tls() {
    let (pg, redis) = tokio::task::block_in_place(|| {
        (
            PgServer::start_tls().unwrap(),
            RedisServer::start_tls().unwrap(),
        )
    });
    let base = with_tls(&pg.url(), "verify-full", Some(&pg.tls_ca()));
    let (url, db) = fresh_core_db(&base).await;
    let config = christmas_ingest::config::DaemonConfig {
        database_url: Some(url.clone().into()),
        // The reader on its own URL: verify-ca, so its path is the replica-aware one.
        read_database_url: Some(
            url.replace("sslmode=verify-full", "sslmode=verify-ca")
                .into(),
        ),
        redis_url: Some(with_tls(&redis.url(), "verify-full", Some(&redis.tls_ca())).into()),
        ..Default::default()
    };
    let daemon = christmas_tests::InProcessDaemon::start(config, false)
        .await
        .unwrap();
    let http = daemon.client();

    let ticks: Vec<serde_json::Value> = (1..=40)
        .map(|seq| {
            serde_json::json!({"kind": "trade", "symbol": if seq % 2 == 0 { "ESZ6" } else { "NQZ6" },
                "time": "2026-11-25T10:00:00.5Z", "price": 100.0 + seq as f64, "volume": 1,
                "side": "B", "exchange_seq": seq})
        })
        .collect();
    let r = http
        .post_json("/api/ticks?ack=committed", &serde_json::json!(ticks))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json().unwrap()["committed"].as_u64()),
        (201, Some(40))
    );
    let row = db
        .query_one(
            "SELECT count(*), sum(price) FROM market_data WHERE symbol = 'ESZ6'",
            &[],
        )
        .await
        .unwrap();
    let want: f64 = (1..=40)
        .filter(|s| s % 2 == 0)
        .map(|s| 100.0 + s as f64)
        .sum();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, f64>(1)), (20, want));

    // Reads: trades from PostgreSQL, the latest tick from Redis, both over TLS.
    let r = http
        .get("/api/market-data/ESZ6/trades?from=2026-11-25T00:00:00Z&limit=100")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json().unwrap()["trades"].as_array().unwrap().len(), 20);
    // The fan-out publishes after the commit, asynchronously: give it a moment on a busy
    // machine before the latest tick must come from Redis.
    let mut tries = 0;
    let (r, v) = loop {
        let r = http.get("/api/market-data?symbol=ESZ6").await.unwrap();
        let v = r.json().unwrap();
        tries += 1;
        if v["source"] == "redis" || tries == 50 {
            break (r, v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!((r.status, v["source"].as_str()), (200, Some("redis")));
    assert_eq!(v["trade"]["exchange_seq"], 40);

    // An order: stored once, its event on the Redis stream.
    let order = serde_json::json!({"client_order_id": "tls-1", "symbol": "ESZ6", "side": "buy",
        "type": "limit", "quantity": 2.0, "limit_price": 6000.25, "time_in_force": "gtc"});
    let r = http.post_json("/api/orders", &order).await.unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let orders: i64 = db
        .query_one(
            "SELECT count(*) FROM orders WHERE client_order_id = 'tls-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = redis.cli(&["XLEN", "orders:events"]).unwrap();
        if n.trim() == "1" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the order's event reached the stream over TLS within 10 s (XLEN {n})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_takes_the_fanout_on_every_node() {
    let cluster =
        tokio::task::block_in_place(|| christmas_tests::RedisCluster::start_tls(3)).unwrap();
    let (url, _db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let syms = symbols(12);
    let mut sub = TickSubscription::live(&cluster.url_via(2), PayloadFormat::Json, &syms)
        .await
        .unwrap();
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .fanout(FanoutConfig::new(cluster.url_via(0)))
        .start()
        .await
        .unwrap();
    const N: u64 = 3_000;
    for k in 0..N {
        ingestor
            .push(trade(syms[(k % syms.len() as u64) as usize], k))
            .unwrap();
    }
    let report = ingestor.shutdown().await.unwrap();
    let fanout = report.fanout.unwrap();
    assert_eq!((fanout.published, fanout.dropped), (N, 0));
    let mut heard = 0u64;
    while heard < N {
        let m = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("the subscriber hears every tick within 30 s")
            .expect("the subscription stays up")
            .expect("a decodable message");
        heard += m.message.len() as u64;
    }
    assert_eq!(heard, N);
    // Every node, reached over TLS, holds some of the symbols' keys.
    for node in &cluster.nodes {
        let keys: u64 = node.cli(&["DBSIZE"]).unwrap().trim().parse().unwrap();
        assert!(keys > 0, "node {} holds no key", node.port());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_over_tls_names_the_master_the_fanout_writes_to() {
    let (master, sentinel) = tokio::task::block_in_place(|| {
        let master = RedisServer::start_tls()?;
        let sentinel = RedisServer::start_sentinel_tls("md", &master)?;
        anyhow::Ok((master, sentinel))
    })
    .unwrap();
    let (url, _db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    // The sentinel and the master it names are both spoken to over TLS, trusting the CA.
    let redis_url = format!(
        "rediss+sentinel://127.0.0.1:{}/md?sslrootcert={}",
        sentinel.port(),
        master.tls_ca().display()
    );
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .fanout(FanoutConfig::new(&redis_url))
        .start()
        .await
        .unwrap();
    let sym = symbols(1)[0];
    for k in 0..500 {
        ingestor.push(trade(sym, k)).unwrap();
    }
    let report = ingestor.shutdown().await.unwrap();
    let fanout = report.fanout.unwrap();
    assert_eq!((fanout.published, fanout.dropped), (500, 0));
    let seq = master
        .cli(&[
            "HGET",
            &format!("md:{{{}}}:latest", sym.as_str()),
            "trade_seq",
        ])
        .unwrap();
    assert_eq!(seq.trim(), "500");
}
