//! Part of scenario `orders`: orders through the desk with events on, once per events
//! backend (Redis stream, RabbitMQ queue) in the same run: orders/s with events on, and
//! each event's delivery latency, from the submit's answer to a worker taking the event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use christmas_core::orders::{
    NewOrder, OrderDesk, OrderDeskConfig, OrderSide, OrderStatus, OrderType, OrderWorker,
    OrderWorkerConfig, SubmitOutcome, TimeInForce,
};
use christmas_core::Symbol;
use hdrhistogram::Histogram;

use crate::pg;

/// One backend's run.
#[derive(Debug, Clone)]
pub struct EventsRun {
    /// `redis` or `amqp`.
    pub backend: &'static str,
    /// Orders submitted and answered `Created`.
    pub orders: usize,
    /// Orders answered per second, submitters running flat out.
    pub orders_per_s: f64,
    /// Events the worker took (each order's first delivery).
    pub delivered: usize,
    /// Answer → worker took the event: p50, p99, max, ms.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Submitters in flight at once.
pub const SUBMITTERS: usize = 64;

/// Runs `orders` orders through a fresh desk per backend in `backends` (name, events URL),
/// one after the other, with one worker taking events in batches of 256.
pub async fn measure(
    base_url: &str,
    backends: &[(&'static str, String)],
    orders: usize,
) -> Result<Vec<EventsRun>> {
    let mut runs = Vec::new();
    for (backend, events_url) in backends {
        runs.push(measure_one(base_url, backend, events_url, orders).await?);
    }
    Ok(runs)
}

fn new_order(i: usize) -> Result<NewOrder> {
    Ok(NewOrder {
        account: "bench".into(),
        client_order_id: format!("e-{i}"),
        symbol: Symbol::new("ESZ6")?,
        side: if i.is_multiple_of(2) {
            OrderSide::Buy
        } else {
            OrderSide::Sell
        },
        order_type: OrderType::Market,
        quantity: 1.0,
        limit_price: None,
        time_in_force: TimeInForce::Ioc,
    })
}

async fn measure_one(
    base_url: &str,
    backend: &'static str,
    events_url: &str,
    orders: usize,
) -> Result<EventsRun> {
    let db_name = format!("christmas_bench_events_{backend}");
    let url = pg::fresh_database(base_url, &db_name).await?;
    let stream = format!("bench:orders:events:{}", std::process::id());
    let desk = Arc::new(
        OrderDesk::start(OrderDeskConfig {
            redis_url: Some(events_url.into()),
            events_stream: stream.clone(),
            ..OrderDeskConfig::new(&url)
        })
        .await
        .with_context(|| format!("starting a desk with events on {backend}"))?,
    );
    let mut worker = OrderWorker::connect(OrderWorkerConfig {
        stream: stream.clone(),
        block: Duration::from_millis(200),
        ..OrderWorkerConfig::new(events_url, &url, "bench-worker")
    })
    .await?;
    let taken: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let consumer = {
        let (taken, done) = (taken.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let events = worker.next_batch(256).await?;
                let now = Instant::now();
                let ids: Vec<i64> = events.iter().map(|e| e.order_id).collect();
                {
                    let mut t = taken.lock().unwrap_or_else(|e| e.into_inner());
                    for id in &ids {
                        t.entry(*id).or_insert(now);
                    }
                }
                worker
                    .transition_many(&ids, &[OrderStatus::Accepted], OrderStatus::Filled)
                    .await?;
                worker.ack_many(&events).await?;
            }
            anyhow::Ok(())
        })
    };
    let answered: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|_| {
            let (desk, answered, next) = (desk.clone(), answered.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= orders {
                        return anyhow::Ok(());
                    }
                    if let SubmitOutcome::Created(o) = desk.submit(new_order(i)?).await? {
                        let now = Instant::now();
                        answered
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(o.id, now);
                    }
                }
            })
        })
        .collect();
    for s in submitters {
        s.await??;
    }
    let elapsed = start.elapsed();
    let answered = answered.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // Bounded: every event within 60 s of the last answer.
    let wait_from = Instant::now();
    while taken.lock().unwrap_or_else(|e| e.into_inner()).len() < answered.len()
        && wait_from.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    consumer.await??;
    let taken = taken.lock().unwrap_or_else(|e| e.into_inner()).clone();
    ensure!(
        taken.len() == answered.len(),
        "{backend}: {} events of {} orders arrived within 60 s",
        taken.len(),
        answered.len()
    );
    let mut h = Histogram::<u64>::new(3)?;
    for (id, at) in &answered {
        // An event can be taken before its submitter is scheduled to see the answer.
        let us = taken[id].saturating_duration_since(*at).as_micros() as u64;
        h.record(us.max(1))?;
    }
    desk.shutdown().await;
    Ok(EventsRun {
        backend,
        orders: answered.len(),
        orders_per_s: answered.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        delivered: taken.len(),
        p50_ms: h.value_at_quantile(0.5) as f64 / 1e3,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1e3,
        max_ms: h.max() as f64 / 1e3,
    })
}
