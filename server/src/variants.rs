//! `inferscope build-variants`: builds the pruned, 2:4 sparse and INT8 variants from the baseline, scores
//! every variant on held-out photos, benchmarks them next to python onnxruntime, and writes
//! `models/report.json` + `models/report.md`.
//!
//! The engine's pipeline ([`pipeline::run`]) does the work as a library call; this command is the
//! orchestration around it: which photos, the terminal's progress bars (indicatif, through the
//! engine's [`ProgressSink`]) and the python onnxruntime reference benchmark (a subprocess).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use engine::build_status::{self, BuildStatus, Step, VariantState};
use engine::optimize::build::{self, Progress, ProgressSink, ProgressTask};
use engine::optimize::pipeline::{self, Photo, PipelineConfig, ReferenceBench};
use engine::variants;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

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
    /// 2:4: keep the FC layer dense (true: its 2.05 M weights, 8% of the network's; the full build's
    /// default) or make it 2:4 too (false; the `--quick` default).
    #[arg(long)]
    sparse_dense_fc: Option<bool>,
    /// 2:4: extend the SparseGPT calibration photos to this many images with mirrors and random crops
    /// (more Hessian samples for the late layers; 0: none).
    #[arg(long)]
    sparse_augment: Option<usize>,
    /// 2:4: calibration photos for the SparseGPT Hessians (default 256).
    #[arg(long)]
    sparse_images: Option<usize>,
    /// Statistics correction: calibration photos (each with its mirror image; default 128).
    #[arg(long)]
    correct_images: Option<usize>,
    /// Pruned: calibration photos for the least-squares rebuild (default 400: all of them).
    #[arg(long)]
    prune_refit_images: Option<usize>,
    /// Pruned: extend the rebuild's photos to this many images with mirrors and random crops (default:
    /// the photos and their mirror images).
    #[arg(long)]
    prune_refit_augment: Option<usize>,
    /// Pruned: take the per-block channel counts from an earlier run's report.json
    /// (`details.pruned.channels`) instead of searching them again.
    #[arg(long)]
    prune_counts_from: Option<PathBuf>,
    /// Pruned: the rebuild's ridge pulls each layer toward its baseline weights (true) or toward zero
    /// (false).
    #[arg(long)]
    prune_refit_toward_dense: Option<bool>,
    /// Pruned: Gauss–Newton steps on each block's conv2 toward the block output, each followed by
    /// conv3's refit again (0: the per-layer refit only).
    #[arg(long)]
    prune_block_steps: Option<usize>,
    /// Pruned: the block steps see only the first N of the rebuild's images (the photos, then their
    /// mirror images; 0: all); conv3's refits after them still use every image.
    #[arg(long)]
    prune_block_images: Option<usize>,
    /// INT8: bias correction on this many calibration photos (and their mirror images): with the
    /// weights on their INT8 grid, each layer's per-channel output mean is moved back to the float
    /// network's through its bias (0: off).
    #[arg(long)]
    int8_bias_correction: Option<usize>,
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
    let baseline = dir.join(engine::variants::BASELINE.file);
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
    // The bars on the terminal, and the same progress in models/build-status.json for a server that
    // serves this folder meanwhile (`./x run` builds in the background).
    let status = StatusFile::start(dir, &args);
    build::set_progress_sink(Box::new(WithStatus {
        bars: Bars(MultiProgress::new()),
        status: status.clone(),
    }));
    let cfg = PipelineConfig {
        models_dir: dir.clone(),
        calib: calib.into_iter().map(photo).collect(),
        eval: eval.into_iter().map(photo).collect(),
        calib_desc,
        eval_desc,
        seed: args.seed,
        threads: args.threads,
        bench_runs: if args.no_bench { 0 } else { args.bench_runs },
        reference: Some(Arc::new(PythonOrt {
            python: args.python.clone(),
        })),
        quick: args.quick,
        report_only: args.report_only,
        only: args.only.clone(),
        ablation: args.ablation,
        tuning: pipeline::Tuning {
            sparse_dense_fc: args.sparse_dense_fc,
            sparse_augment_to: args.sparse_augment,
            sparse_images: args.sparse_images,
            correct_images: args.correct_images,
            prune_reconstruct_images: args.prune_refit_images,
            prune_reconstruct_augment_to: args.prune_refit_augment,
            prune_counts: args
                .prune_counts_from
                .as_deref()
                .map(counts_from_report)
                .transpose()?,
            prune_refit_toward_dense: args.prune_refit_toward_dense,
            prune_block_steps: args.prune_block_steps,
            prune_block_images: args.prune_block_images,
            int8_bias_correction_images: args.int8_bias_correction,
        },
        progress: Progress::default(),
    };
    let report = pipeline::run(&cfg);
    status.finish(report.as_ref().map(|_| ()).map_err(|e| e.to_string()));
    let report = report?;
    write_report(&report, dir)?;
    println!("\n{}", report.markdown());
    println!(
        "wrote {} and report.json/report.md in {:.0} s",
        dir.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The pruned variant's per-block channel counts recorded in an earlier run's report.json.
fn counts_from_report(path: &Path) -> anyhow::Result<Vec<(usize, usize)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let channels = v
        .pointer("/details/pruned/channels")
        .and_then(|c| c.as_array())
        .with_context(|| format!("{}: no details.pruned.channels", path.display()))?;
    channels
        .iter()
        .map(|c| {
            let n = |i: usize| c.get(i).and_then(serde_json::Value::as_u64);
            match (n(1), n(2)) {
                (Some(a), Some(b)) => Ok((a as usize, b as usize)),
                _ => bail!(
                    "{}: details.pruned.channels: expected [name, conv1, conv2], got {c}",
                    path.display()
                ),
            }
        })
        .collect()
}

