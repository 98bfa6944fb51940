//! The GPU engine's benchmark (docs/gpu.md), in two steps on two machines:
//!
//! 1. `gpu_bench prepare` (here, with ONNX Runtime): picks labelled photos, preprocesses them, writes
//!    every variant found in `--models` as an fp16 pack (`engine::cuda::pack`) and the CPU engine's logits
//!    for those photos, into one folder small enough to carry to the GPU machine.
//! 2. `gpu_bench run` (on the GPU machine, via scripts/gpu/run.sh): loads each pack on the GPU engine,
//!    checks its logits against the CPU engine's, then times batch 1 latency and batch 8/32/256
//!    throughput (CUDA-graph replays timed with CUDA events, plus the end-to-end `Model::run` from host
//!    memory), and writes `gpu_bench.json`.
//!
//! ```text
//! cargo build --release -p inferscope-engine --features cuda,ort --example gpu_bench
//! target/release/examples/gpu_bench prepare --models models --images ../shared/data/imagenet-sample --out .gpu
//! .gpu/gpu_bench run --dir .gpu --out $OUT            # on the GPU machine
//! ```
//!
//! Photos travel as the 224×224 RGB bytes that preprocessing normalizes (`inputs.u8`): the
//! normalization is a per-channel table, so both machines rebuild bit-identical float inputs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};
use engine::backend::{BackendKind, BackendOptions, Model};
use engine::cuda::net::GpuOptions;
use engine::cuda::{pack, CudaBackend};
use engine::loader::backend_for;
use engine::preprocess::{MEAN, STD};
use engine::variants::VARIANTS;
use engine::{INPUT_LEN, INPUT_SIZE, NUM_CLASSES};
use serde_json::json;

#[derive(Parser)]
#[command(about = "GPU engine benchmark: prepare (CPU reference) and run (GPU)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write packs, inputs and CPU reference logits into --out.
    Prepare {
        #[arg(long, default_value = "models")]
        models: PathBuf,
        /// Labelled photos (`<wnid>_*.JPEG` with classes.tsv).
        #[arg(long, default_value = "../shared/data/imagenet-sample")]
        images: PathBuf,
        #[arg(long, default_value = ".gpu")]
        out: PathBuf,
        /// Number of photos (spread evenly over the sorted list).
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Variant ids (default: every variant whose ONNX file exists).
        #[arg(long, value_delimiter = ',')]
        variants: Vec<String>,
        /// The CPU engine's last feature maps and top-1 CAMs of the first N photos
        /// (`maps-<variant>.f32`, `cams-<variant>.json`), the reference for the GPU's explained path.
        #[arg(long, default_value_t = 8)]
        maps: usize,
    },
    /// Check the explained path (class activation maps) of every pack in --dir against the CPU's
    /// feature maps, and time it against the plain run (batch 1, 8, 64; interleaved).
    Cam {
        #[arg(long, default_value = ".gpu")]
        dir: PathBuf,
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Timed calls per batch size and path.
        #[arg(long, default_value_t = 300)]
        runs: usize,
    },
    /// Write the baseline ONNX file from the npm package (what `inferscope import` does), for machines
    /// where the server is not built yet.
    Import {
        #[arg(long)]
        package: PathBuf,
        #[arg(long, default_value = "models")]
        models: PathBuf,
    },
    /// Write every pack in --dir back as an ONNX file into --models (for `inferscope serve` on the GPU
    /// machine, where only packs travel; fp16-rounded weights, int8 ones exact).
    Onnx {
        #[arg(long, default_value = ".gpu")]
        dir: PathBuf,
        #[arg(long, default_value = "models")]
        models: PathBuf,
        /// Write quantized packs without their quantization table: the dequantized weights as a plain
        /// float network under the same file name (served in fp16: the INT8 file's shapes timed on
        /// the fp16 path, for a same-run comparison when the baseline's pack does not travel).
        #[arg(long)]
        dequantize: bool,
    },
    /// Check and time every pack in --dir on the GPU.
    Run {
        #[arg(long, default_value = ".gpu")]
        dir: PathBuf,
        #[arg(long, default_value = ".")]
        out: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "1,8,32,256")]
        batches: Vec<usize>,
        #[arg(long, default_value_t = 8)]
        stem_channels: usize,
        /// Only cuDNN's legacy API (no graph-API candidates).
        #[arg(long)]
        legacy_only: bool,
        /// Variant ids (default: every pack present).
        #[arg(long, value_delimiter = ',')]
        variants: Vec<String>,
        /// At the largest batch, also time `run_u8` under every staging setting (copy threads ×
        /// pipelined chunk size), where its time goes (copy, upload, graph, download), and the raw
        /// host-copy and PCIe rates; checks that every setting gives the same logits bit for bit.
        #[arg(long)]
        staging_grid: bool,
    },
}

fn main() -> Result<()> {
    // The engine's warnings (rejected candidates, fallbacks) on stderr; RUST_LOG overrides.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Prepare {
            models,
            images,
            out,
            count,
            variants,
            maps,
        } => prepare(&models, &images, &out, count, &variants, maps),
        Cmd::Cam { dir, out, runs } => cam(&dir, &out, runs),
        Cmd::Onnx {
            dir,
            models,
            dequantize,
        } => {
            std::fs::create_dir_all(&models)?;
            for v in VARIANTS {
                let p = dir.join(format!("{}.safetensors", v.id));
                if p.exists() {
                    let mut net = pack::load(&p)?;
                    if dequantize {
                        net.quant = None;
                    }
                    engine::onnx_io::save(&net, &models.join(v.file), &Default::default())?;
                    println!("{} → {}", p.display(), models.join(v.file).display());
                }
            }
            Ok(())
        }
        Cmd::Import { package, models } => {
            let imported = engine::import::import_package(&package)?;
            let path = models.join(VARIANTS[0].file);
            std::fs::create_dir_all(&models)?;
            let opts = engine::onnx_io::WriteOptions {
                doc: format!("imported from {}", engine::import::PACKAGE),
                ..Default::default()
            };
            engine::onnx_io::save(&imported.model, &path, &opts)?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Cmd::Run {
            dir,
            out,
            batches,
            stem_channels,
            legacy_only,
            variants,
            staging_grid,
        } => run(
            &dir,
            &out,
            &batches,
            stem_channels,
            legacy_only,
            &variants,
            staging_grid,
        ),
    }
}

/// The normalization table of `engine::preprocess` (same expression, so the same floats).
fn table() -> [[f32; 256]; 3] {
    let mut t = [[0f32; 256]; 3];
    for (c, row) in t.iter_mut().enumerate() {
        for (v, out) in row.iter_mut().enumerate() {
            *out = (v as f32 / 255.0 - MEAN[c]) / STD[c];
        }
    }
    t
}

