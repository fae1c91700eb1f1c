//! The daemon over real sockets: HTTP endpoints, auth, limits, TCP frames, file replay and
//! shutdown under load, against real PostgreSQL and Redis.

use std::net::SocketAddr;
use std::time::Duration;

use christmas_core::frame::{self, AckLevel, FrameQuote, FrameTrade, IngestFrame};
use christmas_ingest::auth::{hash_key, ApiKey};
use christmas_ingest::config::DaemonConfig;
use christmas_ingest::replay::{self, ReplayArgs};
use christmas_tests::{stored_ticks, HttpClient, InProcessDaemon, RedisServer, TickLoad};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::Client;

use crate::support::{count, fresh_core_db};

/// A daemon on loopback ports (HTTP and TCP), with its own database.
pub(crate) struct Daemon {
    url: String,
    pub(crate) tcp: SocketAddr,
    pub(crate) db: Client,
    daemon: InProcessDaemon,
}

impl Daemon {
    pub(crate) async fn start(tweak: impl FnOnce(&mut DaemonConfig)) -> Daemon {
        let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
        let mut config = DaemonConfig {
            database_url: Some(url.clone().into()),
            ..DaemonConfig::default()
        };
        tweak(&mut config);
        let daemon = InProcessDaemon::start(config, true).await.unwrap();
        Daemon {
            url,
            tcp: daemon.tcp().expect("started with TCP"),
            db,
            daemon,
        }
    }

    /// SIGTERM's path: stop, drain, flush; the run's result.
    pub(crate) async fn shutdown(self) -> anyhow::Result<()> {
        self.daemon.stop().await
    }

    /// Shuts down, then checks the table holds `rows` trades.
    async fn shutdown_and_count(self, rows: i64) {
        let db = self.db_url();
        self.shutdown().await.unwrap();
        let client = crate::support::connect(&db).await;
        assert_eq!(count(&client, "market_data").await, rows);
    }

    pub(crate) fn db_url(&self) -> String {
        self.url.clone()
    }

    /// Its HTTP address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.daemon.http()
    }

    /// Its state (engine, feed, metrics).
    pub(crate) fn state(&self) -> &christmas_ingest::state::AppState {
        self.daemon.state()
    }

    /// A client of its HTTP port.
    pub(crate) fn client(&self) -> HttpClient {
        self.daemon.client()
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Value) {
        let r = self
            .client()
            .request(method, path, headers, body.to_vec())
            .await
            .unwrap();
        let v = r.json().unwrap_or_else(|_| json!(r.text()));
        (r.status, v)
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, &[], b"").await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("POST", path, &[], body.to_string().as_bytes())
            .await
    }
}

/// A daemon on a loopback port; the handle stops it (SIGTERM's path) and returns its result.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    daemon: InProcessDaemon,
}

impl Running {
    pub(crate) async fn start(config: DaemonConfig) -> Running {
        let daemon = InProcessDaemon::start(config, false).await.unwrap();
        Running {
            addr: daemon.http(),
            daemon,
        }
    }

    pub(crate) async fn call(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let body = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        let r = self
            .daemon
            .client()
            .request(method, path, &[], body)
            .await
            .unwrap();
        (r.status, r.json().unwrap_or(Value::Null))
    }

    /// `GET /metrics`: the Prometheus text.
    pub(crate) async fn metrics(&self) -> String {
        let r = self.daemon.client().get("/metrics").await.unwrap();
        assert_eq!(r.status, 200);
        String::from_utf8(r.body.to_vec()).unwrap()
    }

    pub(crate) async fn stop(self) {
        self.daemon.stop().await.unwrap();
    }
}

