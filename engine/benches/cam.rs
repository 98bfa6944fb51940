//! What class activation maps cost on the CPU engine, per variant and per photo (issue 15's goal:
//! ≤ 5 ms for all four variants together).
//!
//! For each variant file in the models folder, interleaved, one image at a time with 2 intra-op
//! threads: (a) a session of the file as it is on disk (no extra output: the reference), (b) the
//! served model's plain `run` (its graph has the feature-map output, not fetched), (c) `run_explained`
//! plus the top-1 map (`engine::cam::top1_map`), what a page request with maps costs. Medians of
//! `CAM_BENCH_RUNS` (default 30) after 3 warm-up rounds; (b) − (a) is what the normal path pays for the
//! extra output, (c) − (b) what a map costs. Prints the machine and its load before and after: a figure
//! measured while other work shared the cores says so.
//!
//! `cargo bench --release -p inferscope-engine --features ort --bench cam` (needs ORT_DYLIB_PATH,
//! INFERSCOPE_MODELS, INFERSCOPE_FOOLBOX as `./x` exports them).

use std::path::PathBuf;
use std::time::Instant;

use engine::backend::{Backend, BackendOptions};
use engine::cpu::{CpuBackend, OrtSession};
use engine::variants::VARIANTS;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    let models =
        PathBuf::from(std::env::var("INFERSCOPE_MODELS").unwrap_or_else(|_| "models".into()));
    let photos = PathBuf::from(std::env::var("INFERSCOPE_FOOLBOX").unwrap_or_else(|_| {
        format!(
            "{}/.cache/inferscope/foolbox-images",
            std::env::var("HOME").unwrap_or_default()
        )
    }));
    let runs: usize = std::env::var("CAM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let bytes =
        std::fs::read(photos.join("imagenet_00_243.jpg")).expect("foolbox photo (./x setup)");
    let image = engine::preprocess::preprocess(&bytes)
        .expect("preprocess")
        .data;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("cam bench: {cpu}, {cores} cores, 2 intra-op threads, {runs} runs per path, load average {}", load_average());
    let opts = BackendOptions {
        intra_threads: 2,
        device: 0,
    };
    let backend = CpuBackend::new(&opts).expect("ONNX Runtime");
    println!("| variant | file as is (ms) | served, plain run (ms) | run + feature map + CAM (ms) | extra output on the plain path | CAM adds | CAM alone (µs) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut total_added = 0.0;
    for spec in VARIANTS.iter() {
        let path = models.join(spec.file);
        if !path.exists() {
            println!("| {} | not built | | | | | |", spec.id);
            continue;
        }
        let reference = OrtSession::open_with(&path, 2, false).expect("open");
        let model = backend.load(spec, &path).expect("load");
        let (mut a, mut b, mut c, mut m) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..runs + 3 {
            let t = Instant::now();
            reference
                .run_named(&image, 1, &["logits"])
                .expect("reference");
            let ta = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            model.run(&image, 1).expect("run");
            let tb = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let (logits, explained) = model.run_explained(&image, 1).expect("explained");
            let t_map = Instant::now();
            let cam = engine::cam::top1_map(&explained.maps[0], &explained.classifier, &logits)
                .expect("cam");
            let tm = t_map.elapsed().as_secs_f64() * 1e6;
            let tc = t.elapsed().as_secs_f64() * 1e3;
            std::hint::black_box(cam);
            if round >= 3 {
                a.push(ta);
                b.push(tb);
                c.push(tc);
                m.push(tm);
            }
        }
        let (a, b, c, m) = (median(a), median(b), median(c), median(m));
        total_added += c - b;
        println!(
            "| {} | {a:.1} | {b:.1} | {c:.1} | {:+.1} ms ({:.3}×) | {:+.1} ms | {m:.0} |",
            spec.id,
            b - a,
            b / a,
            c - b
        );
    }
    println!(
        "CAM for every built variant adds {total_added:+.1} ms per photo (sum of the medians' differences); load average after {}",
        load_average()
    );
}
