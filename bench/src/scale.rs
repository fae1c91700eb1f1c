//! Scenario `scale`: the same wrk load on POST /api/orders through nginx (`least_conn`) to
//! one christmas-ingest process, then to three; all of them, nginx, wrk and the one
//! PostgreSQL share the machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use christmas_tests::{free_addr, free_port, DaemonProcess, HttpClient};
use indicatif::ProgressBar;
use serde_json::json;

use crate::args::CommonArgs;
use crate::chart::{self, Bar};
use crate::loadgen::WrkRun;
use crate::market::TempDir;
use crate::orders::{wrk_series, WrkPlan};
use crate::run::{runtime, Headline, Outcome, RunContext};
use crate::{machine, pg, report, services};

/// Flags of `christmas-bench scale`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Databases, Redis, repeats, `--quick`.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Daemon counts compared (the first is the baseline).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub daemons: Vec<usize>,
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 400)]
    pub connections: usize,
    /// Seconds of the unrecorded wrk warm-up run of each configuration.
    #[arg(long, default_value_t = 5)]
    pub warmup_seconds: u64,
    /// Order writer connections of each daemon.
    #[arg(long, default_value_t = 2)]
    pub order_connections: usize,
    /// Skip the reference run of one daemon without nginx in front.
    #[arg(long)]
    pub no_direct: bool,
    /// nginx worker processes of the generated config (deploy/nginx/nginx.conf, when it
    /// exists, is used as it is: `worker_processes auto`).
    #[arg(long, default_value_t = 2)]
    pub nginx_workers: usize,
    /// The christmas-ingest binary (default: next to this one, rebuilt with cargo first).
    #[arg(long)]
    pub daemon_bin: Option<PathBuf>,
}

