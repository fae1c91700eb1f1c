//! Group commit: a writer connection killed mid-commit, a group meeting stored keys,
//! and events waiting in the outbox while Redis is full.

use std::sync::Arc;
use std::time::Duration;

use christmas_core::orders::{NewOrder, OrderDesk, OrderDeskConfig, SubmitOutcome};

use crate::support::{connect, count, fresh_core_db};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_writer_connection_mid_commit_loses_and_duplicates_nothing() {
    let (url, db) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let desk = Arc::new(OrderDesk::start(OrderDeskConfig::new(&url)).await.unwrap());
    let killer = {
        let url = url.clone();
        tokio::spawn(async move {
            let c = connect(&url).await;
            let mut killed = 0i64;
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(25)).await;
                let n: i64 = c
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                          WHERE application_name LIKE 'christmas-orders-%' AND datname = current_database()",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                killed += n;
            }
            killed
        })
    };
    let submitters: Vec<_> = (0..40)
        .map(|t| {
            let desk = desk.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in (t..4_000).step_by(40) {
                    match desk.submit(new_order(i)).await {
                        Ok(SubmitOutcome::Created(o) | SubmitOutcome::Existing(o)) => {
                            acked.push((i, o.id))
                        }
                        other => panic!("order {i}: {other:?}"),
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for s in submitters {
        acked.extend(s.await.unwrap());
    }
    let killed = killer.await.unwrap();
    assert!(killed > 0, "no connection was killed");
    assert_eq!(acked.len(), 4_000);
    assert_eq!(count(&db, "orders").await, 4_000);
    let stored = stored_ids(&db).await;
    for (i, id) in acked {
        assert_eq!(stored.get(&format!("k-{i}")), Some(&id), "order k-{i}");
    }
    desk.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_meeting_a_stored_key_is_written_again_and_announces_only_its_new_orders() {
    let (redis, db, desk) = fresh_desk_with_events().await;
    for i in 0..10 {
        let created = desk.submit(new_order(i)).await.unwrap();
        assert!(matches!(created, SubmitOutcome::Created(_)), "{created:?}");
    }
    // Nothing was stored before, so every plain insert went in.
    assert_eq!(desk.metrics().rewritten, 0);
    let stored = stored_ids(&db).await;

    // A burst of 200: every 20th repeats a stored order, one changes a stored order's body.
    let burst: Vec<_> = (0..200)
        .map(|i| {
            let desk = desk.clone();
            tokio::spawn(async move {
                let order = match i {
                    10 => NewOrder {
                        quantity: 50.0,
                        ..new_order(9)
                    },
                    i if i % 20 == 0 => new_order(i / 20),
                    i => new_order(1_000 + i),
                };
                (i, desk.submit(order).await.unwrap())
            })
        })
        .collect();
    let mut new = 0;
    for b in burst {
        match b.await.unwrap() {
            (10, SubmitOutcome::Conflict(o)) => assert_eq!(o.id, stored["k-9"]),
            (i, SubmitOutcome::Existing(o)) if i % 20 == 0 => {
                assert_eq!(o.id, stored[&format!("k-{}", i / 20)], "repeat {i}")
            }
            (i, SubmitOutcome::Created(o)) if i != 10 && i % 20 != 0 => {
                assert_eq!(o.client_order_id, format!("k-{}", 1_000 + i));
                new += 1;
            }
            (i, other) => panic!("order {i}: {other:?}"),
        }
    }
    assert_eq!(new, 189);
    assert_eq!(count(&db, "orders").await, 199);
    let m = desk.metrics();
    assert!(
        (1..=m.groups).contains(&m.rewritten),
        "{} rewritten of {} groups",
        m.rewritten,
        m.groups
    );
    assert_eq!(
        (m.created, m.existing, m.conflicts, m.failed),
        (199, 10, 1, 0)
    );

    // Once the writers have stopped checking keys, a repeat costs one more rewrite.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let again = desk.submit(new_order(3)).await.unwrap();
    assert!(
        matches!(&again, SubmitOutcome::Existing(o) if o.id == stored["k-3"]),
        "{again:?}"
    );
    assert_eq!(desk.metrics().rewritten, m.rewritten + 1);

    // The statements that failed announced nothing: one event per stored order.
    for _ in 0..100 {
        if desk.metrics().events_published == 199 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(desk.metrics().events_published, 199);
    assert_eq!(events_len(&redis), 199);
    desk.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_full_redis_refuses_wait_in_the_outbox_and_go_out_once_it_has_room() {
    let (redis, db, desk) = fresh_desk_with_events().await;
    // Full from the start (an empty server uses about 1 MB); noeviction is the default.
    redis.cli(&["CONFIG", "SET", "maxmemory", "1mb"]).unwrap();
    let orders: Vec<_> = (0..2_000)
        .map(|i| {
            let desk = desk.clone();
            tokio::spawn(async move { desk.submit(new_order(i)).await.unwrap() })
        })
        .collect();
    for o in orders {
        let created = o.await.unwrap();
        assert!(matches!(created, SubmitOutcome::Created(_)), "{created:?}");
    }
    assert_eq!(count(&db, "orders").await, 2_000);
    // Orders whose events wait in the outbox.
    async fn waiting(db: &tokio_postgres::Client) -> i64 {
        db.query_one(
            "SELECT coalesce(sum(cardinality(order_ids)), 0)::bigint FROM order_outbox",
            &[],
        )
        .await
        .unwrap()
        .get(0)
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = desk.metrics();
    assert!(m.event_failures >= 1, "Redis refused nothing");
    assert!(
        m.events_published < 2_000,
        "{} published",
        m.events_published
    );
    assert!(waiting(&db).await >= 2_000 - m.events_published as i64);

    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]).unwrap();
    for _ in 0..300 {
        if waiting(&db).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(waiting(&db).await, 0, "the outbox still holds events");
    // Every order was announced; a round Redis refused part-way may announce some twice.
    assert!(events_len(&redis) >= 2_000, "{} events", events_len(&redis));
    assert!(desk.metrics().events_published >= 2_000);
    desk.shutdown().await;
}
