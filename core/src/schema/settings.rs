//! `christmas_settings`, stored once and kept: a new database gets the [`SchemaConfig`]'s
//! values; on one that has settings the migrator changes only those named in
//! [`SchemaConfig::change`], and a change that would delete rows (retention turned on or
//! shortened, or a shorter ledger retention that prunes ledger rows) only with
//! [`SchemaConfig::confirm_deletion`].

use std::time::Duration;

use tokio_postgres::Client;

use crate::schema::config::{SchemaConfig, Setting};
use crate::schema::variant::Variant;
use crate::{Error, Result};

/// What a confirmed retention change removes from one table (counted just before it is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// `market_data` or `quotes`; for a shorter ledger retention, `ingest_batches` (the
    /// batch ledger) or `ingest_producers` (how far each idempotent producer committed).
    pub table: String,
    /// Time partitions (plain) or chunks (TimescaleDB) dropped; 0 for the ledger tables.
    pub partitions: u32,
    /// Rows deleted.
    pub rows: u64,
}

/// `120 rows in 3 partitions of market_data`, or `40 rows of ingest_batches`.
impl std::fmt::Display for Deletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.table.starts_with("ingest_") {
            write!(f, "{} rows of {}", self.rows, self.table)
        } else {
            write!(
                f,
                "{} rows in {} partitions of {}",
                self.rows, self.partitions, self.table
            )
        }
    }
}

/// What [`migrate`](crate::schema::migrate) did to `christmas_settings`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsOutcome {
    /// A new database: the config's values were stored.
    Created,
    /// Already stored and nothing asked to change them (or the values asked were stored).
    Unchanged,
    /// These settings were changed as asked.
    Changed(Vec<Setting>),
}

/// The settings row, durations in whole seconds.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Stored {
    chunk_interval: f64,
    space_partitions: i32,
    partitions_ahead: i32,
    compress_after: Option<f64>,
    retention: Option<f64>,
    ledger_retention: f64,
}

fn seconds(d: Duration) -> f64 {
    d.as_secs() as f64
}

impl Stored {
    fn of(config: &SchemaConfig) -> Stored {
        Stored {
            chunk_interval: seconds(config.chunk_interval),
            space_partitions: config.space_partitions as i32,
            partitions_ahead: config.partitions_ahead as i32,
            compress_after: config.compress_after.map(seconds),
            retention: config.retention.map(seconds),
            ledger_retention: seconds(config.ledger_retention),
        }
    }

    /// `self` with the settings `config` asks to change taken from it.
    fn changed_by(&self, config: &SchemaConfig) -> Stored {
        let wanted = Stored::of(config);
        let mut out = self.clone();
        for s in &config.change {
            match s {
                Setting::ChunkInterval => out.chunk_interval = wanted.chunk_interval,
                Setting::SpacePartitions => out.space_partitions = wanted.space_partitions,
                Setting::PartitionsAhead => out.partitions_ahead = wanted.partitions_ahead,
                Setting::CompressAfter => out.compress_after = wanted.compress_after,
                Setting::Retention => out.retention = wanted.retention,
                Setting::LedgerRetention => out.ledger_retention = wanted.ledger_retention,
            }
        }
        out
    }

    fn differs(&self, other: &Stored) -> Vec<Setting> {
        Setting::ALL
            .into_iter()
            .filter(|s| match s {
                Setting::ChunkInterval => self.chunk_interval != other.chunk_interval,
                Setting::SpacePartitions => self.space_partitions != other.space_partitions,
                Setting::PartitionsAhead => self.partitions_ahead != other.partitions_ahead,
                Setting::CompressAfter => self.compress_after != other.compress_after,
                Setting::Retention => self.retention != other.retention,
                Setting::LedgerRetention => self.ledger_retention != other.ledger_retention,
            })
            .collect()
    }

    /// True when going from `self` to `next` keeps less history.
    fn deletes_more(&self, next: &Stored) -> bool {
        match (self.retention, next.retention) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(old), Some(new)) => new < old,
        }
    }
}

