//! The comparison page: drop a photo, see every variant's answer side by side.

use leptos::either::{Either, EitherOf3};
use leptos::prelude::*;

use crate::burst::Burst;
use crate::catalog::{list_variants, Availability, VariantInfo};
use crate::components::burst_panel::BurstPanel;
use crate::components::cam_overlay::CamControls;
use crate::components::drift_chart::DriftPanel;
use crate::components::dropzone::DropZone;
use crate::components::export_panel::ExportPanel;
use crate::components::labelled_set::LabelledSet;
use crate::components::run_summary::RunSummary;
use crate::components::samples::SamplePicker;
use crate::components::timing::{HistogramTabs, ModePicker};
use crate::components::variant_card::VariantCard;
use crate::cost::CostState;
use crate::facts::{model_facts, FactsReport};
use crate::labelled::SetRun;
use crate::run::{Phase, RunState, Timings};

/// The page at `/`; `?embed=1` gives the compact layout for an iframe (no header or footer).
#[component]
pub fn ComparePage() -> impl IntoView {
    let run = RunState::new();
    // The cards' class activation maps read the photo and the baseline's map from here.
    provide_context(run);
    let burst = Burst::new();
    let set = SetRun::new();
    let cost = CostState::new();
    // Read once: the page never changes its own URL.
    let embed = crate::page_url()
        .1
        .split('&')
        .any(|pair| pair == "embed=1" || pair == "embed=true");
    // Effects run only in the browser, once the WASM bundle has hydrated the page.
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));
    let variants = Resource::new(|| (), |_| list_variants());
    // While the server builds variants in the background, ask again every few seconds: each card
    // shows the build's step and comes alive when its file is loaded.
    Effect::new(move |_| {
        let building = variants
            .get()
            .and_then(Result::ok)
            .is_some_and(|list| list.iter().any(|v| v.availability.is_building()));
        if building {
            set_timeout(
                move || variants.refetch(),
                std::time::Duration::from_secs(3),
            );
        }
    });
    let facts = Resource::new(|| (), |_| model_facts());

    view! {
        <div class="page" class:embed=embed>
            <header class="masthead">
                <h1>"inferscope"</h1>
                <p class="tagline">
                    "What pruning, 2:4 sparsity and INT8 quantization do to a ResNet50 ImageNet classifier. "
                    "Your photo is decoded, resized and cropped in this page (WebAssembly); the server normalizes those 224×224 pixels and runs every variant on them, each alone or all at once."
                </p>
            </header>
            <main class="compare" data-hydrated=move || hydrated.get().to_string()>
                <section class="input-row" aria-label="Photo">
                    <div class="input-col">
                        <DropZone run hydrated />
                        <SamplePicker run hydrated />
                    </div>
                    <div class="input-col">
                        <ModePicker run hydrated />
                        <CamControls run hydrated />
                        <RunSummary run />
                        <BurstPanel run burst hydrated />
                    </div>
                </section>
                // A Transition, not a Suspense: the cards stay while the list is asked for again.
                <Transition fallback=|| {
                    view! { <p class="note">"Loading the list of variants…"</p> }
                }>
                    {move || Suspend::new(async move {
                        let facts = facts.await.ok().flatten();
                        match variants.await {
                            Ok(list) => Either::Left(view! { <VariantGrid list run facts /> }),
                            Err(e) => {
                                Either::Right(view! {
                                    <p class="error" role="alert">
                                        {format!("Could not list the variants: {e}")}
                                    </p>
                                })
                            }
                        }
                    })}
                </Transition>
                <DriftPanel run hydrated />
                <LabelledSet run set cost hydrated />
                <ExportPanel run burst set cost hydrated />
            </main>
            <footer class="colophon">
                "Timings: preprocessing is measured in your browser, queue wait and inference on the server per variant, the round trip from this page; transport is the round trip minus the server's time. "
                "Each alone: the server runs the variants one after another, each with the engine to itself; all at once: side by side, sharing it. "
                "Histograms count every answer this page received in the mode they show: the server's time per variant (queue wait + inference)."
            </footer>
        </div>
    }
}

#[component]
fn VariantGrid(list: Vec<VariantInfo>, run: RunState, facts: Option<FactsReport>) -> impl IntoView {
    let ready = list.iter().filter(|v| v.availability.is_ready()).count();
    let missing: Vec<String> = list
        .iter()
        .filter(|v| matches!(v.availability, Availability::Missing { .. }))
        .map(|v| v.title.clone())
        .collect();
    let building: Vec<String> = list
        .iter()
        .filter(|v| v.availability.is_building())
        .map(|v| v.title.clone())
        .collect();
    let total = list.len();
    let note = if !building.is_empty() {
        EitherOf3::A(view! {
            {format!(
                "{ready} of {total} variants loaded; being built on the server now: {}. ",
                building.join(", "),
            )}
            <strong class="contention">
                "Times measured meanwhile share the server's CPU with the build (under contention)."
            </strong>
        })
    } else if missing.is_empty() {
        EitherOf3::B(view! { {format!("{ready} of {total} variants loaded.")} })
    } else {
        EitherOf3::C(view! {
            {format!("{ready} of {total} variants loaded; not built yet: {}", missing.join(", "))}
            " (" <code>"./x run"</code> " builds them)."
        })
    };
    let facts_note = facts.as_ref().map(|f| {
        let machine = if f.machine.is_empty() {
            String::new()
        } else {
            format!("; CPU latency on {}", f.machine)
        };
        view! {
            <p class="note facts-note">
                {format!("Model facts: measured by build-variants on {}{machine}.", f.evaluation)}
            </p>
        }
    });
    let baseline_top1 = Signal::derive(move || {
        run.outcomes.with(|o| {
            o.iter()
                .find(|x| x.id == engine::variants::VARIANTS[0].id)
                .and_then(|b| b.result.as_ref().ok())
                .and_then(|p| p.top.first())
                .map(|c| c.index)
        })
    });
    let timings: Signal<Option<Timings>> = run.timings.into();
    let cards = list
        .into_iter()
        .map(|info| {
            let id = info.id.clone();
            let facts = facts.as_ref().and_then(|f| f.variant(&id)).cloned();
            let outcome = Signal::derive({
                let id = id.clone();
                move || run.outcome(&id)
            });
            let samples = Signal::derive(move || run.samples(run.histogram_mode.get(), &id));
            let busy = Signal::derive(move || matches!(run.phase.get(), Phase::Busy(_)));
            let histogram_mode = run.histogram_mode.into();
            view! {
                <VariantCard info outcome busy baseline_top1 timings samples histogram_mode facts />
            }
        })
        .collect_view();
    view! {
        <p class="note variants-note">{note}</p>
        {facts_note}
        <HistogramTabs run />
        <section class="cards" aria-label="Variants">{cards}</section>
    }
}
