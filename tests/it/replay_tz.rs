//! `replay --tz ZONE`: naive CSV times in a tz database zone land at the instants its
//! daylight saving time gives them, read back from PostgreSQL.

use christmas_core::sources::timefmt::NaiveZone;
use christmas_ingest::replay::{self, ReplayArgs};

use crate::support::fresh_core_db;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naive_times_in_new_york_cross_both_daylight_saving_changes() {
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let dir = std::env::temp_dir().join(format!("christmas-replay-tz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("es-ny.csv");
    // The last second of EST and the first of EDT in March; in November the repeated
    // 01:30 (its first, EDT, is taken) and 02:00 EST.
    std::fs::write(
        &path,
        "time,symbol,price,volume\n\
         2024-03-10 01:59:59,ESH4,1,1\n\
         2024-03-10 03:00:00,ESH4,2,1\n\
         2024-11-03 01:30:00,ESZ4,3,1\n\
         2024-11-03 02:00:00,ESZ4,4,1\n",
    )
    .unwrap();
    let args = ReplayArgs {
        tz: Some(NaiveZone::parse("America/New_York").unwrap()),
        retention_ok: true,
        ..ReplayArgs::new(&path)
    };
    let s = replay::run(&url, &args).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(s.committed, 4);
    let rows = db
        .query(
            "SELECT extract(epoch FROM time)::int8 FROM market_data ORDER BY price",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    // 06:59:59Z and 07:00:00Z: one second apart across the spring change; 05:30Z (EDT)
    // and 07:00Z (EST) in the autumn.
    assert_eq!(
        got,
        [1_710_053_999, 1_710_054_000, 1_730_611_800, 1_730_617_200]
    );
}
