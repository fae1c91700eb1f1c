//! The bench's SVG charts, drawn by `plotters` (SVG backend only): line charts on a linear or
//! logarithmic x axis, and bar charts, each with a title, axis titles with units, tick labels
//! and a legend. Tick positions are chosen here (1, 2 and 5 × 10^k) and bound as the axes' key
//! points, so shard counts, batch sizes and milliseconds read as round numbers.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Width and height of every chart, pixels.
const SIZE: (u32, u32) = (720, 420);
const FONT: &str = "sans-serif";
const COLORS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0x7f, 0x7f, 0x7f),
];
const GRID: RGBColor = RGBColor(0xe5, 0xe5, 0xe5);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

/// A linear f64 axis with its ticks at given values (plotters chooses its own for an f64
/// range, and does not take given ones there).
#[derive(Debug, Clone)]
struct Axis {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Axis {
    fn new(range: Range<f64>, ticks: Vec<f64>) -> Self {
        Axis { range, ticks }
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.range.start) / (self.range.end - self.range.start);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

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

/// Draws a chart with `draw` into an SVG document; a chart that cannot be drawn becomes an
/// SVG saying why (a report is still written).
fn render(draw: impl FnOnce(&Area<'_>) -> Drawn) -> String {
    let mut svg = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)
            .map_err(Into::into)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(Into::into))
    };
    match result {
        Ok(()) if svg.ends_with('\n') => svg,
        Ok(()) => svg + "\n",
        Err(e) => {
            let text = e.to_string().replace('&', "&amp;").replace('<', "&lt;");
            format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\">\
                 <text x=\"20\" y=\"40\">chart not drawn: {text}</text></svg>\n",
                SIZE.0, SIZE.1
            )
        }
    }
}

/// A chart on two [`Axis`].
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<Axis, Axis>>;

/// The smallest and largest of `values`.
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    })
}

/// A chart's frame: the title, the plot area on axes `x` and `y` (each with its title,
/// units included), a light grid at their ticks and the tick labels `x_tick` and `y_tick`
/// write.
fn frame<'a, 'b>(
    root: &'a Area<'b>,
    title: &str,
    x: (Axis, &str),
    y: (Axis, &str),
    x_tick: &dyn Fn(&f64) -> String,
    y_tick: &dyn Fn(&f64) -> String,
) -> Result<Chart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 18))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(x.0, y.0)?;
    chart
        .configure_mesh()
        .x_desc(x.1)
        .y_desc(y.1)
        .x_label_formatter(x_tick)
        .y_label_formatter(y_tick)
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .draw()?;
    Ok(chart)
}

/// The legend of every labelled series, boxed, at `position` inside the plot.
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, position: SeriesLabelPosition) -> Drawn {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 12))
        .draw()?;
    Ok(())
}

/// The tick of `ticks` whose axis position (in `keys`) is nearest `v`, as a label.
fn tick_label(ticks: &[f64], keys: &[f64], v: f64) -> String {
    ticks
        .iter()
        .zip(keys)
        .min_by(|a, b| (a.1 - v).abs().total_cmp(&(b.1 - v).abs()))
        .map_or_else(String::new, |(t, _)| si(*t))
}

/// Renders `c` as an SVG document.
pub fn line_chart(c: &LineChart) -> String {
    render(|root| draw_lines(c, root))
}