fn to_bytes(x: &[f32], t: &[[f32; 256]; 3]) -> Result<Vec<u8>> {
    let plane = INPUT_SIZE * INPUT_SIZE;
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let row = &t[i / plane % 3];
            row.iter()
                .position(|&e| e.to_bits() == v.to_bits())
                .map(|p| p as u8)
                .context("a value not in the table")
        })
        .collect()
}

fn from_bytes(b: &[u8], t: &[[f32; 256]; 3]) -> Vec<f32> {
    let plane = INPUT_SIZE * INPUT_SIZE;
    b.iter()
        .enumerate()
        .map(|(i, &p)| t[i / plane % 3][usize::from(p)])
        .collect()
}

fn f32_file(path: &Path, v: &[f32]) -> Result<()> {
    std::fs::write(
        path,
        v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>(),
    )
    .with_context(|| format!("writing {}", path.display()))
}

fn read_f32(path: &Path) -> Result<Vec<f32>> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn argmax(v: &[f32]) -> usize {
    engine::classify::argmax(v)
}

fn prepare(
    models: &Path,
    images: &Path,
    out: &Path,
    count: usize,
    only: &[String],
    maps: usize,
) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let tsv = std::fs::read_to_string(images.join("classes.tsv"))
        .context("classes.tsv beside the photos")?;
    let wnids: std::collections::HashMap<&str, usize> = tsv
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let i = f.next()?.parse().ok()?;
            Some((f.next()?, i))
        })
        .collect();
    let mut photos: Vec<PathBuf> = std::fs::read_dir(images)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("jpeg") || e.eq_ignore_ascii_case("jpg"))
        })
        .collect();
    photos.sort();
    ensure!(
        photos.len() >= count && count > 0,
        "{} photos in {}, {count} wanted",
        photos.len(),
        images.display()
    );
    let step = photos.len() / count;
    let picked: Vec<&PathBuf> = photos.iter().step_by(step).take(count).collect();

    let t = table();
    let mut bytes = Vec::with_capacity(count * INPUT_LEN);
    let mut input = Vec::with_capacity(count * INPUT_LEN);
    let mut classes = Vec::new();
    let mut names = Vec::new();
    for p in &picked {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let wnid = name.split('_').next().unwrap_or_default();
        classes.push(
            *wnids
                .get(wnid)
                .with_context(|| format!("class of {name}"))?,
        );
        let x = engine::preprocess::preprocess(&std::fs::read(p)?)?.data;
        let b = to_bytes(&x, &t)?;
        ensure!(
            from_bytes(&b, &t) == x,
            "bytes do not rebuild the input of {name}"
        );
        bytes.extend(b);
        input.extend(x);
        names.push(name);
    }
    std::fs::write(out.join("inputs.u8"), &bytes)?;
    std::fs::write(
        out.join("labels.json"),
        serde_json::to_string(&json!({"names": names, "classes": classes}))?,
    )?;
    println!(
        "{count} photos → {} ({:.1} MB)",
        out.join("inputs.u8").display(),
        bytes.len() as f64 / 1e6
    );

    let cpu = backend_for(BackendKind::Cpu, &BackendOptions::default())?;
    for spec in VARIANTS
        .iter()
        .filter(|v| only.is_empty() || only.iter().any(|o| o == v.id))
    {
        let path = models.join(spec.file);
        if !path.exists() {
            println!("{}: no {} (skipped)", spec.id, path.display());
            continue;
        }
        let net = engine::onnx_io::load(&path)?;
        let pack_path = out.join(format!("{}.safetensors", spec.id));
        pack::save(&net, &pack_path, &format!("{} from {}", spec.id, spec.file))?;
        let model = cpu.load(spec, &path)?;
        let t0 = Instant::now();
        let mut logits = Vec::with_capacity(count * NUM_CLASSES);
        for chunk in input.chunks(16 * INPUT_LEN) {
            logits.extend(model.run(chunk, chunk.len() / INPUT_LEN)?);
        }
        f32_file(&out.join(format!("ref-{}.f32", spec.id)), &logits)?;
        if maps > 0 {
            cpu_maps(
                &*model,
                &net,
                spec.id,
                &input[..maps.min(count) * INPUT_LEN],
                &names,
                out,
            )?;
        }
        if net.quant.is_some() {
            // The integer form read back from the pack must reproduce ONNX Runtime (what the GPU's
            // int8 path will be checked against), before anything travels.
            let q = engine::int8::QNet::new(&pack::load(&pack_path)?)?;
            let got = q.forward(&input[..INPUT_LEN]);
            let err = rel_err(&got, &logits[..NUM_CLASSES]);
            println!(
                "{}: integer form from the pack vs ONNX Runtime, photo 0: rel. error {err:.1e}",
                spec.id
            );
            ensure!(
                err < 1e-3,
                "the pack's integer form disagrees with ONNX Runtime ({err})"
            );
        }
        if spec.id == VARIANTS[0].id {
            // The pruned-shape proxy (see `pruned_proxy`): its reference logits, from ONNX Runtime.
            let proxy = pruned_proxy(&net, PROXY_BUDGET);
            let tmp = std::env::temp_dir().join("inferscope-gpu-bench");
            std::fs::create_dir_all(&tmp)?;
            let onnx = tmp.join(format!("{PROXY_ID}.onnx"));
            engine::onnx_io::save(&proxy, &onnx, &Default::default())?;
            let proxy_model = cpu.load(&VARIANTS[1], &onnx)?;
            let mut proxy_logits = Vec::with_capacity(count * NUM_CLASSES);
            for chunk in input.chunks(16 * INPUT_LEN) {
                proxy_logits.extend(proxy_model.run(chunk, chunk.len() / INPUT_LEN)?);
            }
            f32_file(&out.join(format!("ref-{PROXY_ID}.f32")), &proxy_logits)?;
            println!(
                "{PROXY_ID}: {:.2} GMAC ({:.0}% of the baseline), reference logits written",
                proxy.macs(INPUT_SIZE) as f64 / 1e9,
                100.0 * proxy.macs(INPUT_SIZE) as f64 / net.macs(INPUT_SIZE) as f64
            );
        }
        let correct = logits
            .chunks(NUM_CLASSES)
            .zip(&classes)
            .filter(|(l, &c)| argmax(l) == c)
            .count();
        println!(
            "{}: pack {:.1} MB, {:.2} GMAC; CPU top-1 {correct}/{count} ({:.1} s)",
            spec.id,
            std::fs::metadata(&pack_path)?.len() as f64 / 1e6,
            net.macs(INPUT_SIZE) as f64 / 1e9,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The CPU engine's feature maps and top-1 CAMs of `input`'s photos into `maps-<id>.f32` and
/// `cams-<id>.json` (see `Cam` and the GPU test `every_variant_pack_explains_like_the_cpu_engine`).
/// For a quantized file it also says how far the integer reference (`QNet`, what the GPU computes
/// exactly) lands from ONNX Runtime's map.
fn cpu_maps(
    model: &dyn Model,
    net: &engine::model::ResNet,
    id: &str,
    input: &[f32],
    names: &[String],
    out: &Path,
) -> Result<()> {
    let n = input.len() / INPUT_LEN;
    let (logits, explained) = model.run_explained(input, n)?;
    let mut flat = Vec::new();
    let mut photos = Vec::new();
    for (i, map) in explained.maps.iter().enumerate() {
        let row = &logits[i * NUM_CLASSES..(i + 1) * NUM_CLASSES];
        let cam = engine::cam::top1_map(map, &explained.classifier, row)?;
        photos.push(
            json!({"name": names[i], "top1": cam.class, "cam": cam.values,
                           "hottest": [cam.hottest().0, cam.hottest().1]}),
        );
        flat.extend_from_slice(&map.data);
        if net.quant.is_some() {
            let q = engine::int8::QNet::new(net)?;
            let mine = q.feature_map(&input[i * INPUT_LEN..(i + 1) * INPUT_LEN]);
            let d: Vec<f32> = mine
                .data
                .iter()
                .zip(&map.data)
                .map(|(a, b)| (a - b).abs())
                .filter(|&d| d > 0.0)
                .collect();
            println!(
                "{id} photo {i}: integer reference vs ONNX Runtime feature map: {} of {} values differ, largest {:.3} steps",
                d.len(),
                map.data.len(),
                d.iter().fold(0f32, |m, &v| m.max(v)) / q.last.scale
            );
        }
    }
    f32_file(&out.join(format!("maps-{id}.f32")), &flat)?;
    std::fs::write(
        out.join(format!("cams-{id}.json")),
        serde_json::to_string(&json!({"photos": photos}))?,
    )?;
    println!("{id}: CPU feature maps of {n} photos written");
    Ok(())
}

/// `gpu_bench cam`: every pack with CPU feature maps beside it, explained on the GPU, compared and timed.
fn cam(dir: &Path, out: &Path, runs: usize) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let gpu = CudaBackend::new(0, GpuOptions::default())?;
    println!("GPU: {}; cuDNN {}", gpu.device_name(), gpu.cudnn_version());
    let bytes = std::fs::read(dir.join("inputs.u8")).context("inputs.u8")?;
    let plane = INPUT_SIZE * INPUT_SIZE;
    let hwc: Vec<u8> = bytes
        .chunks(INPUT_LEN)
        .flat_map(|img| (0..INPUT_LEN).map(move |i| img[(i % 3) * plane + i / 3]))
        .collect();
    let tiled = |n: usize| -> Vec<u8> { hwc.iter().copied().cycle().take(n * INPUT_LEN).collect() };
    let mut report = Vec::new();
    for spec in VARIANTS {
        let pack_path = dir.join(format!("{}.safetensors", spec.id));
        let maps_path = dir.join(format!("maps-{}.f32", spec.id));
        if !pack_path.exists() || !maps_path.exists() {
            continue;
        }
        let cams: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("cams-{}.json", spec.id)))?)?;
        let cpu = read_f32(&maps_path)?;
        let photos = cams["photos"].as_array().context("photos")?.len();
        let per = cpu.len() / photos;
        let net = pack::load(&pack_path)?;
        let step = net
            .quant
            .as_ref()
            .map(|_| engine::int8::QNet::new(&net).map(|q| q.last.scale))
            .transpose()?;
        let t0 = Instant::now();
        let model = gpu.load_net(&spec, &net)?;
        for b in [1, 8, 64] {
            model.lock()?.prepare(b)?;
        }
        println!(
            "== {} ({:.1} s to load): {}",
            spec.id,
            t0.elapsed().as_secs_f32(),
            model.path()
        );
        // Correctness against the CPU engine.
        let (logits, explained) = model.run_u8_explained(&tiled(photos), photos)?;
        let mut rows = Vec::new();
        for (i, map) in explained.maps.iter().enumerate() {
            let want = &cpu[i * per..(i + 1) * per];
            let entry = &cams["photos"][i];
            let cpu_top1 = entry["top1"].as_u64().context("top1")? as usize;
            let row = &logits[i * NUM_CLASSES..(i + 1) * NUM_CLASSES];
            let cpu_cam = engine::cam::Cam {
                class: cpu_top1 as u32,
                height: 7,
                width: 7,
                values: serde_json::from_value(entry["cam"].clone())?,
                bias: 0.0,
            };
            let cam = engine::cam::class_activation_map(map, &explained.classifier, cpu_top1)?;
            let rel = engine::drift::relative_error(want, &map.data).unwrap_or(f32::NAN);
            let diffs: Vec<f32> = map
                .data
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .filter(|&d| d > 0.0)
                .collect();
            let worst = diffs.iter().fold(0f32, |m, &d| m.max(d));
            let corr = engine::cam::correlation(&cam, &cpu_cam).unwrap_or(f32::NAN);
            println!(
                "photo {i}: top-1 {} (CPU {cpu_top1}); map rel. L2 {rel:.2e}, {} of {per} values differ, largest {worst:.3e}{}; hottest {:?} (CPU {:?}), CAM correlation {corr:.5}",
                argmax(row),
                diffs.len(),
                step.map(|s| format!(" = {:.2} steps", worst / s)).unwrap_or_default(),
                cam.hottest(),
                cpu_cam.hottest()
            );
            rows.push(
                json!({"photo": i, "top1": argmax(row), "cpu_top1": cpu_top1, "rel_l2": rel,
                "values_differ": diffs.len(), "max_abs_diff": worst,
                "steps": step.map(|s| worst / s), "hottest": [cam.hottest().0, cam.hottest().1],
                "cpu_hottest": [cpu_cam.hottest().0, cpu_cam.hottest().1],
                "same_hottest": engine::cam::same_hottest(&cpu_cam, &cam, 2e-2),
                "cam_correlation": corr}),
            );
        }
        // Cost: plain run against explained run (+ the top-1 CAMs, what the server computes),
        // interleaved, host wall clock, from u8 bytes.
        let mut timing = Vec::new();
        for b in [1usize, 8, 64] {
            let x = tiled(b);
            for _ in 0..5 {
                model.run_u8(&x, b)?;
                model.run_u8_explained(&x, b)?;
            }
            let n = if b == 1 { runs } else { runs / 4 }.max(10);
            let (mut plain, mut expl, mut cams_us) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..n {
                let t = Instant::now();
                std::hint::black_box(model.run_u8(&x, b)?);
                plain.push(t.elapsed().as_secs_f32() * 1e3);
                let t = Instant::now();
                let (l, e) = model.run_u8_explained(&x, b)?;
                expl.push(t.elapsed().as_secs_f32() * 1e3);
                let t = Instant::now();
                for (i, m) in e.maps.iter().enumerate() {
                    std::hint::black_box(engine::cam::top1_map(
                        m,
                        &e.classifier,
                        &l[i * NUM_CLASSES..(i + 1) * NUM_CLASSES],
                    )?);
                }
                cams_us.push(t.elapsed().as_secs_f32() * 1e6);
            }
            let (p50, e50, c50) = (median(&mut plain), median(&mut expl), median(&mut cams_us));
            let (p90, e90) = (pct(&mut plain, 0.9), pct(&mut expl, 0.9));
            println!(
                "batch {b}: plain run_u8 {p50:.3} ms (p90 {p90:.3}), explained {e50:.3} ms (p90 {e90:.3}): +{:.3} ms ({:.2}×); top-1 CAMs on the host {c50:.0} µs",
                e50 - p50,
                e50 / p50
            );
            timing.push(
                json!({"batch": b, "runs": n, "plain_ms_p50": p50, "plain_ms_p90": p90,
                "explained_ms_p50": e50, "explained_ms_p90": e90, "cams_us_p50": c50}),
            );
        }
        report.push(
            json!({"variant": spec.id, "path": model.path(), "photos": rows, "timing": timing}),
        );
    }
    ensure!(
        !report.is_empty(),
        "no pack with CPU feature maps in {}",
        dir.display()
    );
    std::fs::write(out.join("cam.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(())
}

/// Id of the pruned-shape proxy.
const PROXY_ID: &str = "resnet50-pruned-proxy";
/// Timed only when the INT8 pack is absent: the baseline's weights quantized per channel (7 bits) with
/// fixed activation scales. Its logits mean nothing (not compared); its shapes and arithmetic are the
/// INT8 variant's, so its times are.
const SYNTH_INT8_ID: &str = "resnet50-int8-synthetic";

/// The baseline in INT8 QDQ form for timing (see [`SYNTH_INT8_ID`]).
fn synthetic_int8(net: &engine::model::ResNet) -> engine::model::ResNet {
    use engine::model::{tensor_names as tn, ActQuant, QuantTable, WeightQuant};
    let mut net = net.clone();
    let mut quant = QuantTable::default();
    let mut weights = |name: &str, w: &mut Vec<f32>, out: usize| {
        let per = w.len() / out;
        let scales: Vec<f32> = w
            .chunks(per)
            .map(|c| c.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6) / 63.0)
            .collect();
        for (i, v) in w.iter_mut().enumerate() {
            *v = (*v / scales[i / per]).round().clamp(-63.0, 63.0) * scales[i / per];
        }
        quant
            .weights
            .insert(name.to_string(), WeightQuant { scales, bits: 7 });
    };
    for c in net.convs_mut() {
        let out = c.out_ch;
        weights(&c.name.clone(), &mut c.weight, out);
    }
    let out = net.fc.out_features;
    weights("fc", &mut net.fc.weight, out);
    let relu = ActQuant {
        scale: 0.05,
        zero_point: 0,
        signed: false,
    };
    let signed = ActQuant {
        scale: 0.05,
        zero_point: 128,
        signed: false,
    };
    quant.acts.insert(tn::STEM_IN.into(), signed);
    quant.acts.insert(tn::POOL.into(), relu);
    quant.acts.insert(tn::GAP.into(), relu);
    quant.acts.insert(tn::conv_out(&net.stem.name), relu);
    let blocks: Vec<_> = net.blocks().cloned().collect();
    for b in &blocks {
        for c in [&b.conv1, &b.conv2] {
            quant.acts.insert(tn::conv_out(&c.name), relu);
        }
        quant.acts.insert(tn::conv_out(&b.conv3.name), signed);
        if let Some(d) = &b.downsample {
            quant.acts.insert(tn::conv_out(&d.name), signed);
        }
        quant.acts.insert(tn::block_out(&b.name), relu);
    }
    net.quant = Some(quant);
    net
}
/// Its MAC budget relative to the baseline (the pruned variant's, docs/variants.md).
const PROXY_BUDGET: f64 = 0.70;

