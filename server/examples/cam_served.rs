//! The served explained path, checked from outside a running `inferscope serve` (on the GPU machine:
//! `serve --backend cuda`, docs/gpu.md): sends photos to the page's `classify` server function with
//! `explain = true` — the request the page makes, through the dynamic batcher's explained call — and
//! checks that every variant that answers returns its class activation map, 7×7, for its own top-1
//! class; where `gpu_bench prepare`'s CPU maps lie beside the photos (`cams-<variant>.json`), it also
//! says whether each map's hottest cell is the CPU engine's. Then it times the server's work for a
//! photo with and without maps (requests interleaved). Exits non-zero when a map is missing.
//!
//! ```text
//! cargo build --release -p inferscope-server --features cuda --example cam_served
//! cam_served --url http://127.0.0.1:3000 --dir .gpu --count 8 --out cam_served.json
//! ```
//!
//! Photos travel as `gpu_bench prepare`'s `inputs.u8` (224×224 RGB bytes, channel-major).

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use app::classify::{Classify, ClassifyResponse, TimingMode, CLASSIFY_PATH};
use clap::Parser;
use engine::cam::{same_hottest, Cam};
use engine::INPUT_LEN;
use leptos::server_fn::codec::BitcodeEncoding;
use leptos::server_fn::Encodes;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Check and time the served class activation maps of a running inferscope")]
struct Cli {
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// Folder with `inputs.u8` (and optionally `cams-<variant>.json`).
    #[arg(long, default_value = ".gpu")]
    dir: PathBuf,
    /// Photos to check (the first of `inputs.u8`).
    #[arg(long, default_value_t = 8)]
    count: usize,
    /// Timed pairs (plain, explained) per photo.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Where to write the JSON report.
    #[arg(long, default_value = "cam_served.json")]
    out: PathBuf,
}

/// The CPU engine's top-1 map of photo `i` of variant `id`, if `gpu_bench prepare` wrote it.
fn cpu_cam(dir: &Path, id: &str, i: usize) -> Option<Cam> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("cams-{id}.json"))).ok()?).ok()?;
    let p = v["photos"].get(i)?;
    Some(Cam {
        class: p["top1"].as_u64()? as u32,
        height: 7,
        width: 7,
        values: serde_json::from_value(p["cam"].clone()).ok()?,
        bias: 0.0,
    })
}

