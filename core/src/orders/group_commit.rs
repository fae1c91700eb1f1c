//! Group commit: the desk's writers. Each takes every waiting [`Submission`] (up to
//! `max_group`), stores them with one statement (a plain `INSERT` first; `INSERT … ON
//! CONFLICT DO NOTHING` once a repeat is about), answers each, and hands the new orders to
//! the event publisher.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, Mutex as AsyncMutex, Notify};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::orders::outbox::OutboxBatch;
use crate::orders::stats::DeskStats;
use crate::orders::types::{NewOrder, Order, OrderStatus, SubmitOutcome, ORDER_COLUMNS};
use crate::pg;

/// A validated order waiting for a writer, with the channel its answer goes back on.
pub(super) struct Submission {
    pub(super) order: NewOrder,
    /// [`NewOrder::request_hash`], computed before queueing.
    pub(super) hash: String,
    pub(super) reply: oneshot::Sender<Result<SubmitOutcome>>,
    pub(super) queued_at: Instant,
}

/// The submissions' queue, shared by the writers.
pub(super) struct Intake {
    /// Taken by one writer at a time, to gather a group.
    rx: AsyncMutex<mpsc::Receiver<Submission>>,
    /// Writers writing a group now.
    busy: AtomicUsize,
    /// Signalled when a writer finishes a group.
    idle: Notify,
}

