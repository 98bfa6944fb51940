//! A variant's live latency histogram: an SVG drawn by the view itself (log time axis, one bar per
//! [`crate::stats::log_bins`] bin, the median as a line), with the count and the p50 / p90 / p99 beside it.
//!
//! SVG rather than a canvas: it renders on the server too, stays sharp at any pixel ratio, costs no
//! plotting library in the WASM bundle, and redrawing a few dozen rectangles per answer is cheap.

use leptos::either::Either;
use leptos::prelude::*;

use crate::classify::TimingMode;
use crate::stats::{format_ms, Bin, LatencySamples};

/// The drawing's coordinate system (the SVG scales to the card's width).
const WIDTH: f64 = 320.0;
const HEIGHT: f64 = 120.0;
/// The plot area inside it: left of it the count axis, below it the time axis.
const LEFT: f64 = 28.0;
const RIGHT: f64 = WIDTH - 8.0;
const TOP: f64 = 6.0;
const BOTTOM: f64 = HEIGHT - 20.0;

#[component]
pub fn LatencyChart(
    /// The samples to draw (ms).
    samples: Signal<LatencySamples>,
    /// Which timing mode's answers they are.
    mode: Signal<TimingMode>,
    /// Bar colour (the variant's).
    color: (u8, u8, u8),
    /// What the chart shows, for screen readers.
    #[prop(into)]
    label: Signal<String>,
) -> impl IntoView {
    let fill = super::css_color(color);
    let drawing = move || samples.with(|s| plot(s, &fill));
    let quantile =
        move |q: f64| samples.with(|s| s.quantile(q).map(format_ms).unwrap_or_else(|| "–".into()));
    view! {
        <figure class="latency" data-mode=move || mode.get().id()>
            <svg
                viewBox=format!("0 0 {WIDTH} {HEIGHT}")
                role="img"
                aria-label=move || label.get()
            >
                {drawing}
            </svg>
            <figcaption>
                <dl class="percentiles">
                    <div>
                        <dt>"count"</dt>
                        <dd class="count">{move || samples.with(LatencySamples::len)}</dd>
                    </div>
                    <div>
                        <dt>"p50"</dt>
                        <dd class="p50">{move || quantile(0.5)}</dd>
                    </div>
                    <div>
                        <dt>"p90"</dt>
                        <dd class="p90">{move || quantile(0.9)}</dd>
                    </div>
                    <div>
                        <dt>"p99"</dt>
                        <dd class="p99">{move || quantile(0.99)}</dd>
                    </div>
                </dl>
            </figcaption>
        </figure>
    }
}

/// The SVG elements of the histogram of `samples`.
fn plot(samples: &LatencySamples, fill: &str) -> impl IntoView {
    let bins = samples.log_bins();
    if bins.is_empty() {
        return Either::Left(view! {
            <text class="empty" x=LEFT y={HEIGHT / 2.0}>
                "no answers yet"
            </text>
        });
    }
    let (lo, hi) = (bins[0].lo, bins[bins.len() - 1].hi);
    let top = bins.iter().map(|b| b.count).max().unwrap_or(1);
    let x = move |ms: f64| LEFT + (RIGHT - LEFT) * (ms / lo).log10() / (hi / lo).log10();
    let y = move |count: f64| BOTTOM - (BOTTOM - TOP) * count / (top as f64 * 1.1);
    let bars = bins
        .iter()
        .filter(|b| b.count > 0)
        .map(|&Bin { lo, hi, count }| {
            let (x0, x1, y0) = (x(lo), x(hi), y(count as f64));
            view! {
                <rect
                    class="bar"
                    x=fmt(x0 + 0.5)
                    y=fmt(y0)
                    width=fmt((x1 - x0 - 1.0).max(1.0))
                    height=fmt(BOTTOM - y0)
                    fill=fill.to_string()
                    data-count=count
                />
            }
        })
        .collect_view();
    let ticks = ticks(lo, hi)
        .into_iter()
        .map(|t| {
            view! {
                <line class="tick" x1=fmt(x(t)) x2=fmt(x(t)) y1=BOTTOM y2={BOTTOM + 3.0} />
                <text class="axis" x=fmt(x(t)) y={HEIGHT - 6.0} text-anchor="middle">
                    {short_ms(t)}
                </text>
            }
        })
        .collect_view();
    let median = samples.quantile(0.5).map(|p50| {
        view! { <line class="median" x1=fmt(x(p50)) x2=fmt(x(p50)) y1=TOP y2=BOTTOM /> }
    });
    Either::Right(view! {
        <line class="axis-line" x1=LEFT x2=RIGHT y1=BOTTOM y2=BOTTOM />
        <text class="axis" x={LEFT - 4.0} y=fmt(y(top as f64) + 4.0) text-anchor="end">
            {top}
        </text>
        <text class="axis" x={LEFT - 4.0} y=BOTTOM text-anchor="end">
            "0"
        </text>
        {bars}
        {median}
        {ticks}
    })
}

/// Time-axis ticks between `lo` and `hi` ms: 1, 2 and 5 times powers of ten, at most five.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut all = Vec::new();
    for k in (lo.log10().floor() as i32)..=(hi.log10().ceil() as i32) {
        for (m, power_of_ten) in [(1.0, true), (2.0, false), (5.0, false)] {
            let t = m * 10f64.powi(k);
            if t >= lo && t <= hi {
                all.push((t, power_of_ten));
            }
        }
    }
    if all.len() > 5 {
        // Only the powers of ten (at least two when there are more than five ticks).
        all.retain(|&(_, p)| p);
    }
    all.into_iter().map(|(t, _)| t).collect()
}

/// Axis labels: `0.5ms`, `20ms`, `1.5s`.
fn short_ms(ms: f64) -> String {
    let trim = |v: f64| {
        let s = if v >= 10.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        };
        s.trim_end_matches(".0").to_string()
    };
    if ms >= 1000.0 {
        format!("{}s", trim(ms / 1000.0))
    } else {
        format!("{}ms", trim(ms))
    }
}

/// A coordinate with one decimal (smaller markup than the full float).
fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_few() {
        assert_eq!(ticks(12.6, 50.1), vec![20.0, 50.0]);
        assert_eq!(ticks(0.9, 110.0), vec![1.0, 10.0, 100.0]);
        assert_eq!(ticks(1.0, 6.0), vec![1.0, 2.0, 5.0]);
        assert_eq!(short_ms(0.5), "0.5ms");
        assert_eq!(short_ms(20.0), "20ms");
        assert_eq!(short_ms(1500.0), "1.5s");
    }
}
