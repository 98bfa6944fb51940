//! `engine::preprocess` on real photos, against a plain reference implementation written here.
//!
//! The reference follows torchvision's eval transform on a PIL image step by step: decode with the `image`
//! crate, read the EXIF orientation with the `image` crate and rotate the whole image with
//! `image::imageops`, PIL's antialiased bilinear resize of the whole image (shorter side 256; PIL's
//! `precompute_coeffs` in f64, two passes with the intermediate rounded to 8 bits as PIL stores it) —
//! evaluated only at the pixels that survive the crop, which is the same thing — `CenterCrop(224)` with
//! Python's rounding, `ToTensor` and `Normalize` in f64.
//!
//! Tolerances, in levels of 255 (one level is 1 / 255 / std ≈ 0.0175 after normalization):
//! - Against the reference run with our pass order (fast_image_resize does the vertical pass first on
//!   8-bit pixels; PIL the horizontal one): both sides compute the same sums, but fast_image_resize uses
//!   fixed-point weights, so exact ties (x.5, common at simple scale factors such as 1.25) may round the
//!   other way, once per pass: max 2 levels, mean |diff| ≤ 0.1 level, |mean diff| ≤ 0.05 level. Measured
//!   over all 800 + 20 photos: max 2, mean 0.038, bias 0.038 (most photos: max 1, mean < 0.002).
//! - Against PIL's pass order: the intermediate rounding now happens on the other axis, which moves a
//!   minority of values by a level: max 2 levels, mean |diff| ≤ 0.4 level, |bias| ≤ 0.05 level.
//!   Measured: max 2, mean 0.245, bias 0.042.
//!
//! A shifted or mis-weighted filter, an off-by-one crop, a swapped channel or a wrong orientation breaks
//! these by far.
//!
//! Photos: foolbox's 20 (`$INFERSCOPE_CACHE/foolbox-images`, filled by `./x setup`) and every 10th of
//! the 800 in `../shared/data/imagenet-sample` (all 800 with `INFERSCOPE_ALL_PHOTOS=1`); a missing folder
//! skips with a message.

use std::path::{Path, PathBuf};

use engine::preprocess::{preprocess, preprocess_rgba, MAX_MEGAPIXELS, MEAN, STD};
use engine::{Error, INPUT_LEN, INPUT_SIZE};
use image::{DynamicImage, ImageDecoder, ImageFormat, RgbImage};
use proptest::prelude::*;

const N: usize = INPUT_SIZE;
/// One level of 255 after normalization, at the smallest std (the largest step).
const LEVEL: f32 = 1.0 / 255.0 / 0.224;

/// How far from a reference a tensor may be, in levels of 255 (see the module docs).
struct Tol {
    /// Largest difference of one value.
    max: f32,
    /// Largest mean absolute difference.
    mean: f32,
    /// Largest mean signed difference.
    bias: f32,
}
/// Against the reference that runs the passes in the same order.
const SAME_ORDER: Tol = Tol {
    max: 2.0,
    mean: 0.1,
    bias: 0.05,
};
/// Against PIL's pass order when ours differs.
const PIL_ORDER: Tol = Tol {
    max: 2.0,
    mean: 0.4,
    bias: 0.05,
};

// ---- the reference ----

/// PIL's `precompute_coeffs` for the bilinear (triangle) filter, in f64: for output index `i` of a
/// resize from `in_size` to `out_size`, the first input index and the normalized weights.
fn pil_coeffs(in_size: u32, out_size: u32, i: u32) -> (usize, Vec<f64>) {
    let scale = f64::from(in_size) / f64::from(out_size);
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the triangle's support is 1
    let center = (f64::from(i) + 0.5) * scale;
    let xmin = ((center - support + 0.5) as i64).max(0) as usize;
    let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) as usize;
    let mut weights: Vec<f64> = (xmin..xmax)
        .map(|x| {
            let t = ((x as f64 - center + 0.5) / filter_scale).abs();
            (1.0 - t).max(0.0)
        })
        .collect();
    let total: f64 = weights.iter().sum();
    weights.iter_mut().for_each(|w| *w /= total);
    (xmin, weights)
}

