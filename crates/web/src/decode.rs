//! Image files → RGBA pixels, decoded by the browser (createImageBitmap + canvas), so every
//! format the browser knows works. Sizes are checked from the file header before anything is
//! decoded, so a 20000×20000 PNG is refused without allocating gigabytes.

use std::rc::Rc;

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, CanvasRenderingContext2d, HtmlCanvasElement, HtmlImageElement, ImageBitmap};

/// Largest image we decode: 50 megapixels, 16384 per side.
pub const MAX_PIXELS: u64 = 50_000_000;
pub const MAX_SIDE: u32 = 16_384;
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

/// Width and height from the header of PNG, GIF, BMP, WebP and JPEG files.
pub fn sniff_size(b: &[u8]) -> Option<(u32, u32)> {
    let be32 = |i: usize| Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?));
    let le16 = |i: usize| Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?) as u32);
    let le32 = |i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some((be32(16)?, be32(20)?));
    }
    if b.starts_with(b"GIF8") {
        return Some((le16(6)?, le16(8)?));
    }
    if b.starts_with(b"BM") {
        return Some((le32(18)?, (le32(22)? as i32).unsigned_abs()));
    }
    if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        return match b.get(12..16)? {
            b"VP8X" => Some((1 + (le32(24)? & 0xff_ffff), 1 + (le32(27)? & 0xff_ffff))),
            b"VP8L" => {
                let v = le32(21)?;
                Some((1 + (v & 0x3fff), 1 + ((v >> 14) & 0x3fff)))
            }
            _ => Some((le16(26)? & 0x3fff, le16(28)? & 0x3fff)),
        };
    }
    if b.starts_with(&[0xff, 0xd8]) {
        let mut i = 2;
        while i + 9 < b.len() {
            if b[i] != 0xff {
                return None;
            }
            let marker = b[i + 1];
            let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
            // SOF0..SOF15 except DHT (c4), JPG (c8), DAC (cc).
            if (0xc0..=0xcf).contains(&marker) && ![0xc4, 0xc8, 0xcc].contains(&marker) {
                let h = u16::from_be_bytes([b[i + 5], b[i + 6]]) as u32;
                let w = u16::from_be_bytes([b[i + 7], b[i + 8]]) as u32;
                return Some((w, h));
            }
            i += 2 + len;
        }
    }
    None
}

/// Structural checks the browser would forgive: a JPEG or PNG cut short decodes to a partly
/// grey picture in Chromium; we say the file is truncated instead.
pub fn check_complete(b: &[u8]) -> Result<(), String> {
    if b.starts_with(&[0xff, 0xd8]) {
        let end = b.iter().rposition(|&x| x != 0).unwrap_or(0);
        if end < 1 || b[end - 1..=end] != [0xff, 0xd9] {
            return Err("the JPEG file is truncated (no end-of-image marker)".into());
        }
    }
    if b.starts_with(b"\x89PNG\r\n\x1a\n") && !b.windows(4).rev().take(64).any(|w| w == b"IEND") {
        return Err("the PNG file is truncated (no IEND chunk)".into());
    }
    Ok(())
}

fn check_size(w: u32, h: u32) -> Result<(), String> {
    if w == 0 || h == 0 {
        return Err(format!("the image is empty ({w}×{h})"));
    }
    if w > MAX_SIDE || h > MAX_SIDE || w as u64 * h as u64 > MAX_PIXELS {
        return Err(format!(
            "the image is too large to decode: {w}×{h} pixels ({:.0} megapixels; the limit is {} megapixels, {MAX_SIDE} per side)",
            w as f64 * h as f64 / 1e6,
            MAX_PIXELS / 1_000_000
        ));
    }
    Ok(())
}

/// Decodes a file (dropped, picked or pasted).
pub async fn decode_blob(blob: &Blob, name: &str) -> Result<Decoded, String> {
    let size = blob.size();
    if size == 0.0 {
        return Err(format!("'{name}' is empty (0 bytes)"));
    }
    let buf = JsFuture::from(blob.array_buffer()).await.map_err(js_err)?;
    let bytes = js_sys::Uint8Array::new(&buf).to_vec();
    if let Some((w, h)) = sniff_size(&bytes) {
        check_size(w, h).map_err(|e| format!("'{name}': {e}"))?;
    }
    check_complete(&bytes).map_err(|e| format!("'{name}': {e}"))?;
    let window = gloo::utils::window();
    let promise = window.create_image_bitmap_with_blob(blob).map_err(js_err)?;
    let bitmap: ImageBitmap = JsFuture::from(promise)
        .await
        .map_err(|_| format!("'{name}' is not an image this browser can decode (or the file is corrupt)"))?
        .unchecked_into();
    let out = draw(&bitmap, bitmap.width(), bitmap.height(), name);
    bitmap.close();
    out
}

/// Decodes a sample `<img>` already on the page (no request).
pub async fn decode_img(img: &HtmlImageElement, name: &str) -> Result<Decoded, String> {
    let window = gloo::utils::window();
    let promise = window.create_image_bitmap_with_html_image_element(img).map_err(js_err)?;
    let bitmap: ImageBitmap = JsFuture::from(promise)
        .await
        .map_err(|e| format!("cannot decode {name}: {}", js_err(e)))?
        .unchecked_into();
    let out = draw(&bitmap, bitmap.width(), bitmap.height(), name);
    bitmap.close();
    out
}

fn draw(bitmap: &ImageBitmap, w: u32, h: u32, name: &str) -> Result<Decoded, String> {
    check_size(w, h).map_err(|e| format!("'{name}': {e}"))?;
    let scale = (MAX_KEEP as f64 / w.max(h) as f64).min(1.0);
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
