//! The Citus variant, against a coordinator with workers named by `CHRISTMAS_CITUS_URL`
//! (`scripts/citus.sh start` makes one on loopback: a coordinator and two workers on their
//! own addresses). These tests are `#[ignore]`d, so where they do not run they count as
//! skipped; `scripts/test.sh` runs them when the variable is set or Citus is installed.
//! Each test makes its own database on the coordinator and on every worker (Citus does not
//! create databases across nodes), adds the workers to it, and drops it on every node
//! afterwards, even on failure.

use std::sync::Arc;
use std::time::Duration;

use christmas_core::query::{BarInterval, MarketDataReader};
use christmas_core::schema::{self, MaintenanceReport, SchemaConfig, Setting, Variant};
use christmas_core::{Symbol, Trade};

use christmas_tests::citus::{self, CitusDatabase};

use crate::support::{connect, count, symbols, trade};

use super::bars::check_cme_sample;
use super::*;

pub(super) const NEEDS: &str = "needs CHRISTMAS_CITUS_URL, a Citus coordinator with workers";

/// A database on the coordinator and on each worker, with the workers added; dropped from
/// every node when this is. Holds the cluster shared, or alone for a test that restarts a
/// worker (every test's connections to it would break).
pub(super) struct CitusDb {
    db: CitusDatabase,
    _shared: Option<tokio::sync::OwnedRwLockReadGuard<()>>,
    _alone: Option<tokio::sync::OwnedRwLockWriteGuard<()>>,
}

fn cluster() -> Arc<tokio::sync::RwLock<()>> {
    static CLUSTER: std::sync::OnceLock<Arc<tokio::sync::RwLock<()>>> = std::sync::OnceLock::new();
    CLUSTER.get_or_init(Default::default).clone()
}

impl std::ops::Deref for CitusDb {
    type Target = CitusDatabase;
    fn deref(&self) -> &CitusDatabase {
        &self.db
    }
}

impl CitusDb {
    pub(super) async fn new() -> CitusDb {
        Self::adding(usize::MAX).await
    }

    /// [`CitusDb::new`] with only the first `added` workers added to the database.
    pub(super) async fn adding(added: usize) -> CitusDb {
        let shared = cluster().read_owned().await;
        CitusDb {
            db: Self::create(added).await,
            _shared: Some(shared),
            _alone: None,
        }
    }

    /// The cluster to itself: no other test's database is in use meanwhile.
    pub(super) async fn alone() -> CitusDb {
        Self::alone_adding(usize::MAX).await
    }

    /// [`CitusDb::alone`] with only the first `added` workers added to the database: for a
    /// test that adds a worker and moves shards (two such tests at once failed with
    /// "failure on connection marked as essential" from `citus_add_node`).
    pub(super) async fn alone_adding(added: usize) -> CitusDb {
        let alone = cluster().write_owned().await;
        CitusDb {
            db: Self::create(added).await,
            _shared: None,
            _alone: Some(alone),
        }
    }

    async fn create(added: usize) -> CitusDatabase {
        let base = std::env::var("CHRISTMAS_CITUS_URL")
            .unwrap_or_else(|_| panic!("{NEEDS} (this test is #[ignore]d without it)"));
        let name = christmas_tests::unique_name("christmas_t");
        // Just after another test restarted a worker, the coordinator may still hold a
        // connection to it that broke: the first attempt can fail, a later one does not.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match citus::create_database_adding(&base, &name, added).await {
                Ok(db) => return db,
                Err(e) if attempt < 5 => {
                    eprintln!("creating {name} (attempt {attempt}): {e:#}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => panic!("creating {name}: {e:#}"),
            }
        }
    }
}

impl Drop for CitusDb {
    fn drop(&mut self) {
        let db = self.db.clone();
        // Drop runs inside the test's runtime: drop the database from a thread of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(citus::drop_database(&db))
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {done:?}", self.db.name);
        }
    }
}

