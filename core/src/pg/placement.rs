//! Reads where Citus keeps a distributed table's hash ranges, for the engine's
//! [`ShardRouter`] (see [`Placement`]).

use std::time::Duration;

use crate::router::{Placement, ShardRouter};

/// A router over `shards` shards for `table`: placed by Citus when `url`'s database
/// distributes `table` by hash of `symbol`, else the plain FNV-1a router. Any failure
/// (PostgreSQL away, no Citus, a table not distributed) gives the plain router: only speed
/// depends on the choice.
pub(crate) async fn router_for(url: &str, table: &str, shards: usize) -> ShardRouter {
    let found = tokio::time::timeout(Duration::from_secs(5), placement(url, table, shards)).await;
    match found {
        Ok(Ok(Some(p))) => {
            tracing::info!(
                table,
                ranges = p.ranges(),
                shards,
                "Citus: each shard writes the symbols of as few workers as it can"
            );
            ShardRouter::placed(shards, p)
        }
        Ok(Ok(None)) => ShardRouter::new(shards),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "no Citus placement read");
            ShardRouter::new(shards)
        }
        Err(_) => {
            tracing::debug!("no Citus placement read within 5 s");
            ShardRouter::new(shards)
        }
    }
}

async fn placement(url: &str, table: &str, shards: usize) -> crate::Result<Option<Placement>> {
    let client = crate::pg::connect(
        &crate::pg::parse_url(url)?,
        "christmas-placement",
        "connecting to read the Citus placement",
    )
    .await?;
    let read = |e| crate::Error::pg("reading the Citus placement", e);
    let citus: bool = client
        .query_one(
            "SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL",
            &[],
        )
        .await
        .map_err(read)?
        .get(0);
    if !citus {
        return Ok(None);
    }
    // Hash-distributed by `symbol`, and every shard with one healthy placement; the node
    // group stands for the worker.
    let rows = client
        .query(
            "SELECT s.shardminvalue::int4, min(p.groupid)
               FROM pg_dist_partition d
               JOIN pg_dist_shard s USING (logicalrelid)
               JOIN pg_dist_placement p USING (shardid)
              WHERE d.logicalrelid = to_regclass($1) AND d.partmethod = 'h'
                AND column_to_column_name(d.logicalrelid, d.partkey) = 'symbol'
                AND p.shardstate = 1
              GROUP BY s.shardid, s.shardminvalue",
            &[&table],
        )
        .await
        .map_err(read)?;
    let ranges = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(Placement::new(ranges, shards))
}