// Long: one chart, axes to legend, top to bottom.
fn draw_lines(c: &LineChart, root: &Area<'_>) -> Drawn {
    let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!c.x_log || x > 0.0);
    let all: Vec<(f64, f64)> = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(finite)
        .collect();
    if all.is_empty() {
        root.titled(&c.title, (FONT, 18))?
            .draw(&Text::new("no data", (40, 80), (FONT, 14)))?;
        return Ok(());
    }
    let (mut x0, mut x1) = span(all.iter().map(|p| p.0));
    if x1 <= x0 {
        x1 = x0 * 2.0 + 1.0;
        x0 = if c.x_log { x0 / 2.0 } else { x0 - 1.0 };
    }
    let (y_min, y_max) = span(all.iter().map(|p| p.1));
    let (y0, y1) = if c.y_from_zero {
        (0.0, if y_max > 0.0 { y_max * 1.08 } else { 1.0 })
    } else {
        let pad = ((y_max - y_min) * 0.05).max(1e-9);
        (y_min - pad, y_max + pad)
    };
    // A log axis is drawn as a linear one over log10(x), its ticks labelled with x.
    let fx = |x: f64| if c.x_log { x.log10() } else { x };
    let x_ticks = c.x_ticks.clone().unwrap_or_else(|| {
        if c.x_log {
            log_ticks(x0, x1)
        } else {
            linear_ticks(x0, x1)
        }
    });
    let x_keys: Vec<f64> = x_ticks.iter().map(|t| fx(*t)).collect();
    let mut chart = frame(
        root,
        &c.title,
        (Axis::new(fx(x0)..fx(x1), x_keys.clone()), &c.x_label),
        (Axis::new(y0..y1, linear_ticks(y0, y1)), &c.y_label),
        &|v| tick_label(&x_ticks, &x_keys, *v),
        &|v| (c.y_format)(*v),
    )?;
    for (i, s) in c.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let style = color.stroke_width(2);
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(finite)
            .map(|(x, y)| (fx(x), y))
            .collect();
        if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (8, 0)], style)
                        + PathElement::new(vec![(12, 0), (20, 0)], style)
                });
        } else {
            chart
                .draw_series(LineSeries::new(points.clone(), style))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        // Markers, unless the series is dense (a CDF).
        if points.len() <= 12 {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    // Below the lines: CDFs and throughput curves leave the lower right empty.
    legend(&mut chart, SeriesLabelPosition::LowerRight)
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

/// A vertical bar chart with the value printed on each bar; `legend_names[i]` names the
/// bars of colour `i`.
pub fn bar_chart(title: &str, y_label: &str, bars: &[Bar], legend_names: &[&str]) -> String {
    render(|root| draw_bars(title, y_label, bars, legend_names, root))
}

fn draw_bars(
    title: &str,
    y_label: &str,
    bars: &[Bar],
    legend_names: &[&str],
    root: &Area<'_>,
) -> Drawn {
    let n = bars.len().max(1);
    let y_max = bars.iter().map(|b| b.value).fold(0.0, f64::max);
    // Head room above the highest bar for its value and the legend.
    let y1 = if y_max > 0.0 { y_max * 1.3 } else { 1.0 };
    let bar_label = |v: &f64| {
        bars.get(v.round().max(0.0) as usize)
            .map_or_else(String::new, |b| b.label.clone())
    };
    let mut chart = frame(
        root,
        title,
        (
            Axis::new(-0.5..n as f64 - 0.5, (0..n).map(|i| i as f64).collect()),
            "",
        ),
        (Axis::new(0.0..y1, linear_ticks(0.0, y1)), y_label),
        &bar_label,
        &|v| si(*v),
    )?;
    let color = |b: &Bar| COLORS[b.color % COLORS.len()];
    chart.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let x = i as f64;
        Rectangle::new(
            [(x - 0.31, 0.0), (x + 0.31, b.value.max(0.0))],
            color(b).filled(),
        )
    }))?;
    let above = TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(
        bars.iter()
            .enumerate()
            .map(|(i, b)| Text::new(si(b.value), (i as f64, b.value.max(0.0)), above.clone())),
    )?;
    for (i, name) in legend_names.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
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
    fn charts_are_svg_with_axes_and_legend() {
        let c = LineChart {
            title: "t <x>".into(),
            x_label: "batch size (log scale)".into(),
            y_label: "rows/s".into(),
            x_log: true,
            x_ticks: None,
            y_format: si,
            y_from_zero: true,
            series: vec![
                Series {
                    name: "engine".into(),
                    points: vec![(1e3, 1.0), (1e4, 2.0)],
                    dashed: false,
                },
                Series {
                    name: "ceiling".into(),
                    points: vec![(1e3, 2.0), (1e4, 2.0)],
                    dashed: true,
                },
            ],
        };
        let svg = line_chart(&c);
        assert!(
            svg.starts_with("<svg") && svg.ends_with("</svg>\n"),
            "{svg}"
        );
        assert!(svg.contains("t &lt;x&gt;"));
        // plotters writes each text on a line of its own.
        let has = |svg: &str, text: &str| svg.lines().any(|l| l.trim() == text);
        for text in [
            "batch size (log scale)",
            "rows/s",
            "engine",
            "ceiling",
            "1k",
            "10k",
        ] {
            assert!(has(&svg, text), "{text} missing in {svg}");
        }
        let b = bar_chart(
            "b",
            "orders/s",
            &[Bar {
                label: "christmas-ingest".into(),
                value: 3000.0,
                color: 0,
            }],
            &["ours"],
        );
        assert!(b.contains("<rect") && b.ends_with("</svg>\n"));
        for text in ["orders/s", "christmas-ingest", "3k", "ours"] {
            assert!(has(&b, text), "{text} missing in {b}");
        }
    }
}
