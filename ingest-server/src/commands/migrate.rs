//! `christmas-ingest migrate`: flags → `SchemaConfig` → `christmas_core::schema::migrate`.

use std::time::Duration;

use anyhow::{bail, Context};
use christmas_core::schema::{self, SchemaConfig, Variant};

/// Flags of `migrate`. Defaults are the library's (`SchemaConfig::default()`).
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Schema variant: `auto` (the installed one, else TimescaleDB when the server can
    /// load it, else plain PostgreSQL), `postgres` or `timescaledb`.
    #[arg(long, default_value = "auto")]
    variant: String,
    /// Width of a chunk / time partition (e.g. 1d, 6h).
    #[arg(long, default_value = "1d", value_parser = parse_duration)]
    chunk_interval: Duration,
    /// Symbol (hash) partitions per time partition.
    #[arg(long, default_value_t = 4)]
    space_partitions: u32,
    /// Time partitions kept created ahead of now (plain PostgreSQL).
    #[arg(long, default_value_t = 3)]
    partitions_ahead: u32,
    /// Compress chunks older than this (TimescaleDB), or `off`.
    #[arg(long, default_value = "7d", value_parser = parse_optional_duration)]
    compress_after: OptionalDuration,
    /// Drop ticks older than this, or `off`.
    #[arg(long, default_value = "90d", value_parser = parse_optional_duration)]
    retention: OptionalDuration,
    /// Keep exactly-once ledger rows this long.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    ledger_retention: Duration,
    /// The daemon's least-privilege role (created when the migrating role may create
    /// roles), or `off`.
    #[arg(long, default_value = "christmas_app")]
    app_role: String,
    /// Password for the least-privilege role (without one it is NOLOGIN).
    #[arg(long, env = "CHRISTMAS_APP_PASSWORD", hide_env_values = true)]
    app_password: Option<String>,
}

/// `Option<Duration>` wrapped so clap does not read it as an optional flag.
#[derive(Debug, Clone, Copy)]
pub struct OptionalDuration(Option<Duration>);

impl MigrateArgs {
    fn config(&self) -> anyhow::Result<SchemaConfig> {
        Ok(SchemaConfig {
            variant: match self.variant.as_str() {
                "auto" => None,
                v => Some(v.parse::<Variant>()?),
            },
            chunk_interval: self.chunk_interval,
            space_partitions: self.space_partitions,
            partitions_ahead: self.partitions_ahead,
            compress_after: self.compress_after.0,
            retention: self.retention.0,
            ledger_retention: self.ledger_retention,
            app_role: (self.app_role != "off").then(|| self.app_role.clone()),
            app_password: self.app_password.clone(),
        })
    }
}

/// Migrates the database at `url` to the current schema and prints what was applied.
pub async fn run(url: &str, args: &MigrateArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let report = schema::migrate_url(url, &config)
        .await
        .context("migrating")?;
    match report.applied.as_slice() {
        [] => println!(
            "schema is up to date: {} variant, version {}",
            report.variant, report.version
        ),
        applied => println!(
            "applied {applied:?}: {} variant, now version {}",
            report.variant, report.version
        ),
    }
    if let Some(role) = &report.app_role {
        println!("least-privilege role {role} granted");
    }
    for m in &report.maintenance {
        println!(
            "{}: {} partitions created ({} rows moved in), {} dropped and {} rows deleted by \
             retention, {} rows in the default partition; insert-triggered autovacuum off on \
             {} leaf tables of open partitions, back on for {} of closed ones",
            m.table,
            m.partitions_created,
            m.rows_moved,
            m.partitions_dropped,
            m.rows_expired,
            m.rows_in_default,
            m.vacuum_held,
            m.vacuum_released
        );
    }
    Ok(())
}

/// `90d`, `6h`, `15m`, `30s` (one number, one unit).
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .with_context(|| format!("{s:?}: expected e.g. 90d, 6h, 15m, 30s"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => bail!("{s:?}: the unit must be one of s, m, h, d"),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// A duration, or `off`.
pub fn parse_optional_duration(s: &str) -> anyhow::Result<OptionalDuration> {
    if s == "off" {
        return Ok(OptionalDuration(None));
    }
    parse_duration(s).map(|d| OptionalDuration(Some(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_optional_duration("off").unwrap().0.is_none());
    }
}
