//! What the page downloads besides itself: the pretrained weights in `www/weights/`, read chunk
//! by chunk so the header can show the progress of a 3 MB download on a slow line. (The samples
//! are plain `<img>` elements: the browser fetches and caches them.)

use std::sync::OnceLock;

use resnet_core::manifest::{Entry, Manifest};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use yew::Callback;

/// The weights the page offers (`www/weights/manifest.json`, embedded: the model picker needs it
/// before anything is downloaded); every other model gets random weights.
pub fn manifest() -> &'static Manifest {
    static MANIFEST: OnceLock<Manifest> = OnceLock::new();
    MANIFEST.get_or_init(|| {
        // A broken manifest is a build the tests reject (core's tests/manifest.rs); the page
        // then offers random weights only rather than not starting.
        Manifest::parse(include_str!("../../../www/weights/manifest.json"))
            .unwrap_or(Manifest { models: vec![] })
    })
}

/// The file `arch` loads by default, where it has one.
pub fn default_weights(arch: &str) -> Option<&'static Entry> {
    manifest().default_for(arch)
}

/// GET `url` whole (at most `limit` bytes).
pub async fn fetch_bytes(url: &str, limit: f64) -> Result<Vec<u8>, String> {
    let resp = get(url, None).await?;
    let mut bytes = Vec::new();
    read_chunks(&resp, url, limit, |chunk| bytes.extend(chunk.to_vec())).await?;
    Ok(bytes)
}

/// Starts downloading `url`: `progress` gets (bytes done, total when the server says), `done`
/// the body or a message for the error banner.
pub fn fetch_weights(
    url: &'static str,
    progress: Callback<(f64, Option<f64>)>,
    done: Callback<Result<Vec<u8>, String>>,
) {
    wasm_bindgen_futures::spawn_local(async move {
        let result = fetch_with_progress(url, |d, t| progress.emit((d, t))).await;
        done.emit(result);
    });
}

/// GET `url` reading the body chunk by chunk, reporting bytes done (and the total when known).
async fn fetch_with_progress(url: &str, progress: impl Fn(f64, Option<f64>)) -> Result<Vec<u8>, String> {
    let resp = get(url, None).await?;
    let total = content_length(&resp);
    let mut bytes = Vec::with_capacity(total.unwrap_or(0.0) as usize);
    read_chunks(&resp, url, f64::INFINITY, |chunk| {
        bytes.extend(chunk.to_vec());
        progress(bytes.len() as f64, total);
    })
    .await?;
    Ok(bytes)
}

/// GET `url` (abortable through `signal`); an HTTP error status is an error.
pub async fn get(url: &str, signal: Option<&web_sys::AbortSignal>) -> Result<web_sys::Response, String> {
    let init = web_sys::RequestInit::new();
    init.set_signal(signal);
    let resp: web_sys::Response = JsFuture::from(gloo::utils::window().fetch_with_str_and_init(url, &init))
        .await
        .map_err(|e| format!("cannot download {url}: {}", js_message(&e)))?
        .unchecked_into();
    if !resp.ok() {
        return Err(format!("cannot download {url}: HTTP {}", resp.status()));
    }
    Ok(resp)
}

/// The body's size, where the server says it.
pub fn content_length(resp: &web_sys::Response) -> Option<f64> {
    resp.headers().get("content-length").ok().flatten().and_then(|s| s.parse::<f64>().ok())
}

/// Hands each chunk of the body to `each` as it arrives; more than `limit` bytes is an error.
/// Returns the bytes read.
pub async fn read_chunks(
    resp: &web_sys::Response,
    url: &str,
    limit: f64,
    mut each: impl FnMut(&js_sys::Uint8Array),
) -> Result<f64, String> {
    let err = |e: wasm_bindgen::JsValue| format!("cannot download {url}: {}", js_message(&e));
    let body = resp.body().ok_or_else(|| format!("cannot download {url}: empty body"))?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut read = 0.0;
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(err)?;
        let done = js_sys::Reflect::get(&chunk, &"done".into()).map_err(err)?.as_bool().unwrap_or(true);
        if done {
            return Ok(read);
        }
        let value: js_sys::Uint8Array =
            js_sys::Reflect::get(&chunk, &"value".into()).map_err(err)?.unchecked_into();
        read += value.length() as f64;
        if read > limit {
            let _ = reader.cancel();
            return Err(format!("cannot download {url}: larger than the {:.0} MB expected", limit / 1e6));
        }
        each(&value);
    }
}

/// A thrown JS value in words: an `Error`'s message (an abort says "aborted"), else its debug form.
pub fn js_message(e: &wasm_bindgen::JsValue) -> String {
    match e.dyn_ref::<js_sys::Error>() {
        Some(err) => String::from(err.message()),
        None => format!("{e:?}"),
    }
}
