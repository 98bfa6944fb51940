//! Per-layer drift: one line per variant over the stem and the 16 blocks, the relative error of its
//! activations against the baseline's on the current photo ([`crate::drift`]). Off by default: it is a
//! second request, made once the timed run has answered, so the cards' times never include it.

use std::sync::Arc;

use leptos::either::EitherOf4;
use leptos::prelude::*;

use super::{css_color, ms, variant_color};
use crate::drift::{layer_drift, DriftResponse};
use crate::run::{Phase, RunState};

/// What the panel shows.
#[derive(Clone, PartialEq)]
enum DriftState {
    Off,
    Waiting,
    Ready(Arc<DriftResponse>),
    Failed(String),
}

// The chart's geometry (SVG user units; the SVG scales to its box).
const W: f64 = 640.0;
const H: f64 = 230.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 34.0;

/// The drift panel: its switch, and the chart and table once the server has answered.
#[component]
pub fn DriftPanel(run: RunState, hydrated: RwSignal<bool>) -> impl IntoView {
    let show = RwSignal::new(false);
    let state = RwSignal::new(DriftState::Off);
    // The photo the last request was for, so a request is made once per photo.
    let asked_for = StoredValue::new(None::<Arc<Vec<u8>>>);
    Effect::new(move |_| {
        if !show.get() {
            asked_for.set_value(None);
            state.set(DriftState::Off);
            return;
        }
        // After the timed run, never during it.
        if run.phase.get() != Phase::Done {
            return;
        }
        let Some(pixels) = run.pixels.get() else {
            return;
        };
        if asked_for.with_value(|a| a.as_ref().is_some_and(|a| Arc::ptr_eq(a, &pixels))) {
            return;
        }
        asked_for.set_value(Some(Arc::clone(&pixels)));
        state.set(DriftState::Waiting);
        leptos::task::spawn_local(async move {
            let answer = layer_drift((*pixels).clone()).await;
            // Only if it is still the photo on the page.
            if asked_for.with_value(|a| a.as_ref().is_some_and(|a| Arc::ptr_eq(a, &pixels))) {
                state.set(match answer {
                    Ok(d) => DriftState::Ready(Arc::new(d)),
                    Err(e) => DriftState::Failed(e.to_string()),
                });
            }
        });
    });
    let body = move || match state.get() {
        DriftState::Off => EitherOf4::A(()),
        DriftState::Waiting => EitherOf4::B(view! {
            <p class="note drift-wait" role="status">
                "Computing per-layer drift on the server (the first time, it opens a traced copy of each variant's file)…"
            </p>
        }),
        DriftState::Failed(e) => EitherOf4::C(view! {
            <p class="error drift-error" role="alert">{format!("No per-layer drift: {e}")}</p>
        }),
        DriftState::Ready(d) => EitherOf4::D(view! { <DriftChart drift=d /> }),
    };
    view! {
        <section class="drift" aria-label="Per-layer drift" data-drift=move || match state.get() {
            DriftState::Off => "off",
            DriftState::Waiting => "waiting",
            DriftState::Ready(_) => "ready",
            DriftState::Failed(_) => "failed",
        }>
            <label class="drift-switch">
                <input
                    type="checkbox"
                    name="drift-show"
                    prop:checked=move || show.get()
                    disabled=move || !hydrated.get()
                    on:change=move |e| show.set(event_target_checked(&e))
                />
                " per-layer drift: where inside the network each variant leaves the baseline"
            </label>
            {body}
        </section>
    }
}