impl Intake {
    /// The writers' end of the submissions' channel.
    pub(super) fn new(rx: mpsc::Receiver<Submission>) -> Intake {
        Intake {
            rx: AsyncMutex::new(rx),
            busy: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    /// Waits for a submission, then takes every one waiting (up to `max_group`); while
    /// another writer is busy, waits until `parallel_min` are in `group` or that writer
    /// finishes. Counts this writer busy. False once the channel is closed and empty.
    async fn gather(
        &self,
        group: &mut Vec<Submission>,
        max_group: usize,
        parallel_min: usize,
    ) -> bool {
        let mut rx = self.rx.lock().await;
        match rx.recv().await {
            Some(p) => group.push(p),
            None => return false,
        }
        loop {
            while group.len() < max_group {
                match rx.try_recv() {
                    Ok(p) => group.push(p),
                    Err(_) => break,
                }
            }
            if group.len() >= parallel_min || self.busy.load(Ordering::Acquire) == 0 {
                break;
            }
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.busy.load(Ordering::Acquire) == 0 {
                break;
            }
            tokio::select! {
                _ = idle => {}
                p = rx.recv() => match p {
                    Some(p) => group.push(p),
                    None => break,
                },
            }
        }
        self.busy.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// This writer's group is answered: another may start one.
    fn done(&self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
        self.idle.notify_waiters();
    }
}

/// Connects writer `index`.
pub(super) async fn connect_writer(url: &str, index: usize) -> Result<Client> {
    pg::connect(
        &pg::parse_url(url)?,
        &format!("christmas-orders-{index}"),
        "connecting the order desk",
    )
    .await
}

/// One writer connection: takes every waiting submission (up to `max_group`), commits
/// them in one statement, answers each, and hands the new orders to `events` (when
/// events are on).
pub(super) async fn write_groups(
    mut client: Option<Client>,
    database_url: String,
    max_group: usize,
    index: usize,
    intake: Arc<Intake>,
    events: Option<mpsc::Sender<OutboxBatch>>,
    stats: Arc<DeskStats>,
) {
    let mut group: Vec<Submission> = Vec::with_capacity(max_group);
    // While another writer commits, a group starts only once this many orders wait: tiny
    // groups side by side cost more (a statement and a commit each) than they save, but a
    // writer that waits for the other's fsync leaves the CPU idle. A thirty-second of
    // max_group keeps both writers busy; at a quarter the second one almost never started.
    let parallel_min = (max_group / 32).max(1);
    // Until then, this writer's groups go in with ON CONFLICT: a plain INSERT met a stored
    // key less than KEYS_CHECKED_FOR ago, so repeats are about.
    let mut check_keys_until: Option<Instant> = None;
    let outbox = events.is_some();
    loop {
        if !intake.gather(&mut group, max_group, parallel_min).await {
            return;
        }
        let mut backoff = Duration::from_millis(50);
        let started = Instant::now();
        let mut keys = match check_keys_until {
            Some(t) if started < t => Keys::Checked,
            _ => Keys::New,
        };
        let (outcomes, outbox_groups) = loop {
            if client.as_ref().is_none_or(Client::is_closed) {
                match connect_writer(&database_url, index).await {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "order writer reconnect failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            let Some(c) = client.as_ref() else { continue };
            match write_group(c, &group, outbox, keys).await {
                Ok((o, g)) => break (o, g.into_iter().collect::<Vec<i64>>()),
                // The statement stored nothing; the group goes again, repeats and all.
                Err(e) if keys == Keys::New && e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    stats.rewritten.fetch_add(1, Ordering::Relaxed);
                    keys = Keys::Checked;
                    check_keys_until = Some(Instant::now() + KEYS_CHECKED_FOR);
                }
                // The group is written again after reconnecting: rows that did commit are
                // found by their unique key, so nothing is stored twice.
                Err(e) if pg::is_connection_error(&e) => {
                    keys = Keys::Checked;
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, orders = group.len(), "order group failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if !c.is_closed() {
                        continue;
                    }
                }
                Err(e) => {
                    // Refused data the validation missed: answer each order on its own.
                    tracing::warn!(error = %e, "order group refused; writing one by one");
                    break write_one_by_one(c, &group, outbox).await;
                }
            }
        };
        intake.done();
        stats.record(
            group.iter().map(|p| p.queued_at),
            &outcomes,
            started.elapsed(),
        );
        let created: Vec<Order> = outcomes
            .iter()
            .filter_map(|o| match o {
                Ok(SubmitOutcome::Created(o)) => Some(o.clone()),
                _ => None,
            })
            .collect();
        for (p, outcome) in group.drain(..).zip(outcomes) {
            // The caller may be gone (client disconnected): the order is stored anyway.
            let _ = p.reply.send(outcome);
        }
        if let (Some(tx), false) = (&events, created.is_empty()) {
            // Full: the outbox sweep publishes them later.
            let _ = tx.try_send((outbox_groups, created));
        }
    }
}

/// Writes each submission of `group` on its own (checked keys), so one refused order
/// fails alone; returns each one's outcome and the outbox groups written.
async fn write_one_by_one(
    client: &Client,
    group: &[Submission],
    outbox: bool,
) -> (Vec<Result<SubmitOutcome>>, Vec<i64>) {
    let mut one_by_one = Vec::with_capacity(group.len());
    let mut groups = Vec::new();
    for p in group.iter() {
        let single = std::slice::from_ref(p);
        one_by_one.push(
            match write_group(client, single, outbox, Keys::Checked).await {
                Ok((mut o, g)) => {
                    groups.extend(g);
                    o.pop()
                        .unwrap_or_else(|| Err(Error::Task("no outcome".into())))
                }
                Err(e) => Err(Error::field("order", e.to_string())),
            },
        );
    }
    (one_by_one, groups)
}

/// What the insert returns for a new order; the rest is the request.
const CREATED_COLUMNS: &str = "id, account, client_order_id, created_at";

/// How a group's insert treats keys that are already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// A plain `INSERT`, for groups expected to be all new: PostgreSQL runs it in about
    /// two thirds of the time of the checked one (no speculative insertion per row), and
    /// a stored key fails the whole statement, which then stores nothing.
    New,
    /// `INSERT … ON CONFLICT DO NOTHING`: stored keys are skipped, then read back.
    Checked,
}

/// How long a writer keeps checking keys after a plain insert met a stored one: clients
/// that repeat orders tend to repeat several, and each failed plain insert costs a
/// statement.
const KEYS_CHECKED_FOR: Duration = Duration::from_secs(1);

/// A group's `(account, client_order_id)` keys: the index of each key's first submission
/// (the one inserted), and those indexes in group order.
type FirstOfKey<'a> = HashMap<(&'a str, &'a str), usize>;

/// One statement inserts the group's new orders; a second reads the ones that existed.
async fn write_group(
    client: &Client,
    group: &[Submission],
    outbox: bool,
    keys: Keys,
) -> std::result::Result<(Vec<Result<SubmitOutcome>>, Option<i64>), tokio_postgres::Error> {
    // The first submission of each key in the group is the one inserted.
    let mut first: FirstOfKey<'_> = HashMap::with_capacity(group.len());
    let mut uniques = Vec::with_capacity(group.len());
    for (i, p) in group.iter().enumerate() {
        let key = (p.order.account.as_str(), p.order.client_order_id.as_str());
        if let Entry::Vacant(e) = first.entry(key) {
            e.insert(i);
            uniques.push(i);
        }
    }
    // Borrowed columns: the arrays are encoded straight from the requests.
    let col = |f: for<'a> fn(&'a NewOrder) -> &'a str| -> Vec<&str> {
        uniques.iter().map(|&i| f(&group[i].order)).collect()
    };
    let accounts = col(|o| &o.account);
    let ids = col(|o| &o.client_order_id);
    let symbols = col(|o| o.symbol.as_str());
    let sides = col(|o| o.side.code());
    let types = col(|o| o.order_type.as_str());
    let tifs = col(|o| o.time_in_force.as_str());
    let hashes: Vec<&str> = uniques.iter().map(|&i| group[i].hash.as_str()).collect();
    let quantities: Vec<f64> = uniques.iter().map(|&i| group[i].order.quantity).collect();
    let prices: Vec<Option<f64>> = uniques
        .iter()
        .map(|&i| group[i].order.limit_price)
        .collect();
    let text_array = Type::TEXT_ARRAY;
    let rows = client
        .query_typed(
            &insert_statement(outbox, keys),
            &[
                (&accounts, text_array.clone()),
                (&ids, text_array.clone()),
                (&symbols, text_array.clone()),
                (&sides, text_array.clone()),
                (&types, text_array.clone()),
                (&quantities, Type::FLOAT8_ARRAY),
                (&prices, Type::FLOAT8_ARRAY),
                (&tifs, text_array.clone()),
                (&hashes, text_array),
            ],
        )
        .await?;
    // Keyed by the index of the key's first submission in the group.
    let mut created: HashMap<usize, Order> = HashMap::with_capacity(rows.len());
    let outbox_group: Option<i64> = match (outbox, rows.first()) {
        (true, Some(r)) => r.get(4),
        _ => None,
    };
    for r in &rows {
        let (id, account, client_order_id, at): (i64, &str, &str, SystemTime) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let Some(&i) = first.get(&(account, client_order_id)) else {
            continue;
        };
        created.insert(i, created_order(&group[i].order, id, at));
    }
    let existing = if created.len() < uniques.len() {
        read_existing(client, group, &uniques, &created, &first).await?
    } else {
        HashMap::new()
    };
    let outcomes = group
        .iter()
        .enumerate()
        .map(|(i, p)| outcome(group, &first, &created, &existing, i, p))
        .collect();
    Ok((outcomes, outbox_group))
}

