//! The open-loop part of `orders`: POST /api/orders at fixed offered loads with latency from
//! each request's scheduled time (no coordinated omission), the highest rate the daemon and
//! the naive baseline each sustain, and Locust on the seed's mix. Its flags, table, chart,
//! headlines and JSON.

use anyhow::{ensure, Result};
use indicatif::ProgressBar;
use serde_json::{json, Value};

use crate::chart::{self, LineChart, Series};
use crate::locust::LocustRun;
use crate::openloop::{self, OpenLoopRun, Search, SUSTAINED_P99_MS};
use crate::run::{Headline, RunContext, Target};

/// The open-loop and Locust flags of `christmas-bench orders`.
#[derive(Debug, Clone, clap::Args)]
pub struct OpenArgs {
    /// Offered loads of the open-loop runs, orders/s (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000,20000,30000")]
    pub open_loads: Vec<f64>,
    /// Seconds of each open-loop run (and of each try of the maximum-rate search).
    #[arg(long, default_value_t = 10.0)]
    pub open_seconds: f64,
    /// Keep-alive connections of the open-loop generator.
    #[arg(long, default_value_t = 256)]
    pub open_connections: usize,
    /// Locust users (each a closed loop, 4 orders to 1 latest-tick read).
    #[arg(long, default_value_t = 100)]
    pub locust_users: usize,
    /// Seconds of the Locust run; 0 leaves Locust out.
    #[arg(long, default_value_t = 30)]
    pub locust_seconds: u64,
}

impl OpenArgs {
    /// `--quick`: 2 s runs, a 5 s Locust run.
    pub fn quick(&mut self) {
        self.open_seconds = self.open_seconds.min(2.0);
        self.locust_seconds = self.locust_seconds.min(5);
    }
}

/// One server's open-loop figures: the fixed loads, the highest sustained rate, every try.
#[derive(Debug, Clone, Default)]
pub struct OpenSeries {
    pub fixed: Vec<OpenLoopRun>,
    pub max: OpenLoopRun,
    pub tries: Vec<OpenLoopRun>,
}

/// Each run checked against the rows it added to `orders` at `url`: one per new-order
/// answer, at most one more per request lost (sent, not answered).
fn checked(
    rt: &tokio::runtime::Runtime,
    url: &str,
    what: &str,
    f: impl FnOnce() -> Result<OpenLoopRun>,
) -> Result<OpenLoopRun> {
    let before = rt.block_on(crate::orders::stored_settled(url))?;
    let run = f()?;
    let added = rt.block_on(crate::orders::stored_settled(url))? - before;
    ensure!(
        added >= run.created && added - run.created <= run.errors,
        "{what}: {added} rows for {} created answers at {:.0}/s offered",
        run.created,
        run.offered_per_s
    );
    Ok(run)
}

fn say(bar: &ProgressBar, what: &str, r: &OpenLoopRun) {
    crate::run::say(
        bar,
        format!(
            "{what}, open loop at {:.0}/s: {:.0}/s answered, p99 {:.2} ms{}",
            r.offered_per_s,
            r.created_per_s,
            r.p99_ms,
            if r.sustained() {
                ""
            } else {
                " (not sustained)"
            }
        ),
    );
}

