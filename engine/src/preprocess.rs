//! How a photo becomes the network's input tensor — the same code in the browser (wasm32) and on the server.
//!
//! The recipe is torchvision's ImageNet evaluation transform on a PIL image:
//! `Resize(256)` (shorter side to 256, antialiased bilinear), `CenterCrop(224)`, `ToTensor`,
//! `Normalize(MEAN, STD)`, giving NCHW float32 `[1, 3, 224, 224]` in RGB order.
//!
//! ```no_run
//! let input = engine::preprocess::preprocess(&std::fs::read("cat.jpg")?)?;
//! assert_eq!(input.data.len(), engine::INPUT_LEN);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Design
//!
//! - Decoding: JPEG with `zune-jpeg` (grayscale, CMYK/YCCK → RGB), PNG and WebP with the `image` crate
//!   (alpha is dropped, as PIL's `convert("RGB")` does). Dimensions are read from the header and checked
//!   against [`MAX_MEGAPIXELS`] before any pixel buffer is allocated.
//! - EXIF orientation is honoured without rotating the decoded image: the center crop is mapped back onto
//!   the stored (unrotated) pixels, only that region is resized (`fast_image_resize`, PIL-compatible
//!   antialiased bilinear, SIMD incl. wasm `simd128`), and the 224×224 result is rotated while it is
//!   normalized. Resizing just the crop region computes the same pixels as PIL's resize-then-crop, because
//!   each output pixel's filter window depends only on its position in source coordinates.
//! - The preprocessing stops at 8 bits ([`preprocess_pixels`]: the upright 224×224 crop, HWC RGB, the
//!   150,528 bytes the page uploads) and [`normalize`] turns bytes into the float tensor through a
//!   256-entry table per channel, so native and wasm produce bit-identical floats from identical
//!   pixels, and a server normalizing uploaded bytes computes exactly what [`preprocess`] would have.

use std::io::Cursor;

use fast_image_resize::{self as fr, PixelType};
use image::ImageDecoder;
use zune_jpeg::zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};

use crate::{Error, Result, INPUT_LEN, INPUT_SIZE};

/// Per-channel mean (RGB) of torchvision's ImageNet normalization.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// Per-channel standard deviation (RGB) of torchvision's ImageNet normalization.
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Largest image we agree to decode, in megapixels (10⁶ pixels), checked from the header: a 48 MP
/// RGB buffer is 144 MB, already a lot for a browser tab; larger uploads are most likely decompression bombs.
pub const MAX_MEGAPIXELS: u32 = 48;
/// The shorter side after `Resize(256)`.
pub const RESIZE_SHORTER: u32 = 256;

/// A preprocessed image: NCHW float32 `[1, 3, 224, 224]`, RGB, torchvision normalization
/// ([`MEAN`], [`STD`]), values `(pixel / 255 - mean) / std`.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    /// [`INPUT_LEN`] floats, channel-major.
    pub data: Vec<f32>,
    /// Width of the decoded image after EXIF orientation.
    pub width: u32,
    /// Height of the decoded image after EXIF orientation.
    pub height: u32,
}

/// Bytes of one image's resized and cropped pixels: 224 × 224 × 3 (HWC, RGB), as many as the
/// tensor has floats.
pub const PIXELS_LEN: usize = INPUT_SIZE * INPUT_SIZE * 3;

/// A photo resized and center-cropped, before normalization: what the page sends to the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    /// [`PIXELS_LEN`] bytes: 224 rows of 224 RGB pixels, upright (EXIF orientation applied).
    pub data: Vec<u8>,
    /// Width of the decoded image after EXIF orientation.
    pub width: u32,
    /// Height of the decoded image after EXIF orientation.
    pub height: u32,
}

/// Decodes a JPEG, PNG or WebP file and preprocesses it (see the [module docs](self)):
/// [`preprocess_pixels`] then [`normalize`].
///
/// Errors: [`Error::Decode`] for empty, unknown, corrupt or truncated input; [`Error::TooLarge`] when the
/// header announces more than [`MAX_MEGAPIXELS`].
pub fn preprocess(bytes: &[u8]) -> Result<Preprocessed> {
    let pixels = preprocess_pixels(bytes)?;
    Ok(Preprocessed {
        data: normalize(&pixels.data)?,
        width: pixels.width,
        height: pixels.height,
    })
}

