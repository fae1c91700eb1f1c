//! `christmas-ingest migrate`: flags → `SchemaConfig` → `christmas_core::schema::migrate`.

use std::time::Duration;

use anyhow::{bail, Context};
use christmas_core::schema::{self, SchemaConfig, Setting, SettingsOutcome, Variant};

/// Flags of `migrate`. The settings flags set a new database's settings (defaults: the
/// library's, `SchemaConfig::default()`); on a database that has settings, only the flags
/// given change them, and without any `migrate` changes nothing.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Schema variant: `auto` (the installed one, else Citus when the database has the
    /// citus extension, else TimescaleDB when the server can load it, else plain
    /// PostgreSQL), `postgres`, `timescaledb` or `citus`.
    #[arg(long, default_value = "auto")]
    variant: String,
    /// Width of a chunk / time partition (e.g. 1d, 6h; new database: 1d).
    #[arg(long, value_parser = parse_duration)]
    chunk_interval: Option<Duration>,
    /// Symbol (hash) partitions per time partition, or shards per table on Citus (new
    /// database: 4).
    #[arg(long)]
    space_partitions: Option<u32>,
    /// Time partitions kept created ahead of now (plain PostgreSQL; new database: 3).
    #[arg(long)]
    partitions_ahead: Option<u32>,
    /// Compress chunks (TimescaleDB) or move partitions to columnar storage (Citus) older
    /// than this, or `off` (new database: 7d).
    #[arg(long, value_parser = parse_optional_duration)]
    compress_after: Option<OptionalDuration>,
    /// Drop ticks older than this, or `off` (new database: 90d). Turning it on or
    /// shortening it prints what it would delete and needs --yes.
    #[arg(long, value_parser = parse_optional_duration)]
    retention: Option<OptionalDuration>,
    /// Keep exactly-once ledger rows this long (new database: 7d). Shortening it so that
    /// rows would be pruned prints how many and needs --yes.
    #[arg(long, value_parser = parse_duration)]
    ledger_retention: Option<Duration>,
    /// Confirm a settings change that deletes rows (retention turned on or shortened, or a
    /// shorter ledger retention that would prune ledger rows).
    #[arg(long)]
    yes: bool,
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
        let mut c = SchemaConfig {
            variant: match self.variant.as_str() {
                "auto" => None,
                v => Some(v.parse::<Variant>()?),
            },
            app_role: (self.app_role != "off").then(|| self.app_role.clone()),
            app_password: self.app_password.clone(),
            confirm_deletion: self.yes,
            ..SchemaConfig::default()
        };
        let mut given = |s: Setting, present: bool| {
            if present {
                c.change.push(s);
            }
        };
        given(Setting::ChunkInterval, self.chunk_interval.is_some());
        given(Setting::SpacePartitions, self.space_partitions.is_some());
        given(Setting::PartitionsAhead, self.partitions_ahead.is_some());
        given(Setting::CompressAfter, self.compress_after.is_some());
        given(Setting::Retention, self.retention.is_some());
        given(Setting::LedgerRetention, self.ledger_retention.is_some());
        c.chunk_interval = self.chunk_interval.unwrap_or(c.chunk_interval);
        c.space_partitions = self.space_partitions.unwrap_or(c.space_partitions);
        c.partitions_ahead = self.partitions_ahead.unwrap_or(c.partitions_ahead);
        c.compress_after = self.compress_after.map_or(c.compress_after, |d| d.0);
        c.retention = self.retention.map_or(c.retention, |d| d.0);
        c.ledger_retention = self.ledger_retention.unwrap_or(c.ledger_retention);
        Ok(c)
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
    match &report.settings {
        SettingsOutcome::Created => println!("settings stored for the new database"),
        SettingsOutcome::Unchanged => println!("settings unchanged"),
        SettingsOutcome::Changed(list) => {
            let names: Vec<&str> = list.iter().map(|s| s.as_str()).collect();
            println!("settings changed: {}", names.join(", "));
        }
    }
    for d in &report.deletions {
        println!("confirmed deletion of {d}");
    }
    if let Some(role) = &report.app_role {
        println!("least-privilege role {role} granted");
    }
    for m in &report.maintenance {
        println!(
            "{}: {} partitions created ({} rows moved in), {} dropped and {} rows deleted by \
             retention, {} rows in the default partition; insert-triggered autovacuum off on \
             {} leaf tables of open partitions, back on for {} of closed ones; {} partitions \
             moved to columnar storage",
            m.table,
            m.partitions_created,
            m.rows_moved,
            m.partitions_dropped,
            m.rows_expired,
            m.rows_in_default,
            m.vacuum_held,
            m.vacuum_released,
            m.partitions_compressed
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

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: MigrateArgs,
    }

    fn config(flags: &[&str]) -> SchemaConfig {
        use clap::Parser;
        let argv = std::iter::once("migrate").chain(flags.iter().copied());
        Cli::try_parse_from(argv).unwrap().args.config().unwrap()
    }

    #[test]
    fn no_flags_change_nothing_and_a_flag_changes_its_setting() {
        let none = config(&[]);
        assert!(none.change.is_empty());
        assert!(!none.confirm_deletion);
        // A new database still gets the defaults.
        assert_eq!(none.retention, SchemaConfig::default().retention);
        let off = config(&["--retention", "off", "--chunk-interval", "6h"]);
        assert_eq!(off.change, vec![Setting::ChunkInterval, Setting::Retention]);
        assert_eq!(off.retention, None);
        assert_eq!(off.chunk_interval, Duration::from_secs(6 * 3_600));
        let on = config(&["--retention", "30d", "--yes"]);
        assert_eq!(on.change, vec![Setting::Retention]);
        assert_eq!(on.retention, Some(Duration::from_secs(30 * 86_400)));
        assert!(on.confirm_deletion);
    }
}
