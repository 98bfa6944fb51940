//! The variants report: accuracy, size and speed per variant (`models/report.json` and a Markdown table).

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::build::Agreement;
use crate::error::{IoContext, Result};
use crate::model::ResNet;

/// Accuracy of one model on labelled photos.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Accuracy {
    pub images: usize,
    pub top1: f64,
    pub top5: f64,
    /// Top-1 agreement and KL with the baseline on the same photos.
    pub vs_baseline: Agreement,
}

/// Top-1/top-5 of `logits` against `labels`, and agreement with `reference`.
pub fn accuracy(logits: &[Vec<f32>], labels: &[usize], reference: &[Vec<f32>]) -> Accuracy {
    let n = labels.len().max(1) as f64;
    let (mut t1, mut t5) = (0usize, 0usize);
    for (l, &y) in logits.iter().zip(labels) {
        let top = crate::classify::top_k(l, 5);
        t1 += usize::from(top[0].index == y);
        t5 += usize::from(top.iter().any(|c| c.index == y));
    }
    Accuracy {
        images: labels.len(),
        top1: t1 as f64 / n,
        top5: t5 as f64 / n,
        vs_baseline: super::build::agreement(reference, logits),
    }
}

/// Latency and throughput of one file on ONNX Runtime, from Rust (`ort`) and from python onnxruntime in
/// the same run.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Speed {
    pub threads: usize,
    /// Median batch-1 latency over `runs` runs, ms.
    pub rust_ms_b1: f64,
    pub python_ms_b1: Option<f64>,
    /// Images per second at batch 8 (median batch time).
    pub rust_ips_b8: f64,
    pub python_ips_b8: Option<f64>,
    pub runs: usize,
}

/// Everything the report says about one variant.
#[derive(Debug, Clone, Serialize)]
pub struct VariantReport {
    pub id: String,
    pub file: String,
    pub description: String,
    pub file_bytes: u64,
    /// gzip -6 of the file (shows what 2:4 zeros save in storage).
    pub gzip_bytes: u64,
    pub params: u64,
    pub nonzero_params: u64,
    pub gmacs: f64,
    pub accuracy: Accuracy,
    pub speed: Option<Speed>,
    pub build_seconds: Option<f64>,
}

impl VariantReport {
    pub fn new(
        id: &str,
        path: &Path,
        description: &str,
        net: &ResNet,
        accuracy: Accuracy,
    ) -> Result<Self> {
        let bytes = std::fs::read(path).context(|| format!("reading {}", path.display()))?;
        Ok(VariantReport {
            id: id.into(),
            file: path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            description: description.into(),
            file_bytes: bytes.len() as u64,
            gzip_bytes: gzip_len(&bytes),
            params: net.params(),
            // For the INT8 network the weights hold the dequantized values: zero exactly when the integer is.
            nonzero_params: net.nonzero_params(),
            gmacs: net.macs(crate::INPUT_SIZE) as f64 / 1e9,
            accuracy,
            speed: None,
            build_seconds: None,
        })
    }
}

/// Size of `bytes` after gzip at the default level.
pub fn gzip_len(bytes: &[u8]) -> u64 {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("writing to memory");
    enc.finish().expect("writing to memory").len() as u64
}

/// One step of the build and its wall time.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
}

/// How loaded the machine was during the build: wall times mean little without it (the 2-core
/// development machine is shared with other builds).
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Conditions {
    pub cores: usize,
    pub wall_seconds: f64,
    /// User + system CPU time of the whole process (`/proc/self/stat`), when readable.
    pub cpu_seconds: Option<f64>,
    /// 1-minute load average at the start and at the end (`/proc/loadavg`), when readable.
    pub load_start: Option<f64>,
    pub load_end: Option<f64>,
}

