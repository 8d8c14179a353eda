//! Charts drawn on the server as SVG: a time series (lines with a marker per data point), a
//! sparkline, and a task timeline across workers. No script draws them, so a page is complete
//! as sent; every data point is an element (`circle.pt`, with its value in a `<title>`
//! tooltip and `data-` attributes), so tests can count them in the DOM.

use maud::{Markup, html};

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its name, in the legend.
    pub name: String,
    /// The CSS class that colours it (`s0` … `s5`, `bad`).
    pub class: &'static str,
    /// (time in epoch ms, value), in time order.
    pub points: Vec<(i64, f64)>,
}

/// Plot size in SVG units.
const W: f64 = 900.0;
const H: f64 = 220.0;
/// Margins: left for the value axis, bottom for times.
const ML: f64 = 64.0;
const MR: f64 = 36.0;
const MT: f64 = 12.0;
const MB: f64 = 28.0;

/// About `n` round tick values within `[lo, hi]`; with `cover`, from the last round value at
/// or below `lo` to the first at or above `hi` (a value axis that ends on a label).
pub fn ticks(lo: f64, hi: f64, n: usize, cover: bool) -> Vec<f64> {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut out = Vec::new();
    let (mut v, end) = if cover {
        ((lo / step).floor() * step, (hi / step).ceil() * step)
    } else {
        ((lo / step).ceil() * step, hi)
    };
    while v <= end + step * 1e-9 {
        out.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
    }
    out
}

/// A number for an axis or tooltip: short, without trailing zeros.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.3}G", v / 1e9).replace(".000G", "G")
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Round time ticks within `[t0, t1]`: about six, on whole minutes, hours or days (UTC).
pub fn time_ticks(t0: i64, t1: i64) -> Vec<i64> {
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;
    let steps = [
        MIN,
        5 * MIN,
        15 * MIN,
        30 * MIN,
        HOUR,
        3 * HOUR,
        6 * HOUR,
        12 * HOUR,
        DAY,
        2 * DAY,
        7 * DAY,
        14 * DAY,
        30 * DAY,
        91 * DAY,
        365 * DAY,
    ];
    let span = (t1 - t0).max(1);
    let step = steps
        .iter()
        .copied()
        .find(|s| span / s <= 6)
        .unwrap_or(span / 6 + 1);
    let mut out = Vec::new();
    let mut t = t0.div_euclid(step) * step;
    if t < t0 {
        t += step;
    }
    while t <= t1 {
        out.push(t);
        t += step;
    }
    out
}

/// A time as the charts label it (UTC; the page's script relabels them when local time is
/// chosen).
fn time_label(ms: i64, span_ms: i64) -> String {
    let Some(t) = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms) else {
        return ms.to_string();
    };
    if span_ms > 6 * 86_400_000 {
        t.format("%m-%d").to_string()
    } else {
        t.format("%m-%d %H:%M").to_string()
    }
}

/// A time-series chart: one line per series over a shared time axis, `unit` naming the values.
pub fn time_series(id: &str, series: &[Series], unit: &str) -> Markup {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let Some(t0) = all().map(|p| p.0).min() else {
        return html! { p.empty { "No data yet." } };
    };
    let t1 = all().map(|p| p.0).max().unwrap_or(t0);
    let (t0, t1) = if t1 == t0 { (t0 - 1, t1 + 1) } else { (t0, t1) };
    let vmax = all().map(|p| p.1).fold(0.0f64, f64::max);
    let vmin = all().map(|p| p.1).fold(0.0f64, f64::min);
    let yt = ticks(vmin, if vmax > vmin { vmax } else { vmin + 1.0 }, 4, true);
    let (lo, hi) = (
        yt.first().copied().unwrap_or(0.0).min(vmin),
        yt.last().copied().unwrap_or(1.0).max(vmax),
    );
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let x = |t: i64| ML + (t - t0) as f64 / (t1 - t0) as f64 * (W - ML - MR);
    let y = |v: f64| MT + (1.0 - (v - lo) / (hi - lo)) * (H - MT - MB);
    let xt = time_ticks(t0, t1);
    html! {
        figure.chart id=(id) data-points=(all().count()) {
            svg viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(format!("{unit} over time")) {
                @for v in &yt {
                    line.grid x1=(ML) x2=(W - MR) y1=(fmt(y(*v))) y2=(fmt(y(*v))) {}
                    text.axis x=(ML - 6.0) y=(fmt(y(*v) + 4.0)) text-anchor="end" { (short(*v)) }
                }
                @for t in &xt {
                    text.axis.t x=(fmt(x(*t))) y=(H - 8.0) text-anchor="middle" data-ms=(*t) { (time_label(*t, t1 - t0)) }
                }
                text.axis.zone-name x=(W - MR) y=(MT - 2.0) text-anchor="end" { "UTC" }
                line.axisline x1=(ML) x2=(ML) y1=(MT) y2=(H - MB) {}
                line.axisline x1=(ML) x2=(W - MR) y1=(H - MB) y2=(H - MB) {}
                @for s in series {
                    g class=(format!("series {}", s.class)) data-name=(s.name) {
                        @if s.points.len() > 1 {
                            polyline points=(polyline(&s.points, &x, &y)) {}
                        }
                        @for &(t, v) in &s.points {
                            circle.pt cx=(fmt(x(t))) cy=(fmt(y(v))) r="2.5" data-ms=(t) data-v=(v) {
                                title { (s.name) ": " (short(v)) " " (unit) }
                            }
                        }
                    }
                }
            }
            @if series.len() > 1 {
                figcaption.legend {
                    @for s in series {
                        span class=(format!("key {}", s.class)) { (s.name) }
                    }
                }
            }
        }
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

fn polyline(points: &[(i64, f64)], x: &dyn Fn(i64) -> f64, y: &dyn Fn(f64) -> f64) -> String {
    let mut s = String::with_capacity(points.len() * 12);
    for &(t, v) in points {
        s.push_str(&format!("{:.1},{:.1} ", x(t), y(v)));
    }
    s
}

/// A sparkline of rates in `[0, 1]` (`None` where a run had no rate), with a point per value.
pub fn sparkline(values: &[Option<f64>], flagged: bool) -> Markup {
    let (w, h) = (120.0, 24.0);
    let n = values.len().max(2) as f64 - 1.0;
    let pts: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| {
            v.map(|v| (2.0 + i as f64 / n * (w - 4.0), 2.0 + (1.0 - v) * (h - 4.0)))
        })
        .collect();
    let line: String = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1} ")).collect();
    html! {
        svg.spark.flagged[flagged] viewBox=(format!("0 0 {w} {h}")) width=(w) height=(h) data-points=(pts.len()) {
            line.grid x1="0" x2=(w) y1=(h - 2.0) y2=(h - 2.0) {}
            @if pts.len() > 1 { polyline points=(line) {} }
            @for (x, y) in &pts {
                circle.spark-pt cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="1.6" {}
            }
        }
    }
}

