//! [`Recheck`]: the ids of the orders a desk announced, until it has looked at them once,
//! and the round that announces again those still `accepted` (Redis lost their events).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::orders::queue::EventsConn;
use crate::orders::stream::WorkerProgress;
use crate::orders::types::{Order, ORDER_COLUMNS};

/// Most orders one re-check lookup reads.
const RECHECK_BATCH: usize = 65_536;

/// Most lookups in one re-check round; the rest waits for the next round, so new events
/// are not held up behind a large re-check.
const RECHECK_BATCHES_PER_ROUND: usize = 8;

/// Most order ids the re-check holds, 8 bytes each (32 MiB): beyond, the oldest go unchecked
/// (counted and logged).
const RECHECK_MAX_TRACKED: usize = 4 << 20;

/// The orders this desk announced, by when, until the re-check has looked at them.
///
/// Redis can lose events it took: a restart without an fsynced append-only file, or a
/// failover to a replica the last writes had not reached. An order whose event went is
/// `accepted` for ever. So `after` an announcement, once the workers are not behind (every
/// group was given and acknowledged every event older than `after / 2`: this one too,
/// unless Redis lost it), the orders still `accepted` are announced again, once. Each desk
/// re-checks what it announced itself: no coordination between daemons, and a lookup by
/// primary key.
pub(super) struct Recheck {
    after: Duration,
    /// Announcements close together share an entry (see [`Recheck::announced`]).
    announced: VecDeque<(Instant, Vec<i64>)>,
    tracked: usize,
    /// Whether a consumer group was ever seen. Until one is, due ids are dropped, not kept:
    /// no worker has come, and without a group the stream is not trimmed, so the first
    /// worker reads everything. Once one was, a missing group is Redis's loss.
    seen_group: bool,
    /// Ids dropped over [`RECHECK_MAX_TRACKED`], not yet logged.
    dropped: u64,
    /// Since when the workers have been behind.
    behind_since: Option<Instant>,
}

impl Recheck {
    pub(super) fn new(after: Duration) -> Recheck {
        Recheck {
            after,
            announced: VecDeque::new(),
            tracked: 0,
            seen_group: false,
            dropped: 0,
            behind_since: None,
        }
    }

    /// Notes orders just announced. Announcements within `after / 16` (at most a second)
    /// of an entry's first join it, so the entries stay few whatever the rate: an id is
    /// then re-checked up to that much early.
    pub(super) fn announced(&mut self, ids: Vec<i64>) {
        if self.after.is_zero() || ids.is_empty() {
            return;
        }
        self.tracked += ids.len();
        let join = (self.after / 16).min(Duration::from_secs(1));
        match self.announced.back_mut() {
            Some((at, last)) if at.elapsed() < join => last.extend_from_slice(&ids),
            _ => self.announced.push_back((Instant::now(), ids)),
        }
        while self.tracked > RECHECK_MAX_TRACKED {
            match self.announced.pop_front() {
                Some((_, ids)) => {
                    self.tracked -= ids.len();
                    self.dropped += ids.len() as u64;
                }
                None => break,
            }
        }
    }

    /// Takes up to [`RECHECK_BATCH`] ids announced `after` ago or earlier (at least one
    /// entry's, however many it holds).
    fn take_due(&mut self) -> Vec<i64> {
        let mut due = Vec::new();
        while let Some((at, ids)) = self.announced.front() {
            if at.elapsed() < self.after || due.len() + ids.len() > RECHECK_BATCH.max(ids.len()) {
                break;
            }
            due.extend_from_slice(ids);
            self.tracked -= ids.len();
            self.announced.pop_front();
        }
        due
    }

    fn has_due(&self) -> bool {
        self.announced
            .front()
            .is_some_and(|(at, _)| at.elapsed() >= self.after)
    }

    /// Whether a round has anything to do: ids are due, or some are held and no group
    /// has been seen yet (a round looks for one as soon as there is something to lose).
    pub(super) fn wants_round(&self) -> bool {
        !self.announced.is_empty() && (!self.seen_group || self.has_due())
    }

