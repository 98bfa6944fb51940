//! `preprocess()` on a 1280×800 and a 12-megapixel (4000×3000) JPEG, made at start-up by upscaling a photo
//! from `../shared/data/imagenet-sample` (or foolbox's, or a synthetic pattern if neither is there).
//!
//! Upscaled photos are smoother than camera photos and so cheaper to entropy-decode; the `+grain` case adds
//! ±8 levels of deterministic noise to get the file size (and decode cost) of a real 12 MP photo. The
//! `pixels` cases run the resize/crop/normalize half alone (`preprocess_rgba` on decoded pixels).
//!
//! Run: `cargo bench -p inferscope-engine --bench preprocess`.

use std::hint::black_box;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::preprocess::{preprocess, preprocess_rgba};
use image::{imageops::FilterType, DynamicImage, ImageFormat, RgbImage};

fn source_photo() -> DynamicImage {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/imagenet-sample");
    let foolbox = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/inferscope/foolbox-images"))
        .unwrap_or_default();
    for dir in [sample, foolbox] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("jpeg") || e == "jpg")
            })
            .collect();
        files.sort();
        if let Some(file) = files.first() {
            eprintln!("source photo: {}", file.display());
            return image::open(file).expect("decode source photo");
        }
    }
    eprintln!("no photo folder found; using a synthetic pattern");
    DynamicImage::ImageRgb8(RgbImage::from_fn(500, 375, |x, y| {
        image::Rgb([(x / 2) as u8, (y / 2) as u8, ((x ^ y) & 0xFF) as u8])
    }))
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

fn with_grain(mut img: RgbImage) -> RgbImage {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for v in img.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *v = (i32::from(*v) + (state % 17) as i32 - 8).clamp(0, 255) as u8;
    }
    img
}

fn bench(c: &mut Criterion) {
    let photo = source_photo();
    let small = photo
        .resize_exact(1280, 800, FilterType::Triangle)
        .to_rgb8();
    let large = photo
        .resize_exact(4000, 3000, FilterType::Triangle)
        .to_rgb8();
    let large_grain = with_grain(large.clone());
    let cases = [
        ("jpeg 1280x800", jpeg(&small)),
        ("jpeg 4000x3000", jpeg(&large)),
        ("jpeg 4000x3000 +grain", jpeg(&large_grain)),
    ];

    let mut group = c.benchmark_group("preprocess");
    group.sample_size(20);
    for (name, bytes) in &cases {
        eprintln!("{name}: {} KB", bytes.len() / 1024);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(*name, |b| b.iter(|| preprocess(black_box(bytes)).unwrap()));
    }
    for (name, img) in [("pixels 1280x800", &small), ("pixels 4000x3000", &large)] {
        let rgba = DynamicImage::ImageRgb8(img.clone()).to_rgba8();
        group.throughput(Throughput::Elements(
            u64::from(img.width()) * u64::from(img.height()),
        ));
        group.bench_function(name, |b| {
            b.iter(|| preprocess_rgba(black_box(rgba.as_raw()), img.width(), img.height()).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
