//! What every scenario gets ([`RunContext`]: the run's date, where its charts go, the
//! progress display) and what it gives back ([`Outcome`]: headline figures, JSON, charts).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::{machine, report};

/// One run of the harness: `all` or a single scenario.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// `2026-11-25T08:24:38Z`: when the run started.
    pub stamp: String,
    /// The command line, with URLs replaced by the names of their variables.
    pub command: String,
    /// Shorter runs and a reduced sweep.
    pub quick: bool,
    /// Progress bars (drawn on stderr when it is a terminal).
    pub progress: MultiProgress,
}

impl RunContext {
    pub fn new(quick: bool) -> Self {
        let mut command = std::env::args().collect::<Vec<_>>().join(" ");
        for var in ["DATABASE_URL", "REDIS_URL"] {
            if let Ok(v) = std::env::var(var) {
                if !v.is_empty() {
                    command = command.replace(&v, &format!("${var}"));
                }
            }
        }
        // Name the binary as it is run from the repository root.
        if let Some(rest) = command.split_once(' ').map(|(_, r)| r.to_string()) {
            command = format!("./target/release/christmas-bench {rest}");
        }
        RunContext {
            stamp: machine::utc_now(),
            command,
            quick,
            progress: MultiProgress::new(),
        }
    }

    /// `stamp · `command` · machine`: the line under a section's title saying when, how and
    /// on what the figures were taken.
    pub fn provenance(&self) -> String {
        format!(
            "{} · `{}` · {}",
            self.stamp,
            self.command,
            machine::describe()
        )
    }

    /// `2026-11-25T082438Z`: the stamp as a file name.
    pub fn date(&self) -> String {
        self.stamp.replace(':', "")
    }

    /// bench/results/<date>/, created.
    pub fn charts_dir(&self) -> Result<PathBuf> {
        let dir = report::bench_dir().join("results").join(self.date());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Writes `svg` to bench/results/<date>/<name>.svg; returns the path relative to bench/.
    pub fn write_chart(&self, name: &str, svg: &str) -> Result<String> {
        let path = self.charts_dir()?.join(format!("{name}.svg"));
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        Ok(format!("results/{}/{name}.svg", self.date()))
    }

    /// A bar of `steps` steps for one scenario; its message says what runs now.
    pub fn steps(&self, scenario: &str, steps: u64) -> ProgressBar {
        let bar = self.progress.add(ProgressBar::new(steps));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>8} [{bar:30}] {pos:>2}/{len:2} {elapsed_precise} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(scenario.to_string());
        bar.enable_steady_tick(Duration::from_millis(250));
        bar
    }
}

/// One headline figure of a scenario, next to its ceiling or peer, with the targets it is
/// judged by: a row of the summary table.
#[derive(Debug, Clone)]
pub struct Headline {
    /// What is measured (`committed rows/s, embedded engine`).
    pub figure: String,
    pub value: f64,
    /// `rows/s`, `orders/s`…
    pub unit: String,
    /// The ceiling or peer it is compared with; empty for a figure judged on its own (a
    /// latency, a memory size).
    pub against: String,
    pub against_value: f64,
    /// Every one must hold for the figure to meet its target; none: reported, not judged.
    pub targets: Vec<Target>,
}

/// What a headline figure should reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The ratio to the ceiling or peer at least this.
    RatioAtLeast(f64),
    /// The value at least this (in the headline's unit).
    AtLeast(f64),
    /// The value at most this (in the headline's unit).
    AtMost(f64),
}

impl Headline {
    /// `figure` beside the ceiling or peer `against`, measured in the same run.
    pub fn against(
        figure: impl Into<String>,
        value: f64,
        unit: &str,
        against: impl Into<String>,
        against_value: f64,
    ) -> Self {
        Headline {
            figure: figure.into(),
            value,
            unit: unit.into(),
            against: against.into(),
            against_value,
            targets: Vec::new(),
        }
    }

    /// A figure with no ceiling or peer, judged by its targets alone.
    pub fn alone(figure: impl Into<String>, value: f64, unit: &str) -> Self {
        Self::against(figure, value, unit, "", 0.0)
    }

    /// The same headline, also judged by `target`.
    pub fn target(mut self, target: Target) -> Self {
        self.targets.push(target);
        self
    }