/// nginx as a child process, stopped with SIGTERM (then waited for) when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("{} did not stop in 30 s; killing it", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits up to 30 s until `GET /health` through `addr` answers 200, failing as soon as
/// `proc` exits.
fn wait_healthy(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    what: &str,
    proc: &mut Proc,
) -> Result<()> {
    let client = HttpClient::new(addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if rt
            .block_on(client.get("/health"))
            .is_ok_and(|r| r.status == 200)
        {
            return Ok(());
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            bail!("{what} exited ({status}) before answering /health");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{what} did not answer GET /health with 200 within 30 s")
}

/// The christmas-ingest binary: `--daemon-bin`, else [`ingest_binary`].
fn daemon_binary(args: &ScaleArgs, bar: &indicatif::ProgressBar) -> Result<PathBuf> {
    match &args.daemon_bin {
        Some(p) => Ok(p.clone()),
        None => ingest_binary(bar),
    }
}

/// target/release/christmas-ingest after `cargo build --release -p christmas-ingest` (the
/// one already there when that fails).
pub fn ingest_binary(bar: &indicatif::ProgressBar) -> Result<PathBuf> {
    let bin = std::env::current_exe()?.with_file_name("christmas-ingest");
    bar.set_message("cargo build --release -p christmas-ingest");
    let built = Command::new("cargo")
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "christmas-ingest",
            "--bin",
            "christmas-ingest",
        ])
        .current_dir(report::bench_dir().join(".."))
        .stdin(Stdio::null())
        .output();
    match built {
        Ok(o) if o.status.success() => {}
        Ok(o) if bin.exists() => crate::run::say(
            bar,
            format!(
                "cargo build of christmas-ingest failed; using the binary already built: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
        ),
        Ok(o) => bail!(
            "cargo build of christmas-ingest failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) if bin.exists() => crate::run::say(
            bar,
            format!("cannot run cargo ({e}); using {}", bin.display()),
        ),
        Err(e) => return Err(e).context("running cargo build"),
    }
    ensure!(bin.exists(), "{} does not exist", bin.display());
    Ok(bin)
}

/// deploy/nginx/nginx.conf, the production config (it includes `listen.conf` and
/// `servers.conf` from its own directory).
fn deploy_nginx_conf() -> PathBuf {
    report::bench_dir().join("../deploy/nginx/nginx.conf")
}

/// Writes the nginx config into `dir` and returns its path: deploy/nginx/nginx.conf with a
/// `listen.conf` on loopback and a `servers.conf` of the daemons when that file exists
/// (its `least_conn` upstream serves /api/orders), else a minimal `least_conn` config.
fn write_nginx_conf(dir: &Path, listen: u16, upstreams: &[u16], workers: usize) -> Result<PathBuf> {
    let conf = dir.join("nginx.conf");
    let deploy = deploy_nginx_conf();
    if deploy.is_file() {
        std::fs::copy(&deploy, &conf).with_context(|| format!("copying {}", deploy.display()))?;
        std::fs::write(
            dir.join("listen.conf"),
            format!("listen 127.0.0.1:{listen};\n"),
        )?;
        let servers: String = upstreams
            .iter()
            .map(|p| format!("server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;\n"))
            .collect();
        std::fs::write(dir.join("servers.conf"), servers)?;
    } else {
        std::fs::write(&conf, nginx_conf(dir, listen, upstreams, workers))?;
    }
    Ok(conf)
}

/// A minimal nginx config: `least_conn` over `upstreams`, listening on `listen`, every path
/// under `dir` (used when deploy/nginx/nginx.conf is not there).
fn nginx_conf(dir: &Path, listen: u16, upstreams: &[u16], workers: usize) -> String {
    let d = dir.display();
    let servers: String = upstreams
        .iter()
        .map(|p| format!("        server 127.0.0.1:{p} max_fails=0;\n"))
        .collect();
    format!(
        "worker_processes {workers};\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {d}/client_body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         \x20   upstream christmas {{\n\
         \x20       least_conn;\n\
         {servers}\
         \x20       keepalive 256;\n\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{listen};\n\
         \x20       location / {{\n\
         \x20           proxy_pass http://christmas;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n"
    )
}

/// What one configuration measured.
struct ScalePoint {
    daemons: usize,
    /// Through nginx (false: wrk straight to the one daemon).
    nginx: bool,
    run: WrkRun,
    stored: u64,
}

impl ScalePoint {
    fn label(&self) -> String {
        match (self.daemons, self.nginx) {
            (1, false) => "1 daemon, no nginx".into(),
            (1, true) => "1 daemon".into(),
            (n, _) => format!("{n} daemons"),
        }
    }
}

pub fn run(ctx: &RunContext, args: ScaleArgs) -> Result<Outcome> {
    let (args, configs) = plan(ctx, args)?;
    let nginx = services::tool("nginx", "nginx-light")?;
    services::tool("wrk", "wrk")?;
    let bar = ctx.steps("scale", 1 + configs.len() as u64);
    let points = measure(&args, &configs, &nginx, &bar)?;
    report(ctx, &args, &points, &nginx, &bar)
}

/// Plan: the flags settled for this run, and the configurations to measure in order: (daemon
/// count, through nginx), the direct run of one daemon first unless `--no-direct`.
fn plan(ctx: &RunContext, mut args: ScaleArgs) -> Result<(ScaleArgs, Vec<(usize, bool)>)> {
    if args.common.plan(ctx.quick, 1) {
        args.seconds = args.seconds.min(5);
        args.warmup_seconds = args.warmup_seconds.min(1);
    }
    ensure!(
        !args.daemons.is_empty() && args.daemons.iter().all(|n| *n >= 1),
        "--daemons must list counts ≥ 1"
    );
    let mut configs: Vec<(usize, bool)> = args.daemons.iter().map(|n| (*n, true)).collect();
    if !args.no_direct {
        configs.insert(0, (1, false));
    }
    Ok((args, configs))
}

/// `n` daemons of `bin` with `daemon_toml` on database `url`, each ready, logging to
/// `dir/daemon-N-I.log`.
fn start_daemons(
    rt: &tokio::runtime::Runtime,
    args: &ScaleArgs,
    bin: &Path,
    daemon_toml: &Path,
    dir: &Path,
    url: &str,
    n: usize,
) -> Result<Vec<DaemonProcess>> {
    let mut daemons = Vec::new();
    for i in 0..n {
        let log = std::fs::File::create(dir.join(format!("daemon-{n}-{i}.log")))?;
        let out = log.try_clone()?;
        let mut d = DaemonProcess::spawn(bin, free_addr(), None, |cmd| {
            cmd.arg("--config")
                .arg(daemon_toml)
                .env("DATABASE_URL", url)
                .env("RUST_LOG", "warn")
                .stdout(out)
                .stderr(log);
            match &args.common.services.redis_url {
                Some(r) => cmd.env("REDIS_URL", crate::services::bench_redis(r)),
                None => cmd.env_remove("REDIS_URL"),
            };
        })?;
        let name = format!("christmas-ingest {}", d.http());
        rt.block_on(d.wait_ready(Duration::from_secs(30)))
            .with_context(|| name)?;
        daemons.push(d);
    }
    Ok(daemons)
}

/// nginx with the config `write_nginx_conf` makes in `dir`, in front of `daemons`, ready;
/// and where it listens.
fn start_nginx(
    rt: &tokio::runtime::Runtime,
    args: &ScaleArgs,
    nginx: &Path,
    dir: &Path,
    daemons: &[DaemonProcess],
) -> Result<(Proc, String)> {
    std::fs::create_dir_all(dir)?;
    let listen = free_port();
    let ports: Vec<u16> = daemons.iter().map(|d| d.http().port()).collect();
    let conf = write_nginx_conf(dir, listen, &ports, args.nginx_workers)?;
    let mut proc = Proc {
        name: "nginx".into(),
        child: Command::new(nginx)
            // The trailing slash: deploy/nginx/nginx.conf's paths are relative to it.
            .arg("-p")
            .arg(format!("{}/", dir.display()))
            .arg("-c")
            .arg(&conf)
            .args(["-e", "stderr", "-g", "daemon off;"])
            .stdin(Stdio::null())
            // deploy/nginx/nginx.conf logs every request to stdout, as in a container.
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("error.log"))?)
            .spawn()
            .context("starting nginx")?,
    };
    let addr = format!("127.0.0.1:{listen}");
    wait_healthy(rt, &addr, "nginx", &mut proc)
        .with_context(|| std::fs::read_to_string(dir.join("error.log")).unwrap_or_default())?;
    Ok((proc, addr))
}