/// The order of the two 8-bit passes of the resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PassOrder {
    /// PIL's order.
    HorizontalFirst,
    /// fast_image_resize's order for 8-bit pixels.
    VerticalFirst,
}

/// One pass of an 8-bit separable resize: resamples the `w`×`h` RGB plane `src` along x or y with
/// `coeffs` (one entry per output index) and rounds to 8 bits, as PIL stores it.
fn pass(src: &[f64], w: usize, h: usize, coeffs: &[(usize, Vec<f64>)], along_x: bool) -> Vec<f64> {
    let (ow, oh) = if along_x {
        (coeffs.len(), h)
    } else {
        (w, coeffs.len())
    };
    let mut out = vec![0.0; ow * oh * 3];
    for y in 0..oh {
        for x in 0..ow {
            let (start, weights) = &coeffs[if along_x { x } else { y }];
            for c in 0..3 {
                let sum: f64 = weights
                    .iter()
                    .enumerate()
                    .map(|(k, wk)| {
                        let (sx, sy) = if along_x {
                            (start + k, y)
                        } else {
                            (x, start + k)
                        };
                        wk * src[(sy * w + sx) * 3 + c]
                    })
                    .sum();
                out[(y * ow + x) * 3 + c] = sum.round().clamp(0.0, 255.0);
            }
        }
    }
    out
}

/// torchvision `Resize(256)` + `CenterCrop(224)` + `ToTensor` + `Normalize` on an upright RGB image.
fn reference(img: &RgbImage, order: PassOrder) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let (rw, rh) = if w <= h {
        (256, (256 * u64::from(h) / u64::from(w)) as u32)
    } else {
        ((256 * u64::from(w) / u64::from(h)) as u32, 256)
    };
    // Python: int(round((size - 224) / 2.0)), round half to even.
    let offset = |size: u32| -> u32 {
        let half = f64::from(size - N as u32) / 2.0;
        let r = half.round();
        (if (r - half).abs() == 0.5 && r % 2.0 != 0.0 {
            r - 1.0
        } else {
            r
        }) as u32
    };
    // The resized image's coefficients, only for the columns and rows the crop keeps.
    let cols: Vec<_> = (0..N as u32)
        .map(|x| pil_coeffs(w, rw, offset(rw) + x))
        .collect();
    let rows: Vec<_> = (0..N as u32)
        .map(|y| pil_coeffs(h, rh, offset(rh) + y))
        .collect();
    let src: Vec<f64> = img.as_raw().iter().map(|&v| f64::from(v)).collect();
    let (w, h) = (w as usize, h as usize);
    let resized = match order {
        PassOrder::HorizontalFirst => pass(&pass(&src, w, h, &cols, true), N, h, &rows, false),
        PassOrder::VerticalFirst => pass(&pass(&src, w, h, &rows, false), w, N, &cols, true),
    };
    let mut out = vec![0f32; INPUT_LEN];
    for (i, v) in resized.iter().enumerate() {
        let (pixel, c) = (i / 3, i % 3);
        out[c * N * N + pixel] = ((v / 255.0 - f64::from(MEAN[c])) / f64::from(STD[c])) as f32;
    }
    out
}

/// The reference's decoder: the `image` crate, then an explicit rotation for an EXIF orientation tag.
/// Returns the upright image and the orientation tag (as the `image` crate reads it, not our EXIF code).
fn reference_decode(bytes: &[u8]) -> (RgbImage, u8) {
    let mut decoder = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .unwrap()
        .into_decoder()
        .expect("reference decode");
    let orientation = decoder
        .orientation()
        .expect("reference orientation")
        .to_exif();
    let img = DynamicImage::from_decoder(decoder).expect("reference decode");
    let img = match orientation {
        1 => img,
        2 => img.fliph(),
        3 => img.rotate180(),
        4 => img.flipv(),
        5 => img.rotate90().fliph(),
        6 => img.rotate90(),
        7 => img.rotate270().fliph(),
        8 => img.rotate270(),
        _ => unreachable!(),
    };
    (img.to_rgb8(), orientation)
}

