//! Where the photo comes in: a file picker that also takes drops, and pastes anywhere on the page.

use leptos::ev;
use leptos::prelude::*;
use web_sys::HtmlInputElement;

use crate::browser::first_file;
use crate::run::{Phase, RunState, Source};

#[component]
pub fn DropZone(run: RunState, hydrated: RwSignal<bool>) -> impl IntoView {
    let dragging = RwSignal::new(false);

    // Pasting an image (a screenshot, an image copied in another tab) works anywhere on the page.
    Effect::new(move |_| {
        let handle = window_event_listener(ev::paste, move |e: web_sys::ClipboardEvent| {
            if let Some(file) = first_file(e.clipboard_data().and_then(|d| d.files())) {
                e.prevent_default();
                run.start(Source::File(file));
            }
        });
        on_cleanup(move || handle.remove());
    });

    let on_change = move |e: ev::Event| {
        let input: HtmlInputElement = event_target(&e);
        if let Some(file) = first_file(input.files()) {
            run.start(Source::File(file));
        }
        // Choosing the same file again must fire `change` again.
        input.set_value("");
    };
    let on_drop = move |e: ev::DragEvent| {
        e.prevent_default();
        dragging.set(false);
        if let Some(file) = first_file(e.data_transfer().and_then(|d| d.files())) {
            run.start(Source::File(file));
        }
    };
    let on_dragover = move |e: ev::DragEvent| {
        e.prevent_default();
        dragging.set(true);
    };

    let preview = move || {
        run.upload
            .get()
            .and_then(|u| u.preview.map(|src| (src, u.name)))
            .map(|(src, name)| {
                view! { <img class="preview" src=src alt=format!("The photo: {name}") /> }
            })
    };

    view! {
        <label
            class="dropzone"
            class:dragging=move || dragging.get()
            class:ready=move || hydrated.get()
            class:busy=move || matches!(run.phase.get(), Phase::Busy(_))
            on:dragover=on_dragover
            on:dragleave=move |_| dragging.set(false)
            on:drop=on_drop
        >
            <input
                id="photo"
                type="file"
                accept="image/jpeg,image/png,image/webp"
                disabled=move || !hydrated.get()
                on:change=on_change
            />
            {preview}
            <span class="prompt">
                {move || {
                    if hydrated.get() {
                        "Choose a photo, drop it here, or paste it (JPEG, PNG or WebP)."
                    } else {
                        "Loading… the page becomes interactive once its WebAssembly module has loaded."
                    }
                }}
            </span>
        </label>
    }
}
