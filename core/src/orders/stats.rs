//! [`DeskStats`]: what the desk's writers and event publisher count, shared with the desk's
//! metrics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::error::Result;
use crate::orders::types::SubmitOutcome;

/// The writers' and publisher's counters, read by `OrderDesk::metrics` (each field is the
/// `OrderDeskSnapshot` field of the same name).
#[derive(Debug)]
pub(super) struct DeskStats {
    pub(super) created: AtomicU64,
    pub(super) existing: AtomicU64,
    pub(super) conflicts: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) groups: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) rewritten: AtomicU64,
    pub(super) events_published: AtomicU64,
    pub(super) event_failures: AtomicU64,
    pub(super) events_trimmed: AtomicU64,
    pub(super) events_reannounced: AtomicU64,
    /// Whether the publisher's broker connection was up when it last looked.
    pub(super) events_broker_up: AtomicBool,
    /// Commit time, group size, submit time.
    pub(super) histograms: Mutex<[Histogram<u64>; 3]>,
}

impl DeskStats {
    pub(super) fn new() -> DeskStats {
        let h = || {
            let mut h = Histogram::new(3).expect("3 significant figures is valid");
            h.auto(true);
            h
        };
        DeskStats {
            created: AtomicU64::new(0),
            existing: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            rewritten: AtomicU64::new(0),
            events_published: AtomicU64::new(0),
            event_failures: AtomicU64::new(0),
            events_trimmed: AtomicU64::new(0),
            events_reannounced: AtomicU64::new(0),
            events_broker_up: AtomicBool::new(false),
            histograms: Mutex::new([h(), h(), h()]),
        }
    }

    /// Counts one answered group: one outcome per submission, each queued at the matching
    /// `queued_at`.
    pub(super) fn record(
        &self,
        queued_at: impl Iterator<Item = Instant>,
        outcomes: &[Result<SubmitOutcome>],
        commit: Duration,
    ) {
        let (mut created, mut existing, mut conflicts, mut failed) = (0, 0, 0, 0);
        for o in outcomes {
            match o {
                Ok(SubmitOutcome::Created(_)) => created += 1,
                Ok(SubmitOutcome::Existing(_)) => existing += 1,
                Ok(SubmitOutcome::Conflict(_)) => conflicts += 1,
                Err(_) => failed += 1,
            }
        }
        self.created.fetch_add(created, Ordering::Relaxed);
        self.existing.fetch_add(existing, Ordering::Relaxed);
        self.conflicts.fetch_add(conflicts, Ordering::Relaxed);
        self.failed.fetch_add(failed, Ordering::Relaxed);
        self.groups.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut h = self.histograms.lock().unwrap_or_else(|e| e.into_inner());
        let _ = h[0].record(commit.as_micros() as u64);
        let _ = h[1].record(outcomes.len() as u64);
        for at in queued_at {
            let _ = h[2].record(now.duration_since(at).as_micros() as u64);
        }
    }
}
