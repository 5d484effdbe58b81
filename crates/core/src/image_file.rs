//! Checks on an image file's bytes before it is decoded, the same in the CLI and the browser:
//! the size its header declares (a 20000×20000 PNG is refused before gigabytes are allocated)
//! and whether the file is complete (decoders forgive a file cut short and show a partly grey
//! picture; we say it is truncated).

/// The largest image decoded: 50 megapixels, 16384 pixels per side.
pub const MAX_PIXELS: u64 = 50_000_000;
pub const MAX_SIDE: u32 = 16_384;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageFileError {
    #[error("empty file (0 bytes)")]
    Empty,
    #[error("the image is empty ({0}×{1})")]
    NoPixels(u32, u32),
    #[error(
        "the image is too large to decode: {0}×{1} pixels ({mp:.0} megapixels; the limit is {max} megapixels, {MAX_SIDE} per side)",
        mp = *.0 as f64 * *.1 as f64 / 1e6,
        max = MAX_PIXELS / 1_000_000
    )]
    TooLarge(u32, u32),
    #[error("the JPEG file is truncated: its data ends before the end-of-image marker")]
    TruncatedJpeg,
    #[error("the PNG file is truncated: it has no IEND chunk")]
    TruncatedPng,
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

/// Whether `w`×`h` may be decoded.
pub fn check_size(w: u32, h: u32) -> Result<(), ImageFileError> {
    if w == 0 || h == 0 {
        return Err(ImageFileError::NoPixels(w, h));
    }
    if w > MAX_SIDE || h > MAX_SIDE || w as u64 * h as u64 > MAX_PIXELS {
        return Err(ImageFileError::TooLarge(w, h));
    }
    Ok(())
}

/// Whether a JPEG's last scan is followed by its end-of-image marker, and a PNG has its IEND
/// chunk. In entropy-coded data `FF` is always followed by `00` or a restart marker, so
/// `FF D9` after the last start-of-scan (`FF DA`) is the real end; bytes after it (cameras
/// append some) are allowed.
pub fn check_complete(b: &[u8]) -> Result<(), ImageFileError> {
    if b.starts_with(&[0xff, 0xd8]) {
        let last_scan = b.windows(2).rposition(|w| w == [0xff, 0xda]);
        if !last_scan.is_some_and(|i| b[i..].windows(2).any(|w| w == [0xff, 0xd9])) {
            return Err(ImageFileError::TruncatedJpeg);
        }
    }
    if b.starts_with(b"\x89PNG\r\n\x1a\n") && !png_has_iend(b) {
        return Err(ImageFileError::TruncatedPng);
    }
    Ok(())
}

/// Walks the PNG's chunks (length, type, data, CRC) to an IEND that lies inside the file.
fn png_has_iend(b: &[u8]) -> bool {
    let mut i = 8;
    while let Some(len) = b.get(i..i + 4).map(|l| u32::from_be_bytes(l.try_into().expect("4 bytes")) as usize)
    {
        let Some(kind) = b.get(i + 4..i + 8) else { return false };
        if kind == b"IEND" {
            return true;
        }
        i = match i.checked_add(12 + len) {
            Some(next) if next <= b.len() => next,
            _ => return false,
        };
    }
    false
}

/// Every check that can be made on a file's bytes before decoding it.
pub fn check(bytes: &[u8]) -> Result<(), ImageFileError> {
    if bytes.is_empty() {
        return Err(ImageFileError::Empty);
    }
    if let Some((w, h)) = sniff_size(bytes) {
        check_size(w, h)?;
    }
    check_complete(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PNG: signature, IHDR for `w`×`h`, one IDAT and IEND (CRCs are not checked here).
    fn png(w: u32, h: u32) -> Vec<u8> {
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            c.extend_from_slice(kind);
            c.extend_from_slice(data);
            c.extend_from_slice(&[0; 4]);
            c
        };
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
        b.extend(chunk(b"IHDR", &ihdr));
        b.extend(chunk(b"IDAT", &[0x78, 0x9c, 0, 0]));
        b.extend(chunk(b"IEND", &[]));
        b
    }

    fn jpeg() -> Vec<u8> {
        // SOI, SOF0 (8 bits, 7 rows × 9 columns), SOS, scan data, EOI.
        let mut b = vec![0xff, 0xd8, 0xff, 0xc0, 0, 11, 8, 0, 7, 0, 9, 1, 1, 0x11, 0];
        b.extend_from_slice(&[0xff, 0xda, 0, 8, 1, 1, 0, 0, 0x3f, 0, 0x12, 0x34, 0xff, 0x00, 0x56]);
        b.extend_from_slice(&[0xff, 0xd9]);
        b
    }

    #[test]
    fn sizes_come_from_headers() {
        assert_eq!(sniff_size(&png(640, 480)), Some((640, 480)));
        assert_eq!(sniff_size(&jpeg()), Some((9, 7)));
        assert_eq!(sniff_size(b"GIF89a\x10\x00\x20\x00"), Some((16, 32)));
        assert_eq!(sniff_size(b"not an image"), None);
        assert_eq!(check(&png(20_000, 20_000)), Err(ImageFileError::TooLarge(20_000, 20_000)));
        assert!(check(&png(20_000, 20_000)).unwrap_err().to_string().contains("too large"));
        assert_eq!(check(&png(0, 5)), Err(ImageFileError::NoPixels(0, 5)));
        assert_eq!(check(&[]), Err(ImageFileError::Empty));
        assert_eq!(check(&png(8192, 2)), Ok(()));
    }

    #[test]
    fn truncated_files_are_refused_and_trailing_bytes_are_not() {
        let j = jpeg();
        assert_eq!(check(&j), Ok(()));
        assert_eq!(check(&j[..j.len() - 2]), Err(ImageFileError::TruncatedJpeg));
        assert_eq!(check(&j[..j.len() / 2]), Err(ImageFileError::TruncatedJpeg));
        // Bytes after the end-of-image marker (a camera's trailer, or zero padding) are fine.
        assert_eq!(check(&[j.clone(), b"trailer".to_vec()].concat()), Ok(()));
        assert_eq!(check(&[j, vec![0; 16]].concat()), Ok(()));
        let p = png(4, 4);
        assert_eq!(check(&p), Ok(()));
        assert_eq!(check(&p[..p.len() - 12]), Err(ImageFileError::TruncatedPng));
        assert_eq!(check(&p[..40]), Err(ImageFileError::TruncatedPng));
        // "IEND" inside another chunk's data is not the end.
        let mut fake = p[..p.len() - 12].to_vec();
        fake.extend_from_slice(b"IEND");
        assert_eq!(check(&fake), Err(ImageFileError::TruncatedPng));
    }
}