/// Writes the report's files ([`engine::optimize::report::FILES`]: the JSON the page's model facts
/// read, and the Markdown table) beside the models.
fn write_report(report: &engine::optimize::report::Report, dir: &Path) -> anyhow::Result<()> {
    let [json, markdown] = engine::optimize::report::FILES;
    let text = serde_json::to_string_pretty(report).context("serializing the report")?;
    std::fs::write(dir.join(json), text).with_context(|| format!("writing {json}"))?;
    std::fs::write(dir.join(markdown), report.markdown())
        .with_context(|| format!("writing {markdown}"))?;
    Ok(())
}

/// Terminal progress bars for the engine's build steps.
struct Bars(MultiProgress);

struct Bar(ProgressBar);

impl ProgressSink for Bars {
    fn start(&self, len: usize, what: &str) -> Box<dyn ProgressTask> {
        let style = ProgressStyle::with_template(
            "{prefix:<34} {bar:30} {pos}/{len} {elapsed_precise} eta {eta}",
        )
        .expect("static template");
        let bar = ProgressBar::new(len as u64)
            .with_style(style)
            .with_prefix(what.to_string());
        Box::new(Bar(self.0.add(bar)))
    }

    fn note(&self, msg: &str) {
        // Printed above the bars in flight, not through them. Off a terminal (a log file, CI) the bars
        // are hidden and indicatif drops printed lines too: the notes (phase times, accuracy) go to
        // stderr instead.
        if self.0.is_hidden() || self.0.println(msg).is_err() {
            eprintln!("{msg}");
        }
    }
}

impl ProgressTask for Bar {
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// The build's progress as [`BuildStatus`] in the models folder (rewritten at most every half second,
/// and at once when a variant starts or is written). A status that cannot be written is logged once
/// and the build goes on: the terminal still shows everything.
#[derive(Clone)]
struct StatusFile(Arc<Mutex<StatusState>>);

struct StatusState {
    dir: PathBuf,
    status: BuildStatus,
    started: HashMap<String, Instant>,
    written_at: Option<Instant>,
    failed: bool,
}

impl StatusFile {
    /// A build of the variants `args` asks for, all queued (none for `--report-only`).
    fn start(dir: &Path, args: &BuildArgs) -> Self {
        let ids: Vec<&str> = [
            ("pruned", variants::PRUNED.id),
            ("sparse24", variants::SPARSE24.id),
            ("int8", variants::INT8.id),
        ]
        .into_iter()
        .filter(|(key, _)| {
            !args.report_only && (args.only.is_empty() || args.only.iter().any(|k| k == key))
        })
        .map(|(_, id)| id)
        .collect();
        let file = StatusFile(Arc::new(Mutex::new(StatusState {
            dir: dir.to_path_buf(),
            status: BuildStatus::new(ids),
            started: HashMap::new(),
            written_at: None,
            failed: false,
        })));
        file.update(true, |_| {});
        file
    }