async fn classify(
    client: &reqwest::Client,
    url: &str,
    pixels: &[u8],
    explain: bool,
) -> Result<ClassifyResponse> {
    let body = <BitcodeEncoding as Encodes<Classify>>::encode(&Classify {
        pixels: pixels.to_vec(),
        variants: String::new(),
        mode: TimingMode::Alone,
        explain,
    })
    .map_err(|e| anyhow::anyhow!("encoding: {e:?}"))?;
    let res = client
        .post(format!("{url}{CLASSIFY_PATH}"))
        .header("content-type", "application/bitcode")
        .header("accept", "application/json")
        .body(body.to_vec())
        .send()
        .await?;
    let status = res.status();
    let text = res.text().await?;
    ensure!(status.is_success(), "classify: {status}: {text}");
    Ok(serde_json::from_str(&text)?)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let chw = std::fs::read(cli.dir.join("inputs.u8")).context("inputs.u8")?;
    let count = cli.count.min(chw.len() / INPUT_LEN);
    ensure!(count > 0, "no photos in {}", cli.dir.display());
    let plane = INPUT_LEN / 3;
    let client = reqwest::Client::new();
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    // Per variant: (inference µs plain, explained); the whole call's server µs.
    let mut per_variant: std::collections::BTreeMap<String, (Vec<f64>, Vec<f64>)> =
        Default::default();
    let (mut server_plain, mut server_explained) = (Vec::new(), Vec::new());
    for i in 0..count {
        let img = &chw[i * INPUT_LEN..(i + 1) * INPUT_LEN];
        let pixels: Vec<u8> = (0..INPUT_LEN)
            .map(|j| img[(j % 3) * plane + j / 3])
            .collect();
        let answer = classify(&client, &cli.url, &pixels, true).await?;
        for o in &answer.outcomes {
            let p = match &o.result {
                Ok(p) => p,
                Err(e) => {
                    failures.push(format!("photo {i} {}: no answer: {e}", o.id));
                    continue;
                }
            };
            let top1 = p.top.first().map(|t| t.index).unwrap_or(u32::MAX);
            match &p.cam {
                Some(Ok(cam)) if (cam.height, cam.width, cam.class) == (7, 7, top1) => {
                    let cpu = cpu_cam(&cli.dir, &o.id, i);
                    let agrees = cpu
                        .as_ref()
                        .filter(|c| c.class == top1)
                        .map(|c| same_hottest(c, cam, 2e-2));
                    println!(
                        "photo {i} {}: top-1 {top1}, map 7×7, hottest {:?}{}",
                        o.id,
                        cam.hottest(),
                        match (&cpu, agrees) {
                            (Some(c), Some(a)) => format!(
                                " (CPU engine {:?}: {})",
                                c.hottest(),
                                if a { "same" } else { "DIFFERS" }
                            ),
                            (Some(c), None) =>
                                format!(" (CPU engine's top-1 is {}: not compared)", c.class),
                            _ => String::new(),
                        }
                    );
                    rows.push(json!({"photo": i, "variant": o.id, "top1": top1,
                        "hottest": [cam.hottest().0, cam.hottest().1],
                        "cpu_hottest": cpu.as_ref().map(|c| [c.hottest().0, c.hottest().1]),
                        "same_hottest_as_cpu": agrees}));
                }
                Some(Ok(cam)) => failures.push(format!(
                    "photo {i} {}: map {}×{} for class {}, top-1 {top1}",
                    o.id, cam.height, cam.width, cam.class
                )),
                Some(Err(why)) => failures.push(format!("photo {i} {}: no map: {why}", o.id)),
                None => failures.push(format!("photo {i} {}: no map asked back", o.id)),
            }
        }
        for _ in 0..cli.rounds {
            for explain in [false, true] {
                let a = classify(&client, &cli.url, &pixels, explain).await?;
                let s = a.server_us as f64 / 1e3;
                if explain {
                    server_explained.push(s);
                } else {
                    server_plain.push(s);
                }
                for o in &a.outcomes {
                    if let Ok(p) = &o.result {
                        let e = per_variant.entry(o.id.clone()).or_default();
                        let ms = p.inference_us as f64 / 1e3;
                        if explain {
                            e.1.push(ms);
                        } else {
                            e.0.push(ms);
                        }
                    }
                }
            }
        }
    }
    let (sp, se) = (median(&mut server_plain), median(&mut server_explained));
    println!(
        "server time per photo (all variants, each alone), median of {}: plain {sp:.3} ms, with maps {se:.3} ms (+{:.3} ms)",
        server_plain.len(),
        se - sp
    );
    let mut timing = Vec::new();
    for (id, (plain, expl)) in &mut per_variant {
        let (p, e) = (median(plain), median(expl));
        println!(
            "{id}: inference plain {p:.3} ms, with its feature map {e:.3} ms (+{:.3} ms)",
            e - p
        );
        timing.push(
            json!({"variant": id, "inference_ms_plain_p50": p, "inference_ms_explained_p50": e}),
        );
    }
    std::fs::write(
        &cli.out,
        serde_json::to_string_pretty(&json!({
            "photos": count, "maps": rows, "failures": failures,
            "server_ms_plain_p50": sp, "server_ms_explained_p50": se, "per_variant": timing,
        }))?,
    )?;
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAIL {f}");
        }
        bail!("{} answers without their map", failures.len());
    }
    println!("every variant returned its map for every photo ({count} photos)");
    Ok(())
}
