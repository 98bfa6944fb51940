//! Browser glue for the page's event handlers: reading files, the clock, yielding to the renderer.
//! Compiled for the server too, where nothing calls it.

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// Milliseconds from the page's time origin (`performance.now()`), with sub-millisecond resolution.
pub fn now_ms() -> f64 {
    leptos::prelude::window()
        .performance()
        .map(|p| p.now())
        .unwrap_or_default()
}

/// A User Timing mark (`performance.mark`), for benchmarks that line the page's steps up with
/// Resource Timing.
pub fn mark(name: &str) {
    if let Some(p) = leptos::prelude::window().performance() {
        let _ = p.mark(name);
    }
}

/// The bytes of a file the user chose, dropped or pasted.
pub async fn read_file(file: &web_sys::File) -> Result<Vec<u8>, String> {
    let buffer = JsFuture::from(file.array_buffer())
        .await
        .map_err(|e| format!("could not read {}: {}", file.name(), js_message(&e)))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// The bytes at `url` (a sample photo on this server).
pub async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let response = JsFuture::from(leptos::prelude::window().fetch_with_str(url))
        .await
        .map_err(|e| format!("could not fetch {url}: {}", js_message(&e)))?;
    let response: web_sys::Response = response
        .dyn_into()
        .map_err(|_| format!("could not fetch {url}: not a response"))?;
    if !response.ok() {
        return Err(format!(
            "could not fetch {url}: HTTP {} {}",
            response.status(),
            response.status_text()
        ));
    }
    let buffer = response
        .array_buffer()
        .map_err(|e| format!("could not read {url}: {}", js_message(&e)))?;
    let buffer = JsFuture::from(buffer)
        .await
        .map_err(|e| format!("could not read {url}: {}", js_message(&e)))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// Resolves after the browser had a chance to paint, so that a status line set before a long
/// synchronous step (decoding and resizing a photo) is visible while it runs.
pub async fn yield_to_renderer() {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        let window = leptos::prelude::window();
        // Two frames: the first runs before the paint, the second after it.
        let again = wasm_bindgen::closure::Closure::once_into_js(move || {
            let _ = leptos::prelude::window().request_animation_frame(resolve.unchecked_ref());
        });
        let _ = window.request_animation_frame(again.unchecked_ref());
    });
    let _ = JsFuture::from(promise).await;
}

/// Resolves once the page has nothing left to draw for the photo just shown: the preview image
/// (`img.preview`) decoded, then two frames painted. Before an *each alone* request, so that the
/// browser's own decoding and painting of a large photo does not share the cores with the server's
/// model call when both run on one machine (on a 2-core machine it doubled the first variant's time).
pub async fn settle_rendering() {
    let preview = leptos::prelude::document()
        .query_selector("img.preview")
        .ok()
        .flatten()
        .and_then(|e| e.dyn_into::<web_sys::HtmlImageElement>().ok());
    if let Some(img) = preview {
        // A photo that cannot be decoded rejects; there is then nothing to wait for.
        let _ = JsFuture::from(img.decode()).await;
    }
    yield_to_renderer().await;
}

/// A URL the page can show the file at (an object URL; free it with [`revoke_url`]).
pub fn object_url(file: &web_sys::File) -> Option<String> {
    web_sys::Url::create_object_url_with_blob(file).ok()
}

pub fn revoke_url(url: &str) {
    let _ = web_sys::Url::revoke_object_url(url);
}

/// The first file of a file list (input, drop or paste).
pub fn first_file(files: Option<web_sys::FileList>) -> Option<web_sys::File> {
    files.and_then(|f| f.get(0))
}

fn js_message(value: &wasm_bindgen::JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}

/// `rgb` (`width`×`height` RGB bytes, as the page's preprocessing makes them) as a JPEG data URL,
/// drawn by the browser's own canvas encoder (no encoder in the WASM bundle). `None` where the
/// browser has no canvas.
pub fn jpeg_data_url(rgb: &[u8], width: u32, height: u32) -> Option<String> {
    let mut rgba = Vec::with_capacity(rgb.len() / 3 * 4);
    for px in rgb.chunks_exact(3) {
        rgba.extend_from_slice(&[px[0], px[1], px[2], 255]);
    }
    let canvas: web_sys::HtmlCanvasElement = leptos::prelude::document()
        .create_element("canvas")
        .ok()?
        .dyn_into()
        .ok()?;
    canvas.set_width(width);
    canvas.set_height(height);
    let context: web_sys::CanvasRenderingContext2d =
        canvas.get_context("2d").ok()??.dyn_into().ok()?;
    let image = web_sys::ImageData::new_with_u8_clamped_array_and_sh(
        wasm_bindgen::Clamped(&rgba),
        width,
        height,
    )
    .ok()?;
    context.put_image_data(&image, 0.0, 0.0).ok()?;
    canvas.to_data_url_with_type("image/jpeg").ok()
}

/// Scrolls the page to its top (the main view), smoothly where the browser can.
pub fn scroll_to_top() {
    leptos::prelude::window().scroll_to_with_x_and_y(0.0, 0.0);
}

/// The `outerHTML` of the first element matching `selector` (a chart as the page drew it).
pub fn outer_html(selector: &str) -> Option<String> {
    leptos::prelude::document()
        .query_selector(selector)
        .ok()
        .flatten()
        .map(|e| e.outer_html())
}

/// Now, as an ISO 8601 UTC timestamp (`2026-11-30T15:04:05.123Z`).
pub fn now_iso() -> String {
    String::from(js_sys::Date::new_0().to_iso_string())
}

/// The page's address.
pub fn page_url() -> String {
    leptos::prelude::window()
        .location()
        .href()
        .unwrap_or_default()
}

/// Offers `text` as a download called `name` (a Blob behind a temporary link, freed a minute later).
pub fn download_text(name: &str, mime: &str, text: &str) -> Result<(), String> {
    let parts = js_sys::Array::of1(&wasm_bindgen::JsValue::from_str(text));
    let blob = web_sys::Blob::new_with_str_sequence(&parts)
        .map_err(|e| format!("could not make the file: {}", js_message(&e)))?;
    // A typed copy, so that the browser knows what it saves.
    let blob = blob
        .slice_with_f64_and_f64_and_content_type(0.0, blob.size(), mime)
        .unwrap_or(blob);
    let url = web_sys::Url::create_object_url_with_blob(&blob)
        .map_err(|e| format!("could not make the file: {}", js_message(&e)))?;
    let link: web_sys::HtmlAnchorElement = leptos::prelude::document()
        .create_element("a")
        .map_err(|e| js_message(&e))?
        .dyn_into()
        .map_err(|_| "not a link".to_string())?;
    link.set_href(&url);
    link.set_download(name);
    link.click();
    leptos::prelude::set_timeout(move || revoke_url(&url), std::time::Duration::from_secs(60));
    Ok(())
}
