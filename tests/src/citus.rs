//! Databases on a Citus cluster (the citus schema variant): Citus does not create databases
//! across its nodes, so a test or bench database is made on the coordinator and on every
//! worker, with the extension in each and the workers added, and dropped from all of them.

use anyhow::{ensure, Context, Result};

use crate::pg::{connect, database_url};

/// One database on a Citus cluster.
#[derive(Debug, Clone)]
pub struct CitusDatabase {
    /// Its name.
    pub name: String,
    /// Its URL on the coordinator.
    pub url: String,
    /// Its URL on each worker.
    pub workers: Vec<String>,
    /// The maintenance URL of each node, coordinator first (to drop it from).
    nodes: Vec<String>,
}

/// `base` with its host and port replaced by `host:port` and its database by `db` (user and
/// query string kept).
pub fn node_url(base: &str, host: &str, port: i32, db: &str) -> Result<String> {
    let (scheme, rest) = base.split_once("://").context("a URL has ://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
    let query = rest.split_once('?').map(|(_, q)| format!("?{q}"));
    Ok(format!(
        "{scheme}://{}{host}:{port}/{db}{}",
        user.unwrap_or_default(),
        query.unwrap_or_default()
    ))
}

/// `url` with its user and password replaced.
pub fn with_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let rest = match rest.split_once('/') {
        Some((authority, path)) => {
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{host}/{path}")
        }
        None => rest.rsplit_once('@').map_or(rest, |(_, h)| h).to_string(),
    };
    format!("{scheme}://{user}:{password}@{rest}")
}

/// True when the database of `url` has the citus extension.
pub async fn is_citus(url: &str) -> Result<bool> {
    Ok(connect(url)
        .await?
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')",
            &[],
        )
        .await?
        .get(0))
}

/// Creates database `name` on the cluster whose coordinator `base` names (its database
/// must have the citus extension, the coordinator's host set and the workers added, as
/// `scripts/citus.sh` leaves it), dropping an older one of that name first.
pub async fn create_database(base: &str, name: &str) -> Result<CitusDatabase> {
    create_database_adding(base, name, usize::MAX).await
}

/// [`create_database`] with only the first `added` workers added to it (the others have
/// the database and the extension, ready for `citus_add_node`; [`CitusDatabase::workers`]
/// lists them all).
pub async fn create_database_adding(base: &str, name: &str, added: usize) -> Result<CitusDatabase> {
    let coordinator = connect(base).await?;
    let row = coordinator
        .query_one(
            "SELECT nodename, nodeport FROM pg_dist_node WHERE groupid = 0",
            &[],
        )
        .await
        .context("the coordinator is not in its pg_dist_node (citus_set_coordinator_host)")?;
    let (host, port): (String, i32) = (row.get(0), row.get(1));
    let workers: Vec<(String, i32)> = coordinator
        .query(
            "SELECT nodename, nodeport FROM pg_dist_node
              WHERE groupid > 0 AND noderole = 'primary' ORDER BY nodename, nodeport",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    ensure!(!workers.is_empty(), "the Citus coordinator has no workers");
    let mut db = CitusDatabase {
        name: name.to_string(),
        url: database_url(base, name)?,
        workers: Vec::new(),
        nodes: vec![base.to_string()],
    };
    for (h, p) in &workers {
        db.nodes.push(node_url(base, h, *p, "postgres")?);
        db.workers.push(node_url(base, h, *p, name)?);
    }
    drop_database(&db).await?;
    for (admin, worker) in db.nodes[1..].iter().zip(&db.workers) {
        connect(admin)
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("creating {name} on a worker"))?;
        connect(worker)
            .await?
            .batch_execute("CREATE EXTENSION citus")
            .await?;
    }
    coordinator
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let client = connect(&db.url).await?;
    client.batch_execute("CREATE EXTENSION citus").await?;
    client
        .execute("SELECT citus_set_coordinator_host($1, $2)", &[&host, &port])
        .await?;
    for (h, p) in workers.iter().take(added) {
        client
            .execute("SELECT citus_add_node($1, $2)", &[h, p])
            .await?;
    }
    Ok(db)
}

/// Drops `db` from every node. Prepared transactions a killed commit left (which block
/// DROP DATABASE) are recovered first through the coordinator, and rolled back on a
/// worker whose coordinator database is already gone.
pub async fn drop_database(db: &CitusDatabase) -> Result<()> {
    if let Ok(c) = connect(&db.url).await {
        let _ = c
            .batch_execute("SELECT recover_prepared_transactions()")
            .await;
    }
    connect(&db.nodes[0])
        .await?
        .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.name))
        .await?;
    for (admin, worker) in db.nodes[1..].iter().zip(&db.workers) {
        if let Ok(c) = connect(worker).await {
            let gids: Vec<String> = c
                .query(
                    "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()",
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for gid in gids {
                c.batch_execute(&format!("ROLLBACK PREPARED '{}'", gid.replace('\'', "''")))
                    .await?;
            }
        }
        connect(admin)
            .await?
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", db.name))
            .await?;
    }
    Ok(())
}