/// A stand-in for the pruned variant when its file is not there: the baseline with the inner channels
/// of every bottleneck (`conv1`/`conv2` outputs) cut to the first `ratio · c` (multiples of 8, the
/// pruned variant's rule), one ratio for all blocks, the largest within `budget` of the baseline's
/// MACs. Its shapes are those of a pruned ResNet50, so it times the engine on them; its weights are
/// arbitrary (it is checked against ONNX Runtime running the same network, not for accuracy).
fn pruned_proxy(net: &engine::model::ResNet, budget: f64) -> engine::model::ResNet {
    let round8 =
        |ratio: f64, c: usize| (((ratio * c as f64) / 8.0).round() as usize * 8).clamp(8, c);
    let cut = |ratio: f64| {
        let mut p = net.clone();
        for b in p.stages.iter_mut().flatten() {
            let k1 = round8(ratio, b.conv1.out_ch);
            let k2 = round8(ratio, b.conv2.out_ch);
            let in1 = b.conv1.in_ch;
            let out3 = b.conv3.out_ch;
            keep(&mut b.conv1, in1, k1);
            keep(&mut b.conv2, k1, k2);
            keep(&mut b.conv3, k2, out3);
        }
        p
    };
    let full = net.macs(INPUT_SIZE) as f64;
    let (mut lo, mut hi) = (0.1, 1.0);
    for _ in 0..30 {
        let mid = (lo + hi) / 2.0;
        if cut(mid).macs(INPUT_SIZE) as f64 <= budget * full {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    cut(lo)
}

/// Keeps the first `ins` input and `outs` output channels of a convolution.
fn keep(c: &mut engine::model::Conv, ins: usize, outs: usize) {
    let kk = c.kernel * c.kernel;
    let mut w = Vec::with_capacity(outs * ins * kk);
    for o in 0..outs {
        let row = &c.weight[o * c.in_ch * kk..(o + 1) * c.in_ch * kk];
        w.extend_from_slice(&row[..ins * kk]);
    }
    c.weight = w;
    c.bias.truncate(outs);
    c.in_ch = ins;
    c.out_ch = outs;
}

fn median(v: &mut [f32]) -> f32 {
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}

fn pct(v: &mut [f32], p: f64) -> f32 {
    v.sort_by(f32::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// ‖a − b‖ / ‖b‖.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den).sqrt()
}

fn run(
    dir: &Path,
    out: &Path,
    batches: &[usize],
    stem_channels: usize,
    legacy_only: bool,
    only: &[String],
    staging_grid: bool,
) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let max_batch = batches.iter().copied().max().unwrap_or(1);
    let opts = GpuOptions {
        max_batch,
        stem_channels,
        graph_api: !legacy_only,
        ..Default::default()
    };
    let gpu = CudaBackend::new(0, opts.clone())?;
    println!("GPU: {}; cuDNN {}", gpu.device_name(), gpu.cudnn_version());
    let t = table();
    let bytes = std::fs::read(dir.join("inputs.u8"))
        .context("inputs.u8 (run `gpu_bench prepare` first)")?;
    let input = from_bytes(&bytes, &t);
    let count = input.len() / INPUT_LEN;
    // The same photos as image bytes in HWC order (what `GpuModel::run_u8` takes).
    let plane = INPUT_SIZE * INPUT_SIZE;
    let hwc: Vec<u8> = bytes
        .chunks(INPUT_LEN)
        .flat_map(|img| (0..INPUT_LEN).map(move |i| img[(i % 3) * plane + i / 3]))
        .collect();
    let tiled_u8 =
        |n: usize| -> Vec<u8> { hwc.iter().copied().cycle().take(n * INPUT_LEN).collect() };
    let labels: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("labels.json"))?)?;
    let classes: Vec<usize> = serde_json::from_value(labels["classes"].clone())?;
    ensure!(
        classes.len() == count,
        "labels.json has {} classes for {count} inputs",
        classes.len()
    );
    // Inputs for any batch size: the photos repeated.
    let tiled =
        |n: usize| -> Vec<f32> { input.iter().copied().cycle().take(n * INPUT_LEN).collect() };

    // Every variant with a pack; the pruned-shape proxy when its reference exists and the real pruned
    // variant does not.
    // (id, variant, pack, reference id, int8 setting, 2:4 layers on the sparse tensor cores).
    type Job<'a> = (
        String,
        &'a engine::variants::VariantSpec,
        PathBuf,
        String,
        bool,
        bool,
    );
    let default_int8 = GpuOptions::default().int8;
    let mut jobs: Vec<Job> = Vec::new();
    for v in VARIANTS
        .iter()
        .filter(|v| only.is_empty() || only.iter().any(|o| o == v.id))
    {
        let p = dir.join(format!("{}.safetensors", v.id));
        if !p.exists() {
            continue;
        }
        if v.id == "resnet50-int8" {
            // On the int8 tensor cores, and dequantized in fp16 (not with GPU_BENCH_INT8_ONLY=1:
            // repeated int8 runs of one session need the fp16 reference once).
            let int8_only = std::env::var("GPU_BENCH_INT8_ONLY").is_ok_and(|v| v == "1");
            for (suffix, int8) in [("", true), ("-fp16", false)] {
                if int8_only && !int8 {
                    continue;
                }
                jobs.push((
                    format!("{}{suffix}", v.id),
                    v,
                    p.clone(),
                    v.id.to_string(),
                    int8,
                    true,
                ));
            }
        } else if v.id == "resnet50-sparse24" {
            // The same network dense first (the baseline's shapes and kernels: the dense reference of
            // the same run), then with its 2:4 layers on the sparse tensor cores where they win.
            for (suffix, sparse) in [("-dense", false), ("", true)] {
                jobs.push((
                    format!("{}{suffix}", v.id),
                    v,
                    p.clone(),
                    v.id.to_string(),
                    default_int8,
                    sparse,
                ));
            }
        } else {
            jobs.push((
                v.id.to_string(),
                v,
                p.clone(),
                v.id.to_string(),
                default_int8,
                true,
            ));
        }
    }
    let base_pack = dir.join(format!("{}.safetensors", VARIANTS[0].id));
    if dir.join(format!("ref-{PROXY_ID}.f32")).exists()
        && base_pack.exists()
        && !dir.join(format!("{}.safetensors", VARIANTS[1].id)).exists()
        && (only.is_empty() || only.iter().any(|o| o == PROXY_ID))
    {
        jobs.push((
            PROXY_ID.to_string(),
            &VARIANTS[1],
            base_pack.clone(),
            PROXY_ID.to_string(),
            default_int8,
            true,
        ));
    }
    if !dir.join(format!("{}.safetensors", VARIANTS[3].id)).exists()
        && base_pack.exists()
        && (only.is_empty() || only.iter().any(|o| o == SYNTH_INT8_ID))
    {
        jobs.push((
            SYNTH_INT8_ID.to_string(),
            &VARIANTS[3],
            base_pack.clone(),
            SYNTH_INT8_ID.to_string(),
            true,
            true,
        ));
    }
    let mut results = Vec::new();
    for (id, spec, pack_path, ref_id, int8, sparse) in jobs {
        let t0 = Instant::now();
        let mut net = pack::load(&pack_path)?;
        if id == PROXY_ID {
            net = pruned_proxy(&net, PROXY_BUDGET);
        }
        if id == SYNTH_INT8_ID {
            net = synthetic_int8(&net);
        }
        let model = gpu.load_net_with_options(
            spec,
            &net,
            GpuOptions {
                int8,
                sparse,
                ..opts.clone()
            },
        )?;
        let load_s = t0.elapsed().as_secs_f64();
        println!(
            "\n== {} ({}; {:.2} GMAC/image; loaded in {load_s:.1} s)",
            id,
            model.path(),
            net.macs(INPUT_SIZE) as f64 / 1e9
        );

        // Correctness against the CPU engine, all photos, batches of 32 (graph of bucket 32).
        let t1 = Instant::now();
        let mut logits = Vec::with_capacity(count * NUM_CLASSES);
        for chunk in input.chunks(32 * INPUT_LEN) {
            logits.extend(model.run(chunk, chunk.len() / INPUT_LEN)?);
        }
        let first_s = t1.elapsed().as_secs_f64();
        ensure!(
            logits.iter().all(|v| v.is_finite()),
            "{}: non-finite logits",
            id
        );
        let reference = read_f32(&dir.join(format!("ref-{ref_id}.f32")))
            .ok()
            .filter(|r| r.len() == logits.len());
        let mut check = json!(null);
        if let Some(r) = &reference {
            let errs: Vec<f64> = logits
                .chunks(NUM_CLASSES)
                .zip(r.chunks(NUM_CLASSES))
                .map(|(g, c)| rel_err(g, c))
                .collect();
            let agree = logits
                .chunks(NUM_CLASSES)
                .zip(r.chunks(NUM_CLASSES))
                .filter(|(g, c)| argmax(g) == argmax(c))
                .count();
            let gpu_ok = logits
                .chunks(NUM_CLASSES)
                .zip(&classes)
                .filter(|(l, &c)| argmax(l) == c)
                .count();
            let cpu_ok = r
                .chunks(NUM_CLASSES)
                .zip(&classes)
                .filter(|(l, &c)| argmax(l) == c)
                .count();
            let max_err = errs.iter().copied().fold(0.0, f64::max);
            let mean_err = errs.iter().sum::<f64>() / errs.len() as f64;
            let per_run: Vec<String> = errs
                .chunks(32)
                .map(|c| format!("{:.1e}", c.iter().copied().fold(0.0, f64::max)))
                .collect();
            println!("max rel. error per run of 32 images (buckets 32, 32, 32, 4): {per_run:?}");
            println!(
                "correctness vs CPU engine: rel. error max {max_err:.2e} mean {mean_err:.2e}; same top-1 {agree}/{count}; \
                 top-1 correct GPU {gpu_ok} CPU {cpu_ok} (of {count})"
            );
            check = json!({"photos": count, "rel_err_max": max_err, "rel_err_mean": mean_err, "top1_agree": agree,
                           "gpu_top1_correct": gpu_ok, "cpu_top1_correct": cpu_ok});
        } else {
            println!("no CPU reference logits for {id}");
        }
        // Bytes in: the u8 entry must give exactly the logits of the f32 path.
        let mut logits_u8 = Vec::with_capacity(count * NUM_CLASSES);
        for chunk in hwc.chunks(32 * INPUT_LEN) {
            logits_u8.extend(model.run_u8(chunk, chunk.len() / INPUT_LEN)?);
        }
        let u8_diff = logits_u8
            .iter()
            .zip(&logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("u8 input vs f32 input ({count} photos): max |Δlogit| {u8_diff:.2e}");
        if let serde_json::Value::Object(m) = &mut check {
            m.insert("u8_vs_f32_max_abs".into(), json!(u8_diff));
        }

        let mut timings = serde_json::Map::new();
        {
            let mut net = model.lock()?;
            // The graph against the same forward enqueued eagerly (same plans).
            let b8 = 8.min(max_batch);
            let eager = net.run_eager(&tiled(b8), b8)?;
            let (graph, _) = net.run(&tiled(b8), b8)?;
            if let Some(r) = &reference {
                let errs: Vec<f64> = eager
                    .chunks(NUM_CLASSES)
                    .zip(r.chunks(NUM_CLASSES).cycle())
                    .map(|(g, c)| rel_err(g, c))
                    .collect();
                let worst = errs.iter().copied().fold(0.0, f64::max);
                println!("eager pass (batch {b8}) vs CPU engine: max rel. error {worst:.2e}");
            }
            println!(
                "candidates rejected (fp16: graph-API output differs from the legacy API; int8: fused epilogue differs from the int32 one): {}",
                net.rejected_candidates()
            );
            let diff = eager
                .iter()
                .zip(&graph)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            println!("graph vs eager (batch {b8}): max |Δlogit| {diff:.2e}");
            timings.insert("graph_vs_eager_max_abs".into(), json!(diff));

            for &b in batches {
                let t_build = Instant::now();
                net.prepare(b)?;
                let build_s = t_build.elapsed().as_secs_f64();
                let eager = net.run_eager(&tiled(b), b)?;
                let (graph, _) = net.run(&tiled(b), b)?;
                let replay_diff = eager
                    .iter()
                    .zip(&graph)
                    .map(|(a, g)| (a - g).abs())
                    .fold(0f32, f32::max);
                net.set_input(&tiled(b))?;
                let (per, samples) = if b == 1 {
                    (1, 300)
                } else {
                    ((64 / b).max(3), 15)
                };
                let mut ms = net.time_graph(b, per, samples)?;
                let med = median(&mut ms);
                let p90 = pct(&mut ms, 0.9);
                let plan = net.plan(b).unwrap_or_default();
                let unfused = plan.iter().filter(|p| !p.fused).count();
                let mut algos = std::collections::BTreeMap::<String, usize>::new();
                for p in &plan {
                    *algos.entry(p.algo.clone()).or_default() += 1;
                }
                println!(
                    "batch {b:>3}: graph {med:.3} ms (p90 {p90:.3}) = {:>8.0} img/s; {} convs, {unfused} unfused; algos {algos:?}; built in {build_s:.1} s ({:?} search); graph vs eager max |Δ| {replay_diff:.1e}",
                    b as f32 / med * 1000.0,
                    plan.len(),
                    net.search(b)
                );
                let tried: Vec<_> = plan.iter().filter(|p| p.sparse_ms.is_some()).collect();
                if !tried.is_empty() {
                    let won = tried
                        .iter()
                        .filter(|p| p.algo.starts_with("cuSPARSELt"))
                        .count();
                    let (d, sp): (f32, f32) = tried.iter().fold((0.0, 0.0), |(d, s), p| {
                        (
                            d + p.dense_ms.unwrap_or(0.0),
                            s + p.sparse_ms.unwrap_or(0.0),
                        )
                    });
                    println!(
                        "  2:4 on cuSPARSELt at batch {b}: {} layers tried, sparse faster on {won}; those {} layers dense {d:.3} ms vs sparse {sp:.3} ms",
                        tried.len(),
                        tried.len()
                    );
                }
                if b == max_batch || (b == 1 && !tried.is_empty()) {
                    println!("  per layer at batch {b} (search time, ms; dense / cuSPARSELt where tried):");
                    for p in &plan {
                        let alt = match (p.dense_ms, p.sparse_ms) {
                            (Some(d), Some(s)) => {
                                format!("  dense {d:.4} / 2:4 {s:.4} ({:.2}x)", d / s)
                            }
                            _ => String::new(),
                        };
                        println!("    {:<28} {:>7.4}  {}{alt}", p.name, p.ms, p.algo);
                    }
                }
                // Each step of the pass alone (int8 executor), at the largest and the smallest batch.
                let mut steps = Vec::new();
                if b == max_batch || b == 1 {
                    if let Some(r) = net.profile(b) {
                        match r {
                            Ok(s) => steps = s,
                            Err(e) => println!("  per-step profile at batch {b} failed: {e}"),
                        }
                    }
                }
                if !steps.is_empty() {
                    let total: f32 = steps.iter().map(|s| s.1).sum();
                    let conv: f32 = steps
                        .iter()
                        .filter(|s| {
                            s.0.contains("igemm")
                                || s.0.contains("cuBLASLt int8")
                                || s.0.contains("cuDNN int8")
                        })
                        .map(|s| s.1)
                        .sum();
                    println!(
                        "  per step at batch {b}, each alone (eager, ms): sum {total:.3} (convolutions {conv:.3}, the rest {:.3}) vs graph {med:.3}",
                        total - conv
                    );
                    for (name, ms) in &steps {
                        println!("    {ms:>8.4}  {name}");
                    }
                }
                timings.insert(
                    format!("bs{b}"),
                    json!({"steps": steps.iter().map(|s| json!([s.0, s.1])).collect::<Vec<_>>(),
                           "graph_ms_median": med, "graph_ms_p90": p90, "img_per_s": b as f32 / med * 1000.0, "build_s": build_s, "graph_vs_eager": replay_diff,
                           "unfused_convs": unfused, "algos": algos,
                           "layers": plan.iter().map(|p| json!([p.name, p.algo, p.fused, p.ms, p.dense_ms, p.sparse_ms])).collect::<Vec<_>>()}),
                );
            }
        }
        // End to end through `Model::run` (host f32 in) and `run_u8` (host bytes in), logits out: both
        // copies included; the two interleaved, at every batch size.
        let mut e2e = serde_json::Map::new();
        for &b in batches {
            let (x, x8) = (tiled(b), tiled_u8(b));
            let reps = if b == 1 { 100 } else { 20 };
            model.run(&x, b)?;
            model.run_u8(&x8, b)?;
            let (mut f, mut u) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
            for _ in 0..reps {
                let t = Instant::now();
                std::hint::black_box(model.run(&x, b)?);
                f.push(t.elapsed().as_secs_f32() * 1e3);
                let t = Instant::now();
                std::hint::black_box(model.run_u8(&x8, b)?);
                u.push(t.elapsed().as_secs_f32() * 1e3);
            }
            let graph = timings
                .get(&format!("bs{b}"))
                .and_then(|t| t["img_per_s"].as_f64())
                .unwrap_or(f64::NAN);
            for (key, name, ms) in [("", "Model::run (f32)", &mut f), ("u8_", "run_u8", &mut u)] {
                let med = median(ms);
                let ips = b as f64 / f64::from(med) * 1000.0;
                println!(
                    "end to end {name} batch {b}: {med:.3} ms = {ips:.0} img/s ({:.0}% of graph replay)",
                    100.0 * ips / graph
                );
                e2e.insert(
                    format!("{key}bs{b}"),
                    json!({"ms_median": med, "img_per_s": ips, "of_graph": ips / graph}),
                );
            }
        }
        e2e.insert(
            "staging_default".into(),
            json!(format!("{:?}", model.lock()?.io().staging)),
        );
        if staging_grid {
            e2e.insert(
                "staging".into(),
                staging_study(&model, &tiled_u8, max_batch, &timings)?,
            );
        }
        let path = model.path();
        println!("path (what ran): {path}");
        results.push(json!({
            "variant": id, "path": path, "gmac": net.macs(INPUT_SIZE) as f64 / 1e9,
            "params": net.params(), "nonzero_params": net.nonzero_params(), "load_s": load_s,
            "first_run_s": first_s, "check": check, "graph": timings, "end_to_end": e2e,
        }));
        std::fs::write(
            out.join("gpu_bench.json"),
            serde_json::to_string_pretty(
                &json!({"gpu": gpu.device_name(), "cudnn": gpu.cudnn_version(), "results": results}),
            )?,
        )?;
    }
    if results.is_empty() {
        bail!("no packs in {}", dir.display());
    }
    Ok(())
}

