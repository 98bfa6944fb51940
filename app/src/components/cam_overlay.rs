//! Where each variant looked: its class activation map for its top-1 class over the photo as the
//! network saw it (the 224×224 center crop), and, for the other variants, where that differs from the
//! baseline's map. The maps come from the server (`engine::cam`); the page only draws them.

use std::sync::Arc;

use leptos::either::EitherOf3;
use leptos::prelude::*;
use wasm_bindgen::JsCast;

use engine::cam::{correlation, Cam};

use crate::explain::map_cells;
use crate::run::RunState;

/// `256 / 224`: the photo is resized to 256 on its shorter side and center-cropped to 224; a square
/// `object-fit: cover` image scaled by this shows exactly that crop.
const CROP_ZOOM: f64 = 256.0 / 224.0;

/// The map of one card. `cam` is the answer's (`None`: the run did not ask for maps).
#[component]
pub fn CamOverlay(
    cam: Option<Result<Cam, String>>,
    /// The top-1 class's name, for the caption.
    class_name: String,
    is_baseline: bool,
) -> impl IntoView {
    let run = expect_context::<RunState>();
    let settings = run.cam;
    let Some(cam) = cam else {
        return EitherOf3::A(view! {
            <p class="cam-none hint" class:hidden=move || !settings.show.get() data-cam="not-asked">
                "No class activation map: this run did not ask for one."
            </p>
        });
    };
    let cam = match cam {
        Ok(cam) => cam,
        Err(why) => {
            return EitherOf3::B(view! {
                <p class="cam-none hint" data-cam="unsupported">
                    "No class activation map: " {why}
                </p>
            })
        }
    };
    let baseline = Signal::derive(move || {
        if is_baseline {
            return None;
        }
        run.outcome(engine::variants::VARIANTS[0].id)
            .and_then(Result::ok)
            .and_then(|p| p.cam)
            .and_then(Result::ok)
    });
    let preview = move || {
        run.upload
            .with(|u| u.as_ref().and_then(|u| u.preview.clone()))
    };
    let (hot_row, hot_col) = cam.hottest();
    let (rows, cols) = (cam.height, cam.width);
    let cam = StoredValue::new(cam);
    let versus = move || settings.versus_baseline.get() && baseline.with(Option::is_some);
    // The cells as the pixels of a `cols`×`rows` canvas that CSS scales up without smoothing, painted
    // when the element is made ([`paint_cells`]). As SVG (49 rectangles per card, set as markup) they
    // cost the page's rendering and painting more than the rest of an answer (docs/page.md, session 13).
    // Each cell's shown value is in `data-values` (row-major, 3 decimals) for readers and tests.
    let map = move || {
        let (values, colors) = cam.with_value(|cam| {
            if versus() {
                baseline.with(|b| map_cells(cam, b.as_ref()))
            } else {
                map_cells(cam, None)
            }
        });
        let data = values
            .iter()
            .map(|v| format!("{v:.3}"))
            .collect::<Vec<_>>()
            .join(" ");
        let rgba: Arc<[u8]> = colors
            .iter()
            .flat_map(|&[r, g, b]| [r, g, b, 255])
            .collect();
        view! {
            <canvas
                class="cam-map"
                width=cols
                height=rows
                data-values=data
                style:opacity=move || format!("{:.2}", settings.opacity.get())
                role="img"
                aria-label=format!("class activation map, {rows}×{cols} cells")
                use:paint_cells=(cols, rows, rgba)
            ></canvas>
        }
    };
    let compared = move || {
        let b = baseline.get()?;
        let (br, bc) = b.hottest();
        let r = cam.with_value(|cam| correlation(cam, &b));
        let same = (br, bc) == (hot_row, hot_col);
        Some(view! {
            <span class="cam-compare" data-correlation=r.map(|r| format!("{r:.3}"))>
                {if same {
                    "; the baseline's is the same cell".to_string()
                } else {
                    format!("; the baseline's is at row {}, column {}", br + 1, bc + 1)
                }}
                {r.map(|r| format!("; correlation with the baseline's map {r:.2}"))}
            </span>
        })
    };
    let legend = move || {
        if versus() {
            "red: this variant looks there more than the baseline; blue: less"
        } else {
            "red: most evidence for the class; blue: least"
        }
    };
    EitherOf3::C(view! {
        <figure
            class="cam"
            class:hidden=move || !settings.show.get()
            data-class=cam.with_value(|c| c.class)
            data-hottest-row=hot_row
            data-hottest-col=hot_col
            data-view=move || if versus() { "versus-baseline" } else { "map" }
        >
            <div class="cam-frame">
                <img
                    class="cam-photo"
                    src=preview
                    alt=""
                    style=format!("transform: scale({CROP_ZOOM:.6})")
                />
                {map}
            </div>
            <figcaption class="hint">
                "Where it looked for “" {class_name} "”: hottest cell at row " {hot_row + 1}
                ", column " {hot_col + 1} " of " {rows} "×" {cols} {compared} ". " {legend}
            </figcaption>
        </figure>
    })
}

/// The page's class-activation-map controls.
#[component]
pub fn CamControls(run: RunState, hydrated: RwSignal<bool>) -> impl IntoView {
    let s = run.cam;
    view! {
        <fieldset class="cam-controls">
            <legend>"Where each variant looks"</legend>
            <label>
                <input
                    type="checkbox"
                    name="cam-show"
                    prop:checked=move || s.show.get()
                    disabled=move || !hydrated.get()
                    on:change=move |e| s.show.set(event_target_checked(&e))
                />
                " class activation map on the photo"
            </label>
            <label>
                "opacity "
                <input
                    type="range"
                    name="cam-opacity"
                    min="0"
                    max="100"
                    prop:value=move || (s.opacity.get() * 100.0).round().to_string()
                    disabled=move || !hydrated.get() || !s.show.get()
                    on:input=move |e| {
                        if let Ok(v) = event_target_value(&e).parse::<f64>() {
                            s.opacity.set((v / 100.0).clamp(0.0, 1.0));
                        }
                    }
                />
            </label>
            <label>
                <input
                    type="checkbox"
                    name="cam-versus-baseline"
                    prop:checked=move || s.versus_baseline.get()
                    disabled=move || !hydrated.get() || !s.show.get()
                    on:change=move |e| s.versus_baseline.set(event_target_checked(&e))
                />
                " other variants: where they differ from the baseline"
            </label>
            <p class="hint">
                "For its top-1 class, each variant's evidence per cell of the last 7×7 feature map "
                "(Σ FC weight × feature, the map whose mean is the logit), over the 224×224 crop the "
                "network saw. Computed on the server with the answer; a variant whose backend cannot "
                "return its feature map says so. Takes effect from the next photo."
            </p>
        </fieldset>
    }
}

/// Directive: paints `rgba` (`width`×`height` pixels) into the canvas it is on, when the element is
/// made (in the browser only; the server renders the empty element).
fn paint_cells(
    el: leptos::tachys::renderer::types::Element,
    (width, height, rgba): (u32, u32, Arc<[u8]>),
) {
    let Ok(canvas) = el.dyn_into::<web_sys::HtmlCanvasElement>() else {
        return;
    };
    let Some(context) = canvas
        .get_context("2d")
        .ok()
        .flatten()
        .and_then(|c| c.dyn_into::<web_sys::CanvasRenderingContext2d>().ok())
    else {
        return;
    };
    if let Ok(image) = web_sys::ImageData::new_with_u8_clamped_array_and_sh(
        wasm_bindgen::Clamped(&rgba),
        width,
        height,
    ) {
        let _ = context.put_image_data(&image, 0.0, 0.0);
    }
}