/// The daemon at `addr` (database `url`): each fixed load, then the maximum-rate search
/// from above the highest fixed load it sustained.
pub fn measure(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    url: &str,
    args: &OpenArgs,
    what: &str,
    fixed_loads: bool,
    bar: &ProgressBar,
) -> Result<OpenSeries> {
    let mut fixed = Vec::new();
    if fixed_loads {
        for &rate in &args.open_loads {
            bar.set_message(format!("{what}: open loop at {rate:.0} orders/s"));
            let r = checked(rt, url, what, || {
                openloop::orders(addr, rate, args.open_seconds, args.open_connections)
            })?;
            say(bar, what, &r);
            fixed.push(r);
        }
    }
    let start = fixed
        .iter()
        .filter(|r| r.sustained())
        .map(|r| r.offered_per_s * 1.25)
        .fold(if fixed_loads { 5_000.0 } else { 2_000.0 }, f64::max);
    bar.set_message(format!("{what}: highest sustained rate, from {start:.0}/s"));
    let search = Search {
        start,
        seconds: args.open_seconds,
        connections: args.open_connections,
        cap: 400_000.0,
    };
    // The search's tries are checked all together: their answers against the rows added
    // over the whole search (a try that fell behind may still commit during the next).
    let before = rt.block_on(crate::orders::stored_settled(url))?;
    let (max, tries) = openloop::max_rate(addr, search, |r| say(bar, what, r))?;
    let added = rt.block_on(crate::orders::stored_settled(url))? - before;
    let created: u64 = tries.iter().map(|r| r.created).sum();
    let lost: u64 = tries.iter().map(|r| r.errors).sum();
    ensure!(
        added >= created && added - created <= lost,
        "{what}: {added} rows for {created} created answers over the maximum-rate search"
    );
    Ok(OpenSeries { fixed, max, tries })
}

fn run_json(r: &OpenLoopRun) -> Value {
    json!({"offered_per_s": r.offered_per_s, "answered_per_s": r.created_per_s.round(),
           "created": r.created, "scheduled": r.scheduled, "other": r.other, "errors": r.errors,
           "p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "p999_ms": r.p999_ms, "max_ms": r.max_ms,
           "sustained": r.sustained()})
}

/// The JSON of the open-loop part and of Locust.
pub fn json(ours: &OpenSeries, naive: &OpenSeries, locust: Option<&LocustRun>) -> Value {
    let series = |s: &OpenSeries| {
        json!({"fixed": s.fixed.iter().map(run_json).collect::<Vec<_>>(),
               "max_sustained": run_json(&s.max),
               "tries": s.tries.iter().map(run_json).collect::<Vec<_>>()})
    };
    json!({
        "open_loop": {"christmas": series(ours), "naive": series(naive),
                      "sustained_p99_ms": SUSTAINED_P99_MS},
        "locust": locust.map(|l| json!({
            "users": l.users, "seconds": l.seconds,
            "requests_per_s": l.total.per_s, "failures": l.total.failures,
            "rows": l.rows.iter().map(|r| json!({"name": r.name, "requests": r.requests,
                "failures": r.failures, "per_s": r.per_s, "p50_ms": r.p50_ms,
                "p99_ms": r.p99_ms})).collect::<Vec<_>>(),
        })),
    })
}

/// The RESULTS.md text of the open-loop part and of Locust.
pub fn markdown(
    args: &OpenArgs,
    ours: &OpenSeries,
    naive: &OpenSeries,
    locust: Option<&LocustRun>,
) -> String {
    let row = |r: &OpenLoopRun| {
        format!(
            "| {:.0} | {:.0} | {:.2} / {:.2} / {:.2} ms | {:.1} ms | {} | {} |",
            r.offered_per_s,
            r.created_per_s,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            r.other + r.errors,
            if r.sustained() { "yes" } else { "no" }
        )
    };
    let rows: Vec<String> = ours.fixed.iter().map(row).collect();
    let ratio = ours.max.offered_per_s / naive.max.offered_per_s.max(1e-9);
    let mut text = format!(
        "### Open loop: latency at a fixed offered load\n\n\
         The bench's own generator (bench/src/openloop.rs): POST /api/orders at a fixed rate \
         over {c} keep-alive connections, each request with a scheduled send time and its \
         latency counted from that time, so a server that falls behind is charged for the \
         requests queued behind it (no coordinated omission). {s} s per load; a load is \
         sustained when every request is answered below 400, at ≥ 95 % of the offered rate, \
         with p99 ≤ {sus:.0} ms.\n\n\
         | offered orders/s | answered orders/s | p50 / p99 / p99.9 | max | failed | sustained |\n\
         |---|---|---|---|---|---|\n{rows}\n\n\
         Highest sustained rate (×1.25 steps, then two halvings of the gap): christmas-ingest \
         **{ours_max:.0} orders/s** (p99 {ours_p99:.2} ms), the naive baseline \
         {naive_max:.0} orders/s (p99 {naive_p99:.2} ms): **{ratio:.2}×** (target ≥ 5×). \
         Target: p99 ≤ 10 ms at 20,000 orders/s offered.\n\n",
        c = args.open_connections,
        s = args.open_seconds,
        sus = SUSTAINED_P99_MS,
        rows = rows.join("\n"),
        ours_max = ours.max.offered_per_s,
        ours_p99 = ours.max.p99_ms,
        naive_max = naive.max.offered_per_s,
        naive_p99 = naive.max.p99_ms,
    );
    if let Some(l) = locust {
        let rows: Vec<String> = l
            .rows
            .iter()
            .chain([&l.total])
            .map(|r| {
                format!(
                    "| {} | {} | {} | {:.0} | {:.0} / {:.0} ms |",
                    r.name, r.requests, r.failures, r.per_s, r.p50_ms, r.p99_ms
                )
            })
            .collect();
        text.push_str(&format!(
            "### Locust: the seed's mix\n\n\
             `locust -f bench/locust/locustfile.py --headless -u {u} -r {u} -t {t}s` \
             (closed-loop users, 4 orders to 1 latest-tick read; Python clients on the same 2 \
             cores, so this measures Locust as much as the daemon).\n\n\
             | request | requests | failures | per second | p50 / p99 |\n|---|---|---|---|---|\n\
             {rows}\n\n",
            u = l.users,
            t = l.seconds,
            rows = rows.join("\n"),
        ));
    }
    text
}

