//! Where the soak's commit time went, by the daemon's own account: its stage histograms
//! (`christmas_stage_seconds`, push → commit, TCP ack delivery) read from `/metrics` when
//! the soak starts and when it ends, the difference summarised per stage. Trades and
//! quotes are added together (their buckets are the same).
//!
//! Quantiles come from the exported buckets (100 µs … 10 s, a factor of 2–2.5 apart),
//! interpolated within the bucket: good enough to tell which stage dominates, not to
//! quote to the millisecond. Means are exact (`_sum / _count`).

/// The stages reported, in pipeline order: (metric, series selector, name, unit).
const STAGES: [(&str, &str, &str, &str); 10] = [
    (
        "christmas_push_to_commit_seconds",
        "",
        "push → commit",
        "tick",
    ),
    ("christmas_stage_seconds", "stage=\"ring\"", "ring", "tick"),
    (
        "christmas_stage_seconds",
        "stage=\"linger\"",
        "linger",
        "tick",
    ),
    (
        "christmas_stage_seconds",
        "stage=\"batching\"",
        "batching (ring + linger)",
        "tick",
    ),
    (
        "christmas_stage_seconds",
        "stage=\"spool\"",
        "spool (wait + append)",
        "batch",
    ),
    (
        "christmas_stage_seconds",
        "stage=\"fsync\"",
        "spool fsync",
        "fsync",
    ),
    (
        "christmas_stage_seconds",
        "stage=\"queue\"",
        "writer queue",
        "batch",
    ),
    (
        "christmas_stage_seconds",
        "stage=\"copy\"",
        "BEGIN … COPY",
        "batch",
    ),
    (
        "christmas_stage_seconds",
        "stage=\"commit\"",
        "COMMIT",
        "batch",
    ),
    (
        "christmas_ack_delivery_seconds",
        "transport=\"tcp\"",
        "ack delivery (TCP)",
        "frame",
    ),
];

/// One histogram read off a page, summed over the series it selects.
#[derive(Debug, Clone, Default, PartialEq)]
struct Series {
    /// (upper bound in seconds, cumulative count), ascending.
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Series {
    /// The series of `metric` whose labels contain `selector` (all of them if empty).
    fn read(text: &str, metric: &str, selector: &str) -> Series {
        let mut s = Series::default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(metric) else {
                continue;
            };
            let Some((name_labels, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if !name_labels.contains(selector) {
                continue;
            }
            if let Some(labels) = name_labels.strip_prefix("_bucket{") {
                let Some(le) = labels
                    .split("le=\"")
                    .nth(1)
                    .and_then(|l| l.split('"').next())
                else {
                    continue;
                };
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                match s.buckets.iter_mut().find(|(b, _)| *b == bound) {
                    Some((_, n)) => *n += value,
                    None => s.buckets.push((bound, value)),
                }
            } else if name_labels.starts_with("_sum") {
                s.sum += value;
            } else if name_labels.starts_with("_count") {
                s.count += value;
            }
        }
        s.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        s
    }

    /// What was added between `before` and `self`.
    fn since(&self, before: &Series) -> Series {
        let at = |b: f64| {
            before
                .buckets
                .iter()
                .find(|(x, _)| *x == b)
                .map_or(0.0, |x| x.1)
        };
        Series {
            buckets: self.buckets.iter().map(|&(b, n)| (b, n - at(b))).collect(),
            sum: self.sum - before.sum,
            count: self.count - before.count,
        }
    }

    /// The `q` quantile in seconds, interpolated within its bucket (the last finite bound
    /// for one in the +Inf bucket).
    fn quantile(&self, q: f64) -> f64 {
        if self.count <= 0.0 {
            return 0.0;
        }
        let want = q * self.count;
        let mut low = (0.0, 0.0);
        for &(bound, n) in &self.buckets {
            if n >= want && n > low.1 {
                if bound.is_infinite() {
                    return low.0;
                }
                return low.0 + (bound - low.0) * (want - low.1) / (n - low.1);
            }
            low = (bound, n);
        }
        low.0
    }
}

/// One stage's figures over the soak.
#[derive(Debug, Clone)]
pub(super) struct StageRow {
    pub(super) name: &'static str,
    pub(super) unit: &'static str,
    pub(super) count: f64,
    pub(super) mean_ms: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
}

/// Each stage's figures between two `/metrics` pages.
pub(super) fn breakdown(before: &str, after: &str) -> Vec<StageRow> {
    STAGES
        .iter()
        .map(|&(metric, selector, name, unit)| {
            let s = Series::read(after, metric, selector)
                .since(&Series::read(before, metric, selector));
            StageRow {
                name,
                unit,
                count: s.count,
                mean_ms: s.sum / s.count.max(1.0) * 1e3,
                p50_ms: s.quantile(0.5) * 1e3,
                p99_ms: s.quantile(0.99) * 1e3,
            }
        })
        .collect()
}

/// The breakdown as a Markdown table.
pub(super) fn table(rows: &[StageRow]) -> String {
    let mut t =
        String::from("| stage | per | count | mean | p50 | p99 |\n|---|---|---|---|---|---|\n");
    // A stage nothing went through (the TCP ack path in an HTTP soak) says nothing.
    for r in rows.iter().filter(|r| r.count > 0.0) {
        t.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} ms | {:.1} ms | {:.1} ms |\n",
            r.name, r.unit, r.count, r.mean_ms, r.p50_ms, r.p99_ms
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
christmas_stage_seconds_bucket{kind=\"trade\",stage=\"ring\",le=\"0.001\"} 50
christmas_stage_seconds_bucket{kind=\"trade\",stage=\"ring\",le=\"0.01\"} 90
christmas_stage_seconds_bucket{kind=\"trade\",stage=\"ring\",le=\"+Inf\"} 100
christmas_stage_seconds_sum{kind=\"trade\",stage=\"ring\"} 0.5
christmas_stage_seconds_count{kind=\"trade\",stage=\"ring\"} 100
christmas_stage_seconds_bucket{kind=\"quote\",stage=\"ring\",le=\"0.001\"} 50
christmas_stage_seconds_bucket{kind=\"quote\",stage=\"ring\",le=\"0.01\"} 90
christmas_stage_seconds_bucket{kind=\"quote\",stage=\"ring\",le=\"+Inf\"} 100
christmas_stage_seconds_sum{kind=\"quote\",stage=\"ring\"} 0.5
christmas_stage_seconds_count{kind=\"quote\",stage=\"ring\"} 100
christmas_stage_seconds_count{kind=\"quote\",stage=\"linger\"} 7
";

    #[test]
    fn series_add_kinds_and_interpolate_within_buckets() {
        let s = Series::read(PAGE, "christmas_stage_seconds", "stage=\"ring\"");
        assert_eq!(s.count, 200.0);
        assert_eq!(
            s.buckets,
            [(0.001, 100.0), (0.01, 180.0), (f64::INFINITY, 200.0)]
        );
        assert!((s.quantile(0.5) - 0.001).abs() < 1e-12);
        // 150 of 200: 50 of the 80 in (1 ms, 10 ms].
        assert!((s.quantile(0.75) - (0.001 + 0.009 * 50.0 / 80.0)).abs() < 1e-12);
        assert_eq!(s.quantile(0.99), 0.01, "in +Inf: the last finite bound");
        let none = s.since(&s);
        assert_eq!((none.count, none.quantile(0.5)), (0.0, 0.0));
    }
}
