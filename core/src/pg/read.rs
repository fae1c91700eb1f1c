//! [`ReadClient`]: the replica-aware read connection that market-data reads
//! ([`MarketDataReader`](crate::query::MarketDataReader)) and the order desk's reads share.
//!
//! It reads from the database its URL names; given a primary to fall back on, it reads
//! from the replica only while the replica is up and at most `max_lag` behind, judged
//! again every second. Every statement is unnamed (`query_typed`), so it also works through
//! PgBouncer in transaction mode.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, Row};

use crate::error::{Error, Result};
use crate::pg::connect::{connect, PgUrl};

/// How long a judgement of the replica holds.
const REPLICA_CHECK_EVERY: Duration = Duration::from_secs(1);

/// One cached, pipelined connection to a primary or a replica (with the primary to fall
/// back on). Cheap to share: `&self` methods run concurrently; it reconnects on the next
/// call after the connection is lost.
pub(crate) struct ReadClient {
    url: PgUrl,
    client: Mutex<Option<Arc<Client>>>,
    /// For a replica: the primary, read instead while the replica is down or lags.
    fallback: Option<Fallback>,
}

struct Fallback {
    primary: Box<ReadClient>,
    max_lag: Duration,
    /// The replica's last judgement; `None` before the first.
    verdict: Mutex<Option<Verdict>>,
}

/// One judgement of the replica.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    /// When it was made.
    at: Instant,
    /// Whether reads go to the replica.
    fit: bool,
    /// The lag measured on the replica; `None` when it could not be measured.
    lag: Option<Duration>,
}

impl fmt::Debug for ReadClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config may hold a password; show only where it points.
        f.debug_struct("ReadClient")
            .field("hosts", &self.url.config.get_hosts())
            .field("dbname", &self.url.config.get_dbname())
            .finish()
    }
}

fn parse_read_url(url: &str) -> Result<PgUrl> {
    PgUrl::parse(url)
}

impl ReadClient {
    /// Connects to `url` (a primary or a replica).
    pub(crate) async fn connect(url: &str) -> Result<Self> {
        let reader = ReadClient::connect_later(url)?;
        reader.client().await?;
        Ok(reader)
    }

    /// A client of `url` that connects on its first read: it is created while the
    /// database is down, and each read fails until it is back.
    pub(crate) fn connect_later(url: &str) -> Result<Self> {
        Ok(ReadClient {
            url: parse_read_url(url)?,
            client: Mutex::new(None),
            fallback: None,
        })
    }

    /// Reads from the replica at `replica_url` while it is up and at most `max_lag`
    /// behind, else from the primary at `primary_url`. Only the primary must be reachable
    /// now.
    pub(crate) async fn with_fallback(
        replica_url: &str,
        primary_url: &str,
        max_lag: Duration,
    ) -> Result<Self> {
        let reader = ReadClient::with_fallback_later(replica_url, primary_url, max_lag)?;
        if let Some(f) = &reader.fallback {
            f.primary.client().await?;
        }
        Ok(reader)
    }

    /// [`with_fallback`](Self::with_fallback), connecting on the first read.
    pub(crate) fn with_fallback_later(
        replica_url: &str,
        primary_url: &str,
        max_lag: Duration,
    ) -> Result<Self> {
        Ok(ReadClient {
            url: parse_read_url(replica_url)?,
            client: Mutex::new(None),
            fallback: Some(Fallback {
                primary: Box::new(ReadClient::connect_later(primary_url)?),
                max_lag,
                verdict: Mutex::new(None),
            }),
        })
    }

    /// Where this client reads (the replica, for one with a fallback).
    pub(crate) fn config(&self) -> &Config {
        &self.url.config
    }

    /// The replica's lag as last measured (at most a second before the last
    /// [`on_replica`](Self::on_replica) or read); `None` for a client without a replica,
    /// before the first measurement, and while the replica cannot be reached.
    pub(crate) fn replica_lag(&self) -> Option<Duration> {
        let f = self.fallback.as_ref()?;
        let verdict = *f.verdict.lock().unwrap_or_else(|e| e.into_inner());
        verdict?.lag
    }

    /// Whether reads go to the replica now (`false` for a client without one).
    pub(crate) async fn on_replica(&self) -> bool {
        let Some(f) = &self.fallback else {
            return false;
        };
        let fresh = *f.verdict.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = fresh.filter(|v| v.at.elapsed() < REPLICA_CHECK_EVERY) {
            return v.fit;
        }
        // Caught up when everything received is replayed; otherwise the replay's age.
        let lag = "SELECT CASE WHEN NOT pg_is_in_recovery() \
                   OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0::float8 \
                   ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, 0) END";
        let measured = match self.query_here("measuring replica lag", lag, &[]).await {
            // Negative only if the clocks disagree; NaN or past `Duration`'s range, unknown.
            Ok(rows) => rows
                .first()
                .and_then(|r| r.try_get::<_, f64>(0).ok())
                .and_then(|secs| Duration::try_from_secs_f64(secs.max(0.0)).ok()),
            Err(e) => {
                tracing::warn!(error = %e, "replica unreachable: reading from the primary");
                None
            }
        };
        let fit = measured.is_some_and(|lag| lag <= f.max_lag);
        if let Some(lag) = measured.filter(|_| !fit) {
            tracing::warn!(
                lag_s = lag.as_secs_f64(),
                "replica lags: reading from the primary"
            );
        }
        *f.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(Verdict {
            at: Instant::now(),
            fit,
            lag: measured,
        });
        fit
    }

    /// The cached connection, made now if there is none or it closed.
    pub(crate) async fn client(&self) -> Result<Arc<Client>> {
        if let Some(c) = self.lock().as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let client = connect(&self.url, "christmas-reader", "connecting the reader").await?;
        let client = Arc::new(client);
        *self.lock() = Some(client.clone());
        Ok(client)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Arc<Client>>> {
        self.client.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `sql` (unnamed) on the replica when it is fit, else on the primary; `context`
    /// names what failed in the error.
    pub(crate) async fn query(
        &self,
        context: &'static str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>> {
        let Some(f) = &self.fallback else {
            return self.query_here(context, sql, params).await;
        };
        if self.on_replica().await {
            match self.query_here(context, sql, params).await {
                Ok(rows) => return Ok(rows),
                Err(e) => {
                    tracing::warn!(error = %e, "replica read failed: reading from the primary");
                    *f.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(Verdict {
                        at: Instant::now(),
                        fit: false,
                        lag: None,
                    });
                }
            }
        }
        f.primary.query_here(context, sql, params).await
    }

    async fn query_here(
        &self,
        context: &'static str,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>> {
        self.client()
            .await?
            .query_typed(sql, params)
            .await
            .map_err(|e| Error::pg(context, e))
    }
}
