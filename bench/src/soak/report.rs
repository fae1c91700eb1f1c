//! Report: the soak's verdict (RSS flat, p99 stable, no errors), its per-minute table in
//! bench/RESULTS.md, and its JSON in bench/results/.

use std::process::ExitStatus;

use anyhow::Result;

use super::stages::{self, StageRow};
use super::stats::{
    correlation, median, slope, steps, Minute, Windows, P99_DRIFT_LIMIT_PCT, P99_SPREAD_LIMIT,
};
use super::{Ceiling, SoakArgs, RETAINED_DAYS};
use crate::{machine, report};

/// What the soak measured, for its report.
pub(super) struct SoakRun {
    pub(super) minutes: Vec<Minute>,
    /// Where the commit time went, by the daemon's stage histograms.
    pub(super) stages: Vec<StageRow>,
    pub(super) ceiling: Ceiling,
    pub(super) checkpointed: &'static str,
    /// Partitions truncated by the retention.
    pub(super) truncated: u64,
    /// Rows and batches committed, fan-out ticks published and messages sent over the soak.
    pub(super) rows: f64,
    pub(super) commits: f64,
    pub(super) published: f64,
    pub(super) messages: f64,
    pub(super) soak_secs: f64,
    /// Where the order events went, in words.
    pub(super) events: String,
    /// ERROR lines in the daemon's log.
    pub(super) log_errors: usize,
    /// The daemon's exit on SIGTERM.
    pub(super) exit: ExitStatus,
}

/// The figures the verdict reads.
struct Verdict {
    window: usize,
    base: f64,
    end: f64,
    growth: f64,
    peak: f64,
    peak_pct: f64,
    mib_per_hour: f64,
    anon_per_hour: f64,
    with_clock: f64,
    with_flight: f64,
    p99: Windows,
    p99_min: f64,
    p99_max: f64,
    errors: u64,
    rss_flat: bool,
    pass: bool,
}

fn judge(run: &SoakRun) -> Verdict {
    let (minutes, log_errors, status) = (&run.minutes, run.log_errors, run.exit);
    // Verdict: after the first minute (warm-up: pools, caches, histograms fill), the last
    // window's median RSS against the first window's.
    let medians: Vec<f64> = minutes[1..].iter().map(|m| m.rss_median_mib).collect();
    let window = (medians.len() / 2).clamp(1, 5);
    let rss = Windows::of(&medians, window);
    let (base, end, growth) = (rss.first, rss.last, rss.drift_pct());
    let peak = minutes[1..]
        .iter()
        .map(|m| m.rss_max_mib)
        .fold(0.0, f64::max);
    let peak_pct = (peak - base) / base * 100.0;
    let mib_per_hour = slope(&medians) * 60.0;
    let anon: Vec<f64> = minutes[1..].iter().map(|m| m.anon_median_mib).collect();
    let anon_per_hour = slope(&anon) * 60.0;
    // What the medians follow: the clock (a leak, or an allocator that keeps what it
    // freed) or the rows in flight (backlog that is freed when it drains).
    let clock = steps(medians.len());
    let in_flight: Vec<f64> = minutes[1..].iter().map(|m| m.in_flight_median).collect();
    let (with_clock, with_flight) = (
        correlation(&medians, &clock),
        correlation(&medians, &in_flight),
    );
    let p99s: Vec<f64> = minutes[1..].iter().map(|m| m.tick_p99_ms).collect();
    let p99 = Windows::of(&p99s, window);
    let (p99_min, p99_max) = (p99s.iter().copied().fold(f64::MAX, f64::min), p99.max);
    let errors = minutes.last().map_or(0, |m| m.errors);
    let rss_flat = growth <= 10.0;
    let verdict =
        rss_flat && p99.p99_stable() && errors == 0 && log_errors == 0 && status.success();
    Verdict {
        window,
        base,
        end,
        growth,
        peak,
        peak_pct,
        mib_per_hour,
        anon_per_hour,
        with_clock,
        with_flight,
        p99,
        p99_min,
        p99_max,
        errors,
        rss_flat,
        pass: verdict,
    }
}

