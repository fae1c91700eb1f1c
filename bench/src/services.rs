//! Starts or reuses the local PostgreSQL and Redis of `scripts/services.sh`, and finds (or
//! installs through it) the load tools the scenarios run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{ensure, Context, Result};

use crate::report;

/// When `DATABASE_URL` or `REDIS_URL` is unset, runs `scripts/services.sh start` (which
/// reuses servers already running) and sets the missing variables from
/// `scripts/services.sh env`. With both set, the servers they name are used as they are.
pub fn ensure() -> Result<()> {
    let set = |v: &str| std::env::var(v).is_ok_and(|s| !s.is_empty());
    if set("DATABASE_URL") && set("REDIS_URL") {
        return Ok(());
    }
    let script = report::bench_dir().join("../scripts/services.sh");
    eprintln!("starting (or reusing) the local services: bash scripts/services.sh start");
    let status = Command::new("bash")
        .arg(&script)
        .arg("start")
        .status()
        .context("running scripts/services.sh start")?;
    ensure!(status.success(), "scripts/services.sh start failed");
    let out = Command::new("bash")
        .arg(&script)
        .arg("env")
        .output()
        .context("running scripts/services.sh env")?;
    ensure!(out.status.success(), "scripts/services.sh env failed");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((k, v)) = line
            .trim()
            .strip_prefix("export ")
            .and_then(|l| l.split_once('='))
        {
            if (k == "DATABASE_URL" || k == "REDIS_URL") && !set(k) {
                // Single-threaded here: main has not started any thread yet.
                std::env::set_var(k, v.trim_matches('"'));
            }
        }
    }
    Ok(())
}

/// `program` on PATH (or in the sbin folders, where Debian puts nginx), if it is there.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file());
    found
}

/// Whether `scripts/services.sh install` ran in this process, and whether it succeeded: it
/// runs at most once, however many tools are missing.
static INSTALLED: Mutex<Option<bool>> = Mutex::new(None);

/// Runs `scripts/services.sh install` (the servers and the bench's load tools, from Debian's
/// packages) the first time it is asked; whether it succeeded.
pub fn install_tools() -> bool {
    let mut done = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    *done.get_or_insert_with(|| {
        let script = report::bench_dir().join("../scripts/services.sh");
        eprintln!("installing the bench's load tools: bash scripts/services.sh install");
        Command::new("bash")
            .arg(&script)
            .arg("install")
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The path of `program`, installing the bench's tools first when it is missing (as the
/// services are started when they are not running); `package` is the Debian package that
/// has it, named in the error when it is still missing.
pub fn tool(program: &str, package: &str) -> Result<PathBuf> {
    if let Some(p) = which(program) {
        return Ok(p);
    }
    let installed = install_tools();
    which(program).with_context(|| {
        format!(
            "{program} is not installed{}; install it with `sudo bash scripts/services.sh \
             install` (or `sudo apt-get install {package}`)",
            if installed {
                " even after scripts/services.sh install"
            } else {
                " and scripts/services.sh install failed"
            }
        )
    })
}

/// The Redis logical database the order scenarios give their daemons (of a plain
/// `redis://host:port/…` URL; other URLs are used as they are).
const BENCH_REDIS_DB: u32 = 9;

/// `redis://host:port/9` for `redis://host:port[/n]`: the daemons of the order scenarios
/// append millions of entries to the `orders:events` stream (which nothing trims), so they
/// get a database of their own that [`clear_bench_redis`] empties of what they wrote.
pub fn bench_redis(url: &str) -> String {
    match url.strip_prefix("redis://") {
        Some(rest) => {
            let hosts = rest.split('/').next().unwrap_or(rest);
            format!("redis://{hosts}/{BENCH_REDIS_DB}")
        }
        None => url.to_string(),
    }
}

/// `redis-cli` on the bench's Redis database, run with `args`; `None` for a URL that is not
/// plain `redis://` (a cluster: nothing to clear).
fn bench_redis_cli(url: &str, args: &[&str]) -> Result<Option<String>> {
    let Some(rest) = bench_redis(url)
        .strip_prefix("redis://")
        .map(str::to_string)
    else {
        return Ok(None);
    };
    let hp = rest.rsplit('@').next().unwrap_or(&rest);
    let hp = hp.split('/').next().unwrap_or(hp);
    let (h, p) = hp.rsplit_once(':').unwrap_or((hp, "6379"));
    let out = Command::new("redis-cli")
        .args(["-h", h, "-p", p, "-n", &BENCH_REDIS_DB.to_string()])
        .args(args)
        .output()
        .context("running redis-cli")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success() && !stdout.starts_with("ERR"),
        "redis-cli {} failed: {stdout}",
        args.first().unwrap_or(&"")
    );
    Ok(Some(stdout))
}

/// Deletes what the order scenarios' daemons left in the bench's Redis database: the order
/// event stream and the latest-tick keys of the symbol siege reads.
pub fn clear_bench_redis(url: &str) -> Result<()> {
    bench_redis_cli(
        url,
        &[
            "DEL",
            "orders:events",
            "md:{ESZ6}:latest",
            "md:{ESZ6}:ticks",
        ],
    )?;
    Ok(())
}

/// Redis's `used_memory` in MiB (the whole server: the bench's database shares it), or
/// `None` when it cannot be read.
pub fn redis_used_mib(url: &str) -> Option<f64> {
    let info = bench_redis_cli(url, &["INFO", "memory"]).ok()??;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|b| b / (1 << 20) as f64)
}

/// Entries in the stream `key` of the bench's Redis database, or `None` when it cannot be
/// read.
pub fn bench_redis_xlen(url: &str, key: &str) -> Option<u64> {
    bench_redis_cli(url, &["XLEN", key])
        .ok()??
        .trim()
        .parse()
        .ok()
}

/// Deletes every key matching `pattern` in the bench's Redis database (what a soak's
/// fan-out left: one stream per symbol, gigabytes after half an hour).
pub fn clear_bench_redis_keys(url: &str, pattern: &str) -> Result<()> {
    let script = "local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do \
                  n = n + redis.call('DEL', k) end return n";
    bench_redis_cli(url, &["EVAL", script, "0", pattern])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_redis_has_its_own_database() {
        assert_eq!(
            bench_redis("redis://127.0.0.1:56379/"),
            "redis://127.0.0.1:56379/9"
        );
        assert_eq!(bench_redis("redis://h:1/3"), "redis://h:1/9");
        assert_eq!(
            bench_redis("redis+cluster://a:1,b:2"),
            "redis+cluster://a:1,b:2"
        );
    }
}
