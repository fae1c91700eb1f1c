//! The flags every scenario takes, flattened into each scenario's own.

use anyhow::{Context, Result};
use serde_json::{json, Value};

use tokio::runtime::Runtime;
use tokio_postgres::Client;

use crate::market::{BenchRecord, MarketArgs};
use crate::run::RunContext;
use crate::{machine, pg};

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

/// What the scenarios that load a market's rows into a fresh database take: [`CommonArgs`],
/// the market, and how many of its rows a run loads.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Databases, Redis, repeats, `--quick`.
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub market: MarketArgs,
    /// Rows per run.
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: usize,
}

impl LoadArgs {
    /// [`pg::fresh_database`] `name` on the server of `--url`, a client on it and its
    /// [`pg::settings`] `names` (the report quotes them beside the figures): the URL, the
    /// client and the settings line.
    pub fn fresh_database(
        &self,
        rt: &Runtime,
        name: &str,
        names: &[&str],
    ) -> Result<(String, Client, String)> {
        rt.block_on(async {
            let url = pg::fresh_database(&self.common.services.url, name).await?;
            let client = pg::connect(&url).await?;
            let settings = pg::settings(&client, names).await?;
            Ok((url, client, settings))
        })
    }

    /// A scenario's JSON: what ran where (scenario, date, command, machine, PostgreSQL's
    /// `settings`, record kind, market, rows, repeats) together with the fields of `figures`
    /// (a JSON object).
    pub fn json<R: BenchRecord>(
        &self,
        ctx: &RunContext,
        scenario: &str,
        settings: &str,
        figures: Value,
    ) -> Value {
        let mut all = json!({
            "scenario": scenario,
            "date": ctx.stamp,
            "command": ctx.command,
            "machine": machine::describe(),
            "postgres": settings,
            "kind": R::NAME,
            "market": self.market.describe(),
            "rows": self.rows,
            "repeats": self.common.repeats(),
        });
        if let (Some(all), Value::Object(figures)) = (all.as_object_mut(), figures) {
            all.extend(figures);
        }
        all
    }
}
