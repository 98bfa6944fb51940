//! Static INT8 post-training quantization: per-output-channel symmetric weights, per-tensor activation
//! ranges calibrated on photos by one of several methods (max, percentile, MSE, entropy), written by the
//! ONNX writer as a QDQ graph.
//!
//! Activation statistics are kept as histograms with one bin per bfloat16 value (the top 16 bits of the
//! f32): range-free, single pass, 0.4% relative resolution, so every method can be evaluated afterwards
//! from the same pass.

use std::collections::BTreeMap;

use crate::model::{tensor_names as tn, ActQuant, QuantTable, ResNet, WeightQuant};

/// How the activation range of a tensor is chosen from its histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CalibMethod {
    /// The largest magnitude seen.
    Max,
    /// This percentile (e.g. 99.99) of the magnitudes.
    Percentile(f64),
    /// The clipping threshold minimizing the expected squared quantization error.
    Mse,
    /// TensorRT's entropy calibration: the threshold minimizing KL(reference ‖ quantized) of the
    /// magnitude distribution.
    Entropy,
}

impl CalibMethod {
    pub fn label(&self) -> String {
        match self {
            CalibMethod::Max => "max".into(),
            CalibMethod::Percentile(p) => format!("percentile {p}"),
            CalibMethod::Mse => "mse".into(),
            CalibMethod::Entropy => "entropy".into(),
        }
    }
}

/// Integer formats of the QDQ graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantFormat {
    /// int8 activations (S8S8) when true, uint8 (U8S8) otherwise.
    pub signed_acts: bool,
    /// Weight bits: 8, or 7 ("reduce range": no int16 saturation in u8×s8 AVX2 kernels without VNNI).
    pub weight_bits: u8,
}

impl QuantFormat {
    pub fn label(&self) -> String {
        format!(
            "{}{}",
            if self.signed_acts { "S8S8" } else { "U8S8" },
            if self.weight_bits < 8 {
                " 7-bit weights"
            } else {
                ""
            }
        )
    }
}

/// Number of bins: one per 16-bit pattern.
const BINS: usize = 1 << 16;

/// Histogram of an activation tensor's values (bfloat16 bins) plus its exact extremes.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    pub min: f32,
    pub max: f32,
    pub total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BINS],
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            total: 0,
        }
    }
}

impl Histogram {
    /// Adds the values (all of them to the extremes; at most `max_samples` evenly strided ones, starting
    /// at a `phase` that varies between calls, to the histogram).
    pub fn add(&mut self, values: &[f32], max_samples: usize, phase: usize) {
        for &v in values {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        let stride = values.len().div_ceil(max_samples.max(1)).max(1);
        let mut i = phase % stride;
        while i < values.len() {
            let v = values[i];
            if v.is_finite() {
                self.counts[(v.to_bits() >> 16) as usize] += 1;
                self.total += 1;
            }
            i += stride;
        }
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.total += other.total;
    }

    /// `(|value|, count)` for every nonempty bin, ascending by magnitude (positive and negative bins of
    /// the same magnitude merged). A bin stands for the midpoint of its value interval.
    pub fn magnitudes(&self) -> Vec<(f64, u64)> {
        let mut m: BTreeMap<u16, u64> = BTreeMap::new();
        for (bits, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                *m.entry(bits as u16 & 0x7fff).or_default() += c;
            }
        }
        m.into_iter()
            .map(|(b, c)| {
                let lo = f32::from_bits(u32::from(b) << 16);
                let hi = f32::from_bits((u32::from(b) << 16) | 0xffff);
                ((f64::from(lo) + f64::from(hi)) / 2.0, c)
            })
            .collect()
    }

    /// The magnitude below which `q` (0..=1) of the samples lie.
    pub fn magnitude_quantile(&self, q: f64) -> f64 {
        let mags = self.magnitudes();
        let total: u64 = mags.iter().map(|m| m.1).sum();
        let target = (q * total as f64).ceil() as u64;
        let mut acc = 0;
        for (v, c) in &mags {
            acc += c;
            if acc >= target {
                return *v;
            }
        }
        mags.last().map_or(0.0, |m| m.0)
    }
}

