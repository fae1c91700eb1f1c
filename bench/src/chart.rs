//! SVG charts written by hand: line charts (linear or log x) and bar charts, with axes,
//! ticks, labels and a legend. Small enough that a plotting crate is not worth its build time.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 420.0;
/// Plot area: left, top, right, bottom margins.
const ML: f64 = 78.0;
const MT: f64 = 44.0;
const MR: f64 = 215.0;
const MB: f64 = 56.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f",
];

/// One line of a [`LineChart`].
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points, drawn in order.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed (ceilings and peers), solid otherwise.
    pub dashed: bool,
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Logarithmic x axis (batch sizes, latencies, shard counts).
    pub x_log: bool,
    /// x ticks at these values instead of the automatic ones (shard counts 1, 2, 4).
    pub x_ticks: Option<Vec<f64>>,
    /// Formats y tick values (`1.2M`, `0.99`).
    pub y_format: fn(f64) -> String,
    /// y axis starts at 0 (throughput) rather than at the smallest value.
    pub y_from_zero: bool,
    pub series: Vec<Series>,
}

impl LineChart {
    /// A latency CDF: milliseconds on a logarithmic x axis, the fraction of `y_label` at or
    /// below each on a percent y axis from 0.
    pub fn latency_cdf(title: impl Into<String>, y_label: &str, series: Vec<Series>) -> Self {
        LineChart {
            title: title.into(),
            x_label: "milliseconds (log scale)".into(),
            y_label: y_label.into(),
            x_log: true,
            x_ticks: None,
            y_format: percent,
            y_from_zero: true,
            series,
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `1234567.0` → `1.23M`, `45600.0` → `45.6k`.
pub fn si(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if x.abs() >= 100.0 || x == x.trunc() {
        0
    } else if x.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{x:.digits$}{suffix}")
}

/// Fractions as percentiles: `0.99` → `99 %`.
pub fn percent(v: f64) -> String {
    let p = (v * 1000.0).round() / 10.0;
    if p == p.trunc() {
        format!("{p:.0} %")
    } else {
        format!("{p:.1} %")
    }
}

/// Ticks of a linear axis over `[lo, hi]`: about five at 1, 2 or 5 × 10^k.
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

/// Ticks of a log axis over `[lo, hi]`: 1, 2 and 5 × 10^k (only powers of ten when the
/// range is wide).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let mults: &[f64] = if b - a > 4 { &[1.0] } else { &[1.0, 2.0, 5.0] };
    let mut out = Vec::new();
    for e in a..=b {
        for m in mults {
            let v = m * 10f64.powi(e);
            if v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9) {
                out.push(v);
            }
        }
    }
    out
}

fn header(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Helvetica, Arial, sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>
"#,
        (ML + W - MR) / 2.0,
        esc(title)
    );
}

fn axis_labels(out: &mut String, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>
<text transform="translate(18,{}) rotate(-90)" text-anchor="middle">{}</text>
"#,
        (ML + W - MR) / 2.0,
        H - 14.0,
        esc(x_label),
        (MT + H - MB) / 2.0,
        esc(y_label)
    );
}

fn legend(out: &mut String, entries: &[(String, bool)]) {
    for (i, (name, dashed)) in entries.iter().enumerate() {
        let y = MT + 10.0 + i as f64 * 20.0;
        let x = W - MR + 14.0;
        let dash = if *dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2.5"{dash}/>
<text x="{}" y="{}">{}</text>
"#,
            x + 26.0,
            COLORS[i % COLORS.len()],
            x + 32.0,
            y + 4.0,
            esc(name)
        );
    }
}

/// Renders `c` as an SVG document.
pub fn line_chart(c: &LineChart) -> String {
    let pts = || c.series.iter().flat_map(|s| s.points.iter());
    let finite = |v: &f64| v.is_finite() && (!c.x_log || *v > 0.0);
    let xs: Vec<f64> = pts().map(|p| p.0).filter(finite).collect();
    let ys: Vec<f64> = pts().map(|p| p.1).filter(|v| v.is_finite()).collect();
    let mut out = String::new();
    header(&mut out, &c.title);
    if xs.is_empty() || ys.is_empty() {
        out.push_str("<text x=\"40\" y=\"80\">no data</text></svg>\n");
        return out;
    }
    let (mut x0, mut x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    if x1 <= x0 {
        x1 = x0 * 2.0 + 1.0;
        x0 = if c.x_log { x0 / 2.0 } else { x0 - 1.0 };
    }
    let y_max = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let y_min = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let (y0, y1) = if c.y_from_zero {
        (0.0, if y_max > 0.0 { y_max * 1.08 } else { 1.0 })
    } else {
        let pad = ((y_max - y_min) * 0.05).max(1e-9);
        (y_min - pad, y_max + pad)
    };
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let sx = |x: f64| {
        let f = if c.x_log {
            (x.log10() - x0.log10()) / (x1.log10() - x0.log10())
        } else {
            (x - x0) / (x1 - x0)
        };
        ML + f * pw
    };
    let sy = |y: f64| MT + ph - (y - y0) / (y1 - y0) * ph;
    // Grid and ticks.
    let xt = if let Some(t) = &c.x_ticks {
        t.clone()
    } else if c.x_log {
        log_ticks(x0, x1)
    } else {
        linear_ticks(x0, x1)
    };
    for t in &xt {
        let x = sx(*t);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" y1="{MT}" x2="{x:.1}" y2="{:.1}" stroke="#e5e5e5"/>
<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>
"##,
            MT + ph,
            MT + ph + 18.0,
            si(*t)
        );
    }
    for t in linear_ticks(y0, y1) {
        let y = sy(t);
        y_gridline(&mut out, y, pw, &esc(&(c.y_format)(t)));
    }
    let _ = writeln!(
        out,
        r##"<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    for (i, s) in c.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .filter(|p| finite(&p.0) && p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5"{dash}/>"#,
            path.join(" ")
        );
        // Markers, unless the series is dense (a CDF).
        if path.len() <= 12 {
            for p in &path {
                let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(out, r#"<circle cx="{x}" cy="{y}" r="3.5" fill="{color}"/>"#);
            }
        }
    }
    axis_labels(&mut out, &c.x_label, &c.y_label);
    let entries: Vec<(String, bool)> = c
        .series
        .iter()
        .map(|s| (s.name.clone(), s.dashed))
        .collect();
    legend(&mut out, &entries);
    out.push_str("</svg>\n");
    out
}

