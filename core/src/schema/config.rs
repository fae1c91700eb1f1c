//! What the migrator is asked for: [`SchemaConfig`] and the [`Setting`]s it may change. Its
//! own module, so the migrator and the settings module both read it without importing
//! each other.

use std::fmt;
use std::time::Duration;

use crate::config::check_table_name;
use crate::schema::variant::Variant;
use crate::{Error, Result};

/// One column of `christmas_settings` the migrator may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    /// [`SchemaConfig::chunk_interval`].
    ChunkInterval,
    /// [`SchemaConfig::space_partitions`].
    SpacePartitions,
    /// [`SchemaConfig::partitions_ahead`].
    PartitionsAhead,
    /// [`SchemaConfig::compress_after`].
    CompressAfter,
    /// [`SchemaConfig::retention`].
    Retention,
    /// [`SchemaConfig::ledger_retention`].
    LedgerRetention,
}

impl Setting {
    /// Every setting, in column order.
    pub const ALL: [Setting; 6] = [
        Setting::ChunkInterval,
        Setting::SpacePartitions,
        Setting::PartitionsAhead,
        Setting::CompressAfter,
        Setting::Retention,
        Setting::LedgerRetention,
    ];

    /// Its column in `christmas_settings` (and field of [`SchemaConfig`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Setting::ChunkInterval => "chunk_interval",
            Setting::SpacePartitions => "space_partitions",
            Setting::PartitionsAhead => "partitions_ahead",
            Setting::CompressAfter => "compress_after",
            Setting::Retention => "retention",
            Setting::LedgerRetention => "ledger_retention",
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the migrator creates. The settings fields are stored in `christmas_settings`, where
/// the maintenance functions and TimescaleDB policies read them, when the database is new;
/// after that the stored values are kept, and only the fields named in [`Self::change`]
/// are written (so migrating again with the defaults changes nothing).
#[derive(Clone, PartialEq, Eq)]
pub struct SchemaConfig {
    /// `None` (default): keep the installed variant, or pick TimescaleDB when the server
    /// can load it, else plain PostgreSQL.
    pub variant: Option<Variant>,
    /// Time span of a chunk / time partition (default 1 day; at least 1 minute, whole
    /// seconds). Fixed once the plain variant has partitions.
    pub chunk_interval: Duration,
    /// Symbol (hash / space) partitions per time partition (default 4, 1–64).
    pub space_partitions: u32,
    /// Time partitions the plain variant keeps created ahead of now (default 3).
    pub partitions_ahead: u32,
    /// TimescaleDB: compress chunks older than this (default 7 days; `None`: never).
    pub compress_after: Option<Duration>,
    /// Drop ticks older than this (default 90 days; `None`: keep everything). Applies to
    /// whatever is stored, including replayed history.
    pub retention: Option<Duration>,
    /// Keep exactly-once ledger rows this long (default 7 days); only retries of batches
    /// younger than this are deduplicated.
    pub ledger_retention: Duration,
    /// The least-privilege role to create and grant to (default `christmas_app`); `None`
    /// skips it. Only done when the migrating role may create roles.
    pub app_role: Option<String>,
    /// Password of the least-privilege role; without one it is created `NOLOGIN`, to be
    /// granted to login roles.
    pub app_password: Option<String>,
    /// Settings of an existing database to set to this config's values (default none: the
    /// stored ones are kept).
    pub change: Vec<Setting>,
    /// Apply a change that would delete rows (retention turned on or shortened); without
    /// it such a change is refused with what it would delete.
    pub confirm_deletion: bool,
}

const DAY: Duration = Duration::from_secs(86_400);

impl Default for SchemaConfig {
    fn default() -> Self {
        SchemaConfig {
            variant: None,
            chunk_interval: DAY,
            space_partitions: 4,
            partitions_ahead: 3,
            compress_after: Some(7 * DAY),
            retention: Some(90 * DAY),
            ledger_retention: 7 * DAY,
            app_role: Some("christmas_app".into()),
            app_password: None,
            change: Vec::new(),
            confirm_deletion: false,
        }
    }
}

impl fmt::Debug for SchemaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaConfig")
            .field("variant", &self.variant)
            .field("chunk_interval", &self.chunk_interval)
            .field("space_partitions", &self.space_partitions)
            .field("partitions_ahead", &self.partitions_ahead)
            .field("compress_after", &self.compress_after)
            .field("retention", &self.retention)
            .field("ledger_retention", &self.ledger_retention)
            .field("app_role", &self.app_role)
            // Never print the password.
            .field("app_password", &self.app_password.as_ref().map(|_| "<set>"))
            .field("change", &self.change)
            .field("confirm_deletion", &self.confirm_deletion)
            .finish()
    }
}

impl SchemaConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let whole = |d: Duration| d.subsec_nanos() == 0;
        if self.chunk_interval < Duration::from_secs(60) || !whole(self.chunk_interval) {
            return Err(Error::config(
                "chunk_interval",
                "must be whole seconds, at least 1 minute",
            ));
        }
        if !(1..=64).contains(&self.space_partitions) {
            return Err(Error::config(
                "space_partitions",
                "must be between 1 and 64",
            ));
        }
        if self.partitions_ahead > 366 {
            return Err(Error::config("partitions_ahead", "must be at most 366"));
        }
        for (field, d) in [
            ("compress_after", self.compress_after),
            ("retention", self.retention),
            ("ledger_retention", Some(self.ledger_retention)),
        ] {
            if let Some(d) = d {
                if d < Duration::from_secs(60) || !whole(d) {
                    return Err(Error::config(
                        field,
                        "must be whole seconds, at least 1 minute",
                    ));
                }
            }
        }
        if let Some(role) = &self.app_role {
            check_table_name("app_role", role)?;
            if role.contains('.') {
                return Err(Error::config("app_role", "a role name has no schema"));
            }
        }
        if let Some(pw) = &self.app_password {
            if pw.is_empty() || pw.contains('\0') {
                return Err(Error::config(
                    "app_password",
                    "must be non-empty and contain no NUL",
                ));
            }
        }
        Ok(())
    }
}