    /// Value over ceiling or peer; `None` without one.
    pub fn ratio(&self) -> Option<f64> {
        (!self.against.is_empty()).then(|| self.value / self.against_value.max(f64::MIN_POSITIVE))
    }

    /// Whether every target holds; `None` without targets (reported, not judged).
    pub fn met(&self) -> Option<bool> {
        if self.targets.is_empty() {
            return None;
        }
        Some(self.targets.iter().all(|t| match *t {
            Target::RatioAtLeast(r) => self.ratio().is_some_and(|x| x >= r),
            Target::AtLeast(v) => self.value >= v,
            Target::AtMost(v) => self.value <= v,
        }))
    }

    /// The targets as the summary table shows them: `ratio ≥ 0.90`, `≤ 50 ms`; `—` for none.
    pub fn target_text(&self) -> String {
        if self.targets.is_empty() {
            return "—".into();
        }
        let texts: Vec<String> = self
            .targets
            .iter()
            .map(|t| match *t {
                Target::RatioAtLeast(r) => format!("ratio ≥ {r:.2}"),
                Target::AtLeast(v) => format!("≥ {} {}", figure_number(v), self.unit),
                Target::AtMost(v) => format!("≤ {} {}", figure_number(v), self.unit),
            })
            .collect();
        texts.join(", ")
    }
}

/// A figure as the summary table writes it: `1,018,120`, `28.52`, `0.5`.
pub fn figure_number(v: f64) -> String {
    if v.abs() >= 1000.0 {
        let digits = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// What a scenario hands back to `all`.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: &'static str,
    pub headlines: Vec<Headline>,
    /// Every figure of the run.
    pub json: Value,
    /// (title, path relative to bench/) of each chart.
    pub charts: Vec<(String, String)>,
    /// The scenario's RESULTS.md section.
    pub markdown: String,
}

impl Outcome {
    /// Appends the chart links to `md`, prints it, writes it as the scenario's section of
    /// bench/RESULTS.md and keeps it.
    pub fn publish(mut self, mut md: String) -> Result<Self> {
        md.push_str(&self.chart_links());
        println!("{md}");
        report::update_results(self.scenario, &md)?;
        self.markdown = md;
        Ok(self)
    }

    /// Markdown lines linking the charts, for a RESULTS.md section.
    pub fn chart_links(&self) -> String {
        if self.charts.is_empty() {
            return String::new();
        }
        let links: Vec<String> = self
            .charts
            .iter()
            .map(|(t, p)| format!("[{t}]({p})"))
            .collect();
        format!("Charts: {}.\n", links.join(" · "))
    }
}

/// Prints a line above the progress bars, or on stderr when they are hidden (not a
/// terminal), so the log of a run keeps every per-run figure.
pub fn say(bar: &ProgressBar, line: impl AsRef<str>) {
    if bar.is_hidden() {
        eprintln!("{}", line.as_ref());
    } else {
        bar.println(line);
    }
}

/// The median of `v` (which must not be empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `1 run` or `5 runs`, for a report's "median of …".
pub fn runs(repeats: usize) -> String {
    format!("{repeats} run{}", if repeats == 1 { "" } else { "s" })
}

/// A two-worker Tokio runtime, like the daemon's on this machine.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_in_the_table() {
        assert_eq!(figure_number(1_018_120.4), "1,018,120");
        assert_eq!(figure_number(20_000.0), "20,000");
        assert_eq!(figure_number(256.0), "256");
        assert_eq!(figure_number(28.516), "28.52");
        assert_eq!(figure_number(5.0), "5");
    }

    #[test]
    fn a_headline_meets_all_its_targets_or_none() {
        let h = Headline::against("orders/s", 25_930.0, "orders/s", "naive", 4_565.0)
            .target(Target::AtLeast(20_000.0))
            .target(Target::RatioAtLeast(5.0));
        assert_eq!(h.met(), Some(true));
        assert_eq!(h.target_text(), "≥ 20,000 orders/s, ratio ≥ 5.00");
        let p99 = Headline::alone("p99", 28.52, "ms").target(Target::AtMost(20.0));
        assert_eq!(p99.ratio(), None);
        assert_eq!(p99.met(), Some(false));
        assert_eq!(Headline::alone("rows/s", 1.0, "rows/s").met(), None);
    }
}