/// Decodes a JPEG, PNG or WebP file, resizes and crops it: the 224×224 RGB bytes that [`normalize`]
/// turns into the network's input. Errors as [`preprocess`].
pub fn preprocess_pixels(bytes: &[u8]) -> Result<Pixels> {
    let decoded = decode(bytes)?;
    let channels = decoded.pixel_type.size();
    let (width, height) = decoded
        .orientation
        .displayed_size(decoded.width, decoded.height);
    let data = resize_crop(
        &decoded.pixels,
        decoded.width,
        decoded.height,
        channels,
        decoded.orientation,
    )?;
    Ok(Pixels {
        data,
        width,
        height,
    })
}

/// Preprocesses already decoded, upright RGBA pixels (a canvas `ImageData`, say); alpha is ignored.
///
/// `rgba` holds `width * height * 4` bytes, row-major.
pub fn preprocess_rgba(rgba: &[u8], width: u32, height: u32) -> Result<Preprocessed> {
    check_size(width, height)?;
    let expected = width as usize * height as usize * 4;
    if width == 0 || height == 0 || rgba.len() != expected {
        return Err(Error::Shape(format!(
            "RGBA buffer of {} bytes for a {width}×{height} image (expected {expected})",
            rgba.len()
        )));
    }
    let pixels = resize_crop(rgba, width, height, 4, Orientation::default())?;
    Ok(Preprocessed {
        data: normalize(&pixels)?,
        width,
        height,
    })
}

/// The network's input for images of 224×224 RGB bytes (HWC, [`PIXELS_LEN`] bytes each, any number
/// of images back to back): NCHW floats `(v / 255 - MEAN) / STD`, the same values, bit for bit, as
/// [`preprocess`] computes for the photo the bytes came from.
///
/// Errors: [`Error::Shape`] when the length is not a positive multiple of [`PIXELS_LEN`].
pub fn normalize(pixels: &[u8]) -> Result<Vec<f32>> {
    if pixels.is_empty() || !pixels.len().is_multiple_of(PIXELS_LEN) {
        return Err(Error::Shape(format!(
            "expected images of 224×224×3 = {PIXELS_LEN} bytes, got {} bytes",
            pixels.len()
        )));
    }
    let mut out = vec![0f32; pixels.len()];
    normalize_into(pixels, &mut out);
    Ok(out)
}

/// [`normalize`] into a buffer of the same length (both whole images, unchecked beyond that).
pub fn normalize_into(pixels: &[u8], out: &mut [f32]) {
    assert_eq!(pixels.len(), out.len(), "one float per byte");
    let table = normalization_table();
    let plane = INPUT_SIZE * INPUT_SIZE;
    for (image, tensor) in pixels
        .chunks_exact(PIXELS_LEN)
        .zip(out.chunks_exact_mut(INPUT_LEN))
    {
        let (r, rest) = tensor.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, p) in image.chunks_exact(3).enumerate() {
            r[i] = table[0][usize::from(p[0])];
            g[i] = table[1][usize::from(p[1])];
            b[i] = table[2][usize::from(p[2])];
        }
    }
}

// ---- decoding ----

/// Decoded pixels as stored in the file (before EXIF orientation).
struct Decoded {
    pixels: Vec<u8>,
    width: u32,
    height: u32,
    /// `U8x3` or `U8x4` (alpha ignored).
    pixel_type: PixelType,
    orientation: Orientation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jpeg,
    Png,
    WebP,
}