/// Where `run_u8`'s time goes at the largest batch, and what the staging settings change (docs/gpu.md,
/// 2026-11-30h): every setting (copy threads × pipelined chunk) timed in interleaved rounds, each
/// checked bit for bit against the unchunked default; the phases of one unchunked call (host copy,
/// the rest of the upload, graph, download) for two thread counts; a request of twice the largest
/// batch pipelined against two calls; and the raw host-copy and PCIe rates of this machine.
fn staging_study(
    model: &engine::cuda::GpuModel,
    tiled_u8: &dyn Fn(usize) -> Vec<u8>,
    b: usize,
    timings: &serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value> {
    use engine::cuda::io::Staging;
    let graph_ips = timings
        .get(&format!("bs{b}"))
        .and_then(|t| t["img_per_s"].as_f64())
        .unwrap_or(f64::NAN);
    let x8 = tiled_u8(b);
    let default = model.lock()?.io().staging;
    let set = |s: Staging| -> Result<()> {
        model.lock()?.io().staging = s;
        Ok(())
    };
    let unchunked = Staging {
        chunk: 0,
        ..default
    };
    set(unchunked)?;
    let want = model.run_u8(&x8, b)?;
    let mut configs = Vec::new();
    for chunk in std::iter::once(0).chain((b >= 2).then_some(b / 2)) {
        for threads in [4, 8, 12] {
            for part_bytes in [1 << 20, 2 << 20, 4 << 20] {
                configs.push(Staging {
                    threads,
                    chunk,
                    part_bytes,
                });
            }
        }
    }
    let mut checks = Vec::new();
    for &c in &configs {
        set(c)?;
        model.run_u8(&x8, b)?; // builds the chunk's bucket if needed
        let got = model.run_u8(&x8, b)?;
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, w)| (a - w).abs())
            .fold(0f32, f32::max);
        checks.push((got == want, diff));
    }
    let rounds = 12;
    let mut ms = vec![Vec::with_capacity(rounds); configs.len()];
    for _ in 0..rounds {
        for (i, &c) in configs.iter().enumerate() {
            set(c)?;
            let t = Instant::now();
            std::hint::black_box(model.run_u8(&x8, b)?);
            ms[i].push(t.elapsed().as_secs_f32() * 1e3);
        }
    }
    let mut rows = Vec::new();
    println!("  run_u8 at batch {b} by staging setting (median of {rounds} interleaved rounds; graph replay {graph_ips:.0} img/s):");
    for ((c, m), (same, diff)) in configs.iter().zip(&mut ms).zip(&checks) {
        let med = median(m);
        let ips = b as f64 / f64::from(med) * 1000.0;
        println!(
            "    threads {:>2} part {} MB chunk {:>3}: {med:.3} ms = {ips:>6.0} img/s = {:>4.1}% of graph; logits {} the unchunked default's (max |Δ| {diff:.1e})",
            c.threads,
            c.part_bytes >> 20,
            if c.chunk == 0 { b } else { c.chunk },
            100.0 * ips / graph_ips,
            if *same { "bit for bit equal to" } else { "DIFFER from" }
        );
        rows.push(
            json!({"threads": c.threads, "part_bytes": c.part_bytes, "chunk": if c.chunk == 0 { b } else { c.chunk },
            "ms_median": med, "img_per_s": ips, "of_graph": ips / graph_ips,
            "bit_identical": same, "max_abs_diff": diff}),
        );
    }

    // The phases of one unchunked call, through the executor's own steps.
    let mut phases = Vec::new();
    for threads in [4, 8] {
        set(Staging {
            threads,
            chunk: 0,
            ..default
        })?;
        let mut net = model.lock()?;
        let stream = net.stream().clone();
        let (mut copy, mut up, mut graph, mut down, mut total) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..10 {
            let t0 = Instant::now();
            net.io().upload_u8(&stream, &x8)?;
            let t1 = Instant::now();
            stream.synchronize()?;
            let t2 = Instant::now();
            net.forward(b)?;
            stream.synchronize()?;
            let t3 = Instant::now();
            std::hint::black_box(net.io().download(&stream, b)?);
            let t4 = Instant::now();
            let d = |a: Instant, z: Instant| (z - a).as_secs_f32() * 1e3;
            copy.push(d(t0, t1));
            up.push(d(t1, t2));
            graph.push(d(t2, t3));
            down.push(d(t3, t4));
            total.push(d(t0, t4));
        }
        let (c, u, g, dl, t) = (
            median(&mut copy),
            median(&mut up),
            median(&mut graph),
            median(&mut down),
            median(&mut total),
        );
        println!(
            "  phases at batch {b}, {threads} copy threads (median of 10, ms): host copy into pinned memory (parts' DMA queued meanwhile) {c:.3}, rest of the upload + normalize {u:.3}, graph {g:.3}, logits + probabilities back {dl:.3}; total {t:.3}"
        );
        phases.push(
            json!({"threads": threads, "host_copy_ms": c, "upload_tail_ms": u, "graph_ms": g,
            "download_ms": dl, "total_ms": t}),
        );
    }

    // Twice the largest batch: pipelined (one call) against the same chunks as two calls.
    set(default)?;
    let x2 = tiled_u8(2 * b);
    let one = model.run_u8(&x2, 2 * b)?;
    let mut two = model.run_u8(&x2[..b * INPUT_LEN], b)?;
    two.extend(model.run_u8(&x2[b * INPUT_LEN..], b)?);
    let (mut p, mut s) = (Vec::new(), Vec::new());
    for _ in 0..6 {
        let t = Instant::now();
        std::hint::black_box(model.run_u8(&x2, 2 * b)?);
        p.push(t.elapsed().as_secs_f32() * 1e3);
        let t = Instant::now();
        std::hint::black_box(model.run_u8(&x2[..b * INPUT_LEN], b)?);
        std::hint::black_box(model.run_u8(&x2[b * INPUT_LEN..], b)?);
        s.push(t.elapsed().as_secs_f32() * 1e3);
    }
    let (pm, sm) = (median(&mut p), median(&mut s));
    println!(
        "  {} images: one pipelined call {pm:.3} ms = {:.0} img/s, two calls of {b} {sm:.3} ms = {:.0} img/s; logits {}",
        2 * b,
        2.0 * b as f64 / f64::from(pm) * 1000.0,
        2.0 * b as f64 / f64::from(sm) * 1000.0,
        if one == two { "bit for bit equal" } else { "DIFFER" }
    );
    let over = json!({"images": 2 * b, "pipelined_ms": pm, "two_calls_ms": sm, "bit_identical": one == two});

    // The machine's raw rates for the same bytes.
    let rates = raw_rates(model, &x8)?;
    set(default)?;
    Ok(
        json!({"batch": b, "graph_img_per_s": graph_ips, "settings": rows, "phases": phases,
              "over_max_batch": over, "raw": rates}),
    )
}

