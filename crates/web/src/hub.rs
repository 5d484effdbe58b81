//! Pretrained ImageNet weights from the Hugging Face hub, on the user's request only: the file
//! is downloaded chunk by chunk (progress, cancel), kept in the browser's Cache Storage once it
//! has loaded so later visits load it offline, and handed to the worker as a `File` like a dropped one (its bytes
//! never enter the page's wasm memory). The hub's address is `?hub=URL` in the page's address
//! (a mirror, or the tests' local imitation), else huggingface.co.

use resnet_core::hub::{parse_hub, HubWeights, DEFAULT_HUB};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, Cache, File};

use crate::fetch::{content_length, get, js_message, read_chunks};

/// The Cache Storage bucket of downloaded weights, keyed by their URL.
const CACHE_NAME: &str = "resnet-explorer-hub-weights";

/// The hub this page fetches from: `?hub=` in its address, else the Hugging Face hub.
pub fn hub_base() -> Result<String, String> {
    let search = gloo::utils::window().location().search().unwrap_or_default();
    let given = web_sys::UrlSearchParams::new_with_str(&search).ok().and_then(|p| p.get("hub"));
    parse_hub(given.as_deref().unwrap_or(DEFAULT_HUB))
}

/// The host name shown on the button: "huggingface.co".
pub fn host(base: &str) -> &str {
    let rest = base.split_once("://").map_or(base, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

async fn open_cache() -> Result<Cache, String> {
    let caches =
        gloo::utils::window().caches().map_err(|e| format!("no Cache Storage here: {}", js_message(&e)))?;
    let cache = JsFuture::from(caches.open(CACHE_NAME)).await.map_err(|e| js_message(&e))?;
    Ok(cache.unchecked_into())
}

/// The file of `w` from this browser's cache, without touching the network.
pub async fn cached(w: &HubWeights, base: &str) -> Option<File> {
    let cache = open_cache().await.ok()?;
    let hit = JsFuture::from(cache.match_with_str(&w.url(base))).await.ok()?;
    let resp: web_sys::Response = hit.dyn_into().ok()?;
    let blob: Blob = JsFuture::from(resp.blob().ok()?).await.ok()?.unchecked_into();
    as_file(&blob, w).ok()
}

/// Whether the file of `w` is in this browser's cache.
pub async fn is_cached(w: &HubWeights, base: &str) -> bool {
    match open_cache().await {
        Ok(cache) => JsFuture::from(cache.match_with_str(&w.url(base)))
            .await
            .is_ok_and(|hit| hit.is_instance_of::<web_sys::Response>()),
        Err(_) => false,
    }
}

/// Downloads the file of `w` (abortable through `signal`), reporting (bytes done, total). A file
/// far larger than the architecture's weights is refused. The caller [`keep`]s it once the
/// worker has loaded it: a bad file is never cached.
pub async fn download(
    w: &HubWeights,
    base: &str,
    signal: &web_sys::AbortSignal,
    progress: impl Fn(f64, Option<f64>),
) -> Result<File, String> {
    let url = w.url(base);
    let limit = (2 * w.approx_bytes() + (16 << 20)) as f64;
    let resp = get(&url, Some(signal)).await?;
    let total = content_length(&resp);
    if total.is_some_and(|t| t > limit) {
        return Err(format!(
            "cannot download {url}: the hub says it is {:.0} MB, far more than {}'s weights",
            total.unwrap_or(0.0) / 1e6,
            w.arch
        ));
    }
    // The chunks stay JS buffers and become one Blob: 100-250 MB never pass through wasm.
    let chunks = js_sys::Array::new();
    let mut done = 0.0;
    read_chunks(&resp, &url, limit, |chunk| {
        chunks.push(chunk);
        done += chunk.length() as f64;
        progress(done, total);
    })
    .await?;
    if total.is_some_and(|t| t != done) {
        return Err(format!(
            "cannot download {url}: the connection ended after {:.0} of {:.0} MB",
            done / 1e6,
            total.unwrap_or(0.0) / 1e6
        ));
    }
    let blob = Blob::new_with_u8_array_sequence(&chunks).map_err(|e| js_message(&e))?;
    as_file(&blob, w)
}

/// Keeps the file of `w` in this browser's cache for later visits. Failing to (private
/// browsing, a full disk) costs only the next visit's download.
pub async fn keep(w: &HubWeights, base: &str, file: &Blob) {
    if let (Ok(cache), Ok(resp)) = (open_cache().await, web_sys::Response::new_with_opt_blob(Some(file))) {
        let _ = JsFuture::from(cache.put_with_str(&w.url(base), &resp)).await;
    }
}

fn as_file(blob: &Blob, w: &HubWeights) -> Result<File, String> {
    let parts = js_sys::Array::of1(&JsValue::from(blob.clone()));
    File::new_with_blob_sequence(&parts, &w.file_name()).map_err(|e| js_message(&e))
}
