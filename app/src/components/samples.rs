//! A few sample photos (from foolbox's labelled ImageNet photos, copied into the site by `./x`):
//! one click classifies one.

use leptos::prelude::*;

use crate::facts::list_samples;
use crate::run::{Phase, RunState, Source};

/// Most sample photos the picker shows (the server's folder may hold hundreds).
const PICKER_PHOTOS: usize = 8;

#[component]
pub fn SamplePicker(run: RunState, hydrated: RwSignal<bool>) -> impl IntoView {
    let samples = Resource::new(|| (), |_| list_samples());
    view! {
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                let list = samples.await.unwrap_or_default();
                let count = list.len();
                (!list.is_empty())
                    .then(|| {
                        let buttons = list
                            .into_iter()
                            .take(PICKER_PHOTOS)
                            .map(|sample| {
                                let name = sample.name.clone();
                                let label = sample.label.clone().unwrap_or_else(|| name.clone());
                                let url = sample.url.clone();
                                let src = sample.url.clone();
                                let tip = format!("Classify this photo ({label})");
                                let on_click = move |_| {
                                    run.start(Source::Sample {
                                        url: url.clone(),
                                        name: name.clone(),
                                    })
                                };
                                view! {
                                    <li>
                                        <button
                                            type="button"
                                            class="sample"
                                            data-sample=sample.url
                                            disabled=move || {
                                                !hydrated.get() || matches!(run.phase.get(), Phase::Busy(_))
                                            }
                                            on:click=on_click
                                            title=tip
                                        >
                                            <img src=src alt="" loading="lazy" width="56" height="56" />
                                            <span>{label}</span>
                                        </button>
                                    </li>
                                }
                            })
                            .collect_view();
                        view! {
                            <nav class="samples" aria-label="Sample photos">
                                <p class="samples-title">
                                    {if count > PICKER_PHOTOS {
                                        format!("Or try a labelled ImageNet photo ({PICKER_PHOTOS} of the server's {count}; the labelled-set view below runs them all):")
                                    } else {
                                        "Or try a labelled ImageNet photo:".to_string()
                                    }}
                                </p>
                                <ul>{buttons}</ul>
                            </nav>
                        }
                    })
            })}
        </Suspense>
    }
}
