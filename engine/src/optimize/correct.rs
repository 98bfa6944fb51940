//! Statistics correction: the BatchNorm-folded equivalent of re-estimating BatchNorm statistics after a
//! one-shot compression step. For every compressed layer, in graph order, the per-output-channel mean
//! and standard deviation of its (pre-ReLU) output on calibration images — with its inputs coming from
//! the already corrected compressed network — are matched to the dense network's on the same images, by
//! an affine map `y' = s·y + t` per channel folded into the weights (`W' = s·W`, `b' = s·b + t`).
//!
//! Scaling a row of `W` keeps its zeros, so a 2:4 pattern survives the correction. The published
//! one-shot results (Optimal Brain Compression, post-training structured pruning) are all measured after
//! this step; without it every compressed layer shifts and shrinks its outputs a little and the errors
//! compound through 50 layers. Layers are corrected where the compressed network has the dense
//! network's output channels and different weights (a pruned block's inner layers, whose channels were
//! removed, are left as the least-squares refit made them).

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::Serialize;

use super::forward::{self, Act};
use super::ordered;
use crate::model::{Conv, Linear, ResNet};

/// Per-channel first and second moments, accumulated over images and spatial positions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Moments {
    /// Values summed per channel.
    pub count: f64,
    pub sum: Vec<f64>,
    pub sum_sq: Vec<f64>,
}

impl Moments {
    pub fn new(channels: usize) -> Moments {
        Moments {
            count: 0.0,
            sum: vec![0.0; channels],
            sum_sq: vec![0.0; channels],
        }
    }

    pub fn channels(&self) -> usize {
        self.sum.len()
    }

    /// Adds one `[c, positions]` activation.
    pub fn add_act(&mut self, x: &Act) {
        self.add_planes(&x.data, x.c);
    }

    /// Adds `c` planes of equal length laid out one after the other (one value per channel: a vector).
    pub fn add_planes(&mut self, data: &[f32], c: usize) {
        if self.sum.is_empty() {
            *self = Moments::new(c);
        }
        assert_eq!(c, self.channels(), "channel count changed");
        let p = data.len() / c.max(1);
        for (ch, plane) in data.chunks_exact(p.max(1)).enumerate().take(c) {
            let (mut s, mut q) = (0f64, 0f64);
            for &v in plane {
                let v = f64::from(v);
                s += v;
                q += v * v;
            }
            self.sum[ch] += s;
            self.sum_sq[ch] += q;
        }
        self.count += p as f64;
    }

    pub fn merge(&mut self, o: &Moments) {
        if self.sum.is_empty() {
            *self = o.clone();
            return;
        }
        if o.sum.is_empty() {
            return;
        }
        assert_eq!(self.channels(), o.channels());
        for (a, b) in self.sum.iter_mut().zip(&o.sum) {
            *a += b;
        }
        for (a, b) in self.sum_sq.iter_mut().zip(&o.sum_sq) {
            *a += b;
        }
        self.count += o.count;
    }

    pub fn mean(&self) -> Vec<f64> {
        let n = self.count.max(1.0);
        self.sum.iter().map(|s| s / n).collect()
    }

    /// Population standard deviation per channel.
    pub fn std(&self) -> Vec<f64> {
        let n = self.count.max(1.0);
        self.sum
            .iter()
            .zip(&self.sum_sq)
            .map(|(s, q)| {
                let m = s / n;
                (q / n - m * m).max(0.0).sqrt()
            })
            .collect()
    }
}

