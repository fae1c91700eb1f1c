//! `christmas-ingest`: parse flags and config, bind, run. The work lives in the library
//! (`christmas_ingest`) and in `christmas-core`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use christmas_ingest::commands::{demo, feed, migrate, replay};
use christmas_ingest::config::DaemonConfig;
use christmas_ingest::{auth, server};
use clap::{Parser, Subcommand};

// mimalloc: about 9 % more orders/s than glibc's allocator in `christmas-bench orders`
// (request handling allocates many small, short-lived objects).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_t`; the test below checks
/// it against the option's documented default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays resident before mimalloc returns it to the kernel, in ms.
///
/// mimalloc 3's default is 1,000 ms. The daemon frees batch buffers, spool records and
/// fan-out messages at hundreds of MB/s at half its ceiling, so a second of them, about
/// 90 MiB, stayed resident, and more while commits were slow and batches large: the RSS
/// rose and fell with the backlog (`christmas-bench soak`). At 100 ms the 30-minute soak's RSS
/// was about 70 MiB lower at the same backlog and stayed flat; purging on every free (0 ms)
/// cost a third of a core in `madvise` and page faults (`docs/operations.md`, "Memory").
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
const PURGE_DELAY_MS: std::ffi::c_long = 100;

#[allow(unsafe_code)] // FFI to mimalloc; exercised by the test below.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option; mimalloc reads it on its next purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// The Christmas market-data ingest daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// PostgreSQL URL to write to (overrides the config file).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// TOML config file (every setting documented in `christmas_ingest::config`).
    #[arg(long, env = "CHRISTMAS_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP (and TCP) ingest and reads until SIGTERM / SIGINT, then drain and flush.
    Serve {
        /// HTTP listen address (overrides config and CHRISTMAS_HTTP_ADDR).
        #[arg(long)]
        http_addr: Option<String>,
        /// TCP ingest listen address; "" turns it off.
        #[arg(long)]
        tcp_addr: Option<String>,
        /// Operations listen address (/health, /ready, /metrics on a budget of their own);
        /// "" turns it off.
        #[arg(long)]
        ops_addr: Option<String>,
        /// Directory of the built page served at `/` (overrides config and
        /// CHRISTMAS_WEB_DIR; default `web/dist` when it exists).
        #[arg(long)]
        web_dir: Option<String>,
    },
    /// Validate the config (file + environment) and print it without secrets.
    CheckConfig,
    /// Print the SHA-256 of an API key, for the config's api_keys.
    HashKey {
        /// The key.
        key: String,
    },
    /// Bring the database to the current schema (TimescaleDB or plain PostgreSQL) and
    /// create the least-privilege role. Safe to run twice, or from several daemons at once.
    Migrate(migrate::MigrateArgs),
    /// Replay a DBN (.dbn, .dbn.zst) or CSV file into the database.
    Replay(replay::ReplayArgs),
    /// Run the engine in this process fed by a synthetic market, printing live throughput.
    Demo(demo::DemoArgs),
    /// Send a synthetic market to a running daemon's TCP port, as a feed handler would.
    Feed(feed::FeedArgs),
}

fn config(cli: &Cli) -> anyhow::Result<DaemonConfig> {
    let mut c = DaemonConfig::load(cli.config.as_deref())?;
    if let Some(url) = &cli.database_url {
        c.database_url = Some(url.into());
    }
    Ok(c)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // One line with the cause chain, never a backtrace (anyhow's Debug prints one when
    // RUST_BACKTRACE is set): an operator reads the reason, not the frames.
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    tune_allocator();
    let cli = Cli::parse();
    // replay's stdout is its summary alone: its logs go to stderr with the progress bar.
    init_tracing(matches!(cli.command, Command::Replay(_)));
    let url = || {
        cli.database_url
            .clone()
            .context("no database URL: pass --database-url or set DATABASE_URL")
    };
    match &cli.command {
        Command::Serve {
            http_addr,
            tcp_addr,
            ops_addr,
            web_dir,
        } => {
            let mut c = config(&cli)?;
            if let Some(a) = http_addr {
                c.http.addr = a.clone();
            }
            if let Some(a) = tcp_addr {
                c.tcp.addr = a.clone();
            }
            if let Some(a) = ops_addr {
                c.ops.addr = a.clone();
            }
            if let Some(d) = web_dir {
                c.web.dir = Some(d.clone());
            }
            c.validate()?;
            let http = server::listen(&c.http.addr, c.http.max_connections)
                .await
                .with_context(|| format!("binding {}", c.http.addr))?;
            let bind = |addr: String, backlog: usize| async move {
                match addr.as_str() {
                    "" => Ok(None),
                    a => server::listen(a, backlog)
                        .await
                        .map(Some)
                        .with_context(|| format!("binding {a}")),
                }
            };
            let tcp = bind(c.tcp.addr.clone(), c.tcp.max_connections).await?;
            let ops = bind(c.ops.addr.clone(), c.ops.max_connections).await?;
            let state = server::AppState::start(c).await?;
            server::run_with_ops(http, tcp, ops, state, shutdown_signal()).await
        }
        Command::CheckConfig => {
            let c = config(&cli)?;
            c.validate()?;
            println!("config is valid: {c:#?}");
            Ok(())
        }
        Command::HashKey { key } => {
            println!("{}", auth::hash_key(key));
            Ok(())
        }
        Command::Migrate(args) => migrate::run(&url()?, args).await,
        Command::Replay(args) => {
            let started = std::time::Instant::now();
            let s = replay::run(&url()?, args).await?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "replayed {}: {} trades, {} quotes; {} rows committed, {} dead-lettered, {} already stored by an earlier run, in {:.2} s ({:.0} ticks/s)",
                args.file.display(),
                s.trades,
                s.quotes,
                s.committed,
                s.dead_lettered,
                s.already_stored,
                secs,
                (s.trades + s.quotes) as f64 / secs.max(1e-9)
            );
            if s.committed == 0 && s.already_stored > 0 {
                println!("nothing new: this file was loaded before (--force loads it again)");
            }
            Ok(())
        }
        Command::Demo(args) => demo::run(&url()?, args.clone(), shutdown_signal()).await,
        Command::Feed(args) => feed::run(args.clone(), shutdown_signal()).await,
    }
}

/// Human-readable logs on a terminal, JSON lines otherwise, on stdout (or on stderr with
/// `to_stderr`); `RUST_LOG` filters.
fn init_tracing(to_stderr: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if to_stderr {
        let builder = builder.with_writer(std::io::stderr);
        if std::io::stderr().is_terminal() {
            builder.init();
        } else {
            builder.json().init();
        }
    } else if std::io::stdout().is_terminal() {
        builder.init();
    } else {
        builder.json().init();
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_the_one_tuned() {
        // The option's default (or the environment's value) identifies it: a renumbered
        // `mi_option_t` in a later mimalloc fails here instead of tuning something else.
        let expected = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        // SAFETY: reads an integer option.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            expected
        );
        tune_allocator();
        // SAFETY: reads an integer option.
        let now = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(now, PURGE_DELAY_MS);
        } else {
            assert_eq!(now, expected);
        }
    }
}
