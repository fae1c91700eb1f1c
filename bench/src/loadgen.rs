//! The external load generators: `wrk` with bench/wrk/orders.lua, and `siege`.

use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

/// What one wrk run of bench/wrk/orders.lua measured.
#[derive(Debug, Default, Clone)]
pub struct WrkRun {
    /// Answers below 400 a second.
    pub created_per_s: f64,
    /// Answers below 400: with unique ids, new orders (201), which the callers check
    /// against the rows added (and the order desk's own counts, where it runs in-process).
    pub created: u64,
    /// Answers of 400 and above.
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
        .context("running wrk (installed by scripts/services.sh install)")?;
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
        created_per_s: field("ok")? / secs,
        created: field("ok")? as u64,
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
    // siege 4.0 sometimes deadlocks joining its threads after the run, before it prints the
    // summary: such a run is killed after a grace period and run again, once.
    let text = match siege_once(url, concurrency, seconds)? {
        Some(text) => text,
        None => {
            eprintln!("siege hung after its run; killed it, running it again");
            siege_once(url, concurrency, seconds)?.with_context(|| {
                format!("siege hung twice (not done {SIEGE_GRACE_S} s after its -t{seconds}S)")
            })?
        }
    };
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

/// Seconds past `-t` after which a siege still running is taken to be hung.
const SIEGE_GRACE_S: u64 = 30;

/// One siege run's output, or `None` when it hung and was killed.
fn siege_once(url: &str, concurrency: usize, seconds: u64) -> Result<Option<String>> {
    let out = tempfile_path("siege")?;
    let mut child = Command::new("siege")
        .args([
            &format!("-c{concurrency}"),
            &format!("-t{seconds}S"),
            "-b",
            "-q",
        ])
        .arg(url)
        .stdout(std::fs::File::create(&out)?)
        .stderr(std::fs::File::create(out.with_extension("err"))?)
        .spawn()
        .context("running siege (installed by scripts/services.sh install)")?;
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_secs(seconds + SIEGE_GRACE_S);
    let finished = loop {
        if child.try_wait()?.is_some() {
            break true;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let text = format!(
        "{}{}",
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(out.with_extension("err")).unwrap_or_default()
    );
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(out.with_extension("err"));
    Ok(finished.then_some(text))
}

/// A fresh path in the temporary directory.
fn tempfile_path(prefix: &str) -> Result<std::path::PathBuf> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(std::env::temp_dir().join(format!("christmas-{prefix}-{}-{n}.out", std::process::id())))
}