/// Per channel `y' = scale·y + shift`.
#[derive(Debug, Clone, PartialEq)]
pub struct Affine {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

/// The per-channel affine map that gives `current`'s channels `target`'s mean and (when `match_std`)
/// standard deviation. The scale is clamped to `[1/max_scale, max_scale]`; a channel whose current
/// output is constant only gets its mean moved.
pub fn matching_affine(
    target: &Moments,
    current: &Moments,
    match_std: bool,
    max_scale: f64,
) -> Affine {
    assert_eq!(target.channels(), current.channels());
    let (mt, st) = (target.mean(), target.std());
    let (mc, sc) = (current.mean(), current.std());
    let mut scale = Vec::with_capacity(mt.len());
    let mut shift = Vec::with_capacity(mt.len());
    for c in 0..mt.len() {
        let s = if match_std && sc[c] > 1e-12 && st[c] > 0.0 {
            (st[c] / sc[c]).clamp(1.0 / max_scale, max_scale)
        } else {
            1.0
        };
        scale.push(s as f32);
        shift.push((mt[c] - s * mc[c]) as f32);
    }
    Affine { scale, shift }
}

/// Folds `a` into a convolution's weights and bias.
pub fn apply_conv(conv: &mut Conv, a: &Affine) {
    let per = conv.fan_in();
    for (o, row) in conv.weight.chunks_exact_mut(per).enumerate() {
        for w in row {
            *w *= a.scale[o];
        }
        conv.bias[o] = a.scale[o] * conv.bias[o] + a.shift[o];
    }
}

/// Folds `a` into a fully connected layer.
pub fn apply_linear(fc: &mut Linear, a: &Affine) {
    for (o, row) in fc.weight.chunks_exact_mut(fc.in_features).enumerate() {
        for w in row {
            *w *= a.scale[o];
        }
        fc.bias[o] = a.scale[o] * fc.bias[o] + a.shift[o];
    }
}

/// Applies `a` to an activation in place.
pub fn apply_act(x: &mut Act, a: &Affine) {
    let p = x.positions();
    for (c, plane) in x.data.chunks_exact_mut(p).enumerate() {
        let (s, t) = (a.scale[c], a.shift[c]);
        for v in plane {
            *v = s * *v + t;
        }
    }
}

fn relu(x: &mut Act) {
    for v in &mut x.data {
        *v = v.max(0.0);
    }
}

/// Name under which the FC layer's outputs (the logits) are reported.
pub const FC: &str = "fc";

/// The moments of every conv's pre-activation output (by layer name) and of the logits ([`FC`]) of
/// `net` over `images` (one streaming pass, in parallel over images).
pub fn network_moments(net: &ResNet, images: &[Act]) -> BTreeMap<String, Moments> {
    let observe = |m: &mut BTreeMap<String, Moments>, name: &str, x: &Act| {
        m.entry(name.to_string()).or_default().add_act(x);
    };
    ordered::fold_ordered(
        images.len(),
        BTreeMap::new,
        |mut m, idx| {
            let x = forward::stem_input(net, &images[idx]);
            let mut s = forward::conv_forward_opt(&net.stem, &x, true);
            observe(&mut m, &net.stem.name, &s);
            relu(&mut s);
            let mut x = forward::max_pool(&s);
            for b in net.blocks() {
                let run = |c: &Conv, input: &Act, m: &mut BTreeMap<String, Moments>| {
                    let mut y = forward::conv_forward_opt(c, input, true);
                    observe(m, &c.name, &y);
                    if c.relu {
                        relu(&mut y);
                    }
                    y
                };
                let h1 = run(&b.conv1, &x, &mut m);
                let h2 = run(&b.conv2, &h1, &mut m);
                let h3 = run(&b.conv3, &h2, &mut m);
                let short = b.downsample.as_ref().map(|d| run(d, &x, &mut m));
                x = forward::residual_add(h3, short.as_ref().unwrap_or(&x));
            }
            let logits = forward::linear(&net.fc, &forward::global_avg_pool(&x));
            m.entry(FC.to_string())
                .or_default()
                .add_planes(&logits, logits.len());
            m
        },
        |mut a, b| {
            for (k, v) in b {
                a.entry(k).or_default().merge(&v);
            }
            a
        },
    )
}

/// How far a layer's output statistics are from the dense network's: the mean over channels of
/// `(|μ − μ_dense| + |σ − σ_dense|) / σ_dense` (channels with `σ_dense = 0` left out).
pub fn moment_gap(target: &Moments, current: &Moments) -> f64 {
    let (mt, st) = (target.mean(), target.std());
    let (mc, sc) = (current.mean(), current.std());
    let mut sum = 0.0;
    let mut n = 0usize;
    for c in 0..mt.len().min(mc.len()) {
        if st[c] > 0.0 {
            sum += ((mc[c] - mt[c]).abs() + (sc[c] - st[c]).abs()) / st[c];
            n += 1;
        }
    }
    sum / n.max(1) as f64
}

/// Per layer of `net` that [`differs`] from `dense`'s: the [`moment_gap`] to the dense layer's output
/// statistics on `images` (each network run on its own inputs).
pub fn layer_gaps(dense: &ResNet, net: &ResNet, images: &[Act]) -> Vec<(String, f64)> {
    let t = network_moments(dense, images);
    let c = network_moments(net, images);
    compressed_layers(dense, net)
        .into_iter()
        .map(|name| {
            let g = moment_gap(&t[&name], &c[&name]);
            (name, g)
        })
        .collect()
}

/// Whether a compressed conv is a candidate for correction: same output channels as the dense one and
/// different weights.
pub fn differs(dense: &Conv, c: &Conv) -> bool {
    dense.out_ch == c.out_ch && (dense.in_ch != c.in_ch || dense.weight != c.weight)
}

/// Names of the layers [`correct_network`] corrects (convs that [`differ`](differs), and [`FC`] when
/// the FC layer changed), in graph order.
pub fn compressed_layers(dense: &ResNet, net: &ResNet) -> Vec<String> {
    let mut v: Vec<String> = dense
        .convs()
        .zip(net.convs())
        .filter(|(d, c)| differs(d, c))
        .map(|(_, c)| c.name.clone())
        .collect();
    if dense.fc.out_features == net.fc.out_features && dense.fc.weight != net.fc.weight {
        v.push(FC.into());
    }
    v
}

/// Settings of the statistics correction.
#[derive(Debug, Clone, Serialize)]
pub struct CorrectOptions {
    /// Calibration photos used.
    pub images: usize,
    /// Add each photo's mirror image (twice the statistics).
    pub flips: bool,
    /// Match the standard deviation too (else only the mean: bias correction).
    pub match_std: bool,
    /// Correct the logits as well (when the FC layer was compressed).
    pub fc: bool,
    /// Bound on the per-channel scale.
    pub max_scale: f64,
}

impl Default for CorrectOptions {
    fn default() -> Self {
        CorrectOptions {
            images: 128,
            flips: true,
            match_std: true,
            fc: true,
            max_scale: 4.0,
        }
    }
}

/// What the correction did to one layer, on the calibration images.
#[derive(Debug, Clone, Serialize)]
pub struct LayerCorrection {
    pub layer: String,
    /// [`moment_gap`] before the layer's correction (inputs already corrected upstream).
    pub gap_before: f64,
    /// Mean of `|scale − 1|` and of `|shift| / σ_dense` over the channels.
    pub mean_scale_change: f64,
    pub mean_shift: f64,
}

/// Summary of a correction pass.
#[derive(Debug, Clone, Serialize)]
pub struct CorrectionSummary {
    pub images: usize,
    pub layers: Vec<LayerCorrection>,
    pub seconds: f64,
}

fn correction_images(calib: &[Act], o: &CorrectOptions) -> Vec<Act> {
    let base: Vec<Act> = calib.iter().take(o.images).cloned().collect();
    if o.flips {
        let n = base.len();
        super::build::augment(&base, 2 * n, 0)
    } else {
        base
    }
}

/// Corrects `net` (a compressed copy of `dense` with the same layer order) in place, in graph order, on
/// `calib` (the first `o.images` photos, plus mirrors when `o.flips`).
pub fn correct_network(
    dense: &ResNet,
    net: &mut ResNet,
    calib: &[Act],
    o: &CorrectOptions,
    progress: super::build::Progress,
) -> CorrectionSummary {
    let t0 = std::time::Instant::now();
    let imgs = correction_images(calib, o);
    let target = network_moments(dense, &imgs);
    let nblocks = net.blocks().count();
    let bar = progress.bar(nblocks + 2, "statistics correction (by block)");
    let mut layers = Vec::new();
    let step = |c: &mut Conv, d: &Conv, inputs: &[Act], layers: &mut Vec<LayerCorrection>| {
        let mut ys: Vec<Act> = inputs
            .par_iter()
            .map(|x| forward::conv_forward_opt(c, x, true))
            .collect();
        if differs(d, c) {
            let mut cur = Moments::default();
            for y in &ys {
                cur.add_act(y);
            }
            let t = &target[&c.name];
            let a = matching_affine(t, &cur, o.match_std, o.max_scale);
            layers.push(summarize(&c.name, t, &cur, &a));
            apply_conv(c, &a);
            ys.par_iter_mut().for_each(|y| apply_act(y, &a));
        }
        if c.relu {
            ys.par_iter_mut().for_each(relu);
        }
        ys
    };
    let xs: Vec<Act> = imgs
        .par_iter()
        .map(|x| forward::stem_input(net, x))
        .collect();
    let s = step(&mut net.stem, &dense.stem, &xs, &mut layers);
    let mut xs: Vec<Act> = s.par_iter().map(forward::max_pool).collect();
    drop(s);
    bar.inc(1);
    for (st, dst) in net.stages.iter_mut().zip(&dense.stages) {
        for (b, db) in st.iter_mut().zip(dst) {
            let a1 = step(&mut b.conv1, &db.conv1, &xs, &mut layers);
            let a2 = step(&mut b.conv2, &db.conv2, &a1, &mut layers);
            drop(a1);
            let h3 = step(&mut b.conv3, &db.conv3, &a2, &mut layers);
            drop(a2);
            let short = match (&mut b.downsample, &db.downsample) {
                (Some(d), Some(dd)) => Some(step(d, dd, &xs, &mut layers)),
                _ => None,
            };
            xs = match short {
                Some(s) => h3
                    .into_par_iter()
                    .zip(s.par_iter())
                    .map(|(h, s)| forward::residual_add(h, s))
                    .collect(),
                None => h3
                    .into_par_iter()
                    .zip(xs.par_iter())
                    .map(|(h, x)| forward::residual_add(h, x))
                    .collect(),
            };
            bar.inc(1);
        }
    }
    if o.fc && compressed_layers(dense, net).iter().any(|l| l == FC) {
        let logits: Vec<Vec<f32>> = xs
            .par_iter()
            .map(|x| forward::linear(&net.fc, &forward::global_avg_pool(x)))
            .collect();
        let mut cur = Moments::default();
        for l in &logits {
            cur.add_planes(l, l.len());
        }
        let t = &target[FC];
        let a = matching_affine(t, &cur, o.match_std, o.max_scale);
        layers.push(summarize(FC, t, &cur, &a));
        apply_linear(&mut net.fc, &a);
    }
    bar.finish_and_clear();
    CorrectionSummary {
        images: imgs.len(),
        layers,
        seconds: t0.elapsed().as_secs_f64(),
    }
}

fn summarize(layer: &str, t: &Moments, cur: &Moments, a: &Affine) -> LayerCorrection {
    let st = t.std();
    let n = a.scale.len().max(1) as f64;
    LayerCorrection {
        layer: layer.into(),
        gap_before: moment_gap(t, cur),
        mean_scale_change: a
            .scale
            .iter()
            .map(|s| f64::from(*s - 1.0).abs())
            .sum::<f64>()
            / n,
        mean_shift: a
            .shift
            .iter()
            .zip(&st)
            .map(|(s, d)| f64::from(*s).abs() / d.max(1e-12))
            .sum::<f64>()
            / n,
    }
}