/// The pass order that matches ours: we resize the stored pixels and rotate after, so for a transposing
/// orientation our vertical pass is the upright image's horizontal one.
fn our_order(orientation: u8) -> PassOrder {
    if orientation >= 5 {
        PassOrder::HorizontalFirst
    } else {
        PassOrder::VerticalFirst
    }
}

/// Max absolute, mean absolute and mean signed difference.
fn diff(got: &[f32], want: &[f32]) -> [f32; 3] {
    assert_eq!(got.len(), want.len());
    let d = || got.iter().zip(want).map(|(x, y)| x - y);
    let n = got.len() as f32;
    [
        d().map(f32::abs).fold(0f32, f32::max),
        d().map(f32::abs).sum::<f32>() / n,
        d().sum::<f32>() / n,
    ]
}

/// Asserts `got` is within `tol` of `want`; returns (max, mean, |bias|) in levels.
fn assert_close(name: &str, got: &[f32], want: &[f32], tol: &Tol) -> [f32; 3] {
    let [max, mean, bias] = diff(got, want).map(|v| (v / LEVEL).abs());
    assert!(
        max <= tol.max + 1e-3 && mean <= tol.mean && bias <= tol.bias,
        "{name}: in levels of 255, max diff {max:.3} (tol {}), mean |diff| {mean:.4} (tol {}), \
         |bias| {bias:.4} (tol {})",
        tol.max,
        tol.mean,
        tol.bias
    );
    [max, mean, bias]
}

/// Asserts `got` is the reference's tensor for the upright `img`, passes in our order.
fn assert_matches(name: &str, got: &[f32], img: &RgbImage) {
    assert_close(
        name,
        got,
        &reference(img, PassOrder::VerticalFirst),
        &SAME_ORDER,
    );
}

// ---- data ----

fn foolbox_dir() -> PathBuf {
    std::env::var_os("INFERSCOPE_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/inferscope")))
        .unwrap_or_default()
        .join("foolbox-images")
}

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/imagenet-sample")
}

/// Sorted image files of a folder, or `None` (with a message) when it is missing.
fn photos(dir: &Path, ext: &str) -> Option<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        eprintln!("SKIP: {} not found (run ./x setup)", dir.display());
        return None;
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    Some(files)
}

