//! The benchmark's trade-off charts: size vs quality and speed vs quality, one point per model,
//! as standalone SVG text. `blipq bench` writes them into the report folder and the page shows
//! the same files ([`crate::web`]'s `benchReport`), so both draw them from this one function.
//!
//! Quality is BLEU-4 when every model of the run has reference-based metrics, else the token
//! agreement with the first model (1 for the first itself), so a run without references still
//! gets its charts.

use super::bench::ModelResults;

/// Width and height of a chart, in SVG user units (pixels when shown at natural size).
const W: f64 = 640.0;
const H: f64 = 400.0;
/// Margins: left, right, top, bottom.
const PAD: (f64, f64, f64, f64) = (72.0, 24.0, 40.0, 56.0);
/// Point colours, cycled (distinct in print and for the common colour-vision deficiencies).
const COLORS: [&str; 6] = [
    "#1d4ed8", "#c2410c", "#15803d", "#7e22ce", "#0e7490", "#a16207",
];

/// A chart's file name, title, x-axis label and x value of a model.
type Axis = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ModelResults) -> f64,
);

/// One model's point.
struct Point<'a> {
    label: &'a str,
    x: f64,
    y: f64,
}

/// The charts of a run, as `(file name, SVG text)`: `size_vs_quality.svg` (weights file MB
/// against quality) and `speed_vs_quality.svg` (s/image against quality). Models without a
/// value for an axis are left out of that chart; a chart with no point is not made.
pub fn tradeoff_charts(models: &[ModelResults]) -> Vec<(&'static str, String)> {
    let Some(first) = models.first() else {
        return Vec::new();
    };
    let bleu = models.iter().all(|m| m.quality_metrics.is_some());
    let quality = |m: &ModelResults| -> Option<f64> {
        if bleu {
            m.quality_metrics.as_ref().map(|q| q.bleu_score)
        } else {
            super::bench::token_agreement(m, first)
        }
    };
    let y_label = if bleu {
        "BLEU-4"
    } else {
        "token agreement with the first model"
    };
    let mut out = Vec::new();
    let axes: [Axis; 2] = [
        (
            "size_vs_quality.svg",
            "Size vs quality",
            "weights file (MB)",
            |m| m.model_info.model_size_mb,
        ),
        (
            "speed_vs_quality.svg",
            "Speed vs quality",
            "seconds per image (lower is faster)",
            |m| m.performance_metrics.avg_inference_time,
        ),
    ];
    for (file, title, x_label, x) in axes {
        let points: Vec<Point> = models
            .iter()
            .filter_map(|m| {
                let (x, y) = (x(m), quality(m)?);
                (x.is_finite() && y.is_finite()).then_some(Point {
                    label: &m.label,
                    x,
                    y,
                })
            })
            .collect();
        if !points.is_empty() {
            out.push((file, scatter(title, x_label, y_label, &points)));
        }
    }
    out
}

/// A scatter plot with labelled points; x from 0, y over the points' range.
fn scatter(title: &str, x_label: &str, y_label: &str, points: &[Point]) -> String {
    let (l, r, t, b) = PAD;
    let x_max = points.iter().map(|p| p.x).fold(0.0, f64::max).max(1e-9) * 1.15;
    let (y_lo, y_hi) = y_range(points);
    let sx = |x: f64| l + x / x_max * (W - l - r);
    let sy = |y: f64| H - b - (y - y_lo) / (y_hi - y_lo) * (H - t - b);
    let mut s = String::new();
    let desc = points
        .iter()
        .map(|p| {
            format!(
                "{}: {} {}, {} {}",
                p.label,
                num(p.x),
                x_label,
                num(p.y),
                y_label
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    s.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" \
         height=\"{H}\" role=\"img\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <title>{}</title>\n<desc>{}</desc>\n\
         <rect width=\"{W}\" height=\"{H}\" fill=\"#ffffff\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        escape(title),
        escape(&desc),
        W / 2.0,
        escape(title)
    ));
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let (xv, yv) = (f * x_max, y_lo + f * (y_hi - y_lo));
        s.push_str(&format!(
            "<line x1=\"{l}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e5e7eb\"/>\n\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#374151\">{}</text>\n\
             <line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{t}\" y2=\"{}\" stroke=\"#e5e7eb\"/>\n\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#374151\">{}</text>\n",
            W - r,
            l - 8.0,
            sy(yv) + 4.0,
            num(yv),
            H - b,
            H - b + 18.0,
            num(xv),
            y = sy(yv),
            x = sx(xv),
        ));
    }
    s.push_str(&format!(
        "<line x1=\"{l}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#111827\"/>\n\
         <line x1=\"{l}\" x2=\"{l}\" y1=\"{t}\" y2=\"{}\" stroke=\"#111827\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text transform=\"translate(18 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
        W - r,
        H - b,
        H - b,
        H - b,
        (l + W - r) / 2.0,
        H - 14.0,
        escape(x_label),
        (t + H - b) / 2.0,
        escape(y_label),
    ));
    for (i, p) in points.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let (x, y) = (sx(p.x), sy(p.y));
        // Labels sit right of their point, or left of it in the right third.
        let (dx, anchor) = if x > l + 0.66 * (W - l - r) {
            (-9.0, "end")
        } else {
            (9.0, "start")
        };
        s.push_str(&format!(
            "<g class=\"point\" data-label=\"{label}\">\
             <circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"6\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" fill=\"{color}\">{label}</text></g>\n",
            x + dx,
            y - 8.0 - 12.0 * (i % 2) as f64,
            label = escape(p.label),
        ));
    }
    s.push_str("</svg>\n");
    s
}

/// The y axis: the points' range with a margin, at least 0.02 tall so equal values do not
/// collapse it, clipped to what quality can be (0 and up).
fn y_range(points: &[Point]) -> (f64, f64) {
    let lo = points.iter().map(|p| p.y).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.y).fold(f64::NEG_INFINITY, f64::max);
    let span = (hi - lo).max(0.02);
    let lo = (lo - 0.25 * span).max(0.0);
    (lo, lo.max(hi + 0.25 * span).max(lo + 0.02))
}

/// A number for an axis or a description: 3 significant digits, at most 4 decimals.
fn num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let decimals = (2 - v.abs().log10().floor() as i32).clamp(0, 4) as usize;
    format!("{v:.decimals$}")
}

/// Text escaped for SVG (XML) content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Characters XML 1.0 does not allow at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_numbers_short() {
        assert_eq!(
            escape("a<b>&\"c'\u{1}"),
            "a&lt;b&gt;&amp;&quot;c&#39;\u{fffd}"
        );
        assert_eq!(num(0.84812), "0.848");
        assert_eq!(num(854.4), "854");
        assert_eq!(num(0.002), "0.0020");
        assert_eq!(num(12.345), "12.3");
        let (lo, hi) = y_range(&[Point {
            label: "a",
            x: 1.0,
            y: 0.5,
        }]);
        assert!(lo < 0.5 && hi > 0.5 && hi - lo >= 0.02);
    }
}