/// One bar of a timeline.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Start, epoch ms.
    pub start_ms: i64,
    /// End, epoch ms (now, for a task still running).
    pub end_ms: i64,
    /// CSS class (the task's state).
    pub class: &'static str,
    /// Tooltip.
    pub label: String,
}

/// A timeline: one lane per worker, a bar per task.
pub fn timeline(lanes: &[(String, Vec<Bar>)]) -> Markup {
    let bars = || lanes.iter().flat_map(|(_, b)| b.iter());
    let Some(t0) = bars().map(|b| b.start_ms).min() else {
        return html! { p.empty { "No task has started yet." } };
    };
    let t1 = bars().map(|b| b.end_ms).max().unwrap_or(t0).max(t0 + 1);
    let lane_h = 18.0;
    let h = MT + lanes.len() as f64 * lane_h + MB;
    let left = 200.0;
    let x = |t: i64| left + (t - t0) as f64 / (t1 - t0) as f64 * (W - left - MR);
    let xt = ticks(0.0, (t1 - t0) as f64 / 1e3, 6, false);
    html! {
        figure.chart.timeline data-points=(bars().count()) {
            svg viewBox=(format!("0 0 {W} {h}")) role="img" aria-label="tasks over time, by worker" {
                @for s in &xt {
                    @let t = t0 + (*s * 1e3) as i64;
                    line.grid x1=(fmt(x(t))) x2=(fmt(x(t))) y1=(MT) y2=(h - MB) {}
                    text.axis x=(fmt(x(t))) y=(h - 8.0) text-anchor="middle" { "+" (short(*s)) "s" }
                }
                @for (i, (name, lane)) in lanes.iter().enumerate() {
                    @let y = MT + i as f64 * lane_h;
                    text.axis x=(left - 6.0) y=(fmt(y + 12.0)) text-anchor="end" { (name) }
                    @for b in lane {
                        rect class=(format!("pt bar {}", b.class)) x=(fmt(x(b.start_ms))) y=(fmt(y + 2.0))
                            width=(fmt((x(b.end_ms) - x(b.start_ms)).max(1.5))) height=(lane_h - 4.0) {
                            title { (b.label) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 1.0, 4, true), [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(ticks(0.0, 95.0, 4, true), [0.0, 25.0, 50.0, 75.0, 100.0]);
        assert_eq!(ticks(0.0, 95.0, 4, false), [0.0, 25.0, 50.0, 75.0]);
        assert_eq!(short(17_768.0), "17.8k");
        assert_eq!(short(0.25), "0.250");
    }

    #[test]
    fn every_data_point_is_an_element_and_text_is_escaped() {
        let chart = time_series(
            "c",
            &[Series {
                name: "<runs>".into(),
                class: "s0",
                points: vec![(0, 1.0), (3_600_000, 3.0), (7_200_000, 2.0)],
            }],
            "s",
        )
        .into_string();
        assert_eq!(chart.matches("<circle class=\"pt\"").count(), 3);
        assert!(chart.contains("data-points=\"3\""));
        assert!(chart.contains("&lt;runs&gt;") && !chart.contains("<runs>"));
        let spark = sparkline(&[Some(0.0), None, Some(1.0)], true).into_string();
        assert_eq!(spark.matches("spark-pt").count(), 2);
        assert!(spark.contains("flagged"));
    }
}
