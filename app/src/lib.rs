//! inferscope's Leptos app: the page that compares ResNet50 variants live, and its server functions.
//!
//! The same crate compiles twice: with feature `ssr` into the server (server-side rendering, the bodies of
//! the `#[server]` functions, the loaded models in [`ssr::AppState`]) and with feature `hydrate` into the
//! browser's WASM bundle (built by `inferscope-frontend`), which hydrates the server-rendered HTML.
//!
//! ```ignore
//! // server (see server/src/serve.rs)
//! let state = app::ssr::AppState::load(config);
//! let routes = leptos_axum::generate_route_list(app::App);
//! router.leptos_routes_with_context(&options, routes, move || provide_context(state.clone()),
//!     move || app::shell(options.clone()));
//! // browser (see frontend/src/lib.rs)
//! leptos::mount::hydrate_body(app::App);
//! ```

// The page's view types nest deeply (leptos builds one static type per view tree).
#![recursion_limit = "256"]

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, Meta, MetaTags, Stylesheet, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::StaticSegment;

mod browser;
mod burst;
pub mod catalog;
pub mod classify;
mod components;
pub mod cost;
pub mod drift;
pub mod error;
mod explain;
pub mod export;
pub mod facts;
pub mod labelled;
mod page;
mod run;
pub mod stats;

#[cfg(feature = "ssr")]
pub mod ssr;

pub use error::AppError;

/// The HTML document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
                // Reloads the page when `cargo leptos watch` rebuilt it (only with LEPTOS_WATCH set).
                <AutoReload options=options.clone() />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The root component.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="inferscope" href="/pkg/inferscope.css" />
        <Title text="inferscope: ResNet50 variants, live" />
        <Meta
            name="description"
            content="What pruning, 2:4 sparsity and INT8 quantization do to a ResNet50 classifier, live."
        />
        <Router>
            <Routes fallback=|| view! { <p class="not-found">"Page not found."</p> }>
                <Route path=StaticSegment("") view=page::ComparePage />
            </Routes>
        </Router>
    }
}
