//! Scenario `orders`: `wrk` POSTing unique orders to the daemon (group commit) and, in the
//! same run, to a naive baseline (axum + a pool of connections, one `INSERT` per request,
//! the same durability); then `siege` on `GET /api/market-data`.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use christmas_ingest::config::DaemonConfig;
use christmas_ingest::server::{self, AppState};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_postgres::{Client, NoTls};

use crate::{machine, report};

/// Flags of `christmas-bench orders`.
#[derive(Debug, clap::Args)]
pub struct OrdersArgs {
    /// PostgreSQL URL; the bench creates its own databases on that server.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    url: String,
    /// Redis for order events and the latest-tick cache (unset: none).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 400)]
    connections: usize,
    /// Seconds of the siege run.
    #[arg(long, default_value_t = 60)]
    siege_seconds: u64,
    /// The daemon's order writer connections.
    #[arg(long, default_value_t = 2)]
    order_connections: usize,
    /// Most orders the daemon commits in one transaction.
    #[arg(long, default_value_t = 1_024)]
    order_max_group: usize,
    /// Connections in the naive baseline's pool.
    #[arg(long, default_value_t = 16)]
    naive_pool: usize,
    /// 5 s runs.
    #[arg(long)]
    quick: bool,
}

/// What one wrk run measured.
#[derive(Debug, Default)]
struct WrkRun {
    created_per_s: f64,
    created: u64,
    other: u64,
    socket_errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
}

fn script() -> String {
    format!("{}/wrk/orders.lua", env!("CARGO_MANIFEST_DIR"))
}

fn wrk(addr: &str, args: &OrdersArgs) -> Result<WrkRun> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{}", args.connections),
            &format!("-d{}s", args.seconds),
        ])
        .args(["--timeout", "10s", "-s", &script()])
        .arg(format!("http://{addr}"))
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("CHRISTMAS "))
        .with_context(|| format!("no CHRISTMAS line in wrk's output: {text}"))?;
    let field = |name: &str| -> Result<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} missing in {line}"))
    };
    let secs = field("duration_us")? / 1e6;
    Ok(WrkRun {
        created_per_s: field("created")? / secs,
        created: field("created")? as u64,
        other: field("other")? as u64,
        socket_errors: field("socket_errors")? as u64,
        p50_ms: field("p50_us")? / 1e3,
        p99_ms: field("p99_us")? / 1e3,
        p999_ms: field("p999_us")? / 1e3,
    })
}