impl Conditions {
    /// The 1-minute load average, on Linux.
    pub fn load_average() -> Option<f64> {
        std::fs::read_to_string("/proc/loadavg")
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// User + system CPU seconds of this process so far, on Linux (`USER_HZ` is 100 on every Linux
    /// ABI the project runs on).
    pub fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces) in parentheses: utime and stime are
        // fields 14 and 15 of the whole line, 12 and 13 after the `)`.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0)
    }

    /// One line for the report, e.g. "2,130 s wall, 1,650 s CPU (0.8 of 2 cores), load average 9.1 → 10.4".
    pub fn describe(&self) -> String {
        let mut s = format!("{:.0} s wall", self.wall_seconds);
        if let Some(c) = self.cpu_seconds {
            s.push_str(&format!(
                ", {c:.0} s CPU ({:.1} of {} cores on average)",
                c / self.wall_seconds.max(1e-9),
                self.cores
            ));
        }
        match (self.load_start, self.load_end) {
            (Some(a), Some(b)) => s.push_str(&format!(
                ", 1-minute load average {a:.1} at the start and {b:.1} at the end{}",
                if a.max(b) > self.cores as f64 {
                    " (a loaded machine: wall times are inflated)"
                } else {
                    ""
                }
            )),
            _ => s.push_str(", load average unknown"),
        }
        s
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_by: String,
    pub machine: String,
    pub calibration: String,
    pub evaluation: String,
    /// Wall time per build step, in order.
    pub phases: Vec<Phase>,
    pub conditions: Conditions,
    pub variants: Vec<VariantReport>,
    /// Build details (chosen ratios, calibration method scores, ...).
    pub details: serde_json::Value,
    pub notes: Vec<String>,
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

/// The report's files beside the models: the data (the page's model facts read it) and the table
/// ([`Report::markdown`]). The library builds the report; `inferscope build-variants` writes them.
pub const FILES: [&str; 2] = ["report.json", "report.md"];

impl Report {
    /// The Markdown table and notes.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str("# ResNet50 variants\n\n");
        s.push_str(&format!(
            "Calibration: {}.  \nEvaluation: {}.  \nMachine: {}.\n\n",
            self.calibration, self.evaluation, self.machine
        ));
        s.push_str("| variant | file | gzip | params | nonzero | GMACs | top-1 | top-5 | top-1 agreement | batch-1 ms (Rust / python ORT) | img/s batch 8 (Rust / python) | build |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let base_ms = self
            .variants
            .first()
            .and_then(|v| v.speed)
            .map(|s| s.rust_ms_b1);
        for v in &self.variants {
            let (lat, ips) = match v.speed {
                Some(sp) => {
                    let speedup = base_ms
                        .map(|b| format!(" ({:.2}×)", b / sp.rust_ms_b1))
                        .unwrap_or_default();
                    let py = sp.python_ms_b1.map_or("n/a".into(), |p| format!("{p:.1}"));
                    let pyi = sp.python_ips_b8.map_or("n/a".into(), |p| format!("{p:.1}"));
                    (
                        format!("{:.1}{speedup} / {py}", sp.rust_ms_b1),
                        format!("{:.1} / {pyi}", sp.rust_ips_b8),
                    )
                }
                None => ("–".into(), "–".into()),
            };
            s.push_str(&format!(
                "| {} | {} | {} | {:.2} M | {:.2} M | {:.2} | {} | {} | {} | {} | {} | {} |\n",
                v.id,
                mb(v.file_bytes),
                mb(v.gzip_bytes),
                v.params as f64 / 1e6,
                v.nonzero_params as f64 / 1e6,
                v.gmacs,
                pct(v.accuracy.top1),
                pct(v.accuracy.top5),
                pct(v.accuracy.vs_baseline.top1),
                lat,
                ips,
                v.build_seconds.map_or("–".into(), |t| format!("{t:.0} s")),
            ));
        }
        if !self.phases.is_empty() {
            s.push_str(&format!(
                "\nBuild: {}.\n\n| phase | wall time |\n|---|---:|\n",
                self.conditions.describe()
            ));
            for p in &self.phases {
                s.push_str(&format!("| {} | {:.0} s |\n", p.name, p.seconds));
            }
        }
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                s.push_str(&format!("- {n}\n"));
            }
        }
        s
    }
}