/// One real landscape JPEG to build test images from (foolbox's are 224×224, so prefer the sample set).
fn some_photo() -> Option<Vec<u8>> {
    let files = photos(&sample_dir(), "JPEG").or_else(|| photos(&foolbox_dir(), "jpg"))?;
    let file = files.first()?;
    Some(std::fs::read(file).unwrap())
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// Inserts an APP1 EXIF segment holding only `Orientation = tag` right after the JPEG's SOI marker.
fn with_orientation(jpeg: &[u8], tag: u16) -> Vec<u8> {
    // "Exif\0\0", big-endian TIFF header, IFD0 with one SHORT entry (0x0112), no next IFD.
    let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
    exif.extend_from_slice(&tag.to_be_bytes());
    exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&(exif.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(&exif);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn check_photos(files: &[PathBuf]) {
    assert!(!files.is_empty());
    let mut worst = [[0f32; 3]; 2];
    for file in files {
        let bytes = std::fs::read(file).unwrap();
        let got = preprocess(&bytes).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let (img, orientation) = reference_decode(&bytes);
        assert_eq!(
            (got.width, got.height),
            img.dimensions(),
            "{}",
            file.display()
        );
        assert_eq!(got.data.len(), INPUT_LEN);
        let name = file.display().to_string();
        let same = reference(&img, our_order(orientation));
        let pil = reference(&img, PassOrder::HorizontalFirst);
        let stats = [
            assert_close(&name, &got.data, &same, &SAME_ORDER),
            assert_close(&format!("{name} (PIL order)"), &got.data, &pil, &PIL_ORDER),
        ];
        for (worst, stats) in worst.iter_mut().zip(stats) {
            for (w, s) in worst.iter_mut().zip(stats) {
                *w = w.max(s);
            }
        }
    }
    for (what, [max, mean, bias]) in ["same order", "PIL order"].iter().zip(worst) {
        eprintln!(
            "{} photos vs reference ({what}), worst in levels of 255: max {max:.2}, mean |diff| \
             {mean:.4}, |bias| {bias:.4}",
            files.len()
        );
    }
}

// ---- real photos against the reference ----

#[test]
fn foolbox_photos_match_reference() {
    let Some(files) = photos(&foolbox_dir(), "jpg") else {
        return;
    };
    check_photos(&files);
}

#[test]
fn sample_photos_match_reference() {
    let Some(files) = photos(&sample_dir(), "JPEG") else {
        return;
    };
    let step = if std::env::var_os("INFERSCOPE_ALL_PHOTOS").is_some() {
        1
    } else {
        10
    };
    check_photos(&files.into_iter().step_by(step).collect::<Vec<_>>());
}

// ---- EXIF orientation ----

#[test]
fn exif_orientation_matches_rotated_reference() {
    let Some(jpeg) = some_photo() else { return };
    let upright = preprocess(&jpeg).unwrap();
    for tag in 1..=8u16 {
        let tagged = with_orientation(&jpeg, tag);
        let got = preprocess(&tagged).unwrap();
        let (img, read_tag) = reference_decode(&tagged);
        assert_eq!(read_tag, tag as u8);
        assert_eq!(
            (got.width, got.height),
            img.dimensions(),
            "orientation {tag}"
        );
        if tag >= 5 {
            assert_eq!((got.width, got.height), (upright.height, upright.width));
        }
        let want = reference(&img, our_order(read_tag));
        assert_close(&format!("orientation {tag}"), &got.data, &want, &SAME_ORDER);
    }
}

/// A photo that is not square: [`some_photo`], cut to 3:2 and re-encoded when it is square (foolbox's
/// photos, the fallback without `../shared`, are).
fn non_square_photo() -> Option<Vec<u8>> {
    let jpeg = some_photo()?;
    let img = image::load_from_memory(&jpeg).unwrap();
    if img.width() != img.height() {
        return Some(jpeg);
    }
    let cut = img.crop_imm(0, 0, img.width(), img.height() * 2 / 3);
    Some(encode(
        &DynamicImage::ImageRgb8(cut.to_rgb8()),
        ImageFormat::Jpeg,
    ))
}

#[test]
fn exif_orientation_6_is_the_clockwise_rotation() {
    let Some(jpeg) = non_square_photo() else {
        return;
    };
    let upright = preprocess(&jpeg).unwrap();
    let rotated = preprocess(&with_orientation(&jpeg, 6)).unwrap();
    assert_ne!(upright.width, upright.height, "need a non-square photo");
    assert_eq!(
        (rotated.width, rotated.height),
        (upright.height, upright.width)
    );
    // Rotating clockwise: displayed (x, y) is upright (row 223 - x, column y). The crop of the rotated
    // image is the rotated crop of the upright one, so the values are the same, exactly.
    for c in 0..3 {
        for y in 0..N {
            for x in 0..N {
                assert_eq!(
                    rotated.data[c * N * N + y * N + x],
                    upright.data[c * N * N + (N - 1 - x) * N + y],
                    "channel {c}, ({x}, {y})"
                );
            }
        }
    }
}

// ---- PNG (alpha, grayscale, 16 bit), WebP, grayscale JPEG, raw RGBA ----

#[test]
fn png_with_alpha_drops_alpha() {
    let Some(jpeg) = some_photo() else { return };
    let rgb = image::load_from_memory(&jpeg).unwrap().to_rgb8();
    let mut rgba = DynamicImage::ImageRgb8(rgb.clone()).to_rgba8();
    for (i, p) in rgba.pixels_mut().enumerate() {
        p.0[3] = (i % 256) as u8; // varying alpha, including fully transparent pixels
    }
    let from_rgba = preprocess(&encode(
        &DynamicImage::ImageRgba8(rgba.clone()),
        ImageFormat::Png,
    ))
    .unwrap();
    let from_rgb = preprocess(&encode(
        &DynamicImage::ImageRgb8(rgb.clone()),
        ImageFormat::Png,
    ))
    .unwrap();
    // As PIL's convert("RGB"): the colour channels, unblended.
    assert_eq!(from_rgba, from_rgb);
    assert_matches("rgba png", &from_rgba.data, &rgb);
    // Raw RGBA pixels (a canvas ImageData) give the same tensor.
    let raw = preprocess_rgba(rgba.as_raw(), rgba.width(), rgba.height()).unwrap();
    assert_eq!(raw, from_rgb);
}

/// All three channels of a gray image hold the same pixel value.
fn assert_gray(data: &[f32]) {
    for i in 0..N * N {
        let px = |c: usize| data[c * N * N + i] * STD[c] + MEAN[c];
        assert!(
            (px(0) - px(1)).abs() < 1e-5 && (px(0) - px(2)).abs() < 1e-5,
            "pixel {i} not gray"
        );
    }
}

#[test]
fn grayscale_png_and_jpeg_become_gray_rgb() {
    let Some(jpeg) = some_photo() else { return };
    let luma = image::load_from_memory(&jpeg).unwrap().to_luma8();
    let luma_img = DynamicImage::ImageLuma8(luma.clone());
    let luma_rgb = luma_img.to_rgb8();

    let png = preprocess(&encode(&luma_img, ImageFormat::Png)).unwrap();
    assert_gray(&png.data);
    assert_matches("gray png", &png.data, &luma_rgb);

    let gray_jpeg = encode(&luma_img, ImageFormat::Jpeg);
    let got = preprocess(&gray_jpeg).unwrap();
    assert_gray(&got.data);
    assert_matches("gray jpeg", &got.data, &reference_decode(&gray_jpeg).0);

    // 16-bit gray with alpha: converted to 8-bit RGB.
    let la16 = DynamicImage::ImageLumaA16(luma_img.to_luma_alpha16());
    let got = preprocess(&encode(&la16, ImageFormat::Png)).unwrap();
    assert_gray(&got.data);
    assert_matches("gray+alpha 16-bit png", &got.data, &luma_rgb);
}

#[test]
fn webp_lossless_equals_png() {
    let Some(jpeg) = some_photo() else { return };
    let img = DynamicImage::ImageRgb8(image::load_from_memory(&jpeg).unwrap().to_rgb8());
    let webp = preprocess(&encode(&img, ImageFormat::WebP)).unwrap();
    let png = preprocess(&encode(&img, ImageFormat::Png)).unwrap();
    assert_eq!(webp, png);
}

#[test]
fn tiny_and_extreme_aspect_images() {
    // Upsampling and very long strips go through the same path; shape and finiteness hold.
    for (w, h) in [(1, 1), (3, 2), (224, 224), (2000, 3), (5, 1500)] {
        let img = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 13) as u8, 128])
        });
        let got = preprocess(&encode(
            &DynamicImage::ImageRgb8(img.clone()),
            ImageFormat::Png,
        ))
        .unwrap();
        assert_eq!((got.width, got.height), (w, h));
        assert!(got.data.iter().all(|v| v.is_finite()));
        assert_matches(&format!("{w}×{h}"), &got.data, &img);
    }
}