fn trade_json(symbol: &str, seq: i64) -> Value {
    json!({"kind": "trade", "symbol": symbol, "time": "2026-11-25T10:00:00.5Z", "price": 100.0 + seq as f64,
           "volume": 1, "side": "B", "exchange_seq": seq})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_are_accepted_or_committed_and_readable() {
    let d = Daemon::start(|_| {}).await;
    let body = json!([
        trade_json("ESZ6", 1),
        trade_json("ESZ6", 2),
        {"kind": "quote", "symbol": "ESZ6", "time_ns": 1_795_600_000_000_000_000i64, "bid": 99.5, "ask": 100.5, "bid_size": 3, "ask_size": 4},
    ]);
    let (status, v) = d.post("/api/ticks?ack=committed", &body).await;
    assert_eq!(
        (status, &v),
        (201, &json!({"committed": 3, "trades": 2, "quotes": 1}))
    );
    // Committed means readable now.
    assert_eq!(count(&d.db, "market_data").await, 2);
    assert_eq!(count(&d.db, "quotes").await, 1);

    let nd = format!("{}\n{}\n", trade_json("NQZ6", 7), trade_json("NQZ6", 8));
    let (status, v) = d
        .call(
            "POST",
            "/api/ticks",
            &[("content-type", "application/x-ndjson")],
            nd.as_bytes(),
        )
        .await;
    assert_eq!((status, v["accepted"].as_u64()), (202, Some(2)));

    let (status, v) = d
        .get("/api/market-data/ESZ6/trades?from=2026-11-25T00:00:00Z&limit=1")
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["trades"].as_array().unwrap().len(), 1);
    assert_eq!(v["trades"][0]["exchange_seq"], 1);
    let (status, v) = d
        .get("/api/market-data/ESZ6/bars?interval=1h&from=2026-11-25T00:00:00Z&to=2026-11-26T00:00:00Z")
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["bars"][0]["trades"], 2);
    assert_eq!(
        (
            v["bars"][0]["open"].as_f64(),
            v["bars"][0]["close"].as_f64()
        ),
        (Some(101.0), Some(102.0))
    );
    // No Redis configured: the latest tick comes from the database.
    let (status, v) = d.get("/api/market-data?symbol=ESZ6").await;
    assert_eq!((status, v["source"].as_str()), (200, Some("database")));
    assert_eq!(v["trade"]["exchange_seq"], 2);
    assert_eq!(v["quote"]["ask"], 100.5);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400s_naming_the_field_and_nothing_is_written() {
    let d = Daemon::start(|_| {}).await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("/api/ticks", json!([trade_json("A", 1), {"kind": "trade", "symbol": "A", "time_ns": 1, "volume": 1}]).to_string().into_bytes(), "price"),
        ("/api/ticks", json!([{"kind": "trade", "symbol": "", "time_ns": 1, "price": 1, "volume": 1}]).to_string().into_bytes(), "symbol"),
        // Two such trades in one minute would overflow the bar's float8 sum of volumes.
        ("/api/ticks", json!([trade_json("A", 1), {"kind": "trade", "symbol": "A", "time_ns": 1, "price": 1, "volume": 1e300}]).to_string().into_bytes(), "volume"),
        ("/api/ticks", json!([{"kind": "trade", "symbol": "A", "time": "later", "price": 1, "volume": 1}]).to_string().into_bytes(), "time"),
        ("/api/ticks", b"not json".to_vec(), "body"),
        ("/api/ticks", b"[]".to_vec(), "body"),
        ("/api/ticks?ack=eventually", json!([trade_json("A", 1)]).to_string().into_bytes(), "ack"),
        ("/api/ticks?ack=durable", json!([trade_json("A", 1)]).to_string().into_bytes(), "ack"),
    ];
    for (path, body, field) in cases {
        let (status, v) = d.call("POST", path, &[], &body).await;
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some(field)),
            "{path} {v}"
        );
        assert!(v["error"].is_string());
    }
    let (_, v) = d
        .post(
            "/api/ticks",
            &json!([trade_json("A", 1), trade_json("A", 2), {"kind": "quote"}]),
        )
        .await;
    assert_eq!(v["index"], 2);
    for (path, field) in [
        ("/api/market-data", "symbol"),
        ("/api/market-data/A/bars?interval=2m", "interval"),
        ("/api/market-data/A/trades?limit=0", "limit"),
        ("/api/market-data/A/trades?from=soon", "from"),
    ] {
        let (status, v) = d.get(path).await;
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some(field)),
            "{path} {v}"
        );
    }
    let (status, v) = d.get("/api/nothing").await;
    assert_eq!((status, v["error"].is_string()), (404, true));
    // All or nothing: not one row of the refused requests went in.
    d.shutdown_and_count(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_and_scoped_and_reads_can_be_opened() {
    let keys = vec![
        ApiKey::parse(&format!("feed:{}:ingest", hash_key("feed-key"))).unwrap(),
        ApiKey::parse(&format!("desk:{}:read", hash_key("desk-key"))).unwrap(),
    ];
    let d = Daemon::start(|c| c.api_keys = keys.clone()).await;
    let body = json!([trade_json("ESZ6", 1)]).to_string();
    let post = |key: Option<&'static str>| {
        let body = body.clone();
        let client = match key {
            Some(k) => d.client().bearer(k),
            None => d.client(),
        };
        async move {
            let r = client
                .request("POST", "/api/ticks?ack=committed", &[], body)
                .await
                .unwrap();
            (r.status, r.json().unwrap())
        }
    };
    let (status, v) = post(None).await;
    assert_eq!((status, v["field"].as_str()), (401, Some("authorization")));
    assert_eq!(post(Some("wrong")).await.0, 401);
    assert_eq!(post(Some("desk-key")).await.0, 403);
    assert_eq!(post(Some("feed-key")).await.0, 201);
    // Reads are open unless auth_reads is on.
    assert_eq!(d.get("/api/market-data?symbol=ESZ6").await.0, 200);
    d.shutdown_and_count(1).await;

    let d = Daemon::start(|c| {
        c.api_keys = keys.clone();
        c.auth_reads = true;
    })
    .await;
    assert_eq!(d.get("/api/market-data?symbol=ESZ6").await.0, 401);
    let (status, _) = d
        .call(
            "GET",
            "/api/market-data?symbol=ESZ6",
            &[("authorization", "Bearer desk-key")],
            b"",
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = d
        .call(
            "GET",
            "/api/market-data?symbol=ESZ6",
            &[("authorization", "Bearer feed-key")],
            b"",
        )
        .await;
    assert_eq!(status, 403);
    d.shutdown_and_count(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413() {
    let d = Daemon::start(|c| c.http.max_body_bytes = 2_048).await;
    let many: Vec<Value> = (0..100).map(|i| trade_json("ESZ6", i)).collect();
    let (status, v) = d.post("/api/ticks", &json!(many)).await;
    assert_eq!((status, v["field"].as_str()), (413, Some("body")));
    let (status, _) = d.post("/api/ticks?ack=committed", &json!(many[..5])).await;
    assert_eq!(status, 201);
    d.shutdown_and_count(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_comes_from_redis_when_the_fanout_has_it() {
    let redis = tokio::task::block_in_place(RedisServer::start).unwrap();
    let d = Daemon::start(|c| c.redis_url = Some(redis.url().into())).await;
    let (status, _) = d
        .post(
            "/api/ticks?ack=committed",
            &json!([trade_json("ESZ6", 1), trade_json("ESZ6", 2)]),
        )
        .await;
    assert_eq!(status, 201);
    let mut v = json!(null);
    for _ in 0..100 {
        v = d.get("/api/market-data?symbol=ESZ6").await.1;
        if v["source"] == "redis" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(v["source"], "redis", "{v}");
    assert_eq!(
        (
            v["trade"]["exchange_seq"].as_i64(),
            v["trade"]["seq"].as_u64()
        ),
        (Some(2), Some(2))
    );
    // A symbol Redis has nothing for falls back to the database (which has nothing either).
    let (status, v) = d.get("/api/market-data?symbol=NOPE").await;
    assert_eq!(
        (status, v["source"].as_str(), v["trade"].is_null()),
        (200, Some("database"), true)
    );
    let (status, v) = d.get("/ready").await;
    assert_eq!((status, v["checks"]["redis"].as_bool()), (200, Some(true)));
    d.shutdown_and_count(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_metrics_and_openapi() {
    let d = Daemon::start(|_| {}).await;
    let (status, v) = d.get("/health").await;
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    let (status, v) = d.get("/ready").await;
    assert_eq!((status, v["ready"].as_bool()), (200, Some(true)), "{v}");
    d.post(
        "/api/ticks?ack=committed",
        &json!([trade_json("ESZ6", 1), trade_json("ESZ6", 2)]),
    )
    .await;
    let metrics = d.client().get("/metrics").await.unwrap();
    let (status, text) = (
        metrics.status,
        String::from_utf8(metrics.body.to_vec()).unwrap(),
    );
    assert_eq!(status, 200);
    assert!(
        text.contains("christmas_rows_committed_total{kind=\"trade\"} 2"),
        "{text}"
    );
    assert!(
        text.contains(
            "christmas_http_requests_total{method=\"POST\",route=\"/api/ticks\",status=\"201\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("christmas_push_to_commit_seconds_bucket{kind=\"trade\",le=\"+Inf\"} 2"));
    // No replica: no lag series, and the engine panel's lag is null.
    assert!(!text.contains("christmas_replica_lag_seconds"), "{text}");
    let (status, v) = d.get("/api/engine").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["replica"]["configured"], json!(false), "{v}");
    assert!(v["replica"]["lag_ms"].is_null(), "{v}");
    // Where the time went, stage by stage; the committed trades were measured in each.
    for stage in ["batching", "queue", "copy", "commit"] {
        let count = format!("christmas_stage_seconds_count{{kind=\"trade\",stage=\"{stage}\"}} ");
        let line = text.lines().find(|l| l.starts_with(&count));
        let n: u64 = line
            .and_then(|l| l[count.len()..].parse().ok())
            .unwrap_or(0);
        assert!(n >= 1, "{stage}: {line:?}");
    }
    // One TYPE line per metric: a Prometheus scrape refuses a second.
    let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let all = types.len();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), all, "a metric's TYPE line repeats");
    let (status, v) = d.get("/api/openapi.json").await;
    assert_eq!(status, 200);
    for p in [
        "/api/orders",
        "/api/orders/{id}",
        "/api/ticks",
        "/api/market-data",
        "/api/market-data/{symbol}/trades",
        "/api/market-data/{symbol}/bars",
        "/api/stream",
        "/api/engine",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(
            v["paths"][p].is_object(),
            "{p} missing from the OpenAPI document"
        );
    }
    // Every response carries a request id.
    let health = d.client().get("/health").await.unwrap();
    assert!(health.header("x-request-id").is_some(), "{health:?}");
    d.shutdown_and_count(2).await;
}

pub(crate) async fn send_frame(s: &mut TcpStream, f: &IngestFrame) {
    s.write_all(&frame::encode_ingest(f).unwrap())
        .await
        .unwrap();
}

pub(crate) async fn read_ack(s: &mut TcpStream) -> Option<frame::AckFrame> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    Some(frame::decode_ack(&body).unwrap())
}

pub(crate) fn ingest_frame(seq: u64, ack: AckLevel, n: i64) -> IngestFrame {
    IngestFrame {
        seq,
        ack: ack.code(),
        api_key: String::new(),
        trades: (0..n)
            .map(|i| FrameTrade {
                symbol: "ESZ6".into(),
                time_ns: 1_795_600_000_000_000_000 + i,
                price: 100.0,
                volume: 1.0,
                side: b'S',
                exchange_seq: seq as i64 * 1_000 + i,
            })
            .collect(),
        quotes: vec![FrameQuote {
            symbol: "ESZ6".into(),
            time_ns: 1_795_600_000_000_000_000,
            bid: 99.0,
            ask: 101.0,
            bid_size: 1.0,
            ask_size: 1.0,
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_frames_are_acked_in_order_and_garbage_closes_only_its_connection() {
    let d = Daemon::start(|_| {}).await;
    let mut s = TcpStream::connect(d.tcp).await.unwrap();
    // Pipelined: three frames, then their acks, in order.
    send_frame(&mut s, &ingest_frame(1, AckLevel::Accepted, 10)).await;
    send_frame(&mut s, &ingest_frame(2, AckLevel::Committed, 20)).await;
    let mut bad = ingest_frame(3, AckLevel::Committed, 1);
    bad.trades[0].price = f64::NAN;
    send_frame(&mut s, &bad).await;
    send_frame(&mut s, &ingest_frame(4, AckLevel::Durable, 1)).await;
    let acks: Vec<_> = [
        read_ack(&mut s).await,
        read_ack(&mut s).await,
        read_ack(&mut s).await,
        read_ack(&mut s).await,
    ]
    .into_iter()
    .map(Option::unwrap)
    .collect();
    assert_eq!(
        acks.iter()
            .map(|a| (a.seq, a.ok, a.records))
            .collect::<Vec<_>>(),
        vec![(1, true, 11), (2, true, 21), (3, false, 0), (4, false, 0)]
    );
    assert_eq!(acks[2].error, "trades[0].price: must be a finite number");
    assert!(acks[3].error.contains("durable"));
    // Frame 2 was acknowledged at `committed`: its rows are readable now.
    let committed: i64 =
        d.db.query_one(
            "SELECT count(*) FROM market_data WHERE exchange_seq BETWEEN 2000 AND 2999",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(committed, 20);

    // Garbage: an error ack with seq 0, then the daemon closes the connection.
    s.write_all(&[0, 0, 0, 8]).await.unwrap();
    s.write_all(b"garbage!").await.unwrap();
    let ack = read_ack(&mut s).await.unwrap();
    assert_eq!((ack.seq, ack.ok), (0, false));
    assert!(read_ack(&mut s).await.is_none());
    // A frame over the limit is refused the same way.
    let mut s = TcpStream::connect(d.tcp).await.unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let ack = read_ack(&mut s).await.unwrap();
    assert!(!ack.ok && ack.error.contains("limit"), "{ack:?}");
    // A client gone mid-frame: nothing breaks.
    let mut s = TcpStream::connect(d.tcp).await.unwrap();
    let full = frame::encode_ingest(&ingest_frame(5, AckLevel::Committed, 5)).unwrap();
    s.write_all(&full[..full.len() / 2]).await.unwrap();
    drop(s);
    let mut s = TcpStream::connect(d.tcp).await.unwrap();
    send_frame(&mut s, &ingest_frame(6, AckLevel::Committed, 5)).await;
    assert!(read_ack(&mut s).await.unwrap().ok);
    assert_eq!(d.get("/health").await.0, 200);
    d.shutdown_and_count(10 + 20 + 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_both_sample_files_lands_every_row() {
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let data = format!("{}/data", env!("CARGO_MANIFEST_DIR"));
    let args = |file: &str| ReplayArgs::new(format!("{data}/{file}"));
    let dbn = replay::run(&url, &args("glbx-futures-mbp-1.dbn.zst"))
        .await
        .unwrap();
    assert_eq!(dbn.trades, 120);
    assert_eq!(dbn.committed, dbn.trades + dbn.quotes);
    let csv = replay::run(&url, &args("truefx-usdjpy-ticks.csv"))
        .await
        .unwrap();
    assert_eq!((csv.trades, csv.quotes, csv.committed), (0, 1_000, 1_000));
    assert_eq!(count(&db, "market_data").await, 120);
    assert_eq!(count(&db, "quotes").await as u64, dbn.quotes + 1_000);
    let (n, first, last): (i64, f64, f64) = {
        let r = db
            .query_one(
                "SELECT count(*), (array_agg(bid ORDER BY time))[1], (array_agg(ask ORDER BY time DESC))[1]
                   FROM quotes WHERE symbol = 'USDJPY'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((n, first, last), (1_000, 86.655, 86.854));
    // At recorded speed x 1000 the 40 minutes of quotes take about 2.4 s, not 0.
    let started = std::time::Instant::now();
    let fast = ReplayArgs {
        speed: 1_000.0,
        rebase_to_now: true,
        ..args("truefx-usdjpy-ticks.csv")
    };
    replay::run(&url, &fast).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_loses_nothing_acknowledged() {
    let d = Daemon::start(|_| {}).await;
    let load = TickLoad::start((0..4).map(|_| d.client()).collect(), |seqs| {
        let body: Vec<Value> = seqs.map(|seq| trade_json("ESZ6", seq)).collect();
        json!(body).to_string()
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let db_url = d.db_url();
    d.shutdown().await.unwrap();
    let acked = load.finish().await;
    let missing = stored_ticks(&db_url, &acked).await.missing;
    assert_eq!(
        missing,
        0,
        "{missing} acknowledged ticks lost of {}",
        acked.len()
    );
}
