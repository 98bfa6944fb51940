//! One variant's card: what it is, whether it is loaded, and its top-5 answer with timings.

use leptos::either::{Either, EitherOf4, EitherOf5};
use leptos::prelude::*;

use super::cam_overlay::CamOverlay;
use super::chart::LatencyChart;
use super::{css_color, ms, variant_color};
use crate::catalog::{Availability, VariantInfo};
use crate::classify::{Prediction, TimingMode};
use crate::facts::VariantFacts;
use crate::run::Timings;
use crate::stats::LatencySamples;

#[component]
pub fn VariantCard(
    info: VariantInfo,
    /// This variant's answer for the current photo, once there is one.
    outcome: Signal<Option<Result<Prediction, String>>>,
    /// Whether a photo is on its way.
    busy: Signal<bool>,
    /// The baseline's top-1 class for the current photo, to compare with.
    baseline_top1: Signal<Option<u32>>,
    /// The browser-side timings of the call that carried this answer (shared by every variant).
    timings: Signal<Option<Timings>>,
    /// Every server time (queue + inference) of this variant the page received in `histogram_mode`, ms.
    samples: Signal<LatencySamples>,
    /// Which timing mode's answers `samples` holds.
    histogram_mode: Signal<TimingMode>,
    /// What `build-variants` measured, when the report exists.
    facts: Option<VariantFacts>,
) -> impl IntoView {
    let VariantInfo {
        id,
        title,
        summary,
        precision,
        availability,
    } = info;
    let is_baseline = id == engine::variants::VARIANTS[0].id;
    let color = variant_color(&id);
    let chart_label = {
        let title = title.clone();
        Signal::derive(move || {
            format!(
                "Histogram of {title}'s server times (queue wait + inference), timed {}",
                histogram_mode.get().label()
            )
        })
    };
    let available = !matches!(
        availability,
        Availability::Missing { .. } | Availability::Building { .. } | Availability::Unloaded
    );
    let body = match availability {
        Availability::Missing { path } => EitherOf5::A(view! {
            <p class="unavailable">
                "Not built yet: " <code>{path}</code> " is not in the server's models folder."
            </p>
        }),
        Availability::Building {
            file,
            status,
            running,
        } => EitherOf5::B(view! {
            <p class="unavailable building" role="status" data-running=running.to_string()>
                "Not built yet: " <code>{file}</code>
                {if running {
                    " is being built on the server; the card comes alive when it is written."
                } else {
                    "."
                }} <br /> <span class="build-status">{status}</span>
            </p>
        }),
        Availability::Unloaded => EitherOf5::C(view! {
            <p class="unavailable">
                "Unloaded by a model-repository request ("
                <code>{format!("POST /v2/repository/models/{id}/load")}</code> " loads it again)."
            </p>
        }),
        Availability::Failed { error } => EitherOf5::D(
            view! { <p class="unavailable error">{format!("Could not load: {error}")}</p> },
        ),
        Availability::Ready { backend, info } => {
            let answer = move || match outcome.get() {
                None if busy.get() => EitherOf4::A(view! { <p class="placeholder">"Running…"</p> }),
                None => EitherOf4::B(view! { <p class="placeholder">"Waiting for a photo."</p> }),
                Some(Err(e)) => EitherOf4::C(view! { <p class="error" role="alert">{e}</p> }),
                Some(Ok(p)) => {
                    EitherOf4::D(view! { <Answer p is_baseline baseline_top1 timings /> })
                }
            };
            EitherOf5::E(view! {
                <div class="answer" aria-live="polite">{answer}</div>
                <LatencyChart samples mode=histogram_mode color label=chart_label />
                <p
                    class="ran-on"
                    data-backend=info.backend.to_string()
                    data-device=info.device.clone()
                    data-path=info.path.clone()
                    data-location=info.location.clone()
                    title=format!("backend {backend}, as the engine reports it")
                >
                    "ran on " <b>{info.path.clone()}</b> " · " {info.device.clone()} " · "
                    {info.location.clone()}
                </p>
            })
        }
    };
    view! {
        <article
            class="card"
            class:unavailable=!available
            data-variant=id
            style=format!("--variant: {}", css_color(color))
        >
            <header>
                <h2>{title}</h2>
                <span class="badge">{precision}</span>
            </header>
            <p class="what">{summary}</p>
            {facts.map(|f| view! { <Facts f /> })}
            {body}
        </article>
    }
}

