//! Writing figures: a section of bench/RESULTS.md between markers, JSON files, and the
//! summary of an `all` run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use crate::machine;
use crate::run::{figure_number, Headline, Outcome, RunContext};

/// The bench/ folder of this workspace.
pub fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in
/// bench/RESULTS.md (appending the section if it is not there yet).
pub fn update_results(name: &str, body: &str) -> Result<()> {
    let path = bench_dir().join("RESULTS.md");
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmark results\n\nFigures from real runs, each with the command and the machine \
         that produced it. Each scenario is described in `bench/README.md`.\n"
            .to_string()
    });
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => text.replace_range(b..e + end.len(), &section),
        _ => {
            text.push('\n');
            text.push_str(&section);
            text.push('\n');
        }
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Writes `json` to bench/results/<name>-<stamp>.json and returns the path.
pub fn write_json(name: &str, stamp: &str, json: &str) -> Result<PathBuf> {
    let dir = bench_dir().join("results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}-{}.json", stamp.replace(':', "")));
    std::fs::write(&path, json)?;
    Ok(path)
}

/// The header of the summary table (bench/RESULTS.md's dashboard).
const SUMMARY_HEADER: &str =
    "| scenario, run | figure | value | ceiling or peer | ratio | target | met? |\n\
     |---|---|---|---|---|---|---|\n";

/// One row of the summary table: `from` names the scenario and the run the figure comes from.
fn summary_row(from: &str, h: &Headline) -> String {
    let against = if h.against.is_empty() {
        "—".to_string()
    } else {
        format!("{}: {}", h.against, figure_number(h.against_value))
    };
    let ratio = h.ratio().map_or("—".to_string(), |r| format!("**{r:.2}**"));
    let met = match h.met() {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "—",
    };
    format!(
        "| {from} | {} | {} {} | {against} | {ratio} | {} | {met} |\n",
        h.figure,
        figure_number(h.value),
        h.unit,
        h.target_text(),
    )
}

/// The summary table: one row per headline of every scenario, all from the run at `stamp`.
fn summary_table(stamp: &str, outcomes: &[Result<Outcome, (String, String)>]) -> String {
    let mut md = String::from(SUMMARY_HEADER);
    for o in outcomes {
        match o {
            Ok(o) => {
                let from = format!("{}, {stamp}", o.scenario);
                for h in &o.headlines {
                    md.push_str(&summary_row(&from, h));
                }
            }
            Err((name, e)) => md.push_str(&format!(
                "| {name}, {stamp} | failed: {} | | | | | **no** |\n",
                e.lines().next().unwrap_or("").replace('|', "\\|")
            )),
        }
    }
    md
}

/// Writes what an `all` run produced: bench/results/<date>.json (every figure),
/// bench/results/<date>.md (the summary table and every section), and the summary section
/// of bench/RESULTS.md.
pub fn write_all(
    ctx: &RunContext,
    outcomes: &[Result<Outcome, (String, String)>],
    durations: &[(String, f64)],
    wall_seconds: f64,
) -> Result<(PathBuf, PathBuf)> {
    let times: Vec<String> = durations
        .iter()
        .map(|(n, s)| format!("{n} {s:.0} s"))
        .collect();
    let servers = machine::describe_with_servers();
    let table = summary_table(&ctx.stamp, outcomes);
    let charts: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .flat_map(|o| {
            o.charts
                .iter()
                .map(move |(t, p)| format!("[{} — {t}]({p})", o.scenario))
        })
        .collect();
    let section = format!(
        "## Summary\n\n\
         Every figure from the last `all` run: {stamp} · `{cmd}` · {servers} · {wall:.0} s wall \
         time ({times}){quick}. Ratio: figure / ceiling or peer, both measured in the same \
         run; met?: whether the figure reaches every target of its row (— : reported, not \
         judged).\n\n\
         {table}\n\
         `soak` is not part of `all`: its verdict is in its own section below. Every figure: \
         [results/{date}.json](results/{date}.json); this summary with every section: \
         [results/{date}.md](results/{date}.md).\n\n\
         Charts: {charts}.\n",
        stamp = ctx.stamp,
        cmd = ctx.command,
        wall = wall_seconds,
        times = times.join(", "),
        quick = if ctx.quick {
            " (`--quick`: shorter runs, one repeat, reduced sweep)"
        } else {
            ""
        },
        date = ctx.date(),
        charts = charts.join(" · "),
    );
    update_results("summary", &section)?;
    let dir = bench_dir().join("results");
    std::fs::create_dir_all(&dir)?;
    let md_path = dir.join(format!("{}.md", ctx.date()));
    let mut md = format!(
        "# christmas-bench all — {}\n\n{}\n",
        ctx.stamp,
        // Links in a file under results/ are relative to results/.
        section
            .replace("](results/", "](")
            .replace("## Summary\n\n", "")
    );
    for o in outcomes.iter().filter_map(|o| o.as_ref().ok()) {
        md.push_str(&format!("\n{}\n", o.markdown.replace("](results/", "](")));
    }
    std::fs::write(&md_path, md)?;
    let mut scenarios = serde_json::Map::new();
    for o in outcomes {
        match o {
            Ok(o) => scenarios.insert(o.scenario.to_string(), o.json.clone()),
            Err((name, e)) => scenarios.insert(name.clone(), json!({ "error": e })),
        };
    }
    let json_path = dir.join(format!("{}.json", ctx.date()));
    let v = json!({
        "date": ctx.stamp,
        "command": ctx.command,
        "machine": machine::describe(),
        "servers": servers,
        "quick": ctx.quick,
        "wall_seconds": wall_seconds.round(),
        "scenario_seconds": durations.iter().map(|(n, s)| (n.clone(), json!(s.round()))).collect::<serde_json::Map<_, _>>(),
        "summary": outcomes.iter().filter_map(|o| o.as_ref().ok()).flat_map(|o| o.headlines.iter().map(move |h| json!({
            "scenario": o.scenario, "figure": h.figure, "value": h.value, "unit": h.unit,
            "against": h.against, "against_value": h.against_value.round(), "ratio": h.ratio(),
            "target": h.target_text(), "met": h.met(),
        }))).collect::<Vec<_>>(),
        "scenarios": scenarios,
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&v)? + "\n")?;
    Ok((json_path, md_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Target;

    #[test]
    fn a_summary_row_has_value_ceiling_ratio_target_and_verdict() {
        let h = Headline::against(
            "rows/s, engine",
            752_681.0,
            "rows/s",
            "psql, ceiling",
            776_944.0,
        )
        .target(Target::RatioAtLeast(0.9));
        assert_eq!(
            summary_row("ingest, 2026-11-25T10:19:57Z", &h),
            "| ingest, 2026-11-25T10:19:57Z | rows/s, engine | 752,681 rows/s | psql, ceiling: \
             776,944 | **0.97** | ratio ≥ 0.90 | yes |\n"
        );
        let p99 = Headline::alone("p99", 28.52, "ms").target(Target::AtMost(20.0));
        assert_eq!(
            summary_row("orders, x", &p99),
            "| orders, x | p99 | 28.52 ms | — | — | ≤ 20 ms | **no** |\n"
        );
        assert_eq!(
            SUMMARY_HEADER.lines().next().unwrap().matches('|').count(),
            8
        );
    }
}
