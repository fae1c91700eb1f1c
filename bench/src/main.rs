//! `christmas-bench`: measures Christmas against a ceiling or a peer measured in the same run,
//! and writes the figures to `bench/RESULTS.md` and `bench/results/*.json`.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod core_benches;
mod fanout;
mod ingest;
mod machine;
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
        Command::Core => core_benches::run(),
        Command::RssProbe(args) => ingest::rss_probe(args),
    }
}