/// The per-minute table of bench/RESULTS.md.
fn table(minutes: &[Minute]) -> String {
    let mut table = String::from(
        "| minute | ticks/s | tick commit p50 / p99 | orders/s | order p99 | daemon RSS median / max | RssAnon median | rows in flight | fan-out / order queue | threads | machine idle | Redis memory |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for m in minutes {
        table.push_str(&format!(
            "| {} | {:.0} | {:.1} / {:.1} ms | {:.0} | {:.1} ms | {:.0} / {:.0} MiB | {:.0} MiB | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} % | {:.0} MiB |\n",
            m.minute,
            m.ticks_per_s,
            m.tick_p50_ms,
            m.tick_p99_ms,
            m.orders_per_s,
            m.order_p99_ms,
            m.rss_median_mib,
            m.rss_max_mib,
            m.anon_median_mib,
            m.in_flight_median,
            m.fanout_queue_median,
            m.order_queue_median,
            m.threads_max,
            m.idle_pct,
            m.redis_mib
        ));
    }
    table
}

/// Writes the soak's section of bench/RESULTS.md and its JSON, and prints the section;
/// whether it passed.
// One format string holds the whole section as it reads in RESULTS.md.
pub(super) fn publish(args: &SoakArgs, run: &SoakRun) -> Result<bool> {
    let v = judge(run);
    let (window, base, end, growth, peak, peak_pct) =
        (v.window, v.base, v.end, v.growth, v.peak, v.peak_pct);
    let (mib_per_hour, anon_per_hour, with_clock, with_flight) =
        (v.mib_per_hour, v.anon_per_hour, v.with_clock, v.with_flight);
    let (p99, p99_min, p99_max, errors, rss_flat, verdict) =
        (v.p99, v.p99_min, v.p99_max, v.errors, v.rss_flat, v.pass);
    let minutes = &run.minutes;
    let (ceiling, rate) = (run.ceiling.ticks_per_s, run.ceiling.rate);
    let (cal_published, cal_dropped) = (run.ceiling.published, run.ceiling.dropped);
    let measured = (args.calibrate_seconds - args.calibrate_seconds / 3).max(1);
    let (checkpointed, truncated, events) = (run.checkpointed, run.truncated, &run.events);
    let (rows, commits, published, messages, soak_secs) = (
        run.rows,
        run.commits,
        run.published,
        run.messages,
        run.soak_secs,
    );
    let (log_errors, status) = (run.log_errors, run.exit);
    let stamp = machine::utc_now();
    let table = table(minutes);
    let stage_table = stages::table(&run.stages);
    let flags = format!(
        " --calibrate-seconds {}{}{}{}{}{}",
        args.calibrate_seconds,
        args.rate.map_or(String::new(), |r| format!(" --rate {r}")),
        match args.ack {
            super::SoakAck::Committed => String::new(),
            a => format!(" --ack {}", a.name()),
        },
        match args.via {
            super::SoakVia::Tcp => "",
            super::SoakVia::Http => " --via http",
        },
        args.dirty_background_bytes
            .map_or(String::new(), |b| format!(" --dirty-background-bytes {b}")),
        if args.order_worker {
            " --order-worker"
        } else {
            ""
        }
    );
    let machine = format!(
        "{}; kernel {}",
        machine::describe_with_servers(),
        machine::writeback()
    );
    let sent_as = match args.via {
        super::SoakVia::Tcp => format!("`ack={}` TCP frames of 1,000", args.ack.name()),
        super::SoakVia::Http => format!(
            "`POST /api/ticks?ack={}` requests of 1,000 NDJSON ticks over {} connections",
            args.ack.name(),
            super::load::HTTP_CONNECTIONS
        ),
    };
    // The CPU a tick took at the ceiling and in the soak (after its warm-up minute): "half
    // the ceiling" is half its rate, not half its CPU, when smaller batches and messages
    // cost more per tick.
    let after_warm_up = if minutes.len() > 1 {
        &minutes[1..]
    } else {
        &minutes[..]
    };
    let soak_cpu = super::CpuPerTick::at(
        median(
            &after_warm_up
                .iter()
                .map(|m| 1.0 - m.idle_pct / 100.0)
                .collect::<Vec<_>>(),
        ),
        median(
            &after_warm_up
                .iter()
                .map(|m| m.ticks_per_s)
                .collect::<Vec<_>>(),
        ),
    );
    let cal_cpu = run.ceiling.cpu;
    let cpu_text = format!(
        "The machine was {:.0} % busy during the ceiling ({:.1} µs of CPU per tick committed, \
         all cores, orders included) and {:.0} % in the soak after its first minute ({:.1} µs \
         per tick): {:.0} % of the ceiling's rate took {:.0} % of its CPU. At the ceiling a \
         commit carried {:.0} rows and a fan-out message {:.1} ticks.",
        cal_cpu.busy * 100.0,
        cal_cpu.us_per_tick,
        soak_cpu.busy * 100.0,
        soak_cpu.us_per_tick,
        rate as f64 / ceiling.max(1.0) * 100.0,
        soak_cpu.busy / cal_cpu.busy.max(1e-9) * 100.0,
        run.ceiling.rows_per_commit,
        run.ceiling.ticks_per_message,
    );
    let body = format!(
        "## soak — the daemon for {mins} minutes at {load:.0} % of its ceiling, with fan-out, spool and orders\n\n\
         {stamp} · `./target/release/christmas-bench soak --minutes {mins}{flags}` · {machine}\n\n\
         The release `christmas-ingest` with Redis fan-out (JSON, a publishing round at most every {rounds}), `spool.dir` (fsync per batch), \
         order events on and {events}, and a linger of {linger}. Ceiling measured first in the same run: **{ceiling:.0} ticks/s** over TCP \
         ({cal} s as fast as it takes them beside the soak's {opr} orders/s{cal_worker}, the \
         rate committed over the last {measured} s; \
         the fan-out published {cal_published:.0} of its ticks and dropped {cal_dropped:.0}; \
         {checkpointed}); soak at **{rate} ticks/s** in {sent_as} \
         (latency = {latency_from}) plus {opr} orders/s over HTTP. Retention as a \
         deployment runs it: each minute's ticks go to the next of {RETAINED_DAYS} daily partitions \
         in turn, and the partition a minute is about to fill is truncated first ({truncated} \
         truncations), so the store holds about {RETAINED_DAYS} minutes of ticks instead of \
         growing past this machine's disk. Over the soak the daemon committed {commits_per_s:.0} \
         batches/s of {rows_per_commit:.0} rows on average (trades and quotes, 2 shards each), and \
         its fan-out sent {messages_per_s:.0} messages/s of {ticks_per_message:.1} ticks. \
         {cpu_text}\n\n{table}\n\
         RSS is sampled once a second. Verdict: median RSS of minutes 2–{w1} {base:.0} MiB, of the \
         last {window} minutes {end:.0} MiB (**{growth:+.1} %**, limit +10 %); slope of the \
         per-minute medians {mib_per_hour:+.1} MiB/hour ({anon_per_hour:+.1} MiB/hour for RssAnon); \
         their correlation with the clock {with_clock:+.2} and with the rows in flight \
         {with_flight:+.2}; largest sample {peak:.0} MiB \
         ({peak_pct:+.1} %, memory in flight): RSS **{rss_word}**. Tick commit p99 between \
         {p99_min:.1} and {p99_max:.1} ms over minutes 2–{n}; the median of its per-minute values \
         {p99_base:.0} ms over minutes 2–{w1} and {p99_end:.0} ms over the last {window} \
         ({p99_drift:+.0} %, limit +{P99_DRIFT_LIMIT_PCT:.0} %); the worst minute \
         {p99_spread:.1}× the median of all ({p99_median:.0} ms; limit {P99_SPREAD_LIMIT:.0}×): \
         p99 **{p99_word}**. Errors: {errors} from the clients, {log_errors} ERROR lines in the daemon's log; daemon \
         exit on SIGTERM: {status}. **{pass}**.\n\n\
         Where a tick's commit time went over the soak, by the daemon's stage histograms \
         (`christmas_stage_seconds` and neighbours on `/metrics`, trades and quotes together; \
         quantiles interpolated within the exported buckets, means exact). Per tick \
         `ring + linger = batching`; per batch `spool + queue`, then `copy` and `commit`; a \
         frame's ack waits for its slowest shard.\n\n{stage_table}",
        mins = args.minutes,
        load = rate as f64 / ceiling.max(1.0) * 100.0,
        linger = setting_ms(
            "CHRISTMAS_LINGER_MS",
            christmas_ingest::config::DaemonConfig::default().linger_ms
        ),
        rounds = setting_ms(
            "CHRISTMAS_FANOUT_ROUND_INTERVAL_MS",
            christmas_ingest::config::DaemonConfig::default()
                .fanout
                .round_interval_ms,
        ),
        commits_per_s = commits / soak_secs,
        rows_per_commit = rows / commits.max(1.0),
        messages_per_s = messages / soak_secs,
        ticks_per_message = published / messages.max(1.0),
        latency_from = match args.via {
            super::SoakVia::Tcp => "frame sent → ack",
            super::SoakVia::Http => "request due by the schedule → answer",
        },
        cal = args.calibrate_seconds,
        cal_worker = if args.order_worker {
            " and its order worker"
        } else {
            ""
        },
        opr = args.orders_per_second,
        n = minutes.len(),
        w1 = window + 1,
        pass = if verdict { "pass" } else { "FAIL" },
        rss_word = if rss_flat { "flat" } else { "grew" },
        p99_word = if p99.p99_stable() { "stable" } else { "not stable" },
        p99_base = p99.first,
        p99_end = p99.last,
        p99_drift = p99.drift_pct(),
        p99_spread = p99.spread(),
        p99_median = p99.median,
    );
    report::update_results("soak", &body)?;
    let json = format!(
        r#"{{"stamp":"{stamp}","via":"{}","ack":"{}","writeback":"{}","ceiling_ticks_per_s":{ceiling:.0},"rate":{rate},"ceiling_fanout_dropped":{cal_dropped:.0},"rss_growth_pct":{growth:.2},"rss_peak_pct":{peak_pct:.2},"rss_mib_per_hour":{mib_per_hour:.2},"anon_mib_per_hour":{anon_per_hour:.2},"rss_corr_clock":{with_clock:.2},"rss_corr_in_flight":{with_flight:.2},"p99_min_ms":{p99_min:.2},"p99_max_ms":{p99_max:.2},"p99_drift_pct":{:.2},"p99_spread":{:.2},"p99_stable":{},"rows_per_commit":{:.0},"ticks_per_message":{:.1},"errors":{errors},"log_errors":{log_errors},"pass":{verdict}}}"#,
        match args.via {
            super::SoakVia::Tcp => "tcp",
            super::SoakVia::Http => "http",
        },
        args.ack.name(),
        machine::writeback(),
        p99.drift_pct(),
        p99.spread(),
        p99.p99_stable(),
        rows / commits.max(1.0),
        published / messages.max(1.0),
    );
    report::write_json("soak", &stamp, &json)?;
    println!("{body}");
    Ok(verdict)
}

/// A daemon setting in ms as the soak ran it: from `env` (the daemon inherits the bench's
/// environment) when set, else the default.
fn setting_ms(env: &str, default: u64) -> String {
    match std::env::var(env) {
        Ok(ms) => format!("{ms} ms (`{env}`)"),
        Err(_) => format!("{default} ms (its default)"),
    }
}