/// The clipping threshold `T` (quantized range `[0, T]` or `[−T, T]` with `steps` steps) for a
/// histogram by `method`. Never above the largest magnitude seen.
pub fn threshold(h: &Histogram, method: CalibMethod, steps: u32) -> f64 {
    let max_abs = f64::from(h.max.abs().max(h.min.abs()));
    if max_abs == 0.0 || h.total == 0 {
        return max_abs.max(1e-8);
    }
    let t = match method {
        CalibMethod::Max => max_abs,
        CalibMethod::Percentile(p) => h.magnitude_quantile(p / 100.0),
        CalibMethod::Mse => mse_threshold(&h.magnitudes(), max_abs, steps),
        CalibMethod::Entropy => entropy_threshold(&h.magnitudes(), max_abs, steps),
    };
    t.clamp(max_abs * 1e-3, max_abs)
}

/// Expected squared error of quantizing the magnitudes with threshold `t` and `steps` steps: clipping
/// error beyond `t`, uniform rounding noise `Δ²/12` inside.
pub fn quant_mse(mags: &[(f64, u64)], t: f64, steps: u32) -> f64 {
    let delta = t / f64::from(steps);
    mags.iter()
        .map(|&(v, c)| {
            c as f64
                * if v > t {
                    (v - t).powi(2)
                } else {
                    (delta * delta / 12.0).min(v * v)
                }
        })
        .sum()
}

fn mse_threshold(mags: &[(f64, u64)], max_abs: f64, steps: u32) -> f64 {
    // Candidates: 200 thresholds geometrically spaced over [max/1000, max].
    (0..=200)
        .map(|i| max_abs * 10f64.powf(-3.0 * f64::from(200 - i) / 200.0))
        .map(|t| (quant_mse(mags, t, steps), t))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map_or(max_abs, |(_, t)| t)
}

/// TensorRT-style entropy calibration on a 2048-bin linear histogram of the magnitudes.
fn entropy_threshold(mags: &[(f64, u64)], max_abs: f64, steps: u32) -> f64 {
    const NB: usize = 2048;
    let levels = (steps as usize + 1).min(NB);
    let mut hist = vec![0f64; NB];
    // Exact zeros (most ReLU outputs) are represented exactly by any threshold; leaving them in would
    // make the spike at 0 dominate the divergence and favour tiny thresholds.
    for &(v, c) in mags.iter().filter(|m| m.0 > f64::from(f32::MIN_POSITIVE)) {
        let b = ((v / max_abs) * NB as f64) as usize;
        hist[b.min(NB - 1)] += c as f64;
    }
    let mut best = (f64::INFINITY, max_abs);
    for i in (levels..=NB).step_by(8) {
        // Reference: the first i bins, the outliers folded into the last one.
        let mut p: Vec<f64> = hist[..i].to_vec();
        p[i - 1] += hist[i..].iter().sum::<f64>();
        // Candidate: the first i bins merged into `levels` buckets and spread back over nonzero bins.
        let mut q = vec![0f64; i];
        for l in 0..levels {
            let (a, b) = (
                l * i / levels,
                ((l + 1) * i / levels).max(l * i / levels + 1),
            );
            let sum: f64 = hist[a..b].iter().sum();
            let nz = hist[a..b].iter().filter(|&&x| x > 0.0).count();
            if nz > 0 {
                for j in a..b {
                    if hist[j] > 0.0 {
                        q[j] = sum / nz as f64;
                    }
                }
            }
        }
        let (ps, qs) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
        if ps == 0.0 || qs == 0.0 {
            continue;
        }
        let mut kl = 0.0;
        for (&pj, &qj) in p.iter().zip(&q) {
            if pj > 0.0 {
                let (pn, qn) = (pj / ps, (qj / qs).max(1e-12));
                kl += pn * (pn / qn).ln();
            }
        }
        if kl < best.0 {
            best = (kl, (i as f64 + 0.5) * max_abs / NB as f64);
        }
    }
    best.1
}

/// Whether a tensor only holds values ≥ 0 in the quantized graph (ReLU outputs and what follows them),
/// so its range is `[0, T]` with the zero point at the bottom of the integer range.
pub fn is_nonnegative(net: &ResNet, tensor: &str) -> bool {
    if tensor == tn::POOL || tensor == tn::GAP || tensor == tn::conv_out(&net.stem.name) {
        return true;
    }
    for b in net.blocks() {
        // The block sum is only read by its ReLU: quantizing it with a [0, T] range clips exactly the
        // values the ReLU removes, and lets ONNX Runtime drop the ReLU and stay in integers.
        if tensor == tn::block_add(&b.name) || tensor == tn::block_out(&b.name) {
            return true;
        }
        for c in [&b.conv1, &b.conv2] {
            if tensor == tn::conv_out(&c.name) {
                return c.relu;
            }
        }
    }
    false
}

