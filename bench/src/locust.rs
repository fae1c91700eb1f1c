//! Locust, the seed's third load tool, run headless on bench/locust/locustfile.py (orders
//! and the latest-tick read, 4 : 1) from the bench's Python venv.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::report;

/// The Locust the bench pins (installed into .state/bench-venv beside the Python peers).
const LOCUST: &str = "locust==2.47.0";

/// One request name's line of Locust's `--csv` stats.
#[derive(Debug, Default, Clone)]
pub struct LocustRow {
    pub name: String,
    pub requests: u64,
    pub failures: u64,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What one headless run measured: a row per request name, and the aggregate.
#[derive(Debug, Default, Clone)]
pub struct LocustRun {
    pub users: usize,
    pub seconds: u64,
    pub rows: Vec<LocustRow>,
    pub total: LocustRow,
}

/// The venv's Python with Locust importable, installing it (pinned) when it is not.
fn python() -> Result<PathBuf> {
    let py = crate::peers::python()?;
    let imports = || {
        Command::new(&py)
            .args(["-c", "import locust"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !imports() {
        eprintln!("installing {LOCUST} into the bench's venv");
        let pip = py.with_file_name("pip");
        let ok = Command::new(&pip)
            .args(["install", "-q", LOCUST])
            .status()
            .context("running pip install locust")?
            .success();
        ensure!(
            ok && imports(),
            "pip install {LOCUST} into the bench's venv failed"
        );
    }
    Ok(py)
}

/// `locust --headless -u <users> -r <users> -t <seconds>s` against `http://<addr>`.
pub fn run(addr: &str, users: usize, seconds: u64) -> Result<LocustRun> {
    let py = python()?;
    let prefix = std::env::temp_dir().join(format!("christmas-locust-{}", std::process::id()));
    let out = Command::new(&py)
        .args(["-m", "locust", "-f"])
        .arg(report::bench_dir().join("locust/locustfile.py"))
        .args(["--headless", "--only-summary", "--loglevel", "WARNING"])
        .args(["-u", &users.to_string(), "-r", &users.to_string()])
        .args(["-t", &format!("{seconds}s"), "--stop-timeout", "5"])
        .arg("--host")
        .arg(format!("http://{addr}"))
        .arg("--csv")
        .arg(&prefix)
        .output()
        .context("running locust")?;
    let stats = prefix.with_file_name(format!(
        "{}_stats.csv",
        prefix
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
    ));
    let text = std::fs::read_to_string(&stats).with_context(|| {
        format!(
            "locust wrote no stats (exit {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
        )
    })?;
    for suffix in [
        "_stats.csv",
        "_stats_history.csv",
        "_failures.csv",
        "_exceptions.csv",
    ] {
        let _ = std::fs::remove_file(prefix.with_file_name(format!(
            "{}{suffix}",
            prefix.file_name().and_then(|n| n.to_str()).unwrap_or_default()
        )));
    }
    let mut run = parse_stats(&text)?;
    run.users = users;
    run.seconds = seconds;
    Ok(run)
}

/// Locust's `_stats.csv`: a header naming the columns, a row per request name, then
/// `Aggregated`.
fn parse_stats(text: &str) -> Result<LocustRun> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .context("empty locust stats")?
        .split(',')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("no {name:?} column in locust's stats"))
    };
    let (name, count, fail, rps, p50, p99) = (
        col("Name")?,
        col("Request Count")?,
        col("Failure Count")?,
        col("Requests/s")?,
        col("50%")?,
        col("99%")?,
    );
    let mut run = LocustRun::default();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let num = |i: usize| {
            f.get(i)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let row = LocustRow {
            name: f.get(name).copied().unwrap_or_default().to_string(),
            requests: num(count) as u64,
            failures: num(fail) as u64,
            per_s: num(rps),
            p50_ms: num(p50),
            p99_ms: num(p99),
        };
        if row.name == "Aggregated" {
            run.total = row;
        } else {
            run.rows.push(row);
        }
    }
    ensure!(run.total.requests > 0, "locust made no requests");
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_locusts_stats_csv() {
        let csv = "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n\
POST,POST /api/orders,4000,2,5,6.1,1,80,40,400.5,0.2,5,6,7,8,10,12,20,31,70,80,80\n\
GET,GET /api/market-data,1000,0,3,3.5,1,40,90,100.1,0,3,4,4,5,6,7,9,12,30,40,40\n\
,Aggregated,5000,2,4,5.6,1,80,50,500.6,0.2,4,5,6,7,9,11,18,29,60,80,80\n";
        let run = parse_stats(csv).unwrap();
        assert_eq!(run.rows.len(), 2);
        assert_eq!(run.rows[0].name, "POST /api/orders");
        assert_eq!((run.rows[0].requests, run.rows[0].failures), (4000, 2));
        assert_eq!(run.rows[1].p99_ms, 12.0);
        assert_eq!(run.total.requests, 5000);
        assert_eq!(run.total.per_s, 500.6);
    }
}
