//! Order events and workers on Redis: batches, trimming, and the re-check after Redis
//! lost events (redelivery after a crash: `either.rs`, over both brokers).

use std::sync::Arc;
use std::time::Duration;

use christmas_core::orders::{
    OrderEvent, OrderStatus, OrderWorker, OrderWorkerConfig, SubmitOutcome,
};

use super::*;

/// A worker takes events in batches, moves a batch's orders in one statement each step,
/// acknowledges them in one command, and a batch a dead worker held is claimed whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_take_move_and_acknowledge_events_in_batches() {
    // Long: one story, batch by batch; split, each part would rebuild the state before it.
    let (redis, url, db, desk) = fresh_tuned_desk(|_| {}).await;
    let desk = Arc::new(desk);
    let submit = |range: std::ops::Range<usize>| {
        let desk = desk.clone();
        async move {
            let mut set = tokio::task::JoinSet::new();
            for i in range {
                let desk = desk.clone();
                set.spawn(async move { desk.submit(new_order(i)).await.unwrap() });
            }
            let mut ids = Vec::new();
            while let Some(r) = set.join_next().await {
                let SubmitOutcome::Created(o) = r.unwrap() else {
                    panic!("a new order was not created")
                };
                ids.push(o.id);
            }
            ids.sort_unstable();
            ids
        }
    };
    let config = |name: &str| OrderWorkerConfig {
        claim_idle: Duration::from_millis(300),
        block: Duration::from_millis(200),
        ..OrderWorkerConfig::new(redis.url(), &url, name)
    };
    /// Batches of at most `max` until `n` events came (or 50 empty reads).
    async fn take(w: &mut OrderWorker, n: usize, max: usize) -> Vec<Vec<OrderEvent>> {
        let (mut batches, mut got, mut empty) = (Vec::new(), 0, 0);
        while got < n && empty < 50 {
            let b = w.next_batch(max).await.unwrap();
            assert!(b.len() <= max, "a batch of {} for at most {max}", b.len());
            if b.is_empty() {
                empty += 1;
            }
            got += b.len();
            batches.push(b);
        }
        batches.retain(|b| !b.is_empty());
        batches
    }

    let ids = submit(0..300).await;
    let mut a = OrderWorker::connect(config("a")).await.unwrap();
    let batches = take(&mut a, 300, 100).await;
    let events: Vec<OrderEvent> = batches.iter().flatten().cloned().collect();
    let mut seen: Vec<i64> = events.iter().map(|e| e.order_id).collect();
    seen.sort_unstable();
    assert_eq!(seen, ids, "every order's event, once");
    assert!(batches.len() < 300, "one event per read: {}", batches.len());
    assert!(events
        .iter()
        .all(|e| !e.claimed && e.kind == "order.accepted"));

    let mut working = a
        .transition_many(&seen, &[OrderStatus::Accepted], OrderStatus::Working)
        .await
        .unwrap();
    working.sort_unstable();
    assert_eq!(working, ids);
    // Handled twice (a claimed batch), the step moves nothing.
    assert!(a
        .transition_many(&seen, &[OrderStatus::Accepted], OrderStatus::Working)
        .await
        .unwrap()
        .is_empty());
    let filled = a
        .transition_many(&seen, &[OrderStatus::Working], OrderStatus::Filled)
        .await
        .unwrap();
    assert_eq!(filled.len(), 300);
    a.ack_many(&events).await.unwrap();
    assert_nothing_pending(&redis);

    // A worker dies holding a batch: another claims all of it, as claimed.
    let more = submit(300..350).await;
    let mut c = OrderWorker::connect(config("c")).await.unwrap();
    let mut held: Vec<String> = take(&mut c, 50, 100)
        .await
        .into_iter()
        .flatten()
        .map(|e| e.stream_id)
        .collect();
    held.sort();
    assert_eq!(held.len(), 50);
    drop(c);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut d = OrderWorker::connect(config("d")).await.unwrap();
    let claimed: Vec<OrderEvent> = take(&mut d, 50, 100).await.into_iter().flatten().collect();
    assert!(
        claimed.iter().all(|e| e.claimed),
        "claimed from the dead worker"
    );
    let mut again: Vec<String> = claimed.iter().map(|e| e.stream_id.clone()).collect();
    again.sort();
    assert_eq!(again, held);
    let claimed_ids: Vec<i64> = claimed.iter().map(|e| e.order_id).collect();
    assert_eq!(
        d.transition_many(&claimed_ids, &[OrderStatus::Accepted], OrderStatus::Filled)
            .await
            .unwrap()
            .len(),
        50
    );
    d.ack_many(&claimed).await.unwrap();
    d.ack_many(&[]).await.unwrap();

    let rows = db
        .query(
            "SELECT status, status_changes, count(*) FROM orders GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, i32, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("filled".to_string(), 1, 50),
            ("filled".to_string(), 2, 300)
        ]
    );
    assert_eq!(more.len(), 50);
    assert_nothing_pending(&redis);
    desk.shutdown().await;
}