/// The chart (one polyline per variant) and the same figures as a table.
#[component]
fn DriftChart(drift: Arc<DriftResponse>) -> impl IntoView {
    let n = drift.layers.len().max(2);
    let x = move |i: usize| LEFT + (W - LEFT - RIGHT) * i as f64 / (n - 1) as f64;
    let values = |v: &crate::drift::VariantDrift| -> Vec<Option<f64>> {
        match &v.result {
            Ok(layers) => layers
                .iter()
                .map(|l| l.relative_error.as_ref().ok().map(|&e| f64::from(e)))
                .collect(),
            Err(_) => Vec::new(),
        }
    };
    let top = drift
        .variants
        .iter()
        .flat_map(|v| values(v).into_iter().flatten())
        .filter(|e| e.is_finite())
        .fold(0.1f64, f64::max);
    // A round top for the axis: 0.1, 0.2, 0.5, 1, 2, …
    let top = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|&t| t >= top)
        .unwrap_or(top);
    let y = move |e: f64| TOP + (H - TOP - BOTTOM) * (1.0 - (e / top).min(1.0));
    let grid = (0..=4)
        .map(|k| {
            let v = top * f64::from(k) / 4.0;
            view! {
                <line class="drift-grid" x1=LEFT x2=W - RIGHT y1=y(v) y2=y(v) />
                <text class="drift-axis" x=LEFT - 6.0 y=y(v) + 4.0 text-anchor="end">
                    {format!("{v:.2}")}
                </text>
            }
        })
        .collect_view();
    // A tick at the stem and at each stage's first block.
    let ticks = drift
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| *l == engine::drift::STEM || l.ends_with(".0"))
        .map(|(i, l)| {
            let label = l.strip_suffix(".0").unwrap_or(l).to_string();
            view! {
                <text class="drift-axis" x=x(i) y=H - BOTTOM + 16.0 text-anchor="middle">{label}</text>
            }
        })
        .collect_view();
    let lines = drift
        .variants
        .iter()
        .filter(|v| v.result.is_ok())
        .map(|v| {
            let color = css_color(variant_color(&v.id));
            let vals = values(v);
            let points = vals
                .iter()
                .enumerate()
                .filter_map(|(i, e)| {
                    e.filter(|e| e.is_finite())
                        .map(|e| format!("{:.1},{:.1}", x(i), y(e)))
                })
                .collect::<Vec<_>>()
                .join(" ");
            let dots = vals
                .iter()
                .zip(&drift.layers)
                .enumerate()
                .filter_map(|(i, (e, label))| {
                    let e = e.filter(|e| e.is_finite())?;
                    Some(view! {
                        <circle cx=x(i) cy=y(e) r="2.5" fill=color.clone()>
                            <title>{format!("{}, {label}: {}", title(&v.id), percent(e))}</title>
                        </circle>
                    })
                })
                .collect_view();
            view! {
                <g class="drift-line" data-variant=v.id.clone()>
                    <polyline points=points fill="none" stroke=color.clone() stroke-width="2" />
                    {dots}
                </g>
            }
        })
        .collect_view();
    let legend = drift
        .variants
        .iter()
        .map(|v| {
            let color = css_color(variant_color(&v.id));
            let text = match &v.result {
                Ok(layers) => match layers.last().and_then(|l| l.relative_error.clone().ok()) {
                    Some(e) => format!(
                        "{}: {} at the last block",
                        title(&v.id),
                        percent(f64::from(e))
                    ),
                    None => title(&v.id).to_string(),
                },
                Err(e) => format!("{}: no drift ({e})", title(&v.id)),
            };
            view! {
                <li data-variant=v.id.clone()>
                    <span class="swatch" style=format!("background: {color}")></span>
                    {text}
                </li>
            }
        })
        .collect_view();
    let head = drift
        .variants
        .iter()
        .map(
            |v| view! { <th scope="col" data-variant=v.id.clone()>{title(&v.id).to_string()}</th> },
        )
        .collect_view();
    let rows = drift
        .layers
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let cells = drift
                .variants
                .iter()
                .map(|v| {
                    let text = match &v.result {
                        Ok(layers) => match layers.get(i).map(|l| &l.relative_error) {
                            Some(Ok(e)) => percent(f64::from(*e)),
                            Some(Err(why)) => why.clone(),
                            None => "–".into(),
                        },
                        Err(_) => "–".into(),
                    };
                    view! { <td>{text}</td> }
                })
                .collect_view();
            view! { <tr><th scope="row">{label.clone()}</th>{cells}</tr> }
        })
        .collect_view();
    view! {
        <figure class="drift-figure">
            <svg
                class="drift-chart"
                viewBox=format!("0 0 {W} {H}")
                role="img"
                aria-label="Relative error of each block's output against the baseline's"
            >
                {grid}
                {ticks}
                {lines}
            </svg>
            <ul class="drift-legend">{legend}</ul>
            <figcaption class="hint">
                "For this photo, each block's output compared with the baseline's: ‖variant − baseline‖ / ‖baseline‖ "
                "over all its channels and positions (0: the same tensor; 1: as far from the baseline as the baseline is from zero). "
                "Where a line climbs, that block adds error; where it levels off, the network absorbs it. "
                {format!(
                    "Computed on the server after the timed run ({}; {}), not part of the cards' times.",
                    drift.path,
                    ms(drift.server_us as f64 / 1000.0),
                )}
            </figcaption>
            <details class="drift-table">
                <summary>"The figures"</summary>
                <table>
                    <thead><tr><th scope="col">"layer"</th>{head}</tr></thead>
                    <tbody>{rows}</tbody>
                </table>
            </details>
        </figure>
    }
}

/// The page's title of variant `id` (its id when it is not in the registry).
fn title(id: &str) -> &str {
    engine::variants::by_id(id).map_or(id, |v| v.title)
}

/// A relative error as a percentage (`12.3%`, `0.04%`, `0%`).
fn percent(e: f64) -> String {
    let p = e * 100.0;
    if p == 0.0 {
        "0%".into()
    } else if p < 0.1 {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}

#[cfg(test)]
mod tests {
    use super::percent;

    #[test]
    fn percentages_keep_small_errors_visible() {
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(0.0004), "0.04%");
        assert_eq!(percent(0.1234), "12.3%");
    }
}
