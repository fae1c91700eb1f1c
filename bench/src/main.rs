//! `christmas-bench`: measures Christmas against a ceiling or a peer measured in the same run,
//! and writes the figures to `bench/RESULTS.md` and `bench/results/*.json`.

use anyhow::Result;

// The daemon's allocator, so the orders scenario measures what christmas-ingest runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};

mod core_benches;
mod fanout;
mod ingest;
mod machine;
mod orders;
mod report;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Embedded engine → PostgreSQL vs parallel `psql \copy (FORMAT binary)` of the same
    /// pre-encoded rows; push → commit latency at 50 % load; peak RSS.
    Ingest(ingest::IngestArgs),
    /// Redis fan-out: ticks/s delivered to one subscriber vs redis-benchmark PUBLISH of the
    /// same payload size; push → subscriber latency; PostgreSQL throughput with Redis down.
    Fanout(fanout::FanoutArgs),
    /// POST /api/orders under wrk against a naive one-INSERT-per-request baseline, and
    /// siege on GET /api/market-data.
    Orders(orders::OrdersArgs),
    /// Run the criterion benches of christmas-core and summarise them against the floors.
    Core,
    /// (internal) Run the engine at full speed with default settings and print peak RSS.
    #[command(hide = true)]
    RssProbe(ingest::RssProbeArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Ingest(args) => ingest::run(args),
        Command::Fanout(args) => fanout::run(args),
        Command::Orders(args) => orders::run(args),
        Command::Core => core_benches::run(),
        Command::RssProbe(args) => ingest::rss_probe(args),
    }
}
