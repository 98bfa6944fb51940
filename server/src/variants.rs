//! `inferscope build-variants`: builds the pruned, 2:4 sparse and INT8 variants from the baseline, scores
//! every variant on held-out photos, benchmarks them next to python onnxruntime, and writes
//! `models/report.json` + `models/report.md`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use engine::optimize::build::Progress;
use engine::optimize::pipeline::{self, Photo, PipelineConfig};

use crate::import::{labelled_photos, Labelled};

#[derive(clap::Args)]
pub struct BuildArgs {
    #[arg(long, default_value = "models")]
    models_dir: PathBuf,
    /// Calibration photos (default: ../shared/data/imagenet-sample, else foolbox's photos in
    /// ~/.cache/inferscope/foolbox-images).
    #[arg(long)]
    calib: Option<PathBuf>,
    /// Evaluation photos (default: the calibration folder; then photos with an even index in name order
    /// calibrate and those with an odd index evaluate).
    #[arg(long)]
    eval: Option<PathBuf>,
    /// `index<TAB>wnid<TAB>name` per class (default: classes.tsv in the photo folder).
    #[arg(long)]
    classes: Option<PathBuf>,
    /// Use at most this many calibration photos (after the split).
    #[arg(long)]
    calib_limit: Option<usize>,
    /// Score at most this many evaluation photos.
    #[arg(long)]
    eval_limit: Option<usize>,
    /// Rebuild even when the outputs are newer than the baseline.
    #[arg(long)]
    force: bool,
    /// Seed of every random choice (sampled positions, crops).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// ONNX Runtime intra-op threads for the evaluation and the benchmark.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Batch-1 runs per benchmark (the median is reported).
    #[arg(long, default_value_t = 30)]
    bench_runs: usize,
    /// Skip the speed benchmark.
    #[arg(long)]
    no_bench: bool,
    /// Small calibration settings (a quick smoke build, e.g. in CI).
    #[arg(long)]
    quick: bool,
    /// Do not build: evaluate and benchmark the variant files already there, rewrite the report.
    #[arg(long)]
    report_only: bool,
    /// Build only these variants (comma-separated: pruned, sparse24, int8); the other variant files
    /// already in the models directory are evaluated as they are.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also write and score each build's intermediate files (ablation rows: SparseGPT without the
    /// statistics correction, magnitude 2:4 with it, pruned with it).
    #[arg(long)]
    ablation: bool,
    /// Python with onnxruntime for the reference timings (`PYTHONPATH` as `./x` sets it).
    #[arg(long, default_value = "python3")]
    python: String,
}

fn default_calib_dir() -> Option<PathBuf> {
    let shared = PathBuf::from("../shared/data/imagenet-sample");
    if shared.join("classes.tsv").exists() {
        return Some(shared);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let foolbox = home.join(".cache/inferscope/foolbox-images");
    foolbox.exists().then_some(foolbox)
}

pub fn run_build(args: BuildArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let dir = &args.models_dir;
    let baseline = dir.join(engine::variants::VARIANTS[0].file);
    if !baseline.exists() {
        bail!(
            "{} not found: run `inferscope import` first",
            baseline.display()
        );
    }
    if !args.force
        && !args.report_only
        && args.only.is_empty()
        && pipeline::up_to_date(&baseline, &pipeline::output_paths(dir))
    {
        println!(
            "variants are newer than {} (use --force to rebuild)",
            baseline.display()
        );
        return Ok(());
    }
    let calib_dir = args.calib.clone().or_else(default_calib_dir).context(
        "no calibration photos: pass --calib DIR (the default ../shared/data/imagenet-sample is missing)",
    )?;
    let eval_dir = args.eval.clone().unwrap_or_else(|| calib_dir.clone());
    let photos = labelled_photos(&calib_dir, args.classes.as_deref())?;
    let same = eval_dir == calib_dir;
    let (mut calib, mut eval): (Vec<Labelled>, Vec<Labelled>) = if same {
        let (c, e): (Vec<_>, Vec<_>) = photos
            .into_iter()
            .enumerate()
            .partition(|(i, _)| i % 2 == 0);
        (
            c.into_iter().map(|x| x.1).collect(),
            e.into_iter().map(|x| x.1).collect(),
        )
    } else {
        (photos, labelled_photos(&eval_dir, args.classes.as_deref())?)
    };
    if let Some(n) = args.calib_limit {
        calib.truncate(n);
    }
    if let Some(n) = args.eval_limit {
        eval.truncate(n);
    }
    let (calib_desc, eval_desc) = if same {
        (
            format!(
                "{} photos of {} with an even index in name order",
                calib.len(),
                calib_dir.display()
            ),
            format!(
                "{} photos of {} with an odd index in name order (disjoint from calibration)",
                eval.len(),
                eval_dir.display()
            ),
        )
    } else {
        (
            format!("{} photos of {}", calib.len(), calib_dir.display()),
            format!("{} photos of {}", eval.len(), eval_dir.display()),
        )
    };
    println!("calibration: {calib_desc}\nevaluation: {eval_desc}");
    let photo = |p: Labelled| Photo {
        path: p.path,
        class: p.class,
    };
    let cfg = PipelineConfig {
        models_dir: dir.clone(),
        calib: calib.into_iter().map(photo).collect(),
        eval: eval.into_iter().map(photo).collect(),
        calib_desc,
        eval_desc,
        seed: args.seed,
        threads: args.threads,
        bench_runs: if args.no_bench { 0 } else { args.bench_runs },
        python: args.python.clone(),
        quick: args.quick,
        report_only: args.report_only,
        only: args.only.clone(),
        ablation: args.ablation,
        progress: Progress::default(),
    };
    let report = pipeline::run(&cfg)?;
    println!("\n{}", report.markdown());
    println!(
        "wrote {} and report.json/report.md in {:.0} s",
        dir.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