/// Quantization parameters of one activation with threshold `t`.
pub fn act_quant(t: f64, nonnegative: bool, format: QuantFormat) -> ActQuant {
    let t = t.max(1e-8);
    if nonnegative {
        let scale = (t / 255.0) as f32;
        if format.signed_acts {
            ActQuant {
                scale,
                zero_point: -128,
                signed: true,
            }
        } else {
            ActQuant {
                scale,
                zero_point: 0,
                signed: false,
            }
        }
    } else {
        let scale = (t / 127.0) as f32;
        if format.signed_acts {
            ActQuant {
                scale,
                zero_point: 0,
                signed: true,
            }
        } else {
            ActQuant {
                scale,
                zero_point: 128,
                signed: false,
            }
        }
    }
}

/// Affine quantization `clamp(round(x / scale) + zp)` to the format's integer range.
pub fn quantize(x: f32, q: ActQuant) -> i32 {
    let (lo, hi) = if q.signed { (-128, 127) } else { (0, 255) };
    ((x / q.scale).round() as i64 + i64::from(q.zero_point)).clamp(lo, hi) as i32
}

/// `(q − zp) · scale`.
pub fn dequantize(q: i32, a: ActQuant) -> f32 {
    (q - a.zero_point) as f32 * a.scale
}

/// Per-output-channel symmetric scales for a row-major `[out, per]` weight: `max|w| / (2^(bits−1) − 1)`.
pub fn weight_scales(w: &[f32], out: usize, bits: u8) -> Vec<f32> {
    let per = w.len() / out;
    let qmax = f32::from((1u16 << (bits - 1)) as u8 - 1);
    w.chunks_exact(per)
        .map(|row| {
            let m = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            if m == 0.0 {
                1.0
            } else {
                m / qmax
            }
        })
        .collect()
}

/// Replaces weights by their quantized-dequantized values (`round(w / s) · s`).
pub fn fake_quantize_weights(w: &mut [f32], scales: &[f32], bits: u8) {
    let per = w.len() / scales.len();
    let qmax = f32::from((1u16 << (bits - 1)) as u8 - 1);
    for (row, &s) in w.chunks_exact_mut(per).zip(scales) {
        for v in row {
            *v = (*v / s).round().clamp(-qmax, qmax) * s;
        }
    }
}

/// Activation histograms by tensor name.
pub type Stats = BTreeMap<String, Histogram>;

/// The quantized network: weights per channel, activations by `method` from `stats`.
pub fn quantize_network(
    net: &ResNet,
    stats: &Stats,
    method: CalibMethod,
    format: QuantFormat,
) -> ResNet {
    let mut q = net.clone();
    let mut table = QuantTable::default();
    let bits = format.weight_bits;
    for c in q.convs_mut() {
        let scales = weight_scales(&c.weight, c.out_ch, bits);
        fake_quantize_weights(&mut c.weight, &scales, bits);
        table
            .weights
            .insert(c.name.clone(), WeightQuant { scales, bits });
    }
    let scales = weight_scales(&q.fc.weight, q.fc.out_features, bits);
    fake_quantize_weights(&mut q.fc.weight, &scales, bits);
    table
        .weights
        .insert(q.fc.name.clone(), WeightQuant { scales, bits });

    for (name, h) in stats {
        let nonneg = is_nonnegative(net, name);
        let steps = if nonneg { 255 } else { 127 };
        table.acts.insert(
            name.clone(),
            act_quant(threshold(h, method, steps), nonneg, format),
        );
    }
    // Tensors that ONNX Runtime can only keep in integers with identical parameters on both sides.
    let stem_out = tn::conv_out(&net.stem.name);
    if let Some(a) = table.acts.get(&stem_out).copied() {
        table.acts.insert(tn::POOL.into(), a);
    }
    // A block's sum is only read by its ReLU: quantized with the output's [0, T] parameters, the ONNX
    // writer drops the ReLU (the clamp at the zero point is the ReLU).
    for b in net.blocks() {
        table.acts.remove(&tn::block_add(&b.name));
    }
    q.quant = Some(table);
    q
}