/// The group's insert: `unnest` of nine arrays, `ON CONFLICT DO NOTHING` for checked keys;
/// with events on, the outbox row goes in with the orders, in the same statement.
fn insert_statement(outbox: bool, keys: Keys) -> String {
    let on_conflict = match keys {
        Keys::New => "",
        Keys::Checked => "ON CONFLICT (account, client_order_id) DO NOTHING",
    };
    let insert_orders = format!(
        "INSERT INTO orders (account, client_order_id, symbol, side, type, \
         quantity, limit_price, time_in_force, request_hash) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                              $6::float8[], $7::float8[], $8::text[], $9::text[]) \
         {on_conflict}"
    );
    if outbox {
        format!(
            "WITH ins AS ({insert_orders} RETURNING {CREATED_COLUMNS}), \
             outbox AS (INSERT INTO order_outbox (order_ids) \
                        SELECT array_agg(id) FROM ins HAVING count(*) > 0 RETURNING group_id) \
             SELECT {CREATED_COLUMNS}, (SELECT group_id FROM outbox) FROM ins"
        )
    } else {
        format!("{insert_orders} RETURNING {CREATED_COLUMNS}")
    }
}

/// A new order is the request plus what the database assigned (`id`, the creation time
/// `at`): fewer columns to send back and decode.
fn created_order(o: &NewOrder, id: i64, at: SystemTime) -> Order {
    let at = crate::query::unix_ns(at);
    Order {
        id,
        account: o.account.clone(),
        client_order_id: o.client_order_id.clone(),
        symbol: o.symbol.as_str().to_string(),
        side: o.side,
        order_type: o.order_type,
        quantity: o.quantity,
        limit_price: o.limit_price,
        time_in_force: o.time_in_force,
        status: OrderStatus::Accepted,
        created_at_ns: at,
        updated_at_ns: at,
        status_changes: 0,
    }
}

