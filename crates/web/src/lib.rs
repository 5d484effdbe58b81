//! The explorer web app. What runs on both sides of the worker boundary and can be tested
//! natively (the message protocol, the inference engine, the pixel maths of every picture) is
//! compiled on every target; the Yew page and the gloo worker only for wasm32.

pub mod engine;
pub mod grid;
pub mod link;
pub mod protocol;
pub mod viz;

#[cfg(target_arch = "wasm32")]
mod app;
#[cfg(target_arch = "wasm32")]
mod camera;
#[cfg(target_arch = "wasm32")]
mod components;
#[cfg(target_arch = "wasm32")]
mod decode;
#[cfg(target_arch = "wasm32")]
mod events;
#[cfg(target_arch = "wasm32")]
mod fetch;
#[cfg(target_arch = "wasm32")]
mod hub;
#[cfg(target_arch = "wasm32")]
pub mod worker;

/// Starts the page (called by the `app` binary).
#[cfg(target_arch = "wasm32")]
pub fn start_app() {
    events::install_panic_hook();
    if let Some(root) = gloo::utils::document().get_element_by_id("app") {
        yew::Renderer::<app::App>::with_root(root).render();
    }
}

/// The entry points of the worker builds a loader starts (this library as a cdylib with the
/// `loader` feature, scripts/build-wasm-variant: threaded, relaxed SIMD or both). Their loader,
/// www/worker-variant.js, starts a threaded build's pool first, then the worker, so that no
/// kernel runs before the pool exists.
#[cfg(all(target_arch = "wasm32", feature = "loader"))]
pub mod loader {
    use wasm_bindgen::prelude::*;

    #[cfg(feature = "threads")]
    pub use wasm_bindgen_rayon::init_thread_pool;

    #[wasm_bindgen(js_name = startWorker)]
    pub fn start_worker() {
        crate::worker::register();
    }
}