/// The events stream keeps what some consumer group still needs and loses the rest: every
/// event the group acknowledged goes, its pending ones stay, and a group that has read
/// nothing holds everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_stream_is_trimmed_of_what_every_group_acknowledged() {
    let (redis, url, _db, desk) =
        fresh_tuned_desk(|c| c.events_trim_every = Duration::from_millis(200)).await;
    let mut worker = worker(&redis, &url, "w", 100).await;
    let xlen = || events_len(&redis);
    // Reads `n` events, acknowledging the first `ack` of them.
    async fn take(worker: &mut OrderWorker, n: usize, ack: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..200 {
            if ids.len() == n {
                break;
            }
            if let Some(e) = worker.next().await.unwrap() {
                if ids.len() < ack {
                    worker.ack(&e).await.unwrap();
                }
                ids.push(e.stream_id);
            }
        }
        assert_eq!(ids.len(), n, "events read");
        ids
    }
    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..100 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what}");
    }

    for k in 0..20 {
        desk.submit(new_order(k)).await.unwrap();
    }
    let ids = take(&mut worker, 20, 15).await;
    wait_for("trimmed to the 5 pending events", || xlen() == 5).await;
    let first = redis
        .cli(&["XRANGE", "orders:events", "-", "+", "COUNT", "1"])
        .unwrap();
    assert!(first.contains(&ids[15]), "oldest left: {first}");
    assert_eq!(desk.metrics().events_trimmed, 15);

    // A second group that has read nothing holds everything from now on.
    redis
        .cli(&["XGROUP", "CREATE", "orders:events", "audit", "0"])
        .unwrap();
    for k in 20..25 {
        desk.submit(new_order(k)).await.unwrap();
    }
    let pending = ids[15..].to_vec();
    for id in &pending {
        redis
            .cli(&["XACK", "orders:events", "order-workers", id])
            .unwrap();
    }
    take(&mut worker, 5, 5).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(xlen(), 10, "the audit group has read nothing");
    assert_eq!(desk.metrics().events_trimmed, 15);
    desk.shutdown().await;
}

/// Redis dies without persistence after taking the events of 40 orders, 10 of which a
/// worker had handled: the desk's re-check announces the other 30 again, once, and a
/// worker whose consumer group went with the data makes it again and moves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_whose_events_redis_lost_are_announced_again_once() {
    let (mut redis, url, db, desk) =
        fresh_tuned_desk(|c| c.events_recheck_after = Duration::from_secs(1)).await;
    /// Moves each event's order accepted → working → filled and acknowledges the batch;
    /// returns the order ids.
    async fn handle(w: &mut OrderWorker, events: &[OrderEvent]) -> Vec<i64> {
        let ids: Vec<i64> = events.iter().map(|e| e.order_id).collect();
        w.transition_many(&ids, &[OrderStatus::Accepted], OrderStatus::Working)
            .await
            .unwrap();
        w.transition_many(&ids, &[OrderStatus::Working], OrderStatus::Filled)
            .await
            .unwrap();
        w.ack_many(events).await.unwrap();
        ids
    }
    let mut a = worker(&redis, &url, "a", 200).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let SubmitOutcome::Created(o) = desk.submit(new_order(i)).await.unwrap() else {
            panic!("a new order was not created")
        };
        ids.push(o.id);
    }
    let mut first = Vec::new();
    for _ in 0..50 {
        let want = 10 - first.len();
        first.extend(a.next_batch(want).await.unwrap());
        if first.len() == 10 {
            break;
        }
    }
    let handled = handle(&mut a, &first).await;
    assert_eq!(handled.len(), 10);
    for _ in 0..100 {
        if events_len(&redis) == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(events_len(&redis), 40);
    assert_eq!(desk.metrics().events_reannounced, 0);
    // The desk looks for the workers' group once it holds announced orders (every 250 ms
    // here); having seen it, it keeps the orders while the group is gone.
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Redis loses everything: the stream and the consumer group.
    redis.kill().unwrap();
    redis.start_again().unwrap();
    drop(a);
    let mut b = worker(&redis, &url, "b", 200).await;
    redis
        .cli(&["XGROUP", "DESTROY", "orders:events", "order-workers"])
        .unwrap();
    let mut again = Vec::new();
    for _ in 0..100 {
        let events = b.next_batch(100).await.unwrap();
        again.extend(handle(&mut b, &events).await);
        if again.len() >= 30 {
            break;
        }
    }
    again.sort_unstable();
    let mut lost: Vec<i64> = ids.into_iter().filter(|i| !handled.contains(i)).collect();
    lost.sort_unstable();
    assert_eq!(again, lost, "the unhandled orders, each once");

    // Nothing is announced a second time, and every order moved once per step.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(b.next_batch(100).await.unwrap().is_empty());
    assert_eq!(desk.metrics().events_reannounced, 30);
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'filled' AND status_changes = 2), count(*) \
             FROM orders",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (40, 40));
    desk.shutdown().await;
}

/// Events waiting in a backlog, or in a worker's hands, are not announced again: the
/// re-check waits while the workers have not been given or not acknowledged them, and
/// after they handle them finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_backlog_is_not_announced_again() {
    let (redis, url, _db, desk) =
        fresh_tuned_desk(|c| c.events_recheck_after = Duration::from_millis(500)).await;
    let mut w = worker(&redis, &url, "w", 200).await;
    for i in 0..20 {
        desk.submit(new_order(i)).await.unwrap();
    }
    // Four re-check intervals with all 20 waiting for the worker.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(desk.metrics().events_reannounced, 0);
    let mut events = Vec::new();
    while events.len() < 20 {
        let batch = w.next_batch(20).await.unwrap();
        assert!(!batch.is_empty(), "{} of 20 events", events.len());
        events.extend(batch);
    }
    // Three more intervals with all 20 in the worker's hands, not acknowledged.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(desk.metrics().events_reannounced, 0);
    let ids: Vec<i64> = events.iter().map(|e| e.order_id).collect();
    assert_eq!(
        w.transition_many(&ids, &[OrderStatus::Accepted], OrderStatus::Working)
            .await
            .unwrap()
            .len(),
        20
    );
    w.ack_many(&events).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(desk.metrics().events_reannounced, 0);
    assert!(w.next_batch(20).await.unwrap().is_empty());
    assert_eq!(events_len(&redis), 20);
    desk.shutdown().await;
}
