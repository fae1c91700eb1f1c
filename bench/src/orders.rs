//! Scenario `orders`: `wrk -c400` POSTing unique orders to the daemon (group commit) and, in
//! the same run, to a naive baseline (axum + a pool of connections, one `INSERT` per request,
//! the same durability), reported as the seed's scenario; the open-loop generator at fixed
//! offered loads and the highest rate each sustains ([`crate::orders_open`]), which the
//! targets judge; then `siege` on `GET /api/market-data` and Locust on the seed's mix.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use christmas_ingest::config::{DaemonConfig, HttpSettings, OrderSettings, TcpSettings};
use christmas_ingest::server;
use christmas_tests::{HttpClient, InProcessDaemon};
use indicatif::ProgressBar;
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::args::CommonArgs;
use crate::chart::{self, Bar};
use crate::loadgen::{self, SiegeRun, WrkRun};
use crate::locust::{self as locust_run, LocustRun};
use crate::orders_open::{self, OpenArgs, OpenSeries};
use crate::pg::{self, connect};
use crate::run::{runtime, Headline, Outcome, RunContext};
use crate::{machine, services};

/// Flags of `christmas-bench orders`.
#[derive(Debug, Clone, clap::Args)]
pub struct OrdersArgs {
    /// Databases, Redis, repeats, `--quick`.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 400)]
    pub connections: usize,
    /// Seconds of the siege run.
    #[arg(long, default_value_t = 60)]
    pub siege_seconds: u64,
    /// The daemon's order writer connections.
    #[arg(long, default_value_t = 2)]
    pub order_connections: usize,
    /// Most orders the daemon commits in one transaction.
    #[arg(long, default_value_t = 1_024)]
    pub order_max_group: usize,
    /// Connections in the naive baseline's pool.
    #[arg(long, default_value_t = 16)]
    pub naive_pool: usize,
    /// Seconds of the unrecorded wrk warm-up run before each server's measured runs.
    #[arg(long, default_value_t = 5)]
    pub warmup_seconds: u64,
    /// Set the kernel's `vm.dirty_background_bytes` to this for the scenario (needs root;
    /// put back afterwards). On one disk, the default bursts of writeback every 5 s stall
    /// PostgreSQL's WAL fsyncs: see docs/operations.md.
    #[arg(long)]
    pub dirty_background_bytes: Option<u64>,
    /// RabbitMQ for the order-events part (`scripts/services.sh env` prints it); without
    /// it that part runs over Redis alone.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// Orders submitted through the desk per events backend (events on, one worker);
    /// default 20,000, with `--quick` 2,000.
    #[arg(long)]
    pub event_orders: Option<usize>,
    /// The open-loop runs and Locust.
    #[command(flatten)]
    pub open: OpenArgs,
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

/// Rows in `orders` once the requests still in flight when wrk stopped have committed: the
/// count after it stopped changing for 300 ms (at most 10 s), so they are not counted in
/// the next run.
pub(crate) async fn stored_settled(url: &str) -> Result<u64> {
    let client = connect(url).await?;
    let mut last = pg::count(&client, "orders").await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = pg::count(&client, "orders").await?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last as u64)
}

/// Every answer below 400 is a row; the rows beyond are the requests in flight when wrk stopped.
fn check_stored(what: &str, stored: u64, run: &WrkRun, connections: usize) -> Result<()> {
    ensure!(
        stored >= run.created && stored - run.created <= connections as u64,
        "{what}: {stored} rows for {} created answers",
        run.created
    );
    Ok(())
}

/// How to load one server with wrk.
#[derive(Debug, Clone, Copy)]
pub struct WrkPlan {
    pub connections: usize,
    pub seconds: u64,
    pub warmup_seconds: u64,
    pub repeats: usize,
}

