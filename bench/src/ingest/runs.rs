//! The contenders' runs: the psql ceiling, the engine, the latency run at a fixed rate,
//! and the peak-RSS probe (a child process of this binary).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use christmas_core::synthetic::SyntheticMarket;
use christmas_core::{Ingestor, Trade};

use crate::machine;
use crate::market::BenchRecord;
use crate::run::runtime;

use super::{Latency, RssProbeArgs};

/// Seconds for parallel `psql \copy` of every file.
pub fn ceiling_run<R: BenchRecord>(url: &str, files: &[std::path::PathBuf]) -> Result<f64> {
    let columns = R::COLUMNS.join(", ");
    let start = Instant::now();
    let children = files
        .iter()
        .map(|f| {
            Command::new("psql")
                .arg(url)
                .args(["-X", "-v", "ON_ERROR_STOP=1", "-qc"])
                .arg(format!(
                    "\\copy {} ({columns}) FROM '{}' WITH (FORMAT binary)",
                    R::DEFAULT_TABLE,
                    f.display()
                ))
                .stdout(Stdio::null())
                .spawn()
                .context("running psql")
        })
        .collect::<Result<Vec<_>>>()?;
    for mut c in children {
        if !c.wait()?.success() {
            bail!("psql \\copy failed");
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Seconds from the first push to every row committed: one producer thread per shard
/// pushes its rows (`push_batch` of 1,024) into an engine of `shards` shards sealing at
/// `batch_rows`.
pub async fn engine_run<R: BenchRecord>(
    url: &str,
    shards: usize,
    batch_rows: usize,
    per_shard: &[Vec<R>],
) -> Result<f64> {
    let ingestor = Ingestor::<R>::builder()
        .database_url(url)
        .shards(shards)
        .batch_max_rows(batch_rows)
        .stream("bench")
        .start()
        .await?;
    let start = Instant::now();
    on_threads(&ingestor, per_shard.to_vec(), |ingestor, rows| {
        for chunk in rows.chunks(1_024) {
            ingestor.push_batch(chunk)?;
        }
        Ok(())
    })?;
    ingestor.flush().await?;
    let secs = start.elapsed().as_secs_f64();
    ingestor.shutdown().await?;
    Ok(secs)
}

/// Runs `work(ingestor, input)` on one producer thread per input and waits for them all.
fn on_threads<R: BenchRecord, I: Send + 'static>(
    ingestor: &Ingestor<R>,
    inputs: Vec<I>,
    work: fn(&Ingestor<R>, I) -> christmas_core::Result<()>,
) -> Result<()> {
    let threads: Vec<_> = inputs
        .into_iter()
        .map(|input| {
            let ingestor = ingestor.clone();
            std::thread::spawn(move || work(&ingestor, input))
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    }
    Ok(())
}

/// Push → commit latency with default settings while pushing `rate` rows/s (the run's rows,
/// cycled).
pub(super) async fn latency_run<R: BenchRecord>(
    url: &str,
    shards: usize,
    seconds: u64,
    rate: f64,
    rows: &[R],
) -> Result<Latency> {
    let ingestor = Ingestor::<R>::builder()
        .database_url(url)
        .shards(shards)
        .stream("bench")
        .start()
        .await?;
    let start = Instant::now();
    let duration = Duration::from_secs(seconds);
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while start.elapsed() < duration {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            ingestor
                .push_async(rows[sent as usize % rows.len()])
                .await?;
            sent += 1;
        }
    }
    let m = ingestor.shutdown().await?;
    ensure!(m.rows_committed() == sent, "latency run lost rows");
    Ok(Latency {
        push_to_commit_us: m.push_to_commit_us,
        batch_commit_us: m.batch_commit_us,
        batch_rows: m.batch_rows,
    })
}

/// Peak RSS (MiB) of a child process running the engine flat out with default settings.
pub(super) fn rss_of_probe(url: &str, rows: usize) -> Result<f64> {
    let out = Command::new(std::env::current_exe()?)
        .args(["rss-probe", "--url", url, "--rows", &rows.to_string()])
        .output()?;
    ensure!(
        out.status.success(),
        "rss-probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("rss-probe output")
}

pub fn rss_probe(args: RssProbeArgs) -> Result<()> {
    let rt = runtime()?;
    rt.block_on(async {
        let ingestor = Ingestor::<Trade>::builder()
            .database_url(&args.url)
            .stream("bench-rss")
            .start()
            .await?;
        let per = args.rows / 2;
        on_threads(
            &ingestor,
            vec![(100, per), (101, per)],
            |ingestor, (seed, n)| {
                let mut market = SyntheticMarket::new(seed, 250)
                    .starting_at(christmas_core::query::unix_ns(std::time::SystemTime::now()));
                for _ in 0..n {
                    ingestor.push(market.next_trade())?;
                }
                Ok(())
            },
        )?;
        ingestor.shutdown().await?;
        anyhow::Ok(())
    })?;
    println!("{:.1}", machine::peak_rss_mib());
    Ok(())
}
