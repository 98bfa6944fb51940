//! A variant's live latency histogram: drawn with plotters on a `<canvas>` (in the browser), with the
//! count and the p50 / p90 / p99 beside it.

use leptos::prelude::*;

use crate::stats::{format_ms, LatencySamples};

#[component]
pub fn LatencyChart(
    /// The samples to draw (ms).
    samples: Signal<LatencySamples>,
    /// Bar colour (the variant's).
    color: (u8, u8, u8),
    /// What the chart shows, for screen readers.
    label: String,
) -> impl IntoView {
    let canvas = NodeRef::<leptos::html::Canvas>::new();
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        let samples = samples.get();
        if let Some(canvas) = canvas.get() {
            if let Err(e) = draw::histogram(canvas, &samples, color) {
                leptos::logging::warn!("could not draw the histogram: {e}");
            }
        }
    });
    #[cfg(not(feature = "hydrate"))]
    let _ = color;
    let quantile =
        move |q: f64| samples.with(|s| s.quantile(q).map(format_ms).unwrap_or_else(|| "–".into()));
    view! {
        <figure class="latency">
            <canvas
                node_ref=canvas
                width="320"
                height="120"
                role="img"
                aria-label=label
            ></canvas>
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
    .into_any()
}

#[cfg(feature = "hydrate")]
mod draw {
    use plotters::prelude::*;
    use plotters_canvas::CanvasBackend;
    use wasm_bindgen::JsCast;

    use crate::stats::LatencySamples;

    /// Draws the log-binned histogram at the canvas's on-screen size times the device pixel ratio.
    pub fn histogram(
        canvas: web_sys::HtmlCanvasElement,
        samples: &LatencySamples,
        (r, g, b): (u8, u8, u8),
    ) -> Result<(), String> {
        let ratio = leptos::prelude::window().device_pixel_ratio().max(1.0);
        let css_width = f64::from(canvas.client_width().max(160));
        let css_height = f64::from(canvas.client_height().max(80));
        canvas.set_width((css_width * ratio) as u32);
        canvas.set_height((css_height * ratio) as u32);
        let px = |v: f64| (v * ratio) as u32;
        let font = ("sans-serif", 11.0 * ratio);
        let ink = RGBColor(93, 102, 119);

        let element: web_sys::HtmlCanvasElement = canvas.unchecked_into();
        let backend = CanvasBackend::with_canvas_object(element).ok_or("no 2D context")?;
        let root = backend.into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let bins = samples.log_bins();
        if bins.is_empty() {
            root.draw(&Text::new(
                "no answers yet",
                (px(8.0) as i32, px(css_height / 2.0) as i32),
                font.into_font().color(&ink),
            ))
            .map_err(|e| e.to_string())?;
            return root.present().map_err(|e| e.to_string());
        }
        let lo = bins[0].lo;
        let hi = bins[bins.len() - 1].hi;
        let top = bins.iter().map(|b| b.count).max().unwrap_or(1) as u32;
        let mut chart = ChartBuilder::on(&root)
            .margin_top(px(6.0))
            .margin_right(px(10.0))
            .x_label_area_size(px(18.0))
            .y_label_area_size(px(26.0))
            .build_cartesian_2d((lo..hi).log_scale(), 0u32..top + top.div_ceil(8))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_labels(3)
            .x_labels(4)
            .x_label_formatter(&|v| short_ms(*v))
            .y_label_formatter(&|v| v.to_string())
            .label_style(font.into_font().color(&ink))
            .axis_style(ink.mix(0.6))
            .light_line_style(ink.mix(0.08))
            .bold_line_style(ink.mix(0.15))
            .draw()
            .map_err(|e| e.to_string())?;
        let fill = RGBColor(r, g, b);
        chart
            .draw_series(bins.iter().filter(|b| b.count > 0).map(|b| {
                Rectangle::new([(b.lo, 0), (b.hi, b.count as u32)], fill.mix(0.85).filled())
            }))
            .map_err(|e| e.to_string())?;
        // The median, as a dashed-looking thin line.
        if let Some(p50) = samples.quantile(0.5) {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(p50, 0), (p50, top + top.div_ceil(8))],
                    ink.stroke_width(px(1.0).max(1)),
                )))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())
    }

    /// Axis labels: `0.5ms`, `20ms`, `1.5s`.
    fn short_ms(ms: f64) -> String {
        if ms >= 1000.0 {
            format!("{}s", trim(ms / 1000.0))
        } else {
            format!("{}ms", trim(ms))
        }
    }

    fn trim(v: f64) -> String {
        let s = if v >= 10.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        };
        s.trim_end_matches(".0").to_string()
    }
}