/// The stored orders (and request hashes) of the keys the insert skipped, keyed by the
/// index of each key's first submission.
async fn read_existing(
    client: &Client,
    group: &[Submission],
    uniques: &[usize],
    created: &HashMap<usize, Order>,
    first: &FirstOfKey<'_>,
) -> std::result::Result<HashMap<usize, (Order, String)>, tokio_postgres::Error> {
    let mut existing: HashMap<usize, (Order, String)> = HashMap::new();
    let (missing_accounts, missing_ids): (Vec<&str>, Vec<&str>) = uniques
        .iter()
        .filter(|i| !created.contains_key(i))
        .map(|&i| {
            let o = &group[i].order;
            (o.account.as_str(), o.client_order_id.as_str())
        })
        .unzip();
    let select = format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE (account, client_order_id) IN \
         (SELECT * FROM unnest($1::text[], $2::text[]))"
    );
    for r in client
        .query_typed(
            &select,
            &[
                (&missing_accounts, Type::TEXT_ARRAY),
                (&missing_ids, Type::TEXT_ARRAY),
            ],
        )
        .await?
    {
        if let Ok((o, h)) = Order::from_row(&r) {
            let key = (o.account.as_str(), o.client_order_id.as_str());
            if let Some(&i) = first.get(&key) {
                existing.insert(i, (o, h));
            }
        }
    }
    Ok(existing)
}

/// What submission `p`, at index `i` of `group`, came to.
fn outcome(
    group: &[Submission],
    first: &FirstOfKey<'_>,
    created: &HashMap<usize, Order>,
    existing: &HashMap<usize, (Order, String)>,
    i: usize,
    p: &Submission,
) -> Result<SubmitOutcome> {
    let key = (p.order.account.as_str(), p.order.client_order_id.as_str());
    let f = first.get(&key).copied().unwrap_or(i);
    if let Some(o) = created.get(&f) {
        return Ok(if f == i {
            SubmitOutcome::Created(o.clone())
        } else if group[f].hash == p.hash {
            SubmitOutcome::Existing(o.clone())
        } else {
            SubmitOutcome::Conflict(o.clone())
        });
    }
    match existing.get(&f) {
        Some((o, h)) if *h == p.hash => Ok(SubmitOutcome::Existing(o.clone())),
        Some((o, _)) => Ok(SubmitOutcome::Conflict(o.clone())),
        None => Err(Error::Task(format!(
            "order {}/{} neither inserted nor found",
            key.0, key.1
        ))),
    }
}