    /// One round: announces again the due orders still `accepted`, when the workers are
    /// not behind, adding each batch to `reannounced` as it goes.
    pub(super) async fn round(
        &mut self,
        db: &Client,
        conn: &mut EventsConn,
        stream: &str,
        reannounced: &AtomicU64,
    ) -> Result<()> {
        if self.dropped > 0 {
            tracing::warn!(
                orders = self.dropped,
                "order events: too many announced orders held for the re-check; the oldest \
                 go unchecked"
            );
            self.dropped = 0;
        }
        if !self.wants_round() {
            return Ok(());
        }
        let progress = conn.progress(stream, self.after / 2).await?;
        if progress != WorkerProgress::NoGroup {
            self.seen_group = true;
        }
        if progress == WorkerProgress::Behind {
            let since = *self.behind_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.after * 10 {
                tracing::warn!(
                    behind_s = since.elapsed().as_secs(),
                    "order events: workers have had events older than the re-check's horizon \
                     unread or unacknowledged this long; the re-check waits for them"
                );
                self.behind_since = Some(Instant::now());
            }
        } else {
            self.behind_since = None;
        }
        match progress {
            WorkerProgress::CaughtUp => {}
            WorkerProgress::Lost => {
                // Everything held is due now: the queue took its events with it.
                self.make_all_due();
            }
            WorkerProgress::Behind => return Ok(()),
            // Kept: the group may come back (a worker makes it again after Redis lost it).
            WorkerProgress::NoGroup if self.seen_group => return Ok(()),
            WorkerProgress::NoGroup => {
                while !self.take_due().is_empty() {}
                return Ok(());
            }
        }
        for _ in 0..RECHECK_BATCHES_PER_ROUND {
            let due = self.take_due();
            if due.is_empty() {
                break;
            }
            let n = self.announce_again(db, conn, stream, due).await?;
            reannounced.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Announces again those of `due` still `accepted`; on failure they are due again.
    async fn announce_again(
        &mut self,
        db: &Client,
        conn: &mut EventsConn,
        stream: &str,
        due: Vec<i64>,
    ) -> Result<u64> {
        let select = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE id = ANY($1) AND status = 'accepted' \
             ORDER BY id"
        );
        let rows = match db.query_typed(&select, &[(&due, Type::INT8_ARRAY)]).await {
            Ok(r) => r,
            Err(e) => {
                self.due_again(due);
                return Err(Error::pg("re-checking order events", e));
            }
        };
        let orders: Vec<Order> = rows
            .iter()
            .filter_map(|r| Order::from_row(r).ok().map(|(o, _)| o))
            .collect();
        if orders.is_empty() {
            return Ok(0);
        }
        tracing::warn!(
            orders = orders.len(),
            after_s = self.after.as_secs_f64(),
            "order events: orders still accepted long after Redis took their events; announcing \
             them again (Redis lost events, or workers took them without moving the orders)"
        );
        if let Err(e) = conn.announce(stream, &orders).await {
            self.due_again(orders.iter().map(|o| o.id).collect());
            return Err(e);
        }
        Ok(orders.len() as u64)
    }

    /// Makes every held id due now.
    fn make_all_due(&mut self) {
        let due_at = Instant::now()
            .checked_sub(self.after)
            .unwrap_or_else(Instant::now);
        for (at, _) in self.announced.iter_mut() {
            *at = due_at;
        }
    }

    /// Puts `ids` back at the front, due now.
    fn due_again(&mut self, ids: Vec<i64>) {
        let due_at = Instant::now()
            .checked_sub(self.after)
            .unwrap_or_else(Instant::now);
        self.tracked += ids.len();
        self.announced.push_front((due_at, ids));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recheck_takes_what_is_due_in_batches_and_drops_beyond_its_cap() {
        let ms = Duration::from_millis;
        let mut r = Recheck::new(ms(500));
        r.announced((0..40_000).collect());
        std::thread::sleep(ms(40)); // past the 31 ms in which announcements share an entry
        r.announced((40_000..80_000).collect());
        assert!(!r.has_due(), "nothing is due before `after`");
        assert!(r.take_due().is_empty());
        std::thread::sleep(ms(520));
        r.announced(vec![80_000]);
        r.announced(vec![80_001]);
        assert!(r.has_due());
        // 40,000 + 40,000 is over a batch: one entry now, the other next.
        assert_eq!(r.take_due(), (0..40_000).collect::<Vec<i64>>());
        assert_eq!(r.take_due(), (40_000..80_000).collect::<Vec<i64>>());
        assert!(r.take_due().is_empty(), "the last two are not due yet");
        assert_eq!((r.tracked, r.announced.len()), (2, 1), "and share an entry");

        // Over the cap the oldest entries go, and are counted.
        let mut r = Recheck::new(ms(16));
        let half = (RECHECK_MAX_TRACKED / 2) as i64;
        r.announced((0..half).collect());
        std::thread::sleep(ms(5));
        r.announced((half..2 * half).collect());
        std::thread::sleep(ms(5));
        r.announced(vec![2 * half]);
        assert_eq!((r.tracked, r.dropped), (half as usize + 1, half as u64));
        std::thread::sleep(ms(20));
        assert_eq!(r.take_due().first(), Some(&half));

        // Off: nothing is kept.
        let mut r = Recheck::new(Duration::ZERO);
        r.announced(vec![1, 2, 3]);
        assert_eq!((r.tracked, r.wants_round()), (0, false));
    }

    #[test]
    fn ids_put_back_are_due_at_once_and_rounds_look_for_a_group_until_one_is_seen() {
        let mut r = Recheck::new(Duration::from_secs(60));
        r.announced(vec![1, 2]);
        assert!(
            r.wants_round(),
            "ids held and no group seen yet: a round looks for one"
        );
        r.seen_group = true;
        assert!(!r.wants_round(), "a group was seen and nothing is due");
        r.due_again(vec![7, 8]);
        assert!(r.has_due() && r.wants_round());
        assert_eq!(r.take_due(), vec![7, 8]);
        assert!(
            r.take_due().is_empty(),
            "the first announcement is not due yet"
        );
        assert_eq!((r.tracked, r.announced.len()), (2, 1));
    }
}