/// A wrk warm-up run (not recorded), then `plan.repeats` measured runs against `addr`, each
/// checked against the rows the run added to `orders` at `url`; the run with the median
/// orders/s, the rows its run added, and every measured run in order.
pub fn wrk_series(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    url: &str,
    plan: WrkPlan,
    what: &str,
    bar: &indicatif::ProgressBar,
) -> Result<(WrkRun, u64, Vec<WrkRun>)> {
    if plan.warmup_seconds > 0 {
        bar.set_message(format!("{what}: wrk warm-up, {} s", plan.warmup_seconds));
        loadgen::wrk_orders(addr, plan.connections, plan.warmup_seconds)?;
    }
    let mut runs = Vec::new();
    for r in 0..plan.repeats.max(1) {
        bar.set_message(format!(
            "{what}: wrk -t2 -c{} -d{}s POST /api/orders, run {}/{}",
            plan.connections,
            plan.seconds,
            r + 1,
            plan.repeats
        ));
        let before = rt.block_on(stored_settled(url))?;
        let run = loadgen::wrk_orders(addr, plan.connections, plan.seconds)?;
        let added = rt.block_on(stored_settled(url))? - before;
        check_stored(what, added, &run, plan.connections)?;
        crate::run::say(
            bar,
            format!(
                "{what}, run {}: {:.0} orders/s, p99 {:.1} ms",
                r + 1,
                run.created_per_s,
                run.p99_ms
            ),
        );
        runs.push((run, added));
    }
    let all = runs.iter().map(|(r, _)| r.clone()).collect();
    runs.sort_by(|a, b| a.0.created_per_s.total_cmp(&b.0.created_per_s));
    let mid = runs.len() / 2;
    let (run, added) = runs.swap_remove(mid);
    Ok((run, added, all))
}

/// "30936/s at p99 23.0 ms, …": each run's orders/s and p99.
fn runs_text(runs: &[WrkRun]) -> String {
    runs.iter()
        .map(|r| format!("{:.0}/s at p99 {:.1} ms", r.created_per_s, r.p99_ms))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Each run's orders/s and latency, for the json.
fn runs_json(runs: &[WrkRun]) -> Vec<Value> {
    runs.iter()
        .map(|r| {
            json!({"orders_per_s": r.created_per_s.round(), "p50_ms": r.p50_ms,
                   "p99_ms": r.p99_ms, "p999_ms": r.p999_ms})
        })
        .collect()
}

/// The daemon's config for the order scenarios: no rate limit in the way.
pub fn daemon_config(
    url: &str,
    redis_url: Option<String>,
    order_connections: usize,
    order_max_group: usize,
) -> DaemonConfig {
    DaemonConfig {
        database_url: Some(url.to_string().into()),
        redis_url: redis_url.map(Into::into),
        tcp: TcpSettings {
            addr: String::new(),
            ..TcpSettings::default()
        },
        http: HttpSettings {
            max_connections: 4_096,
            // Every load-generating connection comes from loopback.
            max_connections_per_address: 0,
            ..HttpSettings::default()
        },
        orders: OrderSettings {
            connections: order_connections,
            max_group: order_max_group,
            rate_per_second: 1e9,
            rate_burst: 1e9,
            ..OrderSettings::default()
        },
        ..DaemonConfig::default()
    }
}

pub fn run(ctx: &RunContext, args: OrdersArgs) -> Result<Outcome> {
    services::tool("wrk", "wrk")?;
    services::tool("siege", "siege")?;
    let (args, plan) = plan(ctx, args);
    let _writeback = args
        .dirty_background_bytes
        .map(machine::Writeback::set)
        .transpose()?;
    let bar = ctx.steps("orders", 5);
    let rt = runtime()?;
    let daemon = measure_daemon(&rt, &args, plan, &bar)?;
    let (naive, naive_open) = measure_naive(&rt, &args, plan, daemon.backlog, &bar)?;
    bar.set_message("order events: each backend");
    let mut backends = Vec::new();
    if let Some(r) = &args.common.services.redis_url {
        backends.push(("redis", services::bench_redis(r)));
    }
    if let Some(a) = &args.amqp_url {
        backends.push(("amqp", a.clone()));
    }
    let events = rt.block_on(crate::order_events::measure(
        &args.common.services.url,
        &backends,
        args.event_orders.unwrap_or(20_000),
    ))?;
    bar.inc(1);
    let ratio = daemon.wrk.run.created_per_s / naive.run.created_per_s.max(1e-9);
    bar.finish_with_message(format!(
        "{:.0} orders/s, {ratio:.1}× the naive baseline",
        daemon.wrk.run.created_per_s
    ));
    report(ctx, &args, &rt, &daemon, (&naive, &naive_open), &events)
}

/// The order-events part's table rows and json.
fn events_report(events: &[crate::order_events::EventsRun]) -> (String, Vec<Value>) {
    let rows: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "| {} | {} | {:.0} | {} | {:.2} / {:.2} / {:.2} ms |",
                e.backend, e.orders, e.orders_per_s, e.delivered, e.p50_ms, e.p99_ms, e.max_ms
            )
        })
        .collect();
    let json = events
        .iter()
        .map(|e| {
            json!({"backend": e.backend, "orders": e.orders, "orders_per_s": e.orders_per_s.round(),
                   "delivered": e.delivered, "p50_ms": e.p50_ms, "p99_ms": e.p99_ms, "max_ms": e.max_ms})
        })
        .collect();
    (rows.join("\n"), json)
}