/// The stored settings, if the database has them.
pub(super) async fn read(client: &Client) -> Result<Option<Stored>> {
    let row = client
        .query_opt(
            "SELECT extract(epoch FROM chunk_interval)::float8, space_partitions,
                    partitions_ahead, extract(epoch FROM compress_after)::float8,
                    extract(epoch FROM retention)::float8,
                    extract(epoch FROM ledger_retention)::float8
               FROM christmas_settings",
            &[],
        )
        .await
        .map_err(|e| Error::pg("reading christmas_settings", e))?;
    Ok(row.map(|r| Stored {
        chunk_interval: r.get(0),
        space_partitions: r.get(1),
        partitions_ahead: r.get(2),
        compress_after: r.get(3),
        retention: r.get(4),
        ledger_retention: r.get(5),
    }))
}

/// Stores a new database's settings, all but retention: that is set by [`settle`] after
/// the migrations, like any change that may delete rows (a database made before versioned
/// migrations has rows already).
pub(super) async fn create(client: &Client, variant: Variant, config: &SchemaConfig) -> Result<()> {
    let s = Stored::of(config);
    client
        .execute(
            "INSERT INTO christmas_settings (variant, chunk_interval, space_partitions,
                 partitions_ahead, compress_after, retention, ledger_retention)
             VALUES ($1, $2 * interval '1 second', $3, $4, $5 * interval '1 second', NULL,
                     $6 * interval '1 second')
             ON CONFLICT (singleton) DO NOTHING",
            &[
                &variant.as_str(),
                &s.chunk_interval,
                &s.space_partitions,
                &s.partitions_ahead,
                &s.compress_after,
                &s.ledger_retention,
            ],
        )
        .await
        .map_err(|e| Error::pg("writing christmas_settings", e))?;
    Ok(())
}

/// Brings the stored settings to what `config` asks (the config's values for a database
/// that had none, else the stored ones with `config.change` applied). Refuses a partition
/// width change once the plain variant has partitions, and a retention change that would
/// delete rows unless `config.confirm_deletion`; returns what changed and what the
/// confirmed change will remove.
pub(super) async fn settle(
    client: &Client,
    variant: Variant,
    config: &SchemaConfig,
    before: Option<&Stored>,
) -> Result<(SettingsOutcome, Vec<Deletion>)> {
    let current = read(client)
        .await?
        .ok_or_else(|| Error::schema("christmas_settings has no row"))?;
    let target = match before {
        Some(b) => b.changed_by(config),
        None => Stored::of(config),
    };
    let changed = current.differs(&target);
    if changed.is_empty() {
        let outcome = if before.is_some() {
            SettingsOutcome::Unchanged
        } else {
            SettingsOutcome::Created
        };
        return Ok((outcome, Vec::new()));
    }
    if variant == Variant::Postgres && changed.contains(&Setting::ChunkInterval) {
        refuse_width_change(client, &current, &target).await?;
    }
    let mut deletions = Vec::new();
    if current.deletes_more(&target) {
        let keep = target.retention.unwrap_or_default();
        for table in ["market_data", "quotes"] {
            let row = client
                .query_one(
                    "SELECT partitions, rows
                       FROM christmas_retention_preview($1, $2 * interval '1 second')",
                    &[&table, &keep],
                )
                .await
                .map_err(|e| Error::pg("counting what the retention would delete", e))?;
            let d = Deletion {
                table: table.into(),
                partitions: row.get::<_, i32>(0) as u32,
                rows: row.get::<_, i64>(1) as u64,
            };
            if d.partitions > 0 || d.rows > 0 {
                deletions.push(d);
            }
        }
    }
    if target.ledger_retention < current.ledger_retention {
        // Pruning the ledger forgets batches and producers: a spool replayed or a producer
        // resending after that could store its ticks again.
        // A producer's committed_at moves once a minute (version 12), so its pruning waits
        // a minute more: counted the same way here.
        for (table, slack) in [
            ("ingest_batches", ""),
            ("ingest_producers", " - interval '1 minute'"),
        ] {
            let rows: i64 = client
                .query_one(
                    &format!(
                        "SELECT count(*) FROM {table}
                          WHERE committed_at < now() - $1 * interval '1 second'{slack}"
                    ),
                    &[&target.ledger_retention],
                )
                .await
                .map_err(|e| Error::pg("counting what the ledger retention would prune", e))?
                .get(0);
            if rows > 0 {
                deletions.push(Deletion {
                    table: table.into(),
                    partitions: 0,
                    rows: rows as u64,
                });
            }
        }
    }
    if !deletions.is_empty() && !config.confirm_deletion {
        let what = deletions
            .iter()
            .map(Deletion::to_string)
            .collect::<Vec<_>>()
            .join(" and ");
        let (field, keep) = if deletions
            .iter()
            .all(|d| d.partitions == 0 && d.table.starts_with("ingest_"))
        {
            ("ledger_retention", target.ledger_retention)
        } else {
            ("retention", target.retention.unwrap_or_default())
        };
        return Err(Error::config(
            field,
            format!(
                "a {field} of {keep} s would delete {what} now; nothing was changed. \
                 Confirm with --yes (SchemaConfig::confirm_deletion)"
            ),
        ));
    }
    write(client, &target).await?;
    let outcome = match before {
        Some(_) => SettingsOutcome::Changed(changed),
        None => SettingsOutcome::Created,
    };
    Ok((outcome, deletions))
}

