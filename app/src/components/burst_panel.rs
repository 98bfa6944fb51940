//! Burst mode's controls: how many requests, how many in flight, start / cancel / reset, progress.

use leptos::prelude::*;

use crate::burst::{Burst, MAX_CONCURRENCY, MAX_REQUESTS};
use crate::classify::TimingMode;
use crate::run::{Phase, RunState};
use crate::stats::format_ms;

#[component]
pub fn BurstPanel(run: RunState, burst: Burst, hydrated: RwSignal<bool>) -> impl IntoView {
    let settings_error = move || burst.settings().err();
    let can_start = move || {
        hydrated.get()
            && !burst.running.get()
            && run.pixels.with(Option::is_some)
            && !matches!(run.phase.get(), Phase::Busy(_))
            && settings_error().is_none()
    };
    let start = move |_| {
        if let Some(pixels) = run.pixels.get_untracked() {
            burst.start(run, pixels);
        }
    };
    let reset = move |_| {
        burst.reset();
        run.latency.set(Vec::new());
    };
    let progress = move || {
        let (done, total) = (burst.done.get(), burst.total.get());
        (total > 0).then(|| {
            let failed = burst.failed.get();
            let rate = burst
                .throughput()
                .map(|r| format!(" · {r:.1} requests/s"))
                .unwrap_or_default();
            let round_trip = burst.round_trips.with(|s| {
                s.quantile(0.5)
                    .zip(s.quantile(0.99))
                    .map(|(p50, p99)| {
                        format!(
                            " · round trip p50 {} p99 {}",
                            format_ms(p50),
                            format_ms(p99)
                        )
                    })
                    .unwrap_or_default()
            });
            let state = if burst.cancelling.get() {
                "cancelling: waiting for the requests in flight"
            } else if burst.running.get() {
                "running"
            } else if done < total {
                "cancelled"
            } else {
                "done"
            };
            view! {
                <progress max=total value=done aria-label="Burst progress"></progress>
                <p class="burst-status" data-done=done data-total=total>
                    {format!("{done} of {total} answered ({state}){rate}{round_trip}")}
                    {(failed > 0).then(|| format!(" · {failed} failed"))}
                </p>
            }
        })
    };
    view! {
        <section class="burst" aria-label="Burst mode">
            <h2>"Burst"</h2>
            <p class="hint">
                "Send the current photo many times and watch the histograms fill. "
                "Every request runs every variant, all at once by default (a burst is load); "
                "each alone runs them one after another per request."
            </p>
            <div class="burst-controls">
                <CountField id="burst-requests" label="Requests" max=MAX_REQUESTS value=burst.requests_input />
                <CountField
                    id="burst-concurrency"
                    label="in flight"
                    max=MAX_CONCURRENCY
                    value=burst.concurrency_input
                />
                <label>
                    "timing"
                    <select
                        id="burst-mode"
                        disabled=move || burst.running.get()
                        on:change=move |e| {
                            if let Some(m) = TimingMode::from_id(&event_target_value(&e)) {
                                burst.mode.set(m);
                            }
                        }
                    >
                        {TimingMode::ALL
                            .into_iter()
                            .map(|m| {
                                view! {
                                    <option value=m.id() selected=move || burst.mode.get() == m>
                                        {m.label()}
                                    </option>
                                }
                            })
                            .collect_view()}
                    </select>
                </label>
                <button id="burst-start" type="button" disabled=move || !can_start() on:click=start>
                    "Start"
                </button>
                <button
                    id="burst-cancel"
                    type="button"
                    disabled=move || !burst.running.get() || burst.cancelling.get()
                    on:click=move |_| burst.cancel()
                >
                    "Cancel"
                </button>
                <button
                    id="burst-reset"
                    type="button"
                    disabled=move || burst.running.get()
                    on:click=reset
                >
                    "Reset histograms"
                </button>
            </div>
            <p class="error" role="alert">{settings_error}</p>
            {progress}
            <p class="error burst-error">
                {move || burst.last_error.get().map(|e| format!("Last error: {e}"))}
            </p>
        </section>
    }
}

/// A labelled whole-number input from 1 to `max`, kept as typed (the panel validates it).
#[component]
fn CountField(
    id: &'static str,
    label: &'static str,
    max: u32,
    value: RwSignal<String>,
) -> impl IntoView {
    view! {
        <label>
            {label}
            <input
                id=id
                type="number"
                inputmode="numeric"
                min="1"
                max=max
                prop:value=move || value.get()
                on:input=move |e| value.set(event_target_value(&e))
            />
        </label>
    }
}
