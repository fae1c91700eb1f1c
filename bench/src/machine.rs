//! What machine a figure came from.

use std::process::Command;

/// CPU model, cores and memory, from /proc.
pub fn describe() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU")
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    format!(
        "{model}, {cores} cores, {:.0} GiB RAM",
        mem_kib as f64 / (1024.0 * 1024.0)
    )
}

/// `PostgreSQL 15.20` of the server at `url` (via psql), or `PostgreSQL ?`.
pub fn postgres_version(url: &str) -> String {
    Command::new("psql")
        .arg(url)
        .args(["-XAtqc", "SHOW server_version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
            format!("PostgreSQL {}", v.split_whitespace().next().unwrap_or("?"))
        })
        .unwrap_or_else(|| "PostgreSQL ?".into())
}

/// `Redis 7.0.15` of the server at a `redis://host:port/` URL (via redis-cli), or `Redis ?`.
pub fn redis_version(url: &str) -> String {
    let hp = url
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("");
    let (h, p) = hp.rsplit_once(':').unwrap_or((hp, "6379"));
    Command::new("redis-cli")
        .args(["-h", h, "-p", p, "INFO", "server"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
                l.strip_prefix("redis_version:")
                    .map(|v| v.trim().to_string())
            })
        })
        .map_or_else(|| "Redis ?".into(), |v| format!("Redis {v}"))
}

/// The machine and the servers' versions, for a report's header line.
pub fn describe_with_servers() -> String {
    let mut parts = vec![describe()];
    if let Ok(url) = std::env::var("DATABASE_URL") {
        parts.push(postgres_version(&url));
    }
    if let Ok(url) = std::env::var("REDIS_URL") {
        parts.push(redis_version(&url));
    }
    parts.join(" · ")
}

/// `date -u` in ISO form.
pub fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// This process's peak resident set size in MiB (VmHWM).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

const DIRTY_BYTES: &str = "/proc/sys/vm/dirty_background_bytes";
const DIRTY_RATIO: &str = "/proc/sys/vm/dirty_background_ratio";

fn read_sysctl(path: &str) -> Option<String> {
    Some(std::fs::read_to_string(path).ok()?.trim().to_string())
}

/// When the kernel starts writing dirty page cache back: `vm.dirty_background_bytes = N`
/// when set, else `vm.dirty_background_ratio = N %`.
pub fn writeback() -> String {
    match (read_sysctl(DIRTY_BYTES), read_sysctl(DIRTY_RATIO)) {
        (Some(b), _) if b != "0" => format!("vm.dirty_background_bytes = {b}"),
        (_, Some(r)) => format!("vm.dirty_background_ratio = {r} %"),
        _ => "vm.dirty_background_* unknown".into(),
    }
}

/// `vm.dirty_background_bytes` set for as long as this lives; the previous setting is put
/// back when it is dropped.
#[derive(Debug)]
pub struct Writeback {
    bytes: String,
    ratio: String,
}

impl Writeback {
    /// Sets `vm.dirty_background_bytes` to `bytes` (needs root).
    pub fn set(bytes: u64) -> anyhow::Result<Writeback> {
        use anyhow::Context;
        let before = Writeback {
            bytes: read_sysctl(DIRTY_BYTES).context("reading vm.dirty_background_bytes")?,
            ratio: read_sysctl(DIRTY_RATIO).context("reading vm.dirty_background_ratio")?,
        };
        std::fs::write(DIRTY_BYTES, bytes.to_string())
            .context("setting vm.dirty_background_bytes (needs root)")?;
        Ok(before)
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        // Writing one of the pair zeroes the other: put back whichever was in use.
        let (path, value) = if self.bytes == "0" {
            (DIRTY_RATIO, &self.ratio)
        } else {
            (DIRTY_BYTES, &self.bytes)
        };
        if let Err(e) = std::fs::write(path, value) {
            eprintln!("could not put {path} back to {value}: {e}");
        }
    }
}
