//! The external load generators: `wrk` with bench/wrk/orders.lua, and `siege`.

use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

/// What one wrk run of bench/wrk/orders.lua measured.
#[derive(Debug, Default, Clone)]
pub struct WrkRun {
    pub created_per_s: f64,
    pub created: u64,
    pub other: u64,
    pub socket_errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

fn script() -> String {
    format!("{}/wrk/orders.lua", env!("CARGO_MANIFEST_DIR"))
}

/// `wrk -t2 -c<connections> -d<seconds>s -s bench/wrk/orders.lua http://<addr>`.
pub fn wrk_orders(addr: &str, connections: usize, seconds: u64) -> Result<WrkRun> {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s")])
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

/// siege's JSON summary.
#[derive(Debug, Default, Clone)]
pub struct SiegeRun {
    pub rate: f64,
    pub mean_s: f64,
    pub longest_s: f64,
    pub failed: f64,
}

/// `siege -c<concurrency> -t<seconds>S -b -q <url>`.
pub fn siege(url: &str, concurrency: usize, seconds: u64) -> Result<SiegeRun> {
    let out = Command::new("siege")
        .args([
            &format!("-c{concurrency}"),
            &format!("-t{seconds}S"),
            "-b",
            "-q",
        ])
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
    Ok(SiegeRun {
        rate: f("transaction_rate"),
        mean_s: f("response_time"),
        longest_s: f("longest_transaction"),
        failed: f("failed_transactions"),
    })
}
