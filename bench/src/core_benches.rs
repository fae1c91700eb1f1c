//! Scenario `core`: the criterion benches of christmas-core, summarised against the floors.

use std::process::Command;

use anyhow::{ensure, Result};

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

pub fn run() -> Result<()> {
    let cmd = "cargo bench -p christmas-core --bench encode --bench pipeline";
    let out = Command::new("cargo")
        .args([
            "bench",
            "-p",
            "christmas-core",
            "--bench",
            "encode",
            "--bench",
            "pipeline",
        ])
        .current_dir(report::bench_dir().join(".."))
        .output()?;
    ensure!(
        out.status.success(),
        "cargo bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
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
    ensure!(
        !rows.is_empty(),
        "no criterion throughput found in the output"
    );
    let mut md = format!(
        "## core — criterion benches of christmas-core\n\n{} · `{cmd}` · {}\n\n\
         | bench | elements/s | floor | ratio to floor |\n|---|---|---|---|\n",
        machine::utc_now(),
        machine::describe()
    );
    for (id, eps) in &rows {
        let floor = FLOORS.iter().find(|f| id.starts_with(f.0));
        match floor {
            Some((_, f, what)) if *f > 0.0 => md.push_str(&format!(
                "| `{id}` | {:.1} M | {what} | {:.1}× |\n",
                eps / 1e6,
                eps / f
            )),
            _ => md.push_str(&format!("| `{id}` | {:.1} M | | |\n", eps / 1e6)),
        }
    }
    println!("{md}");
    report::update_results("core", &md)
}