/// Host memcpy (pageable → pageable, pageable → pinned write-combined, one thread) and host → device
/// DMA (from pinned and from pageable memory) for `x.len()` bytes, medians of 10, in GB/s.
fn raw_rates(model: &engine::cuda::GpuModel, x: &[u8]) -> Result<serde_json::Value> {
    use cudarc::driver::{result as drv, sys, DevicePtr};
    let net = model.lock()?;
    let (ctx, stream) = (net.ctx().clone(), net.stream().clone());
    drop(net);
    let n = x.len();
    // SAFETY: written (below) before it is read.
    let mut pinned =
        unsafe { ctx.alloc_pinned_with_flags::<u8>(n, sys::CU_MEMHOSTALLOC_WRITECOMBINED)? };
    let dev = stream.alloc_zeros::<u8>(n)?;
    let (dst, _sync) = dev.device_ptr(&stream);
    let mut plain = vec![0u8; n];
    let gbs = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        f()?;
        let mut v: Vec<f32> = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            f()?;
            v.push(t.elapsed().as_secs_f32());
        }
        Ok(n as f64 / f64::from(median(&mut v)) / 1e9)
    };
    let memcpy = gbs(&mut || {
        plain.copy_from_slice(x);
        std::hint::black_box(&plain);
        Ok(())
    })?;
    let to_pinned = gbs(&mut || {
        pinned.as_mut_slice()?.copy_from_slice(x);
        Ok(())
    })?;
    let h = pinned.as_slice()?;
    let dma_pinned = gbs(&mut || {
        // SAFETY: `dev` holds n bytes; the host buffer outlives the synchronized copy.
        unsafe { drv::memcpy_htod_async(dst, h, stream.cu_stream())? };
        stream.synchronize()?;
        Ok(())
    })?;
    let dma_pageable = gbs(&mut || {
        // SAFETY: as above (pageable: the driver stages it itself).
        unsafe { drv::memcpy_htod_async(dst, x, stream.cu_stream())? };
        stream.synchronize()?;
        Ok(())
    })?;
    println!(
        "  raw rates for {:.1} MB (GB/s, one thread): host memcpy {memcpy:.1}, into pinned write-combined memory {to_pinned:.1}; DMA host → GPU from pinned {dma_pinned:.1}, from pageable {dma_pageable:.1}",
        n as f64 / 1e6
    );
    Ok(
        json!({"bytes": n, "memcpy_gbs": memcpy, "to_pinned_wc_gbs": to_pinned,
              "dma_pinned_gbs": dma_pinned, "dma_pageable_gbs": dma_pageable}),
    )
}