async fn refuse_width_change(client: &Client, current: &Stored, target: &Stored) -> Result<()> {
    // Time partitions of another width would overlap the existing ones.
    let parts: i64 = client
        .query_one(
            "SELECT CASE WHEN to_regclass('christmas_partitions') IS NULL THEN 0
                         ELSE (SELECT count(*) FROM christmas_partitions) END",
            &[],
        )
        .await
        .map_err(|e| Error::pg("counting partitions", e))?
        .get(0);
    if parts > 0 {
        return Err(Error::config(
            "chunk_interval",
            format!(
                "the database's partitions are {} s wide and cannot change to {} s",
                current.chunk_interval, target.chunk_interval
            ),
        ));
    }
    Ok(())
}

async fn write(client: &Client, s: &Stored) -> Result<()> {
    client
        .execute(
            "UPDATE christmas_settings SET
                 chunk_interval = $1 * interval '1 second',
                 space_partitions = $2,
                 partitions_ahead = $3,
                 compress_after = $4 * interval '1 second',
                 retention = $5 * interval '1 second',
                 ledger_retention = $6 * interval '1 second',
                 updated_at = now()",
            &[
                &s.chunk_interval,
                &s.space_partitions,
                &s.partitions_ahead,
                &s.compress_after,
                &s.retention,
                &s.ledger_retention,
            ],
        )
        .await
        .map_err(|e| Error::pg("writing christmas_settings", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_settings_change_and_shorter_retention_deletes() {
        let stored = Stored::of(&SchemaConfig {
            retention: None,
            chunk_interval: Duration::from_secs(6 * 3_600),
            ..SchemaConfig::default()
        });
        // The defaults say 1 day and 90 days; with nothing named, nothing changes.
        let same = stored.changed_by(&SchemaConfig::default());
        assert_eq!(same, stored);
        let on = stored.changed_by(&SchemaConfig {
            change: vec![Setting::Retention],
            ..SchemaConfig::default()
        });
        assert_eq!(stored.differs(&on), vec![Setting::Retention]);
        assert_eq!(on.chunk_interval, 6.0 * 3_600.0);
        assert!(stored.deletes_more(&on));
        let shorter = on.changed_by(&SchemaConfig {
            retention: Some(Duration::from_secs(86_400)),
            change: vec![Setting::Retention],
            ..SchemaConfig::default()
        });
        assert!(on.deletes_more(&shorter));
        assert!(!shorter.deletes_more(&on));
        assert!(!on.deletes_more(&stored));
    }
}