/// Plan: the flags settled for this run and the wrk series both servers get.
fn plan(ctx: &RunContext, mut args: OrdersArgs) -> (OrdersArgs, WrkPlan) {
    if args.common.plan(ctx.quick, 3) {
        args.seconds = args.seconds.min(5);
        args.siege_seconds = args.siege_seconds.min(5);
        args.warmup_seconds = args.warmup_seconds.min(1);
        args.event_orders = args.event_orders.or(Some(2_000));
        args.open.quick();
    }
    let plan = WrkPlan {
        connections: args.connections,
        seconds: args.seconds,
        warmup_seconds: args.warmup_seconds,
        repeats: args.common.repeats(),
    };
    (args, plan)
}

/// A wrk series against one server: the median run, the rows it stored, every run.
struct WrkSeries {
    run: WrkRun,
    stored: u64,
    runs: Vec<WrkRun>,
}

/// What the daemon did: the wrk series, siege on the latest-tick read, and the listen
/// backlog the baseline gets too.
struct DaemonOrders {
    wrk: WrkSeries,
    open: OpenSeries,
    siege: SiegeRun,
    locust: Option<LocustRun>,
    /// Why Locust did not run, when it was asked to.
    locust_note: Option<String>,
    backlog: usize,
}

/// Run, the daemon: as `christmas-ingest serve` runs it, in this process, with no rate
/// limit in the way; wrk on POST /api/orders, then siege on the latest tick.
fn measure_daemon(
    rt: &tokio::runtime::Runtime,
    args: &OrdersArgs,
    plan: WrkPlan,
    bar: &ProgressBar,
) -> Result<DaemonOrders> {
    bar.set_message("fresh database christmas_bench_orders; daemon start");
    let url = rt.block_on(pg::fresh_database(
        &args.common.services.url,
        "christmas_bench_orders",
    ))?;
    let redis = args
        .common
        .services
        .redis_url
        .as_deref()
        .map(crate::services::bench_redis);
    let config = daemon_config(
        &url,
        redis.clone(),
        args.order_connections,
        args.order_max_group,
    );
    let backlog = config.http.max_connections;
    let daemon = rt.block_on(InProcessDaemon::start(config, false))?;
    let addr = daemon.http().to_string();
    bar.inc(1);
    let (run, stored, runs) = wrk_series(rt, &addr, &url, plan, "christmas-ingest", bar)?;
    let open = orders_open::measure(rt, &addr, &url, &args.open, "christmas-ingest", true, bar)?;
    // wrk and the open loop count answers below 400; the desk says what they were: every
    // one a new order.
    let desk = daemon.state().orders.metrics();
    ensure!(
        desk.existing == 0 && desk.conflicts == 0 && desk.failed == 0,
        "the daemon answered {} repeats, {} conflicts and {} failures to unique orders",
        desk.existing,
        desk.conflicts,
        desk.failed
    );
    bar.inc(1);

    // siege on the latest-tick read, with a tick to read.
    let body = r#"[{"kind":"trade","symbol":"ESZ6","time_ns":1795600000000000000,"price":6000.25,"volume":1}]"#;
    rt.block_on(HttpClient::new(&addr).request("POST", "/api/ticks?ack=committed", &[], body))?;
    std::thread::sleep(Duration::from_millis(200));
    bar.set_message(format!(
        "siege -c100 -t{}S GET /api/market-data?symbol=ESZ6",
        args.siege_seconds
    ));
    let siege = loadgen::siege(
        &format!("http://{addr}/api/market-data?symbol=ESZ6"),
        100,
        args.siege_seconds,
    )?;
    // Locust is reported, not judged: a Locust that cannot be installed or run is named in
    // the section, and the figures the daemon was measured by stand.
    let (mut locust, mut locust_note) = (None, None);
    if args.open.locust_seconds > 0 {
        bar.set_message(format!(
            "locust -u {} -t {}s: orders + market data",
            args.open.locust_users, args.open.locust_seconds
        ));
        match locust_run::run(&addr, args.open.locust_users, args.open.locust_seconds) {
            Ok(l) => locust = Some(l),
            Err(e) => {
                let why = format!("{e:#}")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                crate::run::say(bar, format!("locust not run: {why}"));
                locust_note = Some(why);
            }
        }
    }
    rt.block_on(daemon.stop())?;
    if let Some(r) = &redis {
        crate::services::clear_bench_redis(r)?;
    }
    bar.inc(1);
    Ok(DaemonOrders {
        wrk: WrkSeries { run, stored, runs },
        open,
        siege,
        locust,
        locust_note,
        backlog,
    })
}