/// p50, p99 and p99.9 against the offered load, one line each.
pub fn chart(ours: &OpenSeries) -> String {
    let line = |name: &str, f: fn(&OpenLoopRun) -> f64| Series {
        name: name.into(),
        points: ours.fixed.iter().map(|r| (r.offered_per_s, f(r))).collect(),
        dashed: false,
    };
    chart::line_chart(&LineChart {
        title: "orders: latency at a fixed offered load (open loop)".into(),
        x_label: "offered orders/s".into(),
        y_label: "milliseconds from the scheduled send".into(),
        x_log: false,
        x_ticks: Some(ours.fixed.iter().map(|r| r.offered_per_s).collect()),
        y_format: chart::si,
        y_from_zero: true,
        series: vec![
            line("p50", |r| r.p50_ms),
            line("p99", |r| r.p99_ms),
            line("p99.9", |r| r.p999_ms),
        ],
    })
}

/// The summary rows: p99 at 20 k offered (target ≤ 10 ms), the highest sustained rate
/// against the naive baseline's (target ≥ 5×), and Locust's requests/s (reported).
pub fn headlines(
    ours: &OpenSeries,
    naive: &OpenSeries,
    locust: Option<&LocustRun>,
) -> Vec<Headline> {
    let mut h = Vec::new();
    if let Some(r) = ours.fixed.iter().find(|r| r.offered_per_s == 20_000.0) {
        h.push(
            Headline::alone(
                "POST /api/orders p99 at 20,000 orders/s offered (open loop, from the schedule)",
                r.p99_ms,
                "ms",
            )
            .target(Target::AtMost(10.0)),
        );
    }
    h.push(
        Headline::against(
            "highest sustained orders/s (open loop)",
            ours.max.offered_per_s,
            "orders/s",
            "naive axum + one INSERT per request at its own highest sustained rate, peer",
            naive.max.offered_per_s,
        )
        .target(Target::RatioAtLeast(5.0)),
    );
    if let Some(l) = locust {
        h.push(Headline::alone(
            format!(
                "Locust requests/s, orders + market data ({} users)",
                l.users
            ),
            l.total.per_s,
            "requests/s",
        ));
    }
    h
}

/// The chart's file, written beside the others.
pub fn write_chart(ctx: &RunContext, ours: &OpenSeries) -> Result<(String, String)> {
    Ok((
        "open-loop latency".to_string(),
        ctx.write_chart("orders-open-loop", &chart(ours))?,
    ))
}
