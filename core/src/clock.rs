//! [`PipelineClock`]: the time base of push → commit latencies.

use std::time::Instant;

/// Nanoseconds since the ingestor started, from the monotonic clock.
///
/// Each record is stamped when pushed and compared with the commit time, so the push →
/// commit histogram measures every record's real wait. Reading the clock is a vDSO call
/// (tens of nanoseconds, no lock, no shared write), cheaper than any shared "recent time"
/// cell that producers would all read while a refresher writes it.
#[derive(Debug, Clone, Copy)]
pub struct PipelineClock {
    base: Instant,
}

impl PipelineClock {
    /// A clock starting now.
    pub fn new() -> Self {
        PipelineClock {
            base: Instant::now(),
        }
    }

    /// Nanoseconds since start.
    #[inline]
    pub fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

impl Default for PipelineClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic() {
        let c = PipelineClock::new();
        let a = c.now();
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert!(c.now() >= a + 1_000_000);
    }
}
