//! Small self-contained SVG charts for the reports: lines (optionally on a log-2 x axis, with a
//! shaded band) and grouped bars. No fonts are embedded: text is SVG `<text>`, drawn by the
//! viewer's sans-serif font.

use std::fmt::Write as _;

use crate::junit::escape;

const W: f64 = 560.0;
const H: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 58.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One named series of points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// A shaded horizontal band with a line in it (baseline and threshold).
#[derive(Debug, Clone, Copy)]
pub struct Band {
    /// The line.
    pub mid: f64,
    /// Band bottom.
    pub low: f64,
    /// Band top.
    pub high: f64,
}

/// "Nice" tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).floor() * step;
    // Up to the first tick at or above `hi`: the axis holds every point (stopping half a step
    // short drew an ITL p99 above its chart).
    let steps = ((hi - start) / step - 1e-9).ceil().clamp(0.0, 19.0) as usize;
    (0..=steps).map(|i| start + i as f64 * step).collect()
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn frame(out: &mut String, title: &str, x_label: &str, y_label: &str) {
    frame_wide(out, W, title, x_label, y_label);
}

/// [`frame`] of a chart `width` wide: the plot keeps its place, the rest is room on the right
/// (a legend of long names).
fn frame_wide(out: &mut String, width: f64, title: &str, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {H}\" width=\"{width}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"11\" role=\"img\"><title>{t}</title><rect width=\"{width}\" height=\"{H}\" fill=\"white\"/><text x=\"{cx}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">{t}</text><text x=\"{cx}\" y=\"{xl}\" text-anchor=\"middle\">{x}</text><text transform=\"translate(14 {cy}) rotate(-90)\" text-anchor=\"middle\">{y}</text>",
        t = escape(title),
        cx = LEFT + (W - LEFT - RIGHT) / 2.0,
        xl = H - 10.0,
        cy = TOP + (H - TOP - BOTTOM) / 2.0,
        x = escape(x_label),
        y = escape(y_label),
    );
}

/// A line chart. `log2_x` puts x on a log-2 scale (concurrency).
pub fn lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log2_x: bool,
    band: Option<Band>,
) -> String {
    plot(title, x_label, y_label, series, log2_x, band, None, None)
}

/// A line chart on a linear x axis with a labelled vertical line at `x` (a limit) and, drawn
/// over the others in black, an emphasized series (a frontier).
pub fn lines_with_limit(
    title: &str,
    x_label: &str,
    y_label: &str,
    emphasized: Option<&Series>,
    series: &[Series],
    limit: Option<(f64, &str)>,
) -> String {
    plot(
        title, x_label, y_label, series, false, None, limit, emphasized,
    )
}

/// Colour of the emphasized series: not one of [`COLORS`].
const EMPHASIS: &str = "#111111";

/// Width of a legend line of `name` (11 px sans-serif, about 6.2 px a character).
fn legend_width(name: &str) -> f64 {
    14.0 + 6.2 * name.chars().count() as f64
}