// ---- errors ----

#[test]
fn non_images_are_decode_errors() {
    for (name, bytes) in [
        ("empty", &b""[..]),
        ("text", &b"hello, this is not an image"[..]),
        ("html", &b"<!doctype html><html></html>"[..]),
        ("gif", &b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"[..]),
        ("jpeg magic only", &b"\xff\xd8\xff"[..]),
        ("png signature only", &b"\x89PNG\r\n\x1a\n"[..]),
        ("riff webp only", &b"RIFF\0\0\0\0WEBP"[..]),
    ] {
        match preprocess(bytes) {
            Err(Error::Decode(msg)) => assert!(!msg.is_empty(), "{name}"),
            other => panic!("{name}: expected a decode error, got {other:?}"),
        }
    }
}

#[test]
fn truncated_files_are_decode_errors() {
    let Some(jpeg) = some_photo() else { return };
    let img = image::load_from_memory(&jpeg).unwrap();
    let png = encode(&img, ImageFormat::Png);
    let webp = encode(&DynamicImage::ImageRgb8(img.to_rgb8()), ImageFormat::WebP);
    for (name, bytes) in [("jpeg", &jpeg), ("png", &png), ("webp", &webp)] {
        for keep in [bytes.len() / 10, bytes.len() / 2, bytes.len() - 100] {
            match preprocess(&bytes[..keep]) {
                Err(Error::Decode(_)) => {}
                other => panic!(
                    "{name} cut to {keep} of {} bytes: got {other:?}",
                    bytes.len()
                ),
            }
        }
    }
}

/// IEEE CRC-32, for patching PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn assert_too_large(name: &str, bytes: &[u8], width: u32, height: u32) {
    match preprocess(bytes) {
        Err(Error::TooLarge {
            width: w,
            height: h,
            limit,
        }) => {
            assert_eq!((w, h, limit), (width, height, MAX_MEGAPIXELS), "{name}")
        }
        other => panic!("{name}: expected TooLarge, got {other:?}"),
    }
}

