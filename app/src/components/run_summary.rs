//! What happened to the last photo: its size, the status or error, and the timings.

use leptos::either::EitherOf4;
use leptos::prelude::*;

use super::ms;
use crate::run::{Phase, RunState};

#[component]
pub fn RunSummary(run: RunState) -> impl IntoView {
    let file_line = move || {
        run.upload.get().map(|u| {
            let size = u
                .size
                .map(|(w, h)| format!(", {w}×{h} px"))
                .unwrap_or_default();
            view! {
                <p class="file">
                    <span class="file-name">{u.name}</span>
                    {u.bytes.map(|b| format!(" ({:.0} KB{size})", b / 1024.0))}
                </p>
            }
        })
    };
    let status = move || match run.phase.get() {
        Phase::Idle => EitherOf4::A(view! {
            <p class="status">"No photo yet."</p>
            <p class="hint">
                "The photo stays in your browser: only its 224×224 pixels (147 KB) go to the server."
            </p>
        }),
        Phase::Busy(what) => EitherOf4::B(view! { <p class="status working">{what}</p> }),
        Phase::Failed(message) => EitherOf4::C(view! {
            <p class="status error" role="alert">
                {message}
            </p>
        }),
        Phase::Done => {
            let mode = run
                .timings
                .get()
                .map(|t| t.mode.label())
                .unwrap_or_default();
            EitherOf4::D(
                view! { <p class="status">{format!("Done: every variant timed {mode}.")}</p> },
            )
        }
    };
    let timings = move || {
        run.timings.get().map(|t| {
            view! {
                <dl class="timings">
                    <div>
                        <dt>"preprocessing in the browser"</dt>
                        <dd id="preprocess-ms">{ms(t.preprocess_ms)}</dd>
                    </div>
                    <div>
                        <dt>"round trip to the server"</dt>
                        <dd id="round-trip-ms">{ms(t.round_trip_ms)}</dd>
                    </div>
                    <div>
                        <dt>"of which on the server"</dt>
                        <dd id="server-ms">{ms(t.server_ms)}</dd>
                    </div>
                    <div>
                        <dt>"transport (round trip − server)"</dt>
                        <dd id="transport-ms">{ms(t.transport_ms())}</dd>
                    </div>
                </dl>
                {t.contention.map(|c| view! { <p class="note contention" role="note">{c}</p> })}
            }
        })
    };
    view! {
        <div class="summary" data-phase=move || run.phase.with(Phase::name)>
            {file_line}
            {status}
            {timings}
        </div>
    }
}
