//! What the tests that stop or break a daemon under load share: clients posting batches of
//! ticks until the daemon stops answering, and the check that every tick it acknowledged
//! reached `market_data`.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::HttpClient;

/// Ticks in one `POST /api/ticks` of a [`TickLoad`].
pub const LOAD_BATCH: i64 = 100;

/// Clients each posting batches of [`LOAD_BATCH`] ticks to `/api/ticks`, one after another,
/// until a request fails or is answered other than 202; the `exchange_seq`s of every
/// accepted batch are kept.
#[derive(Debug)]
pub struct TickLoad {
    acked: Arc<Mutex<Vec<i64>>>,
    clients: Vec<JoinHandle<()>>,
}

impl TickLoad {
    /// Starts one task per client. `body` turns a batch's `exchange_seq`s (distinct across
    /// all clients) into the request body.
    pub fn start(
        clients: Vec<HttpClient>,
        body: impl Fn(Range<i64>) -> String + Send + Sync + 'static,
    ) -> TickLoad {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (next, body) = (Arc::new(AtomicI64::new(0)), Arc::new(body));
        let clients = clients
            .into_iter()
            .map(|client| {
                let (acked, next, body) = (acked.clone(), next.clone(), body.clone());
                tokio::spawn(async move {
                    loop {
                        let base = next.fetch_add(1, Ordering::Relaxed) * LOAD_BATCH;
                        let seqs = base..base + LOAD_BATCH;
                        let request = body(seqs.clone());
                        let Ok(r) = client.request("POST", "/api/ticks", &[], request).await else {
                            return;
                        };
                        if r.status != 202 {
                            return;
                        }
                        acked.lock().unwrap().extend(seqs);
                    }
                })
            })
            .collect();
        TickLoad { acked, clients }
    }

    /// Waits for every client to give up (the daemon must be stopping) and returns the
    /// acknowledged `exchange_seq`s, asserting there were at least 1,000: less would not
    /// have been load.
    pub async fn finish(self) -> Vec<i64> {
        for c in self.clients {
            c.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        assert!(acked.len() >= 1_000, "load was too light: {}", acked.len());
        acked
    }
}

/// How the acknowledged ticks of a test compare with what `market_data` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredTicks {
    /// Acknowledged `exchange_seq`s not in `market_data`.
    pub missing: usize,
    /// Rows of `market_data` whose `exchange_seq` another row has too.
    pub duplicated: usize,
}

/// Reads every `exchange_seq` of `market_data` in the database at `url` and compares it
/// with `acked`.
pub async fn stored_ticks(url: &str, acked: &[i64]) -> StoredTicks {
    let client = crate::connect(url).await.unwrap();
    let rows: Vec<i64> = client
        .query("SELECT exchange_seq FROM market_data", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let stored: HashSet<i64> = rows.iter().copied().collect();
    StoredTicks {
        missing: acked.iter().filter(|k| !stored.contains(k)).count(),
        duplicated: rows.len() - stored.len(),
    }
}