/// Run, the naive baseline: axum with one `INSERT` per request on its own database, with
/// the daemon's listen backlog so both see the same connection storm.
fn measure_naive(
    rt: &tokio::runtime::Runtime,
    args: &OrdersArgs,
    plan: WrkPlan,
    backlog: usize,
    bar: &ProgressBar,
) -> Result<(WrkSeries, OpenSeries)> {
    let naive_url = rt.block_on(pg::fresh_database(
        &args.common.services.url,
        "christmas_bench_orders_naive",
    ))?;
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
        let listener = server::listen("127.0.0.1:0", backlog).await?;
        let addr = listener.local_addr()?.to_string();
        let task = tokio::spawn(async move { axum::serve(listener, app).await });
        anyhow::Ok((addr, task))
    })?;
    let (run, stored, runs) = wrk_series(rt, &naive_addr, &naive_url, plan, "naive baseline", bar)?;
    let open = orders_open::measure(
        rt,
        &naive_addr,
        &naive_url,
        &args.open,
        "naive baseline",
        false,
        bar,
    )?;
    naive_task.abort();
    bar.inc(1);
    Ok((WrkSeries { run, stored, runs }, open))
}

/// Report: the chart, the RESULTS.md section and the JSON.
// Long: one RESULTS.md section and its JSON written top to bottom.
fn report(
    ctx: &RunContext,
    args: &OrdersArgs,
    rt: &tokio::runtime::Runtime,
    daemon: &DaemonOrders,
    (naive_series, naive_open): (&WrkSeries, &OpenSeries),
    events: &[crate::order_events::EventsRun],
) -> Result<Outcome> {
    let (events_rows, events_json) = events_report(events);
    let writeback = machine::writeback();
    let (ours, stored_ours, our_runs) = (&daemon.wrk.run, daemon.wrk.stored, &daemon.wrk.runs);
    let (naive, naive_stored, naive_runs) =
        (&naive_series.run, naive_series.stored, &naive_series.runs);
    let sg = &daemon.siege;
    let ratio = ours.created_per_s / naive.created_per_s.max(1e-9);
    let settings = rt.block_on(async {
        pg::settings(
            &connect(&args.common.services.url).await?,
            &["fsync", "synchronous_commit"],
        )
        .await
    })?;
    let row = |name: &str, r: &WrkRun| {
        format!(
            "| {name} | {:.0} | {:.2} / {:.2} / {:.2} ms | {} | {} |",
            r.created_per_s, r.p50_ms, r.p99_ms, r.p999_ms, r.other, r.socket_errors
        )
    };
    let mut charts = vec![(
        "orders/s".to_string(),
        ctx.write_chart(
            "orders",
            &chart::bar_chart(
                &format!("orders: durable orders/s under wrk -c{}", args.connections),
                "orders/s",
                &[
                    Bar {
                        label: "christmas-ingest".into(),
                        value: ours.created_per_s,
                        color: 0,
                    },
                    Bar {
                        label: "naive INSERT/request".into(),
                        value: naive.created_per_s,
                        // The legend's second entry.
                        color: 1,
                    },
                ],
                &["christmas-ingest", "naive baseline"],
            ),
        )?,
    )];
    charts.push(orders_open::write_chart(ctx, &daemon.open)?);
    let mut open_text =
        orders_open::markdown(&args.open, &daemon.open, naive_open, daemon.locust.as_ref());
    if let Some(why) = &daemon.locust_note {
        open_text.push_str(&format!("Locust: not run ({why}).\n\n"));
    }
    let body = format!(
        "## orders — POST /api/orders open-loop and under wrk, against a naive baseline\n\n\
         {stamp} · `{cmd}` · {machine} · PostgreSQL {settings}; kernel {writeback}; \
         wrk, the daemon and PostgreSQL share the machine\n\n\
         `wrk -t2 -c{c} -d{s}s -s bench/wrk/orders.lua` (unique `client_order_id`s; every \
         answer below 400 is counted in the table afterwards: {stored_ours} rows for {created} answers, \
         the rest in flight when wrk stopped; the daemon answered no repeats, conflicts or \
         failures); a {ws} s wrk warm-up first, then the run with the median orders/s of \
         {repeats}; the daemon with {oc} order writer connections.\n\n\
         | server | durable orders/s | p50 / p99 / p99.9 | answers ≥ 400 | socket errors |\n\
         |---|---|---|---|---|\n{ours_row}\n{naive_row}\n\n\
         Every measured run, in order: christmas-ingest {our_runs}; naive {naive_runs}.\n\n\
         Group commit vs one `INSERT` per request (pool of {pool} connections, same durability): \
         **{ratio:.2}×**. wrk's {c} closed-loop connections are the seed's scenario, reported, \
         not judged: with them, mean latency is {c} ÷ throughput, so p99 follows the machine's \
         speed; the open loop below is what the targets judge.\n\n{open_text}\
         `siege -c100 -t{ss}S -b` on `GET /api/market-data?symbol=ESZ6` ({source}): {siege_rate:.0} \
         requests/s, mean {mean:.2} ms, longest {longest:.0} ms, {failed} failed.\n\n\
         Order events, each backend in turn: {event_orders} orders submitted through the desk \
         by {submitters} tasks with events on, one worker taking batches of 256; latency from \
         the submit's answer to the worker taking the event.\n\n\
         | events backend | orders | orders/s | events delivered | latency p50 / p99 / max |\n\
         |---|---|---|---|---|\n{events_rows}\n\n",
        event_orders = args.event_orders.unwrap_or(20_000),
        submitters = crate::order_events::SUBMITTERS,
        stamp = ctx.stamp,
        cmd = ctx.command,
        machine = machine::describe(),
        c = args.connections,
        s = args.seconds,
        created = ours.created,
        ws = args.warmup_seconds,
        repeats = args.common.repeats(),
        oc = args.order_connections,
        ours_row = row("christmas-ingest (group commit)", ours),
        our_runs = runs_text(our_runs),
        naive_runs = runs_text(naive_runs),
        naive_row = row("naive axum + INSERT per request", naive),
        pool = args.naive_pool,
        ss = args.siege_seconds,
        source = if args.common.services.redis_url.is_some() { "Redis cache, database 9" } else { "database" },
        siege_rate = sg.rate,
        mean = sg.mean_s * 1e3,
        longest = sg.longest_s * 1e3,
        failed = sg.failed,
    );
    let outcome = Outcome {
        scenario: "orders",
        headlines: vec![
            Headline::against(
                format!(
                    "durable orders/s, POST /api/orders (group commit), wrk -c{}",
                    args.connections
                ),
                ours.created_per_s,
                "orders/s",
                format!(
                    "naive axum + one INSERT per request (pool of {}), peer",
                    args.naive_pool
                ),
                naive.created_per_s,
            ),
            Headline::alone(
                format!("POST /api/orders p99 under wrk -c{}", args.connections),
                ours.p99_ms,
                "ms",
            ),
        ]
        .into_iter()
        .chain(orders_open::headlines(
            &daemon.open,
            naive_open,
            daemon.locust.as_ref(),
        ))
        .collect(),
        json: json!({
            "scenario": "orders",
            "date": ctx.stamp,
            "command": ctx.command,
            "machine": machine::describe(),
            "postgres": settings,
            "kernel_writeback": writeback,
            "wrk": {"connections": args.connections, "seconds": args.seconds},
            "christmas": {"orders_per_s": ours.created_per_s.round(), "p50_ms": ours.p50_ms,
                          "p99_ms": ours.p99_ms, "p999_ms": ours.p999_ms, "stored": stored_ours,
                          "runs": runs_json(our_runs)},
            "naive": {"orders_per_s": naive.created_per_s.round(), "p50_ms": naive.p50_ms,
                      "p99_ms": naive.p99_ms, "p999_ms": naive.p999_ms, "stored": naive_stored,
                      "runs": runs_json(naive_runs)},
            "ratio": ratio,
            "order_events": events_json,
            "siege": {"requests_per_s": sg.rate.round(), "mean_ms": sg.mean_s * 1e3,
                      "longest_ms": sg.longest_s * 1e3, "failed": sg.failed},
            "open": orders_open::json(&daemon.open, naive_open, daemon.locust.as_ref()),
        }),
        charts,
        markdown: String::new(),
    };
    outcome.publish(body)
}
