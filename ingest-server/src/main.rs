//! `christmas-ingest`: parse flags, then run one command. The work lives in
//! `christmas-core`; this binary only wires it to the outside world.

use anyhow::Context;
use clap::{Parser, Subcommand};

mod demo;
mod migrate;

/// The Christmas market-data ingest daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// PostgreSQL URL to write to.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring the database to the current schema (TimescaleDB or plain PostgreSQL) and
    /// create the least-privilege role. Safe to run twice, or from several daemons at once.
    Migrate(migrate::MigrateArgs),
    /// Run the engine fed by a synthetic market, printing live throughput every second.
    Demo(demo::DemoArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    let url = cli
        .database_url
        .context("no database URL: pass --database-url or set DATABASE_URL")?;
    match cli.command {
        Command::Migrate(args) => migrate::run(&url, &args).await,
        Command::Demo(args) => demo::run(&url, args, shutdown_signal()).await,
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
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
