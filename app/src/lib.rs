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

use leptos::either::Either;
use leptos::prelude::*;
use leptos_meta::{provide_meta_context, Meta, MetaTags, Stylesheet, Title};

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

/// The path and query string of the page being rendered: the request's on the server, the
/// location's in the browser (the same URL, so hydration matches the server's HTML).
pub(crate) fn page_url() -> (String, String) {
    #[cfg(feature = "ssr")]
    {
        use_context::<axum::http::request::Parts>()
            .map(|parts| {
                let uri = &parts.uri;
                (
                    uri.path().to_string(),
                    uri.query().unwrap_or("").to_string(),
                )
            })
            .unwrap_or_else(|| ("/".to_string(), String::new()))
    }
    #[cfg(not(feature = "ssr"))]
    {
        let location = window().location();
        let search = location.search().unwrap_or_default();
        (
            location.pathname().unwrap_or_else(|_| "/".to_string()),
            search.trim_start_matches('?').to_string(),
        )
    }
}

/// The root component: the one page at `/`, "Page not found." elsewhere.
///
/// No `leptos_router`: with one page, its router only wrapped the page in an `AnyView`, and every
/// `AnyView` compiles an async hydration of its whole subtree next to the synchronous one the page
/// uses — about 0.3 MB of the WASM bundle (issue 14). The page's components return their static
/// view types (`Either…` where a view has branches) for the same reason.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    let at_root = page_url().0 == "/";
    view! {
        <Stylesheet id="inferscope" href="/pkg/inferscope.css" />
        <Title text="inferscope: ResNet50 variants, live" />
        <Meta
            name="description"
            content="What pruning, 2:4 sparsity and INT8 quantization do to a ResNet50 classifier, live."
        />
        {if at_root {
            Either::Left(view! { <page::ComparePage /> })
        } else {
            Either::Right(view! { <p class="not-found">"Page not found."</p> })
        }}
    }
}
