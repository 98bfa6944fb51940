//! The browser half of inferscope: `wasm-bindgen` turns this cdylib into `pkg/inferscope.{js,wasm}`,
//! whose `hydrate()` the server-rendered page calls to make itself interactive.
//!
//! It also installs `window.__inferscope.preprocess(bytes: Uint8Array) -> Float32Array` (the float
//! tensor) and `window.__inferscope.pixels(bytes: Uint8Array) -> Uint8Array` (the 224×224 RGB bytes the
//! page uploads), the exact preprocessing the page runs, so that tests can compare it with the server's
//! native build and the server's normalization of the bytes with the browser's floats.

use wasm_bindgen::prelude::*;

/// Entry point called by the page's hydration script.
#[wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    if let Err(e) = install_test_hook() {
        leptos::logging::warn!("window.__inferscope not installed: {e:?}");
    }
    leptos::mount::hydrate_body(app::App);
}

fn install_test_hook() -> Result<(), JsValue> {
    let preprocess =
        Closure::<dyn Fn(js_sys::Uint8Array) -> Result<js_sys::Float32Array, JsValue>>::new(
            |bytes: js_sys::Uint8Array| {
                engine::preprocess::preprocess(&bytes.to_vec())
                    .map(|p| js_sys::Float32Array::from(p.data.as_slice()))
                    .map_err(|e| js_sys::Error::new(&e.to_string()).into())
            },
        );
    let pixels = Closure::<dyn Fn(js_sys::Uint8Array) -> Result<js_sys::Uint8Array, JsValue>>::new(
        |bytes: js_sys::Uint8Array| {
            engine::preprocess::preprocess_pixels(&bytes.to_vec())
                .map(|p| js_sys::Uint8Array::from(p.data.as_slice()))
                .map_err(|e| js_sys::Error::new(&e.to_string()).into())
        },
    );
    let hook = js_sys::Object::new();
    js_sys::Reflect::set(&hook, &"preprocess".into(), &preprocess.into_js_value())?;
    js_sys::Reflect::set(&hook, &"pixels".into(), &pixels.into_js_value())?;
    js_sys::Reflect::set(&leptos::prelude::window(), &"__inferscope".into(), &hook)?;
    Ok(())
}