/// Run: each configuration on a fresh database: its daemons (and nginx), the wrk series,
/// the rows stored.
fn measure(
    args: &ScaleArgs,
    configs: &[(usize, bool)],
    nginx: &Path,
    bar: &ProgressBar,
) -> Result<Vec<ScalePoint>> {
    let bin = daemon_binary(args, bar)?;
    bar.inc(1);
    let rt = runtime()?;
    let tmp = TempDir::new("scale")?;
    let daemon_toml = tmp.0.join("daemon.toml");
    std::fs::write(
        &daemon_toml,
        format!(
            "[http]\nmax_connections = 4096\nmax_connections_per_address = 0\n\
             [orders]\nconnections = {}\nrate_per_second = 1e9\nrate_burst = 1e9\n",
            args.order_connections
        ),
    )?;
    let plan = WrkPlan {
        connections: args.connections,
        seconds: args.seconds,
        warmup_seconds: args.warmup_seconds,
        repeats: args.common.repeats(),
    };
    let mut points = Vec::new();
    for &(n, via_nginx) in configs {
        bar.set_message(format!("{n} daemon(s): fresh database, start, nginx"));
        let url = rt.block_on(pg::fresh_database(
            &args.common.services.url,
            "christmas_bench_scale",
        ))?;
        let mut daemons = start_daemons(&rt, args, &bin, &daemon_toml, &tmp.0, &url, n)?;
        let what = format!(
            "{n} daemon{}{}",
            if n == 1 { "" } else { "s" },
            if via_nginx {
                " behind nginx"
            } else {
                ", no nginx"
            }
        );
        let (run, stored) = if via_nginx {
            let dir = tmp.0.join(format!("nginx-{n}"));
            let (mut front, addr) = start_nginx(&rt, args, nginx, &dir, &daemons)?;
            let (run, stored, _) = wrk_series(&rt, &addr, &url, plan, &what, bar)?;
            front.stop();
            (run, stored)
        } else {
            let addr = daemons[0].http().to_string();
            let (run, stored, _) = wrk_series(&rt, &addr, &url, plan, &what, bar)?;
            (run, stored)
        };
        for d in &mut daemons {
            let _ = d.stop();
        }
        if let Some(r) = &args.common.services.redis_url {
            crate::services::clear_bench_redis(r)?;
        }
        points.push(ScalePoint {
            daemons: n,
            nginx: via_nginx,
            run,
            stored,
        });
        bar.inc(1);
    }
    Ok(points)
}