fn sniff(bytes: &[u8]) -> Result<Format> {
    if bytes.is_empty() {
        return Err(Error::Decode("empty input".into()));
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Ok(Format::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Ok(Format::Png)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Ok(Format::WebP)
    } else {
        Err(Error::Decode(format!(
            "unrecognized file format (first bytes {:02x?}); expected JPEG, PNG or WebP",
            &bytes[..bytes.len().min(8)]
        )))
    }
}

fn check_size(width: u32, height: u32) -> Result<()> {
    if u64::from(width) * u64::from(height) > u64::from(MAX_MEGAPIXELS) * 1_000_000 {
        return Err(Error::TooLarge {
            width,
            height,
            limit: MAX_MEGAPIXELS,
        });
    }
    Ok(())
}

fn decode(bytes: &[u8]) -> Result<Decoded> {
    match sniff(bytes)? {
        Format::Jpeg => decode_jpeg(bytes),
        Format::Png => {
            let decoder = image::codecs::png::PngDecoder::new(Cursor::new(bytes))
                .map_err(|e| Error::Decode(format!("PNG: {e}")))?;
            decode_with_image(decoder, "PNG")
        }
        Format::WebP => {
            let decoder = image::codecs::webp::WebPDecoder::new(Cursor::new(bytes))
                .map_err(|e| Error::Decode(format!("WebP: {e}")))?;
            decode_with_image(decoder, "WebP")
        }
    }
}

fn decode_jpeg(bytes: &[u8]) -> Result<Decoded> {
    // JPEG allows 65535 pixels a side; our own megapixel check is the limit that matters.
    // Strict mode: a truncated or corrupt file is an error (as in PIL), not a half-grey picture.
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX))
        .set_strict_mode(true);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    let err = |e: zune_jpeg::errors::DecodeErrors| Error::Decode(format!("JPEG: {e}"));
    decoder.decode_headers().map_err(err)?;
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| Error::Decode("JPEG: no frame header".into()))?;
    let (width, height) = (width as u32, height as u32);
    check_size(width, height)?;
    let orientation = decoder
        .exif()
        .map(|exif| Orientation::from_exif(exif))
        .unwrap_or_default();
    let pixels = decoder.decode().map_err(err)?;
    if decoder.output_colorspace() != Some(ColorSpace::RGB) {
        return Err(Error::Decode(format!(
            "JPEG: unsupported colour space {:?}",
            decoder.input_colorspace()
        )));
    }
    Ok(Decoded {
        pixels,
        width,
        height,
        pixel_type: PixelType::U8x3,
        orientation,
    })
}

fn decode_with_image(mut decoder: impl ImageDecoder, what: &str) -> Result<Decoded> {
    let (width, height) = decoder.dimensions();
    check_size(width, height)?;
    let orientation = decoder
        .exif_metadata()
        .ok()
        .flatten()
        .map(|exif| Orientation::from_exif(&exif))
        .unwrap_or_default();
    let image = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::Decode(format!("{what}: {e}")))?;
    let (pixels, pixel_type) = match image {
        image::DynamicImage::ImageRgb8(rgb) => (rgb.into_raw(), PixelType::U8x3),
        image::DynamicImage::ImageRgba8(rgba) => (rgba.into_raw(), PixelType::U8x4),
        // Grayscale, 16-bit, float: convert (as PIL's `convert("RGB")`; alpha is dropped).
        other => (other.into_rgb8().into_raw(), PixelType::U8x3),
    };
    Ok(Decoded {
        pixels,
        width,
        height,
        pixel_type,
        orientation,
    })
}

// ---- EXIF orientation ----

/// An EXIF orientation as the transform from displayed coordinates to stored ones:
/// first swap x and y (`transpose`), then mirror along x and/or y.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Orientation {
    transpose: bool,
    flip_x: bool,
    flip_y: bool,
}

impl Orientation {
    /// From the EXIF `Orientation` tag value (1–8); anything else is upright.
    fn from_tag(tag: u32) -> Self {
        let (transpose, flip_x, flip_y) = match tag {
            2 => (false, true, false),  // mirrored horizontally
            3 => (false, true, true),   // rotated 180°
            4 => (false, false, true),  // mirrored vertically
            5 => (true, false, false),  // transposed
            6 => (true, false, true),   // rotate 90° clockwise to display
            7 => (true, true, true),    // transversed
            8 => (true, true, false),   // rotate 90° counter-clockwise to display
            _ => (false, false, false), // 1 or invalid
        };
        Orientation {
            transpose,
            flip_x,
            flip_y,
        }
    }

    /// From a raw EXIF block (TIFF header first, or with the `Exif\0\0` prefix); unreadable → upright.
    fn from_exif(exif: &[u8]) -> Self {
        let tiff = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
        let Ok(exif) = exif::Reader::new().read_raw(tiff.to_vec()) else {
            return Self::default();
        };
        exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
            .and_then(|field| field.value.get_uint(0))
            .map(Self::from_tag)
            .unwrap_or_default()
    }

    /// Size of the displayed image given the stored size.
    fn displayed_size(self, width: u32, height: u32) -> (u32, u32) {
        if self.transpose {
            (height, width)
        } else {
            (width, height)
        }
    }

    /// Maps a rectangle `(left, top, width, height)` in displayed coordinates of a `dw`×`dh` image to
    /// stored coordinates.
    fn rect_to_stored(self, rect: [f64; 4], dw: f64, dh: f64) -> [f64; 4] {
        let [left, top, w, h] = rect;
        let (u, v, uw, vh, sw, sh) = if self.transpose {
            (top, left, h, w, dh, dw)
        } else {
            (left, top, w, h, dw, dh)
        };
        let u = if self.flip_x { sw - u - uw } else { u };
        let v = if self.flip_y { sh - v - vh } else { v };
        [u, v, uw, vh]
    }

