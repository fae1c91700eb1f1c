//! The `ingest` report: the sweep's table, the peers, latency and memory in bench/RESULTS.md,
//! the JSON, and the charts.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;

use crate::chart::{self, LineChart, Series};
use crate::market::BenchRecord;
use crate::run::{median, runs, Headline, Outcome, RunContext, Target};

use super::{IngestArgs, IngestRun, PeerRun, ShardPoint};

/// The headlines, charts, RESULTS.md section and JSON of an `ingest` run.
// Long: one RESULTS.md section written top to bottom (charts and sweep table are apart).
pub(super) fn report_ingest<R: BenchRecord>(
    ctx: &RunContext,
    args: &IngestArgs,
    run: &IngestRun,
) -> Result<Outcome> {
    let IngestRun {
        settings,
        points,
        peer_runs,
        peer_notes,
        rate,
        lat,
        rss,
    } = run;
    let (hs, hb) = (args.headline_shards, args.headline_batch_rows);
    let med = |v: &Vec<f64>| median(v.clone());
    let ceiling = med(&points[&hs].ceiling);
    let engine = med(&points[&hs].engine[&hb]);
    let ratio = engine / ceiling;
    let l = christmas_core::Summary::of(&lat.push_to_commit_us);
    let c = christmas_core::Summary::of(&lat.batch_commit_us);
    let br = christmas_core::Summary::of(&lat.batch_rows);
    let table = R::DEFAULT_TABLE;

    let mut headlines = vec![Headline::against(
        format!("committed rows/s, embedded engine ({hs} shards, batches of {hb})"),
        engine,
        "rows/s",
        format!("parallel `psql \\copy` binary ({hs} streams), ceiling"),
        ceiling,
    )
    .target(Target::RatioAtLeast(0.90))];
    let peer_at = |p: &PeerRun, s: usize| p.rates.get(&s).map(|v| median(v.clone()));
    for p in peer_runs {
        if let Some(v) = peer_at(p, hs) {
            headlines.push(Headline::against(
                format!("committed rows/s, embedded engine ({hs} shards)"),
                engine,
                "rows/s",
                format!("{} ({hs} connections), peer", p.version),
                v,
            ));
        }
    }
    headlines.push(
        Headline::alone("push → commit p99 at 50 % load", l.p99 as f64 / 1e3, "ms")
            .target(Target::AtMost(50.0)),
    );
    headlines.push(
        Headline::alone("peak RSS, default settings, full speed", *rss, "MiB")
            .target(Target::AtMost(256.0)),
    );

    let charts = charts(ctx, args, run)?;

    // Markdown.
    let mut md = format!(
        "## ingest — embedded engine → PostgreSQL\n\n\
         {provenance} · PostgreSQL {settings}\n\n\
         {rows_of}, into `{table}` (with its `(symbol, time)` index) in a \
         fresh database; `TRUNCATE` + `CHECKPOINT` + {settle} ms pause before every run; \
         {warm}median of {runs}.\n\n\
         | figure | value | ceiling / peer | ratio |\n|---|---|---|---|\n\
         | committed rows/s, engine, {hs} shards, batches of {hb} | {engine:.0} | {ceiling:.0} \
         (parallel `psql \\copy` binary, {hs} streams) | **{ratio:.2}** (floor 0.90) |\n",
        provenance = ctx.provenance(),
        rows_of = args.load.market.rows_of::<R>(args.load.rows),
        settle = args.settle_ms,
        warm = if args.no_warmup {
            ""
        } else {
            "one unrecorded warm-up run of each side first; "
        },
        runs = runs(args.load.common.repeats()),
    );
    for p in peer_runs {
        if let Some(v) = peer_at(p, hs) {
            md.push_str(&format!(
                "| committed rows/s, engine, {hs} shards | {engine:.0} | {v:.0} ({}, {hs} \
                 connections) | **{:.2}×** |\n",
                p.version,
                engine / v
            ));
        }
    }
    md.push_str(&format!(
        "| push → commit p50 at 50 % load ({rate:.0} rows/s) | {:.1} ms | | |\n\
         | push → commit p99 at 50 % load | {:.1} ms | ≤ 50 ms | |\n\
         | push → commit p99.9 at 50 % load | {:.1} ms | | |\n\
         | batch commit time p50 / p99 at 50 % load | {:.1} / {:.1} ms | | |\n\
         | rows per batch p50 / p99 at 50 % load | {} / {} | | |\n\
         | peak RSS, default settings, full speed | {rss:.0} MiB | ≤ 256 MiB | |\n\n",
        l.p50 as f64 / 1e3,
        l.p99 as f64 / 1e3,
        l.p999 as f64 / 1e3,
        c.p50 as f64 / 1e3,
        c.p99 as f64 / 1e3,
        br.p50,
        br.p99,
    ));
    md.push_str(&sweep_table(args, points, peer_runs));
    md.push_str(
        "\nPeers: the same rows (read from a file and turned into Python tuples before any clock \
         starts), split into one contiguous slice per connection and loaded concurrently \
         (bench/peers/: asyncpg `copy_records_to_table`; psycopg 3 binary `COPY` with \
         `write_row`, one thread per connection); only the load is timed, by the script, after \
         connecting. Each repeat runs every contender at every shard count in turn, so all \
         share the same minutes of the machine.",
    );
    for n in peer_notes {
        md.push_str(&format!(" {n}."));
    }
    md.push_str("\n\n");
    let outcome_json = args.load.json::<R>(ctx, "ingest", settings, json!({
        "headline": {"shards": hs, "batch_rows": hb, "engine_rows_per_s": engine.round(),
                     "ceiling_rows_per_s": ceiling.round(), "ratio": ratio},
        "sweep": points.iter().map(|(s, p)| json!({
            "shards": s,
            "ceiling_runs": p.ceiling,
            "engine_runs": p.engine.iter().map(|(b, v)| (b.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "peers": peer_runs.iter().map(|p| json!({
            "peer": p.peer, "version": p.version,
            "runs": p.rates.iter().map(|(s, v)| (s.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "peer_notes": peer_notes,
        "latency": {"rate": rate.round(), "p50_us": l.p50, "p99_us": l.p99, "p999_us": l.p999,
                    "batch_commit_p50_us": c.p50, "batch_commit_p99_us": c.p99},
        "peak_rss_mib": rss,
    }));
    let outcome = Outcome {
        scenario: "ingest",
        headlines,
        json: outcome_json,
        charts,
        markdown: String::new(),
    };
    outcome.publish(md)
}

/// The sweep by batch size and by shard count, and the latency CDF, as SVG charts.
fn charts(ctx: &RunContext, args: &IngestArgs, run: &IngestRun) -> Result<Vec<(String, String)>> {
    let hb = args.headline_batch_rows;
    let (points, peer_runs, rate, lat) = (&run.points, &run.peer_runs, run.rate, &run.lat);
    let med = |v: &Vec<f64>| median(v.clone());
    let mut charts = Vec::new();
    let mut sweep = Vec::new();
    for (s, p) in points {
        sweep.push(Series {
            name: format!("engine, {s} shard{}", if *s == 1 { "" } else { "s" }),
            points: p.engine.iter().map(|(b, v)| (*b as f64, med(v))).collect(),
            dashed: false,
        });
    }
    let (b0, b1) = (
        *args.batch_rows.first().unwrap_or(&hb) as f64,
        *args.batch_rows.last().unwrap_or(&hb) as f64,
    );
    for (s, p) in points {
        sweep.push(Series {
            name: format!("psql \\copy, {s} stream{}", if *s == 1 { "" } else { "s" }),
            points: vec![(b0, med(&p.ceiling)), (b1, med(&p.ceiling))],
            dashed: true,
        });
    }
    charts.push((
        "throughput vs batch size".to_string(),
        ctx.write_chart(
            "ingest-batch-size",
            &chart::line_chart(&LineChart {
                title: format!(
                    "ingest: committed rows/s vs batch size ({} rows)",
                    args.load.rows
                ),
                x_label: "engine batch size (rows, log scale)".into(),
                y_label: "rows/s".into(),
                x_log: true,
                x_ticks: Some(args.batch_rows.iter().map(|b| *b as f64).collect()),
                y_format: chart::si,
                y_from_zero: true,
                series: sweep,
            }),
        )?,
    ));
    let mut by_shards = vec![
        Series {
            name: format!("engine, {} batches", chart::si(hb as f64)),
            points: points
                .iter()
                .map(|(s, p)| (*s as f64, med(&p.engine[&hb])))
                .collect(),
            dashed: false,
        },
        Series {
            name: "psql \\copy binary".into(),
            points: points
                .iter()
                .map(|(s, p)| (*s as f64, med(&p.ceiling)))
                .collect(),
            dashed: true,
        },
    ];
    for p in peer_runs {
        by_shards.push(Series {
            name: p.peer.clone(),
            points: p
                .rates
                .iter()
                .map(|(s, v)| (*s as f64, median(v.clone())))
                .collect(),
            dashed: true,
        });
    }
    charts.push((
        "throughput vs shard count".to_string(),
        ctx.write_chart(
            "ingest-shards",
            &chart::line_chart(&LineChart {
                title: "ingest: committed rows/s vs shards / streams / connections".into(),
                x_label: "shards (engine) = streams (psql) = connections (peers), log scale".into(),
                y_label: "rows/s".into(),
                x_log: true,
                x_ticks: Some(points.keys().map(|s| *s as f64).collect()),
                y_format: chart::si,
                y_from_zero: true,
                series: by_shards,
            }),
        )?,
    ));
    charts.push((
        "push → commit latency CDF".to_string(),
        ctx.write_chart(
            "ingest-latency-cdf",
            &chart::line_chart(&LineChart::latency_cdf(
                format!("ingest: latency at 50 % load ({rate:.0} rows/s)"),
                "fraction of rows / batches",
                vec![
                    Series {
                        name: "push → commit".into(),
                        points: chart::cdf_points(&lat.push_to_commit_us),
                        dashed: false,
                    },
                    Series {
                        name: "batch commit".into(),
                        points: chart::cdf_points(&lat.batch_commit_us),
                        dashed: true,
                    },
                ],
            )),
        )?,
    ));

    Ok(charts)
}

/// The sweep's table: rows/s of every contender at every shard count, with ratios.
fn sweep_table(
    args: &IngestArgs,
    points: &BTreeMap<usize, ShardPoint>,
    peer_runs: &[PeerRun],
) -> String {
    let med = |v: &Vec<f64>| median(v.clone());
    let peer_at = |p: &PeerRun, s: usize| p.rates.get(&s).map(|v| median(v.clone()));
    let mut md = String::new();
    md.push_str("Sweep (rows/s, medians; ratio = engine / ceiling of the same shard count):\n\n| shards | psql ceiling |");
    for b in &args.batch_rows {
        md.push_str(&format!(" engine, batches of {b} |"));
    }
    for p in peer_runs {
        md.push_str(&format!(" {} |", p.peer));
    }
    md.push_str("\n|---|---|");
    for _ in args
        .batch_rows
        .iter()
        .map(|_| ())
        .chain(peer_runs.iter().map(|_| ()))
    {
        md.push_str("---|");
    }
    md.push('\n');
    for (s, p) in points {
        let c = med(&p.ceiling);
        md.push_str(&format!("| {s} | {c:.0} |"));
        for b in &args.batch_rows {
            let e = med(&p.engine[b]);
            md.push_str(&format!(" {e:.0} ({:.2}) |", e / c));
        }
        for pr in peer_runs {
            match peer_at(pr, *s) {
                Some(v) => md.push_str(&format!(" {v:.0} ({:.2}) |", v / c)),
                None => md.push_str(" |"),
            }
        }
        md.push('\n');
    }
    md
}
