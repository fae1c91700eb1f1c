//! [`CoarseClock`]: a clock producers can read for the price of one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Nanoseconds since the ingestor started, refreshed by the batchers on every loop
/// (at least every millisecond while idle).
///
/// Producers stamp each record with [`CoarseClock::recent`] instead of calling
/// `Instant::now()` per tick. The stamp is never later than the true push time, so the
/// push → commit latencies built from it err on the long side, by at most one refresh
/// interval.
#[derive(Debug)]
pub struct CoarseClock {
    base: Instant,
    // Invariant: only ever increases (refreshes use `fetch_max`).
    recent_ns: AtomicU64,
}

impl CoarseClock {
    /// A clock starting now.
    pub fn new() -> Self {
        CoarseClock {
            base: Instant::now(),
            recent_ns: AtomicU64::new(0),
        }
    }

    /// The precise time since start, and refreshes the coarse reading.
    #[inline]
    pub fn now(&self) -> u64 {
        let ns = self.base.elapsed().as_nanos() as u64;
        self.recent_ns.fetch_max(ns, Ordering::Relaxed);
        ns
    }

    /// The last refreshed reading: cheap, possibly up to one refresh interval old.
    #[inline]
    pub fn recent(&self) -> u64 {
        self.recent_ns.load(Ordering::Relaxed)
    }
}

impl Default for CoarseClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_never_passes_now() {
        let c = CoarseClock::new();
        let a = c.now();
        let r = c.recent();
        assert!(r >= a);
        assert!(c.now() >= r);
    }
}
