//! Scenario `core`: the criterion benches of christmas-core, summarised against the floors.

use std::process::{Command, Stdio};

use anyhow::{ensure, Result};
use serde_json::json;

use crate::chart::{self, Bar};
use crate::run::{Headline, Outcome, RunContext, Target};
use crate::{machine, report};

/// (bench id prefix, floor in elements/s, what the floor is)
const FLOORS: &[(&str, f64, &str)] = &[
    ("encode/trades", 20e6, "≥ 20 M trades/s on one core"),
    ("encode/quotes", 20e6, "≥ 20 M quotes/s on one core"),
    (
        "pipeline_null_sink/Push/2_producers",
        5e6,
        "≥ 5 M records/s, 2 producers",
    ),
    (
        "pipeline_null_sink/PushBatch/2_producers",
        5e6,
        "≥ 5 M records/s, 2 producers",
    ),
    ("pipeline_null_sink/Push/1_producers", 0.0, ""),
    ("pipeline_null_sink/PushBatch/1_producers", 0.0, ""),
];

/// Criterion's flags for `--quick`: shorter warm-up and measurement (criterion still takes
/// its samples, so the pipeline benches keep ≥ 55 iterations of 1 M records).
const QUICK_FLAGS: &[&str] = &["--warm-up-time", "0.5", "--measurement-time", "1"];

pub fn run(ctx: &RunContext) -> Result<Outcome> {
    let mut cargo_args = vec![
        "bench",
        "-p",
        "christmas-core",
        "--bench",
        "encode",
        "--bench",
        "pipeline",
        "--",
        "--noplot",
    ];
    if ctx.quick {
        cargo_args.extend(QUICK_FLAGS);
    }
    let cmd = format!("cargo {}", cargo_args.join(" "));
    let bar = ctx.steps("core", 1);
    bar.set_message(format!("{cmd} (builds the benches first if needed)"));
    let out = Command::new("cargo")
        .args(&cargo_args)
        .current_dir(report::bench_dir().join(".."))
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        out.status.success(),
        "cargo bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bar.inc(1);
    let rows = throughputs(&String::from_utf8_lossy(&out.stdout));
    ensure!(
        !rows.is_empty(),
        "no criterion throughput found in the output"
    );
    bar.finish_with_message(format!("{} benches", rows.len()));
    report(ctx, &cmd, &rows)
}

/// Each bench of [`FLOORS`] in criterion's output with its middle throughput, elements/s.
fn throughputs(text: &str) -> Vec<(String, f64)> {
    // criterion prints "<id>\n   time: [...]\n   thrpt: [lo mid hi]" (id and time may share a line).
    let mut rows = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(id) = FLOORS.iter().map(|f| f.0).find(|id| t.starts_with(id)) {
            current = Some(t.split_whitespace().next().unwrap_or(id).to_string());
        }
        if let (Some(id), Some(rest)) = (current.as_ref(), t.strip_prefix("thrpt:")) {
            let parts: Vec<&str> = rest
                .trim_matches(|c: char| c == '[' || c == ']' || c.is_whitespace())
                .split_whitespace()
                .collect();
            if parts.len() >= 4 {
                let mid: f64 = parts[2].parse().unwrap_or(0.0);
                let scale = match parts[3] {
                    "Gelem/s" => 1e9,
                    "Melem/s" => 1e6,
                    "Kelem/s" => 1e3,
                    _ => 1.0,
                };
                rows.push((id.clone(), mid * scale));
            }
            current = None;
        }
    }
    rows
}

/// Report: each bench against its floor, the chart and the JSON.
fn report(ctx: &RunContext, cmd: &str, rows: &[(String, f64)]) -> Result<Outcome> {
    let mut md = format!(
        "## core — criterion benches of christmas-core\n\n{} · `{cmd}` (run by `{}`) · {}\n\n\
         | bench | elements/s | floor | ratio to floor |\n|---|---|---|---|\n",
        ctx.stamp,
        ctx.command,
        machine::describe()
    );
    let mut headlines = Vec::new();
    for (id, eps) in rows {
        let floor = FLOORS.iter().find(|f| id.starts_with(f.0));
        match floor {
            Some((_, f, what)) if *f > 0.0 => {
                md.push_str(&format!(
                    "| `{id}` | {:.1} M | {what} | {:.1}× |\n",
                    eps / 1e6,
                    eps / f
                ));
                if id.starts_with("encode/trades")
                    || id.starts_with("pipeline_null_sink/PushBatch/2")
                {
                    headlines.push(
                        Headline::against(
                            format!("`{id}` elements/s"),
                            *eps,
                            "elements/s",
                            format!("floor ({what})"),
                            *f,
                        )
                        .target(Target::RatioAtLeast(1.0)),
                    );
                }
            }
            _ => md.push_str(&format!("| `{id}` | {:.1} M | | |\n", eps / 1e6)),
        }
    }
    md.push('\n');
    let bars: Vec<Bar> = rows
        .iter()
        .map(|(id, eps)| Bar {
            label: id
                .replace("pipeline_null_sink/", "")
                .replace("encode/", "enc/")
                .replace("_producers", "p")
                .replace("/10000", ""),
            value: *eps,
            color: usize::from(id.starts_with("pipeline")),
        })
        .collect();
    let charts = vec![(
        "elements/s".to_string(),
        ctx.write_chart(
            "core",
            &chart::bar_chart(
                "core: criterion throughput (elements/s)",
                "elements/s",
                &bars,
                &["encode (1 core)", "pipeline → null sink"],
            ),
        )?,
    )];
    let outcome = Outcome {
        scenario: "core",
        headlines,
        json: json!({
            "scenario": "core",
            "date": ctx.stamp,
            "command": cmd,
            "machine": machine::describe(),
            "benches": rows.iter().map(|(id, eps)| json!({"id": id, "elements_per_s": eps.round()})).collect::<Vec<_>>(),
        }),
        charts,
        markdown: String::new(),
    };
    outcome.publish(md)
}

#[cfg(test)]
mod tests {
    use super::throughputs;

    #[test]
    fn throughputs_are_read_from_criterion_output() {
        let out = "encode/trades/10000     time:   [1.0 ms 1.1 ms 1.2 ms]\n\
                   \x20                       thrpt:  [8.0 Melem/s 9.5 Melem/s 10.0 Melem/s]\n\
                   something/else          time:   [1 ms 1 ms 1 ms]\n\
                   \x20                       thrpt:  [1 Gelem/s 2 Gelem/s 3 Gelem/s]\n\
                   encode/quotes/10000\n\
                   \x20                       time:   [1.0 ms 1.1 ms 1.2 ms]\n\
                   \x20                       thrpt:  [1.0 Gelem/s 1.5 Gelem/s 2.0 Gelem/s]\n";
        assert_eq!(
            throughputs(out),
            vec![
                ("encode/trades/10000".to_string(), 9.5e6),
                ("encode/quotes/10000".to_string(), 1.5e9)
            ]
        );
    }
}
