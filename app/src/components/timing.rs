//! The two timing modes on the page: the picker for a photo's run, and which mode's answers the
//! histograms show.

use leptos::prelude::*;

use crate::classify::TimingMode;
use crate::run::{Phase, RunState};

/// How the next photo's variants run: each alone (the default) or all at once, with what that means.
#[component]
pub fn ModePicker(run: RunState, hydrated: RwSignal<bool>) -> impl IntoView {
    let options = TimingMode::ALL
        .into_iter()
        .map(|m| {
            view! {
                <label class="mode-option">
                    <input
                        type="radio"
                        name="timing-mode"
                        value=m.id()
                        prop:checked=move || run.mode.get() == m
                        disabled=move || !hydrated.get() || matches!(run.phase.get(), Phase::Busy(_))
                        on:change=move |_| run.mode.set(m)
                    />
                    {m.label()}
                </label>
            }
        })
        .collect_view();
    view! {
        <fieldset class="timing-mode" data-mode=move || run.mode.get().id()>
            <legend>"Timing"</legend>
            {options}
            <p class="hint">{move || run.mode.get().explain()}</p>
        </fieldset>
    }
}

/// Which mode's answers the histograms count, with how many each holds.
#[component]
pub fn HistogramTabs(run: RunState) -> impl IntoView {
    let tabs = TimingMode::ALL
        .into_iter()
        .map(|m| {
            let count = move || run.answers(m);
            view! {
                <button
                    type="button"
                    class="histogram-tab"
                    data-mode=m.id()
                    data-count=count
                    aria-pressed=move || (run.histogram_mode.get() == m).to_string()
                    on:click=move |_| run.histogram_mode.set(m)
                >
                    {m.label()}
                    " · "
                    {count}
                    " answers"
                </button>
            }
        })
        .collect_view();
    view! {
        <div class="histogram-modes" role="group" aria-label="Histograms show">
            <span class="note">"Histograms show the answers timed "</span>
            {tabs}
        </div>
        {move || {
            run.contended
                .get()
                .map(|_| {
                    view! {
                        <p class="note contention">
                            "Some answers in these histograms were measured while a variant build shared the server's CPU (under contention)."
                        </p>
                    }
                })
        }}
    }
}
