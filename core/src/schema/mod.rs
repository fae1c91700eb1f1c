//! The versioned schema in `sql/` and the migrator that applies it.
//!
//! [`migrate`] (or `christmas-ingest migrate`) brings a database to the current schema:
//!
//! 1. takes a session advisory lock, so several daemons may migrate at once and all but the
//!    first find nothing to do;
//! 2. creates `christmas_migrations` and `christmas_settings`;
//! 3. picks the [`Variant`]: the one already installed, else the one asked for, else
//!    TimescaleDB when the server can load it (in `pg_available_extensions`, and already
//!    created or its preloaded library's settings visible in `pg_settings`: nothing that
//!    needs a superuser), else plain PostgreSQL, and on a new database stores the
//!    [`SchemaConfig`]'s settings;
//! 4. applies each migration not yet recorded, each in its own transaction (the
//!    TimescaleDB continuous aggregate, which cannot run in one, statement by statement),
//!    and refuses to go on if an applied migration's text has changed;
//! 5. changes the stored settings named in [`SchemaConfig::change`] (and nothing else: a
//!    run without changes keeps what is stored); a change that would delete rows
//!    (retention turned on or shortened) is refused, with the rows and partitions it would
//!    remove, unless [`SchemaConfig::confirm_deletion`];
//! 6. applies the settings to the TimescaleDB policies, altering the jobs in place, or
//!    creates the plain variant's current and upcoming partitions ([`maintain`]);
//! 7. when connected as a role that may create roles, creates the least-privilege role
//!    ([`SchemaConfig::app_role`]) and grants it what the daemon needs (`sql/grants.sql`).
//!
//! Both variants have the same tables and columns (`market_data`, `quotes`,
//! `ingest_batches`, `ingest_dead_letters`, `orders`), the same `market_data_1m` relation
//! and the same SQL functions, so the engine and the [`query`](crate::query) API never ask
//! which one they talk to.

mod config;
mod maintenance;
mod migration;
mod settings;
mod variant;

use std::time::Duration;

use tokio_postgres::Client;

use crate::pg;
use crate::{Error, Result};

pub use config::{SchemaConfig, Setting};
pub use maintenance::{maintain, maintain_at, prune_ledger, MaintenanceReport};
pub(crate) use maintenance::{partitions_and_retention, upkeep};
pub use migration::{migrations, split_statements, Migration, BOOTSTRAP_SQL, GRANTS_SQL};
pub use settings::{Deletion, SettingsOutcome};
pub use variant::Variant;

/// Key of the session advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x6368_7269_7374_6d61; // "christma"

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The database's variant.
    pub variant: Variant,
    /// Versions applied by this run (empty when the schema was already current).
    pub applied: Vec<u32>,
    /// The schema version now installed.
    pub version: u32,
    /// The least-privilege role that was created or re-granted, if any.
    pub app_role: Option<String>,
    /// Partition maintenance of `market_data` and `quotes` (plain variant; zeros otherwise).
    pub maintenance: Vec<MaintenanceReport>,
    /// What happened to `christmas_settings`.
    pub settings: SettingsOutcome,
    /// What a confirmed retention change removes (empty when nothing is deleted).
    pub deletions: Vec<Deletion>,
}

/// Connects to `url` and runs [`migrate`].
pub async fn migrate_url(url: &str, config: &SchemaConfig) -> Result<MigrationReport> {
    let client = pg::connect(&pg::parse_url(url)?, "christmas-migrate", "connecting").await?;
    migrate(&client, config).await
}