    /// Changes the status and writes it (`now`: whatever the time since the last write).
    fn update(&self, now: bool, change: impl FnOnce(&mut StatusState)) {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut st);
        let due = now
            || st
                .written_at
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(500));
        if !due || st.failed {
            return;
        }
        st.status.updated_unix = build_status::now_unix();
        let st = &mut *st;
        for v in &mut st.status.variants {
            if v.state == VariantState::Building {
                v.seconds = st.started.get(&v.id).map(|t| t.elapsed().as_secs_f64());
            }
        }
        st.written_at = Some(Instant::now());
        if let Err(e) = st.status.write(&st.dir) {
            st.failed = true;
            eprintln!(
                "warning: cannot write {}: {e} (the page will not show the build's progress)",
                build_status::FILE
            );
        }
    }

    fn finish(&self, outcome: Result<(), String>) {
        self.update(true, |st| {
            st.status.step = None;
            st.status.finished = Some(outcome);
        });
    }
}

/// The terminal's bars and the status file, fed by the engine's one progress sink.
struct WithStatus {
    bars: Bars,
    status: StatusFile,
}

impl ProgressSink for WithStatus {
    fn start(&self, len: usize, what: &str) -> Box<dyn ProgressTask> {
        let step = Step {
            what: what.to_string(),
            done: 0,
            len: len as u64,
        };
        self.status.update(true, |st| st.status.step = Some(step));
        Box::new(StatusStep {
            bar: self.bars.start(len, what),
            status: self.status.clone(),
        })
    }

    fn note(&self, msg: &str) {
        self.bars.note(msg);
    }

    fn variant(&self, id: &str, state: VariantState) {
        self.status.update(true, |st| {
            let seconds = match state {
                VariantState::Building => {
                    st.started.insert(id.to_string(), Instant::now());
                    Some(0.0)
                }
                _ => st.started.get(id).map(|t| t.elapsed().as_secs_f64()),
            };
            st.status.set(id, state, seconds);
        });
    }
}

struct StatusStep {
    bar: Box<dyn ProgressTask>,
    status: StatusFile,
}

impl ProgressTask for StatusStep {
    fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.status.update(false, |st| {
            if let Some(step) = &mut st.status.step {
                step.done += n;
            }
        });
    }

    fn finish(&self) {
        self.bar.finish();
    }
}

/// The report's reference timings: python onnxruntime on the same file, input and threads.
struct PythonOrt {
    /// Interpreter with onnxruntime importable (`PYTHONPATH` as `./x` sets it).
    python: String,
}

const PY_BENCH: &str = r#"
import sys, time, numpy as np, onnxruntime as ort
path, data, threads, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
x8 = np.fromfile(data, dtype="<f4").reshape(8, 3, 224, 224)
x1 = np.ascontiguousarray(x8[:1])
for _ in range(5): s.run(["logits"], {"input": x1})
t = []
for _ in range(runs):
    t0 = time.perf_counter(); s.run(["logits"], {"input": x1}); t.append(time.perf_counter() - t0)
b1 = sorted(t)[len(t) // 2] * 1e3
s.run(["logits"], {"input": x8})
t = []
for _ in range(max(runs // 3, 5)):
    t0 = time.perf_counter(); s.run(["logits"], {"input": x8}); t.append(time.perf_counter() - t0)
print(b1, 8.0 / sorted(t)[len(t) // 2])
"#;

impl ReferenceBench for PythonOrt {
    fn bench(
        &self,
        path: &Path,
        batch8: &[f32],
        threads: usize,
        runs: usize,
    ) -> Result<(f64, f64), String> {
        let data =
            std::env::temp_dir().join(format!("inferscope-bench-{}.f32", std::process::id()));
        let bytes: Vec<u8> = batch8.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&data, bytes).map_err(|e| format!("writing {}: {e}", data.display()))?;
        let out = Command::new(&self.python)
            .arg("-c")
            .arg(PY_BENCH)
            .arg(path)
            .arg(&data)
            .arg(threads.to_string())
            .arg(runs.to_string())
            .output();
        let _ = std::fs::remove_file(&data);
        let out = out.map_err(|e| format!("running {}: {e}", self.python))?;
        if !out.status.success() {
            return Err(format!(
                "python onnxruntime benchmark failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace().map(str::parse::<f64>);
        match (it.next(), it.next()) {
            (Some(Ok(a)), Some(Ok(b))) => Ok((a, b)),
            _ => Err(format!("unexpected python benchmark output: {text}")),
        }
    }
}