/// Report: the ratio of the most daemons behind nginx to the fewest, the chart, the table
/// in bench/RESULTS.md and the JSON.
// One format string holds the whole section as it reads in RESULTS.md.
fn report(
    ctx: &RunContext,
    args: &ScaleArgs,
    points: &[ScalePoint],
    nginx: &Path,
    bar: &ProgressBar,
) -> Result<Outcome> {
    let behind: Vec<&ScalePoint> = points.iter().filter(|p| p.nginx).collect();
    let base = behind[0];
    let best = behind.last().copied().unwrap_or(base);
    let ratio = best.run.created_per_s / base.run.created_per_s.max(1e-9);
    bar.finish_with_message(format!(
        "{} daemons / {}: {ratio:.2}",
        best.daemons, base.daemons
    ));

    let nginx_version = Command::new(nginx)
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .replace("nginx version: ", "")
        })
        .unwrap_or_default();
    let bars: Vec<Bar> = points
        .iter()
        .map(|p| Bar {
            label: p.label(),
            value: p.run.created_per_s,
            color: if !p.nginx {
                2
            } else {
                usize::from(p.daemons != base.daemons)
            },
        })
        .collect();
    let charts = vec![(
        "orders/s by daemon count".to_string(),
        ctx.write_chart(
            "scale",
            &chart::bar_chart(
                "scale: orders/s through nginx least_conn",
                "orders/s",
                &bars,
                &["1 behind nginx", "N behind nginx", "no nginx"],
            ),
        )?,
    )];
    let mut md = format!(
        "## scale — 1 vs 3 daemons behind nginx `least_conn`\n\n\
         {stamp} · `{cmd}` · {machine} · {nginx_version}, {pg}\n\n\
         `wrk -t2 -c{c} -d{s}s -s bench/wrk/orders.lua` through nginx ({nginx_config}) to \
         `christmas-ingest serve` processes (the release binary, {oc} order writer connections \
         each, no rate limit, Redis database 9 for order events), all on one fresh database; a {ws} s \
         warm-up first, then the run with the median orders/s of {repeats}. Every answer below 400 is \
         counted in the table afterwards. **All daemons, nginx, wrk and the one PostgreSQL \
         share this machine's {cores} cores**, so more daemons add contention, not capacity: \
         the ratio says what scaling out costs here, not what it gives on separate hosts.\n\n\
         | configuration | durable orders/s | p50 / p99 / p99.9 | answers ≥ 400 | socket errors | rows stored | ratio to {b} behind nginx |\n\
         |---|---|---|---|---|---|---|\n",
        stamp = ctx.stamp,
        cmd = ctx.command,
        machine = machine::describe(),
        pg = machine::postgres_version(&args.common.services.url),
        c = args.connections,
        s = args.seconds,
        nginx_config = if deploy_nginx_conf().is_file() {
            "`deploy/nginx/nginx.conf` as it is, with a generated `listen.conf` on loopback and \
             `servers.conf` of the daemons: `least_conn` upstream for /api/orders, HTTP/1.1 \
             keep-alive to the daemons, `worker_processes auto`, a JSON access log line per \
             request to stdout (/dev/null here)"
                .to_string()
        } else {
            format!(
                "a minimal config generated for the run: `least_conn`, HTTP/1.1 keep-alive to \
                 the daemons, {} workers, no access log",
                args.nginx_workers
            )
        },
        oc = args.order_connections,
        ws = args.warmup_seconds,
        repeats = args.common.repeats(),
        cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
        b = base.daemons,
    );
    for p in points {
        md.push_str(&format!(
            "| {} | {:.0} | {:.2} / {:.2} / {:.2} ms | {} | {} | {} | **{:.2}** |\n",
            p.label(),
            p.run.created_per_s,
            p.run.p50_ms,
            p.run.p99_ms,
            p.run.p999_ms,
            p.run.other,
            p.run.socket_errors,
            p.stored,
            p.run.created_per_s / base.run.created_per_s.max(1e-9)
        ));
    }
    md.push('\n');
    let outcome = Outcome {
        scenario: "scale",
        headlines: vec![Headline::against(
            format!("durable orders/s, {} daemons behind nginx", best.daemons),
            best.run.created_per_s,
            "orders/s",
            format!("{} daemon behind the same nginx, baseline", base.daemons),
            base.run.created_per_s,
        )],
        json: json!({
            "scenario": "scale",
            "date": ctx.stamp,
            "command": ctx.command,
            "machine": machine::describe(),
            "nginx": nginx_version,
            "nginx_config": if deploy_nginx_conf().is_file() { "deploy/nginx/nginx.conf" } else { "generated" },
            "wrk": {"connections": args.connections, "seconds": args.seconds},
            "points": points.iter().map(|p| json!({
                "daemons": p.daemons, "nginx": p.nginx, "orders_per_s": p.run.created_per_s.round(),
                "p50_ms": p.run.p50_ms, "p99_ms": p.run.p99_ms, "p999_ms": p.run.p999_ms,
                "non_201": p.run.other, "socket_errors": p.run.socket_errors, "stored": p.stored,
            })).collect::<Vec<_>>(),
            "ratio": ratio,
        }),
        charts,
        markdown: String::new(),
    };
    outcome.publish(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_conf_lists_every_upstream() {
        let c = nginx_conf(Path::new("/tmp/x"), 8000, &[9001, 9002, 9003], 2);
        assert!(c.contains("least_conn;"));
        assert_eq!(c.matches("server 127.0.0.1:").count(), 3);
        assert!(c.contains("listen 127.0.0.1:8000;"));
        assert!(c.contains("pid /tmp/x/nginx.pid;"));
    }
}