/// Brings the database `client` is connected to up to the current schema (see the module
/// docs). Idempotent, and safe to run from several processes at once.
pub async fn migrate(client: &Client, config: &SchemaConfig) -> Result<MigrationReport> {
    config.validate()?;
    client
        .query("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| Error::pg("taking the migration lock", e))?;
    let result = migrate_locked(client, config).await;
    // If the connection broke, the server released the lock with the session.
    let _ = client
        .query("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn migrate_locked(client: &Client, config: &SchemaConfig) -> Result<MigrationReport> {
    client
        .batch_execute(BOOTSTRAP_SQL)
        .await
        .map_err(|e| Error::pg("creating christmas_migrations / christmas_settings", e))?;
    let before = settings::read(client).await?;
    let variant = choose_variant(client, config.variant).await?;
    if before.is_none() {
        settings::create(client, variant, config).await?;
    }

    let applied: Vec<(i32, String)> = client
        .query("SELECT version, checksum FROM christmas_migrations", &[])
        .await
        .map_err(|e| Error::pg("reading christmas_migrations", e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut report = MigrationReport {
        variant,
        applied: Vec::new(),
        version: 0,
        app_role: None,
        maintenance: Vec::new(),
        settings: SettingsOutcome::Unchanged,
        deletions: Vec::new(),
    };
    for m in migrations(variant) {
        match applied.iter().find(|(v, _)| *v as u32 == m.version) {
            Some((_, sum)) if *sum == m.checksum() => {}
            Some((_, sum)) => {
                return Err(Error::schema(format!(
                    "migration {} ({}) was applied with checksum {sum} and its file now has {}; \
                     an applied migration must not change: add a new version instead",
                    m.version,
                    m.name,
                    m.checksum()
                )))
            }
            None => {
                apply(client, variant, m).await?;
                report.applied.push(m.version);
            }
        }
        report.version = m.version;
    }
    if let Some(newer) = applied
        .iter()
        .map(|(v, _)| *v as u32)
        .filter(|v| *v > report.version)
        .max()
    {
        return Err(Error::schema(format!(
            "the database has schema version {newer}, newer than this build knows ({}); \
             upgrade christmas",
            report.version
        )));
    }
    (report.settings, report.deletions) =
        settings::settle(client, variant, config, before.as_ref()).await?;

    match variant {
        Variant::TimescaleDb => {
            client
                .batch_execute("SELECT christmas_apply_policies()")
                .await
                .map_err(|e| Error::pg("applying TimescaleDB policies", e))?;
        }
        Variant::Postgres => {
            for table in ["market_data", "quotes"] {
                report.maintenance.push(maintain(client, table).await?);
            }
        }
        Variant::Citus => {
            citus_settings(client).await?;
            for table in ["market_data", "quotes"] {
                report.maintenance.push(maintain(client, table).await?);
            }
        }
    }
    if let Some(role) = &config.app_role {
        if grant_app_role(client, role, config.app_password.as_deref()).await? {
            report.app_role = Some(role.clone());
        }
    }
    if !report.applied.is_empty() {
        tracing::info!(%variant, applied = ?report.applied, version = report.version, "schema migrated");
    }
    Ok(report)
}

async fn choose_variant(client: &Client, asked: Option<Variant>) -> Result<Variant> {
    let row = client
        .query_one(
            "SELECT (SELECT variant FROM christmas_settings),
                    EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),
                    EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
                    EXISTS (SELECT 1 FROM pg_settings
                             WHERE (name = 'shared_preload_libraries'
                                    AND setting LIKE '%timescaledb%')
                                OR name = 'timescaledb.max_background_workers'),
                    EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')",
            &[],
        )
        .await
        .map_err(|e| Error::pg("detecting the schema variant", e))?;
    let installed: Option<String> = row.get(0);
    let (loaded, available, preloaded): (bool, bool, bool) = (row.get(1), row.get(2), row.get(3));
    let citus: bool = row.get(4);
    if let Some(installed) = installed {
        let installed: Variant = installed.parse()?;
        return match asked {
            Some(v) if v != installed => Err(Error::schema(format!(
                "the database already has the {installed} variant; it cannot become {v}"
            ))),
            _ => Ok(installed),
        };
    }
    let usable = loaded || (available && preloaded);
    match asked {
        Some(Variant::TimescaleDb) if !available => Err(Error::schema(
            "TimescaleDB was asked for but the server does not have the extension \
             (not in pg_available_extensions)",
        )),
        Some(Variant::TimescaleDb) if !usable => Err(Error::schema(
            "TimescaleDB is installed but not loaded: add timescaledb to \
             shared_preload_libraries and restart PostgreSQL",
        )),
        Some(Variant::Citus) if !citus => Err(Error::schema(
            "Citus was asked for but this database has no citus extension: as a superuser, \
             add citus to shared_preload_libraries on the coordinator and every worker, run \
             CREATE EXTENSION citus in this database on each of them, and add the workers \
             with SELECT citus_add_node(host, port) on the coordinator (scripts/citus.sh \
             does all of it on loopback)",
        )),
        Some(v) => Ok(v),
        None if citus => Ok(Variant::Citus),
        None if usable => Ok(Variant::TimescaleDb),
        None => Ok(Variant::Postgres),
    }
}

/// The engine's Citus settings for every new session of this database (so the daemon's
/// connections get them without asking): one connection per worker for each statement
/// (`citus.max_adaptive_executor_pool_size = 1`). With Citus's default (16) a batch's COPY
/// opens a connection per shard on each worker, and in `christmas-bench ingest` a batch took
/// 76 ms to commit instead of 9-13 ms (bench/RESULTS.md, "Citus against plain PostgreSQL").
/// Needs the database's owner; otherwise says what an administrator should run. Then checks
/// the server settings it cannot change.
async fn citus_settings(client: &Client) -> Result<()> {
    citus_server_checks(client).await?;
    let owner: bool = client
        .query_one(
            "SELECT pg_has_role(current_user, d.datdba, 'USAGE')
               FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(|e| Error::pg("checking the database's owner", e))?
        .get(0);
    if !owner {
        tracing::warn!(
            "not the database's owner: run ALTER DATABASE <name> SET \
             citus.max_adaptive_executor_pool_size = 1 as its owner"
        );
        return Ok(());
    }
    client
        .batch_execute(
            "DO $$ BEGIN
                 EXECUTE format('ALTER DATABASE %I SET citus.max_adaptive_executor_pool_size = 1',
                                current_database());
             END $$",
        )
        .await
        .map_err(|e| Error::pg("setting the database's Citus executor pool size", e))
}

/// Server settings the migrator cannot change (they need a superuser and a reload or a
/// restart), checked and logged: the recovery interval of cut-off two-phase commits (their
/// rows are invisible until it runs) and the workers' prepared-transaction slots.
async fn citus_server_checks(client: &Client) -> Result<()> {
    let row = client
        .query_one(
            "SELECT current_setting('citus.recover_2pc_interval'),
                    coalesce(extract(epoch FROM
                        CASE WHEN current_setting('citus.recover_2pc_interval') LIKE '-%'
                             THEN NULL
                             ELSE current_setting('citus.recover_2pc_interval')::interval
                        END), -1)::float8,
                    (SELECT count(*) FROM run_command_on_workers(
                        $$SELECT current_setting('max_prepared_transactions')::int
                                 >= current_setting('max_connections')::int$$)
                      WHERE NOT success OR result <> 't')",
            &[],
        )
        .await
        .map_err(|e| Error::pg("reading the Citus cluster's settings", e))?;
    let (interval, seconds, short): (String, f64, i64) = (row.get(0), row.get(1), row.get(2));
    if !(0.0..=10.0).contains(&seconds) {
        tracing::warn!(
            citus.recover_2pc_interval = %interval,
            "rows of a batch whose COMMIT PREPARED was cut off stay invisible until Citus \
             recovers it: set citus.recover_2pc_interval = '10s' on the coordinator"
        );
    }
    if short > 0 {
        tracing::warn!(
            workers = short,
            "workers with max_prepared_transactions below max_connections: cut-off commits \
             can fill them and stall ingest until Citus recovers them"
        );
    }
    Ok(())
}

async fn apply(client: &Client, variant: Variant, m: &Migration) -> Result<()> {
    let record = format!(
        "INSERT INTO christmas_migrations (version, name, variant, checksum) \
         VALUES ({}, '{}', '{}', '{}')",
        m.version,
        m.name,
        variant.as_str(),
        m.checksum()
    );
    let failed = |e| {
        Error::schema(format!(
            "migration {} ({}, {variant}) failed: {}",
            m.version,
            m.name,
            pg_message(&e)
        ))
    };
    if m.transactional() {
        let sql = format!("BEGIN;\n{}\n;\n{record};\nCOMMIT;", m.sql);
        if let Err(e) = client.batch_execute(&sql).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(failed(e));
        }
    } else {
        for statement in split_statements(m.sql) {
            client.batch_execute(statement).await.map_err(failed)?;
        }
        client.batch_execute(&record).await.map_err(failed)?;
    }
    tracing::debug!(version = m.version, name = m.name, %variant, "migration applied");
    Ok(())
}

/// The server's message with its detail and hint, or the driver's.
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_string();
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => e.to_string(),
    }
}

/// Creates `role` if needed and grants it the daemon's privileges. Returns false (and does
/// nothing) when the current role may not create roles.
async fn grant_app_role(client: &Client, role: &str, password: Option<&str>) -> Result<bool> {
    let privileged: bool = client
        .query_one(
            "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| Error::pg("checking the migrating role's privileges", e))?
        .get(0);
    if !privileged {
        tracing::info!(
            role,
            "not creating the least-privilege role: the migrating role may not create roles"
        );
        return Ok(false);
    }
    // Roles are cluster-wide, and the migration lock only covers this database: another
    // database's migrator may create the same role at the same moment.
    let create = format!(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                 CREATE ROLE \"{role}\" NOLOGIN;
             END IF;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$"
    );
    client
        .batch_execute(&create)
        .await
        .map_err(|e| Error::schema(format!("creating role {role}: {}", pg_message(&e))))?;
    if let Some(pw) = password {
        let sql = format!(
            "ALTER ROLE \"{role}\" WITH LOGIN PASSWORD '{}'",
            pw.replace('\'', "''")
        );
        client.batch_execute(&sql).await.map_err(|e| {
            Error::schema(format!(
                "setting role {role}'s password: {}",
                pg_message(&e)
            ))
        })?;
    }
    let grants = GRANTS_SQL.replace("{{role}}", &format!("\"{role}\""));
    // Migrators of other databases grant to the same (cluster-wide) role at the same moment,
    // and the server then fails one with "tuple concurrently updated": try again.
    for attempt in 1.. {
        match client.batch_execute(&grants).await {
            Ok(()) => break,
            Err(e)
                if attempt < 5
                    && e.as_db_error()
                        .is_some_and(|d| d.message() == "tuple concurrently updated") =>
            {
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            Err(e) => {
                return Err(Error::schema(format!(
                    "granting to role {role}: {}",
                    pg_message(&e)
                )))
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_fields_are_named() {
        SchemaConfig::default().validate().unwrap();
        let cases = [
            (
                "chunk_interval",
                SchemaConfig {
                    chunk_interval: Duration::from_secs(5),
                    ..SchemaConfig::default()
                },
            ),
            (
                "space_partitions",
                SchemaConfig {
                    space_partitions: 0,
                    ..SchemaConfig::default()
                },
            ),
            (
                "retention",
                SchemaConfig {
                    retention: Some(Duration::from_millis(1500)),
                    ..SchemaConfig::default()
                },
            ),
            (
                "app_role",
                SchemaConfig {
                    app_role: Some("x\"; drop".into()),
                    ..SchemaConfig::default()
                },
            ),
            (
                "app_password",
                SchemaConfig {
                    app_password: Some(String::new()),
                    ..SchemaConfig::default()
                },
            ),
        ];
        for (field, cfg) in cases {
            match cfg.validate() {
                Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let cfg = SchemaConfig {
            app_password: Some("hunter2".into()),
            ..SchemaConfig::default()
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn variant_names_round_trip() {
        for v in [Variant::Postgres, Variant::TimescaleDb, Variant::Citus] {
            assert_eq!(v.as_str().parse::<Variant>().unwrap(), v);
        }
        assert!("mysql".parse::<Variant>().is_err());
    }
}