    /// Maps pixel `(x, y)` of a displayed `n`×`n` square to its stored coordinates.
    fn square_to_stored(self, x: usize, y: usize, n: usize) -> (usize, usize) {
        let (u, v) = if self.transpose { (y, x) } else { (x, y) };
        let u = if self.flip_x { n - 1 - u } else { u };
        let v = if self.flip_y { n - 1 - v } else { v };
        (u, v)
    }
}

// ---- resize, crop, normalize ----

/// torchvision `Resize(256)`: the shorter side becomes 256, the longer `int(256 * long / short)`.
fn resized_size(width: u32, height: u32) -> (u32, u32) {
    let (short, long) = (width.min(height), width.max(height));
    let new_long = (u64::from(RESIZE_SHORTER) * u64::from(long) / u64::from(short)) as u32;
    if width <= height {
        (RESIZE_SHORTER, new_long)
    } else {
        (new_long, RESIZE_SHORTER)
    }
}

/// torchvision `CenterCrop`: offset `int(round((size - 224) / 2))`, Python's round (half to even).
fn crop_offset(size: u32) -> u32 {
    let excess = size - INPUT_SIZE as u32;
    let half = excess / 2;
    if excess % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// `(v / 255 - mean) / std` for every byte value, per channel.
fn normalization_table() -> [[f32; 256]; 3] {
    let mut table = [[0f32; 256]; 3];
    for (c, row) in table.iter_mut().enumerate() {
        for (v, out) in row.iter_mut().enumerate() {
            *out = (v as f32 / 255.0 - MEAN[c]) / STD[c];
        }
    }
    table
}

/// The resize of [`resize_crop`] for one pixel type, to the 224×224 square. The typed API compiles the
/// convolutions of only the two pixel types the decoders produce; `Resizer::resize` dispatches at run
/// time over every type fast_image_resize knows and put ~250 KB of their code into the WASM bundle.
fn resize_typed<P: fr::pixels::InnerPixel + fr::PixelTrait>(
    pixels: &[u8],
    width: u32,
    height: u32,
    options: &fr::ResizeOptions,
) -> Result<Vec<u8>> {
    let internal = |e: &dyn std::fmt::Display| Error::Decode(format!("resize: {e}"));
    let n = INPUT_SIZE as u32;
    let src = fr::images::TypedImageRef::<P>::from_buffer(width, height, pixels)
        .map_err(|e| internal(&e))?;
    let mut out = vec![0u8; INPUT_SIZE * INPUT_SIZE * P::size()];
    let mut dst =
        fr::images::TypedImage::<P>::from_buffer(n, n, &mut out).map_err(|e| internal(&e))?;
    fr::Resizer::new()
        .resize_typed(&src, &mut dst, options)
        .map_err(|e| internal(&e))?;
    Ok(out)
}

/// Resizes the region of the stored `width`×`height` image (`channels` bytes per pixel, the first three
/// RGB) that lands in the center crop, then writes the upright 224×224 RGB bytes (HWC).
fn resize_crop(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: usize,
    orientation: Orientation,
) -> Result<Vec<u8>> {
    if width == 0 || height == 0 {
        return Err(Error::Decode(format!("image of {width}×{height} pixels")));
    }
    let n = INPUT_SIZE;
    let (dw, dh) = orientation.displayed_size(width, height);
    let (rw, rh) = resized_size(dw, dh);
    // Scale from resized to displayed-source coordinates, per axis (as PIL: in_size / out_size).
    let (sx, sy) = (f64::from(dw) / f64::from(rw), f64::from(dh) / f64::from(rh));
    let crop = [
        f64::from(crop_offset(rw)) * sx,
        f64::from(crop_offset(rh)) * sy,
        n as f64 * sx,
        n as f64 * sy,
    ];
    let [left, top, crop_w, crop_h] =
        orientation.rect_to_stored(crop, f64::from(dw), f64::from(dh));

    let options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear))
        .crop(left, top, crop_w, crop_h)
        .use_alpha(false);
    let resized = match channels {
        3 => resize_typed::<fr::pixels::U8x3>(pixels, width, height, &options)?,
        4 => resize_typed::<fr::pixels::U8x4>(pixels, width, height, &options)?,
        _ => return Err(Error::Shape(format!("{channels} channels per pixel"))),
    };
    if channels == 3 && orientation == Orientation::default() {
        return Ok(resized);
    }
    let mut data = Vec::with_capacity(PIXELS_LEN);
    for y in 0..n {
        for x in 0..n {
            let (u, v) = orientation.square_to_stored(x, y, n);
            data.extend_from_slice(&resized[(v * n + u) * channels..][..3]);
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_normalize_exactly_as_the_float_path() {
        // Every byte value in every channel, at positions all over the image: the normalized tensor
        // holds `(v / 255 - mean) / std` in f32 at the NCHW position of HWC byte (y, x, c).
        let pixels: Vec<u8> = (0..PIXELS_LEN * 2)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect();
        let tensor = normalize(&pixels).unwrap();
        assert_eq!(tensor.len(), 2 * INPUT_LEN);
        let n = INPUT_SIZE;
        let mut seen = [[false; 256]; 3];
        for (i, &v) in pixels.iter().enumerate() {
            let (image, rest) = (i / PIXELS_LEN, i % PIXELS_LEN);
            let (y, x, c) = (rest / (3 * n), rest / 3 % n, rest % 3);
            let want = (f32::from(v) / 255.0 - MEAN[c]) / STD[c];
            let got = tensor[image * INPUT_LEN + c * n * n + y * n + x];
            assert_eq!(got.to_bits(), want.to_bits(), "byte {i}");
            seen[c][usize::from(v)] = true;
        }
        assert!(seen.iter().all(|c| c.iter().all(|&s| s)));
        assert!(normalize(&pixels[1..]).is_err());
        assert!(normalize(&[]).is_err());
    }

    #[test]
    fn a_photo_normalized_from_its_bytes_is_the_preprocessed_tensor() {
        // A 300×200 JPEG (made here) through both paths, and with an EXIF-free RGBA buffer.
        let (w, h) = (300u32, 200u32);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode(&rgb, w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        let tensor = preprocess(&jpeg).unwrap();
        let pixels = preprocess_pixels(&jpeg).unwrap();
        assert_eq!((pixels.width, pixels.height), (w, h));
        assert_eq!(pixels.data.len(), PIXELS_LEN);
        assert_eq!(normalize(&pixels.data).unwrap(), tensor.data);
    }

    #[test]
    fn resized_size_matches_torchvision() {
        // torchvision: short → 256, long → int(256 * long / short).
        assert_eq!(resized_size(1280, 800), (409, 256));
        assert_eq!(resized_size(800, 1280), (256, 409));
        assert_eq!(resized_size(500, 375), (341, 256));
        assert_eq!(resized_size(1, 1), (256, 256));
    }

    #[test]
    fn crop_offset_rounds_half_to_even() {
        // Python: round(0.5) = 0, round(1.5) = 2, round(58.5) = 58, round(92.5) = 92, round(16) = 16.
        assert_eq!(crop_offset(225), 0);
        assert_eq!(crop_offset(227), 2);
        assert_eq!(crop_offset(341), 58);
        assert_eq!(crop_offset(409), 92);
        assert_eq!(crop_offset(256), 16);
    }

    #[test]
    fn orientation_maps_squares_and_rects_consistently() {
        // For every orientation, the discrete square map and the continuous rect map agree on where a
        // unit pixel lands, and the map is a bijection.
        for tag in 1..=8 {
            let o = Orientation::from_tag(tag);
            let n = 5;
            let mut seen = vec![false; n * n];
            for y in 0..n {
                for x in 0..n {
                    let (u, v) = o.square_to_stored(x, y, n);
                    let [l, t, w, h] = o.rect_to_stored([x as f64, y as f64, 1.0, 1.0], 5.0, 5.0);
                    assert_eq!((l, t, w, h), (u as f64, v as f64, 1.0, 1.0), "tag {tag}");
                    seen[v * n + u] = true;
                }
            }
            assert!(seen.iter().all(|&s| s), "tag {tag}");
        }
        // Orientation 6 (rotate clockwise to display): displayed top-left is stored bottom-left.
        assert_eq!(Orientation::from_tag(6).square_to_stored(0, 0, 4), (0, 3));
        // Orientation 8 (rotate counter-clockwise): displayed top-left is stored top-right.
        assert_eq!(Orientation::from_tag(8).square_to_stored(0, 0, 4), (3, 0));
    }
}