/// One bar of a [`bar_chart`].
#[derive(Debug, Clone)]
pub struct Bar {
    /// Label under the bar.
    pub label: String,
    pub value: f64,
    /// Colour index: bars of one kind (ours, ceiling, peer) share a colour.
    pub color: usize,
}

/// A horizontal grid line at height `y` across a plot `pw` wide, with `label` (SVG-ready
/// text) left of the axis.
fn y_gridline(out: &mut String, y: f64, pw: f64, label: &str) {
    let _ = write!(
        out,
        r##"<line x1="{ML}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/>
<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>
"##,
        ML + pw,
        ML - 6.0,
        y + 4.0,
        label
    );
}

/// A vertical bar chart with the value printed on each bar; `legend` names the colours.
pub fn bar_chart(title: &str, y_label: &str, bars: &[Bar], legend_names: &[&str]) -> String {
    let mut out = String::new();
    header(&mut out, title);
    let (pw, ph) = (W - ML - MR, H - MT - MB);
    let y_max = bars.iter().map(|b| b.value).fold(0.0, f64::max);
    let y1 = if y_max > 0.0 { y_max * 1.12 } else { 1.0 };
    let sy = |y: f64| MT + ph - y / y1 * ph;
    for t in linear_ticks(0.0, y1) {
        let y = sy(t);
        y_gridline(&mut out, y, pw, &si(t));
    }
    let n = bars.len().max(1) as f64;
    let slot = pw / n;
    let bw = (slot * 0.62).min(90.0);
    for (i, b) in bars.iter().enumerate() {
        let cx = ML + slot * (i as f64 + 0.5);
        let y = sy(b.value.max(0.0));
        let color = COLORS[b.color % COLORS.len()];
        let _ = write!(
            out,
            r#"<rect x="{:.1}" y="{y:.1}" width="{bw:.1}" height="{:.1}" fill="{color}"/>
<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>
<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>
"#,
            cx - bw / 2.0,
            MT + ph - y,
            y - 5.0,
            si(b.value),
            MT + ph + 16.0,
            esc(&b.label)
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    axis_labels(&mut out, "", y_label);
    let entries: Vec<(String, bool)> = legend_names
        .iter()
        .map(|n| (n.to_string(), false))
        .collect();
    legend(&mut out, &entries);
    out.push_str("</svg>\n");
    out
}

/// The points of a latency CDF from a histogram of microseconds: (milliseconds, fraction).
pub fn cdf_points(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut qs: Vec<f64> = (0..=100).map(|i| f64::from(i) / 100.0).collect();
    qs.extend([0.995, 0.999, 0.9999]);
    qs.sort_by(f64::total_cmp);
    qs.iter()
        .map(|&q| ((h.value_at_quantile(q).max(1)) as f64 / 1e3, q))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(linear_ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(
            log_ticks(1_000.0, 50_000.0),
            vec![1e3, 2e3, 5e3, 1e4, 2e4, 5e4]
        );
        assert_eq!(si(1_234_567.0), "1.23M");
        assert_eq!(si(50_000.0), "50k");
        assert_eq!(percent(0.99), "99 %");
        assert_eq!(percent(0.6000000000000001), "60 %");
        assert_eq!(percent(0.999), "99.9 %");
    }

    #[test]
    fn charts_are_svg() {
        let c = LineChart {
            title: "t <x>".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_log: true,
            x_ticks: None,
            y_format: si,
            y_from_zero: true,
            series: vec![Series {
                name: "a".into(),
                points: vec![(1e3, 1.0), (1e4, 2.0)],
                dashed: true,
            }],
        };
        let svg = line_chart(&c);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("t &lt;x&gt;") && svg.contains("polyline"));
        let b = bar_chart(
            "b",
            "y",
            &[Bar {
                label: "x".into(),
                value: 3.0,
                color: 0,
            }],
            &["ours"],
        );
        assert!(b.contains("<rect") && b.ends_with("</svg>\n"));
    }
}
