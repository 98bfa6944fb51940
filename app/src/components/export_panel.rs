//! The export buttons: everything the page ran, as JSON or as one self-contained HTML report
//! ([`crate::export`]).

use leptos::prelude::*;

use crate::burst::Burst;
use crate::cost::CostState;
use crate::export::{download, Report};
use crate::labelled::SetRun;
use crate::run::RunState;

#[component]
pub fn ExportPanel(
    run: RunState,
    burst: Burst,
    set: SetRun,
    cost: CostState,
    hydrated: RwSignal<bool>,
) -> impl IntoView {
    let message = RwSignal::new(None::<String>);
    let export = move |html: bool| {
        let report = Report::collect(&run, &burst, &set, &cost);
        let stamp: String = report
            .exported_at
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == 'T')
            .collect();
        let result = if html {
            download(
                &format!("inferscope-report-{stamp}.html"),
                "text/html",
                &report.to_html(),
            )
        } else {
            download(
                &format!("inferscope-report-{stamp}.json"),
                "application/json",
                &report.to_json(),
            )
        };
        message.set(result.err());
    };
    view! {
        <section class="export" aria-labelledby="export-title">
            <h2 id="export-title">"Export"</h2>
            <p class="hint">
                "Everything this page ran: the last photo (its crop, every variant's answer, the maps), the histograms and the last burst, the labelled set (table, chart, gallery, every photo's answers). The HTML report is one file that opens offline."
            </p>
            <div class="export-buttons">
                <button
                    type="button"
                    id="export-json"
                    disabled=move || !hydrated.get()
                    on:click=move |_| export(false)
                >
                    "Download JSON"
                </button>
                <button
                    type="button"
                    id="export-html"
                    disabled=move || !hydrated.get()
                    on:click=move |_| export(true)
                >
                    "Download HTML report"
                </button>
            </div>
            {move || {
                message.get().map(|m| view! { <p class="status error" role="alert">{m}</p> })
            }}
        </section>
    }
}