/// A client of a worker that sees the shard tables (Citus hides them from pg_class).
async fn shards_visible(url: &str) -> Client {
    let client = connect(url).await;
    client
        .batch_execute("SET citus.override_table_visibility = off")
        .await
        .unwrap();
    client
}

/// Retention off (the tests' ticks are from 2024), everything else the defaults.
pub(super) fn citus_keep_everything() -> SchemaConfig {
    SchemaConfig {
        variant: Some(Variant::Citus),
        retention: None,
        ..SchemaConfig::default()
    }
}

/// Duplicated (symbol, exchange_seq) pairs in `market_data` (grouped by the distribution
/// column, so each worker counts its own).
pub(super) async fn duplicates(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM (SELECT symbol, exchange_seq FROM market_data
                                    GROUP BY symbol, exchange_seq HAVING count(*) > 1) d",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_CITUS_URL (scripts/citus.sh), Citus is not in Debian"]
async fn citus_variant_distributes_by_symbol_and_bars_match_the_file() {
    let db = CitusDb::new().await;
    // Asked for nothing: the citus extension in the database picks the variant.
    let report = schema::migrate_url(&db.url, &SchemaConfig::default())
        .await
        .unwrap();
    assert_eq!(report.variant, Variant::Citus);
    assert_eq!(report.version, 12);
    let client = connect(&db.url).await;
    let distributed: Vec<(String, String, i32, i64)> = client
        .query(
            "SELECT p.logicalrelid::regclass::text,
                    column_to_column_name(p.logicalrelid, p.partkey),
                    p.colocationid,
                    (SELECT count(*) FROM pg_dist_shard s WHERE s.logicalrelid = p.logicalrelid)
               FROM pg_dist_partition p
              WHERE p.logicalrelid IN ('market_data'::regclass, 'quotes'::regclass)
              ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(distributed.len(), 2, "{distributed:?}");
    for (table, column, _, shards) in &distributed {
        assert_eq!(column, "symbol", "{table}");
        assert_eq!(*shards, 4, "{table}: one shard per space partition");
    }
    assert_eq!(distributed[0].2, distributed[1].2, "quotes co-located");
    // The ledger, producers, orders and settings stay on the coordinator.
    let local: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_dist_partition
              WHERE logicalrelid::text IN ('ingest_batches', 'ingest_producers', 'orders',
                                           'order_outbox', 'christmas_settings',
                                           'ingest_dead_letters')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(local, 0);
    // Time partitions have no sub-partitions: Citus distributes one level only.
    let nested: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_inherits i JOIN pg_partitioned_table p
                 ON p.partrelid = i.inhrelid
              WHERE i.inhparent = 'market_data'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(nested, 0);
    // Every shard placement of market_data is on a worker, and each worker holds some.
    let workers_used: i64 = client
        .query_one(
            "SELECT count(DISTINCT n.nodename || ':' || n.nodeport)
               FROM pg_dist_shard s JOIN pg_dist_placement pl USING (shardid)
               JOIN pg_dist_node n USING (groupid)
              WHERE s.logicalrelid = 'market_data'::regclass AND n.groupid > 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(workers_used as usize, db.workers.len());
    // The engine's executor setting, for every new session of the database.
    let pool: String = connect(&db.url)
        .await
        .query_one("SHOW citus.max_adaptive_executor_pool_size", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pool, "1");

    // The real CME sample through the engine: rows and every bar width equal the file's
    // (the same check the plain and TimescaleDB variants pass).
    check_cme_sample(&db.url).await;

    // A second run changes nothing.
    let again = schema::migrate_url(&db.url, &SchemaConfig::default())
        .await
        .unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_CITUS_URL (scripts/citus.sh), Citus is not in Debian"]
async fn citus_app_role_logs_in_on_the_workers_and_writes() {
    let db = CitusDb::new().await;
    schema::migrate_url(&db.url, &SchemaConfig::default())
        .await
        .unwrap();
    let client = connect(&db.url).await;
    // A second run changes nothing but the app role's password, which makes it a login
    // role; Citus propagates it to the workers, and the engine writes as it: the
    // coordinator opens its worker connections as the app role, and the partitions created
    // by the (owner's) maintenance functions are writable through the parent's grants.
    let again = schema::migrate_url(
        &db.url,
        &SchemaConfig {
            app_password: Some("app-secret".into()),
            ..SchemaConfig::default()
        },
    )
    .await
    .unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    for w in &db.workers {
        let login: bool = connect(w)
            .await
            .query_one(
                "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'christmas_app'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(login, "christmas_app cannot log in on {w}");
    }
    let as_app = christmas_tests::citus::with_user(&db.url, "christmas_app", "app-secret");
    let ingestor = trades_ingestor(&as_app).await;
    let rows: Vec<Trade> = (0..500u64)
        .map(|k| trade_at("APPROLE", now_ns() - k as i64 * 1_000_000, k as i64))
        .collect();
    ingestor.push_batch(&rows).unwrap();
    let report = ingestor.shutdown().await.unwrap();
    assert_eq!(report.rows_committed(), 500);
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM market_data WHERE symbol = 'APPROLE'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_CITUS_URL (scripts/citus.sh), Citus is not in Debian"]
async fn citus_is_refused_where_the_extension_is_missing() {
    let _needs = CitusDb::new().await;
    // A plain database on the plain test server: asking for Citus names what to do.
    let url = christmas_tests::fresh_database(&christmas_tests::shared_pg_url())
        .await
        .unwrap();
    let err = schema::migrate_url(
        &url,
        &SchemaConfig {
            variant: Some(Variant::Citus),
            ..SchemaConfig::default()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("no citus extension"), "{err}");
    assert!(err.contains("citus_add_node"), "{err}");
}

/// A citus database with 3,000 trades of 2024-07-02 (support::trade) over three symbols
/// and 10 of the last hour, after one maintenance pass: the client, the symbols, the old
/// trades and the pass's report.
async fn old_and_recent_ticks(
    db: &CitusDb,
) -> (Client, Vec<Symbol>, Vec<Trade>, MaintenanceReport) {
    schema::migrate_url(&db.url, &citus_keep_everything())
        .await
        .unwrap();
    let client = connect(&db.url).await;
    // Ticks of 2024-07-02 (support::trade) and of the last hour.
    let sym = symbols(3);
    let old: Vec<Trade> = (0..3_000u64)
        .map(|k| trade(sym[(k % 3) as usize], k))
        .collect();
    let now = now_ns();
    let recent: Vec<Trade> = (0..10)
        .map(|i| trade_at("NOW1", now - 3_600_000_000_000 + i * 1_000_000, i))
        .collect();
    let ingestor = trades_ingestor(&db.url).await;
    ingestor.push_batch(&old).unwrap();
    ingestor.push_batch(&recent).unwrap();
    ingestor.shutdown().await.unwrap();
    assert_eq!(count(&client, "market_data_default").await, 3_000);

    let report = schema::maintain(&client, "market_data").await.unwrap();
    assert_eq!(report.rows_moved, 3_000, "{report:?}");
    assert_eq!(report.rows_in_default, 0, "{report:?}");
    (client, sym, old, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_CITUS_URL (scripts/citus.sh), Citus is not in Debian"]
async fn citus_old_partitions_go_columnar_and_take_late_rows() {
    let db = CitusDb::new().await;
    let (client, sym, old, report) = old_and_recent_ticks(&db).await;
    // 2024-07-02 ended long before now - compress_after (7 days): columnar.
    assert!(report.partitions_compressed >= 1, "{report:?}");
    let am = |part: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT a.amname::text FROM pg_class c JOIN pg_am a ON a.oid = c.relam
                      WHERE c.oid = to_regclass($1)",
                    &[&part],
                )
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(am("market_data_p20240702").await, "columnar");
    let current: String = client
        .query_one(
            "SELECT name FROM christmas_partitions
              WHERE parent_table = 'market_data' AND lower_bound <= now()
                AND upper_bound > now()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let current_am: String = client
        .query_one(
            "SELECT a.amname::text FROM pg_class c JOIN pg_am a ON a.oid = c.relam
              WHERE c.oid = to_regclass($1)",
            &[&current],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(current_am, "heap", "the open partition stays a heap");
    // On the workers the shards are columnar too.
    let mut columnar_shards = 0i64;
    for w in &db.workers {
        columnar_shards += shards_visible(w)
            .await
            .query_one(
                "SELECT count(*) FROM pg_class c JOIN pg_am a ON a.oid = c.relam
                  WHERE a.amname = 'columnar' AND c.relname ~ '^market_data_p20240702_[0-9]+$'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
    }
    assert_eq!(columnar_shards, 4, "one columnar shard per space partition");

    // A late tick into the columnar partition, and the bars of that day include it.
    let late = trade(sym[0], 10_000);
    let ingestor = trades_ingestor(&db.url).await;
    ingestor.push_batch(&[late]).unwrap();
    ingestor.shutdown().await.unwrap();
    assert_eq!(count(&client, "market_data_p20240702").await, 3_001);
    let reader = MarketDataReader::connect(&db.url).await.unwrap();
    let day = 1_719_878_400_000_000_000i64;
    let bars = reader
        .bars(sym[0], BarInterval::Day1, day, day + DAY_NS)
        .await
        .unwrap();
    assert_eq!(bars.len(), 1, "{bars:?}");
    let expected: Vec<&Trade> = old
        .iter()
        .chain(std::iter::once(&late))
        .filter(|t| t.symbol == sym[0])
        .collect();
    assert_eq!(bars[0].trades as usize, expected.len());
    let volume: f64 = expected.iter().map(|t| t.volume).sum();
    assert_eq!(bars[0].volume, volume);
    assert_eq!(bars[0].close, late.price);
    // A second pass converts nothing more.
    let again = schema::maintain(&client, "market_data").await.unwrap();
    assert_eq!(again.partitions_compressed, 0, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_CITUS_URL (scripts/citus.sh), Citus is not in Debian"]
async fn citus_retention_drops_old_partitions_from_every_worker() {
    let db = CitusDb::new().await;
    let (client, _, _, report) = old_and_recent_ticks(&db).await;
    assert!(report.partitions_compressed >= 1, "{report:?}");
    // Retention of 30 days, confirmed: the (columnar) 2024 partition is dropped from every
    // worker, the last hour's ticks stay.
    let changed = schema::migrate_url(
        &db.url,
        &SchemaConfig {
            variant: Some(Variant::Citus),
            retention: Some(Duration::from_secs(30 * 86_400)),
            change: vec![Setting::Retention],
            confirm_deletion: true,
            ..SchemaConfig::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(changed.deletions.len(), 1, "{changed:?}");
    assert_eq!(changed.deletions[0].rows, 3_000, "{changed:?}");
    let report = schema::maintain(&client, "market_data").await.unwrap();
    let dropped_before: u32 = changed
        .maintenance
        .iter()
        .map(|m| m.partitions_dropped)
        .sum();
    assert!(
        report.partitions_dropped + dropped_before >= 1,
        "{report:?} {changed:?}"
    );
    assert_eq!(count(&client, "market_data").await, 10);
    assert!(!relation_exists(&client, "market_data_p20240702").await);
    for w in &db.workers {
        let left: i64 = shards_visible(w)
            .await
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relname LIKE 'market_data\\_p20240702%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "shards of the dropped partition left on {w}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_CITUS_URL (scripts/citus.sh), Citus is not in Debian"]
async fn citus_reads_give_the_plain_variants_answers() {
    let db = CitusDb::new().await;
    schema::migrate_url(&db.url, &citus_keep_everything())
        .await
        .unwrap();
    let (plain_url, _plain) =
        crate::support::fresh_core_db(&christmas_tests::shared_pg_url()).await;
    // Three symbols over two days, pushed in an order that is not time order (late ticks
    // behind earlier ones), the same rows into both.
    let sym = symbols(3);
    let day = 1_719_878_400_000_000_000i64;
    let rows: Vec<Trade> = (0..6_000u64)
        .map(|k| {
            let mut t = trade(sym[(k % 3) as usize], k);
            t.time_ns = day + ((k * 7_919) % 172_800) as i64 * 1_000_000_000;
            t.exchange_seq = (k % 5) as i64;
            t
        })
        .collect();
    for url in [&db.url, &plain_url] {
        let ingestor = trades_ingestor(url).await;
        for chunk in rows.chunks(500) {
            ingestor.push_batch(chunk).unwrap();
        }
        ingestor.shutdown().await.unwrap();
    }
    let citus = MarketDataReader::connect(&db.url).await.unwrap();
    let plain = MarketDataReader::connect(&plain_url).await.unwrap();
    for s in &sym {
        for interval in BarInterval::ALL {
            let a = citus
                .bars(*s, interval, day, day + 2 * DAY_NS)
                .await
                .unwrap();
            let b = plain
                .bars(*s, interval, day, day + 2 * DAY_NS)
                .await
                .unwrap();
            assert!(!a.is_empty());
            assert_eq!(a, b, "{s} {interval:?}");
        }
        let a = citus.trades(*s, day, day + 2 * DAY_NS, 100).await.unwrap();
        let b = plain.trades(*s, day, day + 2 * DAY_NS, 100).await.unwrap();
        assert_eq!(a.len(), 100);
        assert_eq!(a, b, "{s} trades");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CHRISTMAS_CITUS_URL (scripts/citus.sh), Citus is not in Debian"]
async fn citus_engine_shards_each_write_to_one_worker() {
    let db = CitusDb::new().await;
    schema::migrate_url(&db.url, &citus_keep_everything())
        .await
        .unwrap();
    let client = connect(&db.url).await;
    let workers = nodes_holding_market_data(&client).await;
    assert!(workers >= 2, "needs two workers holding shards");
    let ingestor = christmas_core::Ingestor::<Trade>::builder()
        .database_url(&db.url)
        .shards(workers as usize)
        .start()
        .await
        .unwrap();
    // Where Citus keeps each symbol, by its own function, against the engine's shard.
    let syms = symbols(200);
    let mut groups_of_shard = std::collections::BTreeMap::<usize, Vec<i32>>::new();
    for s in &syms {
        let group: i32 = client
            .query_one(
                "SELECT groupid FROM pg_dist_placement
                  WHERE shardid = get_shard_id_for_distribution_column('market_data', $1::text)",
                &[&s.as_str()],
            )
            .await
            .unwrap()
            .get(0);
        let groups = groups_of_shard
            .entry(ingestor.shard_for(&trade(*s, 0)))
            .or_default();
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    assert_eq!(
        groups_of_shard.len(),
        workers as usize,
        "{groups_of_shard:?}"
    );
    let mut all: Vec<i32> = groups_of_shard.values().flatten().copied().collect();
    assert!(
        groups_of_shard.values().all(|g| g.len() == 1),
        "an engine shard writes to several workers: {groups_of_shard:?}"
    );
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), workers as usize, "{groups_of_shard:?}");
    // The routed trades are stored, each once.
    for k in 0..50 {
        for s in &syms {
            ingestor.push_async(trade(*s, k)).await.unwrap();
        }
    }
    ingestor.flush().await.unwrap();
    ingestor.shutdown().await.unwrap();
    assert_eq!(count(&client, "market_data").await, 200 * 50);
    assert_eq!(duplicates(&client).await, 0);
}

/// How many nodes hold shards of `market_data`.
pub(super) async fn nodes_holding_market_data(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT count(DISTINCT pl.groupid) FROM pg_dist_shard s
               JOIN pg_dist_placement pl USING (shardid)
              WHERE s.logicalrelid = 'market_data'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}