#[expect(
    clippy::too_many_arguments,
    reason = "private: the public functions name what each chart sets"
)]
fn plot(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log2_x: bool,
    band: Option<Band>,
    limit: Option<(f64, &str)>,
    emphasized: Option<&Series>,
) -> String {
    let tx = |x: f64| if log2_x { x.max(1e-9).log2() } else { x };
    let pts: Vec<(f64, f64)> = series
        .iter()
        .chain(emphasized)
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    // The legend: `(name, colour)`, the emphasized series first. It sits in the plot's top right
    // corner while its names fit 136 px and it has at most 8 lines; otherwise to the right of
    // the plot, the chart made wider by its width.
    let legend: Vec<(&str, &str)> = emphasized
        .map(|s| (s.name.as_str(), EMPHASIS))
        .into_iter()
        .chain(
            series
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.as_str(), COLORS[i % COLORS.len()])),
        )
        .collect();
    let widest = legend
        .iter()
        .map(|(n, _)| legend_width(n))
        .fold(0.0, f64::max);
    let outside = widest > 150.0 || legend.len() > 8;
    let (width, legend_x) = if outside {
        (W + widest + 12.0, W + 4.0)
    } else {
        (W, W - RIGHT - 150.0)
    };
    let mut out = String::new();
    frame_wide(&mut out, width, title, x_label, y_label);
    if pts.is_empty() {
        out.push_str("<text x=\"280\" y=\"150\" text-anchor=\"middle\">no data</text></svg>");
        return out;
    }
    let (mut x0, mut x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
        (a.min(tx(*x)), b.max(tx(*x)))
    });
    if let Some((x, _)) = limit.filter(|(x, _)| x.is_finite()) {
        x0 = x0.min(tx(x));
        x1 = x1.max(tx(x));
    }
    let mut y1 = pts.iter().fold(f64::MIN, |a, (_, y)| a.max(*y));
    if let Some(b) = band {
        y1 = y1.max(b.high);
    }
    let mut y0 = 0.0f64.min(pts.iter().fold(f64::MAX, |a, (_, y)| a.min(*y)));
    if let Some(b) = band {
        y0 = y0.min(b.low);
    }
    if x1 <= x0 {
        x0 -= 1.0;
        x1 += 1.0;
    }
    let yt = ticks(y0, if y1 > y0 { y1 } else { y0 + 1.0 }, 5);
    let (ya, yb) = (yt[0], *yt.last().unwrap_or(&1.0));
    let yb = if yb > ya { yb } else { ya + 1.0 };
    let px = |x: f64| LEFT + (tx(x) - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - (y - ya) / (yb - ya) * (H - TOP - BOTTOM);
    for t in &yt {
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 4.0,
            py(*t) + 4.0,
            fmt_num(*t),
            y = py(*t)
        );
    }
    let mut xs: Vec<f64> = pts.iter().map(|(x, _)| *x).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let x_ticks: Vec<f64> = if log2_x || xs.len() <= 8 {
        xs
    } else {
        let (lo, hi) = (xs[0], xs[xs.len() - 1]);
        ticks(lo, hi, 6)
            .into_iter()
            .filter(|t| (lo..=hi).contains(t))
            .collect()
    };
    for t in &x_ticks {
        let _ = write!(
            out,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{}\" y2=\"{}\" stroke=\"#999\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            H - BOTTOM,
            H - BOTTOM + 4.0,
            H - BOTTOM + 16.0,
            fmt_num(*t),
            x = px(*t)
        );
    }
    if let Some(b) = band {
        let _ = write!(
            out,
            "<rect class=\"band\" x=\"{LEFT}\" y=\"{:.1}\" width=\"{}\" height=\"{:.1}\" fill=\"#2ca02c\" fill-opacity=\"0.12\"/><line class=\"baseline\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{m:.1}\" y2=\"{m:.1}\" stroke=\"#2ca02c\" stroke-dasharray=\"6 3\"/>",
            py(b.high),
            W - LEFT - RIGHT,
            (py(b.low) - py(b.high)).max(0.5),
            W - RIGHT,
            m = py(b.mid)
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{}\" stroke=\"#333\"/><line x1=\"{LEFT}\" x2=\"{}\" y1=\"{b}\" y2=\"{b}\" stroke=\"#333\"/>",
        H - BOTTOM,
        W - RIGHT,
        b = H - BOTTOM
    );
    if let Some((x, label)) = limit.filter(|(x, _)| x.is_finite()) {
        // The label right of the line, or left of it when it would leave the plot.
        let (lx, anchor) = if px(x) + 4.0 + legend_width(label) > W - RIGHT {
            (px(x) - 4.0, "end")
        } else {
            (px(x) + 4.0, "start")
        };
        let _ = write!(
            out,
            "<line class=\"limit\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{}\" stroke=\"#c62828\" stroke-dasharray=\"5 3\"/><text x=\"{lx:.1}\" y=\"{}\" text-anchor=\"{anchor}\" fill=\"#c62828\">{}</text>",
            H - BOTTOM,
            TOP + 10.0,
            escape(label),
            x = px(x)
        );
    }
    // The emphasized series last, so that it is drawn over the others.
    let drawn = series
        .iter()
        .enumerate()
        .map(|(i, s)| (s, COLORS[i % COLORS.len()], 2.0))
        .chain(emphasized.map(|s| (s, EMPHASIS, 3.0)));
    for (s, c, stroke) in drawn {
        let path: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            out,
            "<polyline class=\"series\" fill=\"none\" stroke=\"{c}\" stroke-width=\"{stroke}\" points=\"{}\"/>",
            path.join(" ")
        );
        for p in &path {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(out, "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{c}\"/>");
        }
    }
    for (i, (name, c)) in legend.iter().enumerate() {
        let ly = TOP + 4.0 + 14.0 * i as f64;
        let _ = write!(
            out,
            "<rect x=\"{legend_x}\" y=\"{ly:.1}\" width=\"10\" height=\"3\" fill=\"{c}\"/><text x=\"{tx}\" y=\"{:.1}\">{}</text>",
            ly + 4.0,
            escape(name),
            tx = legend_x + 14.0,
        );
    }
    out.push_str("</svg>");
    out
}