#[test]
fn huge_headers_are_refused_before_decoding() {
    let small = DynamicImage::ImageRgb8(RgbImage::from_pixel(16, 16, image::Rgb([200, 10, 10])));

    // JPEG: patch the SOF0 frame header (FFC0, length, precision, height, width) to 40000×40000.
    let mut jpeg = encode(&small, ImageFormat::Jpeg);
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("baseline JPEG");
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0x9C, 0x40, 0x9C, 0x40]);
    assert_too_large("jpeg", &jpeg, 40000, 40000);

    // PNG: patch IHDR (right after the signature) and its CRC.
    let mut png = encode(&small, ImageFormat::Png);
    png[16..20].copy_from_slice(&40000u32.to_be_bytes());
    png[20..24].copy_from_slice(&40000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    assert_too_large("png", &png, 40000, 40000);

    // WebP lossless: the VP8L header holds 14-bit width-1 and height-1; make it 16383×16383.
    let mut webp = encode(&small, ImageFormat::WebP);
    let vp8l = webp
        .windows(4)
        .position(|w| w == b"VP8L")
        .expect("lossless WebP");
    let bits = u32::from_le_bytes(webp[vp8l + 9..vp8l + 13].try_into().unwrap());
    let bits = (bits & !((1 << 28) - 1)) | 0x3FFE | (0x3FFE << 14);
    webp[vp8l + 9..vp8l + 13].copy_from_slice(&bits.to_le_bytes());
    // An extended file also states the canvas size (24-bit width-1, height-1); keep it consistent.
    if let Some(vp8x) = webp.windows(4).position(|w| w == b"VP8X") {
        webp[vp8x + 12..vp8x + 18].copy_from_slice(&[0xFE, 0x3F, 0, 0xFE, 0x3F, 0]);
    }
    assert_too_large("webp", &webp, 16383, 16383);

    // Raw RGBA: the same limit.
    assert!(matches!(
        preprocess_rgba(&[], 10_000, 10_000),
        Err(Error::TooLarge { .. })
    ));
}

// ---- arbitrary bytes never panic ----

fn small_files() -> Vec<Vec<u8>> {
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, ((x + y) * 3) as u8])
    }));
    vec![
        with_orientation(&encode(&img, ImageFormat::Jpeg), 6),
        encode(&img, ImageFormat::Png),
        encode(&img, ImageFormat::WebP),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                magic in 0usize..4) {
        let prefix: &[u8] = [&b""[..], b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"RIFF\x10\0\0\0WEBPVP8L"][magic];
        let input = [prefix, &bytes].concat();
        let _ = preprocess(&input);
    }

    #[test]
    fn corrupted_and_truncated_files_never_panic(which in 0usize..3, cut in 0.0f64..1.0,
                                                 flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8)) {
        let mut file = small_files().swap_remove(which);
        for (at, byte) in flips {
            let i = at.index(file.len());
            file[i] = byte;
        }
        let keep = ((file.len() as f64) * cut) as usize;
        let _ = preprocess(&file[..keep.max(1)]);
        let _ = preprocess(&file);
    }
}
