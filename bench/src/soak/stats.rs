//! The soak's per-minute rows and how a series of them is judged: medians, slope,
//! correlation, and the windows the RSS and p99 verdicts read.

use hdrhistogram::Histogram;

/// A latency histogram, microseconds up to 10 minutes.
pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// One minute of the soak.
#[derive(Debug, Clone)]
pub(super) struct Minute {
    pub(super) minute: u64,
    pub(super) ticks_per_s: f64,
    pub(super) tick_p50_ms: f64,
    pub(super) tick_p99_ms: f64,
    pub(super) orders_per_s: f64,
    pub(super) order_p99_ms: f64,
    /// Median and largest of the minute's once-a-second RSS samples.
    pub(super) rss_median_mib: f64,
    pub(super) rss_max_mib: f64,
    /// Medians of the minute's samples of `RssAnon` and of what the daemon holds in flight.
    pub(super) anon_median_mib: f64,
    pub(super) threads_max: f64,
    pub(super) in_flight_median: f64,
    pub(super) fanout_queue_median: f64,
    pub(super) order_queue_median: f64,
    /// The whole machine's idle CPU over the minute, % (`/proc/stat`).
    pub(super) idle_pct: f64,
    /// Redis's memory at the minute's end, MiB.
    pub(super) redis_mib: f64,
    pub(super) errors: u64,
}

/// Idle and total jiffies of all CPUs since boot (`/proc/stat`).
pub(super) fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: idle and iowait are idle.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (idle, fields.iter().take(8).sum())
}

/// The idle share (0–1) of the CPU time between two [`cpu_jiffies`] readings.
pub(super) fn idle_share(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1).max(1) as f64;
    after.0.saturating_sub(before.0) as f64 / total
}

/// The median (0 of nothing).
pub(super) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The steps 0, 1, 2, … of a series of `n` values (its clock).
pub(super) fn steps(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

/// Sums of the centred cross and squared terms of `a` and `b` (over their common length):
/// (Σ da·db, Σ da², Σ db²); `None` below two values.
fn co_moments(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    let n = a.len().min(b.len());
    if n < 2 {
        return None;
    }
    let (a, b) = (&a[..n], &b[..n]);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n as f64;
    let (ma, mb) = (mean(a), mean(b));
    Some(
        a.iter()
            .zip(b)
            .fold((0.0, 0.0, 0.0), |(ab, aa, bb), (x, y)| {
                let (dx, dy) = (x - ma, y - mb);
                (ab + dx * dy, aa + dx * dx, bb + dy * dy)
            }),
    )
}

/// Least-squares slope of `values` per step.
pub(super) fn slope(values: &[f64]) -> f64 {
    co_moments(&steps(values.len()), values).map_or(0.0, |(xy, xx, _)| xy / xx)
}

/// Pearson correlation of `a` and `b` (0 when either is constant or they are shorter than 2).
pub(super) fn correlation(a: &[f64], b: &[f64]) -> f64 {
    match co_moments(a, b) {
        Some((ab, aa, bb)) if aa > 0.0 && bb > 0.0 => ab / (aa * bb).sqrt(),
        _ => 0.0,
    }
}

/// Largest rise of the typical per-minute tick-commit p99 from the first window to the last.
pub(super) const P99_DRIFT_LIMIT_PCT: f64 = 50.0;
/// Largest per-minute p99 as a multiple of the run's median per-minute p99.
pub(super) const P99_SPREAD_LIMIT: f64 = 4.0;

/// A per-minute series judged by windows: the median of its first `window` values against
/// that of its last (growth or drift), and its largest value against its median (a stall).
/// The RSS verdict reads the first; "p99 stable" reads both.
#[derive(Debug, Clone, Copy)]
pub(super) struct Windows {
    pub(super) first: f64,
    pub(super) last: f64,
    pub(super) median: f64,
    pub(super) max: f64,
}

impl Windows {
    pub(super) fn of(values: &[f64], window: usize) -> Self {
        let w = window.min(values.len());
        Windows {
            first: median(&values[..w]),
            last: median(&values[values.len() - w..]),
            median: median(values),
            max: values.iter().copied().fold(0.0, f64::max),
        }
    }

    /// The last window's median against the first's, in per cent.
    pub(super) fn drift_pct(&self) -> f64 {
        if self.first > 0.0 {
            (self.last - self.first) / self.first * 100.0
        } else {
            0.0
        }
    }

    /// The largest value as a multiple of the median.
    pub(super) fn spread(&self) -> f64 {
        if self.median > 0.0 {
            self.max / self.median
        } else {
            0.0
        }
    }

    /// "p99 stable" for a series of per-minute p99s: no drift past +50 %, no minute above
    /// four times the median minute.
    pub(super) fn p99_stable(&self) -> bool {
        self.drift_pct() <= P99_DRIFT_LIMIT_PCT && self.spread() <= P99_SPREAD_LIMIT
    }
}

#[cfg(test)]
mod tests {
    use super::{correlation, median, slope, Windows};

    #[test]
    fn p99_stability_catches_drift_and_stalls() {
        // Flat with noise: stable.
        let flat = [
            300.0, 350.0, 320.0, 400.0, 310.0, 330.0, 360.0, 340.0, 300.0, 350.0,
        ];
        let s = Windows::of(&flat, 5);
        assert_eq!((s.first, s.last), (320.0, 340.0));
        assert!(s.p99_stable(), "{s:?}");
        // The typical p99 doubles by the end: drift.
        let drift = [
            300.0, 310.0, 320.0, 300.0, 310.0, 600.0, 620.0, 640.0, 610.0, 630.0,
        ];
        let s = Windows::of(&drift, 5);
        assert!(s.drift_pct() > 90.0 && !s.p99_stable(), "{s:?}");
        // One minute at ten times the rest: a stall.
        let mut stall = flat;
        stall[4] = 3_400.0;
        let s = Windows::of(&stall, 5);
        assert!(s.spread() > 9.0 && !s.p99_stable(), "{s:?}");
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn slope_of_a_line_and_of_a_flat_sawtooth() {
        assert!((slope(&[1.0, 3.0, 5.0, 7.0]) - 2.0).abs() < 1e-12);
        assert_eq!(slope(&[5.0, 9.0, 5.0, 9.0, 5.0]), 0.0);
        assert_eq!(slope(&[4.0]), 0.0);
    }

    #[test]
    fn correlation_of_lines_and_of_a_constant() {
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!((correlation(&x, &[2.0, 4.0, 6.0, 8.0]) - 1.0).abs() < 1e-12);
        assert!((correlation(&x, &[8.0, 6.0, 4.0, 2.0]) + 1.0).abs() < 1e-12);
        assert_eq!(correlation(&x, &[5.0; 4]), 0.0);
        assert_eq!(correlation(&[1.0], &[1.0]), 0.0);
    }
}
