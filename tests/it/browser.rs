//! The page in a real headless Chromium: `web/tests/browser.mjs` (playwright-core driving
//! Debian's `/usr/bin/chromium`) against a daemon started here with its own database.
//! Checks: no console errors, the chart shows the bars the database holds, a tick pushed
//! during the test is on the page within 1 s, an order placed from the ticket is in the
//! blotter and in PostgreSQL, and cancel works. Screenshots go to `target/web-artifacts/`.
//!
//! Skips (printing `skipped: <reason>`) without chromium, `web/node_modules` or a built
//! `web/dist` (`bash scripts/web.sh install && bash scripts/web.sh build`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use christmas_ingest::auth::{hash_key, ApiKey};
use serde_json::{json, Value};

use crate::daemon::Daemon;

const KEY: &str = "web-test-key";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Why the browser test cannot run here, if it cannot.
fn missing(chromium: &Path) -> Option<String> {
    let web = repo().join("web");
    if !chromium.is_file() {
        return Some(format!(
            "no {} (bash scripts/web.sh install)",
            chromium.display()
        ));
    }
    if !web.join("node_modules/playwright-core").is_dir() {
        return Some("no web/node_modules (bash scripts/web.sh install)".into());
    }
    if !web.join("dist/index.html").is_file() {
        return Some("web/dist is not built (bash scripts/web.sh build)".into());
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("no node on PATH".into());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_market_and_places_and_cancels_an_order() {
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    if let Some(reason) = missing(&chromium) {
        println!("skipped: {reason}");
        return;
    }
    let keys = vec![ApiKey::parse(&format!("web:{}:ingest+orders+read", hash_key(KEY))).unwrap()];
    let dist = repo().join("web/dist").display().to_string();
    let d = Daemon::start(|c| {
        c.redis_url = Some(christmas_tests::shared_redis_url().into());
        c.linger_ms = 5;
        c.api_keys = keys;
        c.auth_reads = true;
        c.web.dir = Some(dist);
    })
    .await;
    let symbol = format!("WEB{}", std::process::id());
    let bars = write_bars(&d, &symbol).await;
    assert!(bars >= 5, "{bars} bars written");

    let artifacts = repo().join("target/web-artifacts");
    let run = tokio::process::Command::new("node")
        .arg("web/tests/browser.mjs")
        .current_dir(repo())
        .env("BASE_URL", format!("http://{}", d.addr()))
        .env("API_KEY", KEY)
        .env("SYMBOL", &symbol)
        .env("EXPECT_BARS", bars.to_string())
        .env("ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser test finished within 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let result: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    println!("browser: {result}");
    assert_eq!(result["console_errors"], 0);
    assert_eq!(result["bars"], json!(bars));
    assert!(result["tick_ms"].as_u64().unwrap() < 1_000, "{result}");

    // The order the page placed and cancelled, as PostgreSQL holds it.
    let id = result["order_id"].as_i64().unwrap();
    let row =
        d.db.query_one(
            "SELECT account, symbol, side::text, type, quantity, limit_price, time_in_force, status
             FROM orders WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "web");
    assert_eq!(row.get::<_, String>(1), symbol);
    assert_eq!(row.get::<_, String>(2), "S");
    assert_eq!(row.get::<_, String>(3), "limit");
    assert_eq!(row.get::<_, f64>(4), 3.0);
    assert_eq!(row.get::<_, Option<f64>>(5), Some(4300.5));
    assert_eq!(row.get::<_, String>(6), "gtc");
    assert_eq!(row.get::<_, String>(7), "cancelled");
    assert!(artifacts.join("page.png").is_file());
    d.shutdown().await.unwrap();
}

/// Trades for `symbol` in five minutes of the last quarter hour (committed); the number of
/// 1-minute bars PostgreSQL now holds for it.
async fn write_bars(d: &Daemon, symbol: &str) -> i64 {
    let now_ns = christmas_core::query::unix_ns(std::time::SystemTime::now());
    let minute = 60_000_000_000i64;
    let start = (now_ns / minute - 10) * minute;
    let mut ticks = Vec::new();
    for m in 0..5 {
        for k in 0..4 {
            ticks.push(json!({"kind": "trade", "symbol": symbol,
                "time_ns": start + m * minute + k * 1_000_000_000,
                "price": 4200.0 + (m * 4 + k) as f64 * 0.25, "volume": 1 + k, "side": "B"}));
        }
    }
    let (status, v) = d
        .call(
            "POST",
            "/api/ticks?ack=committed",
            &[("Authorization", &format!("Bearer {KEY}"))],
            json!(ticks).to_string().as_bytes(),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    d.db.query_one(
        "SELECT count(DISTINCT date_trunc('minute', time)) FROM market_data WHERE symbol = $1",
        &[&symbol],
    )
    .await
    .unwrap()
    .get(0)
}
