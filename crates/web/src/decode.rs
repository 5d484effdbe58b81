//! Image files → RGBA pixels, decoded by the browser (createImageBitmap + canvas), so every
//! format the browser knows works. The file is checked first ([`resnet_core::image_file`]:
//! the size its header declares, completeness), so a 20000×20000 PNG is refused without
//! allocating gigabytes.

use std::rc::Rc;

use resnet_core::image_file;

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Blob, CanvasRenderingContext2d, HtmlCanvasElement, HtmlImageElement, HtmlVideoElement, ImageBitmap,
};

/// Images larger than this (longest side) are downscaled by the browser before the network's
/// own resize: keeps the worker message small; the net sees a 32 or 224 crop anyway.
const MAX_KEEP: u32 = 2048;

/// A decoded image, kept across model switches.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub rgba: Rc<Vec<u8>>,
}

fn js_err(e: JsValue) -> String {
    e.as_string()
        .or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| format!("{e:?}"))
}

fn check_size(w: u32, h: u32) -> Result<(), String> {
    image_file::check_size(w, h).map_err(|e| e.to_string())
}

/// Decodes a file (dropped, picked or pasted).
pub async fn decode_blob(blob: &Blob, name: &str) -> Result<Decoded, String> {
    if blob.size() == 0.0 {
        return Err(format!("'{name}' is empty (0 bytes)"));
    }
    let buf = JsFuture::from(blob.array_buffer()).await.map_err(js_err)?;
    let bytes = js_sys::Uint8Array::new(&buf).to_vec();
    // The CLI makes the same checks before decoding.
    image_file::check(&bytes).map_err(|e| format!("'{name}': {e}"))?;
    let window = gloo::utils::window();
    let promise = window.create_image_bitmap_with_blob(blob).map_err(js_err)?;
    let bitmap: ImageBitmap = JsFuture::from(promise)
        .await
        .map_err(|_| format!("'{name}' is not an image this browser can decode (or the file is corrupt)"))?
        .unchecked_into();
    let out = draw(&bitmap, bitmap.width(), bitmap.height(), name, MAX_KEEP);
    bitmap.close();
    out
}

/// Decodes a sample `<img>` already on the page (no request).
pub async fn decode_img(img: &HtmlImageElement, name: &str) -> Result<Decoded, String> {
    let promise = gloo::utils::window().create_image_bitmap_with_html_image_element(img).map_err(js_err)?;
    from_bitmap(promise, name, MAX_KEEP, &format!("cannot decode {name}")).await
}

/// The camera's current frame, at most `max_side` pixels on its longest side (the net sees a
/// 32 or 224 crop: a smaller frame is a faster message and resize).
pub async fn decode_video(video: &HtmlVideoElement, name: &str, max_side: u32) -> Result<Decoded, String> {
    let (w, h) = (video.video_width(), video.video_height());
    if w == 0 || h == 0 {
        return Err("the camera sends no picture yet".into());
    }
    let promise = gloo::utils::window().create_image_bitmap_with_html_video_element(video).map_err(js_err)?;
    from_bitmap(promise, name, max_side, "cannot read the camera's frame").await
}

/// The pixels of the bitmap `promise` gives (`what` failed: the error's start).
async fn from_bitmap(
    promise: js_sys::Promise,
    name: &str,
    max_side: u32,
    what: &str,
) -> Result<Decoded, String> {
    let bitmap: ImageBitmap =
        JsFuture::from(promise).await.map_err(|e| format!("{what}: {}", js_err(e)))?.unchecked_into();
    let out = draw(&bitmap, bitmap.width(), bitmap.height(), name, max_side);
    bitmap.close();
    out
}

fn draw(bitmap: &ImageBitmap, w: u32, h: u32, name: &str, max_side: u32) -> Result<Decoded, String> {
    check_size(w, h).map_err(|e| format!("'{name}': {e}"))?;
    let scale = (max_side as f64 / w.max(h) as f64).min(1.0);
    let (cw, ch) = (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1));
    let canvas: HtmlCanvasElement =
        gloo::utils::document().create_element("canvas").map_err(js_err)?.unchecked_into();
    canvas.set_width(cw);
    canvas.set_height(ch);
    let opts = js_sys::Object::new();
    js_sys::Reflect::set(&opts, &"willReadFrequently".into(), &true.into()).map_err(js_err)?;
    let ctx: CanvasRenderingContext2d = canvas
        .get_context_with_context_options("2d", &opts)
        .map_err(js_err)?
        .ok_or("no 2D canvas")?
        .unchecked_into();
    ctx.draw_image_with_image_bitmap_and_dw_and_dh(bitmap, 0.0, 0.0, cw as f64, ch as f64).map_err(js_err)?;
    let data = ctx.get_image_data(0.0, 0.0, cw as f64, ch as f64).map_err(js_err)?;
    Ok(Decoded { name: name.to_string(), width: cw, height: ch, rgba: Rc::new(data.data().0) })
}