async fn connect(url: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// A new database on the server of `base`, migrated; its URL.
async fn fresh_database(base: &str, name: &str) -> Result<String> {
    let admin = connect(base).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let (prefix, query) = match base.split_once('?') {
        Some((u, q)) => (u, format!("?{q}")),
        None => (base, String::new()),
    };
    let (server, _) = prefix
        .rsplit_once('/')
        .context("database URL has no path")?;
    let url = format!("{server}/{name}{query}");
    christmas_core::schema::migrate_url(&url, &Default::default()).await?;
    Ok(url)
}

async fn count(url: &str, sql: &str) -> Result<i64> {
    Ok(connect(url).await?.query_one(sql, &[]).await?.get(0))
}

/// The baseline: each request takes a pooled connection and runs one INSERT.
#[derive(Clone)]
struct Naive {
    pool: Arc<Vec<tokio::sync::Mutex<Client>>>,
    next: Arc<AtomicUsize>,
}

async fn naive_order(State(n): State<Naive>, Json(o): Json<Value>) -> (StatusCode, Json<Value>) {
    let i = n.next.fetch_add(1, Ordering::Relaxed) % n.pool.len();
    let client = n.pool[i].lock().await;
    let s = |k: &str| o[k].as_str().unwrap_or_default().to_string();
    let side = if s("side") == "buy" { "B" } else { "S" };
    let r = client
        .query_opt(
            "INSERT INTO orders (account, client_order_id, symbol, side, type, quantity, limit_price, time_in_force)
             VALUES ('default', $1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (account, client_order_id) DO NOTHING RETURNING id",
            &[&s("client_order_id"), &s("symbol"), &side, &s("type"), &o["quantity"].as_f64().unwrap_or(1.0), &o["limit_price"].as_f64(), &s("time_in_force")],
        )
        .await;
    match r {
        Ok(Some(row)) => (
            StatusCode::CREATED,
            Json(serde_json::json!({"id": row.get::<_, i64>(0)})),
        ),
        Ok(None) => (StatusCode::OK, Json(Value::Null)),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": e.to_string()})),
        ),
    }
}

/// siege's JSON summary: (transactions/s, mean response s, longest s, failed).
fn siege(url: &str, args: &OrdersArgs) -> Result<(f64, f64, f64, f64)> {
    let out = Command::new("siege")
        .args(["-c100", &format!("-t{}S", args.siege_seconds), "-b", "-q"])
        .arg(url)
        .output()
        .context("running siege (apt-get install siege)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (Some(a), Some(b)) = (text.find('{'), text.rfind('}')) else {
        bail!("no JSON summary in siege's output: {text}");
    };
    let v: Value = serde_json::from_str(&text[a..=b]).context("siege's summary")?;
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok((
        f("transaction_rate"),
        f("response_time"),
        f("longest_transaction"),
        f("failed_transactions"),
    ))
}

pub fn run(mut args: OrdersArgs) -> Result<()> {
    if args.quick {
        args.seconds = args.seconds.min(5);
        args.siege_seconds = args.siege_seconds.min(5);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The daemon, as `christmas-ingest serve` runs it, with no rate limit in the way.
    let url = rt.block_on(fresh_database(&args.url, "christmas_bench_orders"))?;
    let config = DaemonConfig {
        database_url: Some(url.clone()),
        redis_url: args.redis_url.clone(),
        tcp_addr: String::new(),
        max_connections: 4_096,
        order_connections: args.order_connections,
        order_max_group: args.order_max_group,
        order_rate_per_second: 1e9,
        order_rate_burst: 1e9,
        ..DaemonConfig::default()
    };
    let (addr, stop, task) = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let state = AppState::start(config).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::run(listener, None, state, async move {
            let _ = stopped.await;
        }));
        anyhow::Ok((addr, stop, task))
    })?;
    println!(
        "christmas: wrk -t2 -c{} -d{}s POST /api/orders",
        args.connections, args.seconds
    );
    let ours = wrk(&addr, &args)?;
    println!("  {ours:?}");
    let stored = rt.block_on(count(&url, "SELECT count(*) FROM orders"))?;
    // Requests still in flight when wrk stops are committed but not counted by wrk.
    ensure!(
        (stored as u64) >= ours.created
            && (stored as u64) - ours.created <= args.connections as u64,
        "{stored} rows for {} created answers",
        ours.created
    );

    // siege on the latest-tick read, with a tick to read.
    rt.block_on(async {
        let body = r#"[{"kind":"trade","symbol":"ESZ6","time_ns":1795600000000000000,"price":6000.25,"volume":1}]"#;
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(format!("POST /api/ticks?ack=committed HTTP/1.1\r\nhost: b\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes()).await?;
        let mut sink = Vec::new();
        s.read_to_end(&mut sink).await?;
        anyhow::Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(200));
    println!(
        "siege -c100 -t{}S GET /api/market-data?symbol=ESZ6",
        args.siege_seconds
    );
    let (siege_rate, siege_mean, siege_longest, siege_failed) =
        siege(&format!("http://{addr}/api/market-data?symbol=ESZ6"), &args)?;
    let _ = stop.send(());
    rt.block_on(task)??;

    // The naive baseline on its own database.
    let naive_url = rt.block_on(fresh_database(&args.url, "christmas_bench_orders_naive"))?;
    let (naive_addr, naive_task) = rt.block_on(async {
        let mut pool = Vec::with_capacity(args.naive_pool);
        for _ in 0..args.naive_pool {
            pool.push(tokio::sync::Mutex::new(connect(&naive_url).await?));
        }
        let state = Naive {
            pool: Arc::new(pool),
            next: Arc::new(AtomicUsize::new(0)),
        };
        let app = Router::new()
            .route("/api/orders", post(naive_order))
            .with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let task = tokio::spawn(async move { axum::serve(listener, app).await });
        anyhow::Ok((addr, task))
    })?;
    println!(
        "naive: wrk -t2 -c{} -d{}s POST /api/orders",
        args.connections, args.seconds
    );
    let naive = wrk(&naive_addr, &args)?;
    println!("  {naive:?}");
    naive_task.abort();
    let naive_stored = rt.block_on(count(&naive_url, "SELECT count(*) FROM orders"))?;
    ensure!(
        (naive_stored as u64) >= naive.created
            && (naive_stored as u64) - naive.created <= args.connections as u64,
        "naive: {naive_stored} rows for {} created answers",
        naive.created
    );

    let settings = rt.block_on(async {
        let c = connect(&args.url).await?;
        let mut s = Vec::new();
        for name in ["fsync", "synchronous_commit"] {
            let v: String = c.query_one(&format!("SHOW {name}"), &[]).await?.get(0);
            s.push(format!("{name}={v}"));
        }
        anyhow::Ok(s.join(", "))
    })?;
    let stamp = machine::utc_now();
    let row = |name: &str, r: &WrkRun| {
        format!(
            "| {name} | {:.0} | {:.2} / {:.2} / {:.2} ms | {} | {} |",
            r.created_per_s, r.p50_ms, r.p99_ms, r.p999_ms, r.other, r.socket_errors
        )
    };
    let body = format!(
        "## orders — POST /api/orders under wrk, against a naive baseline\n\n\
         {stamp} · `./target/release/christmas-bench orders` · {machine} · PostgreSQL {settings}; \
         wrk, the daemon and PostgreSQL share the machine\n\n\
         `wrk -t2 -c{c} -d{s}s -s bench/wrk/orders.lua` (unique `client_order_id`s; every 201 is \
         counted in the table afterwards: {stored} rows for {created} answers, the rest in flight \
         when wrk stopped); the daemon with {oc} order writer connections.\n\n\
         | server | durable orders/s | p50 / p99 / p99.9 | non-201 | socket errors |\n\
         |---|---|---|---|---|\n{ours_row}\n{naive_row}\n\n\
         Group commit vs one `INSERT` per request (pool of {pool} connections, same durability): \
         **{ratio:.1}×** (target ≥ 5×). Targets for the daemon: ≥ 20,000 orders/s, p99 ≤ 20 ms.\n\n\
         `siege -c100 -t{ss}S -b` on `GET /api/market-data?symbol=ESZ6` ({source}): {siege_rate:.0} \
         requests/s, mean {mean:.2} ms, longest {longest:.0} ms, {siege_failed} failed.\n",
        machine = machine::describe(),
        c = args.connections,
        s = args.seconds,
        created = ours.created,
        oc = args.order_connections,
        ours_row = row("christmas-ingest (group commit)", &ours),
        naive_row = row("naive axum + INSERT per request", &naive),
        pool = args.naive_pool,
        ratio = ours.created_per_s / naive.created_per_s.max(1e-9),
        ss = args.siege_seconds,
        source = if args.redis_url.is_some() { "Redis cache" } else { "database" },
        mean = siege_mean * 1e3,
        longest = siege_longest * 1e3,
    );
    report::update_results("orders", &body)?;
    let path = report::write_json(
        "orders",
        &stamp,
        &format!(
            r#"{{"stamp":"{stamp}","christmas":{{"orders_per_s":{:.0},"p50_ms":{},"p99_ms":{},"p999_ms":{}}},"naive":{{"orders_per_s":{:.0},"p50_ms":{},"p99_ms":{},"p999_ms":{}}},"siege":{{"requests_per_s":{siege_rate:.0},"mean_ms":{:.2}}}}}"#,
            ours.created_per_s,
            ours.p50_ms,
            ours.p99_ms,
            ours.p999_ms,
            naive.created_per_s,
            naive.p50_ms,
            naive.p99_ms,
            naive.p999_ms,
            siege_mean * 1e3
        ),
    )?;
    println!("wrote bench/RESULTS.md and {}", path.display());
    Ok(())
}
