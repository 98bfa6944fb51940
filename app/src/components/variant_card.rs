//! One variant's card: what it is, whether it is loaded, and its top-5 answer with timings.

use leptos::prelude::*;

use super::ms;
use crate::catalog::{Availability, VariantInfo};
use crate::classify::Prediction;

#[component]
pub fn VariantCard(
    info: VariantInfo,
    /// This variant's answer for the current photo, once there is one.
    outcome: Signal<Option<Result<Prediction, String>>>,
    /// Whether a photo is on its way.
    busy: Signal<bool>,
    /// The baseline's top-1 class for the current photo, to compare with.
    baseline_top1: Signal<Option<u32>>,
    /// The browser's round trip of the call that carried this answer (shared by every variant).
    round_trip_ms: Signal<Option<f64>>,
) -> impl IntoView {
    let VariantInfo {
        id,
        title,
        summary,
        precision,
        availability,
    } = info;
    let is_baseline = id == engine::variants::VARIANTS[0].id;
    let available = !matches!(availability, Availability::Missing { .. });
    let body = match availability {
        Availability::Missing { path } => view! {
            <p class="unavailable">"Not built yet: " <code>{path}</code> " is missing."</p>
        }
        .into_any(),
        Availability::Failed { error } => {
            view! { <p class="unavailable error">{format!("Could not load: {error}")}</p> }
                .into_any()
        }
        Availability::Ready { backend } => {
            let answer = move || match outcome.get() {
                None if busy.get() => view! { <p class="placeholder">"Running…"</p> }.into_any(),
                None => view! { <p class="placeholder">"Waiting for a photo."</p> }.into_any(),
                Some(Err(e)) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
                Some(Ok(p)) => {
                    view! { <Answer p is_baseline baseline_top1 round_trip_ms /> }.into_any()
                }
            };
            view! {
                <div class="answer">{answer}</div>
                <p class="backend">{format!("runs on: {backend}")}</p>
            }
            .into_any()
        }
    };
    view! {
        <article class="card" class:unavailable=!available data-variant=id>
            <header>
                <h2>{title}</h2>
                <span class="badge">{precision}</span>
            </header>
            <p class="what">{summary}</p>
            {body}
        </article>
    }
    .into_any()
}

#[component]
fn Answer(
    p: Prediction,
    is_baseline: bool,
    baseline_top1: Signal<Option<u32>>,
    round_trip_ms: Signal<Option<f64>>,
) -> impl IntoView {
    let top1 = p.top.first().map(|c| c.index);
    let agreement = move || {
        if is_baseline {
            return None;
        }
        let (mine, base) = (top1?, baseline_top1.get()?);
        Some(if mine == base {
            view! { <span class="agree">"same top-1 as the baseline"</span> }.into_any()
        } else {
            view! { <span class="disagree">"top-1 differs from the baseline"</span> }.into_any()
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
    view! {
        <ol class="top5">{rows}</ol>
        <p class="timing">
            "inference on the server "
            <b class="inference-ms">{ms(p.inference_us as f64 / 1000.0)}</b>
            <br />
            {format!("queued {} · round trip ", ms(p.queue_us as f64 / 1000.0))}
            <span class="round-trip-ms">{move || round_trip_ms.get().map(ms)}</span>
        </p>
        <p class="agreement">{agreement}</p>
    }
    .into_any()
}