#[component]
fn Answer(
    p: Prediction,
    is_baseline: bool,
    baseline_top1: Signal<Option<u32>>,
    timings: Signal<Option<Timings>>,
) -> impl IntoView {
    let top1 = p.top.first().map(|c| c.index);
    let class_name = p.top.first().map(|c| c.name.clone()).unwrap_or_default();
    let cam = p.cam.clone();
    let agreement = move || {
        if is_baseline {
            return None;
        }
        let (mine, base) = (top1?, baseline_top1.get()?);
        Some(if mine == base {
            Either::Left(view! { <span class="agree">"same top-1 as the baseline"</span> })
        } else {
            Either::Right(view! { <span class="disagree">"top-1 differs from the baseline"</span> })
        })
    };
    let rows = p
        .top
        .into_iter()
        .enumerate()
        .map(|(rank, c)| {
            let pct = f64::from(c.prob) * 100.0;
            let title = c.name.clone();
            view! {
                <li class:top1=rank == 0 data-class=c.index>
                    <span class="name" title=title>{c.name}</span>
                    <span class="pct">{format!("{pct:.1}%")}</span>
                    <span class="bar">
                        <span class="fill" style:width=format!("{pct:.2}%")></span>
                    </span>
                </li>
            }
        })
        .collect_view();
    let mode = move || timings.get().map(|t| t.mode.label()).unwrap_or_default();
    let queue_ms = p.queue_us as f64 / 1000.0;
    let inference_ms = p.inference_us as f64 / 1000.0;
    // With a class activation map, the model call also returned the last feature map (one more
    // output of the same run): say so where the time is read.
    let inference_label = if matches!(p.cam, Some(Ok(_))) {
        "inference (+ feature map)"
    } else {
        "inference"
    };
    let split = move || {
        timings.get().map(|t| {
            let total = t.preprocess_ms + t.transport_ms() + queue_ms + inference_ms;
            view! {
                <div><dt>"preprocess (browser)"</dt><dd>{ms(t.preprocess_ms)}</dd></div>
                <div><dt>"transport"</dt><dd class="transport-ms">{ms(t.transport_ms())}</dd></div>
                <div><dt>"queue wait"</dt><dd class="queue-ms">{ms(queue_ms)}</dd></div>
                <div><dt>{inference_label}</dt><dd class="inference-ms">{ms(inference_ms)}</dd></div>
                <div class="total"><dt>"total"</dt><dd class="total-ms">{ms(total)}</dd></div>
            }
        })
    };
    view! {
        <ol class="top5">{rows}</ol>
        <CamOverlay cam class_name is_baseline />
        <dl class="split" data-mode=move || timings.get().map(|t| t.mode.id())>{split}</dl>
        <p class="timed-as">"timed " {mode}</p>
        <p class="agreement">{agreement}</p>
    }
}

/// What `build-variants` measured for this variant.
#[component]
fn Facts(f: VariantFacts) -> impl IntoView {
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    let millions = |n: u64| format!("{:.1} M", n as f64 / 1e6);
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    let size = if f.gzip_bytes + f.gzip_bytes / 10 < f.file_bytes {
        format!("{} ({} gzipped)", mb(f.file_bytes), mb(f.gzip_bytes))
    } else {
        mb(f.file_bytes)
    };
    let params = if f.nonzero_params < f.params {
        format!(
            "{} ({} nonzero)",
            millions(f.params),
            millions(f.nonzero_params)
        )
    } else {
        millions(f.params)
    };
    let cpu = f.cpu_ms_b1.map(|ms_b1| {
        let threads = f
            .cpu_threads
            .map(|t| format!(", {t} threads"))
            .unwrap_or_default();
        view! {
            <div>
                <dt>"CPU, batch 1"</dt>
                <dd>{format!("{} (median{threads})", ms(ms_b1))}</dd>
            </div>
        }
    });
    view! {
        <dl class="facts">
            <div><dt>"size on disk"</dt><dd>{size}</dd></div>
            <div><dt>"compute"</dt><dd>{format!("{:.2} GMAC / image", f.gmacs)}</dd></div>
            <div><dt>"parameters"</dt><dd>{params}</dd></div>
            <div>
                <dt>"top-1 / top-5"</dt>
                <dd>{format!("{} / {} on {} photos", pct(f.top1), pct(f.top5), f.images)}</dd>
            </div>
            <div><dt>"same top-1 as baseline"</dt><dd>{pct(f.agreement)}</dd></div>
            {cpu}
        </dl>
    }
}
