//! The flags every scenario takes, flattened into each scenario's own.

use anyhow::{Context, Result};

/// Where the servers are: what every scenario that needs them takes (`soak` included).
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// PostgreSQL URL; the scenario creates its own databases (christmas_bench_*) there.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub url: String,
    /// Redis URL (the bench writes to its database 9 and empties it afterwards). `fanout`
    /// and `soak` need it; `orders` and `scale` give it to the daemons when set.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
}

impl ServiceArgs {
    /// The Redis URL, for the scenarios that cannot run without one.
    pub fn redis(&self) -> Result<&str> {
        self.redis_url
            .as_deref()
            .context("this scenario needs Redis: --redis-url or REDIS_URL")
    }
}

/// What every measured scenario takes: the servers, how many measured runs, and whether to
/// run short.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// PostgreSQL and Redis.
    #[command(flatten)]
    pub services: ServiceArgs,
    /// Measured runs of each configuration; the median is reported (default: 3, `scale` 1;
    /// `--quick`: 1).
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Shorter runs, one repeat and a reduced sweep.
    #[arg(long)]
    pub quick: bool,
}

impl CommonArgs {
    /// Settles the flags for a run: quick when asked here or for the whole run (`all
    /// --quick`), and the number of repeats (`default` unless given; 1 when quick). Returns
    /// whether the run is quick.
    pub fn plan(&mut self, run_quick: bool, default_repeats: usize) -> bool {
        self.quick |= run_quick;
        let repeats = if self.quick {
            1
        } else {
            self.repeats.unwrap_or(default_repeats)
        };
        self.repeats = Some(repeats);
        self.quick
    }

    /// Measured runs of each configuration, as [`CommonArgs::plan`] settled them.
    pub fn repeats(&self) -> usize {
        self.repeats.unwrap_or(1)
    }
}
