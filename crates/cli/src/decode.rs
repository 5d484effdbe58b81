//! Image files → pixels for `predict`, `eval` and `train`: the same checks as the browser
//! before decoding ([`resnet_core::image_file`]), then the `image` crate (PNG, JPEG, GIF, BMP,
//! WebP; the format is read from the content). Errors say why, and name the file.

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use resnet_core::Image;

/// A decoded image file: 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) 8-bit channels.
#[derive(Clone, Debug)]
pub struct DecodedImage {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl DecodedImage {
    pub fn as_image(&self) -> Image<'_> {
        Image { width: self.width, height: self.height, channels: self.channels, data: &self.data }
    }
}

/// Decodes an image file (PNG, JPEG, GIF, BMP, WebP; the format is read from the content).
/// Errors say which file and why, without the path (callers add it).
pub fn decode_bytes(bytes: &[u8]) -> Result<DecodedImage> {
    use image::DynamicImage;
    // The browser makes the same checks (size from the header, completeness) before decoding.
    resnet_core::image_file::check(bytes)?;
    let format = image::guess_format(bytes)
        .map_err(|_| anyhow!("not an image (the content is none of PNG, JPEG, GIF, BMP, WebP)"))?;
    let img = image::load_from_memory_with_format(bytes, format).map_err(|e| match e {
        image::ImageError::Decoding(d) => anyhow!("cannot decode {format:?}: {d} (truncated or corrupt?)"),
        e => anyhow!("cannot decode {format:?}: {e}"),
    })?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let (channels, data) = match img {
        DynamicImage::ImageLuma8(b) => (1, b.into_raw()),
        DynamicImage::ImageLumaA8(b) => (2, b.into_raw()),
        DynamicImage::ImageRgb8(b) => (3, b.into_raw()),
        DynamicImage::ImageRgba8(b) => (4, b.into_raw()),
        other if !other.color().has_color() => (1, other.to_luma8().into_raw()),
        other if other.color().has_alpha() => (4, other.to_rgba8().into_raw()),
        other => (3, other.to_rgb8().into_raw()),
    };
    if width == 0 || height == 0 {
        bail!("empty image ({width}×{height})");
    }
    Ok(DecodedImage { width, height, channels, data })
}

/// Reads and decodes an image file; errors name the file.
pub fn decode_file(path: &Path) -> Result<DecodedImage> {
    let bytes = std::fs::read(path).map_err(|e| anyhow!("{}: {}", path.display(), io_message(&e)))?;
    decode_bytes(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// "no such file" rather than "No such file or directory (os error 2)".
pub fn io_message(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "is a directory, not a file".into(),
        _ => {
            let s = e.to_string();
            s.split(" (os error").next().unwrap_or(&s).to_string()
        }
    }
}