/// A grouped bar chart: one group per label, one bar per series.
pub fn bars(title: &str, y_label: &str, groups: &[String], series: &[Series]) -> String {
    let mut out = String::new();
    frame(&mut out, title, "", y_label);
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(_, y)| *y))
        .filter(|y| y.is_finite())
        .fold(0.0f64, f64::max);
    let yt = ticks(0.0, if ymax > 0.0 { ymax } else { 1.0 }, 5);
    let yb = yt.last().copied().unwrap_or(1.0).max(1e-9);
    let py = |y: f64| H - BOTTOM - y / yb * (H - TOP - BOTTOM);
    for t in &yt {
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 4.0,
            py(*t) + 4.0,
            fmt_num(*t),
            y = py(*t)
        );
    }
    let gw = (W - LEFT - RIGHT) / groups.len().max(1) as f64;
    let bw = gw * 0.8 / series.len().max(1) as f64;
    for (g, label) in groups.iter().enumerate() {
        let gx = LEFT + gw * g as f64 + gw * 0.1;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            gx + gw * 0.4,
            H - BOTTOM + 16.0,
            escape(label)
        );
        for (i, s) in series.iter().enumerate() {
            let Some(&(_, y)) = s.points.get(g) else {
                continue;
            };
            if !y.is_finite() {
                continue;
            }
            let c = COLORS[i % COLORS.len()];
            let _ = write!(
                out,
                "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{c}\"><title>{}: {}</title></rect>",
                gx + bw * i as f64,
                py(y),
                bw.max(1.0),
                (H - BOTTOM - py(y)).max(0.0),
                escape(&s.name),
                fmt_num(y)
            );
        }
    }
    for (i, s) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let ly = TOP + 4.0 + 14.0 * i as f64;
        let _ = write!(
            out,
            "<rect x=\"{}\" y=\"{ly:.1}\" width=\"10\" height=\"8\" fill=\"{c}\"/><text x=\"{}\" y=\"{:.1}\">{}</text>",
            W - RIGHT - 150.0,
            W - RIGHT - 136.0,
            ly + 8.0,
            escape(&s.name)
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{b}\" y2=\"{b}\" stroke=\"#333\"/></svg>",
        W - RIGHT,
        b = H - BOTTOM
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frontier_is_drawn_last_in_its_own_colour_and_long_names_get_a_legend_beside_the_plot() {
        let s = |name: &str, y: f64| Series {
            name: name.into(),
            points: vec![(1.0, y), (2.0, y / 2.0)],
        };
        let frontier = s("Pareto frontier", 10.0);
        // Nine points: more than the palette has colours, names longer than the corner box.
        let points: Vec<Series> = (0..9)
            .map(|i| {
                s(
                    &format!("a-long-point-name_numgenservers{i}_maxbatchsize64"),
                    5.0,
                )
            })
            .collect();
        let svg = lines_with_limit("t", "x", "y", Some(&frontier), &points, None);
        let polylines: Vec<&str> = svg.split("<polyline").skip(1).collect();
        assert_eq!(polylines.len(), 10);
        assert!(
            polylines[9].contains(EMPHASIS),
            "the frontier is drawn last"
        );
        assert!(!COLORS.contains(&EMPHASIS));
        let width: f64 = svg
            .split("width=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|w| w.parse().ok())
            .unwrap();
        assert!(width > W + 250.0, "legend beside the plot: {width}");
        // The legend lists the frontier first, then every point, all beside the plot.
        let legend_x = format!("<rect x=\"{}\"", W + 4.0);
        assert_eq!(svg.matches(legend_x.as_str()).count(), 10);
        // Short names keep the corner legend and the usual width.
        let short = lines_with_limit(
            "t",
            "x",
            "y",
            Some(&frontier),
            &points[..2]
                .iter()
                .map(|p| s(&p.name[..6], 5.0))
                .collect::<Vec<_>>(),
            None,
        );
        assert!(short.contains(&format!("width=\"{W}\"")));
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            ticks(0.0, 100.0, 5),
            vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        let t = ticks(3.0, 47.0, 5);
        assert!(t[0] <= 3.0 && *t.last().unwrap() >= 47.0, "{t:?}");
        // A top within half a step of a tick used to end the axis one tick short.
        let t = ticks(0.0, 17.3, 5);
        assert_eq!(t, vec![0.0, 5.0, 10.0, 15.0, 20.0]);
    }

    #[test]
    fn charts_are_well_formed_svg_with_one_polyline_per_series() {
        let s = vec![
            Series {
                name: "p50".into(),
                points: vec![(1.0, 10.0), (4.0, 12.0), (16.0, 20.0)],
            },
            Series {
                name: "p99 <&>".into(),
                points: vec![(1.0, 11.0), (4.0, 15.0), (16.0, 30.0)],
            },
        ];
        let svg = lines(
            "TTFT",
            "concurrency",
            "ms",
            &s,
            true,
            Some(Band {
                mid: 12.0,
                low: 11.0,
                high: 13.0,
            }),
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("p99 &lt;&amp;&gt;") && svg.contains("class=\"band\""));
        let b = bars("m", "v", &["con1".into(), "con4".into()], &s);
        assert_eq!(b.matches("class=\"bar\"").count(), 4);
        assert!(lines("empty", "x", "y", &[], false, None).contains("no data"));
    }
}
